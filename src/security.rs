//! Running code as another role the way PostgreSQL runs maintenance commands on a
//! user's table: in a security-restricted operation, with a settings nest level of its
//! own and `search_path` pinned. The background worker processes each table as its
//! owner this way; `koe5__forget_queue` deletes as the queue's owner.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::ereport::report;

/// The current user and settings, given back when this goes out of scope: on return
/// and when an ERROR unwinds through the code that holds it (a (sub)transaction's
/// abort would restore the same again).
pub struct Scope {
    user: pg_sys::Oid,
    context: i32,
    nest: i32,
}

impl Scope {
    /// Opens a settings nest level with `search_path` pinned to `pg_catalog, pg_temp`,
    /// still as the current user.
    pub fn pinned() -> Scope {
        let (mut user, mut context) = (pg_sys::InvalidOid, 0);
        // SAFETY: plain reads and a new GUC nest level, closed in Drop.
        let nest = unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::NewGUCNestLevel()
        };
        let scope = Scope { user, context, nest };
        Spi::run("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)")
            .unwrap_or_else(|e| report(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("koe5: {e}"), None, None));
        scope
    }

    /// Runs what follows, until the scope ends, as `role` in a security-restricted
    /// operation: code it reaches (a table's triggers) cannot SET ROLE back, and the
    /// settings it changes end with the scope.
    pub fn become_role(&self, role: pg_sys::Oid) {
        let context =
            self.context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | pg_sys::SECURITY_RESTRICTED_OPERATION as i32;
        // SAFETY: restored in Drop.
        unsafe { pg_sys::SetUserIdAndSecContext(role, context) };
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // SAFETY: the values saved in `pinned`, the nest level opened there.
        unsafe {
            pg_sys::AtEOXact_GUC(false, self.nest);
            pg_sys::SetUserIdAndSecContext(self.user, self.context);
        }
    }
}

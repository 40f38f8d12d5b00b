//! Deleting from koe5's queue, which its users may not do themselves.
//!
//! PUBLIC may read the queue's tables (row-level security chooses the rows), add
//! entries and update the columns that change as entries are worked on, but not
//! DELETE: that privilege (like UPDATE, TRUNCATE or MAINTAIN of a whole table) would
//! let any role take `LOCK TABLE … IN ACCESS EXCLUSIVE MODE` on the queue, which
//! row-level security does not cover, and stall every registered table's writes.
//! So a table's owner deletes its entries through `koe5__forget_queue`: the caller's
//! ownership is checked as the caller, then the DELETE runs as the owner of koe5's
//! queue table, in a security-restricted operation with `search_path` pinned, on the
//! extension's own tables found from `pg_extension` (never from an argument).

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::{Array, PgSqlErrorCode};

use crate::ereport::report;
use crate::security::Scope;

fn internal(e: pgrx::spi::SpiError) -> ! {
    report(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("koe5: {e}"), None, None)
}

/// Deletes the queue entries of `tbl` named in `ids`, or, with `whole_table`, all of
/// them and the table's registration; returns how many entries went.
#[pg_extern(sql = false)]
fn koe5_forget_queue(tbl: Option<pg_sys::Oid>, ids: Option<Array<'_, i64>>, whole_table: Option<bool>) -> i64 {
    let Some(tbl) = tbl else { return 0 };
    let whole = whole_table.unwrap_or(false);
    let ids: Vec<i64> = ids.map(|a| a.iter().flatten().collect()).unwrap_or_default();
    if !whole && ids.is_empty() {
        return 0;
    }
    let scope = Scope::pinned();
    // As the caller: may they act as the table's owner?
    let row = Spi::connect(|c| {
        let rows = c.select(
            "SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE'), c.relname::text
             FROM pg_catalog.pg_class c WHERE c.oid = $1",
            None,
            &[DatumWithOid::from(tbl)],
        )?;
        match rows.into_iter().next() {
            Some(r) => Ok::<_, pgrx::spi::SpiError>(Some((r.get::<bool>(1)?, r.get::<String>(2)?))),
            None => Ok(None),
        }
    })
    .unwrap_or_else(|e| internal(e));
    match row {
        Some((Some(true), _)) => {}
        Some((_, name)) => report(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be owner of table {}", name.unwrap_or_default()),
            None,
            None,
        ),
        None => report(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("relation with OID {} does not exist", tbl.to_u32()),
            None,
            None,
        ),
    }
    let extension = Spi::connect(|c| {
        let rows = c.select(
            // the owner of the queue's table: the least that may delete from it
            "SELECT c.relowner, pg_catalog.quote_ident(n.nspname)
             FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = 'koe5_queue'
             WHERE e.extname = 'koe5'",
            None,
            &[],
        )?;
        match rows.into_iter().next() {
            Some(r) => Ok::<_, pgrx::spi::SpiError>(Some((r.get::<pg_sys::Oid>(1)?, r.get::<String>(2)?))),
            None => Ok(None),
        }
    })
    .unwrap_or_else(|e| internal(e));
    let Some((Some(owner), Some(schema))) = extension else {
        report(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            "extension \"koe5\" is not installed in this database".into(),
            None,
            None,
        )
    };
    scope.become_role(owner);
    let gone = Spi::get_one_with_args::<i64>(
        &format!(
            "WITH gone AS (DELETE FROM {schema}.koe5_queue WHERE relid = $1 AND ($2 OR id = ANY ($3)) RETURNING 1)
             SELECT count(*) FROM gone"
        ),
        &[DatumWithOid::from(tbl), DatumWithOid::from(whole), DatumWithOid::from(ids)],
    )
    .unwrap_or_else(|e| internal(e))
    .unwrap_or(0);
    if whole {
        Spi::run_with_args(
            &format!("DELETE FROM {schema}.koe5_queued_tables WHERE relid = $1"),
            &[DatumWithOid::from(tbl)],
        )
        .unwrap_or_else(|e| internal(e));
    }
    drop(scope);
    gone
}

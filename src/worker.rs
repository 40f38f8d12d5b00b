//! The background worker: embeds the rows that koe5_enqueue_table() queues, so that
//! writers never wait for inference.
//!
//! It runs only when koe5 is in shared_preload_libraries, connects to
//! `koe5.worker_database`, and idles while `koe5.worker_enabled` is off. Each batch of
//! one table is one transaction, run as that table's owner in a security-restricted
//! context: the table's own triggers and constraints never run with the worker's
//! superuser rights. The batch logic itself is SQL (koe5__worker_step), which logs an
//! error and moves on instead of failing.

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crate::gucs;

pub fn register() {
    BackgroundWorkerBuilder::new("koe5 embedding worker")
        .set_type("koe5 worker")
        .set_library("koe5")
        .set_function("koe5_worker_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

unsafe extern "C-unwind" {
    /// PostgreSQL's SIGTERM handler for backends (pgrx only exposes a guarded wrapper,
    /// which cannot be a signal handler).
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn koe5_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    // SIGTERM (shutdown, pg_terminate_backend) gets PostgreSQL's own handler, so an
    // embedding in progress stops at its next interrupt check. The worker then exits
    // with an error status and, unless the server is stopping, is started again.
    unsafe {
        #[cfg(feature = "pg18")]
        pg_sys::pqsignal_be(pg_sys::SIGTERM as i32, Some(postgres_die));
        #[cfg(not(feature = "pg18"))]
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(postgres_die));
    }
    let database = gucs::worker_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("koe5 worker started on database \"{database}\"");
    loop {
        pgrx::check_for_interrupts!();
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            if gucs::worker_database() != database {
                // Reconnecting takes a new process: exit and let the postmaster restart us.
                log!("koe5 worker restarting for database \"{}\"", gucs::worker_database());
                unsafe { pg_sys::proc_exit(1) };
            }
        }
        let busy = gucs::WORKER_ENABLED.get() && embed_due_batches();
        if !busy {
            let nap = Duration::from_millis(u64::try_from(gucs::WORKER_NAPTIME_MS.get()).unwrap_or(1000));
            if !BackgroundWorker::wait_latch(Some(nap)) {
                return; // the postmaster died
            }
        }
    }
}

/// One batch for every table with due queue entries; true if any work was done.
fn embed_due_batches() -> bool {
    let Some((schema, tables)) = BackgroundWorker::transaction(due_tables) else { return false };
    let batch = gucs::WORKER_BATCH_SIZE.get();
    let step = format!("SELECT {schema}.koe5__worker_step($1::pg_catalog.regclass, $2)");
    let mut busy = false;
    for (relid, owner) in tables {
        pgrx::check_for_interrupts!();
        let settled = BackgroundWorker::transaction(|| {
            as_owner(owner, || {
                Spi::get_one_with_args::<i32>(&step, &[DatumWithOid::from(relid), DatumWithOid::from(batch)])
            })
        });
        busy |= matches!(settled, Ok(Some(n)) if n > 0);
    }
    busy
}

/// The schema of the koe5 extension in this database (None if it is not installed)
/// and the registered tables that have due entries, with their owners.
fn due_tables() -> Option<(String, Vec<(pg_sys::Oid, pg_sys::Oid)>)> {
    let schema = Spi::connect(|c| {
        c.select(
            "SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension e
             JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'koe5'",
            None,
            &[],
        )
        .ok()?
        .next()
        .and_then(|r| r.get::<String>(1).ok().flatten())
    })?;
    let tables = Spi::connect(|c| {
        c.select(
            &format!(
                "SELECT r.relid, c.relowner FROM {schema}.koe5_queued_tables r
                 JOIN pg_catalog.pg_class c ON c.oid = r.relid
                 WHERE EXISTS (SELECT FROM {schema}.koe5_queue q
                               WHERE q.relid = r.relid AND q.failed_at IS NULL
                                 AND q.next_attempt_at <= pg_catalog.clock_timestamp())"
            ),
            None,
            &[],
        )
        .map(|rows| {
            rows.filter_map(|r| Some((r.get::<pg_sys::Oid>(1).ok()??, r.get::<pg_sys::Oid>(2).ok()??))).collect()
        })
        .unwrap_or_default()
    });
    Some((schema, tables))
}

/// Runs `f` as `owner` in a security-restricted operation (as PostgreSQL runs
/// maintenance commands): code it reaches cannot SET ROLE back to the worker's user.
fn as_owner<T>(owner: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            context | pg_sys::SECURITY_RESTRICTED_OPERATION as i32 | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let out = f();
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    out
}

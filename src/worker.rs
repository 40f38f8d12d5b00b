//! The background worker: embeds the rows that koe5_enqueue_table() queues, so that
//! writers never wait for inference.
//!
//! It runs only when koe5 is in shared_preload_libraries, waits (unconnected) while
//! `koe5.worker_enabled` is off, then connects to `koe5.worker_database`. Each batch of
//! one table is one transaction, run as that table's owner in a security-restricted
//! operation with its own settings nest level, as PostgreSQL runs maintenance commands:
//! the table's triggers and constraints never run with the worker's superuser rights,
//! cannot SET ROLE back, and settings they change end with the batch. An error in one
//! table's batch is logged, that table waits a while, and the others go on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::gucs;

/// How long a table whose batch failed is left alone.
const BACKOFF: Duration = Duration::from_secs(10);

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

/// `STATEMENT_TIMEOUT` of PostgreSQL's `TimeoutId` (utils/timeout.h, the same fourth
/// entry in 14 to 18; pgrx has no bindings for that header). SPI does not arm
/// statement_timeout in a background worker, so the worker arms it for each batch.
const STATEMENT_TIMEOUT: std::ffi::c_int = 3;

// Declared "C" and called through pgrx's guard (`statement_timeout`), as pgrx calls
// its own bindings: an ERROR raised inside becomes a Rust panic that unwinds through
// the worker's frames (and their destructors) instead of jumping over them.
unsafe extern "C" {
    fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
}

/// Arms statement_timeout for `ms` milliseconds, or disarms it (None).
fn statement_timeout(ms: Option<std::ffi::c_int>) {
    // SAFETY: the timeout module is initialised for every backend that ran
    // InitPostgres, as this worker did when it connected; disarming a timeout that is
    // not armed is a no-op. Called on the worker's own thread.
    unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| match ms {
            Some(ms) => enable_timeout_after(STATEMENT_TIMEOUT, ms),
            None => disable_timeout(STATEMENT_TIMEOUT, false),
        })
    }
}

fn nap() -> bool {
    let ms = u64::try_from(gucs::WORKER_NAPTIME_MS.get()).unwrap_or(1000);
    BackgroundWorker::wait_latch(Some(Duration::from_millis(ms)))
}

fn reload_settings() {
    if BackgroundWorker::sighup_received() {
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
}

fn report_activity(state: pg_sys::BackendState::Type, what: &std::ffi::CStr) {
    unsafe { pg_sys::pgstat_report_activity(state, what.as_ptr()) };
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
    // Stay off the database until the worker is turned on.
    while !gucs::WORKER_ENABLED.get() {
        pgrx::check_for_interrupts!();
        if !nap() {
            return; // the postmaster died
        }
        reload_settings();
    }
    let database = gucs::worker_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("koe5 worker started on database \"{database}\"");
    let mut resting: HashMap<u32, Instant> = HashMap::new();
    loop {
        pgrx::check_for_interrupts!();
        reload_settings();
        if gucs::worker_database() != database {
            // Reconnecting takes a new process: exit and let the postmaster restart us.
            log!("koe5 worker restarting for database \"{}\"", gucs::worker_database());
            unsafe { pg_sys::proc_exit(1) };
        }
        let busy = gucs::WORKER_ENABLED.get() && embed_due_batches(&mut resting);
        // Between busy rounds, a zero wait still notices a dead postmaster.
        if busy && !BackgroundWorker::wait_latch(Some(Duration::ZERO)) {
            return;
        }
        if !busy {
            report_activity(pg_sys::BackendState::STATE_IDLE, c"");
            if !nap() {
                return;
            }
        }
    }
}

/// One batch for every table with due queue entries; true if any work was done.
fn embed_due_batches(resting: &mut HashMap<u32, Instant>) -> bool {
    let Ok(Some((schema, tables))) = in_transaction(due_tables) else { return false };
    let batch = gucs::WORKER_BATCH_SIZE.get();
    let step = format!("SELECT {schema}.koe5_process_queue_table($1::pg_catalog.regclass, $2)");
    resting.retain(|_, until| *until > Instant::now());
    let mut busy = false;
    for (relid, owner) in tables {
        if resting.contains_key(&relid.to_u32()) {
            continue;
        }
        pgrx::check_for_interrupts!();
        report_activity(pg_sys::BackendState::STATE_RUNNING, c"embedding queued rows");
        let timeout = gucs::WORKER_BATCH_TIMEOUT_MS.get();
        let settled = in_transaction(|| {
            as_owner(owner, || {
                if timeout > 0 {
                    statement_timeout(Some(timeout));
                }
                Spi::get_one_with_args::<i32>(&step, &[DatumWithOid::from(relid), DatumWithOid::from(batch)])
            })
        });
        statement_timeout(None);
        let failure = match settled {
            Ok(Ok(Some(n))) => {
                busy |= n > 0;
                continue;
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(message) => Some(message),
        };
        if let Some(message) = failure {
            record_failure(&schema, relid, &message);
        }
        resting.insert(relid.to_u32(), Instant::now() + BACKOFF);
    }
    busy
}

/// A batch that failed as a whole (the model could not be loaded, the batch ran past
/// `koe5.worker_batch_timeout`, a lock could not be had) counts no attempt against any
/// row, but says why on the table's due entries, so `koe5_queue_status.last_error`
/// shows it.
fn record_failure(schema: &str, relid: pg_sys::Oid, message: &str) {
    let sql = format!("SELECT {schema}.koe5__note_batch_failure($1::pg_catalog.regclass, $2)");
    let _ = in_transaction(|| Spi::run_with_args(&sql, &[DatumWithOid::from(relid), DatumWithOid::from(message)]));
}

/// Whether the worker said once that this database's koe5 needs updating.
static OLD_VERSION_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The schema of the koe5 extension in this database (None if it is not installed, or
/// too old to say what is due) and the registered tables that have due entries, with
/// their owners.
fn due_tables() -> Option<(String, Vec<(pg_sys::Oid, pg_sys::Oid)>)> {
    let (schema, current) = Spi::connect(|c| {
        c.select(
            // The worker runs as a superuser: it calls koe5__due_tables() only if that is
            // the extension's own (a member of it), never one a role made in its schema.
            "SELECT pg_catalog.quote_ident(n.nspname), e.extversion,
                    EXISTS (SELECT FROM pg_catalog.pg_depend d
                            WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                              AND d.objid = pg_catalog.to_regprocedure(pg_catalog.quote_ident(n.nspname) || '.koe5__due_tables()')
                              AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                              AND d.refobjid = e.oid AND d.deptype = 'e')
             FROM pg_catalog.pg_extension e
             JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
             WHERE e.extname = 'koe5'",
            None,
            &[],
        )
        .ok()?
        .next()
        .and_then(|r| {
            let schema = r.get::<String>(1).ok().flatten()?;
            let version = r.get::<String>(2).ok().flatten().unwrap_or_default();
            let current = r.get::<bool>(3).ok().flatten().unwrap_or(false);
            Some((schema, if current { Ok(()) } else { Err(version) }))
        })
    })?;
    // What is due is the extension's to say (koe5__due_tables(), since 0.4.0): a database
    // whose koe5 is older, not yet updated, keeps its queue (writers go on adding to it)
    // until ALTER EXTENSION UPDATE. 0.1.0 had no queue.
    if let Err(version) = current {
        if version != "0.1.0" && !OLD_VERSION_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            warning!(
                "koe5 worker: koe5 {version} in this database predates this library's queue functions; \
                 its queue is embedded again after ALTER EXTENSION koe5 UPDATE"
            );
        }
        return None;
    }
    let tables = Spi::connect(|c| {
        c.select(&format!("SELECT d.relid, d.owner FROM {schema}.koe5__due_tables() AS d"), None, &[])
            .map(|rows| {
                rows.filter_map(|r| Some((r.get::<pg_sys::Oid>(1).ok()??, r.get::<pg_sys::Oid>(2).ok()??))).collect()
            })
            .unwrap_or_default()
    });
    Some((schema, tables))
}

/// Runs `f` in a transaction of its own. An ERROR inside is logged as a WARNING and
/// rolls the transaction back (`Err` with its message); the worker goes on.
fn in_transaction<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe + std::panic::RefUnwindSafe) -> Result<T, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let out = PgTryBuilder::new(|| {
        // The worker is a superuser: resolve nothing through the database's search_path.
        Spi::run("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)")
            .map_err(|e| e.to_string())?;
        Ok(f())
    })
    .catch_others(|e| {
        let message = match &e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r.message().to_owned(),
            CaughtError::RustPanic { ereport, .. } => ereport.message().to_owned(),
        };
        warning!("koe5 worker: {message}");
        Err(message)
    })
    .execute();
    unsafe {
        match out {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    out
}

/// Runs `f` as `owner` in a security-restricted operation with a settings nest level
/// of its own and a safe search_path, as PostgreSQL runs maintenance commands on a
/// user's table.
fn as_owner<T>(owner: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
    let scope = crate::security::Scope::pinned();
    scope.become_role(owner);
    // A row or table lock held by a long transaction must not stall every table:
    // past the timeout the batch fails, is logged, and the table waits its turn.
    let _ = Spi::run("SELECT pg_catalog.set_config('lock_timeout', '5s', true)");
    f()
}

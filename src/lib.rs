//! koe5: KoE5 Korean text embeddings computed inside PostgreSQL.
//!
//! This crate is the PostgreSQL glue only; the model itself lives in the pgrx-free
//! `koe5-core` crate. Its modules:
//!
//! - `api`: the SQL functions (declared in `sql/surface/`, one file per concept);
//! - `gucs`: the settings;
//! - `session`: what a backend keeps across calls: the model, its query cache, the
//!   backend's counters, the postmaster's preloaded model, compute threads and heap;
//! - `encoding`: text arguments converted from the server encoding to UTF-8;
//! - `ereport`: the core's errors raised as PostgreSQL errors with a SQLSTATE;
//! - `queue`: the queue's deletions, which its users may not make themselves;
//! - `security`: running as a table's owner;
//! - `textsearch`: the Korean text search parser and dictionary (sql/surface/textsearch.sql);
//! - `worker`: the background worker that embeds the queue.

// A call into C that may unwind must go through pgrx's guards, which turn a longjmp
// out of PostgreSQL into a Rust panic and back.
#![deny(ffi_unwind_calls)]

// pgrx turns a Rust panic into a PostgreSQL ERROR by unwinding to its guard at the
// function's boundary; with panic = "abort" any panic would kill the server process.
#[cfg(not(panic = "unwind"))]
compile_error!("koe5 must be built with panic = \"unwind\" (see [profile.*] in Cargo.toml)");

use pgrx::prelude::*;

mod api;
mod encoding;
mod ereport;
mod gucs;
mod queue;
mod security;
mod session;
mod textsearch;
mod worker;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

pgrx::pg_module_magic!(name, version);

// The SQL surface, one file per concept (the Rust functions are declared there, with
// `sql = false` here). A fresh install runs them in this order; the released scripts
// in sql/ (koe5--0.1.0.sql and the update scripts) are only for ALTER EXTENSION UPDATE,
// and the upgrade test proves both paths give the same objects.
extension_sql_file!("../sql/surface/embedding.sql", name = "embedding");
extension_sql_file!("../sql/surface/model.sql", name = "model", requires = ["embedding"]);
extension_sql_file!("../sql/surface/monitoring.sql", name = "monitoring", requires = ["model"]);
extension_sql_file!("../sql/surface/chunking.sql", name = "chunking", requires = ["monitoring"]);
extension_sql_file!("../sql/surface/pipeline.sql", name = "pipeline", requires = ["chunking"]);
extension_sql_file!("../sql/surface/trigger.sql", name = "trigger", requires = ["pipeline"]);
extension_sql_file!("../sql/surface/backfill.sql", name = "backfill", requires = ["trigger"]);
extension_sql_file!("../sql/surface/reranking.sql", name = "reranking", requires = ["backfill"]);
extension_sql_file!("../sql/surface/textsearch.sql", name = "textsearch", requires = ["reranking"]);
extension_sql_file!("../sql/surface/hybrid.sql", name = "hybrid", requires = ["textsearch"]);
extension_sql_file!("../sql/surface/citus.sql", name = "citus", requires = ["hybrid"]);
extension_sql_file!("../sql/surface/queue.sql", name = "queue", requires = ["citus"], finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // pgrx captures a backtrace for every error raised through Rust when the server's
    // environment has RUST_BACKTRACE set, and prints it as the error's DETAIL: 30
    // frames of koe5's internals for a plain cancel. Off unless the administrator asks
    // for it with RUST_LIB_BACKTRACE. SAFETY: _PG_init runs before koe5 starts any
    // thread in this process.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    gucs::init();
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        worker::register();
        session::preload();
    }
}

/// Hooks for `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    /// The test server preloads koe5 so the background worker runs; it embeds the
    /// queue of its own database, which one client test creates.
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'koe5'",
            "koe5.worker_enabled = on",
            "koe5.worker_database = 'koe5_worker_test'",
            "koe5.worker_naptime = 200",
            // A slow trigger's batch is cut here (worker test); normal test batches take
            // milliseconds.
            "koe5.worker_batch_timeout = '2s'",
            // The parity tests hold koe5 to the reference's f32 vectors; bf16 has a test
            // of its own.
            "koe5.precision = 'f32'",
        ]
    }
}

//! koe5: KoE5 Korean text embeddings computed inside PostgreSQL.
//!
//! This crate is the PostgreSQL glue only: settings (`gucs`), per-backend model and
//! threads (`backend`), server-encoding conversion (`text`), error reporting
//! (`errors`), the SQL functions (`api`, declared in `sql/koe5.sql`), the queue's
//! deletions (`queue`), running as a table's owner (`security`) and the background
//! worker (`worker`). The model
//! itself lives in the pgrx-free `koe5-core` crate.

use pgrx::prelude::*;

mod api;
mod backend;
mod errors;
mod gucs;
mod queue;
mod security;
mod text;
mod worker;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/koe5.sql", name = "koe5_api");
// Each version's additions are its upgrade script, run after the 0.1.0 surface on a
// fresh install: installing and upgrading give the same extension.
extension_sql_file!("../sql/koe5--0.1.0--0.2.0.sql", name = "koe5_0_2_0", requires = ["koe5_api"]);
extension_sql_file!("../sql/koe5--0.2.0--0.3.0.sql", name = "koe5_0_3_0", requires = ["koe5_0_2_0"], finalize);

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
        backend::preload();
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

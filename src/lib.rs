//! koe5: KoE5 Korean text embeddings computed inside PostgreSQL.
//!
//! This crate is the PostgreSQL glue only: settings (`gucs`), per-backend model and
//! threads (`backend`), server-encoding conversion (`text`), error reporting
//! (`errors`) and the SQL functions (`api`, declared in `sql/koe5.sql`). The model
//! itself lives in the pgrx-free `koe5-core` crate.

use pgrx::prelude::*;

mod api;
mod backend;
mod errors;
mod gucs;
mod text;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/koe5.sql", name = "koe5_api", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
}

/// Hooks for `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}

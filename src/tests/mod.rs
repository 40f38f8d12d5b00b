//! The extension's tests (`cargo pgrx test`), one file per concept. A `#[pg_test]` runs
//! inside the test server; pgrx-tests calls it as `tests.<name>()`, so each file keeps
//! its in-server tests in a `#[pg_schema] mod tests` (the schema takes the module's
//! name). Tests that need connections of their own (other databases, other sessions,
//! a cancel from outside) are plain `#[test]`s in the file's `mod client`. What they
//! share is in `harness`. The SQL surface as a user sees it, error messages included,
//! is the pg_regress tier: tests/pg_regress.
//!
//! - `parity`: vectors and token counts through SQL against the reference, single and
//!   batch forms, bf16, the long-context and real-weights models, parallel workers.
//! - `encodings`: EUC_KR and SQL_ASCII databases.
//! - `functions`: NULLs, array arguments at their edges, koe5_similarity and
//!   koe5_chunks with their errors, how the functions are declared for the planner.
//! - `model`: koe5_model_info, broken and hostile model directories.
//! - `cache`: the query cache when a plan evaluates koe5_query per row.
//! - `cancel`: cancel and statement_timeout during a long batch, compute threads.
//! - `privileges`: superuser-only settings and their delegation, koe5 in a schema of its
//!   own, what a plain role may lock and delete, a hostile search_path.
//! - `download`: model ids in the Hugging Face cache, koe5_download().
//! - `pipelines`: generated columns, koe5_embed_trigger, the pgvector recipes.
//! - `queue`: the queue, the background worker and koe5_backfill.
//! - `reranking`: koe5_rerank_score and koe5_rerank against the reference, bf16,
//!   EUC_KR, koe5_reranker_info, wrong directories.
//! - `textsearch`: the Korean text search configuration `koe5` (parser, dictionaries).
//! - `hybrid`: koe5_hybrid_search against a brute-force fusion, its plans (HNSW and
//!   GIN), quoted names, a hostile search_path, row-level security, its errors.
//! - `citus`: Citus tables told apart and refused where unsupported (a stand-in catalog;
//!   stress/citus.sh runs a real cluster).
//! - `upgrade`: upgrades from released versions equal a fresh install.
//! - `reliability`: load, replaced model files, random text, huge inputs, koe5.preload.

mod harness;

mod cache;
mod cancel;
mod citus;
mod download;
mod encodings;
mod functions;
mod hybrid;
mod model;
mod parity;
mod pipelines;
mod privileges;
mod queue;
mod reranking;
mod textsearch;
mod upgrade;

mod reliability;

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Lets client-side tests point this backend's Hugging Face settings elsewhere.
    #[pg_extern]
    fn set_env_for_test(name: &str, value: &str) {
        unsafe { std::env::set_var(name, value) };
    }

    /// Lets client-side tests start the test server the way #[pg_test]s do.
    #[pg_test]
    fn server_is_up() {}
}

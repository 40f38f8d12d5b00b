//! What a backend keeps across calls. A backend is one single-threaded process, so
//! this state lives in thread-locals, in Rust's heap (never in a PostgreSQL memory
//! context):
//!
//! - `model`: the loaded model, loaded on first use and replaced when the settings
//!   name another, and the SHA-256 of a weights file;
//! - `reranker`: the loaded cross-encoder, kept the same way;
//! - `provenance`: where a loaded model came from (directory, files, the postmaster);
//! - `query_cache`: the recent query embeddings of a loaded model;
//! - `stats`: what the backend has embedded;
//! - `preload`: the models the postmaster loads before any backend exists, which every
//!   backend inherits;
//! - `threads`: the compute threads, the signals they block, the one other kind of
//!   thread koe5 starts, and the interrupt check on the backend's own thread;
//! - `memory`: how the heap is tuned for forward passes and given back after them.

mod memory;
mod model;
mod preload;
mod provenance;
mod query_cache;
mod reranker;
mod stats;
mod threads;

pub use memory::release_free_memory;
pub use model::{loaded, model, resolve_dir, weights_sha256};
pub use preload::preload;
pub use reranker::{loaded_reranker, reranker, resolve_reranker_dir};
pub use stats::{count_embedded, stats};
pub use threads::{check_interrupts, spawn};

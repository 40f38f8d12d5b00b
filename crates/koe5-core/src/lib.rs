//! koe5-core: KoE5 (and other XLM-R sentence-transformers models) on the CPU, with no
//! PostgreSQL in sight. Text → tokens → encoder → pooling → normalisation, in batches
//! under a token budget. The PostgreSQL extension is a thin layer over [`Embedder`].
//!
//! Unsafe code (the SIMD kernels, raw output buffers shared between threads, reading
//! file bytes into f32 buffers) states its contract where it is: every `unsafe fn` has
//! a `# Safety` section and every `unsafe` block a `SAFETY:` comment, enforced below.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod batch;
pub mod chunk;
pub mod config;
mod embedder;
pub mod error;
pub mod files;
pub mod hub;
pub mod kernels;
pub mod lexical;
pub mod model;
pub mod pooling;
mod precision;
pub mod reranker;
mod similarity;
pub mod tokenize;
pub mod weights;

#[cfg(test)]
mod test_util;

pub use batch::{DEFAULT_MAX_BATCH, DEFAULT_TOKEN_BUDGET};
pub use chunk::Chunk;
pub use config::ModelSpec;
pub use embedder::{start_elementwise_threads, Embedder};
pub use error::{Error, ErrorKind, Result};
pub use files::{file_stamp, sha256_file, FileStamp};
pub use pooling::Pooling;
pub use precision::Precision;
pub use reranker::{Reranker, RerankerSpec, ScoreActivation};
pub use similarity::cosine;
pub use tokenize::{Kind, TextTokenizer};

//! koe5-core: KoE5 (and other XLM-R sentence-transformers models) on the CPU, with no
//! PostgreSQL in sight. Text → tokens → encoder → pooling → normalisation, in batches
//! under a token budget. The PostgreSQL extension is a thin layer over [`Embedder`].

pub mod batch;
pub mod chunk;
pub mod config;
pub mod error;
pub mod files;
pub mod hub;
pub mod kernels;
pub mod model;
pub mod pooling;
pub mod precision;
pub mod tokenize;
pub mod weights;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

pub use chunk::Chunk;
pub use config::ModelSpec;
pub use error::{Error, ErrorKind, Result};
pub use pooling::Pooling;
pub use precision::Precision;
pub use tokenize::{Kind, TextTokenizer};

/// Tokens per forward pass (texts packed back to back, no padding). A forward pass
/// holds its activations once, in buffers every layer reuses: `budget × 10 × hidden`
/// f32 values (the layer's input, Q/K/V, attention's output, its normalised sum, the
/// FFN's expansion) and a bf16 copy of the widest input, about 96 MiB for KoE5;
/// attention keeps only a few rows of scores per task. The largest step between two
/// interrupt checks (the FFN expansion of one batch) is then about 17 GFLOP: a cancel
/// landed within 0.052 s at KoE5's size on 2 cores (stress/run.sh measures it).
pub const DEFAULT_TOKEN_BUDGET: usize = 2048;
/// Inputs per forward pass at most.
pub const DEFAULT_MAX_BATCH: usize = 32;

/// A loaded model: tokenizer, encoder weights, pooling.
pub struct Embedder {
    pub spec: ModelSpec,
    tokenizer: TextTokenizer,
    encoder: model::Encoder,
    pub precision: Precision,
    /// SHA-256 of the weights file as this model read it.
    pub weights_sha256: String,
    pub load_time: Duration,
}

impl Embedder {
    /// Loads the sentence-transformers model in `dir`.
    /// Loads the sentence-transformers model in `dir` for exact f32 inference.
    pub fn load(dir: &Path) -> Result<Embedder> {
        Embedder::load_with(dir, Precision::F32, &mut || {})
    }

    /// Loads the model in `dir`, calling `interrupt` between tensors. The weights are
    /// read, not memory-mapped: a file truncated or rewritten meanwhile is an error,
    /// never a fault (see [`weights`]).
    pub fn load_with(dir: &Path, precision: Precision, interrupt: &mut dyn FnMut()) -> Result<Embedder> {
        let start = Instant::now();
        let spec = ModelSpec::read(dir)?;
        let tokenizer = TextTokenizer::from_file(&spec.tokenizer, spec.max_tokens, spec.do_lower_case)?;
        let max_id = tokenizer.max_id();
        if max_id as usize >= spec.encoder.vocab_size {
            return Err(Error::config(
                &spec.tokenizer,
                format!(
                    "its token ids reach {max_id}, but the model's vocabulary has {} rows",
                    spec.encoder.vocab_size
                ),
            )
            .with_hint("tokenizer.json and config.json belong to different models."));
        }
        let device = Device::Cpu;
        // A file rewritten in place while it is read would give a half-old, half-new
        // model: its size and modification time must not change during the load.
        let before = file_stamp(&spec.weights)?;
        let (encoder, weights_sha256) = {
            let w = weights::read_f32(&spec.dir, &spec.weights, &model::stored_transposed, interrupt)?;
            let vb = VarBuilder::from_tensors(w.tensors, DType::F32, &device);
            let encoder = model::Encoder::new(&spec.encoder, spec.activation, precision, vb)
                .map_err(|e| Error::weights(&spec.weights, e))?;
            (encoder, w.sha256)
        };
        if file_stamp(&spec.weights)? != before {
            return Err(Error::new(
                ErrorKind::Io,
                format!("model file \"{}\" changed while it was being loaded", spec.weights.display()),
            )
            .with_hint("Replace a model by renaming a complete new directory into place, then retry."));
        }
        Ok(Embedder { spec, tokenizer, encoder, precision, weights_sha256, load_time: start.elapsed() })
    }

    pub fn dimension(&self) -> usize {
        self.encoder.hidden_size()
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The token ids the model sees for `text` (prefixed, truncated).
    pub fn tokenize(&self, kind: Kind, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(kind, text)
    }

    /// Tokens of the prefixed text before truncation, special tokens included.
    pub fn token_count(&self, kind: Kind, text: &str, interrupt: &mut dyn FnMut()) -> Result<usize> {
        self.tokenizer.count(kind, text, interrupt)
    }

    /// Splits `doc` into chunks that each fit the model: see [`TextTokenizer::chunks`].
    pub fn chunks(
        &self,
        kind: Kind,
        doc: &str,
        max_tokens: usize,
        overlap_tokens: usize,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<Chunk>> {
        self.tokenizer.chunks(kind, doc, max_tokens, overlap_tokens, interrupt)
    }

    pub fn embed_one(&self, kind: Kind, text: &str, interrupt: &mut dyn FnMut()) -> Result<Vec<f32>> {
        let ids = self.tokenize(kind, text)?;
        Ok(self.embed_ids(&[ids], interrupt)?.pop().expect("one input gives one vector"))
    }

    /// Embeds `texts` in batches under the default token budget. Results are
    /// in input order. `interrupt` runs between tokenizations and between layers.
    pub fn embed_many(&self, kind: Kind, texts: &[&str], interrupt: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
        self.embed_many_with(kind, texts, DEFAULT_TOKEN_BUDGET, DEFAULT_MAX_BATCH, interrupt)
    }

    pub fn embed_many_with(
        &self,
        kind: Kind,
        texts: &[&str],
        token_budget: usize,
        max_batch: usize,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<Vec<f32>>> {
        let mut seqs = Vec::with_capacity(texts.len());
        for t in texts {
            interrupt();
            seqs.push(self.tokenizer.encode_with(kind, t, interrupt)?);
        }
        let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for group in batch::plan(&lens, token_budget, max_batch) {
            let batch_seqs: Vec<Vec<u32>> = group.iter().map(|&i| std::mem::take(&mut seqs[i])).collect();
            let vectors = self.embed_ids(&batch_seqs, interrupt)?;
            for (i, v) in group.into_iter().zip(vectors) {
                out[i] = Some(v);
            }
        }
        Ok(out.into_iter().map(|v| v.expect("every input is in one batch")).collect())
    }

    /// One forward pass over token sequences, packed back to back (no padding).
    pub fn embed_ids(&self, seqs: &[Vec<u32>], interrupt: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
        if seqs.is_empty() {
            return Ok(vec![]);
        }
        let ids = seqs.concat();
        let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        let hidden = self.encoder.forward(&ids, &lens, interrupt)?;
        let dim = self.dimension();
        let mut start = 0;
        lens.iter()
            .map(|&len| {
                let rows = &hidden[start * dim..(start + len) * dim];
                start += len;
                let mut v = self.spec.pooling.pool(rows, len, dim);
                if self.spec.normalize {
                    pooling::normalize(&mut v);
                }
                v
            })
            .map(|v| {
                // Weights with Inf, NaN or values near f32's limit give vectors that are
                // not numbers: a damaged model, never a vector to store.
                if v.iter().all(|x| x.is_finite()) {
                    Ok(v)
                } else {
                    Err(Error::new(
                        ErrorKind::CorruptWeights,
                        format!("the model in \"{}\" computed a vector that is not finite", self.spec.dir.display()),
                    )
                    .with_detail("Its weights hold infinite, NaN or overflowing values.")
                    .with_hint("The model files are damaged or not a trained model; download them again."))
                }
            })
            .collect()
    }
}

/// Starts candle's pool for element-wise work now, on the calling thread (so the
/// threads inherit its signal mask), instead of on first use. Its size is
/// `CANDLE_NUM_THREADS` (else RAYON_NUM_THREADS, else one per physical core).
pub fn start_elementwise_threads() {
    candle_core::utils::barrier_pool();
}

/// Which file a path names (device, inode), with its size and modification time:
/// enough to notice that it was rewritten in place or replaced by a rename.
pub type FileStamp = (u64, u64, u64, SystemTime);

pub fn file_stamp(path: &Path) -> Result<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    Ok((meta.dev(), meta.ino(), meta.len(), meta.modified().map_err(|e| Error::io(path, e))?))
}

/// SHA-256 of a model file, hex-encoded, read in 1 MiB pieces (opened with the checks of
/// [`files`], inside the directory that holds it); `interrupt` runs between pieces.
pub fn sha256_file(path: &Path, interrupt: &mut dyn FnMut()) -> Result<String> {
    use sha2::{Digest, Sha256};
    let (mut f, _) = files::open(path.parent().unwrap_or(Path::new("/")), path, u64::MAX)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        interrupt();
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Cosine similarity of two vectors of equal length; `None` when either is all zeros.
pub fn cosine(a: &[f32], b: &[f32]) -> Option<f32> {
    debug_assert_eq!(a.len(), b.len());
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return None;
    }
    Some((dot / (na.sqrt() * nb.sqrt())) as f32)
}

/// What the unit tests of several modules share.
#[cfg(test)]
mod test_util {
    /// Deterministic pseudo-random values in [-1, 1).
    pub fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect()
    }
}

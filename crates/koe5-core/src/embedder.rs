//! The facade of the crate: a loaded model ([`Embedder`]) that turns texts into
//! vectors (tokenize, batch under a token budget, encode, pool, normalise) and splits
//! documents into chunks that fit it.

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::batch::{self, DEFAULT_MAX_BATCH, DEFAULT_TOKEN_BUDGET};
use crate::chunk::{self, Chunk};
use crate::config::ModelSpec;
use crate::error::{Error, ErrorKind, Result};
use crate::files::{check_unchanged, file_stamp};
use crate::precision::Precision;
use crate::tokenize::{Kind, TextTokenizer};
use crate::{model, pooling, weights};

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
    /// Loads the sentence-transformers model in `dir` for exact f32 inference.
    pub fn load(dir: &Path) -> Result<Embedder> {
        Embedder::load_with(dir, Precision::F32, &mut || {})
    }

    /// Loads the model in `dir`, calling `interrupt` between tensors. The weights are
    /// read, not memory-mapped: a file truncated or rewritten meanwhile is an error,
    /// never a fault (see [`weights`]).
    pub fn load_with(dir: &Path, precision: Precision, interrupt: &mut dyn FnMut()) -> Result<Embedder> {
        let start = Instant::now();
        precision.check_supported()?;
        let spec = ModelSpec::read(dir)?;
        let tokenizer = TextTokenizer::from_file(&spec.tokenizer, spec.max_tokens, spec.do_lower_case)?;
        tokenizer.check_vocabulary(spec.encoder.vocab_size, &spec.tokenizer)?;
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
        check_unchanged(&spec.weights, &before)?;
        Ok(Embedder { spec, tokenizer, encoder, precision, weights_sha256, load_time: start.elapsed() })
    }

    pub fn dimension(&self) -> usize {
        self.encoder.hidden_size()
    }

    /// The model's tokenizer: the extension asks it whether long texts are tokenized
    /// exactly ([`TextTokenizer::exact_windows`]) and how far ([`TextTokenizer::hard_window`]).
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

    /// Splits `doc` into chunks that each fit the model: see [`chunk::chunks`].
    pub fn chunks(
        &self,
        kind: Kind,
        doc: &str,
        max_tokens: usize,
        overlap_tokens: usize,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<Chunk>> {
        chunk::chunks(&self.tokenizer, kind, doc, max_tokens, overlap_tokens, interrupt)
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

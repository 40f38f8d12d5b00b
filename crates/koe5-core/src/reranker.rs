//! Cross-encoder reranking: a loaded `XLMRobertaForSequenceClassification` with one
//! label ([`Reranker`]) that reads a query and a passage together and scores the
//! pair, as sentence-transformers' `CrossEncoder.predict` does. These are the
//! rerankers users pick for Korean (BAAI/bge-reranker-v2-m3, bge-reranker-base and
//! -large, their Korean fine-tunes): the XLM-R encoder the embedder runs, and a head
//! on the `<s>` token (dense, tanh, one output).
//!
//! The score is the model's configured activation of that output: config.json's
//! `sentence_transformers.activation_fn` (sigmoid unless it names identity), sigmoid
//! when it names none, as `CrossEncoder` defaults for one label. Pairs are tokenized
//! as its tokenizer call does (`TextTokenizer::encode_pair`), batched under a token
//! budget and packed without padding like the embedder's texts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::batch::{self, DEFAULT_MAX_BATCH, DEFAULT_TOKEN_BUDGET};
use crate::config::{is_sequence_classifier, read_encoder, Activation, EncoderConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::files::{self, check_unchanged, file_stamp};
use crate::precision::Precision;
use crate::tokenize::TextTokenizer;
use crate::{model, weights};

/// What turns the head's output into the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreActivation {
    /// `1 / (1 + e^-x)`: a score in (0, 1) (bge rerankers; CrossEncoder's default).
    Sigmoid,
    /// The raw output (a model whose config says `torch.nn.modules.linear.Identity`).
    Identity,
}

impl ScoreActivation {
    pub fn name(self) -> &'static str {
        match self {
            ScoreActivation::Sigmoid => "sigmoid",
            ScoreActivation::Identity => "identity",
        }
    }

    pub fn apply(self, logit: f32) -> f32 {
        match self {
            ScoreActivation::Sigmoid => 1.0 / (1.0 + (-logit).exp()),
            ScoreActivation::Identity => logit,
        }
    }
}

/// What koe5 needs to know about a cross-encoder directory before loading weights.
#[derive(Debug, Clone)]
pub struct RerankerSpec {
    pub dir: PathBuf,
    pub encoder: EncoderConfig,
    pub activation: Activation,
    pub score: ScoreActivation,
    /// Tokens per pair after truncation, special tokens included.
    pub max_tokens: usize,
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
}

impl RerankerSpec {
    /// Reads and checks the JSON files of `dir`. Cheap: no weights are touched.
    pub fn read(dir: &Path) -> Result<RerankerSpec> {
        let (raw, encoder, activation) = read_encoder(dir)?;
        let config_path = dir.join("config.json");
        if !is_sequence_classifier(&raw) {
            let embedder = files::present(&dir.join("modules.json"));
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "model in \"{}\" is {}, not a cross-encoder",
                    dir.display(),
                    if embedder { "an embedding model" } else { "not a sequence classifier" }
                ),
            )
            .with_detail("A reranker is an XLMRobertaForSequenceClassification with one label (config.json's architectures).")
            .with_hint("Set an embedding model as koe5.model_path, and a cross-encoder such as BAAI/bge-reranker-v2-m3 as koe5.reranker_path."));
        }
        let names: Vec<&str> =
            raw["architectures"].as_array().map(|a| a.iter().filter_map(|n| n.as_str()).collect()).unwrap_or_default();
        if !names.contains(&"XLMRobertaForSequenceClassification") {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("unsupported cross-encoder architecture {:?} in \"{}\"", names, config_path.display()),
            )
            .with_detail("koe5 reranks with XLMRobertaForSequenceClassification models (bge-reranker-v2-m3, bge-reranker-base/large and their fine-tunes)."));
        }
        // transformers' PretrainedConfig: id2label decides num_labels; 2 when neither is given.
        let labels = raw
            .get("id2label")
            .and_then(|m| m.as_object())
            .map(|m| m.len() as u64)
            .or_else(|| raw.get("num_labels").and_then(|n| n.as_u64()))
            .unwrap_or(2);
        if labels != 1 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("cross-encoder in \"{}\" has {labels} labels", dir.display()),
            )
            .with_detail("koe5 reranks with one-label heads, which give one relevance score per pair."));
        }
        let activation_fn = raw
            .get("sentence_transformers")
            .and_then(|s| s.get("activation_fn"))
            .or_else(|| raw.get("sbert_ce_default_activation_function"))
            .and_then(|v| v.as_str());
        let score = match activation_fn {
            None | Some("torch.nn.modules.activation.Sigmoid") => ScoreActivation::Sigmoid,
            Some("torch.nn.modules.linear.Identity") => ScoreActivation::Identity,
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("unsupported cross-encoder activation \"{other}\" in \"{}\"", config_path.display()),
                )
                .with_detail("koe5 scores with torch.nn.Sigmoid (the default for one label) or torch.nn.Identity."))
            }
        };
        // CrossEncoder truncates at the tokenizer's model_max_length, capped by the
        // position table; koe5 caps it by the positions the table can number.
        let tok_config = dir.join("tokenizer_config.json");
        let model_max = if files::present(&tok_config) {
            let value: serde_json::Value = serde_json::from_slice(&files::read(dir, &tok_config, files::MAX_JSON)?)
                .map_err(|e| Error::config(&tok_config, e))?;
            value.get("model_max_length").and_then(|v| v.as_f64()).filter(|v| *v >= 1.0).map(|v| v.min(1e9) as usize)
        } else {
            None
        };
        let max_tokens = model_max.unwrap_or(usize::MAX).min(encoder.max_tokens());
        if max_tokens < 5 {
            return Err(Error::config(&tok_config, "model_max_length must be at least 5 for pairs"));
        }
        let weights = dir.join("model.safetensors");
        files::open(dir, &weights, u64::MAX)?;
        let tokenizer = dir.join("tokenizer.json");
        files::open(dir, &tokenizer, u64::MAX)?;
        Ok(RerankerSpec { dir: dir.to_path_buf(), encoder, activation, score, max_tokens, weights, tokenizer })
    }
}

/// The classification head: `out_proj(tanh(dense(h<s>)))`.
struct Head {
    /// `hidden × hidden`, input-major (the weights reader stores `.dense.weight` transposed).
    dense_w: Vec<f32>,
    dense_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: f32,
}

impl Head {
    fn logit(&self, x: &[f32]) -> f32 {
        let h = self.dense_b.len();
        let mut y = self.dense_b.clone();
        for (i, &xi) in x.iter().enumerate() {
            let row = &self.dense_w[i * h..(i + 1) * h];
            for (yj, &w) in y.iter_mut().zip(row) {
                *yj += xi * w;
            }
        }
        y.iter().zip(&self.out_w).map(|(&v, &w)| v.tanh() * w).sum::<f32>() + self.out_b
    }
}

/// A loaded cross-encoder.
pub struct Reranker {
    pub spec: RerankerSpec,
    tokenizer: TextTokenizer,
    encoder: model::Encoder,
    head: Head,
    pub precision: Precision,
    /// SHA-256 of the weights file as this model read it.
    pub weights_sha256: String,
    pub load_time: Duration,
}

impl Reranker {
    /// Loads the cross-encoder in `dir` for exact f32 inference.
    pub fn load(dir: &Path) -> Result<Reranker> {
        Reranker::load_with(dir, Precision::F32, &mut || {})
    }

    /// Loads the cross-encoder in `dir`, calling `interrupt` between tensors (read,
    /// not memory-mapped, as the embedder's weights are).
    pub fn load_with(dir: &Path, precision: Precision, interrupt: &mut dyn FnMut()) -> Result<Reranker> {
        let start = Instant::now();
        precision.check_supported()?;
        let spec = RerankerSpec::read(dir)?;
        let tokenizer = TextTokenizer::from_file(&spec.tokenizer, spec.max_tokens, false)?;
        tokenizer.check_vocabulary(spec.encoder.vocab_size, &spec.tokenizer)?;
        let before = file_stamp(&spec.weights)?;
        let w = weights::read_f32(&spec.dir, &spec.weights, &model::stored_transposed, interrupt)?;
        let vb = VarBuilder::from_tensors(w.tensors, DType::F32, &Device::Cpu);
        let h = spec.encoder.hidden_size;
        let missing = |what: &str| {
            Error::new(ErrorKind::Unsupported, format!("cross-encoder in \"{}\" has no {what}", dir.display()))
                .with_detail("Its weights lack the classification head (classifier.dense, classifier.out_proj) of XLMRobertaForSequenceClassification.")
        };
        let tensor = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            if !vb.contains_tensor(name) {
                return Err(missing(name));
            }
            let t = vb.get(shape, name).map_err(|e| Error::weights(&spec.weights, e))?;
            t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| Error::weights(&spec.weights, e))
        };
        let head = Head {
            dense_w: tensor("classifier.dense.weight", &[h, h])?,
            dense_b: tensor("classifier.dense.bias", &[h])?,
            out_w: tensor("classifier.out_proj.weight", &[1, h])?,
            out_b: tensor("classifier.out_proj.bias", &[1])?[0],
        };
        let encoder = model::Encoder::new(&spec.encoder, spec.activation, precision, vb)
            .map_err(|e| Error::weights(&spec.weights, e))?;
        check_unchanged(&spec.weights, &before)?;
        Ok(Reranker { spec, tokenizer, encoder, head, precision, weights_sha256: w.sha256, load_time: start.elapsed() })
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The token ids the model sees for the pair.
    pub fn pair_ids(&self, query: &str, passage: &str, interrupt: &mut dyn FnMut()) -> Result<Vec<u32>> {
        self.tokenizer.encode_pair(query, passage, interrupt)
    }

    /// The head's raw outputs for token sequences, in one forward pass (packed, no padding).
    pub fn logits_ids(&self, seqs: &[Vec<u32>], interrupt: &mut dyn FnMut()) -> Result<Vec<f32>> {
        if seqs.is_empty() {
            return Ok(vec![]);
        }
        let ids = seqs.concat();
        let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        let hidden = self.encoder.forward(&ids, &lens, interrupt)?;
        let h = self.encoder.hidden_size();
        let mut start = 0;
        lens.iter()
            .map(|&len| {
                let logit = self.head.logit(&hidden[start * h..(start + 1) * h]);
                start += len;
                if logit.is_finite() {
                    Ok(logit)
                } else {
                    Err(Error::new(
                        ErrorKind::CorruptWeights,
                        format!(
                            "the cross-encoder in \"{}\" computed a score that is not finite",
                            self.spec.dir.display()
                        ),
                    )
                    .with_detail("Its weights hold infinite, NaN or overflowing values."))
                }
            })
            .collect()
    }

    /// The raw output for each passage against `query`, in input order, in batches
    /// under `token_budget` tokens and `max_batch` pairs. `interrupt` runs between
    /// tokenizations and between layers.
    pub fn logits_with(
        &self,
        query: &str,
        passages: &[&str],
        token_budget: usize,
        max_batch: usize,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<f32>> {
        let mut seqs = Vec::with_capacity(passages.len());
        for p in passages {
            interrupt();
            seqs.push(self.pair_ids(query, p, interrupt)?);
        }
        let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        let mut out = vec![f32::NAN; passages.len()];
        for group in batch::plan(&lens, token_budget, max_batch) {
            let batch_seqs: Vec<Vec<u32>> = group.iter().map(|&i| std::mem::take(&mut seqs[i])).collect();
            for (i, l) in group.into_iter().zip(self.logits_ids(&batch_seqs, interrupt)?) {
                out[i] = l;
            }
        }
        Ok(out)
    }

    /// The score of each passage against `query` (the model's activation of its
    /// output), in input order, under the default token budget.
    pub fn rerank(&self, query: &str, passages: &[&str], interrupt: &mut dyn FnMut()) -> Result<Vec<f32>> {
        let logits = self.logits_with(query, passages, DEFAULT_TOKEN_BUDGET, DEFAULT_MAX_BATCH, interrupt)?;
        Ok(logits.into_iter().map(|l| self.spec.score.apply(l)).collect())
    }
}

//! Reading a sentence-transformers model directory: which files it must hold and
//! what its JSON files say about the encoder, pooling, normalisation and length.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::files;
use crate::pooling::Pooling;

/// The two encoder families koe5 runs. They share one network and Hugging Face's
/// tensor names; they differ in how tokens are numbered for the position table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `xlm-roberta` (KoE5, multilingual-e5-base/large, KURE-v1, BGE-M3): positions
    /// count non-pad tokens from `pad_token_id + 1`.
    XlmRoberta,
    /// `bert` (multilingual-e5-small as intfloat publishes it): positions count every
    /// token from 0.
    Bert,
}

impl Architecture {
    pub fn from_model_type(model_type: &str) -> Option<Architecture> {
        match model_type {
            "xlm-roberta" => Some(Architecture::XlmRoberta),
            "bert" => Some(Architecture::Bert),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Architecture::XlmRoberta => "xlm-roberta",
            Architecture::Bert => "bert",
        }
    }
}

/// The subset of Hugging Face's `config.json` that an XLM-R or BERT encoder needs.
/// Field names are HF's own, so the file deserialises as it is.
#[derive(Debug, Clone, Deserialize)]
pub struct EncoderConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "one")]
    pub type_vocab_size: usize,
    #[serde(default = "one_u32")]
    pub pad_token_id: u32,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn one() -> usize {
    1
}
fn one_u32() -> u32 {
    1
}
/// Hugging Face's default for both XLMRobertaConfig and BertConfig (KoE5's config.json
/// says 1e-5 explicitly).
fn default_eps() -> f64 {
    1e-12
}
fn absolute() -> String {
    "absolute".into()
}

/// The activation named by `hidden_act`. HF's "gelu" is the exact erf form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    GeluErf,
    GeluTanh,
}

impl EncoderConfig {
    pub fn activation(&self) -> Option<Activation> {
        match self.hidden_act.as_str() {
            "gelu" => Some(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            _ => None,
        }
    }

    /// The family `model_type` names ([`ModelSpec::read`] refuses any other).
    pub fn architecture(&self) -> Architecture {
        Architecture::from_model_type(&self.model_type).unwrap_or(Architecture::XlmRoberta)
    }

    /// Tokens the position table allows: XLM-R positions start at pad + 1, so 514
    /// positions leave 512 usable tokens; BERT's start at 0 and use them all.
    pub fn max_tokens(&self) -> usize {
        match self.architecture() {
            Architecture::Bert => self.max_position_embeddings,
            Architecture::XlmRoberta => self.max_position_embeddings.saturating_sub(self.pad_token_id as usize + 1),
        }
    }
}

/// Everything koe5 needs to know about a model directory before loading weights.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub dir: PathBuf,
    pub encoder: EncoderConfig,
    pub activation: Activation,
    pub pooling: Pooling,
    pub normalize: bool,
    /// Tokens per input after truncation, special tokens included.
    pub max_tokens: usize,
    pub do_lower_case: bool,
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
struct SentenceConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, path: &Path) -> Result<T> {
    let bytes = files::read(dir, path, files::MAX_JSON)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::config(path, e))
}

/// `path` is a regular file koe5 may open (see [`files`]).
fn require_file(dir: &Path, path: &Path) -> Result<()> {
    files::open(dir, path, u64::MAX).map(drop)
}

/// A module entry may only name a subdirectory of the model directory: a path in a
/// JSON file must never make the server read files elsewhere.
fn module_dir(dir: &Path, modules_json: &Path, rel: &str) -> Result<PathBuf> {
    let rel_path = Path::new(rel);
    let safe = rel_path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if !safe {
        return Err(Error::config(modules_json, format!("module path \"{rel}\" leaves the model directory")));
    }
    Ok(dir.join(rel_path))
}

/// Reads and checks `dir`'s config.json: the encoder an embedding model and a
/// cross-encoder share. Returns the raw JSON too (for the fields each adds).
pub(crate) fn read_encoder(dir: &Path) -> Result<(serde_json::Value, EncoderConfig, Activation)> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::MissingFile,
                format!("model path \"{}\" is not a directory", dir.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::missing("model directory", dir)),
        Err(e) => {
            return Err(Error::new(
                ErrorKind::Io,
                format!("could not access model directory \"{}\": {e}", dir.display()),
            )
            .with_hint("The directory must be readable by the operating-system user that runs the PostgreSQL server."))
        }
    }

    let config_path = dir.join("config.json");
    let raw: serde_json::Value = read_json(dir, &config_path)?;
    let model_type = raw.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    let Some(architecture) = Architecture::from_model_type(model_type) else {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("unsupported model type \"{model_type}\" in \"{}\"", config_path.display()),
        )
        .with_detail(
            "koe5 runs XLM-RoBERTa encoders (model_type \"xlm-roberta\") such as KoE5 and multilingual-e5-base/large, \
                 and BERT encoders (model_type \"bert\") such as multilingual-e5-small.",
        ));
    };
    // A BERT config that names no pad token means 0 (BertConfig's default).
    let mut raw = raw;
    if architecture == Architecture::Bert && raw.get("pad_token_id").is_none() {
        raw["pad_token_id"] = 0.into();
    }
    let encoder: EncoderConfig = serde_json::from_value(raw.clone()).map_err(|e| Error::config(&config_path, e))?;
    let activation = encoder.activation().ok_or_else(|| {
        Error::new(
            ErrorKind::Unsupported,
            format!("unsupported activation \"{}\" in \"{}\"", encoder.hidden_act, config_path.display()),
        )
    })?;
    if encoder.position_embedding_type != "absolute" {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "unsupported position embedding type \"{}\" in \"{}\"",
                encoder.position_embedding_type,
                config_path.display()
            ),
        ));
    }
    for (name, value) in [
        ("hidden_size", encoder.hidden_size),
        ("intermediate_size", encoder.intermediate_size),
        ("num_hidden_layers", encoder.num_hidden_layers),
        ("vocab_size", encoder.vocab_size),
        ("type_vocab_size", encoder.type_vocab_size),
    ] {
        if value == 0 {
            return Err(Error::config(&config_path, format!("{name} must be at least 1")));
        }
    }
    if !(encoder.layer_norm_eps.is_finite() && encoder.layer_norm_eps > 0.0) {
        return Err(Error::config(&config_path, "layer_norm_eps must be a positive number"));
    }
    if encoder.num_attention_heads == 0 || !encoder.hidden_size.is_multiple_of(encoder.num_attention_heads) {
        return Err(Error::config(&config_path, "hidden_size is not a multiple of num_attention_heads"));
    }
    if encoder.max_tokens() < 3 {
        return Err(Error::config(&config_path, "max_position_embeddings is too small"));
    }

    Ok((raw, encoder, activation))
}

/// Whether config.json names a task head for classification (a cross-encoder).
pub(crate) fn is_sequence_classifier(raw: &serde_json::Value) -> bool {
    raw.get("architectures")
        .and_then(|a| a.as_array())
        .is_some_and(|a| a.iter().any(|n| n.as_str().is_some_and(|n| n.ends_with("ForSequenceClassification"))))
}

impl ModelSpec {
    /// Reads and checks the JSON files of `dir`. Cheap: no weights are touched.
    pub fn read(dir: &Path) -> Result<ModelSpec> {
        let (raw, encoder, activation) = read_encoder(dir)?;
        if is_sequence_classifier(&raw) && !files::present(&dir.join("modules.json")) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("model in \"{}\" is a cross-encoder, not an embedding model", dir.display()),
            )
            .with_detail("Its config.json names a sequence classification head, which scores pairs of texts.")
            .with_hint("Set it as koe5.reranker_path to rerank with it; koe5.model_path takes a sentence-transformers embedding model."));
        }
        // modules.json decides pooling and normalisation; without it, sentence-transformers
        // itself falls back to mean pooling over a plain transformer.
        let modules_path = dir.join("modules.json");
        let (pooling, normalize) = if files::present(&modules_path) {
            let modules: Vec<ModuleEntry> = read_json(dir, &modules_path)?;
            let mut pooling = None;
            let mut normalize = false;
            for m in &modules {
                let kind = m.kind.rsplit('.').next().unwrap_or(&m.kind);
                match kind {
                    "Transformer" => {}
                    "Pooling" => {
                        let pdir = module_dir(dir, &modules_path, &m.path)?;
                        let pconf = pdir.join("config.json");
                        let value: serde_json::Value = read_json(dir, &pconf)?;
                        pooling = Some(Pooling::from_config(&value, &pconf)?);
                    }
                    "Normalize" => normalize = true,
                    other => {
                        return Err(Error::new(
                            ErrorKind::Unsupported,
                            format!("unsupported module \"{other}\" in \"{}\"", modules_path.display()),
                        )
                        .with_detail("koe5 runs Transformer, Pooling and Normalize modules."))
                    }
                }
            }
            (pooling.unwrap_or(Pooling::Mean), normalize)
        } else {
            (Pooling::Mean, false)
        };

        let sbert_path = dir.join("sentence_bert_config.json");
        let sbert: SentenceConfig =
            if files::present(&sbert_path) { read_json(dir, &sbert_path)? } else { SentenceConfig::default() };
        let cap = encoder.max_tokens();
        let max_tokens = sbert.max_seq_length.unwrap_or(cap).min(cap);
        if max_tokens < 3 {
            return Err(Error::config(&sbert_path, "max_seq_length must be at least 3"));
        }

        let weights = dir.join("model.safetensors");
        require_file(dir, &weights)?;
        let tokenizer = dir.join("tokenizer.json");
        require_file(dir, &tokenizer)?;

        Ok(ModelSpec {
            dir: dir.to_path_buf(),
            encoder,
            activation,
            pooling,
            normalize,
            max_tokens,
            do_lower_case: sbert.do_lower_case,
            weights,
            tokenizer,
        })
    }

    pub fn dimension(&self) -> usize {
        self.encoder.hidden_size
    }
}

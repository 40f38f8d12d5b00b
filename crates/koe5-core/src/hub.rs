//! Finding a model in the Hugging Face cache (no network), and downloading one into
//! it with hf-hub where the network allows.

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// Files a sentence-transformers XLM-R model needs; nothing else is downloaded.
pub const MODEL_FILES: [&str; 8] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// Files a cross-encoder needs (`XLMRobertaForSequenceClassification` as
/// sentence-transformers' CrossEncoder saves it: its activation is in config.json).
pub const RERANKER_FILES: [&str; 5] =
    ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

/// The hub cache directory, in huggingface_hub's order: `HF_HUB_CACHE`,
/// `HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub`,
/// `~/.cache/huggingface/hub`.
pub fn cache_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return p;
    }
    if let Some(home) = var("HF_HOME") {
        return home.join("hub");
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return xdg.join("huggingface").join("hub");
    }
    var("HOME").unwrap_or_else(|| PathBuf::from("/")).join(".cache").join("huggingface").join("hub")
}

/// What is looked up or downloaded: the embedding model or the cross-encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedder,
    Reranker,
}

impl Kind {
    /// The files downloaded for it.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Kind::Embedder => &MODEL_FILES,
            Kind::Reranker => &RERANKER_FILES,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Embedder => "model",
            Kind::Reranker => "reranker",
        }
    }

    fn path_setting(self) -> &'static str {
        match self {
            Kind::Embedder => "koe5.model_path",
            Kind::Reranker => "koe5.reranker_path",
        }
    }

    fn layout(self) -> &'static str {
        match self {
            Kind::Embedder => "sentence-transformers model",
            Kind::Reranker => "cross-encoder",
        }
    }

    fn download_call(self) -> &'static str {
        match self {
            Kind::Embedder => "koe5_download()",
            Kind::Reranker => "koe5_download('reranker')",
        }
    }
}

/// Checks a model id of the form `owner/name`.
pub fn check_model_id(model_id: &str) -> Result<(&str, &str)> {
    let ok_part = |p: &str| {
        !p.is_empty() && p != "." && p != ".." && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match model_id.split_once('/') {
        Some((owner, name)) if ok_part(owner) && ok_part(name) => Ok((owner, name)),
        _ => Err(Error::new(ErrorKind::InvalidInput, format!("invalid model id \"{model_id}\""))
            .with_hint("A model id has the form \"owner/name\", for example \"nlpai-lab/KoE5\".")),
    }
}

/// The snapshot directory of `model_id` in `cache`, following `refs/main` as
/// huggingface_hub does.
pub fn find_cached(cache: &Path, model_id: &str, kind: Kind) -> Result<PathBuf> {
    let (owner, name) = check_model_id(model_id)?;
    let repo = cache.join(format!("models--{owner}--{name}"));
    let not_found = || {
        Error::new(ErrorKind::NoModel, format!("{} \"{model_id}\" was not found", kind.noun()))
            .with_detail(format!(
                "\"{}\" is empty, and the Hugging Face cache has no snapshot at \"{}\".",
                kind.path_setting(),
                repo.display()
            ))
            .with_hint(format!(
                "Set \"{}\" to a {} directory, or run SELECT {} (superusers, or roles granted EXECUTE on it) where the network allows.",
                kind.path_setting(),
                kind.layout(),
                kind.download_call()
            ))
    };
    let commit = std::fs::read_to_string(repo.join("refs").join("main")).map_err(|_| not_found())?;
    let commit = commit.trim();
    if commit.is_empty() || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let snapshot = repo.join("snapshots").join(commit);
    if snapshot.join("config.json").is_file() {
        Ok(snapshot)
    } else {
        Err(not_found())
    }
}

/// Downloads the files of `kind` (those of them the repository `model_id` has) into `cache` and
/// returns the snapshot directory. Blocks; the caller decides on which thread.
pub fn download(cache: &Path, model_id: &str, kind: Kind) -> Result<PathBuf> {
    let (owner, name) = check_model_id(model_id)?;
    let fail = |e: &dyn std::fmt::Display| {
        Error::new(ErrorKind::Download, format!("could not download {} \"{model_id}\": {e}", kind.noun()))
    };
    let client = hf_hub::HFClient::builder().cache_dir(cache).build_sync().map_err(|e| fail(&e))?;
    client
        .model(owner, name)
        .snapshot_download()
        .allow_patterns(kind.files().iter().map(|s| s.to_string()).collect())
        .send()
        .map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_checked() {
        assert!(check_model_id("nlpai-lab/KoE5").is_ok());
        for bad in ["KoE5", "../x", "a/..", "a/b/c", "a b/c", "/x", ""] {
            assert_eq!(check_model_id(bad).unwrap_err().kind, ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn finds_a_snapshot_through_refs_main() {
        let tmp = std::env::temp_dir().join(format!("koe5-hub-test-{}", std::process::id()));
        let snap = tmp.join("models--org--m/snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        let e = find_cached(&tmp, "org/m", Kind::Embedder).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoModel);
        assert!(e.detail.unwrap().contains("models--org--m"));
        let e = find_cached(&tmp, "org/m", Kind::Reranker).unwrap_err();
        assert_eq!(e.message, "reranker \"org/m\" was not found");
        assert!(e.hint.unwrap().contains("koe5_download('reranker')"));
        std::fs::create_dir_all(tmp.join("models--org--m/refs")).unwrap();
        std::fs::write(tmp.join("models--org--m/refs/main"), "abc123\n").unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        assert_eq!(find_cached(&tmp, "org/m", Kind::Embedder).unwrap(), snap);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}

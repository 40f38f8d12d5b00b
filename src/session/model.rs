//! The loaded model. It lives in a thread-local, is loaded on first use, kept across
//! transactions and replaced when `koe5.model_path`, `koe5.model_id` or
//! `koe5.precision` names another. Also the SHA-256 of a weights file, remembered
//! while the file stays the same.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use koe5_core::{hub, Embedder, Result};

use super::memory::release_free_memory;
use super::provenance::Provenance;
use super::query_cache::QueryCache;
use super::threads::{check_interrupts, start_threads};
use crate::gucs;

pub struct Loaded {
    pub embedder: Embedder,
    /// Its directory, when and by whom it was loaded, its files as they were then.
    pub from: Provenance,
    /// Recent query embeddings of this model.
    queries: RefCell<QueryCache>,
}

/// A file as of one moment: path, and which file it names with its size and time.
type FileStamp = (PathBuf, koe5_core::FileStamp);

thread_local! {
    static MODEL: RefCell<Option<Rc<Loaded>>> = const { RefCell::new(None) };
    static SHA256: RefCell<Option<(FileStamp, String)>> = const { RefCell::new(None) };
}

impl Loaded {
    pub(super) fn new(dir: PathBuf, embedder: Embedder, preloaded: bool) -> Loaded {
        let from = Provenance::new(dir, &embedder.spec.weights, &embedder.spec.tokenizer, preloaded);
        Loaded { embedder, from, queries: RefCell::default() }
    }

    /// The remembered embedding of query `text`, if any.
    pub fn cached_query(&self, text: &str) -> Option<Vec<f32>> {
        self.queries.borrow_mut().get(text)
    }

    pub fn remember_query(&self, text: &str, v: &[f32]) {
        self.queries.borrow_mut().insert(text, v);
    }

    pub fn cached_queries(&self) -> usize {
        self.queries.borrow().entry_count()
    }
}

/// SHA-256 of a weights file, remembered while its size and modification time stay
/// the same. Reading 2 GB takes a second or two; it stays cancellable.
pub fn weights_sha256(path: &Path) -> Result<String> {
    let stamp: FileStamp = (path.to_path_buf(), koe5_core::file_stamp(path)?);
    if let Some(hex) = SHA256.with(|c| c.borrow().as_ref().filter(|(s, _)| *s == stamp).map(|(_, h)| h.clone())) {
        return Ok(hex);
    }
    let hex = koe5_core::sha256_file(path, &mut check_interrupts)?;
    SHA256.with(|c| *c.borrow_mut() = Some((stamp, hex.clone())));
    Ok(hex)
}

/// The model directory the settings name now: `koe5.model_path`, or `koe5.model_id`
/// found in the Hugging Face cache.
pub fn resolve_dir() -> Result<PathBuf> {
    match gucs::model_path() {
        Some(p) => Ok(p),
        None => hub::find_cached(&hub::cache_dir(), &gucs::model_id(), hub::Kind::Embedder),
    }
}

/// The model this backend has loaded, if any (without loading one).
pub fn loaded() -> Option<Rc<Loaded>> {
    MODEL.with(|m| m.borrow().clone())
}

/// Makes `loaded` this process's model.
pub(super) fn set_loaded(loaded: Rc<Loaded>) {
    MODEL.with(|m| *m.borrow_mut() = Some(loaded));
}

/// The model for the current settings, loading it on first use.
pub fn model() -> Result<Rc<Loaded>> {
    gucs::check_pins();
    start_threads();
    let dir = resolve_dir()?;
    let precision = gucs::precision();
    if let Some(m) = loaded() {
        if m.from.dir == dir && m.embedder.precision == precision && m.from.files_unchanged("model") {
            return Ok(m);
        }
    }
    // Free the old weights before reading new ones (a shared, preloaded copy stays in
    // the postmaster and the other sessions).
    MODEL.with(|m| m.borrow_mut().take());
    let embedder = Embedder::load_with(&dir, precision, &mut check_interrupts)?;
    release_free_memory();
    warn_inexact_tokenizer(&dir, &embedder, false);
    let loaded = Rc::new(Loaded::new(dir, embedder, false));
    set_loaded(loaded.clone());
    Ok(loaded)
}

/// A tokenizer other than XLM-R's is bounded to a window of each long text, not known
/// to be exact there: say so when such a model loads.
pub(super) fn warn_inexact_tokenizer(dir: &Path, embedder: &Embedder, preloading: bool) {
    if embedder.tokenizer().exact_windows() {
        return;
    }
    let msg = format!(
        "koe5: the tokenizer of the model in \"{}\" is not XLM-R's: long texts are tokenized from their first {} KiB only, and their token counts are approximate",
        dir.display(),
        embedder.tokenizer().hard_window() / 1024
    );
    if preloading {
        pgrx::log!("{msg}");
    } else {
        pgrx::warning!("{msg}");
    }
}

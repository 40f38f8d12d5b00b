//! The loaded cross-encoder, as `model` keeps the embedder: a thread-local, loaded on
//! first use (or inherited from the postmaster, `preload`), kept across transactions
//! and replaced when `koe5.reranker_path`, `koe5.reranker_id` or `koe5.precision`
//! names another.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use koe5_core::{hub, Reranker, Result};

use super::memory::release_free_memory;
use super::provenance::Provenance;
use super::threads::{check_interrupts, start_threads};
use crate::gucs;

pub struct LoadedReranker {
    pub reranker: Reranker,
    /// Its directory, when and by whom it was loaded, its files as they were then.
    pub from: Provenance,
}

impl LoadedReranker {
    pub(super) fn new(dir: PathBuf, reranker: Reranker, preloaded: bool) -> LoadedReranker {
        let from = Provenance::new(dir, &reranker.spec.weights, &reranker.spec.tokenizer, preloaded);
        LoadedReranker { reranker, from }
    }
}

thread_local! {
    static RERANKER: RefCell<Option<Rc<LoadedReranker>>> = const { RefCell::new(None) };
}

/// The cross-encoder directory the settings name now: `koe5.reranker_path`, or
/// `koe5.reranker_id` found in the Hugging Face cache.
pub fn resolve_reranker_dir() -> Result<PathBuf> {
    match gucs::reranker_path() {
        Some(p) => Ok(p),
        None => hub::find_cached(&hub::cache_dir(), &gucs::reranker_id(), hub::Kind::Reranker),
    }
}

/// The cross-encoder this backend has loaded, if any (without loading one).
pub fn loaded_reranker() -> Option<Rc<LoadedReranker>> {
    RERANKER.with(|m| m.borrow().clone())
}

/// Makes `loaded` this process's cross-encoder.
pub(super) fn set_loaded_reranker(loaded: Rc<LoadedReranker>) {
    RERANKER.with(|m| *m.borrow_mut() = Some(loaded));
}

/// The cross-encoder for the current settings, loading it on first use.
pub fn reranker() -> Result<Rc<LoadedReranker>> {
    gucs::check_pins();
    start_threads();
    let dir = resolve_reranker_dir()?;
    let precision = gucs::precision();
    if let Some(m) = loaded_reranker() {
        if m.from.dir == dir && m.reranker.precision == precision && m.from.files_unchanged("reranker") {
            return Ok(m);
        }
    }
    // Free the old weights before reading new ones (a preloaded copy stays shared).
    RERANKER.with(|m| m.borrow_mut().take());
    let reranker = Reranker::load_with(&dir, precision, &mut check_interrupts)?;
    release_free_memory();
    let loaded = Rc::new(LoadedReranker::new(dir, reranker, false));
    set_loaded_reranker(loaded.clone());
    Ok(loaded)
}

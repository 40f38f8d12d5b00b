//! The loaded cross-encoder, as `model` keeps the embedder: a thread-local, loaded on
//! first use, kept across transactions and replaced when `koe5.reranker_path`,
//! `koe5.reranker_id` or `koe5.precision` names another. (Not preloaded yet: each
//! backend loads its own copy.)

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::SystemTime;

use koe5_core::{hub, Reranker, Result};

use super::memory::release_free_memory;
use super::threads::{check_interrupts, start_threads};
use crate::gucs;

pub struct LoadedReranker {
    pub dir: PathBuf,
    pub reranker: Reranker,
    pub loaded_at: SystemTime,
}

thread_local! {
    static RERANKER: RefCell<Option<Rc<LoadedReranker>>> = const { RefCell::new(None) };
}

/// The cross-encoder directory the settings name now: `koe5.reranker_path`, or
/// `koe5.reranker_id` found in the Hugging Face cache.
pub fn resolve_reranker_dir() -> Result<PathBuf> {
    match gucs::reranker_path() {
        Some(p) => Ok(p),
        None => hub::find_cached(&hub::cache_dir(), &gucs::reranker_id()),
    }
}

/// The cross-encoder this backend has loaded, if any (without loading one).
pub fn loaded_reranker() -> Option<Rc<LoadedReranker>> {
    RERANKER.with(|m| m.borrow().clone())
}

/// The cross-encoder for the current settings, loading it on first use.
pub fn reranker() -> Result<Rc<LoadedReranker>> {
    gucs::check_pins();
    start_threads();
    let dir = resolve_reranker_dir()?;
    let precision = gucs::precision();
    if let Some(m) = loaded_reranker() {
        if m.dir == dir && m.reranker.precision == precision {
            return Ok(m);
        }
    }
    RERANKER.with(|m| m.borrow_mut().take());
    let reranker = Reranker::load_with(&dir, precision, &mut check_interrupts)?;
    release_free_memory();
    let loaded = Rc::new(LoadedReranker { dir, reranker, loaded_at: SystemTime::now() });
    RERANKER.with(|m| *m.borrow_mut() = Some(loaded.clone()));
    Ok(loaded)
}

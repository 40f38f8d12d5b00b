//! The models the postmaster loads before any backend exists (`koe5.preload`, with koe5
//! in `shared_preload_libraries`), which every backend it forks inherits: the embedder,
//! and the cross-encoder when one is configured.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use koe5_core::{Embedder, Precision, Reranker, Result};
use pgrx::pg_sys;

use super::memory::release_free_memory;
use super::model::{resolve_dir, set_loaded, warn_inexact_tokenizer, Loaded};
use super::reranker::{resolve_reranker_dir, set_loaded_reranker, LoadedReranker};
use super::threads::with_signals_blocked;
use crate::gucs;

/// Loads the models in the postmaster. Every process the postmaster forks afterwards
/// starts with them in its memory: the same physical pages, shared copy-on-write and
/// never written, so the server holds one copy however many sessions use them.
///
/// Nothing here may leave a thread behind (fork copies only the calling thread): any
/// parallel work of a load runs on a one-thread pool that is shut down afterwards, so
/// rayon's global pool is first started in a backend. A model that cannot be loaded is
/// logged and left to the backends; the server starts regardless.
pub fn preload() {
    // Not in single-user mode or a binary upgrade: no sessions to share it with.
    if !gucs::PRELOAD.get() || unsafe { !pg_sys::IsPostmasterEnvironment || pg_sys::IsBinaryUpgrade } {
        return;
    }
    let precision = gucs::precision();
    if let Some((dir, embedder)) =
        load_in_postmaster("model", resolve_dir(), |d| Embedder::load_with(d, precision, &mut || {}))
    {
        warn_inexact_tokenizer(&dir, &embedder, true);
        log_preloaded("model", &dir, precision, embedder.load_time);
        keep_forever(Rc::new(Loaded::new(dir, embedder, true)), set_loaded);
    }
    // The cross-encoder when the settings find one: koe5.reranker_path, or
    // koe5.reranker_id in the cache. Its absence is logged only when it was named.
    let reranker_dir = resolve_reranker_dir();
    if reranker_dir.is_ok() || gucs::reranker_path().is_some() || gucs::reranker_id_is_set() {
        let load = |d: &Path| Reranker::load_with(d, precision, &mut || {});
        if let Some((dir, reranker)) = load_in_postmaster("reranker", reranker_dir, load) {
            log_preloaded("reranker", &dir, precision, reranker.load_time);
            keep_forever(Rc::new(LoadedReranker::new(dir, reranker, true)), set_loaded_reranker);
        }
    }
}

/// Loads one model on a scoped one-thread pool (joined before this returns), with the
/// signals blocked; a failure or a panic is logged as a WARNING and gives `None`.
fn load_in_postmaster<T>(
    what: &str,
    dir: Result<PathBuf>,
    load: impl FnOnce(&Path) -> Result<T> + Send,
) -> Option<(PathBuf, T)>
where
    T: Send,
{
    let dir = match dir {
        Ok(d) => d,
        Err(e) => {
            pgrx::log!("koe5: no {what} preloaded: {}", e.message);
            return None;
        }
    };
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        with_signals_blocked(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build_scoped(|thread| thread.run(), |pool| pool.install(|| load(&dir)))
        })
        .map_err(|e| koe5_core::Error::new(koe5_core::ErrorKind::Inference, e.to_string()))?
    }));
    match loaded {
        Ok(Ok(model)) => {
            release_free_memory();
            Some((dir, model))
        }
        Ok(Err(e)) => {
            pgrx::warning!("koe5: could not preload the {what} in \"{}\": {}", dir.display(), e.message);
            None
        }
        Err(_) => {
            pgrx::warning!("koe5: could not preload the {what} in \"{}\": the load panicked", dir.display());
            None
        }
    }
}

fn log_preloaded(what: &str, dir: &Path, precision: Precision, took: std::time::Duration) {
    pgrx::log!(
        "koe5: preloaded the {what} in \"{}\" ({}) in {:.1} s; sessions share it",
        dir.display(),
        precision.name(),
        took.as_secs_f64()
    );
}

/// Makes `loaded` this process's model and never frees it, in the postmaster or any
/// child: a child that exits (or loads another model) would otherwise free it page by
/// page, writing to — and so copying — the pages it shares.
fn keep_forever<T>(loaded: Rc<T>, set: fn(Rc<T>)) {
    std::mem::forget(loaded.clone());
    set(loaded);
}

//! The model the postmaster loads before any backend exists (`koe5.preload`, with koe5
//! in `shared_preload_libraries`), which every backend it forks inherits.

use std::rc::Rc;

use koe5_core::Embedder;
use pgrx::pg_sys;

use super::memory::release_free_memory;
use super::model::{resolve_dir, set_loaded, warn_inexact_tokenizer, Loaded};
use super::threads::with_signals_blocked;
use crate::gucs;

/// Loads the model in the postmaster. Every process the postmaster forks afterwards
/// starts with the model in its memory: the same physical pages, shared copy-on-write
/// and never written, so the server holds one copy however many sessions embed.
///
/// Nothing here may leave a thread behind (fork copies only the calling thread): any
/// parallel work of the load runs on a one-thread pool that is shut down afterwards,
/// so rayon's global pool is first started in a backend. A model that cannot be
/// loaded is logged and left to the backends; the server starts regardless.
pub fn preload() {
    // Not in single-user mode or a binary upgrade: no sessions to share it with.
    if !gucs::PRELOAD.get() || unsafe { !pg_sys::IsPostmasterEnvironment || pg_sys::IsBinaryUpgrade } {
        return;
    }
    let dir = match resolve_dir() {
        Ok(d) => d,
        Err(e) => {
            pgrx::log!("koe5: no model preloaded: {}", e.message);
            return;
        }
    };
    let precision = gucs::precision();
    let load = std::panic::catch_unwind(|| {
        // A scoped pool: its thread is joined before this returns.
        with_signals_blocked(|| {
            rayon::ThreadPoolBuilder::new().num_threads(1).build_scoped(
                |thread| thread.run(),
                |pool| pool.install(|| Embedder::load_with(&dir, precision, &mut || {})),
            )
        })
        .map_err(|e| koe5_core::Error::new(koe5_core::ErrorKind::Inference, e.to_string()))?
    });
    match load {
        Ok(Ok(embedder)) => {
            release_free_memory();
            warn_inexact_tokenizer(&dir, &embedder, true);
            pgrx::log!(
                "koe5: preloaded the model in \"{}\" ({}) in {:.1} s; sessions share it",
                dir.display(),
                precision.name(),
                embedder.load_time.as_secs_f64()
            );
            let loaded = Rc::new(Loaded::new(dir, embedder, true));
            // Never freed, in the postmaster or any child: a child that exits (or loads
            // another model) would otherwise free it page by page, writing to — and so
            // copying — the pages it shares.
            std::mem::forget(loaded.clone());
            set_loaded(loaded);
        }
        Ok(Err(e)) => pgrx::warning!("koe5: could not preload the model in \"{}\": {}", dir.display(), e.message),
        Err(_) => pgrx::warning!("koe5: could not preload the model in \"{}\": the load panicked", dir.display()),
    }
}

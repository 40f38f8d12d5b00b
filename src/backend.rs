//! Per-backend state: the loaded model and the compute threads.
//!
//! A backend is one single-threaded process, so the model lives in a thread-local and
//! is loaded on first use. It is kept across transactions in Rust's heap (not in a
//! PostgreSQL memory context) and replaced when `koe5.model_path` or `koe5.model_id`
//! points elsewhere.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Once;
use std::time::SystemTime;

use koe5_core::{hub, Embedder, Result};

use crate::gucs;

pub struct Loaded {
    pub dir: PathBuf,
    pub embedder: Embedder,
    pub loaded_at: SystemTime,
    /// Recent query embeddings of this model.
    queries: RefCell<QueryCache>,
}

/// Longer query texts are not remembered: a cache is for short, repeated queries.
const CACHED_QUERY_MAX_BYTES: usize = 4 * 1024;

/// Query text → embedding, least recently used first out. Lookups hash; only an
/// insertion into a full cache scans for the oldest entry.
#[derive(Default)]
struct QueryCache {
    entries: HashMap<String, (Vec<f32>, u64)>,
    clock: u64,
}

impl Loaded {
    /// The remembered embedding of query `text`, if any.
    pub fn cached_query(&self, text: &str) -> Option<Vec<f32>> {
        let mut cache = self.queries.borrow_mut();
        if gucs::QUERY_CACHE_SIZE.get() <= 0 {
            cache.entries.clear();
            return None;
        }
        cache.clock += 1;
        let now = cache.clock;
        let (v, used) = cache.entries.get_mut(text)?;
        *used = now;
        let v = v.clone();
        STATS.with(|s| s.borrow_mut().query_cache_hits += 1);
        Some(v)
    }

    pub fn remember_query(&self, text: &str, v: &[f32]) {
        let capacity = usize::try_from(gucs::QUERY_CACHE_SIZE.get()).unwrap_or(0);
        if text.len() > CACHED_QUERY_MAX_BYTES || capacity == 0 {
            return;
        }
        let mut cache = self.queries.borrow_mut();
        while cache.entries.len() >= capacity {
            let Some(oldest) = cache.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone()) else {
                break;
            };
            cache.entries.remove(&oldest);
        }
        cache.clock += 1;
        let now = cache.clock;
        cache.entries.insert(text.to_owned(), (v.to_vec(), now));
    }

    pub fn cached_queries(&self) -> usize {
        self.queries.borrow().entries.len()
    }
}

/// What this backend has done since it started.
#[derive(Default, Clone, Copy)]
pub struct Stats {
    pub texts_embedded: u64,
    pub query_cache_hits: u64,
}

pub fn stats() -> Stats {
    STATS.with(|s| *s.borrow())
}

pub fn count_embedded(n: usize) {
    STATS.with(|s| s.borrow_mut().texts_embedded += n as u64);
}

/// A file as of one moment: path, size and modification time.
type FileStamp = (PathBuf, (u64, SystemTime));

thread_local! {
    static MODEL: RefCell<Option<Rc<Loaded>>> = const { RefCell::new(None) };
    static SHA256: RefCell<Option<(FileStamp, String)>> = const { RefCell::new(None) };
    static STATS: RefCell<Stats> = const { RefCell::new(Stats { texts_embedded: 0, query_cache_hits: 0 }) };
}

/// SHA-256 of a weights file, remembered while its size and modification time stay
/// the same. Reading 2 GB takes a second or two; it stays cancellable.
pub fn weights_sha256(path: &std::path::Path) -> Result<String> {
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
        None => hub::find_cached(&hub::cache_dir(), &gucs::model_id()),
    }
}

/// The model this backend has loaded, if any (without loading one).
pub fn loaded() -> Option<Rc<Loaded>> {
    MODEL.with(|m| m.borrow().clone())
}

/// The model for the current settings, loading it on first use.
pub fn model() -> Result<Rc<Loaded>> {
    let dir = resolve_dir()?;
    if let Some(m) = loaded() {
        if m.dir == dir {
            return Ok(m);
        }
    }
    // Free the old weights before reading new ones.
    MODEL.with(|m| m.borrow_mut().take());
    start_threads();
    let embedder = Embedder::load_with(&dir, koe5_core::Precision::F32, &mut check_interrupts)?;
    let loaded = Rc::new(Loaded { dir, embedder, loaded_at: SystemTime::now(), queries: RefCell::default() });
    MODEL.with(|m| *m.borrow_mut() = Some(loaded.clone()));
    Ok(loaded)
}

/// Runs `f` with every signal blocked in the calling thread, so that threads it
/// starts inherit a full mask and never run PostgreSQL's signal handlers.
pub fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let out = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        out
    }
}

fn block_all_signals() {
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

/// Starts the rayon pool that candle's matrix kernels use, before anything else can
/// start it with default settings. Its threads block all signals and only compute.
fn start_threads() {
    static START: Once = Once::new();
    START.call_once(|| {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let threads = match usize::try_from(gucs::THREADS.get()) {
            Ok(n) if n > 0 => n,
            _ => cores,
        };
        let _ = with_signals_blocked(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("koe5-compute-{i}"))
                .start_handler(|_| block_all_signals())
                .build_global()
        });
    });
}

/// Calls PostgreSQL's interrupt check: cancel, statement_timeout and termination
/// requests raise their usual ERROR here, on the backend's own thread.
pub fn check_interrupts() {
    pgrx::check_for_interrupts!();
}

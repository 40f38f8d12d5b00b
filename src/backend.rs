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
use pgrx::pg_sys;

use crate::gucs;

pub struct Loaded {
    pub dir: PathBuf,
    pub embedder: Embedder,
    pub loaded_at: SystemTime,
    /// The model files (weights, tokenizer) as they were when it was loaded.
    files: [Option<koe5_core::FileStamp>; 2],
    /// Loaded by the postmaster (`koe5.preload`) and inherited at fork: shared with
    /// every other session until this backend checks that its files are unchanged.
    pub preloaded: bool,
    unverified: std::cell::Cell<bool>,
    /// Recent query embeddings of this model.
    queries: RefCell<QueryCache>,
}

/// Longer query texts are not remembered: a cache is for short, repeated queries.
const CACHED_QUERY_MAX_BYTES: usize = 4 * 1024;

/// (role, query text) → embedding, least recently used first out. Lookups hash; only
/// an insertion into a full cache scans for the oldest entry. Keyed by the current
/// role too, so that a role sharing the backend (SET ROLE, a connection pooler) cannot
/// learn from a cache hit which queries another role ran.
#[derive(Default)]
struct QueryCache {
    entries: HashMap<(u32, String), (Vec<f32>, u64)>,
    clock: u64,
}

fn current_role() -> u32 {
    // SAFETY: reads the backend's current user id; no preconditions.
    unsafe { pg_sys::GetUserId() }.to_u32()
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
        let (v, used) = cache.entries.get_mut(&(current_role(), text.to_owned()))?;
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
        cache.entries.insert((current_role(), text.to_owned()), (v.to_vec(), now));
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

/// A file as of one moment: path, and which file it names with its size and time.
type FileStamp = (PathBuf, koe5_core::FileStamp);

fn model_files(e: &Embedder) -> [Option<koe5_core::FileStamp>; 2] {
    [koe5_core::file_stamp(&e.spec.weights).ok(), koe5_core::file_stamp(&e.spec.tokenizer).ok()]
}

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
    gucs::check_pins();
    start_threads();
    let dir = resolve_dir()?;
    let precision = gucs::precision();
    if let Some(m) = loaded() {
        if m.dir == dir && m.embedder.precision == precision && m.files_unchanged() {
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
    MODEL.with(|m| *m.borrow_mut() = Some(loaded.clone()));
    Ok(loaded)
}

impl Loaded {
    fn new(dir: PathBuf, embedder: Embedder, preloaded: bool) -> Loaded {
        Loaded {
            dir,
            files: model_files(&embedder),
            embedder,
            loaded_at: SystemTime::now(),
            preloaded,
            unverified: std::cell::Cell::new(preloaded),
            queries: RefCell::default(),
        }
    }

    /// A model a backend loaded itself is kept as it is, whatever happens to its files
    /// (it is complete in memory). One inherited from the postmaster may be older than
    /// the files: the backend's first use compares them once.
    fn files_unchanged(&self) -> bool {
        if !self.unverified.get() {
            return true;
        }
        let same = model_files(&self.embedder) == self.files;
        self.unverified.set(!same);
        if !same {
            pgrx::log!(
                "koe5: the model files in \"{}\" changed after the server preloaded them; this session loads its own copy (restart the server to share one again)",
                self.dir.display()
            );
        }
        same
    }
}

/// A tokenizer other than XLM-R's is bounded to a window of each long text, not known
/// to be exact there: say so when such a model loads.
fn warn_inexact_tokenizer(dir: &std::path::Path, embedder: &Embedder, preloading: bool) {
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

/// Gives the heap's free pages back to the kernel: after a model load (which reads each
/// f32 tensor before packing or transposing it, and would otherwise leave a bf16
/// backend holding about 1 GB it no longer uses, 3.0 instead of 2.0 GB at KoE5's size,
/// and a preloading postmaster the same in every child), and after each embedding call
/// (whose buffers the heap keeps while the call runs, see `start_threads`), so an idle
/// session holds only the model.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only returns free memory; it is thread-safe.
    unsafe { libc::malloc_trim(0) };
}

/// Loads the model in the postmaster, before any backend exists (`koe5.preload`, with
/// koe5 in `shared_preload_libraries`). Every process the postmaster forks afterwards
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
            MODEL.with(|m| *m.borrow_mut() = Some(loaded));
        }
        Ok(Err(e)) => pgrx::warning!("koe5: could not preload the model in \"{}\": {}", dir.display(), e.message),
        Err(_) => pgrx::warning!("koe5: could not preload the model in \"{}\": the load panicked", dir.display()),
    }
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

/// Starts every compute thread a backend will have, before anything else can start
/// them with default settings: the rayon pool that koe5's kernels and candle's matrix
/// multiplies use, and candle's own pool for element-wise work (`candle-bp-N`, which
/// candle would otherwise spawn lazily from whichever thread first needs it — the
/// backend's, with PostgreSQL's signals unblocked). All of them block every signal and
/// only compute; both pools get `koe5.threads` threads.
pub fn start_threads() {
    static START: Once = Once::new();
    START.call_once(|| {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let threads = match usize::try_from(gucs::THREADS.get()) {
            Ok(n) if n > 0 => n,
            _ => cores,
        };
        // A forward pass reserves its buffers once per batch (the largest, the FFN's
        // activations, is 32 MiB at KoE5's size and the 2,048-token budget). Served
        // from the heap and kept there, the next batch of a call reuses them without
        // page faults; left to mmap (glibc's default until its threshold adapts, which
        // it does not in a process forked from a preloading postmaster) each batch
        // faults them in and zeroes them anew. (When the forward pass still allocated
        // per layer, this was a quarter of the bf16 time; with buffers reused across
        // layers it is about 24,000 page faults per full batch, estimated at a few
        // milliseconds, not measured.) The heap keeps up to 128 MiB free
        // while a call runs; the call gives it back when it ends (`release_free_memory`).
        // SAFETY: plain malloc tuning.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
        }
        // candle sizes its pool from this variable. SAFETY: no other thread of this
        // process exists yet: the postmaster starts none (see `preload`), and the only
        // other thread koe5 starts, koe5_download's, starts after this.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", threads.to_string()) };
        with_signals_blocked(|| {
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("koe5-compute-{i}"))
                .start_handler(|_| block_all_signals())
                .build_global();
            koe5_core::start_elementwise_threads();
        });
    });
}

/// Calls PostgreSQL's interrupt check: cancel, statement_timeout and termination
/// requests raise their usual ERROR here, on the backend's own thread.
pub fn check_interrupts() {
    pgrx::check_for_interrupts!();
}

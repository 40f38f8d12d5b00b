//! The threads of a backend. Its own thread runs PostgreSQL's code and handles its
//! signals (cancel, statement_timeout, termination), checked between steps with
//! `check_interrupts`; every thread koe5 starts blocks all signals and never calls
//! PostgreSQL: the compute threads (`start_threads`) and side threads (`spawn`,
//! koe5_download's).

use std::sync::Once;

use crate::gucs;

/// Runs `f` with every signal blocked in the calling thread, so that threads it
/// starts inherit a full mask and never run PostgreSQL's signal handlers.
pub(super) fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
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
/// only compute; both pools get `koe5.threads` threads. The heap is tuned first
/// (`memory::tune_heap`).
pub fn start_threads() {
    static START: Once = Once::new();
    START.call_once(|| {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let threads = match usize::try_from(gucs::THREADS.get()) {
            Ok(n) if n > 0 => n,
            _ => cores,
        };
        super::memory::tune_heap();
        // candle sizes its pool from this variable. SAFETY: no other thread of this
        // process exists yet: the postmaster leaves none behind (see `preload`), and
        // koe5 starts its other threads only through `spawn`, which runs this first.
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

/// Starts a thread named `name` that runs `f` with every signal blocked, after the
/// compute threads (whose start sets an environment variable, which must happen while
/// koe5 has no other thread). The only way koe5 starts a thread other than the
/// compute threads: one that may outlive the call that started it (a cancelled
/// download's) is then always started after that variable is set.
pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<std::thread::JoinHandle<()>> {
    start_threads();
    with_signals_blocked(|| std::thread::Builder::new().name(name.to_owned()).spawn(f))
}

/// Calls PostgreSQL's interrupt check: cancel, statement_timeout and termination
/// requests raise their usual ERROR here, on the backend's own thread.
pub fn check_interrupts() {
    pgrx::check_for_interrupts!();
}

//! What this backend has done since it started (`koe5_backend_stats()`).

use std::cell::RefCell;

#[derive(Default, Clone, Copy)]
pub struct Stats {
    pub texts_embedded: u64,
    pub query_cache_hits: u64,
}

thread_local! {
    static STATS: RefCell<Stats> = const { RefCell::new(Stats { texts_embedded: 0, query_cache_hits: 0 }) };
}

pub fn stats() -> Stats {
    STATS.with(|s| *s.borrow())
}

pub fn count_embedded(n: usize) {
    STATS.with(|s| s.borrow_mut().texts_embedded += n as u64);
}

pub(super) fn count_query_cache_hit() {
    STATS.with(|s| s.borrow_mut().query_cache_hits += 1);
}

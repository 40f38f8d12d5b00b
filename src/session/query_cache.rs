//! The recent query embeddings of one loaded model (`koe5.query_cache_size` of them):
//! a query in a WHERE or ORDER BY clause may be evaluated once per row.

use std::collections::HashMap;

use pgrx::pg_sys;

use super::stats;
use crate::gucs;

/// Longer query texts are not remembered: a cache is for short, repeated queries.
const CACHED_QUERY_MAX_BYTES: usize = 4 * 1024;

/// (role, query text) → embedding, least recently used first out. Lookups hash; only
/// an insertion into a full cache scans for the oldest entry. Keyed by the current
/// role too, so that a role sharing the backend (SET ROLE, a connection pooler) cannot
/// learn from a cache hit which queries another role ran.
#[derive(Default)]
pub struct QueryCache {
    entries: HashMap<(u32, String), (Vec<f32>, u64)>,
    clock: u64,
}

fn current_role() -> u32 {
    // SAFETY: reads the backend's current user id; no preconditions.
    unsafe { pg_sys::GetUserId() }.to_u32()
}

impl QueryCache {
    /// The remembered embedding of query `text`, if any (counted as a hit).
    pub fn get(&mut self, text: &str) -> Option<Vec<f32>> {
        if gucs::QUERY_CACHE_SIZE.get() <= 0 {
            self.entries.clear();
            return None;
        }
        self.clock += 1;
        let now = self.clock;
        let (v, used) = self.entries.get_mut(&(current_role(), text.to_owned()))?;
        *used = now;
        let v = v.clone();
        stats::count_query_cache_hit();
        Some(v)
    }

    /// Remembers `v` as the embedding of query `text`, forgetting the least recently
    /// used entries to stay within `koe5.query_cache_size`.
    pub fn insert(&mut self, text: &str, v: &[f32]) {
        let capacity = usize::try_from(gucs::QUERY_CACHE_SIZE.get()).unwrap_or(0);
        if text.len() > CACHED_QUERY_MAX_BYTES || capacity == 0 {
            return;
        }
        while self.entries.len() >= capacity {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone()) else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.clock += 1;
        let now = self.clock;
        self.entries.insert((current_role(), text.to_owned()), (v.to_vec(), now));
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }
}

//! Memory of one 8,192-token text (its own test binary, so no other test's buffers
//! count): the forward pass holds activations linear in the tokens, never a
//! tokens × tokens score matrix (at 8,192 tokens and the fixture's 4 heads that alone
//! would be 1 GiB). Measured by counting the heap this process allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use koe5_core::{Embedder, Kind};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let now = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grow(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Relaxed);
            grow(new);
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn an_8192_token_text_in_bounded_memory() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let e = Embedder::load(&dir.join("tiny-xlmr-long")).unwrap();
    let doc = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/ko/constitution.txt"))
        .unwrap();
    assert_eq!(e.tokenize(Kind::Passage, &doc).unwrap().len(), 8192);
    let mut peaks = vec![];
    for tokens in [512usize, 8192] {
        // The whole document (cut at 8,192), or its start up to about 512 tokens.
        let text = if tokens == 8192 {
            doc.clone()
        } else {
            let mut end = 0;
            for (i, _) in doc.char_indices().step_by(64) {
                if e.token_count(Kind::Passage, &doc[..i], &mut || {}).unwrap() > tokens {
                    break;
                }
                end = i;
            }
            doc[..end].to_owned()
        };
        let before = LIVE.load(Relaxed);
        PEAK.store(before, Relaxed);
        let v = e.embed_one(Kind::Passage, &text, &mut || {}).unwrap();
        assert_eq!(v.len(), 32);
        peaks.push(PEAK.load(Relaxed) - before);
    }
    let figure = format!(
        "long context: heap peak of one text, hidden 32 / 4 heads / FFN 64: {} KiB at ~512 tokens, {} KiB at 8,192 tokens",
        peaks[0] / 1024,
        peaks[1] / 1024
    );
    koe5_testkit::figure(figure.clone());
    // The encoder's buffers (Work::for_rows): per token 6 × hidden + FFN f32s, 1 KiB
    // here, 8 MiB at 8,192 tokens; tokenizing 46 KB of text adds a few MiB. A score
    // matrix would add 1 GiB; and memory grows linearly (16× the tokens, at most 20×
    // the peak).
    assert!(peaks[1] < 32 << 20, "{figure}");
    assert!(peaks[1] < 20 * peaks[0].max(1 << 20), "{figure}");
}

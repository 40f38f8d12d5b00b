//! Fuzzing the text → tokens → vector path with proptest: arbitrary bytes decoded as
//! UTF-8 (invalid sequences replaced), UTF-16 with lone surrogates replaced, control
//! characters, combining marks, Hangul jamo and syllables, long and empty inputs. Every
//! input must embed to a finite unit vector, count its tokens, and chunk within the
//! limit, without a panic.
//!
//!     cargo test -p koe5-core --test fuzz -- --nocapture       (CI: 64 cases per strategy)
//!     PROPTEST_CASES=5000 cargo test --release -p koe5-core --test fuzz -- --nocapture

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use koe5_core::{Embedder, Kind};
use proptest::prelude::*;

static RUNS: AtomicUsize = AtomicUsize::new(0);

fn embedder() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| {
        Embedder::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-xlmr")).unwrap()
    })
}

fn check(text: &str) {
    RUNS.fetch_add(1, Ordering::Relaxed);
    let e = embedder();
    for kind in [Kind::Passage, Kind::Query] {
        let v = e.embed_one(kind, text, &mut || {}).unwrap();
        assert_eq!(v.len(), e.dimension());
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(v.iter().all(|x| x.is_finite()) && (norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    let n = e.token_count(Kind::Passage, text, &mut || {}).unwrap();
    assert!(n >= 2);
    for (max, overlap) in [(64, 0), (40, 8)] {
        let chunks = e.chunks(Kind::Passage, text, max, overlap, &mut || {}).unwrap();
        for c in chunks {
            assert!(text.is_char_boundary(c.start) && text.is_char_boundary(c.end) && c.start < c.end);
            assert!(c.n_tokens <= max);
        }
    }
    let batch = e.embed_many(Kind::Passage, &[text, "", text], &mut || {}).unwrap();
    assert_eq!(batch.len(), 3);
}

/// Characters that stress normalisation and tokenization.
fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        Just(' '),
        Just('\u{3000}'),
        Just('\u{200b}'),
        Just('\u{feff}'),
        (0x300u32..0x370).prop_map(|c| char::from_u32(c).unwrap()), // combining marks
        (0x1100u32..0x1200).prop_map(|c| char::from_u32(c).unwrap()), // Hangul jamo
        (0xac00u32..0xd7a4).prop_map(|c| char::from_u32(c).unwrap()), // Hangul syllables
        (0x4e00u32..0x9fff).prop_map(|c| char::from_u32(c).unwrap()),
        any::<char>(),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

fn run<S: Strategy>(name: &str, strategy: S, text: impl Fn(S::Value) -> String) {
    // Failures are reported with their input; nothing is written beside the sources.
    let config = ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let before = RUNS.load(Ordering::Relaxed);
    runner
        .run(&strategy, |value| {
            check(&text(value));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!("fuzz {name}: {} inputs, 0 panics", RUNS.load(Ordering::Relaxed) - before);
}

#[test]
fn arbitrary_text_embeds_counts_and_chunks_without_panics() {
    run("bytes as UTF-8", proptest::collection::vec(any::<u8>(), 0..3000), |b| {
        String::from_utf8_lossy(&b).into_owned()
    });
    run("UTF-16 with lone surrogates", proptest::collection::vec(any::<u16>(), 0..1500), |u| {
        String::from_utf16_lossy(&u)
    });
    run("control, combining, jamo, CJK", proptest::collection::vec(nasty_char(), 0..2000), |c| c.into_iter().collect());
    run("long runs with and without spaces", ("[가-힣a-z ]{1,8}", 1usize..20_000), |(unit, times)| {
        unit.repeat(times)
    });
    eprintln!("fuzz total: {} inputs, 0 panics", RUNS.load(Ordering::Relaxed));
}

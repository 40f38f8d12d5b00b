//! Models with a long context (KURE-v1 and BAAI/bge-m3: XLM-R large with 8,194
//! positions, CLS pooling, max_seq_length 8192), on their tiny random twin
//! tests/fixtures/tiny-xlmr-long, against the reference's ids and vectors
//! (expected-long.json, from make_fixture.py). Tolerances as for the fixture
//! (`koe5_testkit::assert_close`, the README's parity promise): cosine >= 0.99999, max
//! |difference| <= 1e-5.

use std::path::PathBuf;

use koe5_core::{Embedder, Kind};
use koe5_testkit::{assert_close, fixtures, floats, ids};
use serde_json::Value;

fn cases() -> Vec<Value> {
    koe5_testkit::long_cases()
}

fn model() -> Embedder {
    Embedder::load(&fixtures().join("tiny-xlmr-long")).unwrap()
}

#[test]
fn no_cut_at_512_and_a_cut_at_8192() {
    let e = model();
    assert_eq!(e.spec.max_tokens, 8192);
    for c in cases() {
        let name = c["name"].as_str().unwrap();
        let text = c["text"].as_str().unwrap();
        for (kind, key) in [(Kind::Query, "query"), (Kind::Passage, "passage")] {
            let got = e.tokenize(kind, text).unwrap();
            let want = ids(&c[key]["ids"]);
            assert_eq!(got.len(), want.len(), "{name} {key}");
            assert_eq!(got, want, "{name} {key}");
        }
        assert_eq!(
            e.token_count(Kind::Passage, text, &mut || {}).unwrap() as u64,
            c["passage_token_count"].as_u64().unwrap(),
            "{name}"
        );
    }
    let len =
        |name: &str| cases().iter().find(|c| c["name"] == name).unwrap()["passage"]["ids"].as_array().unwrap().len();
    assert_eq!(len("bill_1809896_whole"), 4330);
    assert_eq!(len("constitution_whole"), 8192);
}

#[test]
fn long_vectors_match_the_reference_single_and_batched() {
    let e = model();
    let cases = cases();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    for (kind, key) in [(Kind::Query, "query"), (Kind::Passage, "passage")] {
        let batch = e.embed_many(kind, &texts, &mut || {}).unwrap();
        for (c, got) in cases.iter().zip(&batch) {
            let name = format!("{} {key}", c["name"].as_str().unwrap());
            let want = floats(&c[key]["embedding"]);
            assert_close(&format!("{name} batched"), got, &want);
            assert_close(&name, &e.embed_one(kind, c["text"].as_str().unwrap(), &mut || {}).unwrap(), &want);
        }
    }
}

#[test]
fn chunks_reach_the_models_maximum_and_not_beyond() {
    let e = model();
    let doc = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/ko/constitution.txt"))
        .unwrap();
    let chunks = e.chunks(Kind::Passage, &doc, 100_000, 0, &mut || {}).unwrap();
    assert!(chunks.len() >= 2, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.n_tokens <= 8192), "{:?}", chunks.iter().map(|c| c.n_tokens).collect::<Vec<_>>());
    assert!(chunks[0].n_tokens > 4096, "the first chunk holds {} tokens", chunks[0].n_tokens);
    for c in &chunks {
        assert_eq!(e.token_count(Kind::Passage, &doc[c.start..c.end], &mut || {}).unwrap(), c.n_tokens);
    }
}

//! The core against the reference: token ids, token counts and vectors that
//! sentence-transformers computed for the fixture model (tests/fixtures, made by
//! make_fixture.py). Tolerances are the README's parity promise for f32 (cosine >= 0.99999,
//! max |diff| <= 1e-5), and for bf16 its documented bound and the reference's own bf16.

use koe5_core::{Embedder, Kind, Precision};
use koe5_testkit::{assert_close, compare, fixtures, floats, ids};
use serde_json::Value;

fn expected() -> Vec<Value> {
    koe5_testkit::cases()
}

fn kinds() -> [(Kind, &'static str); 2] {
    [(Kind::Query, "query"), (Kind::Passage, "passage")]
}

#[test]
fn token_ids_and_counts_match_the_reference() {
    let e = Embedder::load(&fixtures().join("tiny-xlmr")).unwrap();
    let cases = expected();
    assert!(cases.len() >= 30);
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let text = c["text"].as_str().unwrap();
        for (kind, key) in kinds() {
            assert_eq!(e.tokenize(kind, text).unwrap(), ids(&c[key]["ids"]), "{name} {key}");
        }
        assert_eq!(
            e.token_count(Kind::Passage, text, &mut || {}).unwrap() as u64,
            c["passage_token_count"].as_u64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn single_vectors_match_the_reference() {
    let e = Embedder::load(&fixtures().join("tiny-xlmr")).unwrap();
    let (mut min_cos, mut max_diff) = (1f32, 0f32);
    for c in &expected() {
        let name = c["name"].as_str().unwrap();
        for (kind, key) in kinds() {
            let got = e.embed_one(kind, c["text"].as_str().unwrap(), &mut || {}).unwrap();
            let want = floats(&c[key]["embedding"]);
            assert_close(&format!("{name} {key}"), &got, &want);
            let (cos, diff) = compare(&got, &want);
            min_cos = min_cos.min(cos);
            max_diff = max_diff.max(diff);
        }
    }
    println!("parity single: min cosine {min_cos}, max |diff| {max_diff:e}");
}

#[test]
fn batches_of_mixed_lengths_match_the_reference() {
    let e = Embedder::load(&fixtures().join("tiny-xlmr")).unwrap();
    let cases = expected();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    // A small budget forces many small batches; a large one few big ones.
    for (budget, max_batch) in [(600, 4), (8192, 64)] {
        for (kind, key) in kinds() {
            let got = e.embed_many_with(kind, &texts, budget, max_batch, &mut || {}).unwrap();
            assert_eq!(got.len(), cases.len());
            for (c, v) in cases.iter().zip(&got) {
                assert_close(&format!("{} {key} budget {budget}", c["name"]), v, &floats(&c[key]["embedding"]));
                // Texts are packed back to back and nothing mixes them: on the packed
                // kernels a text's vector is the same, to the bit, in any batch.
                if koe5_core::kernels::has_avx512f() {
                    let alone = e.embed_one(kind, c["text"].as_str().unwrap(), &mut || {}).unwrap();
                    assert!(&alone == v, "{} {key}: batching changed the vector", c["name"]);
                }
            }
        }
    }
}

#[test]
fn cls_pooling_without_normalisation_and_a_shorter_limit() {
    let e = Embedder::load(&fixtures().join("tiny-xlmr-cls")).unwrap();
    assert_eq!(e.spec.pooling, koe5_core::Pooling::Cls);
    assert!(!e.spec.normalize);
    assert_eq!(e.spec.max_tokens, 128);
    for c in &expected() {
        let name = c["name"].as_str().unwrap();
        let text = c["text"].as_str().unwrap();
        assert_eq!(e.tokenize(Kind::Passage, text).unwrap(), ids(&c["cls"]["ids"]), "{name}");
        let got = e.embed_one(Kind::Passage, text, &mut || {}).unwrap();
        assert_close(name, &got, &floats(&c["cls"]["embedding"]));
    }
}

#[test]
fn interrupt_hook_runs_within_every_layer_and_can_stop_the_work() {
    let e = Embedder::load(&fixtures().join("tiny-xlmr")).unwrap();
    let mut calls = 0;
    e.embed_one(Kind::Query, "헌법재판소", &mut || calls += 1).unwrap();
    // before each layer, after its Q/K/V projections, after attention, after the FFN expansion
    assert_eq!(calls, 4 * e.spec.encoder.num_hidden_layers);
    // A hook that panics (as PostgreSQL's cancel does, through pgrx) unwinds out.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        e.embed_many(Kind::Passage, &["가"; 10], &mut || panic!("canceled")).unwrap()
    }));
    assert!(r.is_err());
}

/// bf16's documented bound (README "Precision"): every vector within cosine 0.9999 of
/// the reference's f32 vector.
const BF16_MIN_COSINE: f32 = 0.9999;

/// The reference's own bf16 mode on the same inputs (bf16_reference.py).
fn reference_bf16_min_cosine(key: &str) -> f32 {
    let text = std::fs::read_to_string(fixtures().join("bf16-reference.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["kinds"][key]["min_cosine"].as_f64().unwrap() as f32
}

#[test]
fn bf16_vectors_stay_within_the_documented_bound_on_both_kernels() {
    let cases = expected();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let e = Embedder::load_with(&fixtures().join("tiny-xlmr"), Precision::Bf16, &mut || {}).unwrap();
    assert_eq!(e.precision, Precision::Bf16);
    for (kind, key) in kinds() {
        let reference = reference_bf16_min_cosine(key);
        let batched = e.embed_many(kind, &texts, &mut || {}).unwrap();
        let mut min_cos = 1f32;
        for (c, v) in cases.iter().zip(&batched) {
            let want = floats(&c[key]["embedding"]);
            let single = e.embed_one(kind, c["text"].as_str().unwrap(), &mut || {}).unwrap();
            for got in [&single, v] {
                let cos = koe5_core::cosine(got, &want).unwrap();
                assert!(cos >= BF16_MIN_COSINE, "{} {key}: cosine {cos}", c["name"]);
                min_cos = min_cos.min(cos);
            }
        }
        println!("bf16 {key}: min cosine {min_cos} (the reference's bf16 autocast: {reference})");
        // And no worse than the reference's own bf16 mode, beyond f32 noise.
        assert!(min_cos >= reference - 1e-5, "{key}: {min_cos} vs the reference's bf16 {reference}");
    }
    // The portable kernel computes the same sums in another order: equal within f32
    // rounding, whatever this CPU has.
    let a: Vec<f32> = (0..64 * 70).map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5).collect();
    use koe5_core::kernels::{matmul, Epilogue, Packed};
    let w = Packed::pack(&a, 64, 70, Precision::Bf16).unwrap();
    let bias: Vec<f32> = (0..70).map(|i| i as f32 / 100.0).collect();
    let x = &a[..64 * 64];
    let run = |fast| {
        let mut out = Vec::new();
        matmul(x, 64, &w, &bias, Epilogue::BiasGelu, None, fast, &mut out, &mut Default::default());
        out
    };
    let (fast, portable) = (run(true), run(false));
    assert!(fast.iter().zip(&portable).all(|(x, y)| (x - y).abs() <= 1e-5 * x.abs().max(1.0)));
    // And bf16 really ran: its vectors are not the f32 ones.
    let f32_model = Embedder::load(&fixtures().join("tiny-xlmr")).unwrap();
    let text = cases[0]["text"].as_str().unwrap();
    let (x, y) = (
        e.embed_one(Kind::Passage, text, &mut || {}).unwrap(),
        f32_model.embed_one(Kind::Passage, text, &mut || {}).unwrap(),
    );
    assert!(x.iter().zip(&y).any(|(p, q)| (p - q).abs() > 1e-6), "bf16 gave the f32 vector");
}

/// The reference int8 engine on the same inputs (int8_reference.py: ONNX Runtime's
/// dynamic quantisation, as the benchmark's int8 baseline).
fn reference_int8(key: &str) -> (f32, f32) {
    let text = std::fs::read_to_string(fixtures().join("int8-reference.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let k = &v["kinds"][key];
    (k["min_cosine"].as_f64().unwrap() as f32, k["mean_cosine"].as_f64().unwrap() as f32)
}

/// int8: every fixture vector (single and batched, both kinds) at least as close to the
/// reference's f32 vector as the reference int8 engine's worst, and on average at least
/// as close as its average; a text's vector does not depend on its batch; on a CPU with
/// neither AVX512-VNNI nor AVX2 the load is refused, naming what is missing.
#[test]
fn int8_vectors_do_at_least_as_well_as_the_reference_int8_engine() {
    let dir = fixtures().join("tiny-xlmr");
    if let Some(why) = Precision::Int8.unsupported() {
        let err = Embedder::load_with(&dir, Precision::Int8, &mut || {}).err().expect("int8 refused");
        assert_eq!(err.kind, koe5_core::ErrorKind::Unsupported);
        assert!(err.detail.as_deref() == Some(why.as_str()) && why.contains("AVX512-VNNI"), "{err:?}");
        return;
    }
    let cases = expected();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let e = Embedder::load_with(&dir, Precision::Int8, &mut || {}).unwrap();
    assert_eq!(e.precision, Precision::Int8);
    for (kind, key) in kinds() {
        let (ref_min, ref_mean) = reference_int8(key);
        let batched = e.embed_many(kind, &texts, &mut || {}).unwrap();
        let (mut min_cos, mut sum) = (1f32, 0f64);
        for (c, v) in cases.iter().zip(&batched) {
            let want = floats(&c[key]["embedding"]);
            let single = e.embed_one(kind, c["text"].as_str().unwrap(), &mut || {}).unwrap();
            assert!(&single == v, "{} {key}: the batch changed the vector", c["name"]);
            let cos = koe5_core::cosine(v, &want).unwrap();
            min_cos = min_cos.min(cos);
            sum += cos as f64;
        }
        let mean = (sum / cases.len() as f64) as f32;
        println!("int8 {key}: min cosine {min_cos}, mean {mean} (ONNX Runtime int8: {ref_min}, {ref_mean})");
        assert!(min_cos >= ref_min, "{key}: min {min_cos} vs the reference int8's {ref_min}");
        assert!(mean >= ref_mean, "{key}: mean {mean} vs the reference int8's {ref_mean}");
    }
    // And int8 really ran: its vectors are neither the f32 nor the bf16 ones.
    let text = cases[0]["text"].as_str().unwrap();
    let int8 = e.embed_one(Kind::Passage, text, &mut || {}).unwrap();
    for p in [Precision::F32, Precision::Bf16] {
        let other =
            Embedder::load_with(&dir, p, &mut || {}).unwrap().embed_one(Kind::Passage, text, &mut || {}).unwrap();
        assert!(int8.iter().zip(&other).any(|(a, b)| (a - b).abs() > 1e-6), "int8 gave the {p:?} vector");
    }
}

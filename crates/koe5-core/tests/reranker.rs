//! The cross-encoder against the reference (tests/fixtures/expected-rerank.json, made
//! by make_reranker_fixture.py with sentence-transformers' CrossEncoder): the token
//! ids of every pair, the raw logits and the scores, batched and alone, bf16 within the
//! reference's own bf16 error; and the errors for a directory of the wrong kind.

use std::fs;
use std::path::Path;

use koe5_core::{Embedder, ErrorKind, Precision, Reranker, ScoreActivation};
use koe5_testkit::fixtures;
use serde_json::Value;

/// The bound for f32 logits against the reference.
const LOGIT_TOL: f32 = 1e-4;

fn expected() -> Value {
    serde_json::from_str(&fs::read_to_string(fixtures().join("expected-rerank.json")).unwrap()).unwrap()
}

fn pairs() -> Vec<Value> {
    expected()["pairs"].as_array().unwrap().clone()
}

fn model() -> Reranker {
    Reranker::load(&fixtures().join("tiny-xlmr-rerank")).unwrap()
}

#[test]
fn pairs_are_tokenized_as_the_reference_tokenizes_them() {
    let m = model();
    assert_eq!(m.spec.max_tokens, expected()["max_length"].as_u64().unwrap() as usize);
    let mut truncated = 0;
    for p in pairs() {
        let want: Vec<u32> = p["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got = m.pair_ids(p["query"].as_str().unwrap(), p["passage"].as_str().unwrap(), &mut || {}).unwrap();
        assert_eq!(got, want, "{}", p["name"]);
        truncated += usize::from(got.len() == m.spec.max_tokens);
    }
    assert!(truncated >= 6, "the cases cover truncation: {truncated}");
}

#[test]
fn logits_and_scores_equal_the_reference() {
    let m = model();
    assert_eq!(m.spec.score, ScoreActivation::Sigmoid);
    let ps = pairs();
    let mut worst = 0f32;
    for p in &ps {
        let (q, passage) = (p["query"].as_str().unwrap(), p["passage"].as_str().unwrap());
        let logit = m.logits_with(q, &[passage], 2048, 32, &mut || {}).unwrap()[0];
        let want = p["logit"].as_f64().unwrap() as f32;
        worst = worst.max((logit - want).abs());
        let score = m.rerank(q, &[passage], &mut || {}).unwrap()[0];
        assert!((score - p["score"].as_f64().unwrap() as f32).abs() <= LOGIT_TOL, "{}", p["name"]);
    }
    assert!(worst <= LOGIT_TOL, "max |logit - reference| = {worst}");
    eprintln!("f32: max |logit - reference| over {} pairs = {worst:.2e}", ps.len());
}

/// One query against many passages, batched under small budgets: the reference's
/// scores in input order, and each query's ranking of its passages the reference's.
#[test]
fn batches_keep_input_order_and_the_reference_ranking() {
    let m = model();
    let ps = pairs();
    let mut by_query: std::collections::BTreeMap<&str, Vec<&Value>> = Default::default();
    for p in &ps {
        by_query.entry(p["query"].as_str().unwrap()).or_default().push(p);
    }
    let mut ranked = 0;
    for (q, group) in &by_query {
        let passages: Vec<&str> = group.iter().map(|p| p["passage"].as_str().unwrap()).collect();
        for (budget, batch) in [(2048, 32), (600, 3), (1, 1)] {
            let got = m.logits_with(q, &passages, budget, batch, &mut || {}).unwrap();
            for (g, p) in got.iter().zip(group) {
                assert!((g - p["logit"].as_f64().unwrap() as f32).abs() <= LOGIT_TOL, "{} at {budget}", p["name"]);
            }
            let order = |v: &[f32]| {
                let mut i: Vec<usize> = (0..v.len()).collect();
                i.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
                i
            };
            let want: Vec<f32> = group.iter().map(|p| p["logit"].as_f64().unwrap() as f32).collect();
            assert_eq!(order(&got), order(&want), "{q}");
        }
        ranked += usize::from(group.len() > 1);
    }
    assert!(ranked >= 10, "{ranked} queries with several passages");
}

/// bf16 moves the logits no further than the reference's own bf16 (torch autocast)
/// moves them from its f32 ones.
#[test]
fn bf16_stays_within_the_reference_bf16_error() {
    let Ok(m) = Reranker::load_with(&fixtures().join("tiny-xlmr-rerank"), Precision::Bf16, &mut || {}) else {
        panic!("bf16 load failed");
    };
    let bound = expected()["torch_bf16_autocast_max_abs_logit_difference"].as_f64().unwrap() as f32;
    let mut worst = 0f32;
    for p in pairs() {
        let got = m.logits_with(p["query"].as_str().unwrap(), &[p["passage"].as_str().unwrap()], 2048, 32, &mut || {});
        let got = got.unwrap()[0];
        worst = worst.max((got - p["logit"].as_f64().unwrap() as f32).abs());
    }
    eprintln!("bf16: max |logit - reference f32| = {worst:.4} (torch bf16: {bound:.4})");
    assert!(worst <= bound, "bf16 max |logit - reference| = {worst}, torch bf16's = {bound}");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = fs::canonicalize(e.path()).unwrap();
        if target.is_file() {
            std::os::unix::fs::symlink(&target, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_directory_of_the_wrong_kind_is_a_clear_error() {
    let tmp = std::env::temp_dir().join(format!("koe5-reranker-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    struct Cleanup<'a>(&'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(self.0);
        }
    }
    let _cleanup = Cleanup(&tmp);
    // An embedding model is not a cross-encoder, and the reverse.
    let e = Reranker::load(&fixtures().join("tiny-xlmr")).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.ends_with("is an embedding model, not a cross-encoder"), "{}", e.message);
    let e = Embedder::load(&fixtures().join("tiny-xlmr-rerank")).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.ends_with("is a cross-encoder, not an embedding model"), "{}", e.message);

    // A head with two labels.
    let config: Value =
        serde_json::from_str(&fs::read_to_string(fixtures().join("tiny-xlmr-rerank/config.json")).unwrap()).unwrap();
    let two = tmp.join("two-labels");
    copy_dir(&fixtures().join("tiny-xlmr-rerank"), &two);
    let mut c = config.clone();
    c["id2label"] = serde_json::json!({"0": "LABEL_0", "1": "LABEL_1"});
    fs::remove_file(two.join("config.json")).unwrap();
    fs::write(two.join("config.json"), c.to_string()).unwrap();
    let e = Reranker::load(&two).err().unwrap();
    assert_eq!((e.kind, e.message.ends_with("has 2 labels")), (ErrorKind::Unsupported, true), "{}", e.message);

    // A cross-encoder's config over weights without the classifier.
    let headless = tmp.join("headless");
    copy_dir(&fixtures().join("tiny-xlmr-rerank"), &headless);
    let mut c = config.clone();
    for (k, v) in serde_json::from_str::<Value>(&fs::read_to_string(fixtures().join("tiny-xlmr/config.json")).unwrap())
        .unwrap()
        .as_object()
        .unwrap()
    {
        if k != "architectures" {
            c[k] = v.clone();
        }
    }
    fs::remove_file(headless.join("config.json")).unwrap();
    fs::write(headless.join("config.json"), c.to_string()).unwrap();
    fs::remove_file(headless.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink(
        fs::canonicalize(fixtures().join("tiny-xlmr/model.safetensors")).unwrap(),
        headless.join("model.safetensors"),
    )
    .unwrap();
    let e = Reranker::load(&headless).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("has no classifier."), "{}", e.message);

    // An activation koe5 does not know.
    let odd = tmp.join("odd-activation");
    copy_dir(&fixtures().join("tiny-xlmr-rerank"), &odd);
    let mut c = config;
    c["sentence_transformers"]["activation_fn"] = "torch.nn.modules.activation.Tanh".into();
    fs::remove_file(odd.join("config.json")).unwrap();
    fs::write(odd.join("config.json"), c.to_string()).unwrap();
    let e = Reranker::load(&odd).err().unwrap();
    assert!(e.message.starts_with("unsupported cross-encoder activation"), "{}", e.message);
}

/// `truncate_pair` against cases worked by hand from tokenizers' `truncate_encodings`.
#[test]
fn pair_truncation_is_longest_first() {
    use koe5_core::tokenize::truncate_pair;
    for (n1, n2, max, want) in [
        (3, 4, 10, (3, 4)),  // both fit
        (3, 20, 10, (3, 7)), // only the longer is cut, to what the shorter leaves
        (20, 3, 10, (7, 3)), // the same with the sides swapped
        (8, 9, 10, (5, 5)),  // both cut to half
        (8, 9, 11, (5, 6)),  // odd: the longer keeps the odd token
        (9, 8, 11, (6, 5)),
        (9, 9, 11, (5, 6)),   // a tie: the second side
        (20, 30, 11, (5, 6)), // both over the maximum
        (0, 20, 10, (0, 10)), // an empty side
        (2, 9, 10, (2, 8)),
        (6, 9, 10, (5, 5)), // what the shorter leaves is below half: halves
    ] {
        assert_eq!(truncate_pair(n1, n2, max), want, "{n1} {n2} {max}");
    }
}

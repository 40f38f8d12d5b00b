//! What koe5's tests share, the core's integration tests (`crates/koe5-core/tests`) and
//! the extension's tests (`src/tests`) alike: the fixture models' reference outputs
//! (`tests/fixtures/*.json`, made by `tests/fixtures/make_fixture.py` with
//! sentence-transformers), comparing a vector with the reference's, and recording a
//! measured figure.
//!
//! The reference JSON is compiled in, not read at run time: the extension's tests run
//! inside the test server, as a user that may not be able to read this checkout.

use std::path::PathBuf;

use serde_json::Value;

/// The reference's outputs for the fixture `tiny-xlmr` (and `tiny-xlmr-cls`): per input,
/// token ids, token counts and embeddings, and the generator's versions and weights hash.
pub const EXPECTED: &str = include_str!("../../../tests/fixtures/expected.json");

/// The same for the long-context fixture `tiny-xlmr-long`.
pub const EXPECTED_LONG: &str = include_str!("../../../tests/fixtures/expected-long.json");

/// The fixture folder in this checkout (the extension's tests use a copy the test
/// server can read: `KOE5_TEST_FIXTURES`).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The whole of `expected.json`.
pub fn expected() -> Value {
    serde_json::from_str(EXPECTED).unwrap()
}

/// The cases of `expected.json`, in its order.
pub fn cases() -> Vec<Value> {
    expected()["cases"].as_array().unwrap().clone()
}

/// The cases of `expected-long.json`, in its order.
pub fn long_cases() -> Vec<Value> {
    let v: Value = serde_json::from_str(EXPECTED_LONG).unwrap();
    v["cases"].as_array().unwrap().clone()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// (cosine, max |difference|)
pub fn compare(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let cos = koe5_core::cosine(got, want).unwrap();
    (cos, got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max))
}

/// Fails unless `got` keeps the README's parity promise for f32 ("What it computes"):
/// cosine >= 0.99999 and max |difference| <= 1e-5 to the reference (measured: about
/// 2e-7). Returns (cosine, max |difference|).
pub fn assert_close(name: &str, got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "{name}");
    let (cos, diff) = compare(got, want);
    assert!(cos >= 0.99999 && diff <= 1e-5, "{name}: cosine {cos}, max diff {diff}");
    (cos, diff)
}

/// Records a measured figure: printed, and appended to `$KOE5_FIGURES` when set
/// (scripts/test.sh prints those files after the run, since cargo test hides a passing
/// test's output).
pub fn figure(line: String) {
    use std::io::Write;
    println!("{line}");
    if let Ok(path) = std::env::var("KOE5_FIGURES") {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

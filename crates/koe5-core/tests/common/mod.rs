//! What the core's integration tests share: the fixture folder, reading the
//! reference's JSON, comparing vectors, recording figures.
#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;

use serde_json::Value;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
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

/// The README's parity promise for f32: cosine >= 0.99999 and max |difference| <= 1e-5
/// to the reference (measured: about 2e-7).
pub fn assert_close(name: &str, got: &[f32], want: &[f32]) {
    let (cos, diff) = compare(got, want);
    assert!(cos >= 0.99999 && diff <= 1e-5, "{name}: cosine {cos}, max diff {diff}");
}

/// Records a measured figure: printed, and appended to $KOE5_FIGURES when set.
pub fn figure(line: String) {
    use std::io::Write;
    println!("{line}");
    if let Ok(path) = std::env::var("KOE5_FIGURES") {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

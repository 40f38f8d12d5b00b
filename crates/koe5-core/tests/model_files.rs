//! Broken or foreign model directories give errors that name the file and say what
//! kind of failure it is.

use std::fs;
use std::path::{Path, PathBuf};

use koe5_core::{Embedder, ErrorKind};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-xlmr")
}

/// A copy of the fixture in a fresh temporary directory; big files are symlinked
/// unless `copy_weights`.
fn copy_fixture(tag: &str, copy_weights: bool) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("koe5-core-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for entry in fs::read_dir(fixture()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if p.is_dir() {
            continue;
        }
        if name == "tokenizer.json" || (name == "model.safetensors" && !copy_weights) {
            std::os::unix::fs::symlink(fs::canonicalize(&p).unwrap(), dir.join(&name)).unwrap();
        } else {
            fs::copy(&p, dir.join(&name)).unwrap();
        }
    }
    fs::copy(fixture().join("1_Pooling/config.json"), dir.join("1_Pooling/config.json")).unwrap();
    dir
}

fn load_err(dir: &Path) -> koe5_core::Error {
    match Embedder::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_directory() {
    let e = load_err(Path::new("/nonexistent/koe5-model"));
    assert_eq!(e.kind, ErrorKind::MissingFile);
    assert_eq!(e.message, "model directory \"/nonexistent/koe5-model\" does not exist");
}

#[test]
fn missing_tokenizer() {
    let dir = copy_fixture("notok", false);
    fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::MissingFile);
    assert!(e.message.contains("tokenizer.json"), "{}", e.message);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_weights() {
    let dir = copy_fixture("trunc", true);
    let w = dir.join("model.safetensors");
    let len = fs::metadata(&w).unwrap().len();
    fs::OpenOptions::new().write(true).open(&w).unwrap().set_len(len / 2).unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::CorruptWeights);
    assert!(e.message.contains("model.safetensors"), "{}", e.message);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn another_architecture() {
    let dir = copy_fixture("t5", false);
    let cfg = fs::read_to_string(dir.join("config.json")).unwrap().replace("\"xlm-roberta\"", "\"t5\"");
    fs::write(dir.join("config.json"), cfg).unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("\"t5\"") && e.message.contains("config.json"), "{}", e.message);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_json_and_unsupported_pooling() {
    let dir = copy_fixture("json", false);
    fs::write(dir.join("1_Pooling/config.json"), r#"{"pooling_mode_max_tokens": true}"#).unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("pooling_mode_max_tokens"), "{}", e.message);
    fs::write(dir.join("modules.json"), "[{").unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::InvalidConfig);
    assert!(e.message.contains("modules.json"), "{}", e.message);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn module_paths_cannot_leave_the_model_directory() {
    let dir = copy_fixture("escape", false);
    fs::write(
        dir.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"../../etc","type":"sentence_transformers.models.Pooling"}]"#,
    )
    .unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::InvalidConfig);
    assert!(e.message.contains("leaves the model directory"), "{}", e.message);
    fs::remove_dir_all(&dir).unwrap();
}

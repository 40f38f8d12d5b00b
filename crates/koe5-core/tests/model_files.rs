//! Broken or foreign model directories give errors that name the file and say what
//! kind of failure it is.

use std::fs;
use std::path::{Path, PathBuf};

use koe5_core::{Embedder, ErrorKind};

fn fixture() -> PathBuf {
    koe5_testkit::fixtures().join("tiny-xlmr")
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

// Hardening II: files that would hang, exhaust or mislead a server.

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn fifos_devices_and_huge_files_fail_at_once() {
    for name in ["modules.json", "sentence_bert_config.json", "config.json", "tokenizer.json", "1_Pooling/config.json"]
    {
        // A FIFO would block open() forever; /dev/zero would be read until memory ends.
        for kind in ["fifo", "zero", "huge"] {
            let dir = copy_fixture(&format!("kinds-{kind}"), false);
            let p = dir.join(name);
            let _ = fs::remove_file(&p);
            match kind {
                "fifo" => mkfifo(&p),
                "zero" => std::os::unix::fs::symlink("/dev/zero", &p).unwrap(),
                _ => fs::File::create(&p).unwrap().set_len(2 << 30).unwrap(),
            }
            let t = std::time::Instant::now();
            let e = load_err(&dir);
            assert!(t.elapsed().as_secs_f64() < 2.0, "{name} {kind}: {:?}", t.elapsed());
            let want = if kind == "huge" { "is larger than the" } else { "is not a regular file" };
            assert!(e.message.contains(want) && e.message.contains(name), "{name} {kind}: {}", e.message);
            fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn links_out_of_the_directory_by_another_owner_are_refused() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return; // changing a link's owner needs root, as CI runs
    }
    let dir = copy_fixture("foreign-link", false);
    // The fixture's links belong to us (trusted); a link by another user that leads to
    // a file the server can read (here the weights, as it might be pg_control) is refused.
    let w = dir.join("model.safetensors");
    std::os::unix::fs::lchown(&w, Some(65534), Some(65534)).unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::MissingFile);
    assert!(e.message.contains("leads out of the model directory"), "{}", e.message);
    // The same file copied inside is fine.
    fs::remove_file(&w).unwrap();
    fs::copy(fixture().join("model.safetensors"), &w).unwrap();
    Embedder::load(&dir).unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn impossible_configs_are_invalid_not_panics() {
    for (key, value) in [
        ("hidden_size", "0"),
        ("intermediate_size", "0"),
        ("num_hidden_layers", "0"),
        ("vocab_size", "0"),
        ("layer_norm_eps", "-1e-05"),
        ("layer_norm_eps", "0"),
    ] {
        let dir = copy_fixture("cfg", false);
        let cfg: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        let mut cfg = cfg.as_object().unwrap().clone();
        cfg.insert(key.into(), serde_json::from_str(value).unwrap());
        fs::write(dir.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
        let e = load_err(&dir);
        assert_eq!(e.kind, ErrorKind::InvalidConfig, "{key}={value}: {}", e.message);
        assert!(e.message.contains(key), "{key}: {}", e.message);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_tokenizer_beyond_the_vocabulary_fails_at_load() {
    let dir = copy_fixture("vocab", false);
    let cfg = fs::read_to_string(dir.join("config.json")).unwrap().replace("250002", "1000");
    fs::write(dir.join("config.json"), cfg).unwrap();
    let e = load_err(&dir);
    assert_eq!(e.kind, ErrorKind::InvalidConfig);
    assert!(e.message.contains("tokenizer.json") && e.message.contains("1000 rows"), "{}", e.message);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn weights_that_overflow_give_an_error_not_a_nan_vector() {
    // The fixture's weights with one LayerNorm gain set to infinity (f16 0x7c00).
    let dir = copy_fixture("inf", true);
    let w = dir.join("model.safetensors");
    let mut bytes = fs::read(&w).unwrap();
    let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + hlen]).unwrap();
    let at = header["embeddings.LayerNorm.weight"]["data_offsets"][0].as_u64().unwrap() as usize + 8 + hlen;
    bytes[at..at + 2].copy_from_slice(&0x7c00u16.to_le_bytes());
    fs::write(&w, &bytes).unwrap();
    let e = Embedder::load(&dir).unwrap();
    let err = e.embed_one(koe5_core::Kind::Query, "헌법", &mut || {}).unwrap_err();
    assert_eq!(err.kind, ErrorKind::CorruptWeights);
    assert!(err.message.contains("not finite"), "{}", err.message);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_hash_of_a_loaded_model_is_of_what_it_read() {
    let dir = copy_fixture("sha", true);
    let e = Embedder::load(&dir).unwrap();
    let w = dir.join("model.safetensors");
    assert_eq!(e.weights_sha256, koe5_core::sha256_file(&w, &mut || {}).unwrap());
    // Rewritten in place after the load: the file's hash changes, the model's does not.
    let mut bytes = fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    fs::write(&w, &bytes).unwrap();
    assert_ne!(e.weights_sha256, koe5_core::sha256_file(&w, &mut || {}).unwrap());
    fs::remove_dir_all(&dir).unwrap();
}

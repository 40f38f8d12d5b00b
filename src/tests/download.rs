//! Models by id: koe5.model_id found in a Hugging Face cache, a clear error when it is
//! not there, koe5_download()'s errors, and a download from a loopback stand-in for the
//! Hub that then loads from the cache.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::harness::*;

    #[pg_test]
    fn finds_the_model_id_in_the_hugging_face_cache() {
        // A cache laid out as huggingface_hub lays it out, in a directory of this test.
        let cache = std::env::temp_dir().join(format!("koe5-hf-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let repo = cache.join("models--koe5-test--tiny");
        let snapshot = repo.join("snapshots").join("0123abcd");
        std::fs::create_dir_all(snapshot.join("1_Pooling")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
        let fixture = std::path::Path::new(FIXTURES).join("tiny-xlmr");
        for f in [
            "config.json",
            "modules.json",
            "sentence_bert_config.json",
            "1_Pooling/config.json",
            "tokenizer.json",
            "model.safetensors",
        ] {
            std::os::unix::fs::symlink(fixture.join(f), snapshot.join(f)).unwrap();
        }
        // The backend reads HF_HUB_CACHE when it resolves the model.
        unsafe { std::env::set_var("HF_HUB_CACHE", &cache) };
        Spi::run("SET koe5.model_path = ''").unwrap();
        Spi::run("SET koe5.model_id = 'koe5-test/tiny'").unwrap();
        let c = &cases()[0];
        let got = vector_of("SELECT koe5_passage($1)", c["text"].as_str().unwrap());
        assert_close("from the cache", &got, &floats(&c["passage"]["embedding"]));
        let info = Spi::get_one::<pgrx::JsonB>("SELECT koe5_model_info()").unwrap().unwrap().0;
        assert_eq!(info["directory"], snapshot.display().to_string());
        assert_eq!(info["loaded"], true);
        unsafe { std::env::remove_var("HF_HUB_CACHE") };
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[pg_test]
    fn download_failures_are_clear_errors() {
        // No hub is reachable from here: point hf-hub at a closed port on this machine.
        let cache = std::env::temp_dir().join(format!("koe5-dl-cache-{}", std::process::id()));
        unsafe {
            std::env::set_var("HF_HUB_CACHE", &cache);
            std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
        }
        Spi::run("SET koe5.model_id = '../../etc'").unwrap();
        assert_eq!(outcome("SELECT koe5_download()"), "22023: invalid model id \"../../etc\"");
        Spi::run("SET koe5.model_id = 'nlpai-lab/KoE5'").unwrap();
        let got = outcome("SELECT koe5_download()");
        assert!(got.starts_with("08000: could not download model \"nlpai-lab/KoE5\""), "{got}");
        Spi::run("SET koe5.reranker_id = 'BAAI/bge-reranker-v2-m3'").unwrap();
        let got = outcome("SELECT koe5_download('reranker')");
        assert!(got.starts_with("08000: could not download reranker \"BAAI/bge-reranker-v2-m3\""), "{got}");
        assert_eq!(outcome("SELECT koe5_download('tokenizer')"), "22023: invalid download \"tokenizer\"");
        unsafe {
            std::env::remove_var("HF_HUB_CACHE");
            std::env::remove_var("HF_ENDPOINT");
        }
        let _ = std::fs::remove_dir_all(&cache);
    }

    #[pg_test]
    fn no_model_configured_says_where_it_looked() {
        Spi::run("SET koe5.model_path = ''").unwrap();
        Spi::run("SET koe5.model_id = 'nobody/no-such-model'").unwrap();
        let got = outcome("SELECT koe5_passage('x')");
        assert_eq!(got, "58P01: model \"nobody/no-such-model\" was not found");
        let info = Spi::get_one::<pgrx::JsonB>("SELECT koe5_model_info()").unwrap().unwrap().0;
        assert_eq!(info["loaded"], false);
        assert_eq!(info["error"], "model \"nobody/no-such-model\" was not found");
        Spi::run("SET koe5.reranker_path = ''").unwrap();
        Spi::run("SET koe5.reranker_id = 'nobody/no-such-reranker'").unwrap();
        let got = outcome("SELECT koe5_rerank_score('q', 'p')");
        assert_eq!(got, "58P01: reranker \"nobody/no-such-reranker\" was not found");
    }
}

#[cfg(test)]
mod client {
    use std::time::{Duration, Instant};

    use crate::tests::harness::client::*;
    use crate::tests::harness::*;

    /// A stand-in for the Hugging Face Hub on a loopback port: the four requests hf-hub
    /// makes for a snapshot (revision, tree, HEAD and GET per file), served for one
    /// model repository. Records every request line; stops by itself after two minutes.
    fn fake_hub(
        repo: &'static str,
        commit: &'static str,
        files: Vec<(String, Vec<u8>)>,
    ) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = log.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                seen.lock().unwrap().push(request.trim().to_owned());
                let mut parts = request.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let path = path.split('?').next().unwrap();
                let api = format!("/api/models/{repo}");
                let resolve = format!("/{repo}/resolve/{commit}/");
                let (status, body, extra): (&str, Vec<u8>, String) = if path.starts_with(&format!("{api}/revision/")) {
                    ("200 OK", format!(r#"{{"id":"{repo}","sha":"{commit}"}}"#).into_bytes(), String::new())
                } else if path == format!("{api}/tree/{commit}") {
                    let entries: Vec<String> = files
                        .iter()
                        .map(|(name, data)| {
                            format!(
                                r#"{{"type":"file","oid":"{:x}","size":{},"path":"{name}"}}"#,
                                data.len(),
                                data.len()
                            )
                        })
                        .collect();
                    ("200 OK", format!("[{}]", entries.join(",")).into_bytes(), String::new())
                } else if let Some((name, data)) =
                    path.strip_prefix(&resolve).and_then(|f| files.iter().find(|(n, _)| n == f))
                {
                    let etag = format!("{:016x}{}", data.len(), name.len());
                    ("200 OK", data.clone(), format!("ETag: \"{etag}\"\r\nX-Repo-Commit: {commit}\r\n"))
                } else {
                    ("404 Not Found", b"{}".to_vec(), String::new())
                };
                let mut out = stream;
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/json\r\n{extra}Connection: close\r\n\r\n",
                    body.len()
                );
                let _ = out.write_all(head.as_bytes());
                if method != "HEAD" {
                    let _ = out.write_all(&body);
                }
            }
        });
        (port, log)
    }

    #[test]
    fn download_fetches_a_snapshot_that_then_loads_from_the_cache() {
        const REPO: &str = "koe5-test/tiny";
        const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
        let fixture = std::path::Path::new(FIXTURES).join("tiny-xlmr");
        let mut files: Vec<(String, Vec<u8>)> = koe5_core::hub::MODEL_FILES
            .iter()
            .map(|f| (f.to_string(), std::fs::read(fixture.join(f)).unwrap()))
            .collect();
        files.push(("pytorch_model.bin".into(), b"not wanted".to_vec()));
        let (port, log) = fake_hub(REPO, COMMIT, files);
        let cache = std::env::temp_dir().join(format!("koe5-fakehub-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);

        let mut c = connect(None);
        c.execute("SELECT tests.set_env_for_test('HF_ENDPOINT', $1)", &[&format!("http://127.0.0.1:{port}")]).unwrap();
        c.execute("SELECT tests.set_env_for_test('HF_HUB_CACHE', $1)", &[&cache.display().to_string()]).unwrap();
        c.batch_execute(&format!("SET koe5.model_path = ''; SET koe5.model_id = '{REPO}'")).unwrap();
        let dir: String = c.query_one("SELECT koe5_download()", &[]).unwrap().get(0);
        assert_eq!(dir, cache.join("models--koe5-test--tiny/snapshots").join(COMMIT).display().to_string());
        let requests = log.lock().unwrap().clone();
        assert!(requests.iter().all(|r| !r.contains("pytorch_model.bin")), "{requests:?}");
        assert!(requests.iter().any(|r| r.starts_with("GET") && r.contains("model.safetensors")), "{requests:?}");

        // The downloaded snapshot is what koe5.model_id now resolves to.
        let (text, want) = case("ko_constitution_art1");
        let got: Vec<f32> = c.query_one("SELECT koe5_passage($1)", &[&text]).unwrap().get(0);
        assert_close("downloaded model", &got, &want);
        let info: serde_json::Value =
            c.query_one("SELECT koe5_model_info()::text", &[]).unwrap().get::<_, String>(0).parse().unwrap();
        assert_eq!(info["directory"], dir);
        let _ = std::fs::remove_dir_all(&cache);
    }

    /// koe5_download('reranker') fetches koe5.reranker_id's cross-encoder files (and no
    /// others), and the reranker then loads from the cache and scores as the reference.
    #[test]
    fn download_fetches_a_reranker_that_then_loads_from_the_cache() {
        const REPO: &str = "koe5-test/tiny-rerank";
        const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";
        let fixture = std::path::Path::new(FIXTURES).join("tiny-xlmr-rerank");
        let mut files: Vec<(String, Vec<u8>)> = koe5_core::hub::RERANKER_FILES
            .iter()
            .map(|f| (f.to_string(), std::fs::read(fixture.join(f)).unwrap()))
            .collect();
        files.push(("onnx/model.onnx".into(), b"not wanted".to_vec()));
        let (port, log) = fake_hub(REPO, COMMIT, files);
        let cache = std::env::temp_dir().join(format!("koe5-fakehub-rerank-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);

        let mut c = connect(None);
        c.execute("SELECT tests.set_env_for_test('HF_ENDPOINT', $1)", &[&format!("http://127.0.0.1:{port}")]).unwrap();
        c.execute("SELECT tests.set_env_for_test('HF_HUB_CACHE', $1)", &[&cache.display().to_string()]).unwrap();
        c.batch_execute(&format!("SET koe5.reranker_path = ''; SET koe5.reranker_id = '{REPO}'")).unwrap();
        let dir: String = c.query_one("SELECT koe5_download('reranker')", &[]).unwrap().get(0);
        assert_eq!(dir, cache.join("models--koe5-test--tiny-rerank/snapshots").join(COMMIT).display().to_string());
        let requests = log.lock().unwrap().clone();
        assert!(requests.iter().all(|r| !r.contains("onnx")), "{requests:?}");
        assert!(requests.iter().any(|r| r.starts_with("GET") && r.contains("model.safetensors")), "{requests:?}");

        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(std::path::Path::new(FIXTURES).join("expected-rerank.json")).unwrap(),
        )
        .unwrap();
        let pair = &expected["pairs"][0];
        let score: f32 = c
            .query_one(
                "SELECT koe5_rerank_score($1, $2)",
                &[&pair["query"].as_str().unwrap(), &pair["passage"].as_str().unwrap()],
            )
            .unwrap()
            .get(0);
        let want = pair["score"].as_f64().unwrap() as f32;
        assert!((score - want).abs() < 2.5e-5, "{score} vs {want}");
        let info: serde_json::Value =
            c.query_one("SELECT koe5_reranker_info()::text", &[]).unwrap().get::<_, String>(0).parse().unwrap();
        assert_eq!(info["directory"], dir);
        let _ = std::fs::remove_dir_all(&cache);
    }
}

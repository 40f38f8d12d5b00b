//! Loading the model: koe5_model_info describes and identifies it (SHA-256 of the
//! weights); broken settings (no directory, no tokenizer, cut weights, another
//! architecture) are clear errors the backend recovers from; a FIFO or device among the
//! model files fails at once; roles sharing a backend do not share the query cache.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::harness::*;

    #[pg_test]
    fn model_info_describes_and_identifies_the_model() {
        use_fixture("tiny-xlmr");
        let info = || Spi::get_one::<pgrx::JsonB>("SELECT koe5_model_info()").unwrap().unwrap().0;
        let before = info();
        assert_eq!(before["loaded"], false);
        Spi::run("SELECT koe5_query('x')").unwrap();
        let after = info();
        assert_eq!(after["loaded"], true);
        assert_eq!(after["dimension"], 32);
        assert_eq!(after["max_tokens"], 512);
        assert_eq!(after["pooling"], "mean");
        assert_eq!(after["normalize"], true);
        assert!(after["load_time_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(after["directory"], format!("{FIXTURES}/tiny-xlmr"));
        // The generator recorded the weights' SHA-256 with Python's hashlib.
        let generator: serde_json::Value = serde_json::from_str(EXPECTED).unwrap();
        assert_eq!(after["sha256"], generator["generator"]["model_safetensors_sha256"]);
        assert_eq!(before["sha256"], after["sha256"]);
    }

    #[pg_test]
    fn broken_model_settings_fail_cleanly_and_the_backend_recovers() {
        let base = std::env::temp_dir().join(format!("koe5-pgtest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let fixture = std::path::Path::new(FIXTURES).join("tiny-xlmr");
        let variant = |name: &str, edit: &dyn Fn(&std::path::Path)| {
            let dir = base.join(name);
            std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
            for f in ["config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"] {
                std::fs::copy(fixture.join(f), dir.join(f)).unwrap();
            }
            for f in ["tokenizer.json", "model.safetensors"] {
                std::os::unix::fs::symlink(fixture.join(f), dir.join(f)).unwrap();
            }
            edit(&dir);
            dir
        };
        let no_tokenizer = variant("no-tokenizer", &|d| std::fs::remove_file(d.join("tokenizer.json")).unwrap());
        let truncated = variant("truncated", &|d| {
            let w = d.join("model.safetensors");
            std::fs::remove_file(&w).unwrap();
            let bytes = std::fs::read(fixture.join("model.safetensors")).unwrap();
            std::fs::write(&w, &bytes[..bytes.len() / 3]).unwrap();
        });
        let t5 = variant("t5", &|d| {
            let c = std::fs::read_to_string(d.join("config.json")).unwrap().replace("\"xlm-roberta\"", "\"t5\"");
            std::fs::write(d.join("config.json"), c).unwrap();
        });
        let q = "SELECT koe5_query('헌법')";
        let checks = [
            (
                "/nonexistent/koe5".to_string(),
                "58P01: model directory \"/nonexistent/koe5\" does not exist".to_string(),
            ),
            (
                no_tokenizer.display().to_string(),
                format!("58P01: file \"{}/tokenizer.json\" does not exist", no_tokenizer.display()),
            ),
            (
                truncated.display().to_string(),
                format!("XX001: could not load weights from \"{}/model.safetensors\"", truncated.display()),
            ),
            (
                t5.display().to_string(),
                format!("0A000: unsupported model type \"t5\" in \"{}/config.json\"", t5.display()),
            ),
        ];
        for (path, want) in &checks {
            Spi::run(&format!("SET koe5.model_path = '{path}'")).unwrap();
            let got = outcome(q);
            assert!(got.starts_with(want.as_str()), "{path}: got {got:?}, want {want:?}");
            // Fixing the setting makes the same backend work again.
            use_fixture("tiny-xlmr");
            assert_eq!(outcome(q), "ok");
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// Hardening II through SQL: a FIFO or a device among the model files is a prompt
    /// 58P01 (it hung the backend, or read until the OOM killer reset the server), an
    /// unreadable weights file is reported by koe5_model_info instead of raised, and
    /// the query cache is not shared between roles of one backend.
    #[pg_test]
    fn hostile_model_files_and_roles_sharing_a_backend() {
        let fixture = std::path::Path::new(FIXTURES).join("tiny-xlmr");
        let dir = std::env::temp_dir().join(format!("koe5-pg-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        for f in ["config.json", "sentence_bert_config.json", "1_Pooling/config.json", "model.safetensors"] {
            std::fs::copy(fixture.join(f), dir.join(f)).unwrap();
        }
        std::os::unix::fs::symlink(
            std::fs::canonicalize(fixture.join("tokenizer.json")).unwrap(),
            dir.join("tokenizer.json"),
        )
        .unwrap();
        let fifo = std::ffi::CString::new(dir.join("modules.json").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        Spi::run(&format!("SET koe5.model_path = '{}'", dir.display())).unwrap();
        let started = std::time::Instant::now();
        let got = outcome("SELECT koe5_query('헌법')");
        assert!(started.elapsed().as_secs() < 5, "{got} after {:?}", started.elapsed());
        assert_eq!(got, format!("58P01: \"{}/modules.json\" is not a regular file", dir.display()));
        std::fs::remove_file(dir.join("modules.json")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("modules.json")).unwrap();
        assert_eq!(
            outcome("SELECT koe5_query('헌법')"),
            format!("58P01: \"{}/modules.json\" is not a regular file", dir.display())
        );
        std::fs::remove_file(dir.join("modules.json")).unwrap();
        std::fs::copy(fixture.join("modules.json"), dir.join("modules.json")).unwrap();
        // Weights the server cannot read: reported, not raised.
        let w = dir.join("model.safetensors");
        std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        // SAFETY: geteuid cannot fail. (Root reads any file; the test server is not root.)
        if unsafe { libc::geteuid() } != 0 {
            let info = Spi::get_one::<pgrx::JsonB>("SELECT koe5_model_info()").unwrap().unwrap().0;
            assert_eq!(info["loaded"], false, "{info}");
            assert!(info["error"].as_str().unwrap().contains("model.safetensors"), "{info}");
        }
        std::fs::remove_dir_all(&dir).unwrap();

        use_fixture("tiny-xlmr");
        Spi::run("CREATE ROLE koe5_cache_a; CREATE ROLE koe5_cache_b").unwrap();
        Spi::run("GRANT koe5_cache_a, koe5_cache_b TO CURRENT_USER").unwrap();
        let hits = || Spi::get_one::<i64>("SELECT query_cache_hits FROM koe5_backend_stats()").unwrap().unwrap();
        Spi::run("SET ROLE koe5_cache_a").unwrap();
        Spi::run("SELECT koe5_query('캐시 역할 시험')").unwrap();
        let before = hits();
        Spi::run("SELECT koe5_query('캐시 역할 시험')").unwrap();
        assert_eq!(hits(), before + 1, "the same role hits its own cache");
        Spi::run("SET ROLE koe5_cache_b").unwrap();
        Spi::run("SELECT koe5_query('캐시 역할 시험')").unwrap();
        assert_eq!(hits(), before + 1, "another role does not hit the first role's entry");
        Spi::run("RESET ROLE").unwrap();
    }
}

//! Tests that run inside PostgreSQL (`cargo pgrx test`): the SQL surface against the
//! reference vectors of the fixture model, error paths with their SQLSTATEs, pgvector
//! recipes, and (from a client) encodings, cancel and statement_timeout.

use pgrx::prelude::*;

/// The fixture directory as the test server sees it. scripts/test.sh copies the
/// fixtures where the "postgres" user can read them and names that copy here.
pub const FIXTURES: &str = match option_env!("KOE5_TEST_FIXTURES") {
    Some(p) => p,
    None => concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"),
};

const EXPECTED: &str = include_str!("../tests/fixtures/expected.json");

pub(crate) fn cases() -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(EXPECTED).unwrap();
    v["cases"].as_array().unwrap().clone()
}

pub(crate) fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// Fails unless `got` is within the issue's tolerance of `want`.
pub(crate) fn assert_close(name: &str, got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "{name}");
    let cos = koe5_core::cosine(got, want).unwrap();
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(cos >= 0.99999 && diff <= 1e-5, "{name}: cosine {cos}, max diff {diff}");
    (cos, diff)
}

/// A `Name: value kB` field of a file in /proc/PROCESS/ (`self` or a pid), in KiB.
pub(crate) fn proc_kb(process: &str, file: &str, field: &str) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{process}/{file}")).ok()?;
    text.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;
    use pgrx::datum::DatumWithOid;

    fn use_fixture(name: &str) {
        Spi::run(&format!("SET koe5.model_path = '{FIXTURES}/{name}'")).unwrap();
    }

    /// `SQLSTATE: message` of the error `sql` raises, or "ok".
    fn outcome(sql: &str) -> String {
        let missing = Spi::get_one::<bool>("SELECT to_regprocedure('pg_temp.outcome(text)') IS NULL").unwrap();
        if missing == Some(true) {
            Spi::run(
                "CREATE FUNCTION pg_temp.outcome(q text) RETURNS text LANGUAGE plpgsql AS $$
                 BEGIN EXECUTE q; RETURN 'ok';
                 EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ': ' || SQLERRM; END $$",
            )
            .unwrap();
        }
        Spi::get_one_with_args::<String>("SELECT pg_temp.outcome($1)", &[DatumWithOid::from(sql)]).unwrap().unwrap()
    }

    fn vector_of(sql: &str, text: &str) -> Vec<f32> {
        Spi::get_one_with_args::<Vec<f32>>(sql, &[DatumWithOid::from(text)]).unwrap().unwrap()
    }

    /// Lets client-side tests point this backend's Hugging Face settings elsewhere.
    #[pg_extern]
    fn set_env_for_test(name: &str, value: &str) {
        unsafe { std::env::set_var(name, value) };
    }

    /// Lets client-side tests start the test server the way #[pg_test]s do.
    #[pg_test]
    fn server_is_up() {}

    #[pg_test]
    fn single_forms_match_the_reference() {
        use_fixture("tiny-xlmr");
        let (mut min_cos, mut max_diff) = (1f32, 0f32);
        for c in cases() {
            let text = c["text"].as_str().unwrap();
            for (f, key) in [("koe5_query", "query"), ("koe5_passage", "passage")] {
                let got = vector_of(&format!("SELECT {f}($1)"), text);
                let (cos, diff) = assert_close(&format!("{} {key}", c["name"]), &got, &floats(&c[key]["embedding"]));
                min_cos = min_cos.min(cos);
                max_diff = max_diff.max(diff);
            }
        }
        pgrx::notice!("parity through SQL: min cosine {min_cos}, max |diff| {max_diff:e}");
    }

    #[pg_test]
    fn batch_forms_match_the_reference_in_order_with_nulls() {
        use_fixture("tiny-xlmr");
        let cases = cases();
        // Mixed lengths, with NULLs between the texts.
        let mut texts: Vec<Option<String>> = Vec::new();
        for c in &cases {
            texts.push(Some(c["text"].as_str().unwrap().to_owned()));
            if texts.len().is_multiple_of(7) {
                texts.push(None);
            }
        }
        for (f, key) in [("koe5_query", "query"), ("koe5_passage", "passage")] {
            let rows: Vec<(i64, Option<Vec<f32>>)> = Spi::connect(|client| {
                client
                    .select(
                        &format!("SELECT n, e FROM {f}($1::text[]) WITH ORDINALITY AS t(e, n) ORDER BY n"),
                        None,
                        &[DatumWithOid::from(texts.clone())],
                    )
                    .unwrap()
                    .map(|r| (r.get::<i64>(1).unwrap().unwrap(), r.get::<Vec<f32>>(2).unwrap()))
                    .collect()
            });
            assert_eq!(rows.len(), texts.len());
            let mut next_case = cases.iter();
            for ((n, e), t) in rows.iter().zip(&texts) {
                match t {
                    None => assert!(e.is_none(), "row {n} should be NULL"),
                    Some(_) => {
                        let c = next_case.next().unwrap();
                        assert_close(
                            &format!("{} {key} batch", c["name"]),
                            e.as_ref().unwrap(),
                            &floats(&c[key]["embedding"]),
                        );
                    }
                }
            }
        }
        // The empty array gives no rows, a NULL array a NULL result.
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM koe5_passage('{}'::text[])").unwrap(), Some(0));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM koe5_passage(NULL::text[])").unwrap(), Some(0));
    }

    #[pg_test]
    fn batches_span_rounds_with_nulls_at_the_boundary() {
        use_fixture("tiny-xlmr");
        let cases = cases();
        // 300 elements: texts cycle through the cases; NULLs at 1-based positions 255 and
        // 256, where a round of 256 texts ends.
        let texts: Vec<Option<String>> = (0..300)
            .map(|i| (i != 254 && i != 255).then(|| cases[i % cases.len()]["text"].as_str().unwrap().to_owned()))
            .collect();
        let rows: Vec<(i64, Option<Vec<f32>>)> = Spi::connect(|client| {
            client
                .select(
                    "SELECT n, e FROM koe5_passage($1::text[]) WITH ORDINALITY AS t(e, n)",
                    None,
                    &[DatumWithOid::from(texts.clone())],
                )
                .unwrap()
                .map(|r| (r.get::<i64>(1).unwrap().unwrap(), r.get::<Vec<f32>>(2).unwrap()))
                .collect()
        });
        assert_eq!(rows.len(), 300);
        for (n, e) in rows {
            let i = (n - 1) as usize;
            match &texts[i] {
                None => assert!(e.is_none(), "row {n}"),
                Some(_) => {
                    assert_close(
                        &format!("row {n}"),
                        &e.unwrap(),
                        &floats(&cases[i % cases.len()]["passage"]["embedding"]),
                    );
                }
            }
        }
    }

    #[pg_test]
    fn null_in_null_out() {
        use_fixture("tiny-xlmr");
        for f in ["koe5_query(NULL::text)", "koe5_passage(NULL::text)", "koe5_token_count(NULL)"] {
            assert_eq!(Spi::get_one::<bool>(&format!("SELECT {f} IS NULL")).unwrap(), Some(true), "{f}");
        }
        assert_eq!(Spi::get_one::<bool>("SELECT koe5_similarity(NULL, '{1}') IS NULL").unwrap(), Some(true));
    }

    #[pg_test]
    fn token_counts_match_the_reference() {
        use_fixture("tiny-xlmr");
        for c in cases() {
            let n = Spi::get_one_with_args::<i32>(
                "SELECT koe5_token_count($1)",
                &[DatumWithOid::from(c["text"].as_str().unwrap())],
            )
            .unwrap()
            .unwrap();
            assert_eq!(n as u64, c["passage_token_count"].as_u64().unwrap(), "{}", c["name"]);
        }
    }

    #[pg_test]
    fn cls_model_pools_as_configured() {
        use_fixture("tiny-xlmr-cls");
        for c in cases().iter().take(12) {
            let got = vector_of("SELECT koe5_passage($1)", c["text"].as_str().unwrap());
            assert_close(c["name"].as_str().unwrap(), &got, &floats(&c["cls"]["embedding"]));
        }
    }

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

    /// `koe5.precision`: bf16 keeps every fixture vector (single and batch, both kinds)
    /// within the documented cosine 0.9999 of the reference's f32 vectors; the model is
    /// reloaded for the new precision and koe5_model_info says which one runs; f32 again
    /// gives the parity tolerance back.
    #[pg_test]
    fn precision_setting_switches_to_bf16_within_its_documented_bound() {
        use_fixture("tiny-xlmr");
        assert_eq!(Spi::get_one::<String>("SHOW koe5.precision").unwrap().unwrap(), "f32");
        Spi::run("SET koe5.precision = 'bf16'").unwrap();
        let cases = cases();
        let texts: Vec<String> = cases.iter().map(|c| c["text"].as_str().unwrap().to_owned()).collect();
        for (kind, key) in [("query", "query"), ("passage", "passage")] {
            let batch: Vec<Vec<f32>> = Spi::connect(|client| {
                client
                    .select(
                        &format!("SELECT e FROM koe5_{kind}($1::text[]) WITH ORDINALITY AS t(e, n) ORDER BY n"),
                        None,
                        &[DatumWithOid::from(texts.clone())],
                    )
                    .unwrap()
                    .map(|r| r.get::<Vec<f32>>(1).unwrap().unwrap())
                    .collect()
            });
            assert_eq!(batch.len(), cases.len());
            for (c, b) in cases.iter().zip(&batch) {
                let want = floats(&c[key]["embedding"]);
                let one = vector_of(&format!("SELECT koe5_{kind}($1)"), c["text"].as_str().unwrap());
                for (form, got) in [("single", &one), ("batch", b)] {
                    let cos = koe5_core::cosine(got, &want).unwrap();
                    assert!(cos >= 0.9999, "{} {key} {form}: cosine {cos}", c["name"]);
                }
            }
        }
        let info = Spi::get_one::<pgrx::JsonB>("SELECT koe5_model_info()").unwrap().unwrap().0;
        assert_eq!(info["precision"], "bf16");
        assert_eq!(info["loaded"], true);
        Spi::run("SET koe5.precision = 'f32'").unwrap();
        let c = &cases[0];
        let got = vector_of("SELECT koe5_passage($1)", c["text"].as_str().unwrap());
        assert_close("f32 again", &got, &floats(&c["passage"]["embedding"]));
        assert!(outcome("SET koe5.precision = 'int4'").starts_with("22023"));
        // auto says what it chose on this CPU, and why.
        assert!(info.get("precision_auto").is_none(), "only for auto: {info}");
        Spi::run("SET koe5.precision = 'auto'").unwrap();
        let info = Spi::get_one::<pgrx::JsonB>("SELECT koe5_model_info()").unwrap().unwrap().0;
        let (chosen, why) = koe5_core::Precision::auto_choice();
        assert_eq!(info["precision"], chosen.name());
        assert_eq!(info["precision_auto"], why);
        Spi::run("SET koe5.precision = 'f32'").unwrap();
    }

    #[pg_test]
    fn empty_whitespace_and_long_texts() {
        use_fixture("tiny-xlmr");
        // Empty and whitespace-only are ordinary inputs with reference vectors
        // (covered by the parity cases); here: both give the same vector, as the reference's strip makes them.
        let e = vector_of("SELECT koe5_passage($1)", "");
        let w = vector_of("SELECT koe5_passage($1)", " \t\n ");
        assert_eq!(e, w);
        // 1 MB of text is truncated: the same vector as any text with the same first 510 tokens.
        let short = Spi::get_one::<Vec<f32>>("SELECT koe5_passage(repeat('대한민국 헌법 ', 600))").unwrap().unwrap();
        let hwm_before = vm_hwm_kb();
        let long = Spi::get_one::<Vec<f32>>("SELECT koe5_passage(repeat('대한민국 헌법 ', 60000))").unwrap().unwrap();
        let grown_mb = (vm_hwm_kb() - hwm_before) / 1024;
        assert_eq!(
            Spi::get_one::<i32>("SELECT octet_length(repeat('대한민국 헌법 ', 60000))").unwrap(),
            Some(1_200_000)
        );
        assert_close("1 MB text", &long, &short);
        assert!(grown_mb < 64, "peak memory grew by {grown_mb} MB for a 1 MB text");
    }

    fn vm_hwm_kb() -> i64 {
        proc_kb("self", "status", "VmHWM:").unwrap()
    }

    #[pg_test]
    fn similarity_and_its_errors() {
        let s = Spi::get_one::<f32>("SELECT koe5_similarity('{1,2,3}', '{2,4,6}')").unwrap().unwrap();
        assert!((s - 1.0).abs() < 1e-6);
        let s = Spi::get_one::<f32>("SELECT koe5_similarity('{1,0}', '{0,1}')").unwrap().unwrap();
        assert!(s.abs() < 1e-7);
        let cases = [
            ("SELECT koe5_similarity('{1,2,3}', '{1,2}')", "22000: different vector dimensions 3 and 2"),
            ("SELECT koe5_similarity('{1,NULL}', '{1,2}')", "22004: array must not contain nulls"),
            ("SELECT koe5_similarity('{{1,2},{3,4}}', '{1,2,3,4}')", "22000: array must be one-dimensional"),
            (
                "SELECT koe5_similarity('{0,0}', '{1,2}')",
                "22012: cannot compute the cosine similarity of a zero vector",
            ),
            ("SELECT koe5_similarity('{}', '{}')", "22000: cannot compute the similarity of empty arrays"),
            ("SELECT koe5_similarity('{NaN,1}', '{1,2}')", "22000: array must not contain NaN or infinity"),
            ("SELECT koe5_similarity('{Infinity,1}', '{1,2}')", "22000: array must not contain NaN or infinity"),
        ];
        for (sql, want) in cases {
            assert_eq!(outcome(sql), want, "{sql}");
        }
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

    #[pg_test]
    fn no_model_configured_says_where_it_looked() {
        Spi::run("SET koe5.model_path = ''").unwrap();
        Spi::run("SET koe5.model_id = 'nobody/no-such-model'").unwrap();
        let got = outcome("SELECT koe5_passage('x')");
        assert_eq!(got, "58P01: model \"nobody/no-such-model\" was not found");
        let info = Spi::get_one::<pgrx::JsonB>("SELECT koe5_model_info()").unwrap().unwrap().0;
        assert_eq!(info["loaded"], false);
        assert_eq!(info["error"], "model \"nobody/no-such-model\" was not found");
    }

    /// Every thread of the backend but its own (koe5's pool, candle's element-wise pool,
    /// anything a library started) blocks PostgreSQL's signals.
    #[pg_test]
    fn compute_threads_block_every_signal() {
        use_fixture("tiny-xlmr");
        Spi::run("SELECT koe5_passage('스레드')").unwrap();
        let main = std::process::id().to_string();
        let mut names = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap();
            if dir.file_name().unwrap().to_string_lossy() == main {
                continue;
            }
            names.push(comm.trim().to_owned());
            let status = std::fs::read_to_string(dir.join("status")).unwrap();
            let blocked = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim();
            let mask = u64::from_str_radix(blocked, 16).unwrap();
            // SIGINT 2, SIGQUIT 3, SIGUSR1 10, SIGUSR2 12, SIGALRM 14, SIGTERM 15, SIGCHLD 17, SIGURG 23
            for sig in [2, 3, 10, 12, 14, 15, 17, 23] {
                assert!(mask & (1 << (sig - 1)) != 0, "{} does not block signal {sig}: {blocked}", comm.trim());
            }
        }
        assert!(names.iter().any(|n| n.starts_with("koe5-compute")), "no koe5-compute threads: {names:?}");
        // candle's element-wise pool is started with them (never lazily, from this thread).
        if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
            assert!(names.iter().any(|n| n.starts_with("candle-bp")), "no candle-bp threads: {names:?}");
        }
    }

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
        unsafe {
            std::env::remove_var("HF_HUB_CACHE");
            std::env::remove_var("HF_ENDPOINT");
        }
        let _ = std::fs::remove_dir_all(&cache);
    }

    #[pg_test]
    fn settings_and_download_are_for_superusers_only() {
        Spi::run("CREATE ROLE koe5_plain_user").unwrap();
        assert_eq!(outcome("SELECT 1"), "ok"); // creates the helper as superuser
        Spi::run("SET ROLE koe5_plain_user").unwrap();
        for sql in ["SET koe5.model_path = '/tmp'", "SET koe5.model_id = 'evil/model'"] {
            let got = outcome(sql);
            assert!(got.starts_with("42501: permission denied to set parameter"), "{sql}: {got}");
        }
        assert_eq!(outcome("SELECT koe5_download()"), "42501: permission denied for function koe5_download");
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn functions_are_declared_for_the_planner() {
        // IMMUTABLE (generated columns, indexes), STRICT, PARALLEL SAFE, a real cost, a comment.
        let rows: Vec<(String, String, bool, String, f32, bool)> = Spi::connect(|c| {
            c.select(
                "SELECT p.oid::regprocedure::text, p.provolatile::text, p.proisstrict, p.proparallel::text,
                        p.procost, obj_description(p.oid, 'pg_proc') IS NOT NULL
                 FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
                 JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'koe5'
                 WHERE p.proname LIKE 'koe5%' AND p.pronamespace <> 'tests'::regnamespace",
                None,
                &[],
            )
            .unwrap()
            .map(|r| {
                (
                    r.get::<String>(1).unwrap().unwrap(),
                    r.get::<String>(2).unwrap().unwrap(),
                    r.get::<bool>(3).unwrap().unwrap(),
                    r.get::<String>(4).unwrap().unwrap(),
                    r.get::<f32>(5).unwrap().unwrap(),
                    r.get::<bool>(6).unwrap().unwrap(),
                )
            })
            .collect()
        });
        let public: Vec<&str> =
            rows.iter().map(|r| r.0.split('(').next().unwrap()).filter(|n| !n.starts_with("koe5__")).collect();
        for f in
            ["koe5_query", "koe5_passage", "koe5_chunks", "koe5_embed_trigger", "koe5_backfill", "koe5_enqueue_table"]
        {
            assert!(public.contains(&f), "{f} missing from {public:?}");
        }
        for (name, vol, strict, parallel, cost, commented) in rows {
            // Internal helpers (koe5__*) need no comment; everything a user calls has one.
            assert!(commented || name.starts_with("koe5__"), "{name} has no comment");
            if name.starts_with("koe5_query") || name.starts_with("koe5_passage") {
                assert_eq!((vol.as_str(), strict, parallel.as_str()), ("i", true, "s"), "{name}");
                assert!(cost >= 1000.0, "{name} cost {cost}");
            }
        }
    }

    // pgvector recipes: PostgreSQL 18 here carries pgvector 0.8; Debian's 15 has none.
    #[cfg(feature = "pg18")]
    fn articles() -> Vec<(i32, String)> {
        let text = include_str!("../data/ko/constitution.txt");
        let mut out: Vec<(i32, String)> = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix('제') {
                if let Some((num, _)) = rest.split_once("조") {
                    if let Ok(n) = num.parse::<i32>() {
                        if out.last().is_none_or(|(m, _)| *m != n) {
                            out.push((n, line.to_owned()));
                            continue;
                        }
                    }
                }
            }
            if let Some(last) = out.last_mut() {
                if !line.is_empty() {
                    last.1.push(' ');
                    last.1.push_str(line);
                }
            }
        }
        out
    }

    #[cfg(feature = "pg18")]
    fn load_articles(table: &str) {
        for (n, body) in articles().into_iter().take(40) {
            Spi::run_with_args(
                &format!("INSERT INTO {table} (id, body) VALUES ($1, $2)"),
                &[DatumWithOid::from(n), DatumWithOid::from(body.as_str())],
            )
            .unwrap();
        }
    }

    #[cfg(feature = "pg18")]
    #[pg_test]
    fn generated_column_hnsw_index_and_search() {
        use_fixture("tiny-xlmr");
        Spi::run("CREATE EXTENSION IF NOT EXISTS vector").unwrap();
        Spi::run(
            "CREATE TABLE articles (id int PRIMARY KEY, body text NOT NULL,
               emb vector(32) GENERATED ALWAYS AS (koe5_passage(body)) STORED)",
        )
        .unwrap();
        load_articles("articles");
        assert_eq!(Spi::get_one::<i64>("SELECT count(emb) FROM articles").unwrap(), Some(40));
        Spi::run("CREATE INDEX ON articles USING hnsw (emb vector_cosine_ops)").unwrap();
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        let q = "SELECT id FROM articles ORDER BY emb <=> koe5_query('대통령의 임기와 선거')::vector LIMIT 5";
        let plan: String = Spi::connect(|c| {
            c.select(&format!("EXPLAIN {q}"), None, &[])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        });
        assert!(plan.contains("Index Scan using articles_emb_idx"), "{plan}");
        let ids = |sql: &str| -> Vec<i32> {
            Spi::connect(|c| c.select(sql, None, &[]).unwrap().map(|r| r.get::<i32>(1).unwrap().unwrap()).collect())
        };
        let by_index = ids(q);
        // The same top 5 by brute force, with koe5's own similarity and no index.
        let exact = ids(
            "SELECT id FROM articles ORDER BY koe5_similarity(emb::real[], koe5_query('대통령의 임기와 선거')) DESC LIMIT 5",
        );
        assert_eq!(by_index, exact);
        // koe5_similarity agrees with pgvector's cosine distance.
        let worst = Spi::get_one::<f64>(
            "SELECT max(abs(koe5_similarity(a.emb::real[], b.emb::real[]) - (1 - (a.emb <=> b.emb))))
             FROM articles a CROSS JOIN articles b",
        )
        .unwrap()
        .unwrap();
        assert!(worst < 1e-6, "{worst}");
    }

    #[cfg(feature = "pg18")]
    #[pg_test]
    fn trigger_variant_for_tables_without_generated_columns() {
        use_fixture("tiny-xlmr");
        Spi::run("CREATE EXTENSION IF NOT EXISTS vector").unwrap();
        Spi::run("CREATE TABLE notes (id int PRIMARY KEY, body text, emb vector(32))").unwrap();
        Spi::run(
            "CREATE FUNCTION notes_embed() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF TG_OP = 'INSERT' OR NEW.body IS DISTINCT FROM OLD.body THEN
                 NEW.emb := koe5_passage(NEW.body);
               END IF;
               RETURN NEW;
             END $$",
        )
        .unwrap();
        Spi::run(
            "CREATE TRIGGER notes_embed BEFORE INSERT OR UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION notes_embed()",
        )
        .unwrap();
        load_articles("notes");
        let same =
            Spi::get_one::<bool>("SELECT bool_and(emb = koe5_passage(body)::vector) AND count(*) = 40 FROM notes")
                .unwrap();
        assert_eq!(same, Some(true));
        Spi::run("UPDATE notes SET body = '국회의원의 임기는 4년으로 한다.' WHERE id = 1").unwrap();
        assert_eq!(
            Spi::get_one::<bool>(
                "SELECT emb = koe5_passage('국회의원의 임기는 4년으로 한다.')::vector FROM notes WHERE id = 1"
            )
            .unwrap(),
            Some(true)
        );
        Spi::run("UPDATE notes SET body = NULL WHERE id = 2").unwrap();
        assert_eq!(Spi::get_one::<bool>("SELECT emb IS NULL FROM notes WHERE id = 2").unwrap(), Some(true));
    }

    fn embedded_so_far() -> i64 {
        Spi::get_one::<i64>("SELECT texts_embedded FROM koe5_backend_stats()").unwrap().unwrap()
    }

    #[pg_test]
    fn embed_trigger_writes_real_arrays_and_skips_unchanged_text() {
        use_fixture("tiny-xlmr");
        Spi::run(
            "CREATE TABLE trig_docs (id int PRIMARY KEY, body text, note text, emb real[], q real[]);
             CREATE TRIGGER embed BEFORE INSERT OR UPDATE ON trig_docs
                 FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'emb');
             CREATE TRIGGER embed_q BEFORE INSERT OR UPDATE OF body ON trig_docs
                 FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'q', 'query')",
        )
        .unwrap();
        let cases = cases();
        for (i, c) in cases.iter().enumerate().take(10) {
            Spi::run_with_args(
                "INSERT INTO trig_docs (id, body) VALUES ($1, $2)",
                &[DatumWithOid::from(i as i32), DatumWithOid::from(c["text"].as_str().unwrap())],
            )
            .unwrap();
        }
        for (i, c) in cases.iter().enumerate().take(10) {
            let row = |col: &str| {
                Spi::get_one_with_args::<Vec<f32>>(
                    &format!("SELECT {col} FROM trig_docs WHERE id = $1"),
                    &[DatumWithOid::from(i as i32)],
                )
                .unwrap()
                .unwrap()
            };
            assert_close("trigger passage", &row("emb"), &floats(&c["passage"]["embedding"]));
            assert_close("trigger query", &row("q"), &floats(&c["query"]["embedding"]));
        }
        // An update that leaves the text alone embeds nothing.
        let before = embedded_so_far();
        Spi::run("UPDATE trig_docs SET note = 'checked'").unwrap();
        assert_eq!(embedded_so_far(), before, "unchanged text was embedded again");
        // New text is embedded; NULL text empties the target.
        Spi::run("UPDATE trig_docs SET body = '국회는 법률을 제정한다.' WHERE id = 1").unwrap();
        assert_eq!(embedded_so_far(), before + 2);
        assert_eq!(
            Spi::get_one::<bool>(
                "SELECT emb = koe5_passage('국회는 법률을 제정한다.') AND q = koe5_query('국회는 법률을 제정한다.')
                 FROM trig_docs WHERE id = 1"
            )
            .unwrap(),
            Some(true)
        );
        Spi::run("UPDATE trig_docs SET body = NULL WHERE id = 2").unwrap();
        assert_eq!(
            Spi::get_one::<bool>("SELECT emb IS NULL AND q IS NULL FROM trig_docs WHERE id = 2").unwrap(),
            Some(true)
        );
        // Emptying the target asks for the embedding again.
        Spi::run("UPDATE trig_docs SET emb = NULL WHERE id = 3").unwrap();
        assert_eq!(
            Spi::get_one::<bool>("SELECT emb = koe5_passage(body) FROM trig_docs WHERE id = 3").unwrap(),
            Some(true)
        );
    }

    #[pg_test]
    fn array_arguments_at_their_edges() {
        use_fixture("tiny-xlmr");
        let rows = |sql: &str| Spi::get_one::<i64>(&format!("SELECT count(*) FROM {sql}")).unwrap().unwrap();
        for f in ["koe5_passage", "koe5_query"] {
            assert_eq!(rows(&format!("{f}(NULL::text[])")), 0, "{f}: NULL array");
            assert_eq!(rows(&format!("{f}('{{}}'::text[])")), 0, "{f}: empty array");
            assert_eq!(rows(&format!("{f}(ARRAY[NULL, NULL]::text[]) e WHERE e IS NULL")), 2, "{f}: NULL elements");
            assert_eq!(
                outcome(&format!("SELECT count(*) FROM {f}(ARRAY[['가', '나'], ['다', '라']])")),
                "22000: array must be one-dimensional"
            );
        }
        // koe5_similarity: documented results and errors for every odd array.
        assert_eq!(Spi::get_one::<f32>("SELECT koe5_similarity(NULL, '{1}')").unwrap(), None);
        for (args, want) in [
            ("'{}', '{}'", "22000: cannot compute the similarity of empty arrays"),
            ("'{1,NULL}', '{1,2}'", "22004: array must not contain nulls"),
            ("'{{1,2},{3,4}}', '{1,2,3,4}'", "22000: array must be one-dimensional"),
            ("'{1,NaN}', '{1,2}'", "22000: array must not contain NaN or infinity"),
            ("'{1,Infinity}', '{1,2}'", "22000: array must not contain NaN or infinity"),
            ("'{0,0}', '{1,2}'", "22012: cannot compute the cosine similarity of a zero vector"),
            ("'{1,2,3}', '{1,2}'", "22000: different vector dimensions 3 and 2"),
        ] {
            assert_eq!(outcome(&format!("SELECT koe5_similarity({args})")), want, "{args}");
        }
    }

    #[pg_test]
    fn queue_and_backfill_refuse_what_they_cannot_do() {
        use_fixture("tiny-xlmr");
        Spi::run(
            "CREATE TABLE nopk (body text, emb real[]);
             CREATE TABLE parted_q (id int PRIMARY KEY, body text, emb real[]) PARTITION BY RANGE (id);
             CREATE TEMP TABLE temp_q (id int PRIMARY KEY, body text, emb real[]);
             CREATE VIEW nopk_view AS SELECT * FROM nopk;",
        )
        .unwrap();
        for (sql, want) in [
            ("SELECT koe5_enqueue_table('nopk', 'body', 'emb')", "55000: relation \"nopk\" has no primary key"),
            (
                "SELECT koe5_enqueue_table('parted_q', 'body', 'emb')",
                "0A000: koe5_enqueue_table() does not support partitioned tables",
            ),
            (
                "SELECT koe5_enqueue_table('temp_q', 'body', 'emb')",
                "0A000: koe5_enqueue_table() does not support temporary tables",
            ),
            ("SELECT koe5_enqueue_table('nopk', 'body', 'emb', 'doc')", "22023: invalid embedding kind \"doc\""),
            (
                "SELECT koe5_process_queue_table('nopk')",
                "55000: relation \"nopk\" is not registered with koe5_enqueue_table()",
            ),
            ("SELECT koe5_process_queue_table('nopk', 0)", "22023: max_rows must be at least 1"),
            (
                "CALL koe5_backfill('nopk_view', 'body', 'emb')",
                "42809: koe5_backfill() cannot embed rows of \"nopk_view\"",
            ),
        ] {
            assert_eq!(outcome(sql), want, "{sql}");
        }
    }

    #[pg_test]
    fn embed_trigger_misuse_is_a_clear_error() {
        use_fixture("tiny-xlmr");
        Spi::run("CREATE TABLE trig_bad (id int, body text, n int, emb real[])").unwrap();
        let with = |timing: &str, args: &str| {
            Spi::run("DROP TRIGGER IF EXISTS t ON trig_bad").unwrap();
            Spi::run(&format!(
                "CREATE TRIGGER t {timing} INSERT ON trig_bad FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger({args})"
            ))
            .unwrap();
            outcome("INSERT INTO trig_bad (id, body) VALUES (1, '헌법')")
        };
        let got = with("AFTER", "'body', 'emb'");
        assert!(got.starts_with("39P01: koe5_embed_trigger() must be fired BEFORE"), "{got}");
        assert_eq!(with("BEFORE", "'body', 'n'"), "42804: column \"n\" of relation \"trig_bad\" is of type integer");
        assert_eq!(with("BEFORE", "'text', 'emb'"), "42703: column \"text\" of relation \"trig_bad\" does not exist");
        assert_eq!(with("BEFORE", "'body', 'emb', 'doc'"), "22023: invalid embedding kind \"doc\"");
        assert!(with("BEFORE", "'body'").starts_with("22023: koe5_embed_trigger() needs a source column"));
        assert_eq!(with("BEFORE", "'body', 'emb', 'passage'"), "ok");
    }

    #[pg_test]
    fn chunks_fit_the_model_and_cover_the_bill() {
        use_fixture("tiny-xlmr");
        let bill = include_str!("../data/ko/bill-1809896.txt");
        for (max, overlap) in [(512, 0), (128, 0), (96, 24)] {
            let rows: Vec<(i32, String, i32, i32)> = Spi::connect(|c| {
                c.select(
                    "SELECT ord, chunk, n_tokens, koe5_token_count(chunk) FROM koe5_chunks($1, $2, $3)",
                    None,
                    &[DatumWithOid::from(bill), DatumWithOid::from(max), DatumWithOid::from(overlap)],
                )
                .unwrap()
                .map(|r| {
                    (
                        r.get::<i32>(1).unwrap().unwrap(),
                        r.get::<String>(2).unwrap().unwrap(),
                        r.get::<i32>(3).unwrap().unwrap(),
                        r.get::<i32>(4).unwrap().unwrap(),
                    )
                })
                .collect()
            });
            assert!(rows.len() > 1, "{max}: {} chunks", rows.len());
            for (i, (ord, chunk, n, counted)) in rows.iter().enumerate() {
                assert_eq!(*ord, i as i32 + 1);
                assert_eq!(n, counted, "chunk {ord} at {max}");
                assert!(*n <= max, "chunk {ord} has {n} tokens, max {max}");
                assert!(!chunk.trim().is_empty());
            }
            let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
            if overlap == 0 {
                let joined: String = rows.iter().map(|r| r.1.as_str()).collect();
                assert_eq!(squeeze(&joined), squeeze(bill), "chunks at {max} must cover the bill");
                // Cut at sentence or line ends wherever the text has them.
                // (at 128 tokens some of the bill's sentences are longer than a chunk).
                let clean = rows.iter().filter(|r| r.1.ends_with('.') || bill.contains(&format!("{}\n", r.1))).count();
                let want = if max == 512 { 0.9 } else { 0.7 };
                assert!(
                    clean as f64 >= want * rows.len() as f64,
                    "{clean} of {} chunks end at a sentence or line",
                    rows.len()
                );
            }
            pgrx::notice!("bill at max {max}, overlap {overlap}: {} chunks", rows.len());
        }
        assert!(outcome("SELECT * FROM koe5_chunks('헌법', 3)").starts_with("22023: max_tokens must be at least"));
        assert!(outcome("SELECT * FROM koe5_chunks('헌법', 64, 40)").starts_with("22023: "));
        assert!(outcome("SELECT * FROM koe5_chunks('헌법', -1)").starts_with("22023: "));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM koe5_chunks('  ')").unwrap(), Some(0));
    }

    #[pg_test]
    fn a_repeated_query_is_embedded_once_per_session() {
        use_fixture("tiny-xlmr");
        Spi::run(
            "CREATE TABLE cached (id int, emb real[]);
             INSERT INTO cached SELECT g, koe5_passage('조문 ' || (g % 10)) FROM generate_series(1, 1000) g",
        )
        .unwrap();
        // Evaluated for each of the 1,000 rows (the argument is not a constant).
        let per_row = "SELECT count(*) FROM cached, (SELECT '대통령의 권한'::text AS q OFFSET 0) s
                       WHERE koe5_similarity(cached.emb, koe5_query(s.q)) > -2";
        let plan: String = Spi::connect(|c| {
            c.select(&format!("EXPLAIN VERBOSE {per_row}"), None, &[])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        });
        assert!(plan.contains("Join Filter: (koe5_similarity(cached.emb, koe5_query("), "{plan}");
        let stats = || {
            let (t, h) =
                Spi::get_two::<i64, i64>("SELECT texts_embedded, query_cache_hits FROM koe5_backend_stats()").unwrap();
            (t.unwrap(), h.unwrap())
        };
        let (t0, h0) = stats();
        assert_eq!(Spi::get_one::<i64>(per_row).unwrap(), Some(1000));
        let (t1, h1) = stats();
        assert_eq!((t1 - t0, h1 - h0), (1, 999), "1,000 evaluations: one embedding, 999 cache hits");
        // The cached vector is the computed one.
        let direct = Spi::get_one::<Vec<f32>>("SELECT koe5_query('대통령의 권한')").unwrap().unwrap();
        let case = cases().into_iter().next().unwrap();
        let fresh = vector_of("SELECT koe5_query($1)", case["text"].as_str().unwrap());
        assert_close("cache", &fresh, &floats(&case["query"]["embedding"]));
        assert_close("cache", &vector_of("SELECT koe5_query($1)", case["text"].as_str().unwrap()), &fresh);
        assert_eq!(direct.len(), 32);
        // Turned off, every evaluation embeds.
        Spi::run("SET koe5.query_cache_size = 0").unwrap();
        let (t2, _) = stats();
        assert_eq!(
            Spi::get_one::<i64>(&per_row.replace("FROM cached,", "FROM (SELECT * FROM cached LIMIT 50) cached,"))
                .unwrap(),
            Some(50)
        );
        assert_eq!(stats().0 - t2, 50);
        assert_eq!(Spi::get_one::<i32>("SELECT query_cache_entries FROM koe5_backend_stats()").unwrap(), Some(0));
    }

    #[cfg(feature = "pg18")]
    #[pg_test]
    fn embed_trigger_writes_vector_and_halfvec_columns() {
        use_fixture("tiny-xlmr");
        Spi::run("CREATE EXTENSION IF NOT EXISTS vector").unwrap();
        Spi::run(
            "CREATE TABLE trig_vec (id int PRIMARY KEY, body text, v vector(32), h halfvec(32), other int);
             CREATE TRIGGER v BEFORE INSERT OR UPDATE ON trig_vec
                 FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'v');
             CREATE TRIGGER h BEFORE INSERT OR UPDATE ON trig_vec
                 FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'h', 'passage')",
        )
        .unwrap();
        load_articles("trig_vec");
        assert_eq!(
            Spi::get_one::<bool>(
                "SELECT bool_and(v = koe5_passage(body)::vector AND h = koe5_passage(body)::halfvec)
                        AND count(*) = 40 FROM trig_vec"
            )
            .unwrap(),
            Some(true)
        );
        let before = embedded_so_far();
        Spi::run("UPDATE trig_vec SET other = 1").unwrap();
        assert_eq!(embedded_so_far(), before);
        Spi::run("UPDATE trig_vec SET body = NULL WHERE id = 1").unwrap();
        assert_eq!(
            Spi::get_one::<bool>("SELECT v IS NULL AND h IS NULL FROM trig_vec WHERE id = 1").unwrap(),
            Some(true)
        );
        // A vector column of the wrong size is pgvector's error, not a crash.
        Spi::run("CREATE TABLE trig_dim (body text, v vector(3))").unwrap();
        Spi::run(
            "CREATE TRIGGER v BEFORE INSERT ON trig_dim FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'v')",
        )
        .unwrap();
        assert_eq!(outcome("INSERT INTO trig_dim VALUES ('헌법')"), "22000: expected 3 dimensions, not 32");
    }

    #[cfg(feature = "pg18")]
    #[pg_test]
    fn order_by_distance_to_a_query_embeds_it_once() {
        use_fixture("tiny-xlmr");
        Spi::run("CREATE EXTENSION IF NOT EXISTS vector").unwrap();
        Spi::run(
            "CREATE TABLE qdocs (id int, emb vector(32));
             WITH base AS (SELECT n, koe5_passage('조문 ' || n)::vector AS e FROM generate_series(0, 9) n)
             INSERT INTO qdocs SELECT g, base.e FROM generate_series(1, 1000) g JOIN base ON base.n = g % 10",
        )
        .unwrap();
        let embedded = || embedded_so_far();
        let before = embedded();
        Spi::run("SELECT id FROM qdocs ORDER BY emb <=> koe5_query('헌법재판소의 권한')::vector LIMIT 5").unwrap();
        assert_eq!(embedded() - before, 1);
        // A generic plan evaluates koe5_query($1) for every one of the 1,000 rows; the
        // cache embeds it once.
        Spi::run("SET LOCAL plan_cache_mode = force_generic_plan").unwrap();
        Spi::run("PREPARE nearest(text) AS SELECT id FROM qdocs ORDER BY emb <=> koe5_query($1)::vector LIMIT 5")
            .unwrap();
        let plan: String = Spi::connect(|c| {
            c.select("EXPLAIN VERBOSE EXECUTE nearest('국회의 권한')", None, &[])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        });
        assert!(plan.contains("Seq Scan on public.qdocs") && plan.contains("koe5_query($1)"), "{plan}");
        let (before, hits) =
            Spi::get_two::<i64, i64>("SELECT texts_embedded, query_cache_hits FROM koe5_backend_stats()").unwrap();
        Spi::run("EXECUTE nearest('국회의 권한')").unwrap();
        let (after, hits_after) =
            Spi::get_two::<i64, i64>("SELECT texts_embedded, query_cache_hits FROM koe5_backend_stats()").unwrap();
        assert_eq!(after.unwrap() - before.unwrap(), 1, "1,000 evaluations, one embedding");
        assert!(hits_after.unwrap() - hits.unwrap() >= 999);
        Spi::run("DEALLOCATE nearest").unwrap();
    }

    #[cfg(feature = "pg18")]
    #[pg_test]
    fn koe5_vector_companion_returns_pgvector_types() {
        use_fixture("tiny-xlmr");
        Spi::run("CREATE EXTENSION koe5_vector CASCADE").unwrap();
        let q = "대통령의 임기와 선거";
        for (f, base, ty) in [
            ("koe5_query_vector", "koe5_query", "vector"),
            ("koe5_passage_vector", "koe5_passage", "vector"),
            ("koe5_query_halfvec", "koe5_query", "halfvec"),
            ("koe5_passage_halfvec", "koe5_passage", "halfvec"),
        ] {
            let same = Spi::get_one_with_args::<bool>(
                &format!("SELECT {f}($1) = {base}($1)::{ty} AND pg_typeof({f}($1))::text = '{ty}'"),
                &[DatumWithOid::from(q)],
            )
            .unwrap();
            assert_eq!(same, Some(true), "{f}");
        }
        // The batch form: input order, within the batch path's tolerance of the single form.
        let rows = Spi::get_one::<bool>(
            "SELECT count(*) = 3 AND max(v <=> koe5_passage(t)::vector) < 1e-5 AND bool_and((t IS NULL) = (v IS NULL))
             FROM unnest(ARRAY['가', NULL, '나다']) WITH ORDINALITY AS a(t, n)
             JOIN koe5_passage_vector(ARRAY['가', NULL, '나다']) WITH ORDINALITY AS b(v, m) ON n = m",
        )
        .unwrap();
        assert_eq!(rows, Some(true));
        // Safe against a hostile search_path: the bodies were bound at creation.
        Spi::run("CREATE SCHEMA evil; CREATE FUNCTION evil.koe5_query(text) RETURNS real[] LANGUAGE sql AS 'SELECT NULL::real[]'")
            .unwrap();
        Spi::run("SET LOCAL search_path = evil, public").unwrap();
        assert_eq!(
            Spi::get_one_with_args::<bool>("SELECT koe5_query_vector($1) IS NOT NULL", &[DatumWithOid::from(q)])
                .unwrap(),
            Some(true)
        );
    }

    /// The README's Korean search example, as written there.
    #[cfg(feature = "pg18")]
    #[pg_test]
    fn readme_search_example_over_the_constitution() {
        use_fixture("tiny-xlmr");
        Spi::run("CREATE EXTENSION IF NOT EXISTS koe5_vector CASCADE").unwrap();
        Spi::run(
            "CREATE TABLE constitution (id int PRIMARY KEY, body text NOT NULL, emb vector(32));
             CREATE TRIGGER embed BEFORE INSERT OR UPDATE OF body ON constitution
                 FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'emb');",
        )
        .unwrap();
        load_articles("constitution");
        Spi::run("CREATE INDEX ON constitution USING hnsw (emb vector_cosine_ops)").unwrap();
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        let search = "SELECT id, round((1 - (emb <=> koe5_query_vector($1)))::numeric, 4)::float8 AS score
                      FROM constitution ORDER BY emb <=> koe5_query_vector($1) LIMIT 5";
        let top = |q: &str| -> Vec<(i32, f64)> {
            Spi::connect(|c| {
                c.select(search, None, &[DatumWithOid::from(q)])
                    .unwrap()
                    .map(|r| (r.get::<i32>(1).unwrap().unwrap(), r.get::<f64>(2).unwrap().unwrap()))
                    .collect()
            })
        };
        let plan: String = Spi::connect(|c| {
            c.select(&format!("EXPLAIN {search}"), None, &[DatumWithOid::from("헌법재판소의 권한")])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        });
        assert!(plan.contains("Index Scan using constitution_emb_idx"), "{plan}");
        let hits = top("헌법재판소의 권한");
        assert_eq!(hits.len(), 5);
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "{hits:?}");
        assert!(hits.iter().all(|h| (-1.0..=1.0).contains(&h.1)), "{hits:?}");
        // A passage vector finds its own article first, with score 1.
        let (id, body) = articles().into_iter().nth(9).unwrap();
        let own: (Option<i32>, Option<f64>) = Spi::get_two_with_args(
            "SELECT id, (1 - (emb <=> koe5_passage_vector($1)))::float8 FROM constitution
             ORDER BY emb <=> koe5_passage_vector($1) LIMIT 1",
            &[DatumWithOid::from(body.as_str())],
        )
        .unwrap();
        assert_eq!(own.0, Some(id));
        assert!((own.1.unwrap() - 1.0).abs() < 1e-5, "{own:?}");
    }

    /// A long-context model (KURE-v1 / bge-m3 shape: 8,194 positions, CLS pooling,
    /// max_seq_length 8192) through SQL: counts, vectors past 512 tokens and chunks up
    /// to the model's maximum, against the reference (tests/fixtures/expected-long.json).
    #[pg_test]
    fn long_context_model_through_sql() {
        use_fixture("tiny-xlmr-long");
        let expected: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/expected-long.json")).unwrap();
        for c in expected["cases"].as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            let count = Spi::get_one_with_args::<i32>("SELECT koe5_token_count($1)", &[DatumWithOid::from(text)])
                .unwrap()
                .unwrap();
            assert_eq!(count as u64, c["passage_token_count"].as_u64().unwrap(), "{}", c["name"]);
            let v = Spi::get_one_with_args::<Vec<f32>>("SELECT koe5_passage($1)", &[DatumWithOid::from(text)])
                .unwrap()
                .unwrap();
            assert_close(c["name"].as_str().unwrap(), &v, &floats(&c["passage"]["embedding"]));
        }
        assert_eq!(Spi::get_one::<i32>("SELECT (koe5_model_info()->>'max_tokens')::int").unwrap(), Some(8192));
        let doc = include_str!("../data/ko/constitution.txt");
        let (n, longest) = Spi::get_two_with_args::<i64, i32>(
            "SELECT count(*), max(n_tokens) FROM koe5_chunks($1, 100000)",
            &[DatumWithOid::from(doc)],
        )
        .unwrap();
        let longest = longest.unwrap();
        assert!(n.unwrap() >= 2 && longest > 4096 && longest <= 8192, "{n:?} chunks, longest {longest}");
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

    // Real trained weights: multilingual-e5-small as scripts/get-model.sh converts it
    // (a BertModel directory), against what sentence-transformers computed on it
    // (tests/real_weights/make_reference.py).
    const REAL_MODEL: &str = match option_env!("KOE5_REAL_MODEL") {
        Some(p) => p,
        None => "/opt/koe5/models/multilingual-e5-small",
    };
    const REAL_EXPECTED: &str = include_str!("../tests/real_weights/e5-small-expected.json");

    fn real_expected() -> serde_json::Value {
        serde_json::from_str(REAL_EXPECTED).unwrap()
    }

    /// The model card's example (one query, two passages) through SQL: the reference's
    /// 3×3 cosine matrix for this model.
    #[pg_test]
    fn real_weights_card_example_through_sql() {
        Spi::run(&format!("SET koe5.model_path = '{REAL_MODEL}'")).unwrap();
        Spi::run("SET koe5.precision = 'f32'").unwrap();
        let x = real_expected();
        let texts: Vec<&str> = x["card"]["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        let embed = |t: &str| -> String {
            let (f, body) = match t.strip_prefix("query: ") {
                Some(b) => ("koe5_query", b),
                None => ("koe5_passage", t.strip_prefix("passage: ").unwrap()),
            };
            format!("{f}('{}')", body.replace('\'', "''"))
        };
        for (i, row) in x["card"]["similarity"].as_array().unwrap().iter().enumerate() {
            for (j, want) in floats(row).into_iter().enumerate() {
                let got =
                    Spi::get_one::<f32>(&format!("SELECT koe5_similarity({}, {})", embed(texts[i]), embed(texts[j])))
                        .unwrap()
                        .unwrap();
                // Unit vectors within 1e-5 each: dot products within 2e-5.
                assert!((got - want).abs() <= 2e-5, "[{i}][{j}]: {got} vs the reference's {want}");
            }
        }
    }

    /// The demo's path on real weights: every article in a generated column, the
    /// evaluation set scored by the demo's own SQL (scripts/eval-retrieval.sql). In f32
    /// the stored vectors are the reference's and the figures equal its figures; at the
    /// default precision the figures are no worse than f32's.
    #[pg_test]
    fn real_weights_demo_sql_equals_the_reference() {
        Spi::run(&format!("SET koe5.model_path = '{REAL_MODEL}'")).unwrap();
        let x = real_expected();
        let evalset: serde_json::Value =
            serde_json::from_str(include_str!("../data/eval/constitution-questions.json")).unwrap();
        Spi::run("CREATE TABLE questions (id int PRIMARY KEY, question text NOT NULL, articles int[] NOT NULL)")
            .unwrap();
        for q in evalset["questions"].as_array().unwrap() {
            let arts: Vec<i32> = q["articles"].as_array().unwrap().iter().map(|a| a.as_i64().unwrap() as i32).collect();
            Spi::run_with_args(
                "INSERT INTO questions VALUES ($1, $2, $3)",
                &[
                    DatumWithOid::from(q["id"].as_i64().unwrap() as i32),
                    DatumWithOid::from(q["question"].as_str().unwrap()),
                    DatumWithOid::from(arts),
                ],
            )
            .unwrap();
        }
        let figures = || -> (f64, f64, f64, i64) {
            Spi::connect(|c| {
                let row = c.select(include_str!("../scripts/eval-retrieval.sql"), None, &[]).unwrap().first();
                (
                    row.get::<pgrx::AnyNumeric>(1).unwrap().unwrap().try_into().unwrap(),
                    row.get::<pgrx::AnyNumeric>(2).unwrap().unwrap().try_into().unwrap(),
                    row.get::<pgrx::AnyNumeric>(3).unwrap().unwrap().try_into().unwrap(),
                    row.get::<i64>(4).unwrap().unwrap(),
                )
            })
        };
        let m = &x["metrics"];
        let round4 = |v: &serde_json::Value| (v.as_f64().unwrap() * 1e4).round() / 1e4;
        let reference = (round4(&m["recall@1"]), round4(&m["recall@5"]), round4(&m["mrr@10"]));
        let mut f32_figures = None;
        for precision in ["f32", "auto"] {
            Spi::run(&format!("SET koe5.precision = '{precision}'")).unwrap();
            Spi::run("DROP TABLE IF EXISTS articles").unwrap();
            Spi::run(
                "CREATE TABLE articles (id int PRIMARY KEY, title text NOT NULL, body text NOT NULL,
                   emb real[] GENERATED ALWAYS AS (koe5_passage(body)) STORED)",
            )
            .unwrap();
            for a in x["corpus"].as_array().unwrap() {
                Spi::run_with_args(
                    "INSERT INTO articles (id, title, body) VALUES ($1, $2, $3)",
                    &[
                        DatumWithOid::from(a["id"].as_i64().unwrap() as i32),
                        DatumWithOid::from(a["title"].as_str().unwrap()),
                        DatumWithOid::from(a["body"].as_str().unwrap()),
                    ],
                )
                .unwrap();
            }
            let (r1, r5, mrr, n) = figures();
            assert_eq!(n, 60);
            if precision == "f32" {
                for a in x["corpus"].as_array().unwrap() {
                    let got = Spi::get_one::<Vec<f32>>(&format!("SELECT emb FROM articles WHERE id = {}", a["id"]))
                        .unwrap()
                        .unwrap();
                    assert_close(&format!("article {}", a["id"]), &got, &floats(&a["embedding"]));
                }
                assert_eq!((r1, r5, mrr), reference, "f32 figures through SQL vs the reference's");
                f32_figures = Some((r1, r5, mrr));
            } else {
                let f = f32_figures.unwrap();
                assert!(r1 >= f.0 && r5 >= f.1 && mrr >= f.2, "default precision {:?} below f32 {f:?}", (r1, r5, mrr));
            }
        }
    }
}

/// Tests that need their own connections: other databases, cancel from outside.
#[cfg(test)]
pub(crate) mod client_tests {
    use std::time::{Duration, Instant};

    use super::FIXTURES;

    /// Records a measured figure: printed, and appended to $KOE5_FIGURES (which
    /// scripts/test.sh prints after the run, since cargo test hides passing output).
    pub(crate) fn figure(text: String) {
        eprintln!("{text}");
        if let Ok(path) = std::env::var("KOE5_FIGURES") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "{text}");
            }
        }
    }

    pub(crate) fn connect(dbname: Option<&str>) -> postgres::Client {
        // Starts the test server (once) the way every #[pg_test] does.
        pgrx_tests::run_test("server_is_up", None, crate::pg_test::postgresql_conf_options()).unwrap();
        let (mut c, _) = pgrx_tests::client().unwrap();
        let Some(db) = dbname else { return c };
        let port: String = c.query_one("SELECT current_setting('port')", &[]).unwrap().get(0);
        let socket_dir: String =
            c.query_one("SELECT split_part(current_setting('unix_socket_directories'), ',', 1)", &[]).unwrap().get(0);
        postgres::Config::new()
            .host_path(socket_dir.trim())
            .port(port.parse().unwrap())
            .user(&pgrx_tests::get_pg_user())
            .dbname(db)
            .connect(postgres::NoTls)
            .unwrap()
    }

    pub(crate) fn fresh_database(name: &str, encoding: &str) -> postgres::Client {
        let mut c = connect(None);
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
        c.batch_execute(&format!(
            "CREATE DATABASE {name} ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ))
        .unwrap();
        let mut db = connect(Some(name));
        db.batch_execute(&format!("CREATE EXTENSION koe5; SET koe5.model_path = '{FIXTURES}/tiny-xlmr'")).unwrap();
        let enc: String = db.query_one("SHOW server_encoding", &[]).unwrap().get(0);
        assert_eq!(enc, encoding);
        db
    }

    fn case(name: &str) -> (String, Vec<f32>) {
        let c = super::cases().into_iter().find(|c| c["name"] == name).unwrap();
        (c["text"].as_str().unwrap().to_owned(), super::floats(&c["passage"]["embedding"]))
    }

    #[test]
    fn euc_kr_database_gives_the_reference_vectors() {
        let mut db = fresh_database("koe5_euckr", "EUC_KR");
        let (text, want) = case("ko_constitution_art1");
        // Stored in the table, the text is EUC-KR bytes on the server.
        db.batch_execute("CREATE TABLE docs (body text)").unwrap();
        db.execute("INSERT INTO docs VALUES ($1)", &[&text]).unwrap();
        let octets: i32 = db.query_one("SELECT octet_length(body) FROM docs", &[]).unwrap().get(0);
        assert!((octets as usize) < text.len(), "Hangul takes 2 bytes in EUC-KR, 3 in UTF-8");
        let got: Vec<f32> = db.query_one("SELECT koe5_passage(body) FROM docs", &[]).unwrap().get(0);
        super::assert_close("EUC_KR", &got, &want);
        let n: i32 = db.query_one("SELECT koe5_token_count(body) FROM docs", &[]).unwrap().get(0);
        assert_eq!(n, 37);
        let rows: i64 = db
            .query_one("SELECT count(*) FROM koe5_passage(ARRAY[(SELECT body FROM docs), NULL])", &[])
            .unwrap()
            .get(0);
        assert_eq!(rows, 2);
    }

    #[test]
    fn sql_ascii_database_accepts_utf8_and_rejects_invalid_bytes() {
        let mut db = fresh_database("koe5_sqlascii", "SQL_ASCII");
        let (text, want) = case("ko_constitution_art1");
        let got: Vec<f32> = db.query_one("SELECT koe5_passage($1)", &[&text]).unwrap().get(0);
        super::assert_close("SQL_ASCII", &got, &want);
        let err = db.query_one("SELECT koe5_passage(convert_from('\\x41c328'::bytea, 'SQL_ASCII'))", &[]).unwrap_err();
        let db_err = err.as_db_error().unwrap();
        assert_eq!(db_err.code().code(), "22021", "{db_err}");
        assert!(db_err.message().contains("invalid byte sequence for encoding \"UTF8\""), "{db_err}");
    }

    #[test]
    fn parallel_workers_load_the_model_and_agree() {
        let mut c = connect(None);
        c.batch_execute(&format!(
            "SET koe5.model_path = '{FIXTURES}/tiny-xlmr';
             DROP TABLE IF EXISTS koe5_parallel_docs;
             CREATE TABLE koe5_parallel_docs (id int, body text);
             SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
             SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;"
        ))
        .unwrap();
        let cases = super::cases();
        for (i, case) in cases.iter().enumerate() {
            c.execute(
                "INSERT INTO koe5_parallel_docs VALUES ($1, $2)",
                &[&(i as i32), &case["text"].as_str().unwrap()],
            )
            .unwrap();
        }
        let q = "SELECT id, koe5_passage(body) FROM koe5_parallel_docs";
        let plan: Vec<String> = c
            .query(&format!("EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) {q}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("Parallel Seq Scan"), "{plan}");
        assert!(plan.contains("Output: id, koe5_passage(body)"), "{plan}");
        assert!(!plan.contains("Workers Launched: 0"), "{plan}");
        for row in c.query(q, &[]).unwrap() {
            let i: i32 = row.get(0);
            let got: Vec<f32> = row.get(1);
            super::assert_close("parallel", &got, &super::floats(&cases[i as usize]["passage"]["embedding"]));
        }
        c.batch_execute("DROP TABLE koe5_parallel_docs").unwrap();
    }

    #[test]
    fn a_plain_user_cannot_set_the_model_before_the_library_loads() {
        // In a fresh session koe5 is not loaded yet, so SET creates a placeholder; loading
        // the library must drop a placeholder that a plain user set.
        let mut c = connect(None);
        c.batch_execute("DO $$ BEGIN CREATE ROLE koe5_placeholder_user; EXCEPTION WHEN duplicate_object THEN END $$")
            .unwrap();
        let preloaded: String = c.query_one("SHOW shared_preload_libraries", &[]).unwrap().get(0);
        if preloaded.contains("koe5") {
            // The test server preloads koe5 (for the worker): the setting exists from the
            // start, and the plain user's SET is refused at once.
            c.batch_execute("SET ROLE koe5_placeholder_user").unwrap();
            let r = c.batch_execute("SET koe5.model_path = '/tmp/not-a-model'");
            assert_eq!(sqlstate_of(r), "42501: permission denied to set parameter \"koe5.model_path\"");
            c.batch_execute("RESET ROLE").unwrap();
            return;
        }
        c.batch_execute("SET ROLE koe5_placeholder_user; SET koe5.model_path = '/tmp/not-a-model'").unwrap();
        let before: String = c.query_one("SELECT current_setting('koe5.model_path')", &[]).unwrap().get(0);
        assert_eq!(before, "/tmp/not-a-model", "the placeholder exists before the library loads");
        c.query_one("SELECT koe5_similarity('{1}', '{1}')", &[]).unwrap();
        let after: String = c.query_one("SELECT current_setting('koe5.model_path')", &[]).unwrap().get(0);
        assert_eq!(after, "");
        c.batch_execute("RESET ROLE").unwrap();
    }

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
        super::assert_close("downloaded model", &got, &want);
        let info: serde_json::Value =
            c.query_one("SELECT koe5_model_info()::text", &[]).unwrap().get::<_, String>(0).parse().unwrap();
        assert_eq!(info["directory"], dir);
        let _ = std::fs::remove_dir_all(&cache);
    }

    const LONG_BATCH: &str = "SELECT count(*) FROM koe5_passage(array(
        SELECT repeat('대한민국 헌법 제' || g || '조 ', 40) FROM generate_series(1, 100000) g))";

    fn sqlstate(r: Result<postgres::Row, postgres::Error>) -> String {
        match r {
            Ok(_) => "completed".into(),
            Err(e) => e.as_db_error().map(|d| format!("{}: {}", d.code().code(), d.message())).unwrap_or(e.to_string()),
        }
    }

    #[test]
    fn cancel_and_statement_timeout_stop_a_long_batch() {
        let mut a = connect(None);
        a.batch_execute(&format!("SET koe5.model_path = '{FIXTURES}/tiny-xlmr'")).unwrap();
        a.query_one("SELECT koe5_query('warm up')", &[]).unwrap();
        let pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);

        let worker = std::thread::spawn(move || {
            let r = a.query_one(LONG_BATCH, &[]);
            (sqlstate(r), Instant::now(), a)
        });
        std::thread::sleep(Duration::from_millis(1500));
        let mut b = connect(None);
        let sent = Instant::now();
        let ok: bool = b.query_one("SELECT pg_cancel_backend($1)", &[&pid]).unwrap().get(0);
        assert!(ok);
        let (outcome, ended, mut a) = worker.join().unwrap();
        let latency = ended.saturating_duration_since(sent);
        assert_eq!(outcome, "57014: canceling statement due to user request");
        assert!(latency < Duration::from_secs(1), "cancel took {latency:?}");
        figure(format!("cancel latency: {latency:?}"));

        a.batch_execute("SET statement_timeout = '1s'").unwrap();
        let start = Instant::now();
        let outcome = sqlstate(a.query_one(LONG_BATCH, &[]));
        let took = start.elapsed();
        assert_eq!(outcome, "57014: canceling statement due to statement timeout");
        assert!(took < Duration::from_secs(2), "statement_timeout of 1s stopped after {took:?}");
        figure(format!("statement_timeout 1s stopped after {took:?}"));
        // The backend is still usable.
        a.batch_execute("SET statement_timeout = 0").unwrap();
        let n: i32 = a.query_one("SELECT array_length(koe5_query('그래도 된다'), 1)", &[]).unwrap().get(0);
        assert_eq!(n, 32);
    }

    pub(crate) fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn backfill_commits_batches_survives_termination_and_resumes() {
        let mut db = fresh_database("koe5_backfill", "UTF8");
        db.batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, body text, emb real[]);
             INSERT INTO docs SELECT g, '제' || g || '조 모든 국민은 법 앞에 평등하다. ' || repeat('권리 ', g % 17)
             FROM generate_series(1, 1500) g;
             UPDATE docs SET body = NULL WHERE id % 100 = 0;",
        )
        .unwrap();
        let mut runner = connect(Some("koe5_backfill"));
        runner.batch_execute(&format!("SET koe5.model_path = '{FIXTURES}/tiny-xlmr'")).unwrap();
        let pid: i32 = runner.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        let call = std::thread::spawn(move || {
            sqlstate_of(runner.batch_execute("CALL koe5_backfill('docs', 'body', 'emb', batch_size => 10)"))
        });
        // Progress is visible from another session while the run goes on.
        let progress = |db: &mut postgres::Client| -> (String, i64, i64) {
            let r = db
                .query_one(
                    "SELECT state, rows_done, rows_total FROM koe5_backfill_progress ORDER BY run_id DESC LIMIT 1",
                    &[],
                )
                .unwrap();
            (r.get(0), r.get(1), r.get(2))
        };
        wait_for("the first run to make progress", Duration::from_secs(60), || {
            db.query_one("SELECT count(*) FROM koe5_backfill_progress", &[]).unwrap().get::<_, i64>(0) == 1
                && progress(&mut db).1 >= 300
        });
        let (state, _, total) = progress(&mut db);
        assert_eq!((state.as_str(), total), ("running", 1485));
        let ok: bool = db.query_one("SELECT pg_terminate_backend($1)", &[&pid]).unwrap().get(0);
        assert!(ok);
        let outcome = call.join().unwrap();
        assert!(outcome.starts_with("57P01") || outcome.contains("terminating"), "{outcome}");
        wait_for("the terminated backend to go", Duration::from_secs(10), || {
            db.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&pid]).unwrap().get::<_, i64>(0) == 0
        });
        // Every committed batch is there, and exactly those: progress and rows commit together.
        let (state, done, _) = progress(&mut db);
        let embedded: i64 = db.query_one("SELECT count(emb) FROM docs", &[]).unwrap().get(0);
        assert_eq!(state, "stopped");
        assert_eq!(embedded, done, "rows embedded vs rows the run recorded");
        assert!(done < 1485, "the run was stopped before the end");
        figure(format!("backfill terminated after {done} of 1485 rows; all {embedded} committed rows kept"));

        // Rerun: it picks up the rest, in batches through the batch path.
        db.batch_execute("CALL koe5_backfill('docs', 'body', 'emb', batch_size => 64)").unwrap();
        let (state, done2, total2) = progress(&mut db);
        assert_eq!((state.as_str(), total2, done2), ("done", 1485 - done, 1485 - done));
        let r = db
            .query_one(
                "SELECT count(emb), count(*) FILTER (WHERE body IS NULL AND emb IS NULL),
                        min(koe5_similarity(emb, koe5_passage(body)))
                 FROM docs",
                &[],
            )
            .unwrap();
        let (n, null_rows, worst): (i64, i64, f32) = (r.get(0), r.get(1), r.get(2));
        assert_eq!((n, null_rows), (1485, 15));
        assert!(worst >= 0.99999, "batch vs single embedding: cosine {worst}");
        let rate: Option<f64> = db
            .query_one("SELECT rows_per_second::float8 FROM koe5_backfill_progress ORDER BY run_id DESC LIMIT 1", &[])
            .unwrap()
            .get(0);
        figure(format!("backfill rerun: {} rows at {rate:?} rows/s", 1485 - done));

        // A partitioned table is embedded partition by partition (row addresses repeat
        // across partitions).
        db.batch_execute(
            "CREATE TABLE parted (id int, body text, emb real[]) PARTITION BY RANGE (id);
             CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
             CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (100) TO (200);
             INSERT INTO parted VALUES (1, '가'), (2, '나다'), (101, '라마바사'), (102, '아자차');",
        )
        .unwrap();
        // (on its own: several statements in one query string form one transaction)
        db.batch_execute("CALL koe5_backfill('parted', 'body', 'emb', batch_size => 1)").unwrap();
        let worst: f32 =
            db.query_one("SELECT min(koe5_similarity(emb, koe5_passage(body))) FROM parted", &[]).unwrap().get(0);
        assert!(worst >= 0.99999, "a partition's row got another row's embedding: cosine {worst}");

        // A run with nothing left to do finishes at once; bad arguments are clear errors.
        db.batch_execute("CALL koe5_backfill('docs', 'body', 'emb')").unwrap();
        let mut err = |sql: &str| sqlstate_of(db.batch_execute(sql));
        assert_eq!(
            err("CALL koe5_backfill('docs', 'body', 'nope')"),
            "42703: column \"nope\" of relation \"docs\" does not exist"
        );
        assert_eq!(err("CALL koe5_backfill('docs', 'body', 'emb', 'doc')"), "22023: invalid embedding kind \"doc\"");
        assert_eq!(
            err("CALL koe5_backfill('docs', 'body', 'emb', batch_size => 0)"),
            "22023: batch_size must be at least 1"
        );
    }

    pub(crate) fn sqlstate_of(r: Result<(), postgres::Error>) -> String {
        match r {
            Ok(()) => "ok".into(),
            Err(e) => e.as_db_error().map(|d| format!("{}: {}", d.code().code(), d.message())).unwrap_or(e.to_string()),
        }
    }

    fn worker_pid(c: &mut postgres::Client) -> Option<i32> {
        c.query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'koe5 worker' AND datname = 'koe5_worker_test'",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0))
    }

    #[test]
    fn background_worker_embeds_queued_rows_without_blocking_writers() {
        // The test server's configuration (crate::pg_test) runs the worker on this database.
        let mut admin = connect(None);
        admin.batch_execute("DROP DATABASE IF EXISTS koe5_worker_test WITH (FORCE)").unwrap();
        admin.batch_execute("CREATE DATABASE koe5_worker_test").unwrap();
        admin
            .batch_execute(&format!("ALTER DATABASE koe5_worker_test SET koe5.model_path = '{FIXTURES}/tiny-xlmr'"))
            .unwrap();
        let mut db = connect(Some("koe5_worker_test"));
        db.batch_execute(
            "CREATE EXTENSION koe5;
             CREATE TABLE docs (id int PRIMARY KEY, body text,
                                emb real[] CHECK (emb IS NULL OR body <> '독약'));
             SELECT koe5_enqueue_table('docs', 'body', 'emb');",
        )
        .unwrap();
        // A worker that connected before the settings existed starts again with them.
        if let Some(pid) = worker_pid(&mut admin) {
            admin.query_one("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
        }

        let insert = |db: &mut postgres::Client, from: i32, to: i32| -> Duration {
            let start = Instant::now();
            for i in from..=to {
                let body = if i == 300 {
                    "독약".to_owned()
                } else {
                    format!("제{i}조 국민의 권리와 의무 {}", "법률 ".repeat(i as usize % 13))
                };
                db.execute("INSERT INTO docs VALUES ($1, $2)", &[&i, &body]).unwrap();
            }
            start.elapsed()
        };
        let pending = |db: &mut postgres::Client| -> (i64, i64, i64) {
            let r = db.query_one("SELECT pending, done, failed FROM koe5_queue_status", &[]).unwrap();
            (r.get(0), r.get(1), r.get(2))
        };
        let first = insert(&mut db, 1, 250);
        // The writer embedded nothing itself: its rows wait for the worker.
        let own: i64 = db.query_one("SELECT texts_embedded FROM koe5_backend_stats()", &[]).unwrap().get(0);
        assert_eq!(own, 0, "a writer must not run inference");
        let start = Instant::now();
        wait_for("the worker to embed the first 250 rows", Duration::from_secs(90), || pending(&mut db) == (0, 250, 0));
        let first_embedded = start.elapsed();
        let old_pid = worker_pid(&mut admin).expect("the worker is connected");

        // Restart the worker (as pg_terminate_backend or a crash would); writes go on meanwhile.
        admin.query_one("SELECT pg_terminate_backend($1)", &[&old_pid]).unwrap();
        let second = insert(&mut db, 251, 500);
        wait_for("the restarted worker to embed the rest", Duration::from_secs(90), || {
            let (p, d, f) = pending(&mut db);
            p == 0 && d == 499 && f == 1
        });
        let new_pid = worker_pid(&mut admin).expect("the worker came back");
        assert_ne!(new_pid, old_pid);

        let r = db
            .query_one(
                "SELECT count(emb), min(koe5_similarity(emb, koe5_passage(body))) FROM docs WHERE body <> '독약'",
                &[],
            )
            .unwrap();
        let (n, worst): (i64, f32) = (r.get(0), r.get(1));
        assert_eq!(n, 499);
        assert!(worst >= 0.99999, "worker vs single embedding: cosine {worst}");
        // The failing row is reported with its error, not lost.
        let r = db.query_one("SELECT row_key::text, attempts, last_error FROM koe5_queue_failures", &[]).unwrap();
        let (key, attempts, error): (String, i32, String) = (r.get(0), r.get(1), r.get(2));
        assert_eq!((key.as_str(), attempts), ("{300}", 3));
        assert!(error.contains("violates check constraint"), "{error}");
        // An update of the text is embedded again; an unrelated write is not queued.
        db.batch_execute("UPDATE docs SET body = '대한민국은 민주공화국이다.' WHERE id = 1").unwrap();
        wait_for("the update to be embedded", Duration::from_secs(30), || {
            db.query_one("SELECT emb = koe5_passage(body) FROM docs WHERE id = 1", &[]).unwrap().get::<_, bool>(0)
        });
        figure(format!(
            "queue: 250 single-row inserts took {first:?} with the queue trigger, 250 more {second:?}; \
             the worker embedded the first 250 in {first_embedded:?}"
        ));
        // A table whose trigger sleeps 30 s stalls no other table for more than
        // koe5.worker_batch_timeout (2 s here): its batch is cancelled, it rests, and
        // the cancel is its entries' last_error.
        db.batch_execute(
            "CREATE TABLE slow (id int PRIMARY KEY, body text, emb real[]);
             CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$;
             CREATE TRIGGER slow_down BEFORE UPDATE ON slow FOR EACH ROW EXECUTE FUNCTION slow_down();
             SELECT koe5_enqueue_table('slow', 'body', 'emb');
             INSERT INTO slow VALUES (1, '느린 표');",
        )
        .unwrap();
        wait_for("the worker to start on the slow table", Duration::from_secs(30), || {
            admin
                .query_one(
                    "SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'koe5 worker' AND wait_event = 'PgSleep'",
                    &[],
                )
                .unwrap()
                .get::<_, bool>(0)
        });
        let start = Instant::now();
        db.batch_execute("INSERT INTO docs VALUES (1000, '다른 표의 새 행')").unwrap();
        wait_for("the other table's row despite the slow trigger", Duration::from_secs(25), || {
            db.query_one("SELECT emb IS NOT NULL FROM docs WHERE id = 1000", &[]).unwrap().get::<_, bool>(0)
        });
        let other = start.elapsed();
        assert!(other < Duration::from_secs(10), "another table's row waited {other:?}");
        wait_for("the slow table's error", Duration::from_secs(20), || {
            db.query_opt("SELECT last_error FROM koe5_queue_status WHERE table_name = 'slow'::regclass", &[])
                .unwrap()
                .and_then(|r| r.get::<_, Option<String>>(0))
                .is_some_and(|e| e.contains("statement timeout"))
        });
        figure(format!("queue: with a 30 s trigger on another table, a new row was embedded after {other:?}"));
        db.batch_execute("SELECT koe5_dequeue_table('slow'); DROP TABLE slow").unwrap();
        // A worker that cannot load its model counts no attempt against any row, and
        // says why in the table's last_error; once the model is back, the row goes in.
        admin.batch_execute("ALTER DATABASE koe5_worker_test SET koe5.model_path = '/nonexistent/koe5-model'").unwrap();
        let pid = worker_pid(&mut admin).expect("the worker is connected");
        admin.query_one("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
        db.batch_execute("INSERT INTO docs VALUES (1001, '모델이 없는 동안 들어온 행')").unwrap();
        wait_for("the worker's model-load error as last_error", Duration::from_secs(30), || {
            db.query_opt("SELECT last_error FROM koe5_queue_status WHERE table_name = 'docs'::regclass", &[])
                .unwrap()
                .and_then(|r| r.get::<_, Option<String>>(0))
                .is_some_and(|e| e.contains("/nonexistent/koe5-model"))
        });
        let attempts: i32 =
            db.query_one("SELECT attempts FROM koe5_queue WHERE row_key = '{1001}'", &[]).unwrap().get(0);
        assert_eq!(attempts, 0, "a model that cannot be loaded is not the row's failure");
        admin
            .batch_execute(&format!("ALTER DATABASE koe5_worker_test SET koe5.model_path = '{FIXTURES}/tiny-xlmr'"))
            .unwrap();
        if let Some(pid) = worker_pid(&mut admin) {
            admin.query_one("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
        }
        wait_for("the row once the model is back", Duration::from_secs(40), || {
            db.query_one("SELECT emb IS NOT NULL FROM docs WHERE id = 1001", &[]).unwrap().get::<_, bool>(0)
        });
        db.batch_execute("SELECT koe5_dequeue_table('docs')").unwrap();
        let left: i64 = db.query_one("SELECT count(*) FROM koe5_queue_status", &[]).unwrap().get(0);
        assert_eq!(left, 0);
    }

    /// The recommended install: koe5 in a schema only trusted roles create in. A role
    /// that may create in `public` cannot add an overload next to koe5's functions
    /// (which made every call ambiguous for everyone when koe5 lived in `public`), and
    /// schema-qualified calls and koe5's own pipelines reach koe5's functions whatever
    /// such a role adds elsewhere.
    #[test]
    fn koe5_in_a_schema_of_its_own_cannot_be_shadowed() {
        let mut c = connect(None);
        c.batch_execute("DROP DATABASE IF EXISTS koe5_own_schema WITH (FORCE)").unwrap();
        c.batch_execute("CREATE DATABASE koe5_own_schema").unwrap();
        let mut db = connect(Some("koe5_own_schema"));
        db.batch_execute(&format!(
            "SET koe5.model_path = '{FIXTURES}/tiny-xlmr';
             CREATE SCHEMA koe5; CREATE EXTENSION koe5 SCHEMA koe5;
             DO $$ BEGIN CREATE ROLE koe5_mallory; EXCEPTION WHEN duplicate_object THEN END $$;
             GRANT CREATE, USAGE ON SCHEMA public TO koe5_mallory;
             GRANT USAGE ON SCHEMA koe5 TO koe5_mallory;
             CREATE TABLE docs (id int PRIMARY KEY, body text, emb real[]);
             INSERT INTO docs SELECT g, '제' || g || '조 국민의 권리' FROM generate_series(1, 5) g;"
        ))
        .unwrap();
        let evil = "CREATE FUNCTION {schema}.koe5_passage(t text, evil int DEFAULT 0) RETURNS real[]
                    LANGUAGE sql AS 'SELECT ARRAY[0]::real[]'";
        db.batch_execute("SET ROLE koe5_mallory").unwrap();
        let refused = sqlstate_of(db.batch_execute(&evil.replace("{schema}", "koe5")));
        assert!(refused.starts_with("42501: permission denied for schema koe5"), "{refused}");
        db.batch_execute(&evil.replace("{schema}", "public")).unwrap();
        db.batch_execute("RESET ROLE").unwrap();
        let good: i64 = db
            .query_one("SELECT count(*) FROM docs WHERE cardinality(koe5.koe5_passage(body)) = 32", &[])
            .unwrap()
            .get(0);
        assert_eq!(good, 5);
        // CALL alone: the backfill commits as it goes, which a multi-statement batch forbids.
        db.batch_execute("SET search_path = public, koe5").unwrap();
        db.batch_execute("CALL koe5.koe5_backfill('docs', 'body', 'emb')").unwrap();
        db.batch_execute(
            "CREATE TABLE later (id int PRIMARY KEY, body text, emb real[]);
             CREATE TRIGGER embed BEFORE INSERT OR UPDATE ON later
                 FOR EACH ROW EXECUTE FUNCTION koe5.koe5_embed_trigger('body', 'emb');
             INSERT INTO later VALUES (1, '대한민국은 민주공화국이다.');",
        )
        .unwrap();
        let stored: i64 = db
            .query_one(
                "SELECT (SELECT count(*) FROM docs WHERE emb = koe5.koe5_passage(body))
                      + (SELECT count(*) FROM later WHERE emb = koe5.koe5_passage(body))",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(stored, 6, "backfill and trigger used koe5's own function");
        drop(db);
        c.batch_execute("DROP DATABASE koe5_own_schema WITH (FORCE)").unwrap();
    }

    #[test]
    fn the_queue_follows_table_ownership_and_survives_renames_and_drops() {
        let mut db = fresh_database("koe5_queue_roles", "UTF8");
        db.batch_execute(
            "DO $$ BEGIN CREATE ROLE koe5_alice; EXCEPTION WHEN duplicate_object THEN END $$;
             DO $$ BEGIN CREATE ROLE koe5_bob; EXCEPTION WHEN duplicate_object THEN END $$;
             DO $$ BEGIN CREATE ROLE koe5_writer; EXCEPTION WHEN duplicate_object THEN END $$;
             GRANT ALL ON SCHEMA public TO koe5_alice, koe5_bob;
             SET ROLE koe5_alice;
             CREATE TABLE notes (a int, b text, body text, emb real[], PRIMARY KEY (a, b));
             INSERT INTO notes VALUES (0, 'before', '등록 전에 있던 글', NULL);
             SELECT koe5_enqueue_table('notes', 'body', 'emb');
             GRANT INSERT ON notes TO koe5_writer;
             RESET ROLE;",
        )
        .unwrap();
        // A writer with nothing but INSERT on the table queues its rows.
        db.batch_execute(
            "SET ROLE koe5_writer;
             INSERT INTO notes SELECT g, 'k' || g, '제' || g || '조 국민의 권리' FROM generate_series(1, 20) g;
             RESET ROLE;",
        )
        .unwrap();
        // A writer adds entries, but cannot forge their ids or state.
        db.batch_execute("SET ROLE koe5_writer").unwrap();
        let forged = sqlstate_of(db.batch_execute(
            "INSERT INTO koe5_queue (id, relid, row_key) VALUES (nextval('koe5_queue_id_seq') + 5, 'notes', '{1,k1}')",
        ));
        assert!(forged.starts_with("42501: new row violates row-level security policy"), "{forged}");
        let forged = sqlstate_of(db.batch_execute(
            "INSERT INTO koe5_queue (relid, row_key, next_attempt_at) VALUES ('notes', '{1,k1}', 'infinity')",
        ));
        assert!(forged.starts_with("42501"), "{forged}");
        // ... and an entry with a key that is not one fails alone, later.
        db.batch_execute("INSERT INTO koe5_queue (relid, row_key) VALUES ('notes', '{not-a-number,x}'); RESET ROLE")
            .unwrap();
        // Another user can neither process, register, nor see the queue.
        db.batch_execute("SET ROLE koe5_bob").unwrap();
        let mut as_bob = |sql: &str| sqlstate_of(db.batch_execute(sql));
        assert_eq!(
            as_bob("SELECT koe5_process_queue_table('notes')"),
            "42501: permission denied to process the koe5 queue of table notes"
        );
        assert_eq!(as_bob("SELECT koe5_enqueue_table('notes', 'body', 'emb')"), "42501: must be owner of table notes");
        assert!(as_bob("INSERT INTO koe5_queued_tables VALUES ('notes', 1, 2, 'passage')").starts_with("42501: "));
        assert_eq!(as_bob("SELECT koe5_queue_retry('notes')"), "42501: must be owner of table notes");
        let seen: i64 = db.query_one("SELECT count(*) FROM koe5_queue", &[]).unwrap().get(0);
        assert_eq!(seen, 0);
        db.batch_execute("RESET ROLE; SET ROLE koe5_alice").unwrap();
        let pending: i64 = db.query_one("SELECT pending FROM koe5_queue_status", &[]).unwrap().get(0);
        assert_eq!(pending, 22);
        let settled: i32 = db.query_one("SELECT koe5_process_queue()", &[]).unwrap().get(0);
        assert_eq!(settled, 21, "21 rows embedded; the bad key is set aside");
        let bad: String = db.query_one("SELECT last_error FROM koe5_queue_failures", &[]).unwrap().get(0);
        assert!(bad.starts_with("invalid row key: invalid input syntax for type integer"), "{bad}");
        let worst: f32 = db
            .query_one("SELECT min(koe5_similarity(emb, koe5_passage(body))) FROM notes WHERE emb IS NOT NULL", &[])
            .unwrap()
            .get(0);
        let embedded: i64 = db.query_one("SELECT count(emb) FROM notes", &[]).unwrap().get(0);
        assert_eq!(embedded, 21);
        assert!(worst >= 0.99999, "{worst}");
        // Renamed columns keep working: the registration holds column numbers.
        db.batch_execute(
            "ALTER TABLE notes RENAME COLUMN body TO text_ko;
             UPDATE notes SET text_ko = '국회는 법률을 제정한다.' WHERE a = 1;
             SELECT koe5_process_queue();",
        )
        .unwrap();
        let same: bool = db
            .query_one("SELECT emb = koe5_passage('국회는 법률을 제정한다.') FROM notes WHERE a = 1", &[])
            .unwrap()
            .get(0);
        assert!(same);
        // A new key is queued under it (the old entry finds nothing); a writer whose
        // DateStyle differs still names the row it wrote.
        db.batch_execute(
            "INSERT INTO notes VALUES (200, 'z', '새로 쓴 글');
             UPDATE notes SET a = 201 WHERE a = 200;
             CREATE TABLE dated (day date PRIMARY KEY, body text, emb real[]);
             SELECT koe5_enqueue_table('dated', 'body', 'emb');
             SET DateStyle = 'SQL, DMY';
             INSERT INTO dated VALUES ('2026-03-04', '삼월 사일'), ('2026-04-03', '사월 삼일');
             RESET DateStyle;
             SELECT koe5_process_queue();",
        )
        .unwrap();
        let moved: bool = db.query_one("SELECT emb IS NOT NULL FROM notes WHERE a = 201", &[]).unwrap().get(0);
        assert!(moved);
        let right: bool = db
            .query_one(
                "SELECT min(koe5_similarity(emb, koe5_passage(body))) >= 0.99999 AND count(emb) = 2 FROM dated",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(right, "each date row has its own text's embedding");
        // A writer with a column grant only.
        db.batch_execute(
            "RESET ROLE;
             DO $$ BEGIN CREATE ROLE koe5_column_writer; EXCEPTION WHEN duplicate_object THEN END $$;
             SET ROLE koe5_alice;
             GRANT SELECT, UPDATE (text_ko) ON notes TO koe5_column_writer;
             RESET ROLE; SET ROLE koe5_column_writer;
             UPDATE notes SET text_ko = '열 권한으로 바꾼 글' WHERE a = 3;
             RESET ROLE; SET ROLE koe5_alice;
             SELECT koe5_process_queue();",
        )
        .unwrap();
        let updated: bool = db
            .query_one(
                "SELECT koe5_similarity(emb, koe5_passage('열 권한으로 바꾼 글')) >= 0.99999 FROM notes WHERE a = 3",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(updated);
        db.batch_execute("DROP TABLE dated").unwrap();
        // A dropped table leaves nothing in the queue.
        db.batch_execute("INSERT INTO notes VALUES (99, 'z', '남는 글'); DROP TABLE notes; RESET ROLE").unwrap();
        let left: i64 = db
            .query_one("SELECT (SELECT count(*) FROM koe5_queue) + (SELECT count(*) FROM koe5_queued_tables)", &[])
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
    }

    /// Hardening II, item 5: PUBLIC had UPDATE and DELETE on koe5's shared tables, and
    /// either one allows `LOCK TABLE … IN ACCESS EXCLUSIVE MODE` (row-level security does
    /// not cover LOCK), with which any role stalled every registered table's writes,
    /// every DROP TABLE and every backfill. From 0.3.0 a plain role can take no lock on
    /// them that blocks a writer, and deletes go through the owner-checking function.
    #[test]
    fn a_plain_role_cannot_lock_koe5s_tables_or_delete_others_entries() {
        // Even where default privileges give PUBLIC everything on new tables.
        let mut admin = connect(None);
        admin.batch_execute("DROP DATABASE IF EXISTS koe5_locks").unwrap();
        admin.batch_execute("CREATE DATABASE koe5_locks").unwrap();
        let mut db = connect(Some("koe5_locks"));
        db.batch_execute(&format!(
            "ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC;
             ALTER DEFAULT PRIVILEGES GRANT ALL ON SEQUENCES TO PUBLIC;
             CREATE EXTENSION koe5;
             SET koe5.model_path = '{FIXTURES}/tiny-xlmr';"
        ))
        .unwrap();
        db.batch_execute(
            "DO $$ BEGIN CREATE ROLE koe5_owner; EXCEPTION WHEN duplicate_object THEN END $$;
             DO $$ BEGIN CREATE ROLE koe5_mallory; EXCEPTION WHEN duplicate_object THEN END $$;
             GRANT ALL ON SCHEMA public TO koe5_owner, koe5_mallory;
             SET ROLE koe5_owner;
             CREATE TABLE docs (id int PRIMARY KEY, body text, emb real[]);
             SELECT koe5_enqueue_table('docs', 'body', 'emb');
             INSERT INTO docs SELECT g, '제' || g || '조' FROM generate_series(1, 5) g;",
        )
        .unwrap();
        db.batch_execute("CALL koe5_backfill('docs', 'body', 'emb')").unwrap();
        db.batch_execute("RESET ROLE").unwrap();
        let mut mallory = connect(Some("koe5_locks"));
        mallory.batch_execute("SET ROLE koe5_mallory").unwrap();
        for table in ["koe5_queued_tables", "koe5_queue", "koe5_backfill_runs"] {
            for mode in ["SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"] {
                let r = sqlstate_of(mallory.batch_execute(&format!("BEGIN; LOCK TABLE {table} IN {mode} MODE")));
                assert_eq!(r, format!("42501: permission denied for table {table}"), "{table} {mode}");
                mallory.batch_execute("ROLLBACK").unwrap();
            }
            for sql in [format!("DELETE FROM {table}"), format!("TRUNCATE {table}")] {
                let r = sqlstate_of(mallory.batch_execute(&sql));
                assert_eq!(r, format!("42501: permission denied for table {table}"), "{sql}");
            }
        }
        let r = sqlstate_of(mallory.batch_execute("UPDATE koe5_queue SET relid = 'pg_class'"));
        assert_eq!(r, "42501: permission denied for table koe5_queue");
        // The views are updatable and would write and lock their tables as their owner.
        for view in ["koe5_queue_status", "koe5_queue_failures", "koe5_backfill_progress"] {
            for sql in [format!("BEGIN; LOCK TABLE {view} IN ACCESS EXCLUSIVE MODE"), format!("DELETE FROM {view}")] {
                let r = sqlstate_of(mallory.batch_execute(&sql));
                assert_eq!(r, format!("42501: permission denied for view {view}"), "{sql}");
                mallory.batch_execute("ROLLBACK").unwrap();
            }
        }
        let r = sqlstate_of(mallory.batch_execute("SELECT setval('koe5_backfill_runs_run_id_seq', 1)"));
        assert_eq!(r, "42501: permission denied for sequence koe5_backfill_runs_run_id_seq");
        // No TRIGGER (whose code would run inside koe5's own deletes), REFERENCES or TRUNCATE.
        let r = sqlstate_of(mallory.batch_execute(
            "CREATE FUNCTION mallory_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$;
             CREATE TRIGGER mallory BEFORE DELETE ON koe5_queue FOR EACH ROW EXECUTE FUNCTION mallory_fn()",
        ));
        assert_eq!(r, "42501: permission denied for table koe5_queue");
        let granted: bool = db
            .query_one(
                "SELECT bool_or(has_table_privilege('koe5_mallory', t, p))
                 FROM unnest(ARRAY['koe5_queued_tables', 'koe5_queue', 'koe5_backfill_runs']) t,
                      unnest(ARRAY['UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(!granted, "PUBLIC keeps no table-wide privilege beyond SELECT and INSERT");
        // The deleting function checks the caller, whatever it is asked.
        let r = sqlstate_of(mallory.batch_execute("SELECT koe5__forget_queue('docs', NULL, true)"));
        assert_eq!(r, "42501: must be owner of table docs");
        let r = sqlstate_of(mallory.batch_execute("SELECT koe5__forget_queue('docs', ARRAY[1, 2, 3], false)"));
        assert_eq!(r, "42501: must be owner of table docs");
        let r = sqlstate_of(mallory.batch_execute("SELECT koe5_dequeue_table('docs')"));
        assert_eq!(r, "42501: must be owner of table docs");
        let entries: i64 = db.query_one("SELECT count(*) FROM koe5_queue", &[]).unwrap().get(0);
        assert_eq!(entries, 5, "mallory deleted none of the owner's entries");
        // The most a plain role may take is ROW EXCLUSIVE (INSERT), the lock every writer
        // takes: held in an open transaction, it blocks none of the owner's work.
        mallory
            .batch_execute(
                "BEGIN; LOCK TABLE koe5_queued_tables IN ROW EXCLUSIVE MODE;
                 LOCK TABLE koe5_queue IN ROW EXCLUSIVE MODE; LOCK TABLE koe5_backfill_runs IN ROW EXCLUSIVE MODE;
                 SELECT id FROM koe5_queue FOR UPDATE",
            )
            .unwrap();
        let mut owner = connect(Some("koe5_locks"));
        owner
            .batch_execute(&format!(
                "SET koe5.model_path = '{FIXTURES}/tiny-xlmr'; SET lock_timeout = '3s'; SET ROLE koe5_owner;
                 INSERT INTO docs VALUES (6, '제6조');
                 SELECT koe5_process_queue();"
            ))
            .unwrap();
        owner.batch_execute("UPDATE docs SET emb = NULL WHERE id = 1").unwrap();
        owner.batch_execute("CALL koe5_backfill('docs', 'body', 'emb')").unwrap();
        owner
            .batch_execute(
                "CREATE TABLE scratch (id int PRIMARY KEY, body text, emb real[]);
                 SELECT koe5_enqueue_table('scratch', 'body', 'emb');
                 INSERT INTO scratch VALUES (1, '지울 표');
                 DROP TABLE scratch;
                 SELECT koe5_dequeue_table('docs');",
            )
            .unwrap();
        mallory.batch_execute("COMMIT").unwrap();
        let r = db
            .query_one(
                "SELECT (SELECT count(*) FROM koe5_queue), (SELECT count(*) FROM koe5_queued_tables),
                        (SELECT count(emb) FROM docs), (SELECT count(*) FROM koe5_backfill_runs WHERE state = 'done')",
                &[],
            )
            .unwrap();
        let got: (i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!(got, (0, 0, 6, 2), "queue emptied, both tables forgotten, every row embedded, both runs done");
    }

    /// Hardening II, item 12: a backfill that ends on an error no row caused (here
    /// lock_timeout, waiting for a row another session holds) records the error and
    /// state `failed` before raising it; 0.2.0 left `last_error` empty.
    #[test]
    fn a_backfill_stopped_by_lock_timeout_says_why() {
        let mut db = fresh_database("koe5_backfill_lock", "UTF8");
        db.batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, body text, emb real[]);
             INSERT INTO docs SELECT g, '제' || g || '조' FROM generate_series(1, 40) g;",
        )
        .unwrap();
        let mut holder = connect(Some("koe5_backfill_lock"));
        holder.batch_execute("BEGIN; SELECT * FROM docs WHERE id = 40 FOR UPDATE").unwrap();
        let r = sqlstate_of(db.batch_execute("SET lock_timeout = '500ms'"));
        assert_eq!(r, "ok");
        let r = sqlstate_of(db.batch_execute("CALL koe5_backfill('docs', 'body', 'emb', batch_size => 16)"));
        assert_eq!(r, "55P03: canceling statement due to lock timeout");
        holder.batch_execute("ROLLBACK").unwrap();
        let r = db
            .query_one(
                "SELECT state, rows_done, last_error FROM koe5_backfill_progress ORDER BY run_id DESC LIMIT 1",
                &[],
            )
            .unwrap();
        let (state, done, error): (String, i64, Option<String>) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(state, "failed");
        assert_eq!(error.as_deref(), Some("canceling statement due to lock timeout"));
        let stored: i64 = db.query_one("SELECT count(emb) FROM docs", &[]).unwrap().get(0);
        assert_eq!(stored, done, "the rows recorded are the rows stored");
        assert_eq!(done, 39, "every row but the locked one was embedded before the last pass");
        db.batch_execute("RESET lock_timeout").unwrap();
        db.batch_execute("CALL koe5_backfill('docs', 'body', 'emb')").unwrap();
        let stored: i64 = db.query_one("SELECT count(emb) FROM docs", &[]).unwrap().get(0);
        assert_eq!(stored, 40, "a rerun finishes");
    }

    /// The extension's objects (functions by their definitions), with the privileges
    /// on its tables, their columns and functions, and the tables' policies.
    fn extension_objects(c: &mut postgres::Client) -> Vec<String> {
        c.query(
            "WITH member AS (
                 SELECT d.classid, d.objid, d.objsubid FROM pg_depend d
                 JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'koe5' WHERE d.deptype = 'e')
             SELECT pg_describe_object(m.classid, m.objid, m.objsubid) || coalesce(' ' || md5(pg_get_functiondef(p.oid)), '')
                    || coalesce(' acl ' || p.proacl::text, '')
             FROM member m
             LEFT JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid AND p.prokind <> 'a'
             UNION ALL
             SELECT 'acl of ' || c.relname || ': ' || coalesce(c.relacl::text, 'default')
             FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
             UNION ALL
             SELECT 'acl of ' || c.relname || '.' || a.attname || ': ' || a.attacl::text
             FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attacl IS NOT NULL
             UNION ALL
             SELECT 'policy ' || pol.polname || ' on ' || c.relname || ' ' || pol.polcmd::text || ' '
                    || coalesce(pg_get_expr(pol.polqual, pol.polrelid), '') || ' / '
                    || coalesce(pg_get_expr(pol.polwithcheck, pol.polrelid), '')
             FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
             JOIN pg_policy pol ON pol.polrelid = c.oid
             UNION ALL
             -- the fresh install is written apart from the update scripts: compare what
             -- users read and what tables hold too
             SELECT 'comment on ' || pg_describe_object(m.classid, m.objid, 0) || ': '
                    || coalesce(obj_description(m.objid, (SELECT relname FROM pg_class WHERE oid = m.classid)), '-')
             FROM member m
             UNION ALL
             SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                    || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END || ' #' || a.attnum
                    || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
                    || CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
             FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
             UNION ALL
             SELECT 'constraint ' || con.conname || ' on ' || c.relname || ' ' || pg_get_constraintdef(con.oid)
             FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
             JOIN pg_constraint con ON con.conrelid = c.oid
             UNION ALL
             SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM member m
             JOIN pg_index i ON m.classid = 'pg_class'::regclass AND i.indrelid = m.objid
             UNION ALL
             SELECT 'view ' || c.relname || ' ' || md5(pg_get_viewdef(c.oid))
             FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid AND c.relkind = 'v'
             UNION ALL
             SELECT 'rls on ' || c.relname || ' ' || c.relrowsecurity::text
             FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid AND c.relkind = 'r'
             UNION ALL
             SELECT 'event trigger ' || t.evtname || ' on ' || t.evtevent || ' ' || t.evtfoid::regprocedure::text
                    || ' ' || t.evtenabled::text
             FROM member m JOIN pg_event_trigger t ON m.classid = 'pg_event_trigger'::regclass AND t.oid = m.objid
             ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        // the test build's own functions live in schema "tests"
        .filter(|d| !d.contains(" tests."))
        .filter(|d| d != "schema tests" && !d.starts_with("comment on schema tests:"))
        .collect()
    }

    /// Upgrades from the released 0.1.0, 0.2.0 and 0.3.0 (0.1.0's install script is
    /// sql/koe5--0.1.0.sql; PostgreSQL installs 0.2.0 and 0.3.0 as 0.1.0 and the released
    /// update scripts, which is what their own install scripts were) keep the data and
    /// give exactly what a fresh install (sql/surface/) gives: every member object, its
    /// definition, comment, columns, constraints, indexes, privileges and policies.
    #[test]
    fn upgrades_keep_data_and_equal_a_fresh_install() {
        let mut fresh = fresh_database("koe5_fresh", "UTF8");
        let installed = extension_objects(&mut fresh);
        assert!(installed.len() > 40, "{installed:?}");
        assert!(installed.iter().any(|o| o.starts_with("acl of koe5_queue.attempts: ")), "{installed:?}");
        let mut admin = connect(None);
        for from in ["0.1.0", "0.2.0", "0.3.0"] {
            let name = format!("koe5_upgraded_{}", from.replace('.', "_"));
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
            admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
            let mut old = connect(Some(&name));
            old.batch_execute(&format!(
                "CREATE EXTENSION koe5 VERSION '{from}';
                 SET koe5.model_path = '{FIXTURES}/tiny-xlmr';
                 CREATE TABLE docs (id int PRIMARY KEY, body text,
                                    emb real[] GENERATED ALWAYS AS (koe5_passage(body)) STORED);
                 INSERT INTO docs VALUES (1, '대한민국은 민주공화국이다.'), (2, '모든 국민은 법 앞에 평등하다.');"
            ))
            .unwrap();
            if from != "0.1.0" {
                old.batch_execute(
                    "CREATE TABLE notes (id int PRIMARY KEY, body text, emb real[]);
                     INSERT INTO notes VALUES (1, '국회는 법률을 제정한다.');
                     SELECT koe5_enqueue_table('notes', 'body', 'emb');",
                )
                .unwrap();
            }
            let before: Vec<Vec<f32>> =
                old.query("SELECT emb FROM docs ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
            old.batch_execute("ALTER EXTENSION koe5 UPDATE").unwrap();
            let version: String =
                old.query_one("SELECT extversion FROM pg_extension WHERE extname = 'koe5'", &[]).unwrap().get(0);
            assert_eq!(version, "0.4.0");
            let after: Vec<Vec<f32>> =
                old.query("SELECT emb FROM docs ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
            assert_eq!(after, before, "stored embeddings survive the upgrade from {from}");
            let n: i64 = old.query_one("SELECT count(*) FROM koe5_chunks('가나다. 라마바.')", &[]).unwrap().get(0);
            assert_eq!(n, 1);
            if from != "0.1.0" {
                // The queue and its registration survive, and work through the new functions.
                let pending: i64 = old.query_one("SELECT pending FROM koe5_queue_status", &[]).unwrap().get(0);
                assert_eq!(pending, 1);
                let settled: i32 = old.query_one("SELECT koe5_process_queue()", &[]).unwrap().get(0);
                assert_eq!(settled, 1);
                let left: i64 = old.query_one("SELECT count(*) FROM koe5_queue", &[]).unwrap().get(0);
                assert_eq!(left, 0);
            }
            let upgraded = extension_objects(&mut old);
            let only_upgraded: Vec<_> = upgraded.iter().filter(|o| !installed.contains(o)).collect();
            let only_fresh: Vec<_> = installed.iter().filter(|o| !upgraded.contains(o)).collect();
            assert!(
                upgraded == installed,
                "an upgraded {from} must equal a fresh 0.4.0; only upgraded: {only_upgraded:#?}, only fresh: {only_fresh:#?}"
            );
        }
    }
}

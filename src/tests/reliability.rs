//! Reliability under load, faults and hostile input, from clients of the test server
//! (see also stress/ for the parts that need a server of their own or the full-size
//! model). Sizes here fit CI; the environment variables named below scale them up.

#[cfg(test)]
mod client {
    use std::sync::{Arc, Barrier};
    use std::time::Instant;

    use crate::tests::harness::client::*;
    use crate::tests::harness::*;

    const CONSTITUTION: &str = include_str!("../../data/ko/constitution.txt");

    /// Resident and proportional set size of a process, in KiB.
    fn rss_pss_kb(pid: i32) -> (i64, i64) {
        let field = |name| proc_kb(&pid.to_string(), "smaps_rollup", name).unwrap_or(-1);
        (field("Rss:"), field("Pss:"))
    }

    fn env_usize(name: &str, default: usize) -> usize {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    /// 16 sessions with the model loaded make mixed calls in rounds: none fails, no
    /// backend is lost, and each backend's memory stops growing after the first rounds.
    /// KOE5_LOAD_ROUNDS (default 6) scales it.
    #[test]
    fn sixteen_sessions_of_mixed_calls_without_errors_crashes_or_growth() {
        const SESSIONS: usize = 16;
        let rounds = env_usize("KOE5_LOAD_ROUNDS", 6).max(3);
        let mut admin = connect(None);
        let started: std::time::SystemTime = admin.query_one("SELECT pg_postmaster_start_time()", &[]).unwrap().get(0);
        let texts: Vec<String> = cases().iter().map(|c| c["text"].as_str().unwrap().to_owned()).collect();
        let barrier = Arc::new(Barrier::new(SESSIONS + 1));
        let mut workers = Vec::new();
        let mut pids = Vec::new();
        for s in 0..SESSIONS {
            let mut c = connect(None);
            c.batch_execute(&format!("SET koe5.model_path = '{FIXTURES}/tiny-xlmr'")).unwrap();
            pids.push(c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get::<_, i32>(0));
            let (barrier, texts) = (barrier.clone(), texts.clone());
            workers.push(std::thread::spawn(move || {
                let mut calls = 0usize;
                let mut errors = Vec::new();
                let mut note = |r: Result<(), postgres::Error>| {
                    calls += 1;
                    if let Err(e) = r {
                        errors.push(e.to_string());
                    }
                };
                for round in 0..rounds {
                    for k in 0..4 {
                        let t = &texts[(s * 7 + round * 3 + k) % texts.len()];
                        let u = &texts[(s * 5 + round + k + 1) % texts.len()];
                        note(c.query_one("SELECT koe5_passage($1)", &[t]).map(|_| ()));
                        note(c.query_one("SELECT koe5_query($1)", &[u]).map(|_| ()));
                        note(
                            c.query_one("SELECT koe5_similarity(koe5_query($1), koe5_passage($2))", &[t, u])
                                .map(|_| ()),
                        );
                    }
                    let batch: Vec<&str> = texts.iter().skip((s + round) % 8).step_by(5).map(String::as_str).collect();
                    note(c.query("SELECT koe5_passage($1::text[])", &[&batch]).map(|_| ()));
                    note(c.query_one("SELECT koe5_token_count($1)", &[&texts[round % texts.len()]]).map(|_| ()));
                    barrier.wait(); // round done: the main thread measures
                    barrier.wait(); // next round
                }
                (calls, errors, c)
            }));
        }
        let mut memory: Vec<Vec<(i64, i64)>> = Vec::new();
        let start = Instant::now();
        for _ in 0..rounds {
            barrier.wait();
            memory.push(pids.iter().map(|&p| rss_pss_kb(p)).collect());
            barrier.wait();
        }
        let took = start.elapsed();
        let (mut calls, mut errors, mut clients) = (0, Vec::new(), Vec::new());
        for w in workers {
            let (c, e, client) = w.join().unwrap();
            calls += c;
            errors.extend(e);
            clients.push(client); // keeps the sessions open while they are counted
        }
        assert!(errors.is_empty(), "{} errors, first: {}", errors.len(), errors[0]);
        assert!(calls >= 1000, "{calls} calls");
        // No backend was lost: the same server, and every session's backend still there.
        let now: std::time::SystemTime = admin.query_one("SELECT pg_postmaster_start_time()", &[]).unwrap().get(0);
        assert_eq!(now, started, "the server restarted");
        let alive: i64 =
            admin.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", &[&pids]).unwrap().get(0);
        assert_eq!(alive, SESSIONS as i64);
        // Memory is steady after warm-up: from the second round on, no backend grows by
        // more than 2 MiB.
        let mut worst = 0;
        for (i, _) in pids.iter().enumerate() {
            let after_warmup = memory[1][i].0;
            let last = memory[rounds - 1][i].0;
            worst = worst.max(last - after_warmup);
        }
        assert!(worst <= 2048, "a backend grew by {worst} KiB after warm-up");
        let pss: i64 = memory[rounds - 1].iter().map(|m| m.1).sum();
        figure(format!(
            "load: {SESSIONS} sessions, {calls} calls in {took:.1?}, 0 errors, server not restarted; \
             largest RSS growth after round 2: {worst} KiB; PSS of all backends {} MiB",
            pss / 1024
        ));
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to.join("1_Pooling")).unwrap();
        for f in ["config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "tokenizer.json"]
        {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
        // Real copies, not links: the test cuts this file in place.
        std::fs::copy(from.join("model.safetensors"), to.join("model.safetensors")).unwrap();
    }

    /// Replacing the model under running backends: cutting the weights file in place and
    /// renaming a new directory over the old. Running backends keep their loaded weights;
    /// a new backend gets a clear ERROR for the cut file and the new model after the
    /// rename; nothing crashes.
    #[test]
    fn model_files_replaced_under_running_backends() {
        let fixtures = std::path::Path::new(FIXTURES);
        let dir = fixtures.join(format!("replaced-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&fixtures.join("tiny-xlmr"), &dir);
        let use_dir = format!("SET koe5.model_path = '{}'", dir.display());
        let mut admin = connect(None);
        let started: std::time::SystemTime = admin.query_one("SELECT pg_postmaster_start_time()", &[]).unwrap().get(0);
        let (text, want) = {
            let c = &cases()[0];
            (c["text"].as_str().unwrap().to_owned(), floats(&c["passage"]["embedding"]))
        };
        let embed = |c: &mut postgres::Client| {
            c.query_one("SELECT koe5_passage($1)", &[&text]).map(|r| r.get::<_, Vec<f32>>(0))
        };

        let mut running = connect(None);
        running.batch_execute(&use_dir).unwrap();
        assert_close("before", &embed(&mut running).unwrap(), &want);

        // 1. The weights file is cut to a third, in place.
        let weights = dir.join("model.safetensors");
        let len = std::fs::metadata(&weights).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&weights).unwrap().set_len(len / 3).unwrap();
        assert_close("running, after the cut", &embed(&mut running).unwrap(), &want);
        let mut fresh = connect(None);
        fresh.batch_execute(&use_dir).unwrap();
        let err = sqlstate_of(embed(&mut fresh).map(|_| ()));
        assert!(err.starts_with("XX001: could not load weights from"), "{err}");

        // 2. A new model (CLS pooling, no normalisation) renamed into place.
        let next = fixtures.join(format!("replaced-{}-next", std::process::id()));
        let _ = std::fs::remove_dir_all(&next);
        copy_dir(&fixtures.join("tiny-xlmr"), &next);
        for f in ["modules.json", "sentence_bert_config.json", "1_Pooling/config.json"] {
            std::fs::copy(fixtures.join("tiny-xlmr-cls").join(f), next.join(f)).unwrap();
        }
        let old = fixtures.join(format!("replaced-{}-old", std::process::id()));
        std::fs::rename(&dir, &old).unwrap();
        std::fs::rename(&next, &dir).unwrap();
        assert_close("running, after the rename", &embed(&mut running).unwrap(), &want);
        let mut newer = connect(None);
        newer.batch_execute(&use_dir).unwrap();
        let cls = floats(&cases()[0]["cls"]["embedding"]);
        assert_close("new backend, new model", &embed(&mut newer).unwrap(), &cls);
        // The backend that failed recovers too.
        assert_close("failed backend, new model", &embed(&mut fresh).unwrap(), &cls);

        let now: std::time::SystemTime = admin.query_one("SELECT pg_postmaster_start_time()", &[]).unwrap().get(0);
        assert_eq!(now, started, "the server restarted");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&old).unwrap();
    }

    /// Random text through the SQL entry points of UTF8, EUC_KR and SQL_ASCII databases:
    /// every call embeds or fails with a clear ERROR (22021 for bytes that are not valid
    /// UTF-8 in SQL_ASCII); no backend is lost. KOE5_FUZZ_CASES (default 200 per database)
    /// scales it.
    #[test]
    fn random_text_in_every_korean_encoding_embeds_or_fails_cleanly() {
        let cases = env_usize("KOE5_FUZZ_CASES", 200);
        let mut rng = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut report = Vec::new();
        for (db, encoding) in
            [("koe5_fuzz_utf8", "UTF8"), ("koe5_fuzz_euckr", "EUC_KR"), ("koe5_fuzz_ascii", "SQL_ASCII")]
        {
            let mut c = fresh_database(db, encoding);
            let (mut ok, mut refused) = (0, 0);
            for i in 0..cases {
                let len = match i % 10 {
                    0 => 0,
                    1 => 1 + (next() % 5) as usize,
                    2 => 20_000 + (next() % 50_000) as usize,
                    _ => 1 + (next() % 400) as usize,
                };
                let outcome = if encoding == "SQL_ASCII" {
                    // Raw bytes, most of them not UTF-8.
                    let bytes: Vec<u8> = (0..len).map(|_| (next() % 256) as u8).filter(|&b| b != 0).collect();
                    sqlstate_of(
                        c.query_one("SELECT koe5_passage(convert_from($1, 'SQL_ASCII'))", &[&bytes]).map(|_| ()),
                    )
                } else {
                    // Characters the database can hold: ASCII with control characters,
                    // Hangul, Hanja, and (in UTF8) anything, lone surrogates replaced.
                    let text: String = (0..len)
                        .map(|_| {
                            let r = next();
                            let c = match r % 6 {
                                0 => char::from_u32((r >> 8) as u32 % 0x80).unwrap(),
                                1 | 2 => char::from_u32(0xac00 + (r >> 8) as u32 % 11172).unwrap(),
                                3 => char::from_u32(0x4e00 + (r >> 8) as u32 % 0x1000).unwrap(),
                                4 => ' ',
                                _ if encoding == "UTF8" => {
                                    char::from_u32((r >> 8) as u32 % 0x110000).unwrap_or(char::REPLACEMENT_CHARACTER)
                                }
                                _ => '\n',
                            };
                            if c == '\0' {
                                ' '
                            } else {
                                c
                            }
                        })
                        .collect();
                    let text = if encoding == "EUC_KR" {
                        // What EUC-KR can encode: pieces of the constitution (KS X 1001
                        // Hangul and Hanja) with random ASCII, control characters included.
                        let doc: Vec<char> = CONSTITUTION.chars().collect();
                        let from = (next() as usize) % doc.len();
                        let piece: String = doc[from..(from + len).min(doc.len())].iter().collect();
                        text.chars().filter(char::is_ascii).zip(piece.chars()).flat_map(|(a, b)| [a, b]).collect()
                    } else {
                        text
                    };
                    let r = c.query_one("SELECT koe5_passage($1), koe5_token_count($1)", &[&text]).map(|_| ());
                    sqlstate_of(r)
                };
                match outcome.as_str() {
                    "ok" => ok += 1,
                    s if s.starts_with("22021") || s.starts_with("22P05") => refused += 1,
                    other => panic!("{encoding} case {i}: {other}"),
                }
            }
            let alive: i32 = c.query_one("SELECT 1", &[]).unwrap().get(0);
            assert_eq!(alive, 1);
            report.push(format!("{encoding}: {ok} embedded, {refused} refused (22021)"));
        }
        figure(format!("fuzz through SQL, {cases} cases per database: {}", report.join("; ")));
    }

    /// A 16 MB text and a batch of many texts run in bounded memory.
    /// KOE5_BIG_BATCH (default 20000) sets the batch size.
    #[test]
    fn huge_texts_and_batches_run_in_bounded_memory() {
        let batch = env_usize("KOE5_BIG_BATCH", 20_000);
        let mut c = connect(None);
        c.batch_execute(&format!("SET koe5.model_path = '{FIXTURES}/tiny-xlmr'")).unwrap();
        c.query_one("SELECT koe5_passage('warm up')", &[]).unwrap();
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        let hwm = |pid: i32| proc_kb(&pid.to_string(), "status", "VmHWM:").unwrap();
        let base = hwm(pid);
        let start = Instant::now();
        let n: i32 = c
            .query_one("SELECT array_length(koe5_passage(repeat('대한민국 헌법 제1조 ', 1200000)), 1)", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 32);
        let count: i32 =
            c.query_one("SELECT koe5_token_count(repeat('대한민국 헌법 제1조 ', 1200000))", &[]).unwrap().get(0);
        assert!(count > 4_000_000, "{count}");
        let text_growth = hwm(pid) - base;
        let text_time = start.elapsed();
        let start = Instant::now();
        let rows: i64 = c
            .query_one(
                "SELECT count(e) FROM koe5_passage(ARRAY(SELECT '조문 ' || g FROM generate_series(1, $1) g)) e",
                &[&(batch as i32)],
            )
            .unwrap()
            .get(0);
        assert_eq!(rows, batch as i64);
        let batch_growth = hwm(pid) - base;
        // 16 MB of text is held by PostgreSQL twice at most (the argument, repeat()'s
        // result); koe5 adds little beyond it.
        assert!(text_growth < 160 * 1024, "16 MB text: peak memory grew by {text_growth} KiB");
        assert!(batch_growth < 256 * 1024, "batch of {batch}: peak memory grew by {batch_growth} KiB");
        figure(format!(
            "16.8 MB text: embedded and counted ({count} tokens) in {text_time:.1?}, peak +{} MiB; \
             batch of {batch} texts in {:.1?}, peak +{} MiB",
            text_growth / 1024,
            start.elapsed(),
            batch_growth / 1024
        ));
    }

    /// A PostgreSQL server of the test's own (the same installation as the test server),
    /// stopped when dropped.
    struct OwnServer {
        bindir: String,
        data: String,
        port: u16,
    }

    /// Runs a server program as the user "postgres" (the tests run as root).
    fn as_postgres(program: &str, args: &[&str]) -> std::process::Output {
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            std::process::Command::new(program)
        };
        cmd.args(args).output().unwrap()
    }

    impl OwnServer {
        fn start(bindir: &str, data: &str, port: u16, conf: &[String]) -> OwnServer {
            let _ = as_postgres(&format!("{bindir}/pg_ctl"), &["-D", data, "stop", "-m", "immediate"]);
            let _ = std::fs::remove_dir_all(data);
            std::fs::create_dir_all(data).unwrap();
            let _ = std::process::Command::new("chown").args(["postgres:postgres", data]).status();
            let out =
                as_postgres(&format!("{bindir}/initdb"), &["-D", data, "-E", "UTF8", "--locale=C", "-U", "postgres"]);
            assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
            let server = OwnServer { bindir: bindir.into(), data: data.into(), port };
            server.restart(conf);
            server
        }

        /// (Re)starts the server with `conf` appended to a pristine postgresql.conf.
        fn restart(&self, conf: &[String]) {
            let _ = as_postgres(&format!("{}/pg_ctl", self.bindir), &["-D", &self.data, "stop", "-m", "fast"]);
            let base = format!("{}/postgresql.conf.initdb", self.data);
            let path = format!("{}/postgresql.conf", self.data);
            if !std::path::Path::new(&base).exists() {
                std::fs::copy(&path, &base).unwrap();
            }
            let mut text = std::fs::read_to_string(&base).unwrap();
            text +=
                &format!("port = {}\nunix_socket_directories = '{}'\nlisten_addresses = ''\n", self.port, self.data);
            for line in conf {
                text += line;
                text.push('\n');
            }
            std::fs::write(&path, text).unwrap();
            let log = format!("{}/server.log", self.data);
            let out = as_postgres(&format!("{}/pg_ctl", self.bindir), &["-D", &self.data, "-l", &log, "-w", "start"]);
            assert!(out.status.success(), "pg_ctl start: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }

        fn connect(&self) -> postgres::Client {
            postgres::Config::new()
                .host_path(&self.data)
                .port(self.port)
                .user("postgres")
                .dbname("postgres")
                .connect(postgres::NoTls)
                .unwrap()
        }

        fn postmaster_pid(&self) -> i32 {
            let pidfile = std::fs::read_to_string(format!("{}/postmaster.pid", self.data)).unwrap();
            pidfile.lines().next().unwrap().trim().parse().unwrap()
        }

        /// PSS of the whole server: the postmaster and every process it started, in KiB.
        fn total_pss_kb(&self) -> i64 {
            let postmaster = self.postmaster_pid();
            let mut total = rss_pss_kb(postmaster).1;
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // Field 4, after the parenthesised command name, is the parent's pid.
                let ppid =
                    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
                if ppid == Some(postmaster) {
                    total += rss_pss_kb(pid).1.max(0);
                }
            }
            total
        }
    }

    impl Drop for OwnServer {
        fn drop(&mut self) {
            let _ = as_postgres(&format!("{}/pg_ctl", self.bindir), &["-D", &self.data, "stop", "-m", "immediate"]);
        }
    }

    /// `koe5.preload`: with koe5 in shared_preload_libraries the postmaster loads the model
    /// once and every session shares it. On a server of its own: each of 8 sessions reports
    /// the preloaded model and returns the reference's vectors; the whole server's memory
    /// (PSS of the postmaster and all its children) with 8 sessions that embedded stays
    /// within 1.3× of the same server with one; with `koe5.preload = off` it grows with
    /// every session. A first call in a new session is timed. A model file touched after
    /// the server started makes a new session load its own, still right, copy.
    #[test]
    fn a_preloaded_model_is_one_copy_for_every_session() {
        let mut admin = connect(None);
        let bindir: String =
            admin.query_one("SELECT setting FROM pg_config WHERE name = 'BINDIR'", &[]).unwrap().get(0);
        let version: i32 =
            admin.query_one("SELECT current_setting('server_version_num')::int / 10000", &[]).unwrap().get(0);
        let data = format!("/tmp/koe5-preload-{version}");
        // Private copies of the fixtures, so touching their files disturbs no other test.
        let model = format!("/tmp/koe5-preload-model-{version}");
        let rerank_model = format!("/tmp/koe5-preload-reranker-{version}");
        for (from, to) in [("tiny-xlmr", &model), ("tiny-xlmr-rerank", &rerank_model)] {
            let _ = std::fs::remove_dir_all(to);
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(format!("{FIXTURES}/{from}")).unwrap().flatten() {
                let dest = format!("{to}/{}", entry.file_name().to_string_lossy());
                if entry.path().is_dir() {
                    std::fs::create_dir_all(&dest).unwrap();
                    for f in std::fs::read_dir(entry.path()).unwrap().flatten() {
                        std::fs::copy(f.path(), format!("{dest}/{}", f.file_name().to_string_lossy())).unwrap();
                    }
                } else {
                    // Follows the reranker fixture's tokenizer symlink.
                    std::fs::copy(entry.path(), &dest).unwrap();
                }
            }
            let _ = std::process::Command::new("chmod").args(["-R", "a+rX", to]).status();
        }
        let rerank: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/expected-rerank.json")).unwrap())
                .unwrap();
        let pair = rerank["pairs"][0].clone();
        let (pair_query, pair_passage) =
            (pair["query"].as_str().unwrap().to_owned(), pair["passage"].as_str().unwrap().to_owned());
        let pair_score = pair["score"].as_f64().unwrap() as f32;
        let check_rerank = |c: &mut postgres::Client, preloaded: bool, label: &str| {
            let score: f32 =
                c.query_one("SELECT koe5_rerank_score($1, $2)", &[&pair_query, &pair_passage]).unwrap().get(0);
            assert!((score - pair_score).abs() < 2.5e-5, "{label}: {score} vs {pair_score}");
            let info: String = c.query_one("SELECT koe5_reranker_info()->>'preloaded'", &[]).unwrap().get(0);
            assert_eq!(info, preloaded.to_string(), "{label}");
        };
        let conf = |preload: bool| {
            vec![
                "shared_preload_libraries = 'koe5'".to_string(),
                format!("koe5.model_path = '{model}'"),
                format!("koe5.reranker_path = '{rerank_model}'"),
                "koe5.precision = 'f32'".to_string(),
                format!("koe5.preload = {}", if preload { "on" } else { "off" }),
            ]
        };
        let server = OwnServer::start(&bindir, &data, 5460 + version as u16, &conf(true));
        let cases = cases();
        let text = cases[3]["text"].as_str().unwrap().to_owned();
        let want = floats(&cases[3]["query"]["embedding"]);
        let measure = |preload: bool| -> (i64, i64, f64) {
            server.restart(&conf(preload));
            let mut sessions = Vec::new();
            let mut first_call = f64::MAX;
            let mut one = 0;
            for i in 0..8 {
                let t = Instant::now();
                let mut c = server.connect();
                c.batch_execute("CREATE EXTENSION IF NOT EXISTS koe5").unwrap();
                let row = c.query_one("SELECT koe5_query($1)", &[&text]).unwrap();
                first_call = first_call.min(t.elapsed().as_secs_f64());
                assert_close("preloaded", &row.get::<_, Vec<f32>>(0), &want);
                let info: String = c.query_one("SELECT koe5_model_info()->>'preloaded'", &[]).unwrap().get(0);
                assert_eq!(info, preload.to_string());
                check_rerank(&mut c, preload, "the reranker, preload on/off");
                sessions.push(c);
                if i == 0 {
                    one = server.total_pss_kb();
                }
            }
            (one, server.total_pss_kb(), first_call)
        };
        let (on_one, on_eight, on_first) = measure(true);
        // The postmaster that loaded the model has no thread besides its own.
        let tasks = std::fs::read_dir(format!("/proc/{}/task", server.postmaster_pid())).unwrap().count();
        assert_eq!(tasks, 1, "the postmaster has {tasks} threads");
        let (off_one, off_eight, off_first) = measure(false);
        figure(format!(
            "preload: whole-server PSS, 1 → 8 sessions: preloaded {} → {} MiB ({:.2}×), not preloaded {} → {} MiB ({:.2}×); \
             first call (connect + koe5_query) {:.0} ms preloaded, {:.0} ms not",
            on_one / 1024,
            on_eight / 1024,
            on_eight as f64 / on_one as f64,
            off_one / 1024,
            off_eight / 1024,
            off_eight as f64 / off_one as f64,
            on_first * 1e3,
            off_first * 1e3
        ));
        assert!(on_eight as f64 <= 1.3 * on_one as f64, "preloaded: {on_one} → {on_eight} KiB");
        assert!(off_eight as f64 > 2.0 * off_one as f64, "not preloaded: {off_one} → {off_eight} KiB");
        assert!(on_first < off_first, "first call {on_first} s preloaded vs {off_first} s");

        // Files that changed after the server loaded them: a new session loads its own.
        server.restart(&conf(true));
        for dir in [&model, &rerank_model] {
            let weights = std::fs::File::options().write(true).open(format!("{dir}/model.safetensors")).unwrap();
            weights.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
        }
        let mut c = server.connect();
        check_rerank(&mut c, false, "the reranker after its files changed");
        let row = c.query_one("SELECT koe5_query($1)", &[&text]).unwrap();
        assert_close("reloaded", &row.get::<_, Vec<f32>>(0), &want);
        let info: String = c.query_one("SELECT koe5_model_info()->>'preloaded'", &[]).unwrap().get(0);
        assert_eq!(info, "false");
        drop(c);

        // Without shared_preload_libraries koe5 loads on demand, and koe5.preload does not
        // exist (a PGC_POSTMASTER setting cannot be defined then).
        server.restart(&[format!("koe5.model_path = '{model}'"), "koe5.precision = 'f32'".to_string()]);
        let mut c = server.connect();
        c.batch_execute("CREATE EXTENSION IF NOT EXISTS koe5").unwrap();
        let row = c.query_one("SELECT koe5_query($1)", &[&text]).unwrap();
        assert_close("not preloaded", &row.get::<_, Vec<f32>>(0), &want);
        let preloaded: String = c.query_one("SELECT koe5_model_info()->>'preloaded'", &[]).unwrap().get(0);
        assert_eq!(preloaded, "false");
        drop(c);
        drop(server);
        let _ = std::fs::remove_dir_all(&model);
        let _ = std::fs::remove_dir_all(&rerank_model);
    }
}

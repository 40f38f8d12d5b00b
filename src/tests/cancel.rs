//! Interrupts and threads: cancel and statement_timeout stop a long batch within a
//! second and leave the backend usable; every compute thread blocks PostgreSQL's
//! signals; koe5.threads caps the compute threads.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::harness::*;

    /// Every thread of the backend but its own (koe5's pool, candle's element-wise pool,
    /// anything a library started) blocks PostgreSQL's signals, after embedding and
    /// reranking.
    #[pg_test]
    fn compute_threads_block_every_signal() {
        use_fixture("tiny-xlmr");
        Spi::run("SELECT koe5_passage('스레드')").unwrap();
        // The cross-encoder runs on the same threads (it starts none of its own).
        Spi::run(&format!("SET koe5.reranker_path = '{FIXTURES}/tiny-xlmr-rerank'")).unwrap();
        Spi::run("SELECT koe5_rerank_score('스레드', '신호')").unwrap();
        let main = std::process::id().to_string();
        let mut names = Vec::new();
        for thread in threads("self") {
            if thread.tid == main {
                continue;
            }
            names.push(thread.name.clone());
            let blocked = thread.status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim();
            let mask = u64::from_str_radix(blocked, 16).unwrap();
            // SIGINT 2, SIGQUIT 3, SIGUSR1 10, SIGUSR2 12, SIGALRM 14, SIGTERM 15, SIGCHLD 17, SIGURG 23
            for sig in [2, 3, 10, 12, 14, 15, 17, 23] {
                assert!(mask & (1 << (sig - 1)) != 0, "{} does not block signal {sig}: {blocked}", thread.name);
            }
        }
        assert!(names.iter().any(|n| n.starts_with("koe5-compute")), "no koe5-compute threads: {names:?}");
        // candle's element-wise pool is started with them (never lazily, from this thread).
        if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
            assert!(names.iter().any(|n| n.starts_with("candle-bp")), "no candle-bp threads: {names:?}");
        }
    }
}

#[cfg(test)]
mod client {
    use std::time::{Duration, Instant};

    use crate::tests::harness::client::*;
    use crate::tests::harness::*;

    const LONG_BATCH: &str = "SELECT count(*) FROM koe5_passage(array(
        SELECT repeat('대한민국 헌법 제' || g || '조 ', 40) FROM generate_series(1, 100000) g))";

    /// Runs `long` (minutes of work) in session `a`, cancels it from another session
    /// after 1.5 s, then runs it again under a 1 s statement_timeout: each stops with its
    /// own 57014 within a second (of the cancel, of the timeout). Returns the session,
    /// its statement_timeout reset, for the caller to check that it still works.
    fn assert_cancel_and_timeout_stop(mut a: postgres::Client, long: &'static str, what: &str) -> postgres::Client {
        let pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        let worker = std::thread::spawn(move || {
            let r = a.query_one(long, &[]);
            (sqlstate_of(r), Instant::now(), a)
        });
        std::thread::sleep(Duration::from_millis(1500));
        let mut b = connect(None);
        let sent = Instant::now();
        let ok: bool = b.query_one("SELECT pg_cancel_backend($1)", &[&pid]).unwrap().get(0);
        assert!(ok);
        let (outcome, ended, mut a) = worker.join().unwrap();
        let latency = ended.saturating_duration_since(sent);
        assert_eq!(outcome, "57014: canceling statement due to user request", "{what}");
        assert!(latency < Duration::from_secs(1), "{what}: cancel took {latency:?}");
        figure(format!("{what}: cancel latency: {latency:?}"));

        a.batch_execute("SET statement_timeout = '1s'").unwrap();
        let start = Instant::now();
        let outcome = sqlstate_of(a.query_one(long, &[]));
        let took = start.elapsed();
        assert_eq!(outcome, "57014: canceling statement due to statement timeout", "{what}");
        assert!(took < Duration::from_secs(2), "{what}: statement_timeout of 1s stopped after {took:?}");
        figure(format!("{what}: statement_timeout 1s stopped after {took:?}"));
        a.batch_execute("SET statement_timeout = 0").unwrap();
        a
    }

    #[test]
    fn cancel_and_statement_timeout_stop_a_long_batch() {
        let mut a = connect(None);
        a.batch_execute(&format!("SET koe5.model_path = '{FIXTURES}/tiny-xlmr'")).unwrap();
        a.query_one("SELECT koe5_query('warm up')", &[]).unwrap();
        let mut a = assert_cancel_and_timeout_stop(a, LONG_BATCH, "embedding");
        // The backend is still usable.
        let n: i32 = a.query_one("SELECT array_length(koe5_query('그래도 된다'), 1)", &[]).unwrap().get(0);
        assert_eq!(n, 32);
    }

    /// The same inside koe5_rerank: a cancel or a statement_timeout stops it in the
    /// middle of a round of pairs, and the backend reranks again afterwards.
    #[test]
    fn cancel_and_statement_timeout_stop_a_long_rerank() {
        const LONG_RERANK: &str = "SELECT count(*) FROM koe5_rerank('대통령의 임기는 몇 년인가?', array(
            SELECT repeat('대한민국 헌법 제' || g || '조 ', 40) FROM generate_series(1, 100000) g))";
        let mut a = connect(None);
        a.batch_execute(&format!("SET koe5.reranker_path = '{FIXTURES}/tiny-xlmr-rerank'")).unwrap();
        a.query_one("SELECT koe5_rerank_score('warm', 'up')", &[]).unwrap();
        let mut a = assert_cancel_and_timeout_stop(a, LONG_RERANK, "reranking");
        let n: i64 =
            a.query_one("SELECT count(*) FROM koe5_rerank('질문', ARRAY['하나', '둘', NULL])", &[]).unwrap().get(0);
        assert_eq!(n, 3);
    }

    /// koe5.threads caps a backend's compute threads.
    #[test]
    fn koe5_threads_caps_the_compute_threads() {
        let mut c = connect(None);
        c.batch_execute(&format!("SET koe5.threads = 1; SET koe5.model_path = '{FIXTURES}/tiny-xlmr'")).unwrap();
        c.query_one("SELECT koe5_passage('스레드 하나')", &[]).unwrap();
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        let compute = threads(&pid.to_string()).iter().filter(|t| t.name.starts_with("koe5-compute")).count();
        assert_eq!(compute, 1);
    }
}

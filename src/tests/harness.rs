//! What the extension's tests share: the fixture models and their reference outputs
//! (from `koe5-testkit`, which the core's tests use too), and the ways the tests look
//! at the server: the outcome of a statement as `SQLSTATE: message`, the text of an
//! EXPLAIN, a process's memory and threads in /proc. `client` holds the same for tests
//! that connect from outside the server.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

pub use koe5_testkit::{assert_close, cases, floats, long_cases, EXPECTED};

/// The fixture directory as the test server sees it. scripts/test.sh copies the
/// fixtures where the "postgres" user can read them and names that copy here.
pub const FIXTURES: &str = match option_env!("KOE5_TEST_FIXTURES") {
    Some(p) => p,
    None => concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"),
};

/// Points this backend's koe5.model_path at the fixture model `name`.
pub fn use_fixture(name: &str) {
    Spi::run(&format!("SET koe5.model_path = '{FIXTURES}/{name}'")).unwrap();
}

/// `SQLSTATE: message` of the error `sql` raises, or "ok".
pub fn outcome(sql: &str) -> String {
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

/// The vector `sql` (with `$1` for `text`) returns.
pub fn vector_of(sql: &str, text: &str) -> Vec<f32> {
    Spi::get_one_with_args::<Vec<f32>>(sql, &[DatumWithOid::from(text)]).unwrap().unwrap()
}

/// The plan that `statement` (an EXPLAIN) prints, one line per plan line.
pub fn explain(statement: &str, args: &[DatumWithOid]) -> String {
    Spi::connect(|c| {
        c.select(statement, None, args)
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// How many texts this backend has embedded (koe5_backend_stats).
pub fn embedded_so_far() -> i64 {
    Spi::get_one::<i64>("SELECT texts_embedded FROM koe5_backend_stats()").unwrap().unwrap()
}

/// A `Name: value kB` field of a file in /proc/PROCESS/ (`self` or a pid), in KiB.
pub fn proc_kb(process: &str, file: &str, field: &str) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{process}/{file}")).ok()?;
    text.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// A thread of a process, as /proc/PROCESS/task/TID shows it.
pub struct Thread {
    pub tid: String,
    /// `comm`, without its newline.
    pub name: String,
    /// The `status` file.
    pub status: String,
}

/// The threads of /proc/PROCESS/ (`self` or a pid), the main thread (tid = pid) included.
pub fn threads(process: &str) -> Vec<Thread> {
    std::fs::read_dir(format!("/proc/{process}/task"))
        .unwrap()
        .map(|task| {
            let dir = task.unwrap().path();
            Thread {
                tid: dir.file_name().unwrap().to_string_lossy().into_owned(),
                name: std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_owned(),
                status: std::fs::read_to_string(dir.join("status")).unwrap_or_default(),
            }
        })
        .collect()
}

/// For tests that need connections of their own: other databases, other sessions,
/// cancel from outside.
#[cfg(test)]
pub mod client {
    use std::time::{Duration, Instant};

    pub use koe5_testkit::figure;

    use super::FIXTURES;

    pub fn connect(dbname: Option<&str>) -> postgres::Client {
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

    /// A new database `name` in `encoding`, with koe5 and the fixture model.
    pub fn fresh_database(name: &str, encoding: &str) -> postgres::Client {
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

    /// The text of the reference case `name` and its passage vector.
    pub fn case(name: &str) -> (String, Vec<f32>) {
        let c = super::cases().into_iter().find(|c| c["name"] == name).unwrap();
        (c["text"].as_str().unwrap().to_owned(), super::floats(&c["passage"]["embedding"]))
    }

    /// `SQLSTATE: message` of a failed call, or "ok".
    pub fn sqlstate_of<T>(r: Result<T, postgres::Error>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => e.as_db_error().map(|d| format!("{}: {}", d.code().code(), d.message())).unwrap_or(e.to_string()),
        }
    }

    /// The plan that `statement` (an EXPLAIN) prints, one line per plan line.
    pub fn explain_via(c: &mut postgres::Client, statement: &str) -> String {
        c.query(statement, &[]).unwrap().iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
    }

    /// Polls `done` every 20 ms; fails after `limit`.
    pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

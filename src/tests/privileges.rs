//! Who may do what: the model settings and koe5_download() are for superusers unless
//! granted (also before the library loads); koe5 in a schema of its own cannot be
//! shadowed; a plain role can neither lock koe5's shared tables nor delete another
//! owner's queue entries; a hostile search_path does not redirect koe5's own SQL.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::harness::*;

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
        assert_eq!(outcome("SELECT koe5_download('reranker')"), "42501: permission denied for function koe5_download");
        Spi::run("RESET ROLE").unwrap();
    }
}

#[cfg(test)]
mod client {
    use crate::tests::harness::client::*;
    use crate::tests::harness::*;

    #[test]
    fn a_plain_user_cannot_set_the_model_before_the_library_loads() {
        // In a fresh session koe5 is not loaded yet, so SET creates a placeholder; loading
        // the library must drop a placeholder that a plain user set.
        let mut c = connect(None);
        c.batch_execute("DO $$ BEGIN CREATE ROLE koe5_placeholder_user; EXCEPTION WHEN duplicate_object OR unique_violation THEN END $$")
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

    /// What a plain user may not do, and what a superuser may delegate: SET on the
    /// model settings (GRANT SET ON PARAMETER) and koe5_download() (GRANT EXECUTE).
    #[test]
    fn privileges_are_refused_to_plain_users_and_can_be_granted() {
        let mut c = fresh_database("koe5_privileges", "UTF8");
        c.batch_execute(
            "DO $$ BEGIN CREATE ROLE koe5_delegate; EXCEPTION WHEN duplicate_object OR unique_violation THEN END $$;
             DO $$ BEGIN CREATE ROLE koe5_nobody; EXCEPTION WHEN duplicate_object OR unique_violation THEN END $$;",
        )
        .unwrap();
        c.batch_execute("SET ROLE koe5_nobody").unwrap();
        for sql in [
            "SET koe5.model_path = '/etc'",
            "SET koe5.model_id = 'evil/model'",
            "SET koe5.threads = 64",
            "SELECT koe5_download()",
            "ALTER SYSTEM SET koe5.model_path = '/etc'",
        ] {
            let got = sqlstate_of(c.batch_execute(sql));
            assert!(got.starts_with("42501"), "{sql}: {got}");
        }
        c.batch_execute("RESET ROLE").unwrap();
        c.batch_execute(
            "GRANT SET ON PARAMETER koe5.model_path TO koe5_delegate;
             GRANT EXECUTE ON FUNCTION koe5_download() TO koe5_delegate;
             SELECT tests.set_env_for_test('HF_ENDPOINT', 'http://127.0.0.1:9');
             SET koe5.model_path = '';
             SET ROLE koe5_delegate;",
        )
        .unwrap();
        c.batch_execute(&format!("SET koe5.model_path = '{FIXTURES}/tiny-xlmr'")).unwrap();
        c.query_one("SELECT koe5_passage('위임')", &[]).unwrap();
        // Past the privilege check: the download itself fails (nothing listens there).
        let got = sqlstate_of(c.batch_execute("SELECT koe5_download()"));
        assert!(!got.starts_with("42501") && got.starts_with("08"), "{got}");
        let got = sqlstate_of(c.batch_execute("SET koe5.model_id = 'evil/model'"));
        assert!(got.starts_with("42501"), "only what was granted: {got}");
        c.batch_execute("RESET ROLE").unwrap();
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
             DO $$ BEGIN CREATE ROLE koe5_mallory; EXCEPTION WHEN duplicate_object OR unique_violation THEN END $$;
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
            "DO $$ BEGIN CREATE ROLE koe5_owner; EXCEPTION WHEN duplicate_object OR unique_violation THEN END $$;
             DO $$ BEGIN CREATE ROLE koe5_mallory; EXCEPTION WHEN duplicate_object OR unique_violation THEN END $$;
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

    /// A hostile search_path cannot redirect what koe5's SQL functions call.
    #[test]
    fn a_hostile_search_path_does_not_redirect_koe5() {
        let mut c = fresh_database("koe5_hostile", "UTF8");
        c.batch_execute(
            "CREATE SCHEMA evil;
             CREATE FUNCTION evil.hijacked() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RAISE 'hijacked'; END $$;
             CREATE FUNCTION evil.koe5_passage(text) RETURNS real[] LANGUAGE sql AS 'SELECT ARRAY[evil.hijacked()]::real[]';
             CREATE FUNCTION evil.koe5_passage(text[]) RETURNS SETOF real[] LANGUAGE sql
                 AS 'SELECT ARRAY[evil.hijacked()]::real[]';
             CREATE FUNCTION evil.koe5_query(text) RETURNS real[] LANGUAGE sql AS 'SELECT ARRAY[evil.hijacked()]::real[]';
             CREATE FUNCTION evil.format(text, text) RETURNS text LANGUAGE sql AS 'SELECT evil.hijacked()::text';
             CREATE FUNCTION evil.format(text, integer) RETURNS text LANGUAGE sql AS 'SELECT evil.hijacked()::text';
             CREATE FUNCTION evil.fake_agg(tid[], tid) RETURNS tid[] LANGUAGE sql AS 'SELECT NULL::tid[]';
             CREATE FUNCTION evil.fake_final(tid[]) RETURNS tid[] LANGUAGE sql AS 'SELECT ARRAY[evil.hijacked()::text::tid]';
             CREATE AGGREGATE evil.array_agg(tid) (SFUNC = evil.fake_agg, STYPE = tid[], FINALFUNC = evil.fake_final);
             CREATE FUNCTION evil.tideq(tid, tid) RETURNS boolean LANGUAGE sql AS 'SELECT evil.hijacked() = 0';
             CREATE OPERATOR evil.= (LEFTARG = tid, RIGHTARG = tid, FUNCTION = evil.tideq);
             CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS 'SELECT now() + evil.hijacked() * interval ''1s''';
             CREATE FUNCTION evil.plus(bigint, bigint) RETURNS bigint LANGUAGE sql AS 'SELECT evil.hijacked()::bigint';
             CREATE OPERATOR evil.+ (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.plus);
             CREATE TABLE docs (id int PRIMARY KEY, body text, emb real[]);
             INSERT INTO docs SELECT g, '제' || g || '조' FROM generate_series(1, 30) g;",
        )
        .unwrap();
        c.batch_execute("SET search_path = evil, public, pg_catalog").unwrap();
        c.batch_execute("CALL koe5_backfill('docs', 'body', 'emb', batch_size => 7)").unwrap();
        c.batch_execute(
            "CREATE TRIGGER embed BEFORE INSERT OR UPDATE ON docs FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'emb');
             INSERT INTO docs VALUES (31, '제31조');
             CREATE TABLE public.q (id int PRIMARY KEY, body text, emb real[]);
             SELECT koe5_enqueue_table('public.q', 'body', 'emb');
             INSERT INTO public.q VALUES (1, '가'), (2, '나');
             SELECT koe5_process_queue();",
        )
        .unwrap();
        let n: i64 = c.query_one("SELECT count(*) FROM koe5_chunks('가나다. 라마바.')", &[]).unwrap().get(0);
        assert_eq!(n, 1);
        c.batch_execute("SET search_path = public").unwrap();
        let r = c
            .query_one(
                "SELECT (SELECT count(emb) FROM docs), (SELECT count(emb) FROM q),
                        (SELECT min(koe5_similarity(emb, koe5_passage(body))) FROM docs)",
                &[],
            )
            .unwrap();
        let (docs, q, worst): (i64, i64, f32) = (r.get(0), r.get(1), r.get(2));
        assert_eq!((docs, q), (31, 2));
        assert!(worst >= 0.99999);
    }
}

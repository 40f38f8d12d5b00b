//! Upgrades from the released 0.1.0, 0.2.0 and 0.3.0 keep the data and give exactly what a
//! fresh install gives.

#[cfg(test)]
mod client {
    use crate::tests::harness::client::*;
    use crate::tests::harness::*;

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
        for from in ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0"] {
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
            assert_eq!(version, "0.6.0");
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
                "an upgraded {from} must equal a fresh install; only upgraded: {only_upgraded:#?}, only fresh: {only_fresh:#?}"
            );
        }
    }
}

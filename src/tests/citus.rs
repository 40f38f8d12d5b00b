//! Citus: what koe5 does on a Citus table, without a Citus cluster (CI cannot build one:
//! stress/citus.sh runs the same paths on a real cluster). A database here gets a
//! stand-in for Citus's catalog `pg_dist_partition` (allow_system_table_mods), which is
//! all koe5 reads to tell a Citus table's type; without Citus's functions, what would
//! run on the workers says that Citus is missing.

#[cfg(test)]
mod client {
    use crate::tests::harness::client::*;

    /// koe5 classifies tables as Citus's view citus_tables does, refuses to queue any
    /// Citus table, refuses to backfill reference and local tables (with the UPDATE that
    /// would), and checks the workers' models before a distributed backfill; with no
    /// Citus catalog every table is a plain one.
    #[test]
    fn citus_tables_are_told_apart_and_refused_where_unsupported() {
        let mut c = fresh_database("koe5_citus_stand_in", "UTF8");
        c.batch_execute(
            "CREATE TABLE hashed (id int PRIMARY KEY, body text, emb real[]);
             CREATE TABLE ref (id int PRIMARY KEY, body text, emb real[]);
             CREATE TABLE loc (id int PRIMARY KEY, body text, emb real[]);
             CREATE TABLE single (id int PRIMARY KEY, body text, emb real[]);
             CREATE TABLE plain (id int PRIMARY KEY, body text, emb real[]);
             INSERT INTO plain VALUES (1, '대한민국은 민주공화국이다.');",
        )
        .unwrap();
        let kind = |c: &mut postgres::Client, t: &str| -> Option<String> {
            c.query_one("SELECT koe5__citus_table_type($1::text::regclass)", &[&t]).unwrap().get(0)
        };
        assert_eq!(kind(&mut c, "hashed"), None, "no Citus catalog: not a Citus table");
        assert_eq!(
            sqlstate_of(c.query("SELECT * FROM koe5_cluster_models()", &[])),
            "0A000: Citus is not installed in this database"
        );

        c.batch_execute(
            "SET allow_system_table_mods = on;
             CREATE TABLE pg_catalog.pg_dist_partition (logicalrelid regclass, partmethod \"char\", partkey text,
                                                        colocationid integer, repmodel \"char\");
             RESET allow_system_table_mods;
             INSERT INTO pg_catalog.pg_dist_partition VALUES
                 ('hashed', 'h', '{VAR :varno 1 :varattno 1}', 1, 's'),
                 ('ref', 'n', NULL, 2, 't'),
                 ('loc', 'n', NULL, 0, 's'),
                 ('single', 'n', NULL, 3, 's');",
        )
        .unwrap();
        for (t, want) in [
            ("hashed", Some("distributed")),
            ("ref", Some("reference")),
            ("loc", Some("local")),
            ("single", Some("distributed")),
            ("plain", None),
        ] {
            assert_eq!(kind(&mut c, t).as_deref(), want, "{t}");
        }
        for t in ["hashed", "ref", "loc", "single"] {
            assert_eq!(
                sqlstate_of(c.query(&format!("SELECT koe5_enqueue_table('{t}', 'body', 'emb')"), &[])),
                "0A000: koe5_enqueue_table() does not support Citus tables",
                "{t}"
            );
        }
        let each_node = " Each node computes its own copy: compare their models with koe5_cluster_models().";
        for (t, what, more) in [("ref", "reference", each_node), ("loc", "local", "")] {
            let err = c.batch_execute(&format!("CALL koe5_backfill('{t}', 'body', 'emb')")).unwrap_err();
            let db = err.as_db_error().unwrap();
            assert_eq!(db.code().code(), "0A000", "{t}");
            assert_eq!(db.message(), format!("koe5_backfill() does not support Citus {what} tables"));
            assert_eq!(
                db.hint(),
                Some(format!("Embed them with UPDATE public.{t} SET emb = koe5_passage(body) WHERE emb IS NULL, in batches, or with a generated column.{more}").as_str())
            );
        }
        // A distributed table: the workers' models are compared first, which needs Citus.
        assert_eq!(
            sqlstate_of(c.batch_execute("CALL koe5_backfill('hashed', 'body', 'emb')")),
            "0A000: Citus is not installed in this database"
        );
        let runs: i64 = c.query_one("SELECT count(*) FROM koe5_backfill_runs", &[]).unwrap().get(0);
        assert_eq!(runs, 0, "a refused backfill records no run");
        // A plain table next to them is queued and backfilled as ever.
        c.batch_execute("SELECT koe5_enqueue_table('plain', 'body', 'emb')").unwrap();
        c.batch_execute("CALL koe5_backfill('plain', 'body', 'emb')").unwrap();
        let n: i64 = c.query_one("SELECT count(emb) FROM plain", &[]).unwrap().get(0);
        assert_eq!(n, 1);
    }
}

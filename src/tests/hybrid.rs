//! koe5_hybrid_search: its results equal a fusion computed here from separately queried
//! dense and lexical ranks (ties and weights included); EXPLAIN shows the HNSW and GIN
//! indexes; quoted names, a hostile search_path, row-level security and a caller
//! without SELECT; its errors; the 'or' query mode against 'plain'. The dense side on
//! pgvector columns is tested on PostgreSQL 18 only (Debian's 15 has no pgvector); the
//! real[] form, which needs no pgvector, everywhere.

#[cfg(test)]
mod client {
    use std::collections::{BTreeSet, HashMap};

    use postgres::Client;

    use crate::tests::harness::client::*;

    /// The test server's dense column type for the fixture model (32 dimensions):
    /// pgvector's where there is one.
    #[cfg(feature = "pg18")]
    const VECTOR: &str = "vector(32)";
    #[cfg(not(feature = "pg18"))]
    const VECTOR: &str = "real[]";

    /// A database with koe5 (and pgvector where there is one) and a text search
    /// configuration of its own outside pg_catalog, as koe5's Korean one is.
    fn database(name: &str) -> Client {
        let mut c = fresh_database(name, "UTF8");
        if cfg!(feature = "pg18") {
            c.batch_execute("CREATE EXTENSION vector").unwrap();
        }
        c.batch_execute("CREATE TEXT SEARCH CONFIGURATION hybrid_ko (COPY = simple)").unwrap();
        c
    }

    /// The articles of the constitution (as scripts/articles.py splits them), English
    /// sentences, and two texts twice over (exact ties on both sides): 209 texts.
    fn corpus() -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for line in include_str!("../../data/ko/constitution.txt").lines().map(str::trim) {
            if line.contains("부칙") {
                break;
            }
            let numbered = line
                .strip_prefix('제')
                .and_then(|r| r.split_once('조'))
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|ch| ch.is_ascii_digit()));
            let heading = line.strip_prefix('제').is_some_and(|r| {
                let digits = r.trim_start_matches(|ch: char| ch.is_ascii_digit());
                digits.len() < r.len() && (digits.starts_with('장') || digits.starts_with('절'))
            });
            if numbered {
                out.push(line.to_owned());
            } else if let Some(last) = out.last_mut() {
                if !line.is_empty() && !heading {
                    last.push(' ');
                    last.push_str(line);
                }
            }
        }
        assert!(out.len() >= 130, "{} articles", out.len());
        let subjects =
            ["The court", "The president", "Parliament", "Every citizen", "The government", "A judge", "The city"];
        let verbs = ["protects", "reviews", "changes", "publishes", "questions"];
        let objects = ["the law", "the budget", "free speech", "the election", "the treaty"];
        for (i, s) in subjects.iter().enumerate() {
            for (j, v) in verbs.iter().enumerate() {
                for (m, o) in objects.iter().enumerate() {
                    if (i + j + m) % 2 == 0 {
                        out.push(format!("{s} {v} {o}."));
                    }
                }
            }
        }
        out.truncate(207);
        out.push(out[0].clone());
        out.push(out[140].clone());
        out
    }

    /// Table `docs` (id, body, emb of `vector_type`) holding `texts`, ids from 1.
    fn load(c: &mut Client, table: &str, vector_type: &str, texts: &[String]) {
        c.batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY, body text, emb {vector_type})")).unwrap();
        c.execute(
            &format!(
                "INSERT INTO {table} (id, body, emb)
                 SELECT n, b, koe5_passage(b)::{vector_type} FROM unnest($1::text[]) WITH ORDINALITY AS u(b, n)"
            ),
            &[&texts],
        )
        .unwrap();
        c.batch_execute(&format!("ANALYZE {table}")).unwrap();
    }

    /// One search's settings.
    #[derive(Clone, Copy, Debug)]
    struct Search<'a> {
        query: &'a str,
        k: i32,
        candidates: i32,
        rrf_k: i32,
        dense_weight: f64,
        lexical_weight: f64,
        mode: &'a str,
    }

    impl<'a> Search<'a> {
        fn new(query: &'a str) -> Self {
            Search { query, k: 10, candidates: 50, rrf_k: 2, dense_weight: 1.0, lexical_weight: 0.75, mode: "or" }
        }
    }

    /// A result row: id, fused score, dense rank, lexical rank.
    type Hit = (i32, f64, Option<i32>, Option<i32>);

    fn hybrid(c: &mut Client, table: &str, s: Search) -> Vec<Hit> {
        c.query(
            &format!(
                "SELECT (h.doc).id, h.score, h.dense_rank, h.lexical_rank
                 FROM koe5_hybrid_search(NULL::{table}, $1, 'emb', 'body', k => $2, candidates => $3, rrf_k => $4,
                                         dense_weight => $5, lexical_weight => $6, config => 'hybrid_ko', mode => $7) AS h"
            ),
            &[&s.query, &s.k, &s.candidates, &s.rrf_k, &s.dense_weight, &s.lexical_weight, &s.mode],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
    }

    /// Competition ranks (ties share the better rank) of the best `n` of `keyed`, lower
    /// keys first; None when the cut falls inside a tie: which of the tied rows LIMIT
    /// keeps is the plan's choice.
    fn ranks(mut keyed: Vec<(i32, f64)>, n: usize) -> Option<HashMap<i32, i32>> {
        keyed.sort_by(|a, b| a.1.total_cmp(&b.1));
        if keyed.len() > n && keyed[n - 1].1 == keyed[n].1 {
            return None;
        }
        let mut out = HashMap::new();
        let mut rank = 0;
        for (i, (id, key)) in keyed.iter().take(n).enumerate() {
            if i == 0 || *key != keyed[i - 1].1 {
                rank = i as i32 + 1;
            }
            out.insert(*id, rank);
        }
        Some(out)
    }

    /// The fusion, computed here from the two sides' keys (`dense_key` and
    /// `lexical_key` are SQL expressions over `emb`, `body` and the query $1; lower is
    /// better), with the documented order: score, the better rank, the dense rank, the
    /// lexical rank, the row's ctid. None when a side's cut falls inside a tie.
    fn brute_force(c: &mut Client, table: &str, dense_key: &str, s: Search) -> Option<Vec<Hit>> {
        let keyed = |c: &mut Client, sql: String| -> Vec<(i32, f64)> {
            c.query(&sql, &[&s.query, &s.mode]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
        };
        let n = s.candidates as usize;
        // ($2, the mode, is the lexical side's; the dense query names it to take it.)
        let dense = ranks(
            keyed(
                c,
                format!("SELECT id, ({dense_key})::float8 FROM {table} WHERE emb IS NOT NULL AND $2::text IS NOT NULL"),
            ),
            n,
        )?;
        let tsv = "to_tsvector('hybrid_ko', body)";
        let lexical = ranks(
            keyed(
                c,
                format!(
                    "SELECT id, -ts_rank({tsv}, koe5_tsquery('hybrid_ko', $1, $2), 1)::float8 FROM {table}
                     WHERE {tsv} @@ koe5_tsquery('hybrid_ko', $1, $2)"
                ),
            ),
            n,
        )?;
        let ctid: HashMap<i32, (i64, i64)> = c
            .query(&format!("SELECT id, (ctid::text::point)[0]::int8, (ctid::text::point)[1]::int8 FROM {table}"), &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let rrf = s.rrf_k as f64;
        let ids: BTreeSet<i32> = dense.keys().chain(lexical.keys()).copied().collect();
        let mut hits: Vec<Hit> = ids
            .into_iter()
            .map(|id| {
                let (d, l) = (dense.get(&id).copied(), lexical.get(&id).copied());
                let score = d.map_or(0.0, |r| s.dense_weight / (rrf + r as f64))
                    + l.map_or(0.0, |r| s.lexical_weight / (rrf + r as f64));
                (id, score, d, l)
            })
            .collect();
        let last = |r: Option<i32>| r.unwrap_or(i32::MAX);
        hits.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then(last(a.2).min(last(a.3)).cmp(&last(b.2).min(last(b.3))))
                .then(last(a.2).cmp(&last(b.2)))
                .then(last(a.3).cmp(&last(b.3)))
                .then(ctid[&a.0].cmp(&ctid[&b.0]))
        });
        hits.truncate(s.k as usize);
        Some(hits)
    }

    /// The searches the brute-force tests run: a Korean question, an English one, a
    /// text stored twice, weights, rrf_k, k and candidates at their edges.
    fn searches() -> Vec<Search<'static>> {
        let base = Search::new("헌법재판소의 권한은 무엇인가");
        vec![
            base,
            Search { k: 30, ..base },
            Search { query: "Who reviews the budget and the law?", k: 25, candidates: 40, ..base },
            Search { query: "대통령의 임기와 선거", rrf_k: 0, dense_weight: 2.0, lexical_weight: 0.5, ..base },
            Search { query: "국회의원의 임기는 4년으로 한다", candidates: 209, k: 209, ..base },
            Search { query: "The court protects free speech.", dense_weight: 1.0, lexical_weight: 0.0, ..base },
            Search { query: "The court protects free speech.", dense_weight: 0.0, lexical_weight: 1.0, k: 15, ..base },
            Search { query: "국민의 권리와 의무", k: 1, candidates: 1, rrf_k: 1, ..base },
            Search { query: "국민의 권리와 의무", mode: "plain", ..base },
            Search { query: "\"법률이 정하는\" -대통령", mode: "websearch", ..base },
        ]
    }

    fn assert_matches_brute_force(c: &mut Client, table: &str, dense_key: &str) -> bool {
        let mut saw_tie = false;
        for mut s in searches() {
            // More candidates until neither side's cut falls inside a tie.
            let want = loop {
                match brute_force(c, table, dense_key, s) {
                    Some(want) => break want,
                    None => s.candidates += 1,
                }
            };
            let got = hybrid(c, table, s);
            assert_eq!(got, want, "{s:?}");
            assert!(!got.is_empty(), "{s:?}");
            saw_tie |= got.windows(2).any(|w| w[0].1 == w[1].1);
        }
        saw_tie
    }

    /// real[] embeddings: the dense side orders by koe5_similarity over every row.
    #[test]
    fn real_array_results_equal_a_brute_force_fusion() {
        let mut c = database("koe5_hybrid_real");
        load(&mut c, "docs", "real[]", &corpus());
        let saw_tie = assert_matches_brute_force(&mut c, "docs", "-koe5_similarity(emb, koe5_query($1))");
        assert!(saw_tie, "the searches include exact ties of the fused score");
        // The defaults are the documented ones: k 10, 50 candidates, rrf_k 2, weights 1
        // and 0.75, the configuration koe5, mode or.
        let q = "헌법재판소의 권한은 무엇인가";
        let mut rows = |sql: &str| -> Vec<(i32, f64, Option<i32>)> {
            c.query(sql, &[&q]).unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
        };
        let defaults =
            rows("SELECT (h.doc).id, h.score, h.lexical_rank FROM koe5_hybrid_search(NULL::docs, $1, 'emb', 'body') h");
        let explicit = rows(
            "SELECT (h.doc).id, h.score, h.lexical_rank FROM koe5_hybrid_search(NULL::docs, $1, 'emb', 'body',
                 k => 10, candidates => 50, rrf_k => 2, dense_weight => 1, lexical_weight => 0.75,
                 config => 'koe5', mode => 'or') h",
        );
        assert_eq!(defaults, explicit);
        assert_eq!(defaults.len(), 10);
        assert!(defaults.iter().any(|r| r.2.is_some()), "koe5's configuration finds the question's words");
    }

    /// pgvector embeddings (vector and halfvec) without an index: exact distances.
    #[cfg(feature = "pg18")]
    #[test]
    fn pgvector_results_equal_a_brute_force_fusion() {
        let mut c = database("koe5_hybrid_vector");
        let texts = corpus();
        load(&mut c, "docs", "vector(32)", &texts);
        let saw_tie = assert_matches_brute_force(&mut c, "docs", "emb <=> koe5_query($1)::vector");
        assert!(saw_tie, "the searches include exact ties of the fused score");
        load(&mut c, "halfdocs", "halfvec(32)", &texts);
        assert_matches_brute_force(&mut c, "halfdocs", "emb <=> koe5_query($1)::halfvec");
        // The query is embedded once per call.
        let before: i64 = c.query_one("SELECT texts_embedded FROM koe5_backend_stats()", &[]).unwrap().get(0);
        hybrid(&mut c, "docs", Search::new("한 번만 임베딩되는 질문"));
        let after: i64 = c.query_one("SELECT texts_embedded FROM koe5_backend_stats()", &[]).unwrap().get(0);
        assert_eq!(after - before, 1);
    }

    /// The plan of a search, with the query embedding as a parameter (a generic plan,
    /// so the 32 floats stay out of it).
    #[cfg(feature = "pg18")]
    fn plan(c: &mut Client, table: &str, text_column: &str, s: Search) -> String {
        let statement: String = c
            .query_one(
                "SELECT statement FROM koe5__hybrid_sql($1::text::regclass, $2, 'emb', $3, $4, $5, $6, $7, $8, 'hybrid_ko', $9)",
                &[&table, &s.query, &text_column, &s.k, &s.candidates, &s.rrf_k, &s.dense_weight, &s.lexical_weight, &s.mode],
            )
            .unwrap()
            .get(0);
        c.batch_execute(&format!(
            "DEALLOCATE ALL; SET plan_cache_mode = force_generic_plan; PREPARE search(real[]) AS {statement}"
        ))
        .unwrap();
        let plan = explain_via(c, "EXPLAIN (COSTS OFF) EXECUTE search(koe5_query('헌법재판소'))");
        c.batch_execute("RESET plan_cache_mode").unwrap();
        plan
    }

    /// Both sides go through their indexes: HNSW for the dense one, GIN for the lexical
    /// one, on an expression index written as a user writes it and on a tsvector column;
    /// the indexed search agrees with the exact one; a partitioned table is searched
    /// through its partitions' indexes.
    #[cfg(feature = "pg18")]
    #[test]
    fn explain_shows_the_hnsw_and_gin_indexes() {
        let mut c = database("koe5_hybrid_explain");
        let texts = corpus();
        load(&mut c, "exact", "vector(32)", &texts);
        load(&mut c, "docs", "vector(32)", &texts);
        c.batch_execute(
            "ALTER TABLE docs ADD COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector('hybrid_ko', body)) STORED;
             CREATE INDEX docs_emb_idx ON docs USING hnsw (emb vector_cosine_ops);
             CREATE INDEX docs_body_idx ON docs USING gin (to_tsvector('hybrid_ko', body));
             CREATE INDEX docs_tsv_idx ON docs USING gin (tsv);
             ANALYZE docs;
             SET enable_seqscan = off;",
        )
        .unwrap();
        let s = Search::new("헌법재판소의 권한");
        let p = plan(&mut c, "docs", "body", s);
        assert!(p.contains("Index Scan using docs_emb_idx on docs"), "{p}");
        assert!(p.contains("Bitmap Index Scan on docs_body_idx"), "{p}");
        assert!(p.contains("Hash Full Join"), "{p}");
        let p = plan(&mut c, "docs", "tsv", s);
        assert!(p.contains("Index Scan using docs_emb_idx on docs"), "{p}");
        assert!(p.contains("Bitmap Index Scan on docs_tsv_idx"), "{p}");
        // With the index the dense side is approximate; on 209 rows, with hnsw.ef_search
        // raised to `candidates`, HNSW finds what the exact scan finds.
        for s in [s, Search { query: "The court protects free speech.", ..s }] {
            let ids = |hits: Vec<Hit>| hits.into_iter().map(|h| h.0).collect::<Vec<_>>();
            assert_eq!(ids(hybrid(&mut c, "docs", s)), ids(hybrid(&mut c, "exact", s)), "{s:?}");
        }
        // The call leaves the session's pgvector settings as they were.
        let settings = c
            .query_one("SELECT current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan')", &[])
            .unwrap();
        assert_eq!((settings.get::<_, String>(0), settings.get::<_, String>(1)), ("40".into(), "off".into()));

        // A partitioned table: rows are told apart by (tableoid, ctid), every partition's
        // indexes serve, and each row ranks as it does in one plain table.
        c.batch_execute(
            "CREATE TABLE parted (id int, body text, emb vector(32)) PARTITION BY RANGE (id);
             CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (1) TO (100);
             CREATE TABLE parted_high PARTITION OF parted FOR VALUES FROM (100) TO (1000);
             INSERT INTO parted SELECT id, body, emb FROM exact;
             CREATE INDEX ON parted USING hnsw (emb vector_cosine_ops);
             CREATE INDEX ON parted USING gin (to_tsvector('hybrid_ko', body));
             ANALYZE parted;",
        )
        .unwrap();
        let p = plan(&mut c, "parted", "body", s);
        for index in
            ["parted_low_emb_idx", "parted_high_emb_idx", "parted_low_to_tsvector_idx", "parted_high_to_tsvector_idx"]
        {
            assert!(p.contains(index), "{index}: {p}");
        }
        c.batch_execute("RESET enable_seqscan").unwrap();
        let all = Search { k: 209, candidates: 209, ..s };
        let sorted = |mut hits: Vec<Hit>| {
            hits.sort_by_key(|h| h.0);
            hits
        };
        assert_eq!(sorted(hybrid(&mut c, "parted", all)), sorted(hybrid(&mut c, "exact", all)));
    }

    /// Names that need quotes, a search_path whose schema shadows everything the search
    /// calls, row-level security, and a caller without SELECT.
    #[test]
    fn quoted_names_hostile_search_path_and_row_level_security() {
        let mut c = database("koe5_hybrid_security");
        let texts = corpus();
        c.batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE koe5_hybrid_reader; EXCEPTION WHEN duplicate_object OR unique_violation THEN END $$;
             DO $$ BEGIN CREATE ROLE koe5_hybrid_stranger; EXCEPTION WHEN duplicate_object OR unique_violation THEN END $$;
             CREATE TABLE \"My Docs\" (id int PRIMARY KEY, \"b o d y\" text, \"e m b\" {VECTOR}, reader name);"
        ))
        .unwrap();
        c.execute(
            &format!(
                "INSERT INTO \"My Docs\" SELECT n, b, koe5_passage(b)::{VECTOR},
                        CASE WHEN n % 2 = 0 THEN 'koe5_hybrid_reader' ELSE 'someone_else' END
                 FROM unnest($1::text[]) WITH ORDINALITY AS u(b, n)"
            ),
            &[&texts],
        )
        .unwrap();
        if cfg!(feature = "pg18") {
            c.batch_execute("CREATE INDEX \"My Docs emb\" ON \"My Docs\" USING hnsw (\"e m b\" vector_cosine_ops)")
                .unwrap();
        }
        c.batch_execute(
            "CREATE INDEX ON \"My Docs\" USING gin (to_tsvector('hybrid_ko', \"b o d y\"));
             ALTER TABLE \"My Docs\" ENABLE ROW LEVEL SECURITY;
             CREATE POLICY mine ON \"My Docs\" FOR SELECT USING (reader = current_user);
             GRANT SELECT ON \"My Docs\" TO koe5_hybrid_reader;
             CREATE SCHEMA evil;
             GRANT USAGE ON SCHEMA evil TO PUBLIC;
             CREATE FUNCTION evil.hijacked() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RAISE 'hijacked'; END $$;
             CREATE FUNCTION evil.koe5_query(text) RETURNS real[] LANGUAGE sql AS 'SELECT ARRAY[evil.hijacked()]::real[]';
             CREATE FUNCTION evil.koe5_similarity(real[], real[]) RETURNS real LANGUAGE sql AS 'SELECT evil.hijacked()::real';
             CREATE FUNCTION evil.koe5_tsquery(regconfig, text, text) RETURNS tsquery LANGUAGE sql
                 AS 'SELECT evil.hijacked()::text::tsquery';
             CREATE FUNCTION evil.to_tsvector(regconfig, text) RETURNS tsvector LANGUAGE sql
                 AS 'SELECT evil.hijacked()::text::tsvector';
             CREATE FUNCTION evil.ts_rank(tsvector, tsquery, integer) RETURNS real LANGUAGE sql AS 'SELECT evil.hijacked()::real';
             CREATE FUNCTION evil.plainto_tsquery(regconfig, text) RETURNS tsquery LANGUAGE sql
                 AS 'SELECT evil.hijacked()::text::tsquery';
             CREATE FUNCTION evil.tsvector_to_array(tsvector) RETURNS text[] LANGUAGE sql AS 'SELECT ARRAY[evil.hijacked()::text]';
             CREATE FUNCTION evil.format(text, text) RETURNS text LANGUAGE sql AS 'SELECT evil.hijacked()::text';
             CREATE FUNCTION evil.current_setting(text, boolean) RETURNS text LANGUAGE sql AS 'SELECT evil.hijacked()::text';
             CREATE FUNCTION evil.numnode(tsquery) RETURNS int LANGUAGE sql AS 'SELECT evil.hijacked()';
             CREATE FUNCTION evil.websearch_to_tsquery(regconfig, text) RETURNS tsquery LANGUAGE sql
                 AS 'SELECT evil.hijacked()::text::tsquery';
             CREATE FUNCTION evil.fake_agg(text, text, text) RETURNS text LANGUAGE sql AS 'SELECT evil.hijacked()::text';
             CREATE AGGREGATE evil.string_agg(text, text) (SFUNC = evil.fake_agg, STYPE = text);
             CREATE FUNCTION evil.set_config(text, text, boolean) RETURNS text LANGUAGE sql AS 'SELECT evil.hijacked()::text';
             CREATE FUNCTION evil.matches(tsvector, tsquery) RETURNS boolean LANGUAGE sql AS 'SELECT evil.hijacked() = 0';
             CREATE OPERATOR evil.@@ (LEFTARG = tsvector, RIGHTARG = tsquery, FUNCTION = evil.matches);
             CREATE FUNCTION evil.div(float8, float8) RETURNS float8 LANGUAGE sql AS 'SELECT evil.hijacked()::float8';
             CREATE OPERATOR evil./ (LEFTARG = float8, RIGHTARG = float8, FUNCTION = evil.div);
             CREATE FUNCTION evil.tideq(tid, tid) RETURNS boolean LANGUAGE sql AS 'SELECT evil.hijacked() = 0';
             CREATE OPERATOR evil.= (LEFTARG = tid, RIGHTARG = tid, FUNCTION = evil.tideq);",
        )
        .unwrap();
        if cfg!(feature = "pg18") {
            c.batch_execute(
                "CREATE FUNCTION evil.distance(vector, vector) RETURNS float8 LANGUAGE sql AS 'SELECT evil.hijacked()::float8';
                 CREATE OPERATOR evil.<=> (LEFTARG = vector, RIGHTARG = vector, FUNCTION = evil.distance);",
            )
            .unwrap();
        }
        let search = "SELECT (h.doc).id, (h.doc).reader::text, h.score, h.dense_rank, h.lexical_rank
                      FROM koe5_hybrid_search(NULL::\"My Docs\", '헌법재판소의 권한', 'e m b', 'b o d y',
                                              k => 200, candidates => 60, config => 'hybrid_ko') AS h";
        // The owner (who bypasses the policy) sees every row; the reader only theirs, and
        // still `candidates` of them on the dense side.
        c.batch_execute("SET search_path = evil, public, pg_catalog").unwrap();
        let owner = search_as(&mut c, search);
        assert!(owner.iter().any(|h| h.1 != "koe5_hybrid_reader"), "{owner:?}");
        if cfg!(feature = "pg18") {
            c.batch_execute("SET enable_seqscan = off").unwrap();
        }
        c.batch_execute("SET ROLE koe5_hybrid_reader").unwrap();
        let reader = search_as(&mut c, search);
        assert!(!reader.is_empty());
        assert!(reader.iter().all(|h| h.1 == "koe5_hybrid_reader"), "{reader:?}");
        assert_eq!(reader.iter().filter(|h| h.3.is_some()).count(), 60, "{reader:?}");
        assert!(reader.iter().filter_map(|h| h.3).max() <= Some(60));
        // The stranger may not read the table at all.
        c.batch_execute("RESET ROLE; SET ROLE koe5_hybrid_stranger").unwrap();
        assert_eq!(sqlstate_of(c.query(search, &[])), "42501: permission denied for table My Docs");
        c.batch_execute("RESET ROLE; RESET enable_seqscan; SET search_path = public").unwrap();
        // What the reader saw is what a table of only the reader's rows gives.
        c.batch_execute(
            "CREATE TABLE \"Reader's Docs\" AS SELECT * FROM \"My Docs\" WHERE reader = 'koe5_hybrid_reader';
             CREATE INDEX ON \"Reader's Docs\" USING gin (to_tsvector('hybrid_ko', \"b o d y\"));",
        )
        .unwrap();
        let own = search_as(&mut c, &search.replace("\"My Docs\"", "\"Reader's Docs\""));
        // Ranks are those of the rows present in both (which of the rows that tie at the
        // cut LIMIT keeps is the plan's choice); HNSW is approximate, the copy exact.
        assert_eq!(own.iter().filter(|h| h.3.is_some()).count(), 60);
        let theirs: HashMap<i32, (Option<i32>, Option<i32>)> = own.iter().map(|h| (h.0, (h.3, h.4))).collect();
        let both: Vec<_> = reader.iter().filter_map(|h| theirs.get(&h.0).map(|t| (h, t))).collect();
        assert!(both.len() * 10 >= reader.len() * 9, "{reader:?}\n{own:?}");
        assert!(both.iter().all(|(h, t)| h.4 == t.1), "lexical ranks: {both:?}");
        if !cfg!(feature = "pg18") {
            assert!(both.iter().all(|(h, t)| h.3 == t.0), "dense ranks: {both:?}");
        }
    }

    /// A result row with the row's reader: id, reader, score, dense rank, lexical rank.
    type ReaderHit = (i32, String, f64, Option<i32>, Option<i32>);

    fn search_as(c: &mut Client, sql: &str) -> Vec<ReaderHit> {
        c.query(sql, &[]).unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect()
    }

    /// Wrong arguments fail with real SQLSTATEs, in PostgreSQL's message style.
    #[test]
    fn errors_name_the_problem() {
        let mut c = database("koe5_hybrid_errors");
        load(&mut c, "docs", VECTOR, &corpus()[..20]);
        c.batch_execute(
            "CREATE VIEW docs_view AS SELECT * FROM docs;
             CREATE TYPE pair AS (a int, b int);
             CREATE TABLE small (id int, body text, emb real[], n int);",
        )
        .unwrap();
        let call = |args: &str| format!("SELECT * FROM koe5_hybrid_search({args})");
        let cases = [
            ("NULL::int, 'q', 'emb', 'body'", "42809: type integer is not the row type of a table"),
            ("NULL::pair, 'q', 'emb', 'body'", "42809: \"pair\" is not a table"),
            ("NULL::docs_view, 'q', 'emb', 'body'", "42809: \"docs_view\" is not a table"),
            ("NULL, 'q', 'emb', 'body'", "42804: could not determine polymorphic type because input has type unknown"),
            ("NULL::docs, 'q', 'embedding', 'body'", "42703: column \"embedding\" of relation \"docs\" does not exist"),
            ("NULL::docs, 'q', 'emb', 'text'", "42703: column \"text\" of relation \"docs\" does not exist"),
            ("NULL::docs, 'q', 'id', 'body'", "42804: column \"id\" of relation \"docs\" is of type integer"),
            ("NULL::small, 'q', 'emb', 'n'", "42804: column \"n\" of relation \"small\" is of type integer"),
            ("NULL::docs, 'q', NULL, 'body'", "22004: vector and text columns must not be null"),
            ("NULL::docs, 'q', 'emb', 'body', config => NULL", "22004: text search configuration must not be null"),
            ("NULL::docs, 'q', 'emb', 'body', k => 0", "22023: k must be at least 1"),
            ("NULL::docs, 'q', 'emb', 'body', candidates => 0", "22023: candidates must be at least 1"),
            ("NULL::docs, 'q', 'emb', 'body', rrf_k => -1", "22023: rrf_k must not be negative"),
            (
                "NULL::docs, 'q', 'emb', 'body', dense_weight => -1",
                "22023: dense_weight must be a finite number that is not negative",
            ),
            (
                "NULL::docs, 'q', 'emb', 'body', lexical_weight => 'NaN'",
                "22023: lexical_weight must be a finite number that is not negative",
            ),
            (
                "NULL::docs, 'q', 'emb', 'body', dense_weight => 'Infinity'",
                "22023: dense_weight must be a finite number that is not negative",
            ),
            ("NULL::docs, 'q', 'emb', 'body', mode => 'and'", "22023: invalid search mode \"and\""),
            ("NULL::docs, 'q', 'emb', 'body', mode => NULL", "22023: invalid search mode \"<NULL>\""),
            (
                "NULL::docs, 'q', 'emb', 'body', config => 'no_such'",
                "42704: text search configuration \"no_such\" does not exist",
            ),
            ("NULL::docs, NULL, 'emb', 'body'", "ok"),
        ];
        for (args, want) in cases {
            assert_eq!(sqlstate_of(c.query(&call(args), &[])), want, "{args}");
        }
        let none = c.query(&call("NULL::docs, NULL, 'emb', 'body'"), &[]).unwrap();
        assert!(none.is_empty(), "a NULL query finds nothing");
        assert_eq!(
            sqlstate_of(c.query("SELECT koe5_tsquery('simple', 'q', 'all')", &[])),
            "22023: invalid search mode \"all\""
        );
        if cfg!(feature = "pg18") {
            // A column of another dimension is pgvector's error.
            c.batch_execute("CREATE TABLE narrow (body text, emb vector(3))").unwrap();
            assert_eq!(
                sqlstate_of(c.query(&call("NULL::narrow, 'q', 'emb', 'body'"), &[])),
                "22000: expected 3 dimensions, not 32"
            );
        }
    }

    /// 'or' (the default) finds a passage that shares one word with the question;
    /// 'plain' (all words) finds none; 'websearch' takes the query's own operators.
    #[test]
    fn or_mode_finds_a_passage_sharing_one_word() {
        let mut c = database("koe5_hybrid_modes");
        let texts: Vec<String> = ["탄핵의 절차는 법률로 정한다.", "국회는 국정을 감사한다.", "The budget is public."]
            .iter()
            .map(|s| s.to_string())
            .collect();
        load(&mut c, "docs", VECTOR, &texts);
        let q = "대통령 탄핵의 요건과 효과는?";
        let tsq = |c: &mut Client, mode: &str| -> String {
            c.query_one("SELECT koe5_tsquery('hybrid_ko', $1, $2)::text", &[&q, &mode]).unwrap().get(0)
        };
        assert_eq!(tsq(&mut c, "or"), "'대통령' | '요건과' | '탄핵의' | '효과는'");
        assert_eq!(tsq(&mut c, "plain"), "'대통령' & '탄핵의' & '요건과' & '효과는'");
        let lexical = |c: &mut Client, mode: &str| -> Vec<i32> {
            c.query(
                "SELECT (h.doc).id FROM koe5_hybrid_search(NULL::docs, $1, 'emb', 'body', config => 'hybrid_ko', mode => $2) h
                 WHERE h.lexical_rank IS NOT NULL",
                &[&q, &mode],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        assert_eq!(lexical(&mut c, "or"), vec![1]);
        assert_eq!(lexical(&mut c, "plain"), Vec::<i32>::new());
        let all: i64 = c
            .query_one("SELECT count(*) FROM koe5_hybrid_search(NULL::docs, $1, 'emb', 'body', mode => 'plain')", &[&q])
            .unwrap()
            .get(0);
        assert_eq!(all, 3, "the dense side still answers");
        let web: String = c
            .query_one("SELECT koe5_tsquery('simple', '\"budget is\" -public', 'websearch')::text", &[])
            .unwrap()
            .get(0);
        assert_eq!(web, "'budget' <-> 'is' & !'public'");
        // Only stop words: an empty query, plainto_tsquery's notice, the dense side alone.
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM koe5_hybrid_search(NULL::docs, 'the of', 'emb', 'body', config => 'english')",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 3);
    }

    /// koe5_hybrid_rerank: the best `candidates` rows of koe5_hybrid_search, in its
    /// order, scored by koe5_rerank over their passages; the best k by that score (ties
    /// and NULL passages in hybrid order), each with its ranks; passage_column; errors.
    #[test]
    fn hybrid_rerank_is_hybrid_search_then_the_cross_encoder() {
        let mut c = database("koe5_hybrid_rerank");
        let corpus = corpus();
        load(&mut c, "docs", VECTOR, &corpus[..80]);
        c.batch_execute(&format!(
            "SET koe5.reranker_path = '{}/tiny-xlmr-rerank';
             ALTER TABLE docs ADD COLUMN summary text;
             UPDATE docs SET summary = CASE WHEN id % 7 = 3 THEN NULL ELSE 'Summary ' || id || ': ' || left(body, 40) END;",
            crate::tests::harness::FIXTURES
        ))
        .unwrap();
        type Row = (i32, Option<f32>, i32, Option<i32>, Option<i32>);
        for (q, k, candidates, column) in [
            ("대통령의 임기와 선거", 5, 20, "body"),
            ("국회의원은 법률안을 제출할 수 있다", 3, 50, "summary"),
            ("The court reviews the law.", 10, 12, "body"),
        ] {
            let fused = hybrid(&mut c, "docs", Search { k: candidates, candidates, ..Search::new(q) });
            let passages: Vec<Option<String>> = fused
                .iter()
                .map(|h| c.query_one(&format!("SELECT {column} FROM docs WHERE id = $1"), &[&h.0]).unwrap().get(0))
                .collect();
            let scores: Vec<Option<f32>> = c
                .query("SELECT s FROM koe5_rerank($1, $2) WITH ORDINALITY AS r(s, n) ORDER BY n", &[&q, &passages])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            // Each score is also the pair's score alone (batches change nothing).
            for (p, s) in passages.iter().zip(&scores) {
                if let (Some(p), Some(s)) = (p, s) {
                    let alone: f32 = c.query_one("SELECT koe5_rerank_score($1, $2)", &[&q, p]).unwrap().get(0);
                    assert!((alone - s).abs() <= 1e-6, "{q}: {alone} against {s}");
                }
            }
            let mut want: Vec<Row> =
                fused.iter().zip(&scores).enumerate().map(|(i, (h, s))| (h.0, *s, i as i32 + 1, h.2, h.3)).collect();
            want.sort_by(|a, b| match (a.1, b.1) {
                (Some(x), Some(y)) => y.total_cmp(&x).then(a.2.cmp(&b.2)),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.2.cmp(&b.2),
            });
            want.truncate(k as usize);
            let got: Vec<Row> = c
                .query(
                    "SELECT (r.doc).id, r.score, r.hybrid_rank, r.dense_rank, r.lexical_rank
                     FROM koe5_hybrid_rerank(NULL::docs, $1, 'emb', 'body', k => $2, candidates => $3,
                                             passage_column => $4, config => 'hybrid_ko') AS r",
                    &[&q, &k, &candidates, &column],
                )
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect();
            assert_eq!(got, want, "{q}");
            assert_eq!(got.len(), k as usize);
            if column == "summary" {
                assert!(scores.iter().any(Option::is_none), "{q}: a NULL summary among the candidates");
            }
        }
        // Defaults: 5 rows; a NULL query: none.
        let n: i64 = c
            .query_one("SELECT count(*) FROM koe5_hybrid_rerank(NULL::docs, '헌법 개정', 'emb', 'body', config => 'hybrid_ko')", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 5);
        let n: i64 = c
            .query_one("SELECT count(*) FROM koe5_hybrid_rerank(NULL::docs, NULL, 'emb', 'body')", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 0);

        c.batch_execute(
            "ALTER TABLE docs ADD COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector('hybrid_ko', body)) STORED",
        )
        .unwrap();
        let call = |args: &str| format!("SELECT * FROM koe5_hybrid_rerank({args})");
        let cases = [
            ("NULL::int, 'q', 'emb', 'body'", "42809: type integer is not the row type of a table"),
            ("NULL::docs, 'q', 'emb', 'body', k => 0", "22023: k must be at least 1"),
            ("NULL::docs, 'q', 'emb', 'body', candidates => 0", "22023: candidates must be at least 1"),
            ("NULL::docs, 'q', NULL, 'body'", "22004: vector and text columns must not be null"),
            ("NULL::docs, 'q', 'emb', 'tsv'", "42804: column \"tsv\" of relation \"docs\" is of type tsvector"),
            (
                "NULL::docs, 'q', 'emb', 'body', passage_column => 'nope'",
                "42703: column \"nope\" of relation \"docs\" does not exist",
            ),
            ("NULL::docs, 'q', 'emb', 'tsv', passage_column => 'body', config => 'hybrid_ko'", "ok"),
        ];
        for (args, want) in cases {
            assert_eq!(sqlstate_of(c.query(&call(args), &[])), want, "{args}");
        }
        c.batch_execute("SET koe5.reranker_path = '/nonexistent/koe5-reranker'").unwrap();
        let got = sqlstate_of(c.query(&call("NULL::docs, 'q', 'emb', 'body', config => 'hybrid_ko'"), &[]));
        assert!(got.starts_with("58P01: "), "{got}");
        // Nothing to rerank needs no cross-encoder: no rows, not its error.
        let n: i64 = c.query_one("SELECT count(*) FROM koe5_rerank('q', '{}'::text[])", &[]).unwrap().get(0);
        assert_eq!(n, 0);
        c.batch_execute("CREATE TABLE empty_docs (LIKE docs)").unwrap();
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM koe5_hybrid_rerank(NULL::empty_docs, 'q', 'emb', 'body', config => 'hybrid_ko')",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
    }
}

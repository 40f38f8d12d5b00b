//! Keeping a column of embeddings: generated columns, a PL/pgSQL trigger,
//! koe5_embed_trigger on real[], vector and halfvec columns (and its misuse), the
//! pgvector recipes with an HNSW index, the koe5_vector companion and the README's
//! search example. PostgreSQL 18 here carries pgvector; Debian's 15 has none, so the
//! pgvector tests are for pg18 only.

#[pgrx::pg_schema]
mod tests {
    use pgrx::datum::DatumWithOid;
    use pgrx::prelude::*;

    use crate::tests::harness::*;

    // pgvector recipes: PostgreSQL 18 here carries pgvector 0.8; Debian's 15 has none.
    #[cfg(feature = "pg18")]
    fn articles() -> Vec<(i32, String)> {
        let text = include_str!("../../data/ko/constitution.txt");
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
        let plan = explain(&format!("EXPLAIN {q}"), &[]);
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
        // The batch form: input order, within 1e-5 of the single form (README's reference
        // for koe5_query(text[]): equal to the bit on AVX512F, within 1e-5 elsewhere).
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
        let plan = explain(&format!("EXPLAIN {search}"), &[DatumWithOid::from("헌법재판소의 권한")]);
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
}

//! Reranking through SQL: koe5_rerank_score and koe5_rerank against the reference
//! (tests/fixtures/expected-rerank.json, sentence-transformers' CrossEncoder on
//! tiny-xlmr-rerank) in f32 and bf16, input order and NULLs, an EUC_KR database,
//! koe5_reranker_info, and the errors for a directory of the wrong kind.

#[cfg(test)]
mod client {
    use crate::tests::harness::client::*;
    use crate::tests::harness::FIXTURES;
    use serde_json::Value;

    /// The bound is 1e-4 on the logit; a sigmoid's slope is at most 1/4.
    const SCORE_TOL: f32 = 2.5e-5;

    fn pairs() -> Vec<Value> {
        let path = format!("{FIXTURES}/expected-rerank.json");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["pairs"].as_array().unwrap().clone()
    }

    fn expected_bf16_bound() -> f32 {
        let path = format!("{FIXTURES}/expected-rerank.json");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["torch_bf16_autocast_max_abs_logit_difference"].as_f64().unwrap() as f32
    }

    fn with_reranker(name: &str, encoding: &str) -> postgres::Client {
        let mut c = fresh_database(name, encoding);
        c.batch_execute(&format!("SET koe5.reranker_path = '{FIXTURES}/tiny-xlmr-rerank'; SET koe5.precision = 'f32'"))
            .unwrap();
        c
    }

    fn score(c: &mut postgres::Client, q: &str, p: &str) -> Result<f32, postgres::Error> {
        c.query_one("SELECT koe5_rerank_score($1, $2)", &[&q, &p]).map(|r| r.get(0))
    }

    #[test]
    fn rerank_scores_equal_the_reference_through_sql() {
        let mut c = with_reranker("koe5_rerank", "UTF8");
        let ps = pairs();
        let mut worst = 0f32;
        for p in &ps {
            let got = score(&mut c, p["query"].as_str().unwrap(), p["passage"].as_str().unwrap()).unwrap();
            worst = worst.max((got - p["score"].as_f64().unwrap() as f32).abs());
        }
        assert!(worst <= SCORE_TOL, "max |score - reference| = {worst}");
        // The batch form: one row per element in input order, NULL for NULL, and each
        // query's ranking the reference's.
        let mut by_query: std::collections::BTreeMap<String, Vec<&Value>> = Default::default();
        for p in &ps {
            by_query.entry(p["query"].as_str().unwrap().to_owned()).or_default().push(p);
        }
        for (q, group) in &by_query {
            let mut passages: Vec<Option<&str>> = group.iter().map(|p| p["passage"].as_str()).collect();
            let hole = passages.len() / 2;
            passages.insert(hole, None);
            let rows: Vec<(Option<f32>, i64)> = c
                .query("SELECT s, n FROM koe5_rerank($1, $2) WITH ORDINALITY AS r(s, n)", &[q, &passages])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            assert_eq!(rows.len(), passages.len(), "{q}");
            let mut want = group.iter().map(|p| Some(p["score"].as_f64().unwrap() as f32)).collect::<Vec<_>>();
            want.insert(hole, None);
            for ((got, n), (w, i)) in rows.iter().zip(want.iter().zip(1i64..)) {
                assert_eq!(*n, i);
                match (got, w) {
                    (Some(g), Some(w)) => assert!((g - w).abs() <= SCORE_TOL, "{q}: {g} against {w}"),
                    (None, None) => {}
                    _ => panic!("{q}: {got:?} against {w:?}"),
                }
            }
        }
        // Rounds of 256: 800 passages, NULLs on both sides of the first round's end and a
        // whole round of NULLs, in order; each distinct passage also scored alone.
        let mut many: Vec<Option<&str>> = (0..800).map(|i| ps[i % ps.len()]["passage"].as_str()).collect();
        for i in [255, 256].into_iter().chain(512..768) {
            many[i] = None;
        }
        let q = "헌법재판소의 권한";
        let rows: Vec<Option<f32>> = c
            .query("SELECT s FROM koe5_rerank($1, $2) WITH ORDINALITY AS r(s, n) ORDER BY n", &[&q, &many])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(rows.len(), 800);
        let mut alone = std::collections::HashMap::new();
        for p in many.iter().flatten() {
            if !alone.contains_key(p) {
                alone.insert(*p, score(&mut c, q, p).unwrap());
            }
        }
        for (i, (got, p)) in rows.iter().zip(&many).enumerate() {
            match (got, p) {
                (Some(g), Some(p)) => assert!((g - alone[p]).abs() <= 1e-6, "{i}: {g} against {}", alone[p]),
                (None, None) => {}
                _ => panic!("{i}: {got:?} for {p:?}"),
            }
        }
        let info: Value =
            c.query_one("SELECT koe5_reranker_info()::text", &[]).unwrap().get::<_, String>(0).parse().unwrap();
        assert_eq!(info["loaded"], true, "{info}");
        assert_eq!(info["activation"], "sigmoid");
        assert_eq!(info["max_tokens"], 512);
        assert_eq!(info["precision"], "f32");
        assert_eq!(info["sha256"].as_str().map(str::len), Some(64));
    }

    #[test]
    fn bf16_scores_stay_within_the_reference_bf16_error() {
        let mut c = with_reranker("koe5_rerank_bf16", "UTF8");
        c.batch_execute("SET koe5.precision = 'bf16'").unwrap();
        // A logit moved by at most the bound moves a sigmoid by at most a quarter of it.
        let bound = expected_bf16_bound() / 4.0;
        let mut worst = 0f32;
        for p in pairs() {
            let got = score(&mut c, p["query"].as_str().unwrap(), p["passage"].as_str().unwrap()).unwrap();
            worst = worst.max((got - p["score"].as_f64().unwrap() as f32).abs());
        }
        assert!(worst <= bound, "bf16 max |score - reference| = {worst}, bound {bound}");
        let info: String = c.query_one("SELECT koe5_reranker_info()->>'precision'", &[]).unwrap().get(0);
        assert_eq!(info, "bf16");
    }

    #[test]
    fn an_euc_kr_database_gives_the_same_scores() {
        let mut utf8 = with_reranker("koe5_rerank_u", "UTF8");
        let mut euc = with_reranker("koe5_rerank_e", "EUC_KR");
        let mut compared = 0;
        for p in pairs() {
            let (q, passage) = (p["query"].as_str().unwrap(), p["passage"].as_str().unwrap());
            // Texts EUC_KR cannot hold (emoji, rare syllables) are refused when the
            // server converts them (22P05); the rest must score alike.
            let b = match score(&mut euc, q, passage) {
                Ok(b) => b,
                Err(e) if e.code() == Some(&postgres::error::SqlState::UNTRANSLATABLE_CHARACTER) => continue,
                Err(e) => panic!("{}: {e}", p["name"]),
            };
            let a = score(&mut utf8, q, passage).unwrap();
            assert_eq!(a, b, "{}", p["name"]);
            compared += usize::from(q.chars().any(|c| ('가'..='힣').contains(&c)));
        }
        assert!(compared >= 20, "{compared} Korean pairs compared");
    }

    #[test]
    fn wrong_directories_and_arguments_are_clear_errors() {
        let mut c = fresh_database("koe5_rerank_errors", "UTF8");
        c.batch_execute(&format!("SET koe5.reranker_path = '{FIXTURES}/tiny-xlmr'")).unwrap();
        let r = sqlstate_of(score(&mut c, "q", "p"));
        assert_eq!(r, format!("0A000: model in \"{FIXTURES}/tiny-xlmr\" is an embedding model, not a cross-encoder"));
        let info: String = c.query_one("SELECT koe5_reranker_info()->>'error'", &[]).unwrap().get(0);
        assert!(info.ends_with("is an embedding model, not a cross-encoder"), "{info}");
        c.batch_execute(&format!("SET koe5.model_path = '{FIXTURES}/tiny-xlmr-rerank'")).unwrap();
        let r = sqlstate_of(c.query_one("SELECT koe5_passage('x')", &[]));
        assert!(r.starts_with("0A000: ") && r.ends_with("is a cross-encoder, not an embedding model"), "{r}");
        c.batch_execute(&format!("RESET koe5.model_path; SET koe5.reranker_path = '{FIXTURES}/nonexistent'")).unwrap();
        let r = sqlstate_of(score(&mut c, "q", "p"));
        assert!(r.starts_with("58P01: "), "{r}");
        c.batch_execute(&format!("SET koe5.reranker_path = '{FIXTURES}/tiny-xlmr-rerank'")).unwrap();
        let r = sqlstate_of(c.query("SELECT * FROM koe5_rerank('q', ARRAY[['a','b'],['c','d']])", &[]));
        assert_eq!(r, "22000: array must be one-dimensional");
        let n: i64 = c.query_one("SELECT count(*) FROM koe5_rerank('q', ARRAY[]::text[])", &[]).unwrap().get(0);
        assert_eq!(n, 0);
        let null: Option<f32> = c.query_one("SELECT koe5_rerank_score('q', NULL)", &[]).unwrap().get(0);
        assert_eq!(null, None);
        // A plain role may not point the server at other files.
        c.batch_execute(
            "DO $$ BEGIN CREATE ROLE koe5_rerank_plain; EXCEPTION WHEN duplicate_object OR unique_violation THEN END $$;
             SET ROLE koe5_rerank_plain;",
        )
        .unwrap();
        let r = sqlstate_of(c.batch_execute("SET koe5.reranker_path = '/tmp'"));
        assert_eq!(r, "42501: permission denied to set parameter \"koe5.reranker_path\"");
        let r = sqlstate_of(c.batch_execute("SET koe5.reranker_id = 'someone/else'"));
        assert_eq!(r, "42501: permission denied to set parameter \"koe5.reranker_id\"");
        c.batch_execute("RESET ROLE").unwrap();
    }
}

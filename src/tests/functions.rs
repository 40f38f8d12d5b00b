//! The SQL functions at their edges: NULL in, NULL out; array arguments (NULL, empty,
//! NULL elements, two-dimensional); koe5_similarity's results and errors; koe5_chunks
//! on a long bill; and how every function is declared for the planner (volatility,
//! strictness, parallel safety, cost, comment).

#[pgrx::pg_schema]
mod tests {
    use pgrx::datum::DatumWithOid;
    use pgrx::prelude::*;

    use crate::tests::harness::*;

    #[pg_test]
    fn null_in_null_out() {
        use_fixture("tiny-xlmr");
        for f in ["koe5_query(NULL::text)", "koe5_passage(NULL::text)", "koe5_token_count(NULL)"] {
            assert_eq!(Spi::get_one::<bool>(&format!("SELECT {f} IS NULL")).unwrap(), Some(true), "{f}");
        }
        assert_eq!(Spi::get_one::<bool>("SELECT koe5_similarity(NULL, '{1}') IS NULL").unwrap(), Some(true));
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
    fn chunks_fit_the_model_and_cover_the_bill() {
        use_fixture("tiny-xlmr");
        let bill = include_str!("../../data/ko/bill-1809896.txt");
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
}

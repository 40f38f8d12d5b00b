//! The per-session query cache: a plan that evaluates koe5_query for every row (a
//! join filter, a generic plan ordering by distance) embeds the query once.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::harness::*;

    #[pg_test]
    fn a_repeated_query_is_embedded_once_per_session() {
        use_fixture("tiny-xlmr");
        Spi::run(
            "CREATE TABLE cached (id int, emb real[]);
             INSERT INTO cached SELECT g, koe5_passage('조문 ' || (g % 10)) FROM generate_series(1, 1000) g",
        )
        .unwrap();
        // Evaluated for each of the 1,000 rows (the argument is not a constant).
        let per_row = "SELECT count(*) FROM cached, (SELECT '대통령의 권한'::text AS q OFFSET 0) s
                       WHERE koe5_similarity(cached.emb, koe5_query(s.q)) > -2";
        let plan = explain(&format!("EXPLAIN VERBOSE {per_row}"), &[]);
        assert!(plan.contains("Join Filter: (koe5_similarity(cached.emb, koe5_query("), "{plan}");
        let stats = || {
            let (t, h) =
                Spi::get_two::<i64, i64>("SELECT texts_embedded, query_cache_hits FROM koe5_backend_stats()").unwrap();
            (t.unwrap(), h.unwrap())
        };
        let (t0, h0) = stats();
        assert_eq!(Spi::get_one::<i64>(per_row).unwrap(), Some(1000));
        let (t1, h1) = stats();
        assert_eq!((t1 - t0, h1 - h0), (1, 999), "1,000 evaluations: one embedding, 999 cache hits");
        // The cached vector is the computed one.
        let direct = Spi::get_one::<Vec<f32>>("SELECT koe5_query('대통령의 권한')").unwrap().unwrap();
        let case = cases().into_iter().next().unwrap();
        let fresh = vector_of("SELECT koe5_query($1)", case["text"].as_str().unwrap());
        assert_close("cache", &fresh, &floats(&case["query"]["embedding"]));
        assert_close("cache", &vector_of("SELECT koe5_query($1)", case["text"].as_str().unwrap()), &fresh);
        assert_eq!(direct.len(), 32);
        // Turned off, every evaluation embeds.
        Spi::run("SET koe5.query_cache_size = 0").unwrap();
        let (t2, _) = stats();
        assert_eq!(
            Spi::get_one::<i64>(&per_row.replace("FROM cached,", "FROM (SELECT * FROM cached LIMIT 50) cached,"))
                .unwrap(),
            Some(50)
        );
        assert_eq!(stats().0 - t2, 50);
        assert_eq!(Spi::get_one::<i32>("SELECT query_cache_entries FROM koe5_backend_stats()").unwrap(), Some(0));
    }

    #[cfg(feature = "pg18")]
    #[pg_test]
    fn order_by_distance_to_a_query_embeds_it_once() {
        use_fixture("tiny-xlmr");
        Spi::run("CREATE EXTENSION IF NOT EXISTS vector").unwrap();
        Spi::run(
            "CREATE TABLE qdocs (id int, emb vector(32));
             WITH base AS (SELECT n, koe5_passage('조문 ' || n)::vector AS e FROM generate_series(0, 9) n)
             INSERT INTO qdocs SELECT g, base.e FROM generate_series(1, 1000) g JOIN base ON base.n = g % 10",
        )
        .unwrap();
        let embedded = || embedded_so_far();
        let before = embedded();
        Spi::run("SELECT id FROM qdocs ORDER BY emb <=> koe5_query('헌법재판소의 권한')::vector LIMIT 5").unwrap();
        assert_eq!(embedded() - before, 1);
        // A generic plan evaluates koe5_query($1) for every one of the 1,000 rows; the
        // cache embeds it once.
        Spi::run("SET LOCAL plan_cache_mode = force_generic_plan").unwrap();
        Spi::run("PREPARE nearest(text) AS SELECT id FROM qdocs ORDER BY emb <=> koe5_query($1)::vector LIMIT 5")
            .unwrap();
        let plan = explain("EXPLAIN VERBOSE EXECUTE nearest('국회의 권한')", &[]);
        assert!(plan.contains("Seq Scan on public.qdocs") && plan.contains("koe5_query($1)"), "{plan}");
        let (before, hits) =
            Spi::get_two::<i64, i64>("SELECT texts_embedded, query_cache_hits FROM koe5_backend_stats()").unwrap();
        Spi::run("EXECUTE nearest('국회의 권한')").unwrap();
        let (after, hits_after) =
            Spi::get_two::<i64, i64>("SELECT texts_embedded, query_cache_hits FROM koe5_backend_stats()").unwrap();
        assert_eq!(after.unwrap() - before.unwrap(), 1, "1,000 evaluations, one embedding");
        assert!(hits_after.unwrap() - hits.unwrap() >= 999);
        Spi::run("DEALLOCATE nearest").unwrap();
    }
}

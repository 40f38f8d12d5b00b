//! Korean text search (sql/surface/textsearch.sql): the
//! parser `koe5`, its dictionaries and the configuration, as
//! users call them (to_tsvector, websearch_to_tsquery, @@, ts_rank, ts_headline, a GIN
//! index), in UTF-8 and EUC_KR databases, with no model loaded.

#[cfg(test)]
mod client {
    use crate::tests::harness::client::*;

    fn one(c: &mut postgres::Client, sql: &str) -> String {
        c.query_one(sql, &[]).unwrap().get(0)
    }

    #[test]
    fn koe5_text_search_cuts_korean_into_pieces_and_finds_them() {
        let mut c = fresh_database("koe5_ts", "UTF8");
        // Particles come apart from their words and are dropped (position 3 is 을);
        // each word's Hangul bigrams come just before its pieces (번역 at 1 is the
        // bigram, at 2 the piece); lexemes are NFKC and lower-case (the tokenizer cuts
        // KoE5 as Ko + E + 5).
        assert_eq!(one(&mut c, "SELECT to_tsvector('koe5', '번역을 했다')::text"), "'번역':1,2 '했다':4,5");
        assert_eq!(
            one(&mut c, "SELECT to_tsvector('koe5', 'ＫｏＥ５ 모델, English!')::text"),
            "'5':3 'e':2 'english':6 'ko':1 '모델':4,5"
        );
        let found: bool =
            c.query_one("SELECT to_tsvector('koe5', '번역을 했다') @@ to_tsquery('koe5', '번역')", &[]).unwrap().get(0);
        assert!(found, "번역 finds 번역을, which 'simple' does not");
        let simple: bool = c
            .query_one("SELECT to_tsvector('simple', '번역을 했다') @@ to_tsquery('simple', '번역')", &[])
            .unwrap()
            .get(0);
        assert!(!simple);
        // websearch syntax: a phrase, OR, a negation.
        for (query, want) in
            [("\"헌법 재판소\"", true), ("헌법 -재판소", false), ("대통령 or 재판소", true), ("대통령", false)]
        {
            let got: bool = c
                .query_one(
                    // (spaced as the query is: the tokenizer cuts 재판소 inside the
                    // compound 헌법재판소 as 재+판+소, alone as 재판+소)
                    "SELECT to_tsvector('koe5', '헌법 재판소의 권한') @@ websearch_to_tsquery('koe5', $1)",
                    &[&query],
                )
                .unwrap()
                .get(0);
            assert_eq!(got, want, "{query}");
        }
        // Headlines rebuild the text from the pieces and mark the matching ones.
        assert_eq!(
            one(&mut c, "SELECT ts_headline('koe5', '국회는 번역을 했다.', to_tsquery('koe5', '번역'))"),
            "국회는 <b>번역</b>을 했다."
        );
        let rank: f32 = c
            .query_one("SELECT ts_rank(to_tsvector('koe5', '헌법 헌법 법률'), to_tsquery('koe5', '헌법'))", &[])
            .unwrap()
            .get(0);
        assert!(rank > 0.0);
        // The content dictionary drops particles and endings.
        assert_eq!(
            one(
                &mut c,
                "SELECT array_to_string(ts_lexize('koe5_content', '을') || ts_lexize('koe5_content', '헌법'), ',')"
            ),
            "헌법"
        );
        let r = sqlstate_of(c.batch_execute("CREATE TEXT SEARCH DICTIONARY bad (TEMPLATE = koe5, particles = maybe)"));
        assert_eq!(r, "22023: invalid value for koe5 dictionary option \"particles\": \"maybe\"");
        let r = sqlstate_of(c.batch_execute("CREATE TEXT SEARCH DICTIONARY bad (TEMPLATE = koe5, stopwords = x)"));
        assert_eq!(r, "22023: unrecognized koe5 dictionary parameter: \"stopwords\"");
    }

    #[test]
    fn koe5_text_search_needs_no_model_and_uses_a_gin_index() {
        let mut c = fresh_database("koe5_ts_gin", "UTF8");
        // The configuration does not depend on the session's model: none at all here.
        c.batch_execute("SET koe5.model_path = '/nonexistent'").unwrap();
        c.batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, body text);
             INSERT INTO docs SELECT g, '제' || g || '조 국민의 권리와 의무를 ' || (g % 7) || '번 정한다' FROM generate_series(1, 2000) g;
             INSERT INTO docs VALUES (5000, '헌법재판소는 법률의 위헌 여부를 심판한다');
             CREATE INDEX docs_ts ON docs USING gin (to_tsvector('koe5', body));
             ANALYZE docs;",
        )
        .unwrap();
        let plan = explain_via(
            &mut c,
            "EXPLAIN (COSTS OFF) SELECT id FROM docs WHERE to_tsvector('koe5', body) @@ websearch_to_tsquery('koe5', '헌법재판소')",
        );
        assert!(plan.contains("Bitmap Index Scan on docs_ts"), "{plan}");
        let ids: Vec<i32> = c
            .query(
                "SELECT id FROM docs WHERE to_tsvector('koe5', body) @@ websearch_to_tsquery('koe5', '헌법재판소')",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids, vec![5000]);
        // Long and unspaced texts are cut whole, however long.
        let n: i32 =
            c.query_one("SELECT length(to_tsvector('koe5', repeat('대한민국헌법', 20000)))", &[]).unwrap().get(0);
        assert!(n >= 1, "{n}");
        let words: i32 = c
            .query_one("SELECT length(to_tsvector('koe5', repeat('국민 ', 100000) || '마지막단어'))", &[])
            .unwrap()
            .get(0);
        assert!(words >= 2, "the word after 100,000 others is indexed too: {words}");
    }

    #[test]
    fn koe5_text_search_gives_the_same_lexemes_in_euc_kr() {
        let texts = ["헌법재판소의 권한과 국회의 의무", "KoE5 모델로 번역을 했다 (제63조제2항제4호)", "ＡＢＣ 한글"];
        let mut utf8 = fresh_database("koe5_ts_utf8", "UTF8");
        let mut euc = fresh_database("koe5_ts_euckr", "EUC_KR");
        for t in texts {
            let a: String = utf8.query_one("SELECT to_tsvector('koe5', $1)::text", &[&t]).unwrap().get(0);
            let b: String = euc.query_one("SELECT to_tsvector('koe5', $1)::text", &[&t]).unwrap().get(0);
            assert_eq!(a, b, "{t}");
            // HighlightAll: the whole text, not the fragment PostgreSQL picks by default
            // (the default options are checked in UTF-8 above).
            let h: String = euc
                .query_one(
                    "SELECT ts_headline('koe5', $1, to_tsquery('koe5', '한글 | 국회 | 번역'), 'HighlightAll=true')",
                    &[&t],
                )
                .unwrap()
                .get(0);
            assert_eq!(h.replace("<b>", "").replace("</b>", ""), t, "the headline rebuilds the text in EUC_KR");
        }
    }
}

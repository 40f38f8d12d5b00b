-- The SQL functions as a user calls them: vectors, counts, NULLs, arrays, similarity,
-- chunks, and their errors.
-- CONTEXT lines name line numbers of koe5's PL/pgSQL, which move with every edit of
-- sql/: left out.
\set SHOW_CONTEXT never
SELECT cardinality(koe5_query('대한민국 헌법')) AS dims, head(koe5_query('대한민국 헌법')) AS query,
       head(koe5_passage('대한민국 헌법')) AS passage;
-- A query and a passage of the same text differ: the "query: " / "passage: " prefixes.
SELECT round(koe5_similarity(koe5_query('대한민국 헌법'), koe5_passage('대한민국 헌법'))::numeric, 4) AS query_vs_passage;
SELECT koe5_token_count('대한민국은 민주공화국이다.') AS tokens, koe5_token_count('') AS empty,
       koe5_token_count(repeat('헌법 ', 2000)) AS truncated;
-- Empty and whitespace-only text give the same vector.
SELECT koe5_passage('') = koe5_passage(E' \t\n ') AS same;
-- NULL in, NULL out.
SELECT koe5_query(NULL::text) IS NULL AS query, koe5_passage(NULL::text) IS NULL AS passage,
       koe5_token_count(NULL) IS NULL AS count, koe5_similarity(NULL, '{1}') IS NULL AS similarity;
-- The batch forms: one row per element, in order, NULL for NULL.
SELECT n, head(e, 2) FROM koe5_passage(ARRAY['가', NULL, '나다']) WITH ORDINALITY AS t(e, n) ORDER BY n;
SELECT bool_and(e = koe5_query(t)) AS batch_equals_single
FROM unnest(ARRAY['대통령', '국회', '법원']) WITH ORDINALITY AS a(t, n)
JOIN koe5_query(ARRAY['대통령', '국회', '법원']) WITH ORDINALITY AS b(e, m) ON n = m;
SELECT count(*) FROM koe5_passage('{}'::text[]);
SELECT count(*) FROM koe5_passage(NULL::text[]);
SELECT count(*) FROM koe5_passage(ARRAY[['가', '나'], ['다', '라']]);
-- koe5_similarity
SELECT koe5_similarity('{1,2,3}', '{2,4,6}') AS parallel, koe5_similarity('{1,0}', '{0,1}') AS orthogonal;
SELECT koe5_similarity('{1,2,3}', '{1,2}');
SELECT koe5_similarity('{1,NULL}', '{1,2}');
SELECT koe5_similarity('{{1,2},{3,4}}', '{1,2,3,4}');
SELECT koe5_similarity('{0,0}', '{1,2}');
SELECT koe5_similarity('{}', '{}');
SELECT koe5_similarity('{NaN,1}', '{1,2}');
SELECT koe5_similarity('{Infinity,1}', '{1,2}');
-- koe5_chunks
SELECT ord, n_tokens, chunk
FROM koe5_chunks('대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다. '
                 '대한민국의 국민이 되는 요건은 법률로 정한다.', 16);
SELECT count(*) FROM koe5_chunks('  ');
SELECT * FROM koe5_chunks('헌법', 3);
SELECT * FROM koe5_chunks('헌법', 64, 40);
SELECT * FROM koe5_chunks('헌법', -1);

-- Hybrid search with pgvector: koe5_hybrid_search() over an HNSW and a GIN index, the
-- query modes, the plan, and the same fusion written by hand (README, Hybrid search).
-- Scores from the fixture's random weights. PostgreSQL 18 here has pgvector; Debian's
-- 15 has none, so this file is for PostgreSQL 18 only, like vector.sql.
\set SHOW_CONTEXT never
CREATE EXTENSION vector;
-- (a configuration of the user's, so that the lexical side is easy to follow here;
-- the default is koe5's Korean one)
CREATE TEXT SEARCH CONFIGURATION regress_ko (COPY = simple);
CREATE TABLE docs (id int PRIMARY KEY, title text, body text NOT NULL, emb vector(32));
CREATE TRIGGER embed BEFORE INSERT OR UPDATE ON docs
    FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'emb');
INSERT INTO docs (id, title, body) VALUES
    (1, '제1조', '대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다.'),
    (2, '제11조', '모든 국민은 법 앞에 평등하다.'),
    (3, '제40조', '입법권은 국회에 속한다.'),
    (4, '제42조', '국회의원의 임기는 4년으로 한다.'),
    (5, '제70조', '대통령의 임기는 5년으로 하며, 중임할 수 없다.'),
    (6, '제101조', '사법권은 법관으로 구성된 법원에 속한다.'),
    (7, '제111조', '헌법재판소는 법률의 위헌여부 심판, 탄핵의 심판, 정당의 해산 심판을 관장한다.'),
    (8, '제112조', '헌법재판소 재판관의 임기는 6년으로 하며, 법률이 정하는 바에 의하여 연임할 수 있다.');
CREATE INDEX docs_emb_idx ON docs USING hnsw (emb vector_cosine_ops);
CREATE INDEX docs_body_idx ON docs USING gin (to_tsvector('regress_ko', body));

-- The best five rows, with their fused score and both ranks (NULL: not on that side;
-- rows that tie on a side share its rank).
SELECT (h.doc).title, round(h.score::numeric, 5) AS score, h.dense_rank, h.lexical_rank
FROM koe5_hybrid_search(NULL::docs, '대통령의 임기는 몇 년인가', 'emb', 'body', k => 5, config => 'regress_ko') AS h;
-- Words only (the simple configuration keeps particles: '임기는' is not '임기'); h.doc
-- is the whole row.
SELECT (h.doc).title, (h.doc).body, h.dense_rank, h.lexical_rank
FROM koe5_hybrid_search(NULL::docs, '헌법재판소 임기', 'emb', 'body', k => 2,
                        dense_weight => 0, config => 'regress_ko') AS h;

-- The lexical side's query: any of the words by default, all of them, or web syntax.
SELECT koe5_tsquery('regress_ko', '대통령의 임기는 몇 년인가') AS "or",
       koe5_tsquery('regress_ko', '대통령의 임기는 몇 년인가', 'plain') AS plain,
       koe5_tsquery('regress_ko', '"재판관의 임기" -대통령', 'websearch') AS websearch;
SELECT count(lexical_rank) AS lexical_hits
FROM koe5_hybrid_search(NULL::docs, '대통령의 임기는 몇 년인가', 'emb', 'body', mode => 'plain', config => 'regress_ko');

-- The statement it runs, planned: HNSW for the dense side, GIN for the lexical one.
SET enable_seqscan = off;
SET plan_cache_mode = force_generic_plan;
SELECT statement FROM koe5__hybrid_sql('docs', '헌법재판소 임기', 'emb', 'body', 5, 50, 60, 1, 1, 'regress_ko', 'or') \gset
PREPARE search(real[]) AS :statement;
EXPLAIN (COSTS OFF) EXECUTE search(koe5_query('헌법재판소 임기'));
DEALLOCATE search;
RESET plan_cache_mode;
RESET enable_seqscan;

-- The same fusion written by hand (the README's recipe), with the function's defaults
-- (rrf_k 2, lexical weight 0.75) and the same order.
WITH q AS (SELECT koe5_query('헌법재판소 임기')::vector AS v,
                  koe5_tsquery('regress_ko', '헌법재판소 임기') AS ts),
dense AS (
    SELECT id, rank() OVER (ORDER BY distance) AS r
    FROM (SELECT id, emb <=> (SELECT v FROM q) AS distance FROM docs
          ORDER BY emb <=> (SELECT v FROM q) LIMIT 50) AS s),
lexical AS (
    SELECT id, rank() OVER (ORDER BY score DESC) AS r
    FROM (SELECT id, ts_rank(to_tsvector('regress_ko', body), (SELECT ts FROM q), 1) AS score FROM docs
          WHERE to_tsvector('regress_ko', body) @@ (SELECT ts FROM q)
          ORDER BY score DESC LIMIT 50) AS s)
SELECT id, round((coalesce(1.0 / (2 + dense.r), 0) + coalesce(0.75 / (2 + lexical.r), 0))::numeric, 5) AS score,
       dense.r AS dense_rank, lexical.r AS lexical_rank
FROM dense FULL JOIN lexical USING (id)
ORDER BY score DESC, least(dense.r, lexical.r), dense.r NULLS LAST, lexical.r NULLS LAST, id
LIMIT 5;
SELECT (h.doc).id, round(h.score::numeric, 5) AS score, h.dense_rank, h.lexical_rank
FROM koe5_hybrid_search(NULL::docs, '헌법재판소 임기', 'emb', 'body', k => 5, config => 'regress_ko') AS h;

-- Mistakes.
SELECT * FROM koe5_hybrid_search(NULL::docs, '임기', 'emb', 'title', mode => 'and');
SELECT * FROM koe5_hybrid_search(NULL::docs, '임기', 'body', 'title');
SELECT * FROM koe5_hybrid_search(NULL::docs, '임기', 'emb', 'title', k => 0);
SELECT * FROM koe5_hybrid_search(NULL::text, '임기', 'emb', 'title');
DROP TABLE docs;
DROP TEXT SEARCH CONFIGURATION regress_ko;
DROP EXTENSION vector;

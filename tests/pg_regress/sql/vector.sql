-- With pgvector: the koe5_vector companion and an HNSW index ordered by cosine distance
-- (scores from the fixture's random weights). PostgreSQL 18 here has pgvector; Debian's
-- 15 has none, so tests/pg_regress/run.sh skips this file there.
-- CONTEXT lines name line numbers of koe5's PL/pgSQL, which move with every edit of
-- sql/: left out.
\set SHOW_CONTEXT never
CREATE EXTENSION koe5_vector CASCADE;
SELECT pg_typeof(koe5_query_vector('헌법')) AS query, pg_typeof(koe5_passage_halfvec('헌법')) AS passage;
SELECT koe5_query_vector('헌법') = koe5_query('헌법')::vector AS same;
CREATE TABLE articles (id int PRIMARY KEY, body text NOT NULL,
                       emb vector(32) GENERATED ALWAYS AS (koe5_passage_vector(body)) STORED);
INSERT INTO articles VALUES
    (1, '대한민국은 민주공화국이다.'),
    (2, '모든 국민은 법 앞에 평등하다.'),
    (3, '국회는 법률을 제정한다.'),
    (4, '대통령의 임기는 5년으로 한다.'),
    (5, '법관은 헌법과 법률에 의하여 그 양심에 따라 독립하여 심판한다.');
CREATE INDEX ON articles USING hnsw (emb vector_cosine_ops);
SET enable_seqscan = off;
-- (the query embedding in a subquery: a constant would print all 32 floats in the plan)
EXPLAIN (COSTS OFF) SELECT id FROM articles ORDER BY emb <=> (SELECT koe5_query_vector('대통령 임기')) LIMIT 3;
SELECT id, round((1 - (emb <=> koe5_query_vector('대통령 임기')))::numeric, 4) AS score
FROM articles ORDER BY emb <=> koe5_query_vector('대통령 임기') LIMIT 3;
RESET enable_seqscan;
-- A vector column of the wrong size is pgvector's error.
CREATE TABLE small (body text, v vector(3));
CREATE TRIGGER v BEFORE INSERT ON small FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'v');
INSERT INTO small VALUES ('헌법');
DROP TABLE articles, small;
DROP EXTENSION koe5_vector;

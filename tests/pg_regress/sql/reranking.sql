-- Reranking as a user sees it (README, Reranking): one pair's score, many passages in
-- input order, the one-call hybrid search + rerank, what the reranker reports, and the
-- mistakes. Scores from the fixture's random cross-encoder (sigmoid of its logit).
-- real[] embeddings, so this runs on every PostgreSQL koe5 is built for.
\set SHOW_CONTEXT never
\getenv fixtures KOE5_TEST_FIXTURES
\set reranker :fixtures/tiny-xlmr-rerank
\set embedder :fixtures/tiny-xlmr
SET koe5.reranker_path = :'reranker';

SELECT round(koe5_rerank_score('대통령의 임기는?', '대통령의 임기는 5년으로 하며, 중임할 수 없다.')::numeric, 4) AS score;
-- One row per passage, in input order; NULL in, NULL out.
SELECT r.n, round(r.score::numeric, 4) AS score
FROM koe5_rerank('대통령의 임기는?',
                 ARRAY['대통령의 임기는 5년으로 하며, 중임할 수 없다.', NULL, '입법권은 국회에 속한다.', ''])
     WITH ORDINALITY AS r(score, n);
SELECT koe5_reranker_info()->>'activation' AS activation, koe5_reranker_info()->>'max_tokens' AS max_tokens,
       koe5_reranker_info()->>'loaded' AS loaded;

CREATE TEXT SEARCH CONFIGURATION regress_rr (COPY = simple);
CREATE TABLE rerank_docs (id int PRIMARY KEY, title text, body text NOT NULL,
                       emb real[] GENERATED ALWAYS AS (koe5_passage(body)) STORED);
INSERT INTO rerank_docs (id, title, body) VALUES
    (1, '제1조', '대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다.'),
    (2, '제11조', '모든 국민은 법 앞에 평등하다.'),
    (3, '제40조', '입법권은 국회에 속한다.'),
    (4, '제42조', '국회의원의 임기는 4년으로 한다.'),
    (5, '제70조', '대통령의 임기는 5년으로 하며, 중임할 수 없다.'),
    (6, '제101조', '사법권은 법관으로 구성된 법원에 속한다.'),
    (7, '제111조', '헌법재판소는 법률의 위헌여부 심판, 탄핵의 심판, 정당의 해산 심판을 관장한다.'),
    (8, '제112조', '헌법재판소 재판관의 임기는 6년으로 하며, 법률이 정하는 바에 의하여 연임할 수 있다.');

-- Hybrid search's best 6, reranked, the best 3: the cross-encoder's score and where
-- each row stood before.
SELECT (r.doc).title, round(r.score::numeric, 4) AS score, r.hybrid_rank, r.dense_rank, r.lexical_rank
FROM koe5_hybrid_rerank(NULL::rerank_docs, '대통령의 임기는 몇 년인가', 'emb', 'body', k => 3, candidates => 6,
                        config => 'regress_rr') AS r;
-- The same rows by hand: hybrid search, then koe5_rerank over its list.
WITH fused AS (
    SELECT h.doc, h.n AS hybrid_rank
    FROM koe5_hybrid_search(NULL::rerank_docs, '대통령의 임기는 몇 년인가', 'emb', 'body', k => 6, candidates => 6,
                            config => 'regress_rr') WITH ORDINALITY AS h(doc, score, dense_rank, lexical_rank, n)
), scored AS (
    SELECT s.score, s.n
    FROM koe5_rerank('대통령의 임기는 몇 년인가', ARRAY(SELECT (f.doc).body FROM fused f ORDER BY f.hybrid_rank))
         WITH ORDINALITY AS s(score, n)
)
SELECT (f.doc).title, round(s.score::numeric, 4) AS score, f.hybrid_rank
FROM fused f JOIN scored s ON s.n = f.hybrid_rank
ORDER BY s.score DESC, f.hybrid_rank LIMIT 3;

-- Mistakes.
SELECT * FROM koe5_hybrid_rerank(NULL::rerank_docs, 'q', 'emb', 'body', k => 0);
SELECT * FROM koe5_hybrid_rerank(NULL::rerank_docs, 'q', 'emb', 'body', passage_column => 'summary');
SELECT * FROM koe5_hybrid_rerank(NULL::rerank_docs, 'q', 'emb', 'id');
SELECT koe5_rerank('q', ARRAY[['a', 'b'], ['c', 'd']]);
SELECT koe5_download('weights');
-- An embedding model is not a cross-encoder (its path printed as FIXTURES).
SET koe5.reranker_path = :'embedder';
DO $$ BEGIN
    PERFORM koe5_rerank_score('q', 'p');
EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION '%', replace(SQLERRM, current_setting('koe5.reranker_path'), 'FIXTURES/tiny-xlmr')
        USING ERRCODE = SQLSTATE;
END $$;
-- No path, and an id not in the cache (terse: the detail names this server's cache).
RESET koe5.reranker_path;
SET koe5.reranker_id = 'nobody/no-such-reranker';
\set VERBOSITY terse
SELECT koe5_rerank_score('q', 'p');

-- Retrieval quality of the vectors stored in a table, as koe5's demo and tests measure
-- it: recall@1, recall@5 and MRR@10 of the questions in "questions" (id, question,
-- articles int[] = the ids that answer it) over every row of "articles" (id, emb: a
-- koe5_passage vector, as real[] or pgvector's vector). Each question is embedded with
-- koe5_query; every article is scored exactly (no index), ties broken by id.
WITH q AS (
    SELECT id, articles, koe5_query(question) AS v FROM questions
), ranked AS (
    SELECT q.id AS qid, a.id = ANY (q.articles) AS relevant,
           row_number() OVER (PARTITION BY q.id ORDER BY koe5_similarity(a.emb::real[], q.v) DESC, a.id) AS r
    FROM q CROSS JOIN articles a
), first_hit AS (
    SELECT qid, min(r) FILTER (WHERE relevant) AS r FROM ranked GROUP BY qid
)
SELECT round(avg((coalesce(r, 1e9) <= 1)::int), 4)  AS "recall@1",
       round(avg((coalesce(r, 1e9) <= 5)::int), 4)  AS "recall@5",
       round(avg(CASE WHEN r <= 10 THEN 1.0 / r ELSE 0 END), 4) AS "MRR@10",
       count(*) AS questions
FROM first_hit;

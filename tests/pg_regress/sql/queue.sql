-- Embedding outside the writer's transaction: the queue and koe5_backfill.
-- CONTEXT lines name line numbers of koe5's PL/pgSQL, which move with every edit of
-- sql/: left out.
\set SHOW_CONTEXT never
CREATE TABLE docs (id int PRIMARY KEY, body text, emb real[]);
INSERT INTO docs SELECT g, '제' || g || '조' FROM generate_series(1, 5) g;
INSERT INTO docs VALUES (6, NULL);
-- The rows already there: koe5_backfill, in batches that commit as they go.
CALL koe5_backfill('docs', 'body', 'emb', batch_size => 2);
SELECT state, rows_done, rows_total FROM koe5_backfill_progress ORDER BY run_id DESC LIMIT 1;
SELECT count(*) FILTER (WHERE emb = koe5_passage(body)) AS embedded, count(*) FILTER (WHERE emb IS NULL) AS null_text
FROM docs;
-- New and changed rows: the queue (the background worker, or koe5_process_queue here).
SELECT koe5_enqueue_table('docs', 'body', 'emb');
INSERT INTO docs VALUES (7, '제7조'), (8, NULL);
UPDATE docs SET body = '제1조 대한민국은 민주공화국이다.' WHERE id = 1;
SELECT table_name, pending, done, failed FROM koe5_queue_status;
SELECT koe5_process_queue();
SELECT table_name, pending, done, failed FROM koe5_queue_status;
SELECT id, emb = koe5_passage(body) AS embedded FROM docs ORDER BY id;
SELECT koe5_dequeue_table('docs');
SELECT count(*) FROM koe5_queue_status;
-- What they refuse.
CREATE TABLE nopk (body text, emb real[]);
CREATE TABLE parted (id int PRIMARY KEY, body text, emb real[]) PARTITION BY RANGE (id);
CREATE TEMP TABLE temp_q (id int PRIMARY KEY, body text, emb real[]);
CREATE VIEW nopk_view AS SELECT * FROM nopk;
SELECT koe5_enqueue_table('nopk', 'body', 'emb');
SELECT koe5_enqueue_table('parted', 'body', 'emb');
SELECT koe5_enqueue_table('temp_q', 'body', 'emb');
SELECT koe5_enqueue_table('nopk', 'body', 'emb', 'doc');
SELECT koe5_process_queue_table('nopk');
SELECT koe5_process_queue_table('nopk', 0);
CALL koe5_backfill('nopk_view', 'body', 'emb');
CALL koe5_backfill('docs', 'body', 'nope');
CALL koe5_backfill('docs', 'body', 'emb', 'doc');
CALL koe5_backfill('docs', 'body', 'emb', batch_size => 0);
DROP VIEW nopk_view;
DROP TABLE docs, nopk, parted, temp_q;

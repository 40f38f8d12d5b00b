-- koe5: monitoring. This backend's counters (the queue's and the backfill's views are
-- in queue.sql and backfill.sql).

CREATE FUNCTION koe5_backend_stats(OUT texts_embedded bigint, OUT query_cache_hits bigint,
                                   OUT query_cache_entries integer)
    RETURNS SETOF record
    VOLATILE PARALLEL RESTRICTED ROWS 1
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_backend_stats_wrapper';
COMMENT ON FUNCTION koe5_backend_stats() IS
    'This backend''s counters: texts embedded, query-cache hits, queries in the cache';

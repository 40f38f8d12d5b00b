-- koe5 0.6.0: reranking as a pipeline.
--   koe5_download('reranker'): fetches koe5.reranker_id's cross-encoder into the
--     server's Hugging Face cache (koe5_download() and koe5_download('model') fetch the
--     embedding model, as before).
--   koe5_hybrid_rerank(NULL::table, query, vector_column, text_column, k, candidates,
--     ...): hybrid search, its best candidates reranked by the cross-encoder, the best
--     k returned, in one call.
--   Citus: koe5_backfill() of a distributed table runs shard by shard on the workers
--     (after checking that they embed as the session does), refuses reference and
--     Citus local tables; koe5_enqueue_table() refuses Citus tables;
--     koe5_cluster_models() shows each node's model and cross-encoder.
--   (Not SQL: with koe5.preload the postmaster also loads the cross-encoder.)
-- The same statements as sql/surface/model.sql, hybrid.sql and citus.sql, and
-- koe5_backfill and koe5_enqueue_table as sql/surface/backfill.sql and queue.sql
-- define them now.

\echo Use "ALTER EXTENSION koe5 UPDATE TO '0.6.0'" to load this file. \quit

CREATE FUNCTION koe5_download(which text) RETURNS text
    VOLATILE STRICT PARALLEL UNSAFE
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_download_which_wrapper';
COMMENT ON FUNCTION koe5_download(text) IS
    'Downloads koe5.model_id (''model'') or the cross-encoder koe5.reranker_id (''reranker'') from the Hugging Face Hub into the server''s Hugging Face cache (superusers, and roles granted EXECUTE); returns the snapshot directory';
REVOKE ALL ON FUNCTION koe5_download(text) FROM PUBLIC;

-- The whole pipeline in one call: the best `candidates` rows of koe5_hybrid_search()
-- (each side keeping `candidates` too), reranked by the cross-encoder
-- (koe5_rerank(query, passages), koe5.reranker_path) over passage_column (text_column
-- when NULL), the best k returned by its score; ties, and rows whose passage is NULL
-- (no score, last), keep their hybrid order. Dense-only or lexical-only candidates:
-- lexical_weight => 0 or dense_weight => 0.
CREATE FUNCTION koe5_hybrid_rerank(
    rel anyelement, query text, vector_column text, text_column text,
    k integer DEFAULT 5, candidates integer DEFAULT 50, passage_column text DEFAULT NULL,
    rrf_k integer DEFAULT 2, dense_weight float8 DEFAULT 1.0, lexical_weight float8 DEFAULT 0.75,
    config regconfig DEFAULT 'koe5', mode text DEFAULT 'or')
    RETURNS TABLE (doc anyelement, score real, hybrid_rank integer, dense_rank integer, lexical_rank integer)
    VOLATILE ROWS 5
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel_type regtype := pg_typeof(rel);
    relid oid := (SELECT t.typrelid FROM pg_type t WHERE t.oid = rel_type);
    passage text := coalesce(passage_column, text_column);
    passage_oid oid;
BEGIN
    IF relid IS NULL OR relid = 0 THEN
        RAISE EXCEPTION 'type % is not the row type of a table', rel_type
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Name the table by a null of its row type: koe5_hybrid_rerank(NULL::docs, ...).';
    END IF;
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'k must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF candidates IS NULL OR candidates < 1 THEN
        RAISE EXCEPTION 'candidates must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF passage IS NULL OR vector_column IS NULL THEN
        RAISE EXCEPTION 'vector and text columns must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT a.atttypid INTO passage_oid FROM pg_attribute a
        WHERE a.attrelid = relid AND a.attname = passage AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation "%" does not exist', passage, @extschema@.koe5__relname(relid)
            USING ERRCODE = 'undefined_column';
    END IF;
    IF passage_oid NOT IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype) THEN
        RAISE EXCEPTION 'column "%" of relation "%" is of type %', passage, @extschema@.koe5__relname(relid),
                        format_type(passage_oid, NULL)
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'The cross-encoder reads text: name a text column with passage_column.';
    END IF;
    -- koe5_hybrid_search checks the rest (and returns nothing for a NULL query).
    RETURN QUERY EXECUTE format(
$sql$WITH fused AS MATERIALIZED (
    SELECT h.doc, h.n::integer AS hybrid_rank, h.dense_rank, h.lexical_rank, (h.doc).%1$I::text AS passage
    FROM %2$s.koe5_hybrid_search($1, $2, $3, $4, k => $5, candidates => $5, rrf_k => $6, dense_weight => $7,
                                 lexical_weight => $8, config => $9, mode => $10)
         WITH ORDINALITY AS h(doc, score, dense_rank, lexical_rank, n)
), scored AS (
    SELECT s.score, s.n::integer AS n
    FROM %2$s.koe5_rerank($2, ARRAY(SELECT f.passage FROM fused AS f ORDER BY f.hybrid_rank))
         WITH ORDINALITY AS s(score, n)
)
SELECT f.doc, s.score, f.hybrid_rank, f.dense_rank, f.lexical_rank
FROM fused AS f JOIN scored AS s ON s.n = f.hybrid_rank
ORDER BY s.score DESC NULLS LAST, f.hybrid_rank
LIMIT $11$sql$, passage, '@extschema@')
    USING rel, query, vector_column, text_column, candidates, rrf_k, dense_weight, lexical_weight, config, mode, k;
END
$$;
COMMENT ON FUNCTION koe5_hybrid_rerank(anyelement, text, text, text, integer, integer, text, integer, float8, float8, regconfig, text) IS
    'Hybrid search then reranking in one call: the best candidates rows of koe5_hybrid_search(), scored by the cross-encoder (koe5_rerank) on passage_column (text_column when NULL); the best k by that score, with their hybrid, dense and lexical ranks';

-- koe5: scale-out with Citus. koe5 does not depend on Citus: what is here reads Citus's
-- catalogs and calls its functions by name at run time, and only where Citus is
-- installed.
--
-- koe5_backfill() on a distributed table runs shard by shard on the workers (the
-- coordinator cannot lock a distributed table's rows for update, which a backfill batch
-- needs); koe5_enqueue_table() refuses Citus tables; koe5_cluster_models() shows each
-- node's model and cross-encoder, so that a cluster where nodes would embed differently
-- is found before it stores mixed vectors.

-- 'distributed' (hash, range, append, or a schema's single-shard table), 'reference',
-- 'local' (a Citus local table on the coordinator), or NULL: not a Citus table, or no
-- Citus in this database. Citus's own classification (its view citus_tables).
CREATE FUNCTION koe5__citus_table_type(tbl regclass) RETURNS text
    STABLE PARALLEL SAFE
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind text;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT CASE WHEN p.partkey IS NOT NULL THEN ''distributed''
                         WHEN p.repmodel = ''t'' THEN ''reference''
                         WHEN p.colocationid = 0 THEN ''local''
                         ELSE ''distributed'' END
             FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = $1'
        INTO kind USING tbl;
    RETURN kind;
END
$$;

-- Raises unless Citus's functions are here (what runs on other nodes needs them).
CREATE FUNCTION koe5__require_citus() RETURNS void
    STABLE PARALLEL SAFE
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regproc('pg_catalog.run_command_on_all_nodes') IS NULL THEN
        RAISE EXCEPTION 'Citus is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'koe5_cluster_models() compares the nodes of a Citus cluster; on one server, koe5_model_info() says it all.';
    END IF;
END
$$;

-- Whether some shard of `tbl` has more than one placement (statement-based
-- replication, citus.shard_replication_factor > 1): a backfill on one placement would
-- leave the others without their embeddings.
CREATE FUNCTION koe5__citus_replicated(tbl regclass) RETURNS boolean
    STABLE PARALLEL SAFE
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    replicated boolean;
BEGIN
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_shard ds
                            JOIN pg_catalog.pg_dist_shard_placement pl ON pl.shardid = ds.shardid
                            WHERE ds.logicalrelid = $1 GROUP BY ds.shardid HAVING count(*) > 1)'
        INTO replicated USING tbl;
    RETURN replicated;
END
$$;

-- What decides the vectors a node computes, out of koe5_model_info(): the weights'
-- SHA-256, the precision, the dimension, pooling, normalisation and the token limit
-- (two models may share weights and differ in pooling). NULLs where unknown.
CREATE FUNCTION koe5__model_identity(info jsonb) RETURNS text[]
    IMMUTABLE PARALLEL SAFE LANGUAGE sql
    RETURN ARRAY[info->>'sha256', info->>'precision', info->>'dimension', info->>'pooling',
                 info->>'normalize', info->>'max_tokens'];

-- A model as koe5_model_info() describes it, in a message: weights, precision,
-- dimension, pooling; or its error, or `missing` when there is no answer at all.
CREATE FUNCTION koe5__model_summary(info jsonb, missing text) RETURNS text
    IMMUTABLE PARALLEL SAFE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    RETURN CASE WHEN info ? 'sha256'
                THEN format('%s at %s, %s dimensions, %s pooling', info->>'sha256', info->>'precision',
                            info->>'dimension', info->>'pooling')
                ELSE coalesce(info->>'error', missing) END;

-- Runs one command on one node of the cluster, over a connection of its own (Citus's
-- master_run_on_worker), and returns whether it succeeded and what it returned (or
-- its error message).
-- (PL/pgSQL: its body is resolved when it runs, so that koe5 installs without Citus.)
CREATE FUNCTION koe5__run_on_node(nodename text, nodeport integer, command text, OUT success boolean, OUT result text)
    VOLATILE
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT r.success, r.result INTO success, result
        FROM pg_catalog.master_run_on_worker(ARRAY[nodename], ARRAY[nodeport], ARRAY[command], false) AS r;
END
$$;

-- Before a distributed backfill: every worker that holds a shard of `tbl` must embed
-- as this session does (koe5__model_identity), or the table would hold vectors that do
-- not compare.
CREATE FUNCTION koe5__check_cluster_models(tbl regclass) RETURNS void
    VOLATILE
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mine jsonb;
    n record;
BEGIN
    PERFORM @extschema@.koe5__require_citus();
    mine := @extschema@.koe5_model_info();
    FOR n IN SELECT c.nodename, c.nodeport, c.reached, c.model
             FROM @extschema@.koe5_cluster_models() AS c
             WHERE EXISTS (SELECT FROM pg_catalog.pg_dist_shard ds
                           JOIN pg_catalog.pg_dist_shard_placement pl ON pl.shardid = ds.shardid
                           WHERE ds.logicalrelid = tbl AND pl.nodename = c.nodename AND pl.nodeport = c.nodeport)
    LOOP
        IF NOT n.reached OR @extschema@.koe5__model_identity(n.model) IS DISTINCT FROM @extschema@.koe5__model_identity(mine) THEN
            RAISE EXCEPTION 'worker %:% does not embed as this session does', n.nodename, n.nodeport
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('This session: %s; the worker: %s.',
                                      @extschema@.koe5__model_summary(mine, 'no model'),
                                      @extschema@.koe5__model_summary(n.model, 'no answer')),
                      HINT = 'A distributed backfill embeds on the workers, with their own settings: set koe5.model_path and koe5.precision alike on every node (ALTER DATABASE ... SET reaches them all), and compare with koe5_cluster_models().';
        END IF;
    END LOOP;
END
$$;

-- The backfill of run `run` over the distributed table `tbl`, one shard at a time:
-- each shard's koe5_backfill() runs on the worker that holds it (its first active
-- placement), over a connection of its own, so with the worker's settings (its
-- postgresql.conf and ALTER DATABASE ... SET; a SET in this session does not travel:
-- koe5_backfill() compares the models first). The coordinator's run counts, after each
-- shard, the rows it embedded and those it left without an embedding, and commits.
-- A shard that fails is reported and the others go on; the run ends 'failed', with
-- the first failure as last_error, and raises.
CREATE PROCEDURE koe5__backfill_shards(run bigint, tbl regclass, source text, target text, kind text,
                                       batch_size integer)
    LANGUAGE plpgsql
AS $$
DECLARE
    s record;
    shards integer := 0;
    shards_failed integer := 0;
    first_error text;
    before bigint;
    after bigint;
    ok boolean;
    result text;
    count_sql text;
    fatal text;
    fatal_state text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    -- (shard_name() leaves tables in public unqualified: qualified here, so that the
    -- worker's search_path does not decide)
    FOR s IN SELECT ds.shardid,
                    CASE WHEN n.nspname = 'public' THEN 'public.' ELSE '' END
                        || pg_catalog.shard_name(ds.logicalrelid, ds.shardid) AS shard,
                    p.nodename, p.nodeport
             FROM pg_catalog.pg_dist_shard ds
             JOIN pg_catalog.pg_class c ON c.oid = ds.logicalrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN LATERAL (SELECT pl.nodename, pl.nodeport FROM pg_catalog.pg_dist_shard_placement pl
                                WHERE pl.shardid = ds.shardid AND pl.shardstate = 1
                                ORDER BY pl.placementid LIMIT 1) AS p ON true
             WHERE ds.logicalrelid = tbl
             ORDER BY ds.shardid
    LOOP
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        fatal := NULL;
        shards := shards + 1;
        IF s.nodename IS NULL THEN
            shards_failed := shards_failed + 1;
            first_error := coalesce(first_error, format('shard %s has no active placement', s.shardid));
            RAISE WARNING 'koe5_backfill: shard % of "%" has no active placement', s.shardid, @extschema@.koe5__relname(tbl);
            CONTINUE;
        END IF;
        BEGIN
            PERFORM pg_try_advisory_xact_lock(@extschema@.koe5__backfill_lock_key(), run::integer);
            count_sql := format('SELECT count(*) FROM %s AS t WHERE t.%I IS NULL AND t.%I IS NOT NULL',
                                s.shard, target, source);
            SELECT r.success, r.result INTO ok, result FROM @extschema@.koe5__run_on_node(s.nodename, s.nodeport, count_sql) AS r;
            before := CASE WHEN ok THEN result::bigint END;
            SELECT r.success, r.result INTO ok, result
                FROM @extschema@.koe5__run_on_node(
                    s.nodename, s.nodeport,
                    format('CALL %s.koe5_backfill(%L, %L, %L, %L, %s)', '@extschema@', s.shard, source, target, kind, batch_size)) AS r;
            IF NOT ok THEN
                shards_failed := shards_failed + 1;
                first_error := coalesce(first_error, format('shard %s on %s:%s: %s', s.shardid, s.nodename, s.nodeport, result));
                RAISE WARNING 'koe5_backfill: shard % of "%" on %:% failed: %',
                    s.shardid, @extschema@.koe5__relname(tbl), s.nodename, s.nodeport, result;
            END IF;
            SELECT r.success, r.result INTO ok, result FROM @extschema@.koe5__run_on_node(s.nodename, s.nodeport, count_sql) AS r;
            after := CASE WHEN ok THEN result::bigint END;
            UPDATE @extschema@.koe5_backfill_runs
                SET rows_done = rows_done + greatest(coalesce(before - after, 0), 0),
                    rows_failed = rows_failed + coalesce(after, 0),
                    updated_at = clock_timestamp(), last_error = coalesce(first_error, last_error)
                WHERE run_id = run;
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            GET STACKED DIAGNOSTICS fatal = MESSAGE_TEXT, fatal_state = RETURNED_SQLSTATE;
        END;
        IF fatal IS NOT NULL THEN
            UPDATE @extschema@.koe5_backfill_runs
                SET state = 'failed', finished_at = clock_timestamp(), updated_at = clock_timestamp(),
                    last_error = fatal
                WHERE run_id = run;
            COMMIT;
            RAISE EXCEPTION USING ERRCODE = fatal_state, MESSAGE = fatal,
                HINT = 'koe5_backfill stopped; the shards embedded before are kept, and a rerun goes on from them.';
        END IF;
        COMMIT;
    END LOOP;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    UPDATE @extschema@.koe5_backfill_runs
        SET state = CASE WHEN shards_failed > 0 THEN 'failed' ELSE 'done' END, finished_at = clock_timestamp()
        WHERE run_id = run;
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF shards_failed > 0 THEN
        RAISE EXCEPTION 'koe5_backfill failed on % of % shards of "%"', shards_failed, shards, @extschema@.koe5__relname(tbl)
            USING ERRCODE = 'system_error', DETAIL = first_error,
                  HINT = 'The other shards'' rows are embedded; a rerun goes on from them. Each worker keeps its shards'' runs in its own koe5_backfill_progress.';
    END IF;
    RAISE NOTICE 'koe5_backfill: % shards of "%" done on their workers', shards, @extschema@.koe5__relname(tbl);
END
$$;
COMMENT ON PROCEDURE koe5__backfill_shards(bigint, regclass, text, text, text, integer) IS
    'Internal: koe5_backfill() of a Citus distributed table, shard by shard on its workers';

-- What each node of the Citus cluster would embed and rerank with: koe5_model_info()
-- and koe5_reranker_info() as a new session of that node sees them (its postgresql.conf
-- and ALTER DATABASE settings, not this session's SET), and whether they equal this
-- node's (koe5__model_identity: weights SHA-256, precision, dimension, pooling,
-- normalisation, token limit; for the cross-encoder, SHA-256 and precision); NULL where
-- either side has none or did not answer.
CREATE FUNCTION koe5_cluster_models()
    RETURNS TABLE (nodeid integer, nodename text, nodeport integer, reached boolean,
                   model jsonb, reranker jsonb, same_model boolean, same_reranker boolean)
    VOLATILE
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me integer;
BEGIN
    PERFORM @extschema@.koe5__require_citus();
    -- This node is in the list too (as node 0 when it is not in the metadata), seen by a
    -- new session as the others are: settings are compared with settings.
    EXECUTE 'SELECT coalesce((SELECT d.nodeid FROM pg_catalog.pg_dist_node d
                              WHERE d.groupid = (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g)
                                AND d.noderole = ''primary'' AND d.isactive
                                AND d.nodecluster = pg_catalog.current_setting(''citus.cluster_name'')
                              ORDER BY d.nodeid LIMIT 1), 0)'
        INTO me;
    RETURN QUERY EXECUTE format(
$sql$WITH nodes AS (
    SELECT r.nodeid, r.success, r.result, CASE WHEN r.success THEN r.result::jsonb END AS info
    FROM pg_catalog.run_command_on_all_nodes(%1$L) AS r
), mine AS (
    SELECT n.info FROM nodes AS n WHERE n.nodeid = $1
)
SELECT n.nodeid,
       coalesce(d.nodename::text, pg_catalog.current_setting('citus.local_hostname')),
       coalesce(d.nodeport, pg_catalog.current_setting('port')::integer),
       n.success,
       CASE WHEN n.success THEN n.info->'model' ELSE pg_catalog.jsonb_build_object('error', n.result) END,
       n.info->'reranker',
       -- NULL where either side is unknown (no answer, or no model there)
       CASE WHEN n.info->'model' ? 'sha256' AND m.info->'model' ? 'sha256' THEN
           %2$s.koe5__model_identity(n.info->'model') IS NOT DISTINCT FROM %2$s.koe5__model_identity(m.info->'model')
       END,
       CASE WHEN n.info->'reranker' ? 'sha256' AND m.info->'reranker' ? 'sha256' THEN
           (n.info->'reranker'->>'sha256', n.info->'reranker'->>'precision')
               IS NOT DISTINCT FROM (m.info->'reranker'->>'sha256', m.info->'reranker'->>'precision')
       END
FROM nodes AS n
LEFT JOIN pg_catalog.pg_dist_node AS d ON d.nodeid = n.nodeid
LEFT JOIN mine AS m ON true
ORDER BY n.nodeid$sql$,
        format('SELECT pg_catalog.jsonb_build_object(''model'', %1$s.koe5_model_info(), ''reranker'', %1$s.koe5_reranker_info())::text',
               '@extschema@'),
        '@extschema@')
        USING me;
END
$$;
COMMENT ON FUNCTION koe5_cluster_models() IS
    'Citus: each node''s embedding model and cross-encoder as its new sessions see them (koe5_model_info(), koe5_reranker_info()), and whether they equal this node''s';

-- koe5_backfill: Citus tables (sql/surface/backfill.sql).
CREATE OR REPLACE PROCEDURE koe5_backfill(tbl regclass, source text, target text, kind text DEFAULT 'passage',
                               batch_size integer DEFAULT 64)
    LANGUAGE plpgsql
AS $$
DECLARE
    run bigint;
    total bigint;
    done bigint := 0;
    failed bigint := 0;
    streak integer := 0;       -- rows failed in a row, with no success between
    n bigint;
    ok bigint;
    skip tid[] := '{}';
    parts regclass[];
    part regclass;
    nblocks bigint;
    blk bigint;
    step bigint;
    final boolean;
    range_sql text;
    lock_sql text;
    pending_sql text;
    err text;
    err_state text;
    err_detail text;
    fatal text;                -- an error no row caused: it ends the run
    fatal_state text;
    fatal_detail text;
    fatal_hint text;
    max_streak CONSTANT integer := 32;
    -- (qualified: DECLARE runs before search_path is pinned)
    stopped_hint CONSTANT text := pg_catalog.format('koe5_backfill stopped after %s rows in a row failed; the rows embedded before are kept.', max_streak);
    citus text;
    started timestamptz := pg_catalog.clock_timestamp();
    last_notice timestamptz := started;
    r record;
BEGIN
    -- A procedure that commits cannot pin search_path with a SET clause: it pins it in
    -- each of its transactions instead (set_config(..., true) lasts until COMMIT).
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM @extschema@.koe5__check_kind(kind);
    PERFORM @extschema@.koe5__check_columns(tbl, source, target);
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = tbl) NOT IN ('r', 'p', 'm') THEN
        RAISE EXCEPTION 'koe5_backfill() cannot embed rows of "%"', @extschema@.koe5__relname(tbl)
            USING ERRCODE = 'wrong_object_type', DETAIL = 'It works on tables (partitioned or not).';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Citus: a distributed table is embedded shard by shard on its workers, which use
    -- their own settings: they must embed as this session would.
    citus := @extschema@.koe5__citus_table_type(tbl);
    IF citus IN ('reference', 'local') THEN
        RAISE EXCEPTION 'koe5_backfill() does not support Citus % tables', citus
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Their rows cannot be locked and updated by row address from here.',
                  HINT = pg_catalog.format('Embed them with UPDATE %s SET %I = koe5_%s(%I) WHERE %I IS NULL, in batches, or with a generated column.%s',
                                           tbl, target, kind, source, target,
                                           CASE WHEN citus = 'reference' THEN ' Each node computes its own copy: compare their models with koe5_cluster_models().' ELSE '' END);
    END IF;
    IF citus = 'distributed' THEN
        PERFORM @extschema@.koe5__require_citus();
        IF @extschema@.koe5__citus_replicated(tbl) THEN
            RAISE EXCEPTION 'koe5_backfill() does not support distributed tables whose shards have more than one placement'
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'A shard would be embedded on one placement and not the others.',
                      HINT = pg_catalog.format('Embed them with UPDATE %s SET %I = koe5_%s(%I) WHERE %I IS NULL, in batches, which Citus applies to every placement.',
                                               tbl, target, kind, source, target);
        END IF;
        PERFORM @extschema@.koe5__check_cluster_models(tbl);
    END IF;
    EXECUTE format('SELECT count(*) FROM %s AS t WHERE t.%I IS NULL AND t.%I IS NOT NULL', tbl, target, source)
        INTO total;
    INSERT INTO @extschema@.koe5_backfill_runs (relid, source, target, kind, rows_total)
        VALUES (tbl, source, target, kind, total) RETURNING run_id INTO run;
    RAISE NOTICE 'koe5_backfill: run %, % rows of "%" to embed', run, total, @extschema@.koe5__relname(tbl);
    IF citus = 'distributed' THEN
        COMMIT;
        CALL @extschema@.koe5__backfill_shards(run, tbl, source, target, kind, batch_size);
        RETURN;
    END IF;
    -- Row addresses (ctid) are per physical table: a partitioned table or one with
    -- inheritance children is embedded one physical table at a time.
    WITH RECURSIVE tree(relid) AS (
        SELECT tbl::oid
        UNION
        SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid)
    SELECT array_agg(tree.relid::regclass ORDER BY tree.relid) INTO parts
    FROM tree JOIN pg_class c ON c.oid = tree.relid WHERE c.relkind IN ('r', 'm');
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    FOREACH part IN ARRAY parts LOOP
        -- Walk the table in ranges of blocks (growing while they come back short), then
        -- make a last pass over the whole table that waits for rows others had locked.
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        nblocks := NULL;           -- read in the first batch's protected block
        blk := 0;
        step := 8;
        skip := '{}';
        LOOP
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            err := NULL;
            fatal := NULL;
            n := 0;
            ok := 0;
            BEGIN
                IF nblocks IS NULL THEN
                    nblocks := pg_relation_size(part) / current_setting('block_size')::bigint;
                    final := nblocks = 0;
                END IF;
                PERFORM pg_try_advisory_xact_lock(@extschema@.koe5__backfill_lock_key(), run::integer);
                range_sql := CASE WHEN final THEN '' ELSE
                    format(' AND t.ctid >= %L::tid AND t.ctid < %L::tid', format('(%s,0)', blk), format('(%s,0)', blk + step))
                END;
                lock_sql := CASE WHEN final THEN 'FOR NO KEY UPDATE OF t' ELSE 'FOR NO KEY UPDATE OF t SKIP LOCKED' END;
                pending_sql := format('FROM ONLY %s AS t WHERE t.%I IS NULL AND t.%I IS NOT NULL AND t.ctid <> ALL ($2)%s',
                                      part, target, source, range_sql);
                BEGIN
                    -- One batch: embed the texts in one batch, write the vectors back by ctid.
                    EXECUTE format(
                        'WITH todo AS (SELECT t.ctid AS tid, t.%1$I::text AS body %2$s LIMIT $1 %3$s),
                              batch AS (SELECT array_agg(tid) AS tids, array_agg(body) AS bodies FROM todo),
                              updated AS (UPDATE ONLY %4$s AS t SET %5$I = z.embedding
                                          FROM batch, ROWS FROM (unnest(batch.tids), %6$s.koe5__embed(batch.bodies, $3)) AS z(tid, embedding)
                                          WHERE t.ctid = z.tid RETURNING 1)
                         SELECT count(*) FROM updated', source, pending_sql, lock_sql, part, target, '@extschema@')
                        INTO n USING batch_size, skip, kind;
                    ok := n;
                    IF n > 0 THEN
                        streak := 0;
                    END IF;
                EXCEPTION WHEN OTHERS THEN
                    -- A lock that cannot be had, a deadlock or a serialization failure
                    -- is no row's fault: going row by row would only wait again.
                    GET STACKED DIAGNOSTICS fatal_state = RETURNED_SQLSTATE;
                    IF fatal_state IN ('55P03', '40P01', '40001') THEN
                        RAISE;
                    END IF;
                    -- Some row of the batch cannot be embedded or stored: go row by row,
                    -- keep the rows that work, report and skip the others.
                    n := 0;
                    ok := 0;
                    FOR r IN EXECUTE format('SELECT t.ctid AS tid, t.%I::text AS body %s LIMIT $1 %s',
                                            source, pending_sql, lock_sql) USING batch_size, skip
                    LOOP
                        n := n + 1;
                        BEGIN
                            EXECUTE format('UPDATE ONLY %s AS t SET %I = %s.koe5__embed($1, $3) WHERE t.ctid = $2',
                                           part, target, '@extschema@')
                                USING r.body, r.tid, kind;
                            ok := ok + 1;
                            streak := 0;
                        EXCEPTION WHEN OTHERS THEN
                            GET STACKED DIAGNOSTICS err = MESSAGE_TEXT, err_state = RETURNED_SQLSTATE,
                                                    err_detail = PG_EXCEPTION_DETAIL;
                            -- (a lock wait of this row's UPDATE, for a key or a trigger, is
                            -- no more the row's fault than the batch's)
                            IF err_state IN ('55P03', '40P01', '40001') THEN
                                RAISE;
                            END IF;
                            skip := skip || r.tid;
                            streak := streak + 1;
                            RAISE WARNING 'koe5_backfill: row % of "%" not embedded: %',
                                r.tid, @extschema@.koe5__relname(part), err;
                        END;
                        EXIT WHEN streak >= max_streak;
                    END LOOP;
                END;
                UPDATE @extschema@.koe5_backfill_runs
                    SET rows_done = done + ok, rows_failed = failed + (n - ok), updated_at = clock_timestamp(),
                        last_error = coalesce(err, last_error)
                    WHERE run_id = run;
            EXCEPTION WHEN OTHERS OR query_canceled THEN
                -- Not a row's fault (a lock wait past lock_timeout, a deadlock, a cancel,
                -- a statement_timeout): what this batch did is rolled back; record why
                -- the run ends before ending it with the same error.
                GET STACKED DIAGNOSTICS fatal = MESSAGE_TEXT, fatal_state = RETURNED_SQLSTATE,
                                        fatal_detail = PG_EXCEPTION_DETAIL, fatal_hint = PG_EXCEPTION_HINT;
                n := 0;
                ok := 0;
            END;
            IF fatal IS NOT NULL THEN
                UPDATE @extschema@.koe5_backfill_runs
                    SET rows_done = done, rows_failed = failed, updated_at = clock_timestamp(),
                        state = 'failed', finished_at = clock_timestamp(), last_error = fatal
                    WHERE run_id = run;
                COMMIT;
                PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
                fatal_hint := coalesce(nullif(fatal_hint, '') || ' ', '')
                    || 'koe5_backfill stopped; the rows embedded before are kept, and a rerun goes on from them.';
                IF coalesce(fatal_detail, '') = '' THEN
                    RAISE EXCEPTION USING ERRCODE = fatal_state, MESSAGE = fatal, HINT = fatal_hint;
                END IF;
                RAISE EXCEPTION USING ERRCODE = fatal_state, MESSAGE = fatal, DETAIL = fatal_detail, HINT = fatal_hint;
            END IF;
            done := done + ok;
            failed := failed + (n - ok);
            IF streak >= max_streak THEN
                -- So many failures with no success between them point at the settings
                -- or the table, not at rows: stop, keeping what is done.
                UPDATE @extschema@.koe5_backfill_runs SET state = 'failed', finished_at = clock_timestamp()
                    WHERE run_id = run;
                COMMIT;
                PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
                IF coalesce(err_detail, '') = '' THEN
                    RAISE EXCEPTION USING ERRCODE = err_state, MESSAGE = err, HINT = stopped_hint;
                END IF;
                RAISE EXCEPTION USING ERRCODE = err_state, MESSAGE = err, DETAIL = err_detail, HINT = stopped_hint;
            END IF;
            COMMIT;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            IF n = 0 OR n < batch_size THEN
                EXIT WHEN final;
                blk := blk + step;
                step := least(step * 2, 4096);
                final := blk >= nblocks;
            END IF;
            IF clock_timestamp() - last_notice >= interval '5 seconds' THEN
                last_notice := clock_timestamp();
                RAISE NOTICE 'koe5_backfill: % of % rows (% %%), % rows/s, about % s left',
                    done, total, round(100.0 * done / GREATEST(total, 1), 1),
                    round((done / GREATEST(extract(epoch FROM last_notice - started), 0.001))::numeric, 1),
                    round((GREATEST(total - done - failed, 0) * extract(epoch FROM last_notice - started)
                           / GREATEST(done, 1))::numeric);
            END IF;
        END LOOP;
    END LOOP;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    UPDATE @extschema@.koe5_backfill_runs SET state = 'done', finished_at = clock_timestamp() WHERE run_id = run;
    RAISE NOTICE 'koe5_backfill: % rows embedded, % failed, in % s', done, failed,
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
END
$$;

-- koe5_enqueue_table: Citus tables are refused (sql/surface/queue.sql).
CREATE OR REPLACE FUNCTION koe5_enqueue_table(tbl regclass, source text, target text, kind text DEFAULT 'passage')
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET DateStyle = 'ISO, MDY'
    SET IntervalStyle = 'postgres'
    SET extra_float_digits = 3
AS $$
DECLARE
    key record;
    relkind "char" := (SELECT c.relkind FROM pg_class c WHERE c.oid = tbl);
BEGIN
    IF (SELECT c.relpersistence FROM pg_class c WHERE c.oid = tbl) = 't' THEN
        RAISE EXCEPTION 'koe5_enqueue_table() does not support temporary tables'
            USING ERRCODE = 'feature_not_supported', DETAIL = 'The background worker cannot see them.';
    END IF;
    PERFORM @extschema@.koe5__check_kind(kind);
    PERFORM @extschema@.koe5__check_columns(tbl, source, target);
    IF @extschema@.koe5__citus_table_type(tbl) IS NOT NULL THEN
        RAISE EXCEPTION 'koe5_enqueue_table() does not support Citus tables'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'The queue, its trigger and the background worker live on one node; the rows of a Citus table are on the workers.',
                  HINT = 'Use a generated column (computed on the workers), and koe5_backfill() for rows already there.';
    END IF;
    IF relkind = 'p' THEN
        RAISE EXCEPTION 'koe5_enqueue_table() does not support partitioned tables'
            USING ERRCODE = 'feature_not_supported', HINT = 'Register each partition.';
    END IF;
    PERFORM @extschema@.koe5__require_owner(tbl);
    key := @extschema@.koe5__key_columns(tbl);
    IF key.names IS NULL THEN
        RAISE EXCEPTION 'relation "%" has no primary key', @extschema@.koe5__relname(tbl)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The queue names rows by their primary key.';
    END IF;
    INSERT INTO @extschema@.koe5_queued_tables (relid, source_attnum, target_attnum, kind)
        SELECT tbl, s.attnum, t.attnum, kind FROM pg_attribute s, pg_attribute t
        WHERE s.attrelid = tbl AND s.attname = source AND t.attrelid = tbl AND t.attname = target
        ON CONFLICT (relid) DO UPDATE
        SET source_attnum = excluded.source_attnum, target_attnum = excluded.target_attnum, kind = excluded.kind;
    -- Plain AFTER UPDATE, not UPDATE OF: a BEFORE trigger may change the text too.
    EXECUTE format('CREATE OR REPLACE TRIGGER koe5_enqueue AFTER INSERT OR UPDATE ON %s
                    FOR EACH ROW EXECUTE FUNCTION %s.koe5__enqueue_trigger()', tbl, '@extschema@');
    -- Rows already in the table that lack an embedding join the queue too (once).
    EXECUTE format('INSERT INTO %1$s.koe5_queue (relid, row_key)
                    SELECT $1, k.row_key FROM %2$s AS t, LATERAL (SELECT %3$s AS row_key) AS k
                    WHERE t.%4$I IS NULL AND t.%5$I IS NOT NULL
                      AND NOT EXISTS (SELECT FROM %1$s.koe5_queue q
                                      WHERE q.relid = $1 AND q.row_key = k.row_key AND q.failed_at IS NULL)',
                   '@extschema@', tbl, @extschema@.koe5__key_text(tbl, 't'), target, source)
        USING tbl;
END
$$;

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

-- koe5: backfill. CALL koe5_backfill(...) embeds a table's rows that lack an embedding,
-- batch by batch, committing as it goes; every run is recorded in koe5_backfill_runs
-- and koe5_backfill_progress shows it from any session.

-- One row per koe5_backfill() call. Committed with every batch, so other sessions
-- (and a rerun after a crash) see exactly what is done.
CREATE TABLE koe5_backfill_runs (
    run_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relid       regclass NOT NULL,
    source      text NOT NULL,
    target      text NOT NULL,
    kind        text NOT NULL,
    run_by      name NOT NULL DEFAULT current_user,
    pid         integer NOT NULL DEFAULT pg_backend_pid(),
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    rows_total  bigint NOT NULL,
    rows_done   bigint NOT NULL DEFAULT 0,
    rows_failed bigint NOT NULL DEFAULT 0,
    state       text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed')),
    last_error  text
);
-- Anyone may record runs of tables they may update, and read runs of tables they may read.
ALTER TABLE koe5_backfill_runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY koe5_backfill_runs_read ON koe5_backfill_runs FOR SELECT
    USING (run_by = current_user OR coalesce(pg_catalog.has_table_privilege(relid, 'SELECT'), false));
CREATE POLICY koe5_backfill_runs_insert ON koe5_backfill_runs FOR INSERT
    WITH CHECK (run_by = current_user AND coalesce(pg_catalog.has_any_column_privilege(relid, 'UPDATE'), false));
CREATE POLICY koe5_backfill_runs_update ON koe5_backfill_runs FOR UPDATE USING (run_by = current_user)
    WITH CHECK (run_by = current_user AND coalesce(pg_catalog.has_any_column_privilege(relid, 'UPDATE'), false));
-- Runs are a record: no role but a superuser deletes them. Table-level privileges
-- beyond SELECT and INSERT (UPDATE, DELETE, TRUNCATE, ...) would let any role LOCK the
-- table and stall every backfill; column privileges allow no LOCK at all. REVOKE
-- first: a site's ALTER DEFAULT PRIVILEGES may give PUBLIC everything on new tables
-- (on the run id's sequence too, whose setval would make others' runs collide).
REVOKE ALL ON koe5_backfill_runs FROM PUBLIC;
REVOKE ALL ON SEQUENCE koe5_backfill_runs_run_id_seq FROM PUBLIC;
GRANT SELECT, INSERT ON koe5_backfill_runs TO PUBLIC;
GRANT UPDATE (updated_at, finished_at, rows_done, rows_failed, state, last_error) ON koe5_backfill_runs TO PUBLIC;

-- A run holds an advisory lock (this key, 'koe5' in ASCII, and the run id) in each of
-- its batch transactions; a run marked running whose lock nobody holds was stopped.
CREATE FUNCTION koe5__backfill_lock_key() RETURNS integer
    IMMUTABLE PARALLEL SAFE LANGUAGE sql
    RETURN 1802462517;

CREATE VIEW koe5_backfill_progress AS
SELECT r.run_id,
       r.relid AS table_name,
       r.source, r.target, r.kind, r.run_by, r.pid,
       CASE
           WHEN r.state <> 'running' THEN r.state
           WHEN EXISTS (SELECT FROM pg_catalog.pg_locks l
                        WHERE l.locktype = 'advisory' AND l.classid = @extschema@.koe5__backfill_lock_key()::oid
                          AND l.objid = r.run_id::oid AND l.objsubid = 2 AND l.granted) THEN 'running'
           ELSE 'stopped'
       END AS state,
       r.rows_done, r.rows_total, r.rows_failed,
       round(100.0 * r.rows_done / nullif(r.rows_total, 0), 1) AS percent,
       round((r.rows_done / nullif(extract(epoch FROM r.updated_at - r.started_at), 0))::numeric, 2) AS rows_per_second,
       CASE WHEN r.state = 'running' AND r.rows_done > 0 THEN
           (r.updated_at - r.started_at) * (greatest(r.rows_total - r.rows_done - r.rows_failed, 0)::float8 / r.rows_done)
       END AS time_left,
       r.started_at, r.updated_at, r.finished_at, r.last_error
FROM @extschema@.koe5_backfill_runs r
-- the read policy of the table, applied here because a view reads as its owner
WHERE r.run_by = current_user OR coalesce(pg_catalog.has_table_privilege(r.relid, 'SELECT'), false);
-- Read only: the view is simple enough to be updatable, and a view writes (and locks)
-- its table as its owner, past row-level security.
REVOKE ALL ON koe5_backfill_progress FROM PUBLIC;
GRANT SELECT ON koe5_backfill_progress TO PUBLIC;
COMMENT ON VIEW koe5_backfill_progress IS
    'Progress of koe5_backfill() runs, readable from any session while they run';

-- Embeds what is missing, batch by batch, committing after each. A row that cannot be
-- embedded is reported and skipped; max_streak of them in a row stop the run. An error
-- no row caused (lock_timeout, statement_timeout, a cancel) is recorded as last_error
-- with state 'failed' before it is raised.
CREATE PROCEDURE koe5_backfill(tbl regclass, source text, target text, kind text DEFAULT 'passage',
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

COMMENT ON PROCEDURE koe5_backfill(regclass, text, text, text, integer) IS
    'Embeds rows whose target is NULL in batches, committing after each; rerun to resume. Progress: koe5_backfill_progress';

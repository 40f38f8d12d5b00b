-- As released, with only these two lines put on top in 0.4.0; frozen (scripts/check-released-sql.sh).
\echo Use "ALTER EXTENSION koe5 UPDATE TO '0.3.0'" to load this file. \quit
-- koe5 0.3.0: what a plain role may do to koe5's shared tables, and backfill errors
-- that say why a run stopped.
--
-- Until 0.2.0 PUBLIC had UPDATE and DELETE on koe5_queued_tables, koe5_queue and
-- koe5_backfill_runs, and row-level security chose the rows. Either privilege also
-- allows LOCK TABLE ... IN ACCESS EXCLUSIVE MODE, which row-level security does not
-- cover: any role could hold that lock in an open transaction and stall every write to
-- every registered table (their queue triggers), every DROP TABLE (the event trigger)
-- and every backfill. Now PUBLIC keeps SELECT and INSERT, which allow no lock beyond
-- ROW EXCLUSIVE (the mode every writer takes), and UPDATE of the columns that change
-- as rows are worked on: column privileges allow no LOCK at all. Nothing a role does
-- to these tables can then block another role's writes. Deleting a table's queue
-- entries goes through koe5__forget_queue(), which checks that the caller owns the
-- table and then deletes as the owner of koe5's tables.

-- All of it first: a site's ALTER DEFAULT PRIVILEGES may have given PUBLIC more
-- (TRUNCATE, MAINTAIN and REFERENCES lock too; TRIGGER would run a role's code inside
-- koe5's own deletes).
REVOKE ALL ON koe5_queued_tables, koe5_queue, koe5_backfill_runs FROM PUBLIC;
REVOKE ALL ON SEQUENCE koe5_queue_id_seq FROM PUBLIC;
GRANT SELECT, INSERT ON koe5_queued_tables, koe5_queue, koe5_backfill_runs TO PUBLIC;
GRANT USAGE ON SEQUENCE koe5_queue_id_seq TO PUBLIC;
GRANT UPDATE (source_attnum, target_attnum, kind, rows_done, last_done_at) ON koe5_queued_tables TO PUBLIC;
GRANT UPDATE (attempts, next_attempt_at, last_error, failed_at) ON koe5_queue TO PUBLIC;
GRANT UPDATE (updated_at, finished_at, rows_done, rows_failed, state, last_error) ON koe5_backfill_runs TO PUBLIC;
-- Runs are a record: no role deletes them but a superuser.
DROP POLICY koe5_backfill_runs_delete ON koe5_backfill_runs;

-- Deletes queue entries of `tbl` (those in `ids`, or all of them and the registration
-- when `whole_table`), for a caller who owns the table: the caller's rights are
-- checked, then the DELETE runs as the owner of koe5's queue with search_path pinned,
-- in a security-restricted operation.
CREATE FUNCTION koe5__forget_queue(tbl regclass, ids bigint[], whole_table boolean) RETURNS bigint
    VOLATILE PARALLEL UNSAFE
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_forget_queue_wrapper';
COMMENT ON FUNCTION koe5__forget_queue(regclass, bigint[], boolean) IS
    'Internal: deletes queue entries of a table the caller owns (those in ids, or all and the registration with whole_table); used by koe5_process_queue_table and koe5_dequeue_table';

CREATE OR REPLACE FUNCTION koe5_dequeue_table(tbl regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM @extschema@.koe5__require_owner(tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS koe5_enqueue ON %s', tbl);
    PERFORM @extschema@.koe5__forget_queue(tbl, NULL, true);
END
$$;

-- Embeds the next batch of one table's queue, as the calling user (the worker calls it
-- as the table's owner).
CREATE OR REPLACE FUNCTION koe5_process_queue_table(tbl regclass, max_rows integer DEFAULT 64) RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET DateStyle = 'ISO, MDY'
    SET IntervalStyle = 'postgres'
    SET extra_float_digits = 3
AS $$
DECLARE
    reg record;
    key record;
    source text;
    target text;
    fn text;
    match text;
    ids bigint[];
    found_ids bigint[];
    existing_ids bigint[];
    texts text[];
    entry bigint;
    failed_ids bigint[] := '{}';
    errors text[] := '{}';
    err text;
    i integer;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT @extschema@.koe5__owns(tbl) THEN
        RAISE EXCEPTION 'permission denied to process the koe5 queue of table %', @extschema@.koe5__relname(tbl)
            USING ERRCODE = 'insufficient_privilege', DETAIL = 'Only the table''s owner may.';
    END IF;
    SELECT * INTO reg FROM @extschema@.koe5_queued_tables r WHERE r.relid = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relation "%" is not registered with koe5_enqueue_table()', @extschema@.koe5__relname(tbl)
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT array_agg(q.id ORDER BY q.id) INTO ids
    FROM (SELECT id FROM @extschema@.koe5_queue
          WHERE relid = tbl AND failed_at IS NULL AND next_attempt_at <= clock_timestamp()
          ORDER BY id LIMIT max_rows FOR UPDATE SKIP LOCKED) AS q;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    -- Load the model first: if it is missing or broken, fail the whole call without
    -- counting an attempt against any row.
    PERFORM @extschema@.koe5_token_count('');
    source := @extschema@.koe5__column_name(tbl, reg.source_attnum);
    target := @extschema@.koe5__column_name(tbl, reg.target_attnum);
    PERFORM @extschema@.koe5__check_columns(tbl, source, target);
    fn := format('%s.%I', '@extschema@', 'koe5_' || reg.kind);
    key := @extschema@.koe5__key_columns(tbl);
    IF key.names IS NULL THEN
        RAISE EXCEPTION 'relation "%" has no primary key', @extschema@.koe5__relname(tbl)
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT string_agg(format('t.%I = (q.row_key[%s])::%s', c.name, c.ord, c.type), ' AND ') INTO match
        FROM unnest(key.names, key.types) WITH ORDINALITY AS c(name, type, ord);
    -- An entry whose key does not read back as the table's key types (written by hand,
    -- or for a key whose type changed) fails on its own instead of stalling the queue.
    BEGIN
        EXECUTE format('SELECT count(*) FROM %s.koe5_queue AS q JOIN %s AS t ON %s WHERE q.id = ANY ($1)',
                       '@extschema@', tbl, match) USING ids;
    EXCEPTION WHEN OTHERS THEN
        FOREACH entry IN ARRAY ids LOOP
            BEGIN
                EXECUTE format('SELECT count(*) FROM %s.koe5_queue AS q JOIN %s AS t ON %s WHERE q.id = $1',
                               '@extschema@', tbl, match) USING entry;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
                UPDATE @extschema@.koe5_queue SET attempts = @extschema@.koe5__queue_max_attempts(),
                    last_error = 'invalid row key: ' || err, failed_at = clock_timestamp()
                    WHERE koe5_queue.id = entry;
                ids := array_remove(ids, entry);
            END;
        END LOOP;
    END;
    -- The rows' current texts, in queue order, locking them; a row another transaction
    -- holds is left for a later batch, and entries whose row is gone are done.
    EXECUTE format(
        'SELECT array_agg(l.id ORDER BY l.id), array_agg(l.body ORDER BY l.id)
         FROM (SELECT q.id, t.%I::text AS body FROM %s.koe5_queue AS q JOIN %s AS t ON %s
               WHERE q.id = ANY ($1) FOR NO KEY UPDATE OF t SKIP LOCKED) AS l', source, '@extschema@', tbl, match)
        INTO found_ids, texts USING ids;
    EXECUTE format('SELECT array_agg(q.id) FROM %s.koe5_queue AS q JOIN %s AS t ON %s WHERE q.id = ANY ($1)',
                   '@extschema@', tbl, match)
        INTO existing_ids USING ids;
    ids := array(SELECT x FROM unnest(ids) AS x
                 WHERE x = ANY (coalesce(found_ids, '{}')) OR x <> ALL (coalesce(existing_ids, '{}')));
    IF found_ids IS NOT NULL THEN
        BEGIN
            -- One batch; a row whose text changed meanwhile is left to its newer entry.
            EXECUTE format(
                'UPDATE %1$s AS t SET %2$I = z.embedding
                 FROM ROWS FROM (unnest($1::bigint[]), unnest($2::text[]), %3$s($2::text[])) AS z(id, body, embedding)
                 JOIN %4$s.koe5_queue AS q ON q.id = z.id
                 WHERE %5$s AND t.%6$I::text IS NOT DISTINCT FROM z.body', tbl, target, fn, '@extschema@', match, source)
                USING found_ids, texts;
        EXCEPTION WHEN OTHERS THEN
            -- Row by row: the rows that work are stored, the others count a failure.
            FOR i IN 1 .. cardinality(found_ids) LOOP
                BEGIN
                    EXECUTE format(
                        'UPDATE %1$s AS t SET %2$I = CASE WHEN $2::text IS NULL THEN NULL ELSE %3$s($2::text) END
                         FROM %4$s.koe5_queue AS q
                         WHERE q.id = $1 AND %5$s AND t.%6$I::text IS NOT DISTINCT FROM $2::text',
                        tbl, target, fn, '@extschema@', match, source)
                        USING found_ids[i], texts[i];
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
                    failed_ids := failed_ids || found_ids[i];
                    errors := errors || err;
                END;
            END LOOP;
        END;
    END IF;
    -- Settled entries go; the caller may not delete from the queue itself (0.3.0).
    PERFORM @extschema@.koe5__forget_queue(tbl, array(SELECT x FROM unnest(ids) AS x WHERE x <> ALL (failed_ids)), false);
    UPDATE @extschema@.koe5_queue AS q
        SET attempts = q.attempts + 1,
            last_error = f.error,
            next_attempt_at = clock_timestamp() + interval '1 second' * power(2, q.attempts),
            failed_at = CASE WHEN q.attempts + 1 >= @extschema@.koe5__queue_max_attempts() THEN clock_timestamp() END
        FROM unnest(failed_ids, errors) AS f(id, error)
        WHERE q.id = f.id;
    UPDATE @extschema@.koe5_queued_tables
        SET rows_done = rows_done + cardinality(ids) - cardinality(failed_ids), last_done_at = clock_timestamp()
        WHERE relid = tbl;
    RETURN cardinality(ids);
END
$$;

-- A run that ends on an error no row caused (lock_timeout, statement_timeout, a
-- cancel) records it as last_error with state 'failed' before raising it (0.2.0 left
-- last_error empty and the run 'running' until the view called it stopped).
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
    fn text;
    err text;
    err_state text;
    err_detail text;
    fatal text;                -- an error no row caused: it ends the run
    fatal_state text;
    fatal_detail text;
    fatal_hint text;
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
    fn := format('%s.%I', '@extschema@', 'koe5_' || kind);
    EXECUTE format('SELECT count(*) FROM %s AS t WHERE t.%I IS NULL AND t.%I IS NOT NULL', tbl, target, source)
        INTO total;
    INSERT INTO @extschema@.koe5_backfill_runs (relid, source, target, kind, rows_total)
        VALUES (tbl, source, target, kind, total) RETURNING run_id INTO run;
    RAISE NOTICE 'koe5_backfill: run %, % rows of "%" to embed', run, total, @extschema@.koe5__relname(tbl);
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
                PERFORM pg_try_advisory_xact_lock(1802462517, run::integer);
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
                                          FROM batch, ROWS FROM (unnest(batch.tids), %6$s(batch.bodies)) AS z(tid, embedding)
                                          WHERE t.ctid = z.tid RETURNING 1)
                         SELECT count(*) FROM updated', source, pending_sql, lock_sql, part, target, fn)
                        INTO n USING batch_size, skip;
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
                            EXECUTE format('UPDATE ONLY %s AS t SET %I = %s($1) WHERE t.ctid = $2', part, target, fn)
                                USING r.body, r.tid;
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
                        EXIT WHEN streak >= 32;
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
            IF streak >= 32 THEN
                -- So many failures with no success between them point at the settings
                -- or the table, not at rows: stop, keeping what is done.
                UPDATE @extschema@.koe5_backfill_runs SET state = 'failed', finished_at = clock_timestamp()
                    WHERE run_id = run;
                COMMIT;
                PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
                IF coalesce(err_detail, '') = '' THEN
                    RAISE EXCEPTION USING ERRCODE = err_state, MESSAGE = err,
                        HINT = 'koe5_backfill stopped after 32 rows in a row failed; the rows embedded before are kept.';
                END IF;
                RAISE EXCEPTION USING ERRCODE = err_state, MESSAGE = err, DETAIL = err_detail,
                    HINT = 'koe5_backfill stopped after 32 rows in a row failed; the rows embedded before are kept.';
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

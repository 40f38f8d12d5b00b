-- koe5 0.4.0: the same surface, arranged by concept (sql/surface/), with the pipelines'
-- shared pieces named once:
--   koe5__embed(text, kind) and koe5__embed(text[], kind) choose koe5_passage or
--     koe5_query by kind for the trigger, the backfill and the queue (no more
--     'koe5_' || kind string building);
--   koe5__key_text() writes the row-key expression the queue's trigger and
--     koe5_enqueue_table() evaluate, koe5__key_match() the join that reads it back;
--   koe5__due() is what "due" means for a queue entry, and the background worker asks
--     koe5__due_tables() and koe5__note_batch_failure() instead of knowing the tables
--     (a database not yet updated keeps its queue until it is);
--   koe5__backfill_lock_key() names the backfill's advisory-lock key for the procedure
--     and its progress view, and the procedure names its failure limit once.
-- And where a site's ALTER DEFAULT PRIVILEGES gave PUBLIC everything on new tables,
-- 0.3.0 left PUBLIC all of it on koe5's views (which are updatable, and write and lock
-- their tables as their owner) and on the backfill's run-id sequence: now they are
-- read-only and the sequence is koe5's own.
-- A fresh install (sql/surface/) and this update give the same objects (tested).
\echo Use "ALTER EXTENSION koe5 UPDATE TO '0.4.0'" to load this file. \quit

-- The pipelines' one way to embed by kind ('passage' or 'query'; they check the kind
-- first): the trigger, the backfill and the queue choose the function through these.
-- Plain SQL over koe5_passage and koe5_query, so a site's REVOKE EXECUTE on either
-- holds for the pipelines too.
CREATE FUNCTION koe5__embed(body text, kind text) RETURNS real[]
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql
    RETURN CASE kind WHEN 'query' THEN @extschema@.koe5_query(body)
                     WHEN 'passage' THEN @extschema@.koe5_passage(body) END;

CREATE FUNCTION koe5__embed(bodies text[], kind text) RETURNS SETOF real[]
    IMMUTABLE STRICT PARALLEL SAFE ROWS 100 LANGUAGE sql
BEGIN ATOMIC
    SELECT q.e FROM @extschema@.koe5_query(bodies) AS q(e) WHERE kind = 'query'
    UNION ALL
    SELECT p.e FROM @extschema@.koe5_passage(bodies) AS p(e) WHERE kind = 'passage';
END;

CREATE OR REPLACE FUNCTION koe5_embed_trigger() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    -- real values pass through jsonb as text: keep every digit
    SET extra_float_digits = 3
AS $$
DECLARE
    kind text := coalesce(TG_ARGV[2], 'passage');
    new_text text;
    old_text text;
    target_is_null boolean;
    embedding real[];
BEGIN
    IF TG_WHEN <> 'BEFORE' OR TG_LEVEL <> 'ROW' OR TG_OP NOT IN ('INSERT', 'UPDATE') THEN
        RAISE EXCEPTION 'koe5_embed_trigger() must be fired BEFORE INSERT OR UPDATE FOR EACH ROW'
            USING ERRCODE = '39P01';
    END IF;
    IF TG_NARGS NOT IN (2, 3) THEN
        RAISE EXCEPTION 'koe5_embed_trigger() needs a source column, a target column and optionally ''passage'' or ''query'''
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example: EXECUTE FUNCTION koe5_embed_trigger(''body'', ''emb'', ''passage'').';
    END IF;
    PERFORM @extschema@.koe5__check_kind(kind);
    PERFORM @extschema@.koe5__check_columns(TG_RELID, TG_ARGV[0], TG_ARGV[1]);

    EXECUTE format('SELECT ($1).%1$I::text, ($2).%1$I::text, ($1).%2$I IS NULL', TG_ARGV[0], TG_ARGV[1])
        INTO new_text, old_text, target_is_null USING NEW, OLD;
    -- An update that leaves the text alone keeps the stored embedding (an emptied
    -- target is filled again).
    IF TG_OP = 'UPDATE' AND new_text IS NOT DISTINCT FROM old_text AND (new_text IS NULL OR NOT target_is_null) THEN
        RETURN NEW;
    END IF;
    IF new_text IS NOT NULL THEN
        embedding := @extschema@.koe5__embed(new_text, kind);
    END IF;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[1], embedding));
END
$$;

-- A run holds an advisory lock (this key, 'koe5' in ASCII, and the run id) in each of
-- its batch transactions; a run marked running whose lock nobody holds was stopped.
CREATE FUNCTION koe5__backfill_lock_key() RETURNS integer
    IMMUTABLE PARALLEL SAFE LANGUAGE sql
    RETURN 1802462517;

CREATE OR REPLACE VIEW koe5_backfill_progress AS
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

-- Embeds what is missing, batch by batch, committing after each. A row that cannot be
-- embedded is reported and skipped; max_streak of them in a row stop the run. An error
-- no row caused (lock_timeout, statement_timeout, a cancel) is recorded as last_error
-- with state 'failed' before it is raised.
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

-- Whether a queue entry is due: not set aside as failed, and past its back-off. The
-- one definition of "due" for koe5_process_queue_table() and the background worker.
CREATE FUNCTION koe5__due(failed_at timestamptz, next_attempt_at timestamptz) RETURNS boolean
    VOLATILE PARALLEL SAFE LANGUAGE sql
    RETURN failed_at IS NULL AND next_attempt_at <= pg_catalog.clock_timestamp();

-- The registered tables that have due entries, with their owners: what the background
-- worker embeds next (it calls koe5_process_queue_table() on each, as the owner).
CREATE FUNCTION koe5__due_tables(OUT relid oid, OUT owner oid) RETURNS SETOF record
    VOLATILE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT r.relid::oid, c.relowner FROM @extschema@.koe5_queued_tables r
    JOIN pg_class c ON c.oid = r.relid
    WHERE EXISTS (SELECT FROM @extschema@.koe5_queue q
                  WHERE q.relid = r.relid AND @extschema@.koe5__due(q.failed_at, q.next_attempt_at))
    ORDER BY 1;
END;
REVOKE ALL ON FUNCTION koe5__due_tables() FROM PUBLIC;

-- A batch that failed as a whole (the model could not be loaded, it ran past
-- koe5.worker_batch_timeout, a lock could not be had) counts no attempt against any
-- row, but says why on the table's due entries, so koe5_queue_status.last_error shows it.
CREATE FUNCTION koe5__note_batch_failure(tbl regclass, message text) RETURNS void
    VOLATILE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    UPDATE @extschema@.koe5_queue SET last_error = message
    WHERE relid = tbl AND @extschema@.koe5__due(failed_at, next_attempt_at);
END;
REVOKE ALL ON FUNCTION koe5__note_batch_failure(regclass, text) FROM PUBLIC;

-- The queue's name for a row of `rel`, as an expression over the row `r` (a record
-- reference such as '($1)' or a table alias): its primary key's values as text, in key
-- order; ARRAY[]::text[] when `rel` has no primary key. The functions that evaluate it
-- (the queue's trigger, koe5_enqueue_table()) and the one that casts the values back
-- (koe5_process_queue_table()) carry the same rendering settings.
CREATE FUNCTION koe5__key_text(rel regclass, r text) RETURNS text
    STABLE PARALLEL SAFE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT format('ARRAY[%s]::text[]', string_agg(format('%s.%I::text', r, c.name), ', ' ORDER BY c.ord))
    FROM @extschema@.koe5__key_columns(rel) AS k, unnest(k.names) WITH ORDINALITY AS c(name, ord);
END;

-- The condition that joins the queue (alias q) to `rel` (alias t) on the row key, each
-- key value cast back to its column's type; NULL when `rel` has no primary key.
CREATE FUNCTION koe5__key_match(rel regclass) RETURNS text
    STABLE PARALLEL SAFE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT string_agg(format('t.%I = (q.row_key[%s])::%s', c.name, c.ord, c.type), ' AND ' ORDER BY c.ord)
    FROM @extschema@.koe5__key_columns(rel) AS k, unnest(k.names, k.types) WITH ORDINALITY AS c(name, type, ord);
END;

-- Records a changed row: runs as the writer, who needs no rights beyond writing the
-- table (the queue's policy checks them).
CREATE OR REPLACE FUNCTION koe5__enqueue_trigger() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    -- key values are stored as text: render them the way processing reads them back
    SET DateStyle = 'ISO, MDY'
    SET IntervalStyle = 'postgres'
    SET extra_float_digits = 3
AS $$
DECLARE
    reg record;
    source text;
    target text;
    keys text;
    new_text text;
    old_text text;
    row_key text[];
    old_key text[];
    emptied boolean;
BEGIN
    SELECT r.source_attnum, r.target_attnum INTO reg FROM @extschema@.koe5_queued_tables r WHERE r.relid = TG_RELID;
    IF NOT FOUND THEN
        -- Writes never fail because of the queue.
        RAISE WARNING 'relation "%" has a koe5_enqueue trigger but is not registered', @extschema@.koe5__relname(TG_RELID)
            USING HINT = 'Call koe5_enqueue_table() or koe5_dequeue_table() for it.';
        RETURN NULL;
    END IF;
    source := @extschema@.koe5__column_name(TG_RELID, reg.source_attnum);
    target := @extschema@.koe5__column_name(TG_RELID, reg.target_attnum);
    keys := @extschema@.koe5__key_text(TG_RELID, '($1)');
    EXECUTE 'SELECT ' || keys INTO row_key USING NEW;
    IF TG_OP = 'UPDATE' THEN
        -- Queue when the text changed, when the row got a new key (its old entry
        -- will find nothing), or when the target was emptied (a request to embed again).
        EXECUTE format('SELECT ($1).%1$I::text, ($2).%1$I::text, ($1).%2$I IS NULL AND ($2).%2$I IS NOT NULL',
                       source, target) INTO new_text, old_text, emptied USING NEW, OLD;
        EXECUTE 'SELECT ' || keys INTO old_key USING OLD;
        IF new_text IS NOT DISTINCT FROM old_text AND row_key = old_key AND NOT (emptied AND new_text IS NOT NULL) THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO @extschema@.koe5_queue (relid, row_key) VALUES (TG_RELID, row_key);
    RETURN NULL;
END
$$;

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

-- Embeds the next batch of one table's queue, as the calling user (the worker calls it
-- as the table's owner). Its settings are the ones row keys are rendered in (see
-- koe5__key_text()): the casts of `match` read them back.
CREATE OR REPLACE FUNCTION koe5_process_queue_table(tbl regclass, max_rows integer DEFAULT 64) RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET DateStyle = 'ISO, MDY'
    SET IntervalStyle = 'postgres'
    SET extra_float_digits = 3
AS $$
DECLARE
    reg record;
    source text;
    target text;
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
          WHERE relid = tbl AND @extschema@.koe5__due(failed_at, next_attempt_at)
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
    match := @extschema@.koe5__key_match(tbl);
    IF match IS NULL THEN
        RAISE EXCEPTION 'relation "%" has no primary key', @extschema@.koe5__relname(tbl)
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
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
                 FROM ROWS FROM (unnest($1::bigint[]), unnest($2::text[]), %3$s.koe5__embed($2::text[], $3)) AS z(id, body, embedding)
                 JOIN %3$s.koe5_queue AS q ON q.id = z.id
                 WHERE %4$s AND t.%5$I::text IS NOT DISTINCT FROM z.body', tbl, target, '@extschema@', match, source)
                USING found_ids, texts, reg.kind;
        EXCEPTION WHEN OTHERS THEN
            -- Row by row: the rows that work are stored, the others count a failure.
            FOR i IN 1 .. cardinality(found_ids) LOOP
                BEGIN
                    EXECUTE format(
                        'UPDATE %1$s AS t SET %2$I = %3$s.koe5__embed($2::text, $3)
                         FROM %3$s.koe5_queue AS q
                         WHERE q.id = $1 AND %4$s AND t.%5$I::text IS NOT DISTINCT FROM $2::text',
                        tbl, target, '@extschema@', match, source)
                        USING found_ids[i], texts[i], reg.kind;
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

REVOKE ALL ON koe5_backfill_progress, koe5_queue_status, koe5_queue_failures FROM PUBLIC;
GRANT SELECT ON koe5_backfill_progress, koe5_queue_status, koe5_queue_failures TO PUBLIC;
REVOKE ALL ON SEQUENCE koe5_backfill_runs_run_id_seq FROM PUBLIC;

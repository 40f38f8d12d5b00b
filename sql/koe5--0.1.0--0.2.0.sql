-- koe5 0.2.0: everything added since 0.1.0. A fresh install runs sql/koe5.sql and then
-- this file; `ALTER EXTENSION koe5 UPDATE` from 0.1.0 runs this file alone, so both
-- paths give the same objects (tested).

-- Monitoring --------------------------------------------------------------------

CREATE FUNCTION koe5_backend_stats(OUT texts_embedded bigint, OUT query_cache_hits bigint,
                                   OUT query_cache_entries integer)
    RETURNS SETOF record
    VOLATILE PARALLEL RESTRICTED ROWS 1
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_backend_stats_wrapper';
COMMENT ON FUNCTION koe5_backend_stats() IS
    'This backend''s counters: texts embedded, query-cache hits, queries in the cache';

-- Chunking ----------------------------------------------------------------------

CREATE FUNCTION koe5__chunks_utf8(doc text, max_tokens integer, overlap_tokens integer)
    RETURNS TABLE (ord integer, chunk bytea, n_tokens integer)
    IMMUTABLE STRICT PARALLEL SAFE COST 1000 ROWS 10
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_chunks_utf8_wrapper';

CREATE FUNCTION koe5_chunks(doc text, max_tokens integer DEFAULT 512, overlap_tokens integer DEFAULT 0)
    RETURNS TABLE (ord integer, chunk text, n_tokens integer)
    IMMUTABLE STRICT PARALLEL SAFE COST 1000 ROWS 10
    LANGUAGE sql
BEGIN ATOMIC
    SELECT c.ord, convert_from(c.chunk, 'UTF8'), c.n_tokens FROM koe5__chunks_utf8(doc, max_tokens, overlap_tokens) AS c ORDER BY c.ord;
END;
COMMENT ON FUNCTION koe5_chunks(text, integer, integer) IS
    'Cuts a document into pieces of at most max_tokens model tokens (prefix included), preferring paragraph, line and sentence ends';

-- Pipelines: keep embeddings in step with tables.
--
--   koe5_embed_trigger()    a BEFORE trigger that embeds a row as it is written
--   koe5_backfill(...)      a procedure that embeds what is missing, batch by batch,
--                           committing as it goes, with progress others can read
--   koe5_enqueue_table(...) writes record changed rows in a queue; the background
--                           worker (or koe5_process_queue()) embeds them later
--
-- Every function here either pins search_path or (the procedure, which must commit
-- and so cannot carry a SET clause) names what it calls with a schema.

-- Columns ----------------------------------------------------------------------

-- Checks that `source` and `target` name columns of `rel` that koe5 can read and
-- write; returns the target's type: 'real[]', 'vector' or 'halfvec'.
CREATE FUNCTION koe5__check_columns(rel regclass, source text, target text) RETURNS text
    STABLE PARALLEL SAFE
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    target_type oid;
    type_name text;
    generated "char";
    -- the table's own name, as PostgreSQL's messages give it
    relname text := (SELECT c.relname FROM pg_class c WHERE c.oid = rel);
BEGIN
    IF source IS NULL OR target IS NULL THEN
        RAISE EXCEPTION 'source and target columns must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM FROM pg_attribute a
        WHERE a.attrelid = rel AND a.attname = source AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation "%" does not exist', source, relname
            USING ERRCODE = 'undefined_column';
    END IF;
    SELECT a.atttypid, a.attgenerated INTO target_type, generated FROM pg_attribute a
        WHERE a.attrelid = rel AND a.attname = target AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation "%" does not exist', target, relname
            USING ERRCODE = 'undefined_column';
    END IF;
    IF generated <> '' THEN
        RAISE EXCEPTION 'column "%" of relation "%" is a generated column', target, relname
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'A generated column embeds by itself; koe5 writes into ordinary columns.';
    END IF;
    SELECT t.typname INTO type_name FROM pg_type t WHERE t.oid = target_type;
    IF target_type = 'real[]'::regtype THEN
        RETURN 'real[]';
    ELSIF type_name IN ('vector', 'halfvec') THEN
        RETURN type_name;
    END IF;
    RAISE EXCEPTION 'column "%" of relation "%" is of type %', target, relname, format_type(target_type, NULL)
        USING ERRCODE = 'datatype_mismatch',
              DETAIL = 'koe5 writes embeddings into columns of type real[], vector or halfvec.';
END
$$;

CREATE FUNCTION koe5__check_kind(kind text) RETURNS void
    IMMUTABLE PARALLEL SAFE
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF kind IS NULL OR kind NOT IN ('passage', 'query') THEN
        RAISE EXCEPTION 'invalid embedding kind "%"', kind
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''passage'' or ''query''.';
    END IF;
END
$$;

-- Triggers ---------------------------------------------------------------------

CREATE FUNCTION koe5_embed_trigger() RETURNS trigger
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
            USING ERRCODE = 'triggered_action_exception';
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
        embedding := CASE kind WHEN 'query' THEN @extschema@.koe5_query(new_text)
                               ELSE @extschema@.koe5_passage(new_text) END;
    END IF;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[1], embedding));
END
$$;
COMMENT ON FUNCTION koe5_embed_trigger() IS
    'Trigger: embeds column TG_ARGV[0] into TG_ARGV[1] (real[], vector or halfvec) as ''passage'' or ''query'' (TG_ARGV[2]) when the text changes';

-- Backfill ---------------------------------------------------------------------

-- One row per koe5_backfill() call. Committed with every batch, so other sessions
-- (and a rerun after a crash) see exactly what is done.
CREATE TABLE koe5_backfill_runs (
    run_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relid       oid NOT NULL,
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
    state       text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done')),
    last_error  text
);
ALTER TABLE koe5_backfill_runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY koe5_backfill_runs_read ON koe5_backfill_runs FOR SELECT USING (true);
CREATE POLICY koe5_backfill_runs_insert ON koe5_backfill_runs FOR INSERT WITH CHECK (run_by = current_user);
CREATE POLICY koe5_backfill_runs_update ON koe5_backfill_runs FOR UPDATE USING (run_by = current_user);
CREATE POLICY koe5_backfill_runs_delete ON koe5_backfill_runs FOR DELETE USING (run_by = current_user);
GRANT SELECT, INSERT, UPDATE, DELETE ON koe5_backfill_runs TO PUBLIC;

-- A running backfill holds this advisory lock (two keys: 'koe5' and the run id) in
-- every batch transaction; a run marked running whose lock nobody holds was stopped.
CREATE VIEW koe5_backfill_progress AS
SELECT r.run_id,
       r.relid::regclass AS table_name,
       r.source, r.target, r.kind, r.run_by, r.pid,
       CASE
           WHEN r.state = 'done' THEN 'done'
           WHEN EXISTS (SELECT FROM pg_catalog.pg_locks l
                        WHERE l.locktype = 'advisory' AND l.classid = 1802462517::oid
                          AND l.objid = r.run_id::oid AND l.objsubid = 2 AND l.granted) THEN 'running'
           ELSE 'stopped'
       END AS state,
       r.rows_done, r.rows_total, r.rows_failed,
       round(100.0 * r.rows_done / nullif(r.rows_total, 0), 1) AS percent,
       round((r.rows_done / nullif(extract(epoch FROM r.updated_at - r.started_at), 0))::numeric, 2) AS rows_per_second,
       CASE WHEN r.state = 'running' AND r.rows_done > 0 THEN
           (r.updated_at - r.started_at) * ((r.rows_total - r.rows_done - r.rows_failed)::float8 / r.rows_done)
       END AS time_left,
       r.started_at, r.updated_at, r.finished_at, r.last_error
FROM @extschema@.koe5_backfill_runs r;
GRANT SELECT ON koe5_backfill_progress TO PUBLIC;
COMMENT ON VIEW koe5_backfill_progress IS
    'Progress of koe5_backfill() runs, readable from any session while they run';

CREATE PROCEDURE koe5_backfill(tbl regclass, source text, target text, kind text DEFAULT 'passage',
                               batch_size integer DEFAULT 64)
    LANGUAGE plpgsql
AS $$
DECLARE
    run bigint;
    total bigint;
    done bigint := 0;
    failed bigint := 0;
    n bigint;
    ok bigint;
    skip tid[] := '{}';
    after tid := '(0,0)';
    last_tid tid;
    finished boolean;
    err text;
    started timestamptz := pg_catalog.clock_timestamp();
    last_notice timestamptz := started;
    pending_sql text;
    batch_sql text;
    row_sql text;
    fn text;
    r record;
BEGIN
    PERFORM @extschema@.koe5__check_kind(kind);
    PERFORM @extschema@.koe5__check_columns(tbl, source, target);
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    fn := pg_catalog.format('%I.%I', '@extschema@', 'koe5_' || kind);
    pending_sql := pg_catalog.format('FROM %s AS t WHERE t.%I IS NULL AND t.%I IS NOT NULL', tbl, target, source);
    -- One batch: lock rows still missing their embedding (skipping rows other sessions
    -- hold), embed their texts in one padded batch, write the vectors back by ctid.
    -- Batches walk the table in physical order (ctid > the last batch's largest), so
    -- each one starts where the last stopped instead of rescanning finished rows.
    batch_sql := pg_catalog.format(
        'WITH todo AS (SELECT t.ctid AS tid, t.%1$I::text AS body %2$s AND t.ctid > $3 AND t.ctid <> ALL ($2)
                       LIMIT $1 FOR UPDATE OF t SKIP LOCKED),
              batch AS (SELECT array_agg(tid) AS tids, array_agg(body) AS bodies FROM todo),
              updated AS (UPDATE %3$s AS t SET %4$I = z.embedding
                          FROM batch, ROWS FROM (pg_catalog.unnest(batch.tids), %5$s(batch.bodies)) AS z(tid, embedding)
                          WHERE t.ctid = z.tid RETURNING 1)
         SELECT (SELECT pg_catalog.count(*) FROM updated), (SELECT pg_catalog.max(tid) FROM todo)',
        source, pending_sql, tbl, target, fn);
    row_sql := pg_catalog.format('UPDATE %s AS t SET %I = %s($1) WHERE t.ctid = $2', tbl, target, fn);

    EXECUTE 'SELECT pg_catalog.count(*) ' || pending_sql INTO total;
    INSERT INTO @extschema@.koe5_backfill_runs (relid, source, target, kind, rows_total)
        VALUES (tbl, source, target, kind, total) RETURNING run_id INTO run;
    RAISE NOTICE 'koe5_backfill: run %, % rows of % to embed', run, total, tbl;
    COMMIT;

    LOOP
        PERFORM pg_catalog.pg_advisory_xact_lock(1802462517, run::integer);
        BEGIN
            EXECUTE batch_sql INTO n, last_tid USING batch_size, skip, after;
            ok := n;
        EXCEPTION WHEN OTHERS THEN
            -- Some text in the batch cannot be embedded or stored: go row by row,
            -- keep the rows that work, report and skip the others.
            n := 0;
            ok := 0;
            last_tid := NULL;
            FOR r IN EXECUTE pg_catalog.format(
                'SELECT t.ctid AS tid, t.%I::text AS body %s AND t.ctid > $3 AND t.ctid <> ALL ($2)
                 LIMIT $1 FOR UPDATE OF t SKIP LOCKED',
                source, pending_sql) USING batch_size, skip, after
            LOOP
                n := n + 1;
                last_tid := GREATEST(last_tid, r.tid);
                BEGIN
                    EXECUTE row_sql USING r.body, r.tid;
                    ok := ok + 1;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
                    skip := skip || r.tid;
                    RAISE WARNING 'koe5_backfill: row % of % not embedded: %', r.tid, tbl, err;
                END;
            END LOOP;
            IF n > 0 AND ok = 0 AND done = 0 THEN
                -- Nothing has ever worked: a setting or the table is wrong, not a row.
                RAISE EXCEPTION 'koe5_backfill: no row of % could be embedded: %', tbl, err
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
        END;
        done := done + ok;
        failed := failed + (n - ok);
        -- At the end of the table, look once more from its start (a scan may have
        -- begun mid-table, or rows may have moved); finished when that finds nothing.
        finished := n = 0 AND after = '(0,0)';
        after := CASE WHEN n = 0 THEN '(0,0)'::tid ELSE last_tid END;
        UPDATE @extschema@.koe5_backfill_runs
            SET rows_done = done, rows_failed = failed, updated_at = pg_catalog.clock_timestamp(),
                last_error = coalesce(err, last_error),
                state = CASE WHEN finished THEN 'done' ELSE 'running' END,
                finished_at = CASE WHEN finished THEN pg_catalog.clock_timestamp() END
            WHERE run_id = run;
        COMMIT;
        EXIT WHEN finished;
        IF pg_catalog.clock_timestamp() - last_notice >= interval '5 seconds' THEN
            last_notice := pg_catalog.clock_timestamp();
            RAISE NOTICE 'koe5_backfill: % of % rows (% %%), % rows/s',
                done, total, pg_catalog.round(100.0 * done / GREATEST(total, 1), 1),
                pg_catalog.round((done / GREATEST(extract(epoch FROM last_notice - started), 0.001))::numeric, 1);
        END IF;
    END LOOP;
    RAISE NOTICE 'koe5_backfill: % rows embedded, % failed, in % s', done, failed,
        pg_catalog.round(extract(epoch FROM pg_catalog.clock_timestamp() - started)::numeric, 1);
END
$$;
COMMENT ON PROCEDURE koe5_backfill(regclass, text, text, text, integer) IS
    'Embeds rows whose target is NULL in batches, committing after each; rerun to resume. Progress: koe5_backfill_progress';

-- Queue and background worker ------------------------------------------------------

CREATE TABLE koe5_queued_tables (
    relid         oid PRIMARY KEY,
    source        text NOT NULL,
    target        text NOT NULL,
    kind          text NOT NULL,
    key_columns   text[] NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    rows_done     bigint NOT NULL DEFAULT 0,
    last_done_at  timestamptz
);

CREATE TABLE koe5_queue (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relid           oid NOT NULL,
    row_key         jsonb NOT NULL,
    queued_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT '-infinity',
    last_error      text,
    failed_at       timestamptz
);
CREATE INDEX koe5_queue_pending ON koe5_queue (relid, id) WHERE failed_at IS NULL;

-- Rows that fail this many times are set aside as failed (see koe5_queue_failures).
CREATE FUNCTION koe5__queue_max_attempts() RETURNS integer
    IMMUTABLE PARALLEL SAFE LANGUAGE sql RETURN 3;

-- Records a changed row. Runs as the extension's owner so that writers need no
-- rights on the queue; it only accepts tables registered by koe5_enqueue_table().
CREATE FUNCTION koe5__enqueue_trigger() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    reg @extschema@.koe5_queued_tables;
    row_json jsonb;
BEGIN
    SELECT * INTO reg FROM @extschema@.koe5_queued_tables WHERE relid = TG_RELID;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relation "%" is not registered with koe5_enqueue_table()', TG_RELID::regclass
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    row_json := to_jsonb(NEW);
    IF TG_OP = 'UPDATE' AND to_jsonb(OLD) -> reg.source IS NOT DISTINCT FROM row_json -> reg.source THEN
        RETURN NULL;
    END IF;
    INSERT INTO @extschema@.koe5_queue (relid, row_key)
        SELECT TG_RELID, jsonb_object_agg(k, row_json -> k) FROM unnest(reg.key_columns) AS k;
    RETURN NULL;
END
$$;

-- Adds a table to the registry. Callable by anyone, but it only accepts a table that
-- already carries koe5's queue trigger: creating that trigger took the table's owner.
CREATE FUNCTION koe5__register(tbl regclass, source text, target text, kind text, key_columns text[])
    RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM FROM pg_trigger
        WHERE tgrelid = tbl AND tgname = 'koe5_enqueue'
          AND tgfoid = '@extschema@.koe5__enqueue_trigger()'::regprocedure;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relation "%" has no koe5_enqueue trigger', tbl::text
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO @extschema@.koe5_queued_tables (relid, source, target, kind, key_columns)
        VALUES (tbl, source, target, kind, key_columns)
        ON CONFLICT (relid) DO UPDATE
        SET source = excluded.source, target = excluded.target, kind = excluded.kind,
            key_columns = excluded.key_columns;
END
$$;

CREATE FUNCTION koe5__unregister(tbl regclass) RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM FROM pg_trigger
        WHERE tgrelid = tbl AND tgname = 'koe5_enqueue'
          AND tgfoid = '@extschema@.koe5__enqueue_trigger()'::regprocedure;
    IF FOUND THEN
        RAISE EXCEPTION 'relation "%" still has its koe5_enqueue trigger', tbl::text
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    DELETE FROM @extschema@.koe5_queue WHERE relid = tbl;
    DELETE FROM @extschema@.koe5_queued_tables WHERE relid = tbl;
END
$$;

CREATE FUNCTION koe5_enqueue_table(tbl regclass, source text, target text, kind text DEFAULT 'passage')
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text[];
BEGIN
    PERFORM @extschema@.koe5__check_kind(kind);
    PERFORM @extschema@.koe5__check_columns(tbl, source, target);
    SELECT array_agg(a.attname::text ORDER BY k.ord) INTO keys
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = tbl AND i.indisprimary;
    IF keys IS NULL THEN
        RAISE EXCEPTION 'relation "%" has no primary key', tbl::text
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The queue names rows by their primary key.';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS koe5_enqueue ON %s', tbl);
    EXECUTE format('CREATE TRIGGER koe5_enqueue AFTER INSERT OR UPDATE OF %I ON %s
                    FOR EACH ROW EXECUTE FUNCTION %I.koe5__enqueue_trigger()', source, tbl, '@extschema@');
    PERFORM @extschema@.koe5__register(tbl, source, target, kind, keys);
    -- Rows already in the table that lack an embedding join the queue too.
    EXECUTE format('INSERT INTO %I.koe5_queue (relid, row_key)
                    SELECT $1, (SELECT jsonb_object_agg(k, to_jsonb(t) -> k) FROM unnest($2) AS k)
                    FROM %s AS t WHERE t.%I IS NULL AND t.%I IS NOT NULL',
                   '@extschema@', tbl, target, source) USING tbl, keys;
END
$$;
COMMENT ON FUNCTION koe5_enqueue_table(regclass, text, text, text) IS
    'Embeds source into target in the background: writes queue changed rows, the koe5 worker (or koe5_process_queue()) embeds them';

CREATE FUNCTION koe5_dequeue_table(tbl regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS koe5_enqueue ON %s', tbl);
    PERFORM @extschema@.koe5__unregister(tbl);
END
$$;
COMMENT ON FUNCTION koe5_dequeue_table(regclass) IS
    'Stops background embedding for a table: drops its queue trigger and its queue';

-- Whether the session may process the queue of `tbl`: its login role (the worker's is
-- a superuser) must be able to act as the table's owner.
CREATE FUNCTION koe5__may_process(tbl regclass) RETURNS boolean
    STABLE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    RETURN (SELECT pg_has_role(session_user, c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = tbl);

-- Locks and returns the next due rows of a table's queue.
CREATE FUNCTION koe5__queue_take(tbl regclass, max_rows integer,
                                 OUT source text, OUT target text, OUT kind text, OUT key_columns text[],
                                 OUT ids bigint[], OUT keys jsonb[])
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT coalesce(@extschema@.koe5__may_process(tbl), false) THEN
        RAISE EXCEPTION 'permission denied to process the koe5 queue of "%"', tbl::text
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT r.source, r.target, r.kind, r.key_columns INTO source, target, kind, key_columns
        FROM @extschema@.koe5_queued_tables r WHERE r.relid = tbl;
    SELECT array_agg(q.id ORDER BY q.id), array_agg(q.row_key ORDER BY q.id) INTO ids, keys
    FROM (SELECT id, row_key FROM @extschema@.koe5_queue
          WHERE relid = tbl AND failed_at IS NULL AND next_attempt_at <= clock_timestamp()
          ORDER BY id LIMIT max_rows FOR UPDATE SKIP LOCKED) AS q;
END
$$;

-- Settles a batch: drops finished entries, counts failures (with back-off), and sets
-- aside entries that failed too often.
CREATE FUNCTION koe5__queue_finish(tbl regclass, done_ids bigint[], failed_ids bigint[], errors text[])
    RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT coalesce(@extschema@.koe5__may_process(tbl), false) THEN
        RAISE EXCEPTION 'permission denied to process the koe5 queue of "%"', tbl::text
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM @extschema@.koe5_queue WHERE relid = tbl AND id = ANY (done_ids);
    UPDATE @extschema@.koe5_queue AS q
        SET attempts = q.attempts + 1,
            last_error = f.error,
            next_attempt_at = clock_timestamp() + interval '1 second' * power(2, q.attempts),
            failed_at = CASE WHEN q.attempts + 1 >= @extschema@.koe5__queue_max_attempts() THEN clock_timestamp() END
        FROM unnest(failed_ids, errors) AS f(id, error)
        WHERE q.relid = tbl AND q.id = f.id;
    UPDATE @extschema@.koe5_queued_tables
        SET rows_done = rows_done + coalesce(cardinality(done_ids), 0), last_done_at = clock_timestamp()
        WHERE relid = tbl AND cardinality(done_ids) > 0;
END
$$;

-- Embeds the next batch of one table's queue. The worker calls it as the table's
-- owner; users may call it (or koe5_process_queue()) themselves.
CREATE FUNCTION koe5_process_queue_table(tbl regclass, max_rows integer DEFAULT 64) RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET extra_float_digits = 3
AS $$
DECLARE
    b record;
    fn text;
    match text;
    texts text[];
    found_keys jsonb[];
    done_ids bigint[] := '{}';
    failed_ids bigint[] := '{}';
    errors text[] := '{}';
    err text;
    i integer;
BEGIN
    SELECT * INTO b FROM @extschema@.koe5__queue_take(tbl, max_rows);
    IF b.ids IS NULL THEN
        RETURN 0;
    END IF;
    -- Load the model first: if it is missing or broken, fail the whole call without
    -- counting an attempt against any row.
    PERFORM @extschema@.koe5_token_count('');
    fn := format('%I.%I', '@extschema@', 'koe5_' || b.kind);
    SELECT format('(%s) = (%s)', string_agg(format('t.%I', c), ', '), string_agg(format('r.%I', c), ', '))
        INTO match FROM unnest(b.key_columns) AS c;
    -- The rows' current texts, in queue order (rows deleted since are simply done).
    EXECUTE format(
        'SELECT array_agg(q.k ORDER BY q.ord), array_agg(t.%I::text ORDER BY q.ord)
         FROM unnest($1) WITH ORDINALITY AS q(k, ord)
         CROSS JOIN LATERAL jsonb_populate_record(NULL::%s, q.k) AS r
         JOIN %s AS t ON %s', b.source, tbl, tbl, match)
        INTO found_keys, texts USING b.keys;
    IF found_keys IS NOT NULL THEN
        BEGIN
            -- One padded batch; a row whose text changed meanwhile is left to its newer entry.
            EXECUTE format(
                'UPDATE %1$s AS t SET %2$I = z.embedding
                 FROM ROWS FROM (unnest($1), unnest($2), %3$s($2)) AS z(k, body, embedding)
                 CROSS JOIN LATERAL jsonb_populate_record(NULL::%1$s, z.k) AS r
                 WHERE %4$s AND t.%5$I::text IS NOT DISTINCT FROM z.body', tbl, b.target, fn, match, b.source)
                USING found_keys, texts;
        EXCEPTION WHEN OTHERS THEN
            -- Row by row: the rows that work are stored, the others count a failure.
            FOR i IN 1 .. cardinality(found_keys) LOOP
                BEGIN
                    EXECUTE format(
                        'UPDATE %1$s AS t SET %2$I = CASE WHEN $2 IS NULL THEN NULL ELSE %3$s($2) END
                         FROM jsonb_populate_record(NULL::%1$s, $1) AS r
                         WHERE %4$s AND t.%5$I::text IS NOT DISTINCT FROM $2', tbl, b.target, fn, match, b.source)
                        USING found_keys[i], texts[i];
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
                    SELECT failed_ids || array_agg(q.id), errors || array_agg(err)
                        INTO failed_ids, errors
                        FROM unnest(b.ids, b.keys) AS q(id, k) WHERE q.k = found_keys[i];
                END;
            END LOOP;
        END;
    END IF;
    SELECT coalesce(array_agg(id), '{}') INTO done_ids FROM unnest(b.ids) AS id WHERE id <> ALL (failed_ids);
    PERFORM @extschema@.koe5__queue_finish(tbl, done_ids, failed_ids, errors);
    RETURN cardinality(b.ids);
END
$$;
COMMENT ON FUNCTION koe5_process_queue_table(regclass, integer) IS
    'Embeds up to max_rows queued rows of one table; returns how many queue entries it settled';

CREATE FUNCTION koe5_process_queue(max_rows integer DEFAULT 64) RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t oid;
    n integer := 0;
BEGIN
    FOR t IN SELECT relid FROM @extschema@.koe5_queue_status
             WHERE pending > 0 AND @extschema@.koe5__may_process(relid::regclass) LOOP
        n := n + @extschema@.koe5_process_queue_table(t::regclass, max_rows);
    END LOOP;
    RETURN n;
END
$$;

COMMENT ON FUNCTION koe5_process_queue(integer) IS
    'Embeds up to max_rows queued rows of every table the caller may process; for use without the background worker';

-- For the worker: one batch of one table, with errors logged instead of raised.
CREATE FUNCTION koe5__worker_step(tbl regclass, max_rows integer) RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    err text;
BEGIN
    RETURN @extschema@.koe5_process_queue_table(tbl, max_rows);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
    RAISE WARNING 'koe5 worker: could not embed the queue of "%": %', tbl::text, err;
    RETURN -1;
END
$$;

CREATE VIEW koe5_queue_status AS
SELECT r.relid::regclass AS table_name, r.relid, r.source, r.target, r.kind,
       (SELECT count(*) FROM @extschema@.koe5_queue q WHERE q.relid = r.relid AND q.failed_at IS NULL) AS pending,
       r.rows_done AS done,
       (SELECT count(*) FROM @extschema@.koe5_queue q WHERE q.relid = r.relid AND q.failed_at IS NOT NULL) AS failed,
       (SELECT q.last_error FROM @extschema@.koe5_queue q WHERE q.relid = r.relid AND q.last_error IS NOT NULL
        ORDER BY q.id DESC LIMIT 1) AS last_error,
       r.last_done_at
FROM @extschema@.koe5_queued_tables r
WHERE pg_catalog.has_table_privilege(r.relid, 'SELECT');
GRANT SELECT ON koe5_queue_status TO PUBLIC;
COMMENT ON VIEW koe5_queue_status IS
    'Background embedding per registered table: rows pending, done and failed, with the latest error';

CREATE VIEW koe5_queue_failures AS
SELECT q.relid::regclass AS table_name, q.row_key, q.attempts, q.last_error, q.queued_at, q.failed_at
FROM @extschema@.koe5_queue q
WHERE q.failed_at IS NOT NULL AND pg_catalog.has_table_privilege(q.relid, 'SELECT');
GRANT SELECT ON koe5_queue_failures TO PUBLIC;
COMMENT ON VIEW koe5_queue_failures IS 'Queued rows set aside after failing koe5__queue_max_attempts() times';

CREATE FUNCTION koe5_queue_retry(tbl regclass) RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF NOT coalesce(@extschema@.koe5__may_process(tbl), false) THEN
        RAISE EXCEPTION 'permission denied to retry the koe5 queue of "%"', tbl::text
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE @extschema@.koe5_queue
        SET attempts = 0, failed_at = NULL, next_attempt_at = '-infinity'
        WHERE relid = tbl AND failed_at IS NOT NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION koe5_queue_retry(regclass) IS 'Puts a table''s failed queue rows back in line; returns how many';


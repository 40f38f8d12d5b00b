-- As released, with only these two lines put on top in 0.4.0; frozen (scripts/check-released-sql.sh).
\echo Use "ALTER EXTENSION koe5 UPDATE TO '0.2.0'" to load this file. \quit
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

-- koe5_download() may be delegated with GRANT EXECUTE since 0.2.0.
COMMENT ON FUNCTION koe5_download() IS
    'Downloads koe5.model_id from the Hugging Face Hub into the server''s Hugging Face cache (superusers, and roles granted EXECUTE); returns the snapshot directory';

-- Pipelines: keep embeddings in step with tables.
--
--   koe5_embed_trigger()    a BEFORE trigger that embeds a row as it is written
--   koe5_backfill(...)      a procedure that embeds what is missing, batch by batch,
--                           committing as it goes, with progress others can read
--   koe5_enqueue_table(...) writes record changed rows in a queue; the background
--                           worker (or koe5_process_queue()) embeds them later
--
-- Every function here pins search_path with a SET clause; the procedure, which must
-- commit and so cannot carry one, pins it for each of its transactions. None is
-- SECURITY DEFINER except the event trigger that forgets dropped tables: users reach
-- the queue through row-level security, as themselves.

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
            USING ERRCODE = 'generated_always',
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
        embedding := CASE kind WHEN 'query' THEN @extschema@.koe5_query(new_text)
                               ELSE @extschema@.koe5_passage(new_text) END;
    END IF;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[1], embedding));
END
$$;
COMMENT ON FUNCTION koe5_embed_trigger() IS
    'Trigger: embeds column TG_ARGV[0] into TG_ARGV[1] (real[], vector or halfvec) as ''passage'' or ''query'' (TG_ARGV[2]) when the text changes';

-- The name of a relation as PostgreSQL's own messages give it: bare, unquoted.
CREATE FUNCTION koe5__relname(rel regclass) RETURNS text
    STABLE PARALLEL SAFE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    RETURN (SELECT c.relname::text FROM pg_class c WHERE c.oid = rel);

-- Whether the current user may act as the owner of `rel`.
CREATE FUNCTION koe5__owns(rel regclass) RETURNS boolean
    STABLE PARALLEL SAFE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    RETURN coalesce((SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = rel), false);

CREATE FUNCTION koe5__require_owner(rel regclass) RETURNS void
    STABLE LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT @extschema@.koe5__owns(rel) THEN
        RAISE EXCEPTION 'must be owner of table %', @extschema@.koe5__relname(rel)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- Backfill ---------------------------------------------------------------------

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
CREATE POLICY koe5_backfill_runs_delete ON koe5_backfill_runs FOR DELETE USING (run_by = current_user);
GRANT SELECT, INSERT, UPDATE, DELETE ON koe5_backfill_runs TO PUBLIC;

-- A run holds an advisory lock (keys 'koe5' and the run id) in each of its batch
-- transactions; a run marked running whose lock nobody holds was stopped.
CREATE VIEW koe5_backfill_progress AS
SELECT r.run_id,
       r.relid AS table_name,
       r.source, r.target, r.kind, r.run_by, r.pid,
       CASE
           WHEN r.state <> 'running' THEN r.state
           WHEN EXISTS (SELECT FROM pg_catalog.pg_locks l
                        WHERE l.locktype = 'advisory' AND l.classid = 1802462517::oid
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
        nblocks := pg_relation_size(part) / current_setting('block_size')::bigint;
        blk := 0;
        step := 8;
        final := nblocks = 0;
        skip := '{}';
        LOOP
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            PERFORM pg_try_advisory_xact_lock(1802462517, run::integer);
            range_sql := CASE WHEN final THEN '' ELSE
                format(' AND t.ctid >= %L::tid AND t.ctid < %L::tid', format('(%s,0)', blk), format('(%s,0)', blk + step))
            END;
            lock_sql := CASE WHEN final THEN 'FOR NO KEY UPDATE OF t' ELSE 'FOR NO KEY UPDATE OF t SKIP LOCKED' END;
            pending_sql := format('FROM ONLY %s AS t WHERE t.%I IS NULL AND t.%I IS NOT NULL AND t.ctid <> ALL ($2)%s',
                                  part, target, source, range_sql);
            err := NULL;
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
                        skip := skip || r.tid;
                        streak := streak + 1;
                        RAISE WARNING 'koe5_backfill: row % of "%" not embedded: %',
                            r.tid, @extschema@.koe5__relname(part), err;
                    END;
                    EXIT WHEN streak >= 32;
                END LOOP;
            END;
            done := done + ok;
            failed := failed + (n - ok);
            UPDATE @extschema@.koe5_backfill_runs
                SET rows_done = done, rows_failed = failed, updated_at = clock_timestamp(),
                    last_error = coalesce(err, last_error)
                WHERE run_id = run;
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
COMMENT ON PROCEDURE koe5_backfill(regclass, text, text, text, integer) IS
    'Embeds rows whose target is NULL in batches, committing after each; rerun to resume. Progress: koe5_backfill_progress';

-- Queue and background worker ------------------------------------------------------

-- Tables whose rows the worker embeds. Columns are kept by number, so renaming them
-- does not break the queue; rows are named by their primary key at processing time.
CREATE TABLE koe5_queued_tables (
    relid         regclass PRIMARY KEY,
    source_attnum smallint NOT NULL,
    target_attnum smallint NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('passage', 'query')),
    registered_at timestamptz NOT NULL DEFAULT now(),
    rows_done     bigint NOT NULL DEFAULT 0,
    last_done_at  timestamptz
);

CREATE SEQUENCE koe5_queue_id_seq;
CREATE TABLE koe5_queue (
    id              bigint PRIMARY KEY DEFAULT nextval('koe5_queue_id_seq'),
    relid           regclass NOT NULL,
    row_key         text[] NOT NULL,   -- the primary key's values, as text, in key order
    queued_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT '-infinity',
    last_error      text,
    failed_at       timestamptz
);
ALTER SEQUENCE koe5_queue_id_seq OWNED BY koe5_queue.id;
CREATE INDEX koe5_queue_pending ON koe5_queue (relid, id) WHERE failed_at IS NULL;

-- pg_dump does not keep registrations or the queue (restored tables may number their
-- columns differently): after a restore, call koe5_enqueue_table() again; until then
-- the restored trigger warns that the table is not registered and writes go on.

-- Owners register and process their tables; writers add entries for tables they may write.
ALTER TABLE koe5_queued_tables ENABLE ROW LEVEL SECURITY;
-- Everyone may see which tables are registered (a writer's trigger must).
CREATE POLICY koe5_queued_tables_read ON koe5_queued_tables FOR SELECT USING (true);
CREATE POLICY koe5_queued_tables_own ON koe5_queued_tables FOR ALL
    USING (@extschema@.koe5__owns(relid)) WITH CHECK (@extschema@.koe5__owns(relid));
GRANT SELECT, INSERT, UPDATE, DELETE ON koe5_queued_tables TO PUBLIC;

ALTER TABLE koe5_queue ENABLE ROW LEVEL SECURITY;
-- A writer may only add a fresh entry: the next id, no attempts, no error, due now.
CREATE POLICY koe5_queue_write ON koe5_queue FOR INSERT
    WITH CHECK (id = currval('@extschema@.koe5_queue_id_seq') AND attempts = 0 AND failed_at IS NULL
                AND last_error IS NULL AND next_attempt_at = '-infinity'
                AND EXISTS (SELECT FROM @extschema@.koe5_queued_tables r WHERE r.relid = koe5_queue.relid)
                AND coalesce(pg_catalog.has_any_column_privilege(relid, 'INSERT, UPDATE'), false));
CREATE POLICY koe5_queue_own ON koe5_queue FOR ALL
    USING (@extschema@.koe5__owns(relid)) WITH CHECK (@extschema@.koe5__owns(relid));
GRANT SELECT, INSERT, UPDATE, DELETE ON koe5_queue TO PUBLIC;
GRANT USAGE ON SEQUENCE koe5_queue_id_seq TO PUBLIC;

-- Rows that fail this many times are set aside as failed (see koe5_queue_failures).
CREATE FUNCTION koe5__queue_max_attempts() RETURNS integer
    IMMUTABLE PARALLEL SAFE LANGUAGE sql RETURN 3;

-- The primary key columns of `rel` in key order, with their types.
CREATE FUNCTION koe5__key_columns(rel regclass, OUT names text[], OUT types text[])
    STABLE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT array_agg(a.attname::text ORDER BY k.ord), array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.ord)
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = rel AND i.indisprimary;
END;

-- The name of column number `attnum` of `rel` (an error if it was dropped).
CREATE FUNCTION koe5__column_name(rel regclass, attnum smallint) RETURNS text
    STABLE LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    name text := (SELECT a.attname FROM pg_attribute a
                  WHERE a.attrelid = rel AND a.attnum = koe5__column_name.attnum AND NOT a.attisdropped);
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'a column of relation "%" registered with koe5_enqueue_table() was dropped',
            @extschema@.koe5__relname(rel)
            USING ERRCODE = 'undefined_column', HINT = 'Call koe5_enqueue_table() again.';
    END IF;
    RETURN name;
END
$$;

-- Records a changed row: runs as the writer, who needs no rights beyond writing the
-- table (the queue's policy checks them).
CREATE FUNCTION koe5__enqueue_trigger() RETURNS trigger
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
    SELECT string_agg(format('($1).%I::text', c), ', ') INTO keys FROM unnest((@extschema@.koe5__key_columns(TG_RELID)).names) AS c;
    EXECUTE format('SELECT ARRAY[%s]::text[]', keys) INTO row_key USING NEW;
    IF TG_OP = 'UPDATE' THEN
        -- Queue when the text changed, when the row got a new key (its old entry
        -- will find nothing), or when the target was emptied (a request to embed again).
        EXECUTE format('SELECT ($1).%1$I::text, ($2).%1$I::text, ($1).%2$I IS NULL AND ($2).%2$I IS NOT NULL',
                       source, target) INTO new_text, old_text, emptied USING NEW, OLD;
        EXECUTE format('SELECT ARRAY[%s]::text[]', keys) INTO old_key USING OLD;
        IF new_text IS NOT DISTINCT FROM old_text AND row_key = old_key AND NOT (emptied AND new_text IS NOT NULL) THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO @extschema@.koe5_queue (relid, row_key) VALUES (TG_RELID, row_key);
    RETURN NULL;
END
$$;

CREATE FUNCTION koe5_enqueue_table(tbl regclass, source text, target text, kind text DEFAULT 'passage')
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
                    SELECT $1, k.row_key FROM %2$s AS t, LATERAL (SELECT ARRAY[%3$s]::text[] AS row_key) AS k
                    WHERE t.%4$I IS NULL AND t.%5$I IS NOT NULL
                      AND NOT EXISTS (SELECT FROM %1$s.koe5_queue q
                                      WHERE q.relid = $1 AND q.row_key = k.row_key AND q.failed_at IS NULL)',
                   '@extschema@', tbl, (SELECT string_agg(format('t.%I::text', c), ', ') FROM unnest(key.names) AS c),
                   target, source)
        USING tbl;
END
$$;
COMMENT ON FUNCTION koe5_enqueue_table(regclass, text, text, text) IS
    'Embeds source into target in the background: writes queue changed rows, the koe5 worker (or koe5_process_queue()) embeds them';

CREATE FUNCTION koe5_dequeue_table(tbl regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM @extschema@.koe5__require_owner(tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS koe5_enqueue ON %s', tbl);
    DELETE FROM @extschema@.koe5_queue WHERE relid = tbl;
    DELETE FROM @extschema@.koe5_queued_tables WHERE relid = tbl;
END
$$;
COMMENT ON FUNCTION koe5_dequeue_table(regclass) IS
    'Stops background embedding for a table: drops its queue trigger and its queue';

-- Embeds the next batch of one table's queue, as the calling user (the worker calls it
-- as the table's owner).
CREATE FUNCTION koe5_process_queue_table(tbl regclass, max_rows integer DEFAULT 64) RETURNS integer
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
    DELETE FROM @extschema@.koe5_queue WHERE id = ANY (ids) AND id <> ALL (failed_ids);
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
COMMENT ON FUNCTION koe5_process_queue_table(regclass, integer) IS
    'Embeds up to max_rows queued rows of one table (its owner only); returns how many queue entries it settled';

CREATE VIEW koe5_queue_status AS
SELECT r.relid AS table_name, r.kind,
       (SELECT count(*) FROM @extschema@.koe5_queue q WHERE q.relid = r.relid AND q.failed_at IS NULL) AS pending,
       r.rows_done AS done,
       (SELECT count(*) FROM @extschema@.koe5_queue q WHERE q.relid = r.relid AND q.failed_at IS NOT NULL) AS failed,
       (SELECT q.last_error FROM @extschema@.koe5_queue q WHERE q.relid = r.relid AND q.last_error IS NOT NULL
        ORDER BY q.id DESC LIMIT 1) AS last_error,
       r.last_done_at
FROM @extschema@.koe5_queued_tables r
WHERE coalesce(pg_catalog.has_table_privilege(r.relid, 'SELECT'), false);
GRANT SELECT ON koe5_queue_status TO PUBLIC;
COMMENT ON VIEW koe5_queue_status IS
    'Background embedding per registered table: rows pending, done and failed, with the latest error, for the tables the user may read';

CREATE VIEW koe5_queue_failures AS
SELECT q.relid AS table_name, q.row_key, q.attempts, q.last_error, q.queued_at, q.failed_at
FROM @extschema@.koe5_queue q
WHERE q.failed_at IS NOT NULL AND coalesce(pg_catalog.has_table_privilege(q.relid, 'SELECT'), false);
GRANT SELECT ON koe5_queue_failures TO PUBLIC;
COMMENT ON VIEW koe5_queue_failures IS 'Queued rows set aside after failing koe5__queue_max_attempts() times';

CREATE FUNCTION koe5_process_queue(max_rows integer DEFAULT 64) RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t regclass;
    n integer := 0;
    err text;
BEGIN
    FOR t IN SELECT r.relid FROM @extschema@.koe5_queued_tables r WHERE @extschema@.koe5__owns(r.relid) ORDER BY 1 LOOP
        BEGIN
            n := n + @extschema@.koe5_process_queue_table(t, max_rows);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
            RAISE WARNING 'koe5: could not embed the queue of "%": %', @extschema@.koe5__relname(t), err;
        END;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION koe5_process_queue(integer) IS
    'Embeds up to max_rows queued rows of every table the caller owns; for use without the background worker';

CREATE FUNCTION koe5_queue_retry(tbl regclass) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM @extschema@.koe5__require_owner(tbl);
    UPDATE @extschema@.koe5_queue
        SET attempts = 0, failed_at = NULL, next_attempt_at = '-infinity'
        WHERE relid = tbl AND failed_at IS NOT NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION koe5_queue_retry(regclass) IS 'Puts a table''s failed queue rows back in line; returns how many';

-- A dropped table leaves nothing behind in the queue. The function deletes by the
-- dropped objects' OIDs and runs no user code, so it may run as the extension's owner.
CREATE FUNCTION koe5__forget_dropped_tables() RETURNS event_trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    gone oid[] := (SELECT array_agg(d.objid) FROM pg_event_trigger_dropped_objects() AS d
                   WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0);
BEGIN
    IF gone IS NOT NULL AND to_regclass('@extschema@.koe5_queue') IS NOT NULL THEN
        DELETE FROM @extschema@.koe5_queue WHERE relid::oid = ANY (gone);
        DELETE FROM @extschema@.koe5_queued_tables WHERE relid::oid = ANY (gone);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION koe5__forget_dropped_tables() FROM PUBLIC;
CREATE EVENT TRIGGER koe5_forget_dropped_tables ON sql_drop EXECUTE FUNCTION koe5__forget_dropped_tables();

-- 0.2.0 packs a batch's texts back to back (no padding): the batch forms' descriptions say so.
COMMENT ON FUNCTION koe5_query(text[]) IS
    'Embeds many queries in batches; one row per element, in input order, NULL for a NULL element';
COMMENT ON FUNCTION koe5_passage(text[]) IS
    'Embeds many passages in batches; one row per element, in input order, NULL for a NULL element';

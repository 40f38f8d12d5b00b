-- koe5: the queue and the background worker. koe5_enqueue_table() puts a table's
-- changed rows in a queue (a trigger), and the worker, or koe5_process_queue(), embeds
-- them later, as the table's owner; views show what is pending and what failed.

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
-- Only these privileges, whatever a site's ALTER DEFAULT PRIVILEGES gives PUBLIC: see
-- koe5_queue below.
REVOKE ALL ON koe5_queued_tables FROM PUBLIC;
GRANT SELECT, INSERT ON koe5_queued_tables TO PUBLIC;
GRANT UPDATE (source_attnum, target_attnum, kind, rows_done, last_done_at) ON koe5_queued_tables TO PUBLIC;

ALTER TABLE koe5_queue ENABLE ROW LEVEL SECURITY;
-- A writer may only add a fresh entry: the next id, no attempts, no error, due now.
CREATE POLICY koe5_queue_write ON koe5_queue FOR INSERT
    WITH CHECK (id = currval('@extschema@.koe5_queue_id_seq') AND attempts = 0 AND failed_at IS NULL
                AND last_error IS NULL AND next_attempt_at = '-infinity'
                AND EXISTS (SELECT FROM @extschema@.koe5_queued_tables r WHERE r.relid = koe5_queue.relid)
                AND coalesce(pg_catalog.has_any_column_privilege(relid, 'INSERT, UPDATE'), false));
CREATE POLICY koe5_queue_own ON koe5_queue FOR ALL
    USING (@extschema@.koe5__owns(relid)) WITH CHECK (@extschema@.koe5__owns(relid));
-- Writers add entries and processing updates them; deleting entries goes through
-- koe5__forget_queue(). Table-level privileges beyond SELECT and INSERT (UPDATE,
-- DELETE, TRUNCATE, ...) would let any role LOCK the queue and stall every writer;
-- column privileges allow no LOCK at all. REVOKE first: a site's ALTER DEFAULT
-- PRIVILEGES may give PUBLIC everything on new tables.
REVOKE ALL ON koe5_queue FROM PUBLIC;
REVOKE ALL ON SEQUENCE koe5_queue_id_seq FROM PUBLIC;
GRANT SELECT, INSERT ON koe5_queue TO PUBLIC;
GRANT UPDATE (attempts, next_attempt_at, last_error, failed_at) ON koe5_queue TO PUBLIC;
GRANT USAGE ON SEQUENCE koe5_queue_id_seq TO PUBLIC;

-- Rows that fail this many times are set aside as failed (see koe5_queue_failures).
CREATE FUNCTION koe5__queue_max_attempts() RETURNS integer
    IMMUTABLE PARALLEL SAFE LANGUAGE sql RETURN 3;

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
COMMENT ON FUNCTION koe5_enqueue_table(regclass, text, text, text) IS
    'Embeds source into target in the background: writes queue changed rows, the koe5 worker (or koe5_process_queue()) embeds them';

-- Deletes queue entries of `tbl` (those in `ids`, or all of them and the registration
-- when `whole_table`), for a caller who owns the table: the caller's rights are
-- checked, then the DELETE runs as the owner of koe5's queue with search_path pinned,
-- in a security-restricted operation.
CREATE FUNCTION koe5__forget_queue(tbl regclass, ids bigint[], whole_table boolean) RETURNS bigint
    VOLATILE PARALLEL UNSAFE
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_forget_queue_wrapper';
COMMENT ON FUNCTION koe5__forget_queue(regclass, bigint[], boolean) IS
    'Internal: deletes queue entries of a table the caller owns (those in ids, or all and the registration with whole_table); used by koe5_process_queue_table and koe5_dequeue_table';

CREATE FUNCTION koe5_dequeue_table(tbl regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM @extschema@.koe5__require_owner(tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS koe5_enqueue ON %s', tbl);
    PERFORM @extschema@.koe5__forget_queue(tbl, NULL, true);
END
$$;
COMMENT ON FUNCTION koe5_dequeue_table(regclass) IS
    'Stops background embedding for a table: drops its queue trigger and its queue';

-- Embeds the next batch of one table's queue, as the calling user (the worker calls it
-- as the table's owner). Its settings are the ones row keys are rendered in (see
-- koe5__key_text()): the casts of `match` read them back.
CREATE FUNCTION koe5_process_queue_table(tbl regclass, max_rows integer DEFAULT 64) RETURNS integer
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
-- Read only: these views are simple enough to be updatable, and a view writes (and
-- locks) its table as its owner, past row-level security.
REVOKE ALL ON koe5_queue_status FROM PUBLIC;
GRANT SELECT ON koe5_queue_status TO PUBLIC;
COMMENT ON VIEW koe5_queue_status IS
    'Background embedding per registered table: rows pending, done and failed, with the latest error, for the tables the user may read';

CREATE VIEW koe5_queue_failures AS
SELECT q.relid AS table_name, q.row_key, q.attempts, q.last_error, q.queued_at, q.failed_at
FROM @extschema@.koe5_queue q
WHERE q.failed_at IS NOT NULL AND coalesce(pg_catalog.has_table_privilege(q.relid, 'SELECT'), false);
REVOKE ALL ON koe5_queue_failures FROM PUBLIC;
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

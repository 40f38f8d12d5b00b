-- koe5: what the three pipelines share. The pipelines keep embeddings in step with
-- tables:
--
--   koe5_embed_trigger()    a BEFORE trigger that embeds a row as it is written (trigger.sql)
--   koe5_backfill(...)      a procedure that embeds what is missing, batch by batch,
--                           committing as it goes, with progress others can read (backfill.sql)
--   koe5_enqueue_table(...) writes record changed rows in a queue; the background
--                           worker (or koe5_process_queue()) embeds them later (queue.sql)
--
-- Every function of theirs pins search_path with a SET clause; the procedure, which
-- must commit and so cannot carry one, pins it for each of its transactions. They run
-- as the caller, with two exceptions that run no user code: the event trigger that
-- forgets dropped tables (SECURITY DEFINER) and koe5__forget_queue(), which deletes
-- queue entries as the queue's owner once it has checked that the caller owns the table.

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

-- Rejects anything but the two kinds of text the model embeds.
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

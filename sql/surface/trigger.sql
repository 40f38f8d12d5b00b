-- koe5: the embedding trigger. A BEFORE trigger that embeds a row's text as it is written.

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
        embedding := @extschema@.koe5__embed(new_text, kind);
    END IF;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[1], embedding));
END
$$;
COMMENT ON FUNCTION koe5_embed_trigger() IS
    'Trigger: embeds column TG_ARGV[0] into TG_ARGV[1] (real[], vector or halfvec) as ''passage'' or ''query'' (TG_ARGV[2]) when the text changes';

-- koe5: embedding. Texts in, unit-length real[] vectors out, one at a time or in
-- batches. The functions are IMMUTABLE: a text's vector depends on the loaded model
-- (koe5_model_info() identifies it by SHA-256) and on koe5.precision (bf16 vectors
-- differ slightly from f32 ones, cosine >= 0.9999: README, Precision). Re-embed stored
-- vectors after changing either.

CREATE FUNCTION koe5_query(text) RETURNS real[]
    IMMUTABLE STRICT PARALLEL SAFE COST 10000
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_query_wrapper';
COMMENT ON FUNCTION koe5_query(text) IS
    'Embeds a search query (the model sees ''query: '' || text); returns a unit-length real[] of the model''s dimension';

CREATE FUNCTION koe5_passage(text) RETURNS real[]
    IMMUTABLE STRICT PARALLEL SAFE COST 10000
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_passage_wrapper';
COMMENT ON FUNCTION koe5_passage(text) IS
    'Embeds a document passage (the model sees ''passage: '' || text); returns a unit-length real[] of the model''s dimension';

CREATE FUNCTION koe5_query(text[]) RETURNS SETOF real[]
    IMMUTABLE STRICT PARALLEL SAFE COST 10000 ROWS 100
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_query_batch_wrapper';
COMMENT ON FUNCTION koe5_query(text[]) IS
    'Embeds many queries in batches; one row per element, in input order, NULL for a NULL element';

CREATE FUNCTION koe5_passage(text[]) RETURNS SETOF real[]
    IMMUTABLE STRICT PARALLEL SAFE COST 10000 ROWS 100
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_passage_batch_wrapper';
COMMENT ON FUNCTION koe5_passage(text[]) IS
    'Embeds many passages in batches; one row per element, in input order, NULL for a NULL element';

-- Helpers on embeddings and texts.

CREATE FUNCTION koe5_similarity(real[], real[]) RETURNS real
    IMMUTABLE STRICT PARALLEL SAFE COST 5
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_similarity_wrapper';
COMMENT ON FUNCTION koe5_similarity(real[], real[]) IS
    'Cosine similarity of two embeddings of equal length';

CREATE FUNCTION koe5_token_count(text) RETURNS integer
    IMMUTABLE STRICT PARALLEL SAFE COST 100
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_token_count_wrapper';
COMMENT ON FUNCTION koe5_token_count(text) IS
    'Tokens the model sees for a passage before truncation, prefix and special tokens included';

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

-- koe5 0.6.0: reranking as a pipeline.
--   koe5_download('reranker'): fetches koe5.reranker_id's cross-encoder into the
--     server's Hugging Face cache (koe5_download() and koe5_download('model') fetch the
--     embedding model, as before).
--   koe5_hybrid_rerank(NULL::table, query, vector_column, text_column, k, candidates,
--     ...): hybrid search, its best candidates reranked by the cross-encoder, the best
--     k returned, in one call.
--   (Not SQL: with koe5.preload the postmaster also loads the cross-encoder.)
-- The same statements as sql/surface/model.sql and hybrid.sql.

\echo Use "ALTER EXTENSION koe5 UPDATE TO '0.6.0'" to load this file. \quit

CREATE FUNCTION koe5_download(which text) RETURNS text
    VOLATILE STRICT PARALLEL UNSAFE
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_download_which_wrapper';
COMMENT ON FUNCTION koe5_download(text) IS
    'Downloads koe5.model_id (''model'') or the cross-encoder koe5.reranker_id (''reranker'') from the Hugging Face Hub into the server''s Hugging Face cache (superusers, and roles granted EXECUTE); returns the snapshot directory';
REVOKE ALL ON FUNCTION koe5_download(text) FROM PUBLIC;

-- The whole pipeline in one call: the best `candidates` rows of koe5_hybrid_search()
-- (each side keeping `candidates` too), reranked by the cross-encoder
-- (koe5_rerank(query, passages), koe5.reranker_path) over passage_column (text_column
-- when NULL), the best k returned by its score; ties, and rows whose passage is NULL
-- (no score, last), keep their hybrid order. Dense-only or lexical-only candidates:
-- lexical_weight => 0 or dense_weight => 0.
CREATE FUNCTION koe5_hybrid_rerank(
    rel anyelement, query text, vector_column text, text_column text,
    k integer DEFAULT 5, candidates integer DEFAULT 50, passage_column text DEFAULT NULL,
    rrf_k integer DEFAULT 2, dense_weight float8 DEFAULT 1.0, lexical_weight float8 DEFAULT 0.75,
    config regconfig DEFAULT 'koe5', mode text DEFAULT 'or')
    RETURNS TABLE (doc anyelement, score real, hybrid_rank integer, dense_rank integer, lexical_rank integer)
    VOLATILE ROWS 5
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel_type regtype := pg_typeof(rel);
    relid oid := (SELECT t.typrelid FROM pg_type t WHERE t.oid = rel_type);
    passage text := coalesce(passage_column, text_column);
    passage_oid oid;
BEGIN
    IF relid IS NULL OR relid = 0 THEN
        RAISE EXCEPTION 'type % is not the row type of a table', rel_type
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Name the table by a null of its row type: koe5_hybrid_rerank(NULL::docs, ...).';
    END IF;
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'k must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF candidates IS NULL OR candidates < 1 THEN
        RAISE EXCEPTION 'candidates must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF passage IS NULL OR vector_column IS NULL THEN
        RAISE EXCEPTION 'vector and text columns must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT a.atttypid INTO passage_oid FROM pg_attribute a
        WHERE a.attrelid = relid AND a.attname = passage AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation "%" does not exist', passage, @extschema@.koe5__relname(relid)
            USING ERRCODE = 'undefined_column';
    END IF;
    IF passage_oid NOT IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype) THEN
        RAISE EXCEPTION 'column "%" of relation "%" is of type %', passage, @extschema@.koe5__relname(relid),
                        format_type(passage_oid, NULL)
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'The cross-encoder reads text: name a text column with passage_column.';
    END IF;
    -- koe5_hybrid_search checks the rest (and returns nothing for a NULL query).
    RETURN QUERY EXECUTE format(
$sql$WITH fused AS MATERIALIZED (
    SELECT h.doc, h.n::integer AS hybrid_rank, h.dense_rank, h.lexical_rank, (h.doc).%1$I::text AS passage
    FROM %2$s.koe5_hybrid_search($1, $2, $3, $4, k => $5, candidates => $5, rrf_k => $6, dense_weight => $7,
                                 lexical_weight => $8, config => $9, mode => $10)
         WITH ORDINALITY AS h(doc, score, dense_rank, lexical_rank, n)
), scored AS (
    SELECT s.score, s.n::integer AS n
    FROM %2$s.koe5_rerank($2, ARRAY(SELECT f.passage FROM fused AS f ORDER BY f.hybrid_rank))
         WITH ORDINALITY AS s(score, n)
)
SELECT f.doc, s.score, f.hybrid_rank, f.dense_rank, f.lexical_rank
FROM fused AS f JOIN scored AS s ON s.n = f.hybrid_rank
ORDER BY s.score DESC NULLS LAST, f.hybrid_rank
LIMIT $11$sql$, passage, '@extschema@')
    USING rel, query, vector_column, text_column, candidates, rrf_k, dense_weight, lexical_weight, config, mode, k;
END
$$;
COMMENT ON FUNCTION koe5_hybrid_rerank(anyelement, text, text, text, integer, integer, text, integer, float8, float8, regconfig, text) IS
    'Hybrid search then reranking in one call: the best candidates rows of koe5_hybrid_search(), scored by the cross-encoder (koe5_rerank) on passage_column (text_column when NULL); the best k by that score, with their hybrid, dense and lexical ranks';

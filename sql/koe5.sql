-- koe5: KoE5 text embeddings inside PostgreSQL.
-- The whole SQL surface of the extension, written by hand (the Rust functions are
-- declared with `sql = false`). Embedding functions are IMMUTABLE: the vector of a text
-- depends only on the loaded model, which koe5_model_info() identifies by SHA-256.
-- Re-embed stored vectors if you change models.

-- Embedding ------------------------------------------------------------------

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
    'Embeds many queries in padded batches; one row per element, in input order, NULL for a NULL element';

CREATE FUNCTION koe5_passage(text[]) RETURNS SETOF real[]
    IMMUTABLE STRICT PARALLEL SAFE COST 10000 ROWS 100
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_passage_batch_wrapper';
COMMENT ON FUNCTION koe5_passage(text[]) IS
    'Embeds many passages in padded batches; one row per element, in input order, NULL for a NULL element';

-- Helpers ---------------------------------------------------------------------

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

-- Model -----------------------------------------------------------------------

CREATE FUNCTION koe5_model_info() RETURNS jsonb
    VOLATILE PARALLEL RESTRICTED
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_model_info_wrapper';
COMMENT ON FUNCTION koe5_model_info() IS
    'Describes the model the settings select: directory, dimension, max tokens, pooling, normalisation, weights SHA-256, and whether this backend has it loaded';

CREATE FUNCTION koe5_download() RETURNS text
    VOLATILE PARALLEL UNSAFE
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_download_wrapper';
COMMENT ON FUNCTION koe5_download() IS
    'Downloads koe5.model_id from the Hugging Face Hub into the server''s Hugging Face cache (superuser only); returns the snapshot directory';
REVOKE ALL ON FUNCTION koe5_download() FROM PUBLIC;

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

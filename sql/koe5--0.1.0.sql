-- As released, with only these two lines put on top in 0.4.0; frozen (scripts/check-released-sql.sh).
\echo Use "CREATE EXTENSION koe5 VERSION '0.1.0'" to load this file. \quit
-- The install script of koe5 0.1.0 as released (sql/koe5.sql at commit e5d7223), kept
-- so that tests can install 0.1.0 and upgrade it.
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

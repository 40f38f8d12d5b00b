-- koe5: the model. What the settings select, and fetching it from the Hugging Face Hub.

CREATE FUNCTION koe5_model_info() RETURNS jsonb
    VOLATILE PARALLEL RESTRICTED
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_model_info_wrapper';
COMMENT ON FUNCTION koe5_model_info() IS
    'Describes the model the settings select: directory, dimension, max tokens, pooling, normalisation, weights SHA-256, and whether this backend has it loaded';

CREATE FUNCTION koe5_download() RETURNS text
    VOLATILE PARALLEL UNSAFE
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_download_wrapper';
COMMENT ON FUNCTION koe5_download() IS
    'Downloads koe5.model_id from the Hugging Face Hub into the server''s Hugging Face cache (superusers, and roles granted EXECUTE); returns the snapshot directory';
REVOKE ALL ON FUNCTION koe5_download() FROM PUBLIC;

CREATE FUNCTION koe5_download(which text) RETURNS text
    VOLATILE STRICT PARALLEL UNSAFE
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_download_which_wrapper';
COMMENT ON FUNCTION koe5_download(text) IS
    'Downloads koe5.model_id (''model'') or the cross-encoder koe5.reranker_id (''reranker'') from the Hugging Face Hub into the server''s Hugging Face cache (superusers, and roles granted EXECUTE); returns the snapshot directory';
REVOKE ALL ON FUNCTION koe5_download(text) FROM PUBLIC;

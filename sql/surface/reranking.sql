-- koe5: reranking. A cross-encoder (koe5.reranker_path, or koe5.reranker_id in the
-- Hugging Face cache) reads a query and a passage together and scores the pair, as
-- sentence-transformers' CrossEncoder.predict does for that model: the model's
-- configured activation of its one output (sigmoid for the bge rerankers). Like the
-- embedding functions they are IMMUTABLE for a given model and precision
-- (koe5_reranker_info() identifies the model by SHA-256).

CREATE FUNCTION koe5_rerank_score(query text, passage text) RETURNS real
    IMMUTABLE STRICT PARALLEL SAFE COST 20000
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_rerank_score_wrapper';
COMMENT ON FUNCTION koe5_rerank_score(text, text) IS
    'The cross-encoder''s relevance score of passage for query (koe5.reranker_path): higher is more relevant';

CREATE FUNCTION koe5_rerank(query text, passages text[]) RETURNS SETOF real
    IMMUTABLE STRICT PARALLEL SAFE COST 20000 ROWS 50
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_rerank_wrapper';
COMMENT ON FUNCTION koe5_rerank(text, text[]) IS
    'Scores many passages for one query in batches; one row per element, in input order (WITH ORDINALITY), NULL for a NULL element';

CREATE FUNCTION koe5_reranker_info() RETURNS jsonb
    VOLATILE PARALLEL RESTRICTED
    LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_reranker_info_wrapper';
COMMENT ON FUNCTION koe5_reranker_info() IS
    'Describes the cross-encoder the settings select: directory, max tokens, activation, weights SHA-256, and whether this backend has it loaded';

-- koe5: chunking. Cuts long documents into pieces the model can embed whole; the
-- core cuts UTF-8, koe5_chunks converts back to the server's encoding.

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

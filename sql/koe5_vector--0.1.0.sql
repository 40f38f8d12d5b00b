-- koe5_vector: the koe5 embedding functions with pgvector's types, so that
-- `ORDER BY emb <=> koe5_query_vector('...')` needs no cast. A separate extension, so
-- that koe5 itself does not depend on pgvector:
--
--     CREATE EXTENSION koe5_vector CASCADE;   -- installs koe5 and vector if missing
--
-- The bodies are SQL-standard (BEGIN ATOMIC): their references are resolved here,
-- where search_path holds koe5's and vector's schemas, and never at call time.

\echo Use "CREATE EXTENSION koe5_vector" to load this file. \quit

CREATE FUNCTION koe5_query_vector(text) RETURNS vector
    IMMUTABLE STRICT PARALLEL SAFE COST 10000 LANGUAGE sql
BEGIN ATOMIC
    SELECT koe5_query($1)::vector;
END;
COMMENT ON FUNCTION koe5_query_vector(text) IS 'koe5_query() as a pgvector vector';

CREATE FUNCTION koe5_passage_vector(text) RETURNS vector
    IMMUTABLE STRICT PARALLEL SAFE COST 10000 LANGUAGE sql
BEGIN ATOMIC
    SELECT koe5_passage($1)::vector;
END;
COMMENT ON FUNCTION koe5_passage_vector(text) IS 'koe5_passage() as a pgvector vector';

CREATE FUNCTION koe5_query_halfvec(text) RETURNS halfvec
    IMMUTABLE STRICT PARALLEL SAFE COST 10000 LANGUAGE sql
BEGIN ATOMIC
    SELECT koe5_query($1)::halfvec;
END;
COMMENT ON FUNCTION koe5_query_halfvec(text) IS 'koe5_query() as a pgvector halfvec (half precision)';

CREATE FUNCTION koe5_passage_halfvec(text) RETURNS halfvec
    IMMUTABLE STRICT PARALLEL SAFE COST 10000 LANGUAGE sql
BEGIN ATOMIC
    SELECT koe5_passage($1)::halfvec;
END;
COMMENT ON FUNCTION koe5_passage_halfvec(text) IS 'koe5_passage() as a pgvector halfvec (half precision)';

CREATE FUNCTION koe5_passage_vector(text[]) RETURNS SETOF vector
    IMMUTABLE STRICT PARALLEL SAFE COST 10000 ROWS 100 LANGUAGE sql
BEGIN ATOMIC
    SELECT e::vector FROM koe5_passage($1) WITH ORDINALITY AS t(e, n) ORDER BY n;
END;
COMMENT ON FUNCTION koe5_passage_vector(text[]) IS 'koe5_passage(text[]) as pgvector vectors, in input order';

CREATE FUNCTION koe5_passage_halfvec(text[]) RETURNS SETOF halfvec
    IMMUTABLE STRICT PARALLEL SAFE COST 10000 ROWS 100 LANGUAGE sql
BEGIN ATOMIC
    SELECT e::halfvec FROM koe5_passage($1) WITH ORDINALITY AS t(e, n) ORDER BY n;
END;
COMMENT ON FUNCTION koe5_passage_halfvec(text[]) IS 'koe5_passage(text[]) as pgvector halfvecs, in input order';

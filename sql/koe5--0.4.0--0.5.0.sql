-- koe5 0.5.0: Korean text search and hybrid search.
--   The text search parser koe5 (the model's sentencepiece pieces, Hangul bigrams and
--     whole words), the dictionary template koe5, the dictionaries koe5 and
--     koe5_content, and the configuration koe5: to_tsvector('koe5', body).
--   koe5_tsquery(config, query, mode) and koe5_hybrid_search(NULL::table, query,
--     vector_column, text_column, ...): dense and lexical search fused by reciprocal
--     rank in one call (koe5__hybrid_sql() writes the statement it runs).
--   koe5_rerank_score(query, passage), koe5_rerank(query, passages[]) and
--     koe5_reranker_info(): a cross-encoder (koe5.reranker_path / koe5.reranker_id).
-- The same statements as sql/surface/reranking.sql, textsearch.sql and hybrid.sql.

\echo Use "ALTER EXTENSION koe5 UPDATE TO '0.5.0'" to load this file. \quit

-- koe5: Korean text search. A parser that cuts text into the model's sentencepiece
-- pieces (a word and its particle come apart) and gives, beside them, every two
-- neighbouring Hangul syllables of a word (which match a word however the tokenizer
-- cuts it inside a compound); a dictionary that turns a token into its lexeme (NFKC,
-- lower-case, edge punctuation trimmed; particles kept or dropped); and the
-- configuration `koe5` that joins them: pieces with particles and endings dropped,
-- and bigrams (the choice measured on data/eval: bench/RESULTS-retrieval.md):
--
--     SELECT to_tsvector('koe5', body) @@ websearch_to_tsquery('koe5', question);
--     CREATE INDEX ON docs USING gin (to_tsvector('koe5', body));
--
-- Immutable as expression indexes need: the parser uses the XLM-R tokenizer built into
-- the library, never the model a session loads (src/textsearch.rs). (This file stays
-- ASCII: an extension script is read in the database's encoding.)

CREATE FUNCTION koe5__ts_start(internal, integer) RETURNS internal
    STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_ts_start_wrapper';
CREATE FUNCTION koe5__ts_gettoken(internal, internal, internal) RETURNS internal
    STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_ts_gettoken_wrapper';
CREATE FUNCTION koe5__ts_end(internal) RETURNS void
    STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_ts_end_wrapper';
CREATE FUNCTION koe5__ts_lextype(internal) RETURNS internal
    STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_ts_lextype_wrapper';
CREATE TEXT SEARCH PARSER koe5 (
    START = koe5__ts_start, GETTOKEN = koe5__ts_gettoken, END = koe5__ts_end,
    LEXTYPES = koe5__ts_lextype, HEADLINE = pg_catalog.prsd_headline);
COMMENT ON TEXT SEARCH PARSER koe5 IS
    'Korean (and any) text cut into the pieces of the XLM-R tokenizer KoE5 uses; Hangul bigrams and whole words of several pieces besides';

CREATE FUNCTION koe5__ts_dict_init(internal) RETURNS internal
    STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_ts_dict_init_wrapper';
CREATE FUNCTION koe5__ts_lexize(internal, internal, internal, internal) RETURNS internal
    STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'koe5_ts_lexize_wrapper';
CREATE TEXT SEARCH TEMPLATE koe5 (INIT = koe5__ts_dict_init, LEXIZE = koe5__ts_lexize);
COMMENT ON TEXT SEARCH TEMPLATE koe5 IS
    'Lexemes of koe5 pieces: NFKC, lower-case, edge punctuation trimmed; option particles = keep | drop';

CREATE TEXT SEARCH DICTIONARY koe5 (TEMPLATE = koe5, particles = keep);
COMMENT ON TEXT SEARCH DICTIONARY koe5 IS 'koe5 pieces as lexemes, particles and endings kept';
CREATE TEXT SEARCH DICTIONARY koe5_content (TEMPLATE = koe5, particles = drop);
COMMENT ON TEXT SEARCH DICTIONARY koe5_content IS 'koe5 pieces as lexemes, particles and endings dropped as stop words';

CREATE TEXT SEARCH CONFIGURATION koe5 (PARSER = koe5);
ALTER TEXT SEARCH CONFIGURATION koe5 ADD MAPPING FOR piece WITH koe5_content;
ALTER TEXT SEARCH CONFIGURATION koe5 ADD MAPPING FOR bigram WITH koe5_content;
COMMENT ON TEXT SEARCH CONFIGURATION koe5 IS
    'Korean text search on the model''s pieces (particles and endings dropped) and Hangul bigrams: to_tsvector(''koe5'', body), websearch_to_tsquery(''koe5'', q)';

-- koe5: hybrid search. One call ranks a table's rows twice, by embedding (pgvector's
-- `<=>` over an HNSW index) and by words (full text search over a GIN index), and
-- fuses the two lists by reciprocal rank:
--
--     score = dense_weight / (rrf_k + dense_rank) + lexical_weight / (rrf_k + lexical_rank)
--
-- a side where the row is missing adding nothing. Each side keeps its best `candidates`
-- rows; the lexical side ranks by ts_rank(tsvector, tsquery, 1) (term frequency, divided
-- by 1 + the log of the row's length); ranks are competition ranks (rows that tie on
-- distance, or on ts_rank, share a rank), so ties give equal credit.
--
-- The defaults (rrf_k 2, lexical_weight 0.75, the configuration koe5) are measured, not
-- the literature's k = 60: with two lists of unequal strength, k = 60 makes ranks 1 and
-- 10 of a side worth almost the same, so any row that the lexical side finds at all
-- overtakes the dense side's best, and on both evaluation sets every weight tried with
-- k = 60 ranked below dense search alone (bench/RESULTS-retrieval.md). The fused order is score, then the better of the
-- two ranks, then the dense rank, then the lexical rank, then the row's place on disk
-- (tableoid, ctid): deterministic while the table is not rewritten.
--
-- The search runs as the caller (SECURITY INVOKER): their privileges and the table's
-- row-level security hold. koe5 does not depend on pgvector: its schema is found from
-- the column's type at call time and its operator named as OPERATOR(schema.<=>).

-- Rejects anything but the three ways of turning a query into a tsquery.
CREATE FUNCTION koe5__check_search_mode(mode text) RETURNS void
    IMMUTABLE PARALLEL SAFE
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF mode IS NULL OR mode NOT IN ('or', 'plain', 'websearch') THEN
        RAISE EXCEPTION 'invalid search mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''or'', ''plain'' or ''websearch''.';
    END IF;
END
$$;

-- 'or' is the default because plainto_tsquery's AND finds nothing for most questions:
-- a Korean question rarely repeats every word of the passage that answers it.
CREATE FUNCTION koe5_tsquery(config regconfig, query text, mode text DEFAULT 'or') RETURNS tsquery
    IMMUTABLE STRICT PARALLEL SAFE
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    any_lexeme tsquery;
BEGIN
    PERFORM @extschema@.koe5__check_search_mode(mode);
    IF mode = 'plain' THEN
        RETURN plainto_tsquery(config, query);
    ELSIF mode = 'websearch' THEN
        RETURN websearch_to_tsquery(config, query);
    END IF;
    -- The lexemes to_tsvector finds in the query (stop words dropped), each quoted as
    -- tsquery input quotes them, joined by |.
    SELECT string_agg('''' || replace(replace(l, '\', '\\'), '''', '''''') || '''', ' | ' ORDER BY n)::tsquery
        INTO any_lexeme
        FROM unnest(tsvector_to_array(to_tsvector(config, query))) WITH ORDINALITY AS u(l, n);
    -- No lexemes: plainto_tsquery's empty query, with its notice.
    RETURN coalesce(any_lexeme, plainto_tsquery(config, query));
END
$$;
COMMENT ON FUNCTION koe5_tsquery(regconfig, text, text) IS
    'The tsquery of a search: ''or'' (any of the query''s lexemes, the default), ''plain'' (plainto_tsquery: all of them) or ''websearch'' (websearch_to_tsquery)';

-- The statement koe5_hybrid_search() runs, after checking its arguments: a query over
-- `rel` whose one parameter, $1, is the query's embedding (real[]); everything else is
-- written into the text, as literals and quoted identifiers. `vector_type` is the
-- vector column's type as a cast target (e.g. public.vector(384)), NULL for real[].
-- The lexical side's tsvector is written exactly as an expression index on
-- to_tsvector('config', column) stores it, so that such an index matches.
CREATE FUNCTION koe5__hybrid_sql(
    rel regclass, query text, vector_column text, text_column text,
    k integer, candidates integer, rrf_k integer, dense_weight float8, lexical_weight float8,
    config regconfig, mode text,
    OUT statement text, OUT vector_type text)
    STABLE PARALLEL SAFE
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    -- weights are written as literals: with every digit
    SET extra_float_digits = 3
AS $$
DECLARE
    relname text := @extschema@.koe5__relname(rel);
    relkind "char" := (SELECT c.relkind FROM pg_class c WHERE c.oid = rel);
    vector_oid oid;
    vector_typmod integer;
    vector_schema name;
    text_oid oid;
    pgvector_schema oid := (SELECT e.extnamespace FROM pg_extension e WHERE e.extname = 'vector');
    dense_key text;
    dense_order text;
    tsv text;
    tsq tsquery;
    lexical_where text;
BEGIN
    IF relkind IS NULL THEN
        RAISE EXCEPTION 'relation with OID % does not exist', rel::oid USING ERRCODE = 'undefined_table';
    END IF;
    IF relkind NOT IN ('r', 'p', 'm') THEN
        RAISE EXCEPTION '"%" is not a table', relname
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'koe5_hybrid_search() searches tables, partitioned tables and materialized views.';
    END IF;
    IF vector_column IS NULL OR text_column IS NULL THEN
        RAISE EXCEPTION 'vector and text columns must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF config IS NULL THEN
        RAISE EXCEPTION 'text search configuration must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM @extschema@.koe5__check_search_mode(mode);
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'k must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF candidates IS NULL OR candidates < 1 THEN
        RAISE EXCEPTION 'candidates must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF rrf_k IS NULL OR rrf_k < 0 THEN
        RAISE EXCEPTION 'rrf_k must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF dense_weight IS NULL OR NOT (dense_weight >= 0 AND dense_weight < 'Infinity') THEN
        RAISE EXCEPTION 'dense_weight must be a finite number that is not negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lexical_weight IS NULL OR NOT (lexical_weight >= 0 AND lexical_weight < 'Infinity') THEN
        RAISE EXCEPTION 'lexical_weight must be a finite number that is not negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT a.atttypid, a.atttypmod INTO vector_oid, vector_typmod FROM pg_attribute a
        WHERE a.attrelid = rel AND a.attname = vector_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation "%" does not exist', vector_column, relname
            USING ERRCODE = 'undefined_column';
    END IF;
    SELECT a.atttypid INTO text_oid FROM pg_attribute a
        WHERE a.attrelid = rel AND a.attname = text_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation "%" does not exist', text_column, relname
            USING ERRCODE = 'undefined_column';
    END IF;

    -- The dense side: pgvector's cosine distance, which its HNSW and IVFFlat indexes
    -- (vector_cosine_ops, halfvec_cosine_ops) serve; or, for real[], koe5_similarity()
    -- over every row.
    SELECT n.nspname INTO vector_schema FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.oid = vector_oid AND t.typname IN ('vector', 'halfvec') AND t.typnamespace = pgvector_schema;
    IF vector_schema IS NOT NULL THEN
        vector_type := format_type(vector_oid, vector_typmod);
        dense_key := format('t.%I OPERATOR(%I.<=>) $1::%s', vector_column, vector_schema, vector_type);
        dense_order := 'ASC';
    ELSIF vector_oid = 'real[]'::regtype THEN
        dense_key := format('%s.koe5_similarity(t.%I, $1)', '@extschema@', vector_column);
        dense_order := 'DESC';
    ELSE
        RAISE EXCEPTION 'column "%" of relation "%" is of type %', vector_column, relname, format_type(vector_oid, NULL)
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = 'The dense side of a hybrid search reads a column of type vector or halfvec (pgvector) or real[].';
    END IF;

    -- The lexical side: a tsvector column as it is, a text column through to_tsvector.
    IF text_oid = 'tsvector'::regtype THEN
        tsv := format('t.%I', text_column);
    ELSIF text_oid IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype) THEN
        tsv := format('pg_catalog.to_tsvector(%L::pg_catalog.regconfig, t.%I)', config, text_column);
    ELSE
        RAISE EXCEPTION 'column "%" of relation "%" is of type %', text_column, relname, format_type(text_oid, NULL)
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = 'The lexical side of a hybrid search reads a column of type text, character varying, character or tsvector.';
    END IF;
    tsq := @extschema@.koe5_tsquery(config, query, mode);
    -- An empty tsquery (only stop words) matches nothing; written as a literal it would
    -- repeat the notice koe5_tsquery() gave.
    lexical_where := CASE WHEN numnode(tsq) = 0 THEN 'false'
                          ELSE format('%s OPERATOR(pg_catalog.@@) %L::pg_catalog.tsquery', tsv, tsq) END;

    statement := format(
$sql$WITH dense AS (
    SELECT c.tableoid, c.ctid, c.doc, pg_catalog.rank() OVER (ORDER BY c.sort_key %5$s) AS rank
    FROM (SELECT t.tableoid, t.ctid, t AS doc, %3$s AS sort_key
          FROM %1$s AS t
          WHERE t.%4$I IS NOT NULL
          ORDER BY %3$s %5$s
          LIMIT %2$s) AS c
), lexical AS (
    SELECT c.tableoid, c.ctid, c.doc, pg_catalog.rank() OVER (ORDER BY c.sort_key DESC) AS rank
    FROM (SELECT t.tableoid, t.ctid, t AS doc, pg_catalog.ts_rank(%6$s, %7$L::pg_catalog.tsquery, 1) AS sort_key
          FROM %1$s AS t
          WHERE %8$s
          ORDER BY pg_catalog.ts_rank(%6$s, %7$L::pg_catalog.tsquery, 1) DESC
          LIMIT %2$s) AS c
)
SELECT f.doc, f.score, f.dense_rank::integer, f.lexical_rank::integer
FROM (SELECT coalesce(d.doc, l.doc) AS doc,
             coalesce(%9$L::float8 / (%11$L::float8 + d.rank), 0)
               + coalesce(%10$L::float8 / (%11$L::float8 + l.rank), 0) AS score,
             d.rank AS dense_rank, l.rank AS lexical_rank,
             coalesce(d.tableoid, l.tableoid) AS tableoid, coalesce(d.ctid, l.ctid) AS ctid
      FROM dense AS d FULL JOIN lexical AS l ON l.tableoid = d.tableoid AND l.ctid = d.ctid) AS f
ORDER BY f.score DESC, least(f.dense_rank, f.lexical_rank), f.dense_rank NULLS LAST, f.lexical_rank NULLS LAST,
         f.tableoid, f.ctid
LIMIT %12$s$sql$,
        rel, candidates, dense_key, vector_column, dense_order,
        tsv, tsq, lexical_where, dense_weight, lexical_weight, rrf_k, k);
END
$$;
COMMENT ON FUNCTION koe5__hybrid_sql(regclass, text, text, text, integer, integer, integer, float8, float8, regconfig, text) IS
    'Internal: the statement koe5_hybrid_search() runs ($1 is the query embedding), for EXPLAIN';

CREATE FUNCTION koe5_hybrid_search(
    rel anyelement, query text, vector_column text, text_column text,
    k integer DEFAULT 10, candidates integer DEFAULT 50, rrf_k integer DEFAULT 2,
    dense_weight float8 DEFAULT 1.0, lexical_weight float8 DEFAULT 0.75,
    config regconfig DEFAULT 'koe5', mode text DEFAULT 'or')
    RETURNS TABLE (doc anyelement, score float8, dense_rank integer, lexical_rank integer)
    VOLATILE ROWS 10
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel_type regtype := pg_typeof(rel);
    relid oid := (SELECT t.typrelid FROM pg_type t WHERE t.oid = rel_type);
    plan record;
    embedding real[];
    ef_search text;
    iterative_scan text;
BEGIN
    IF relid IS NULL OR relid = 0 THEN
        RAISE EXCEPTION 'type % is not the row type of a table', rel_type
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Name the table by a null of its row type: koe5_hybrid_search(NULL::docs, ...).';
    END IF;
    plan := @extschema@.koe5__hybrid_sql(relid, query, vector_column, text_column, k, candidates, rrf_k,
                                        dense_weight, lexical_weight, config, mode);
    IF query IS NULL THEN
        RETURN;
    END IF;
    embedding := @extschema@.koe5_query(query);
    IF plan.vector_type IS NOT NULL THEN
        -- Casts once (loading pgvector, whose settings are read next, and failing early
        -- on a column of another dimension).
        EXECUTE format('SELECT $1::%s IS NULL', plan.vector_type) USING embedding;
        -- An HNSW scan returns at most hnsw.ef_search rows (40 by default) and, when
        -- row-level security filters them, fewer: let it find `candidates` visible rows.
        ef_search := current_setting('hnsw.ef_search', true);
        iterative_scan := current_setting('hnsw.iterative_scan', true);
        IF ef_search::integer < least(candidates, 1000) THEN
            PERFORM set_config('hnsw.ef_search', least(candidates, 1000)::text, true);
        END IF;
        IF iterative_scan = 'off' THEN
            PERFORM set_config('hnsw.iterative_scan', 'strict_order', true);
        END IF;
    END IF;
    RETURN QUERY EXECUTE plan.statement USING embedding;
    -- The caller's settings again (set_config(..., true) outlives this function).
    IF ef_search IS NOT NULL THEN
        PERFORM set_config('hnsw.ef_search', ef_search, true);
    END IF;
    IF iterative_scan IS NOT NULL THEN
        PERFORM set_config('hnsw.iterative_scan', iterative_scan, true);
    END IF;
END
$$;
COMMENT ON FUNCTION koe5_hybrid_search(anyelement, text, text, text, integer, integer, integer, float8, float8, regconfig, text) IS
    'Hybrid search over the table whose row type rel has: the best k rows by reciprocal rank fusion of vector_column''s cosine distance to koe5_query(query) (an HNSW index on vector or halfvec; every row for real[]) and text_column''s full text match (koe5_tsquery(config, query, mode); a GIN index), each side keeping its best candidates rows; with the fused score and both ranks';

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

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

-- NOT YET PART OF THE EXTENSION (issue 14). The text search parser and dictionary
-- below are built into the library and tested (src/tests/textsearch.rs installs this
-- file into its test databases), but a configuration that expression indexes are built
-- on may not change once released, and what its lexemes should be (pieces alone or
-- with whole words, particles kept or dropped, what to do where the tokenizer cuts the
-- same word differently inside a compound) is to be decided by measurements on the
-- evaluation sets (data/eval) first. Then this file moves to sql/surface/.
--
-- koe5: Korean text search. A parser that cuts text into the model's sentencepiece
-- pieces (a word and its particle come apart), a dictionary that turns a piece into its lexeme (NFKC,
-- lower-case, edge punctuation trimmed; particles kept or dropped), and the
-- configuration `koe5` that joins them:
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
    'Korean (and any) text cut into the pieces of the XLM-R tokenizer KoE5 uses; whole words of several pieces besides';

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
ALTER TEXT SEARCH CONFIGURATION koe5 ADD MAPPING FOR piece WITH koe5;
COMMENT ON TEXT SEARCH CONFIGURATION koe5 IS
    'Korean text search on the model''s pieces: to_tsvector(''koe5'', body), websearch_to_tsquery(''koe5'', q)';

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

-- The model: what koe5_model_info says, and the errors of a model that cannot be used.
-- CONTEXT lines name line numbers of koe5's PL/pgSQL, which move with every edit of
-- sql/: left out.
\set SHOW_CONTEXT never
SELECT koe5_model_info()->'loaded' AS loaded_before;
SELECT cardinality(koe5_passage('x'));
SELECT key, value FROM jsonb_each(koe5_model_info())
WHERE key IN ('loaded', 'dimension', 'max_tokens', 'pooling', 'normalize', 'precision', 'preloaded')
ORDER BY key;
SELECT length(koe5_model_info()->>'sha256') AS sha256_hex_digits;
SET koe5.model_path = '/nonexistent/koe5';
SELECT koe5_query('헌법');
SELECT koe5_model_info()->>'error' AS error;
SET koe5.model_path = '';
SET koe5.model_id = 'nobody/no-such-model';
-- (terse: the DETAIL names the server user's Hugging Face cache, which differs by machine)
\set VERBOSITY terse
SELECT koe5_passage('x');
\set VERBOSITY default
SET koe5.model_id = '../../etc';
SELECT koe5_download();
RESET koe5.model_id;
RESET koe5.model_path;
-- Fixing the setting makes the same session work again.
SELECT cardinality(koe5_query('헌법'));
SET koe5.precision = 'int4';

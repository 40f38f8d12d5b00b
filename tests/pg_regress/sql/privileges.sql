-- What a plain role may not do, and what a superuser may delegate.
-- CONTEXT lines name line numbers of koe5's PL/pgSQL, which move with every edit of
-- sql/: left out.
\set SHOW_CONTEXT never
CREATE ROLE koe5_regress_plain;
CREATE ROLE koe5_regress_delegate;
SET ROLE koe5_regress_plain;
-- koe5 is not loaded in this session yet (the server does not preload it): PostgreSQL
-- keeps these as placeholders, and loading koe5 drops them with a WARNING.
SET koe5.model_path = '/tmp';
SET koe5.model_id = 'evil/model';
SET koe5.threads = 64;
SELECT koe5_download();
-- Embedding is for everyone (and loads koe5).
SELECT cardinality(koe5_passage('누구나'));
-- The database's setting stands.
SELECT current_setting('koe5.model_path') LIKE '%/tiny-xlmr' AS database_setting_kept;
-- Loaded, the settings refuse at once.
SET koe5.model_path = '/tmp';
SET koe5.threads = 64;
RESET ROLE;
GRANT SET ON PARAMETER koe5.model_path TO koe5_regress_delegate;
SET ROLE koe5_regress_delegate;
SET koe5.model_path = '/tmp';
SET koe5.model_id = 'evil/model';
RESET koe5.model_path;
RESET ROLE;
-- koe5's shared tables: no lock that blocks a writer, no deletes but through koe5.
SET ROLE koe5_regress_plain;
BEGIN;
LOCK TABLE koe5_queue IN SHARE MODE;
ROLLBACK;
DELETE FROM koe5_queue;
TRUNCATE koe5_backfill_runs;
RESET ROLE;
REVOKE SET ON PARAMETER koe5.model_path FROM koe5_regress_delegate;
DROP ROLE koe5_regress_plain, koe5_regress_delegate;

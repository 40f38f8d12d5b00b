-- Databases whose encoding is not UTF-8: EUC_KR gives the same vectors as UTF8 for
-- Korean text; SQL_ASCII embeds UTF-8 and refuses bytes that are not UTF-8.
-- CONTEXT lines name line numbers of koe5's PL/pgSQL, which move with every edit of
-- sql/: left out.
\set SHOW_CONTEXT never
\getenv fixtures KOE5_TEST_FIXTURES
\set model :fixtures/tiny-xlmr
\set utf8_db :DBNAME
SELECT head(koe5_passage('대한민국은 민주공화국이다.')) AS utf8 \gset
CREATE DATABASE koe5_regress_euckr ENCODING 'EUC_KR' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
CREATE DATABASE koe5_regress_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c koe5_regress_euckr
SET client_encoding = 'UTF8';
CREATE EXTENSION koe5;
SET koe5.model_path = :'model';
SET koe5.precision = 'f32';
CREATE TABLE docs (body text);
INSERT INTO docs VALUES ('대한민국은 민주공화국이다.');
-- Hangul takes 2 bytes in EUC-KR, 3 in UTF-8.
SELECT octet_length(body), koe5_token_count(body) FROM docs;
SELECT array_agg(round(x::numeric, 4) ORDER BY i) = :'utf8' AS same_as_utf8
FROM docs, unnest(koe5_passage(body)) WITH ORDINALITY AS u(x, i) WHERE i <= 4;
\c koe5_regress_ascii
CREATE EXTENSION koe5;
SET koe5.model_path = :'model';
SET koe5.precision = 'f32';
SELECT array_agg(round(x::numeric, 4) ORDER BY i) = :'utf8' AS same_as_utf8
FROM unnest(koe5_passage('대한민국은 민주공화국이다.')) WITH ORDINALITY AS u(x, i) WHERE i <= 4;
SELECT koe5_passage(convert_from('\x41c328'::bytea, 'SQL_ASCII'));
\c :utf8_db
DROP DATABASE koe5_regress_euckr;
DROP DATABASE koe5_regress_ascii;

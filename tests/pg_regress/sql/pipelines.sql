-- Keeping a column of embeddings: a generated column and koe5_embed_trigger.
-- CONTEXT lines name line numbers of koe5's PL/pgSQL, which move with every edit of
-- sql/: left out.
\set SHOW_CONTEXT never
CREATE TABLE docs (id int PRIMARY KEY, body text,
                   emb real[] GENERATED ALWAYS AS (koe5_passage(body)) STORED);
INSERT INTO docs VALUES (1, '대한민국은 민주공화국이다.'), (2, '모든 국민은 법 앞에 평등하다.'), (3, NULL);
SELECT id, head(emb) FROM docs ORDER BY id;
-- Ranked by similarity to a query (the fixture's weights are random: the order shows
-- the mechanism, not the model's quality).
SELECT id, round(koe5_similarity(emb, koe5_query('평등'))::numeric, 4) AS score
FROM docs WHERE emb IS NOT NULL ORDER BY score DESC;
CREATE TABLE notes (id int PRIMARY KEY, body text, emb real[], q real[]);
CREATE TRIGGER embed BEFORE INSERT OR UPDATE ON notes
    FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'emb');
CREATE TRIGGER embed_q BEFORE INSERT OR UPDATE OF body ON notes
    FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'q', 'query');
INSERT INTO notes (id, body) VALUES (1, '국회는 법률을 제정한다.'), (2, '대통령의 임기는 5년으로 한다.');
SELECT id, emb = koe5_passage(body) AS passage, q = koe5_query(body) AS query FROM notes ORDER BY id;
-- An update that leaves the text alone embeds nothing; NULL text empties the targets.
SELECT texts_embedded AS before FROM koe5_backend_stats() \gset
UPDATE notes SET id = id;
SELECT texts_embedded - :before AS embedded_by_the_update FROM koe5_backend_stats();
UPDATE notes SET body = NULL WHERE id = 2;
SELECT id, emb IS NULL AS emb_null, q IS NULL AS q_null FROM notes ORDER BY id;
-- Misuse.
CREATE TABLE bad (id int, body text, n int, emb real[]);
CREATE TRIGGER t AFTER INSERT ON bad FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'emb');
INSERT INTO bad (id, body) VALUES (1, '헌법');
DROP TRIGGER t ON bad;
CREATE TRIGGER t BEFORE INSERT ON bad FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'n');
INSERT INTO bad (id, body) VALUES (1, '헌법');
DROP TRIGGER t ON bad;
CREATE TRIGGER t BEFORE INSERT ON bad FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('text', 'emb');
INSERT INTO bad (id, body) VALUES (1, '헌법');
DROP TRIGGER t ON bad;
CREATE TRIGGER t BEFORE INSERT ON bad FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'emb', 'doc');
INSERT INTO bad (id, body) VALUES (1, '헌법');
DROP TRIGGER t ON bad;
CREATE TRIGGER t BEFORE INSERT ON bad FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body');
INSERT INTO bad (id, body) VALUES (1, '헌법');
DROP TABLE docs, notes, bad;

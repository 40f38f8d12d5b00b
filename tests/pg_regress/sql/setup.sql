-- Run first, once, in the test database: koe5, the fixture model for every later
-- session (each test file is a session of its own) and a way to print vectors.
-- KOE5_TEST_FIXTURES names a copy of tests/fixtures the server can read.
\getenv fixtures KOE5_TEST_FIXTURES
SET regress.fixtures = :'fixtures';
CREATE EXTENSION koe5;
-- f32, so the printed digits are the reference's on every CPU (auto may choose bf16).
DO $$ BEGIN
  EXECUTE format('ALTER DATABASE %I SET koe5.model_path = %L', current_database(),
                 current_setting('regress.fixtures') || '/tiny-xlmr');
  EXECUTE format('ALTER DATABASE %I SET koe5.precision = %L', current_database(), 'f32');
END $$;
-- The first n components of a vector, rounded to 4 places.
CREATE FUNCTION head(v real[], n int DEFAULT 4) RETURNS numeric[]
LANGUAGE sql IMMUTABLE STRICT
AS $$ SELECT array_agg(round(x::numeric, 4) ORDER BY i) FROM unnest(v) WITH ORDINALITY AS u(x, i) WHERE i <= n $$;

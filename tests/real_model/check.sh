#!/usr/bin/env bash
# Opt-in check for whoever has the real KoE5 weights (they cannot be downloaded where
# koe5's CI runs): the KoE5 model card's example — one query, two passages — must give
# the card's cosines 0.6721 / 0.3897 / 0.3740 (within 1e-3: the card prints 4 decimals
# and was computed on other hardware).
#
#   tests/real_model/check.sh /path/to/KoE5      (a sentence-transformers directory)
#
# Exits 0 when all three match. The same run through SQL: scripts/demo.sh with
# KOE5_MODEL_PATH=/path/to/KoE5 prints them too.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: $0 /path/to/KoE5" >&2; exit 2; }
nice cargo run --quiet --release -p koe5-core --example card_check -- "$1" data/koe5-card-example.json "${@:2}"

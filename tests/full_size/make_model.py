#!/usr/bin/env python3
"""Makes a random-weight model with KoE5's exact architecture in sentence-transformers
layout (2.2 GB, never committed): for full-size parity checks, cancel latency and
speed, none of which depend on the weight values.

  python tests/full_size/make_model.py OUT_DIR

Needs the reference environment of tests/fixtures/requirements.txt (torch,
transformers, safetensors). Does nothing if OUT_DIR/model.safetensors exists.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check import make_model  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    make_model(Path(sys.argv[1]))
    print(sys.argv[1])

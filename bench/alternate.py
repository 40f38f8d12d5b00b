#!/usr/bin/env python3
"""Alternates sentence-transformers and the koe5 core on the full-size benchmark, round
after round, for a ratio on a noisy machine (one run of bench/run.py is one sample):

  python bench/alternate.py [--rounds 3] [--precision f32] [--torch fp32|bf16] [--model DIR]

Each round embeds the corpus's passages with sentence-transformers (batches of 8, as
bench/run.py does), then with koe5's bench_core (built by bench/run.py, or by
`cargo build --release -p koe5-core --examples`), 2 threads each, and prints both
tokens/s and their ratio.
"""

import argparse
import json
import os
import subprocess
import sys

import run  # noqa: E402  (bench/run.py: its torch embedder and settings)

REPO = run.REPO


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--torch", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--model", default=str(run.KOE5_HOME / "full-size"))
    args = ap.parse_args()
    run.torch.set_num_threads(run.THREADS)
    corpus_path = REPO / "bench" / "corpus.json"
    corpus = json.loads(corpus_path.read_text())
    tokens = sum(corpus["passage_tokens"])
    core = REPO / "target" / "release" / "examples" / "bench_core"
    env = dict(os.environ, RAYON_NUM_THREADS=str(run.THREADS), KOE5_PRECISION=args.precision)
    print(f"{run.cpu.description()}; {args.rounds} rounds, torch {args.torch} then koe5 {args.precision}")
    for i in range(args.rounds):
        ref = run.sentence_transformers_run(args.model, corpus["passages"], corpus["queries"][:20],
                                            args.torch == "bf16")
        ref_tps = tokens / ref["passage_s"]
        out = subprocess.run([str(core), args.model, str(corpus_path)], env=env, check=True,
                             capture_output=True, text=True).stdout
        koe5_tps = json.loads(out)["tokens_per_s"]
        print(f"round {i + 1}: torch {args.torch} {ref_tps:.0f} tokens/s, koe5 {args.precision} {koe5_tps:.0f}, "
              f"ratio {koe5_tps / ref_tps:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

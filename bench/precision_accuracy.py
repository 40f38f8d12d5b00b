#!/usr/bin/env python3
"""Accuracy of koe5's precisions on real trained weights, quickly: every article and
question of the evaluation set embedded by the koe5 core (examples/embed_lines) in the
given precisions, compared with the sentence-transformers fp32 vectors recorded in
tests/real_weights/e5-small-expected.json (sentence-transformers 5.1.2, the versions of
tests/fixtures/requirements.txt), and the retrieval figures of each. The README's int8
table comes from here (and ONNX Runtime's row from bench/run.py's real-weights part).

  cargo build --release -p koe5-core --example embed_lines
  python bench/precision_accuracy.py [--model DIR] f32 bf16 int8 ...

Each argument is a precision, optionally with environment settings after it
("int8,KOE5_INT8_PORTABLE=1"). Needs numpy only.
"""

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from evalset import retrieval_figures

REPO = Path(__file__).resolve().parents[1]
KOE5_HOME = Path(os.environ.get("KOE5_HOME", "/opt/koe5"))


def embed(model: str, kind: str, texts: list[str], env: dict) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        subprocess.run([str(REPO / "target/release/examples/embed_lines"), model, str(src), kind, str(dst)],
                       check=True, capture_output=True, env=env)
        return np.array(json.loads(dst.read_text()), dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(KOE5_HOME / "models/multilingual-e5-small"))
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args()
    expected = json.loads((REPO / "tests/real_weights/e5-small-expected.json").read_text(encoding="utf-8"))
    corpus, questions = expected["corpus"], expected["questions"]
    ref_p = np.array([a["embedding"] for a in corpus])
    ref_q = np.array([q["embedding"] for q in questions])
    for run in args.runs:
        precision, *settings = run.split(",")
        env = dict(os.environ, RAYON_NUM_THREADS=os.environ.get("RAYON_NUM_THREADS", "2"), KOE5_PRECISION=precision)
        env.update(kv.split("=", 1) for kv in settings)
        p = embed(args.model, "passage", [a["body"] for a in corpus], env)
        q = embed(args.model, "query", [x["question"] for x in questions], env)

        def cos(a, b):
            return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

        c = np.concatenate([cos(p, ref_p), cos(q, ref_q)])
        f = retrieval_figures(p, q, questions, corpus)
        print(f"{run}: min cosine {c.min():.7f}, mean {c.mean():.7f} over {len(c)} vectors; "
              f"recall@1 {f['recall@1']:.4f}, recall@5 {f['recall@5']:.4f}, MRR@10 {f['mrr@10']:.4f}", flush=True)


if __name__ == "__main__":
    main()

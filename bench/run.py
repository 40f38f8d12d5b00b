#!/usr/bin/env python3
"""koe5 benchmark, side by side with the reference stacks, on the same inputs, in one
run, with 2 threads (see bench/README.md for what is measured and what is not yet).

  python bench/run.py [--model /opt/koe5/full-size] [--out bench/RESULTS.md]

The model is a full-size random-weight model with KoE5's architecture
(tests/full_size/make_model.py makes one; speed does not depend on the weight values).
Needs the reference environment (tests/fixtures/requirements.txt) and cargo.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

THREADS = 2
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ.setdefault("RAYON_NUM_THREADS", str(THREADS))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def matmul_ceiling(dtype: torch.dtype, m: int = 2048, k: int = 1024, n: int = 4096, reps: int = 10) -> float:
    """GFLOP/s of a torch matrix multiply of the encoder's FFN shape."""
    a = torch.randn(m, k, dtype=dtype)
    b = torch.randn(k, n, dtype=dtype)
    torch.matmul(a, b)
    t = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b)
    return 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9


def sentence_transformers_run(model_dir: str, passages: list[str], queries: list[str], bf16: bool) -> dict:
    model = SentenceTransformer(model_dir, device="cpu")
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.no_grad()
    inputs = [f"passage: {p}" for p in passages]
    with ctx, torch.no_grad():
        model.encode(inputs[:8], batch_size=8)
        t = time.perf_counter()
        vectors = model.encode(inputs, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
        passage_s = time.perf_counter() - t
        lat = []
        for q in queries:
            t = time.perf_counter()
            model.encode([f"query: {q}"], batch_size=1)
            lat.append(time.perf_counter() - t)
    lat.sort()
    return {
        "passage_s": passage_s,
        "query_p50_ms": 1e3 * lat[len(lat) // 2],
        "query_p95_ms": 1e3 * lat[int(0.95 * (len(lat) - 1))],
        "vectors": np.asarray(vectors, dtype=np.float32),
    }


def koe5_core_run(model_dir: str, corpus: Path, n_passages: int, dim: int) -> dict:
    out = REPO / "target" / "bench-core-vectors.f32"
    cmd = ["cargo", "run", "-q", "--release", "-p", "koe5-core", "--example", "bench_core", "--",
           model_dir, str(corpus), str(out)]
    res = json.loads(subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout)
    res["vectors"] = np.fromfile(out, dtype="<f4").reshape(n_passages, dim)
    return res


def cosines(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    c = (a * b).sum(axis=1)
    return float(c.min()), float(c.mean())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="/opt/koe5/full-size")
    ap.add_argument("--out", default=str(REPO / "bench" / "RESULTS.md"))
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    corpus_path = REPO / "bench" / "corpus.json"
    corpus = json.loads(corpus_path.read_text(encoding="utf-8"))
    passages, queries = corpus["passages"], corpus["queries"]
    tokens = sum(corpus["passage_tokens"])

    rows = {}
    print("ceilings ...", flush=True)
    ceil32, ceil16 = matmul_ceiling(torch.float32), matmul_ceiling(torch.bfloat16)
    print("sentence-transformers fp32 ...", flush=True)
    rows["sentence-transformers fp32"] = sentence_transformers_run(args.model, passages, queries, bf16=False)
    print("sentence-transformers bf16 (autocast) ...", flush=True)
    rows["sentence-transformers bf16"] = sentence_transformers_run(args.model, passages, queries, bf16=True)
    ref = rows["sentence-transformers fp32"]["vectors"]
    print("koe5 core f32 ...", flush=True)
    rows["koe5 core f32"] = koe5_core_run(args.model, corpus_path, len(passages), ref.shape[1])

    base = rows["sentence-transformers fp32"]["passage_s"]
    lines = [
        "# koe5 benchmark results",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {THREADS} threads for every "
        f"engine; Python {platform.python_version()}, torch {torch.__version__}. Corpus: bench/corpus.json, "
        f"{len(passages)} passages ({tokens} real tokens, 60–300 each), {len(queries)} queries (10–30 tokens). "
        f"Model: random weights with KoE5's shape. Command: `python bench/run.py --model {args.model}`.",
        "",
        f"Matrix-multiply ceiling (torch, 2048×1024 · 1024×4096): fp32 {ceil32:.0f} GFLOP/s, bf16 {ceil16:.0f} GFLOP/s.",
        "",
        "| engine | passages/s | real tokens/s | vs sentence-transformers fp32 | query p50 ms | query p95 ms | "
        "min / mean cosine to fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        cmin, cmean = cosines(r["vectors"], ref)
        lines.append(
            f"| {name} | {len(passages) / r['passage_s']:.2f} | {tokens / r['passage_s']:.0f} | "
            f"{base / r['passage_s']:.2f}× | {r['query_p50_ms']:.0f} | {r['query_p95_ms']:.0f} | "
            f"{cmin:.6f} / {cmean:.6f} |")
    lines += ["", "Passages: sentence-transformers with batch_size 8; koe5 with its own batching "
              "(sorted by length, ≤ 2048 padded tokens, ≤ 32 texts). Queries: one at a time.", "",
              "Partial harness: ONNX Runtime, koe5 through SQL, memory per backend and koe5's other precisions "
              "are not measured yet (bench/README.md).", ""]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

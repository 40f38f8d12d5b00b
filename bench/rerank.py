#!/usr/bin/env python3
"""Reranking benchmark: koe5's cross-encoder against sentence-transformers' CrossEncoder
(fp32, and bf16 by torch CPU autocast) on the full-size shape of BAAI/bge-reranker-v2-m3
(random weights: speed does not depend on their values), side by side in one run, on
the same pairs, 2 threads for every engine.

  python bench/rerank.py [--model DIR] [--queries 2] [--candidates 50] [--tokens 200] [--out bench/RESULTS-rerank.md]

The inputs: the first --queries queries of bench/corpus.json, each with --candidates
passages of about --tokens tokens (windows of the corpus's passages overlapping by half,
cut at token offsets by the XLM-R tokenizer), so each query is one `koe5_rerank(query,
passages)` of a top-50 list. Measured per engine: pairs/s and pair tokens/s over all
queries (the first pair scored once before, as warm-up), and each engine's largest
|logit - CrossEncoder fp32 logit|. The model is made once in $KOE5_HOME/full-size-reranker
by tests/full_size/make_reranker.py (2.3 GB). Needs cargo and bench/requirements.txt.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREADS = 2
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ.setdefault("RAYON_NUM_THREADS", str(THREADS))

import numpy as np  # noqa: E402
import sentence_transformers  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import CrossEncoder  # noqa: E402

import cpu  # noqa: E402  (bench/cpu.py)

REPO = Path(__file__).resolve().parents[1]
KOE5_HOME = Path(os.environ.get("KOE5_HOME", "/opt/koe5"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_inputs(model_dir: Path, n_queries: int, candidates: int, tokens: int) -> list[dict]:
    corpus = json.loads((REPO / "bench" / "corpus.json").read_text())
    tok = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text = "\n".join(corpus["passages"])
    enc = tok.encode(text, add_special_tokens=False)
    offsets = enc.offsets
    windows = []
    # Windows overlap by half (the corpus holds about 15,000 tokens).
    for start in range(0, len(offsets) - tokens, tokens // 2):
        windows.append(text[offsets[start][0]:offsets[start + tokens - 1][1]].strip())
    need = n_queries * candidates
    assert len(windows) >= need, f"{len(windows)} windows, need {need}"
    return [{"query": corpus["queries"][i], "passages": windows[i * candidates:(i + 1) * candidates]}
            for i in range(n_queries)]


def cross_encoder_run(model_dir: Path, inputs: list[dict], bf16: bool) -> dict:
    torch.set_num_threads(THREADS)
    ce = CrossEncoder(str(model_dir), device="cpu")
    identity = torch.nn.Identity()

    def predict(pairs):
        if bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return ce.predict(pairs, activation_fn=identity, batch_size=32, show_progress_bar=False)
        return ce.predict(pairs, activation_fn=identity, batch_size=32, show_progress_bar=False)

    predict([(inputs[0]["query"], inputs[0]["passages"][0])])
    logits, per_query = [], []
    for q in inputs:
        pairs = [(q["query"], p) for p in q["passages"]]
        t = time.perf_counter()
        out = predict(pairs)
        per_query.append(time.perf_counter() - t)
        logits.append([float(x) for x in np.asarray(out, dtype=np.float32)])
    pair_tokens = sum(len(ce.tokenizer(q["query"], p, truncation=True)["input_ids"])
                      for q in inputs for p in q["passages"])
    seconds = sum(per_query)
    pairs = sum(len(q["passages"]) for q in inputs)
    del ce
    return {"pairs": pairs, "pair_tokens": pair_tokens, "seconds": seconds, "per_query_s": per_query,
            "pairs_per_s": pairs / seconds, "tokens_per_s": pair_tokens / seconds, "logits": logits}


def koe5_run(model_dir: Path, input_file: Path, precision: str, tmp: Path) -> dict:
    out = tmp / f"logits-{precision}.json"
    cmd = ["cargo", "run", "-q", "--release", "-p", "koe5-core", "--example", "bench_rerank", "--",
           str(model_dir), str(input_file), str(out)]
    env = dict(os.environ, KOE5_PRECISION=precision)
    r = json.loads(subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True, env=env).stdout)
    r["logits"] = json.loads(out.read_text())
    return r


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(KOE5_HOME / "full-size-reranker"))
    ap.add_argument("--queries", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--out", default=str(REPO / "bench" / "RESULTS-rerank.md"))
    args = ap.parse_args()
    model = Path(args.model)
    if not (model / "model.safetensors").exists():
        log(f"making the full-size random cross-encoder in {model}")
        subprocess.run([sys.executable, str(REPO / "tests/full_size/make_reranker.py"), str(model)], check=True)
    log("building the koe5 core example")
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "koe5-core", "--example", "bench_rerank"],
                   cwd=REPO, check=True)
    inputs = make_inputs(model, args.queries, args.candidates, args.tokens)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        input_file = tmp / "input.json"
        input_file.write_text(json.dumps({"queries": inputs}, ensure_ascii=False))
        runs = {}
        log("sentence-transformers CrossEncoder fp32")
        runs["sentence-transformers fp32"] = cross_encoder_run(model, inputs, bf16=False)
        log("sentence-transformers CrossEncoder bf16 (autocast)")
        runs["sentence-transformers bf16"] = cross_encoder_run(model, inputs, bf16=True)
        # int8 where the CPU runs one of its kernels (VNNI or AVX2); elsewhere it is refused.
        int8 = ["int8"] if cpu.int8_kernel() != "portable" else []
        for precision in ["f32", "bf16", *int8]:
            log(f"koe5 core {precision}")
            runs[f"koe5 core {precision}"] = koe5_run(model, input_file, precision, tmp)

    ref = np.array(runs["sentence-transformers fp32"]["logits"], dtype=np.float64)
    st32 = runs["sentence-transformers fp32"]["pairs_per_s"]
    st16 = runs["sentence-transformers bf16"]["pairs_per_s"]
    ref_order = [list(np.argsort(-row, kind="stable")) for row in ref]
    lines = [
        "# Reranking benchmark",
        "",
        f"{time.strftime('%Y-%m-%d')}, {cpu.description()}, {os.cpu_count()} CPUs, {THREADS} threads per engine; "
        f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}, "
        f"torch {torch.__version__}.",
        "",
        f"Model: BAAI/bge-reranker-v2-m3's shape (XLMRobertaForSequenceClassification, 24 layers, hidden 1024, "
        f"one label), random weights (`tests/full_size/make_reranker.py`). Inputs: {args.queries} queries × "
        f"{args.candidates} candidates of about {args.tokens} tokens; CrossEncoder.predict batch_size 32 "
        "(pads each batch to its longest pair); koe5 packs pairs back to back under its token budget.",
        "",
        "| engine | pairs/s | pair tokens/s | vs ST fp32 | vs ST bf16 | max abs logit diff to ST fp32 | same top-5 order as ST fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        got = np.array(r["logits"], dtype=np.float64)
        diff = float(np.max(np.abs(got - ref)))
        same = sum(list(np.argsort(-row, kind="stable"))[:5] == o[:5] for row, o in zip(got, ref_order))
        r["max_abs_logit_diff"] = diff
        lines.append(f"| {name} | {r['pairs_per_s']:.2f} | {r['tokens_per_s']:.0f} | {r['pairs_per_s'] / st32:.2f}× | "
                     f"{r['pairs_per_s'] / st16:.2f}× | {diff:.2e} | {same}/{len(ref_order)} queries |")
    ratio = runs["koe5 core bf16"]["pairs_per_s"] / st16
    lines += [
        "",
        f"- Target (issue 15): koe5 bf16 ≥ 1.2× sentence-transformers bf16: **{ratio:.2f}×** — "
        f"{'met' if ratio >= 1.2 else 'not met'}.",
        f"- Logit spread of the random model (std of ST fp32 logits): {float(np.std(ref)):.3f}.",
        "- Per query (s): " + "; ".join(f"{n} {', '.join(f'{s:.1f}' for s in r['per_query_s'])}" for n, r in runs.items()) + ".",
        "",
        "Rerun: `/opt/ref-venv/bin/python bench/rerank.py` (as root; about 6 minutes on 2 cores, plus 3 the first time to make the model).",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    json_out = Path(args.out).with_suffix(".json")
    json_out.write_text(json.dumps({n: {k: v for k, v in r.items() if k != "logits"} for n, r in runs.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

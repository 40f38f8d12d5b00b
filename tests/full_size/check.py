#!/usr/bin/env python3
"""Parity at KoE5's full size, by hand (not in CI: the model is 2.2 GB).

Makes a random-weight model with KoE5's exact architecture (XLM-R, 24 layers, hidden
1024, 16 heads, FFN 4096, vocab 250002, 514 positions; mean pooling, Normalize) in
sentence-transformers layout with the real tokenizer of tests/fixtures, embeds a few
inputs with sentence-transformers (the reference) and with koe5-core, and compares.

  python tests/full_size/check.py [--out /tmp/koe5-full]

Needs the reference environment of tests/fixtures/requirements.txt, cargo, and about
8 GB of memory. Prints the cosine and max |difference| per input; exits 1 if any input
is outside cosine >= 0.99999 or max |difference| <= 1e-5.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from sentence_transformers import SentenceTransformer
from transformers import XLMRobertaConfig, XLMRobertaModel

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "tiny-xlmr"


def make_model(out: Path) -> None:
    if (out / "model.safetensors").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "modules.json",
                 "sentence_bert_config.json", "config_sentence_transformers.json"]:
        shutil.copy(FIXTURE / name, out / name)
    (out / "1_Pooling").mkdir(exist_ok=True)
    pooling = json.loads((FIXTURE / "1_Pooling" / "config.json").read_text())
    pooling["word_embedding_dimension"] = 1024
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    config = json.loads((FIXTURE / "config.json").read_text())
    config.update(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(5)
    model = XLMRobertaModel(XLMRobertaConfig(**{k: v for k, v in config.items() if k != "architectures"}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn_like(p))
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/koe5-full")
    args = ap.parse_args()
    out = Path(args.out)
    t = time.time()
    make_model(out)
    print(f"model ready in {time.time() - t:.0f} s: {out}")

    cases = json.loads((REPO / "tests" / "fixtures" / "expected.json").read_text())["cases"]
    texts = [c["text"] for c in cases if c["name"] in (
        "ko_constitution_art1", "ko_constitution_art111_multiline", "en_sentence", "emoji_zwj", "ko_nfd_jamo",
        "whitespace_only", "special_token_literals", "card_passage_2", "constitution_slice_512_tokens",
        "bill_1809896_whole")]
    assert len(texts) == 10
    inputs = [f"passage: {t}" for t in texts]
    torch.set_num_threads(2)
    ref = SentenceTransformer(str(out), device="cpu")
    t = time.time()
    want = ref.encode(inputs, batch_size=1, convert_to_numpy=True)
    print(f"reference: {len(inputs)} inputs in {time.time() - t:.1f} s")

    texts_file = out / "texts.json"
    texts_file.write_text(json.dumps(texts, ensure_ascii=False))
    vectors_file = out / "koe5.json"
    subprocess.run(["cargo", "run", "-q", "-p", "koe5-core", "--example", "embed_lines", "--",
                    str(out), str(texts_file), "passage", str(vectors_file)], cwd=REPO, check=True)
    got = np.array(json.loads(vectors_file.read_text()), dtype=np.float32)

    worst_cos, worst_diff = 1.0, 0.0
    for text, g, w in zip(texts, got, want):
        cos = float(np.dot(g, w) / (np.linalg.norm(g) * np.linalg.norm(w)))
        diff = float(np.max(np.abs(g - w)))
        worst_cos, worst_diff = min(worst_cos, cos), max(worst_diff, diff)
        print(f"  cos {cos:.9f}  max|diff| {diff:.2e}  {text[:40]!r}")
    print(f"full size: min cosine {worst_cos:.9f}, max |difference| {worst_diff:.2e}")
    return 0 if worst_cos >= 0.99999 and worst_diff <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())

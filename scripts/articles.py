#!/usr/bin/env python3
"""The articles of the Korean constitution (제1조 … 제130조), one document each: the
split the demo searches and the evaluation set (data/eval/constitution-questions.json)
is labelled against.

    python3 scripts/articles.py [data/ko/constitution.txt]   TSV: number, title, body

An article is its "제N조" line plus the lines after it, up to the next article; chapter
and section headings (제N장, 제N절) are dropped; the supplementary provisions (부칙),
which number their articles anew, end the list.
"""

import re
import sys
from pathlib import Path


def articles(path):
    out = []
    text = Path(path).read_text(encoding="utf-8").replace("\r\n", "\n")
    for line in text.split("\n"):
        line = line.strip()
        if "부칙" in line:
            break
        m = re.match(r"^제(\d+)조", line)
        if m:
            out.append([int(m.group(1)), m.group(0), line])
        elif out and line and not re.match(r"^제\d+[장절]", line):
            out[-1][2] += " " + line
    return [tuple(a) for a in out]


if __name__ == "__main__":
    src = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "data/ko/constitution.txt"
    for n, title, body in articles(src):
        print(f"{n}\t{title}\t{body}".replace("\\", "\\\\"))

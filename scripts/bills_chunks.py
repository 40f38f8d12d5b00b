#!/usr/bin/env python3
"""Cut the ten bills in data/ko/bills/ into the passages the bills evaluation set
(data/eval/bills-questions.json) is labelled against, and write them to
data/eval/bills-chunks.json.

    python3 scripts/bills_chunks.py            writes data/eval/bills-chunks.json
    python3 scripts/bills_chunks.py --check    exits 1 if that file is not what it would write

Python 3 standard library only; deterministic; no model or tokenizer is involved, so the
passages are the same whatever is later measured on them. The rule (RULE below, also
stored in the output):

1. Lines. Form feeds are removed; blank lines, page marks ("- 3 -") and the law-number
   placeholder ("법률 제 호") are dropped. The old/new comparison table (신·구조문대비표)
   is dropped, from its heading to the end of the file or to the next line that begins
   with the bill's title (the heading of an appended statement): its two columns are
   interleaved line by line in these texts, so it reads as noise, and its new column
   repeats the amendment text.
2. Paragraphs. A line starts a new paragraph when the line before it is short (under 20
   characters once whitespace is squeezed), ends with ".", ":", "법률안" or "동의안" (a
   title or heading), or is a label line (begins with ":" or "자료:": the cost statement's
   variable definitions and table source); or when the line itself begins with a marker:
   ①…⑳, a number and a dot ("1.", "1의2."), one of ○ □ ◦ ∙ • * ( [ 〈 :, an indented item
   letter ("가." … "하."; unindented, "다." is the end of a wrapped sentence), an article
   "제N조" (unless the line before ends with a statute reference such as "…제1항" or a
   law's name "｣", which it continues), or it has no Hangul at all (formula lines, table
   cells). Otherwise it continues the paragraph. The hard wrap splits words, so the two
   are joined with a space where the line before ended with whitespace or the line is
   indented, and with nothing otherwise. Whitespace runs become one space.
3. Title. The bill's title is its opening lines up to the first that ends in "안"
   (…법률안, …동의안; two bills wrap it onto a second line), joined as in 2. It is part
   of the text of the bill's first passage, as the document has it, and is not prepended
   to any other passage (the document's own later headings that repeat it stay).
4. Passages. Consecutive paragraphs are packed, joined by "\n", into passages of at most
   400 characters; a paragraph is never split unless it alone exceeds 400, and then it is
   cut after sentence ends (다. 함. 임. 음.), or, for a sentence still over 400, at the
   last space before the limit. A new passage is always started at a paragraph that
   begins with the bill's title: the head of each part (the amendment or motion text,
   the cost statement, the funding plan).
5. Ids. Passage k (from 1) of bill N is "N-kk" (e.g. "1809890-03"); bills in sorted
   file-name order.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "data/ko/bills"
OUT = ROOT / "data/eval/bills-chunks.json"
LIMIT = 400
SHORT = 20

RULE = (
    "Per bill (data/ko/bills/*.txt, sorted by name). Lines: form feeds removed; blank lines, "
    "page marks ('- 3 -') and the law-number placeholder ('법률 제 호') dropped; the "
    "신·구조문대비표 (old/new comparison table, its two columns interleaved line by line) "
    "dropped from its heading to the end of the file or to the next line beginning with the "
    "bill's title. Paragraphs: a line starts one when the line before is under 20 characters, "
    "ends with '.', ':', '법률안' or '동의안', or begins with ':' or '자료:', or when the line "
    "begins with a marker (①-⑳, '1.', '1의2.', ○ □ ◦ ∙ • * ( [ 〈 :, an indented '가.'-'하.', "
    "'제N조' unless the line before ends with '…제N항/호/조' or '｣'), or has no Hangul; "
    "otherwise it continues the paragraph, joined with a space where the line before ended "
    "with whitespace or the line is indented, else with nothing (the hard wrap splits words); "
    "whitespace runs become one space. Title: the opening lines up to the first ending in "
    "'안'; it is in the text of the bill's first passage only, as the document has it (the "
    "document's own later headings repeating it stay). Passages: consecutive paragraphs "
    "packed, joined by newlines, into passages of at most 400 characters; a paragraph is "
    "split only when it alone exceeds 400 (after sentence ends 다./함./임./음., else at the "
    "last space); a paragraph beginning with the title (head of the amendment or motion "
    "text, cost statement, funding plan) always starts a new passage. Ids: '<bill>-<kk>', "
    "kk from 01 in document order."
)

PAGE_MARK = re.compile(r"^-\s*\d+\s*-$")
PLACEHOLDER = re.compile(r"^법률\s+제\s+호$")
TABLE_HEAD = re.compile(r"^신\s*[·ㆍ]\s*구조문대비표$")
MARKER = re.compile(
    r"^\s*(?:[\u2460-\u2473]"        # ① … ⑳
    r"|\d+(?:의\d+)?\s*\."           # 1.  1의2.
    r"|[○□◦∙•*(\[〈:])"
    r"|\s+[가나다라마바사아자차카타파하]\.\s"  # 가. only indented: "다." also ends a wrapped sentence
    r"|[^가-힣]*$"                      # a line without Hangul (a formula, a table cell)
)
ARTICLE = re.compile(r"^\s*제\d+조")  # 제50조의3(…), 제35조 및 제36조를 …
REFERENCE_END = re.compile(r"(?:\d[조항호]|[｣」])$")  # …제44조제1항 / 제7조 … is one reference
LABEL = re.compile(r"^\s*(?:자료\s*)?:")  # a variable's definition, a table's source note
SENTENCE_END = re.compile(r"(?<=[다함임음]\.)\s+")


def nospace(s):
    return re.sub(r"\s+", "", s)


def squash(s):
    return re.sub(r"\s+", " ", s).strip()


def raw_lines(path):
    """The bill's non-blank lines, form feeds removed, trailing newline gone."""
    text = path.read_text(encoding="utf-8").replace("\r\n", "\n").replace("\f", "")
    return [l for l in text.split("\n") if l.strip()]


def title_of(lines):
    parts = []
    for l in lines:
        parts.append(l)
        if l.strip().endswith("안"):
            break
    return parts


def join(lines):
    """Join hard-wrapped lines into one string (rule 2's joining)."""
    out = lines[0].strip()
    for before, line in zip(lines, lines[1:]):
        out += (" " if before[-1:].isspace() or line[:1].isspace() else "") + line.strip()
    return squash(out)


def paragraphs(lines, title_first):
    kept = []
    in_table = False
    for l in lines:
        s = l.strip()
        if in_table:
            if nospace(s).startswith(title_first):
                in_table = False
            else:
                continue
        if TABLE_HEAD.match(s):
            in_table = True
            continue
        if PAGE_MARK.match(s) or PLACEHOLDER.match(s):
            continue
        kept.append(l)
    paras = []
    prev = None
    for l in kept:
        s = l.strip()
        starts = (
            prev is None
            or len(squash(prev)) < SHORT
            or prev.rstrip().endswith((".", ":", "법률안", "동의안"))
            or LABEL.match(prev)
            or MARKER.match(l)
            or (ARTICLE.match(l) and not REFERENCE_END.search(prev.rstrip()))
        )
        if starts:
            paras.append([l])
        else:
            paras[-1].append(l)
        prev = l
    return [join(p) for p in paras]


def split_long(para):
    """Cut a paragraph over LIMIT after sentence ends, else at spaces."""
    pieces = []
    for sent in SENTENCE_END.split(para):
        while len(sent) > LIMIT:
            cut = sent.rfind(" ", 0, LIMIT + 1)
            if cut <= 0:
                cut = LIMIT
            pieces.append(sent[:cut].strip())
            sent = sent[cut:].strip()
        if sent:
            pieces.append(sent)
    out = []
    for p in pieces:
        if out and len(out[-1]) + 1 + len(p) <= LIMIT:
            out[-1] += " " + p
        else:
            out.append(p)
    return out


def passages(paras, title):
    out = []
    cur = None
    for para in paras:
        head = nospace(para).startswith(title)
        for piece in (split_long(para) if len(para) > LIMIT else [para]):
            if cur is not None and not head and len(cur) + 1 + len(piece) <= LIMIT:
                cur += "\n" + piece
            else:
                if cur is not None:
                    out.append(cur)
                cur = piece
            head = False
    if cur is not None:
        out.append(cur)
    return out


def chunks(src=SRC):
    result = []
    for path in sorted(Path(src).glob("*.txt")):
        bill = path.stem
        lines = raw_lines(path)
        tlines = title_of(lines)
        title = join(tlines)
        paras = paragraphs(lines, nospace(tlines[0]))
        for k, text in enumerate(passages(paras, nospace(title)), 1):
            result.append({"id": f"{bill}-{k:02d}", "bill": bill, "title": title, "ord": k, "text": text})
    return result


def render():
    doc = {
        "name": "bills-chunks",
        "version": 1,
        "source": "data/ko/bills/*.txt: ten bills of the 18th National Assembly (의안번호 1809890–1809899), "
        "UTF-8, unchanged from konlpy 0.6.0's kobill corpus (konlpy/data/corpus/kobill); "
        "public government texts. Generated by scripts/bills_chunks.py.",
        "rule": RULE,
        "chunks": chunks(),
    }
    return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv[1:]:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("bills-chunks.json is up to date" if same else "bills-chunks.json differs from what the script writes")
        sys.exit(0 if same else 1)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")

#!/usr/bin/env python3
"""Checks what scripts/demo.sh printed, as CI runs it on real weights: every step ran,
every search printed its three best rows, the retrieval figures cover all 60 questions
and are no lower than the reference's (e5-small-expected.json; the demo runs the default
precision, which the tests hold to no lower figures than f32's), and the model card's
example printed three cosines within 1e-3 of the reference's matrix.

    python3 scripts/check_demo.py DEMO_LOG EXPECTED_JSON
"""

import json
import re
import sys

log = open(sys.argv[1], encoding="utf-8").read()
x = json.load(open(sys.argv[2], encoding="utf-8"))
fail = []

for step in ["==> embedding 130 articles with", "==> a bill", "==> retrieval quality", "Model card example",
             "The demo server keeps running"]:
    if step not in log:
        fail.append(f"missing step: {step}")
tops = re.findall(r"^ 제\d+조 \| 0\.\d{4} \|", log, re.M)
if len(tops) != 12:
    fail.append(f"{len(tops)} article rows for the 4 questions, expected 12")

m = re.search(r"^\s*([01]\.\d{4}) \|\s*([01]\.\d{4}) \|\s*([01]\.\d{4}) \|\s*(\d+)\s*$", log, re.M)
if not m:
    fail.append("no retrieval figures row")
else:
    r1, r5, mrr, n = float(m[1]), float(m[2]), float(m[3]), int(m[4])
    ref = x["metrics"]
    if n != 60:
        fail.append(f"{n} questions scored, expected 60")
    for name, got, key in [("recall@1", r1, "recall@1"), ("recall@5", r5, "recall@5"), ("MRR@10", mrr, "mrr@10")]:
        if got < round(ref[key], 4) - 1e-9:
            fail.append(f"{name} {got} below the reference's {ref[key]:.4f}")
    print(f"demo: recall@1 {r1}, recall@5 {r5}, MRR@10 {mrr} over {n} questions "
          f"(reference f32: {ref['recall@1']:.4f}, {ref['recall@5']:.4f}, {ref['mrr@10']:.4f})")

card = re.search(r"^\s*(0\.\d{4}) \|\s*(0\.\d{4}) \|\s*(0\.\d{4})\s*$", log, re.M)
if not card:
    fail.append("no model card row")
else:
    sim = x["card"]["similarity"]
    want = [sim[0][1], sim[0][2], sim[1][2]]
    got = [float(v) for v in card.groups()]
    if any(abs(g - w) > 1e-3 for g, w in zip(got, want)):
        fail.append(f"card cosines {got} vs the reference's {[round(w, 4) for w in want]}")
    print(f"demo: model card example {got} (reference f32 {[round(w, 4) for w in want]})")

if fail:
    print("demo check FAILED:\n  " + "\n  ".join(fail), file=sys.stderr)
    sys.exit(1)
print("demo: all steps ran, figures checked")

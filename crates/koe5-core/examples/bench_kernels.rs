//! GFLOP/s of the dense layers' multiply at KoE5's shapes: the bf16 kernel (AVX512-BF16
//! and portable) and candle's f32 matmul, on the current thread pool (RAYON_NUM_THREADS);
//! and the instruction ceilings of one core. Prints JSON (bench/run.py reads it).
//!
//!   cargo run --release -p koe5-core --example bench_kernels [ROWS]

use std::time::Instant;

use candle_core::{Device, Tensor};
use koe5_core::kernels::{self, PackedBf16};

fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// The instruction ceilings of one core, in GFLOP/s: `vdpbf16ps` and f32 FMA on 512-bit
/// registers with 24 independent sums and no memory traffic (0 where absent).
fn peak() -> serde_json::Value {
    #[cfg(target_arch = "x86_64")]
    if kernels::has_avx512_bf16() {
        let n = 20_000_000usize;
        let time = |f: unsafe fn(usize) -> f32| {
            let t = Instant::now();
            std::hint::black_box(unsafe { f(n) });
            t.elapsed().as_secs_f64()
        };
        let bf16 = 24.0 * n as f64 * 64.0 / time(peak_loops::dpbf16) / 1e9;
        let f32 = 24.0 * n as f64 * 32.0 / time(peak_loops::fma) / 1e9;
        return serde_json::json!({ "bf16_gflops_per_core": bf16, "f32_gflops_per_core": f32 });
    }
    serde_json::json!({ "bf16_gflops_per_core": 0, "f32_gflops_per_core": 0 })
}

#[cfg(target_arch = "x86_64")]
mod peak_loops {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16(n: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 24];
        let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3f80_3f80));
        let b: __m512bh = std::mem::transmute(_mm512_set1_epi32(std::hint::black_box(0x0001_0001)));
        for _ in 0..n {
            for x in acc.iter_mut() {
                *x = _mm512_dpbf16_ps(*x, a, b);
            }
        }
        acc.iter().fold(0.0, |s, &x| s + _mm512_reduce_add_ps(x))
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma(n: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 24];
        let a = _mm512_set1_ps(std::hint::black_box(1.000_000_1));
        let b = _mm512_set1_ps(1e-30);
        for _ in 0..n {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        acc.iter().fold(0.0, |s, &x| s + _mm512_reduce_add_ps(x))
    }
}

fn main() {
    // First, while no thread pool exists: rayon's idle workers spin for a while after
    // each parallel call and would share the cores with this single-threaded loop.
    let peak = peak();
    let rows: Vec<usize> = match std::env::args().nth(1) {
        Some(r) => vec![r.parse().expect("ROWS is a number")],
        None => vec![16, 256, 2048],
    };
    let mut out = Vec::new();
    for &m in &rows {
        for (k, n) in [(1024, 1024), (1024, 4096), (4096, 1024)] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
            let bias = vec![0.1f32; n];
            let flop = 2.0 * (m * k * n) as f64;
            let packed = PackedBf16::pack(&w, k, n).expect("memory for the packed weight");
            let reps = if m <= 16 { 50 } else { 5 };
            let fast = best_of(reps, || drop(kernels::matmul(&x, m, &packed, &bias, kernels::Epilogue::Bias, true)));
            let portable = if m <= 256 { best_of(2, || drop(kernels::matmul(&x, m, &packed, &bias, kernels::Epilogue::Bias, false))) } else { f64::NAN };
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
            let wt = Tensor::from_vec(w.clone(), (k, n), &Device::Cpu).unwrap();
            let f32s = best_of(reps, || drop(xt.matmul(&wt).unwrap()));
            out.push(serde_json::json!({
                "m": m, "k": k, "n": n,
                "bf16_avx512_gflops": flop / fast / 1e9,
                "bf16_portable_gflops": flop / portable / 1e9,
                "f32_candle_gflops": flop / f32s / 1e9,
            }));
        }
    }
    println!("{}", serde_json::json!({ "shapes": out, "peak": peak }));
}

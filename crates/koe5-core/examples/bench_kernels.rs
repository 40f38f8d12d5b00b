//! GFLOP/s of the dense layers' multiply at KoE5's shapes: the bf16 kernel (AVX512-BF16
//! and portable) and candle's f32 matmul, on the current thread pool (RAYON_NUM_THREADS).
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

fn main() {
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
            let packed = PackedBf16::pack(&w, k, n);
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
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}

//! GFLOP/s of the dense layers' multiply at KoE5's shapes: the bf16 kernel (AVX512-BF16
//! and portable), the f32 and int8 (AVX512-VNNI) kernels and candle's f32 matmul, on the
//! current thread pool (RAYON_NUM_THREADS); and the instruction ceilings of one core.
//! int8 counts a multiply-add of two bytes as two operations, as f32 does for floats.
//! Prints JSON (bench/run.py reads it).
//!
//!   cargo run --release -p koe5-core --example bench_kernels [ROWS]

use std::time::Instant;

use candle_core::{Device, Tensor};
use koe5_core::kernels::{self, Epilogue, Packed};
use koe5_core::Precision;

fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// The instruction ceilings of one core, in GFLOP/s: `vdpbf16ps`, `vpdpbusd` and f32 FMA on 512-bit
/// registers, 12 independent sums held in registers (inline assembly: compiled Rust
/// kept the sums in memory and measured the store port instead), no memory traffic.
/// 0 where absent.
fn peak() -> serde_json::Value {
    #[cfg(target_arch = "x86_64")]
    if kernels::has_avx512_bf16() {
        let n = 50_000_000u64;
        let time = |f: unsafe fn(u64)| {
            // SAFETY: the loops need AVX512F and AVX512-BF16, which this CPU has (above).
            unsafe { f(1_000_000) };
            let t = Instant::now();
            // SAFETY: as above.
            unsafe { f(n) };
            t.elapsed().as_secs_f64()
        };
        let bf16 = 12.0 * n as f64 * 64.0 / time(peak_loops::dpbf16) / 1e9;
        let f32 = 12.0 * n as f64 * 32.0 / time(peak_loops::fma) / 1e9;
        let int8 =
            if kernels::has_avx512_vnni() { 12.0 * n as f64 * 128.0 / time(peak_loops::dpbusd) / 1e9 } else { 0.0 };
        return serde_json::json!({ "bf16_gflops_per_core": bf16, "f32_gflops_per_core": f32, "int8_gops_per_core": int8 });
    }
    serde_json::json!({ "bf16_gflops_per_core": 0, "f32_gflops_per_core": 0, "int8_gops_per_core": 0 })
}

#[cfg(target_arch = "x86_64")]
mod peak_loops {
    use std::arch::asm;

    /// `n` rounds of 12 independent `OP zmm_i, zmm12, zmm13`.
    macro_rules! loop12 {
        ($name:ident, $op:literal, $features:literal) => {
            /// # Safety
            ///
            /// The CPU has the instructions of `$features`.
            #[target_feature(enable = $features)]
            pub unsafe fn $name(n: u64) {
                // SAFETY: the instructions exist (the contract); the loop touches only
                // the registers it declares, and no memory.
                unsafe {
                    asm!(
                        "vxorps zmm12, zmm12, zmm12",
                        "vxorps zmm13, zmm13, zmm13",
                        "2:",
                        concat!($op, " zmm0, zmm12, zmm13"), concat!($op, " zmm1, zmm12, zmm13"),
                        concat!($op, " zmm2, zmm12, zmm13"), concat!($op, " zmm3, zmm12, zmm13"),
                        concat!($op, " zmm4, zmm12, zmm13"), concat!($op, " zmm5, zmm12, zmm13"),
                        concat!($op, " zmm6, zmm12, zmm13"), concat!($op, " zmm7, zmm12, zmm13"),
                        concat!($op, " zmm8, zmm12, zmm13"), concat!($op, " zmm9, zmm12, zmm13"),
                        concat!($op, " zmm10, zmm12, zmm13"), concat!($op, " zmm11, zmm12, zmm13"),
                        "dec {n}",
                        "jnz 2b",
                        n = inout(reg) n => _,
                        out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _, out("zmm5") _,
                        out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                        out("zmm12") _, out("zmm13") _,
                        options(nostack),
                    );
                }
            }
        };
    }

    loop12!(dpbf16, "vdpbf16ps", "avx512f,avx512bf16");
    loop12!(fma, "vfmadd231ps", "avx512f");
    loop12!(dpbusd, "vpdpbusd", "avx512f,avx512vnni");
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
            let packed = Packed::pack(&w, k, n, Precision::Bf16).expect("memory for the packed weight");
            let packed32 = Packed::pack(&w, k, n, Precision::F32).expect("memory for the packed weight");
            let packed8 = Packed::pack(&w, k, n, Precision::Int8).expect("memory for the packed weight");
            let reps = if m <= 16 { 50 } else { 5 };
            // Output and scratch buffers reused, as the encoder does.
            let (mut dst, mut scratch) = (Vec::new(), kernels::Scratch::default());
            let mut run = |w: &Packed, fast: bool| {
                kernels::matmul(&x, m, w, &bias, Epilogue::Bias, None, fast, &mut dst, &mut scratch)
            };
            let fast = best_of(reps, || run(&packed, true));
            let portable = if m <= 256 { best_of(2, || run(&packed, false)) } else { f64::NAN };
            let f32_fast = best_of(reps, || run(&packed32, true));
            let int8_fast = if kernels::has_avx512_vnni() { best_of(reps, || run(&packed8, true)) } else { f64::NAN };
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
            let wt = Tensor::from_vec(w.clone(), (k, n), &Device::Cpu).unwrap();
            let f32s = best_of(reps, || drop(xt.matmul(&wt).unwrap()));
            out.push(serde_json::json!({
                "m": m, "k": k, "n": n,
                "bf16_avx512_gflops": flop / fast / 1e9,
                "bf16_portable_gflops": flop / portable / 1e9,
                "f32_avx512_gflops": flop / f32_fast / 1e9,
                "int8_vnni_gops": flop / int8_fast / 1e9,
                "f32_candle_gflops": flop / f32s / 1e9,
            }));
        }
    }
    println!("{}", serde_json::json!({ "shapes": out, "peak": peak }));
}

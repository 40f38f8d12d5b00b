//! LayerNorm of each row: one body, compiled for AVX512F and for the baseline, picked
//! at run time.

use rayon::prelude::*;

use super::cpu::has_avx512f;

/// Lanes of the partial sums (so the sums vectorize).
const L: usize = 16;

/// LayerNorm of every row of `x` (`rows × gamma.len()`), in place.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32, fast: bool) {
    let n = gamma.len();
    let fast = fast && has_avx512f();
    x.par_chunks_mut(n).for_each(|row| {
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: the CPU has AVX512F (checked above).
            unsafe { norm_avx512(row, gamma, beta, eps) };
            return;
        }
        norm_row(row, gamma, beta, eps);
    });
}

/// `norm_row` compiled for AVX512F (a safe function that code not compiled for it
/// calls only where the CPU has it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn norm_avx512(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    norm_row(row, gamma, beta, eps)
}

/// Mean and variance in two passes, each summed in L lanes (so it vectorizes).
#[inline(always)]
fn norm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let chunks = row.chunks_exact(L);
    let tail = chunks.remainder();
    let mut part = [0f32; L];
    for c in chunks.clone() {
        for l in 0..L {
            part[l] += c[l];
        }
    }
    let mean = (part.iter().sum::<f32>() + tail.iter().sum::<f32>()) / n;
    let mut part = [0f32; L];
    for c in chunks {
        for l in 0..L {
            part[l] += (c[l] - mean) * (c[l] - mean);
        }
    }
    let var = (part.iter().sum::<f32>() + tail.iter().map(|&x| (x - mean) * (x - mean)).sum::<f32>()) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((x, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
        *x = (*x - mean) * inv * g + b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::values;

    #[test]
    fn layer_norm_matches_its_definition_on_both_paths() {
        for &n in &[8usize, 32, 1024, 1000] {
            let x: Vec<f32> = values(3 * n, 3).iter().map(|v| v * 4.0 + 1.5).collect();
            let (g, b) = (values(n, 4), values(n, 5));
            for fast in [false, true] {
                let mut y = x.clone();
                layer_norm(&mut y, &g, &b, 1e-5, fast);
                for (r, row) in x.chunks(n).enumerate() {
                    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                    let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
                    for c in 0..n {
                        let want = (row[c] as f64 - mean) / (var + 1e-5).sqrt() * g[c] as f64 + b[c] as f64;
                        assert!((y[r * n + c] as f64 - want).abs() < 2e-6, "n={n} fast={fast} at {r},{c}");
                    }
                }
            }
        }
    }
}

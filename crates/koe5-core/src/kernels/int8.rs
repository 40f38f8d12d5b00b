//! The int8 number format of the int8 dense layers, and the quantisers that produce it:
//!
//! - **weights**, once at load: each output column `n` symmetric in `[-W, W]` with its
//!   own scale, `W[k][n] ≈ scale[n] · q[k][n]`;
//! - **activations**, as each dense layer starts: each row (token) asymmetric in
//!   `[0, 255]` with its own scale and zero point, `x[k] ≈ scale · (u[k] - zero)`, the
//!   range widened to hold 0 so that a zero stays exactly zero.
//!
//! One row's bytes depend on that row alone, so a text's vector does not depend on the
//! batch it came in. `vpdpbusd` (AVX512-VNNI) and `vpmaddubsw` (AVX2) multiply unsigned
//! by signed bytes, which is why the two sides differ; the zero point comes out of the
//! sums as `zero · Σₖ q[k][n]` (the column sums, kept with the packed weight).
//!
//! `W` is 127 on CPUs with AVX512-VNNI and 63 elsewhere: `vpmaddubsw` adds two products
//! into a saturating 16-bit sum, and 2 · 255 · 63 = 32,130 keeps that sum exact (with 127
//! it could saturate). Measured on real weights (README, Precision), 63 levels cost less
//! accuracy than 7-bit activations would. So an int8 vector differs between the two kinds
//! of CPU (by a cosine of about 0.999), and is the same wherever the kind is.
//!
//! Both quantisers round to nearest, ties to even, exactly as `vcvtps2dq` does, so the
//! vector paths and the portable one produce the same bytes.

/// The largest magnitude of a quantised weight on this CPU (see the module's notes).
pub(crate) fn weight_max() -> f32 {
    if crate::kernels::has_avx512_vnni() {
        127.0
    } else {
        63.0
    }
}

/// The scale of one weight column: its largest magnitude maps to `wmax` (1 for a column
/// of zeros, whose values all quantise to 0 whatever the scale).
pub(crate) fn weight_scale(max_abs: f32, wmax: f32) -> f32 {
    if max_abs > 0.0 && max_abs.is_finite() {
        max_abs / wmax
    } else {
        1.0
    }
}

/// `w / scale` rounded to the nearest integer in [-wmax, wmax].
#[inline]
pub(crate) fn quantize_weight(w: f32, inv_scale: f32, wmax: f32) -> i8 {
    (w * inv_scale).round_ties_even().clamp(-wmax, wmax) as i8
}

/// The largest quantised activation.
pub(crate) const ACTIVATION_MAX: i32 = 255;

/// One row's scale and zero point, from its smallest and largest value.
#[inline]
pub(crate) fn row_params(lo: f32, hi: f32) -> (f32, f32, i32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    // (each side divided first: hi − lo itself may overflow)
    let scale = hi / ACTIVATION_MAX as f32 - lo / ACTIVATION_MAX as f32;
    let ok = scale > 0.0 && scale.is_finite() && (1.0 / scale).is_finite();
    let scale = if ok { scale } else { 1.0 };
    let inv = 1.0 / scale;
    let zero = (-lo * inv).round_ties_even().clamp(0.0, ACTIVATION_MAX as f32) as i32;
    (scale, inv, zero)
}

/// One activation as an unsigned byte.
#[inline]
pub(crate) fn quantize_activation(x: f32, inv: f32, zero: i32) -> u8 {
    // NaN and values beyond i32 become i32::MIN, as `vcvtps2dq` makes them (so every
    // path gives byte 0 there); the clamp keeps the rest in range.
    let v = (x * inv).round_ties_even();
    let v = if (-2_147_483_648.0..2_147_483_648.0).contains(&v) { v as i32 } else { i32::MIN };
    v.saturating_add(zero).clamp(0, ACTIVATION_MAX) as u8
}

/// `x` (`m × k`) quantised row by row into `cells` (`m × kp`, four bytes per cell, low
/// byte first, a row's last cell padded with zero bytes), each row's scale and zero
/// point into `scale` and `zero`; with `smooth`, each value `x[r][j]` is first
/// multiplied by `smooth[j]`. `fast`: the AVX-512 path where the CPU has AVX512F, else
/// the AVX2 one where it has AVX2 and FMA (the same bytes as the portable loop's).
#[allow(clippy::too_many_arguments)]
pub(crate) fn quantize_rows(
    x: &[f32],
    m: usize,
    k: usize,
    kp: usize,
    smooth: Option<&[f32]>,
    fast: bool,
    cells: &mut Vec<u32>,
    scale: &mut Vec<f32>,
    zero: &mut Vec<i32>,
) {
    use rayon::prelude::*;
    assert_eq!(x.len(), m * k);
    assert_eq!(kp, k.div_ceil(4));
    assert!(smooth.is_none_or(|s| s.len() == k));
    cells.truncate(m * kp);
    cells.resize(m * kp, 0);
    scale.truncate(m);
    scale.resize(m, 0.0);
    zero.truncate(m);
    zero.resize(m, 0);
    let (avx512f, avx2) = (crate::kernels::has_avx512f(), crate::kernels::has_avx2_fma());
    cells
        .par_chunks_mut(kp.max(1))
        .zip(x.par_chunks(k.max(1)))
        .zip(scale.par_iter_mut().zip(zero.par_iter_mut()))
        .for_each(|((dst, row), (s, z))| {
            #[cfg(target_arch = "x86_64")]
            if fast && avx512f {
                // SAFETY: the CPU has AVX512F (checked above).
                (*s, *z) = unsafe { avx512::quantize_row(row, smooth, dst) };
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if fast && avx2 {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                (*s, *z) = unsafe { avx2::quantize_row(row, smooth, dst) };
                return;
            }
            let _ = (fast, avx512f, avx2);
            (*s, *z) = quantize_row(row, smooth, dst);
        });
}

/// One row, portably: the same bytes as [`avx512::quantize_row`].
fn quantize_row(row: &[f32], smooth: Option<&[f32]>, dst: &mut [u32]) -> (f32, i32) {
    let value = |j: usize| smooth.map_or(row[j], |s| row[j] * s[j]);
    let lo = (0..row.len()).map(value).fold(f32::INFINITY, f32::min);
    let hi = (0..row.len()).map(value).fold(f32::NEG_INFINITY, f32::max);
    let (scale, inv, zero) = row_params(lo, hi);
    quantize_tail(row, smooth, dst, 0, inv, zero);
    (scale, zero)
}

/// Cells `from..` of one row (values `4 · from ..`).
fn quantize_tail(row: &[f32], smooth: Option<&[f32]>, dst: &mut [u32], from: usize, inv: f32, zero: i32) {
    for (c, d) in dst.iter_mut().enumerate().skip(from) {
        let mut cell = 0u32;
        for b in 0..4 {
            let j = 4 * c + b;
            if let Some(&v) = row.get(j) {
                let v = smooth.map_or(v, |s| v * s[j]);
                cell |= (quantize_activation(v, inv, zero) as u32) << (8 * b);
            }
        }
        *d = cell;
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{quantize_tail, row_params};

    /// One row, 16 values at a time: its scale and zero point, its bytes in `dst`.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn quantize_row(row: &[f32], smooth: Option<&[f32]>, dst: &mut [u32]) -> (f32, i32) {
        let blocks = row.len() / 16;
        // SAFETY: every load reads floats 16·i .. 16·i + 16 < row.len() of `row` (and of
        // `smooth`, as long); every store writes cells 4·i .. 4·i + 4, inside `dst` (its
        // ceil(len / 4) cells).
        unsafe {
            // (a macro, not a closure: the intrinsics need this function's target features)
            macro_rules! load {
                ($i:expr) => {{
                    let v = _mm512_loadu_ps(row.as_ptr().add(16 * $i));
                    match smooth {
                        Some(s) => _mm512_mul_ps(v, _mm512_loadu_ps(s.as_ptr().add(16 * $i))),
                        None => v,
                    }
                }};
            }
            let (mut lo, mut hi) = (_mm512_set1_ps(f32::INFINITY), _mm512_set1_ps(f32::NEG_INFINITY));
            for i in 0..blocks {
                let v = load!(i);
                // (NaN in `v` leaves the lane as it was, as f32::min and max do)
                lo = _mm512_min_ps(v, lo);
                hi = _mm512_max_ps(v, hi);
            }
            let (mut lo, mut hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
            for j in 16 * blocks..row.len() {
                let v = smooth.map_or(row[j], |s| row[j] * s[j]);
                lo = lo.min(v);
                hi = hi.max(v);
            }
            let (scale, inv, zero) = row_params(lo, hi);
            let (vinv, vzero) = (_mm512_set1_ps(inv), _mm512_set1_epi32(zero));
            let (zeros, top) = (_mm512_setzero_si512(), _mm512_set1_epi32(super::ACTIVATION_MAX));
            for i in 0..blocks {
                let v = _mm512_mul_ps(load!(i), vinv);
                // Rounds to nearest even (the default rounding mode), as round_ties_even.
                let q = _mm512_add_epi32(_mm512_cvtps_epi32(v), vzero);
                let q = _mm512_min_epi32(_mm512_max_epi32(q, zeros), top);
                _mm_storeu_si128(dst.as_mut_ptr().add(4 * i).cast(), _mm512_cvtepi32_epi8(q));
            }
            quantize_tail(row, smooth, dst, 4 * blocks, inv, zero);
            (scale, zero)
        }
    }
}

/// The same quantiser on 8 AVX2 lanes.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{quantize_tail, row_params, ACTIVATION_MAX};

    /// One row, 8 values at a time: its scale and zero point, its bytes in `dst`.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn quantize_row(row: &[f32], smooth: Option<&[f32]>, dst: &mut [u32]) -> (f32, i32) {
        let blocks = row.len() / 8;
        // SAFETY: every load reads floats 8·i .. 8·i + 8 ≤ row.len() of `row` (and of
        // `smooth`, as long); every store writes cells 2·i and 2·i + 1, inside `dst` (its
        // ceil(len / 4) cells).
        unsafe {
            // (a macro, not a closure: the intrinsics need this function's target features)
            macro_rules! load {
                ($i:expr) => {{
                    let v = _mm256_loadu_ps(row.as_ptr().add(8 * $i));
                    match smooth {
                        Some(s) => _mm256_mul_ps(v, _mm256_loadu_ps(s.as_ptr().add(8 * $i))),
                        None => v,
                    }
                }};
            }
            let (mut lo, mut hi) = (_mm256_set1_ps(f32::INFINITY), _mm256_set1_ps(f32::NEG_INFINITY));
            for i in 0..blocks {
                let v = load!(i);
                // (NaN in `v` leaves the lane as it was, as f32::min and max do)
                lo = _mm256_min_ps(v, lo);
                hi = _mm256_max_ps(v, hi);
            }
            let (mut l, mut h) = ([0f32; 8], [0f32; 8]);
            _mm256_storeu_ps(l.as_mut_ptr(), lo);
            _mm256_storeu_ps(h.as_mut_ptr(), hi);
            let mut lo = l.iter().copied().fold(f32::INFINITY, f32::min);
            let mut hi = h.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for j in 8 * blocks..row.len() {
                let v = smooth.map_or(row[j], |s| row[j] * s[j]);
                lo = lo.min(v);
                hi = hi.max(v);
            }
            let (scale, inv, zero) = row_params(lo, hi);
            let (vinv, vzero) = (_mm256_set1_ps(inv), _mm256_set1_epi32(zero));
            let (zeros, top) = (_mm256_setzero_si256(), _mm256_set1_epi32(ACTIVATION_MAX));
            for i in 0..blocks {
                let v = _mm256_mul_ps(load!(i), vinv);
                // Rounds to nearest even (the default rounding mode), as round_ties_even.
                let q = _mm256_add_epi32(_mm256_cvtps_epi32(v), vzero);
                let q = _mm256_min_epi32(_mm256_max_epi32(q, zeros), top);
                // 8 values in 0..=255 to bytes: each 128-bit half's four come out in the
                // low 32 bits of that half.
                let bytes = _mm256_packus_epi16(_mm256_packus_epi32(q, q), zeros);
                *dst.get_unchecked_mut(2 * i) = _mm256_extract_epi32::<0>(bytes) as u32;
                *dst.get_unchecked_mut(2 * i + 1) = _mm256_extract_epi32::<4>(bytes) as u32;
            }
            quantize_tail(row, smooth, dst, 2 * blocks, inv, zero);
            (scale, zero)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::values;

    #[test]
    fn rows_quantise_within_half_a_step_and_both_paths_agree() {
        for &(m, k) in &[(1, 1), (3, 5), (4, 16), (5, 33), (7, 1030)] {
            let mut x = values(m * k, 11);
            // A row of zeros, a row of one positive value, an outlier.
            x[..k].iter_mut().for_each(|v| *v = 0.0);
            if m > 1 {
                x[k..2 * k].iter_mut().for_each(|v| *v = 0.75);
            }
            if m > 2 {
                x[2 * k] = 40.0;
            }
            // A NaN and an infinity: every path gives the same bytes for them too.
            if m > 3 && k > 20 {
                x[3 * k + 17] = f32::NAN;
                x[3 * k + 3] = f32::INFINITY;
            }
            let kp = k.div_ceil(4);
            let run = |fast| {
                let (mut c, mut s, mut z) = (vec![u32::MAX; 3], vec![7.0; 1], vec![9; 1]);
                quantize_rows(&x, m, k, kp, None, fast, &mut c, &mut s, &mut z);
                (c, s, z)
            };
            let (cells, scale, zero) = run(false);
            if crate::kernels::has_avx512f() || crate::kernels::has_avx2_fma() {
                assert!(run(true) == (cells.clone(), scale.clone(), zero.clone()), "{m}×{k}: the paths differ");
            }
            #[cfg(target_arch = "x86_64")]
            if crate::kernels::has_avx2_fma() {
                // The AVX2 quantiser alone (the fast path above is AVX-512's where it exists).
                for r in 0..m {
                    let mut c = vec![0u32; kp];
                    // SAFETY: the CPU has AVX2 and FMA (checked above).
                    let (s, z) = unsafe { avx2::quantize_row(&x[r * k..(r + 1) * k], None, &mut c) };
                    assert!(
                        (s, z) == (scale[r], zero[r]) && c[..] == cells[r * kp..(r + 1) * kp],
                        "{m}×{k} avx2 row {r}"
                    );
                    // And smoothed, against the portable loop.
                    let sm: Vec<f32> = (0..k).map(|j| 0.5 + (j % 5) as f32).collect();
                    let (mut c2, mut c3) = (vec![0u32; kp], vec![0u32; kp]);
                    // SAFETY: as above.
                    let got = unsafe { avx2::quantize_row(&x[r * k..(r + 1) * k], Some(&sm), &mut c2) };
                    let want = quantize_row(&x[r * k..(r + 1) * k], Some(&sm), &mut c3);
                    assert!(got == want && c2 == c3, "{m}×{k} avx2 smoothed row {r}");
                }
            }
            for r in 0..m {
                if !x[r * k..(r + 1) * k].iter().all(|v| v.is_finite()) {
                    continue;
                }
                for c in 0..kp {
                    for b in 0..4 {
                        let u = (cells[r * kp + c] >> (8 * b)) as u8;
                        let Some(&v) = x.get(r * k + 4 * c + b).filter(|_| 4 * c + b < k) else {
                            assert_eq!(u, 0, "padding");
                            continue;
                        };
                        let back = scale[r] * (u as i32 - zero[r]) as f32;
                        assert!((back - v).abs() <= 0.5001 * scale[r], "{m}×{k} row {r}: {v} came back as {back}");
                    }
                }
            }
            assert_eq!(zero[0], 0);
            assert!(cells[..kp].iter().all(|&c| c == 0), "zeros stay zeros");
            // Smoothing multiplies each channel first: the bytes of the multiplied values.
            let smooth: Vec<f32> = (0..k).map(|j| 0.25 + (j % 7) as f32).collect();
            let multiplied: Vec<f32> = x.iter().enumerate().map(|(i, v)| v * smooth[i % k]).collect();
            for fast in [false, crate::kernels::has_avx512f() || crate::kernels::has_avx2_fma()] {
                let (mut c, mut s, mut z) = (Vec::new(), Vec::new(), Vec::new());
                quantize_rows(&x, m, k, kp, Some(&smooth), fast, &mut c, &mut s, &mut z);
                let (mut c2, mut s2, mut z2) = (Vec::new(), Vec::new(), Vec::new());
                quantize_rows(&multiplied, m, k, kp, None, false, &mut c2, &mut s2, &mut z2);
                assert!((c, s, z) == (c2, s2, z2), "{m}×{k} fast={fast}: smoothing");
            }
        }
    }

    #[test]
    fn weights_quantise_symmetrically() {
        for wmax in [127.0, 63.0] {
            let s = weight_scale(2.54, wmax);
            assert_eq!(quantize_weight(2.54, 1.0 / s, wmax), wmax as i8);
            assert_eq!(quantize_weight(-2.54, 1.0 / s, wmax), -wmax as i8);
            assert_eq!(quantize_weight(0.0, 1.0 / s, wmax), 0);
            assert_eq!(weight_scale(0.0, wmax), 1.0);
            assert_eq!(quantize_weight(0.01, 1.0 / s, wmax), 0);
        }
        // Activations use 8 bits, and a row's extremes reach both ends.
        let (scale, inv, zero) = row_params(-1.0, 3.0);
        assert_eq!((quantize_activation(-1.0, inv, zero), quantize_activation(3.0, inv, zero)), (0, 255));
        assert!((scale - 4.0 / 255.0).abs() < 1e-7 && zero == 64);
        assert_eq!(quantize_activation(3.5, inv, zero), 255, "beyond the row's range: clamped");
        assert_eq!(quantize_activation(f32::NAN, inv, zero), 0);
        assert_eq!(quantize_activation(f32::INFINITY, inv, zero), 0);
        // Ranges too small or too large for their reciprocal fall back to scale 1.
        assert_eq!(row_params(0.0, 1e-38).0, 1.0);
        assert!(row_params(-3e38, 3e38).0.is_finite());
    }
}

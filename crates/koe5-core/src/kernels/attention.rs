//! Self-attention over sequences packed back to back: scores, softmax, weighted sum of
//! values, one task per sequence and head, over the sequence's real tokens only. An
//! AVX-512 path (where the CPU has AVX512F), an AVX2 one (where it has AVX2 and FMA but
//! not AVX512F) and a portable one sum in different orders (lanes, fused multiply-adds),
//! so they agree to f32 rounding.

use rayon::prelude::*;

use super::approx::exp_nonpositive;
use super::cpu::{has_avx2_fma, has_avx512f};
use super::shared_out::SharedOut;

/// What one attention call works on: sequences packed back to back, no padding:
/// sequence `b` is `lens[b]` rows, starting where the one before it ends; each row of
/// `qkv` holds the queries, keys and values of all heads (`3 × heads × head_dim`
/// values, in that order).
pub struct Attention<'a> {
    pub qkv: &'a [f32],
    pub lens: &'a [usize],
    pub heads: usize,
    pub head_dim: usize,
}

/// Query rows per step: their scores and weighted sums are 4 independent chains of
/// multiply-adds, enough to keep the FMA unit busy.
const QR: usize = 4;
/// Lanes per chunk of keys or of a head's dimensions.
const L: usize = 16;

/// Softmax(Q·Kᵀ/√d)·V for every sequence and head, each sequence attending to itself
/// only, into `out`, resized to `rows × (heads·head_dim)`, rows as in `qkv` (an encoder
/// reuses the buffer from layer to layer).
pub fn attention(a: &Attention, fast: bool, out: &mut Vec<f32>) {
    let hidden = a.heads * a.head_dim;
    let rows: usize = a.lens.iter().sum();
    assert_eq!(a.qkv.len(), rows * 3 * hidden);
    let starts: Vec<usize> = a.lens.iter().scan(0, |at, &len| Some(std::mem::replace(at, *at + len))).collect();
    out.clear();
    out.reserve(rows * hidden);
    let shared = SharedOut::new(out);
    let fast = fast && has_avx512f();
    (0..a.lens.len() * a.heads).into_par_iter().for_each(|task| {
        let (b, h) = (task / a.heads, task % a.heads);
        let (start, len) = (starts[b], a.lens[b]);
        if len == 0 {
            return;
        }
        let rows = &a.qkv[start * 3 * hidden..(start + len) * 3 * hidden];
        // SAFETY: rows start .. start+len lie inside `out`'s rows × hidden reserved cells,
        // and this task alone writes their columns h·d .. (h+1)·d.
        let out = unsafe { shared.at(start * hidden + h * a.head_dim) };
        let job = Head { rows, stride: 3 * hidden, hidden, h, d: a.head_dim, len, out, ldo: hidden };
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: the CPU has AVX512F (checked above); `job.out` is this task's (above).
            unsafe { head_avx512(&job) };
            return;
        }
        // SAFETY: `job.out` is this task's (above).
        unsafe { head_portable(&job) };
    });
    // SAFETY: every (sequence, head) task wrote all its rows' outputs.
    unsafe { out.set_len(rows * hidden) };
}

/// One sequence's one head: `len` rows of `rows` (stride `stride`) in, into `out`. The
/// job is *valid* when `out` points at `len` rows (stride `ldo`) of `d` cells inside the
/// output buffer, which no other thread accesses while the job runs.
struct Head<'a> {
    rows: &'a [f32],
    stride: usize,
    hidden: usize,
    h: usize,
    d: usize,
    len: usize,
    out: *mut f32,
    ldo: usize,
}

/// # Safety
///
/// The CPU has AVX512F, and `job` is valid.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn head_avx512(job: &Head) {
    // SAFETY: this function's contract is `head::<AVX512>`'s.
    unsafe { head::<AVX512>(job) }
}

/// The AVX2 path (where the CPU has AVX2 and FMA but not AVX512F): the same loops on
/// pairs of 8-lane registers.
///
/// # Safety
///
/// The CPU has AVX2 and FMA, and `job` is valid.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn head_avx2(job: &Head) {
    // SAFETY: this function's contract is `head::<AVX2>`'s.
    unsafe { head::<AVX2>(job) }
}

/// The portable loops, or the AVX2 path where the CPU has it.
///
/// # Safety
///
/// `job` is valid.
unsafe fn head_portable(job: &Head) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has both (checked just now); `job` is valid (the contract).
        return unsafe { head_avx2(job) };
    }
    // SAFETY: `job` is valid (the contract).
    unsafe { head::<PORTABLE>(job) }
}

/// The paths of [`head`].
const PORTABLE: u8 = 0;
const AVX2: u8 = 1;
const AVX512: u8 = 2;

/// Attention for one job, on AVX-512 registers for `AVX512`, AVX2 ones for `AVX2`.
///
/// # Safety
///
/// `job` is valid; the CPU has AVX512F for `AVX512`, AVX2 and FMA for `AVX2`.
#[inline(always)]
unsafe fn head<const PATH: u8>(job: &Head) {
    let &Head { rows, stride, hidden, h, d, len, out, ldo } = job;
    let (qo, ko, vo) = (h * d, hidden + h * d, 2 * hidden + h * d);
    // Keys transposed (d × lp) and values (len × dp), zero-padded to whole chunks.
    let lp = len.next_multiple_of(L);
    let dp = d.next_multiple_of(L);
    let mut kt = vec![0f32; d * lp];
    let mut v = vec![0f32; len * dp];
    for j in 0..len {
        let row = &rows[j * stride..];
        for t in 0..d {
            kt[t * lp + j] = row[ko + t];
        }
        v[j * dp..j * dp + d].copy_from_slice(&row[vo..vo + d]);
    }
    let scale = 1.0 / (d as f32).sqrt();
    let mut p = vec![0f32; QR * lp];
    let mut sums = [0f32; QR];
    let mut acc = [[0f32; L]; QR];
    for i0 in (0..len).step_by(QR) {
        // Scores of QR query rows (a row past the end repeats the last; it is dropped).
        let q: [&[f32]; QR] = std::array::from_fn(|r| {
            let at = (i0 + r).min(len - 1) * stride + qo;
            &rows[at..at + d]
        });
        for j0 in (0..lp).step_by(L) {
            match PATH {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX512F (PATH's contract); kt holds d rows of lp ≥ j0 + L.
                AVX512 => unsafe { avx512::scores(&q, &kt[j0..], lp, &mut acc) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX2 and FMA (PATH's contract); as above.
                AVX2 => unsafe { avx2::scores(&q, &kt[j0..], lp, &mut acc) },
                _ => portable::scores(&q, &kt[j0..], lp, &mut acc),
            }
            for r in 0..QR {
                p[r * lp + j0..r * lp + j0 + L].copy_from_slice(&acc[r]);
            }
        }
        // Softmax over the real keys (the scores are scaled here, as the reference does);
        // the 1/sum is applied to the weighted sums.
        for r in 0..QR {
            let s = &mut p[r * lp..r * lp + len];
            sums[r] = match PATH {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX512F (PATH's contract).
                AVX512 => unsafe { avx512::softmax_unnormalized(s, scale) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX2 and FMA (PATH's contract).
                AVX2 => unsafe { avx2::softmax_unnormalized(s, scale) },
                _ => portable::softmax_unnormalized(s, scale),
            };
        }
        // Weighted sums of the values, a chunk of L dimensions at a time.
        for c0 in (0..dp).step_by(L) {
            match PATH {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX512F (PATH's contract); p holds QR rows of lp ≥
                // len, v holds len rows of dp ≥ c0 + L.
                AVX512 => unsafe { avx512::weighted(&p, lp, &v[c0..], dp, len, &mut acc) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX2 and FMA (PATH's contract); as above.
                AVX2 => unsafe { avx2::weighted(&p, lp, &v[c0..], dp, len, &mut acc) },
                _ => portable::weighted(&p, lp, &v[c0..], dp, len, &mut acc),
            }
            for r in 0..QR.min(len - i0) {
                let inv = 1.0 / sums[r];
                #[allow(clippy::needless_range_loop)] // l indexes acc and the output alike
                for l in 0..L.min(d - c0) {
                    // SAFETY: row i0+r < len and column c0+l < d: a cell of the valid job.
                    unsafe { *out.add((i0 + r) * ldo + c0 + l) = acc[r][l] * inv };
                }
            }
        }
    }
}

/// The attention's inner loops, one output lane at a time.
mod portable {
    use super::{exp_nonpositive, L, QR};

    /// `acc[r][l] = Σ_t q[r][t] · kt[t·lp + l]`: QR rows' scores against L keys.
    #[inline(always)]
    pub fn scores(q: &[&[f32]; QR], kt: &[f32], lp: usize, acc: &mut [[f32; L]; QR]) {
        *acc = [[0.0; L]; QR];
        for t in 0..q[0].len() {
            let k = &kt[t * lp..t * lp + L];
            for r in 0..QR {
                for l in 0..L {
                    acc[r][l] += q[r][t] * k[l];
                }
            }
        }
    }

    /// `s ← exp(s·scale − max)`; returns the sum.
    #[inline(always)]
    pub fn softmax_unnormalized(s: &mut [f32], scale: f32) -> f32 {
        let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * scale;
        let mut sum = 0.0;
        for x in s.iter_mut() {
            *x = exp_nonpositive(*x * scale - max);
            sum += *x;
        }
        sum
    }

    /// `acc[r][l] = Σ_j p[r·lp + j] · v[j·dp + l]` over the `len` real keys.
    #[inline(always)]
    pub fn weighted(p: &[f32], lp: usize, v: &[f32], dp: usize, len: usize, acc: &mut [[f32; L]; QR]) {
        *acc = [[0.0; L]; QR];
        for j in 0..len {
            let vj = &v[j * dp..j * dp + L];
            for r in 0..QR {
                for l in 0..L {
                    acc[r][l] += p[r * lp + j] * vj[l];
                }
            }
        }
    }
}

/// The same loops on 16-lane registers: QR independent chains of multiply-adds.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{L, QR};

    /// # Safety
    ///
    /// The CPU has AVX512F; every `q[r]` holds `d = q[0].len() > 0` values and `kt`
    /// at least `(d - 1)·lp + L`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn scores(q: &[&[f32]; QR], kt: &[f32], lp: usize, acc: &mut [[f32; L]; QR]) {
        let d = q[0].len();
        debug_assert!(kt.len() >= (d - 1) * lp + L);
        // SAFETY: loads of kt at t·lp .. t·lp + L and q[r][t], t < d: inside both (the
        // contract).
        unsafe {
            let mut sum = [_mm512_setzero_ps(); QR];
            for t in 0..d {
                let k = _mm512_loadu_ps(kt.as_ptr().add(t * lp));
                for r in 0..QR {
                    sum[r] = _mm512_fmadd_ps(_mm512_set1_ps(*q[r].get_unchecked(t)), k, sum[r]);
                }
            }
            for r in 0..QR {
                _mm512_storeu_ps(acc[r].as_mut_ptr(), sum[r]);
            }
        }
    }

    /// # Safety
    ///
    /// The CPU has AVX512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax_unnormalized(s: &mut [f32], scale: f32) -> f32 {
        let n = s.len();
        let ptr = s.as_mut_ptr();
        let mask = |i: usize| -> __mmask16 {
            let left = n - i;
            if left >= L {
                0xffff
            } else {
                ((1u32 << left) - 1) as __mmask16
            }
        };
        // SAFETY: every load and store at i < n keeps the lanes i + l < n (the masks).
        unsafe {
            let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
            for i in (0..n).step_by(L) {
                m = _mm512_mask_max_ps(m, mask(i), m, _mm512_maskz_loadu_ps(mask(i), ptr.add(i)));
            }
            let max = _mm512_set1_ps(_mm512_reduce_max_ps(m) * scale);
            let (vscale, mut sum) = (_mm512_set1_ps(scale), _mm512_setzero_ps());
            for i in (0..n).step_by(L) {
                let k = mask(i);
                let x = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(k, ptr.add(i)), vscale, max);
                let e = _mm512_maskz_mov_ps(k, super::super::approx::avx512::exp_neg16(x));
                _mm512_mask_storeu_ps(ptr.add(i), k, e);
                sum = _mm512_add_ps(sum, e);
            }
            _mm512_reduce_add_ps(sum)
        }
    }

    /// # Safety
    ///
    /// The CPU has AVX512F; `len > 0`, `p` holds at least `(QR - 1)·lp + len` values
    /// and `v` at least `(len - 1)·dp + L`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn weighted(p: &[f32], lp: usize, v: &[f32], dp: usize, len: usize, acc: &mut [[f32; L]; QR]) {
        debug_assert!(p.len() >= (QR - 1) * lp + len && v.len() >= (len - 1) * dp + L);
        // SAFETY: loads of v at j·dp .. j·dp + L and p at r·lp + j, j < len, r < QR:
        // inside both (the contract).
        unsafe {
            let mut sum = [_mm512_setzero_ps(); QR];
            for j in 0..len {
                let vj = _mm512_loadu_ps(v.as_ptr().add(j * dp));
                #[allow(clippy::needless_range_loop)] // r indexes p and sum alike
                for r in 0..QR {
                    sum[r] = _mm512_fmadd_ps(_mm512_set1_ps(*p.get_unchecked(r * lp + j)), vj, sum[r]);
                }
            }
            for r in 0..QR {
                _mm512_storeu_ps(acc[r].as_mut_ptr(), sum[r]);
            }
        }
    }
}

/// The same loops on pairs of 8-lane registers (`L` = 16 lanes as a low and a high half).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{L, QR};

    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; every `q[r]` holds `d = q[0].len() > 0` values and
    /// `kt` at least `(d - 1)·lp + L`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scores(q: &[&[f32]; QR], kt: &[f32], lp: usize, acc: &mut [[f32; L]; QR]) {
        let d = q[0].len();
        debug_assert!(kt.len() >= (d - 1) * lp + L && q.iter().all(|r| r.len() == d));
        // SAFETY: loads of kt at t·lp .. t·lp + L and q[r][t], t < d: inside both (the
        // contract).
        unsafe {
            let mut sum = [[_mm256_setzero_ps(); 2]; QR];
            for t in 0..d {
                let k = kt.as_ptr().add(t * lp);
                let (k0, k1) = (_mm256_loadu_ps(k), _mm256_loadu_ps(k.add(8)));
                for r in 0..QR {
                    let x = _mm256_set1_ps(*q[r].get_unchecked(t));
                    sum[r][0] = _mm256_fmadd_ps(x, k0, sum[r][0]);
                    sum[r][1] = _mm256_fmadd_ps(x, k1, sum[r][1]);
                }
            }
            for r in 0..QR {
                _mm256_storeu_ps(acc[r].as_mut_ptr(), sum[r][0]);
                _mm256_storeu_ps(acc[r].as_mut_ptr().add(8), sum[r][1]);
            }
        }
    }

    /// # Safety
    ///
    /// The CPU has AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_unnormalized(s: &mut [f32], scale: f32) -> f32 {
        let n = s.len();
        let whole = n / 8 * 8;
        // SAFETY: the vector loads and stores cover floats i .. i + 8 ≤ whole ≤ n.
        unsafe {
            let ptr = s.as_mut_ptr();
            let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
            for i in (0..whole).step_by(8) {
                m = _mm256_max_ps(m, _mm256_loadu_ps(ptr.add(i)));
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), m);
            let max = lanes.iter().chain(&s[whole..]).fold(f32::NEG_INFINITY, |a, &b| a.max(b)) * scale;
            let (vscale, vmax, mut sum) = (_mm256_set1_ps(scale), _mm256_set1_ps(max), _mm256_setzero_ps());
            for i in (0..whole).step_by(8) {
                let x = _mm256_fmsub_ps(_mm256_loadu_ps(ptr.add(i)), vscale, vmax);
                let e = super::super::approx::avx2::exp_neg8(x);
                _mm256_storeu_ps(ptr.add(i), e);
                sum = _mm256_add_ps(sum, e);
            }
            _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
            let mut total: f32 = lanes.iter().sum();
            for x in &mut s[whole..] {
                *x = super::exp_nonpositive(*x * scale - max);
                total += *x;
            }
            total
        }
    }

    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; `len > 0`, `p` holds at least `(QR - 1)·lp + len`
    /// values and `v` at least `(len - 1)·dp + L`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted(p: &[f32], lp: usize, v: &[f32], dp: usize, len: usize, acc: &mut [[f32; L]; QR]) {
        debug_assert!(p.len() >= (QR - 1) * lp + len && v.len() >= (len - 1) * dp + L);
        // SAFETY: loads of v at j·dp .. j·dp + L and p at r·lp + j, j < len, r < QR:
        // inside both (the contract).
        unsafe {
            let mut sum = [[_mm256_setzero_ps(); 2]; QR];
            for j in 0..len {
                let vj = v.as_ptr().add(j * dp);
                let (v0, v1) = (_mm256_loadu_ps(vj), _mm256_loadu_ps(vj.add(8)));
                #[allow(clippy::needless_range_loop)] // r indexes p and sum alike
                for r in 0..QR {
                    let x = _mm256_set1_ps(*p.get_unchecked(r * lp + j));
                    sum[r][0] = _mm256_fmadd_ps(x, v0, sum[r][0]);
                    sum[r][1] = _mm256_fmadd_ps(x, v1, sum[r][1]);
                }
            }
            for r in 0..QR {
                _mm256_storeu_ps(acc[r].as_mut_ptr(), sum[r][0]);
                _mm256_storeu_ps(acc[r].as_mut_ptr().add(8), sum[r][1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::values;

    /// Attention in f64, straight from its definition.
    fn reference(a: &Attention) -> Vec<f64> {
        let (hd, d) = (a.heads * a.head_dim, a.head_dim);
        let rows: usize = a.lens.iter().sum();
        let mut out = vec![0f64; rows * hd];
        let mut start = 0;
        for &len in a.lens {
            for h in 0..a.heads {
                let at = |i: usize, part: usize, t: usize| a.qkv[(start + i) * 3 * hd + part * hd + h * d + t] as f64;
                for i in 0..len {
                    let s: Vec<f64> = (0..len)
                        .map(|j| (0..d).map(|t| at(i, 0, t) * at(j, 1, t)).sum::<f64>() / (d as f64).sqrt())
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for t in 0..d {
                        out[(start + i) * hd + h * d + t] = (0..len).map(|j| e[j] * at(j, 2, t)).sum::<f64>() / sum;
                    }
                }
            }
            start += len;
        }
        out
    }

    #[test]
    fn attention_matches_its_definition_on_both_paths() {
        // Head sizes that are and are not whole chunks, lengths around the QR and L
        // steps, a sequence of one token and an empty one.
        for &(heads, d, ref lens) in &[(4, 8, vec![7, 3, 1]), (2, 64, vec![37, 20]), (3, 20, vec![0, 17, 18])] {
            let hd = heads * d;
            let rows: usize = lens.iter().sum();
            let qkv: Vec<f32> = values(rows * 3 * hd, 7).iter().map(|x| x * 3.0).collect();
            let a = Attention { qkv: &qkv, lens, heads, head_dim: d };
            let want = reference(&a);
            // Each path directly (the portable one included: `attention` takes the AVX2
            // path wherever the CPU has it), then through `attention` with and without
            // its fast path.
            let mut paths = vec![PORTABLE];
            if crate::kernels::has_avx2_fma() {
                paths.push(AVX2);
            }
            if crate::kernels::has_avx512f() {
                paths.push(AVX512);
            }
            for path in paths {
                let mut got = vec![0f32; rows * hd];
                let mut start = 0;
                for &len in lens.iter() {
                    for h in (0..heads).filter(|_| len > 0) {
                        let job = Head {
                            rows: &qkv[start * 3 * hd..(start + len) * 3 * hd],
                            stride: 3 * hd,
                            hidden: hd,
                            h,
                            d,
                            len,
                            out: got[start * hd + h * d..].as_mut_ptr(),
                            ldo: hd,
                        };
                        // SAFETY: the job is valid (its `out`: rows start.. of `got`,
                        // columns h·d .. (h+1)·d, this job's alone), and the CPU has the
                        // path's instructions (checked when the path was listed).
                        unsafe {
                            match path {
                                #[cfg(target_arch = "x86_64")]
                                AVX2 => head_avx2(&job),
                                #[cfg(target_arch = "x86_64")]
                                AVX512 => head_avx512(&job),
                                _ => head::<PORTABLE>(&job),
                            }
                        }
                    }
                    start += len;
                }
                for (at, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    assert!((g as f64 - w).abs() < 1e-5, "path {path} heads={heads} d={d} at {at}: {g} vs {w}");
                }
            }
            for fast in [false, true] {
                if fast && !crate::kernels::has_avx512f() {
                    eprintln!("this CPU has no AVX512F: its fast path is not tested");
                    continue;
                }
                let mut got = Vec::new();
                attention(&a, fast, &mut got);
                // Into a buffer holding garbage, as an encoder's does: every cell is written.
                let mut reused = vec![f32::NAN; got.len() + 5];
                attention(&a, fast, &mut reused);
                assert!(reused.len() == got.len() && reused.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits()));
                assert_eq!(got.len(), want.len());
                for (at, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    // f32 rounding of d-term sums (~1e-6 at d = 64 with these
                    // magnitudes); a wrong index or a softmax slip is off by 1e-2 or more.
                    assert!((g as f64 - w).abs() < 1e-5, "heads={heads} d={d} fast={fast} at {at}: {g} vs {w}");
                }
            }
        }
    }
}

//! The dense layers' matrix multiply, `out = x · W + bias` (then GELU, or a residual
//! added), with `W` packed once at load in the layer's [`Precision`]:
//!
//! - **bf16**: `x` is rounded to bf16 as it is packed, products are summed in f32. On
//!   CPUs with AVX512-BF16 (Zen 4/5, Sapphire Rapids and later) each `vdpbf16ps`
//!   multiplies 32 bf16 pairs and adds them into 16 f32 sums.
//! - **f32**: every operand stays f32; on CPUs with AVX512F each `vfmadd231ps` adds 16
//!   products into 16 sums.
//!
//! `W` lies in panels of `NR` output columns; each 64-byte line of a panel holds one
//! step of the inner dimension for 16 columns (a pair `(W[k][n], W[k+1][n])` per column
//! in bf16, one `W[k][n]` in f32). The kernel streams a panel front to back while `MR`
//! rows of `x` are broadcast against it. Elsewhere a portable loop computes the same
//! sums from the same packed weights (slower, equal up to the order of additions).
//! Runtime detection picks the path; nothing needs the instructions at build time.

use rayon::prelude::*;

use super::approx::gelu;
use super::bf16::{bf16_bits, bf16_to_f32};
use super::cpu::{has_avx512_bf16, has_avx512f};
use super::shared_out::SharedOut;
use crate::precision::Precision;

/// 16-lane vectors of output columns per panel.
const NV: usize = 4;
/// Output columns per panel.
const NR: usize = 16 * NV;
/// Rows of `x` per kernel call: 6 × 4 accumulators use 24 of the 32 vector registers,
/// and each step loads 4 weight vectors and broadcasts 6 inputs for 24 products.
const MR: usize = 6;
/// Steps of the inner dimension per pass (a step is one pair in bf16, one value in
/// f32): the panel's slice (128 KiB) and the rows' slice stay in the core's L2 cache
/// while they are reused.
const KC: usize = 512;
/// Rows per pass over the panels: `MC` rows × `KC` steps × 4 bytes = 192 KiB of `x`.
const MC: usize = 96;

/// A weight matrix `k × n`, packed for [`matmul`].
pub struct Packed {
    pub k: usize,
    pub n: usize,
    pub precision: Precision,
    /// Steps of the inner dimension: `ceil(k / 2)` pairs in bf16 (an odd `k` is padded
    /// with a zero), `k` in f32.
    steps: usize,
    /// `ceil(n / NR)` panels, each `steps × NR` 32-bit cells: two bf16 (low half first)
    /// or one f32's bits.
    data: Vec<u32>,
}

impl Packed {
    /// Packs `w`, `k × n` row-major f32 (the layer's transposed weight).
    /// `None` when memory for the packed copy cannot be had (an error for the caller,
    /// not an abort: a load may run in the postmaster).
    pub fn pack(w: &[f32], k: usize, n: usize, precision: Precision) -> Option<Packed> {
        assert_eq!(w.len(), k * n);
        assert!(k > 0 && n > 0, "an empty weight matrix");
        let steps = match precision {
            Precision::Bf16 => k.div_ceil(2),
            Precision::F32 => k,
        };
        let panels = n.div_ceil(NR);
        let mut data = Vec::new();
        data.try_reserve_exact(panels * steps * NR).ok()?;
        data.resize(panels * steps * NR, 0u32);
        data.par_chunks_mut(steps * NR).enumerate().for_each(|(p, panel)| {
            for step in 0..steps {
                for c in 0..NR {
                    let col = p * NR + c;
                    if col >= n {
                        continue;
                    }
                    panel[step * NR + c] = match precision {
                        Precision::F32 => w[step * n + col].to_bits(),
                        Precision::Bf16 => {
                            let lo = bf16_bits(w[2 * step * n + col]) as u32;
                            let hi = if 2 * step + 1 < k { bf16_bits(w[(2 * step + 1) * n + col]) as u32 } else { 0 };
                            lo | (hi << 16)
                        }
                    };
                }
            }
        });
        Some(Packed { k, n, precision, steps, data })
    }

    fn panel(&self, p: usize) -> &[u32] {
        &self.data[p * self.steps * NR..(p + 1) * self.steps * NR]
    }
}

/// What happens to each output after the bias: nothing, or the exact-erf GELU (fused
/// here so the FFN's 4,096-wide activations are not read and written twice).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Epilogue {
    Bias,
    BiasGelu,
}

/// Whether [`matmul`] has a fast path for `precision` on this CPU.
pub fn has_fast_path(precision: Precision) -> bool {
    match precision {
        Precision::Bf16 => has_avx512_bf16(),
        Precision::F32 => has_avx512f(),
    }
}

/// `x` (`m × k`, f32) as bf16 pairs into `out` (`m × kp`), each row padded with a zero
/// pair half where `k` is odd.
fn pack_rows(x: &[f32], m: usize, k: usize, kp: usize, fast: bool, out: &mut Vec<u32>) {
    // Every cell is written below: only a longer buffer's new part is zeroed.
    out.truncate(m * kp);
    out.resize(m * kp, 0);
    out.par_chunks_mut(kp.max(1)).zip(x.par_chunks(k.max(1))).for_each(|(dst, row)| {
        #[allow(unused_mut)]
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: the CPU has the instructions (the caller checked).
            done = unsafe { super::bf16::avx512::round_pairs(row, dst) };
        }
        for (pair, d) in dst.iter_mut().enumerate().skip(done) {
            let lo = bf16_bits(row[2 * pair]) as u32;
            let hi = row.get(2 * pair + 1).map_or(0, |&v| bf16_bits(v) as u32);
            *d = lo | (hi << 16);
        }
    });
}

/// One kernel call: `rows` rows of `a` (row stride `lda`, in the weight's precision) times
/// `kc` steps of one panel, into `cols` columns of `c` (row stride `ldc`); `bias` on the
/// first pass over the inner dimension (else the sums are added to what `c` holds); on
/// the last, GELU, or `residual` (same layout as `c`) added.
///
/// `a` and `panel` are checked slices; `c` and `residual` are raw because the threads
/// of one multiply write disjoint columns of one buffer. A tile is *valid* when `c` and
/// `residual` point at `rows` rows (stride `ldc`) of at least `cols` cells each, inside
/// their buffers, and no other thread accesses those cells of `c` while it is in use.
#[derive(Clone, Copy)]
struct Tile<'a> {
    rows: usize,
    a: &'a [u32],
    lda: usize,
    panel: &'a [u32],
    kc: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    bias: Option<&'a [f32]>,
    gelu: bool,
    residual: Option<*const f32>,
}

/// `x · W + bias` for `x` of `m` rows (`m × w.k`, row-major), then the epilogue's GELU,
/// or `residual` (`m × w.n`) added, into `out` (resized to `m × w.n`), with `scratch`
/// for `x` in bf16: an encoder reuses both from layer to layer, so a forward pass
/// allocates (and faults in) its buffers once. `fast` selects the AVX-512 kernel where
/// the CPU has it (the encoder always asks for it; tests also run the portable path).
/// The panels are split between the current rayon pool's threads.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    x: &[f32],
    m: usize,
    w: &Packed,
    bias: &[f32],
    epilogue: Epilogue,
    residual: Option<&[f32]>,
    fast: bool,
    out: &mut Vec<f32>,
    scratch: &mut Vec<u32>,
) {
    assert_eq!(x.len(), m * w.k);
    assert_eq!(bias.len(), w.n);
    assert!(residual.is_none_or(|r| r.len() == m * w.n));
    let fast = fast && has_fast_path(w.precision);
    let bf16 = w.precision == Precision::Bf16;
    let a: &[u32] = match w.precision {
        Precision::Bf16 => {
            pack_rows(x, m, w.k, w.steps, fast, scratch);
            scratch
        }
        // SAFETY: f32 and u32 have the same size and alignment; the kernel reads bits.
        Precision::F32 => unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u32>(), x.len()) },
    };
    // Every value is written by the first pass over the inner dimension (bias + sums).
    out.clear();
    out.reserve(m * w.n);
    let shared = SharedOut::new(out);
    let panels = w.n.div_ceil(NR);
    let threads = rayon::current_num_threads().clamp(1, panels.max(1));
    let per = panels.div_ceil(threads);
    (0..threads).into_par_iter().for_each(|t| {
        let mine = t * per..((t + 1) * per).min(panels);
        for k0 in (0..w.steps).step_by(KC) {
            let kc = KC.min(w.steps - k0);
            let last = k0 + kc == w.steps;
            for m0 in (0..m).step_by(MC) {
                let mc = MC.min(m - m0);
                for p in mine.clone() {
                    let cols = NR.min(w.n - p * NR);
                    let panel = &w.panel(p)[k0 * NR..(k0 + kc) * NR];
                    let mut r = 0;
                    while r < mc {
                        let rows = MR.min(mc - r);
                        let arow = (m0 + r) * w.steps + k0;
                        let at = (m0 + r) * w.n + p * NR;
                        // SAFETY: rows m0+r .. m0+r+rows and columns p·NR .. p·NR+cols
                        // lie inside `out`'s m × n reserved cells; only this thread, which
                        // owns panels `mine`, writes these columns.
                        let c = unsafe { shared.at(at) };
                        // `residual` has the shape of `out`: the same cells, read only.
                        let tile_residual = residual.filter(|_| last).map(|r| r[at..].as_ptr());
                        let bias = (k0 == 0).then(|| &bias[p * NR..p * NR + cols]);
                        let gelu = epilogue == Epilogue::BiasGelu && last;
                        let tile = Tile {
                            rows,
                            a: &a[arow..],
                            lda: w.steps,
                            panel,
                            kc,
                            c,
                            ldc: w.n,
                            cols,
                            bias,
                            gelu,
                            residual: tile_residual,
                        };
                        if fast {
                            #[cfg(target_arch = "x86_64")]
                            // SAFETY: the CPU has the instructions (checked above); `a`
                            // holds `rows` rows of `kc` steps from `arow` on, `panel` `kc`
                            // lines; the tile is valid (its `c` and `residual` above).
                            unsafe {
                                if bf16 {
                                    avx512::block_bf16(&tile)
                                } else {
                                    avx512::block_f32(&tile)
                                }
                            };
                        } else {
                            // SAFETY: the tile is valid (its `c` and `residual` above).
                            unsafe { portable(&tile, bf16) };
                        }
                        r += rows;
                    }
                }
            }
        }
    });
    // SAFETY: the first pass wrote all m × n values (see above).
    unsafe { out.set_len(m * w.n) };
}

/// The same sums as the AVX-512 kernels, one output at a time.
///
/// # Safety
///
/// `t` is a valid [`Tile`]: its `c` and `residual` cover its rows and columns, and no
/// other thread accesses those cells of `c` meanwhile.
unsafe fn portable(t: &Tile, bf16: bool) {
    let Tile { rows, a, lda, panel, kc, c, ldc, cols, bias, gelu, residual } = *t;
    for r in 0..rows {
        let mut acc = [0f32; NR];
        for step in 0..kc {
            let av = a[r * lda + step];
            let line = &panel[step * NR..(step + 1) * NR];
            if bf16 {
                let (a0, a1) = (bf16_to_f32(av as u16), bf16_to_f32((av >> 16) as u16));
                for (s, &bv) in acc.iter_mut().zip(line) {
                    *s += a0 * bf16_to_f32(bv as u16) + a1 * bf16_to_f32((bv >> 16) as u16);
                }
            } else {
                let a0 = f32::from_bits(av);
                for (s, &bv) in acc.iter_mut().zip(line) {
                    *s += a0 * f32::from_bits(bv);
                }
            }
        }
        for (j, &s) in acc.iter().enumerate().take(cols) {
            // SAFETY: row r < rows, column j < cols: a cell of the valid tile, which this
            // thread alone accesses (the caller's contract).
            unsafe {
                let o = c.add(r * ldc + j);
                let mut v = match bias {
                    Some(b) => s + b[j],
                    None => *o + s,
                };
                if let Some(res) = residual {
                    v += *res.add(r * ldc + j);
                }
                *o = if gelu { self::gelu(v) } else { v };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::approx::avx512::gelu16;
    use super::{Tile, MR, NR, NV};

    /// Calls `$kernel::<R>` for the tile's `rows` (1..=MR): a kernel compiled for that
    /// many rows.
    macro_rules! by_rows {
        ($kernel:ident, $t:expr) => {{
            let t = $t;
            debug_assert!(t.a.len() >= (t.rows - 1) * t.lda + t.kc && t.panel.len() >= t.kc * NR);
            match t.rows {
                1 => $kernel::<1>(t),
                2 => $kernel::<2>(t),
                3 => $kernel::<3>(t),
                4 => $kernel::<4>(t),
                5 => $kernel::<5>(t),
                6 => $kernel::<6>(t),
                _ => unreachable!(),
            }
        }};
    }

    /// The tile in bf16 pairs.
    ///
    /// # Safety
    ///
    /// The CPU has AVX512F and AVX512-BF16; `t` is a valid [`Tile`] whose `a` holds
    /// `(rows - 1) · lda + kc` cells and whose `panel` holds `kc` lines of `NR`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn block_bf16(t: &Tile) {
        // SAFETY: the kernel's contract is this function's.
        unsafe { by_rows!(kernel_bf16, t) }
    }

    /// The tile in f32.
    ///
    /// # Safety
    ///
    /// As for [`block_bf16`], with AVX512F alone.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block_f32(t: &Tile) {
        // SAFETY: the kernel's contract is this function's.
        unsafe { by_rows!(kernel_f32, t) }
    }

    /// `R` rows × NR columns in bf16 pairs: R·NV accumulators live in registers for the
    /// whole pass.
    ///
    /// # Safety
    ///
    /// As for [`block_bf16`], with `t.rows == R`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn kernel_bf16<const R: usize>(t: &Tile) {
        const { assert!(R <= MR) };
        // SAFETY: the loads read `a` at r·lda + pair < (R - 1)·lda + kc and `panel` at
        // pair·NR + 16·v + 15 < kc·NR, inside both (the contract); the bits are
        // reinterpreted between integer and bf16 vectors of the same size; `store`'s
        // contract is this function's.
        unsafe {
            let (a, b) = (t.a.as_ptr(), t.panel.as_ptr());
            let mut acc = [[_mm512_setzero_ps(); NV]; R];
            for pair in 0..t.kc {
                let line = b.add(pair * NR);
                let mut w = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); NV];
                for (v, wv) in w.iter_mut().enumerate() {
                    *wv = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(line.add(16 * v).cast()));
                }
                for (r, sums) in acc.iter_mut().enumerate() {
                    let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * t.lda + pair) as i32));
                    for (s, &wv) in sums.iter_mut().zip(&w) {
                        *s = _mm512_dpbf16_ps(*s, av, wv);
                    }
                }
            }
            store(t, &acc);
        }
    }

    /// `R` rows × NR columns in f32, the same way.
    ///
    /// # Safety
    ///
    /// As for [`block_f32`], with `t.rows == R`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel_f32<const R: usize>(t: &Tile) {
        const { assert!(R <= MR) };
        // SAFETY: as in `kernel_bf16`: every load lies inside `a` and `panel` (the
        // contract), and `store`'s contract is this function's.
        unsafe {
            let (a, b) = (t.a.as_ptr().cast::<f32>(), t.panel.as_ptr().cast::<f32>());
            let mut acc = [[_mm512_setzero_ps(); NV]; R];
            for step in 0..t.kc {
                let line = b.add(step * NR);
                let mut w = [_mm512_setzero_ps(); NV];
                for (v, wv) in w.iter_mut().enumerate() {
                    *wv = _mm512_loadu_ps(line.add(16 * v));
                }
                for (r, sums) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r * t.lda + step));
                    for (s, &wv) in sums.iter_mut().zip(&w) {
                        *s = _mm512_fmadd_ps(av, wv, *s);
                    }
                }
            }
            store(t, &acc);
        }
    }

    /// Adds the sums to the bias (first pass) or to what `c` holds, applies the last
    /// pass's GELU or residual, and stores the tile's `cols` columns.
    ///
    /// # Safety
    ///
    /// The CPU has AVX512F; `t` is a valid [`Tile`] of `R` rows.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const R: usize>(t: &Tile, acc: &[[__m512; NV]; R]) {
        // SAFETY: the masks keep lanes h·16 + l < cols of rows r < R: cells of the valid
        // tile in `c` and `residual`, and entries of `bias` (its `cols` values).
        unsafe {
            let masks: [__mmask16; NV] = std::array::from_fn(|v| lane_mask(t.cols.saturating_sub(16 * v)));
            for (r, sums) in acc.iter().enumerate() {
                for (h, &s) in sums.iter().enumerate() {
                    let m = masks[h];
                    if m == 0 {
                        continue;
                    }
                    let o = t.c.add(r * t.ldc + h * 16);
                    let base = match t.bias {
                        Some(bias) => _mm512_maskz_loadu_ps(m, bias.as_ptr().add(h * 16)),
                        None => _mm512_maskz_loadu_ps(m, o),
                    };
                    let mut v = _mm512_add_ps(base, s);
                    if let Some(res) = t.residual {
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, res.add(r * t.ldc + h * 16)));
                    }
                    _mm512_mask_storeu_ps(o, m, if t.gelu { gelu16(v) } else { v });
                }
            }
        }
    }
    /// The first `n` of 16 lanes (all 16 for n ≥ 16).
    fn lane_mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::approx::exact_erf;
    use crate::test_util::values as matrix;

    /// The exact sums of the operands (rounded to bf16 first for `Precision::Bf16`), in f64.
    fn reference(x: &[f32], w: &[f32], bias: &[f32], m: usize, k: usize, n: usize, precision: Precision) -> Vec<f64> {
        let r = |v: f32| if precision == Precision::Bf16 { bf16_to_f32(bf16_bits(v)) as f64 } else { v as f64 };
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = bias[j] as f64 + (0..k).map(|p| r(x[i * k + p]) * r(w[p * n + j])).sum::<f64>();
            }
        }
        out
    }
    #[test]
    fn both_paths_of_both_formats_match_exact_sums() {
        // Shapes that exercise every remainder: rows not a multiple of MR or MC, odd
        // inner dimensions, columns not a multiple of 16 or 64, inner dimension > KC steps.
        for &(m, k, n) in &[(1, 1, 1), (5, 7, 17), (13, 64, 32), (25, 33, 70), (100, 1030, 48), (97, 2100, 37)] {
            let (x, w, bias, res) = (matrix(m * k, 1), matrix(k * n, 2), matrix(n, 3), matrix(m * n, 4));
            for precision in [Precision::Bf16, Precision::F32] {
                let exact = reference(&x, &w, &bias, m, k, n, precision);
                let packed = Packed::pack(&w, k, n, precision).unwrap();
                for fast in [false, true] {
                    if fast && !has_fast_path(precision) {
                        eprintln!("this CPU has no fast path for {precision:?}: only the portable one is tested");
                        continue;
                    }
                    let run = |epilogue, residual| {
                        let mut out = Vec::new();
                        matmul(&x, m, &packed, &bias, epilogue, residual, fast, &mut out, &mut Vec::new());
                        out
                    };
                    let got = run(Epilogue::Bias, None);
                    // Into buffers that hold garbage from earlier use, as an encoder's
                    // do: every cell is written, nothing stale survives.
                    let (mut out, mut scratch) = (vec![f32::NAN; m * n + 77], vec![u32::MAX; m * k + 77]);
                    matmul(&x, m, &packed, &bias, Epilogue::Bias, None, fast, &mut out, &mut scratch);
                    assert!(out.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()) && out.len() == m * n);
                    let with_gelu = run(Epilogue::BiasGelu, None);
                    let with_res = run(Epilogue::Bias, Some(&res));
                    for (i, &e) in exact.iter().enumerate() {
                        // f32 sums of k products of size ≤ 1: error ≤ k · 2^-24 · |terms|.
                        let tol = 1e-6 * (k as f64 + 1.0);
                        let at = format!("{precision:?} {m}×{k}×{n} fast={fast} at {i}");
                        assert!((got[i] as f64 - e).abs() <= tol, "{at}: {} vs {e}", got[i]);
                        let want = 0.5 * e * (1.0 + exact_erf(e / std::f64::consts::SQRT_2));
                        let gelu_tol = tol + 5e-7 * e.abs();
                        assert!((with_gelu[i] as f64 - want).abs() <= gelu_tol, "gelu {at}");
                        assert!((with_res[i] as f64 - e - res[i] as f64).abs() <= tol + 1e-7, "residual {at}");
                    }
                }
            }
        }
    }
}

//! The dense layers' matrix multiply, `out = x · W + bias` (then GELU, or a residual
//! added), with `W` packed once at load in the layer's [`Precision`]:
//!
//! - **bf16**: `x` is rounded to bf16 as it is packed, products are summed in f32. On
//!   CPUs with AVX512-BF16 (Zen 4/5, Sapphire Rapids and later) each `vdpbf16ps`
//!   multiplies 32 bf16 pairs and adds them into 16 f32 sums.
//! - **f32**: every operand stays f32; on CPUs with AVX512F each `vfmadd231ps` adds 16
//!   products into 16 sums.
//! - **int8**: `W` quantised per output column at load, `x` per row as it is packed
//!   ([`super::int8`]), sums in i32, scaled back to f32 before the epilogue. On CPUs with
//!   AVX512-VNNI (Ice Lake, Zen 4 and later) each `vpdpbusd` multiplies 64 byte pairs
//!   and adds them, four at a time, into 16 i32 sums; on CPUs with AVX2 but not VNNI,
//!   `vpmaddubsw` and `vpmaddwd` make the same exact sums, 32 pairs at a time.
//!
//! `W` lies in panels of `NR` output columns; each 64-byte line of a panel holds one
//! step of the inner dimension for 16 columns (a pair `(W[k][n], W[k+1][n])` per column
//! in bf16, one `W[k][n]` in f32, a quad `W[k..k+4][n]` in int8). The kernel streams a panel front to back while `MR`
//! rows of `x` are broadcast against it. Elsewhere a portable loop computes the same
//! sums from the same packed weights (slower, equal up to the order of additions).
//! Runtime detection picks the path; nothing needs the instructions at build time.

use rayon::prelude::*;

use super::approx::gelu;
use super::bf16::{bf16_bits, bf16_to_f32};
use super::cpu::{has_avx2_fma, has_avx512_bf16, has_avx512_vnni, has_avx512f};
use super::int8;
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

/// What the kernels do differently per microarchitecture, detected at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tuning {
    /// Prefetch the weight panel `AHEAD` steps ahead of the sums, and each tile's output
    /// cells before its sums. On an Intel Xeon (Emerald Rapids) the hardware prefetchers
    /// left the kernels waiting on the panel's lines from L2 (by `perf record`, the
    /// loop's samples sat on its weight loads); with it the f32 kernel alone went from
    /// 173–282 to 181–317 GFLOP/s of a 347 peak, and a forward pass from 299–300 to
    /// 310–363 tokens/s in f32, 758–873 to 1,014–1,033 in int8 (README, Performance).
    /// On an AMD Zen 4 (EPYC, family 25 model 17) the kernels alone were within their
    /// noise (±5%) either way, but a forward pass of the full-size model, two runs each
    /// alternating, went from 284–291 to 298–301 tokens/s in f32, 552–555 to 570–571 in
    /// bf16 and 963–986 to 994–1,034 in int8. On for both vendors' CPUs, off for others
    /// (not measured).
    pub(crate) prefetch: bool,
}

/// Steps of the inner dimension between the line a kernel prefetches and the one it
/// multiplies: 8 steps (2 KiB of the panel) ahead, the distance measured best on the
/// Xeon (4 and 16 were no better).
const AHEAD: usize = 8;

impl Tuning {
    /// This CPU's tuning: the same answer every time.
    pub(crate) fn for_cpu() -> Tuning {
        static T: std::sync::OnceLock<Tuning> = std::sync::OnceLock::new();
        *T.get_or_init(|| Tuning::for_vendor(&super::cpu::cpu_vendor()))
    }

    fn for_vendor(vendor: &str) -> Tuning {
        Tuning { prefetch: matches!(vendor, "GenuineIntel" | "AuthenticAMD") }
    }
}

/// A weight matrix `k × n`, packed for [`matmul`].
pub struct Packed {
    pub k: usize,
    pub n: usize,
    pub precision: Precision,
    /// Steps of the inner dimension: `ceil(k / 2)` pairs in bf16 (an odd `k` is padded
    /// with a zero), `k` in f32, `ceil(k / 4)` quads in int8 (padded with zeros).
    steps: usize,
    /// `ceil(n / NR)` panels, each `steps × NR` 32-bit cells: two bf16 (low half first),
    /// one f32's bits, or four int8 (low byte first).
    data: Vec<u32>,
    /// int8 only (else empty): each column's scale, and per block of `KC` steps the sum
    /// of each column's quantised values there (what the activations' zero point adds
    /// to that pass's sums), `blocks × n`.
    col_scale: Vec<f32>,
    col_sum: Vec<i32>,
    /// int8 with smoothing only (else empty): what each input channel is multiplied by
    /// before it is quantised, `1 / s[k]`, its weight row having been multiplied by `s[k]`
    /// (see [`Packed::pack_smoothed`]).
    smooth_inv: Vec<f32>,
    /// int8 only: the weights' largest magnitude (127 or 63, see [`int8::weight_max`]);
    /// the AVX2 kernel takes only 63 or fewer (`vpmaddubsw` would saturate).
    int8_max: i32,
}

impl Packed {
    /// Packs `w`, `k × n` row-major f32 (the layer's transposed weight).
    /// `None` when memory for the packed copy cannot be had (an error for the caller,
    /// not an abort: a load may run in the postmaster).
    pub fn pack(w: &[f32], k: usize, n: usize, precision: Precision) -> Option<Packed> {
        Packed::pack_levels(w, k, n, precision, int8::weight_max())
    }

    /// [`Packed::pack`] with int8 weights in `-wmax..=wmax` (ignored for the other
    /// precisions): 127 needs the VNNI kernel, 63 or fewer levels run on either.
    pub(crate) fn pack_levels(w: &[f32], k: usize, n: usize, precision: Precision, wmax: f32) -> Option<Packed> {
        assert_eq!(w.len(), k * n);
        assert!(k > 0 && n > 0, "an empty weight matrix");
        let steps = match precision {
            Precision::Bf16 => k.div_ceil(2),
            Precision::F32 => k,
            Precision::Int8 => k.div_ceil(4),
        };
        let panels = n.div_ceil(NR);
        let mut data = Vec::new();
        data.try_reserve_exact(panels * steps * NR).ok()?;
        data.resize(panels * steps * NR, 0u32);
        let (mut col_scale, mut col_sum) = (Vec::new(), Vec::new());
        if precision == Precision::Int8 {
            let blocks = steps.div_ceil(KC);
            col_scale.try_reserve_exact(n).ok()?;
            col_sum.try_reserve_exact(blocks * n).ok()?;
            col_scale.resize(n, 0.0);
            col_scale.par_iter_mut().enumerate().for_each(|(col, s)| {
                *s = int8::weight_scale((0..k).map(|r| w[r * n + col].abs()).fold(0.0, f32::max), wmax);
            });
            col_sum.resize(blocks * n, 0);
            col_sum.par_chunks_mut(n).enumerate().for_each(|(b, sums)| {
                let rows = 4 * KC * b..(4 * KC * (b + 1)).min(k);
                for (col, sum) in sums.iter_mut().enumerate() {
                    let inv = 1.0 / col_scale[col];
                    *sum = rows.clone().map(|r| int8::quantize_weight(w[r * n + col], inv, wmax) as i32).sum();
                }
            });
        }
        let inv_scale: Vec<f32> = col_scale.iter().map(|s| 1.0 / s).collect();
        data.par_chunks_mut(steps * NR).enumerate().for_each(|(p, panel)| {
            for step in 0..steps {
                for c in 0..NR {
                    let col = p * NR + c;
                    if col >= n {
                        continue;
                    }
                    panel[step * NR + c] = match precision {
                        Precision::F32 => w[step * n + col].to_bits(),
                        Precision::Int8 => (0..4)
                            .filter(|b| 4 * step + b < k)
                            .map(|b| {
                                (int8::quantize_weight(w[(4 * step + b) * n + col], inv_scale[col], wmax) as u8 as u32)
                                    << (8 * b)
                            })
                            .fold(0, |cell, byte| cell | byte),
                        Precision::Bf16 => {
                            let lo = bf16_bits(w[2 * step * n + col]) as u32;
                            let hi = if 2 * step + 1 < k { bf16_bits(w[(2 * step + 1) * n + col]) as u32 } else { 0 };
                            lo | (hi << 16)
                        }
                    };
                }
            }
        });
        let int8_max = if precision == Precision::Int8 { wmax as i32 } else { 0 };
        Some(Packed { k, n, precision, steps, data, col_scale, col_sum, smooth_inv: Vec::new(), int8_max })
    }

    /// Packs `w` in int8 with the inputs smoothed: channel `k` of the input is divided by
    /// `s[k]` and row `k` of the weight multiplied by it (the product is unchanged), which
    /// moves an outlier channel's range from the activations, quantised per token, into
    /// the weights, quantised per column. `s` must be positive and finite.
    pub fn pack_smoothed(w: &[f32], k: usize, n: usize, s: &[f32]) -> Option<Packed> {
        assert_eq!(s.len(), k);
        assert!(s.iter().all(|v| *v > 0.0 && v.is_finite()), "smoothing factors are positive");
        let mut scaled = Vec::new();
        scaled.try_reserve_exact(w.len()).ok()?;
        scaled.extend(w.iter().enumerate().map(|(i, &v)| v * s[i / n]));
        let mut packed = Packed::pack(&scaled, k, n, Precision::Int8)?;
        drop(scaled);
        packed.smooth_inv.try_reserve_exact(k).ok()?;
        packed.smooth_inv.extend(s.iter().map(|v| 1.0 / v));
        Some(packed)
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
        Precision::Int8 => has_avx512_vnni() || has_avx2_fma(),
    }
}

/// A dense layer's input as the kernels read it: rounded to bf16 pairs, or quantised to
/// bytes with each row's scale and zero point. An encoder reuses one from layer to layer.
#[derive(Default)]
pub struct Scratch {
    cells: Vec<u32>,
    row_scale: Vec<f32>,
    row_zero: Vec<i32>,
}

impl Scratch {
    /// Room for `rows` rows of up to `inner` values for layers of any of `precisions`,
    /// reserved fallibly (`None` when the memory cannot be had).
    pub fn for_rows(rows: usize, inner: usize, precisions: &[Precision]) -> Option<Scratch> {
        let (mut cells, mut params) = (0, 0);
        for p in precisions {
            let (c, r) = match p {
                Precision::F32 => (0, 0),
                Precision::Bf16 => (rows * inner.div_ceil(2), 0),
                Precision::Int8 => (rows * inner.div_ceil(4), rows),
            };
            (cells, params) = (cells.max(c), params.max(r));
        }
        let mut s = Scratch::default();
        s.cells.try_reserve_exact(cells).ok()?;
        s.row_scale.try_reserve_exact(params).ok()?;
        s.row_zero.try_reserve_exact(params).ok()?;
        Some(s)
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
/// the last, GELU, or `residual` (same layout as `c`) added. In int8, `quant` scales the
/// integer sums back (and takes the zero points' share out).
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
    quant: Option<Quant<'a>>,
    /// Whether the kernel prefetches ([`Tuning`]).
    prefetch: bool,
}

/// What turns an int8 tile's integer sums into values: the scale and zero point of each
/// of its rows (from the tile's first row on), the scale of each of its columns and
/// their quantised sums over this pass's block of steps (from the panel's first column
/// on, `cols` of them).
#[derive(Clone, Copy)]
struct Quant<'a> {
    row_scale: &'a [f32],
    row_zero: &'a [i32],
    col_scale: &'a [f32],
    col_sum: &'a [i32],
}

/// `x · W + bias` for `x` of `m` rows (`m × w.k`, row-major), then the epilogue's GELU,
/// or `residual` (`m × w.n`) added, into `out` (resized to `m × w.n`), with `scratch`
/// for `x` in bf16 or int8: an encoder reuses both from layer to layer, so a forward pass
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
    scratch: &mut Scratch,
) {
    matmul_tuned(x, m, w, bias, epilogue, residual, fast, Tuning::for_cpu(), out, scratch)
}

/// [`matmul`] with the kernels tuned as `tuning` says rather than as this CPU's is (the
/// tests run every tuning on every CPU: the sums must not depend on it).
#[allow(clippy::too_many_arguments)]
fn matmul_tuned(
    x: &[f32],
    m: usize,
    w: &Packed,
    bias: &[f32],
    epilogue: Epilogue,
    residual: Option<&[f32]>,
    fast: bool,
    tuning: Tuning,
    out: &mut Vec<f32>,
    scratch: &mut Scratch,
) {
    assert_eq!(x.len(), m * w.k);
    assert_eq!(bias.len(), w.n);
    assert!(residual.is_none_or(|r| r.len() == m * w.n));
    let fast = fast && has_fast_path(w.precision);
    // 63 levels run on the AVX2 kernel wherever it exists (so that its test runs on
    // VNNI machines too), more need VNNI (`Packed::pack` gives them only there).
    let int8_avx2 = w.precision == Precision::Int8 && w.int8_max <= 63 && has_avx2_fma();
    let fast = fast && (w.precision != Precision::Int8 || int8_avx2 || has_avx512_vnni());
    let a: &[u32] = match w.precision {
        Precision::Bf16 => {
            pack_rows(x, m, w.k, w.steps, fast, &mut scratch.cells);
            &scratch.cells
        }
        Precision::Int8 => {
            let Scratch { cells, row_scale, row_zero } = scratch;
            let smooth = (!w.smooth_inv.is_empty()).then_some(&w.smooth_inv[..]);
            int8::quantize_rows(x, m, w.k, w.steps, smooth, fast, cells, row_scale, row_zero);
            cells
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
                        let quant = (w.precision == Precision::Int8).then(|| Quant {
                            row_scale: &scratch.row_scale[m0 + r..],
                            row_zero: &scratch.row_zero[m0 + r..],
                            col_scale: &w.col_scale[p * NR..p * NR + cols],
                            col_sum: &w.col_sum[(k0 / KC) * w.n + p * NR..][..cols],
                        });
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
                            quant,
                            prefetch: tuning.prefetch,
                        };
                        if fast {
                            #[cfg(target_arch = "x86_64")]
                            // SAFETY: the CPU has the instructions (checked above: for
                            // int8, VNNI, or else AVX2 and FMA); `a`
                            // holds `rows` rows of `kc` steps from `arow` on, `panel` `kc`
                            // lines; the tile is valid (its `c` and `residual` above).
                            unsafe {
                                match w.precision {
                                    Precision::Bf16 => avx512::block_bf16(&tile),
                                    Precision::F32 => avx512::block_f32(&tile),
                                    Precision::Int8 if int8_avx2 => avx2::block_int8(&tile),
                                    Precision::Int8 => avx512::block_int8(&tile),
                                }
                            };
                        } else {
                            // SAFETY: the tile is valid (its `c` and `residual` above).
                            unsafe { portable(&tile, w.precision) };
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

/// The second pass of a multiply that could not fuse its epilogue (the gemm crate's, on
/// CPUs without AVX512F): `bias`, then `residual` (`m × n`, like `out`), added to each
/// row of `out`, then GELU. On 8-lane registers where the CPU has AVX2 and FMA.
pub fn epilogue(out: &mut [f32], n: usize, bias: &[f32], epilogue: Epilogue, residual: Option<&[f32]>) {
    assert_eq!(bias.len(), n);
    assert!(residual.is_none_or(|r| r.len() == out.len()));
    let gelu = epilogue == Epilogue::BiasGelu;
    let fast = has_avx2_fma();
    out.par_chunks_mut(n.max(1)).enumerate().for_each(|(r, row)| {
        let res = residual.map(|res| &res[r * n..(r + 1) * n]);
        #[allow(unused_mut)]
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            done = unsafe { avx2::epilogue_row(row, bias, res, gelu) };
        }
        let _ = fast;
        for j in done..row.len() {
            let mut v = row[j] + bias[j] + res.map_or(0.0, |res| res[j]);
            if gelu {
                v = self::gelu(v);
            }
            row[j] = v;
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::approx::avx2::gelu8;
    use super::{Quant, Tile, NR};

    /// The int8 tile on AVX2 (CPUs without AVX512-VNNI), in chunks of up to 4 rows.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA; `t` is a valid [`Tile`] whose `a` holds
    /// `(rows - 1) · lda + kc` cells and whose `panel` holds `kc` lines of `NR`, with
    /// `t.quant` set.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_int8(t: &Tile) {
        let q = t.quant.expect("an int8 tile has its scales");
        let mut r0 = 0;
        while r0 < t.rows {
            let rows = (t.rows - r0).min(4);
            // SAFETY: rows r0 .. r0 + rows of the valid tile: a valid tile of `rows` rows
            // (its `c` and `residual` moved to row r0, `a` and the row scales likewise).
            unsafe {
                let sub = Tile {
                    rows,
                    a: &t.a[r0 * t.lda..],
                    c: t.c.add(r0 * t.ldc),
                    residual: t.residual.map(|p| p.add(r0 * t.ldc)),
                    quant: Some(Quant { row_scale: &q.row_scale[r0..], row_zero: &q.row_zero[r0..], ..q }),
                    ..*t
                };
                match rows {
                    1 => kernel_int8::<1>(&sub),
                    2 => kernel_int8::<2>(&sub),
                    3 => kernel_int8::<3>(&sub),
                    _ => kernel_int8::<4>(&sub),
                }
            }
            r0 += rows;
        }
    }

    /// `R` rows × the panel's columns, 16 at a time: `vpmaddubsw` multiplies the rows'
    /// activations by the weights' bytes (63 levels here) and adds pairs into 16-bit sums
    /// (exact: at most 2 · 255 · 63), `vpmaddwd` adds those pairs into the 32-bit lanes, the
    /// same four-product sums `vpdpbusd` makes. Then scaled, the epilogue applied, and
    /// stored as the AVX-512 kernels do.
    ///
    /// # Safety
    ///
    /// As for [`block_int8`], with `t.rows == R ≤ 4`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_int8<const R: usize>(t: &Tile) {
        const { assert!(R <= 4) };
        let q = t.quant.expect("an int8 tile has its scales");
        // SAFETY: the loads read `a` at r·lda + step < (R - 1)·lda + kc and `panel` at
        // step·NR + c0 + 15 < kc·NR (inside both: the contract); the masked loads and
        // stores keep lanes col + l < cols: cells of the valid tile in `c` and
        // `residual`, entries of `bias` and of the column scales and sums (`cols` each).
        unsafe {
            let (a, b) = (t.a.as_ptr(), t.panel.as_ptr());
            let ones = _mm256_set1_epi16(1);
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            for c0 in (0..t.cols).step_by(16) {
                let mut acc = [[_mm256_setzero_si256(); 2]; R];
                for step in 0..t.kc {
                    let line = b.add(step * NR + c0);
                    let w0 = _mm256_loadu_si256(line.cast());
                    let w1 = _mm256_loadu_si256(line.add(8).cast());
                    for (r, sums) in acc.iter_mut().enumerate() {
                        let av = _mm256_set1_epi32(*a.add(r * t.lda + step) as i32);
                        sums[0] = _mm256_add_epi32(sums[0], _mm256_madd_epi16(_mm256_maddubs_epi16(av, w0), ones));
                        sums[1] = _mm256_add_epi32(sums[1], _mm256_madd_epi16(_mm256_maddubs_epi16(av, w1), ones));
                    }
                }
                for half in 0..2 {
                    let col = c0 + 8 * half;
                    if col >= t.cols {
                        break;
                    }
                    let m = _mm256_cmpgt_epi32(_mm256_set1_epi32((t.cols - col).min(8) as i32), lanes);
                    let col_scale = _mm256_maskload_ps(q.col_scale.as_ptr().add(col), m);
                    let col_sum = _mm256_maskload_epi32(q.col_sum.as_ptr().add(col), m);
                    for (r, sums) in acc.iter().enumerate() {
                        let s =
                            _mm256_sub_epi32(sums[half], _mm256_mullo_epi32(_mm256_set1_epi32(q.row_zero[r]), col_sum));
                        let scale = _mm256_mul_ps(_mm256_set1_ps(q.row_scale[r]), col_scale);
                        let s = _mm256_mul_ps(_mm256_cvtepi32_ps(s), scale);
                        let o = t.c.add(r * t.ldc + col);
                        let base = match t.bias {
                            Some(bias) => _mm256_maskload_ps(bias.as_ptr().add(col), m),
                            None => _mm256_maskload_ps(o, m),
                        };
                        let mut v = _mm256_add_ps(base, s);
                        if let Some(res) = t.residual {
                            v = _mm256_add_ps(v, _mm256_maskload_ps(res.add(r * t.ldc + col), m));
                        }
                        _mm256_maskstore_ps(o, m, if t.gelu { gelu8(v) } else { v });
                    }
                }
            }
        }
    }

    /// The epilogue of one row, 8 values at a time; returns how many it did (the rest,
    /// under 8, is the caller's).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn epilogue_row(row: &mut [f32], bias: &[f32], res: Option<&[f32]>, gelu: bool) -> usize {
        let whole = row.len() / 8 * 8;
        assert!(bias.len() >= whole && res.is_none_or(|r| r.len() >= whole));
        for i in (0..whole).step_by(8) {
            // SAFETY: floats i .. i + 8 ≤ whole lie inside `row`, `bias` and `res` (above).
            unsafe {
                let o = row.as_mut_ptr().add(i);
                let mut v = _mm256_add_ps(_mm256_loadu_ps(o), _mm256_loadu_ps(bias.as_ptr().add(i)));
                if let Some(res) = res {
                    v = _mm256_add_ps(v, _mm256_loadu_ps(res.as_ptr().add(i)));
                }
                _mm256_storeu_ps(o, if gelu { gelu8(v) } else { v });
            }
        }
        whole
    }
}

/// The same sums as the AVX-512 kernels, one output at a time.
///
/// # Safety
///
/// `t` is a valid [`Tile`]: its `c` and `residual` cover its rows and columns, and no
/// other thread accesses those cells of `c` meanwhile.
unsafe fn portable(t: &Tile, precision: Precision) {
    let Tile { rows, a, lda, panel, kc, c, ldc, cols, bias, gelu, residual, quant, .. } = *t;
    for r in 0..rows {
        let mut acc = [0f32; NR];
        if let Some(q) = quant {
            let mut sums = [0i32; NR];
            for step in 0..kc {
                let av = a[r * lda + step].to_le_bytes();
                for (s, &bv) in sums.iter_mut().zip(&panel[step * NR..(step + 1) * NR]) {
                    let products = av.iter().zip(bv.to_le_bytes()).map(|(&u, w)| u as i32 * w as i8 as i32);
                    *s = s.wrapping_add(products.sum::<i32>());
                }
            }
            for (j, s) in acc.iter_mut().enumerate().take(cols) {
                *s = q.dequantize(r, j, sums[j]);
            }
        } else {
            for step in 0..kc {
                let av = a[r * lda + step];
                let line = &panel[step * NR..(step + 1) * NR];
                if precision == Precision::Bf16 {
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

impl Quant<'_> {
    /// Row `r`'s and column `j`'s integer sum over one pass as a value: without the zero
    /// point's share (taken out of each pass, so that no pass holds a large term that a
    /// later one cancels), times both scales. The AVX-512 kernel computes the same, 16
    /// columns at a time.
    #[inline]
    fn dequantize(&self, r: usize, j: usize, sum: i32) -> f32 {
        let sum = sum.wrapping_sub(self.row_zero[r].wrapping_mul(self.col_sum[j]));
        sum as f32 * (self.row_scale[r] * self.col_scale[j])
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::approx::avx512::gelu16;
    use super::{Tile, AHEAD, MR, NR, NV};

    /// Calls `$kernel::<R>` for the tile's `rows` (1..=MR): a kernel compiled for that
    /// many rows.
    macro_rules! by_rows {
        ($kernel:ident, $t:expr) => {{
            let t = $t;
            if t.prefetch {
                by_rows!($kernel, t, true)
            } else {
                by_rows!($kernel, t, false)
            }
        }};
        ($kernel:ident, $t:expr, $p:literal) => {{
            let t = $t;
            debug_assert!(t.a.len() >= (t.rows - 1) * t.lda + t.kc && t.panel.len() >= t.kc * NR);
            match t.rows {
                1 => $kernel::<1, $p>(t),
                2 => $kernel::<2, $p>(t),
                3 => $kernel::<3, $p>(t),
                4 => $kernel::<4, $p>(t),
                5 => $kernel::<5, $p>(t),
                6 => $kernel::<6, $p>(t),
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

    /// The tile in int8 quads.
    ///
    /// # Safety
    ///
    /// As for [`block_bf16`], with AVX512F and AVX512-VNNI, and `t.quant` set.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn block_int8(t: &Tile) {
        // SAFETY: the kernel's contract is this function's.
        unsafe { by_rows!(kernel_int8, t) }
    }

    /// `R` rows × NR columns in int8 quads: R·NV i32 accumulators in registers for the
    /// whole pass (a pass's sums stay below 2^31: KC · 4 · 255 · 127 < 2^27), then
    /// scaled to f32 for `store`.
    ///
    /// # Safety
    ///
    /// As for [`block_int8`], with `t.rows == R`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn kernel_int8<const R: usize, const P: bool>(t: &Tile) {
        const { assert!(R <= MR) };
        let q = t.quant.expect("an int8 tile has its scales");
        // SAFETY: as in `kernel_bf16`: every load lies inside `a` and `panel` (the
        // contract); the masked loads of the column scales and sums keep lanes < cols,
        // the slices' length; `store`'s contract is this function's.
        unsafe {
            let (a, b) = (t.a.as_ptr(), t.panel.as_ptr());
            prefetch_tile::<R, P>(t);
            let mut acc = [[_mm512_setzero_si512(); NV]; R];
            for step in 0..t.kc {
                let line = b.add(step * NR);
                prefetch_ahead::<P>(line.wrapping_add(AHEAD * NR).cast());
                let mut w = [_mm512_setzero_si512(); NV];
                for (v, wv) in w.iter_mut().enumerate() {
                    *wv = _mm512_loadu_si512(line.add(16 * v).cast());
                }
                for (r, sums) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_epi32(*a.add(r * t.lda + step) as i32);
                    for (s, &wv) in sums.iter_mut().zip(&w) {
                        *s = _mm512_dpbusd_epi32(*s, av, wv);
                    }
                }
            }
            // The values replace the sums in place: a fresh array for them was zeroed
            // by a call to memset on every tile (`perf record` of an int8 forward pass:
            // memset 5.5% before, 2.6% after).
            for h in 0..NV {
                let m = lane_mask(t.cols.saturating_sub(16 * h));
                if m == 0 {
                    continue;
                }
                let col_scale = _mm512_maskz_loadu_ps(m, q.col_scale.as_ptr().add(16 * h));
                let col_sum = _mm512_maskz_loadu_epi32(m, q.col_sum.as_ptr().add(16 * h));
                for (r, sums) in acc.iter_mut().enumerate() {
                    let s = _mm512_sub_epi32(sums[h], _mm512_mullo_epi32(_mm512_set1_epi32(q.row_zero[r]), col_sum));
                    let scale = _mm512_mul_ps(_mm512_set1_ps(q.row_scale[r]), col_scale);
                    sums[h] = _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(s), scale));
                }
            }
            // `__m512i` and `__m512` have the same size and alignment; `store` reads
            // only the lanes written above (columns < cols).
            store(t, &*acc.as_ptr().cast::<[[__m512; NV]; R]>());
        }
    }

    /// `R` rows × NR columns in bf16 pairs: R·NV accumulators live in registers for the
    /// whole pass.
    ///
    /// # Safety
    ///
    /// As for [`block_bf16`], with `t.rows == R`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn kernel_bf16<const R: usize, const P: bool>(t: &Tile) {
        const { assert!(R <= MR) };
        // SAFETY: the loads read `a` at r·lda + pair < (R - 1)·lda + kc and `panel` at
        // pair·NR + 16·v + 15 < kc·NR, inside both (the contract); the bits are
        // reinterpreted between integer and bf16 vectors of the same size; `store`'s
        // contract is this function's.
        unsafe {
            let (a, b) = (t.a.as_ptr(), t.panel.as_ptr());
            prefetch_tile::<R, P>(t);
            let mut acc = [[_mm512_setzero_ps(); NV]; R];
            for pair in 0..t.kc {
                let line = b.add(pair * NR);
                prefetch_ahead::<P>(line.wrapping_add(AHEAD * NR).cast());
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

    /// With `P`, asks for the panel's `NV` lines at `line` (a hint: an address past the
    /// panel's end is never read, and no prefetch faults).
    #[inline(always)]
    fn prefetch_ahead<const P: bool>(line: *const u8) {
        if P {
            for v in 0..NV {
                // SAFETY: a prefetch only hints the cache; it reads nothing.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(64 * v).cast()) };
            }
        }
    }

    /// With `P`, asks for the tile's cells of `c` (and of `residual`, read on the last
    /// pass) while its sums are computed: `store` reads them, and `c` is far larger than
    /// the caches.
    #[inline(always)]
    fn prefetch_tile<const R: usize, const P: bool>(t: &Tile) {
        if P {
            for r in 0..R {
                for l in 0..t.cols.div_ceil(16) {
                    let at = r * t.ldc + 16 * l;
                    // SAFETY: as in `prefetch_ahead`.
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T0>(t.c.wrapping_add(at).cast());
                        if let Some(res) = t.residual {
                            _mm_prefetch::<_MM_HINT_T0>(res.wrapping_add(at).cast());
                        }
                    }
                }
            }
        }
    }

    /// `R` rows × NR columns in f32, the same way.
    ///
    /// # Safety
    ///
    /// As for [`block_f32`], with `t.rows == R`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel_f32<const R: usize, const P: bool>(t: &Tile) {
        const { assert!(R <= MR) };
        // SAFETY: as in `kernel_bf16`: every load lies inside `a` and `panel` (the
        // contract), and `store`'s contract is this function's.
        unsafe {
            let (a, b) = (t.a.as_ptr().cast::<f32>(), t.panel.as_ptr().cast::<f32>());
            prefetch_tile::<R, P>(t);
            let mut acc = [[_mm512_setzero_ps(); NV]; R];
            for step in 0..t.kc {
                let line = b.add(step * NR);
                prefetch_ahead::<P>(line.wrapping_add(AHEAD * NR).cast());
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
    /// `matmul_tuned` into a fresh output and scratch.
    #[allow(clippy::too_many_arguments)]
    fn product(
        x: &[f32],
        m: usize,
        packed: &Packed,
        bias: &[f32],
        epilogue: Epilogue,
        residual: Option<&[f32]>,
        fast: bool,
        prefetch: bool,
    ) -> Vec<f32> {
        let mut out = Vec::new();
        let tuning = Tuning { prefetch };
        matmul_tuned(x, m, packed, bias, epilogue, residual, fast, tuning, &mut out, &mut Scratch::default());
        out
    }

    #[test]
    fn tuning_follows_the_cpu_vendor_and_never_varies() {
        assert!(Tuning::for_vendor("GenuineIntel").prefetch);
        assert!(Tuning::for_vendor("AuthenticAMD").prefetch);
        assert!(!Tuning::for_vendor("HygonGenuine").prefetch);
        assert!(!Tuning::for_vendor("").prefetch);
        let first = Tuning::for_cpu();
        assert_eq!(first, Tuning::for_vendor(&crate::kernels::cpu_vendor()));
        assert!((0..100).all(|_| Tuning::for_cpu() == first));
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
                for (fast, prefetch) in [(false, false), (true, false), (true, true)] {
                    if fast && !has_fast_path(precision) {
                        eprintln!("this CPU has no fast path for {precision:?}: only the portable one is tested");
                        continue;
                    }
                    let run = |epilogue, residual| product(&x, m, &packed, &bias, epilogue, residual, fast, prefetch);
                    let got = run(Epilogue::Bias, None);
                    // Into buffers that hold garbage from earlier use, as an encoder's
                    // do: every cell is written, nothing stale survives.
                    let mut out = vec![f32::NAN; m * n + 77];
                    let mut scratch = Scratch { cells: vec![u32::MAX; m * k + 77], ..Default::default() };
                    let tuning = Tuning { prefetch };
                    matmul_tuned(&x, m, &packed, &bias, Epilogue::Bias, None, fast, tuning, &mut out, &mut scratch);
                    assert!(out.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()) && out.len() == m * n);
                    let with_gelu = run(Epilogue::BiasGelu, None);
                    let with_res = run(Epilogue::Bias, Some(&res));
                    for (i, &e) in exact.iter().enumerate() {
                        // f32 sums of k products of size ≤ 1: error ≤ k · 2^-24 · |terms|.
                        let tol = 1e-6 * (k as f64 + 1.0);
                        let at = format!("{precision:?} {m}×{k}×{n} fast={fast} prefetch={prefetch} at {i}");
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

    /// The gemm path's second pass: bias, residual and GELU as the fused kernels apply
    /// them, on every lane and the tail.
    #[test]
    fn separate_epilogue_matches_the_scalar_definition() {
        let (m, n) = (5, 37);
        let (x, bias, res) = (matrix(m * n, 5), matrix(n, 6), matrix(m * n, 7));
        let x: Vec<f32> = x.iter().map(|v| v * 6.0).collect();
        for (ep, residual) in [(Epilogue::Bias, None), (Epilogue::BiasGelu, None), (Epilogue::Bias, Some(&res[..]))] {
            let mut out = x.clone();
            epilogue(&mut out, n, &bias, ep, residual);
            for (i, &got) in out.iter().enumerate() {
                let v = x[i] as f64 + bias[i % n] as f64 + residual.map_or(0.0, |r| r[i] as f64);
                let want = if ep == Epilogue::BiasGelu {
                    0.5 * v * (1.0 + exact_erf(v / std::f64::consts::SQRT_2))
                } else {
                    v
                };
                assert!((got as f64 - want).abs() <= 1e-6 * want.abs().max(1.0), "{ep:?} at {i}: {got} vs {want}");
            }
        }
    }

    /// int8: the kernels' sums equal the exact integer sums of the quantised operands
    /// (scaled back in f64), and those stay within the quantisation's own bound of the
    /// f32 products: half a step of each operand per product.
    #[test]
    fn int8_paths_match_exact_integer_sums() {
        use super::int8::{quantize_activation, quantize_weight, row_params, weight_max, weight_scale};
        // This CPU's levels, and 63 (the AVX2 kernel's) wherever it has AVX2.
        let levels = if weight_max() > 63.0 { vec![weight_max(), 63.0] } else { vec![63.0] };
        for wmax in levels {
            for &(m, k, n) in
                &[(1, 1, 1), (5, 7, 17), (13, 64, 32), (25, 33, 70), (100, 1030, 48), (97, 2100, 37), (7, 4099, 65)]
            {
                let (mut x, w, bias, res) = (matrix(m * k, 1), matrix(k * n, 2), matrix(n, 3), matrix(m * n, 4));
                // An outlier and a row of zeros, as real activations have.
                x[k / 2] = 25.0;
                if m > 2 {
                    x[2 * k..3 * k].iter_mut().for_each(|v| *v = 0.0);
                }
                // The operands quantised as the kernels must: weights per column, inputs per row.
                let col_scale: Vec<f32> = (0..n)
                    .map(|j| weight_scale((0..k).map(|p| w[p * n + j].abs()).fold(0.0, f32::max), wmax))
                    .collect();
                let q: Vec<i64> =
                    (0..k * n).map(|i| quantize_weight(w[i], 1.0 / col_scale[i % n], wmax) as i64).collect();
                let mut exact = vec![0f64; m * n];
                let mut magnitude = vec![0f64; m * n];
                let mut bound = vec![0f64; m * n];
                let mut true_sum = vec![0f64; m * n];
                for i in 0..m {
                    let row = &x[i * k..(i + 1) * k];
                    let lo = row.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let (sa, inv, zero) = row_params(lo, hi);
                    let u: Vec<i64> =
                        row.iter().map(|&v| quantize_activation(v, inv, zero) as i64 - zero as i64).collect();
                    for j in 0..n {
                        let sum: i64 = (0..k).map(|p| u[p] * q[p * n + j]).sum();
                        exact[i * n + j] = bias[j] as f64 + sum as f64 * sa as f64 * col_scale[j] as f64;
                        let abs: i64 = (0..k).map(|p| (u[p] * q[p * n + j]).abs()).sum();
                        magnitude[i * n + j] = abs as f64 * sa as f64 * col_scale[j] as f64;
                        let (sa, sw) = (sa as f64, col_scale[j] as f64);
                        bound[i * n + j] = (0..k)
                            .map(|p| {
                                row[p].abs() as f64 * sw / 2.0 + w[p * n + j].abs() as f64 * sa / 2.0 + sa * sw / 4.0
                            })
                            .sum();
                        true_sum[i * n + j] =
                            bias[j] as f64 + (0..k).map(|p| row[p] as f64 * w[p * n + j] as f64).sum::<f64>();
                    }
                }
                let packed = Packed::pack_levels(&w, k, n, Precision::Int8, wmax).unwrap();
                // Smoothing (packed with this CPU's levels).
                if wmax == weight_max() {
                    // Smoothing by 1 everywhere changes nothing, to the bit.
                    let ones = Packed::pack_smoothed(&w, k, n, &vec![1.0; k]).unwrap();
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    matmul(&x, m, &packed, &bias, Epilogue::Bias, None, false, &mut a, &mut Scratch::default());
                    matmul(&x, m, &ones, &bias, Epilogue::Bias, None, false, &mut b, &mut Scratch::default());
                    assert!(a == b, "smoothing by 1");
                    // Smoothing by other factors keeps the product within the bound of the
                    // smoothed operands' quantisation.
                    let s: Vec<f32> =
                        (0..k).map(|j| if j == k / 2 { 8.0 } else { 0.5 + (j % 3) as f32 * 0.25 }).collect();
                    let smoothed = Packed::pack_smoothed(&w, k, n, &s).unwrap();
                    let mut got = Vec::new();
                    matmul(
                        &x,
                        m,
                        &smoothed,
                        &bias,
                        Epilogue::Bias,
                        None,
                        has_fast_path(Precision::Int8),
                        &mut got,
                        &mut Scratch::default(),
                    );
                    for i in 0..m {
                        let xs: Vec<f64> = (0..k).map(|p| (x[i * k + p] / s[p]) as f64).collect();
                        let lo = xs.iter().copied().fold(0f64, f64::min);
                        let hi = xs.iter().copied().fold(0f64, f64::max);
                        let sa = (hi - lo) / super::int8::ACTIVATION_MAX as f64;
                        for j in 0..n {
                            let sw =
                                (0..k).map(|p| (w[p * n + j] * s[p]).abs() as f64).fold(0f64, f64::max) / wmax as f64;
                            let bound: f64 = (0..k)
                                .map(|p| {
                                    xs[p].abs() * sw / 2.0
                                        + (w[p * n + j] * s[p]).abs() as f64 * sa / 2.0
                                        + sa * sw / 4.0
                                })
                                .sum::<f64>()
                                + 1e-5 * (true_sum[i * n + j].abs() + 1.0);
                            let e = (got[i * n + j] as f64 - true_sum[i * n + j]).abs();
                            assert!(e <= bound, "smoothed {m}×{k}×{n} at ({i}, {j}): {e} > {bound}");
                        }
                    }
                }
                for (fast, prefetch) in [(false, false), (true, false), (true, true)] {
                    if fast && !has_fast_path(Precision::Int8) {
                        eprintln!("this CPU has neither AVX512-VNNI nor AVX2: only the portable int8 path is tested");
                        continue;
                    }
                    let run = |epilogue, residual| product(&x, m, &packed, &bias, epilogue, residual, fast, prefetch);
                    let got = run(Epilogue::Bias, None);
                    let mut out = vec![f32::NAN; m * n + 77];
                    let mut scratch = Scratch {
                        cells: vec![u32::MAX; m * k],
                        row_scale: vec![f32::NAN; 3],
                        row_zero: vec![-9; m + 9],
                    };
                    let tuning = Tuning { prefetch };
                    matmul_tuned(&x, m, &packed, &bias, Epilogue::Bias, None, fast, tuning, &mut out, &mut scratch);
                    assert!(out.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()) && out.len() == m * n);
                    let with_gelu = run(Epilogue::BiasGelu, None);
                    let with_res = run(Epilogue::Bias, Some(&res));
                    for (i, &e) in exact.iter().enumerate() {
                        // The integer sums are exact; f32 rounds each pass's scaled sum (a
                        // sum split into passes of KC steps) to 2^-24 of its size, at most
                        // the size of all the products together, a few times.
                        let tol = 1e-6 * (e.abs() + magnitude[i] + 1.0);
                        let at = format!("int8 {m}×{k}×{n} fast={fast} prefetch={prefetch} at {i}");
                        assert!((got[i] as f64 - e).abs() <= tol, "{at}: {} vs {e}", got[i]);
                        assert!(
                            (got[i] as f64 - true_sum[i]).abs() <= bound[i] + tol,
                            "{at}: beyond the quantisation bound"
                        );
                        let want = 0.5 * e * (1.0 + exact_erf(e / std::f64::consts::SQRT_2));
                        assert!((with_gelu[i] as f64 - want).abs() <= tol + 5e-7 * e.abs(), "gelu {at}");
                        assert!((with_res[i] as f64 - e - res[i] as f64).abs() <= tol + 1e-7, "residual {at}");
                    }
                }
            }
        }
    }
}

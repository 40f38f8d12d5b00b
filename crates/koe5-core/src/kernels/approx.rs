//! Fast approximations of e^x, erf and GELU for the kernels, in f32, scalar, on 16
//! AVX-512 lanes and on 8 AVX2 lanes; and `exact_erf`, the f64 reference they are measured against.

/// `erf` after Abramowitz and Stegun 7.1.26 (absolute error 1.5e-7; under 5e-7 evaluated
/// in f32): far below the 2^-9 relative rounding of the bf16 values the next layer reads.
#[cfg(test)]
#[inline]
fn erf(x: f32) -> f32 {
    (1.0 - erfc_abs(x)).copysign(x)
}

/// `1 − erf(|x|)`, the approximation's own form.
#[inline]
fn erfc_abs(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + ERF_P * z);
    let poly = t * (ERF_A[0] + t * (ERF_A[1] + t * (ERF_A[2] + t * (ERF_A[3] + t * ERF_A[4]))));
    poly * (-z * z).exp()
}

/// GELU with the erf above: `x/2 · (1 + erf(x/√2))`. For negative x, `1 + erf` is taken
/// as `erfc(|u|)` directly, without the cancellation of `1 − (1 − erfc)`, so the tail
/// stays within 2% relative (0.2% at x = −5, 1% at −8).
#[inline]
pub fn gelu(x: f32) -> f32 {
    let c = erfc_abs(x * std::f32::consts::FRAC_1_SQRT_2);
    0.5 * x * if x < 0.0 { c } else { 2.0 - c }
}

/// e^x for x ≤ 0 (softmax's shifted scores): 2^n · p(r) with
/// r = x − n·ln 2, |r| ≤ ln 2 / 2, p of degree 6 (relative error about 2e-7); 0 below
/// −87. Written so that the compiler vectorizes a loop over it (no calls, no
/// branches); `avx512::exp_neg16` is the same on 16 lanes.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    let x = x.max(EXP_MIN);
    // Round to nearest by adding and removing 1.5·2^23.
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut poly = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        poly = poly * r + c;
    }
    poly * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Below this e^x is taken as e^-87 (2^n stays a normal float).
const EXP_MIN: f32 = -87.0;
/// ln 2 split in two, so that n·ln 2 is subtracted without rounding away r.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// e^r's Taylor coefficients, highest degree first (1/6!, …, 1/1!, 1).
const EXP_POLY: [f32; 7] = [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];

const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];

/// GELU's tanh approximation, as `gelu_new` and `gelu_pytorch_tanh` define it.
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (x + 0.044_715 * x * x * x)).tanh())
}

/// erf in f64: its Taylor series below 3, its complement's continued fraction above.
/// The reference the approximations here are tested against (to about 1e-16).
pub fn exact_erf(x: f64) -> f64 {
    let z = x.abs();
    let v = if z < 3.0 {
        let (mut term, mut sum, mut n) = (z, z, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -z * z / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (z + f);
        }
        1.0 - (-z * z).exp() / (std::f64::consts::PI.sqrt() * (z + f))
    };
    v.copysign(x)
}

/// `exp_nonpositive` and `gelu` on 16 lanes: safe functions, callable from code compiled
/// for AVX512F (or, in an `unsafe` block, from code that knows the CPU has it).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{ERF_A, ERF_P, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO};

    /// [`super::exp_nonpositive`] on 16 lanes (rounding by the instruction's own mode).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn exp_neg16(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(EXP_MIN));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// [`super::gelu`] on 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn gelu16(x: __m512) -> __m512 {
        let u = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let z = _mm512_abs_ps(u);
        // t = 1 / d with d ≥ 1: the 14-bit reciprocal and one Newton step (t·(2 − d·t),
        // relative error about 2^-27) in place of a 512-bit division, a slow instruction
        // that a Zen 4 issues in two halves (end to end the gain was within the noise:
        // README, Performance, AMD Zen 4).
        let d = _mm512_fmadd_ps(_mm512_set1_ps(ERF_P), z, _mm512_set1_ps(1.0));
        let t0 = _mm512_rcp14_ps(d);
        let t = _mm512_mul_ps(t0, _mm512_fnmadd_ps(d, t0, _mm512_set1_ps(2.0)));
        let mut poly = _mm512_set1_ps(ERF_A[4]);
        for c in [ERF_A[3], ERF_A[2], ERF_A[1], ERF_A[0]] {
            poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
        }
        poly = _mm512_mul_ps(poly, t);
        let e = exp_neg16(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), z));
        // c = erfc(|u|); 1 + erf(u) is c for negative u and 2 − c otherwise.
        let c = _mm512_mul_ps(poly, e);
        let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(u, _mm512_setzero_ps());
        let one_plus_erf = _mm512_mask_blend_ps(negative, _mm512_sub_ps(_mm512_set1_ps(2.0), c), c);
        _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), x), one_plus_erf)
    }
}

/// `exp_nonpositive` and `gelu` on 8 lanes, for CPUs with AVX2 and FMA but not AVX512F:
/// the same steps as [`avx512`]'s, 2^n built from the exponent bits.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{ERF_A, ERF_P, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO};

    /// [`super::exp_nonpositive`] on 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn exp_neg8(x: __m256) -> __m256 {
        let x = _mm256_max_ps(x, _mm256_set1_ps(EXP_MIN));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        // n ≥ −126 (x ≥ −87): 2^n is a normal float, its exponent bits n + 127.
        let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        _mm256_mul_ps(p, two_n)
    }

    /// [`super::gelu`] on 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn gelu8(x: __m256) -> __m256 {
        let u = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let z = _mm256_andnot_ps(_mm256_set1_ps(-0.0), u);
        let t = _mm256_div_ps(_mm256_set1_ps(1.0), _mm256_fmadd_ps(_mm256_set1_ps(ERF_P), z, _mm256_set1_ps(1.0)));
        let mut poly = _mm256_set1_ps(ERF_A[4]);
        for c in [ERF_A[3], ERF_A[2], ERF_A[1], ERF_A[0]] {
            poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(c));
        }
        poly = _mm256_mul_ps(poly, t);
        let e = exp_neg8(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), z), z));
        let c = _mm256_mul_ps(poly, e);
        let negative = _mm256_cmp_ps::<_CMP_LT_OQ>(u, _mm256_setzero_ps());
        let one_plus_erf = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0), c), c, negative);
        _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5), x), one_plus_erf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erfc(z) for z ≥ 3 by its continued fraction, else 1 − erf(z).
    fn exact_erfc(z: f64) -> f64 {
        if z < 3.0 {
            return 1.0 - exact_erf(z);
        }
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (z + f);
        }
        (-z * z).exp() / (std::f64::consts::PI.sqrt() * (z + f))
    }

    #[test]
    fn exp_is_within_its_stated_error() {
        for i in 0..=90_000 {
            let x = -(i as f32) / 1000.0;
            let want = (x as f64).exp();
            let got = exp_nonpositive(x) as f64;
            if x > -87.0 {
                assert!(((got - want) / want).abs() < 4e-7, "exp({x}) = {got} vs {want}");
            } else {
                assert!(got < 2e-38);
            }
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), exp_nonpositive(-87.0));
    }

    #[test]
    fn erf_and_gelu_within_their_stated_error() {
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            let e = exact_erf(x as f64);
            assert!((erf(x) as f64 - e).abs() <= 5e-7, "erf({x}) = {} vs {e}", erf(x));
        }
        assert_eq!(gelu(0.0), 0.0);
        // The negative tail stays within 2% relative (no 1 − (1 − ε) cancellation, which
        // made it 10% wrong at −5 and 0 at −6).
        for x in [-4.0f32, -5.0, -6.0, -8.0] {
            let want = 0.5 * x as f64 * exact_erfc(-(x as f64) / std::f64::consts::SQRT_2);
            assert!(((gelu(x) as f64 - want) / want).abs() < 2e-2, "gelu({x}) = {} vs {want}", gelu(x));
        }
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            use std::arch::x86_64::*;
            lanes_match_the_scalar_forms::<8>(|xs, e, g| {
                // SAFETY: the CPU has AVX2 and FMA (checked above); 8 floats each.
                unsafe {
                    let x = _mm256_loadu_ps(xs.as_ptr());
                    _mm256_storeu_ps(e.as_mut_ptr(), avx2::exp_neg8(_mm256_min_ps(x, _mm256_setzero_ps())));
                    _mm256_storeu_ps(g.as_mut_ptr(), avx2::gelu8(x));
                }
            });
        }
        assert!((gelu(-3.0) + 0.004_049_7).abs() < 1e-6);
    }

    /// The 16-lane GELU the kernels fuse (its reciprocal by `vrcp14ps` and a Newton step)
    /// and its e^x, against the scalar forms, over the same range as the 8-lane ones.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx512_gelu_and_exp_match_the_scalar_ones() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("this CPU has no AVX512F: the 16-lane forms are not tested");
            return;
        }
        use std::arch::x86_64::*;
        lanes_match_the_scalar_forms::<16>(|xs, e, g| {
            // SAFETY: the CPU has AVX512F (checked above); 16 floats each.
            unsafe {
                let x = _mm512_loadu_ps(xs.as_ptr());
                _mm512_storeu_ps(e.as_mut_ptr(), avx512::exp_neg16(_mm512_min_ps(x, _mm512_setzero_ps())));
                _mm512_storeu_ps(g.as_mut_ptr(), avx512::gelu16(x));
            }
        });
    }

    /// `lanes(xs, e, g)` puts e^min(x, 0) and GELU of `L` inputs into `e` and `g`; checked
    /// against the scalar forms from −90 to 10 (the scalar gelu takes libm's e^x, the
    /// lanes the polynomial's).
    #[cfg(target_arch = "x86_64")]
    fn lanes_match_the_scalar_forms<const L: usize>(lanes: impl Fn(&[f32; L], &mut [f32; L], &mut [f32; L])) {
        for i in (-90_000..=10_000).step_by(L) {
            let xs: [f32; L] = std::array::from_fn(|l| (i + l as i32) as f32 / 1000.0);
            let (mut e, mut g) = ([0f32; L], [0f32; L]);
            lanes(&xs, &mut e, &mut g);
            for l in 0..L {
                let x = xs[l];
                let want = (x.min(0.0) as f64).exp();
                if x > -87.0 {
                    assert!(((e[l] as f64 - want) / want).abs() < 4e-7, "exp{L}({x}) = {} vs {want}", e[l]);
                }
                if x.abs() <= 8.0 {
                    let want = gelu(x);
                    assert!((g[l] - want).abs() <= 1e-6 * want.abs().max(1.0), "gelu{L}({x}) = {} vs {want}", g[l]);
                }
            }
        }
    }
}

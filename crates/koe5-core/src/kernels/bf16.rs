//! The bf16 number format: f32 rounded to its top 16 bits (8 bits of mantissa), as the
//! bf16 dense layers store their weights and inputs, and back.

/// Rounds to the nearest bf16, ties to even (as `vcvtne2ps2bf16` does, except that the
/// instruction reads denormal inputs, below 1.2e-38, as zero); NaN stays NaN.
#[inline]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// `x` (32 floats at a time) rounded to bf16 pairs in `out`; returns how many pairs
    /// it wrote (the rest, under 16, is the caller's).
    /// (Safe to call where AVX512F and AVX512-BF16 are enabled; elsewhere the caller
    /// must know that the CPU has them.)
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(crate) fn round_pairs(x: &[f32], out: &mut [u32]) -> usize {
        let blocks = (x.len() / 32).min(out.len() / 16);
        for i in 0..blocks {
            // SAFETY: i < blocks, so floats 32·i .. 32·i + 32 lie inside `x` and cells
            // 16·i .. 16·i + 16 inside `out`; 16 bf16 pairs are the bits of 16 u32.
            unsafe {
                let lo = _mm512_loadu_ps(x.as_ptr().add(32 * i));
                let hi = _mm512_loadu_ps(x.as_ptr().add(32 * i + 16));
                let pairs: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(out.as_mut_ptr().add(16 * i).cast(), pairs);
            }
        }
        blocks * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_to_f32(bf16_bits(-2.5)), -2.5);
        assert!(bf16_to_f32(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_to_f32(bf16_bits(f32::INFINITY)), f32::INFINITY);
    }
}

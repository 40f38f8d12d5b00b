//! What this CPU can run, detected at run time: the kernels pick their path by it, and
//! `Precision::auto` its choice.

/// Whether this CPU has the bf16 dot-product instructions the bf16 fast path needs.
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU has the byte dot-product instructions (`vpdpbusd`) the int8 fast
/// path needs.
pub fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU has AVX2 and FMA, which the 8-lane paths (attention, the gemm path's
/// epilogue) need; every x86-64 CPU with AVX512F has both.
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The CPU's vendor as CPUID names it ("AuthenticAMD", "GenuineIntel", …; "" off x86).
pub fn cpu_vendor() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        // (CPUID leaf 0 exists on every x86-64 CPU; the intrinsic is safe)
        let r = std::arch::x86_64::__cpuid(0);
        let bytes: Vec<u8> = [r.ebx, r.edx, r.ecx].iter().flat_map(|w| w.to_le_bytes()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        String::new()
    }
}

/// Whether this CPU has the 512-bit f32 instructions the f32 fast path (and the fast
/// attention, see `attention`) needs.
pub fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

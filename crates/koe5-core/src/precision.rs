//! How the encoder's dense layers multiply, and which way this CPU should choose. One
//! type serves the caller's choice (the extension maps `koe5.precision` onto it) and
//! the kernels' storage of a packed weight: a layer's precision *is* how its weights are
//! stored, so the two cannot disagree.

use crate::kernels::{cpu_vendor, has_avx512_bf16};

/// How the encoder's dense layers (nine tenths of the work) multiply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 weights and arithmetic: the reference's own numbers.
    F32,
    /// bf16 weights and inputs of the dense layers, f32 sums; everything else in f32.
    /// Uses AVX512-BF16 where the CPU has it, a portable loop elsewhere.
    Bf16,
    /// int8 weights (a scale per output column) and inputs (a scale and zero point per
    /// token) of the dense layers, i32 sums; everything else in f32. Needs AVX512-VNNI
    /// (or, failing that, AVX2) for speed: the encoder refuses it elsewhere
    /// ([`Precision::unsupported`]).
    Int8,
}

impl Precision {
    /// The fastest precision this CPU runs within the documented accuracy: bf16 where
    /// the CPU has AVX512-BF16, f32 elsewhere (the portable bf16 loop is slower than f32).
    pub fn auto() -> Precision {
        Precision::auto_choice().0
    }

    /// What `auto` chooses on this CPU, and why. Decided by a table of what was
    /// measured per CPU family with koe5's kernels (README, Precision), not by the
    /// bf16 instructions alone: on the Intel Xeons measured (with AVX512-BF16)
    /// `vdpbf16ps` does 0.5–1.3× the work of an f32 FMA, and bf16 ran 1.3–1.7× slower
    /// than f32 end to end.
    /// The same CPU always gets the same answer.
    pub fn auto_choice() -> (Precision, &'static str) {
        // Asked on every embedding call: CPUID (a trap to the hypervisor in a VM) once.
        static CHOICE: std::sync::OnceLock<(Precision, &'static str)> = std::sync::OnceLock::new();
        *CHOICE.get_or_init(|| Precision::choose(has_avx512_bf16(), &cpu_vendor()))
    }

    fn choose(has_bf16: bool, vendor: &str) -> (Precision, &'static str) {
        match (has_bf16, vendor) {
            (false, _) => (Precision::F32, "no AVX512-BF16 on this CPU: f32 (bf16 would take the slower portable path)"),
            (true, "AuthenticAMD") => (
                Precision::Bf16,
                "AMD with AVX512-BF16: vdpbf16ps does twice the work of an f32 FMA, bf16 measured 1.7-2.1x f32 (Zen 4, Zen 5)",
            ),
            (true, "GenuineIntel") => (
                Precision::F32,
                "Intel with AVX512-BF16: vdpbf16ps does 0.5-1.3x the work of an f32 FMA, bf16 measured 1.3-1.7x slower than f32 (Xeon)",
            ),
            (true, _) => (Precision::F32, "a CPU koe5 has no measurements for: f32, the exact one"),
        }
    }

    /// Why this CPU cannot run `self` at speed, naming the instructions it lacks; None
    /// where it can (or where the portable path is a documented fallback: bf16 and f32).
    /// int8's portable loop is several times slower than f32: a choice of int8 on a CPU
    /// with neither VNNI nor AVX2 is refused rather than run slowly, unless the environment variable
    /// `KOE5_INT8_PORTABLE=1` asks for the portable loop (for measuring int8's accuracy
    /// on such a CPU: the tests and the benchmark set it, a server should not).
    pub fn unsupported(self) -> Option<String> {
        let portable = std::env::var("KOE5_INT8_PORTABLE").is_ok_and(|v| v == "1");
        (self == Precision::Int8 && !crate::kernels::has_fast_path(Precision::Int8) && !portable)
            .then(Precision::missing_for_int8)
    }

    /// [`Precision::unsupported`] as the error a model load returns (SQLSTATE 0A000).
    pub fn check_supported(self) -> crate::Result<()> {
        match self.unsupported() {
            None => Ok(()),
            Some(why) => Err(crate::Error::new(
                crate::ErrorKind::Unsupported,
                format!("precision {} is not available on this CPU", self.name()),
            )
            .with_detail(why)
            .with_hint("Set koe5.precision to auto, f32 or bf16.")),
        }
    }

    fn missing_for_int8() -> String {
        "int8 needs the CPU instructions AVX512-VNNI, or else AVX2 and FMA, which this CPU lacks".to_owned()
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "f32" => Some(Precision::F32),
            "bf16" => Some(Precision::Bf16),
            "int8" => Some(Precision::Int8),
            "auto" => Some(Precision::auto()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_what_was_measured_per_cpu_family() {
        assert_eq!(Precision::choose(true, "AuthenticAMD").0, Precision::Bf16);
        assert_eq!(Precision::choose(true, "GenuineIntel").0, Precision::F32);
        assert_eq!(Precision::choose(false, "AuthenticAMD").0, Precision::F32);
        assert_eq!(Precision::choose(true, "HygonGenuine").0, Precision::F32);
        // This CPU: its vendor string is CPUID's 12 bytes, and the choice never varies.
        let vendor = cpu_vendor();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(vendor.len(), 12, "{vendor:?}");
        let first = Precision::auto_choice();
        assert!((0..100).all(|_| Precision::auto_choice() == first));
        assert_eq!(first.0, Precision::auto());
    }

    #[test]
    fn int8_names_what_the_cpu_lacks() {
        assert_eq!(Precision::parse("int8"), Some(Precision::Int8));
        assert_eq!(Precision::Int8.name(), "int8");
        assert_eq!(Precision::F32.unsupported(), None);
        assert_eq!(Precision::Bf16.unsupported(), None);
        let portable = std::env::var("KOE5_INT8_PORTABLE").is_ok_and(|v| v == "1");
        let fast = crate::kernels::has_avx512_vnni() || crate::kernels::has_avx2_fma();
        assert_eq!(Precision::Int8.unsupported().is_none(), fast || portable);
    }
}

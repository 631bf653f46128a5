//! The CPU features our kernels choose between, detected once per process. Every
//! kernel asks [`features`]; none runs its own detection, so a test (or a user
//! chasing a bug) can see which path each format takes in one place.

use std::sync::OnceLock;

/// What this CPU can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CpuFeatures {
    /// x86-64 AVX2 with FMA: the integer and f32 kernels' SIMD path.
    pub avx2_fma: bool,
    /// x86-64 F16C (half-precision conversions), for F16/BF16 weights with AVX2.
    pub f16c: bool,
    /// x86-64 AVX-512F: BF16 rows at decode.
    pub avx512f: bool,
    /// x86-64 AVX-512F with BW and VNNI (byte dot products into 32-bit lanes): the
    /// k-quant kernels' wide path.
    pub avx512vnni: bool,
    /// aarch64 NEON (part of every aarch64 target).
    pub neon: bool,
}

impl CpuFeatures {
    /// Detects the features of this CPU.
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            Self {
                avx2_fma: has!("avx2") && has!("fma"),
                f16c: has!("f16c"),
                avx512f: has!("avx512f"),
                avx512vnni: has!("avx512f")
                    && has!("avx512bw")
                    && has!("avx512vnni")
                    && has!("fma"),
                neon: false,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Self {
                avx2_fma: false,
                f16c: false,
                avx512f: false,
                avx512vnni: false,
                neon: cfg!(target_arch = "aarch64"),
            }
        }
    }

    /// The portable paths only: what a CPU without any of these runs (tests compare
    /// SIMD results with it).
    pub const PORTABLE: Self = Self {
        avx2_fma: false,
        f16c: false,
        avx512f: false,
        avx512vnni: false,
        neon: false,
    };
}

/// This CPU's features (detected on the first call), narrowed by `UNICORN_CPU`:
/// `avx2` leaves out AVX-512, `portable` every SIMD path. For comparing the kernels
/// on one machine, and for ruling them out when chasing a bug.
pub fn features() -> CpuFeatures {
    static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
    *FEATURES.get_or_init(|| {
        let found = CpuFeatures::detect();
        match std::env::var("UNICORN_CPU").as_deref() {
            Ok("portable") => CpuFeatures::PORTABLE,
            Ok("avx2") => CpuFeatures {
                avx512f: false,
                avx512vnni: false,
                ..found
            },
            _ => found,
        }
    })
}

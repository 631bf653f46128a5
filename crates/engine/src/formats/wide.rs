//! Prefill kernels for the k-quants (Q4_K, Q6_K) with AVX-512 VNNI: activations as
//! plain 16-bit integers with **one** scale per 256 values ([`BlockQ16W`]), weights
//! widened to 16 bits and multiplied by their integer sub-block scales once per
//! super-block, and `vpdpwssd` summing pairs of 16-bit products. A super-block's
//! products then add up in integers and meet floats once per activation row, where
//! the decode kernels ([`super::blocks::BlockQ16K`]) spend two `vpdpbusd`, a shift,
//! a conversion, a permute and an FMA on every 64 values. Unpacking a super-block
//! costs more than the byte kernels' unpack, so this pays only when several
//! activation rows share it: decode (one row) keeps the byte kernels.
//!
//! Accuracy: one 16-bit scale per 256 values instead of per 32 leaves the values'
//! rounding far below the weights' (measured on the golden stretches: Gemma 3 270M
//! perplexity 0.005 % and 0.001 % from the reference, against 0.008 % and 0.009 %
//! with per-32 scales; SmolLM2 unchanged). 8-bit activations, llama.cpp's choice,
//! measured 0.9 % (Gemma) and 2.1 % (SmolLM2) off, outside our 0.1 % bound.
//!
//! Each format supplies only its unpacking ([`WideFormat`]); the kernels are written
//! once here.

use super::blocks::Activation;

/// Activations for [`WideFormat`] kernels: 256 values as i16 with one scale, and the
/// exact sums of the original values per 32 (for the Q4_K minimums).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct BlockQ16W {
    /// Quantized values: value ≈ d × q.
    pub qs: [i16; 256],
    /// Scale.
    pub d: f32,
    /// Sum of the 32 original values of each block of 32.
    pub s: [f32; 8],
}
const _: () = assert!(std::mem::size_of::<BlockQ16W>() == 576);

impl Activation for BlockQ16W {
    const WEIGHTS: usize = 256;
    const ZERO: Self = Self {
        qs: [0; 256],
        d: 0.0,
        s: [0.0; 8],
    };
    fn quantize_row(x: &[f32], out: &mut [Self]) {
        for (xs, b) in x.chunks_exact(256).zip(out.iter_mut()) {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            b.d = amax / 32767.0;
            let id = if b.d > 0.0 { 1.0 / b.d } else { 0.0 };
            for (q, v) in b.qs.iter_mut().zip(xs) {
                *q = (v * id).round() as i16;
            }
            for (s, xs) in b.s.iter_mut().zip(xs.chunks_exact(32)) {
                *s = xs.iter().sum();
            }
        }
    }
}

/// A super-block as the wide kernels read it: `Σ w·x = d·a.d·Σ q·a.qs − Σⱼ mⱼ·a.sⱼ`.
pub struct Wide {
    /// The 256 weights as integers, sub-block scale applied (|q| ≤ 4096).
    pub q: [i16; 256],
    /// Super-block scale.
    pub d: f32,
    /// Coefficients of the activation sums per 32 (Q4_K: dmin·mⱼ; others: zero).
    pub mins: [f32; 8],
}

/// A k-quant format the wide kernels multiply: how a super-block widens.
pub trait WideFormat: Copy + Sync {
    /// Whether the format has minimums (else the activation sums are never read).
    const MINS: bool;
    /// The portable widening (the reference the SIMD path is tested against).
    fn widen(&self) -> Wide;
    /// [`WideFormat::widen`] into registers: eight vectors of 32 i16 (weights
    /// 32j..32j+32 in vector j), d in every lane, and the eight minimums.
    ///
    /// # Safety
    /// Only where AVX-512F, BW and VNNI, AVX2 and FMA were detected.
    #[cfg(target_arch = "x86_64")]
    unsafe fn widen_avx512(&self) -> WideRegs;
}

/// [`Wide`] in registers.
#[cfg(target_arch = "x86_64")]
pub struct WideRegs {
    /// Weights 32j..32j+32 in vector j.
    pub q: [std::arch::x86_64::__m512i; 8],
    /// d in every lane.
    pub d: std::arch::x86_64::__m512,
    /// The minimums' coefficients.
    pub mins: std::arch::x86_64::__m256,
}

/// Portable dot product of one weight row with one activation row.
pub fn dot_scalar<B: WideFormat>(w: &[B], x: &[BlockQ16W]) -> f32 {
    let mut sum = 0f32;
    for (b, a) in w.iter().zip(x) {
        let u = b.widen();
        let isum: i64 =
            u.q.iter()
                .zip(&a.qs)
                .map(|(&q, &v)| q as i64 * v as i64)
                .sum();
        sum += u.d * a.d * isum as f32;
        sum -= u.mins.iter().zip(&a.s).map(|(m, s)| m * s).sum::<f32>();
    }
    sum
}

/// `R` weight rows with `N` activation rows, super-block by super-block: the `N`
/// rows' activations for one super-block (N × 512 bytes) and the `R` weight
/// super-blocks stay in L1 while each widened weight super-block meets every
/// activation row, so the activations stream from L2 once per tile rather than once
/// per weight row. Per pair, eight `vpdpwssd` in two chains (so several are in
/// flight), one conversion and one FMA into an accumulator kept in L1. Lanes hold at
/// most 16 products of |q| ≤ 4096 (Q6_K; Q4_K ≤ 945) and |a| ≤ 32767: inside i32.
///
/// # Safety
/// Only where AVX-512F, BW and VNNI, AVX2 and FMA were detected; every row of `x`
/// and `w` the same number of super-blocks.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
pub unsafe fn dot_tile_avx512<B: WideFormat, const R: usize, const N: usize>(
    w: [&[B]; R],
    x: [&[BlockQ16W]; N],
) -> [[f32; N]; R] {
    use std::arch::x86_64::*;
    let len = w[0].len();
    assert!(w.iter().all(|r| r.len() == len) && x.iter().all(|a| a.len() == len));
    let mut acc = [[_mm512_setzero_ps(); N]; R];
    let mut mins = [[_mm256_setzero_ps(); N]; R];
    for i in 0..len {
        for r in 0..R {
            let u = w[r].get_unchecked(i).widen_avx512();
            for n in 0..N {
                let a = x[n].get_unchecked(i);
                let s = _mm512_mul_ps(u.d, _mm512_set1_ps(a.d));
                let sum = _mm512_cvtepi32_ps(dot256(&u.q, &a.qs));
                acc[r][n] = _mm512_fmadd_ps(s, sum, acc[r][n]);
                if B::MINS {
                    let s = _mm256_loadu_ps(a.s.as_ptr());
                    mins[r][n] = _mm256_fmadd_ps(u.mins, s, mins[r][n]);
                }
            }
        }
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|n| {
            let m = if B::MINS {
                super::blocks::hsum_avx(mins[r][n])
            } else {
                0.0
            };
            _mm512_reduce_add_ps(acc[r][n]) - m
        })
    })
}

/// Σ w·x over 256 values as 16 i32 lanes: eight `vpdpwssd` in two chains, each
/// reading its activations straight from memory. Written in assembly: LLVM turns
/// the intrinsic into `vpmaddwd` plus `vpaddd` (two instructions where one does),
/// and a pointer per operand spilled every address to the stack (together 25 % of
/// this kernel's time).
///
/// # Safety
/// Only where AVX-512F and VNNI were detected.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dot256(
    w: &[std::arch::x86_64::__m512i; 8],
    x: &[i16; 256],
) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let (mut p0, mut p1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
    std::arch::asm!(
        "vpdpwssd {p0}, {w0}, zmmword ptr [{x}]",
        "vpdpwssd {p1}, {w1}, zmmword ptr [{x} + 64]",
        "vpdpwssd {p0}, {w2}, zmmword ptr [{x} + 128]",
        "vpdpwssd {p1}, {w3}, zmmword ptr [{x} + 192]",
        "vpdpwssd {p0}, {w4}, zmmword ptr [{x} + 256]",
        "vpdpwssd {p1}, {w5}, zmmword ptr [{x} + 320]",
        "vpdpwssd {p0}, {w6}, zmmword ptr [{x} + 384]",
        "vpdpwssd {p1}, {w7}, zmmword ptr [{x} + 448]",
        p0 = inout(zmm_reg) p0,
        p1 = inout(zmm_reg) p1,
        w0 = in(zmm_reg) w[0],
        w1 = in(zmm_reg) w[1],
        w2 = in(zmm_reg) w[2],
        w3 = in(zmm_reg) w[3],
        w4 = in(zmm_reg) w[4],
        w5 = in(zmm_reg) w[5],
        w6 = in(zmm_reg) w[6],
        w7 = in(zmm_reg) w[7],
        x = in(reg) x.as_ptr(),
        options(pure, readonly, nostack, preserves_flags),
    );
    _mm512_add_epi32(p0, p1)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::formats::blocks::testing::{lcg, random_blocks};
    use crate::formats::blocks::BlockFormat;

    /// A k-quant's wide kernels on random blocks: the portable widening against
    /// the format's dequantizer (exactly, up to float rounding), the matmul of
    /// quantized activations against f32 math, and AVX-512 against portable.
    pub fn check_wide<B: WideFormat + BlockFormat>(
        tame: impl Fn(&mut B, &mut u64),
        dequant: impl Fn(&B) -> Vec<f32>,
    ) {
        let mut seed = 23;
        let (m, n, k) = (5, 9, 768);
        let w: Vec<B> = random_blocks(n * k / 256, &mut seed, &tame);
        for b in &w {
            let u = b.widen();
            let want = dequant(b);
            for (i, &v) in want.iter().enumerate() {
                // With activations all one in block i/32: d·q − m.
                let got = u.d * u.q[i] as f32 - u.mins[i / 32];
                assert!(
                    (got - v).abs() <= 1e-5 * v.abs().max(1e-3),
                    "weight {i}: {got} vs {v}"
                );
            }
        }
        let mut x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed) * 3.0).collect();
        x[7] = 90.0; // one outlier sets a super-block's scale
        let xq: Vec<Vec<BlockQ16W>> = x
            .chunks_exact(k)
            .map(|xi| {
                let mut q = vec![BlockQ16W::ZERO; k / 256];
                BlockQ16W::quantize_row(xi, &mut q);
                q
            })
            .collect();
        let kb = k / 256;
        for r in 0..n {
            let row = &w[r * kb..(r + 1) * kb];
            let wr: Vec<f32> = row.iter().flat_map(&dequant).collect();
            let refs: Vec<f32> = xq.iter().map(|a| dot_scalar(row, a)).collect();
            for i in 0..m {
                let xi = &x[i * k..(i + 1) * k];
                let exact: f32 = wr.iter().zip(xi).map(|(a, b)| a * b).sum();
                let scale: f32 = wr.iter().zip(xi).map(|(a, b)| (a * b).abs()).sum();
                assert!(
                    (refs[i] - exact).abs() <= 1e-3 * scale + 1e-4,
                    "row {r}: {} vs {exact}",
                    refs[i]
                );
            }
            #[cfg(target_arch = "x86_64")]
            if crate::formats::blocks::Simd::best() == crate::formats::blocks::Simd::Avx512 {
                // SAFETY: AVX-512 VNNI was detected; rows are as long as the weights.
                let [four] = unsafe {
                    dot_tile_avx512::<B, 1, 4>([row], std::array::from_fn(|i| xq[i].as_slice()))
                };
                let [one] = unsafe { dot_tile_avx512::<B, 1, 1>([row], [xq[4].as_slice()]) };
                for (i, got) in four.into_iter().chain(one).enumerate() {
                    assert!(
                        (got - refs[i]).abs() <= 1e-5 * refs[i].abs().max(1.0),
                        "row {r}, activation {i}: avx512 {got} vs scalar {}",
                        refs[i]
                    );
                }
            }
        }
    }
}

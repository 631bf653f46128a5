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

/// Activations for the 32-weight formats' prefill kernels ([`dot_pairs_avx512`]):
/// two blocks of 32 quantized exactly as [`super::blocks::BlockQ16`] (a scale per
/// 32, so rows need only be a multiple of 64), their values in the order the
/// kernel's lanes take them (block 0's values 0..16, block 1's 0..16, then both
/// blocks' 16..32), and each block's scale and exact sum repeated over its 8 lanes.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct BlockQ16P {
    /// Quantized values, interleaved as above.
    pub qs: [i16; 64],
    /// Block 0's scale in lanes 0-7, block 1's in 8-15.
    pub d: [f32; 16],
    /// Block 0's sum of original values in lanes 0-7, block 1's in 8-15.
    pub s: [f32; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ16P>() == 256);

impl BlockQ16P {
    /// Quantized value `i` (0..64) of the pair in natural order.
    pub fn q(&self, i: usize) -> i16 {
        let (block, l) = (i / 32, i % 32);
        self.qs[32 * (l / 16) + 16 * block + l % 16]
    }
}

impl Activation for BlockQ16P {
    const WEIGHTS: usize = 64;
    const ZERO: Self = Self {
        qs: [0; 64],
        d: [0.0; 16],
        s: [0.0; 16],
    };
    fn quantize_row(x: &[f32], out: &mut [Self]) {
        for (xs, p) in x.chunks_exact(64).zip(out.iter_mut()) {
            for (block, xs) in xs.chunks_exact(32).enumerate() {
                let (d, qs) = super::blocks::q16_block(xs);
                let sum: f32 = xs.iter().sum();
                p.d[8 * block..8 * block + 8].fill(d);
                p.s[8 * block..8 * block + 8].fill(sum);
                for (l, q) in qs.enumerate() {
                    p.qs[32 * (l / 16) + 16 * block + l % 16] = q;
                }
            }
        }
    }
}

/// `R` weight rows of a 32-weight format with `N` activation rows, two blocks at a
/// time: per pair of rows, two `vpdpwssd` put block 0's products in lanes 0-7 and
/// block 1's in 8-15 (4 each per lane), then one conversion, one multiply by the
/// two blocks' scales and one FMA. The byte kernels spend a `vpmaddwd` pair, an
/// add, a conversion, a multiply and an FMA on each block. Formats whose offset is
/// a zero point (Q4_0, Q5_0) subtract it from the widened quants; Q4_1's minimum
/// meets the activation sums. Lanes hold at most 4 products of |q| ≤ 128 and
/// |a| ≤ 32767.
///
/// # Safety
/// Only where AVX-512F, BW and VNNI, AVX2 and FMA were detected; every row of `w`
/// twice as many blocks as every row of `x`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_pairs_avx512<B: super::blocks::Block32, const R: usize, const N: usize>(
    w: [&[B]; R],
    x: [&[BlockQ16P]; N],
) -> [[f32; N]; R] {
    use super::blocks::splat_f16;
    use std::arch::x86_64::*;
    let len = x[0].len();
    assert!(w.iter().all(|r| r.len() == 2 * len) && x.iter().all(|a| a.len() == len));
    let float_offset = B::OFFSET && B::ZERO_POINT == 0;
    let join = |a: __m256i, b: __m256i| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b);
    let join_ps = |a: __m256, b: __m256| {
        _mm512_castsi512_ps(join(_mm256_castps_si256(a), _mm256_castps_si256(b)))
    };
    let zero_point = _mm512_set1_epi16(B::ZERO_POINT);
    let mut acc = [[_mm512_setzero_ps(); N]; R];
    let mut off = [[_mm512_setzero_ps(); N]; R];
    for g in 0..len {
        for r in 0..R {
            let (b0, b1) = (w[r].get_unchecked(2 * g), w[r].get_unchecked(2 * g + 1));
            let ((a0, a1), (c0, c1)) = (b0.quants(), b1.quants());
            let mut q = [join(a0, c0), join(a1, c1)];
            if B::ZERO_POINT != 0 {
                q = q.map(|v| _mm512_sub_epi16(v, zero_point));
            }
            let d = join_ps(splat_f16(b0.scale()), splat_f16(b1.scale()));
            let o = join_ps(splat_f16(b0.offset()), splat_f16(b1.offset()));
            for n in 0..N {
                let a = x[n].get_unchecked(g);
                let s = _mm512_mul_ps(d, _mm512_load_ps(a.d.as_ptr()));
                let sum = _mm512_cvtepi32_ps(dot64(&q, &a.qs));
                acc[r][n] = _mm512_fmadd_ps(s, sum, acc[r][n]);
                if float_offset {
                    off[r][n] = _mm512_fmadd_ps(o, _mm512_load_ps(a.s.as_ptr()), off[r][n]);
                }
            }
        }
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|n| {
            let o = if float_offset {
                // Each block's sum sat in 8 lanes.
                B::OFFSET_FACTOR * _mm512_reduce_add_ps(off[r][n]) / 8.0
            } else {
                0.0
            };
            _mm512_reduce_add_ps(acc[r][n]) + o
        })
    })
}

/// Σ w·x over one [`BlockQ16P`] as 16 i32 lanes: two `vpdpwssd` (in assembly, as
/// [`dot256`]).
///
/// # Safety
/// Only where AVX-512F and VNNI were detected.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dot64(w: &[std::arch::x86_64::__m512i; 2], x: &[i16; 64]) -> std::arch::x86_64::__m512i {
    let mut p = std::arch::x86_64::_mm512_setzero_si512();
    std::arch::asm!(
        "vpdpwssd {p}, {w0}, zmmword ptr [{x}]",
        "vpdpwssd {p}, {w1}, zmmword ptr [{x} + 64]",
        p = inout(zmm_reg) p,
        w0 = in(zmm_reg) w[0],
        w1 = in(zmm_reg) w[1],
        x = in(reg) x.as_ptr(),
        options(pure, readonly, nostack, preserves_flags),
    );
    p
}

/// A format with a tiled prefill kernel here: which activations it reads and how
/// many weight blocks meet one activation block. The driver
/// ([`super::blocks::Rows`]) is written once against it.
#[cfg(target_arch = "x86_64")]
pub trait Tile: Copy + Sync {
    /// The activations the kernel reads.
    type Act: Activation;
    /// Weight blocks per activation block.
    const PER_ACT: usize;
    /// Rows `w` (R of them) by activation rows `x` (N).
    ///
    /// # Safety
    /// As [`dot_tile_avx512`].
    unsafe fn tile<const R: usize, const N: usize>(
        w: [&[Self]; R],
        x: [&[Self::Act]; N],
    ) -> [[f32; N]; R];
}

#[cfg(target_arch = "x86_64")]
macro_rules! tile {
    ($block:ty, $act:ty, $per_act:expr, $kernel:ident) => {
        impl Tile for $block {
            type Act = $act;
            const PER_ACT: usize = $per_act;
            #[inline]
            unsafe fn tile<const R: usize, const N: usize>(
                w: [&[Self]; R],
                x: [&[$act]; N],
            ) -> [[f32; N]; R] {
                $kernel(w, x)
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
tile!(super::q4_k::BlockQ4K, BlockQ16W, 1, dot_tile_avx512);
#[cfg(target_arch = "x86_64")]
tile!(super::q6_k::BlockQ6K, BlockQ16W, 1, dot_tile_avx512);
#[cfg(target_arch = "x86_64")]
tile!(super::q4_0::BlockQ4_0, BlockQ16P, 2, dot_pairs_avx512);
#[cfg(target_arch = "x86_64")]
tile!(super::q4_1::BlockQ4_1, BlockQ16P, 2, dot_pairs_avx512);
#[cfg(target_arch = "x86_64")]
tile!(super::q5_0::BlockQ5_0, BlockQ16P, 2, dot_pairs_avx512);
#[cfg(target_arch = "x86_64")]
tile!(super::q8_0::BlockQ8_0, BlockQ16P, 2, dot_pairs_avx512);

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
    use crate::formats::blocks::{BlockFormat, BlockQ16};

    fn quantized<A: Activation>(x: &[f32]) -> Vec<A> {
        let mut q = vec![A::ZERO; x.len() / A::WEIGHTS];
        A::quantize_row(x, &mut q);
        q
    }

    /// The matmul driver over every tile shape (8×8 tiles, a ragged run of
    /// weight rows, groups of 8, 4 and 1 activation rows) against `reference`,
    /// the portable dot of one weight row with one row of `A` activations.
    fn check_driver<B: BlockFormat, A: Activation>(
        w: &[B],
        x: &[f32],
        k: usize,
        reference: impl Fn(&[B], &[A]) -> f32,
        slack: impl Fn(&[B], &[A]) -> f32,
    ) {
        // Only AVX-512 runs these kernels; elsewhere the matmul takes the byte
        // kernels (checked against their own reference in `check_format`).
        if crate::formats::blocks::Simd::best() != crate::formats::blocks::Simd::Avx512 {
            return;
        }
        let wb = k / B::WEIGHTS;
        let n = w.len() / wb;
        let m = 13; // 8 + 4 + 1
        let xs: Vec<f32> = (0..m * k)
            .map(|i| x[i % x.len()] * (1.0 + (i / k) as f32 * 0.1))
            .collect();
        let mut y = vec![0f32; m * n];
        crate::formats::blocks::matmul(&xs, m, k, w, n, &mut y);
        // The same rows rotated by 5 land in other tile shapes (8×8 → 1×4, 1×1 → 8×8):
        // each row's result is bit-identical, so a prefill that reuses a cached
        // prefix (the rest of the rows shifted) computes what a whole one would.
        let shifted: Vec<f32> = (0..m)
            .flat_map(|i| xs[((i + 5) % m) * k..((i + 5) % m + 1) * k].iter().copied())
            .collect();
        let mut ys = vec![0f32; m * n];
        crate::formats::blocks::matmul(&shifted, m, k, w, n, &mut ys);
        for i in 0..m {
            for r in 0..n {
                let (a, b) = (y[((i + 5) % m) * n + r], ys[i * n + r]);
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "row {r} of activation {i} moved: {a} vs {b}"
                );
            }
        }
        for i in 0..m {
            let a: Vec<A> = quantized(&xs[i * k..(i + 1) * k]);
            for r in 0..n {
                let row = &w[r * wb..(r + 1) * wb];
                let want = reference(row, &a);
                let got = y[i * n + r];
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1.0) + slack(row, &a),
                    "activation {i}, row {r}: {got} vs {want}"
                );
            }
        }
    }

    /// A 32-weight format's paired kernel: the matmul (which takes it on AVX-512)
    /// against the format's portable dot on the same 16-bit quantization
    /// ([`BlockQ16`] and [`BlockQ16P`] hold the same values). Where the kernel
    /// folds a zero point into the quants, it meets the quantized activations
    /// rather than their exact sums: at most half a step per value apart.
    #[cfg(target_arch = "x86_64")]
    pub fn check_pairs<B: BlockFormat<Act = BlockQ16> + crate::formats::blocks::Block32>(
        tame: impl Fn(&mut B, &mut u64),
    ) {
        let mut seed = 29;
        let (n, k) = (19, 640); // 8 + 8 + a ragged 3 rows; Gemma 3 270M's width
        let w: Vec<B> = random_blocks(n * k / 32, &mut seed, &tame);
        let mut x: Vec<f32> = (0..k).map(|_| lcg(&mut seed) * 3.0).collect();
        x[40] = 60.0;
        let p: Vec<BlockQ16P> = quantized(&x);
        let q: Vec<BlockQ16> = quantized(&x);
        for i in 0..k {
            assert_eq!(p[i / 64].q(i % 64), q[i / 32].qs[i % 32], "value {i}");
        }
        let zero_point = |row: &[B], a: &[BlockQ16]| -> f32 {
            row.iter()
                .zip(a)
                .map(|(b, a)| B::ZERO_POINT as f32 * b.scale().to_f32().abs() * 16.0 * a.d)
                .sum()
        };
        check_driver(
            &w,
            &x,
            k,
            |row, a: &[BlockQ16]| B::dot_scalar(row, a),
            zero_point,
        );
    }

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
        check_driver(&w, &x, k, |row, a| dot_scalar(row, a), |_, _| 0.0);
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

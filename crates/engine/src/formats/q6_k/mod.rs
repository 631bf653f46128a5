//! Q6_K (llama.cpp `block_q6_K`): super-blocks of 256 weights, `w = d·scⱼ·(q − 32)`
//! with 6-bit q (low 4 bits in `ql`, high 2 in `qh`) and a signed 8-bit scale per 16
//! weights. In each half of 128, group g (32 weights) takes the low (g < 2) or high
//! nibbles of `ql[32·(g % 2) ..]` and bits 2g..2g+1 of `qh[..32]`.

pub mod quantize;

use super::blocks::BlockQ16;
use half::f16;

/// One super-block.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low 4 bits of the quants.
    pub ql: [u8; 128],
    /// High 2 bits of the quants.
    pub qh: [u8; 64],
    /// Scales of the 16 groups of 16.
    pub scales: [i8; 16],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

/// Signed quant (−32..31) of weight `l` (0..32) of 32-group `g` (0..8).
fn q6(b: &BlockQ6K, g: usize, l: usize) -> i32 {
    let (half, g) = (g / 4, g % 4);
    let ql = b.ql[64 * half + 32 * (g % 2) + l];
    let low = if g < 2 { ql & 0x0F } else { ql >> 4 };
    let high = (b.qh[32 * half + l] >> (2 * g)) & 3;
    (low | (high << 4)) as i32 - 32
}

/// Scale of the 16 weights of group `g` starting at `l` (0 or 16).
fn scale(b: &BlockQ6K, g: usize, l: usize) -> f32 {
    b.scales[8 * (g / 4) + 2 * (g % 4) + l / 16] as f32
}

/// Portable reference dot product.
fn dot_scalar(w: &[BlockQ6K], x: &[BlockQ16]) -> f32 {
    let mut sum = 0f32;
    for (b, xs) in w.iter().zip(x.chunks_exact(8)) {
        let d = b.d.to_f32();
        for (g, a) in xs.iter().enumerate() {
            for half in [0, 16] {
                let isum: i32 = (half..half + 16)
                    .map(|l| q6(b, g, l) * a.qs[l] as i32)
                    .sum();
                sum += d * scale(b, g, half) * a.d * isum as f32;
            }
        }
    }
    sum
}

/// The signed quants (−32..31) of the four 32-groups of half `half` of a super-block,
/// each as two vectors of 16 i16.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn unpack_half(
    b: &BlockQ6K,
    half: usize,
) -> [(std::arch::x86_64::__m256i, std::arch::x86_64::__m256i); 4] {
    use std::arch::x86_64::*;
    let low = _mm256_set1_epi8(0x0F);
    let three = _mm256_set1_epi8(3);
    let ql0 = _mm256_loadu_si256(b.ql.as_ptr().add(64 * half) as *const __m256i);
    let ql1 = _mm256_loadu_si256(b.ql.as_ptr().add(64 * half + 32) as *const __m256i);
    let qh = _mm256_loadu_si256(b.qh.as_ptr().add(32 * half) as *const __m256i);
    let high = |h: __m256i| _mm256_slli_epi16(_mm256_and_si256(h, three), 4);
    let groups = [
        _mm256_or_si256(_mm256_and_si256(ql0, low), high(qh)),
        _mm256_or_si256(_mm256_and_si256(ql1, low), high(_mm256_srli_epi16(qh, 2))),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low),
            high(_mm256_srli_epi16(qh, 4)),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low),
            high(_mm256_srli_epi16(qh, 6)),
        ),
    ];
    groups.map(|q| {
        let q = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
        (
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q)),
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(q)),
        )
    })
}

/// One 32-group against one activation block; each half of 16 has its own scale
/// (32 × 32767 × 2 per lane fits i32).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn group(
    (q0, q1): (std::arch::x86_64::__m256i, std::arch::x86_64::__m256i),
    a: &BlockQ16,
    s0: f32,
    s1: f32,
    acc: std::arch::x86_64::__m256,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let y0 = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
    let y1 = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
    let p0 = _mm256_cvtepi32_ps(_mm256_madd_epi16(q0, y0));
    let p1 = _mm256_cvtepi32_ps(_mm256_madd_epi16(q1, y1));
    let acc = _mm256_fmadd_ps(_mm256_set1_ps(s0 * a.d), p0, acc);
    _mm256_fmadd_ps(_mm256_set1_ps(s1 * a.d), p1, acc)
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[BlockQ6K], x: &[BlockQ16]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    for (b, xs) in w.iter().zip(x.chunks_exact(8)) {
        let d = b.d.to_f32();
        for half in 0..2 {
            for (g, q) in unpack_half(b, half).into_iter().enumerate() {
                let s = 8 * half + 2 * g;
                let (s0, s1) = (d * b.scales[s] as f32, d * b.scales[s + 1] as f32);
                acc = group(q, &xs[4 * half + g], s0, s1, acc);
            }
        }
    }
    super::blocks::hsum_avx(acc)
}

/// Four activation rows: each group is unpacked once.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(w: &[BlockQ6K], x: [&[BlockQ16]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 4];
    for (bi, b) in w.iter().enumerate() {
        let d = b.d.to_f32();
        for half in 0..2 {
            for (g, q) in unpack_half(b, half).into_iter().enumerate() {
                let s = 8 * half + 2 * g;
                let (s0, s1) = (d * b.scales[s] as f32, d * b.scales[s + 1] as f32);
                for r in 0..4 {
                    acc[r] = group(q, &x[r][bi * 8 + 4 * half + g], s0, s1, acc[r]);
                }
            }
        }
    }
    std::array::from_fn(|r| super::blocks::hsum_avx(acc[r]))
}

super::blocks::block_format!(BlockQ6K, Q6K, 256);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::blocks::testing::{check_format, lcg};

    /// llama.cpp's `dequantize_row_q6_K`, written from its definition.
    fn dequant(b: &BlockQ6K) -> Vec<f32> {
        let d = b.d.to_f32();
        let mut y = vec![0f32; 256];
        for n in 0..2 {
            let (ql, qh, sc) = (&b.ql[64 * n..], &b.qh[32 * n..], &b.scales[8 * n..]);
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[128 * n + l] = d * sc[is] as f32 * q1 as f32;
                y[128 * n + l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[128 * n + l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[128 * n + l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
        y
    }

    #[test]
    fn kernels_match_the_layout_and_each_other() {
        let tame = |b: &mut BlockQ6K, seed: &mut u64| b.d = f16::from_f32(lcg(seed) * 0.001);
        check_format(Some(candle_core::quantized::GgmlDType::Q6K), tame, dequant);
    }
}

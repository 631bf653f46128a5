//! Q4_K (llama.cpp `block_q4_K`): super-blocks of 256 weights in 8 sub-blocks of 32,
//! `w = d·scᵢ·q − dmin·mᵢ` with 6-bit sub-block scales and minimums packed in 12
//! bytes. The 32 bytes of quants at `32·(i/2)` hold sub-block i in their low (i
//! even) or high (i odd) nibbles. Sub-blocks line up with our 32-value activation
//! blocks, so each minimum meets the exact activation sum.

pub mod quantize;

use super::blocks::BlockQ16;
use super::kquant::scale_min_k4;
use half::f16;

/// One super-block.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums.
    pub scales: [u8; 12],
    /// Quants.
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// Quant `l` (0..32) of sub-block `i`.
fn q4(b: &BlockQ4K, i: usize, l: usize) -> u8 {
    let byte = b.qs[32 * (i / 2) + l];
    if i.is_multiple_of(2) {
        byte & 0x0F
    } else {
        byte >> 4
    }
}

/// Portable reference dot product.
fn dot_scalar(w: &[BlockQ4K], x: &[BlockQ16]) -> f32 {
    let mut sum = 0f32;
    for (b, xs) in w.iter().zip(x.chunks_exact(8)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (i, a) in xs.iter().enumerate() {
            let (sc, m) = scale_min_k4(i, &b.scales);
            let isum: i32 = (0..32).map(|l| q4(b, i, l) as i32 * a.qs[l] as i32).sum();
            sum += d * sc as f32 * a.d * isum as f32 - dmin * m as f32 * a.s;
        }
    }
    sum
}

/// Integer dot products of sub-blocks 2t and 2t+1 with their activations, as floats.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pair_avx2(
    b: &BlockQ4K,
    t: usize,
    a0: &BlockQ16,
    a1: &BlockQ16,
) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
    use std::arch::x86_64::*;
    let low = _mm256_set1_epi8(0x0F);
    let q = _mm256_loadu_si256(b.qs.as_ptr().add(32 * t) as *const __m256i);
    let lo = _mm256_and_si256(q, low);
    let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
    let ints = |v: __m256i, a: &BlockQ16| {
        let q0 = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(v));
        let q1 = _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(v));
        let y0 = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        let y1 = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
        // 15 × 32767 × 32 fits i32.
        _mm256_cvtepi32_ps(_mm256_add_epi32(
            _mm256_madd_epi16(q0, y0),
            _mm256_madd_epi16(q1, y1),
        ))
    };
    (ints(lo, a0), ints(hi, a1))
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[BlockQ4K], x: &[BlockQ16]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for (b, xs) in w.iter().zip(x.chunks_exact(8)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for t in 0..4 {
            let (a0, a1) = (&xs[2 * t], &xs[2 * t + 1]);
            let (p0, p1) = pair_avx2(b, t, a0, a1);
            let (sc0, m0) = scale_min_k4(2 * t, &b.scales);
            let (sc1, m1) = scale_min_k4(2 * t + 1, &b.scales);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc0 as f32 * a0.d), p0, acc);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc1 as f32 * a1.d), p1, acc);
            mins += dmin * (m0 as f32 * a0.s + m1 as f32 * a1.s);
        }
    }
    super::blocks::hsum_avx(acc) - mins
}

/// Four activation rows: each sub-block is unpacked once.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(w: &[BlockQ4K], x: [&[BlockQ16]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut mins = [0f32; 4];
    for (bi, b) in w.iter().enumerate() {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for t in 0..4 {
            let q = _mm256_loadu_si256(b.qs.as_ptr().add(32 * t) as *const __m256i);
            let lo = _mm256_and_si256(q, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
            let (lo0, lo1) = (
                _mm256_cvtepu8_epi16(_mm256_castsi256_si128(lo)),
                _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(lo)),
            );
            let (hi0, hi1) = (
                _mm256_cvtepu8_epi16(_mm256_castsi256_si128(hi)),
                _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(hi)),
            );
            let (sc0, m0) = scale_min_k4(2 * t, &b.scales);
            let (sc1, m1) = scale_min_k4(2 * t + 1, &b.scales);
            for r in 0..4 {
                let (a0, a1) = (&x[r][bi * 8 + 2 * t], &x[r][bi * 8 + 2 * t + 1]);
                let y = |a: &BlockQ16, o: usize| {
                    _mm256_loadu_si256(a.qs.as_ptr().add(o) as *const __m256i)
                };
                let p0 = _mm256_add_epi32(
                    _mm256_madd_epi16(lo0, y(a0, 0)),
                    _mm256_madd_epi16(lo1, y(a0, 16)),
                );
                let p1 = _mm256_add_epi32(
                    _mm256_madd_epi16(hi0, y(a1, 0)),
                    _mm256_madd_epi16(hi1, y(a1, 16)),
                );
                acc[r] = _mm256_fmadd_ps(
                    _mm256_set1_ps(d * sc0 as f32 * a0.d),
                    _mm256_cvtepi32_ps(p0),
                    acc[r],
                );
                acc[r] = _mm256_fmadd_ps(
                    _mm256_set1_ps(d * sc1 as f32 * a1.d),
                    _mm256_cvtepi32_ps(p1),
                    acc[r],
                );
                mins[r] += dmin * (m0 as f32 * a0.s + m1 as f32 * a1.s);
            }
        }
    }
    std::array::from_fn(|r| super::blocks::hsum_avx(acc[r]) - mins[r])
}

super::blocks::block_format!(BlockQ4K, Q4K, 256);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::blocks::testing::{check_format, lcg};

    /// llama.cpp's `dequantize_row_q4_K`, written from its definition.
    fn dequant(b: &BlockQ4K) -> Vec<f32> {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        let mut out = Vec::with_capacity(256);
        for j in (0..256).step_by(64) {
            let is = j / 32;
            let (sc1, m1) = scale_min_k4(is, &b.scales);
            let (sc2, m2) = scale_min_k4(is + 1, &b.scales);
            let q = &b.qs[j / 2..j / 2 + 32];
            out.extend(
                q.iter()
                    .map(|&v| d * sc1 as f32 * (v & 0xF) as f32 - dmin * m1 as f32),
            );
            out.extend(
                q.iter()
                    .map(|&v| d * sc2 as f32 * (v >> 4) as f32 - dmin * m2 as f32),
            );
        }
        out
    }

    #[test]
    fn kernels_match_the_layout_and_each_other() {
        let tame = |b: &mut BlockQ4K, seed: &mut u64| {
            b.d = f16::from_f32(lcg(seed) * 0.01);
            b.dmin = f16::from_f32(lcg(seed) * 0.01);
        };
        check_format(Some(candle_core::quantized::GgmlDType::Q4K), tame, dequant);
    }
}

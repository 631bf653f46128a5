//! Q8_0 (llama.cpp `block_q8_0`): 32 weights as i8 with `w = d·q`.

use super::blocks::BlockQ16;
use half::f16;

/// One block: scale and 32 signed quants.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quants.
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// Portable reference dot product.
fn dot_scalar(w: &[BlockQ8_0], x: &[BlockQ16]) -> f32 {
    w.iter()
        .zip(x)
        .map(|(b, a)| {
            let isum: i32 =
                b.qs.iter()
                    .zip(&a.qs)
                    .map(|(&p, &q)| p as i32 * q as i32)
                    .sum();
            b.d.to_f32() * a.d * isum as f32
        })
        .sum()
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[BlockQ8_0], x: &[BlockQ16]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    for (b, a) in w.iter().zip(x) {
        let q0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.qs.as_ptr() as *const __m128i));
        let q1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.qs.as_ptr().add(16) as *const __m128i));
        let y0 = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        let y1 = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
        // 128 × 32767 × 32 fits i32.
        let p = _mm256_add_epi32(_mm256_madd_epi16(q0, y0), _mm256_madd_epi16(q1, y1));
        let scale = _mm256_set1_ps(b.d.to_f32() * a.d);
        acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc);
    }
    super::blocks::hsum_avx(acc)
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(w: &[BlockQ8_0], x: [&[BlockQ16]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;

    let mut acc = [_mm256_setzero_ps(); 4];
    for (i, b) in w.iter().enumerate() {
        let q0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.qs.as_ptr() as *const __m128i));
        let q1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.qs.as_ptr().add(16) as *const __m128i));
        let d = b.d.to_f32();
        for r in 0..4 {
            let a = &x[r][i];
            let y0 = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
            let y1 = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
            let p = _mm256_add_epi32(_mm256_madd_epi16(q0, y0), _mm256_madd_epi16(q1, y1));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(p), acc[r]);
        }
    }
    std::array::from_fn(|r| super::blocks::hsum_avx(acc[r]))
}

super::blocks::block_format!(BlockQ8_0, Q8_0, 32);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::blocks::testing::{check_format, lcg};

    #[test]
    fn kernels_match_the_layout_and_each_other() {
        let deq =
            |b: &BlockQ8_0| -> Vec<f32> { b.qs.iter().map(|&q| b.d.to_f32() * q as f32).collect() };
        let tame = |b: &mut BlockQ8_0, seed: &mut u64| {
            b.d = f16::from_f32(lcg(seed) * 0.01);
            // The extreme value must not overflow the pair sums.
            b.qs[0] = -128;
        };
        check_format(Some(candle_core::quantized::GgmlDType::Q8_0), tame, deq);
    }
}

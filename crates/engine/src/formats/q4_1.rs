//! Q4_1 (llama.cpp `block_q4_1`): 32 weights as 4-bit q with `w = d·q + m`.

use super::blocks::BlockQ16;
use half::f16;

/// One block: scale, minimum, 16 bytes of nibbles (low nibble = element j,
/// high nibble = element j + 16).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Packed nibbles.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// Portable reference dot product of one weight row with one quantized activation row.
fn dot_scalar(w: &[BlockQ4_1], x: &[BlockQ16]) -> f32 {
    let mut sum = 0f32;
    for (b, a) in w.iter().zip(x) {
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (b.qs[j] & 0x0F) as i32 * a.qs[j] as i32;
            isum += (b.qs[j] >> 4) as i32 * a.qs[j + 16] as i32;
        }
        sum += b.d.to_f32() * a.d * isum as f32 + b.m.to_f32() * a.s;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[BlockQ4_1], x: &[BlockQ16]) -> f32 {
    use std::arch::x86_64::*;
    let low = _mm_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for (b, a) in w.iter().zip(x) {
        let packed = _mm_loadu_si128(b.qs.as_ptr() as *const __m128i);
        let q0 = _mm256_cvtepu8_epi16(_mm_and_si128(packed, low)); // elements 0..16
        let q1 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), low)); // 16..32
        let y0 = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        let y1 = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
        // 15 × 32767 × 32 fits i32.
        let p = _mm256_add_epi32(_mm256_madd_epi16(q0, y0), _mm256_madd_epi16(q1, y1));
        let scale = _mm256_set1_ps(b.d.to_f32() * a.d);
        acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc);
        mins += b.m.to_f32() * a.s;
    }
    super::blocks::hsum_avx(acc) + mins
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(w: &[BlockQ4_1], x: [&[BlockQ16]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let low = _mm_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut extra = [0f32; 4];
    for (i, b) in w.iter().enumerate() {
        let packed = _mm_loadu_si128(b.qs.as_ptr() as *const __m128i);
        let q0 = _mm256_cvtepu8_epi16(_mm_and_si128(packed, low));
        let q1 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), low));
        let (d, mn) = (b.d.to_f32(), b.m.to_f32());
        for r in 0..4 {
            let a = &x[r][i];
            let y0 = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
            let y1 = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
            let p = _mm256_add_epi32(_mm256_madd_epi16(q0, y0), _mm256_madd_epi16(q1, y1));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(p), acc[r]);
            extra[r] += mn * a.s;
        }
    }
    std::array::from_fn(|r| super::blocks::hsum_avx(acc[r]) + extra[r])
}

super::blocks::block_format!(BlockQ4_1, Q4_1, 32);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::blocks::testing::{check_format, lcg};

    #[test]
    fn kernels_match_the_layout_and_each_other() {
        let deq = |b: &BlockQ4_1| -> Vec<f32> {
            (0..32)
                .map(|j| {
                    let q = if j < 16 {
                        b.qs[j] & 0x0F
                    } else {
                        b.qs[j - 16] >> 4
                    };
                    b.d.to_f32() * q as f32 + b.m.to_f32()
                })
                .collect()
        };
        let tame = |b: &mut BlockQ4_1, seed: &mut u64| {
            b.d = f16::from_f32(lcg(seed) * 0.1);
            b.m = f16::from_f32(lcg(seed) * 0.5);
        };
        check_format(Some(candle_core::quantized::GgmlDType::Q4_1), tame, deq);
    }
}

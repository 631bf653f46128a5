//! Q5_0 (llama.cpp `block_q5_0`): 32 weights as 5-bit q with `w = d·(q − 16)`;
//! low 4 bits in nibbles (element j low, j + 16 high), the fifth bit of element i in
//! bit i of `qh`. Gemma 3 270M stores most of its matrices this way (rows of 640 are
//! not a multiple of 256, so k-quants fall back to it).

use super::blocks::BlockQ16;
use half::f16;

/// One block.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits, little-endian u32.
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// Unsigned 5-bit value of element `i` (0..32).
fn q5(b: &BlockQ5_0, i: usize) -> u8 {
    let qh = u32::from_le_bytes(b.qh);
    let low = if i < 16 {
        b.qs[i] & 0x0F
    } else {
        b.qs[i - 16] >> 4
    };
    low | (((qh >> i) & 1) as u8) << 4
}

/// Portable reference dot product. The −16 offset is applied with the exact sum of
/// the activations, so it adds no rounding of its own.
fn dot_scalar(w: &[BlockQ5_0], x: &[BlockQ16]) -> f32 {
    w.iter()
        .zip(x)
        .map(|(b, a)| {
            let isum: i32 = (0..32).map(|i| q5(b, i) as i32 * a.qs[i] as i32).sum();
            b.d.to_f32() * (a.d * isum as f32 - 16.0 * a.s)
        })
        .sum()
}

/// The block's 32 unsigned 5-bit quants as two vectors of 16 i16.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn unpack(b: &BlockQ5_0) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256i) {
    use std::arch::x86_64::*;
    let low = _mm256_set1_epi8(0x0F);
    // Byte i of the spread word holds byte i/8 of qh; OR-ing all bits but bit i%8
    // and comparing with all-ones tests that bit.
    let spread = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    let packed = _mm_loadu_si128(b.qs.as_ptr() as *const __m128i);
    let nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low);
    let bits = _mm256_shuffle_epi8(_mm256_set1_epi32(i32::from_le_bytes(b.qh)), spread);
    let set = _mm256_cmpeq_epi8(_mm256_or_si256(bits, others), _mm256_set1_epi64x(-1));
    let q = _mm256_or_si256(nib, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
    (
        _mm256_cvtepu8_epi16(_mm256_castsi256_si128(q)),
        _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(q)),
    )
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[BlockQ5_0], x: &[BlockQ16]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    let mut offset = 0f32;
    for (b, a) in w.iter().zip(x) {
        let (q0, q1) = unpack(b);
        let y0 = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        let y1 = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
        // 31 × 32767 × 32 fits i32.
        let p = _mm256_add_epi32(_mm256_madd_epi16(q0, y0), _mm256_madd_epi16(q1, y1));
        let d = b.d.to_f32();
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(p), acc);
        offset += d * a.s;
    }
    super::blocks::hsum_avx(acc) - 16.0 * offset
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(w: &[BlockQ5_0], x: [&[BlockQ16]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut extra = [0f32; 4];
    for (i, b) in w.iter().enumerate() {
        let (q0, q1) = unpack(b);
        let d = b.d.to_f32();
        for r in 0..4 {
            let a = &x[r][i];
            let y0 = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
            let y1 = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
            let p = _mm256_add_epi32(_mm256_madd_epi16(q0, y0), _mm256_madd_epi16(q1, y1));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(p), acc[r]);
            extra[r] += d * a.s;
        }
    }
    std::array::from_fn(|r| super::blocks::hsum_avx(acc[r]) - 16.0 * extra[r])
}

super::blocks::block_format!(BlockQ5_0, Q5_0, 32);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::blocks::testing::{check_format, lcg};

    #[test]
    fn kernels_match_the_layout_and_each_other() {
        let deq = |b: &BlockQ5_0| -> Vec<f32> {
            (0..32)
                .map(|i| b.d.to_f32() * (q5(b, i) as f32 - 16.0))
                .collect()
        };
        let tame = |b: &mut BlockQ5_0, seed: &mut u64| b.d = f16::from_f32(lcg(seed) * 0.05);
        check_format(Some(candle_core::quantized::GgmlDType::Q5_0), tame, deq);
    }
}

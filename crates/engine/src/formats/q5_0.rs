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

#[cfg(target_arch = "x86_64")]
impl super::blocks::Block32 for BlockQ5_0 {
    const OFFSET: bool = true;
    const OFFSET_FACTOR: f32 = -16.0;
    const ZERO_POINT: i16 = 16;
    /// The 32 unsigned 5-bit quants (the kernels subtract 16 through the offset).
    #[inline(always)]
    unsafe fn quants(&self) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256i) {
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
        let packed = _mm_loadu_si128(self.qs.as_ptr() as *const __m128i);
        let nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low);
        let bits = _mm256_shuffle_epi8(_mm256_set1_epi32(i32::from_le_bytes(self.qh)), spread);
        let set = _mm256_cmpeq_epi8(_mm256_or_si256(bits, others), _mm256_set1_epi64x(-1));
        let q = _mm256_or_si256(nib, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
        (
            _mm256_cvtepu8_epi16(_mm256_castsi256_si128(q)),
            _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(q)),
        )
    }
    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
    /// d, times −16 once at the end: a −16·d per block costs a register, and the
    /// spilled accumulators made prefill 5 % slower (Gemma 3 270M, measured).
    #[inline(always)]
    fn offset(&self) -> f16 {
        self.d
    }
}

super::blocks::block_format!(BlockQ5_0, Q5_0, 32, Block32);

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
        #[cfg(target_arch = "x86_64")]
        crate::formats::wide::testing::check_pairs(tame);
    }
}

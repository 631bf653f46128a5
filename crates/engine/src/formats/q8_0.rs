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
impl super::blocks::Block32 for BlockQ8_0 {
    const OFFSET: bool = false;
    #[inline(always)]
    unsafe fn quants(&self) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256i) {
        use std::arch::x86_64::*;
        let p = self.qs.as_ptr() as *const __m128i;
        (
            _mm256_cvtepi8_epi16(_mm_loadu_si128(p)),
            _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(1))),
        )
    }
    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
    #[inline(always)]
    fn offset(&self) -> f16 {
        f16::ZERO
    }
}

super::blocks::block_format!(BlockQ8_0, Q8_0, 32, Block32);

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

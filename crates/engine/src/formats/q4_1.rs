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
impl super::blocks::Block32 for BlockQ4_1 {
    const OFFSET: bool = true;
    #[inline(always)]
    unsafe fn quants(&self) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256i) {
        super::blocks::nibbles_avx2(&self.qs)
    }
    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
    #[inline(always)]
    fn offset(&self) -> f16 {
        self.m
    }
}

super::blocks::block_format!(BlockQ4_1, Q4_1, 32, Block32);

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
        #[cfg(target_arch = "x86_64")]
        crate::formats::wide::testing::check_pairs(tame);
    }
}

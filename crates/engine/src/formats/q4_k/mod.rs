//! Q4_K (llama.cpp `block_q4_K`): super-blocks of 256 weights in 8 sub-blocks of 32,
//! `w = d·scᵢ·q − dmin·mᵢ` with 6-bit sub-block scales and minimums packed in 12
//! bytes. The 32 bytes of quants at `32·(i/2)` hold sub-block i in their low (i
//! even) or high (i odd) nibbles. Sub-blocks line up with our 32-value activation
//! blocks, so each minimum meets the exact activation sum.

pub mod quantize;

use super::blocks::BlockQ16K;
use super::kquant::{scale_min_k4, scales_mins_k4};
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
fn dot_scalar(w: &[BlockQ4K], x: &[BlockQ16K]) -> f32 {
    let mut sum = 0f32;
    for (b, a) in w.iter().zip(x) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for i in 0..8 {
            let (sc, m) = scale_min_k4(i, &b.scales);
            let isum: i32 = (0..32).map(|l| q4(b, i, l) as i32 * a.q(32 * i + l)).sum();
            sum += d * sc as f32 * a.d[i] * isum as f32 - dmin * m as f32 * a.s[i];
        }
    }
    sum
}

/// The super-block's eight scales (d·scⱼ) and minimums (dmin·mⱼ) as vectors.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn weight_scales(b: &BlockQ4K) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
    use std::arch::x86_64::*;
    let (sc, m) = scales_mins_k4(&b.scales);
    let f = |v: [u8; 8]| {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
            v.as_ptr() as *const __m128i
        )))
    };
    (
        _mm256_mul_ps(super::blocks::splat_f16(b.d), f(sc)),
        _mm256_mul_ps(super::blocks::splat_f16(b.dmin), f(m)),
    )
}

/// One super-block against one activation block with AVX2: each sub-block's byte
/// products as 8 lanes, scaled by d·scⱼ·a.dⱼ (picked from one vector of 8); the
/// minimums meet the exact activation sums in `mins`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn superblock_avx2(
    q: &[std::arch::x86_64::__m256i; 8],
    (d, m): (std::arch::x86_64::__m256, std::arch::x86_64::__m256),
    a: &BlockQ16K,
    acc: &mut std::arch::x86_64::__m256,
    mins: &mut std::arch::x86_64::__m256,
) {
    use std::arch::x86_64::*;
    let s = _mm256_mul_ps(d, _mm256_loadu_ps(a.d.as_ptr()));
    for (j, &w) in q.iter().enumerate() {
        let p =
            super::blocks::bytes_dot_avx2(w, a.lo.as_ptr().add(32 * j), a.hi.as_ptr().add(32 * j));
        let sj = _mm256_permutevar8x32_ps(s, _mm256_set1_epi32(j as i32));
        *acc = _mm256_fmadd_ps(sj, _mm256_cvtepi32_ps(p), *acc);
    }
    *mins = _mm256_fmadd_ps(m, _mm256_loadu_ps(a.s.as_ptr()), *mins);
}

/// The eight sub-blocks' quants as 32 bytes each (sub-block 2t: low nibbles of
/// `qs[32t..]`, 2t+1: high nibbles).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn unpack_avx2(b: &BlockQ4K) -> [std::arch::x86_64::__m256i; 8] {
    use std::arch::x86_64::*;
    let low = _mm256_set1_epi8(0x0F);
    let mut q = [_mm256_setzero_si256(); 8];
    for t in 0..4 {
        let v = _mm256_loadu_si256(b.qs.as_ptr().add(32 * t) as *const __m256i);
        q[2 * t] = _mm256_and_si256(v, low);
        q[2 * t + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
    }
    q
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[BlockQ4K], x: &[BlockQ16K]) -> f32 {
    use std::arch::x86_64::*;
    let (mut acc, mut mins) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (b, a) in w.iter().zip(x) {
        superblock_avx2(&unpack_avx2(b), weight_scales(b), a, &mut acc, &mut mins);
    }
    super::blocks::hsum_avx(_mm256_sub_ps(acc, mins))
}

/// Four activation rows: each super-block is unpacked once.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(w: &[BlockQ4K], x: [&[BlockQ16K]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut mins = [_mm256_setzero_ps(); 4];
    for (i, b) in w.iter().enumerate() {
        let (q, scales) = (unpack_avx2(b), weight_scales(b));
        for r in 0..4 {
            superblock_avx2(&q, scales, &x[r][i], &mut acc[r], &mut mins[r]);
        }
    }
    std::array::from_fn(|r| super::blocks::hsum_avx(_mm256_sub_ps(acc[r], mins[r])))
}

/// The super-block's quants as four vectors of 64 bytes in activation order: vector
/// t holds sub-block 2t (the low nibbles of `qs[32t..]`) then 2t+1 (their high
/// nibbles), from one 32-byte load shifted in its upper half.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn unpack_avx512(b: &BlockQ4K) -> [std::arch::x86_64::__m512i; 4] {
    use std::arch::x86_64::*;
    let low = _mm512_set1_epi8(0x0F);
    std::array::from_fn(|t| {
        let v = _mm512_broadcast_i64x4(_mm256_loadu_si256(
            b.qs.as_ptr().add(32 * t) as *const __m256i
        ));
        _mm512_and_si512(_mm512_mask_srli_epi16::<4>(v, 0xFFFF_0000, v), low)
    })
}

/// One super-block against one activation block with AVX-512 VNNI: per vector of
/// two sub-blocks, the byte products as 16 lanes, scaled lane by lane (lanes 0-7 by
/// d·sc₂ₜ·a.d₂ₜ, 8-15 by the next), so nothing is reduced until the row ends.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn superblock_avx512(
    q: &[std::arch::x86_64::__m512i; 4],
    (d, m): (std::arch::x86_64::__m256, std::arch::x86_64::__m256),
    a: &BlockQ16K,
    acc: &mut std::arch::x86_64::__m512,
    mins: &mut std::arch::x86_64::__m256,
) {
    use std::arch::x86_64::*;
    let s = _mm512_castps256_ps512(_mm256_mul_ps(d, _mm256_loadu_ps(a.d.as_ptr())));
    let halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    for (t, &w) in q.iter().enumerate() {
        let p = super::blocks::bytes_dot_avx512(
            w,
            a.lo.as_ptr().add(64 * t),
            a.hi.as_ptr().add(64 * t),
        );
        let idx = _mm512_add_epi32(halves, _mm512_set1_epi32(2 * t as i32));
        *acc = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx, s), _mm512_cvtepi32_ps(p), *acc);
    }
    *mins = _mm256_fmadd_ps(m, _mm256_loadu_ps(a.s.as_ptr()), *mins);
}

/// How far ahead (bytes, about 7 super-blocks) the decode kernel asks for weights:
/// rows are only 10-40 super-blocks long at 4B-27B, so the hardware prefetcher
/// restarts often. Measured at 4B, one thread: 9.2 -> 9.6 tok/s (two threads are
/// bandwidth-bound and within noise either way).
pub(super) const PREFETCH: usize = 1024;
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
unsafe fn dot_avx512(w: &[BlockQ4K], x: &[BlockQ16K]) -> f32 {
    use std::arch::x86_64::*;
    let (mut acc, mut mins) = (_mm512_setzero_ps(), _mm256_setzero_ps());
    for (b, a) in w.iter().zip(x) {
        let p = (b as *const BlockQ4K as *const i8).wrapping_add(PREFETCH);
        _mm_prefetch::<_MM_HINT_T0>(p);
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(128));
        superblock_avx512(&unpack_avx512(b), weight_scales(b), a, &mut acc, &mut mins);
    }
    _mm512_reduce_add_ps(acc) - super::blocks::hsum_avx(mins)
}

/// [`dot_avx512`] for four activation rows (each super-block unpacked once).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
unsafe fn dot4_avx512(w: &[BlockQ4K], x: [&[BlockQ16K]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut mins = [_mm256_setzero_ps(); 4];
    for (i, b) in w.iter().enumerate() {
        let (q, scales) = (unpack_avx512(b), weight_scales(b));
        for r in 0..4 {
            superblock_avx512(&q, scales, &x[r][i], &mut acc[r], &mut mins[r]);
        }
    }
    std::array::from_fn(|r| _mm512_reduce_add_ps(acc[r]) - super::blocks::hsum_avx(mins[r]))
}

super::blocks::block_format!(BlockQ4K, Q4K, 256, KQuant);

impl super::wide::WideFormat for BlockQ4K {
    const MINS: bool = true;
    fn widen(&self) -> super::wide::Wide {
        let (sc, m) = scales_mins_k4(&self.scales);
        let dmin = self.dmin.to_f32();
        super::wide::Wide {
            q: std::array::from_fn(|i| q4(self, i / 32, i % 32) as i16 * sc[i / 32] as i16),
            d: self.d.to_f32(),
            mins: std::array::from_fn(|j| dmin * m[j] as f32),
        }
    }

    /// Sub-block 2t from the low nibbles of `qs[32t..]`, 2t+1 from the high ones,
    /// each widened to 32 i16 and multiplied by its 6-bit scale (at most 945).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn widen_avx512(&self) -> super::wide::WideRegs {
        use std::arch::x86_64::*;
        let (sc, m) = scales_mins_k4(&self.scales);
        let low = _mm256_set1_epi8(0x0F);
        let mut q = [_mm512_setzero_si512(); 8];
        for t in 0..4 {
            let v = _mm256_loadu_si256(self.qs.as_ptr().add(32 * t) as *const __m256i);
            let (l, h) = (
                _mm256_and_si256(v, low),
                _mm256_and_si256(_mm256_srli_epi16::<4>(v), low),
            );
            q[2 * t] =
                _mm512_mullo_epi16(_mm512_cvtepu8_epi16(l), _mm512_set1_epi16(sc[2 * t] as i16));
            q[2 * t + 1] = _mm512_mullo_epi16(
                _mm512_cvtepu8_epi16(h),
                _mm512_set1_epi16(sc[2 * t + 1] as i16),
            );
        }
        let mins = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
            m.as_ptr() as *const __m128i
        )));
        super::wide::WideRegs {
            q,
            d: _mm512_cvtph_ps(_mm256_set1_epi16(self.d.to_bits() as i16)),
            mins: _mm256_mul_ps(super::blocks::splat_f16(self.dmin), mins),
        }
    }
}

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
        crate::formats::wide::testing::check_wide(tame, dequant);
    }
}

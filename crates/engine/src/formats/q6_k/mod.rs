//! Q6_K (llama.cpp `block_q6_K`): super-blocks of 256 weights, `w = d·scⱼ·(q − 32)`
//! with 6-bit q (low 4 bits in `ql`, high 2 in `qh`) and a signed 8-bit scale per 16
//! weights. In each half of 128, group g (32 weights) takes the low (g < 2) or high
//! nibbles of `ql[32·(g % 2) ..]` and bits 2g..2g+1 of `qh[..32]`.

pub mod quantize;

use super::blocks::BlockQ16K;
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
fn dot_scalar(w: &[BlockQ6K], x: &[BlockQ16K]) -> f32 {
    let mut sum = 0f32;
    for (b, a) in w.iter().zip(x) {
        let d = b.d.to_f32();
        for g in 0..8 {
            for half in [0, 16] {
                let isum: i32 = (half..half + 16)
                    .map(|l| q6(b, g, l) * a.q(32 * g + l))
                    .sum();
                sum += d * scale(b, g, half) * a.d[g] * isum as f32;
            }
        }
    }
    sum
}

/// The super-block's 16 group scales times the activations' block scales,
/// d·scᵢ·a.d_(i/2), as two vectors of 8 (groups 0-7, 8-15).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn group_scales_avx2(b: &BlockQ6K, a: &BlockQ16K) -> [std::arch::x86_64::__m256; 2] {
    use std::arch::x86_64::*;
    let d = super::blocks::splat_f16(b.d);
    let ad = _mm256_loadu_ps(a.d.as_ptr());
    std::array::from_fn(|h| {
        let sc = _mm_loadl_epi64(b.scales.as_ptr().add(8 * h) as *const __m128i);
        let sc = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc));
        let i = 4 * h as i32;
        let pairs = _mm256_setr_epi32(i, i, i + 1, i + 1, i + 2, i + 2, i + 3, i + 3);
        _mm256_mul_ps(_mm256_mul_ps(d, sc), _mm256_permutevar8x32_ps(ad, pairs))
    })
}

/// The unsigned quants (0..=63) of the four 32-groups of half `half` of a
/// super-block, as 32 bytes each (the −32 is applied through the activation sums).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn groups_half(b: &BlockQ6K, half: usize) -> [std::arch::x86_64::__m256i; 4] {
    use std::arch::x86_64::*;
    let low = _mm256_set1_epi8(0x0F);
    let three = _mm256_set1_epi8(3);
    let ql0 = _mm256_loadu_si256(b.ql.as_ptr().add(64 * half) as *const __m256i);
    let ql1 = _mm256_loadu_si256(b.ql.as_ptr().add(64 * half + 32) as *const __m256i);
    let qh = _mm256_loadu_si256(b.qh.as_ptr().add(32 * half) as *const __m256i);
    let high = |h: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(h, three));
    [
        _mm256_or_si256(_mm256_and_si256(ql0, low), high(qh)),
        _mm256_or_si256(_mm256_and_si256(ql1, low), high(_mm256_srli_epi16::<2>(qh))),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low),
            high(_mm256_srli_epi16::<4>(qh)),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low),
            high(_mm256_srli_epi16::<6>(qh)),
        ),
    ]
}

/// One super-block against one activation block with AVX2: per 32-group the byte
/// products as 8 lanes (lanes 0-3 the first 16 weights, 4-7 the next), each half
/// scaled by its group's scale; `offset` gathers Σ scale·(sum of the group's
/// activation quants), which times 32 is subtracted at the end.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn superblock_avx2(
    q: &[std::arch::x86_64::__m256i; 8],
    b: &BlockQ6K,
    a: &BlockQ16K,
    acc: &mut std::arch::x86_64::__m256,
    offset: &mut std::arch::x86_64::__m256,
) {
    use std::arch::x86_64::*;
    let s = group_scales_avx2(b, a);
    for (g, &w) in q.iter().enumerate() {
        let p =
            super::blocks::bytes_dot_avx2(w, a.lo.as_ptr().add(32 * g), a.hi.as_ptr().add(32 * g));
        let i = 2 * (g % 4) as i32;
        let idx = _mm256_setr_epi32(i, i, i, i, i + 1, i + 1, i + 1, i + 1);
        *acc = _mm256_fmadd_ps(
            _mm256_permutevar8x32_ps(s[g / 4], idx),
            _mm256_cvtepi32_ps(p),
            *acc,
        );
    }
    *offset = _mm256_fmadd_ps(s[0], _mm256_loadu_ps(a.qsum16.as_ptr()), *offset);
    *offset = _mm256_fmadd_ps(s[1], _mm256_loadu_ps(a.qsum16.as_ptr().add(8)), *offset);
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn unpack_avx2(b: &BlockQ6K) -> [std::arch::x86_64::__m256i; 8] {
    let (h0, h1) = (groups_half(b, 0), groups_half(b, 1));
    [h0[0], h0[1], h0[2], h0[3], h1[0], h1[1], h1[2], h1[3]]
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[BlockQ6K], x: &[BlockQ16K]) -> f32 {
    use std::arch::x86_64::*;
    let (mut acc, mut offset) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (b, a) in w.iter().zip(x) {
        superblock_avx2(&unpack_avx2(b), b, a, &mut acc, &mut offset);
    }
    super::blocks::hsum_avx(_mm256_fnmadd_ps(_mm256_set1_ps(32.0), offset, acc))
}

/// Four activation rows: each super-block is unpacked once.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(w: &[BlockQ6K], x: [&[BlockQ16K]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut offset = [_mm256_setzero_ps(); 4];
    for (i, b) in w.iter().enumerate() {
        let q = unpack_avx2(b);
        for r in 0..4 {
            superblock_avx2(&q, b, &x[r][i], &mut acc[r], &mut offset[r]);
        }
    }
    std::array::from_fn(|r| {
        super::blocks::hsum_avx(_mm256_fnmadd_ps(_mm256_set1_ps(32.0), offset[r], acc[r]))
    })
}

/// The super-block's unsigned quants as four vectors of 64 bytes in activation order
/// (vector c holds weights 64c..64c+64): per half, the low nibbles of `ql[64h..]`
/// with `qh`'s bits 0-1 (first 32) and 2-3 (next 32), then the high nibbles with
/// bits 4-5 and 6-7, the `qh` bytes loaded once into both halves and shifted by
/// lane.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn unpack_avx512(b: &BlockQ6K) -> [std::arch::x86_64::__m512i; 4] {
    use std::arch::x86_64::*;
    let low = _mm512_set1_epi8(0x0F);
    let bits45 = _mm512_set1_epi8(0x30);
    // Shift counts per 16-bit lane: lower 256 bits, then upper.
    let up = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(2));
    let down = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
    let mut q = [_mm512_setzero_si512(); 4];
    for h in 0..2 {
        let ql = _mm512_loadu_si512(b.ql.as_ptr().add(64 * h) as *const _);
        let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(
            b.qh.as_ptr().add(32 * h) as *const __m256i
        ));
        // 16-bit shifts move bits between a lane's two bytes; the masks keep only
        // each byte's own bits.
        let high_a = _mm512_and_si512(_mm512_sllv_epi16(qh, up), bits45);
        let high_b = _mm512_and_si512(_mm512_srlv_epi16(qh, down), bits45);
        q[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, low), high_a);
        q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(ql), low), high_b);
    }
    q
}

/// The 16 group scales times the activations' block scales, d·scᵢ·a.d_(i/2).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn group_scales_avx512(
    sc: std::arch::x86_64::__m512,
    a: &BlockQ16K,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let pairs = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    let ad = _mm512_castps256_ps512(_mm256_loadu_ps(a.d.as_ptr()));
    _mm512_mul_ps(sc, _mm512_permutexvar_ps(pairs, ad))
}

/// d·scᵢ for the 16 groups.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn weight_scales_avx512(b: &BlockQ6K) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.scales.as_ptr() as *const __m128i));
    _mm512_mul_ps(
        _mm512_cvtph_ps(_mm256_set1_epi16(b.d.to_bits() as i16)),
        _mm512_cvtepi32_ps(sc),
    )
}

/// One super-block against one activation block with AVX-512 VNNI: per 64 weights
/// the byte products as 16 lanes of 4, each lane scaled by its group's scale
/// (lanes 4i..4i+4 by group 4c+i), nothing reduced until the row ends.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn superblock_avx512(
    q: &[std::arch::x86_64::__m512i; 4],
    sc: std::arch::x86_64::__m512,
    a: &BlockQ16K,
    acc: &mut std::arch::x86_64::__m512,
    offset: &mut std::arch::x86_64::__m512,
) {
    use std::arch::x86_64::*;
    let s = group_scales_avx512(sc, a);
    let quads = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    for (c, &w) in q.iter().enumerate() {
        let p = super::blocks::bytes_dot_avx512(
            w,
            a.lo.as_ptr().add(64 * c),
            a.hi.as_ptr().add(64 * c),
        );
        let idx = _mm512_add_epi32(quads, _mm512_set1_epi32(4 * c as i32));
        *acc = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx, s), _mm512_cvtepi32_ps(p), *acc);
    }
    *offset = _mm512_fmadd_ps(s, _mm512_loadu_ps(a.qsum16.as_ptr()), *offset);
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
unsafe fn dot_avx512(w: &[BlockQ6K], x: &[BlockQ16K]) -> f32 {
    use std::arch::x86_64::*;
    let (mut acc, mut offset) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for (b, a) in w.iter().zip(x) {
        // As Q4_K's decode kernel: weights about 5 super-blocks ahead.
        let p = (b as *const BlockQ6K as *const i8).wrapping_add(super::q4_k::PREFETCH);
        for line in 0..4 {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * line));
        }
        superblock_avx512(
            &unpack_avx512(b),
            weight_scales_avx512(b),
            a,
            &mut acc,
            &mut offset,
        );
    }
    _mm512_reduce_add_ps(_mm512_fnmadd_ps(_mm512_set1_ps(32.0), offset, acc))
}

/// [`dot_avx512`] for four activation rows (each super-block unpacked once).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
unsafe fn dot4_avx512(w: &[BlockQ6K], x: [&[BlockQ16K]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut offset = [_mm512_setzero_ps(); 4];
    for (i, b) in w.iter().enumerate() {
        let (q, sc) = (unpack_avx512(b), weight_scales_avx512(b));
        for r in 0..4 {
            superblock_avx512(&q, sc, &x[r][i], &mut acc[r], &mut offset[r]);
        }
    }
    std::array::from_fn(|r| {
        _mm512_reduce_add_ps(_mm512_fnmadd_ps(_mm512_set1_ps(32.0), offset[r], acc[r]))
    })
}

super::blocks::block_format!(BlockQ6K, Q6K, 256, KQuant);

impl super::wide::WideFormat for BlockQ6K {
    const MINS: bool = false;
    fn widen(&self) -> super::wide::Wide {
        super::wide::Wide {
            q: std::array::from_fn(|i| {
                let (g, l) = (i / 32, i % 32);
                (q6(self, g, l) * scale(self, g, l) as i32) as i16
            }),
            d: self.d.to_f32(),
            mins: [0.0; 8],
        }
    }

    /// The byte unpacking of the decode kernel, then per 32 weights: widened,
    /// −32, times the two 16-weight groups' scales (|q| ≤ 32·128).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn widen_avx512(&self) -> super::wide::WideRegs {
        use std::arch::x86_64::*;
        let bytes = unpack_avx512(self);
        // The 16 scales as i16 in lanes 0-15 (the upper lanes are never picked).
        let sc = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128(
            self.scales.as_ptr() as *const __m128i,
        )));
        let thirty_two = _mm512_set1_epi16(32);
        let halves = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(1));
        let mut q = [_mm512_setzero_si512(); 8];
        for j in 0..8 {
            let v = bytes[j / 2];
            let v = if j % 2 == 0 {
                _mm512_castsi512_si256(v)
            } else {
                _mm512_extracti64x4_epi64::<1>(v)
            };
            let idx = _mm512_add_epi16(halves, _mm512_set1_epi16(2 * j as i16));
            q[j] = _mm512_mullo_epi16(
                _mm512_sub_epi16(_mm512_cvtepu8_epi16(v), thirty_two),
                _mm512_permutexvar_epi16(idx, sc),
            );
        }
        super::wide::WideRegs {
            q,
            d: _mm512_cvtph_ps(_mm256_set1_epi16(self.d.to_bits() as i16)),
            mins: _mm256_setzero_ps(),
        }
    }
}

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
        crate::formats::wide::testing::check_wide(tame, dequant);
    }
}

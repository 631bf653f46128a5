//! NF4 (bitsandbytes) matmul on the packed codes. The 16 levels become 16-bit
//! integers (NF4 × 2¹⁴, each within 3e-5 of the table) and activations 16-bit per
//! group of 64 (scale amax / 32767), so a 16-entry table is two byte shuffles and 64
//! weights cost one load, eight shuffles and four multiply-adds per activation row,
//! against permutes and a float FMA per eight weights in the f32 path.
//!
//! Overflow: a multiply-add lane holds 2 products and we add two lanes before
//! converting to f32, so at most 4 × 32767 × 16384 < 2³¹.
//!
//! Rows of whole groups of 64 in blocks of a multiple of 64 take this path (every
//! bitsandbytes default) with AVX2 on x86-64 and NEON on aarch64; others keep
//! [`Nf4Matrix::matmul`].

use super::{for_row_runs, SyncPtr};
use crate::nf4::{Nf4Matrix, NF4};

/// Activation values per scale; also the weights one iteration decodes.
pub const GROUP: usize = 64;
/// NF4 level 1.0 as an integer.
const LEVEL_ONE: f32 = 16384.0;

/// The NF4 table as 16-bit integers.
pub fn levels() -> [i16; 16] {
    std::array::from_fn(|i| (NF4[i] * LEVEL_ONE).round() as i16)
}

/// Where element `e` (0..64) of a group sits in the order the shuffles produce
/// weights: even elements of bytes 0..8 and 16..24, of bytes 8..16 and 24..32, then
/// the odd ones likewise (AVX2 unpacks work within 128-bit lanes).
fn slot(e: usize) -> usize {
    let (byte, odd) = (e / 2, e % 2);
    let half = usize::from(byte % 16 >= 8);
    odd * 32 + half * 16 + byte % 8 + (byte / 16) * 8
}

/// Activation rows quantized for the kernel.
pub struct Acts {
    /// Groups per row.
    pub groups: usize,
    /// One scale per group, `[m, groups]`.
    pub d: Vec<f32>,
    /// Values in [`slot`] order, `[m, k]`.
    pub q: Vec<i16>,
}

impl Acts {
    /// Quantizes `x` `[m, k]` (`k` a multiple of 64).
    pub fn new(x: &[f32], m: usize, k: usize) -> Self {
        let groups = k / GROUP;
        let slots: [usize; GROUP] = std::array::from_fn(slot);
        let mut d = vec![0f32; m * groups];
        let mut q = vec![0i16; m * k];
        for ((xs, qs), dd) in x
            .chunks_exact(GROUP)
            .zip(q.chunks_exact_mut(GROUP))
            .zip(d.iter_mut())
        {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            *dd = amax / 32767.0;
            let id = if *dd > 0.0 { 1.0 / *dd } else { 0.0 };
            for (v, &s) in xs.iter().zip(&slots) {
                qs[s] = (v * id).round() as i16;
            }
        }
        Self { groups, d, q }
    }

    fn row(&self, j: usize) -> (&[i16], &[f32]) {
        let k = self.groups * GROUP;
        (
            &self.q[j * k..(j + 1) * k],
            &self.d[j * self.groups..(j + 1) * self.groups],
        )
    }
}

/// Whether `w` can be multiplied here with `k` input columns.
pub fn supports(w: &Nf4Matrix, k: usize) -> bool {
    w.cols == k && k.is_multiple_of(GROUP) && w.blocksize.is_multiple_of(GROUP) && simd()
}

fn simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    // NEON is part of every aarch64 target.
    #[cfg(target_arch = "aarch64")]
    {
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The SIMD dot products of this target (only called where [`supports`] said yes).
#[inline(always)]
fn dot<const R: usize>(w: &Nf4Matrix, row: usize, q: [&[i16]; R], d: [&[f32]; R]) -> [f32; R] {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `supports` checked the features and the layout.
        unsafe { dot_avx2::<R>(w, row, q, d) }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: as above.
        unsafe { dot_neon::<R>(w, row, q, d) }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        std::array::from_fn(|t| dot_scalar(w, row, q[t], d[t]))
    }
}

/// Portable reference of the kernel's arithmetic for one row (tests).
pub fn dot_scalar(w: &Nf4Matrix, row: usize, q: &[i16], d: &[f32]) -> f32 {
    let lv = levels();
    let mut acc = 0f32;
    for g in 0..w.cols / GROUP {
        let start = row * w.cols + g * GROUP;
        let bytes = &w.packed[start / 2..start / 2 + GROUP / 2];
        let mut s = 0i64;
        for (b, &byte) in bytes.iter().enumerate() {
            s += lv[(byte >> 4) as usize] as i64 * q[g * GROUP + slot(2 * b)] as i64;
            s += lv[(byte & 0xF) as usize] as i64 * q[g * GROUP + slot(2 * b + 1)] as i64;
        }
        acc += s as f32 * (w.scales[start / w.blocksize] / LEVEL_ONE * d[g]);
    }
    acc
}

/// Dot products of weight row `row` with `R` activation rows.
///
/// # Safety
/// Only where AVX2 and FMA were detected, for a matrix [`supports`] accepts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2<const R: usize>(
    w: &Nf4Matrix,
    row: usize,
    q: [&[i16]; R],
    d: [&[f32]; R],
) -> [f32; R] {
    use std::arch::x86_64::*;
    let lv = levels();
    let lo_bytes: [u8; 32] = std::array::from_fn(|i| lv[i % 16] as u16 as u8);
    let hi_bytes: [u8; 32] = std::array::from_fn(|i| (lv[i % 16] as u16 >> 8) as u8);
    let tl = _mm256_loadu_si256(lo_bytes.as_ptr() as *const __m256i);
    let th = _mm256_loadu_si256(hi_bytes.as_ptr() as *const __m256i);
    let mask = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); R];
    let base = row * w.cols;
    for g in 0..w.cols / GROUP {
        let start = base + g * GROUP;
        let wscale = *w.scales.get_unchecked(start / w.blocksize) / LEVEL_ONE;
        let bytes = _mm256_loadu_si256(w.packed.as_ptr().add(start / 2) as *const __m256i);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bytes), mask);
        let lo = _mm256_and_si256(bytes, mask);
        let (hl, hh) = (_mm256_shuffle_epi8(tl, hi), _mm256_shuffle_epi8(th, hi));
        let (ll, lh) = (_mm256_shuffle_epi8(tl, lo), _mm256_shuffle_epi8(th, lo));
        let even = [_mm256_unpacklo_epi8(hl, hh), _mm256_unpackhi_epi8(hl, hh)];
        let odd = [_mm256_unpacklo_epi8(ll, lh), _mm256_unpackhi_epi8(ll, lh)];
        for r in 0..R {
            let a = q[r].as_ptr().add(g * GROUP) as *const __m256i;
            let s_even = _mm256_add_epi32(
                _mm256_madd_epi16(even[0], _mm256_loadu_si256(a)),
                _mm256_madd_epi16(even[1], _mm256_loadu_si256(a.add(1))),
            );
            let s_odd = _mm256_add_epi32(
                _mm256_madd_epi16(odd[0], _mm256_loadu_si256(a.add(2))),
                _mm256_madd_epi16(odd[1], _mm256_loadu_si256(a.add(3))),
            );
            let s = _mm256_add_ps(_mm256_cvtepi32_ps(s_even), _mm256_cvtepi32_ps(s_odd));
            let scale = _mm256_set1_ps(wscale * *d[r].get_unchecked(g));
            acc[r] = _mm256_fmadd_ps(s, scale, acc[r]);
        }
    }
    std::array::from_fn(|r| super::hsum_avx(acc[r]))
}

/// [`dot_avx2`] for aarch64: `vqtbl1q_u8` is the byte shuffle, 16 bytes at a time
/// (half a group, in the same activation order), widening multiply-adds into four
/// accumulators so that each lane again sums at most 4 products.
///
/// # Safety
/// Only for a matrix [`supports`] accepts.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn dot_neon<const R: usize>(
    w: &Nf4Matrix,
    row: usize,
    q: [&[i16]; R],
    d: [&[f32]; R],
) -> [f32; R] {
    use std::arch::aarch64::*;
    let lv = levels();
    let lo_bytes: [u8; 16] = std::array::from_fn(|i| lv[i] as u16 as u8);
    let hi_bytes: [u8; 16] = std::array::from_fn(|i| (lv[i] as u16 >> 8) as u8);
    let (tl, th) = (vld1q_u8(lo_bytes.as_ptr()), vld1q_u8(hi_bytes.as_ptr()));
    let mask = vdupq_n_u8(0x0F);
    let mut acc = [vdupq_n_f32(0.0); R];
    let base = row * w.cols;
    for g in 0..w.cols / GROUP {
        let start = base + g * GROUP;
        let wscale = *w.scales.get_unchecked(start / w.blocksize) / LEVEL_ONE;
        let p = w.packed.as_ptr().add(start / 2);
        // Per half c: even elements of its bytes 0..8 and 8..16, then odd ones.
        let levels_of = |c: usize| -> [int16x8_t; 4] {
            let b = vld1q_u8(p.add(16 * c));
            let (hi, lo) = (vshrq_n_u8::<4>(b), vandq_u8(b, mask));
            let (hl, hh) = (vqtbl1q_u8(tl, hi), vqtbl1q_u8(th, hi));
            let (ll, lh) = (vqtbl1q_u8(tl, lo), vqtbl1q_u8(th, lo));
            [
                vreinterpretq_s16_u8(vzip1q_u8(hl, hh)),
                vreinterpretq_s16_u8(vzip2q_u8(hl, hh)),
                vreinterpretq_s16_u8(vzip1q_u8(ll, lh)),
                vreinterpretq_s16_u8(vzip2q_u8(ll, lh)),
            ]
        };
        let halves = [levels_of(0), levels_of(1)];
        for r in 0..R {
            let a = q[r].as_ptr().add(g * GROUP);
            let mut s = [vdupq_n_s32(0); 4];
            for (c, wv) in halves.iter().enumerate() {
                for v in 0..4 {
                    let av = vld1q_s16(a.add(v * 16 + 8 * c));
                    s[v] = vmlal_s16(s[v], vget_low_s16(wv[v]), vget_low_s16(av));
                    s[v] = vmlal_high_s16(s[v], wv[v], av);
                }
            }
            let f = vaddq_f32(
                vaddq_f32(vcvtq_f32_s32(s[0]), vcvtq_f32_s32(s[1])),
                vaddq_f32(vcvtq_f32_s32(s[2]), vcvtq_f32_s32(s[3])),
            );
            acc[r] = vfmaq_n_f32(acc[r], f, wscale * *d[r].get_unchecked(g));
        }
    }
    std::array::from_fn(|r| vaddvq_f32(acc[r]))
}

/// `y_i[m, rows_i] = x[m, k] · W_iᵀ` for NF4 matrices sharing their input, in one
/// parallel region; `None` where [`supports`] refuses one of them.
pub fn matmul_many(x: &[f32], m: usize, k: usize, mats: &[&Nf4Matrix]) -> Option<Vec<Vec<f32>>> {
    if x.len() != m * k || !mats.iter().all(|w| supports(w, k)) {
        return None;
    }
    let acts = Acts::new(x, m, k);
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|w| vec![0f32; m * w.rows]).collect();
    let ptrs: Vec<SyncPtr<f32>> = outs.iter_mut().map(|o| SyncPtr(o.as_mut_ptr())).collect();
    let ns: Vec<usize> = mats.iter().map(|w| w.rows).collect();
    for_row_runs(&ns, |i, rows| {
        let (w, out, n) = (mats[i], ptrs[i], ns[i]);
        // SAFETY: output (j, r) of matrix i is written by the one item owning row r.
        let put = |j: usize, r: usize, v: f32| unsafe { *out.get().add(j * n + r) = v };
        let mut j = 0;
        // Four activation rows at a time (prefill): each group decoded once for four.
        while j + 4 <= m {
            let rs: [(&[i16], &[f32]); 4] = std::array::from_fn(|t| acts.row(j + t));
            for r in rows.clone() {
                let v = dot::<4>(w, r, rs.map(|t| t.0), rs.map(|t| t.1));
                for (t, v) in v.into_iter().enumerate() {
                    put(j + t, r, v);
                }
            }
            j += 4;
        }
        for jj in j..m {
            let (q, d) = acts.row(jj);
            for r in rows.clone() {
                put(jj, r, dot::<1>(w, r, [q], [d])[0]);
            }
        }
    });
    Some(outs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::lcg;
    use crate::nf4::Nf4;

    #[test]
    fn slots_are_a_permutation() {
        let mut seen = [false; GROUP];
        for e in 0..GROUP {
            assert!(!seen[slot(e)]);
            seen[slot(e)] = true;
        }
    }

    #[test]
    fn levels_are_within_3e5_of_the_table() {
        for (l, t) in levels().iter().zip(NF4) {
            assert!((*l as f32 / LEVEL_ONE - t).abs() <= 0.5 / LEVEL_ONE);
        }
    }

    /// Against f32 on the dequantized weights (bounded by the 16-bit rounding), and
    /// the SIMD path against the portable reference, for one and four rows, several
    /// matrices at once, blocks of 64 and 128 (128 straddling rows of 192).
    #[test]
    fn matmul_matches_dequantized_and_scalar() {
        if !simd() {
            return;
        }
        let mut seed = 5;
        let (k, m) = (192, 6);
        for bs in [64, 128] {
            let mats: Vec<Nf4Matrix> = [37, 8]
                .iter()
                .map(|&n| {
                    let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.3).collect();
                    Nf4Matrix::new(&Nf4::quantize(&w, bs, true), n, k).unwrap()
                })
                .collect();
            let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed) * 3.0).collect();
            let refs: Vec<&Nf4Matrix> = mats.iter().collect();
            let outs = matmul_many(&x, m, k, &refs).unwrap();
            let acts = Acts::new(&x, m, k);
            for (w, y) in mats.iter().zip(&outs) {
                let mut row = vec![0f32; k];
                for r in 0..w.rows {
                    w.dequantize_row(r, &mut row);
                    for j in 0..m {
                        let xj = &x[j * k..(j + 1) * k];
                        let exact: f32 = row.iter().zip(xj).map(|(a, b)| a * b).sum();
                        let scale: f32 = row.iter().zip(xj).map(|(a, b)| (a * b).abs()).sum();
                        let got = y[j * w.rows + r];
                        assert!(
                            (got - exact).abs() <= 1e-4 * scale + 1e-6,
                            "{got} vs {exact}"
                        );
                        let (q, d) = acts.row(j);
                        let reference = dot_scalar(w, r, q, d);
                        assert!(
                            (got - reference).abs() <= 1e-5 * scale,
                            "{got} vs {reference}"
                        );
                    }
                }
            }
        }
    }
}

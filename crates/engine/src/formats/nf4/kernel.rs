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
//! bitsandbytes default): AVX2 on x86-64, NEON on aarch64, the same integer
//! arithmetic in portable code elsewhere. Other layouts decode each weight row to f32
//! (still never the whole matrix) and take f32 dot products.

use super::{Nf4Matrix, NF4};
use crate::formats::parallel::{by_fours, row_runs_into};

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

/// Whether the integer path takes `w` (else the f32 decode does).
fn integer_layout(w: &Nf4Matrix) -> bool {
    w.cols.is_multiple_of(GROUP) && w.blocksize.is_multiple_of(GROUP)
}

/// The 16 levels' low and high bytes, the tables the byte shuffles look up.
fn level_bytes() -> ([u8; 16], [u8; 16]) {
    let lv = levels();
    (
        std::array::from_fn(|i| lv[i] as u16 as u8),
        std::array::from_fn(|i| (lv[i] as u16 >> 8) as u8),
    )
}

/// Dot products of weight row `row` with `R` activation rows, on this CPU's path.
#[inline(always)]
fn dot<const R: usize>(
    w: &Nf4Matrix,
    row: usize,
    q: [&[i16]; R],
    d: [&[f32]; R],
    cpu: crate::cpu::CpuFeatures,
) -> [f32; R] {
    #[cfg(target_arch = "x86_64")]
    if cpu.avx2_fma {
        // SAFETY: AVX2 and FMA were detected; the layout was checked.
        return unsafe { dot_avx2::<R>(w, row, q, d) };
    }
    #[cfg(target_arch = "aarch64")]
    if cpu.neon {
        // SAFETY: NEON is part of the target; the layout was checked.
        return unsafe { dot_neon::<R>(w, row, q, d) };
    }
    let _ = cpu;
    std::array::from_fn(|t| dot_scalar(w, row, q[t], d[t]))
}

/// The kernel's arithmetic for one row in portable code (and the SIMD paths'
/// reference in tests).
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
/// Only where AVX2 and FMA were detected, for a matrix in [`integer_layout`].
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2<const R: usize>(
    w: &Nf4Matrix,
    row: usize,
    q: [&[i16]; R],
    d: [&[f32]; R],
) -> [f32; R] {
    use std::arch::x86_64::*;
    let (lo, hi) = level_bytes();
    // The same 16-byte table in both 128-bit lanes (shuffles stay within a lane).
    let tl = _mm256_broadcastsi128_si256(_mm_loadu_si128(lo.as_ptr() as *const __m128i));
    let th = _mm256_broadcastsi128_si256(_mm_loadu_si128(hi.as_ptr() as *const __m128i));
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
    std::array::from_fn(|r| crate::formats::blocks::hsum_avx(acc[r]))
}

/// [`dot_avx2`] for aarch64: `vqtbl1q_u8` is the byte shuffle, 16 bytes at a time
/// (half a group, in the same activation order), widening multiply-adds into four
/// accumulators so that each lane again sums at most 4 products.
///
/// # Safety
/// Only for a matrix in [`integer_layout`].
#[cfg(target_arch = "aarch64")]
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_neon<const R: usize>(
    w: &Nf4Matrix,
    row: usize,
    q: [&[i16]; R],
    d: [&[f32]; R],
) -> [f32; R] {
    use std::arch::aarch64::*;
    let (lo, hi) = level_bytes();
    let (tl, th) = (vld1q_u8(lo.as_ptr()), vld1q_u8(hi.as_ptr()));
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

/// `y_i[m, rows_i] = x[m, k] · W_iᵀ` for NF4 matrices sharing their input (q/k/v,
/// gate/up), in one parallel region, never decoding a matrix into a dense copy.
pub fn matmul_many(x: &[f32], m: usize, k: usize, mats: &[&Nf4Matrix]) -> Vec<Vec<f32>> {
    assert!(
        x.len() == m * k && mats.iter().all(|w| w.cols == k),
        "activations [{m}, {k}] do not fit the NF4 matrices"
    );
    let ns: Vec<usize> = mats.iter().map(|w| w.rows).collect();
    let cpu = crate::cpu::features();
    if mats.iter().all(|w| integer_layout(w)) {
        let acts = Acts::new(x, m, k);
        return row_runs_into(m, &ns, |i, rows, out| {
            let w = mats[i];
            by_fours(
                m,
                rows,
                |r, j| {
                    let rs: [(&[i16], &[f32]); 4] = std::array::from_fn(|t| acts.row(j + t));
                    dot::<4>(w, r, rs.map(|t| t.0), rs.map(|t| t.1), cpu)
                },
                |r, j| {
                    let (q, d) = acts.row(j);
                    dot::<1>(w, r, [q], [d], cpu)[0]
                },
                |j, r, v| out.put(j, r, v),
            );
        });
    }
    // Any other layout: each weight row decoded once per item into a row buffer.
    row_runs_into(m, &ns, |i, rows, out| {
        let w = mats[i];
        let mut row = vec![0f32; k];
        for r in rows {
            w.dequantize_row(r, &mut row);
            for j in 0..m {
                let xj = &x[j * k..(j + 1) * k];
                out.put(j, r, row.iter().zip(xj).map(|(a, b)| a * b).sum());
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::blocks::testing::lcg;
    use crate::formats::nf4::Nf4;

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
    /// this CPU's path against the portable reference, for one and four rows, several
    /// matrices at once, blocks of 64 and 128 (128 straddling rows of 192), and blocks
    /// of 32 and 48, which take the f32 decode.
    #[test]
    fn matmul_matches_dequantized_and_scalar() {
        let mut seed = 5;
        let (k, m) = (192, 6);
        for bs in [64, 128, 32, 48] {
            let mats: Vec<Nf4Matrix> = [37, 8]
                .iter()
                .map(|&n| {
                    let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.3).collect();
                    Nf4Matrix::new(&Nf4::quantize(&w, bs, true), n, k).unwrap()
                })
                .collect();
            let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed) * 3.0).collect();
            let refs: Vec<&Nf4Matrix> = mats.iter().collect();
            let outs = matmul_many(&x, m, k, &refs);
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
                        if integer_layout(w) {
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
}

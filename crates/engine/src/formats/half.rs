//! Matmul with F16 or BF16 weights (as HF checkpoints store them) and f32
//! activations, accumulating in f32. Widening a half to f32 is exact, so the result is
//! the f32 product of the stored weights; converting whole matrices to F32 at load
//! would double their memory, and converting per call would cost a full copy each
//! token. x86-64 uses AVX2 + FMA + F16C when present. From [`GEMM_M`] rows on, the
//! caller (`formats::widened_forward`) widens blocks of weights and runs a tiled
//! GEMM instead: at thousands of rows the product is compute-bound, not bandwidth-
//! bound, and the per-call widening is small beside it.
//!
//! Up to [`SMALL_M`] activation rows (decode, and speculative decoding's verify pass)
//! each weight row is read from memory once for all of them, and each row's result
//! is bit for bit what that row alone gives: a verify pass of several proposed
//! tokens computes exactly the logits decoding them one by one would, so greedy
//! output with a draft model is the target's own. F32 weights take
//! [`matmul_f32_small`] from two rows on; a single F32 row stays with candle's GEMV,
//! which streams a large head about 1.4x faster than our kernel (measured 38.7 vs
//! 26.4 GB/s on SmolLM2's 49152 × 576 head), so for F32 the verify pass and decode
//! agree to rounding, not to the bit.

use super::parallel::{by_fours, row_runs_into};
use half::{bf16, f16};

/// A row-major `[n, k]` matrix of 16-bit floats.
#[derive(Clone, Copy)]
pub enum HalfRows<'a> {
    /// bfloat16.
    Bf16(&'a [bf16]),
    /// IEEE half.
    F16(&'a [f16]),
}

impl HalfRows<'_> {
    fn bits(&self, row: usize, k: usize) -> &[u16] {
        fn as_u16<T>(s: &[T]) -> &[u16] {
            const { assert!(std::mem::size_of::<T>() == 2) };
            // SAFETY: bf16 and f16 are `repr(transparent)` over u16.
            unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u16, s.len()) }
        }
        match self {
            Self::Bf16(w) => as_u16(&w[row * k..(row + 1) * k]),
            Self::F16(w) => as_u16(&w[row * k..(row + 1) * k]),
        }
    }

    fn widen(&self, h: u16) -> f32 {
        match self {
            Self::Bf16(_) => f32::from_bits((h as u32) << 16),
            Self::F16(_) => f16::from_bits(h).to_f32(),
        }
    }
}

/// Activation rows up to which each goes through the one-row kernel (see the module
/// documentation); past it, prefill's four-row kernels amortise the widening.
pub const SMALL_M: usize = 16;

/// Activation rows from which the matmul widens blocks of weights to F32 and runs a
/// tiled GEMM instead of the row kernels (`formats::widened_forward`). Measured on
/// a vision tower and long BF16 prefills on 2 Zen 5 cores: see ARCHITECTURE.md.
pub const GEMM_M: usize = 64;

/// Weights widened at once by that path.
pub const WIDEN_ELEMS: usize = 4 << 20;

/// `y = x · Wᵀ` for `x` `[m, k]` and `w` `[n, k]`; returns `[m, n]`. Runs of rows
/// go to candle's barrier pool ([`row_runs_into`]); past [`SMALL_M`] rows, four
/// activation rows share each widened weight vector, so prefill widens every weight
/// once per four tokens.
pub fn matmul(x: &[f32], m: usize, k: usize, w: HalfRows<'_>, n: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "activations [{m}, {k}]");
    let cpu = crate::cpu::features();
    let act = |j: usize| &x[j * k..(j + 1) * k];
    if m <= SMALL_M {
        // BF16 with AVX-512 gives each row the same result four at a time; the
        // other kernels only one at a time.
        let fours = matches!(w, HalfRows::Bf16(_)) && cfg!(target_arch = "x86_64") && cpu.avx512f;
        return row_runs_into(m, &[n], |_, rows, out| {
            for r in rows {
                let mut j = 0;
                while fours && j + 4 <= m {
                    let v = dot::<4>(w, r, k, std::array::from_fn(|t| act(j + t)), cpu);
                    for (t, v) in v.into_iter().enumerate() {
                        out.put(j + t, r, v);
                    }
                    j += 4;
                }
                for j in j..m {
                    out.put(j, r, dot::<1>(w, r, k, [act(j)], cpu)[0]);
                }
            }
        })
        .remove(0);
    }
    row_runs_into(m, &[n], |_, rows, out| {
        by_fours(
            m,
            rows,
            |r, j| dot::<4>(w, r, k, std::array::from_fn(|t| act(j + t)), cpu),
            |r, j| dot::<1>(w, r, k, [act(j)], cpu)[0],
            |j, r, v| out.put(j, r, v),
        );
    })
    .remove(0)
}

#[inline(always)]
fn dot<const R: usize>(
    w: HalfRows<'_>,
    row: usize,
    k: usize,
    x: [&[f32]; R],
    cpu: crate::cpu::CpuFeatures,
) -> [f32; R] {
    #[cfg(target_arch = "x86_64")]
    if cpu.avx2_fma && cpu.f16c {
        if matches!(w, HalfRows::Bf16(_)) && cpu.avx512f {
            // SAFETY: AVX-512F was detected.
            return unsafe { avx512::dot_bf16(w, row, k, x) };
        }
        // SAFETY: AVX2, FMA and F16C were detected.
        return unsafe { avx2::dot(w, row, k, x) };
    }
    let _ = cpu;
    x.map(|x| dot_scalar(w, row, k, x))
}

/// `y = x · Wᵀ` for F32 weights `w` `[n, k]` and at most [`SMALL_M`] activation rows
/// (prefill's larger products go to candle's GEMM). Four weight rows stream at once
/// (four memory streams keep decode at the bandwidth), each with its own
/// accumulators in the same order as alone, so a row's result never depends on its
/// neighbours or on `m`.
pub fn matmul_f32_small(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    const G: usize = 8;
    assert!(m <= SMALL_M && x.len() == m * k && w.len() == n * k);
    let cpu = crate::cpu::features();
    let row = |r: usize| &w[r * k..(r + 1) * k];
    row_runs_into(m, &[n], |_, rows, out| {
        let mut r = rows.start;
        while r + G <= rows.end {
            let ws: [&[f32]; G] = std::array::from_fn(|i| row(r + i));
            for j in 0..m {
                let v = dot_f32::<G>(ws, &x[j * k..(j + 1) * k], cpu);
                for (i, v) in v.into_iter().enumerate() {
                    out.put(j, r + i, v);
                }
            }
            r += G;
        }
        for r in r..rows.end {
            for j in 0..m {
                out.put(j, r, dot_f32::<1>([row(r)], &x[j * k..(j + 1) * k], cpu)[0]);
            }
        }
    })
    .remove(0)
}

/// `R` F32 rows each with one activation row.
#[inline(always)]
fn dot_f32<const R: usize>(w: [&[f32]; R], x: &[f32], cpu: crate::cpu::CpuFeatures) -> [f32; R] {
    #[cfg(target_arch = "x86_64")]
    {
        if cpu.avx512f {
            // SAFETY: AVX-512F was detected.
            return unsafe { avx512::dot_f32(w, x) };
        }
        if cpu.avx2_fma {
            // SAFETY: AVX2 and FMA were detected.
            return unsafe { avx2::dot_f32(w, x) };
        }
    }
    let _ = cpu;
    w.map(|w| w.iter().zip(x).map(|(a, b)| a * b).sum())
}

/// Portable dot product of row `row` with `x`.
pub fn dot_scalar(w: HalfRows<'_>, row: usize, k: usize, x: &[f32]) -> f32 {
    w.bits(row, k)
        .iter()
        .zip(x)
        .map(|(&h, b)| w.widen(h) * b)
        .sum()
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::HalfRows;
    use std::arch::x86_64::*;

    /// `R` F32 rows with one activation row; each row in two chains of 16 weights,
    /// the same whatever `R`.
    ///
    /// # Safety
    /// Only where AVX-512F was detected.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_f32<const R: usize>(w: [&[f32]; R], x: &[f32]) -> [f32; R] {
        let k = x.len();
        let xp = x.as_ptr();
        let wp: [*const f32; R] = std::array::from_fn(|r| w[r][..k].as_ptr());
        let mut a = [[_mm512_setzero_ps(); 2]; R];
        let mut i = 0;
        while i + 32 <= k {
            let (x0, x1) = (_mm512_loadu_ps(xp.add(i)), _mm512_loadu_ps(xp.add(i + 16)));
            for r in 0..R {
                a[r][0] = _mm512_fmadd_ps(_mm512_loadu_ps(wp[r].add(i)), x0, a[r][0]);
                a[r][1] = _mm512_fmadd_ps(_mm512_loadu_ps(wp[r].add(i + 16)), x1, a[r][1]);
            }
            i += 32;
        }
        if i + 16 <= k {
            let x0 = _mm512_loadu_ps(xp.add(i));
            for r in 0..R {
                a[r][0] = _mm512_fmadd_ps(_mm512_loadu_ps(wp[r].add(i)), x0, a[r][0]);
            }
            i += 16;
        }
        std::array::from_fn(|r| {
            let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(a[r][0], a[r][1]));
            for j in i..k {
                sum += w[r][j] * x[j];
            }
            sum
        })
    }

    /// One BF16 row with `R` activation rows, 32 weights per 512-bit step in two
    /// chains per activation row (decode, where the head of a large vocabulary
    /// dominates): each weight is widened once for all `R`, and each row's sum is
    /// formed in the same order whatever `R`.
    ///
    /// # Safety
    /// Only where AVX-512F was detected.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_bf16<const R: usize>(
        w: HalfRows<'_>,
        row: usize,
        k: usize,
        x: [&[f32]; R],
    ) -> [f32; R] {
        let bits = w.bits(row, k);
        let wp = bits.as_ptr();
        let xp: [*const f32; R] = std::array::from_fn(|r| x[r][..k].as_ptr());
        let mut a = [[_mm512_setzero_ps(); 2]; R];
        let mut i = 0;
        while i + 32 <= k {
            let lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(wp.add(i) as *const __m256i));
            let hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(wp.add(i + 16) as *const __m256i));
            let (lo, hi) = (
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(lo)),
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(hi)),
            );
            for r in 0..R {
                a[r][0] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xp[r].add(i)), a[r][0]);
                a[r][1] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xp[r].add(i + 16)), a[r][1]);
            }
            i += 32;
        }
        std::array::from_fn(|r| {
            let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(a[r][0], a[r][1]));
            for j in i..k {
                sum += w.widen(bits[j]) * x[r][j];
            }
            sum
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::HalfRows;
    use std::arch::x86_64::*;

    /// 16 weights from `p`, widened to two vectors of f32.
    #[inline(always)]
    unsafe fn load16(p: *const u16, is_bf16: bool) -> (__m256, __m256) {
        let raw = _mm256_loadu_si256(p as *const __m256i);
        if is_bf16 {
            let lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(raw));
            let hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(raw));
            (
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(lo)),
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(hi)),
            )
        } else {
            (
                _mm256_cvtph_ps(_mm256_castsi256_si128(raw)),
                _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(raw)),
            )
        }
    }

    /// `R` F32 rows with one activation row; each row in two chains of 8 weights,
    /// the same whatever `R`.
    ///
    /// # Safety
    /// Only where AVX2 and FMA were detected.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32<const R: usize>(w: [&[f32]; R], x: &[f32]) -> [f32; R] {
        let k = x.len();
        let xp = x.as_ptr();
        let wp: [*const f32; R] = std::array::from_fn(|r| w[r][..k].as_ptr());
        let mut a = [[_mm256_setzero_ps(); 2]; R];
        let mut i = 0;
        while i + 16 <= k {
            let (x0, x1) = (_mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(xp.add(i + 8)));
            for r in 0..R {
                a[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(wp[r].add(i)), x0, a[r][0]);
                a[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(wp[r].add(i + 8)), x1, a[r][1]);
            }
            i += 16;
        }
        if i + 8 <= k {
            let x0 = _mm256_loadu_ps(xp.add(i));
            for r in 0..R {
                a[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(wp[r].add(i)), x0, a[r][0]);
            }
            i += 8;
        }
        std::array::from_fn(|r| {
            let mut sum = crate::formats::blocks::hsum_avx(_mm256_add_ps(a[r][0], a[r][1]));
            for j in i..k {
                sum += w[r][j] * x[j];
            }
            sum
        })
    }

    /// Row `row` dotted with `R` activation rows. One row (decode) runs four
    /// independent FMA chains over 32 weights a step, enough to cover FMA latency and
    /// keep loads in flight; four rows reuse each widened vector four times.
    ///
    /// # Safety
    /// Only where AVX2, FMA and F16C were detected.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot<const R: usize>(
        w: HalfRows<'_>,
        row: usize,
        k: usize,
        x: [&[f32]; R],
    ) -> [f32; R] {
        let is_bf16 = matches!(w, HalfRows::Bf16(_));
        let bits = w.bits(row, k);
        let wp = bits.as_ptr();
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        let mut i = 0;
        if R == 1 {
            let xp = x[0].as_ptr();
            while i + 32 <= k {
                let (a, b) = load16(wp.add(i), is_bf16);
                let (c, d) = load16(wp.add(i + 16), is_bf16);
                acc[0][0] = _mm256_fmadd_ps(a, _mm256_loadu_ps(xp.add(i)), acc[0][0]);
                acc[0][1] = _mm256_fmadd_ps(b, _mm256_loadu_ps(xp.add(i + 8)), acc[0][1]);
                acc[0][2] = _mm256_fmadd_ps(c, _mm256_loadu_ps(xp.add(i + 16)), acc[0][2]);
                acc[0][3] = _mm256_fmadd_ps(d, _mm256_loadu_ps(xp.add(i + 24)), acc[0][3]);
                i += 32;
            }
        }
        while i + 16 <= k {
            let (a, b) = load16(wp.add(i), is_bf16);
            for r in 0..R {
                let xp = x[r].as_ptr();
                acc[r][0] = _mm256_fmadd_ps(a, _mm256_loadu_ps(xp.add(i)), acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(b, _mm256_loadu_ps(xp.add(i + 8)), acc[r][1]);
            }
            i += 16;
        }
        std::array::from_fn(|r| {
            let v = _mm256_add_ps(
                _mm256_add_ps(acc[r][0], acc[r][1]),
                _mm256_add_ps(acc[r][2], acc[r][3]),
            );
            let mut sum = crate::formats::blocks::hsum_avx(v);
            for j in i..k {
                sum += w.widen(bits[j]) * x[r][j];
            }
            sum
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Up to SMALL_M rows, each row's result is bit for bit the one-row result (what
    /// speculative decoding's verify pass relies on), for F32 and the half formats.
    #[test]
    fn small_products_give_each_row_its_decode_result() {
        let (k, n) = (200, 37);
        let x = data(SMALL_M * k, 3);
        let wf = data(n * k, 4);
        let b: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
        for m in [2, 5, SMALL_M] {
            let many = matmul_f32_small(&x[..m * k], m, k, &wf, n);
            let half = matmul(&x[..m * k], m, k, HalfRows::Bf16(&b), n);
            for j in 0..m {
                let row = &x[j * k..(j + 1) * k];
                assert_eq!(
                    &many[j * n..(j + 1) * n],
                    matmul_f32_small(row, 1, k, &wf, n)
                );
                assert_eq!(
                    &half[j * n..(j + 1) * n],
                    matmul(row, 1, k, HalfRows::Bf16(&b), n)
                );
                for r in 0..n {
                    let exact: f64 = (0..k).map(|t| row[t] as f64 * wf[r * k + t] as f64).sum();
                    assert!((many[j * n + r] as f64 - exact).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn matches_f64_reference_for_both_formats_and_ragged_k() {
        for (m, k, n) in [(1, 64, 40), (1, 116, 9), (3, 67, 33), (5, 256, 17)] {
            let x = data(m * k, 1);
            let wf = data(n * k, 2);
            let b: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
            let h: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
            for (rows, back) in [
                (
                    HalfRows::Bf16(&b),
                    b.iter().map(|v| v.to_f64()).collect::<Vec<_>>(),
                ),
                (HalfRows::F16(&h), h.iter().map(|v| v.to_f64()).collect()),
            ] {
                let y = matmul(&x, m, k, rows, n);
                for i in 0..m {
                    for j in 0..n {
                        let exact: f64 =
                            (0..k).map(|t| x[i * k + t] as f64 * back[j * k + t]).sum();
                        let got = y[i * n + j] as f64;
                        assert!(
                            (got - exact).abs() < 1e-5,
                            "{m}x{k}x{n} [{i},{j}]: {got} vs {exact}"
                        );
                        let scalar = dot_scalar(rows, j, k, &x[i * k..(i + 1) * k]) as f64;
                        assert!((scalar - exact).abs() < 1e-5);
                    }
                }
            }
        }
    }
}

//! Matmul with F16 or BF16 weights (as HF checkpoints store them) and f32
//! activations, accumulating in f32. Widening a half to f32 is exact, so the result is
//! the f32 product of the stored weights; converting whole matrices to F32 at load
//! would double their memory, and converting per call would cost a full copy each
//! token. x86-64 uses AVX2 + FMA + F16C when present.

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

/// `y = x · Wᵀ` for `x` `[m, k]` and `w` `[n, k]`; returns `[m, n]`. Runs of rows
/// go to candle's barrier pool ([`row_runs_into`]); four activation rows share each
/// widened weight vector, so prefill widens every weight once per four tokens.
pub fn matmul(x: &[f32], m: usize, k: usize, w: HalfRows<'_>, n: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "activations [{m}, {k}]");
    let cpu = crate::cpu::features();
    let act = |j: usize| &x[j * k..(j + 1) * k];
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
        if R == 1 && matches!(w, HalfRows::Bf16(_)) && cpu.avx512f {
            // SAFETY: AVX-512F was detected.
            let v = unsafe { avx512::dot_bf16(w, row, k, x[0]) };
            return std::array::from_fn(|_| v);
        }
        // SAFETY: AVX2, FMA and F16C were detected.
        return unsafe { avx2::dot(w, row, k, x) };
    }
    let _ = cpu;
    x.map(|x| dot_scalar(w, row, k, x))
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

    /// One BF16 row with one activation row, 32 weights per 512-bit step in two
    /// chains (decode, where the head of a large vocabulary dominates).
    ///
    /// # Safety
    /// Only where AVX-512F was detected.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_bf16(w: HalfRows<'_>, row: usize, k: usize, x: &[f32]) -> f32 {
        let bits = w.bits(row, k);
        let (wp, xp) = (bits.as_ptr(), x.as_ptr());
        let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 32 <= k {
            let lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(wp.add(i) as *const __m256i));
            let hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(wp.add(i + 16) as *const __m256i));
            a0 = _mm512_fmadd_ps(
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(lo)),
                _mm512_loadu_ps(xp.add(i)),
                a0,
            );
            a1 = _mm512_fmadd_ps(
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(hi)),
                _mm512_loadu_ps(xp.add(i + 16)),
                a1,
            );
            i += 32;
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        for j in i..k {
            sum += w.widen(bits[j]) * x[j];
        }
        sum
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

//! Matmul with F16 or BF16 weights (as HF checkpoints store them) and f32
//! activations, accumulating in f32. Widening a half to f32 is exact, so the result is
//! the f32 product of the stored weights; converting whole matrices to F32 at load
//! would double their memory, and converting per call would cost a full copy each
//! token. x86-64 uses AVX2 + FMA + F16C when present.

use half::{bf16, f16};
use rayon::prelude::*;

/// A row-major `[n, k]` matrix of 16-bit floats.
#[derive(Clone, Copy)]
pub enum HalfRows<'a> {
    /// bfloat16.
    Bf16(&'a [bf16]),
    /// IEEE half.
    F16(&'a [f16]),
}

/// Rows of the weight handed to one task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

/// `y = x · Wᵀ` for `x` `[m, k]` and `w` `[n, k]`; returns `[m, n]`.
pub fn matmul(x: &[f32], m: usize, k: usize, w: HalfRows<'_>, n: usize) -> Vec<f32> {
    debug_assert_eq!(x.len(), m * k);
    let dot = pick_dot(w);
    // Computed as [n, m] so each task owns a contiguous slice, then transposed.
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(ROWS_PER_TASK * m)
        .enumerate()
        .for_each(|(c, out)| {
            for (r, o) in out.chunks_mut(m).enumerate() {
                let row = c * ROWS_PER_TASK + r;
                for (i, y) in o.iter_mut().enumerate() {
                    *y = dot(w, row, k, &x[i * k..(i + 1) * k]);
                }
            }
        });
    if m == 1 {
        return yt;
    }
    let mut y = vec![0f32; m * n];
    for j in 0..n {
        for i in 0..m {
            y[i * n + j] = yt[j * m + i];
        }
    }
    y
}

type DotFn = fn(HalfRows<'_>, usize, usize, &[f32]) -> f32;

fn pick_dot(_w: HalfRows<'_>) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        return |w, row, k, x| unsafe { avx2::dot(w, row, k, x) };
    }
    dot_scalar
}

/// Portable dot product of row `row` with `x`.
pub fn dot_scalar(w: HalfRows<'_>, row: usize, k: usize, x: &[f32]) -> f32 {
    match w {
        HalfRows::Bf16(w) => w[row * k..(row + 1) * k]
            .iter()
            .zip(x)
            .map(|(a, b)| a.to_f32() * b)
            .sum(),
        HalfRows::F16(w) => w[row * k..(row + 1) * k]
            .iter()
            .zip(x)
            .map(|(a, b)| a.to_f32() * b)
            .sum(),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::HalfRows;
    use std::arch::x86_64::*;

    /// # Safety
    /// Only where AVX2, FMA and F16C were detected.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(w: HalfRows<'_>, row: usize, k: usize, x: &[f32]) -> f32 {
        let (bits, is_bf16): (&[u16], bool) = match w {
            HalfRows::Bf16(w) => (bytemuck_u16(&w[row * k..(row + 1) * k]), true),
            HalfRows::F16(w) => (bytemuck_u16(&w[row * k..(row + 1) * k]), false),
        };
        let mut acc = [_mm256_setzero_ps(); 2];
        let whole = k / 16 * 16;
        let (wp, xp) = (bits.as_ptr(), x.as_ptr());
        let mut i = 0;
        while i < whole {
            let raw = _mm256_loadu_si256(wp.add(i) as *const __m256i);
            let (lo, hi) = if is_bf16 {
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
            };
            acc[0] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xp.add(i)), acc[0]);
            acc[1] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xp.add(i + 8)), acc[1]);
            i += 16;
        }
        let v = _mm256_add_ps(acc[0], acc[1]);
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        let mut sum = _mm_cvtss_f32(s);
        for j in whole..k {
            let h = bits[j];
            let f = if is_bf16 {
                f32::from_bits((h as u32) << 16)
            } else {
                half::f16::from_bits(h).to_f32()
            };
            sum += f * x[j];
        }
        sum
    }

    fn bytemuck_u16<T>(s: &[T]) -> &[u16] {
        const { assert!(std::mem::size_of::<T>() == 2) };
        // SAFETY: bf16 and f16 are `repr(transparent)` over u16.
        unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u16, s.len()) }
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
        for (m, k, n) in [(1, 64, 40), (3, 67, 33), (5, 256, 17)] {
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

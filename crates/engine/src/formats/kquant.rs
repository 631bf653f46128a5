//! What the k-quant quantizers (Q4_K, Q5_K, Q6_K, each in its format's home) share,
//! as ggml's current reference quantizers compute it (`quantize_row_q{4,5,6}_K_ref`,
//! which llama-quantize uses without an importance matrix): a weighted least-squares
//! search over scale and minimum per 32 weights (`make_qkx2_quants`) for Q4_K/Q5_K,
//! and a ±0.9 step search of the scale per 16 weights (`make_qx_quants`, weights x²)
//! for Q6_K. candle's quantizers follow an older ggml (a plain min/max fit), which
//! gives other bytes and more error. Written from reading ggml-quants.c.

use half::f16;

/// Weights per k-quant super-block.
pub(crate) const QK_K: usize = 256;

/// ggml's `nearest_int`: round half to even through the float mantissa.
pub(crate) fn nearest_int(f: f32) -> i32 {
    let v = f + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Fits `x ≈ scale · L + min` with `L` in `0..=nmax`, minimising the weighted squared
/// error over `nstep + 1` candidate scales. Returns (scale, −min).
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = min.min(x[i]);
        max = max.max(x[i]);
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.iter_mut().for_each(|l| *l = 0);
        return (0.0, -min);
    }
    let iscale = nmax as f32 / (max - min);
    let scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let fit = Fit {
        nmax,
        rmin,
        rdelta,
        nstep,
        sum_w,
        sum_x,
        max,
    };
    let mut best = (scale, min, best_error);
    #[cfg(target_arch = "x86_64")]
    if n == 32 && crate::cpu::features().avx2_fma {
        // SAFETY: AVX2 was detected.
        unsafe { candidates_avx2(&fit, x, weights, l_out, &mut best) };
        return (best.0, -best.1);
    }
    candidates(&fit, x, weights, l_out, &mut best);
    (best.0, -best.1)
}

/// [`make_qkx2_quants`]'s search over `nstep + 1` candidate scales, as ggml's
/// reference writes it. `best` is (scale, min, error) in and out.
fn candidates(f: &Fit, x: &[f32], weights: &[f32], l_out: &mut [u8], best: &mut (f32, f32, f32)) {
    let Fit {
        nmax,
        rmin,
        rdelta,
        nstep,
        sum_w,
        sum_x,
        max,
    } = *f;
    let n = x.len();
    let (mut scale, mut min, mut best_error) = *best;
    let mut aux = [0u8; 32];
    for is in 0..=nstep {
        let iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = l as u8;
            let (w, lf) = (weights[i], l as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *best = (scale, min, best_error);
}

/// What [`make_qkx2_quants`]'s candidate search keeps fixed.
#[derive(Clone, Copy)]
struct Fit {
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    sum_w: f32,
    sum_x: f32,
    max: f32,
}

/// [`make_qkx2_quants`]'s search over candidate scales, eight candidates at a time
/// in the lanes of AVX2 vectors, each lane doing the scalar code's operations in
/// its order (no fused multiply-adds), so every result is bit for bit the same.
/// The scalar loop is not quite independent per candidate: a winner replaces `min`,
/// which later candidates use. The lanes are scanned in order like the scalar
/// loop; when a winner changes `min`, the candidates after it are computed again
/// from the new `min`. `best` is (scale, min, error) in and out; `l_out` gets the
/// winner's levels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn candidates_avx2(
    f: &Fit,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    best: &mut (f32, f32, f32),
) {
    use std::arch::x86_64::*;
    let nearest = |v: __m256| {
        let v = _mm256_add_ps(v, _mm256_set1_ps(12_582_912.0));
        _mm256_sub_epi32(
            _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x007f_ffff)),
            _mm256_set1_epi32(0x0040_0000),
        )
    };
    let (zero, nmax_i) = (_mm256_setzero_si256(), _mm256_set1_epi32(f.nmax));
    let mut is0 = 0i32;
    while is0 <= f.nstep {
        let lanes = (f.nstep + 1 - is0).min(8) as usize;
        let min = best.1;
        let is = _mm256_cvtepi32_ps(_mm256_add_epi32(
            _mm256_set1_epi32(is0),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        ));
        let iscale = _mm256_div_ps(
            _mm256_add_ps(
                _mm256_add_ps(
                    _mm256_set1_ps(f.rmin),
                    _mm256_mul_ps(_mm256_set1_ps(f.rdelta), is),
                ),
                _mm256_set1_ps(f.nmax as f32),
            ),
            _mm256_set1_ps(f.max - min),
        );
        let mut levels = [[0i32; 8]; 32];
        let (mut sum_l, mut sum_l2, mut sum_xl) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        for i in 0..32 {
            let v = _mm256_mul_ps(iscale, _mm256_set1_ps(x[i] - min));
            let l = _mm256_min_epi32(_mm256_max_epi32(nearest(v), zero), nmax_i);
            _mm256_storeu_si256(levels[i].as_mut_ptr() as *mut __m256i, l);
            let lf = _mm256_cvtepi32_ps(l);
            let wl = _mm256_mul_ps(_mm256_set1_ps(weights[i]), lf);
            sum_l = _mm256_add_ps(sum_l, wl);
            sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, lf));
            sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, _mm256_set1_ps(x[i])));
        }
        let (sw, sx) = (_mm256_set1_ps(f.sum_w), _mm256_set1_ps(f.sum_x));
        let d = _mm256_sub_ps(_mm256_mul_ps(sw, sum_l2), _mm256_mul_ps(sum_l, sum_l));
        let mut scale = _mm256_div_ps(
            _mm256_sub_ps(_mm256_mul_ps(sw, sum_xl), _mm256_mul_ps(sx, sum_l)),
            d,
        );
        let mut this_min = _mm256_div_ps(
            _mm256_sub_ps(_mm256_mul_ps(sum_l2, sx), _mm256_mul_ps(sum_l, sum_xl)),
            d,
        );
        let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(this_min, _mm256_setzero_ps());
        this_min = _mm256_blendv_ps(this_min, _mm256_setzero_ps(), positive);
        scale = _mm256_blendv_ps(scale, _mm256_div_ps(sum_xl, sum_l2), positive);
        let mut err = _mm256_setzero_ps();
        for i in 0..32 {
            let l = _mm256_cvtepi32_ps(_mm256_loadu_si256(levels[i].as_ptr() as *const __m256i));
            let diff = _mm256_sub_ps(
                _mm256_add_ps(_mm256_mul_ps(scale, l), this_min),
                _mm256_set1_ps(x[i]),
            );
            err = _mm256_add_ps(
                err,
                _mm256_mul_ps(_mm256_set1_ps(weights[i]), _mm256_mul_ps(diff, diff)),
            );
        }
        let (mut d_, mut s_, mut m_, mut e_) = ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
        _mm256_storeu_ps(d_.as_mut_ptr(), d);
        _mm256_storeu_ps(s_.as_mut_ptr(), scale);
        _mm256_storeu_ps(m_.as_mut_ptr(), this_min);
        _mm256_storeu_ps(e_.as_mut_ptr(), err);
        let mut next = lanes;
        for k in 0..lanes {
            if d_[k] > 0.0 && e_[k] < best.2 {
                *best = (s_[k], m_[k], e_[k]);
                for (o, l) in l_out.iter_mut().zip(&levels) {
                    *o = l[k] as u8;
                }
                if m_[k].to_bits() != min.to_bits() {
                    // Later candidates must see the new min.
                    next = k + 1;
                    break;
                }
            }
        }
        is0 += next as i32;
    }
}

/// (Σ w·v·l, Σ w·l²) with weights w = v² of the levels `l` that scale `iscale`
/// gives `x`: one candidate of [`make_qx_quants`], as ggml's reference sums it.
fn qx_sums(nmax: i32, iscale: f32, x: &[f32]) -> (f32, f32) {
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for &v in x {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
        let w = v * v;
        sumlx += w * v * l;
        suml2 += w * l * l;
    }
    (sumlx, suml2)
}

/// Symmetric fit `x ≈ scale · (L − nmax)` with weights x², trying 19 scales around
/// `nmax / max`. Returns the scale (0 for an all-zero group).
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l_out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let fit = |iscale: f32| qx_sums(nmax, iscale, x);
    let mut iscale = -(nmax as f32) / max;
    let (sumlx, suml2) = fit(iscale);
    for (o, &v) in l_out.iter_mut().zip(x) {
        *o = (nearest_int(iscale * v).clamp(-nmax, nmax - 1) + nmax) as i8;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    // The 18 candidates' sums do not depend on each other: with AVX2 they are
    // computed eight at a time (bit for bit the scalar operations), then scanned
    // in order as below.
    #[cfg(target_arch = "x86_64")]
    let sums = crate::cpu::features()
        .avx2_fma
        // SAFETY: AVX2 was detected.
        .then(|| unsafe { qx_candidates_avx2(nmax, max, x) });
    #[cfg(not(target_arch = "x86_64"))]
    let sums: Option<[(f32, f32); 18]> = None;
    for (k, is) in (-9..=9).filter(|&is| is != 0).enumerate() {
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = match &sums {
            Some(s) => s[k],
            None => fit(iscale),
        };
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in l_out.iter_mut().zip(x) {
                *o = (nearest_int(iscale * v).clamp(-nmax, nmax - 1) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// (Σ w·v·l, Σ w·l²) of [`make_qx_quants`]'s 18 candidate scales (`is` = −9..9
/// without 0, in that order), eight candidates per vector, each lane doing the
/// scalar code's operations in its order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn qx_candidates_avx2(nmax: i32, max: f32, x: &[f32]) -> [(f32, f32); 18] {
    use std::arch::x86_64::*;
    let is: [f32; 24] = std::array::from_fn(|k| {
        let k = k.min(17) as i32;
        (if k < 9 { k - 9 } else { k - 8 }) as f32
    });
    let (lo, hi) = (_mm256_set1_epi32(-nmax), _mm256_set1_epi32(nmax - 1));
    let mut out = [(0f32, 0f32); 18];
    for g in 0..3 {
        let isv = _mm256_loadu_ps(is.as_ptr().add(8 * g));
        let a = _mm256_add_ps(
            _mm256_set1_ps(nmax as f32),
            _mm256_mul_ps(_mm256_set1_ps(0.1), isv),
        );
        let neg = _mm256_xor_ps(a, _mm256_set1_ps(-0.0));
        let iscale = _mm256_div_ps(neg, _mm256_set1_ps(max));
        let (mut sumlx, mut suml2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for &v in x {
            let p = _mm256_add_ps(
                _mm256_mul_ps(iscale, _mm256_set1_ps(v)),
                _mm256_set1_ps(12_582_912.0),
            );
            let l = _mm256_sub_epi32(
                _mm256_and_si256(_mm256_castps_si256(p), _mm256_set1_epi32(0x007f_ffff)),
                _mm256_set1_epi32(0x0040_0000),
            );
            let l = _mm256_cvtepi32_ps(_mm256_min_epi32(_mm256_max_epi32(l, lo), hi));
            let w = v * v;
            sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_set1_ps(w * v), l));
            suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(w), l), l));
        }
        let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
        _mm256_storeu_ps(a.as_mut_ptr(), sumlx);
        _mm256_storeu_ps(b.as_mut_ptr(), suml2);
        for k in 0..8 {
            if 8 * g + k < 18 {
                out[8 * g + k] = (a[k], b[k]);
            }
        }
    }
    out
}

/// The 6-bit scale and min of sub-block `j` from Q4_K/Q5_K's packed 12 bytes
/// (llama.cpp `get_scale_min_k4`).
pub(crate) fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// All eight (scale, min) pairs of [`scale_min_k4`] at once, with four 32-bit
/// operations instead of eight byte-wise ones (the kernels' per-super-block work).
#[inline(always)]
pub(crate) fn scales_mins_k4(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (u0, u1, u2) = (word(0), word(1), word(2));
    // Scales 0-3: low 6 bits of bytes 0-3; 4-7: low nibbles of 8-11 and the top
    // 2 bits of 0-3. Mins the same from bytes 4-7 and the high nibbles of 8-11.
    let scales_hi = (u2 & LOW4) | (((u0 >> 6) & LOW2) << 4);
    let mins_hi = ((u2 >> 4) & LOW4) | (((u1 >> 6) & LOW2) << 4);
    let join = |a: u32, b: u32| {
        let (a, b) = (a.to_le_bytes(), b.to_le_bytes());
        [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
    };
    (join(u0 & LOW6, scales_hi), join(u1 & LOW6, mins_hi))
}

/// Shared by Q4_K (nmax 15) and Q5_K (nmax 31): per-32 scales and mins, their 6-bit
/// codes, and the final levels `L`.
pub(crate) fn k_scales(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> (f16, f16, [u8; 12], [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().fold(0.0, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            rmin,
            0.1,
            nstep,
        );
        max_scale = max_scale.max(scales[j]);
        max_min = max_min.max(mins[j]);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dd = d.to_f32() * sc as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for i in 0..32 {
            l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / dd).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

#[cfg(test)]
mod tests {
    /// The vector sums of Q6_K's candidates equal the scalar ones bit for bit.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_qx_candidates_equal_the_reference() {
        if !crate::cpu::features().avx2_fma {
            return;
        }
        let mut seed = 3u64;
        let mut r = || crate::formats::blocks::testing::lcg(&mut seed);
        for case in 0..20_000 {
            let x: Vec<f32> = (0..16)
                .map(|_| {
                    if case % 2 == 0 {
                        r()
                    } else {
                        r() * r() * r() * 50.0
                    }
                })
                .collect();
            let max = x
                .iter()
                .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            if max.abs() < 1e-15 {
                continue;
            }
            let nmax = 32;
            // SAFETY: AVX2 was detected above.
            let got = unsafe { super::qx_candidates_avx2(nmax, max, &x) };
            for (k, is) in (-9..=9).filter(|&is| is != 0).enumerate() {
                let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
                let (sumlx, suml2) = super::qx_sums(nmax, iscale, &x);
                assert_eq!(
                    (got[k].0.to_bits(), got[k].1.to_bits()),
                    (sumlx.to_bits(), suml2.to_bits()),
                    "case {case} is {is}"
                );
            }
        }
    }

    /// The AVX2 candidate search gives the scalar reference's scale, min and levels
    /// bit for bit, on random, skewed, constant and tiny blocks.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_candidate_search_equals_the_reference() {
        if !crate::cpu::features().avx2_fma {
            return;
        }
        let mut seed = 11u64;
        let mut r = || crate::formats::blocks::testing::lcg(&mut seed);
        for case in 0..20_000 {
            let x: Vec<f32> = (0..32)
                .map(|i| match case % 5 {
                    0 => r(),
                    1 => r() * r() * r() * 10.0,
                    2 => r().abs() + 0.5,
                    3 => {
                        if i % 7 == 0 {
                            r() * 100.0
                        } else {
                            r() * 1e-3
                        }
                    }
                    _ => (r() * 4.0).round() * 0.25,
                })
                .collect();
            let sum_x2: f32 = x.iter().fold(0.0, |s, v| s + v * v);
            let av_x = (sum_x2 / 32.0).sqrt();
            let w: Vec<f32> = x.iter().map(|v| av_x + v.abs()).collect();
            for (nmax, rmin, nstep) in [(15, -1.0, 20), (31, -0.5, 15)] {
                let min = x.iter().fold(f32::INFINITY, |m, &v| m.min(v)).min(0.0);
                let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                if max == min {
                    continue;
                }
                let sum_w: f32 = w.iter().sum();
                let sum_x = w.iter().zip(&x).fold(0f32, |s, (a, b)| s + a * b);
                let f = super::Fit {
                    nmax,
                    rmin,
                    rdelta: 0.1,
                    nstep,
                    sum_w,
                    sum_x,
                    max,
                };
                let start = (1.0, min, f32::INFINITY);
                let (mut a, mut b) = (start, start);
                let (mut la, mut lb) = ([0u8; 32], [0u8; 32]);
                super::candidates(&f, &x, &w, &mut la, &mut a);
                // SAFETY: AVX2 was detected above.
                unsafe { super::candidates_avx2(&f, &x, &w, &mut lb, &mut b) };
                assert_eq!(
                    (a.0.to_bits(), a.1.to_bits(), a.2.to_bits(), la),
                    (b.0.to_bits(), b.1.to_bits(), b.2.to_bits(), lb),
                    "case {case} nmax {nmax}: {x:?}"
                );
            }
        }
    }

    #[test]
    fn all_scales_at_once_equal_one_by_one() {
        let mut seed = 5u64;
        for _ in 0..1000 {
            let q: [u8; 12] = std::array::from_fn(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            });
            let (sc, m) = super::scales_mins_k4(&q);
            for j in 0..8 {
                assert_eq!((sc[j], m[j]), super::scale_min_k4(j, &q), "{q:?} {j}");
            }
        }
    }
}

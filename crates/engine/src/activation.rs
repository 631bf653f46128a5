//! The gated FFN's activation, fused with the product by `up`: `act(gate) · up` in
//! one pass over f32 memory, vectorised (an exponential written so LLVM vectorises
//! it, where candle calls libm's `tanhf`/`expm1f` one value at a time) and spread
//! over our pool. GELU (tanh form) measured 14 % of Gemma 3 4B prefill through
//! candle, with candle's own thread pool spinning beside ours.
//!
//! Both use `x·σ(z) = x / (1 + e⁻ᶻ)`: SiLU is `x·σ(x)`, and the tanh GELU
//! `½x(1 + tanh u)` equals `x·σ(2u)` exactly, with `u = √(2/π)(x + 0.044715x³)`.
//! The exponential is within 2 ulp, so results stay within float32 rounding of
//! PyTorch's.

use crate::error::Result;
use candle_core::{DType, Device, Tensor};

/// Which activation the gate takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// `x·σ(x)` (Llama, Mistral, Qwen).
    Silu,
    /// PyTorch's `gelu(approximate="tanh")` (Gemma).
    GeluTanh,
}

/// `act(gate) · up` elementwise (same shapes).
pub fn gated(act: Gate, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !matches!(gate.device(), Device::Cpu)
        || gate.dtype() != DType::F32
        || up.dtype() != DType::F32
        || gate.dims() != up.dims()
    {
        // GPUs and other dtypes: candle's ops.
        let a = match act {
            Gate::Silu => candle_nn::ops::silu(gate)?,
            Gate::GeluTanh => gate.gelu()?,
        };
        return Ok((a * up)?);
    }
    let (gate, up) = (gate.contiguous()?, up.contiguous()?);
    let n = gate.elem_count();
    let mut out = vec![0f32; n];
    {
        let (gs, gl) = gate.storage_and_layout();
        let (us, ul) = up.storage_and_layout();
        let (candle_core::Storage::Cpu(g), candle_core::Storage::Cpu(u)) = (&*gs, &*us) else {
            unreachable!("checked: CPU tensors");
        };
        let g = &g.as_slice::<f32>()?[gl.start_offset()..gl.start_offset() + n];
        let u = &u.as_slice::<f32>()?[ul.start_offset()..ul.start_offset() + n];
        apply(act, g, u, &mut out);
    }
    Ok(Tensor::from_vec(out, gate.dims(), gate.device())?)
}

/// 2·√(2/π): the tanh GELU's z = 2u.
const TWO_SQRT_2_OVER_PI: f32 = 1.595_769_2;

/// Values per work item: a few microseconds of work, so a decode step's FFN (10k
/// values at 4B) runs inline and a prefill's spreads over the pool.
const CHUNK: usize = 16384;

/// [`gated`] on slices: `out[i] = act(g[i]) · u[i]`.
pub fn apply(act: Gate, g: &[f32], u: &[f32], out: &mut [f32]) {
    assert!(g.len() == u.len() && g.len() == out.len());
    let run = |g: &[f32], u: &[f32], out: &mut [f32]| match act {
        Gate::Silu => run_chunk(g, u, out, |x| x),
        Gate::GeluTanh => run_chunk(g, u, out, |x| {
            TWO_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
        }),
    };
    if g.len() <= CHUNK {
        return run(g, u, out);
    }
    let ptr = crate::pool::SyncPtr(out.as_mut_ptr());
    crate::pool::run_chunked(g.len().div_ceil(CHUNK), |items| {
        for c in items {
            let r = c * CHUNK..((c + 1) * CHUNK).min(g.len());
            // SAFETY: chunk c's range of `out` is written by this item only.
            let o = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(r.start), r.len()) };
            run(&g[r.clone()], &u[r], o);
        }
    });
}

/// `out = x·σ(z(x))·u` over one chunk; a plain loop LLVM vectorises.
#[inline(always)]
fn run_chunk(g: &[f32], u: &[f32], out: &mut [f32], z: impl Fn(f32) -> f32) {
    for ((o, &x), &y) in out.iter_mut().zip(g).zip(u) {
        *o = x / (1.0 + exp(-z(x))) * y;
    }
}

/// PyTorch's `gelu(approximate="tanh")` of every value (a vision tower's MLP) as
/// `x·σ(2u)`, vectorised and spread over our pool like [`gated`]; candle's `gelu`
/// calls libm one value at a time. Other devices and dtypes go to candle.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 {
        return Ok(x.gelu()?);
    }
    map_f32(x, CHUNK, |src, out| {
        for (o, &v) in out.iter_mut().zip(src) {
            *o = v / (1.0 + exp(-TWO_SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)));
        }
    })
}

/// `softmax(scale · x)` over the last dimension, each row as transformers computes
/// it (the scaled row's maximum subtracted before the exponential), vectorised and
/// spread over our pool; candle's softmax calls libm's `expf` one value at a time,
/// which was a sixth of a vision tower's time. Other devices and dtypes: candle.
pub fn softmax_scaled(x: &Tensor, scale: f32) -> Result<Tensor> {
    let row = x.dims().last().copied().unwrap_or(0);
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 || row == 0 {
        return Ok(candle_nn::ops::softmax_last_dim(&(x * scale as f64)?)?);
    }
    map_f32(x, row * CHUNK.div_ceil(row).max(1), |src, out| {
        for (s, o) in src.chunks_exact(row).zip(out.chunks_exact_mut(row)) {
            softmax_row(s, o, scale);
        }
    })
}

/// One row of [`softmax_scaled`]. The maximum and the sum run in [`LANES`]
/// independent lanes so that they vectorise (a single running value is a chain
/// LLVM may not reorder); the exponentials are a plain loop.
#[inline(always)]
fn softmax_row(s: &[f32], o: &mut [f32], scale: f32) {
    let whole = s.len() / LANES * LANES;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for c in s[..whole].chunks_exact(LANES) {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = m.max(v * scale);
        }
    }
    let max = s[whole..]
        .iter()
        .map(|&v| v * scale)
        .chain(lanes)
        .fold(f32::NEG_INFINITY, f32::max);
    for (o, &v) in o.iter_mut().zip(s) {
        // Below e^−87.3 (where `exp` clamps) is 0: a masked −∞ weighs nothing, as
        // in PyTorch.
        let d = v * scale - max;
        let e = exp(d);
        *o = if d < -87.3 { 0.0 } else { e };
    }
    let mut sums = [0f32; LANES];
    for c in o[..whole].chunks_exact(LANES) {
        for (a, &e) in sums.iter_mut().zip(c) {
            *a += e;
        }
    }
    let sum: f32 = o[whole..].iter().sum::<f32>() + sums.iter().sum::<f32>();
    let inv = 1.0 / sum;
    o.iter_mut().for_each(|o| *o *= inv);
}

/// Independent accumulators of [`softmax_row`]: two AVX-512 registers' worth.
const LANES: usize = 32;

/// `f(src, out)` over chunks of `chunk` values of an F32 CPU tensor (chunks hold
/// whole rows where `f` needs them), in parallel past one chunk.
fn map_f32(x: &Tensor, chunk: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) -> Result<Tensor> {
    let x = x.contiguous()?;
    let n = x.elem_count();
    let mut out = vec![0f32; n];
    {
        let (st, l) = x.storage_and_layout();
        let candle_core::Storage::Cpu(c) = &*st else {
            unreachable!("checked: a CPU tensor");
        };
        let src = &c.as_slice::<f32>()?[l.start_offset()..l.start_offset() + n];
        if n <= chunk {
            f(src, &mut out);
        } else {
            let ptr = crate::pool::SyncPtr(out.as_mut_ptr());
            crate::pool::run_chunked(n.div_ceil(chunk), |items| {
                for c in items {
                    let r = c * chunk..((c + 1) * chunk).min(n);
                    // SAFETY: chunk c's range of `out` is written by this item only.
                    let o =
                        unsafe { std::slice::from_raw_parts_mut(ptr.get().add(r.start), r.len()) };
                    f(&src[r], o);
                }
            });
        }
    }
    Ok(Tensor::from_vec(out, x.dims(), x.device())?)
}

/// e^x within 2 ulp over the range that matters here: inputs are clamped to
/// [-87.3, 88], so the result is never infinite (x·σ then tends to 0 or x as it
/// should). Range reduction `x = n·ln2 + r` in two parts, a degree-6 polynomial on
/// |r| ≤ ln2/2 (Cephes' `expf` coefficients), and 2ⁿ built in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer (ties to even) without a branch.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = 1.987_569_2e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let e = (p * r).mul_add(r, r) + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> f64 {
        ((a as f64 - b as f64) / (b.abs() as f64 * f32::EPSILON as f64)).abs()
    }

    #[test]
    fn exp_is_within_2_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp(x), want));
            x += 0.000_77;
        }
        assert!(worst <= 2.0, "worst {worst} ulp");
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
    }

    /// The ungated GELU equals the gated one with `up` = 1, and the softmax is
    /// within a few ulp of f64 math, rows summing to 1, through the parallel path
    /// (and a row of −∞ but one value, and huge values, stay finite).
    #[test]
    fn gelu_and_softmax_match_references() {
        let row = 4096;
        let n = 3 * row + row * CHUNK.div_ceil(row);
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 50.0 - 10.0)
            .collect();
        let t = Tensor::from_vec(x.clone(), (n / row, row), &Device::Cpu).unwrap();
        let g = gelu_tanh(&t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut want = vec![0f32; n];
        apply(Gate::GeluTanh, &x, &vec![1.0; n], &mut want);
        assert_eq!(g, want);
        let scale = 0.125f32;
        let s = softmax_scaled(&t, scale).unwrap().to_vec2::<f32>().unwrap();
        for (r, got) in s.iter().enumerate() {
            let xs = &x[r * row..(r + 1) * row];
            let max = xs
                .iter()
                .map(|&v| (v * scale) as f64)
                .fold(f64::MIN, f64::max);
            let sum: f64 = xs.iter().map(|&v| ((v * scale) as f64 - max).exp()).sum();
            for (i, &p) in got.iter().enumerate() {
                let want = ((xs[i] * scale) as f64 - max).exp() / sum;
                // The f32 sum of 4096 terms (as PyTorch's) rounds by up to ~64 ulp.
                let err = (p as f64 - want).abs();
                assert!(
                    err <= 64.0 * f32::EPSILON as f64 * want + 1e-30,
                    "{p} vs {want}"
                );
            }
        }
        let odd = Tensor::new(
            &[[f32::NEG_INFINITY, 3e38, f32::NEG_INFINITY, 1.0]],
            &Device::Cpu,
        )
        .unwrap();
        let p = softmax_scaled(&odd, 1.0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(p[0], [0.0, 1.0, 0.0, 0.0]);
    }

    /// Against f64 math of the formulas PyTorch writes (tanh GELU, x·sigmoid),
    /// including large magnitudes where σ saturates, through the parallel path.
    #[test]
    fn gated_activations_match_f64_references() {
        let n = 3 * CHUNK + 77;
        let g: Vec<f32> = (0..n).map(|i| (i as f32 / n as f32 - 0.5) * 40.0).collect();
        let u: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let mut out = vec![0f32; n];
        for act in [Gate::Silu, Gate::GeluTanh] {
            apply(act, &g, &u, &mut out);
            for i in 0..n {
                let x = g[i] as f64;
                let (a, z) = match act {
                    Gate::Silu => (x / (1.0 + (-x).exp()), x),
                    Gate::GeluTanh => {
                        let k = (2.0 / std::f64::consts::PI).sqrt();
                        let t = k * (x + 0.044715 * x * x * x);
                        // ½(1 + tanh t) as 1/(1 + e⁻²ᵗ): in f64 too, 1 + tanh t
                        // loses 2·e²ᵗ of its precision (cancels to 0 once t < −19).
                        let a = if t > -2.0 {
                            0.5 * x * (1.0 + t.tanh())
                        } else {
                            x / (1.0 + (-2.0 * t).exp())
                        };
                        (a, 2.0 * t)
                    }
                };
                let want = a * u[i] as f64;
                let err = (out[i] as f64 - want).abs();
                // A few ulp, plus the rounding of z in f32, which σ(z) magnifies by
                // up to |z| where it is small (PyTorch's 1 + tanh(u) in f32 loses
                // far more there).
                let eps = f32::EPSILON as f64;
                assert!(
                    err <= (4.0 + 4.0 * z.abs()) * eps * want.abs() + 1e-35,
                    "{act:?}({x}) * {}: {} vs {want}",
                    u[i],
                    out[i]
                );
            }
        }
    }
}

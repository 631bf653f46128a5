//! Weight formats, one home each: a format's block layout, its matmul kernels, and
//! where it has them its quantizer, loader and exporter live in its file or folder
//! (`nf4/`, `q4_k/`, `q6_k/`, `q4_1.rs`, `q5_0.rs`, `q8_0.rs`, `q5_k.rs`, `half.rs`).
//! What the GGUF block formats share is in [`blocks`] and [`kquant`]; how every
//! matmul spreads over the cores in [`parallel`].
//!
//! [`Weight`] is the one type model files hold: they never match on format. A
//! matmul takes this CPU's path for its format ([`crate::cpu`]); on a GPU, candle's.

pub mod blocks;
pub mod half;
pub mod kquant;
pub mod nf4;
pub mod parallel;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod wide;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor, D};
use std::sync::Arc;

/// A 2-D weight matrix `[out, in]` used as `y = x · Wᵀ`, or as an embedding table.
#[derive(Clone, Debug)]
pub enum Weight {
    /// A dense tensor: F32, or F16 / BF16 as HF checkpoints store them (multiplied
    /// in f32 without widening the matrix).
    Dense(Tensor),
    /// A GGUF block-quantized tensor, kept packed; the matmul quantizes activations
    /// on the fly like llama.cpp does.
    Gguf(Arc<QTensor>),
    /// bitsandbytes NF4, kept packed; decoded in registers inside the matmul.
    Nf4(Arc<nf4::Nf4Matrix>),
    /// bitsandbytes NF4 in VRAM, as the file stores it ([`nf4::cuda`]).
    #[cfg(feature = "cuda")]
    Nf4Cuda(Arc<nf4::cuda::Nf4Cuda>),
}

impl Weight {
    /// Wraps a tensor read from a GGUF file. Float types become dense tensors
    /// (in F32: half precision overflows in Gemma 3), the rest stay quantized.
    pub fn from_qtensor(q: QTensor) -> Result<Self> {
        match q.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                Ok(Self::Dense(q.dequantize(&q.device())?))
            }
            _ => Ok(Self::Gguf(Arc::new(q))),
        }
    }

    /// `x · Wᵀ` for `x` of shape `[..., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(w) if w.dtype() != DType::F32 && w.device().is_cpu() => half_forward(w, x),
            Self::Dense(w) if w.device().is_cpu() && small_f32(w, x) => f32_small_forward(w, x),
            // On a GPU, BF16 weights multiply in BF16 with F32 accumulation (cuBLAS),
            // as transformers does, rather than widening the matrix on every call.
            Self::Dense(w) if w.dtype() == DType::BF16 => x
                .to_dtype(DType::BF16)?
                .broadcast_matmul(&w.t()?)?
                .to_dtype(x.dtype()),
            Self::Dense(w) => {
                let w = w.to_dtype(x.dtype())?;
                x.broadcast_matmul(&w.t()?)
            }
            Self::Gguf(q) if has_own_kernel(q.dtype()) && x.device().is_cpu() => {
                Ok(own_kernel_forward(&[q], x)?.remove(0))
            }
            Self::Gguf(q) => QMatMul::QTensor(q.clone()).forward(x),
            Self::Nf4(w) => Ok(nf4_forward(&[w], x)?.remove(0)),
            #[cfg(feature = "cuda")]
            Self::Nf4Cuda(w) => w.forward(x),
        }
    }

    /// `x · Wᵢᵀ` for several weights that share their input (q/k/v, gate/up): one
    /// quantization of `x` and one parallel region when our kernels cover them all.
    pub fn forward_many(ws: &[&Weight], x: &Tensor) -> Result<Vec<Tensor>> {
        let own: Option<Vec<&QTensor>> = ws
            .iter()
            .map(|w| match w {
                Self::Gguf(q) if has_own_kernel(q.dtype()) => Some(q.as_ref()),
                _ => None,
            })
            .collect();
        let nf4: Option<Vec<&nf4::Nf4Matrix>> = ws
            .iter()
            .map(|w| match w {
                Self::Nf4(m) => Some(m.as_ref()),
                _ => None,
            })
            .collect();
        match (own, nf4) {
            (Some(qs), _) if x.device().is_cpu() => own_kernel_forward(&qs, x),
            (_, Some(ms)) => nf4_forward(&ms, x),
            _ => ws.iter().map(|w| w.forward(x)).collect(),
        }
    }

    /// [`Weight::forward_many`] with a fixed count, for destructuring.
    pub fn forward_n<const N: usize>(ws: [&Weight; N], x: &Tensor) -> Result<[Tensor; N]> {
        Self::forward_many(&ws, x)?
            .try_into()
            .map_err(|_| candle_core::Error::Msg("forward_many returned the wrong count".into()))
    }

    /// Rows of the matrix for the given ids: `[ids.len(), in]` in F32.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(w) => {
                let n = ids.elem_count();
                let out = w.index_select(&ids.flatten_all()?, 0)?;
                out.to_dtype(DType::F32)?.reshape((n, w.dim(D::Minus1)?))
            }
            Self::Gguf(q) => q.embedding(&ids.flatten_all()?),
            Self::Nf4(w) => {
                let device = ids.device().clone();
                let ids = ids.flatten_all()?.to_vec1::<u32>()?;
                let mut out = vec![0f32; ids.len() * w.cols];
                for (i, &id) in ids.iter().enumerate() {
                    if id as usize >= w.rows {
                        candle_core::bail!("token id {id} outside the embedding ({} rows)", w.rows);
                    }
                    w.dequantize_row(id as usize, &mut out[i * w.cols..(i + 1) * w.cols]);
                }
                Tensor::from_vec(out, (ids.len(), w.cols), &device)
            }
            #[cfg(feature = "cuda")]
            Self::Nf4Cuda(w) => w.embedding(ids),
        }
    }

    /// `[out, in]`.
    pub fn dims(&self) -> (usize, usize) {
        let d = match self {
            Self::Dense(w) => w.dims(),
            Self::Gguf(q) => q.shape().dims(),
            Self::Nf4(w) => return (w.rows, w.cols),
            #[cfg(feature = "cuda")]
            Self::Nf4Cuda(w) => return (w.rows, w.cols),
        };
        (d[0], d.get(1).copied().unwrap_or(1))
    }

    /// Bytes the weight occupies in memory (and reads per full matmul).
    pub fn bytes(&self) -> usize {
        match self {
            Self::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            Self::Gguf(q) => q.storage_size_in_bytes(),
            Self::Nf4(w) => w.bytes(),
            #[cfg(feature = "cuda")]
            Self::Nf4Cuda(w) => w.bytes(),
        }
    }

    /// Name of the storage type, as llama.cpp spells it (`Q4_K`, `F32`, ...).
    pub fn type_name(&self) -> String {
        match self {
            Self::Dense(w) => format!("{:?}", w.dtype()).to_uppercase(),
            Self::Gguf(q) => ggml_type_name(q.dtype()).to_string(),
            Self::Nf4(_) => "NF4".to_string(),
            #[cfg(feature = "cuda")]
            Self::Nf4Cuda(_) => "NF4".to_string(),
        }
    }
}

/// Formats with our own kernel (see [`blocks`]): 16-bit activations keep results
/// within float rounding of the exact product (candle's, like llama.cpp's, use 8 bits),
/// candle's Q4_1 and Q5_0 paths are unvectorised, and all of them then share one
/// low-latency worker pool and one parallel region per group of matrices.
fn has_own_kernel(t: GgmlDType) -> bool {
    matches!(
        t,
        GgmlDType::Q4_0
            | GgmlDType::Q4_1
            | GgmlDType::Q5_0
            | GgmlDType::Q8_0
            | GgmlDType::Q4K
            | GgmlDType::Q6K
    )
}

/// `x · Wᵀ` for an F16 / BF16 matrix through [`half`].
fn half_forward(w: &Tensor, x: &Tensor) -> Result<Tensor> {
    use half::{matmul, HalfRows};
    let (n, k) = w.dims2()?;
    let m = x.elem_count() / k.max(1);
    if x.dim(D::Minus1)? != k {
        candle_core::bail!("matmul: input {:?}, weight {:?}", x.dims(), w.dims());
    }
    let x32 = x.to_dtype(DType::F32)?.contiguous()?;
    if m >= half::GEMM_M {
        return widened_forward(w, &x32.reshape((m, k))?, x.dims(), half::WIDEN_ELEMS);
    }
    let xs = x32.flatten_all()?.to_vec1::<f32>()?;
    let w = w.contiguous()?;
    let (storage, layout) = w.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("half matmul runs on the CPU only");
    };
    let o = layout.start_offset();
    let y = match w.dtype() {
        DType::BF16 => matmul(&xs, m, k, HalfRows::Bf16(&cpu.as_slice()?[o..o + n * k]), n),
        DType::F16 => matmul(&xs, m, k, HalfRows::F16(&cpu.as_slice()?[o..o + n * k]), n),
        t => candle_core::bail!("half matmul on {t:?}"),
    };
    drop(storage);
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Tensor::from_vec(y, dims, x.device())
}

/// `x · Wᵀ` for an F16 / BF16 matrix and many activation rows `x` `[m, k]` (a long
/// prefill, a vision tower's 4096 patches): blocks of weight rows widened to F32
/// (exact) and multiplied by candle's tiled GEMM. The row kernels of [`half`] read
/// every activation row once per 8 weight rows, which at thousands of rows streams
/// the activations from memory hundreds of times per matrix; the GEMM keeps them in
/// cache. Widening costs one pass over the weights per call, small beside the
/// `m`-fold work of the product. Results equal the row kernels' to f32 rounding.
/// At most `widen` weights are widened at once ([`half::WIDEN_ELEMS`]: 16 MB of F32).
fn widened_forward(w: &Tensor, x: &Tensor, dims: &[usize], widen: usize) -> Result<Tensor> {
    let (n, k) = w.dims2()?;
    let rows = (widen / k.max(1)).clamp(1, n);
    let mut parts = Vec::with_capacity(n.div_ceil(rows));
    for first in (0..n).step_by(rows) {
        let wb = w
            .narrow(0, first, rows.min(n - first))?
            .to_dtype(DType::F32)?;
        parts.push(x.matmul(&wb.t()?)?);
    }
    let y = match parts.len() {
        1 => parts.pop().expect("one part"),
        _ => Tensor::cat(&parts, 1)?,
    };
    let mut dims = dims.to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    y.reshape(dims)
}

/// Whether `x · Wᵀ` for an F32 `w` goes to [`half::matmul_f32_small`]: few rows
/// (decode, a verify pass), on the CPU.
fn small_f32(w: &Tensor, x: &Tensor) -> bool {
    let k = w.dim(D::Minus1).unwrap_or(0);
    w.dtype() == DType::F32
        && w.rank() == 2
        && k > 0
        && x.dim(D::Minus1).ok() == Some(k)
        && (2..=half::SMALL_M).contains(&(x.elem_count() / k))
}

/// `x · Wᵀ` for an F32 matrix and a few activation rows ([`half::matmul_f32_small`]).
fn f32_small_forward(w: &Tensor, x: &Tensor) -> Result<Tensor> {
    let (n, k) = w.dims2()?;
    let m = x.elem_count() / k;
    let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let w = w.contiguous()?;
    let (storage, layout) = w.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("f32 matmul runs on the CPU only");
    };
    let o = layout.start_offset();
    let y = half::matmul_f32_small(&xs, m, k, &cpu.as_slice::<f32>()?[o..o + n * k], n);
    drop(storage);
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Tensor::from_vec(y, dims, x.device())
}

/// `x · Wᵢᵀ` for NF4 matrices sharing their input ([`nf4::kernel`]).
fn nf4_forward(ws: &[&nf4::Nf4Matrix], x: &Tensor) -> Result<Vec<Tensor>> {
    let k = x.dim(D::Minus1)?;
    if let Some(w) = ws.iter().find(|w| w.cols != k) {
        candle_core::bail!("matmul: input has {k} columns, NF4 weight {}", w.cols);
    }
    let m = x.elem_count() / k.max(1);
    let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let ys = nf4::kernel::matmul_many(&xs, m, k, ws);
    ys.into_iter()
        .zip(ws)
        .map(|(y, w)| {
            let mut dims = x.dims().to_vec();
            if let Some(last) = dims.last_mut() {
                *last = w.rows;
            }
            Tensor::from_vec(y, dims, x.device())
        })
        .collect()
}

thread_local! {
    static DECODE_EXACT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (a forward pass on this thread) with every activation row through the
/// decode kernels, so that each position's logits are bit for bit what decoding it
/// alone gives: speculative decoding's verify pass. Prefill's tiled kernels (from 4
/// rows of a sequence, on AVX-512) would round differently.
pub fn decode_exact<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            DECODE_EXACT.with(|d| d.set(self.0));
        }
    }
    let _reset = Reset(DECODE_EXACT.with(|d| d.replace(true)));
    f()
}

/// Several matmuls over the same input through our kernels in one parallel region.
fn own_kernel_forward(qs: &[&QTensor], x: &Tensor) -> Result<Vec<Tensor>> {
    use blocks::{blocks, matmul_many, Rows};
    let k = x.dim(D::Minus1)?;
    let m = x.elem_count() / k.max(1);
    // Rows of one sequence: `[B, t, k]` is B sequences of t tokens (Model::forward_batch).
    // A verify pass takes the decode kernels, each row as if alone ([`decode_exact`]).
    let seq_rows = if DECODE_EXACT.with(|d| d.get()) {
        1
    } else if x.rank() >= 2 {
        x.dim(D::Minus2)?
    } else {
        m
    };
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("own kernels run on the CPU only");
    };
    let xs = &cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + m * k];
    let datas: Vec<_> = qs.iter().map(|q| q.data()).collect::<Result<_>>()?;
    let mut mats = Vec::with_capacity(qs.len());
    for (q, data) in qs.iter().zip(&datas) {
        let (n, qk) = q.shape().dims2()?;
        if qk != k {
            candle_core::bail!("matmul: input has {k} columns, weight {:?}", q.shape());
        }
        let bad = || {
            candle_core::Error::Msg(format!(
                "{:?} tensor is not whole, aligned blocks",
                q.dtype()
            ))
        };
        let rows = match q.dtype() {
            GgmlDType::Q4_0 => Rows::Q4_0(blocks(data).ok_or_else(bad)?),
            GgmlDType::Q4_1 => Rows::Q4_1(blocks(data).ok_or_else(bad)?),
            GgmlDType::Q5_0 => Rows::Q5_0(blocks(data).ok_or_else(bad)?),
            GgmlDType::Q8_0 => Rows::Q8_0(blocks(data).ok_or_else(bad)?),
            GgmlDType::Q4K => Rows::Q4K(blocks(data).ok_or_else(bad)?),
            GgmlDType::Q6K => Rows::Q6K(blocks(data).ok_or_else(bad)?),
            t => candle_core::bail!("no kernel for {t:?}"),
        };
        mats.push((rows, n));
    }
    let outs = matmul_many(xs, m, seq_rows, k, &mats);
    drop(storage);
    outs.into_iter()
        .zip(&mats)
        .map(|(y, (_, n))| {
            let mut dims = x.dims().to_vec();
            if let Some(last) = dims.last_mut() {
                *last = *n;
            }
            Tensor::from_vec(y, dims, x.device())
        })
        .collect()
}

/// Where each GGML block format keeps its f16 scales: (bytes per block, offsets of
/// the scales in a block). A NaN or infinite scale makes its whole block so; checking
/// the scales finds such a tensor without decoding it. `None` for the float types
/// (checked value by value) and Q8_K (an f32 scale, checked as such).
fn f16_scales(t: GgmlDType) -> Option<(usize, &'static [usize])> {
    Some(match t {
        GgmlDType::Q4_0 => (18, &[0]),
        GgmlDType::Q4_1 => (20, &[0, 2]),
        GgmlDType::Q5_0 => (22, &[0]),
        GgmlDType::Q5_1 => (24, &[0, 2]),
        GgmlDType::Q8_0 => (34, &[0]),
        GgmlDType::Q8_1 => (36, &[0, 2]),
        GgmlDType::Q2K => (84, &[80, 82]),
        GgmlDType::Q3K => (110, &[108]),
        GgmlDType::Q4K => (144, &[0, 2]),
        GgmlDType::Q5K => (176, &[0, 2]),
        GgmlDType::Q6K => (210, &[208]),
        _ => return None,
    })
}

/// Where `q` holds a NaN or infinity: `Some(description)` of the first one (an
/// element, or a block whose scale is one), `None` when every value is finite.
pub fn first_non_finite(q: &QTensor) -> Result<Option<String>> {
    let data = q.data()?;
    if let Some((block, offsets)) = f16_scales(q.dtype()) {
        let bad = data.chunks_exact(block).position(|b| {
            offsets
                .iter()
                .any(|&o| !::half::f16::from_le_bytes([b[o], b[o + 1]]).is_finite())
        });
        return Ok(bad.map(|i| format!("block {i} has a NaN or infinite scale")));
    }
    let bad = match q.dtype() {
        GgmlDType::F32 => data
            .chunks_exact(4)
            .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
        GgmlDType::F16 => data
            .chunks_exact(2)
            .position(|b| !::half::f16::from_le_bytes([b[0], b[1]]).is_finite()),
        GgmlDType::BF16 => data
            .chunks_exact(2)
            .position(|b| !::half::bf16::from_le_bytes([b[0], b[1]]).is_finite()),
        // Q8_K: an f32 scale first in each 292-byte block.
        _ => data
            .chunks_exact(292)
            .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
    };
    Ok(bad.map(|i| format!("element {i} is NaN or infinite")))
}

/// llama.cpp's spelling of a GGML type.
pub fn ggml_type_name(t: GgmlDType) -> &'static str {
    match t {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// From [`half::GEMM_M`] rows on, F16 / BF16 products go through widened blocks
    /// and candle's GEMM (here in blocks of 50 rows and a ragged last one, small
    /// enough for the aarch64 run under qemu); they equal the row kernels' to f32
    /// rounding, and `Weight::forward` takes that path.
    #[test]
    fn widened_gemm_equals_the_row_kernels() {
        let (n, k) = (137, 96);
        for m in [half::GEMM_M, 131] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
                .collect();
            let wv: Vec<f32> = (0..n * k)
                .map(|i| ((i * 53) % 97) as f32 / 48.0 - 1.0)
                .collect();
            let xt = Tensor::from_vec(x.clone(), (1, m, k), &Device::Cpu).unwrap();
            for dt in [DType::BF16, DType::F16] {
                let w = Tensor::from_vec(wv.clone(), (n, k), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dt)
                    .unwrap();
                let x2 = xt.reshape((m, k)).unwrap();
                let got = widened_forward(&w, &x2, xt.dims(), 50 * k).unwrap();
                assert_eq!(got.dims(), [1, m, n]);
                let whole = Weight::Dense(w.clone()).forward(&xt).unwrap();
                let whole = whole.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(got, whole, "one block or several: the same products");
                let flat = w.flatten_all().unwrap();
                let want = match dt {
                    DType::BF16 => {
                        let v = flat.to_vec1::<::half::bf16>().unwrap();
                        half::matmul(&x, m, k, half::HalfRows::Bf16(&v), n)
                    }
                    _ => {
                        let v = flat.to_vec1::<::half::f16>().unwrap();
                        half::matmul(&x, m, k, half::HalfRows::F16(&v), n)
                    }
                };
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs() / (b.abs() + 1.0))
                    .fold(0f32, f32::max);
                assert!(worst < 1e-5, "{dt:?} m={m}: {worst}");
            }
        }
    }
}

//! bitsandbytes NF4 matrices in an HF folder, as transformers saves them: the packed
//! codes (`U8`), `absmax` (f32, or 8-bit codes with `nested_absmax`,
//! `nested_quant_map` and the mean in the quant state when double-quantized),
//! `quant_map` and the JSON quant state. Every size is checked against the others
//! before a scale is read.

use super::Nf4Matrix;
use crate::error::Result;
use crate::formats::Weight;
use crate::hf::HfFolder;
use candle_core::{DType, Device, Tensor};
use safetensors::Dtype;

/// Whether the folder stores `hf_name` as a bitsandbytes 4-bit matrix.
pub fn is_nf4(h: &HfFolder, hf_name: &str) -> bool {
    h.entry(hf_name).is_ok_and(|e| e.dtype == Dtype::U8) && h.has(&format!("{hf_name}.absmax"))
}

/// The matrix `[rows, cols]`, kept packed on the CPU and on NVIDIA GPUs
/// ([`super::cuda`]). On other GPUs (Metal), which have no NF4 kernel, it is held in
/// BF16.
pub fn weight(
    h: &HfFolder,
    hf_name: &str,
    shape: (usize, usize),
    device: &Device,
) -> Result<Weight> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(gpu) = device {
        return cuda_weight(h, hf_name, shape, gpu);
    }
    let m = packed(h, hf_name, shape)?;
    if device.is_cpu() {
        return Ok(Weight::Nf4(std::sync::Arc::new(m)));
    }
    let mut dense = vec![0f32; shape.0 * shape.1];
    for (r, row) in dense.chunks_exact_mut(shape.1).enumerate() {
        m.dequantize_row(r, row);
    }
    let t = Tensor::from_vec(dense, (shape.0, shape.1), device)?;
    Ok(Weight::Dense(t.to_dtype(DType::BF16)?))
}

/// The matrix uploaded as stored: codes, and the absmax codes with their nested
/// scales and map rather than the resolved f32 scales (4.13 instead of 4.5 bits per
/// weight). The scales are still resolved here once, to refuse a non-finite one as
/// the CPU path does.
#[cfg(feature = "cuda")]
fn cuda_weight(
    h: &HfFolder,
    hf_name: &str,
    shape: (usize, usize),
    gpu: &candle_core::cuda::CudaDevice,
) -> Result<Weight> {
    let l = check(h, hf_name, shape)?;
    let stored = stored_scales(h, hf_name, &l)?;
    finite(h, hf_name, stored.resolved())?;
    let (packed, _, _) = h.any_bytes(hf_name)?;
    let m = super::cuda::Nf4Cuda::new(gpu, shape, l.blocksize, packed, stored)?;
    Ok(Weight::Nf4Cuda(std::sync::Arc::new(m)))
}

/// A matrix's block scales as the file stores them.
pub enum Scales<'a> {
    /// One f32 per block.
    Plain(Vec<f32>),
    /// Double quantization: `map[codes[b]] · nested[b / nested_blocksize] + offset`.
    Double {
        /// One 8-bit code per block.
        codes: &'a [u8],
        /// One f32 per `nested_blocksize` blocks.
        nested: Vec<f32>,
        /// The 256-entry map of the codes.
        map: Vec<f32>,
        /// Blocks per nested scale (a power of two).
        nested_blocksize: usize,
        /// The mean added back.
        offset: f32,
    },
}

impl Scales<'_> {
    /// One f32 per block (sizes checked by [`check`]).
    fn resolved(&self) -> Vec<f32> {
        match self {
            Scales::Plain(a) => a.clone(),
            Scales::Double {
                codes,
                nested,
                map,
                nested_blocksize,
                offset,
            } => codes
                .iter()
                .enumerate()
                .map(|(i, &c)| map[c as usize] * nested[i / nested_blocksize] + offset)
                .collect(),
        }
    }
}

/// The matrix shape a 4-bit tensor's quant state records, once everything about the
/// tensor is checked ([`check`]).
pub fn shape(h: &HfFolder, hf_name: &str) -> Result<Vec<usize>> {
    let e = h.entry(hf_name)?;
    let state = quant_state(h, hf_name)?;
    let shape: Vec<usize> = state["shape"]
        .as_array()
        .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
        .ok_or_else(|| h.tensor_err(e, "quant state has no shape"))?;
    match shape[..] {
        [rows, cols] if rows.checked_mul(cols).is_some_and(|n| n <= 1 << 40) => {
            check(h, hf_name, (rows, cols))?;
            Ok(shape)
        }
        _ => Err(h.tensor_err(e, format!("quant state shape {shape:?} is not a matrix"))),
    }
}

/// The JSON quant state of a 4-bit tensor (NF4 only: FP4 is refused).
fn quant_state(h: &HfFolder, hf_name: &str) -> Result<serde_json::Value> {
    let e = h.entry(hf_name)?;
    let bad = |m: String| h.tensor_err(e, m);
    let state_name = format!("{hf_name}.quant_state.bitsandbytes__nf4");
    if !h.has(&state_name) {
        let fp4 = format!("{hf_name}.quant_state.bitsandbytes__fp4");
        return Err(bad(if h.has(&fp4) {
            "FP4 (bitsandbytes) is not supported, only NF4".into()
        } else {
            "4-bit weight without a bitsandbytes quant state".into()
        }));
    }
    let (state, _, _) = h.any_bytes(&state_name)?;
    serde_json::from_slice(state).map_err(|err| bad(format!("quant state is not JSON: {err}")))
}

/// A bitsandbytes NF4 matrix: packed codes, the block scales (double quantization
/// resolved with the stored maps), checked against the quant state's shape.
fn packed(h: &HfFolder, hf_name: &str, shape: (usize, usize)) -> Result<Nf4Matrix> {
    let l = check(h, hf_name, shape)?;
    let scales = finite(h, hf_name, stored_scales(h, hf_name, &l)?.resolved())?;
    let (packed, _, _) = h.any_bytes(hf_name)?;
    Ok(Nf4Matrix {
        rows: shape.0,
        cols: shape.1,
        blocksize: l.blocksize,
        packed: packed.to_vec(),
        scales,
    })
}

/// The block scales of a checked matrix as stored, each table read once.
fn stored_scales<'a>(h: &'a HfFolder, hf_name: &str, l: &Layout) -> Result<Scales<'a>> {
    let absmax_name = format!("{hf_name}.absmax");
    Ok(match l.nested {
        Some((nested_blocksize, offset)) => Scales::Double {
            codes: h.any_bytes(&absmax_name)?.0,
            nested: h.f32s(&format!("{hf_name}.nested_absmax"))?,
            map: h.f32s(&format!("{hf_name}.nested_quant_map"))?,
            nested_blocksize,
            offset,
        },
        None => Scales::Plain(h.f32s(&absmax_name)?),
    })
}

/// `scales`, refused when one is NaN or infinite.
fn finite(h: &HfFolder, hf_name: &str, scales: Vec<f32>) -> Result<Vec<f32>> {
    if let Some(i) = scales.iter().position(|s| !s.is_finite()) {
        let e = h.entry(hf_name)?;
        return Err(h.tensor_err(e, format!("block scale {i} is NaN or infinite")));
    }
    Ok(scales)
}

/// What a 4-bit matrix's quant state says, once checked.
struct Layout {
    blocksize: usize,
    /// Double quantization: (blocks per nested scale, the mean added back).
    nested: Option<(usize, f32)>,
}

/// Checks a 4-bit matrix of `shape` without decoding it: the quant state (block
/// sizes, shape, offset), the NF4 table, and every size against the others, so that
/// `info` refuses what loading would, and loading reads nothing out of bounds.
fn check(h: &HfFolder, hf_name: &str, shape: (usize, usize)) -> Result<Layout> {
    let e = h.entry(hf_name)?;
    let bad = |m: String| h.tensor_err(e, m);
    let state = quant_state(h, hf_name)?;
    // Powers of two up to 4096, as bitsandbytes allows; anything else is a damaged or
    // hostile state (0 would divide by zero in every kernel).
    let block_size = |key: &str, default: u64| -> Result<usize> {
        match state.get(key) {
            None => Ok(default as usize),
            Some(v) => match v.as_u64() {
                Some(b) if b.is_power_of_two() && (16..=4096).contains(&b) => Ok(b as usize),
                _ => Err(bad(format!(
                    "quant state `{key}` is {v}: expected a power of two from 16 to 4096"
                ))),
            },
        }
    };
    let blocksize = block_size("blocksize", 64)?;
    let want = [shape.0, shape.1];
    let stored: Vec<usize> = state["shape"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64().map(|x| x as usize))
                .collect()
        })
        .unwrap_or_default();
    if stored != want {
        return Err(bad(format!(
            "shape {stored:?}, expected {want:?} from config.json"
        )));
    }
    if h.f32s(&format!("{hf_name}.quant_map"))? != super::NF4 {
        return Err(bad("quant_map is not the NF4 table".into()));
    }
    let n = shape.0 * shape.1;
    let blocks = n.div_ceil(blocksize);
    let (packed, _, _) = h.any_bytes(hf_name)?;
    if packed.len() != n.div_ceil(2) {
        return Err(bad(format!(
            "{} packed bytes for {n} weights",
            packed.len()
        )));
    }
    let (absmax, adtype, _) = h.any_bytes(&format!("{hf_name}.absmax"))?;
    let nested = match adtype {
        Dtype::U8 => {
            let nb = block_size("nested_blocksize", 256)?;
            let offset = match state.get("nested_offset").and_then(|v| v.as_f64()) {
                Some(o) if o.is_finite() => o as f32,
                _ => {
                    return Err(bad(format!(
                        "quant state `nested_offset` is {}: expected a finite number",
                        state
                            .get("nested_offset")
                            .unwrap_or(&serde_json::Value::Null)
                    )))
                }
            };
            if absmax.len() != blocks {
                return Err(bad(format!(
                    "{} absmax codes for {blocks} blocks",
                    absmax.len()
                )));
            }
            let (map, _, _) = h.any_bytes(&format!("{hf_name}.nested_quant_map"))?;
            let (nested, _, _) = h.any_bytes(&format!("{hf_name}.nested_absmax"))?;
            if map.len() != 256 * 4 || nested.len() != blocks.div_ceil(nb) * 4 {
                return Err(bad("nested quantization tables have the wrong size".into()));
            }
            Some((nb, offset))
        }
        Dtype::F32 if absmax.len() == blocks * 4 => None,
        Dtype::F32 => {
            return Err(bad(format!(
                "{} block scales for {blocks} blocks",
                absmax.len() / 4
            )))
        }
        d => return Err(bad(format!("absmax dtype {d:?}"))),
    };
    Ok(Layout { blocksize, nested })
}

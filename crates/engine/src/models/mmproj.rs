//! Writing llama.cpp `mmproj` GGUF files: a vision tower and projector
//! ([`super::siglip`]) with the `clip.*` metadata and the tensor types llama.cpp's
//! converter gives Gemma 3's (`Gemma3VisionModel`): the patch and position
//! embeddings, norms and biases in F32, the projection in F16 (llama.cpp issue
//! 13025), the other matrices in F16 or Q8_0. Values are stored as llama.cpp
//! stores them ([`super::siglip::stored`]: the projector's norm as `1 + w`).

use super::siglip::{self, VisionConfig, VisionFiles};
use super::Stored;
use crate::error::{Error, Result};
use crate::gguf::writer::{GgufWriter, PlannedTensor};
use candle_core::quantized::GgmlDType;
use std::path::Path;

/// How an mmproj stores the tower's matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmprojType {
    /// F16, as llama.cpp's converter writes by default.
    F16,
    /// F32.
    F32,
    /// Q8_0 (the projection stays F16, as llama.cpp keeps it).
    Q8_0,
}

/// A tower's tensor values by mmproj name and shape: transformers' values, F32,
/// row-major.
pub type Values<'a> = &'a mut dyn FnMut(&str, &[usize]) -> Result<Vec<f32>>;

/// The type tensor `name` of shape `shape` is written in.
fn stored_type(name: &str, shape: &[usize], kind: MmprojType) -> GgmlDType {
    let embedding = name.starts_with("v.patch_embd") || name.starts_with("v.position_embd");
    if shape.len() < 2 || embedding {
        return GgmlDType::F32;
    }
    match (kind, name) {
        (MmprojType::F32, _) => GgmlDType::F32,
        (_, "mm.input_projection.weight") => GgmlDType::F16,
        (MmprojType::Q8_0, _) if shape[shape.len() - 1].is_multiple_of(32) => GgmlDType::Q8_0,
        _ => GgmlDType::F16,
    }
}

/// Writes an mmproj GGUF at `out` for the tower of configuration `cfg`, whose
/// tensors' values (transformers' values, F32, row-major) `values(mmproj name,
/// shape)` gives; `mean` and `std` are the preprocessor's normalisation.
pub fn write(
    out: &Path,
    cfg: &VisionConfig,
    mean: [f32; 3],
    std: [f32; 3],
    kind: MmprojType,
    values: Values<'_>,
) -> Result<u64> {
    let plan: Vec<PlannedTensor> = cfg
        .tensors()
        .into_iter()
        .map(|(name, shape)| PlannedTensor {
            dtype: stored_type(&name, &shape, kind),
            name,
            shape,
        })
        .collect();
    let bytes = plan.iter().map(PlannedTensor::bytes).sum();
    let mut w = GgufWriter::create(out, &cfg.mmproj_metadata(mean, std), plan.clone())?;
    for t in &plan {
        let mut v = values(&t.name, &t.shape)?;
        if siglip::stored(&t.name) == Stored::PlusOne {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        let data = match t.dtype {
            GgmlDType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            GgmlDType::F16 => v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
            _ => {
                let mut b = Vec::with_capacity(v.len() / 32 * 34);
                for block in v.chunks_exact(32) {
                    crate::formats::q8_0::quantize_block(block, &mut b);
                }
                b
            }
        };
        w.write(&data)?;
    }
    w.finish()?;
    Ok(bytes)
}

/// Writes the mmproj of an HF folder's vision tower (checked first) at `out`.
pub fn from_folder(
    files: VisionFiles<'_>,
    cfg: &VisionConfig,
    mean: [f32; 3],
    std: [f32; 3],
    kind: MmprojType,
    out: &Path,
) -> Result<u64> {
    let VisionFiles::Hf(h) = files else {
        return Err(Error::Invalid(format!(
            "{}: already an mmproj",
            files.path().display()
        )));
    };
    files.check(cfg)?;
    write(out, cfg, mean, std, kind, &mut |name, _| {
        let hf = siglip::hf_name(name)
            .ok_or_else(|| Error::Invalid(format!("{name}: no transformers name")))?;
        let (bytes, dtype, _) = h.raw(&hf)?;
        let mut v = Vec::with_capacity(bytes.len() / dtype.size_in_bytes());
        crate::hf::extend_f32(&mut v, bytes, dtype);
        Ok(v)
    })
}

/// The values of a synthetic tower (`unicorn synth`): matrices and embeddings
/// random like the text model's ([`crate::synth::values`]), LayerNorm scales 1 and
/// biases 0, the projector's norm `w` = 0 (a scale of 1).
pub fn synthetic(seed: u64) -> impl FnMut(&str, &[usize]) -> Result<Vec<f32>> {
    move |name, shape| {
        let n: usize = shape.iter().product();
        Ok(match (shape.len(), name) {
            (1, "mm.soft_emb_norm.weight") => vec![0.0; n],
            (1, _) if name.ends_with(".weight") => vec![1.0; n],
            (1, _) => vec![0.0; n],
            _ => crate::synth::values(seed, name, "F32", 0..n),
        })
    }
}

//! Where a tensor's rows come from (the source's file with positioned reads, or the
//! synthetic generator) and how they are brought into GGUF's layout, one chunk at a
//! time, so memory stays flat whatever the model's size.

use super::plan::Job;
use crate::error::{Error, Result};
use crate::hf::names;
use crate::models::{Config, Stored};
use crate::source::Source;
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use std::path::Path;

/// Where a tensor's rows are read from: a file, the offset of row 0, the stored type
/// and the bytes per row.
pub(super) struct Location {
    file: std::fs::File,
    pub path: std::path::PathBuf,
    offset: u64,
    kind: Kind,
    row_bytes: usize,
}

#[derive(Clone, Copy)]
enum Kind {
    Float(candle_core::DType),
    Ggml(GgmlDType),
}

pub(super) fn locate(source: &Source, job: &Job, cols: usize) -> Result<Location> {
    let (path, offset, kind) = match source {
        Source::Gguf(g) => {
            let (off, t, _) = g.tensor_location(&job.gguf_name)?;
            (g.path().to_path_buf(), off, Kind::Ggml(t))
        }
        Source::Hf(h) => {
            let hf = names::gguf_to_hf(h.arch(), &job.gguf_name).unwrap_or_default();
            let (p, off, dtype, _) = h.tensor_location(&hf)?;
            (p.to_path_buf(), off, Kind::Float(dtype))
        }
    };
    let row_bytes = match kind {
        Kind::Float(d) => cols * d.size_in_bytes(),
        Kind::Ggml(t) => cols / t.block_size() * t.type_size(),
    };
    let file = std::fs::File::open(&path).map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    Ok(Location {
        file,
        path,
        offset,
        kind,
        row_bytes,
    })
}

/// Rows `r0..r1` of a source tensor in f32, as stored. Positioned reads keep only
/// this chunk resident, whatever the size of the model.
pub(super) fn read_rows(
    loc: &Location,
    job: &Job,
    cols: usize,
    r0: usize,
    r1: usize,
) -> Result<Vec<f32>> {
    use std::os::unix::fs::FileExt;
    let terr = |e: candle_core::Error| Error::Tensor {
        path: loc.path.clone(),
        tensor: job.gguf_name.clone(),
        message: e.to_string(),
    };
    let mut bytes = vec![0u8; (r1 - r0) * loc.row_bytes];
    loc.file
        .read_exact_at(&mut bytes, loc.offset + (r0 * loc.row_bytes) as u64)
        .map_err(|e| Error::Io {
            path: loc.path.clone(),
            source: e,
        })?;
    let t = match loc.kind {
        Kind::Float(d) => Tensor::from_raw_buffer(&bytes, d, &[(r1 - r0) * cols], &Device::Cpu),
        Kind::Ggml(t) => candle_core::quantized::ggml_file::qtensor_from_ggml(
            t,
            &bytes,
            vec![r1 - r0, cols],
            &Device::Cpu,
        )
        .and_then(|q| q.dequantize(&Device::Cpu)),
    };
    t.and_then(|x| x.flatten_all())
        .and_then(|x| x.to_dtype(candle_core::DType::F32))
        .and_then(|x| x.to_vec1::<f32>())
        .map_err(terr)
}

/// Source rows `r0..r1` in GGUF's layout: checked finite, Gemma norms as `1 + w`,
/// llama q/k rows in llama.cpp's order.
pub(super) fn to_gguf_rows(
    path: &Path,
    job: &Job,
    cols: usize,
    r0: usize,
    mut v: Vec<f32>,
) -> Result<Vec<f32>> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Tensor {
            path: path.to_path_buf(),
            tensor: job.gguf_name.clone(),
            message: format!("element {} is NaN or infinite", r0 * cols + i),
        });
    }
    match job.stored {
        Stored::Same => {}
        Stored::PlusOne => v.iter_mut().for_each(|x| *x += 1.0),
        Stored::PermutedHeads(heads) => v = permute_heads(v, heads, job.shape[0], cols),
    }
    Ok(v)
}

/// Rows of a q/k projection (`rows` in all, `heads` heads) from rotate-half order to
/// llama.cpp's interleaved pairs; `v` holds whole heads.
fn permute_heads(v: Vec<f32>, heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = vec![0f32; v.len()];
    for r in 0..v.len() / cols {
        // Row r of head h: rotate-half index j·hd/2 + i goes to 2·i + j.
        let (h, within) = (r / hd, r % hd);
        let (j, i) = (within / (hd / 2), within % (hd / 2));
        let to = h * hd + 2 * i + j;
        out[to * cols..(to + 1) * cols].copy_from_slice(&v[r * cols..(r + 1) * cols]);
    }
    out
}

/// Where a tensor's rows come from.
pub(super) enum Rows<'a> {
    /// Read from the source's file.
    File(Location),
    /// Generated as `unicorn synth` with this seed would have written them.
    Synthetic(u64),
    /// Computed from the configuration ([`Job::computed`]).
    Computed(&'a [f32]),
}

/// Rows `r0..r1` of a synthetic model's tensor as its folder would store them.
pub(super) fn synthetic_rows(
    source: &Source,
    seed: u64,
    job: &Job,
    cols: usize,
    r0: usize,
    r1: usize,
) -> Result<Vec<f32>> {
    let Source::Hf(h) = source else {
        return Err(Error::Invalid(format!(
            "{}: synthetic weights need a synth folder",
            source.path().display()
        )));
    };
    let hf = names::gguf_to_hf(h.arch(), &job.gguf_name).unwrap_or_default();
    let (_, _, dtype, shape) = h.tensor_location(&hf)?;
    if shape.len() == 1 {
        let config = Config::from_hf(h.config())?;
        return Ok(vec![
            crate::synth::vector_value(&config, &hf);
            (r1 - r0) * cols
        ]);
    }
    let dtype = crate::hf::float_dtype_name(dtype);
    Ok(crate::synth::values(seed, &hf, dtype, r0 * cols..r1 * cols))
}

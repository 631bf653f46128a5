//! Writing the GGUF: each tensor's chunks read, brought into GGUF's layout,
//! quantized in parallel pieces of whole rows, written, and measured for the report.

use super::plan::Job;
use super::read::{locate, read_rows, synthetic_rows, to_gguf_rows, Rows};
use super::{TensorReport, CHUNK_VALUES};
use crate::error::{Error, Result};
use crate::formats::ggml_type_name;
use crate::gguf::writer::{GgufWriter, PlannedTensor};
use crate::models::Stored;
use crate::source::Source;
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::path::Path;
use unicorn_common::{Meter, Progress};

pub(super) fn write(
    source: &Source,
    synthetic: Option<u64>,
    tmp: &Path,
    metadata: &[(String, Value)],
    jobs: &[Job],
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Vec<TensorReport>> {
    let meter = Meter::start();
    let plan: Vec<PlannedTensor> = jobs
        .iter()
        .map(|j| PlannedTensor {
            name: j.gguf_name.clone(),
            dtype: j.out,
            shape: j.shape.clone(),
        })
        .collect();
    let mut w = GgufWriter::create(tmp, metadata, plan)?;
    let bytes_total: u64 = jobs.iter().map(|j| j.source_bytes).sum();
    let mut bytes_read = 0u64;
    let mut reports = Vec::with_capacity(jobs.len());
    for (ti, job) in jobs.iter().enumerate() {
        let (rows, cols) = match job.shape.as_slice() {
            [r, c] => (*r, *c),
            s => (1, s.iter().product()),
        };
        let rows_from = match (&job.computed, synthetic) {
            (Some(v), _) => Rows::Computed(v),
            (None, None) => Rows::File(locate(source, job, cols)?),
            (None, Some(seed)) => Rows::Synthetic(seed),
        };
        // Whole heads per chunk for permuted tensors; whole rows always.
        let unit = match job.stored {
            Stored::PermutedHeads(h) => job.shape[0] / h,
            _ => 1,
        };
        let chunk_rows = ((CHUNK_VALUES / cols.max(1)).max(1)).div_ceil(unit) * unit;
        let (mut err2, mut sig2) = (0f64, 0f64);
        let mut written = 0u64;
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + chunk_rows).min(rows);
            let (raw, file) = match &rows_from {
                Rows::File(loc) => (read_rows(loc, job, cols, r0, r1)?, loc.path.as_path()),
                Rows::Synthetic(seed) => (
                    synthetic_rows(source, *seed, job, cols, r0, r1)?,
                    source.path(),
                ),
                Rows::Computed(v) => (v[r0 * cols..r1 * cols].to_vec(), source.path()),
            };
            let values = to_gguf_rows(file, job, cols, r0, raw)?;
            let (bytes, e2, s2) =
                quantize_rows(&values, r1 - r0, cols, job.out).map_err(|e| Error::Tensor {
                    path: source.path().to_path_buf(),
                    tensor: job.gguf_name.clone(),
                    message: e.to_string(),
                })?;
            w.write(&bytes)?;
            written += bytes.len() as u64;
            err2 += e2;
            sig2 += s2;
            bytes_read += job.source_bytes * (r1 - r0) as u64 / rows as u64;
            let at = meter.at(&job.gguf_name, ti + 1, jobs.len(), bytes_read, bytes_total);
            if !progress(&at) {
                return Err(Error::Cancelled);
            }
            r0 = r1;
        }
        reports.push(TensorReport::from_sums(
            &job.gguf_name,
            ggml_type_name(job.out),
            &job.shape,
            written,
            err2,
            sig2,
        ));
    }
    w.finish()?;
    Ok(reports)
}

/// Quantizes `rows` × `cols` values in parallel pieces of whole rows; returns the
/// bytes and the summed squared error and signal.
fn quantize_rows(
    values: &[f32],
    rows: usize,
    cols: usize,
    t: GgmlDType,
) -> candle_core::Result<(Vec<u8>, f64, f64)> {
    let threads = rayon::current_num_threads().max(1);
    let per = rows.div_ceil(threads).max(1);
    let pieces: Vec<candle_core::Result<(Vec<u8>, f64, f64)>> = (0..rows.div_ceil(per))
        .into_par_iter()
        .map(|p| {
            let (a, b) = (p * per, ((p + 1) * per).min(rows));
            let x = &values[a * cols..b * cols];
            let (bytes, q) = match t {
                // ggml's current reference quantizers (candle's follow an older ggml).
                GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K => {
                    let bytes = match t {
                        GgmlDType::Q4K => crate::formats::q4_k::quantize::quantize(x),
                        GgmlDType::Q5K => crate::formats::q5_k::quantize(x),
                        _ => crate::formats::q6_k::quantize::quantize(x),
                    };
                    let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
                        t,
                        &bytes,
                        vec![b - a, cols],
                        &Device::Cpu,
                    )?;
                    (bytes, q)
                }
                _ => {
                    let src = Tensor::from_slice(x, (b - a, cols), &Device::Cpu)?;
                    let q = QTensor::quantize(&src, t)?;
                    (q.data()?.into_owned(), q)
                }
            };
            let back = q
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let (mut e2, mut s2) = (0f64, 0f64);
            for (o, r) in x.iter().zip(&back) {
                let d = (*o - *r) as f64;
                e2 += d * d;
                s2 += (*o as f64) * (*o as f64);
            }
            Ok((bytes, e2, s2))
        })
        .collect();
    let mut bytes = Vec::new();
    let (mut e2, mut s2) = (0f64, 0f64);
    for p in pieces {
        let (b, e, s) = p?;
        bytes.extend(b);
        e2 += e;
        s2 += s;
    }
    Ok((bytes, e2, s2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::writer::PlannedTensor;

    /// Round-trip error of every type we write, on Gaussian rows: relative error
    /// ‖x − deq(q(x))‖ / ‖x‖ below each format's bound (about 1.25× what was measured:
    /// F16 2.1e-4, BF16 1.7e-3, Q8_0 5.4e-3, Q6_K 0.018, Q5_0 0.043, Q5_1 0.038, Q5_K
    /// 0.037, Q4_0 0.086, Q4_K 0.075, Q3_K 0.15, Q2_K 0.29), and the planned bytes.
    #[test]
    fn every_block_type_round_trips_within_its_bound() {
        let (rows, cols) = (64, 512);
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let x: Vec<f32> = (0..rows * cols)
            .map(|_| {
                // Box-Muller from a 64-bit LCG.
                let mut u = || {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
                };
                ((-2.0 * u().ln()).sqrt() * (2.0 * std::f64::consts::PI * u()).cos()) as f32
            })
            .collect();
        for (t, bound) in [
            (GgmlDType::F16, 0.0003),
            (GgmlDType::BF16, 0.0022),
            (GgmlDType::Q8_0, 0.007),
            (GgmlDType::Q6K, 0.024),
            (GgmlDType::Q5_0, 0.055),
            (GgmlDType::Q5_1, 0.05),
            (GgmlDType::Q5K, 0.048),
            (GgmlDType::Q4_0, 0.11),
            (GgmlDType::Q4K, 0.095),
            (GgmlDType::Q3K, 0.19),
            (GgmlDType::Q2K, 0.37),
        ] {
            let (bytes, e2, s2) = quantize_rows(&x, rows, cols, t).unwrap();
            let plan = PlannedTensor {
                name: "x".into(),
                dtype: t,
                shape: vec![rows, cols],
            };
            assert_eq!(bytes.len() as u64, plan.bytes(), "{t:?}");
            let rel = (e2 / s2).sqrt();
            eprintln!("{t:?}: relative error {rel:.5}");
            assert!(rel < bound && rel > 0.0, "{t:?}: {rel}");
        }
    }
}

//! Quantization to GGUF, streamed: one tensor at a time from the memory-mapped source
//! (an HF folder, or a GGUF to re-quantize), rows converted to f32 and quantized in
//! parallel chunks with candle's ggml-compatible quantizers, written to a temporary
//! file renamed into place when complete. Per-tensor error statistics are measured on
//! the way (each chunk is dequantized again and compared) and returned as a report.

mod kquants;
pub mod nf4_export;
pub mod types;

use crate::error::{Error, Result};
use crate::gguf::writer::{GgufWriter, PlannedTensor};
use crate::gguf::GgufFile;
use crate::hf::names;
use crate::models::Config;
use crate::source::Source;
use crate::weight::ggml_type_name;
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use types::{tensor_type, QuantType, TensorRole};

/// f32 values converted per chunk: bounds memory whatever the model size.
const CHUNK_VALUES: usize = 1 << 22;

/// Progress, reported after each chunk.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeProgress {
    /// Index (from 1) of the tensor being written.
    pub tensor_index: usize,
    /// Tensors in all.
    pub tensors: usize,
    /// Its name.
    pub tensor: String,
    /// Source bytes read so far.
    pub bytes_read: u64,
    /// Source bytes in all.
    pub bytes_total: u64,
    /// Source bytes per second so far.
    pub bytes_per_sec: f64,
    /// Seconds left at that rate.
    pub eta_s: Option<f64>,
}

/// Error statistics of one quantized tensor.
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    /// llama.cpp name.
    pub name: String,
    /// Storage type written.
    pub r#type: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Bytes written.
    pub bytes: u64,
    /// Bits per weight.
    pub bits_per_weight: f64,
    /// Root mean square error of the dequantized weights.
    pub rmse: f64,
    /// ‖error‖ / ‖weights‖.
    pub relative_error: f64,
    /// 10·log10(‖weights‖² / ‖error‖²); infinite when exact.
    pub snr_db: f64,
}

impl TensorReport {
    /// From the sums of squared error and of squared weights.
    pub fn from_sums(
        name: &str,
        ty: &str,
        shape: &[usize],
        bytes: u64,
        err2: f64,
        sig2: f64,
    ) -> Self {
        let n = shape.iter().product::<usize>().max(1) as f64;
        Self {
            name: name.to_string(),
            r#type: ty.to_string(),
            shape: shape.to_vec(),
            bytes,
            bits_per_weight: bytes as f64 * 8.0 / n,
            rmse: (err2 / n).sqrt(),
            relative_error: if sig2 > 0.0 {
                (err2 / sig2).sqrt()
            } else {
                0.0
            },
            snr_db: if err2 > 0.0 {
                10.0 * (sig2 / err2).log10()
            } else {
                f64::INFINITY
            },
        }
    }

    /// From the original and the dequantized weights.
    pub fn measure(
        name: &str,
        ty: &str,
        shape: &[usize],
        bytes: u64,
        x: &[f32],
        back: &[f32],
    ) -> Self {
        let (mut err2, mut sig2) = (0f64, 0f64);
        for (&a, &b) in x.iter().zip(back) {
            err2 += ((a - b) as f64).powi(2);
            sig2 += (a as f64).powi(2);
        }
        Self::from_sums(name, ty, shape, bytes, err2, sig2)
    }
}

/// The quality report of one quantization.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeReport {
    /// Source file or folder.
    pub source: String,
    /// Output file.
    pub output: String,
    /// Requested type.
    pub to: String,
    /// Per tensor.
    pub tensors: Vec<TensorReport>,
    /// Bytes of the source's tensors.
    pub source_bytes: u64,
    /// Bytes of the output file.
    pub output_bytes: u64,
    /// source / output.
    pub ratio: f64,
    /// Average bits per weight of the output's tensors.
    pub bits_per_weight: f64,
    /// Wall time.
    pub seconds: f64,
    /// Source bytes read per second (GB/s = this / 1e9).
    pub source_bytes_per_sec: f64,
    /// Peak RSS of the process, where the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// Things the user should know (re-quantizing quantized weights, fallbacks).
    pub warnings: Vec<String>,
}

/// Where a tensor's values come from, and how to bring them into GGUF's layout.
struct Job {
    gguf_name: String,
    shape: Vec<usize>,
    out: GgmlDType,
    /// HF llama q/k rows → llama.cpp's interleaved order, with this many heads.
    permute_heads: Option<usize>,
    /// HF Gemma norms hold w, GGUF holds 1 + w.
    add_one: bool,
    source_bytes: u64,
}

/// Quantizes `src` into `out` as `to`. `force` allows replacing an existing `out`;
/// `progress` returning false cancels, removing everything written.
pub fn quantize(
    src: &Path,
    out: &Path,
    to: QuantType,
    force: bool,
    progress: &mut dyn FnMut(&QuantizeProgress) -> bool,
) -> Result<QuantizeReport> {
    quantize_with(src, out, to, force, None, progress)
}

/// [`quantize`] of the synthetic model `unicorn synth` would write with `seed` into
/// `folder`, where `folder` holds only its config and safetensors headers
/// ([`crate::synth::write_headers`]): the weights are generated where they are
/// quantized, so a 27B model needs no 54 GB folder first. The output is byte for byte
/// what quantizing the written folder gives.
pub fn quantize_synthetic(
    folder: &Path,
    seed: u64,
    out: &Path,
    to: QuantType,
    progress: &mut dyn FnMut(&QuantizeProgress) -> bool,
) -> Result<QuantizeReport> {
    quantize_with(folder, out, to, false, Some(seed), progress)
}

fn quantize_with(
    src: &Path,
    out: &Path,
    to: QuantType,
    force: bool,
    synthetic: Option<u64>,
    progress: &mut dyn FnMut(&QuantizeProgress) -> bool,
) -> Result<QuantizeReport> {
    let t0 = Instant::now();
    if out.exists() && !force {
        return Err(Error::Invalid(format!(
            "{} already exists; pass --force to replace it",
            out.display()
        )));
    }
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(src), std::fs::canonicalize(out)) {
        if a == b {
            return Err(Error::Invalid(format!(
                "{}: the output would overwrite the source",
                out.display()
            )));
        }
    }
    let source = Source::open(src)?;
    let config = Config::from_source(&source)?;
    let Plan {
        metadata,
        jobs,
        warnings,
    } = plan(&source, &config, to)?;
    let tensors = crate::atomic::file(out, |tmp| {
        write(&source, synthetic, tmp, &metadata, &jobs, progress, t0)
    })?;
    let output_bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    let source_bytes: u64 = jobs.iter().map(|j| j.source_bytes).sum();
    let weights: u64 = tensors
        .iter()
        .map(|t| t.shape.iter().product::<usize>() as u64)
        .sum();
    let tensor_bytes: u64 = tensors.iter().map(|t| t.bytes).sum();
    let seconds = t0.elapsed().as_secs_f64();
    Ok(QuantizeReport {
        source: src.display().to_string(),
        output: out.display().to_string(),
        to: to.name().to_string(),
        tensors,
        source_bytes,
        output_bytes,
        ratio: source_bytes as f64 / output_bytes.max(1) as f64,
        bits_per_weight: tensor_bytes as f64 * 8.0 / weights.max(1) as f64,
        seconds,
        source_bytes_per_sec: source_bytes as f64 / seconds.max(1e-9),
        peak_rss_bytes: crate::stats::peak_rss_bytes(),
        warnings,
    })
}

/// What quantizing will write, from the same plan as [`quantize`], before reading
/// any weight.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// Bytes of the source's tensors.
    pub source_bytes: u64,
    /// Bytes of the output's tensors, exactly (the GGUF adds its metadata, mostly the
    /// vocabulary: a few MB).
    pub tensor_bytes: u64,
    /// Bits per weight of the output's tensors (NF4: of the quantized ones).
    pub bits_per_weight: f64,
    /// What [`quantize`] will warn about.
    pub warnings: Vec<String>,
    /// Weight bytes the engine will hold once it loads the output (GGUF float tensors
    /// become F32), the term [`crate::memory::estimate_with_weights`] needs.
    pub resident_weight_bytes: u64,
}

/// Predicts what [`quantize`] of `src` to `to` writes.
pub fn predict(src: &Path, to: QuantType) -> Result<Prediction> {
    let source = Source::open(src)?;
    let config = Config::from_source(&source)?;
    let Plan { jobs, warnings, .. } = plan(&source, &config, to)?;
    let (mut tensor_bytes, mut weights, mut resident) = (0u64, 0u64, 0u64);
    for j in &jobs {
        let n = j.shape.iter().product::<usize>() as u64;
        let bytes = n / j.out.block_size() as u64 * j.out.type_size() as u64;
        tensor_bytes += bytes;
        weights += n;
        resident += match j.out {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => n * 4,
            _ => bytes,
        };
    }
    Ok(Prediction {
        source_bytes: jobs.iter().map(|j| j.source_bytes).sum(),
        tensor_bytes,
        bits_per_weight: tensor_bytes as f64 * 8.0 / weights.max(1) as f64,
        warnings,
        resident_weight_bytes: resident,
    })
}

/// What will be written.
struct Plan {
    metadata: Vec<(String, Value)>,
    jobs: Vec<Job>,
    warnings: Vec<String>,
}

/// Output metadata and one job per tensor, in llama.cpp's order (embedding, blocks
/// in order, output).
fn plan(source: &Source, config: &Config, to: QuantType) -> Result<Plan> {
    let mut warnings = Vec::new();
    let arch = config.architecture();
    let (_, heads, kv_heads, _, _) = config.shape();
    // Jobs with their output type still to choose.
    let mut raw: Vec<Job> = Vec::new();
    let job = |gguf_name: String,
               shape: Vec<usize>,
               source_bytes: u64,
               add_one: bool,
               permute_heads: Option<usize>| Job {
        gguf_name,
        shape,
        out: GgmlDType::F32,
        permute_heads,
        add_one,
        source_bytes,
    };
    let mut metadata: Vec<(String, Value)>;
    match source {
        Source::Gguf(g) => {
            let mut quantized = 0;
            for (name, t, shape) in g.tensor_infos() {
                let n: u64 = shape.iter().map(|&d| d as u64).product();
                if !matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) {
                    quantized += 1;
                }
                raw.push(job(
                    name,
                    shape,
                    n / t.block_size() as u64 * t.type_size() as u64,
                    false,
                    None,
                ));
            }
            if quantized > 0 {
                warnings.push(format!(
                    "{} of {} tensors in the source are already quantized: re-quantizing adds their error to the new one; quantize from the original weights when you can",
                    quantized,
                    raw.len()
                ));
            }
            metadata = copy_metadata(g)?;
        }
        Source::Hf(h) => {
            let gguf_llama = config.architecture() == "llama" || config.architecture() == "mistral";
            for (hf, dtype, shape) in h.tensor_infos() {
                let Some(name) = names::hf_to_gguf(arch, &hf) else {
                    continue;
                };
                let elem = if dtype == "F32" { 4 } else { 2 };
                let bytes = shape.iter().product::<usize>() as u64 * elem;
                let add_one = arch == "gemma3" && shape.len() == 1 && name.contains("norm");
                let permute = if gguf_llama && name.ends_with("attn_q.weight") {
                    Some(heads)
                } else if gguf_llama && name.ends_with("attn_k.weight") {
                    Some(kv_heads)
                } else {
                    None
                };
                raw.push(job(name, shape, bytes, add_one, permute));
            }
            metadata = config.gguf_metadata();
            let files = crate::hf::tokenizer_files::read(h.dir(), h.config().json())?;
            match &files.tokenizer {
                Some(t) => metadata.extend(t.gguf_metadata()?),
                None => warnings.push(
                    "the folder has no tokenizer.json: the GGUF has no vocabulary and llama.cpp will not load it".into(),
                ),
            }
            if let Some(t) = files.chat_template {
                metadata.push(("tokenizer.chat_template".into(), Value::String(t)));
            }
            if let Some(n) = h.config().json()["_name_or_path"].as_str() {
                metadata.push(("general.name".into(), Value::String(n.into())));
            }
        }
    }
    metadata.retain(|(k, _)| k != "general.file_type" && k != "general.quantization_version");
    metadata.push(("general.file_type".into(), Value::U32(to.file_type())));
    metadata.push(("general.quantization_version".into(), Value::U32(2)));
    let has_output = raw.iter().any(|r| r.gguf_name == "output.weight");
    let n_layers = config.num_layers();
    let n_gqa = heads / kv_heads.max(1);
    let order = |name: &str| -> (usize, usize, String) {
        match name {
            n if n.starts_with("token_embd") => (0, 0, n.to_string()),
            n if n.starts_with("blk.") => {
                let l = n[4..]
                    .split('.')
                    .next()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0);
                (1, l, n.to_string())
            }
            n => (2, 0, n.to_string()),
        }
    };
    raw.sort_by_key(|r| order(&r.gguf_name));
    let mut fallbacks = 0;
    let jobs: Vec<Job> = raw
        .into_iter()
        .map(|j| {
            let out = tensor_type(
                to,
                TensorRole {
                    name: &j.gguf_name,
                    shape: &j.shape,
                    n_layers,
                    n_gqa,
                    has_output,
                },
            );
            if matches!(
                out,
                GgmlDType::Q5_0
                    | GgmlDType::Q5_1
                    | GgmlDType::Q8_0
                    | GgmlDType::Q4_0
                    | GgmlDType::F16
            ) && !matches!(to, QuantType::Q8_0 | QuantType::Q4_0 | QuantType::F16)
                && j.shape.len() == 2
                && !j.shape[1].is_multiple_of(256)
            {
                fallbacks += 1;
            }
            Job { out, ..j }
        })
        .collect();
    if fallbacks > 0 {
        warnings.push(format!(
            "{fallbacks} tensors have rows not divisible by 256 and use llama.cpp's fallback types (Q5_0 / Q5_1 / Q8_0 / Q4_0)"
        ));
    }
    Ok(Plan {
        metadata,
        jobs,
        warnings,
    })
}

/// Every key of a GGUF except the ones the writer sets itself.
fn copy_metadata(g: &GgufFile) -> Result<Vec<(String, Value)>> {
    let mut keys = g.metadata_keys();
    keys.retain(|k| k != "general.alignment");
    keys.sort();
    Ok(keys
        .into_iter()
        .filter_map(|k| g.get(&k).cloned().map(|v| (k, v)))
        .collect())
}

/// Where a tensor's rows are read from: a file, the offset of row 0, the stored type
/// and the bytes per row.
struct Location {
    file: std::fs::File,
    path: std::path::PathBuf,
    offset: u64,
    kind: Stored,
    row_bytes: usize,
}

#[derive(Clone, Copy)]
enum Stored {
    Float(candle_core::DType),
    Ggml(GgmlDType),
}

fn locate(source: &Source, job: &Job, cols: usize) -> Result<Location> {
    let (path, offset, kind) = match source {
        Source::Gguf(g) => {
            let (off, t, _) = g.tensor_location(&job.gguf_name)?;
            (g.path().to_path_buf(), off, Stored::Ggml(t))
        }
        Source::Hf(h) => {
            let hf = names::gguf_to_hf(h.arch(), &job.gguf_name).unwrap_or_default();
            let (p, off, dtype, _) = h.tensor_location(&hf)?;
            (p.to_path_buf(), off, Stored::Float(dtype))
        }
    };
    let row_bytes = match kind {
        Stored::Float(d) => cols * d.size_in_bytes(),
        Stored::Ggml(t) => cols / t.block_size() * t.type_size(),
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
fn read_rows(loc: &Location, job: &Job, cols: usize, r0: usize, r1: usize) -> Result<Vec<f32>> {
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
        Stored::Float(d) => Tensor::from_raw_buffer(&bytes, d, &[(r1 - r0) * cols], &Device::Cpu),
        Stored::Ggml(t) => candle_core::quantized::ggml_file::qtensor_from_ggml(
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
fn to_gguf_rows(
    path: &Path,
    job: &Job,
    cols: usize,
    r0: usize,
    r1: usize,
    mut v: Vec<f32>,
) -> Result<Vec<f32>> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Tensor {
            path: path.to_path_buf(),
            tensor: job.gguf_name.clone(),
            message: format!("element {} is NaN or infinite", r0 * cols + i),
        });
    }
    if job.add_one {
        v.iter_mut().for_each(|x| *x += 1.0);
    }
    if let Some(heads) = job.permute_heads {
        let hd = job.shape[0] / heads;
        let mut out = vec![0f32; v.len()];
        let rows = r1 - r0;
        for r in 0..rows {
            // Row r of head h: rotate-half index j·hd/2 + i goes to 2·i + j.
            let (h, within) = (r / hd, r % hd);
            let (j, i) = (within / (hd / 2), within % (hd / 2));
            let to = h * hd + 2 * i + j;
            out[to * cols..(to + 1) * cols].copy_from_slice(&v[r * cols..(r + 1) * cols]);
        }
        v = out;
    }
    Ok(v)
}

/// Where a tensor's rows come from.
enum Rows {
    /// Read from the source's file.
    File(Location),
    /// Generated as `unicorn synth` with this seed would have written them.
    Synthetic(u64),
}

/// Rows `r0..r1` of a synthetic model's tensor as its folder would store them.
fn synthetic_rows(
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
        return Ok(vec![
            crate::synth::norm_value(h.config().json());
            (r1 - r0) * cols
        ]);
    }
    let dtype = crate::hf::float_dtype_name(dtype);
    Ok(crate::synth::values(seed, &hf, dtype, r0 * cols..r1 * cols))
}

fn write(
    source: &Source,
    synthetic: Option<u64>,
    tmp: &Path,
    metadata: &[(String, Value)],
    jobs: &[Job],
    progress: &mut dyn FnMut(&QuantizeProgress) -> bool,
    t0: Instant,
) -> Result<Vec<TensorReport>> {
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
        let rows_from = match synthetic {
            None => Rows::File(locate(source, job, cols)?),
            Some(seed) => Rows::Synthetic(seed),
        };
        // Whole heads per chunk for permuted tensors; whole rows always.
        let unit = job.permute_heads.map_or(1, |h| job.shape[0] / h);
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
            };
            let values = to_gguf_rows(file, job, cols, r0, r1, raw)?;
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
            let rate = bytes_read as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            let go_on = progress(&QuantizeProgress {
                tensor_index: ti + 1,
                tensors: jobs.len(),
                tensor: job.gguf_name.clone(),
                bytes_read,
                bytes_total,
                bytes_per_sec: rate,
                eta_s: (rate > 0.0).then(|| (bytes_total - bytes_read) as f64 / rate),
            });
            if !go_on {
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
                        GgmlDType::Q4K => kquants::quantize_q4_k(x),
                        GgmlDType::Q5K => kquants::quantize_q5_k(x),
                        _ => kquants::quantize_q6_k(x),
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

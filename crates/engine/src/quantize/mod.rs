//! Quantization to GGUF, streamed: one tensor at a time from the memory-mapped source
//! (an HF folder, or a GGUF to re-quantize), rows converted to f32 and quantized in
//! parallel chunks with candle's ggml-compatible quantizers, written to a temporary
//! file renamed into place when complete. Per-tensor error statistics are measured on
//! the way (each chunk is dequantized again and compared) and returned as a report.

mod plan;
mod read;
pub mod types;
mod write;

use crate::error::Result;
use crate::models::Config;
use crate::source::Source;
use candle_core::quantized::GgmlDType;
use plan::{plan, Plan};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use types::QuantType;
use unicorn_common::{atomic, Progress};

/// f32 values converted per chunk: bounds memory whatever the model size.
const CHUNK_VALUES: usize = 1 << 22;

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
    /// The llama.cpp mmproj GGUF written beside the output for a multimodal source's
    /// vision tower (F16, as llama.cpp's converter writes it), if there is one.
    pub mmproj: Option<String>,
}

/// Quantizes `src` into `out` as `to`. `force` allows replacing an existing `out`;
/// `progress` returning false cancels, removing everything written.
pub fn quantize(
    src: &Path,
    out: &Path,
    to: QuantType,
    force: bool,
    progress: &mut dyn FnMut(&Progress) -> bool,
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
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<QuantizeReport> {
    quantize_with(folder, out, to, false, Some(seed), progress)
}

fn quantize_with(
    src: &Path,
    out: &Path,
    to: QuantType,
    force: bool,
    synthetic: Option<u64>,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<QuantizeReport> {
    let t0 = Instant::now();
    atomic::check_target(out, atomic::Kind::File, force, Some(src))?;
    let source = Source::open(src)?;
    let config = Config::from_source(&source)?;
    let Plan {
        metadata,
        jobs,
        warnings,
    } = plan(&source, &config, to)?;
    // The vision tower goes beside the text model, as llama.cpp keeps it. Its
    // mmproj is written to a partial file first, the model next, and the mmproj
    // takes its place only once the model has: a failed or cancelled run leaves
    // both old files as they were (with --force too).
    let vision = match (&source, synthetic) {
        (Source::Hf(h), None) => vision_beside(h, &config, out, force)?,
        _ => None,
    };
    let model = |progress: &mut dyn FnMut(&Progress) -> bool| {
        atomic::file(out, |tmp| {
            write::write(&source, synthetic, tmp, &metadata, &jobs, progress)
        })
    };
    let tensors = match (&vision, &source) {
        (Some(v), Source::Hf(h)) => atomic::file(&v.path, |mm_tmp| {
            v.write(h, mm_tmp)?;
            model(progress)
        })?,
        _ => model(progress)?,
    };
    let mmproj = vision.map(|v| v.path);
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
        mmproj: mmproj.map(|p| p.display().to_string()),
    })
}

/// The mmproj of a multimodal folder's vision tower, to go beside `out` as
/// `mmproj-{out's stem}.gguf` (checked as a target), or `None` for a text-only
/// folder.
fn vision_beside(
    h: &crate::hf::HfFolder,
    config: &Config,
    out: &Path,
    force: bool,
) -> Result<Option<VisionOut>> {
    use crate::models::siglip;
    if !siglip::supports(config) {
        return Ok(None);
    }
    let Some(cfg) = siglip::VisionConfig::from_hf(h.config(), config)? else {
        return Ok(None);
    };
    let pre = crate::vision::preprocess::Preprocess::of_folder(h, &cfg)?;
    let (mean, std) = pre.normalize.unwrap_or(([0.5; 3], [0.5; 3]));
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = out.with_file_name(format!("mmproj-{stem}.gguf"));
    atomic::check_target(&path, atomic::Kind::File, force, Some(h.dir()))?;
    Ok(Some(VisionOut {
        path,
        cfg,
        mean,
        std,
    }))
}

/// An mmproj to write ([`vision_beside`]).
struct VisionOut {
    path: std::path::PathBuf,
    cfg: crate::models::siglip::VisionConfig,
    mean: [f32; 3],
    std: [f32; 3],
}

impl VisionOut {
    /// Writes the tower (F16 matrices, as llama.cpp's converter) to `tmp`.
    fn write(&self, h: &crate::hf::HfFolder, tmp: &Path) -> Result<()> {
        use crate::models::{mmproj, siglip};
        mmproj::from_folder(
            siglip::VisionFiles::Hf(h),
            &self.cfg,
            self.mean,
            self.std,
            mmproj::MmprojType::F16,
            tmp,
        )?;
        Ok(())
    }
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

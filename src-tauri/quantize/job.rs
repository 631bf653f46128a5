//! Quantizing a library model in the app: the request checked before any work, what
//! it will write predicted from the same plan the quantizer follows, the run itself
//! (into the app's models folder, then into the library), and measuring the result's
//! quality against its source.

use super::types::{CompareEvent, QuantizeEvent, QuantizePrediction, QuantizeSummary, TensorError};
use crate::jobs::Job;
use std::path::{Path, PathBuf};
use std::time::Instant;
use unicorn_engine::quantize::{self, types::QuantType};
use unicorn_library::{source, Library};

/// What to quantize, already validated.
pub struct QuantizeJob {
    /// HF folder or GGUF.
    pub source: PathBuf,
    /// `nf4` or a GGUF type llama.cpp names.
    pub to: String,
    /// Output file (GGUF) or folder (NF4); must not exist.
    pub out: PathBuf,
    /// Library to record the result in.
    pub library: PathBuf,
}

impl QuantizeJob {
    /// Checks the request before any work: a known target, a source that exists,
    /// and an output that would not replace anything.
    pub fn new(
        source: &str,
        to: &str,
        models_dir: &Path,
        library: PathBuf,
    ) -> Result<Self, String> {
        let src = PathBuf::from(source);
        if !src.is_absolute() || !src.exists() {
            return Err(format!("{source}: not an existing absolute path"));
        }
        let nf4 = to.eq_ignore_ascii_case("nf4");
        if !nf4 && QuantType::parse(to).is_none() {
            return Err(format!(
                "{to}: not a quantization type (NF4, Q4_K_M, Q8_0, ...)"
            ));
        }
        let stem = src
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
            .unwrap_or_else(|| "model".into());
        let name = if nf4 {
            format!("{stem}.nf4")
        } else {
            format!("{stem}.{}.gguf", to.to_uppercase())
        };
        let out = models_dir.join(name);
        if out.exists() {
            return Err(format!(
                "{}: already exists; remove it from the library first",
                out.display()
            ));
        }
        Ok(Self {
            source: src,
            to: if nf4 { "nf4".into() } else { to.to_uppercase() },
            out,
            library,
        })
    }
}

impl QuantizeJob {
    /// What this job will write, and what chatting with the output will take,
    /// before it starts.
    pub fn predict(&self) -> Result<QuantizePrediction, String> {
        let p = if self.to == "nf4" {
            unicorn_engine::formats::nf4::export::predict(&self.source, 64, true)
        } else {
            let to =
                QuantType::parse(&self.to).ok_or_else(|| format!("{}: unknown type", self.to))?;
            quantize::predict(&self.source, to)
        }
        .map_err(|e| e.to_string())?;
        let estimate = || {
            let src = unicorn_engine::source::Source::open(&self.source)?;
            let ctx = unicorn_engine::models::Config::from_source(&src)?
                .context_length()
                .clamp(1, PREDICT_CTX);
            unicorn_engine::memory::estimate_with_weights(
                &src,
                ctx,
                unicorn_engine::attention::KvType::default(),
                0,
                p.resident_weight_bytes,
            )
        };
        let m = estimate().map_err(|e| e.to_string())?;
        Ok(QuantizePrediction {
            source_bytes: p.source_bytes,
            output_bytes: p.tensor_bytes,
            bits_per_weight: p.bits_per_weight,
            warnings: p.warnings,
            ctx: m.ctx,
            weights_bytes: m.weights_bytes,
            kv_cache_bytes: m.kv_cache_bytes,
            memory_bytes: m.memory_estimate_bytes,
            free_ram_bytes: m.free_ram_bytes,
        })
    }
}

/// Context length the quantize view's memory prediction assumes (the app's chat
/// default; shorter when the model's own limit is).
const PREDICT_CTX: usize = 4096;

fn tensor_errors(tensors: &[quantize::TensorReport]) -> Vec<TensorError> {
    tensors
        .iter()
        .map(|t| TensorError {
            name: t.name.clone(),
            r#type: t.r#type.clone(),
            relative_error: t.relative_error,
        })
        .collect()
}

/// Runs `job`, reporting to `run`; the report is the last event.
pub fn run(job: &QuantizeJob, run: &Job<QuantizeEvent>) -> Result<QuantizeEvent, String> {
    if let Some(dir) = job.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut tick = |p: &unicorn_engine::Progress| run.progress(p);
    let summary = if job.to == "nf4" {
        let t0 = Instant::now();
        let r = unicorn_engine::formats::nf4::export::export(
            &job.source,
            &job.out,
            64,
            true,
            false,
            &mut tick,
        )
        .map_err(|e| e.to_string())?;
        QuantizeSummary {
            source: job.source.display().to_string(),
            output: r.output.clone(),
            to: job.to.clone(),
            source_bytes: r.source_bytes,
            output_bytes: r.output_bytes,
            ratio: r.ratio,
            bits_per_weight: r.bits_per_weight,
            seconds: t0.elapsed().as_secs_f64(),
            tensors: tensor_errors(&r.tensors),
            warnings: Vec::new(),
        }
    } else {
        let to = QuantType::parse(&job.to).ok_or_else(|| format!("{}: unknown type", job.to))?;
        let r = quantize::quantize(&job.source, &job.out, to, false, &mut tick)
            .map_err(|e| e.to_string())?;
        QuantizeSummary {
            source: r.source.clone(),
            output: r.output.clone(),
            to: r.to.clone(),
            source_bytes: r.source_bytes,
            output_bytes: r.output_bytes,
            ratio: r.ratio,
            bits_per_weight: r.bits_per_weight,
            seconds: r.seconds,
            tensors: tensor_errors(&r.tensors),
            warnings: r.warnings.clone(),
        }
    };
    Library::open(&job.library)
        .and_then(|lib| lib.add(&job.out, source::QUANTIZED, None))
        .map_err(|e| e.to_string())?;
    Ok(QuantizeEvent::Done { report: summary })
}

/// The text quality is measured on: 8.5 kB of the Jargon File (public domain).
const EVAL_TEXT: &str = include_str!("../eval.txt");

/// Measures what quantizing `base` into `quant` cost: perplexity and KL divergence
/// on the app's evaluation text (public-domain prose from the Jargon File, 1024
/// tokens in 512-token windows, as `unicorn compare` scores them).
pub fn compare(
    base: &std::path::Path,
    quant: &std::path::Path,
    run: &Job<CompareEvent>,
) -> Result<CompareEvent, String> {
    let opts = unicorn_engine::session::LoadOptions::default();
    let load = |p| unicorn_engine::session::LoadedModel::load(p, &opts).map_err(|e| e.to_string());
    let (b, q) = (load(base)?, load(quant)?);
    let comparison =
        unicorn_engine::compare::compare(&b, &q, EVAL_TEXT, 512, Some(1024), &mut |p| {
            run.progress(p)
        })
        .map_err(|e| e.to_string())?;
    Ok(CompareEvent::Done { comparison })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::Jobs;
    use std::sync::mpsc::channel;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("unicorn-jobs-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn demo() -> String {
        crate::library::demo_model_file()
            .expect("demo model missing: run scripts/fetch-test-models")
    }

    fn start(job: QuantizeJob, jobs: &Jobs) -> (u64, std::sync::mpsc::Receiver<QuantizeEvent>) {
        let (tx, rx) = channel();
        let id = jobs.spawn(
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
            move |j| run(&job, j),
        );
        (id, rx)
    }

    #[test]
    fn requests_are_checked_before_any_work() {
        let d = temp("check");
        let lib = d.join("library.sqlite3");
        let e = QuantizeJob::new("model.gguf", "Q8_0", &d, lib.clone())
            .err()
            .unwrap();
        assert!(e.contains("model.gguf"), "{e}");
        let e = QuantizeJob::new(&demo(), "Q9_9", &d, lib.clone())
            .err()
            .unwrap();
        assert!(e.contains("Q9_9"), "{e}");
        let job = QuantizeJob::new(&demo(), "q8_0", &d, lib.clone()).unwrap();
        assert!(job.out.ends_with("SmolLM2-135M-Instruct.Q4_1.Q8_0.gguf"));
        std::fs::write(&job.out, b"mine").unwrap();
        let e = QuantizeJob::new(&demo(), "Q8_0", &d, lib).err().unwrap();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(
            std::fs::read(d.join("SmolLM2-135M-Instruct.Q4_1.Q8_0.gguf")).unwrap(),
            b"mine"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn quantizes_with_progress_then_reports_and_records_it() {
        let d = temp("run");
        let lib = d.join("library.sqlite3");
        let job = QuantizeJob::new(&demo(), "Q8_0", &d, lib.clone()).unwrap();
        let predicted = job.predict().unwrap();
        let out = job.out.clone();
        let (_, rx) = start(job, &Jobs::default());
        let mut progressed = false;
        let report = loop {
            match rx
                .recv_timeout(std::time::Duration::from_secs(300))
                .unwrap()
            {
                QuantizeEvent::Progress { progress } => progressed |= progress.total > 0,
                QuantizeEvent::Done { report } => break report,
                other => panic!("{other:?}"),
            }
        };
        assert!(progressed);
        assert!(out.is_file());
        assert_eq!(predicted.source_bytes, report.source_bytes);
        assert!(predicted.output_bytes <= report.output_bytes);
        assert!(
            report.output_bytes - predicted.output_bytes < 8 << 20,
            "metadata only"
        );
        assert_eq!(predicted.warnings, report.warnings);
        assert_eq!(report.output_bytes, std::fs::metadata(&out).unwrap().len());
        // The memory prediction's weights are what loading the output holds.
        let held = unicorn_engine::session::LoadedModel::load(&out, &Default::default())
            .unwrap()
            .model()
            .weight_bytes()
            .total as u64;
        assert_eq!(predicted.weights_bytes, held);
        assert_eq!(
            predicted.ctx, 4096,
            "SmolLM2 allows 8192; the app plans for 4096"
        );
        assert!(
            predicted.memory_bytes > predicted.weights_bytes + predicted.kv_cache_bytes
                && predicted.kv_cache_bytes > 0,
            "{predicted:?}"
        );
        assert!(
            report.ratio > 0.5 && report.bits_per_weight > 8.0,
            "{report:?}"
        );
        assert!(
            !report.tensors.is_empty() && !report.warnings.is_empty(),
            "re-quantizing Q4_1 warns"
        );
        let entry = Library::open(&lib)
            .unwrap()
            .get(&out)
            .unwrap()
            .expect("recorded");
        assert_eq!(
            (entry.source.as_str(), entry.quantization.as_str()),
            ("quantized", "Q8_0")
        );
        // Its quality against the source, as the report's button measures it.
        let (tx, rx) = channel();
        let (base, quant) = (PathBuf::from(demo()), out.clone());
        Jobs::default().spawn(
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
            move |j| compare(&base, &quant, j),
        );
        let mut windows = 0;
        let c = loop {
            match rx
                .recv_timeout(std::time::Duration::from_secs(300))
                .unwrap()
            {
                CompareEvent::Progress { progress } => windows = progress.done,
                CompareEvent::Done { comparison } => break comparison,
                other => panic!("{other:?}"),
            }
        };
        assert!(
            windows == 2 && c.tokens_scored > 500,
            "{windows} windows, {c:?}"
        );
        // Q8_0 of a Q4_1 source loses almost nothing.
        assert!(
            c.delta_ppl_percent.abs() < 2.0 && c.kld_mean < 0.02 && c.top1_agreement > 0.9,
            "{c:?}"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn cancelling_leaves_nothing() {
        let d = temp("cancel");
        let job = QuantizeJob::new(&demo(), "Q4_K_M", &d, d.join("library.sqlite3")).unwrap();
        let out = job.out.clone();
        let jobs = Jobs::default();
        let (id, rx) = start(job, &jobs);
        assert!(jobs.cancel(id));
        let last = loop {
            match rx
                .recv_timeout(std::time::Duration::from_secs(300))
                .unwrap()
            {
                QuantizeEvent::Progress { .. } => continue,
                e => break e,
            }
        };
        assert!(matches!(last, QuantizeEvent::Cancelled), "{last:?}");
        assert!(!out.exists());
        let left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            left.iter()
                .all(|n| n.to_string_lossy().starts_with("library")),
            "{left:?}"
        );
        std::fs::remove_dir_all(&d).ok();
    }
}

//! Background jobs (quantization): each runs on its own thread, streams its events
//! to a sink, and can be cancelled by id. The engine removes partial output itself.

use crate::events::{QuantizeEvent, QuantizeSummary, TensorError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use unicorn_engine::library::{source, Library};
use unicorn_engine::quantize::{self, types::QuantType};

/// Running jobs' cancel flags.
#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    running: Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>>,
}

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

impl Jobs {
    /// Starts `job` on a thread; returns its id.
    pub fn quantize(&self, job: QuantizeJob, sink: Box<dyn Fn(QuantizeEvent) + Send>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let cancel = Arc::new(AtomicBool::new(false));
        if let Ok(mut r) = self.running.lock() {
            r.insert(id, cancel.clone());
        }
        let running = self.running.clone();
        std::thread::spawn(move || {
            let event = match run_quantize(&job, &cancel, &*sink) {
                Ok(report) => QuantizeEvent::Done { report },
                Err(_) if cancel.load(Ordering::SeqCst) => QuantizeEvent::Cancelled,
                Err(message) => QuantizeEvent::Error { message },
            };
            if let Ok(mut r) = running.lock() {
                r.remove(&id);
            }
            sink(event);
        });
        id
    }

    /// Asks job `id` to stop; false if no such job runs.
    pub fn cancel(&self, id: u64) -> bool {
        self.running
            .lock()
            .ok()
            .and_then(|r| r.get(&id).map(|c| c.store(true, Ordering::SeqCst)))
            .is_some()
    }
}

fn run_quantize(
    job: &QuantizeJob,
    cancel: &AtomicBool,
    sink: &dyn Fn(QuantizeEvent),
) -> Result<QuantizeSummary, String> {
    if let Some(dir) = job.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // A few progress events a second are plenty for a progress bar.
    let mut last = Instant::now() - Duration::from_secs(1);
    let mut tick = |ev: QuantizeEvent| {
        if last.elapsed() >= Duration::from_millis(200) {
            last = Instant::now();
            sink(ev);
        }
        !cancel.load(Ordering::SeqCst)
    };
    let summary = if job.to == "nf4" {
        let t0 = Instant::now();
        let r =
            quantize::nf4_export::export(&job.source, &job.out, 64, true, false, &mut |i, n| {
                tick(QuantizeEvent::Progress {
                    tensor_index: i,
                    tensors: n,
                    bytes_read: 0,
                    bytes_total: 0,
                    eta_s: None,
                })
            })
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
            tensors: Vec::new(),
            warnings: Vec::new(),
        }
    } else {
        let to = QuantType::parse(&job.to).ok_or_else(|| format!("{}: unknown type", job.to))?;
        let r = quantize::quantize(&job.source, &job.out, to, false, &mut |p| {
            tick(QuantizeEvent::Progress {
                tensor_index: p.tensor_index,
                tensors: p.tensors,
                bytes_read: p.bytes_read,
                bytes_total: p.bytes_total,
                eta_s: p.eta_s,
            })
        })
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
            tensors: r
                .tensors
                .iter()
                .map(|t| TensorError {
                    name: t.name.clone(),
                    r#type: t.r#type.clone(),
                    relative_error: t.relative_error,
                })
                .collect(),
            warnings: r.warnings.clone(),
        }
    };
    Library::open(&job.library)
        .and_then(|lib| lib.add(&job.out, source::QUANTIZED, None))
        .map_err(|e| e.to_string())?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("unicorn-jobs-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn demo() -> String {
        crate::commands::demo_model_path()
            .expect("demo model missing: run scripts/fetch-test-models")
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
        let out = job.out.clone();
        let (tx, rx) = channel();
        Jobs::default().quantize(
            job,
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        );
        let mut progressed = false;
        let report = loop {
            match rx
                .recv_timeout(std::time::Duration::from_secs(300))
                .unwrap()
            {
                QuantizeEvent::Progress { bytes_total, .. } => progressed |= bytes_total > 0,
                QuantizeEvent::Done { report } => break report,
                other => panic!("{other:?}"),
            }
        };
        assert!(progressed);
        assert!(out.is_file());
        assert_eq!(report.output_bytes, std::fs::metadata(&out).unwrap().len());
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
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn cancelling_leaves_nothing() {
        let d = temp("cancel");
        let job = QuantizeJob::new(&demo(), "Q4_K_M", &d, d.join("library.sqlite3")).unwrap();
        let out = job.out.clone();
        let jobs = Jobs::default();
        let (tx, rx) = channel();
        let id = jobs.quantize(
            job,
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        );
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

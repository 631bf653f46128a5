//! Background jobs (quantization): each runs on its own thread, streams its events
//! to a sink, and can be cancelled by id. The engine removes partial output itself.

use crate::events::{
    CompareEvent, PullEvent, QuantizeEvent, QuantizePrediction, QuantizeSummary, TensorError,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use unicorn_engine::hub::{Hub, Listing};
use unicorn_engine::library::{source, Library};
use unicorn_engine::quantize::{self, types::QuantType};

/// The text quality is measured on: 8.5 kB of the Jargon File (public domain).
const EVAL_TEXT: &str = include_str!("eval.txt");

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

impl QuantizeJob {
    /// What this job will write, and what chatting with the output will take,
    /// before it starts.
    pub fn predict(&self) -> Result<QuantizePrediction, String> {
        let p = if self.to == "nf4" {
            quantize::nf4_export::predict(&self.source, 64, true)
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
            unicorn_engine::memory::estimate_with_weights(&src, ctx, 0, p.resident_weight_bytes)
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

impl Jobs {
    /// Starts `job` on a thread; returns its id.
    pub fn quantize(&self, job: QuantizeJob, sink: Box<dyn Fn(QuantizeEvent) + Send>) -> u64 {
        let (id, cancel) = self.register();
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

    /// Starts downloading `listing` into `hub`'s cache; models it brings go into the
    /// library at `library`. Returns the job id; cancelling pauses (the partial file
    /// stays, and the next pull resumes it).
    pub fn pull(
        &self,
        hub: Hub,
        listing: Listing,
        revision: String,
        library: PathBuf,
        sink: Box<dyn Fn(PullEvent) + Send>,
    ) -> u64 {
        let (id, cancel) = self.register();
        let running = self.running.clone();
        std::thread::spawn(move || {
            let mut last = Instant::now() - Duration::from_secs(1);
            let result = hub.pull(&listing, &revision, &mut |p| {
                if last.elapsed() >= Duration::from_millis(200) || p.bytes_done == p.bytes_total {
                    last = Instant::now();
                    sink(PullEvent::Progress {
                        file: p.file.clone(),
                        file_index: p.file_index,
                        files: p.files,
                        bytes_done: p.bytes_done,
                        bytes_total: p.bytes_total,
                        bytes_per_sec: p.bytes_per_sec,
                        eta_s: p.eta_s,
                    });
                }
                !cancel.load(Ordering::SeqCst)
            });
            let event = match result {
                Ok(snap) => {
                    let mut models = Vec::new();
                    let mut failed = None;
                    for m in unicorn_engine::hub::pulled_models(&snap, &listing) {
                        let added = Library::open(&library)
                            .and_then(|l| l.add(&m, source::HUB, Some(&listing.repo)));
                        match added {
                            Ok(_) => models.push(m.display().to_string()),
                            Err(e) => failed = Some(e.to_string()),
                        }
                    }
                    match failed {
                        Some(message) if models.is_empty() => PullEvent::Error { message },
                        _ => PullEvent::Done {
                            snapshot: snap.display().to_string(),
                            models,
                        },
                    }
                }
                Err(_) if cancel.load(Ordering::SeqCst) => PullEvent::Paused,
                Err(e) => PullEvent::Error {
                    message: e.to_string(),
                },
            };
            if let Ok(mut r) = running.lock() {
                r.remove(&id);
            }
            sink(event);
        });
        id
    }

    /// Measures what quantizing `base` into `quant` cost: perplexity and KL divergence
    /// on the app's evaluation text (public-domain prose from the Jargon File, 1024
    /// tokens in 512-token windows, as `unicorn compare` scores them).
    pub fn compare(
        &self,
        base: PathBuf,
        quant: PathBuf,
        sink: Box<dyn Fn(CompareEvent) + Send>,
    ) -> u64 {
        let (id, cancel) = self.register();
        let running = self.running.clone();
        std::thread::spawn(move || {
            let run = || -> unicorn_engine::Result<unicorn_engine::compare::Comparison> {
                let opts = unicorn_engine::session::LoadOptions::default();
                let b = unicorn_engine::session::LoadedModel::load(&base, &opts)?;
                let q = unicorn_engine::session::LoadedModel::load(&quant, &opts)?;
                unicorn_engine::compare::compare(
                    &b,
                    &q,
                    EVAL_TEXT,
                    512,
                    Some(1024),
                    &mut |done, total| {
                        sink(CompareEvent::Progress { done, total });
                        !cancel.load(Ordering::SeqCst)
                    },
                )
            };
            let event = match run() {
                Ok(comparison) => CompareEvent::Done { comparison },
                Err(_) if cancel.load(Ordering::SeqCst) => CompareEvent::Cancelled,
                Err(e) => CompareEvent::Error {
                    message: e.to_string(),
                },
            };
            if let Ok(mut r) = running.lock() {
                r.remove(&id);
            }
            sink(event);
        });
        id
    }

    fn register(&self) -> (u64, Arc<AtomicBool>) {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let cancel = Arc::new(AtomicBool::new(false));
        if let Ok(mut r) = self.running.lock() {
            r.insert(id, cancel.clone());
        }
        (id, cancel)
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
            tensors: tensor_errors(&r.tensors),
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
            tensors: tensor_errors(&r.tensors),
            warnings: r.warnings.clone(),
        }
    };
    Library::open(&job.library)
        .and_then(|lib| lib.add(&job.out, source::QUANTIZED, None))
        .map_err(|e| e.to_string())?;
    Ok(summary)
}

#[cfg(test)]
#[path = "../tests/fake_hub.rs"]
#[allow(dead_code)]
mod fake_hub;

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
        let predicted = job.predict().unwrap();
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
        Jobs::default().compare(
            PathBuf::from(demo()),
            out.clone(),
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        );
        let mut windows = 0;
        let c = loop {
            match rx
                .recv_timeout(std::time::Duration::from_secs(300))
                .unwrap()
            {
                CompareEvent::Progress { done, .. } => windows = done,
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

#[cfg(test)]
mod pull_tests {
    use super::fake_hub::{FakeHub, Faults};
    use super::*;
    use std::sync::mpsc::{channel, Receiver};

    const REPO: &str = "unicorn-test/tiny-llama";

    fn files() -> Vec<(String, Vec<u8>)> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/tiny/llama");
        let mut f: Vec<(String, Vec<u8>)> = ["config.json", "model.safetensors"]
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    std::fs::read(dir.join(n)).expect("../shared/golden"),
                )
            })
            .collect();
        // Big enough to be stopped part-way.
        f.push((
            "extra/weights.bin".into(),
            (0..6_000_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ));
        f
    }

    fn until_end(rx: &Receiver<PullEvent>) -> (usize, PullEvent) {
        let mut progress = 0;
        loop {
            match rx
                .recv_timeout(std::time::Duration::from_secs(120))
                .unwrap()
            {
                PullEvent::Progress { .. } => progress += 1,
                e => return (progress, e),
            }
        }
    }

    #[test]
    fn lists_pulls_pauses_resumes_and_records_the_model() {
        let server = FakeHub::start(REPO, files(), Faults::default());
        let d = std::env::temp_dir().join(format!("unicorn-app-pull-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        let hub = Hub {
            endpoint: server.url.clone(),
            token: None,
            cache: d.join("hub"),
        };
        let lib = d.join("library.sqlite3");

        let l = crate::commands::hub_list_with(&hub, REPO, "main").unwrap();
        assert_eq!(l.files.len(), 3);
        assert_eq!(
            l.total_bytes,
            files().iter().map(|f| f.1.len() as u64).sum::<u64>()
        );
        assert_eq!(
            l.weights_bytes,
            l.total_bytes
                - l.files
                    .iter()
                    .find(|f| f.path == "config.json")
                    .unwrap()
                    .size
        );
        assert!(l.available_memory > 0);
        assert!(crate::commands::hub_list_with(&hub, "not a repo", "main").is_err());

        let listing = hub.list(REPO, "main", &[]).unwrap();
        let jobs = Jobs::default();
        // Paused before it finishes: the partial file stays.
        let (tx, rx) = channel();
        let id = jobs.pull(
            hub.clone(),
            listing.clone(),
            "main".into(),
            lib.clone(),
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        );
        assert!(jobs.cancel(id));
        let (_, end) = until_end(&rx);
        assert!(matches!(end, PullEvent::Paused), "{end:?}");
        // Resumed to the end: the folder is a model in the library, from the hub.
        let (tx, rx) = channel();
        jobs.pull(
            hub.clone(),
            listing,
            "main".into(),
            lib.clone(),
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        );
        let (progress, end) = until_end(&rx);
        let PullEvent::Done { snapshot, models } = end else {
            panic!("{end:?}")
        };
        assert!(progress > 0);
        assert_eq!(models, vec![snapshot.clone()]);
        let e = Library::open(&lib)
            .unwrap()
            .get(Path::new(&snapshot))
            .unwrap()
            .expect("recorded");
        assert_eq!(
            (
                e.source.as_str(),
                e.repo.as_deref(),
                e.architecture.as_str()
            ),
            ("hub", Some(REPO), "llama")
        );
        assert_eq!(
            unicorn_engine::hub::discard_partial(&hub.cache, REPO).unwrap(),
            0
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_gated_model_says_how_to_get_access() {
        let server = FakeHub::start(
            REPO,
            files(),
            Faults {
                token: Some("hf_right".into()),
                ..Default::default()
            },
        );
        let d = std::env::temp_dir().join(format!("unicorn-app-gated-{}", std::process::id()));
        let hub = Hub {
            endpoint: server.url.clone(),
            token: None,
            cache: d.join("hub"),
        };
        let Err(crate::commands::CommandError::Engine(m)) =
            crate::commands::hub_list_with(&hub, REPO, "main")
        else {
            panic!("listed a gated repo without a token")
        };
        assert!(m.contains("licence") && m.contains("HF_TOKEN"), "{m}");
        let hub = Hub {
            token: Some("hf_right".into()),
            ..hub
        };
        assert!(crate::commands::hub_list_with(&hub, REPO, "main").is_ok());
        std::fs::remove_dir_all(&d).ok();
    }
}

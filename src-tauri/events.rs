//! What the shell sends the front end: one event enum per kind of long job, each
//! streamed through the job's own `tauri::ipc::Channel`, and the plain results of
//! the short commands. The TypeScript twins in `ui/src/bindings/` are generated from
//! these types by ts-rs; `bindings_are_current` fails when they drift.

use serde::{Deserialize, Serialize};
use ts_rs::TS;
use unicorn_engine::stats::Stats;

/// A chat reply as it happens.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChatEvent {
    /// Text completed by the next token (may be empty while a character or a
    /// possible stop string is held back).
    Token {
        /// The text.
        text: String,
    },
    /// The reply is complete (or was stopped); its measured figures.
    Done {
        /// `eos`, `stop_string`, `max_tokens`, `cancelled` or `context_full`.
        stop_reason: String,
        /// Measured prompt, TTFT, speed and memory figures.
        stats: Stats,
    },
    /// The reply failed.
    Error {
        /// What went wrong, naming the file where there is one.
        message: String,
    },
}

/// A quantization as it happens.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum QuantizeEvent {
    /// After each chunk of source read.
    Progress {
        /// Tensor being written (from 1).
        tensor_index: usize,
        /// Tensors in all.
        tensors: usize,
        /// Source bytes read so far.
        #[ts(type = "number")]
        bytes_read: u64,
        /// Source bytes in all.
        #[ts(type = "number")]
        bytes_total: u64,
        /// Seconds left at the rate so far.
        eta_s: Option<f64>,
    },
    /// Written; the compression report.
    Done {
        /// Sizes, ratio, bits per weight and per-tensor error.
        report: QuantizeSummary,
    },
    /// Stopped by the user; nothing was left behind.
    Cancelled,
    /// Failed; nothing was left behind.
    Error {
        /// What went wrong, naming the file.
        message: String,
    },
}

/// A quality measurement (perplexity and KL divergence against the source) as it
/// happens.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CompareEvent {
    /// After each window of text.
    Progress {
        /// Windows scored.
        done: usize,
        /// Windows in all.
        total: usize,
    },
    /// The measurement.
    Done {
        /// Both perplexities, ΔPPL, KLD mean and p99, top-1 agreement.
        comparison: unicorn_engine::compare::Comparison,
    },
    /// Stopped by the user.
    Cancelled,
    /// Failed.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// The compression report of one quantization, GGUF or NF4 alike.
#[derive(Debug, Clone, Serialize, TS)]
pub struct QuantizeSummary {
    /// Source model.
    pub source: String,
    /// Written file or folder.
    pub output: String,
    /// Target type (`Q4_K_M`, `nf4`, ...).
    pub to: String,
    /// Bytes of the source's tensors.
    #[ts(type = "number")]
    pub source_bytes: u64,
    /// Bytes written.
    #[ts(type = "number")]
    pub output_bytes: u64,
    /// source / output.
    pub ratio: f64,
    /// Bits per weight of the output.
    pub bits_per_weight: f64,
    /// Wall time.
    pub seconds: f64,
    /// Per tensor, where the format reports it.
    pub tensors: Vec<TensorError>,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

/// What a quantization will write, computed from its plan before it starts.
#[derive(Debug, Clone, Serialize, TS)]
pub struct QuantizePrediction {
    /// Bytes of the source's tensors.
    #[ts(type = "number")]
    pub source_bytes: u64,
    /// Bytes of the output's tensors (GGUF: exact; NF4: within the quant states'
    /// offset digits).
    #[ts(type = "number")]
    pub output_bytes: u64,
    /// Bits per weight (GGUF: of all tensors; NF4: of the quantized ones).
    pub bits_per_weight: f64,
    /// What the quantizer will warn about.
    pub warnings: Vec<String>,
    /// Context length the memory figures are for.
    pub ctx: usize,
    /// Weight bytes the engine will hold once it loads the output (exact).
    #[ts(type = "number")]
    pub weights_bytes: u64,
    /// KV cache at `ctx` tokens.
    #[ts(type = "number")]
    pub kv_cache_bytes: u64,
    /// Estimated peak memory of chatting with the output at `ctx` tokens: weights,
    /// KV cache, activations and tokenizer (an estimate; the app's own memory is not
    /// included).
    #[ts(type = "number")]
    pub memory_bytes: u64,
    /// Memory available now.
    #[ts(type = "number")]
    pub free_ram_bytes: u64,
}

/// One tensor's quantization error.
#[derive(Debug, Clone, Serialize, TS)]
pub struct TensorError {
    /// Tensor name.
    pub name: String,
    /// Stored type.
    pub r#type: String,
    /// ‖error‖ / ‖weights‖.
    pub relative_error: f64,
}

/// A download as it happens.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// As bytes arrive.
    Progress {
        /// File being downloaded.
        file: String,
        /// Its index (from 0).
        file_index: usize,
        /// Files in the pull.
        files: usize,
        /// Bytes of the whole pull present (resumed ones included).
        #[ts(type = "number")]
        bytes_done: u64,
        /// Size of the whole pull.
        #[ts(type = "number")]
        bytes_total: u64,
        /// Transfer rate, bytes per second.
        bytes_per_sec: f64,
        /// Seconds left at that rate.
        eta_s: Option<f64>,
    },
    /// Everything is in the cache; the models it brought are in the library.
    Done {
        /// The snapshot folder.
        snapshot: String,
        /// Models added to the library.
        models: Vec<String>,
    },
    /// Stopped by the user; the partial file stays for resuming.
    Paused,
    /// Failed (a gated model says how to get access).
    Error {
        /// What went wrong.
        message: String,
    },
}

/// A repository's files and whether it fits this machine.
#[derive(Debug, Clone, Serialize, TS)]
pub struct HubListing {
    /// `org/name`.
    pub repo: String,
    /// The commit the revision resolved to.
    pub commit: String,
    /// Files with sizes.
    pub files: Vec<HubFile>,
    /// Bytes of all files.
    #[ts(type = "number")]
    pub total_bytes: u64,
    /// Bytes of the weight files (`.safetensors`, `.gguf`, `.bin`).
    #[ts(type = "number")]
    pub weights_bytes: u64,
    /// Memory available now (sysinfo).
    #[ts(type = "number")]
    pub available_memory: u64,
    /// Free space where the cache is, where the OS says.
    #[ts(type = "number | null")]
    pub free_disk: Option<u64>,
}

/// One file of a repository.
#[derive(Debug, Clone, Serialize, TS)]
pub struct HubFile {
    /// Path in the repository.
    pub path: String,
    /// Size in bytes.
    #[ts(type = "number")]
    pub size: u64,
}

/// Sampling settings the chat view sends; unset ones take the model's defaults.
#[derive(Debug, Clone, Default, Deserialize, TS)]
pub struct ChatSettings {
    /// 0 = greedy.
    pub temperature: Option<f32>,
    /// 0 = off.
    pub top_k: Option<usize>,
    /// 1 = off.
    pub top_p: Option<f32>,
    /// Upper bound on the reply's tokens.
    pub max_tokens: Option<usize>,
    /// Seed for reproducible sampling.
    #[ts(type = "number | null")]
    pub seed: Option<u64>,
}

/// A model being loaded.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LoadEvent {
    /// Weight bytes loaded so far, of all.
    Progress {
        /// Loaded.
        #[ts(type = "number")]
        bytes_done: u64,
        /// In all.
        #[ts(type = "number")]
        bytes_total: u64,
    },
}

/// The model the chat worker holds.
#[derive(Debug, Clone, Serialize, TS)]
pub struct LoadedSummary {
    /// Its file or folder.
    pub path: String,
    /// Architecture as the engine names it.
    pub architecture: String,
    /// Bytes of weights in memory.
    #[ts(type = "number")]
    pub weights_bytes: u64,
    /// Number of weights.
    #[ts(type = "number")]
    pub parameters: u64,
    /// `Q4_K_M`, `BF16`, `NF4`, ...
    pub quantization: String,
    /// Bits per weight of the stored tensors.
    pub bits_per_weight: f64,
    /// Size on disk.
    #[ts(type = "number")]
    pub file_bytes: u64,
    /// Context length in tokens.
    pub context_length: usize,
    /// Whether it has a chat template (otherwise plain completion).
    pub has_chat_template: bool,
    /// Load time, measured.
    pub load_ms: f64,
    /// Where it runs: `cpu`, `cuda:0`, `metal`.
    pub device: String,
    /// Why `auto` chose the CPU, when a GPU might have been expected.
    pub device_note: Option<String>,
}

/// A stored conversation reopened: the model now loaded, and its messages.
#[derive(Debug, Clone, Serialize, TS)]
pub struct OpenedChat {
    /// The model, loaded again if another was held.
    pub loaded: LoadedSummary,
    /// The messages, oldest first.
    pub messages: Vec<unicorn_engine::chats::StoredMessage>,
}

/// Machine figures for the dashboard, measured when asked.
#[derive(Debug, Clone, Serialize, TS)]
pub struct SystemStats {
    /// Physical memory.
    #[ts(type = "number")]
    pub total_memory: u64,
    /// Memory in use by everything.
    #[ts(type = "number")]
    pub used_memory: u64,
    /// This process's resident memory.
    #[ts(type = "number")]
    pub process_rss: u64,
    /// CPU use across all cores since the last call, 0-100.
    pub cpu_percent: f32,
    /// Logical cores.
    pub cores: usize,
    /// Memory read bandwidth measured once at start-up (bytes/s), for the roofline.
    pub memory_bandwidth: f64,
    /// NVIDIA GPUs and their memory now (NVML).
    pub gpus: Vec<unicorn_engine::device::GpuMemory>,
    /// Why there are none, when the driver cannot be read.
    pub gpu_note: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    /// Every binding the front end imports, as ts-rs writes it now.
    fn generate(dir: &Path) {
        ChatEvent::export_all_to(dir).unwrap();
        PullEvent::export_all_to(dir).unwrap();
        HubListing::export_all_to(dir).unwrap();
        QuantizeEvent::export_all_to(dir).unwrap();
        CompareEvent::export_all_to(dir).unwrap();
        ChatSettings::export_all_to(dir).unwrap();
        LoadedSummary::export_all_to(dir).unwrap();
        LoadEvent::export_all_to(dir).unwrap();
        OpenedChat::export_all_to(dir).unwrap();
        unicorn_engine::chats::ChatRecord::export_all_to(dir).unwrap();
        SystemStats::export_all_to(dir).unwrap();
        QuantizePrediction::export_all_to(dir).unwrap();
        unicorn_engine::library::Entry::export_all_to(dir).unwrap();
    }

    fn read_dir(dir: &Path) -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            std::fs::read_to_string(e.path()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The committed TypeScript types equal what the Rust types generate, so the
    /// front end cannot drift from the shell. `UNICORN_UPDATE_BINDINGS=1 cargo test
    /// -p unicorn-app bindings` rewrites them.
    #[test]
    fn bindings_are_current() {
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/src/bindings");
        let fresh = std::env::temp_dir().join(format!("unicorn-bindings-{}", std::process::id()));
        std::fs::remove_dir_all(&fresh).ok();
        generate(&fresh);
        let (want, have) = (read_dir(&fresh), read_dir(&committed));
        if std::env::var_os("UNICORN_UPDATE_BINDINGS").is_some() {
            std::fs::remove_dir_all(&committed).ok();
            std::fs::create_dir_all(&committed).unwrap();
            for (name, text) in &want {
                std::fs::write(committed.join(name), text).unwrap();
            }
        } else {
            assert_eq!(
                have.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "ui/src/bindings is stale: run UNICORN_UPDATE_BINDINGS=1 cargo test -p unicorn-app bindings"
            );
            for (name, text) in &want {
                assert_eq!(&have[name], text, "ui/src/bindings/{name} is stale");
            }
        }
        std::fs::remove_dir_all(&fresh).ok();
    }
}

//! What the quantize view's commands send the front end.

use serde::Serialize;
use ts_rs::TS;
use unicorn_engine::Progress;

/// A quantization as it happens: progress, then `done`, `cancelled` or `error`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum QuantizeEvent {
    /// Source bytes read so far (item: the tensor being written).
    Progress {
        /// Where the quantization stands.
        progress: Progress,
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

crate::jobs::job_event!(QuantizeEvent, Cancelled);

/// A quality measurement (perplexity and KL divergence against the source) as it
/// happens: progress (windows of text), then `done`, `cancelled` or `error`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CompareEvent {
    /// Windows scored so far.
    Progress {
        /// Where the measurement stands.
        progress: Progress,
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

crate::jobs::job_event!(CompareEvent, Cancelled);

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

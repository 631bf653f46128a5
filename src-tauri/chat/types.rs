//! What the chat commands send the front end, and the settings it sends them.

use serde::{Deserialize, Serialize};
use ts_rs::TS;
use unicorn_engine::session::{ContextUse, Overflow};
use unicorn_engine::stats::Stats;
use unicorn_engine::Progress;
use unicorn_engine::SamplingParams;

/// Which chat model a command is for: the one the conversation belongs to, or
/// side-by-side mode's second model (sent the same turns, replies not stored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// The conversation's model.
    #[default]
    Main,
    /// Side-by-side mode's second model.
    Side,
}

/// A chat reply as it happens: tokens, then `done` or `error`.
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
        /// `eos`, `stop_string`, `max_tokens`, `cancelled`, `context_full` or `loop`.
        stop_reason: String,
        /// Measured prompt, TTFT, speed and memory figures.
        stats: Stats,
        /// How the conversation's context stands now.
        context: Option<ContextUse>,
    },
    /// The reply failed.
    Error {
        /// What went wrong, naming the file where there is one.
        message: String,
    },
}

/// A model being loaded: progress events, at most one per percent.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LoadEvent {
    /// Weight bytes held so far, of all (item: the tensor).
    Progress {
        /// Where the load stands.
        progress: Progress,
    },
}

/// Settings the chat view sends with a turn; unset ones take the model's defaults
/// (else ours: [`unicorn_engine::SamplingParams::default`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, TS)]
pub struct ChatSettings {
    /// 0 = greedy.
    pub temperature: Option<f32>,
    /// 0 = off.
    pub top_k: Option<usize>,
    /// 1 = off.
    pub top_p: Option<f32>,
    /// 0 = off.
    #[serde(default)]
    pub min_p: Option<f32>,
    /// 1 = off.
    #[serde(default)]
    pub repeat_penalty: Option<f32>,
    /// Upper bound on the reply's tokens.
    pub max_tokens: Option<usize>,
    /// Seed for reproducible sampling.
    #[ts(type = "number | null")]
    pub seed: Option<u64>,
    /// The reply ends before the first of these.
    #[serde(default)]
    pub stop: Option<Vec<String>>,
    /// End a reply that has fallen into an exact loop.
    #[serde(default)]
    pub stop_on_loop: Option<bool>,
    /// Context length in tokens (default: [`LoadedSummary::ctx_default`]).
    #[serde(default)]
    pub ctx: Option<usize>,
    /// What happens when the conversation outgrows the context (default: drop-oldest).
    #[serde(default)]
    pub overflow: Option<Overflow>,
    /// A model (file or folder, absolute) that drafts tokens for the loaded one to
    /// check (speculative decoding: the reply stays the loaded model's); none: off.
    #[serde(default)]
    pub draft: Option<String>,
}

/// What a turn is: a new message, the last reply again, or an edited message.
#[derive(Debug, Clone, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Turn {
    /// A new user message (with the system prompt, on a new conversation), and the
    /// images it shows the model (placed before its text).
    New {
        /// The message (may be blank when it has images).
        text: String,
        /// The system prompt.
        system: Option<String>,
        /// Its images (at most [`super::images::MAX_PER_MESSAGE`]).
        #[serde(default)]
        images: Vec<ImageUpload>,
    },
    /// Sample the last reply again.
    Regenerate,
    /// Replace user message `index` (counting all messages, the system prompt too)
    /// and answer it; what came after it is forgotten.
    Edit {
        /// Which message.
        index: usize,
        /// Its new text.
        text: String,
    },
}

/// An image the front end sends with a message.
#[derive(Debug, Clone, Deserialize, TS)]
pub struct ImageUpload {
    /// Its file name, shown with it (never a path anything opens).
    pub name: String,
    /// The file's bytes (a PNG, JPEG or WebP), base64.
    pub data: String,
    /// The preview the front end made of it (a `data:image/png;base64,` URL), kept
    /// with the stored chat so that reopening it shows the image without sending
    /// its bytes back.
    pub thumb: String,
}

/// An image file read for the front end (a file dropped on the window).
#[derive(Debug, Clone, Serialize, TS)]
pub struct ImageFile {
    /// Its file name.
    pub name: String,
    /// Its bytes, base64.
    pub data: String,
}

/// A stored message's image, as the chat shows it.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ShownImage {
    /// Its file name.
    pub name: String,
    /// Its preview, a `data:` URL.
    pub thumb: String,
}

/// The images a model takes in a message.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ImageLimits {
    /// Prompt tokens one image takes.
    pub tokens_per_image: usize,
    /// Most images in one message.
    pub max_per_message: usize,
    /// Largest image file, in bytes.
    #[ts(type = "number")]
    pub max_bytes: u64,
}

/// The memory a context length takes with the loaded model (an estimate).
#[derive(Debug, Clone, Serialize, TS)]
pub struct ContextEstimate {
    /// Tokens of context.
    pub ctx: usize,
    /// KV cache at that length.
    #[ts(type = "number")]
    pub kv_cache_bytes: u64,
    /// The process's expected peak with it.
    #[ts(type = "number")]
    pub memory_bytes: u64,
    /// Memory available now.
    #[ts(type = "number")]
    pub free_ram_bytes: u64,
    /// Whether it fits.
    pub fits: bool,
}

/// The model a chat worker holds.
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
    /// The model's context length in tokens.
    pub context_length: usize,
    /// The context a chat gets unless set: the model's, clamped to what fits in
    /// memory (estimate).
    pub ctx_default: usize,
    /// Sampling a turn gets unless set: the model's recommendation, else ours.
    pub sampling: SamplingParams,
    /// Whether `sampling` is the model's own recommendation.
    pub sampling_from_model: bool,
    /// Whether it has a chat template (otherwise plain completion).
    pub has_chat_template: bool,
    /// Load time, measured.
    pub load_ms: f64,
    /// Where it runs: `cpu`, `cuda:0`, `metal`.
    pub device: String,
    /// Why `auto` chose the CPU, when a GPU might have been expected.
    pub device_note: Option<String>,
    /// How its KV cache holds keys and values.
    pub kv_type: unicorn_engine::attention::KvType,
    /// How its output head runs (`q8_0` only where a dense head was copied).
    pub head_type: unicorn_engine::models::HeadType,
    /// The images it takes in a message; none when it sees no images (no vision
    /// tower).
    pub images: Option<ImageLimits>,
}

/// A stored conversation reopened: the model now loaded, and its messages.
#[derive(Debug, Clone, Serialize, TS)]
pub struct OpenedChat {
    /// The model, loaded again if another was held.
    pub loaded: LoadedSummary,
    /// The messages, oldest first.
    pub messages: Vec<unicorn_library::chats::StoredMessage>,
    /// The images of each message (most have none), in the same order.
    pub images: Vec<Vec<ShownImage>>,
    /// Why the model does not have the chat's images again (it continues with the
    /// text), when it does not.
    pub notice: Option<String>,
}

//! What the download view's commands send the front end.

use serde::Serialize;
use ts_rs::TS;
use unicorn_engine::Progress;

/// A download as it happens: progress, then `done`, `paused` or `error`.
#[derive(Debug, Clone, Serialize, TS)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// Bytes of the whole pull present, resumed ones included (item: the file; a
    /// stalled transfer being retried says so there).
    Progress {
        /// Where the download stands.
        progress: Progress,
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

crate::jobs::job_event!(PullEvent, Paused);

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

/// One model a hub search found.
#[derive(Debug, Clone, Serialize, TS)]
pub struct HubSearchResult {
    /// `org/name`.
    pub id: String,
    /// Downloads in the last 30 days.
    #[ts(type = "number")]
    pub downloads: u64,
    /// Likes.
    #[ts(type = "number")]
    pub likes: u64,
    /// The licence its tags name.
    pub license: Option<String>,
    /// `no`, `auto` (accept the licence) or `manual` (the authors approve).
    pub gated: String,
    /// The task (`text-generation`, ...).
    pub pipeline: Option<String>,
    /// The library it is for (`gguf`, `transformers`, ...).
    pub library: Option<String>,
}

/// What a repository offers to download, and how each choice fits this machine.
#[derive(Debug, Clone, Serialize, TS)]
pub struct HubPlan {
    /// `org/name`.
    pub repo: String,
    /// The commit the choices are for.
    pub commit: String,
    /// `no`, `auto` or `manual`.
    pub gated: String,
    /// The licence its tags name.
    pub license: Option<String>,
    /// The context length the estimates are for.
    pub ctx: usize,
    /// GGUF quantizations, smallest first.
    pub quants: Vec<HubQuant>,
    /// Vision projectors (`mmproj*.gguf`).
    pub mmproj: Vec<HubQuant>,
    /// The files the engine reads of an HF (safetensors) model, if it holds one.
    pub safetensors: Option<HubFileSet>,
    /// What was left out and why, one line each.
    pub notes: Vec<String>,
    /// Every file of the repository with its size.
    pub files: Vec<HubFile>,
    /// Memory available now (sysinfo).
    #[ts(type = "number")]
    pub available_memory: u64,
    /// Free space where the cache is, where the OS says.
    #[ts(type = "number | null")]
    pub free_disk: Option<u64>,
}

/// One GGUF quantization (or vision projector): its files, size and fit.
#[derive(Debug, Clone, Serialize, TS)]
pub struct HubQuant {
    /// Unique in the plan: the file's path without `.gguf` and split suffix.
    pub id: String,
    /// The quantization its name says (`Q4_K_M`, ...).
    pub name: String,
    /// Its files (split parts in order).
    pub files: Vec<String>,
    /// Bytes of all of them.
    #[ts(type = "number")]
    pub size: u64,
    /// Bits per weight: measured from the header, else typical of the type.
    pub bits_per_weight: Option<f64>,
    /// Weights, from the header.
    #[ts(type = "number | null")]
    pub parameters: Option<u64>,
    /// The engine's estimate of the memory it needs at the plan's context.
    #[ts(type = "number | null")]
    pub memory_estimate: Option<u64>,
    /// Whether that fits in the memory available now.
    pub fits: Option<bool>,
    /// The largest that fits with 20 % of the memory to spare.
    pub best_fit: bool,
    /// Why there is no estimate.
    pub error: Option<String>,
}

/// A set of files with their total size, and what was left out.
#[derive(Debug, Clone, Serialize, TS)]
pub struct HubFileSet {
    /// Paths in the repository.
    pub files: Vec<String>,
    /// Bytes of all of them.
    #[ts(type = "number")]
    pub size: u64,
    /// Files left out (other formats, duplicates).
    pub skipped: Vec<String>,
    /// Their bytes.
    #[ts(type = "number")]
    pub skipped_size: u64,
}

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

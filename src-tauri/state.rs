//! What the commands share: the chat workers and the history, running jobs, the
//! machine probe, and the app's data folder (the library database, quantized models).

use crate::chat::history::History;
use crate::chat::types::Slot;
use crate::chat::worker::ChatWorker;
use crate::jobs::Jobs;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use unicorn_library::Library;

/// The app's state, managed by Tauri.
pub struct AppState {
    /// The conversation's model.
    chat: ChatWorker,
    /// Side-by-side mode's second model, sent the same turns (its replies are shown
    /// beside the first model's, not stored).
    side: ChatWorker,
    /// Stored conversations (in the library database).
    pub history: History,
    /// Quantizations, comparisons and downloads in flight.
    pub jobs: Jobs,
    /// The dashboard's machine probe, made on its first use.
    pub system: Mutex<Option<sysinfo::System>>,
    /// Memory bandwidth, measured once in the background.
    pub bandwidth: std::sync::Arc<OnceLock<f64>>,
    /// The Server panel's API server.
    pub server: crate::server::AppServer,
    /// Why this CPU build runs rather than the CUDA build ([`crate::gpu`]).
    pub engine_note: Option<String>,
    /// The app's data folder.
    data: PathBuf,
}

impl Default for AppState {
    fn default() -> Self {
        Self::at(unicorn_library::data_dir())
    }
}

impl AppState {
    /// State keeping its library and models in `data`.
    pub fn at(data: PathBuf) -> Self {
        Self {
            chat: ChatWorker::new(),
            side: ChatWorker::new(),
            history: History::new(data.join("library.sqlite3"), data.join("chat-images")),
            jobs: Jobs::default(),
            system: Mutex::new(None),
            bandwidth: Default::default(),
            server: Default::default(),
            engine_note: None,
            data,
        }
    }

    /// The worker of a chat slot.
    pub fn worker(&self, slot: Slot) -> &ChatWorker {
        match slot {
            Slot::Main => &self.chat,
            Slot::Side => &self.side,
        }
    }

    /// The library database's file.
    pub fn library_db(&self) -> PathBuf {
        self.data.join("library.sqlite3")
    }

    /// The library database, opened.
    pub fn library(&self) -> unicorn_engine::Result<Library> {
        Library::open(&self.library_db())
    }

    /// Where quantized models are written.
    pub fn models_dir(&self) -> PathBuf {
        self.data.join("models")
    }
}

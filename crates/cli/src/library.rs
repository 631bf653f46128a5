//! The model library from the CLI: commands that write or fetch a model record it,
//! so `unicorn list` and the desktop app show it.

use anyhow::{Context, Result};
use unicorn_library::Library;

/// The library in the app's data folder.
pub fn open() -> Result<Library> {
    Library::open_default().context("opening the model library")
}

/// Records a model the CLI just wrote or fetched; a library problem is a warning,
/// never a failure of the work itself.
pub fn record(path: &std::path::Path, src: &str, repo: Option<&str>) {
    if let Err(e) = open().and_then(|l| Ok(l.add(path, src, repo)?)) {
        eprintln!("warning: not added to the model library: {e:#}");
    }
}

//! Outputs that appear whole or not at all: the work writes into a temporary sibling
//! of the target (same file system, so the final rename is atomic), which replaces
//! the target only when the work succeeded and is removed when it failed or was
//! cancelled. Callers decide beforehand whether replacing an existing target is
//! allowed (`--force`).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// `.<name>.partial-<pid>` next to `out`.
fn sibling(out: &Path) -> PathBuf {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    parent.join(format!(".{name}.partial-{}", std::process::id()))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `work` on a fresh temporary folder, then moves it to `out` (replacing a
/// folder there).
pub fn folder<T>(out: &Path, work: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let tmp = sibling(out);
    std::fs::remove_dir_all(&tmp).ok();
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = work(&tmp).and_then(|v| {
        if out.exists() {
            std::fs::remove_dir_all(out).map_err(io(out))?;
        }
        std::fs::rename(&tmp, out).map_err(io(out))?;
        Ok(v)
    });
    if result.is_err() {
        std::fs::remove_dir_all(&tmp).ok();
    }
    result
}

/// Runs `work` on a temporary file path, then renames it to `out` (replacing a
/// file there).
pub fn file<T>(out: &Path, work: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let tmp = sibling(out);
    let result = work(&tmp).and_then(|v| {
        std::fs::rename(&tmp, out).map_err(io(out))?;
        Ok(v)
    });
    if result.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    result
}

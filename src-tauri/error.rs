//! The one error type commands return, serialized for the front end as
//! `{kind, message}`, and the checks every path from the webview goes through.

use serde::Serialize;
use std::path::PathBuf;

/// An error the front end can show: what failed, in words, and on which file.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "camelCase")]
pub enum CommandError {
    /// The request itself is malformed.
    Invalid(String),
    /// The engine failed (the message names the file).
    Engine(String),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(m) | Self::Engine(m) => f.write_str(m),
        }
    }
}

impl From<unicorn_engine::Error> for CommandError {
    fn from(e: unicorn_engine::Error) -> Self {
        Self::Engine(e.to_string())
    }
}

impl From<unicorn_hub::Error> for CommandError {
    fn from(e: unicorn_hub::Error) -> Self {
        Self::Engine(e.to_string())
    }
}

/// A background task that ended without an answer (it panicked or was dropped).
impl From<tauri::Error> for CommandError {
    fn from(e: tauri::Error) -> Self {
        Self::Engine(e.to_string())
    }
}

/// The result of a command.
pub type CommandResult<T> = Result<T, CommandError>;

/// A path from the webview that names an existing model: absolute, and a regular
/// file or a folder (never a device, pipe or socket, which would block whoever reads
/// it, nor anything under `/proc`, `/sys` or `/dev`).
pub fn existing(path: &str) -> CommandResult<PathBuf> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(CommandError::Invalid(format!(
            "{path}: give an absolute path"
        )));
    }
    let special = ["/proc", "/sys", "/dev"]
        .iter()
        .any(|root| p.starts_with(root));
    let meta = std::fs::metadata(&p)
        .map_err(|_| CommandError::Invalid(format!("{path}: no such file or folder")))?;
    if special || !(meta.is_file() || meta.is_dir()) {
        return Err(CommandError::Invalid(format!(
            "{path}: not a model file or folder (devices, pipes and system folders are refused)"
        )));
    }
    Ok(p)
}

/// The text of a message from the webview, bounded so that a pasted novel cannot
/// exhaust memory before the engine says it is longer than the context.
pub fn message_text(text: &str, what: &str) -> CommandResult<()> {
    /// Far beyond any context we run (a million tokens are about 4 MB of text).
    const MAX_BYTES: usize = 4 << 20;
    if text.len() > MAX_BYTES {
        return Err(CommandError::Invalid(format!(
            "the {what} is {} MB; at most {} MB is accepted",
            text.len() >> 20,
            MAX_BYTES >> 20
        )));
    }
    Ok(())
}

/// The message of a caught panic: what the engine asserted, for the user to report.
pub fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    format!("internal error (please report it): {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_the_webview_are_checked() {
        let refuse = |p: &str| match existing(p) {
            Err(CommandError::Invalid(m)) => m,
            other => panic!("{p}: {other:?}"),
        };
        assert!(refuse("model.gguf").contains("absolute"));
        assert!(refuse("/no/such/model.gguf").contains("no such"));
        assert!(refuse("/dev/null").contains("not a model"));
        assert!(refuse("/proc/self/status").contains("not a model"));
        #[cfg(unix)]
        {
            let d = std::env::temp_dir().join(format!("unicorn-fifo-{}", std::process::id()));
            std::fs::remove_file(&d).ok();
            let made = std::process::Command::new("mkfifo").arg(&d).status();
            if made.is_ok_and(|s| s.success()) {
                assert!(refuse(&d.display().to_string()).contains("not a model"));
                std::fs::remove_file(&d).ok();
            }
        }
        assert!(existing(&std::env::temp_dir().display().to_string()).is_ok());
        assert!(message_text(&"x".repeat(5 << 20), "message").is_err());
        assert!(message_text("hello", "message").is_ok());
    }
}

//! Ctrl-C: during a reply it stops the reply, during cancellable work (convert,
//! quantize, pull, synth) it cancels the work (which leaves nothing behind, or a
//! partial download to resume), and otherwise it exits.

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set while a reply or cancellable work runs: Ctrl-C then cancels it instead of
/// exiting.
static CANCELLABLE: AtomicBool = AtomicBool::new(false);
static CANCEL: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once; later calls keep the first).
pub fn install() -> Result<()> {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    ctrlc::set_handler(|| {
        if CANCELLABLE.load(Ordering::SeqCst) {
            CANCEL.store(true, Ordering::SeqCst);
        } else {
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")?;
    let _ = INSTALLED.set(true);
    Ok(())
}

/// Marks work as cancellable for its lifetime.
pub struct Cancellable;

impl Cancellable {
    /// Starts cancellable work.
    pub fn start() -> Result<Self> {
        install()?;
        CANCEL.store(false, Ordering::SeqCst);
        CANCELLABLE.store(true, Ordering::SeqCst);
        Ok(Self)
    }
}

impl Drop for Cancellable {
    fn drop(&mut self) {
        CANCELLABLE.store(false, Ordering::SeqCst);
    }
}

/// Whether Ctrl-C was pressed during cancellable work.
pub fn cancel_requested() -> bool {
    CANCEL.load(Ordering::SeqCst)
}

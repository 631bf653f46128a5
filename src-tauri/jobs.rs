//! Background jobs (quantize, compare, pull), all run the same way: registered under
//! an id with a cancel flag, run on a thread of their own, their events pushed to a
//! sink (the front end's channel), their end mapped to one last event, and removed
//! when they end. `job_cancel` flips the flag; the job's progress callback reads it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use unicorn_engine::Progress;

/// Where a job's events go: a Tauri channel in the app, a closure in tests.
pub type Sink<E> = Box<dyn Fn(E) + Send>;

/// The event type of a kind of job: how its progress and its end are told.
pub trait JobEvent: Send + 'static {
    /// Where the work stands.
    fn progress(p: Progress) -> Self;
    /// The user stopped it (for a download: paused, the partial file kept).
    fn cancelled() -> Self;
    /// It failed, in words that name the file.
    fn failed(message: String) -> Self;
}

/// Implements [`JobEvent`] for an event enum with the usual variants: `Progress {
/// progress }`, `Error { message }`, and the given variant for a cancelled job.
macro_rules! job_event {
    ($event:ty, $cancelled:ident) => {
        impl $crate::jobs::JobEvent for $event {
            fn progress(progress: unicorn_engine::Progress) -> Self {
                Self::Progress { progress }
            }
            fn cancelled() -> Self {
                Self::$cancelled
            }
            fn failed(message: String) -> Self {
                Self::Error { message }
            }
        }
    };
}
pub(crate) use job_event;

/// What a running job sees: its cancel flag and its sink.
pub struct Job<E> {
    cancel: Arc<AtomicBool>,
    sink: Sink<E>,
    last: Mutex<Option<Instant>>,
}

impl<E: JobEvent> Job<E> {
    /// Tells the front end where the work stands (a few times a second at most, and
    /// always the last), and whether to go on.
    pub fn progress(&self, p: &Progress) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) || p.finished() {
            *last = Some(Instant::now());
            (self.sink)(E::progress(p.clone()));
        }
        !self.cancelled()
    }

    /// Whether the user asked to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

/// Running jobs' cancel flags.
#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    running: Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>>,
}

impl Jobs {
    /// Runs `work` on its own thread; its result, or how it ended, is the last event
    /// `sink` gets. Returns the job's id.
    pub fn spawn<E: JobEvent>(
        &self,
        sink: Sink<E>,
        work: impl FnOnce(&Job<E>) -> Result<E, String> + Send + 'static,
    ) -> u64 {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let cancel = Arc::new(AtomicBool::new(false));
        if let Ok(mut r) = self.running.lock() {
            r.insert(id, cancel.clone());
        }
        let running = self.running.clone();
        std::thread::spawn(move || {
            let job = Job {
                cancel,
                sink,
                last: Mutex::new(None),
            };
            // A panic in the engine must not take the app down: it ends the job.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&job)))
                .unwrap_or_else(|p| Err(crate::error::panic_message(p)));
            let last = match outcome {
                Ok(event) => event,
                Err(_) if job.cancelled() => E::cancelled(),
                Err(message) => E::failed(message),
            };
            if let Ok(mut r) = running.lock() {
                r.remove(&id);
            }
            (job.sink)(last);
        });
        id
    }

    /// Asks job `id` to stop; false if no such job runs.
    pub fn cancel(&self, id: u64) -> bool {
        self.running
            .lock()
            .ok()
            .and_then(|r| r.get(&id).map(|c| c.store(true, Ordering::SeqCst)))
            .is_some()
    }
}

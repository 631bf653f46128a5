//! The progress of long work, one shape for every job: loading a model, quantizing,
//! converting, pulling from a hub and comparing two models all report a
//! [`Progress`] to a callback that returns `false` to cancel.

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Where long work stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Progress {
    /// What is being worked on now: a tensor, a file, a window of text.
    pub item: String,
    /// Its position among the items, from 1.
    pub item_index: usize,
    /// How many items there are.
    pub items: usize,
    /// Units done: bytes (loading, quantizing, converting, pulling) or windows
    /// (comparing).
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub done: u64,
    /// Units in all.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub total: u64,
    /// Units per second so far.
    pub per_sec: f64,
    /// Seconds left at that rate, once there is a rate.
    pub eta_s: Option<f64>,
}

impl Progress {
    /// Whether the work is complete.
    pub fn finished(&self) -> bool {
        self.done >= self.total
    }
}

/// A progress callback: told where the work stands, returns `false` to cancel it.
pub type ProgressFn<'a> = &'a mut dyn FnMut(&Progress) -> bool;

/// Measures rate and time left from the start of the work.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    start: Instant,
    /// Units already done when the meter started (a resumed download), which do not
    /// count towards the rate.
    base: u64,
}

impl Meter {
    /// Starts measuring now.
    pub fn start() -> Self {
        Self::resuming(0)
    }

    /// Starts measuring work of which `base` units were done before (a resumed
    /// download): the rate counts only what is done from now on.
    pub fn resuming(base: u64) -> Self {
        Self {
            start: Instant::now(),
            base,
        }
    }

    /// Where the work stands with `done` of `total` units, on item `item_index` of
    /// `items`.
    pub fn at(
        &self,
        item: impl Into<String>,
        item_index: usize,
        items: usize,
        done: u64,
        total: u64,
    ) -> Progress {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let per_sec = done.saturating_sub(self.base) as f64 / secs;
        Progress {
            item: item.into(),
            item_index,
            items,
            done,
            total,
            per_sec,
            eta_s: (per_sec > 0.0).then(|| total.saturating_sub(done) as f64 / per_sec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_time_left_come_from_work_done_since_the_start() {
        let m = Meter::resuming(100);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let p = m.at("model.safetensors", 1, 2, 300, 500);
        assert!(p.per_sec > 0.0 && p.per_sec < 200.0 / 0.02, "{p:?}");
        let eta = p.eta_s.unwrap();
        assert!((eta - 200.0 / p.per_sec).abs() < 1e-9);
        assert!(!p.finished());
        let start = Meter::start().at("x", 1, 1, 0, 10);
        assert_eq!((start.per_sec, start.eta_s), (0.0, None));
    }
}

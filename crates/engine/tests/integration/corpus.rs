//! The fuzzing corpus (`tests/corpus`, seeded by `scripts/make-bad-inputs`, grown by
//! `scripts/fuzz` with every crash it finds) replayed through the same entry points
//! the fuzz targets call: each input returns, without a panic, in bounded time.

use crate::common::*;
use std::time::{Duration, Instant};

fn replay(target: &str, run: fn(&[u8]) -> Result<(), String>) {
    let dir = repo_root().join("tests/corpus").join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let data = std::fs::read(e.path()).unwrap();
        let t0 = Instant::now();
        // A panic here fails the test, naming the input.
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{}: panicked", e.path().display());
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{}: took {:?}",
            e.path().display(),
            t0.elapsed()
        );
        n += 1;
    }
    assert!(n > 0, "{}: empty corpus", dir.display());
}

#[test]
fn gguf_corpus() {
    replay("gguf", unicorn_engine::fuzz::gguf);
}

#[test]
fn hf_folder_corpus() {
    replay("hf_folder", unicorn_engine::fuzz::hf_folder);
}

#[test]
fn nf4_state_corpus() {
    replay("nf4_state", unicorn_engine::fuzz::nf4_state);
}

#[test]
fn tokenizer_and_template_corpus() {
    replay("tokenizer", unicorn_engine::fuzz::tokenizer_and_template);
}

//! Loading reports its progress in weight bytes and can be cancelled.

use crate::common::{model, GEMMA, SMOLLM};
use std::sync::{Arc, Mutex};
use unicorn_engine::{Error, LoadOptions, LoadedModel};

#[test]
fn loading_reports_bytes_up_to_the_weights_and_can_be_cancelled() {
    for name in [SMOLLM, GEMMA] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let m = LoadedModel::load_with_progress(&model(name), &LoadOptions::default(), &mut |p| {
            s.lock().unwrap().push((p.done, p.total));
            true
        })
        .unwrap();
        let seen = seen.lock().unwrap();
        assert!(seen.len() > 20, "{name}: one report per tensor");
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{name}: grows");
        let (done, total) = *seen.last().unwrap();
        assert_eq!(done, total, "{name}: ends at the total");
        assert_eq!(total, m.model().weight_bytes().total as u64, "{name}");
    }
    let mut calls = 0;
    let e = LoadedModel::load_with_progress(&model(SMOLLM), &LoadOptions::default(), &mut |_| {
        calls += 1;
        calls < 5
    })
    .err()
    .expect("cancelled");
    assert!(matches!(e, Error::Cancelled), "{e}");
}

//! Continuous batching on the real models: every sequence of a batch gets exactly
//! the tokens it gets alone, prefixes are reused across requests, a client that
//! leaves frees its slot, and a full queue refuses.

use crate::common::*;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use unicorn_engine::batch::{BatchOptions, Batcher, Event, Rejected, Request};
use unicorn_engine::{GenerationParams, LoadOptions, LoadedModel, Message, StopReason};

const QUESTIONS: [&str; 6] = [
    "What is the capital of France?",
    "Name three colours.",
    "Write a haiku about the sea.",
    "How many legs does a spider have?",
    "What is 12 times 12?",
    "Tell me a fact about the Moon.",
];

fn request(prompt: Vec<u32>, max: usize, tx: mpsc::Sender<(usize, Event)>, i: usize) -> Request {
    Request {
        prompt: prompt.into(),
        params: GenerationParams::greedy(max),
        logprobs: None,
        constraint: None,
        sink: Box::new(move |e| tx.send((i, e)).is_ok()),
        cancel: Arc::new(AtomicBool::new(false)),
    }
}

/// Runs every question through a batcher at once; returns each one's Done.
fn batched(m: &Arc<LoadedModel>, parallel: usize, max: usize) -> Vec<(Vec<u32>, StopReason)> {
    let b = Batcher::new(
        m.clone(),
        BatchOptions {
            parallel,
            queue: 16,
            ctx: 1024,
        },
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    for (i, q) in QUESTIONS.iter().enumerate() {
        let ids = m.render_chat(&[Message::user(*q)]).unwrap();
        b.submit(request(ids, max, tx.clone(), i)).unwrap();
    }
    drop(tx);
    let mut out = vec![None; QUESTIONS.len()];
    for (i, e) in rx {
        if let Event::Done {
            token_ids,
            stop_reason,
            ..
        } = e
        {
            out[i] = Some((token_ids, stop_reason));
        }
    }
    out.into_iter()
        .map(|o| o.expect("every request ends"))
        .collect()
}

fn alone(m: &LoadedModel, max: usize) -> Vec<Vec<u32>> {
    QUESTIONS
        .iter()
        .map(|q| {
            let r = m
                .chat_session()
                .send(
                    &[Message::user(*q)],
                    &GenerationParams::greedy(max),
                    &mut |_| true,
                )
                .unwrap();
            let mut ids = r.token_ids;
            if r.stop_reason == StopReason::Eos {
                ids.pop();
            }
            ids
        })
        .collect()
}

fn check_batched_equals_alone(name: &str) {
    let m = Arc::new(LoadedModel::load(&model(name), &LoadOptions::default()).unwrap());
    let want = alone(&m, 24);
    for parallel in [1, 4, 6] {
        let got = batched(&m, parallel, 24);
        for (i, ((ids, _), w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(ids, w, "{name}, {parallel} slots, question {i}");
        }
    }
}

#[test]
fn batched_greedy_equals_alone_smollm2() {
    check_batched_equals_alone(SMOLLM);
}

#[test]
fn batched_greedy_equals_alone_gemma3() {
    check_batched_equals_alone(GEMMA);
}

#[test]
fn prefixes_are_reused_and_leaving_clients_free_their_slots() {
    let m = Arc::new(LoadedModel::load(&model(SMOLLM), &LoadOptions::default()).unwrap());
    let b = Batcher::new(
        m.clone(),
        BatchOptions {
            parallel: 1,
            queue: 1,
            ctx: 1024,
        },
    )
    .unwrap();
    let first = vec![Message::user(QUESTIONS[0])];
    let ids = m.render_chat(&first).unwrap();
    // A client that leaves after two tokens.
    let (tx, rx) = mpsc::channel();
    let mut seen = 0;
    let tx2 = tx.clone();
    let mut r = request(ids.clone(), 50, tx.clone(), 0);
    r.sink = Box::new(move |e| {
        if matches!(e, Event::Token { .. }) {
            seen += 1;
        }
        tx2.send((0, e)).is_ok() && seen < 2
    });
    b.submit(r).unwrap();
    // The one slot is busy: one may queue, the next is refused.
    b.submit(request(ids.clone(), 8, tx.clone(), 1)).unwrap();
    let third = b.submit(request(ids.clone(), 8, tx.clone(), 2));
    assert!(
        matches!(third, Err(Rejected::QueueFull) | Ok(())),
        "{third:?}"
    );
    drop(tx);
    let mut ends = Vec::new();
    let mut admitted = Vec::new();
    for (i, e) in rx {
        match e {
            Event::Admitted { reused, .. } => admitted.push((i, reused)),
            Event::Done { stop_reason, .. } => ends.push((i, stop_reason)),
            Event::Failed(f) => panic!("request {i} failed: {f}"),
            Event::Token { .. } => {}
        }
    }
    assert!(ends.contains(&(0, StopReason::Cancelled)), "{ends:?}");
    assert!(ends.iter().any(|&(i, _)| i == 1), "{ends:?}");
    // The second request reused the first's prompt (all but its last token).
    let second = admitted.iter().find(|(i, _)| *i == 1).unwrap();
    assert_eq!(second.1, ids.len() - 1, "{admitted:?}");
    // Too long for the context: refused before queueing.
    let (tx, _rx) = mpsc::channel();
    let long = request(vec![1; 1000], 100, tx, 3);
    assert!(matches!(b.submit(long), Err(Rejected::TooLong(_))));
}

/// The logits of a batched decode step, bit for bit those of each sequence alone
/// (greedy tokens agreeing is a weaker check: small differences rarely flip one).
fn check_batched_logits(name: &str) {
    let m = LoadedModel::load(&model(name), &LoadOptions::default()).unwrap();
    let net = m.model();
    let prompts: Vec<Vec<u32>> = QUESTIONS[..5]
        .iter()
        .map(|q| m.render_chat(&[Message::user(*q)]).unwrap())
        .collect();
    let mut alone = Vec::new();
    let mut caches = Vec::new();
    for p in &prompts {
        let mut c = net.new_cache();
        net.forward(p, &mut c, p.len() - 1).unwrap();
        let mut solo = c.clone();
        let steps: Vec<Vec<f32>> = [7u32, 9, 11]
            .iter()
            .map(|&t| {
                let l = net.forward(&[t], &mut solo, 0).unwrap();
                l.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            })
            .collect();
        alone.push(steps);
        caches.push(c);
    }
    for (s, t) in [7u32, 9, 11].iter().enumerate() {
        let ids: Vec<[u32; 1]> = prompts.iter().map(|_| [*t]).collect();
        let refs: Vec<&[u32]> = ids.iter().map(|a| a.as_slice()).collect();
        let mut cs: Vec<&mut unicorn_engine::attention::KvCache> = caches.iter_mut().collect();
        let out = net.forward_batch(&refs, &mut cs, 0).unwrap();
        for (i, want) in alone.iter().enumerate() {
            let got = out
                .get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let same = got
                .iter()
                .zip(&want[s])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name}: step {s}, sequence {i} differs from alone");
        }
    }
}

#[test]
fn batched_logits_are_bit_identical_smollm2() {
    check_batched_logits(SMOLLM);
}

#[test]
fn batched_logits_are_bit_identical_gemma3() {
    check_batched_logits(GEMMA);
}

/// Runs one request to its end; returns the text and why it ended.
fn run_one(b: &Batcher, mut req: Request) -> (String, StopReason) {
    let (tx, rx) = mpsc::channel();
    req.sink = Box::new(move |e| tx.send(e).is_ok());
    b.submit(req).unwrap();
    for e in rx {
        match e {
            Event::Done {
                text, stop_reason, ..
            } => return (text, stop_reason),
            Event::Failed(f) => panic!("failed: {f}"),
            _ => {}
        }
    }
    panic!("no Done")
}

fn check_constrained(name: &str) {
    use unicorn_engine::constrain::{Grammar, Grammars};
    let m = Arc::new(LoadedModel::load(&model(name), &LoadOptions::default()).unwrap());
    let tok = m.tokenizer().unwrap();
    let vocab = m.config().vocab_size();
    let g = Grammars::new(tok, vocab, m.stop_ids()[0]).unwrap();
    let b = Batcher::new(
        m.clone(),
        BatchOptions {
            parallel: 2,
            queue: 4,
            ctx: 1024,
        },
    )
    .unwrap();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "country": {"enum": ["France", "Germany", "Italy"]},
            "population": {"type": "integer"},
            "sights": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 2}
        },
        "required": ["city", "country", "population", "sights"],
        "additionalProperties": false
    });
    let ids = m
        .render_chat(&[Message::user("Describe Paris as JSON.")])
        .unwrap();
    let (tx, _) = mpsc::channel();
    let mut req = request(ids.clone(), 200, tx, 0);
    req.constraint = Some(Box::new(g.guide(&Grammar::JsonSchema(schema)).unwrap()));
    let (text, why) = run_one(&b, req);
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{name}: {text:?} does not parse ({why:?}): {e}"));
    assert!(
        ["France", "Germany", "Italy"].contains(&v["country"].as_str().unwrap()),
        "{v}"
    );
    assert!(v["population"].is_i64() || v["population"].is_u64(), "{v}");
    assert!(v["sights"].as_array().unwrap().len() <= 2, "{v}");
    // A regular expression, whole.
    let (tx, _) = mpsc::channel();
    let mut req = request(ids, 40, tx, 0);
    req.constraint = Some(Box::new(
        g.guide(&Grammar::Regex("(yes|no), [0-9]{3}".into()))
            .unwrap(),
    ));
    let (text, _) = run_one(&b, req);
    let digits = text
        .strip_prefix("yes, ")
        .or_else(|| text.strip_prefix("no, "));
    assert!(
        digits.is_some_and(|d| d.len() == 3 && d.bytes().all(|c| c.is_ascii_digit())),
        "{name}: {text:?}"
    );
    // Grammars that cannot compile are refused with a reason.
    assert!(g.guide(&Grammar::Regex("(unclosed".into())).is_err());
    let huge = serde_json::json!({"enum": vec!["x".repeat(100); 1000]});
    assert!(g.guide(&Grammar::JsonSchema(huge)).is_err());
}

#[test]
fn constrained_output_matches_its_schema_smollm2() {
    check_constrained(SMOLLM);
}

#[test]
fn constrained_output_matches_its_schema_gemma3() {
    check_constrained(GEMMA);
}

/// A batcher with a draft model (here the model itself, made to propose at least
/// two tokens a step): requests taken one at a time are drafted for and give the
/// ids they give alone, with the draft's figures in their `Done`; requests decoded
/// together are batched as before (no draft) and give the same ids.
#[test]
fn a_draft_speeds_a_lone_sequence_and_leaves_the_ids_alone() {
    use unicorn_engine::speculative::Draft;
    let m = Arc::new(LoadedModel::load(&model(GEMMA), &LoadOptions::default()).unwrap());
    let want = alone(&m, 24);
    for parallel in [1, 4] {
        let b = Batcher::with_draft(
            m.clone(),
            BatchOptions {
                parallel,
                queue: 16,
                ctx: 1024,
            },
            Some(Draft::with_min(&m, m.clone(), 4, 2).unwrap()),
        )
        .unwrap();
        let (tx, rx) = mpsc::channel();
        for (i, q) in QUESTIONS.iter().enumerate() {
            let ids = m.render_chat(&[Message::user(*q)]).unwrap();
            b.submit(request(ids, 24, tx.clone(), i)).unwrap();
        }
        drop(tx);
        let mut drafted = 0;
        for (i, e) in rx {
            if let Event::Done {
                token_ids, stats, ..
            } = e
            {
                let mut ids = token_ids;
                if ids.last().is_some_and(|t| m.stop_ids().contains(t)) {
                    ids.pop();
                }
                assert_eq!(ids, want[i], "{parallel} slots, question {i}");
                drafted += stats.draft.map_or(0, |d| d.drafted);
            }
        }
        if parallel == 1 {
            assert!(drafted >= 2 * QUESTIONS.len(), "drafted {drafted}");
        }
    }
}

//! The two real test models against HF transformers' float32 references in
//! tests/golden/real (computed on exact dequantizations of these same GGUFs).
//!
//! Tolerances, and why:
//! - token ids: exact (the references are HF tokenizer outputs).
//! - perplexity: the brief allows 1.5 % (engines that quantize activations to 8 bits,
//!   as llama.cpp does, lose 0.5-0.8 % here). Our kernels quantize activations to 16
//!   bits and measured 0.001-0.011 % off, so we hold them to 0.1 %: a regression to
//!   8-bit accuracy fails this test.
//! - last-position logits: within 0.03 of the reference (measured at most 0.0094; an
//!   f32 engine on dequantized weights would be within 5e-4, 8-bit activations put
//!   0.4-2 logits of error here).
//! - greedy ids: exact up to the first step whose reference top-1 margin is below
//!   0.05 logits, as the brief asks; past a near-tie, rounding may flip it.

use crate::common::*;
use unicorn_engine::{LoadOptions, LoadedModel};

const PPL_REL_TOL: f64 = 0.001;
const LOGIT_TOL: f32 = 0.03;

fn load(name: &str) -> LoadedModel {
    LoadedModel::load(&model(name), &LoadOptions::default()).expect("model loads")
}

fn check_tokenization(model: &LoadedModel, case: &str) {
    let text = std::fs::read_to_string(golden_dir().join(format!("real/{case}.txt"))).unwrap();
    let g = golden(&format!("real/{case}.safetensors"));
    let want = ids(&g["input_ids"]);
    let got = model.tokenizer().unwrap().encode_with_bos(&text).unwrap();
    let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
    if let Some(i) = first_diff {
        let s = i.saturating_sub(3);
        eprintln!(
            "{case}: got {:?} want {:?}",
            &got[s..(i + 5).min(got.len())],
            &want[s..(i + 5).min(want.len())]
        );
    }
    assert_eq!(got.len(), want.len(), "{case}: token count");
    assert_eq!(first_diff, None, "{case}: ids differ at {first_diff:?}");
}

#[test]
fn smollm2_tokenizer_from_gguf_matches_hf() {
    let m = load(SMOLLM);
    check_tokenization(&m, "smollm2-135m-instruct__ppl_jargon");
    check_tokenization(&m, "smollm2-135m-instruct__ppl_jargon_ch1_long");
}

#[test]
fn gemma3_tokenizer_from_gguf_matches_hf() {
    let m = load(GEMMA);
    check_tokenization(&m, "gemma-3-270m__ppl_jargon");
    check_tokenization(&m, "gemma-3-270m__ppl_jargon_ch1_long");
}

#[test]
fn smollm2_chat_answers_paris_like_the_reference() {
    let m = load(SMOLLM);
    let prompt = check_paris(&m);
    check_real_greedy(
        &m,
        "smollm2-135m-instruct__chat_capital_of_france",
        &prompt,
        false,
    );
}

#[test]
fn gemma3_continues_like_the_reference() {
    let m = load(GEMMA);
    let prompt = m
        .tokenizer()
        .unwrap()
        .encode_with_bos("The capital of France is")
        .unwrap();
    check_real_greedy(
        &m,
        "gemma-3-270m__continuation_capital_of_france",
        &prompt,
        false,
    );
}

fn check_perplexity(model: &LoadedModel, case: &str) {
    let g = golden(&format!("real/{case}.safetensors"));
    let input = ids(&g["input_ids"]);
    let nll = floats(&g["nll"]);
    let ctx = input.len();
    let r =
        unicorn_engine::perplexity::perplexity_of_ids(model, &input, ctx, &mut |_| true).unwrap();
    // llama.cpp scores the second half of each window: positions ctx/2 .. ctx-1 predict the next token.
    let first = ctx / 2;
    let scored = &nll[first..ctx - 1];
    let want = (scored.iter().map(|&x| x as f64).sum::<f64>() / scored.len() as f64).exp();
    assert_eq!(r.tokens_scored, scored.len());
    let rel = (r.perplexity - want).abs() / want;
    eprintln!(
        "{case}: perplexity {:.4} vs reference {:.4} ({:.3} %)",
        r.perplexity,
        want,
        rel * 100.0
    );
    assert!(
        rel < PPL_REL_TOL,
        "{case}: perplexity {} vs {want}: {:.2} % off",
        r.perplexity,
        rel * 100.0
    );
}

#[test]
fn smollm2_perplexity_matches_reference() {
    let m = load(SMOLLM);
    check_perplexity(&m, "smollm2-135m-instruct__ppl_jargon");
    check_perplexity(&m, "smollm2-135m-instruct__ppl_jargon_ch1_long");
}

#[test]
fn gemma3_perplexity_matches_reference_including_sliding_window() {
    let m = load(GEMMA);
    check_perplexity(&m, "gemma-3-270m__ppl_jargon");
    // 1024 tokens: the 512-token window matters from position 512 on.
    check_perplexity(&m, "gemma-3-270m__ppl_jargon_ch1_long");
}

fn check_last_logits(model: &LoadedModel, case: &str, key: &str) {
    let g = golden(&format!("real/{case}.safetensors"));
    let input = ids(&g["input_ids"]);
    let want = floats(&g[key]);
    let mut cache = model.model().new_cache();
    let got = model
        .model()
        .forward(&input, &mut cache, input.len() - 1)
        .unwrap();
    let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got.len(), want.len());
    let max = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("{case}: max |Δlogit| {max}");
    assert!(max < LOGIT_TOL, "{case}: max |Δlogit| {max}");
}

#[test]
fn last_position_logits_are_close_to_the_reference() {
    let m = load(SMOLLM);
    check_last_logits(
        &m,
        "smollm2-135m-instruct__chat_capital_of_france",
        "prompt_last_logits",
    );
    check_last_logits(
        &m,
        "smollm2-135m-instruct__ppl_jargon_ch1_long",
        "last_logits",
    );
    let m = load(GEMMA);
    check_last_logits(
        &m,
        "gemma-3-270m__continuation_capital_of_france",
        "prompt_last_logits",
    );
    check_last_logits(&m, "gemma-3-270m__ppl_jargon_ch1_long", "last_logits");
}

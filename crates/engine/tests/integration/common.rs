//! What the engine's tests share beyond [`unicorn_test_support`]: the tiny models'
//! golden checks, which need the engine.

pub use unicorn_test_support::*;

/// `m` with its KV cache in f32, as the float32 references were computed (the
/// default f16 cache is held to the real models' perplexity bounds in golden_real).
pub fn f32_cache(mut m: unicorn_engine::models::Model) -> unicorn_engine::models::Model {
    m.set_kv_type(unicorn_engine::attention::KvType::F32)
        .unwrap();
    m
}

/// Load options with an f32 KV cache (see [`f32_cache`]).
pub fn f32_options() -> unicorn_engine::LoadOptions {
    unicorn_engine::LoadOptions {
        kv_type: Some(unicorn_engine::attention::KvType::F32),
        ..Default::default()
    }
}

/// Logit tolerance of the tiny goldens (golden README): 2e-4 absolute.
pub const LOGIT_TOL: f32 = 2e-4;

/// The logit tolerance of a tiny golden folder: [`LOGIT_TOL`], except for the
/// scaled-rope models, whose 96-token references are already 1.3e-4 from exact math
/// (the golden README recommends 5e-4 there).
pub fn logit_tol(folder: &str) -> f32 {
    match folder {
        "llama3_rope" | "qwen2_yarn" => 5e-4,
        _ => LOGIT_TOL,
    }
}

/// Logits of one no-cache forward pass over the golden's 40 input ids.
pub fn tiny_logits(arch: &str, model: &unicorn_engine::models::Model) -> Vec<f32> {
    let gold = golden(&format!("tiny/{arch}/golden.safetensors"));
    let input = ids(&gold["input_ids"]);
    let mut cache = model.new_cache();
    floats(&model.forward(&input, &mut cache, 0).unwrap())
}

/// A tiny model against its transformers golden: all 40 positions' logits within
/// [`LOGIT_TOL`], then 16 greedy steps through the KV-cache decode path with each
/// step's logits within tolerance and the ids exact.
pub fn check_tiny_golden(arch: &str, model: &unicorn_engine::models::Model) {
    let gold = golden(&format!("tiny/{arch}/golden.safetensors"));
    let input = ids(&gold["input_ids"]);
    let max = max_abs_diff(&tiny_logits(arch, model), &floats(&gold["logits"]));
    let tol = logit_tol(arch);
    assert!(max < tol, "{arch}: max |Δlogit| {max}");
    let want_ids = ids(&gold["greedy_ids"]);
    let want_step_logits = floats(&gold["greedy_logits"]);
    let vocab = want_step_logits.len() / want_ids.len();
    let mut cache = model.new_cache();
    let mut logits = model.forward(&input, &mut cache, input.len() - 1).unwrap();
    let mut got_ids = Vec::new();
    for step in 0..want_ids.len() {
        let l = floats(&logits);
        let d = max_abs_diff(&l, &want_step_logits[step * vocab..(step + 1) * vocab]);
        assert!(d < tol, "{arch}: decode step {step}: max |Δlogit| {d}");
        let next = unicorn_engine::sampler::argmax(&l);
        got_ids.push(next);
        logits = model.forward(&[next], &mut cache, 0).unwrap();
    }
    assert_eq!(got_ids, want_ids, "{arch}: greedy ids");
}

/// Greedy ids are compared up to the first reference step with a smaller top-1 margin.
pub const MARGIN: f32 = 0.05;

/// The question every chat test asks.
pub const PARIS_Q: &str = "What is the capital of France?";

/// `model`'s greedy chat reply to [`PARIS_Q`] must be the reference answer; returns
/// the rendered prompt's ids for further checks.
pub fn check_paris(model: &unicorn_engine::LoadedModel) -> Vec<u32> {
    use unicorn_engine::{GenerationParams, Message};
    let prompt = model.render_chat(&[Message::user(PARIS_Q)]).unwrap();
    let reply = model
        .chat_session()
        .send(
            &[Message::user(PARIS_Q)],
            &GenerationParams::greedy(24),
            &mut |_| true,
        )
        .unwrap();
    assert_eq!(reply.text, "The capital of France is Paris.");
    prompt
}

/// A real model's greedy ids against the reference `real/CASE`: exact for every
/// step with `all_steps` (a float32 conversion, as the reference was computed on),
/// otherwise up to the first step whose reference top-1 margin is below [`MARGIN`]
/// logits, as the brief asks of quantized models (past a near-tie, rounding may flip it).
pub fn check_real_greedy(
    model: &unicorn_engine::LoadedModel,
    case: &str,
    prompt_ids: &[u32],
    all_steps: bool,
) {
    let g = golden(&format!("real/{case}.safetensors"));
    assert_eq!(
        prompt_ids,
        ids(&g["input_ids"]).as_slice(),
        "{case}: prompt ids"
    );
    let want = ids(&g["greedy_ids"]);
    let margins = floats(&g["greedy_top1_margin"]);
    let n = match all_steps {
        true => want.len(),
        false => margins
            .iter()
            .position(|&m| m < MARGIN)
            .unwrap_or(want.len()),
    };
    let mut params = unicorn_engine::GenerationParams::greedy(want.len());
    params.ignore_eos = true;
    let reply = model.generate(prompt_ids, &params, &mut |_| true).unwrap();
    assert!(n >= 8, "{case}: too few comparable steps ({n})");
    assert_eq!(
        &reply.token_ids[..n],
        &want[..n],
        "{case}: greedy ids (first {n} steps)"
    );
}

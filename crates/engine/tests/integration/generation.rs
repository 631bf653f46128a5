//! Generation behaviour on a real model: cancellation, stop strings, sampling with a
//! seed, cache reuse across chat turns, and Gemma's chat template with a system prompt.

use crate::common::*;
use unicorn_engine::template::ChatTemplate;
use unicorn_engine::{
    GenerationParams, LoadOptions, LoadedModel, Message, SamplingParams, StopReason,
};

fn smollm() -> LoadedModel {
    LoadedModel::load(&model(SMOLLM), &LoadOptions::default()).unwrap()
}

const Q: &str = "What is the capital of France?";

#[test]
fn the_sink_cancels_at_any_token() {
    let m = smollm();
    let mut seen = 0;
    let reply = m
        .chat_session()
        .send(
            &[Message::user(Q)],
            &GenerationParams::greedy(50),
            &mut |_| {
                seen += 1;
                seen < 3
            },
        )
        .unwrap();
    assert_eq!(reply.stop_reason, StopReason::Cancelled);
    assert_eq!(reply.token_ids.len(), 3);
    assert_eq!(reply.text, "The capital of");
}

/// The greedy reply to [`Q`] with `stops`, and the text its sink was given.
fn reply_with_stops(stops: &[&str]) -> (unicorn_engine::Reply, String) {
    let m = smollm();
    let mut params = GenerationParams::greedy(50);
    params.stop_strings = stops.iter().map(|s| s.to_string()).collect();
    let mut streamed = String::new();
    let reply = m
        .chat_session()
        .send(&[Message::user(Q)], &params, &mut |ev| {
            streamed.push_str(&ev.text);
            true
        })
        .unwrap();
    (reply, streamed)
}

/// Text held back because it could start a stop string is streamed when a stop
/// token ends the reply instead: the stream adds up to the reply's text.
#[test]
fn held_back_text_is_streamed_when_a_stop_token_ends_the_reply() {
    // The reply ends "Paris." then its stop token: "." could start ".!?", so it is
    // held back until the reply ends.
    let (reply, streamed) = reply_with_stops(&[".!?"]);
    assert_eq!(reply.stop_reason, StopReason::Eos);
    assert!(reply.text.ends_with('.'), "{:?}", reply.text);
    assert_eq!(streamed, reply.text);
}

#[test]
fn stop_strings_cut_the_text_and_are_never_streamed() {
    let (reply, streamed) = reply_with_stops(&[" Paris"]);
    assert_eq!(reply.stop_reason, StopReason::StopString);
    assert_eq!(reply.text, "The capital of France is");
    assert_eq!(streamed, reply.text);
}

#[test]
fn max_tokens_bounds_the_reply() {
    let m = smollm();
    let reply = m
        .chat_session()
        .send(
            &[Message::user(Q)],
            &GenerationParams::greedy(4),
            &mut |_| true,
        )
        .unwrap();
    assert_eq!(reply.stop_reason, StopReason::MaxTokens);
    assert_eq!(reply.token_ids.len(), 4);
    assert!(reply.stats.decode_tok_s > 0.0 && reply.stats.prefill_tok_s > 0.0);
}

#[test]
fn sampling_is_reproducible_with_a_seed_and_varies_across_seeds() {
    let m = smollm();
    let run = |seed| {
        let params = GenerationParams {
            max_tokens: 24,
            sampling: SamplingParams {
                temperature: 1.2,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                seed,
                ..Default::default()
            },
            stop_strings: vec![],
            ignore_eos: true,
            stop_on_loop: false,
        };
        m.chat_session()
            .send(&[Message::user("Tell me a story.")], &params, &mut |_| true)
            .unwrap()
            .token_ids
    };
    assert_eq!(run(1), run(1));
    assert!(
        (2..6).any(|s| run(s) != run(1)),
        "different seeds never changed the sample"
    );
}

#[test]
fn a_second_turn_only_computes_new_tokens_and_matches_a_fresh_run() {
    let m = smollm();
    let mut chat = m.chat_session();
    let p = GenerationParams::greedy(16);
    let first = chat.send(&[Message::user(Q)], &p, &mut |_| true).unwrap();
    let second = chat
        .send(&[Message::user("And of Italy?")], &p, &mut |_| true)
        .unwrap();
    assert!(second.stats.prefill_tokens < 20, "{:?}", second.stats);
    assert!(second.stats.prompt_tokens > first.stats.prompt_tokens + first.token_ids.len());
    // Same conversation from scratch, no cache: same answer.
    let history = vec![
        Message::user(Q),
        Message::assistant(first.text.clone()),
        Message::user("And of Italy?"),
    ];
    let ids = m.render_chat(&history).unwrap();
    let fresh = m.generate(&ids, &p, &mut |_| true).unwrap();
    assert_eq!(fresh.token_ids, second.token_ids);
    assert_eq!(fresh.stats.prefill_tokens, fresh.stats.prompt_tokens);
}

#[test]
fn gemma_it_template_folds_the_system_prompt_into_the_first_user_turn() {
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model("gemma3-tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    let src = cfg["chat_template"].as_str().unwrap();
    let t = ChatTemplate::new(src, "test", true).unwrap();
    let s = t
        .render(
            &[
                Message::system("Be brief."),
                Message::user("Hi"),
                Message::assistant("Hello!"),
                Message::user("Bye"),
            ],
            true,
            "<bos>",
            "<eos>",
        )
        .unwrap();
    assert_eq!(
        s,
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    );
}

#[test]
fn gemma_base_model_without_template_falls_back_to_plain_completion() {
    let m = LoadedModel::load(&model(GEMMA), &LoadOptions::default()).unwrap();
    assert!(!m.has_chat_template());
    let ids = m
        .render_chat(&[Message::user("The capital of France is")])
        .unwrap();
    assert_eq!(ids, vec![2, 818, 5279, 529, 7001, 563]);
    assert!(m.stop_ids().contains(&1) && m.stop_ids().contains(&106));
}

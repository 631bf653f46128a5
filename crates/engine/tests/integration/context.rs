//! Conversations longer than their context, on the real demo model with a tiny
//! context: each overflow policy keeps answering (or, for `stop`, says why not), the
//! kept history is what the policy says, and the cache the policy leaves holds exactly
//! what a fresh computation of the kept prompt would (the same greedy tokens). Then
//! regenerate and edit, whose cache rolls back to the turn they change.

use crate::common::*;
use unicorn_engine::session::{ends_in_loop, Overflow};
use unicorn_engine::{GenerationParams, LoadOptions, LoadedModel, Message, Reply, StopReason};

fn smollm() -> LoadedModel {
    LoadedModel::load(&model(SMOLLM), &LoadOptions::default()).unwrap()
}

const SYSTEM: &str = "You answer in one short sentence.";
const QUESTIONS: [&str; 8] = [
    "What is the capital of France?",
    "Name a large ocean.",
    "What colour is the sky on a clear day?",
    "How many legs does a spider have?",
    "What do bees make?",
    "Which planet is called the red planet?",
    "What is frozen water called?",
    "Name a fruit that is yellow.",
];

/// The same greedy tokens from a fresh cache given the prompt the session used:
/// the cache the policy kept held exactly that prompt's keys and values.
fn check_fresh(m: &LoadedModel, prompt: &[u32], reply: &Reply, params: &GenerationParams) {
    let fresh = m.generate(prompt, params, &mut |_| true).unwrap();
    assert_eq!(
        fresh.token_ids,
        reply.token_ids,
        "prompt of {}",
        prompt.len()
    );
}

/// A conversation five times the context under `overflow`; returns the replies.
fn long_chat(overflow: Overflow) -> Vec<Reply> {
    let m = smollm();
    let ctx = 128;
    let params = GenerationParams::greedy(16);
    let mut s = m.chat_session();
    s.set_context(ctx, overflow).unwrap();
    let mut replies = Vec::new();
    let mut conversation = 0;
    for turn in 0..28 {
        let q = QUESTIONS[turn % QUESTIONS.len()];
        let mut new = Vec::new();
        if turn == 0 {
            new.push(Message::system(SYSTEM));
        }
        new.push(Message::user(q));
        let reply = s.send(&new, &params, &mut |_| true).unwrap();
        let c = reply.context.clone().unwrap();
        assert!(
            c.used <= ctx && c.limit == ctx && c.overflow == overflow,
            "{c:?}"
        );
        assert!(
            matches!(reply.stop_reason, StopReason::Eos | StopReason::MaxTokens),
            "turn {turn}: {:?}",
            reply.stop_reason
        );
        // What the cache holds starts with the prompt the reply was computed from.
        let prompt = &s.cached_tokens()[..reply.stats.prompt_tokens];
        check_fresh(&m, prompt, &reply, &params);
        let text = m.tokenizer().unwrap().decode(prompt, true).unwrap();
        assert!(text.contains(SYSTEM), "turn {turn}: the system prompt went");
        assert!(text.contains(q), "turn {turn}: the latest message went");
        conversation += reply.stats.prompt_tokens.min(40) + reply.token_ids.len();
        replies.push(reply);
    }
    assert!(conversation > 5 * ctx / 2, "{conversation}");
    let all = m.render_chat(s.messages()).unwrap().len();
    assert!(all > 5 * ctx, "the conversation has {all} tokens");
    replies
}

#[test]
fn drop_oldest_keeps_the_system_prompt_and_the_latest_whole_turns() {
    let replies = long_chat(Overflow::DropOldest);
    let dropped: Vec<usize> = replies
        .iter()
        .map(|r| r.context.as_ref().unwrap().dropped_messages)
        .collect();
    assert!(dropped.windows(2).all(|w| w[0] <= w[1]), "{dropped:?}");
    assert!(*dropped.last().unwrap() >= 20, "{dropped:?}");
    // Whole turns go: an even number of messages after the system prompt.
    assert!(dropped.iter().all(|d| d % 2 == 0), "{dropped:?}");
    // It recomputes when it drops, and appends to the cache between drops.
    let incremental = replies
        .iter()
        .zip(&dropped)
        .skip(1)
        .filter(|(r, &d)| d > 0 && r.stats.prefill_tokens < r.stats.prompt_tokens / 2)
        .count();
    assert!(incremental >= 5, "{incremental} incremental turns");
}

#[test]
fn drop_oldest_session_view_is_the_system_prompt_and_a_suffix() {
    let m = smollm();
    let mut s = m.chat_session();
    s.set_context(128, Overflow::DropOldest).unwrap();
    let params = GenerationParams::greedy(16);
    s.send(
        &[Message::system(SYSTEM), Message::user(QUESTIONS[0])],
        &params,
        &mut |_| true,
    )
    .unwrap();
    for q in &QUESTIONS[1..] {
        s.send(&[Message::user(*q)], &params, &mut |_| true)
            .unwrap();
    }
    let all = s.messages().to_vec();
    let kept = s.context_messages();
    assert_eq!(kept[0].content, SYSTEM);
    assert!(kept.len() < all.len());
    assert_eq!(kept[1].role, "user");
    assert_eq!(kept[1..], all[all.len() - (kept.len() - 1)..]);
    // The kept view is what the cache holds, token for token.
    let prompt = m.render_chat(&kept[..kept.len() - 1]).unwrap();
    assert_eq!(&s.cached_tokens()[..prompt.len()], &prompt[..]);
}

#[test]
fn rolling_keeps_the_head_and_cuts_through_old_turns() {
    let replies = long_chat(Overflow::Rolling);
    let dropped: Vec<usize> = replies
        .iter()
        .map(|r| r.context.as_ref().unwrap().dropped_tokens)
        .collect();
    assert!(*dropped.last().unwrap() > 256, "{dropped:?}");
    let incremental = replies
        .iter()
        .zip(&dropped)
        .filter(|(r, &d)| d > 0 && r.stats.prefill_tokens < r.stats.prompt_tokens / 2)
        .count();
    assert!(incremental >= 5, "{incremental} incremental turns");
}

#[test]
fn a_reply_that_fills_the_context_lets_old_turns_go_and_goes_on() {
    for overflow in [Overflow::DropOldest, Overflow::Rolling] {
        let m = smollm();
        let mut s = m.chat_session();
        s.set_context(160, overflow).unwrap();
        let short = GenerationParams::greedy(16);
        s.send(
            &[Message::system(SYSTEM), Message::user(QUESTIONS[0])],
            &short,
            &mut |_| true,
        )
        .unwrap();
        for q in &QUESTIONS[1..4] {
            s.send(&[Message::user(*q)], &short, &mut |_| true).unwrap();
        }
        let mut long = GenerationParams::greedy(60);
        long.ignore_eos = true;
        let r = s
            .send(&[Message::user("Tell me a story.")], &long, &mut |_| true)
            .unwrap();
        assert_eq!(r.stop_reason, StopReason::MaxTokens, "{overflow}");
        assert_eq!(r.token_ids.len(), 60);
        let c = r.context.unwrap();
        assert!(c.dropped_tokens > 0 && c.used <= 160, "{overflow}: {c:?}");
    }
}

#[test]
fn stop_ends_a_full_reply_and_refuses_a_turn_that_does_not_fit() {
    let m = smollm();
    let mut s = m.chat_session();
    s.set_context(64, Overflow::Stop).unwrap();
    let mut p = GenerationParams::greedy(200);
    p.ignore_eos = true;
    let r = s
        .send(&[Message::user("Tell me a story.")], &p, &mut |_| true)
        .unwrap();
    assert_eq!(r.stop_reason, StopReason::ContextFull);
    assert_eq!(r.context.unwrap().used, 64);
    let e = s
        .send(&[Message::user("And then?")], &p, &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("the context holds 64"), "{e}");
    // Out-of-range lengths are refused with the model's range.
    let e = s.set_context(8, Overflow::Stop).unwrap_err().to_string();
    assert!(e.contains("16 to 8192"), "{e}");
}

#[test]
fn regenerate_and_edit_roll_the_cache_back_to_their_turn() {
    let m = smollm();
    let params = GenerationParams::greedy(24);
    let mut s = m.chat_session();
    s.send(&[Message::user(QUESTIONS[0])], &params, &mut |_| true)
        .unwrap();
    let second = s
        .send(&[Message::user(QUESTIONS[5])], &params, &mut |_| true)
        .unwrap();
    // Greedy again: the same tokens, from the cache up to the prompt's last token.
    let again = s.regenerate(&params, &mut |_| true).unwrap();
    assert_eq!(again.token_ids, second.token_ids);
    assert_eq!(again.stats.prefill_tokens, 1);
    assert_eq!(s.messages().len(), 4);
    // Sampled: a new reply in the same place.
    let mut sampled = GenerationParams::greedy(24);
    sampled.sampling = Default::default();
    sampled.sampling.seed = 7;
    let other = s.regenerate(&sampled, &mut |_| true).unwrap();
    assert_eq!(s.messages().len(), 4);
    assert_eq!(s.messages()[3].content, other.text);

    // Edit the second question: the first turn stays cached, and the reply is what
    // a fresh conversation with the edited history gives.
    let edited = s
        .edit(2, QUESTIONS[3].into(), &params, &mut |_| true)
        .unwrap();
    assert!(edited.stats.prefill_tokens < edited.stats.prompt_tokens / 2);
    let history = [
        s.messages()[0].clone(),
        s.messages()[1].clone(),
        Message::user(QUESTIONS[3]),
    ];
    assert_eq!(s.messages()[..3], history);
    check_fresh(&m, &m.render_chat(&history).unwrap(), &edited, &params);
    let e = s.edit(1, "x".into(), &params, &mut |_| true).unwrap_err();
    assert!(e.to_string().contains("not a user message"), "{e}");
}

const LOOP_PROMPT: &str = "1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3,";

#[test]
fn an_exact_loop_ends_the_reply_only_when_asked() {
    assert!(ends_in_loop(&[5; 32]));
    assert!(!ends_in_loop(&[5; 31]));
    let block = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    let looped: Vec<u32> = block.iter().cycle().take(40).copied().collect();
    assert!(ends_in_loop(&looped));
    assert!(!ends_in_loop(&looped[..39]));
    let mut broken = looped.clone();
    broken[20] = 99;
    assert!(!ends_in_loop(&broken));

    let m = smollm();
    let mut p = GenerationParams::greedy(300);
    p.ignore_eos = true;
    let prompt = m.tokenizer().unwrap().encode_with_bos(LOOP_PROMPT).unwrap();
    let free = m.generate(&prompt, &p, &mut |_| true).unwrap();
    assert_eq!(free.stop_reason, StopReason::MaxTokens);
    assert!(
        ends_in_loop(&free.token_ids),
        "greedy did not loop: {}",
        free.text
    );
    p.stop_on_loop = true;
    let stopped = m.generate(&prompt, &p, &mut |_| true).unwrap();
    assert_eq!(stopped.stop_reason, StopReason::Loop);
    assert!(stopped.token_ids.len() < 100, "{}", stopped.token_ids.len());
    assert_eq!(
        stopped.token_ids[..],
        free.token_ids[..stopped.token_ids.len()]
    );
}

/// A draft follows the conversation the context keeps: with drop-oldest on a
/// 128-token context over 12 turns (and replies that fill it mid-way), a session
/// with a draft (the model itself, made to propose) answers every turn as one
/// without.
#[test]
fn a_draft_follows_what_the_context_keeps() {
    use std::sync::Arc;
    use unicorn_engine::speculative::Draft;
    let m = smollm();
    let d = Arc::new(smollm());
    let params = GenerationParams::greedy(48);
    let mut plain = m.chat_session();
    let mut drafted = m.chat_session();
    drafted.set_draft(Some(Draft::with_min(&m, d, 4, 2).unwrap()));
    for s in [&mut plain, &mut drafted] {
        s.set_context(128, Overflow::DropOldest).unwrap();
    }
    let mut proposed = 0;
    for (turn, q) in QUESTIONS.iter().cycle().take(12).enumerate() {
        let new = [Message::user(*q)];
        let a = plain.send(&new, &params, &mut |_| true).unwrap();
        let b = drafted.send(&new, &params, &mut |_| true).unwrap();
        assert_eq!(a.token_ids, b.token_ids, "turn {turn}");
        proposed += b.stats.draft.map_or(0, |d| d.drafted);
    }
    assert!(proposed >= 24, "{proposed}");
}

//! Speculative decoding: a small draft model proposes the next few tokens, and the
//! target model checks them all in one batched forward pass. Accepted tokens cost
//! the target a fraction of a decode step each; the output is the target's:
//! - greedy: a proposal is kept only where it is the target's argmax, and the first
//!   miss is replaced by the target's own token, so the ids are the target's;
//! - sampling: the standard rejection rule (keep a proposal `d` drawn from the
//!   draft's distribution `q` with probability `min(1, p(d) / q(d))`, else draw from
//!   `max(0, p − q)` normalised), which leaves the target's distribution `p` exact.
//!
//! How many tokens to propose adapts to what is measured as it runs: the acceptance
//! α, the time of a plain target step `t`, of a draft step `d`, and what each
//! proposal adds to a verify pass `v`. The expected speedup of proposing k tokens,
//! `(1 − α^(k+1)) / (1 − α) · t / (t + k·(d + v))`, is maximised over k; when no k
//! beats 1 the target decodes alone (trying k ≥ 1 now and then, to keep measuring).

use crate::attention::KvCache;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::sampler::{Sampler, SamplingParams};
use crate::session::{last_logits, reuse_prefix, LoadedModel};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// Vocabulary sizes a draft and its target may differ by: padding rows past the
/// tokenizer (Gemma 3 270M-1B have 262 144 embedding rows, 4B-27B 262 208), as
/// llama.cpp allows.
const MAX_VOCAB_DIFFERENCE: usize = 128;

/// The most tokens proposed at once: a verify pass of up to 16 rows computes each
/// row as decode does ([`crate::formats::half::SMALL_M`]).
pub const MAX_DRAFT: usize = crate::formats::half::SMALL_M - 1;

/// What drafting did during one reply; the speedup is an estimate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct DraftStats {
    /// The draft model's file or folder name.
    pub draft_model: String,
    /// Tokens the draft proposed.
    pub drafted: usize,
    /// Proposals the target accepted.
    pub accepted: usize,
    /// `accepted / drafted` (0 when nothing was drafted).
    pub acceptance_rate: f64,
    /// Batched target passes that checked proposals.
    pub verify_passes: usize,
    /// The most tokens proposed at once (the adaptive length's upper bound).
    pub max_draft_tokens: usize,
    /// Estimated speedup over the target alone: tokens per second with the draft,
    /// over the target's plain speed as timed on its plain steps (the first step of
    /// a conversation is one, and so is every step where proposing does not pay).
    pub est_speedup: f64,
}

/// Checks that `draft` can propose tokens for `target`: the same token ids mean the
/// same text. Errors name the ids that differ.
pub fn check_compatible(target: &LoadedModel, draft: &LoadedModel) -> Result<()> {
    let name = |m: &LoadedModel| m.path().display().to_string();
    let bad = |message: String| {
        Error::Invalid(format!(
            "{} cannot draft for {}: {message}",
            name(draft),
            name(target)
        ))
    };
    let (rt, rd) = (target.config().vocab_size(), draft.config().vocab_size());
    if rt.abs_diff(rd) > MAX_VOCAB_DIFFERENCE {
        return Err(bad(format!(
            "vocabularies of {rd} and {rt} tokens (at most {MAX_VOCAB_DIFFERENCE} apart)"
        )));
    }
    match (target.tokenizer().ok(), draft.tokenizer().ok()) {
        (None, None) if rt == rd => Ok(()),
        (None, None) => Err(bad(format!(
            "no tokenizers to compare, and {rd} vs {rt} embedding rows"
        ))),
        (Some(_), None) | (None, Some(_)) => Err(bad(
            "one has a tokenizer and the other has none, so their vocabularies cannot be compared"
                .into(),
        )),
        (Some(t), Some(d)) => {
            let (t, d) = (t.hf(), d.hf());
            let n = t.get_vocab_size(true).min(d.get_vocab_size(true));
            let differ: Vec<u32> = (0..n as u32)
                .filter(|&i| t.id_to_token(i) != d.id_to_token(i))
                .collect();
            if differ.is_empty() {
                return Ok(());
            }
            let shown: Vec<String> = differ
                .iter()
                .take(5)
                .map(|&i| {
                    format!(
                        "{i}: {:?} vs {:?}",
                        d.id_to_token(i).unwrap_or_default(),
                        t.id_to_token(i).unwrap_or_default()
                    )
                })
                .collect();
            Err(bad(format!(
                "{} of the first {n} token ids differ ({}{})",
                differ.len(),
                shown.join(", "),
                if differ.len() > 5 { ", …" } else { "" }
            )))
        }
    }
}

/// A draft model with its own cache, proposing tokens for one conversation.
pub struct Draft {
    model: Arc<LoadedModel>,
    cache: KvCache,
    cached: Vec<u32>,
    max_tokens: usize,
    min_tokens: usize,
    sampler: Sampler,
    /// Decayed counts of accepted proposals and of rejections, for α.
    accepted_w: f64,
    rejected_w: f64,
    /// Seconds of a plain target step, of a draft step, and added to a verify pass
    /// by each proposal (moving averages; `None` until measured).
    plain_s: Option<f64>,
    draft_s: Option<f64>,
    extra_s: Option<f64>,
    /// Steps since proposals were last tried.
    idle: usize,
    /// What the current reply's drafting did, and the time spent in it.
    stats: DraftStats,
    emitted: usize,
    spent_s: f64,
}

/// Tokens one speculative step leaves to emit: all but the last are in the target's
/// cache; the last is not (as a freshly sampled token).
pub(crate) type Proposal = Vec<u32>;

impl Draft {
    /// A draft proposing at most `max_tokens` tokens at a time, for `target`.
    pub fn new(target: &LoadedModel, model: Arc<LoadedModel>, max_tokens: usize) -> Result<Self> {
        Self::with_min(target, model, max_tokens, 0)
    }

    /// [`Draft::new`], proposing at least `min_tokens` each step even where the
    /// measurements say it does not pay (llama.cpp's `--draft-min`).
    pub fn with_min(
        target: &LoadedModel,
        model: Arc<LoadedModel>,
        max_tokens: usize,
        min_tokens: usize,
    ) -> Result<Self> {
        if max_tokens == 0 || max_tokens > MAX_DRAFT || min_tokens > max_tokens {
            return Err(Error::Invalid(format!(
                "draft tokens: at most 1 to {MAX_DRAFT} (got {max_tokens}), at least no more than that (got {min_tokens})"
            )));
        }
        check_compatible(target, &model)?;
        let label = model
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            cache: model.model().new_cache(),
            model,
            cached: Vec::new(),
            max_tokens,
            min_tokens,
            sampler: Sampler::new(SamplingParams::greedy()),
            accepted_w: 0.0,
            rejected_w: 0.0,
            plain_s: None,
            draft_s: None,
            extra_s: None,
            idle: 0,
            stats: DraftStats {
                draft_model: label,
                max_draft_tokens: max_tokens,
                ..DraftStats::default()
            },
            emitted: 0,
            spent_s: 0.0,
        })
    }

    /// Starts a reply sampled with `params`: the draft samples the same way (with its
    /// own seed), and the reply's counts start at zero.
    pub(crate) fn begin(&mut self, params: &SamplingParams) {
        let mut p = params.clone();
        p.seed = p.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.sampler = Sampler::new(p);
        self.stats = DraftStats {
            draft_model: std::mem::take(&mut self.stats.draft_model),
            max_draft_tokens: self.max_tokens,
            ..DraftStats::default()
        };
        self.emitted = 0;
        self.spent_s = 0.0;
        self.idle = 0;
    }

    /// The reply's drafting figures.
    pub(crate) fn stats(&self) -> DraftStats {
        let mut s = self.stats.clone();
        s.acceptance_rate = if s.drafted > 0 {
            s.accepted as f64 / s.drafted as f64
        } else {
            0.0
        };
        s.est_speedup = match self.plain_s {
            Some(t) if self.spent_s > 0.0 => self.emitted as f64 / self.spent_s * t,
            _ => 0.0,
        };
        s
    }

    /// The number of tokens to propose now (0: a plain target step), maximising
    /// the expected speedup (module documentation). Before anything is measured:
    /// α = 0.8, a draft step costs the target's time scaled by the ratio of the
    /// bytes each reads per token (what bounds decode on a CPU), and a proposal adds
    /// a tenth of a plain step to the verify pass.
    fn length(&self, target: &Model) -> usize {
        // The first step is plain: it times the target alone.
        let Some(t) = self.plain_s else {
            return 0;
        };
        let alpha = if self.accepted_w + self.rejected_w > 0.0 {
            (self.accepted_w / (self.accepted_w + self.rejected_w)).clamp(0.0, 0.99)
        } else {
            0.8
        };
        let d = self.draft_s.unwrap_or_else(|| {
            t * self.model.model().weight_bytes().read_per_token as f64
                / target.weight_bytes().read_per_token.max(1) as f64
        });
        let v = self.extra_s.unwrap_or(0.1 * t);
        let gain = |k: usize| {
            let tokens = if alpha >= 0.99 {
                (k + 1) as f64
            } else {
                (1.0 - alpha.powi(k as i32 + 1)) / (1.0 - alpha)
            };
            tokens * t / (t + k as f64 * (d + v))
        };
        let best = (1..=self.max_tokens)
            .max_by(|&a, &b| gain(a).total_cmp(&gain(b)))
            .unwrap_or(1);
        // Not worth it now; try again every 16 steps, as α and the costs move.
        if gain(best) <= 1.0 && self.idle < 16 {
            self.min_tokens
        } else {
            best.max(self.min_tokens)
        }
    }

    /// The draft's `k` proposals after the target's cached tokens and `next`, each
    /// with the distribution it was drawn from. Refuses ids the draft has no row
    /// for, and never proposes one the target has no row for.
    #[allow(clippy::type_complexity)]
    fn propose(
        &mut self,
        cached: &[u32],
        next: u32,
        history: &[u32],
        k: usize,
        target: &Model,
    ) -> Result<(Vec<u32>, Vec<Vec<(u32, f64)>>)> {
        let model = Arc::clone(&self.model);
        let draft = model.model();
        let rows = draft.config().vocab_size();
        let target_rows = target.config().vocab_size();
        // What the target's cache holds (after an overflow policy let turns go,
        // less than the history) and `next`.
        let context: Vec<u32> = cached.iter().copied().chain([next]).collect();
        if let Some(bad) = context.iter().find(|&&t| t as usize >= rows) {
            return Err(Error::Invalid(format!(
                "token {bad} is past the draft's {rows} rows"
            )));
        }
        let t0 = Instant::now();
        let reuse = reuse_prefix(&mut self.cache, &mut self.cached, &context);
        let fresh = &context[reuse..];
        let mut logits = last_logits(draft.forward(fresh, &mut self.cache, fresh.len() - 1)?)?;
        self.cached.extend_from_slice(fresh);
        let caught_up = t0.elapsed().as_secs_f64();
        let mut proposals = Vec::with_capacity(k);
        let mut dists = Vec::with_capacity(k);
        let mut seen = history.to_vec();
        let t1 = Instant::now();
        for i in 0..k {
            logits.truncate(target_rows);
            let q = self.sampler.distribution(&logits, &seen);
            let d = self.sampler.pick(&q).unwrap_or(q[0].0);
            proposals.push(d);
            dists.push(q);
            seen.push(d);
            if i + 1 < k {
                logits = last_logits(draft.forward(&[d], &mut self.cache, 0)?)?;
                self.cached.push(d);
            }
        }
        // Per draft step; a catch-up of one token is one, a longer one (the prompt,
        // a rejected run) is not timed.
        let (time, steps) = if fresh.len() == 1 {
            (t1.elapsed().as_secs_f64() + caught_up, k)
        } else {
            (t1.elapsed().as_secs_f64(), k - 1)
        };
        if steps > 0 {
            let per = time / steps as f64;
            self.draft_s = Some(self.draft_s.map_or(per, |d| 0.8 * d + 0.2 * per));
        }
        Ok((proposals, dists))
    }

    /// One speculative step after `history`, whose last token is sampled but not yet
    /// in the target's `cache` (which holds `cached`). Proposes up to `room` tokens,
    /// verifies them in one target pass, and returns the tokens to emit.
    pub(crate) fn step(
        &mut self,
        target: &Model,
        cache: &mut KvCache,
        cached: &mut Vec<u32>,
        history: &[u32],
        sampler: &mut Sampler,
        room: usize,
    ) -> Result<Proposal> {
        let started = Instant::now();
        let next = *history
            .last()
            .ok_or_else(|| Error::Invalid("empty history".into()))?;
        let mut k = self.length(target).min(room);
        let mut proposed = None;
        if k > 0 {
            self.idle = 0;
            // The draft's trouble (an id past its vocabulary, a failed pass) costs
            // only this step's proposals: the target goes on alone.
            match self.propose(cached, next, history, k, target) {
                Ok(p) => proposed = Some(p),
                Err(_) => {
                    self.cache.clear();
                    self.cached.clear();
                    k = 0;
                }
            }
        }
        let Some((proposals, dists)) = proposed.filter(|_| k > 0) else {
            let logits = last_logits(target.forward(&[next], cache, 0)?)?;
            cached.push(next);
            let t = started.elapsed().as_secs_f64();
            self.plain_s = Some(self.plain_s.map_or(t, |p| 0.8 * p + 0.2 * t));
            self.idle += 1;
            let out = vec![sampler.sample(&logits, history)];
            self.emitted += 1;
            self.spent_s += started.elapsed().as_secs_f64();
            return Ok(out);
        };

        // Verify: the target's logits after `next` and after each proposal.
        let t2 = Instant::now();
        let before = cache.len();
        let mut ids = Vec::with_capacity(k + 1);
        ids.push(next);
        ids.extend_from_slice(&proposals);
        let rows: Vec<Vec<f32>> = crate::formats::decode_exact(|| target.forward(&ids, cache, 0))?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2()?;
        cached.extend_from_slice(&ids);
        if let Some(t) = self.plain_s {
            let v = ((t2.elapsed().as_secs_f64() - t) / k as f64).max(0.0);
            self.extra_s = Some(self.extra_s.map_or(v, |s| 0.8 * s + 0.2 * v));
        }

        // Accept proposals while the target agrees; the first miss is replaced.
        let mut out = Vec::with_capacity(k + 1);
        let mut seen = history.to_vec();
        let mut rejected = false;
        for (i, &d) in proposals.iter().enumerate() {
            let p = sampler.distribution(&rows[i], &seen);
            match judge(&p, &dists[i], d, sampler) {
                None => {
                    out.push(d);
                    seen.push(d);
                }
                Some(t) => {
                    out.push(t);
                    rejected = true;
                    break;
                }
            }
        }
        let accepted = out.len() - usize::from(rejected);
        if !rejected {
            out.push(sampler.sample(&rows[k], &seen));
        }

        // The cache keeps `next` and the accepted proposals.
        let keep = before + 1 + accepted;
        let kept = cache.truncate(keep);
        if kept < keep {
            // A sliding layer already let go of what a rollback needs (a cache
            // truncates to what was asked or to nothing): recompute what is lost.
            let redo = cached[kept..keep].to_vec();
            cached.truncate(kept);
            target.forward(&redo, cache, redo.len() - 1)?;
            cached.extend_from_slice(&redo);
        } else {
            cached.truncate(keep);
        }

        self.accepted_w = 0.9 * self.accepted_w + accepted as f64;
        self.rejected_w = 0.9 * self.rejected_w + f64::from(u8::from(rejected));
        self.stats.drafted += k;
        self.stats.accepted += accepted;
        self.stats.verify_passes += 1;
        self.emitted += out.len();
        self.spent_s += started.elapsed().as_secs_f64();
        Ok(out)
    }
}

/// Whether the target, whose distribution is `p`, keeps proposal `d` drawn from the
/// draft's `q` (`None`), or the token it takes instead: kept with probability
/// `min(1, p(d) / q(d))`, else replaced by a draw from `max(0, p − q)`. Greedy
/// (`p` one token) keeps `d` exactly when it is the target's token.
fn judge(p: &[(u32, f64)], q: &[(u32, f64)], d: u32, sampler: &mut Sampler) -> Option<u32> {
    let (p_d, q_d) = (prob(p, d), prob(q, d));
    let keep = if sampler.is_greedy() {
        p_d > 0.0
    } else {
        q_d > 0.0 && sampler.uniform() < p_d / q_d
    };
    if keep {
        return None;
    }
    let residual: Vec<(u32, f64)> = p
        .iter()
        .map(|&(t, pt)| (t, (pt - prob(q, t)).max(0.0)))
        .collect();
    Some(
        sampler
            .pick(&residual)
            .or_else(|| sampler.pick(p))
            .unwrap_or(p[0].0),
    )
}

/// The probability of `t` in a sparse distribution.
fn prob(dist: &[(u32, f64)], t: u32) -> f64 {
    dist.iter().find(|d| d.0 == t).map_or(0.0, |d| d.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rejection rule leaves the target's distribution exact, however far the
    /// draft's is from it: drafts drawn from q, kept or replaced by the rule, end up
    /// distributed as p (100 000 draws, every probability within 0.006, about 4
    /// standard deviations). Greedy keeps exactly the target's token.
    #[test]
    fn rejection_sampling_follows_the_target_distribution() {
        let p = [(0u32, 0.5), (1, 0.3), (2, 0.2), (3, 0.0)];
        let q = [(0u32, 0.1), (1, 0.2), (2, 0.3), (3, 0.4)];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..SamplingParams::default()
        });
        let n = 100_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            let d = s.pick(&q).unwrap();
            let t = judge(&p, &q, d, &mut s).unwrap_or(d);
            counts[t as usize] += 1;
        }
        for (i, &(_, want)) in p.iter().enumerate() {
            let got = counts[i] as f64 / n as f64;
            assert!((got - want).abs() < 0.006, "token {i}: {got} vs {want}");
        }
        let mut g = Sampler::new(SamplingParams::greedy());
        let one = [(2u32, 1.0)];
        assert_eq!(judge(&one, &[(2, 1.0)], 2, &mut g), None);
        assert_eq!(judge(&one, &[(3, 1.0)], 3, &mut g), Some(2));
    }
}

#[cfg(test)]
mod with_models {
    use super::*;
    use crate::LoadOptions;

    fn tiny(name: &str) -> LoadedModel {
        let opts = LoadOptions {
            kv_type: Some(crate::attention::KvType::F32),
            ..LoadOptions::default()
        };
        LoadedModel::load(
            &unicorn_test_support::golden_dir().join("tiny").join(name),
            &opts,
        )
        .unwrap()
    }

    /// Through the real step (draft forward passes, one batched verify pass, the
    /// cache rolled back): the first token a step emits is distributed exactly as
    /// the target's next token, though the proposals come from an unrelated model
    /// (tiny Qwen 2 drafting for tiny Llama, same 512 ids). 4000 steps from one
    /// state with different seeds; each probability within 0.025 (about 4
    /// standard deviations at p = 0.2). Without the rule (taking proposals as they
    /// come) the test fails: the draft's distribution is far from the target's.
    #[test]
    fn a_step_samples_from_the_targets_distribution() {
        let (target, draft) = (tiny("llama"), Arc::new(tiny("qwen2")));
        let prompt: Vec<u32> = vec![2, 400, 235, 414, 297, 134, 419, 98];
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            ..SamplingParams::default()
        };
        let m = target.model();
        let exact = {
            let mut cache = m.new_cache();
            let logits = last_logits(m.forward(&prompt, &mut cache, prompt.len() - 1).unwrap());
            Sampler::new(params.clone()).distribution(&logits.unwrap(), &prompt)
        };
        let q = {
            let mut cache = draft.model().new_cache();
            let l = draft
                .model()
                .forward(&prompt, &mut cache, prompt.len() - 1)
                .unwrap();
            Sampler::new(params.clone()).distribution(&last_logits(l).unwrap(), &prompt)
        };
        let tv: f64 = exact
            .iter()
            .map(|&(t, p)| (p - prob(&q, t)).abs())
            .sum::<f64>()
            / 2.0;
        assert!(tv > 0.3, "the draft should disagree: total variation {tv}");

        let mut d = Draft::new(&target, Arc::clone(&draft), 3).unwrap();
        let n = 4000;
        let mut counts = std::collections::HashMap::new();
        for seed in 0..n {
            let p = SamplingParams {
                seed,
                ..params.clone()
            };
            d.begin(&p);
            // Costs and an acceptance that make 3 proposals worth it (left to itself,
            // the draft would soon stop proposing: it is rarely right).
            (d.plain_s, d.draft_s, d.extra_s) = (Some(1.0), Some(0.01), Some(0.01));
            (d.accepted_w, d.rejected_w) = (0.0, 0.0);
            let mut cache = m.new_cache();
            m.forward(&prompt[..prompt.len() - 1], &mut cache, 0)
                .unwrap();
            let mut cached = prompt[..prompt.len() - 1].to_vec();
            let mut sampler = Sampler::new(p);
            let out = d
                .step(m, &mut cache, &mut cached, &prompt, &mut sampler, 8)
                .unwrap();
            // All but the last emitted token are in the cache, after the prompt.
            assert_eq!(cache.len(), prompt.len() + out.len() - 1);
            assert_eq!(cached[..prompt.len()], prompt[..]);
            assert_eq!(cached[prompt.len()..], out[..out.len() - 1]);
            *counts.entry(out[0]).or_insert(0usize) += 1;
            assert_eq!(d.stats().drafted, 3, "three proposals each step");
        }
        for &(t, want) in &exact {
            let got = *counts.get(&t).unwrap_or(&0) as f64 / n as f64;
            assert!((got - want).abs() < 0.025, "token {t}: {got} vs {want}");
        }
    }
}

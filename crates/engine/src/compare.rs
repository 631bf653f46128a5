//! How much a quantized model lost against its base, as llama.cpp's
//! `llama-perplexity --kl-divergence` measures it: over the same scored positions as
//! perplexity (second half of each `ctx` window), the perplexity of both models, the
//! KL divergence KL(base ‖ quant) of the next-token distributions (mean and 99th
//! percentile), and how often both put the same token first.

use crate::error::{Error, Result};
use crate::perplexity::{scored_log_probs, window};
use crate::session::LoadedModel;
use serde::Serialize;

/// The comparison, in llama.cpp's terms.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Comparison {
    /// Perplexity of the base model.
    pub ppl_base: f64,
    /// Perplexity of the quantized model.
    pub ppl_quant: f64,
    /// ppl_quant - ppl_base.
    pub delta_ppl: f64,
    /// (ppl_quant / ppl_base - 1) in percent.
    pub delta_ppl_percent: f64,
    /// Mean KL(base ‖ quant), nats.
    pub kld_mean: f64,
    /// 99th percentile of the per-token KL divergence.
    pub kld_p99: f64,
    /// Fraction of scored positions where both models' most likely token agrees.
    pub top1_agreement: f64,
    /// Scored positions.
    pub tokens_scored: usize,
    /// Window size.
    pub ctx: usize,
}

/// Compares `quant` with `base` on `text` (tokenized by the base model's tokenizer).
pub fn compare(
    base: &LoadedModel,
    quant: &LoadedModel,
    text: &str,
    ctx: usize,
    max_tokens: Option<usize>,
    progress: &mut dyn FnMut(&unicorn_common::Progress) -> bool,
) -> Result<Comparison> {
    let (vb, vq) = (base.config().vocab_size(), quant.config().vocab_size());
    if vb != vq {
        return Err(Error::Invalid(format!(
            "{} has {vb} tokens and {} has {vq}: not the same model",
            base.path().display(),
            quant.path().display()
        )));
    }
    same_vocabulary(base, quant)?;
    let mut ids = base.tokenizer()?.encode_with_bos(text)?;
    if let Some(n) = max_tokens {
        ids.truncate(n);
    }
    if ctx < 4 || ids.len() < ctx {
        return Err(Error::Invalid(format!(
            "the text has {} tokens; --ctx {ctx} needs at least {ctx} (and ctx at least 4)",
            ids.len()
        )));
    }
    let chunks = ids.len() / ctx;
    let (mut nll_b, mut nll_q, mut same) = (0f64, 0f64, 0usize);
    let mut klds = Vec::new();
    let meter = unicorn_common::Meter::start();
    for c in 0..chunks {
        let w = window(base, &ids, ctx, c)?;
        let lb = scored_log_probs(base, &w)?;
        let lq = scored_log_probs(quant, &w)?;
        for (j, (b, q)) in lb.iter().zip(&lq).enumerate() {
            let target = w[ctx / 2 + j + 1] as usize;
            nll_b -= b[target] as f64;
            nll_q -= q[target] as f64;
            let kld: f64 = b
                .iter()
                .zip(q)
                .map(|(&pb, &pq)| (pb as f64).exp() * (pb as f64 - pq as f64))
                .sum();
            klds.push(kld.max(0.0));
            if crate::sampler::argmax(b) == crate::sampler::argmax(q) {
                same += 1;
            }
        }
        let done = c as u64 + 1;
        let at = meter.at(format!("window {done}"), c + 1, chunks, done, chunks as u64);
        if !progress(&at) {
            return Err(Error::Cancelled);
        }
    }
    let n = klds.len();
    let (ppl_base, ppl_quant) = ((nll_b / n as f64).exp(), (nll_q / n as f64).exp());
    let kld_mean = klds.iter().sum::<f64>() / n as f64;
    klds.sort_by(f64::total_cmp);
    let kld_p99 = klds[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1];
    Ok(Comparison {
        ppl_base,
        ppl_quant,
        delta_ppl: ppl_quant - ppl_base,
        delta_ppl_percent: (ppl_quant / ppl_base - 1.0) * 100.0,
        kld_mean,
        kld_p99,
        top1_agreement: same as f64 / n as f64,
        tokens_scored: n,
        ctx,
    })
}

/// Refuses two models whose tokenizers give an id different pieces: their
/// distributions would be compared token by token over different tokens. (A model
/// without a tokenizer is taken to share the other's, as its ids are all we have.)
fn same_vocabulary(base: &LoadedModel, quant: &LoadedModel) -> Result<()> {
    let (Ok(a), Ok(b)) = (base.tokenizer(), quant.tokenizer()) else {
        return Ok(());
    };
    let n = a.vocab_size().max(b.vocab_size()) as u32;
    let differs = (0..n).find(|&id| a.hf().id_to_token(id) != b.hf().id_to_token(id));
    match differs {
        None => Ok(()),
        Some(id) => Err(Error::Invalid(format!(
            "{} and {} have different tokenizers (id {id} is {:?} in one and {:?} in the other): their probabilities cannot be compared token by token",
            base.path().display(),
            quant.path().display(),
            a.hf().id_to_token(id),
            b.hf().id_to_token(id)
        ))),
    }
}

//! Perplexity with llama.cpp's definition (`llama-perplexity`): the tokens are cut into
//! non-overlapping windows of `ctx` tokens; each window is evaluated from an empty
//! cache (its first token replaced by BOS when the model uses one), and only the
//! second half of each window is scored: positions `ctx/2 .. ctx-1` predict the
//! token after them.

use crate::error::{Error, Result};
use crate::session::LoadedModel;
use candle_core::{DType, D};
use serde::Serialize;

/// The result of a perplexity run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood).
    pub perplexity: f64,
    /// Number of scored predictions.
    pub tokens_scored: usize,
    /// Mean negative log-likelihood (nats).
    pub nll_mean: f64,
    /// Windows evaluated.
    pub chunks: usize,
    /// Window size.
    pub ctx: usize,
}

/// Perplexity of `text`, using at most `max_tokens` of its tokens.
/// `progress` is told the windows scored after each; returning false cancels.
pub fn perplexity_of_text(
    model: &LoadedModel,
    text: &str,
    ctx: usize,
    max_tokens: Option<usize>,
    progress: &mut dyn FnMut(&unicorn_common::Progress) -> bool,
) -> Result<Perplexity> {
    let mut ids = model.tokenizer()?.encode_with_bos(text)?;
    if let Some(n) = max_tokens {
        ids.truncate(n);
    }
    perplexity_of_ids(model, &ids, ctx, progress)
}

/// Perplexity of a token sequence (see the module docs for the definition).
pub fn perplexity_of_ids(
    model: &LoadedModel,
    ids: &[u32],
    ctx: usize,
    progress: &mut dyn FnMut(&unicorn_common::Progress) -> bool,
) -> Result<Perplexity> {
    if ctx < 4 {
        return Err(Error::Invalid(format!(
            "context {ctx} is too small (at least 4)"
        )));
    }
    let chunks = ids.len() / ctx;
    if chunks == 0 {
        return Err(Error::Invalid(format!(
            "the text has {} tokens; perplexity with --ctx {ctx} needs at least {ctx}",
            ids.len()
        )));
    }
    let first = ctx / 2;
    let mut nll_sum = 0f64;
    let meter = unicorn_common::Meter::start();
    let mut count = 0usize;
    for c in 0..chunks {
        let window = window(model, ids, ctx, c)?;
        let rows = scored_log_probs(model, &window)?;
        for (j, row) in rows.iter().enumerate() {
            let target = window[first + j + 1] as usize;
            let lp = *row.get(target).ok_or_else(|| {
                Error::Invalid(format!(
                    "token id {target} is outside the vocabulary ({})",
                    row.len()
                ))
            })?;
            nll_sum -= lp as f64;
            count += 1;
        }
        let done = c as u64 + 1;
        let at = meter.at(format!("window {done}"), c + 1, chunks, done, chunks as u64);
        if !progress(&at) {
            return Err(Error::Cancelled);
        }
    }
    let nll_mean = nll_sum / count as f64;
    Ok(Perplexity {
        perplexity: nll_mean.exp(),
        tokens_scored: count,
        nll_mean,
        chunks,
        ctx,
    })
}

/// Window `c` of `ctx` tokens, its first token replaced by BOS for models that use one.
pub(crate) fn window(model: &LoadedModel, ids: &[u32], ctx: usize, c: usize) -> Result<Vec<u32>> {
    let tok = model.tokenizer()?;
    let mut window = ids[c * ctx..(c + 1) * ctx].to_vec();
    if tok.add_bos {
        if let Some(bos) = tok.bos_id {
            window[0] = bos;
        }
    }
    Ok(window)
}

/// Log-probabilities at the scored positions of a window, from an empty cache:
/// positions `ctx/2 .. ctx-2`, each predicting the token after it.
pub(crate) fn scored_log_probs(model: &LoadedModel, window: &[u32]) -> Result<Vec<Vec<f32>>> {
    let ctx = window.len();
    let first = ctx / 2;
    let mut cache = model.model().new_cache();
    let logits = model.model().forward(window, &mut cache, first)?;
    let logits = logits.narrow(0, 0, ctx - 1 - first)?.to_dtype(DType::F32)?;
    Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?)
}

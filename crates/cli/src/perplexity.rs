//! `unicorn perplexity`: llama-perplexity's definition on a text file.

use crate::args::{ModelArgs, ScoreArgs};
use crate::output::{json_line, Reporter};
use anyhow::Result;
use clap::Args;
use unicorn_engine::perplexity;

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    score: ScoreArgs,
}

pub fn run(a: PerplexityArgs) -> Result<()> {
    let model = a.model.load()?;
    let text = a.score.read()?;
    let json = a.model.load.run.json;
    let mut shown = Reporter::count(json, "scoring");
    let r =
        perplexity::perplexity_of_text(&model, &text, a.score.ctx, a.score.max_tokens, &mut |p| {
            shown.show(p)
        })?;
    drop(shown);
    if json {
        json_line(&r);
    } else {
        println!(
            "perplexity {:.4} (mean NLL {:.4}) over {} scored tokens: {} windows of {} tokens, second half of each scored (llama-perplexity's definition)",
            r.perplexity, r.nll_mean, r.tokens_scored, r.chunks, r.ctx
        );
    }
    Ok(())
}

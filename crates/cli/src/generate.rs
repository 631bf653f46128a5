//! `unicorn generate`: raw completion of a prompt or of token ids, no template.

use crate::args::{DraftArgs, ImageArgs, ModelArgs, SamplingArgs};
use crate::output::{print_done, stream_reply};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Text to continue (BOS is added when the model uses one).
    #[arg(
        long,
        conflicts_with = "prompt_ids",
        required_unless_present = "prompt_ids"
    )]
    prompt: Option<String>,
    /// Token ids to continue, fed as they are (no BOS added), e.g. "2 818 5279".
    #[arg(long)]
    prompt_ids: Option<String>,
    /// Keep generating past end-of-sequence tokens: exactly --max-tokens tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Write the logits of the prompt's last position to FILE (little-endian f32),
    /// to compare devices or builds number by number.
    #[arg(long)]
    logits_out: Option<PathBuf>,
    /// With --prompt-ids: each run of the model's image token (as many as one image
    /// takes) is filled by the next --image.
    #[command(flatten)]
    images: ImageArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    draft: DraftArgs,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    if !a.images.images.is_empty() && a.prompt_ids.is_none() {
        bail!("--image goes with --prompt-ids (their image tokens place it); for text, use chat --image");
    }
    let model = a.model.load()?;
    let draft = a.draft.load(&a.model.load)?;
    let ids: Vec<u32> = match (&a.prompt, &a.prompt_ids) {
        (_, Some(s)) => s
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<u32>()
                    .with_context(|| format!("--prompt-ids: `{t}` is not a token id"))
            })
            .collect::<Result<_>>()?,
        (Some(p), None) => model.tokenizer()?.encode_with_bos(p)?,
        (None, None) => bail!("give --prompt or --prompt-ids"),
    };
    let vocab = model.config().vocab_size() as u32;
    if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
        bail!("--prompt-ids: token id {bad} is outside the vocabulary (size {vocab})");
    }
    let images = a.images.open(&model)?;
    if let Some(out) = &a.logits_out {
        if ids.is_empty() {
            bail!("--logits-out needs a prompt");
        }
        let mut cache = model.model().new_cache();
        let logits = model.model().forward(&ids, &mut cache, ids.len() - 1)?;
        let v: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))?;
    }
    let params = a.sampling.params(a.ignore_eos, &model)?;
    let json = a.model.load.run.json;
    let mut session = model.chat_session();
    session.set_draft(a.draft.for_target(&model, draft.as_ref())?);
    let reply = stream_reply(json, |sink| {
        session.complete_with_images(&ids, &images, &params, sink)
    })?;
    print_done(json, &reply);
    Ok(())
}

//! `unicorn chat`: one reply to `--prompt`, or an interactive conversation on the
//! KV cache (later turns compute only their new tokens), within `--ctx` tokens, with
//! the engine's overflow policy for a conversation that outgrows them.

use crate::args::{DraftArgs, ImageArgs, ModelArgs, SamplingArgs};
use crate::output::{print_done, stream_reply};
use anyhow::Result;
use clap::Args;
use std::io::BufRead;
use unicorn_engine::session::Overflow;
use unicorn_engine::Message;

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// One message to answer (otherwise: interactive).
    #[arg(long)]
    prompt: Option<String>,
    /// System prompt (folded into the first user turn for models without a system role).
    #[arg(long)]
    system: Option<String>,
    /// Context length in tokens (default: the model's).
    #[arg(long)]
    ctx: Option<usize>,
    /// When the conversation outgrows the context: stop (say so), drop-oldest (let
    /// the oldest turns go, keeping the system prompt) or rolling (keep the system
    /// prompt and the latest text).
    #[arg(long, default_value = "drop-oldest")]
    overflow: Overflow,
    /// Images shown with the first message (before its text, as the chat template
    /// places them).
    #[command(flatten)]
    images: ImageArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    draft: DraftArgs,
}

pub fn run(a: ChatArgs) -> Result<()> {
    let model = a.model.load()?;
    let draft = a.draft.load(&a.model.load)?;
    let json = a.model.load.run.json;
    let params = a.sampling.params(false, &model)?;
    if !model.has_chat_template() {
        eprintln!(
            "note: {} has no chat template; this is plain text completion of your messages",
            a.model.model
        );
    }
    let images = a.images.open(&model)?;
    let mut session = model.chat_session();
    session.set_draft(a.draft.for_target(&model, draft.as_ref())?);
    let ctx = a.ctx.unwrap_or(model.config().context_length());
    session.set_context(ctx, a.overflow)?;
    let first_turn = |system: &Option<String>, text: String| {
        let mut m = Vec::new();
        if let Some(s) = system {
            m.push(Message::system(s.clone()));
        }
        m.push(Message::user(text));
        m
    };
    if let Some(p) = &a.prompt {
        let msgs = first_turn(&a.system, p.clone());
        let reply = stream_reply(json, |sink| {
            session.send_with_images(&msgs, &images, &params, sink)
        })?;
        print_done(json, &reply);
        return Ok(());
    }
    crate::interrupt::install()?;
    eprintln!(
        "Chatting with {} ({}, {ctx} tokens of context, overflow: {}). /retry answers again, /reset starts over, /exit or Ctrl-D quits, Ctrl-C stops a reply.",
        a.model.model,
        model.config().architecture(),
        a.overflow
    );
    let stdin = std::io::stdin();
    let mut first = true;
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']).to_string();
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/retry" => {
                match stream_reply(json, |sink| session.regenerate(&params, sink)) {
                    Ok(reply) => print_done(json, &reply),
                    Err(e) => eprintln!("error: {e:#}"),
                }
                continue;
            }
            "/reset" => {
                session.reset();
                first = true;
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        let (msgs, shown) = if first {
            (first_turn(&a.system, line), &images[..])
        } else {
            (vec![Message::user(line)], &[][..])
        };
        first = false;
        match stream_reply(json, |sink| {
            session.send_with_images(&msgs, shown, &params, sink)
        }) {
            Ok(reply) => print_done(json, &reply),
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
}

//! `unicorn serve`: the models as an OpenAI- and Anthropic-compatible HTTP API
//! (crates/server), on loopback unless told otherwise.

use crate::args::{model_path, LoadArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::sync::Arc;

/// Serve models over HTTP: OpenAI (/v1/chat/completions, /v1/completions,
/// /v1/models) and Anthropic (/v1/messages) APIs, with continuous batching.
#[derive(Args)]
pub struct ServeArgs {
    /// .gguf files, HF model folders or repository ids in the HF cache; each is
    /// served under its file or folder name.
    #[arg(required = true)]
    pub models: Vec<String>,
    /// Address to listen on; other than loopback needs --api-key or --insecure.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free one, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The key clients must send (Authorization: Bearer KEY, or x-api-key).
    #[arg(long, env = "UNICORN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Listen on a non-loopback address without a key.
    #[arg(long)]
    pub insecure: bool,
    /// Tokens per sequence, prompt and reply (default: the model's context, at most 8192).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Sequences decoded together per model (each with its own KV cache).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Requests that may wait for a slot; more get 429 with Retry-After.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    /// A draft model (speculative decoding) for every served model that shares its
    /// vocabulary; it proposes while a model decodes one request alone.
    #[command(flatten)]
    pub draft: crate::args::DraftArgs,
}

pub fn run(a: ServeArgs) -> Result<()> {
    a.load.run.apply()?;
    if a.parallel == 0 || a.parallel > 256 {
        bail!("--parallel must be 1 to 256");
    }
    if a.queue > 100_000 {
        bail!("--queue must be at most 100000");
    }
    let key = a.api_key.clone().filter(|k| !k.is_empty());
    let warning = unicorn_server::check_bind(&a.host, key.is_some(), a.insecure)
        .map_err(anyhow::Error::msg)?;
    let paths = a
        .models
        .iter()
        .map(|m| model_path(m))
        .collect::<Result<Vec<_>>>()?;
    let load = a.load.options();
    let draft = a
        .draft
        .load(&a.load)?
        .map(|model| unicorn_server::DraftModel {
            model,
            tokens: a.draft.draft_tokens,
            min_tokens: a.draft.draft_min,
        });
    let opts = unicorn_server::Options {
        parallel: a.parallel,
        queue: a.queue,
        ctx: a.ctx,
        api_key: key,
        draft,
    };
    let state = unicorn_server::State::load(&paths, &load, &opts).map_err(anyhow::Error::msg)?;
    let ids: Vec<String> = state.models.iter().map(|m| m.id.clone()).collect();
    let state = Arc::new(state);
    // Two async threads: request parsing and streaming are light; the cores belong
    // to the batchers' forward passes.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let host = if a.host == "localhost" {
            "127.0.0.1"
        } else {
            a.host.as_str()
        };
        let listener = tokio::net::TcpListener::bind((host, a.port))
            .await
            .with_context(|| format!("listening on {host}:{}", a.port))?;
        let addr = listener.local_addr()?;
        if let Some(w) = warning {
            eprintln!("warning: {w}");
        }
        let base = if addr.ip().is_ipv6() {
            format!("http://[{}]:{}/v1", addr.ip(), addr.port())
        } else {
            format!("http://{addr}/v1")
        };
        if a.load.run.json {
            println!(
                "{}",
                serde_json::json!({"event": "listening", "base_url": base, "models": ids})
            );
        } else {
            println!("listening on {base} (models: {})", ids.join(", "));
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        unicorn_server::serve(listener, state, shutdown)
            .await
            .context("serving")
    })
}

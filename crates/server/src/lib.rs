//! `unicorn serve`: the models as an HTTP API other tools can use, OpenAI-compatible
//! (`/v1/chat/completions`, `/v1/completions`, `/v1/models`) and
//! Anthropic-compatible (`/v1/messages`), with continuous batching
//! ([`unicorn_engine::batch`]), constrained output ([`unicorn_engine::constrain`]),
//! tool calls ([`tools`]), `GET /health` and Prometheus `GET /metrics`.
//!
//! Handlers are thin: check the request ([`openai`], [`anthropic`]), render and
//! tokenize it, hand it to the model's batcher, and turn its events into the API's
//! JSON or server-sent events. A client that goes away cancels its sequence.

pub mod anthropic;
pub mod error;
pub mod images;
pub mod metrics;
pub mod openai;
pub mod tools;

use axum::body::Body;
use axum::extract::{Request, State as Extract};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use error::{ApiError, Dialect, Kind};
use metrics::{Metrics, RequestRecord};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use unicorn_engine::batch::{BatchOptions, Batcher, Event, Rejected, Request as Job};
use unicorn_engine::constrain::{Grammar, Grammars};
use unicorn_engine::{GenerationParams, LoadOptions, LoadedModel, Prompt};

/// Largest request body read (a long conversation is well under 1 MB of JSON; an
/// image as a base64 data URL takes a third more than its file).
pub const MAX_BODY: usize = 32 << 20;

/// How to serve.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sequences decoded together per model.
    pub parallel: usize,
    /// Requests that may wait for a slot (more get 429).
    pub queue: usize,
    /// Tokens per sequence (default: the model's context, at most 8192).
    pub ctx: Option<usize>,
    /// The key clients must send (`Authorization: Bearer` or `x-api-key`).
    pub api_key: Option<String>,
    /// A draft model for speculative decoding, used for every served model whose
    /// vocabulary it shares, and the most tokens it proposes at once.
    pub draft: Option<DraftModel>,
}

/// A loaded draft model ([`Options::draft`]).
#[derive(Clone)]
pub struct DraftModel {
    /// The model.
    pub model: Arc<LoadedModel>,
    /// The most tokens it proposes at once.
    pub tokens: usize,
    /// The fewest (0: it may rest where proposing does not pay).
    pub min_tokens: usize,
}

impl std::fmt::Debug for DraftModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DraftModel({}, {})",
            self.model.path().display(),
            self.tokens
        )
    }
}

/// One model being served.
pub struct Served {
    /// Its id in requests and `/v1/models` (the file or folder name).
    pub id: String,
    /// The loaded model.
    pub model: Arc<LoadedModel>,
    /// Its batcher.
    pub batcher: Batcher,
    grammars: OnceLock<Result<Arc<Grammars>, String>>,
    created: u64,
}

impl Served {
    /// The vocabulary trie for constrained output, built on first use.
    pub fn grammars(&self) -> Result<Arc<Grammars>, ApiError> {
        self.grammars
            .get_or_init(|| {
                let tok = self.model.tokenizer().map_err(|e| e.to_string())?;
                let eos = *self
                    .model
                    .stop_ids()
                    .first()
                    .ok_or("the model has no stop token")?;
                Grammars::new(tok, self.model.config().vocab_size(), eos)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| ApiError::new(Kind::Invalid, format!("constrained output: {e}")))
    }

    /// Tokens per sequence.
    pub fn ctx(&self) -> usize {
        self.batcher.options().ctx
    }

    /// A constraint for `g`, or a 400 naming `param`.
    pub fn guide(
        &self,
        g: &Grammar,
        param: &str,
    ) -> Result<Box<dyn unicorn_engine::batch::Constraint>, ApiError> {
        let guided = self
            .grammars()?
            .guide(g)
            .map_err(|e| ApiError::invalid(param, e.to_string()))?;
        Ok(Box::new(guided))
    }
}

/// The server's state.
pub struct State {
    /// The models, by id.
    pub models: Vec<Served>,
    key: Option<String>,
    /// What it measures.
    pub metrics: Arc<Metrics>,
    next_id: AtomicU64,
}

impl State {
    /// Loads each model and starts its batcher.
    pub fn load(
        paths: &[std::path::PathBuf],
        load: &LoadOptions,
        opts: &Options,
    ) -> Result<Self, String> {
        let mut models: Vec<Served> = Vec::new();
        for p in paths {
            let model = LoadedModel::load(p, load).map_err(|e| format!("{}: {e}", p.display()))?;
            let id = model_id(p);
            if models.iter().any(|m| m.id == id) {
                return Err(format!(
                    "{}: a model named {id} is already served",
                    p.display()
                ));
            }
            models.push(Self::serve_model(id, Arc::new(model), opts)?);
        }
        Self::new(models, opts)
    }

    /// A served model over an already loaded one.
    pub fn serve_model(
        id: String,
        model: Arc<LoadedModel>,
        opts: &Options,
    ) -> Result<Served, String> {
        let ctx = opts
            .ctx
            .unwrap_or(8192)
            .min(model.config().context_length());
        // A draft of another vocabulary leaves this model to decode alone.
        let draft = opts.draft.as_ref().and_then(|d| {
            unicorn_engine::speculative::Draft::with_min(
                &model,
                d.model.clone(),
                d.tokens,
                d.min_tokens,
            )
            .map_err(|e| eprintln!("note: {id} decodes without the draft: {e}"))
            .ok()
        });
        let batcher = Batcher::with_draft(
            model.clone(),
            BatchOptions {
                parallel: opts.parallel,
                queue: opts.queue,
                ctx,
            },
            draft,
        )
        .map_err(|e| e.to_string())?;
        Ok(Served {
            id,
            model,
            batcher,
            grammars: OnceLock::new(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    /// The state over served models.
    pub fn new(models: Vec<Served>, opts: &Options) -> Result<Self, String> {
        if models.is_empty() {
            return Err("no model to serve".into());
        }
        Ok(Self {
            models,
            key: opts.api_key.clone().filter(|k| !k.is_empty()),
            metrics: Arc::new(Metrics::default()),
            next_id: AtomicU64::new(1),
        })
    }

    /// The served model `id`, or 404.
    pub fn model(&self, id: &str, d: Dialect) -> Result<&Served, ApiError> {
        self.models.iter().find(|m| m.id == id).ok_or_else(|| {
            let names: Vec<&str> = self.models.iter().map(|m| m.id.as_str()).collect();
            ApiError::new(
                Kind::NotFound,
                format!(
                    "model {id:?} is not served here (served: {})",
                    names.join(", ")
                ),
            )
            .param("model")
            .code("model_not_found")
            .dialect(d)
        })
    }

    /// A fresh response id with `prefix`.
    pub fn id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        format!("{prefix}{:x}{n:04x}", t & 0xffff_ffff_ffff)
    }
}

/// A model's id: its file name without `.gguf`, or its folder's name.
pub fn model_id(p: &Path) -> String {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string());
    name.strip_suffix(".gguf").unwrap_or(&name).to_string()
}

/// Checks where to listen: loopback freely; another address only with a key or an
/// explicit `insecure`. Returns a warning to print, if any.
pub fn check_bind(host: &str, has_key: bool, insecure: bool) -> Result<Option<String>, String> {
    let ip: IpAddr = match host {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        h => h
            .parse()
            .map_err(|_| format!("--host {h:?} is not an IP address"))?,
    };
    if ip.is_loopback() {
        return Ok(None);
    }
    match (has_key, insecure) {
        (true, _) => Ok(Some(format!(
            "listening on {ip}: reachable from other machines; requests need the API key"
        ))),
        (false, true) => Ok(Some(format!(
            "listening on {ip} WITHOUT an API key (--insecure): anyone who can reach this \
             machine can use the models"
        ))),
        (false, false) => Err(format!(
            "--host {ip} is reachable from other machines: give --api-key, or --insecure \
             to serve without one"
        )),
    }
}

/// The routes.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{id}", get(openai::model))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/unicorn/requests", get(recent))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn dialect_of(path: &str) -> Dialect {
    if path.starts_with("/v1/messages") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

/// Checks the key (all routes but `/health`) and counts every response.
async fn guard(Extract(state): Extract<Arc<State>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let d = dialect_of(&path);
    let resp = if path != "/health" && !authorized(state.key.as_deref(), req.headers()) {
        ApiError::new(Kind::Unauthorized, "missing or wrong API key")
            .code("invalid_api_key")
            .dialect(d)
            .into_response()
    } else {
        next.run(req).await
    };
    let route = match path.as_str() {
        "/health"
        | "/metrics"
        | "/v1/models"
        | "/v1/chat/completions"
        | "/v1/completions"
        | "/v1/messages"
        | "/v1/unicorn/requests" => path.as_str(),
        p if p.starts_with("/v1/models/") => "/v1/models/{id}",
        _ => "other",
    };
    state.metrics.count(route, resp.status().as_u16());
    resp
}

fn authorized(key: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(key) = key else { return true };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    // Compared in time independent of where they differ.
    given.is_some_and(|g| {
        g.len() == key.len()
            && g.bytes()
                .zip(key.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    })
}

async fn health(Extract(state): Extract<Arc<State>>) -> Response {
    let models: Vec<_> = state
        .models
        .iter()
        .map(|m| {
            let l = m.batcher.load();
            serde_json::json!({
                "id": m.id,
                "active": l.active.load(Ordering::Relaxed),
                "queued": l.queued.load(Ordering::Relaxed),
                "slots": m.batcher.options().parallel,
            })
        })
        .collect();
    axum::Json(serde_json::json!({"status": "ok", "models": models})).into_response()
}

async fn prometheus(Extract(state): Extract<Arc<State>>) -> Response {
    let sum = |f: fn(&unicorn_engine::batch::Load) -> usize| -> f64 {
        state
            .models
            .iter()
            .map(|m| f(m.batcher.load()) as f64)
            .sum()
    };
    let gauges = [
        (
            "unicorn_queue_depth",
            "Requests waiting for a slot.",
            sum(|l| l.queued.load(Ordering::Relaxed)),
        ),
        (
            "unicorn_active_sequences",
            "Sequences being decoded.",
            sum(|l| l.active.load(Ordering::Relaxed)),
        ),
        (
            "unicorn_decode_steps",
            "Batched decode steps run since start.",
            sum(|l| l.steps.load(Ordering::Relaxed)),
        ),
    ];
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.prometheus(&gauges),
    )
        .into_response()
}

async fn recent(Extract(state): Extract<Arc<State>>) -> Response {
    axum::Json(serde_json::json!({"requests": state.metrics.recent()})).into_response()
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().chars().take(200).collect::<String>();
    ApiError::new(Kind::NotFound, format!("no route {path}"))
        .dialect(dialect_of(&path))
        .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    let path = req.uri().path().chars().take(200).collect::<String>();
    ApiError::new(
        Kind::MethodNotAllowed,
        format!("{} is not allowed on {path}", req.method()),
    )
    .dialect(dialect_of(&path))
    .into_response()
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes (413 past it, 400 if it is not
/// JSON of type `T`: invalid UTF-8, nesting past serde's 128 levels, unknown fields).
pub async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    d: Dialect,
) -> Result<T, ApiError> {
    let too_large = || {
        ApiError::new(
            Kind::TooLarge,
            format!("the request body is over {} MB", MAX_BODY >> 20),
        )
        .dialect(d)
    };
    // A body past the limit is read to its end (up to DRAIN bytes) and dropped, so
    // that a client still sending it reads the 413 rather than a reset connection.
    const DRAIN: usize = 128 << 20;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN as u64) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut bytes: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(Kind::Invalid, format!("reading the request body: {e}")).dialect(d)
        })?;
        seen += chunk.len();
        if seen > DRAIN {
            return Err(too_large());
        }
        if seen <= MAX_BODY {
            bytes.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_BODY {
        return Err(too_large());
    }
    serde_json::from_slice(&bytes).map_err(|e| error::bad_json(e).dialect(d))
}

/// The queue-full and too-long refusals of the batcher as API errors.
fn rejected(r: Rejected, d: Dialect) -> ApiError {
    match r {
        Rejected::QueueFull => ApiError::new(
            Kind::QueueFull,
            "every slot is busy and the queue is full: retry shortly",
        ),
        Rejected::TooLong(m) => ApiError::new(Kind::TooLarge, m).code("context_length_exceeded"),
        Rejected::Closed => ApiError::new(Kind::Unavailable, "the server is shutting down"),
    }
    .dialect(d)
}

/// Sets the cancel flag when dropped: a handler or stream that goes away (the
/// client disconnected) cancels its sequence, queued or running.
pub struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What a handler hands the batcher.
pub struct Work {
    /// The prompt's ids and images.
    pub prompt: Prompt,
    /// Sampling and limits.
    pub params: GenerationParams,
    /// Log-probabilities with this many alternatives.
    pub logprobs: Option<usize>,
    /// Constrained output.
    pub constraint: Option<Box<dyn unicorn_engine::batch::Constraint>>,
}

/// A submitted request: its events, and the guard that cancels it when dropped.
pub struct Running {
    /// Events from the batcher.
    pub rx: mpsc::UnboundedReceiver<Event>,
    /// Cancels on drop.
    pub guard: CancelOnDrop,
    /// When it was submitted.
    pub started: Instant,
}

/// Submits `work` to `served`'s batcher under response id `id`; the sink records
/// the request's figures in the metrics as they come (even if the client leaves).
pub fn submit(
    state: &State,
    served: &Served,
    id: &str,
    endpoint: &'static str,
    work: Work,
    d: Dialect,
) -> Result<Running, ApiError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let metrics = state.metrics.clone();
    let rid = id.to_string();
    let mut tokens = 0usize;
    let sink = Box::new(move |e: Event| {
        match &e {
            Event::Admitted { reused, .. } => {
                let r = *reused;
                metrics.update(&rid, |rec| {
                    rec.state = "running";
                    rec.reused_tokens = r;
                });
            }
            Event::Token { .. } => {
                metrics.tokens_live.fetch_add(1, Ordering::Relaxed);
                tokens += 1;
                let n = tokens;
                metrics.update(&rid, |rec| rec.tokens = n);
            }
            Event::Done {
                stats, stop_reason, ..
            } => {
                metrics
                    .prompt_tokens
                    .fetch_add(stats.prompt_tokens as u64, Ordering::Relaxed);
                metrics
                    .completion_tokens
                    .fetch_add(stats.generated_tokens as u64, Ordering::Relaxed);
                if stats.generated_tokens > 0 {
                    metrics.ttft.observe(stats.ttft_ms / 1e3);
                }
                if stats.generated_tokens > 1 {
                    metrics.tok_s.observe(stats.decode_tok_s);
                }
                let (st, ttft, tps, n) = (
                    if *stop_reason == unicorn_engine::StopReason::Cancelled {
                        "cancelled"
                    } else {
                        "done"
                    },
                    stats.ttft_ms,
                    stats.decode_tok_s,
                    stats.generated_tokens,
                );
                metrics.update(&rid, |rec| {
                    rec.state = st;
                    rec.tokens = n;
                    rec.ttft_ms = (n > 0).then_some(ttft);
                    rec.tok_s = (n > 1).then_some(tps);
                });
            }
            Event::Failed(_) => metrics.update(&rid, |rec| rec.state = "failed"),
        }
        tx.send(e).is_ok()
    });
    if work.prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt has no tokens").dialect(d));
    }
    let prompt_tokens = work.prompt.len();
    // Listed before submitting: the sink may update it as soon as it is queued.
    state.metrics.start(RequestRecord {
        id: id.to_string(),
        endpoint,
        model: served.id.clone(),
        state: "queued",
        prompt_tokens,
        reused_tokens: 0,
        tokens: 0,
        ttft_ms: None,
        tok_s: None,
    });
    if let Err(r) = served.batcher.submit(Job {
        prompt: work.prompt,
        params: work.params,
        logprobs: work.logprobs,
        constraint: work.constraint,
        sink,
        cancel: cancel.clone(),
    }) {
        state.metrics.update(id, |rec| rec.state = "refused");
        return Err(rejected(r, d));
    }
    Ok(Running {
        rx,
        guard: CancelOnDrop(cancel),
        started: Instant::now(),
    })
}

/// Streams a request's events as server-sent events: `opening` first, then what
/// `on` makes of each event until it says the stream is over. A task owns the
/// request's cancel guard (a closure capturing only the receiver would let the guard
/// cancel the request as the handler returns). A client that leaves drops the
/// response body, and with it the receiver: noticed at the next write, or by the
/// keep-alive writes while nothing is sent (queued, prefilling), it ends the task and
/// so cancels the sequence.
pub fn sse(
    run: Running,
    opening: Vec<SseEvent>,
    mut on: impl FnMut(Event) -> (Vec<SseEvent>, bool) + Send + 'static,
) -> Response {
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    let Running {
        rx: mut events,
        guard,
        ..
    } = run;
    tokio::spawn(async move {
        let _guard = guard;
        let mut pending = opening;
        loop {
            for e in pending.drain(..) {
                if tx.send(e).await.is_err() {
                    return;
                }
            }
            let e = tokio::select! {
                e = events.recv() => e,
                _ = tx.closed() => return,
            };
            let Some(e) = e else { return };
            let (out, end) = on(e);
            if end {
                for e in out {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                return;
            }
            pending = out;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_millis(500)))
        .into_response()
}

/// Renders a conversation and its tools into prompt ids, off the async threads:
/// through the chat template's own tool rendering when it has one (returning its
/// call syntax), else as text with the tools described in the system prompt.
pub async fn prompt(
    served: &Served,
    turns: Vec<tools::Turn>,
    images: images::Images,
    defs: &[tools::ToolDef],
    choice: &tools::Choice,
    d: Dialect,
) -> Result<(Prompt, Option<unicorn_engine::template::ToolSyntax>), ApiError> {
    let model = served.model.clone();
    // Set when this request's future is dropped (the client left, or anything
    // before the encode failed): the image encode then stops between layers.
    let left = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _on_drop = SetOnDrop(left.clone());
    let gone = move || left.load(std::sync::atomic::Ordering::Relaxed);
    let syntax = tools::syntax(model.tool_syntax(), defs, choice);
    let bad =
        move |e: unicorn_engine::Error| ApiError::invalid("messages", e.to_string()).dialect(d);
    let prompt = if syntax.is_some() {
        let (msgs, tools) = tools::native_messages(&turns, defs);
        blocking(
            move || {
                let images = images.prepare(&model, &gone).map_err(|e| e.dialect(d))?;
                model
                    .chat_prompt_with_tools(&msgs, &tools, &images)
                    .map_err(bad)
            },
            d,
        )
        .await?
    } else {
        let msgs = tools::text_messages(&turns, defs, choice);
        blocking(
            move || {
                let images = images.prepare(&model, &gone).map_err(|e| e.dialect(d))?;
                model.chat_prompt(&msgs, &images).map_err(bad)
            },
            d,
        )
        .await?
    };
    Ok((prompt, syntax))
}

/// Sets its flag when dropped.
struct SetOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Seconds since the epoch (OpenAI's `created`).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A 500 for an engine failure.
pub fn internal(msg: impl Into<String>, d: Dialect) -> ApiError {
    ApiError::new(Kind::Internal, msg).dialect(d)
}

/// Runs blocking work (rendering and tokenizing a prompt) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    d: Dialect,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(format!("worker failed: {e}"), d))?
}

//! OpenAI's API: `/v1/models`, `/v1/chat/completions`, `/v1/completions`.
//!
//! Extensions (documented in README): `grammar` (a Lark grammar) and `regex` constrain
//! the output as `response_format` does; `top_k`, `min_p` and `repeat_penalty` set
//! the sampler's other stages; `ignore_eos` generates past stop tokens (benchmarks); each response carries `timings` (our measured
//! figures, as llama-server does).

use crate::error::{ApiError, Dialect};
use crate::images::{self, Images};
use crate::tools::{self, Choice, ToolDef, Turn};
use crate::{blocking, internal, now_secs, read_json, submit, Running, Served, State, Work};
use axum::body::Body;
use axum::extract::{Path, State as Extract};
use axum::http::HeaderMap;
use axum::response::sse::Event as Sse;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use unicorn_engine::batch::{Event, Logprob};
use unicorn_engine::constrain::Grammar;
use unicorn_engine::sampler::SamplingOverrides;
use unicorn_engine::{GenerationParams, SamplingParams, StopReason};

const D: Dialect = Dialect::OpenAi;

/// `GET /v1/models`.
pub async fn models(Extract(state): Extract<Arc<State>>) -> Response {
    let data: Vec<Value> = state.models.iter().map(model_json).collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`.
pub async fn model(Extract(state): Extract<Arc<State>>, Path(id): Path<String>) -> Response {
    match state.model(&id, D) {
        Ok(m) => axum::Json(model_json(m)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn model_json(m: &Served) -> Value {
    json!({
        "id": m.id,
        "object": "model",
        "created": m.created,
        "owned_by": "unicorn",
        "context_length": m.ctx(),
        "architecture": m.model.config().architecture(),
    })
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// Message content: a string, or parts (text, and images in user messages).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts (`{"type": "text", "text": …}`, `{"type": "image_url", …}`).
    Parts(Vec<Value>),
}

/// One message of a chat request.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// A chat completion request. Unknown fields are refused with a 400 naming them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    sampling: SamplingFields,
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<u64>,
    response_format: Option<Value>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
}

/// The fields chat and text completions share.
#[derive(Debug, Deserialize, Default)]
pub struct SamplingFields {
    pub(crate) temperature: Option<f32>,
    pub(crate) top_p: Option<f32>,
    pub(crate) max_tokens: Option<u64>,
    pub(crate) stop: Option<Stop>,
    pub(crate) seed: Option<u64>,
    pub(crate) n: Option<u64>,
    pub(crate) grammar: Option<String>,
    pub(crate) regex: Option<String>,
    pub(crate) top_k: Option<usize>,
    pub(crate) min_p: Option<f32>,
    pub(crate) repeat_penalty: Option<f32>,
    pub(crate) ignore_eos: Option<bool>,
    pub(crate) stop_on_loop: Option<bool>,
    pub(crate) frequency_penalty: Option<f32>,
    pub(crate) presence_penalty: Option<f32>,
    pub(crate) logit_bias: Option<serde_json::Map<String, Value>>,
    pub(crate) user: Option<String>,
    pub(crate) metadata: Option<Value>,
    pub(crate) store: Option<bool>,
    pub(crate) service_tier: Option<String>,
}

/// A text completion request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    model: String,
    prompt: Value,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    sampling: SamplingFields,
    logprobs: Option<u64>,
    #[serde(default)]
    echo: bool,
    suffix: Option<String>,
    best_of: Option<u64>,
}

/// Sampling, limits and stops from the shared fields; `max_default` when no
/// `max_tokens` is given (the rest of the context).
pub(crate) fn generation(
    served: &Served,
    f: &SamplingFields,
    max: Option<u64>,
    max_default: usize,
) -> Result<GenerationParams, ApiError> {
    if let Some(n) = f.n.filter(|&n| n != 1) {
        return Err(ApiError::invalid("n", format!("n must be 1 here, got {n}")));
    }
    for (name, v) in [
        ("frequency_penalty", f.frequency_penalty),
        ("presence_penalty", f.presence_penalty),
    ] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(ApiError::invalid(
                name,
                format!("{name} is not supported; repeat_penalty is"),
            ));
        }
    }
    if f.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(ApiError::invalid(
            "logit_bias",
            "logit_bias is not supported",
        ));
    }
    // Accepted and without effect here (a client's bookkeeping).
    let _ = (&f.user, &f.metadata, &f.store, &f.service_tier);
    if let Some(t) = f.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature must be 0 to 2, got {t}"),
            ));
        }
    }
    // The model's recommendation, else ours; what the request sets wins. Without a
    // seed each request samples differently, as OpenAI's does.
    let s = SamplingParams::resolve(
        served.model.default_sampling(),
        &SamplingOverrides {
            temperature: f.temperature,
            top_k: f.top_k,
            top_p: f.top_p,
            min_p: f.min_p,
            repeat_penalty: f.repeat_penalty,
            repeat_last_n: None,
            seed: Some(f.seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            })),
        },
    );
    s.validate()
        .map_err(|e| ApiError::invalid("temperature", e))?;
    let stop_strings = match &f.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stop_strings.len() > 16 || stop_strings.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(ApiError::invalid(
            "stop",
            "stop takes up to 16 non-empty strings of up to 256 bytes",
        ));
    }
    let max_tokens = match max {
        None => max_default,
        Some(0) => {
            return Err(ApiError::invalid(
                "max_tokens",
                "max_tokens must be at least 1",
            ))
        }
        Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
    };
    Ok(GenerationParams {
        max_tokens,
        sampling: s,
        stop_strings,
        ignore_eos: f.ignore_eos.unwrap_or(false),
        stop_on_loop: f.stop_on_loop.unwrap_or(false),
    })
}

/// The constraint a request asks for through `response_format`, `grammar` or `regex`.
pub(crate) fn requested_grammar(
    format: Option<&Value>,
    f: &SamplingFields,
) -> Result<Option<(Grammar, &'static str)>, ApiError> {
    let mut found: Vec<(Grammar, &'static str)> = Vec::new();
    if let Some(rf) = format {
        let kind = rf.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "text" => {}
            "json_object" => found.push((Grammar::JsonObject, "response_format")),
            "json_schema" => {
                let schema = rf
                    .get("json_schema")
                    .and_then(|j| j.get("schema"))
                    .filter(|s| s.is_object() || s.is_boolean())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "response_format.json_schema.schema",
                            "json_schema needs a schema object",
                        )
                    })?;
                found.push((Grammar::JsonSchema(schema.clone()), "response_format"));
            }
            other => {
                return Err(ApiError::invalid(
                    "response_format.type",
                    format!(
                        "response_format type {other:?}: expected text, json_object or json_schema"
                    ),
                ))
            }
        }
    }
    if let Some(g) = &f.grammar {
        found.push((Grammar::Lark(g.clone()), "grammar"));
    }
    if let Some(r) = &f.regex {
        found.push((Grammar::Regex(r.clone()), "regex"));
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(ApiError::invalid(
            found[1].1,
            "give one of response_format, grammar and regex",
        )),
    }
}

/// `tools` and `tool_choice` in OpenAI's shape.
fn parse_tools(
    tools: Option<&Vec<Value>>,
    choice: Option<&Value>,
) -> Result<(Vec<ToolDef>, Choice), ApiError> {
    let mut defs = Vec::new();
    for (i, t) in tools.into_iter().flatten().enumerate() {
        let f = t
            .get("function")
            .filter(|_| t.get("type").and_then(Value::as_str) == Some("function"))
            .ok_or_else(|| {
                ApiError::invalid(
                    &format!("tools[{i}]"),
                    "a tool is {\"type\": \"function\", \"function\": {...}}",
                )
            })?;
        defs.push(ToolDef {
            name: f
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            description: f
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters: f
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
    }
    let choice = match choice {
        None => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => Choice::None,
            "auto" => Choice::Auto,
            "required" => Choice::Required,
            o => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("tool_choice {o:?}: expected none, auto, required or a function"),
                ))
            }
        },
        Some(v) => Choice::Named(
            v.pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid("tool_choice", "tool_choice must name a function")
                })?
                .to_string(),
        ),
    };
    tools::validate(&defs, &choice, "tools")?;
    Ok((defs, choice))
}

/// The text of a message's content; an image part (user messages only) goes to
/// `images` and leaves its marker where it stood.
fn content_text(
    c: Option<&Content>,
    at: &str,
    user: bool,
    images: &mut Images,
) -> Result<String, ApiError> {
    let text = match c {
        None => String::new(),
        Some(Content::Text(s)) => s.clone(),
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                let pat = format!("{at}.content[{j}]");
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => out.push_str(&images::plain_text(t, &pat, user)?),
                    (Some("image_url"), _) if user => {
                        let bytes = images::openai_part(p, &pat)?;
                        out.push(images.push(&pat, bytes)?);
                    }
                    (Some("image_url"), _) => {
                        return Err(ApiError::invalid(
                            &pat,
                            "images may only be in user messages",
                        ))
                    }
                    (kind, _) => {
                        return Err(ApiError::invalid(
                            &pat,
                            format!(
                                "content part of type {:?} is not supported (text, image_url)",
                                kind.unwrap_or("?")
                            ),
                        ))
                    }
                }
            }
            return Ok(out);
        }
    };
    images::plain_text(&text, &format!("{at}.content"), user)
}

/// The conversation as turns (tool calls with their arguments, tool results with the
/// call they answer), and the images of its user messages.
fn turns(msgs: &[ChatMessage]) -> Result<(Vec<Turn>, Images), ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::invalid("messages", "messages is empty"));
    }
    let mut out = Vec::with_capacity(msgs.len());
    let mut images = Images::new();
    for (i, m) in msgs.iter().enumerate() {
        let at = format!("messages[{i}]");
        let text = content_text(m.content.as_ref(), &at, m.role == "user", &mut images)?;
        let turn = match m.role.as_str() {
            "system" | "developer" => Turn::text("system", text),
            "user" => Turn::text("user", text),
            "assistant" => {
                let mut t = Turn::text("assistant", text);
                for c in m.tool_calls.iter().flatten() {
                    let name = c
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let args = c
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let args: Value = serde_json::from_str(args).map_err(|e| {
                        ApiError::invalid(
                            &format!("{at}.tool_calls"),
                            format!("arguments are not JSON: {e}"),
                        )
                    })?;
                    let id = c
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    t.calls.push((id, name.to_string(), args));
                }
                t
            }
            "tool" | "function" => Turn {
                result_of: (m.tool_call_id.clone(), m.name.clone()),
                ..Turn::text("tool", text)
            },
            r => {
                return Err(ApiError::invalid(
                    &format!("{at}.role"),
                    format!(
                        "role {:?}: expected system, user, assistant or tool",
                        r.chars().take(40).collect::<String>()
                    ),
                ))
            }
        };
        out.push(turn);
    }
    Ok((out, images))
}

/// `POST /v1/chat/completions`.
pub async fn chat(Extract(state): Extract<Arc<State>>, headers: HeaderMap, body: Body) -> Response {
    match chat_inner(state, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn chat_inner(
    state: Arc<State>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: ChatRequest = read_json(&headers, body, D).await?;
    let served = state.model(&req.model, D)?;
    let (defs, choice) = parse_tools(req.tools.as_ref(), req.tool_choice.as_ref())?;
    let _ = req.parallel_tool_calls;
    let mut grammar = requested_grammar(req.response_format.as_ref(), &req.sampling)?;
    let top = match (req.logprobs, req.top_logprobs) {
        (_, Some(n)) if n > 20 => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "top_logprobs is at most 20",
            ))
        }
        (true, n) => Some(n.unwrap_or(0) as usize),
        (false, Some(_)) => {
            return Err(ApiError::invalid(
                "logprobs",
                "top_logprobs needs logprobs: true",
            ))
        }
        (false, None) => None,
    };
    let (turns, images) = turns(&req.messages)?;
    let (prompt, syntax) = crate::prompt(served, turns, images, &defs, &choice, D).await?;
    if let Some(g) = tools::grammar(&defs, &choice, syntax) {
        if grammar.is_some() {
            return Err(ApiError::invalid(
                "tool_choice",
                "a required tool call and response_format cannot both constrain the reply",
            ));
        }
        grammar = Some((g, "tools"));
    }
    let ctx = served.ctx();
    let max = req.max_completion_tokens.or(req.sampling.max_tokens);
    let params = generation(
        served,
        &req.sampling,
        max,
        ctx.saturating_sub(prompt.len()).max(1),
    )?;
    let constraint = match &grammar {
        Some((g, param)) => Some(served.guide(g, param)?),
        None => None,
    };
    let id = state.id("chatcmpl-");
    let prompt_tokens = prompt.len();
    let running = submit(
        &state,
        served,
        &id,
        "/v1/chat/completions",
        Work {
            prompt,
            params,
            logprobs: top,
            constraint,
        },
        D,
    )?;
    let tool_mode = !defs.is_empty() && choice != Choice::None;
    let reply = Reply {
        id,
        model: served.id.clone(),
        served_model: served.model.clone(),
        created: now_secs(),
        prompt_tokens,
        tools: tool_mode.then_some(defs),
        include_usage: req.stream_options.as_ref().is_some_and(|o| o.include_usage),
        chat: true,
    };
    if req.stream {
        Ok(reply.stream(running))
    } else {
        reply.whole(running).await
    }
}

/// `POST /v1/completions`.
pub async fn completions(
    Extract(state): Extract<Arc<State>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match completions_inner(state, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn completions_inner(
    state: Arc<State>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = read_json(&headers, body, D).await?;
    let served = state.model(&req.model, D)?;
    if req.echo {
        return Err(ApiError::invalid("echo", "echo is not supported"));
    }
    if req.suffix.is_some() {
        return Err(ApiError::invalid("suffix", "suffix is not supported"));
    }
    if req.best_of.is_some_and(|b| b != 1) {
        return Err(ApiError::invalid("best_of", "best_of must be 1"));
    }
    let top = match req.logprobs {
        Some(n) if n > 20 => return Err(ApiError::invalid("logprobs", "logprobs is at most 20")),
        n => n.map(|n| n as usize),
    };
    let grammar = requested_grammar(None, &req.sampling)?;
    let vocab = served.model.config().vocab_size();
    let prompt = match &req.prompt {
        Value::String(s) => Ok(s.clone()),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            Ok(a[0].as_str().unwrap_or("").to_string())
        }
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_u64) => Err(a
            .iter()
            .map(|v| {
                v.as_u64()
                    .filter(|&t| (t as usize) < vocab)
                    .map(|t| t as u32)
            })
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| {
                ApiError::invalid("prompt", format!("token ids must be below {vocab}"))
            })?),
        _ => {
            return Err(ApiError::invalid(
                "prompt",
                "prompt must be a string, one string in an array, or an array of token ids",
            ))
        }
    };
    let ids = match prompt {
        Err(ids) => ids,
        Ok(text) => {
            let model = served.model.clone();
            blocking(
                move || {
                    model
                        .tokenizer()
                        .and_then(|t| t.encode_with_bos(&text))
                        .map_err(|e| ApiError::invalid("prompt", e.to_string()))
                },
                D,
            )
            .await?
        }
    };
    let params = generation(
        served,
        &req.sampling,
        Some(req.sampling.max_tokens.unwrap_or(16)),
        16,
    )?;
    let constraint = match &grammar {
        Some((g, param)) => Some(served.guide(g, param)?),
        None => None,
    };
    let id = state.id("cmpl-");
    let prompt_tokens = ids.len();
    let running = submit(
        &state,
        served,
        &id,
        "/v1/completions",
        Work {
            prompt: ids.into(),
            params,
            logprobs: top,
            constraint,
        },
        D,
    )?;
    let reply = Reply {
        id,
        model: served.id.clone(),
        served_model: served.model.clone(),
        created: now_secs(),
        prompt_tokens,
        tools: None,
        include_usage: req.stream_options.as_ref().is_some_and(|o| o.include_usage),
        chat: false,
    };
    if req.stream {
        Ok(reply.stream(running))
    } else {
        reply.whole(running).await
    }
}

/// What a response needs besides the events.
struct Reply {
    id: String,
    model: String,
    served_model: Arc<unicorn_engine::LoadedModel>,
    created: u64,
    prompt_tokens: usize,
    /// Tools offered (and not `none`): the reply is held until it ends, then sent
    /// as a tool call or as text.
    tools: Option<Vec<ToolDef>>,
    include_usage: bool,
    /// Chat completion (else text completion).
    chat: bool,
}

fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        _ => "stop",
    }
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat, chunk) {
            (true, false) => "chat.completion",
            (true, true) => "chat.completion.chunk",
            (false, _) => "text_completion",
        }
    }

    fn usage(&self, completion: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        })
    }

    /// One token's logprobs entry (chat shape, or the legacy completion shape).
    fn logprob_entry(&self, id: u32, lp: &Logprob) -> Value {
        let tok = self.served_model.tokenizer().ok();
        let piece = |t: u32| {
            tok.and_then(|k| k.decode(&[t], false).ok())
                .unwrap_or_default()
        };
        let token = piece(id);
        let top: Vec<Value> = lp
            .top
            .iter()
            .map(|&(t, l)| {
                let p = piece(t);
                json!({"token": p, "logprob": l, "bytes": p.as_bytes()})
            })
            .collect();
        json!({"token": token, "logprob": lp.logprob, "bytes": token.as_bytes(), "top_logprobs": top})
    }

    /// The tool call in a finished reply, as OpenAI's `tool_calls`.
    fn tool_calls(&self, text: &str) -> Option<Value> {
        let call = tools::parse(text, self.tools.as_ref()?)?;
        Some(json!([{
            "id": format!("call_{}", &self.id[self.id.len().saturating_sub(12)..]),
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments.to_string()},
        }]))
    }

    fn timings(stats: &unicorn_engine::stats::Stats) -> Value {
        json!({
            "prompt_n": stats.prompt_tokens,
            "prompt_computed": stats.prefill_tokens,
            "image_tokens": stats.image_tokens,
            "prompt_per_second": stats.prefill_tok_s,
            "predicted_n": stats.generated_tokens,
            "predicted_per_second": stats.decode_tok_s,
            "ttft_ms": stats.ttft_ms,
            "draft": stats.draft,
        })
    }

    /// Waits for the end and answers with one JSON body.
    async fn whole(self, mut run: Running) -> Result<Response, ApiError> {
        let mut logprobs = Vec::new();
        while let Some(e) = run.rx.recv().await {
            match e {
                Event::Admitted { .. } => {}
                Event::Token { id, logprob, .. } => {
                    if let Some(lp) = logprob {
                        logprobs.push(self.logprob_entry(id, &lp));
                    }
                }
                Event::Failed(m) => return Err(internal(m, D)),
                Event::Done {
                    text,
                    stop_reason,
                    stats,
                    ..
                } => {
                    let lp = (!logprobs.is_empty()).then(|| json!({"content": logprobs}));
                    let mut reason = finish_reason(stop_reason);
                    let choice = if self.chat {
                        let mut message = json!({"role": "assistant", "content": text});
                        if let Some(calls) = self.tool_calls(&text) {
                            message =
                                json!({"role": "assistant", "content": null, "tool_calls": calls});
                            reason = "tool_calls";
                        }
                        json!({"index": 0, "message": message, "logprobs": lp, "finish_reason": reason})
                    } else {
                        let lp = lp.map(|_| legacy_logprobs(&logprobs));
                        json!({"index": 0, "text": text, "logprobs": lp, "finish_reason": reason})
                    };
                    return Ok(axum::Json(json!({
                        "id": self.id,
                        "object": self.object(false),
                        "created": self.created,
                        "model": self.model,
                        "choices": [choice],
                        "usage": self.usage(stats.generated_tokens),
                        "timings": Self::timings(&stats),
                    }))
                    .into_response());
                }
            }
        }
        Err(internal("the request ended without a reply", D))
    }

    /// One streamed chunk: a chat delta, or a text completion's text.
    fn chunk(&self, delta: Value, reason: Option<&str>, lp: Option<Value>) -> Sse {
        let choice = if self.chat {
            json!({"index": 0, "delta": delta, "logprobs": lp, "finish_reason": reason})
        } else {
            let text = delta.get("content").cloned().unwrap_or(json!(""));
            json!({"index": 0, "text": text, "logprobs": lp, "finish_reason": reason})
        };
        let mut body = json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [choice],
        });
        if self.include_usage {
            body["usage"] = Value::Null;
        }
        Sse::default().data(body.to_string())
    }

    /// Answers with server-sent events ([`crate::sse`]): a chunk per token, the finish
    /// reason, usage when asked, then `[DONE]`.
    fn stream(self, run: Running) -> Response {
        let opening = match self.chat {
            true => vec![self.chunk(json!({"role": "assistant", "content": ""}), None, None)],
            false => Vec::new(),
        };
        let held = self.tools.is_some();
        crate::sse(run, opening, move |e| match e {
            Event::Admitted { .. } => (Vec::new(), false),
            Event::Token { id, text, logprob } => {
                if held || (text.is_empty() && logprob.is_none()) {
                    return (Vec::new(), false);
                }
                let lp = logprob.map(|lp| {
                    let e = self.logprob_entry(id, &lp);
                    if self.chat {
                        json!({"content": [e]})
                    } else {
                        legacy_logprobs(&[e])
                    }
                });
                (vec![self.chunk(json!({"content": text}), None, lp)], false)
            }
            Event::Failed(m) => (
                vec![Sse::default().data(internal(m, D).body().to_string())],
                true,
            ),
            Event::Done {
                text,
                stop_reason,
                stats,
                ..
            } => {
                let mut out = Vec::new();
                let mut reason = finish_reason(stop_reason);
                if held {
                    let delta = match self.tool_calls(&text) {
                        Some(mut calls) => {
                            reason = "tool_calls";
                            calls[0]["index"] = json!(0);
                            json!({"tool_calls": calls})
                        }
                        None => json!({"content": text}),
                    };
                    out.push(self.chunk(delta, None, None));
                }
                out.push(self.chunk(json!({}), Some(reason), None));
                if self.include_usage {
                    let body = json!({
                        "id": self.id, "object": self.object(true), "created": self.created,
                        "model": self.model, "choices": [],
                        "usage": self.usage(stats.generated_tokens),
                        "timings": Self::timings(&stats),
                    });
                    out.push(Sse::default().data(body.to_string()));
                }
                out.push(Sse::default().data("[DONE]"));
                (out, true)
            }
        })
    }
}

/// The legacy completions `logprobs` object from chat-shaped entries.
fn legacy_logprobs(entries: &[Value]) -> Value {
    let tokens: Vec<&Value> = entries.iter().map(|e| &e["token"]).collect();
    let lps: Vec<&Value> = entries.iter().map(|e| &e["logprob"]).collect();
    let tops: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut m = serde_json::Map::new();
            for t in e["top_logprobs"].as_array().into_iter().flatten() {
                m.insert(
                    t["token"].as_str().unwrap_or("").to_string(),
                    t["logprob"].clone(),
                );
            }
            Value::Object(m)
        })
        .collect();
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": []})
}

//! Anthropic's Messages API: `POST /v1/messages`, whole or streamed with its event
//! sequence (`message_start`, `content_block_start`, `content_block_delta`,
//! `content_block_stop`, `message_delta`, `message_stop`), `system`,
//! `stop_sequences`, tools (`tool_use` and `tool_result` blocks).

use crate::error::{ApiError, Dialect};
use crate::images::{self, Images};
use crate::openai::{generation, SamplingFields, Stop};
use crate::tools::{self, Choice, ToolDef, Turn};
use crate::{internal, read_json, submit, Running, State, Work};
use axum::body::Body;
use axum::extract::State as Extract;
use axum::http::HeaderMap;
use axum::response::sse::Event as Sse;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use unicorn_engine::batch::Event;
use unicorn_engine::StopReason;

const D: Dialect = Dialect::Anthropic;

/// One message: a string or content blocks.
#[derive(Debug, Deserialize)]
pub struct AMessage {
    role: String,
    content: Value,
}

/// A Messages request. Unknown fields are refused with a 400 naming them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesRequest {
    model: String,
    max_tokens: u64,
    messages: Vec<AMessage>,
    system: Option<Value>,
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: bool,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    metadata: Option<Value>,
}

fn bad(param: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid(param, msg).dialect(D)
}

/// Text of a string or of text blocks (others refused).
fn text_of(v: &Value, at: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = String::new();
            for (j, b) in blocks.iter().enumerate() {
                match (
                    b.get("type").and_then(Value::as_str),
                    b.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    (k, _) => {
                        return Err(bad(
                            &format!("{at}[{j}]"),
                            format!(
                                "block of type {:?} is not supported here (text only)",
                                k.unwrap_or("?")
                            ),
                        ))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(bad(at, "expected a string or an array of text blocks")),
    }
}

/// The conversation as turns: the system prompt, text, `tool_use` blocks as calls,
/// `tool_result` blocks as tool turns; and the `image` blocks of user messages.
fn conversation(req: &MessagesRequest) -> Result<(Vec<Turn>, Images), ApiError> {
    if req.messages.is_empty() {
        return Err(bad("messages", "messages is empty"));
    }
    let mut out: Vec<Turn> = Vec::new();
    let mut images = Images::new();
    if let Some(s) = &req.system {
        let system = images::plain_text(&text_of(s, "system")?, "system", false)?;
        if !system.is_empty() {
            out.push(Turn::text("system", system));
        }
    }
    for (i, m) in req.messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        if m.role != "user" && m.role != "assistant" {
            return Err(bad(&format!("{at}.role"), "role must be user or assistant"));
        }
        let user = m.role == "user";
        let mut turn = Turn::text(&m.role, String::new());
        let mut results: Vec<Turn> = Vec::new();
        match &m.content {
            Value::String(s) => {
                turn.content = images::plain_text(s, &format!("{at}.content"), user)?
            }
            Value::Array(blocks) => {
                for (j, b) in blocks.iter().enumerate() {
                    let bat = format!("{at}.content[{j}]");
                    match b.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            // Text blocks are paragraphs; an image needs no
                            // separator (its tokens bring their own newlines).
                            if !turn.content.is_empty()
                                && !turn.content.ends_with(unicorn_engine::vision::MARKER)
                            {
                                turn.content.push_str("\n\n");
                            }
                            let t = text_of(&json!([b]), &bat)?;
                            turn.content.push_str(&images::plain_text(&t, &bat, user)?);
                        }
                        Some("image") if user => {
                            let bytes = images::anthropic_block(b, &bat)?;
                            turn.content.push(images.push(&bat, bytes)?);
                        }
                        Some("image") => {
                            return Err(bad(&bat, "images may only be in user messages"))
                        }
                        Some("tool_use") => turn.calls.push((
                            b.get("id")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string(),
                            b.get("name")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string(),
                            b.get("input").cloned().unwrap_or_else(|| json!({})),
                        )),
                        Some("tool_result") => {
                            let content = match b.get("content") {
                                None => String::new(),
                                Some(c) => images::plain_text(
                                    &text_of(c, &format!("{bat}.content"))?,
                                    &bat,
                                    false,
                                )?,
                            };
                            let id = b
                                .get("tool_use_id")
                                .and_then(Value::as_str)
                                .map(str::to_string);
                            results.push(Turn {
                                result_of: (id, None),
                                ..Turn::text("tool", content)
                            });
                        }
                        k => {
                            return Err(bad(
                                &bat,
                                format!(
                                "content block {:?} is not supported (text, image, tool_use, tool_result)",
                                k.unwrap_or("?")
                            ),
                            ))
                        }
                    }
                }
            }
            _ => {
                return Err(bad(
                    &format!("{at}.content"),
                    "expected a string or content blocks",
                ))
            }
        }
        // Results are their own turns, before any text the user added after them.
        let has_text = !turn.content.is_empty() || !turn.calls.is_empty();
        out.extend(results);
        if has_text {
            out.push(turn);
        }
    }
    Ok((out, images))
}

fn parse_tools(req: &MessagesRequest) -> Result<(Vec<ToolDef>, Choice), ApiError> {
    let defs: Vec<ToolDef> = req
        .tools
        .iter()
        .flatten()
        .map(|t| ToolDef {
            name: t
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            description: t
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters: t.get("input_schema").cloned().unwrap_or(Value::Null),
        })
        .collect();
    let choice = match &req.tool_choice {
        None => Choice::Auto,
        Some(c) => match c.get("type").and_then(Value::as_str) {
            Some("auto") => Choice::Auto,
            Some("any") => Choice::Required,
            Some("none") => Choice::None,
            Some("tool") => Choice::Named(
                c.get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        bad("tool_choice.name", "tool_choice of type tool needs a name")
                    })?
                    .to_string(),
            ),
            _ => {
                return Err(bad(
                    "tool_choice",
                    "tool_choice type must be auto, any, tool or none",
                ))
            }
        },
    };
    tools::validate(&defs, &choice, "tools").map_err(|e| e.dialect(D))?;
    Ok((defs, choice))
}

/// `POST /v1/messages`.
async fn messages_route(
    state: Arc<State>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: MessagesRequest = read_json(&headers, body, D).await?;
    let served = state.model(&req.model, D)?;
    let (defs, choice) = parse_tools(&req)?;
    let _ = &req.metadata;
    if let Some(t) = req.temperature.filter(|t| !(0.0..=1.0).contains(t)) {
        return Err(bad(
            "temperature",
            format!("temperature must be 0 to 1, got {t}"),
        ));
    }
    let (turns, images) = conversation(&req)?;
    let (prompt, syntax) = crate::prompt(served, turns, images, &defs, &choice, D).await?;
    let fields = SamplingFields {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop: req.stop_sequences.clone().map(Stop::Many),
        ..SamplingFields::default()
    };
    let params = generation(served, &fields, Some(req.max_tokens), 1).map_err(|e| e.dialect(D))?;
    let constraint = match tools::grammar(&defs, &choice, syntax) {
        Some(g) => Some(served.guide(&g, "tools").map_err(|e| e.dialect(D))?),
        None => None,
    };
    let id = state.id("msg_");
    let prompt_tokens = prompt.len();
    let running = submit(
        &state,
        served,
        &id,
        "/v1/messages",
        Work {
            prompt,
            params,
            logprobs: None,
            constraint,
        },
        D,
    )?;
    let reply = Reply {
        id,
        model: served.id.clone(),
        prompt_tokens,
        tools: (!defs.is_empty() && choice != Choice::None).then_some(defs),
    };
    if req.stream {
        Ok(reply.stream(running))
    } else {
        reply.whole(running).await
    }
}

/// Axum's entry for [`messages_route`].
pub async fn messages(
    Extract(state): Extract<Arc<State>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match messages_route(state, headers, body).await {
        Ok(r) => r,
        Err(e) => e.dialect(D).into_response(),
    }
}

/// One named event of Anthropic's stream.
fn ev(name: &str, v: Value) -> Sse {
    Sse::default().event(name).data(v.to_string())
}

/// The start of the one content block (index 0).
fn block_start(block: Value) -> Sse {
    ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": block}),
    )
}

/// A delta of the content block.
fn block_delta(d: Value) -> Sse {
    ev(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0, "delta": d}),
    )
}

/// A text delta of the content block.
fn text_delta(t: &str) -> Sse {
    block_delta(json!({"type": "text_delta", "text": t}))
}

struct Reply {
    id: String,
    model: String,
    prompt_tokens: usize,
    tools: Option<Vec<ToolDef>>,
}

fn stop_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens | StopReason::ContextFull => "max_tokens",
        StopReason::StopString => "stop_sequence",
        _ => "end_turn",
    }
}

impl Reply {
    /// The content blocks of a finished reply: a `tool_use` block when it is a call.
    fn blocks(&self, text: &str) -> (Vec<Value>, bool) {
        if let Some(call) = self.tools.as_ref().and_then(|t| tools::parse(text, t)) {
            let id = format!("toolu_{}", &self.id[self.id.len().saturating_sub(12)..]);
            return (
                vec![
                    json!({"type": "tool_use", "id": id, "name": call.name, "input": call.arguments}),
                ],
                true,
            );
        }
        (vec![json!({"type": "text", "text": text})], false)
    }

    async fn whole(self, mut run: Running) -> Result<Response, ApiError> {
        while let Some(e) = run.rx.recv().await {
            match e {
                Event::Failed(m) => return Err(internal(m, D)),
                Event::Done {
                    text,
                    stop_reason: why,
                    stop_string,
                    stats,
                    ..
                } => {
                    let (content, tool) = self.blocks(&text);
                    let reason = if tool { "tool_use" } else { stop_reason(why) };
                    return Ok(axum::Json(json!({
                        "id": self.id,
                        "type": "message",
                        "role": "assistant",
                        "model": self.model,
                        "content": content,
                        "stop_reason": reason,
                        "stop_sequence": stop_string,
                        "usage": {"input_tokens": self.prompt_tokens, "output_tokens": stats.generated_tokens},
                    }))
                    .into_response());
                }
                _ => {}
            }
        }
        Err(internal("the request ended without a reply", D))
    }

    /// Answers with Anthropic's event sequence ([`crate::sse`]).
    fn stream(self, run: Running) -> Response {
        let opening = vec![ev(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 0},
            }}),
        )];
        let held = self.tools.is_some();
        let mut opened = false;
        crate::sse(run, opening, move |e| match e {
            Event::Token { text, .. } if !held && !text.is_empty() => {
                let mut out = Vec::new();
                if !opened {
                    opened = true;
                    out.push(block_start(json!({"type": "text", "text": ""})));
                }
                out.push(text_delta(&text));
                (out, false)
            }
            Event::Failed(m) => (vec![ev("error", internal(m, D).body())], true),
            Event::Done {
                text,
                stop_reason: why,
                stop_string,
                stats,
                ..
            } => {
                let mut reason = stop_reason(why);
                let mut out = Vec::new();
                if held {
                    let (blocks, tool) = self.blocks(&text);
                    if tool {
                        reason = "tool_use";
                        let mut b = blocks[0].clone();
                        let input = b["input"].to_string();
                        b["input"] = json!({});
                        out.push(block_start(b));
                        out.push(block_delta(
                            json!({"type": "input_json_delta", "partial_json": input}),
                        ));
                    } else {
                        out.push(block_start(json!({"type": "text", "text": ""})));
                        out.push(text_delta(&text));
                    }
                } else if !opened {
                    out.push(block_start(json!({"type": "text", "text": ""})));
                }
                out.push(ev(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ));
                out.push(ev(
                    "message_delta",
                    json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": stop_string}, "usage": {"output_tokens": stats.generated_tokens}}),
                ));
                out.push(ev("message_stop", json!({"type": "message_stop"})));
                (out, true)
            }
            _ => (Vec::new(), false),
        })
    }
}

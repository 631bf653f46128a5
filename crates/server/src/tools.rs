//! Tool calls, the same way for every model: the functions are described in the
//! system prompt with one fixed reply format, a JSON object
//! `{"name": …, "arguments": {…}}` (Gemma 3's documented way: it has no tool role
//! in its template, and this works on any instruction-tuned model). With
//! `tool_choice` `required` or a named function the reply is constrained to that
//! object and the functions' parameter schemas, so it always parses and validates;
//! with `auto` the reply is a tool call when it is such an object. Calls and results
//! go back into the conversation as text in the same format.
//!
//! A model whose chat template renders `tools` itself (Qwen 2.5/3, Hermes: calls in
//! `<tool_call>` tags; Llama 3.1+: a bare JSON object with `parameters`) gets them
//! through its template instead, with the conversation's calls and results as the
//! template expects them ([`native_messages`]); its call syntax is then the one
//! constrained and parsed.

use crate::error::ApiError;
use serde_json::{json, Value};
use unicorn_engine::constrain::Grammar;
use unicorn_engine::template::ToolSyntax;
use unicorn_engine::Message;

/// One turn of a conversation as either API gives it, before rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Its text.
    pub content: String,
    /// Calls an assistant turn made: (id, name, arguments).
    pub calls: Vec<(String, String, Value)>,
    /// For a `tool` turn: the call it answers (id) and the function's name.
    pub result_of: (Option<String>, Option<String>),
}

impl Turn {
    /// A turn of text.
    pub fn text(role: &str, content: String) -> Self {
        Self {
            role: role.into(),
            content,
            calls: Vec::new(),
            result_of: (None, None),
        }
    }
}

/// How calls are written for this request: in our common JSON format through the
/// system prompt, or in the template's own syntax.
pub fn syntax(
    native: Option<ToolSyntax>,
    tools: &[ToolDef],
    choice: &Choice,
) -> Option<ToolSyntax> {
    native.filter(|_| !tools.is_empty() && *choice != Choice::None)
}

/// The conversation as the engine's text messages: calls and results become text in
/// the common format, consecutive turns of one role merge (templates that insist on
/// alternating roles accept it), and the tools' instructions join the system prompt.
pub fn text_messages(turns: &[Turn], tools: &[ToolDef], choice: &Choice) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    let mut names: Vec<(String, String)> = Vec::new();
    for t in turns {
        let (role, text) = match t.role.as_str() {
            "assistant" => {
                let mut text = t.content.clone();
                for (id, name, args) in &t.calls {
                    names.push((id.clone(), name.clone()));
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&call_text(name, args));
                }
                ("assistant", text)
            }
            "tool" => {
                let name = t.result_of.1.clone().or_else(|| {
                    let id = t.result_of.0.as_deref()?;
                    names.iter().find(|(i, _)| i == id).map(|(_, n)| n.clone())
                });
                ("user", result_text(name.as_deref(), &t.content))
            }
            r => (r, t.content.clone()),
        };
        match out.last_mut() {
            Some(last) if last.role == role => {
                last.content.push_str("\n\n");
                last.content.push_str(&text);
            }
            _ => out.push(Message {
                role: role.into(),
                content: text,
            }),
        }
    }
    let instructions = instructions(tools, choice);
    if !instructions.is_empty() {
        match out.first_mut() {
            Some(first) if first.role == "system" => {
                first.content = format!("{}\n\n{instructions}", first.content);
            }
            _ => out.insert(0, Message::system(instructions)),
        }
    }
    out
}

/// The conversation and tools as JSON for a template that renders tools: OpenAI's
/// shapes, which HF templates read (`tool_calls` with `function.arguments` as an
/// object, `tool` turns with `tool_call_id` and `name`).
pub fn native_messages(turns: &[Turn], tools: &[ToolDef]) -> (Value, Value) {
    let msgs: Vec<Value> = turns
        .iter()
        .map(|t| {
            let mut m = json!({"role": t.role, "content": t.content});
            if !t.calls.is_empty() {
                m["tool_calls"] = t
                    .calls
                    .iter()
                    .map(|(id, name, args)| {
                        json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
                    })
                    .collect();
            }
            if let Some(id) = &t.result_of.0 {
                m["tool_call_id"] = json!(id);
            }
            if let Some(n) = &t.result_of.1 {
                m["name"] = json!(n);
            }
            m
        })
        .collect();
    let tools: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}})
        })
        .collect();
    (Value::Array(msgs), Value::Array(tools))
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    /// Its name (`[A-Za-z0-9_-]{1,64}`).
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON schema of its arguments (an object).
    pub parameters: Value,
}

/// Whether and which function must be called.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Never (the tools are not shown).
    None,
    /// The model decides.
    Auto,
    /// One of the functions must be called.
    Required,
    /// This function must be called.
    Named(String),
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The function.
    pub name: String,
    /// Its arguments.
    pub arguments: Value,
}

/// Checks the definitions and the choice (`param`: the request field, for errors).
pub fn validate(tools: &[ToolDef], choice: &Choice, param: &str) -> Result<(), ApiError> {
    if tools.len() > 128 {
        return Err(ApiError::invalid(param, "more than 128 tools"));
    }
    for (i, t) in tools.iter().enumerate() {
        let ok = !t.name.is_empty()
            && t.name.len() <= 64
            && t.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(ApiError::invalid(
                &format!("{param}[{i}].name"),
                format!(
                    "tool name {:?} must be 1-64 letters, digits, _ or -",
                    t.name.chars().take(80).collect::<String>()
                ),
            ));
        }
        if !t.parameters.is_object() {
            return Err(ApiError::invalid(
                &format!("{param}[{i}]"),
                "tool parameters must be a JSON schema object",
            ));
        }
        if tools[..i].iter().any(|o| o.name == t.name) {
            return Err(ApiError::invalid(
                param,
                format!("tool {} is defined twice", t.name),
            ));
        }
    }
    match choice {
        Choice::Named(n) if !tools.iter().any(|t| &t.name == n) => Err(ApiError::invalid(
            "tool_choice",
            format!("tool_choice names {n:?}, which is not among the tools"),
        )),
        Choice::Required | Choice::Named(_) if tools.is_empty() => Err(ApiError::invalid(
            "tool_choice",
            "tool_choice requires a tool call but no tools were given",
        )),
        _ => Ok(()),
    }
}

/// The system-prompt text that describes the tools (empty with no tools or `none`).
fn instructions(tools: &[ToolDef], choice: &Choice) -> String {
    if tools.is_empty() || *choice == Choice::None {
        return String::new();
    }
    let list: Vec<Value> = tools
        .iter()
        .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
        .collect();
    let rule = match choice {
        Choice::Named(n) => format!("You must call the function {n} now."),
        Choice::Required => "You must call one of these functions now.".to_string(),
        _ => "Call a function when it helps answer; otherwise reply normally.".to_string(),
    };
    format!(
        "You have access to these functions:\n{}\n\nTo call a function, reply with only a JSON \
         object {{\"name\": <function name>, \"arguments\": <object of arguments>}} and nothing \
         else. Results come back in a message starting with \"Result of\". {rule}",
        serde_json::to_string_pretty(&list).unwrap_or_default()
    )
}

/// The constraint for `required` or a named function: the reply is one call object
/// whose arguments match that function's schema, in the syntax the model is asked
/// for (`<tool_call>` tags around it for [`ToolSyntax::Tagged`]; `parameters` for
/// the arguments' key with [`ToolSyntax::Json`], as Llama 3.1's template says).
pub fn grammar(tools: &[ToolDef], choice: &Choice, syntax: Option<ToolSyntax>) -> Option<Grammar> {
    let key = if syntax == Some(ToolSyntax::Json) {
        "parameters"
    } else {
        "arguments"
    };
    let one = |t: &ToolDef| {
        json!({
            "type": "object",
            "properties": {"name": {"const": t.name}, key: t.parameters},
            "required": ["name", key],
            "additionalProperties": false,
        })
    };
    let schema = match choice {
        Choice::Required => json!({"anyOf": tools.iter().map(one).collect::<Vec<_>>()}),
        Choice::Named(n) => one(tools.iter().find(|t| &t.name == n)?),
        _ => return None,
    };
    Some(match syntax {
        Some(ToolSyntax::Tagged) => Grammar::Lark(format!(
            "start: \"<tool_call>\\n\" call \"\\n</tool_call>\"\ncall: %json {schema}"
        )),
        _ => Grammar::JsonSchema(schema),
    })
}

/// The call in a reply, if the reply is one (a JSON object naming a known tool,
/// optionally in a Markdown code fence).
pub fn parse(text: &str, tools: &[ToolDef]) -> Option<ToolCall> {
    let mut t = text.trim();
    if let Some(inner) = t.strip_prefix("<tool_call>") {
        t = inner.trim().strip_suffix("</tool_call>")?.trim();
    }
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
        t = rest.trim().strip_suffix("```")?.trim();
    }
    let v: Value = serde_json::from_str(t).ok()?;
    let name = v.get("name")?.as_str()?;
    let args = v.get("arguments").or_else(|| v.get("parameters"))?;
    if !args.is_object() || !tools.iter().any(|t| t.name == name) {
        return None;
    }
    Some(ToolCall {
        name: name.to_string(),
        arguments: args.clone(),
    })
}

/// A call as the assistant's text in the conversation.
fn call_text(name: &str, arguments: &Value) -> String {
    json!({"name": name, "arguments": arguments}).to_string()
}

/// A tool's result as the text of a user turn.
fn result_text(name: Option<&str>, content: &str) -> String {
    match name {
        Some(n) => format!("Result of {n}:\n{content}"),
        None => format!("Result of the function call:\n{content}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Vec<ToolDef> {
        vec![ToolDef {
            name: "get_weather".into(),
            description: Some("Weather in a city".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        }]
    }

    #[test]
    fn replies_that_are_calls_parse_and_others_do_not() {
        let t = weather();
        let c = parse(
            "```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```",
            &t,
        )
        .unwrap();
        assert_eq!(c.arguments["city"], "Paris");
        assert!(parse("{\"name\": \"other\", \"arguments\": {}}", &t).is_none());
        assert!(parse("The weather is nice.", &t).is_none());
        assert!(parse("{\"name\": \"get_weather\", \"arguments\": 3}", &t).is_none());
        let tagged = parse(
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>",
            &t,
        );
        assert_eq!(tagged.unwrap().name, "get_weather");
        let llama = parse(
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
            &t,
        );
        assert_eq!(llama.unwrap().arguments["city"], "Oslo");
    }

    #[test]
    fn results_become_user_turns_and_calls_text() {
        let t = weather();
        let turns = vec![
            Turn::text("user", "Weather in Paris?".into()),
            Turn {
                role: "assistant".into(),
                content: String::new(),
                calls: vec![("c1".into(), "get_weather".into(), json!({"city": "Paris"}))],
                result_of: (None, None),
            },
            Turn {
                role: "tool".into(),
                content: "21 C".into(),
                calls: Vec::new(),
                result_of: (Some("c1".into()), None),
            },
        ];
        let m = text_messages(&turns, &t, &Choice::Auto);
        assert_eq!(m[0].role, "system");
        assert!(m[2].content.contains("\"get_weather\""), "{m:?}");
        assert_eq!(m[3].role, "user");
        assert!(m[3].content.starts_with("Result of get_weather:"), "{m:?}");
        let (msgs, tools) = native_messages(&turns, &t);
        assert_eq!(
            msgs[1]["tool_calls"][0]["function"]["arguments"]["city"],
            "Paris"
        );
        assert_eq!(msgs[2]["tool_call_id"], "c1");
        assert_eq!(tools[0]["function"]["name"], "get_weather");
    }

    #[test]
    fn bad_definitions_are_refused() {
        let mut t = weather();
        assert!(validate(&t, &Choice::Named("nope".into()), "tools").is_err());
        t[0].name = "bad name".into();
        assert!(validate(&t, &Choice::Auto, "tools").is_err());
        assert!(validate(&[], &Choice::Required, "tools").is_err());
    }
}

//! Tool calls, the same way for every model: the functions are described in the
//! system prompt with one fixed reply format, a JSON object
//! `{"name": …, "arguments": {…}}` (Gemma 3's documented way: it has no tool role
//! in its template, and this works on any instruction-tuned model). With
//! `tool_choice` `required` or a named function the reply is constrained to that
//! object and the functions' parameter schemas, so it always parses and validates;
//! with `auto` the reply is a tool call when it is such an object. Calls and results
//! go back into the conversation as text in the same format.
//!
//! Left out: rendering `tools` through templates that have their own syntax (Qwen's
//! `<tool_call>`, Llama 3.1's `ipython` role); those models follow this format too.

use crate::error::ApiError;
use serde_json::{json, Value};
use unicorn_engine::constrain::Grammar;

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
pub fn instructions(tools: &[ToolDef], choice: &Choice) -> String {
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
/// whose arguments match that function's schema.
pub fn grammar(tools: &[ToolDef], choice: &Choice) -> Option<Grammar> {
    let one = |t: &ToolDef| {
        json!({
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": false,
        })
    };
    match choice {
        Choice::Required => Some(Grammar::JsonSchema(
            json!({"anyOf": tools.iter().map(one).collect::<Vec<_>>()}),
        )),
        Choice::Named(n) => tools
            .iter()
            .find(|t| &t.name == n)
            .map(|t| Grammar::JsonSchema(one(t))),
        _ => None,
    }
}

/// The call in a reply, if the reply is one (a JSON object naming a known tool,
/// optionally in a Markdown code fence).
pub fn parse(text: &str, tools: &[ToolDef]) -> Option<ToolCall> {
    let mut t = text.trim();
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
pub fn call_text(name: &str, arguments: &Value) -> String {
    json!({"name": name, "arguments": arguments}).to_string()
}

/// A tool's result as the text of a user turn.
pub fn result_text(name: Option<&str>, content: &str) -> String {
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

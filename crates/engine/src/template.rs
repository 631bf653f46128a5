//! Chat templates: the Jinja template a model ships (`tokenizer.chat_template`),
//! rendered with minijinja under HF transformers' conventions (`messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token`, `raise_exception`, Python
//! string methods, `trim_blocks` and `lstrip_blocks`).

use crate::error::{Error, Result};
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".into(),
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// Instructions one rendering may run: far more than any real template needs for a
/// long conversation, few enough that a template that loops forever stops in
/// well under a second.
const FUEL: u64 = 5_000_000;
/// Bytes one rendering may produce: a prompt this long is beyond any context.
const MAX_OUTPUT: usize = 64 << 20;

/// How a template that renders tools expects the model to call one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolSyntax {
    /// A JSON object in `<tool_call>` tags (Qwen 2.5/3, Hermes).
    Tagged,
    /// A bare JSON object (Llama 3.1+ and others).
    Json,
}

/// A parsed chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Gemma has no system role: a system message is folded into the first user turn.
    fold_system: bool,
    /// Where the template came from, for errors.
    origin: String,
    /// Whether it renders a `tools` list, and how its model calls one.
    tools: Option<ToolSyntax>,
}

impl ChatTemplate {
    /// Parses `source`, which came from `origin` (a file, named in errors).
    /// `fold_system` is set for models without a system role (Gemma).
    pub fn new(source: &str, origin: &str, fold_system: bool) -> Result<Self> {
        let err = |e: String| Error::Template(format!("{origin}: {e}"));
        let mut env = Environment::new();
        // A template comes with the model, from anywhere: bounded in work and output.
        env.set_fuel(Some(FUEL));
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |fmt: String| -> String {
            // Templates use this for "today's date" lines; without a clock crate we give
            // the UTC date, which is what the common formats ask for.
            format_utc_date(&fmt)
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| err(e.to_string()))?;
        // A template that iterates over `tools` renders them itself; one that also
        // writes `<tool_call>` asks for tagged calls.
        let tools = source.contains("for tool in tools").then(|| {
            if source.contains("<tool_call>") {
                ToolSyntax::Tagged
            } else {
                ToolSyntax::Json
            }
        });
        Ok(Self {
            env,
            fold_system,
            origin: origin.to_string(),
            tools,
        })
    }

    /// Whether the template renders tools, and the call syntax it asks for.
    pub fn tool_syntax(&self) -> Option<ToolSyntax> {
        self.tools
    }

    /// Renders messages given as JSON (with `tool_calls` on assistant turns and
    /// `tool` turns, as OpenAI's API and HF templates have them) and a `tools` list
    /// (OpenAI's `{"type": "function", "function": …}` entries).
    pub fn render_with_tools(
        &self,
        messages: &serde_json::Value,
        tools: &serde_json::Value,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        self.render_values(
            Value::from_serialize(messages),
            Value::from_serialize(tools),
            true,
            bos_token,
            eos_token,
        )
    }

    /// Renders the conversation; with `add_generation_prompt` the text ends where the
    /// assistant's reply starts.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        let messages = if self.fold_system {
            fold_system(messages)
        } else {
            messages.to_vec()
        };
        self.render_values(
            Value::from_serialize(&messages),
            Value::from(()),
            add_generation_prompt,
            bos_token,
            eos_token,
        )
    }

    fn render_values(
        &self,
        messages: Value,
        tools: Value,
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        let err = |e: String| Error::Template(format!("{}: {e}", self.origin));
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| err(e.to_string()))?;
        let mut out = Capped(Vec::new());
        let rendered = tmpl.render_captured_to(
            minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => bos_token,
                eos_token => eos_token,
                tools => tools,
            },
            &mut out,
        );
        match rendered {
            Ok(_) => String::from_utf8(out.0)
                .map_err(|_| err("the template produced invalid UTF-8".into())),
            Err(_) if out.0.len() > MAX_OUTPUT => Err(err(format!(
                "the output passed {} MB: refused",
                MAX_OUTPUT >> 20
            ))),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(err(format!(
                "more than {FUEL} instructions: refused (a loop that does not end?)"
            ))),
            Err(e) => Err(err(e.to_string())),
        }
    }
}

/// Rendered text, refused past [`MAX_OUTPUT`] bytes.
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT {
            // Recorded, so that the error can say why.
            self.0.resize(MAX_OUTPUT + 1, 0);
            return Err(std::io::Error::other("output cap"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Moves a leading system message into the first user turn, separated by a blank line
/// (what Gemma 3's own template does).
pub fn fold_system(messages: &[Message]) -> Vec<Message> {
    let Some(first) = messages.first() else {
        return Vec::new();
    };
    if first.role != "system" {
        return messages.to_vec();
    }
    let mut rest: Vec<Message> = messages[1..].to_vec();
    match rest.iter_mut().find(|m| m.role == "user") {
        Some(u) => u.content = format!("{}\n\n{}", first.content, u.content),
        None => rest.insert(0, Message::user(first.content.clone())),
    }
    rest
}

fn format_utc_date(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    fmt.replace("%Y", &y.to_string())
        .replace("%m", &format!("{m:02}"))
        .replace("%d", &format!("{d:02}"))
        .replace("%B", MONTHS[(m - 1) as usize])
        .replace("%b", &MONTHS[(m - 1) as usize][..3])
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A template that renders tools (Qwen 2.5 / Hermes style, the server tests'
    /// fixture) is recognised with its call syntax and gets the tools, the calls and
    /// the results; a plain one renders none.
    #[test]
    fn templates_that_render_tools_get_them() {
        let src = include_str!("../../../tests/server/tools_template.jinja");
        let t = ChatTemplate::new(src, "tools_template.jinja", false).unwrap();
        assert_eq!(t.tool_syntax(), Some(ToolSyntax::Tagged));
        let messages = serde_json::json!([
            {"role": "user", "content": "Rain in Oslo?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "forecast", "arguments": {"city": "Oslo"}}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "rain on Tuesday"},
        ]);
        let tools = serde_json::json!([{"type": "function", "function": {"name": "forecast", "parameters": {}}}]);
        let out = t.render_with_tools(&messages, &tools, "", "").unwrap();
        assert!(
            out.contains("<tools>{\"function\":{\"name\":\"forecast\""),
            "{out}"
        );
        assert!(
            out.contains(
                "<tool_call>\n{\"name\": \"forecast\", \"arguments\": {\"city\":\"Oslo\"}}"
            ),
            "{out}"
        );
        assert!(
            out.contains("<tool_response>\nrain on Tuesday\n</tool_response>"),
            "{out}"
        );
        assert!(out.ends_with("<|im_start|>assistant\n"), "{out}");
        let plain = ChatTemplate::new("{{ messages[0].content }}", "plain", false).unwrap();
        assert_eq!(plain.tool_syntax(), None);
    }

    /// Templates that loop for ever or write without end stop quickly with the reason,
    /// naming where the template came from.
    #[test]
    fn hostile_templates_are_bounded() {
        let msgs = [Message::user("hi")];
        for (src, why) in [
            (
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                "instructions",
            ),
            (
                "{% for i in range(1000) %}{{ 'x' * 100000000 }}{% endfor %}",
                "MB",
            ),
        ] {
            let t0 = std::time::Instant::now();
            let t = ChatTemplate::new(src, "evil/tokenizer_config.json", false).unwrap();
            let e = t.render(&msgs, true, "", "").unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains("evil/tokenizer_config.json"),
                "{e}"
            );
            assert!(t0.elapsed().as_secs() < 10, "{:?}", t0.elapsed());
        }
        let e = ChatTemplate::new("{% for %}", "x.gguf", false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("x.gguf"), "{e}");
    }

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_with_default_system_and_generation_prompt() {
        let t = ChatTemplate::new(CHATML, "test", false).unwrap();
        let s = t.render(&[Message::user("Hi")], true, "", "").unwrap();
        assert_eq!(s, "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn raise_exception_is_an_error_not_a_panic() {
        let t =
            ChatTemplate::new("{{ raise_exception('no system role') }}", "test", false).unwrap();
        let e = t.render(&[], false, "", "").unwrap_err();
        assert!(e.to_string().contains("no system role"), "{e}");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new(
            "{{ messages[0]['content'].strip() | upper }}",
            "test",
            false,
        )
        .unwrap();
        assert_eq!(
            t.render(&[Message::user("  x  ")], false, "", "").unwrap(),
            "X"
        );
    }

    #[test]
    fn system_is_folded_into_the_first_user_turn() {
        let m = fold_system(&[Message::system("Be brief."), Message::user("Hi")]);
        assert_eq!(m, vec![Message::user("Be brief.\n\nHi")]);
    }

    #[test]
    fn dates_are_computed() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
    }
}

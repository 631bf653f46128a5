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

/// A parsed chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Gemma has no system role: a system message is folded into the first user turn.
    fold_system: bool,
}

impl ChatTemplate {
    /// Parses `source`. `fold_system` is set for models without a system role (Gemma).
    pub fn new(source: &str, fold_system: bool) -> Result<Self> {
        let mut env = Environment::new();
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
            .map_err(|e| Error::Template(e.to_string()))?;
        Ok(Self { env, fold_system })
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
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
            tools => Value::from(()),
        })
        .map_err(|e| Error::Template(e.to_string()))
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

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_with_default_system_and_generation_prompt() {
        let t = ChatTemplate::new(CHATML, false).unwrap();
        let s = t.render(&[Message::user("Hi")], true, "", "").unwrap();
        assert_eq!(s, "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn raise_exception_is_an_error_not_a_panic() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", false).unwrap();
        let e = t.render(&[], false, "", "").unwrap_err();
        assert!(e.to_string().contains("no system role"), "{e}");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new("{{ messages[0]['content'].strip() | upper }}", false).unwrap();
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

//! Conversations as files: JSON in the `unicorn-chat` format (version 1, described
//! in `docs/chat-format.md`), which [`Library::chat_import_json`] reads back, and
//! Markdown for reading. An imported file is untrusted: its size, message count,
//! roles and lengths are checked before anything is stored, and a refusal is one
//! line naming the problem.

use crate::chats::MAX_TITLE_CHARS;
use crate::{sql, Library};
use rusqlite::params;
use serde::{Deserialize, Serialize};
use unicorn_engine::stats::Stats;
use unicorn_engine::{Error, Result};

/// The `format` field of an exported chat.
pub const FORMAT: &str = "unicorn-chat";
/// The `version` this build writes and reads.
pub const VERSION: u64 = 1;
/// Largest file imported.
pub const MAX_IMPORT_BYTES: usize = 32 << 20;
/// Most messages in an imported chat.
pub const MAX_IMPORT_MESSAGES: usize = 100_000;
/// Longest message imported (bytes): what the chat accepts as one message.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Longest model path imported (bytes).
const MAX_MODEL_BYTES: usize = 4096;
/// Roles a message may have.
pub const ROLES: [&str; 3] = ["system", "user", "assistant"];

/// An exported chat (`unicorn-chat`, version 1).
#[derive(Debug, Serialize)]
struct ChatFile<'a> {
    format: &'a str,
    version: u64,
    title: &'a str,
    model: &'a str,
    created_at: i64,
    messages: Vec<MessageOut<'a>>,
}

#[derive(Debug, Serialize)]
struct MessageOut<'a> {
    role: &'a str,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<&'a Stats>,
}

/// What an imported file may hold; every field is checked after parsing.
#[derive(Debug, Deserialize)]
struct ChatIn {
    format: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
    title: Option<serde_json::Value>,
    model: Option<serde_json::Value>,
    created_at: Option<serde_json::Value>,
    messages: Option<serde_json::Value>,
}

fn refuse<T>(message: String) -> Result<T> {
    Err(Error::Invalid(message))
}

/// `text` for a Markdown document: ends with a line break, and a code fence left
/// open is closed (else it would swallow the headings after it).
fn markdown_block(text: &str) -> String {
    let mut out = text.trim_end_matches(['\n', '\r']).to_string();
    let mut open: Option<(char, usize)> = None;
    for line in out.lines() {
        let l = line.trim_start_matches(' ');
        if line.len() - l.len() > 3 {
            continue;
        }
        let Some(c) = l.chars().next().filter(|c| *c == '`' || *c == '~') else {
            continue;
        };
        let run = l.chars().take_while(|x| *x == c).count();
        if run < 3 {
            continue;
        }
        match open {
            None => open = Some((c, run)),
            Some((oc, orun)) if oc == c && run >= orun && l[run..].trim().is_empty() => open = None,
            _ => {}
        }
    }
    if let Some((c, run)) = open {
        out.push('\n');
        out.extend(std::iter::repeat_n(c, run));
    }
    out.push('\n');
    out
}

impl Library {
    fn chat_whole(
        &self,
        id: i64,
    ) -> Result<(crate::chats::ChatRecord, Vec<crate::chats::StoredMessage>)> {
        let rec = self
            .chat_record(id)?
            .ok_or_else(|| Error::Invalid(format!("no stored chat {id}")))?;
        let (_, messages) = self
            .chat(id)?
            .ok_or_else(|| Error::Invalid(format!("no stored chat {id}")))?;
        Ok((rec, messages))
    }

    /// Conversation `id` as `unicorn-chat` JSON (pretty-printed).
    pub fn chat_export_json(&self, id: i64) -> Result<String> {
        let (rec, messages) = self.chat_whole(id)?;
        let file = ChatFile {
            format: FORMAT,
            version: VERSION,
            title: &rec.title,
            model: &rec.model,
            created_at: rec.created_at,
            messages: messages
                .iter()
                .map(|m| MessageOut {
                    role: &m.role,
                    content: &m.content,
                    stats: m.stats.as_ref(),
                })
                .collect(),
        };
        let mut s = serde_json::to_string_pretty(&file)
            .map_err(|e| Error::Invalid(format!("chat {id}: {e}")))?;
        s.push('\n');
        Ok(s)
    }

    /// Conversation `id` as Markdown: its title, model and date, then each message
    /// under a heading naming its role (and a reply's measured speed), the text as
    /// written (code blocks intact).
    pub fn chat_export_markdown(&self, id: i64) -> Result<String> {
        let (rec, messages) = self.chat_whole(id)?;
        let mut md = format!(
            "# {}\n\n- Model: `{}`\n- Started: {} (Unix time)\n",
            rec.title.replace(['\n', '\r'], " "),
            rec.model.replace('`', "'"),
            rec.created_at
        );
        for m in &messages {
            let heading = match m.role.as_str() {
                "system" => "System",
                "user" => "User",
                "assistant" => "Assistant",
                other => other,
            };
            md.push_str(&format!("\n## {heading}\n\n"));
            md.push_str(&markdown_block(&m.content));
            if let Some(s) = &m.stats {
                md.push_str(&format!(
                    "\n*{} tokens, {:.1} tok/s, first token after {:.0} ms*\n",
                    s.generated_tokens, s.decode_tok_s, s.ttft_ms
                ));
            }
        }
        Ok(md)
    }

    /// Stores the conversation in `text` (a `unicorn-chat` JSON file) as a new chat
    /// and returns its id. Refused, with one line naming the problem and nothing
    /// stored: a file over [`MAX_IMPORT_BYTES`], not JSON, another format or
    /// version, more than [`MAX_IMPORT_MESSAGES`] messages, a role other than
    /// system, user or assistant, a message over [`MAX_MESSAGE_BYTES`], or stats
    /// that are not a reply's figures.
    pub fn chat_import_json(&self, text: &str) -> Result<i64> {
        if text.len() > MAX_IMPORT_BYTES {
            return refuse(format!(
                "{} MiB; chats of at most {} MiB are imported",
                text.len() >> 20,
                MAX_IMPORT_BYTES >> 20
            ));
        }
        let raw: ChatIn = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("not a {FORMAT} JSON file: {e}")))?;
        match raw.format.as_ref().and_then(|v| v.as_str()) {
            Some(FORMAT) => {}
            Some(other) => {
                let shown: String = other.chars().take(40).collect();
                return refuse(format!(
                    "format {shown:?} is not {FORMAT:?}: not a Unicorn chat export"
                ));
            }
            None => {
                return refuse(format!(
                    "no \"format\": \"{FORMAT}\": not a Unicorn chat export"
                ))
            }
        }
        match raw.version.as_ref().and_then(|v| v.as_u64()) {
            Some(VERSION) => {}
            Some(v) => {
                return refuse(format!(
                    "{FORMAT} version {v} is not supported (this version of Unicorn reads version {VERSION})"
                ))
            }
            None => return refuse(format!("no \"version\" number (this version of Unicorn reads version {VERSION})")),
        }
        let model = match &raw.model {
            Some(serde_json::Value::String(m)) if m.len() <= MAX_MODEL_BYTES => m.clone(),
            Some(serde_json::Value::String(_)) => return refuse("\"model\": too long".into()),
            None | Some(serde_json::Value::Null) => String::new(),
            Some(_) => return refuse("\"model\": not a string".into()),
        };
        let created_at = match &raw.created_at {
            None | Some(serde_json::Value::Null) => crate::unix_now(),
            Some(v) => match v.as_i64() {
                Some(t) if t >= 0 => t,
                _ => return refuse("\"created_at\": not a Unix time in seconds".into()),
            },
        };
        let Some(serde_json::Value::Array(list)) = raw.messages else {
            return refuse("\"messages\": missing or not a list".into());
        };
        if list.len() > MAX_IMPORT_MESSAGES {
            return refuse(format!(
                "{} messages; at most {MAX_IMPORT_MESSAGES} are imported",
                list.len()
            ));
        }
        let mut messages = Vec::with_capacity(list.len());
        for (i, m) in list.iter().enumerate() {
            let n = i + 1;
            let Some(obj) = m.as_object() else {
                return refuse(format!("message {n}: not an object"));
            };
            let role = match obj.get("role").and_then(|r| r.as_str()) {
                Some(r) if ROLES.contains(&r) => r.to_string(),
                Some(r) => {
                    let shown: String = r.chars().take(40).collect();
                    return refuse(format!(
                        "message {n}: role {shown:?} is not system, user or assistant"
                    ));
                }
                None => return refuse(format!("message {n}: no \"role\" string")),
            };
            let content = match obj.get("content").and_then(|c| c.as_str()) {
                Some(c) if c.len() <= MAX_MESSAGE_BYTES => c.to_string(),
                Some(c) => {
                    return refuse(format!(
                        "message {n}: {} MiB of text; at most {} MiB per message",
                        c.len() >> 20,
                        MAX_MESSAGE_BYTES >> 20
                    ))
                }
                None => return refuse(format!("message {n}: no \"content\" string")),
            };
            let stats = match obj.get("stats") {
                None | Some(serde_json::Value::Null) => None,
                Some(s) => Some(
                    serde_json::from_value::<Stats>(s.clone())
                        .map_err(|e| Error::Invalid(format!("message {n}: \"stats\": {e}")))?,
                ),
            };
            messages.push((role, content, stats));
        }
        let title = match &raw.title {
            Some(serde_json::Value::String(t)) => t.clone(),
            None | Some(serde_json::Value::Null) => String::new(),
            Some(_) => return refuse("\"title\": not a string".into()),
        };
        // A title that would not pass a rename is made from its printable part, or
        // from the first user message.
        let mut title: String = title
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .trim()
            .chars()
            .take(MAX_TITLE_CHARS)
            .collect();
        if title.is_empty() {
            title = messages
                .iter()
                .find(|m| m.0 == "user")
                .map(|m| {
                    m.1.chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .take(60)
                        .collect::<String>()
                        .trim()
                        .to_string()
                })
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "Imported chat".into());
        }

        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(sql(self.path()))?;
        tx.execute(
            "INSERT INTO chats (model, title, created_at) VALUES (?1, ?2, ?3)",
            params![model, title, created_at],
        )
        .map_err(sql(self.path()))?;
        let id = tx.last_insert_rowid();
        {
            let mut st = tx
                .prepare(
                    "INSERT INTO chat_messages (chat_id, seq, role, content, stats)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sql(self.path()))?;
            for (seq, (role, content, stats)) in messages.iter().enumerate() {
                let stats = stats
                    .as_ref()
                    .map(|s| serde_json::to_string(s).unwrap_or_default());
                st.execute(params![id, seq as i64, role, content, stats])
                    .map_err(sql(self.path()))?;
            }
        }
        tx.commit().map_err(sql(self.path()))?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_lib(name: &str) -> (Library, std::path::PathBuf) {
        let d = std::env::temp_dir().join(format!("unicorn-export-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        (Library::open(&d.join("library.sqlite3")).unwrap(), d)
    }

    fn sample(lib: &Library) -> i64 {
        let id = lib.chat_new("/m/a.gguf", "Write fizzbuzz").unwrap();
        lib.chat_append(id, "system", "You are terse.", None)
            .unwrap();
        lib.chat_append(id, "user", "Write fizzbuzz", None).unwrap();
        let stats = Stats {
            generated_tokens: 40,
            decode_tok_s: 55.5,
            ttft_ms: 120.0,
            device: "cpu".into(),
            ..Default::default()
        };
        lib.chat_append(
            id,
            "assistant",
            "Here:\n\n```python\nfor i in range(1, 16):\n    print(i)\n\n## not a heading\n```\n",
            Some(&stats),
        )
        .unwrap();
        id
    }

    #[test]
    fn json_round_trips_to_a_new_chat() {
        let (lib, d) = temp_lib("json");
        let id = sample(&lib);
        let json = lib.chat_export_json(id).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["format"], "unicorn-chat");
        assert_eq!(v["version"], 1);
        assert_eq!(v["title"], "Write fizzbuzz");
        assert_eq!(v["model"], "/m/a.gguf");
        assert_eq!(v["messages"].as_array().unwrap().len(), 3);
        assert!(v["messages"][0].get("stats").is_none());
        assert_eq!(v["messages"][2]["stats"]["generated_tokens"], 40);

        let copy = lib.chat_import_json(&json).unwrap();
        assert_ne!(copy, id);
        let (model, a) = lib.chat(id).unwrap().unwrap();
        let (model2, b) = lib.chat(copy).unwrap().unwrap();
        assert_eq!((model, a), (model2, b));
        let (r1, r2) = (
            lib.chat_record(id).unwrap().unwrap(),
            lib.chat_record(copy).unwrap().unwrap(),
        );
        assert_eq!((r1.title, r1.created_at), (r2.title, r2.created_at));
        // The copy is its own: deleting the original keeps it.
        lib.chat_delete(id).unwrap();
        assert_eq!(lib.chat(copy).unwrap().unwrap().1.len(), 3);
        assert!(lib
            .chat_export_json(id)
            .unwrap_err()
            .to_string()
            .contains("no stored chat"));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn markdown_has_headings_and_intact_code() {
        let (lib, d) = temp_lib("md");
        let id = sample(&lib);
        let md = lib.chat_export_markdown(id).unwrap();
        assert!(
            md.starts_with("# Write fizzbuzz\n\n- Model: `/m/a.gguf`\n"),
            "{md}"
        );
        let heads: Vec<&str> = md.lines().filter(|l| l.starts_with("## ")).collect();
        assert_eq!(
            heads,
            ["## System", "## User", "## Assistant", "## not a heading"]
        );
        assert!(md.contains(
            "```python\nfor i in range(1, 16):\n    print(i)\n\n## not a heading\n```\n"
        ));
        assert!(md.contains("*40 tokens, 55.5 tok/s"));
        // An unclosed fence is closed so the next heading stays a heading.
        assert_eq!(
            markdown_block("a\n```rust\nfn x() {}"),
            "a\n```rust\nfn x() {}\n```\n"
        );
        assert_eq!(markdown_block("~~~~\nx\n~~~~\n\n"), "~~~~\nx\n~~~~\n");
        assert_eq!(markdown_block("````\n```\n"), "````\n```\n````\n");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn hostile_imports_are_refused_with_one_line() {
        let (lib, d) = temp_lib("hostile");
        let ok = |msgs: &str| {
            format!(
                r#"{{"format":"unicorn-chat","version":1,"title":"t","model":"m","created_at":5,"messages":{msgs}}}"#
            )
        };
        let refused = |text: &str| {
            let e = lib.chat_import_json(text).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            e
        };
        assert!(refused("").contains("not a unicorn-chat JSON file"));
        assert!(refused("[1,2]").contains("not a unicorn-chat JSON file"));
        assert!(
            refused(r#"{"format":"other","version":1,"messages":[]}"#).contains("format \"other\"")
        );
        assert!(refused(r#"{"version":1,"messages":[]}"#).contains("no \"format\""));
        assert!(
            refused(r#"{"format":"unicorn-chat","version":2,"messages":[]}"#)
                .contains("version 2 is not supported")
        );
        assert!(
            refused(r#"{"format":"unicorn-chat","version":"1","messages":[]}"#).contains("version")
        );
        assert!(refused(r#"{"format":"unicorn-chat","version":1}"#).contains("\"messages\""));
        assert!(
            refused(&ok(r#"[{"role":"tool","content":"x"}]"#)).contains("message 1: role \"tool\"")
        );
        assert!(
            refused(&ok(r#"[{"role":"user","content":"a"},{"role":"user"}]"#))
                .contains("message 2: no \"content\"")
        );
        assert!(refused(&ok(r#"[{"role":"user","content":5}]"#)).contains("message 1"));
        assert!(refused(&ok(r#"[7]"#)).contains("message 1: not an object"));
        assert!(refused(&ok(
            r#"[{"role":"assistant","content":"x","stats":"fast"}]"#
        ))
        .contains("message 1: \"stats\""));
        let long = format!(
            r#"[{{"role":"user","content":"{}"}}]"#,
            "x".repeat(MAX_MESSAGE_BYTES + 1)
        );
        assert!(refused(&ok(&long)).contains("at most 4 MiB per message"));
        let many = format!(
            "[{}]",
            vec![r#"{"role":"user","content":""}"#; MAX_IMPORT_MESSAGES + 1].join(",")
        );
        assert!(refused(&ok(&many)).contains("at most 100000"));
        let huge = " ".repeat(MAX_IMPORT_BYTES + 1);
        assert!(refused(&huge).contains("at most 32 MiB"));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(refused(&deep).contains("not a unicorn-chat JSON file"));
        assert!(refused(&ok(r#"[]"#).replace("\"m\"", "[1]")).contains("\"model\""));
        assert!(
            lib.chats().unwrap().is_empty(),
            "nothing stored by a refusal"
        );

        // A title with control characters is cleaned; a missing one comes from the
        // first user message; unknown fields are ignored.
        let id = lib
            .chat_import_json(
                &ok(r#"[{"role":"user","content":"hi","extra":1}]"#).replace("\"t\"", "\"a\\nb\""),
            )
            .unwrap();
        assert_eq!(lib.chat_record(id).unwrap().unwrap().title, "a b");
        let id = lib
            .chat_import_json(r#"{"format":"unicorn-chat","version":1,"messages":[{"role":"system","content":"s"},{"role":"user","content":"Hello there"}]}"#)
            .unwrap();
        let r = lib.chat_record(id).unwrap().unwrap();
        assert_eq!((r.title.as_str(), r.messages), ("Hello there", 2));
        std::fs::remove_dir_all(&d).ok();
    }
}

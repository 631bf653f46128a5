//! Conversations kept in the library database (the app's chat history): each chat
//! belongs to a model, its messages are appended as they happen, and a reply keeps
//! the figures measured for it.

use crate::{sql, Library};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use unicorn_engine::stats::Stats;
use unicorn_engine::{Error, Result};

/// A stored conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ChatRecord {
    /// Its id.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub id: i64,
    /// The model it was held with (file or folder).
    pub model: String,
    /// The first user message, shortened.
    pub title: String,
    /// Unix time it began.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub created_at: i64,
    /// Messages stored.
    pub messages: usize,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct StoredMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Its text.
    pub content: String,
    /// For a reply: what it cost, as measured then.
    pub stats: Option<Stats>,
}

/// Titles are the first user message cut to this many characters.
const TITLE_CHARS: usize = 60;
/// Longest title a chat can be renamed to, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 500;
/// Most chats a search returns (the newest).
pub const MAX_SEARCH_RESULTS: usize = 200;

/// The columns of a [`ChatRecord`], for `FROM chats c`.
const RECORD_COLUMNS: &str = "c.id, c.model, c.title, c.created_at,
    (SELECT COUNT(*) FROM chat_messages m WHERE m.chat_id = c.id)";

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChatRecord> {
    Ok(ChatRecord {
        id: r.get(0)?,
        model: r.get(1)?,
        title: r.get(2)?,
        created_at: r.get(3)?,
        messages: r.get::<_, i64>(4)? as usize,
    })
}

/// `text` as a LIKE pattern that matches it anywhere, with `%`, `_` and the escape
/// character itself escaped (for `ESCAPE '\'`).
fn like_anywhere(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl Library {
    /// Starts a conversation with `model`, titled after `first_message`.
    pub fn chat_new(&self, model: &str, first_message: &str) -> Result<i64> {
        let mut title: String = first_message.trim().chars().take(TITLE_CHARS).collect();
        if first_message.trim().chars().count() > TITLE_CHARS {
            title.push('…');
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.conn
            .execute(
                "INSERT INTO chats (model, title, created_at) VALUES (?1, ?2, ?3)",
                params![model, title, now],
            )
            .map_err(sql(self.path()))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Appends a message to chat `id`.
    pub fn chat_append(
        &self,
        id: i64,
        role: &str,
        content: &str,
        stats: Option<&Stats>,
    ) -> Result<()> {
        let stats = stats.map(|s| serde_json::to_string(s).unwrap_or_default());
        self.conn
            .execute(
                "INSERT INTO chat_messages (chat_id, seq, role, content, stats)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), -1) + 1 FROM chat_messages WHERE chat_id = ?1), ?2, ?3, ?4)",
                params![id, role, content, stats],
            )
            .map_err(sql(self.path()))?;
        Ok(())
    }

    /// Every conversation, newest first.
    pub fn chats(&self) -> Result<Vec<ChatRecord>> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM chats c ORDER BY c.created_at DESC, c.id DESC"
            ))
            .map_err(sql(self.path()))?;
        let rows = st.query_map([], record).map_err(sql(self.path()))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(self.path()))
    }

    /// The listing row of conversation `id`, if it exists.
    pub fn chat_record(&self, id: i64) -> Result<Option<ChatRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {RECORD_COLUMNS} FROM chats c WHERE c.id = ?1"),
                params![id],
                record,
            )
            .optional()
            .map_err(sql(self.path()))
    }

    /// Conversations whose title or any message contains `query` (case-insensitive
    /// for ASCII letters; `%` and `_` match themselves), newest first, at most
    /// [`MAX_SEARCH_RESULTS`]. A blank query lists the newest conversations.
    pub fn chat_search(&self, query: &str) -> Result<Vec<ChatRecord>> {
        let q = query.trim();
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(Error::Invalid(format!(
                "search: longer than {MAX_QUERY_CHARS} characters"
            )));
        }
        let pattern = like_anywhere(q);
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM chats c
                 WHERE c.title LIKE ?1 ESCAPE '\\'
                    OR EXISTS (SELECT 1 FROM chat_messages m
                               WHERE m.chat_id = c.id AND m.content LIKE ?1 ESCAPE '\\')
                 ORDER BY c.created_at DESC, c.id DESC LIMIT ?2"
            ))
            .map_err(sql(self.path()))?;
        let rows = st
            .query_map(params![pattern, MAX_SEARCH_RESULTS as i64], record)
            .map_err(sql(self.path()))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(self.path()))
    }

    /// Renames conversation `id` (the title is trimmed; not blank, at most
    /// [`MAX_TITLE_CHARS`] characters, no control characters). Returns whether the
    /// conversation exists.
    pub fn chat_rename(&self, id: i64, title: &str) -> Result<bool> {
        let title = crate::settings::check_name("title", title, MAX_TITLE_CHARS)?;
        let n = self
            .conn
            .execute(
                "UPDATE chats SET title = ?2 WHERE id = ?1",
                params![id, title],
            )
            .map_err(sql(self.path()))?;
        Ok(n > 0)
    }

    /// Keeps the first `keep` messages of conversation `id` (in the order they were
    /// added) and deletes the rest (for regenerate, and edit and resend). Returns how
    /// many were deleted; later appends continue after the kept ones.
    pub fn chat_truncate(&self, id: i64, keep: usize) -> Result<usize> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let n = self
            .conn
            .execute(
                "DELETE FROM chat_messages WHERE chat_id = ?1 AND seq >=
                     (SELECT seq FROM chat_messages WHERE chat_id = ?1
                      ORDER BY seq LIMIT 1 OFFSET ?2)",
                params![id, keep],
            )
            .map_err(sql(self.path()))?;
        Ok(n)
    }

    /// The conversation `id` (none if it does not exist): its model and messages.
    pub fn chat(&self, id: i64) -> Result<Option<(String, Vec<StoredMessage>)>> {
        let model: Option<String> = self
            .conn
            .query_row("SELECT model FROM chats WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .ok();
        let Some(model) = model else {
            return Ok(None);
        };
        let mut st = self
            .conn
            .prepare(
                "SELECT role, content, stats FROM chat_messages WHERE chat_id = ?1 ORDER BY seq",
            )
            .map_err(sql(self.path()))?;
        let rows = st
            .query_map(params![id], |r| {
                let stats: Option<String> = r.get(2)?;
                Ok(StoredMessage {
                    role: r.get(0)?,
                    content: r.get(1)?,
                    stats: stats.and_then(|s| serde_json::from_str(&s).ok()),
                })
            })
            .map_err(sql(self.path()))?;
        let messages = rows
            .collect::<std::result::Result<_, _>>()
            .map_err(sql(self.path()))?;
        Ok(Some((model, messages)))
    }

    /// Deletes conversation `id`; returns whether there was one.
    pub fn chat_delete(&self, id: i64) -> Result<bool> {
        self.conn
            .execute("DELETE FROM chat_messages WHERE chat_id = ?1", params![id])
            .map_err(sql(self.path()))?;
        let n = self
            .conn
            .execute("DELETE FROM chats WHERE id = ?1", params![id])
            .map_err(sql(self.path()))?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chats_are_stored_listed_reopened_and_deleted() {
        let d = std::env::temp_dir().join(format!("unicorn-chats-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        let lib = Library::open(&d.join("library.sqlite3")).unwrap();
        let long = "x".repeat(100);
        let a = lib
            .chat_new("/m/a.gguf", "What is the capital of France?")
            .unwrap();
        let b = lib.chat_new("/m/b.gguf", &long).unwrap();
        lib.chat_append(a, "user", "What is the capital of France?", None)
            .unwrap();
        let stats = Stats {
            generated_tokens: 8,
            decode_tok_s: 180.5,
            ..Default::default()
        };
        lib.chat_append(a, "assistant", "Paris.", Some(&stats))
            .unwrap();
        let list = lib.chats().unwrap();
        assert_eq!(list.len(), 2);
        let ra = list.iter().find(|c| c.id == a).unwrap();
        assert_eq!(
            (ra.title.as_str(), ra.messages),
            ("What is the capital of France?", 2)
        );
        let rb = list.iter().find(|c| c.id == b).unwrap();
        assert_eq!(rb.title.chars().count(), TITLE_CHARS + 1);
        let (model, msgs) = lib.chat(a).unwrap().unwrap();
        assert_eq!(model, "/m/a.gguf");
        assert_eq!(msgs[1].content, "Paris.");
        assert_eq!(msgs[1].stats.as_ref(), Some(&stats));
        assert_eq!(msgs[0].stats, None);
        // Reopening the database keeps them.
        drop(lib);
        let lib = Library::open(&d.join("library.sqlite3")).unwrap();
        assert_eq!(lib.chat(a).unwrap().unwrap().1.len(), 2);
        assert!(lib.chat_delete(a).unwrap());
        assert!(lib.chat(a).unwrap().is_none());
        assert!(!lib.chat_delete(a).unwrap());
        std::fs::remove_dir_all(&d).ok();
    }

    fn temp_lib(name: &str) -> (Library, std::path::PathBuf) {
        let d = std::env::temp_dir().join(format!("unicorn-chats-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        (Library::open(&d.join("library.sqlite3")).unwrap(), d)
    }

    #[test]
    fn truncate_keeps_the_first_messages_and_appends_continue() {
        let (lib, d) = temp_lib("truncate");
        let a = lib.chat_new("/m/a.gguf", "one").unwrap();
        let other = lib.chat_new("/m/a.gguf", "other").unwrap();
        for (role, text) in [
            ("system", "sys"),
            ("user", "one"),
            ("assistant", "1"),
            ("user", "two"),
            ("assistant", "2"),
        ] {
            lib.chat_append(a, role, text, None).unwrap();
            lib.chat_append(other, role, text, None).unwrap();
        }
        let contents = |id| {
            lib.chat(id)
                .unwrap()
                .unwrap()
                .1
                .into_iter()
                .map(|m| m.content)
                .collect::<Vec<_>>()
        };
        // Regenerate the last reply: drop it.
        assert_eq!(lib.chat_truncate(a, 4).unwrap(), 1);
        lib.chat_append(a, "assistant", "2b", None).unwrap();
        assert_eq!(contents(a), ["sys", "one", "1", "two", "2b"]);
        // Edit the first user turn: keep the system prompt only.
        assert_eq!(lib.chat_truncate(a, 1).unwrap(), 4);
        lib.chat_append(a, "user", "uno", None).unwrap();
        assert_eq!(contents(a), ["sys", "uno"]);
        // Keeping as many as there are, or more, deletes nothing; 0 deletes all.
        assert_eq!(lib.chat_truncate(a, 2).unwrap(), 0);
        assert_eq!(lib.chat_truncate(a, 99).unwrap(), 0);
        assert_eq!(lib.chat_truncate(a, usize::MAX).unwrap(), 0);
        assert_eq!(lib.chat_truncate(a, 0).unwrap(), 2);
        assert!(contents(a).is_empty());
        assert_eq!(lib.chat_truncate(12345, 0).unwrap(), 0);
        // The other conversation is untouched.
        assert_eq!(contents(other).len(), 5);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn chats_are_renamed_and_searched() {
        let (lib, d) = temp_lib("search");
        let a = lib.chat_new("/m/a.gguf", "Capital of France?").unwrap();
        lib.chat_append(a, "user", "Capital of France?", None)
            .unwrap();
        lib.chat_append(a, "assistant", "Paris, 100% sure.", None)
            .unwrap();
        let b = lib.chat_new("/m/b.gguf", "A haiku").unwrap();
        lib.chat_append(b, "user", "A haiku about snake_case", None)
            .unwrap();
        let ids = |q: &str| {
            lib.chat_search(q)
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("paris"), [a], "message contents, any case");
        assert_eq!(ids("HAIKU"), [b], "titles");
        assert_eq!(ids("100%"), [a]);
        assert!(ids("100%x").is_empty(), "% matches itself only");
        assert_eq!(ids("snake_case"), [b]);
        assert!(ids("snakeXcase").is_empty(), "_ matches itself only");
        assert!(ids("no such words").is_empty());
        assert!(ids(r"\").is_empty());
        assert_eq!(ids("").len(), 2, "blank: the newest");
        assert_eq!(ids("").first(), Some(&b));
        assert!(lib.chat_search(&"q".repeat(501)).is_err());

        assert!(lib.chat_rename(a, "  France  ").unwrap());
        assert_eq!(lib.chat_record(a).unwrap().unwrap().title, "France");
        assert_eq!(lib.chat_record(a).unwrap().unwrap().messages, 2);
        assert_eq!(ids("france"), [a]);
        assert!(!lib.chat_rename(999, "x").unwrap());
        for bad in ["", "   ", "two\nlines", "tab\there", &"t".repeat(201)] {
            let e = lib.chat_rename(a, bad).unwrap_err().to_string();
            assert!(e.starts_with("title: "), "{bad:?}: {e}");
        }
        assert!(lib.chat_rename(a, &"t".repeat(200)).unwrap());
        std::fs::remove_dir_all(&d).ok();
    }
}

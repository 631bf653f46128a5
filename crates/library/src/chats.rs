//! Conversations kept in the library database (the app's chat history): each chat
//! belongs to a model, its messages are appended as they happen, and a reply keeps
//! the figures measured for it.

use crate::{sql, Library};
use rusqlite::params;
use serde::Serialize;
use unicorn_engine::stats::Stats;
use unicorn_engine::Result;

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
            .prepare(
                "SELECT c.id, c.model, c.title, c.created_at,
                        (SELECT COUNT(*) FROM chat_messages m WHERE m.chat_id = c.id)
                 FROM chats c ORDER BY c.created_at DESC, c.id DESC",
            )
            .map_err(sql(self.path()))?;
        let rows = st
            .query_map([], |r| {
                Ok(ChatRecord {
                    id: r.get(0)?,
                    model: r.get(1)?,
                    title: r.get(2)?,
                    created_at: r.get(3)?,
                    messages: r.get::<_, i64>(4)? as usize,
                })
            })
            .map_err(sql(self.path()))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(self.path()))
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
}

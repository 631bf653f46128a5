//! The chat history in the library database: which model the main chat worker
//! holds, which stored conversation the next turn continues, and the sink wrapper
//! that stores each reply with its measured figures. Messages' images are kept
//! beside the database ([`ImageStore`]), following their messages.

use super::images::{Attachment, ImageStore};
use super::types::ChatEvent;
use crate::jobs::Sink;
use std::path::PathBuf;
use std::sync::Mutex;

/// The chat history in the library database: which model the worker holds, which
/// stored conversation the next turn continues, and the wrapper that stores replies.
pub struct History {
    db: PathBuf,
    images: ImageStore,
    state: Mutex<(Option<String>, Option<i64>)>,
}

impl History {
    /// History kept in the library database at `db`, messages' images under
    /// `images`.
    pub fn new(db: PathBuf, images: PathBuf) -> Self {
        Self {
            db,
            images: ImageStore::new(images),
            state: Mutex::new((None, None)),
        }
    }

    /// The stored messages' images.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<String>, Option<i64>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn library(&self) -> Result<unicorn_library::Library, String> {
        unicorn_library::Library::open(&self.db).map_err(|e| e.to_string())
    }

    /// The worker now holds `model`; the next turn starts a new conversation.
    pub fn loaded(&self, model: &str) {
        *self.lock() = (Some(model.to_string()), None);
    }

    /// The next turn starts a new conversation.
    pub fn reset(&self) {
        self.lock().1 = None;
    }

    /// The next turn continues stored conversation `id`.
    pub fn continue_chat(&self, id: i64) {
        self.lock().1 = Some(id);
    }

    /// Conversation `id` was deleted: the next turn must not continue it.
    pub fn forget(&self, id: i64) {
        let mut st = self.lock();
        if st.1 == Some(id) {
            st.1 = None;
        }
    }

    /// Stores the user's turn with its images (and the system prompt, on a new
    /// conversation); returns the conversation's id.
    pub fn begin(
        &self,
        system: Option<&str>,
        user: &str,
        images: &[Attachment],
    ) -> Result<i64, String> {
        let mut st = self.lock();
        let model =
            st.0.clone()
                .ok_or("no model is loaded: pick one in the library first")?;
        let lib = self.library()?;
        let (id, new) = match st.1 {
            Some(id) => (id, false),
            None => {
                // A message of images alone is titled by their names.
                let title = match user.trim() {
                    "" => images
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    _ => user.to_string(),
                };
                let id = lib.chat_new(&model, &title).map_err(|e| e.to_string())?;
                if let Some(s) = system.filter(|s| !s.trim().is_empty()) {
                    lib.chat_append(id, "system", s, None)
                        .map_err(|e| e.to_string())?;
                }
                (id, true)
            }
        };
        // The images first: a message is stored only with all of its images.
        let stored = lib
            .chat_record(id)
            .map_err(|e| e.to_string())
            .and_then(|r| r.ok_or_else(|| format!("stored chat {id} is gone")))
            .and_then(|r| {
                // A new chat's id may be a deleted one's: none of its images may show.
                if new {
                    self.images.delete(id)?;
                }
                self.images.save(id, r.messages, images)?;
                lib.chat_append(id, "user", user, None).map_err(|e| {
                    let _ = self.images.truncate(id, r.messages);
                    e.to_string()
                })
            });
        match stored {
            Ok(()) => {
                st.1 = Some(id);
                Ok(id)
            }
            Err(e) => {
                // A new chat without its first message is no chat at all.
                if new {
                    let _ = lib.chat_delete(id);
                    let _ = self.images.delete(id);
                }
                Err(e)
            }
        }
    }

    /// The stored conversation without its last reply, which is being sampled again;
    /// returns its id.
    pub fn regenerate(&self) -> Result<i64, String> {
        let (id, lib, messages) = self.current()?;
        let keep = match messages.last() {
            Some(m) if m.role == "assistant" => messages.len() - 1,
            _ => messages.len(),
        };
        lib.chat_truncate(id, keep).map_err(|e| e.to_string())?;
        self.images.truncate(id, keep)?;
        Ok(id)
    }

    /// The stored conversation up to message `index`, which becomes `text` (without
    /// the images it had: the engine's edit sends the new text alone); returns its
    /// id.
    pub fn edit(&self, index: usize, text: &str) -> Result<i64, String> {
        let (id, lib, messages) = self.current()?;
        if messages.get(index).is_none_or(|m| m.role != "user") {
            return Err(format!(
                "message {index} is not a user message of this chat"
            ));
        }
        lib.chat_truncate(id, index).map_err(|e| e.to_string())?;
        self.images.truncate(id, index)?;
        lib.chat_append(id, "user", text, None)
            .map_err(|e| e.to_string())?;
        Ok(id)
    }

    /// The conversation the next turn continues, and its stored messages.
    fn current(
        &self,
    ) -> Result<
        (
            i64,
            unicorn_library::Library,
            Vec<unicorn_library::chats::StoredMessage>,
        ),
        String,
    > {
        let id = self
            .lock()
            .1
            .ok_or("there is no conversation to change yet")?;
        let lib = self.library()?;
        let (_, messages) = lib
            .chat(id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("stored chat {id} is gone"))?;
        Ok((id, lib, messages))
    }

    /// `inner`, also storing the reply in conversation `id` when it is done.
    pub fn storing(&self, id: i64, inner: Sink<ChatEvent>) -> Sink<ChatEvent> {
        let db = self.db.clone();
        let text = Mutex::new(String::new());
        Box::new(move |e: ChatEvent| {
            match &e {
                ChatEvent::Token { text: t } => {
                    if let Ok(mut s) = text.lock() {
                        s.push_str(t);
                    }
                }
                ChatEvent::Done { stats, .. } => {
                    let reply = text.lock().map(|s| s.clone()).unwrap_or_default();
                    let stored = unicorn_library::Library::open(&db)
                        .and_then(|lib| lib.chat_append(id, "assistant", &reply, Some(stats)));
                    if let Err(err) = stored {
                        inner(ChatEvent::Error {
                            message: format!("the reply was not saved: {err}"),
                        });
                    }
                }
                ChatEvent::Error { .. } => {}
            }
            inner(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::types::ChatSettings;
    use crate::chat::worker::tests::{demo, load, reply};
    use crate::chat::worker::ChatWorker;
    use std::sync::mpsc::channel;
    use unicorn_engine::Message;

    /// A turn is stored with its reply and measured figures; the stored conversation
    /// reopened in a fresh worker continues with its history in the prompt.
    #[test]
    fn conversations_are_stored_and_continue_after_reopening() {
        let d = std::env::temp_dir().join(format!("unicorn-history-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        let db = d.join("library.sqlite3");
        let history = History::new(db.clone(), d.join("chat-images"));
        let w = ChatWorker::new();
        assert!(history.begin(None, "hello", &[]).is_err(), "no model yet");
        let s = load(&w, demo()).unwrap();
        history.loaded(&s.path);
        let say_stored = |w: &ChatWorker, text: &str| {
            let id = history.begin(Some("Answer briefly."), text, &[]).unwrap();
            let (tx, rx) = channel();
            let sink = history.storing(
                id,
                Box::new(move |e| {
                    let _ = tx.send(e);
                }),
            );
            let settings = ChatSettings {
                temperature: Some(0.0),
                max_tokens: Some(24),
                ..Default::default()
            };
            w.say(
                crate::chat::types::Turn::New {
                    text: text.into(),
                    system: Some("Answer briefly.".into()),
                    images: Vec::new(),
                },
                settings,
                Vec::new(),
                sink,
            )
            .unwrap();
            (id, reply(&rx))
        };
        let (id, (text, _)) = say_stored(&w, "What is the capital of France?");
        let lib = unicorn_library::Library::open(&db).unwrap();
        let (model, stored) = lib.chat(id).unwrap().unwrap();
        assert_eq!(model, s.path);
        let roles: Vec<&str> = stored.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant"]);
        assert_eq!(stored[2].content, text);
        assert!(stored[2].stats.as_ref().unwrap().decode_tok_s > 0.0);

        // A fresh worker (the app restarted): restore, then continue.
        let w2 = ChatWorker::new();
        load(&w2, demo()).unwrap();
        let history_messages = stored
            .iter()
            .map(|m| Message {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect();
        let (tx, rx) = channel();
        w2.restore(history_messages, Vec::new(), tx).unwrap();
        rx.recv().unwrap().unwrap();
        history.continue_chat(id);
        let (same, (_, done)) = say_stored(&w2, "And of Germany?");
        assert_eq!(same, id);
        let ChatEvent::Done { stats, .. } = done else {
            panic!("{done:?}")
        };
        // The whole history is in the prompt, computed once (the cache was empty).
        assert!(
            stats.prompt_tokens > 40,
            "{} prompt tokens",
            stats.prompt_tokens
        );
        assert_eq!(stats.prefill_tokens, stats.prompt_tokens);
        assert_eq!(lib.chat(id).unwrap().unwrap().1.len(), 5);
        assert_eq!(lib.chats().unwrap().len(), 1);
        std::fs::remove_dir_all(&d).ok();
    }
}

//! The chat worker: one thread owns the loaded model and its conversation (the
//! engine's `ChatSession` borrows the model, so both live on that thread's stack)
//! and serves requests in order. Heavy work never runs on the async runtime.

use crate::events::{ChatEvent, ChatSettings, LoadEvent, LoadedSummary};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use unicorn_engine::device::DeviceChoice;
use unicorn_engine::session::{GenerationParams, LoadOptions, LoadedModel};
use unicorn_engine::template::Message;

/// Where the worker's events go: a Tauri channel in the app, a closure in tests.
pub type Sink = Box<dyn Fn(ChatEvent) + Send>;

enum Request {
    Load {
        path: PathBuf,
        device: DeviceChoice,
        progress: Box<dyn Fn(LoadEvent) + Send>,
        reply: Sender<Result<LoadedSummary, String>>,
    },
    Send {
        user: String,
        system: Option<String>,
        settings: ChatSettings,
        sink: Sink,
    },
    Reset,
    Restore(Vec<Message>),
    Unload,
}

/// Handle to the worker thread.
pub struct ChatWorker {
    tx: Mutex<Sender<Request>>,
    stop: Arc<AtomicBool>,
    cancel_load: Arc<AtomicBool>,
}

impl Default for ChatWorker {
    fn default() -> Self {
        Self::new()
    }
}

impl ChatWorker {
    /// Starts the thread (it holds no model yet).
    pub fn new() -> Self {
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let cancel_load = Arc::new(AtomicBool::new(false));
        let (flag, cancel) = (stop.clone(), cancel_load.clone());
        std::thread::Builder::new()
            .name("unicorn-chat".into())
            .spawn(move || serve(rx, flag, cancel))
            .expect("the chat thread starts");
        Self {
            tx: Mutex::new(tx),
            stop,
            cancel_load,
        }
    }

    fn send(&self, r: Request) -> Result<(), String> {
        self.tx
            .lock()
            .map_err(|_| "the chat worker is gone".to_string())?
            .send(r)
            .map_err(|_| "the chat worker stopped".to_string())
    }

    /// Queues a load; its progress goes to `progress`, the outcome to `reply`.
    pub fn load_async(
        &self,
        path: PathBuf,
        device: DeviceChoice,
        progress: Box<dyn Fn(LoadEvent) + Send>,
        reply: Sender<Result<LoadedSummary, String>>,
    ) -> Result<(), String> {
        self.stop();
        self.cancel_load.store(false, Ordering::SeqCst);
        self.send(Request::Load {
            path,
            device,
            progress,
            reply,
        })
    }

    /// Cancels the load in progress (it ends with a "cancelled" error; the model held
    /// before it is gone either way).
    pub fn cancel_load(&self) {
        self.cancel_load.store(true, Ordering::SeqCst);
    }

    /// Queues the next user turn; the reply streams to `sink`.
    pub fn say(
        &self,
        user: String,
        system: Option<String>,
        settings: ChatSettings,
        sink: Sink,
    ) -> Result<(), String> {
        self.stop.store(false, Ordering::SeqCst);
        self.send(Request::Send {
            user,
            system,
            settings,
            sink,
        })
    }

    /// Stops the reply being generated (it ends with `stop_reason: cancelled`).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Continues a stored conversation with the loaded model.
    pub fn restore(&self, messages: Vec<Message>) -> Result<(), String> {
        self.send(Request::Restore(messages))
    }

    /// Starts a new conversation with the same model.
    pub fn reset(&self) -> Result<(), String> {
        self.send(Request::Reset)
    }

    /// Frees the model (the next turn is refused until another is loaded).
    pub fn unload(&self) -> Result<(), String> {
        self.stop();
        self.send(Request::Unload)
    }
}

fn serve(rx: Receiver<Request>, stop: Arc<AtomicBool>, cancel_load: Arc<AtomicBool>) {
    let mut next: Option<Request> = None;
    loop {
        let Some(request) = next.take().or_else(|| rx.recv().ok()) else {
            return;
        };
        match request {
            Request::Load {
                path,
                device,
                progress,
                reply,
            } => {
                let t0 = std::time::Instant::now();
                let opts = LoadOptions {
                    device,
                    ..Default::default()
                };
                let cancel = cancel_load.clone();
                // At most one event per percent, and the last.
                let mut shown = u64::MAX;
                let report = Box::new(move |done: u64, total: u64| {
                    let percent = done * 100 / total.max(1);
                    if percent != shown || done == total {
                        shown = percent;
                        progress(LoadEvent::Progress {
                            bytes_done: done,
                            bytes_total: total,
                        });
                    }
                    !cancel.load(Ordering::SeqCst)
                });
                let loaded = LoadedModel::load_with_progress(&path, &opts, report).and_then(|m| {
                    let info = unicorn_engine::info::inspect(&path, Some(1))?;
                    let q = unicorn_engine::library::quantization_of(&path, &info)?;
                    Ok((m, info, q))
                });
                let (model, info, quantization) = match loaded {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                        continue;
                    }
                };
                let _ = reply.send(Ok(LoadedSummary {
                    path: path.display().to_string(),
                    architecture: model.config().architecture().to_string(),
                    weights_bytes: model.model().weight_bytes().total as u64,
                    parameters: info.parameters,
                    quantization,
                    bits_per_weight: info.bits_per_weight,
                    file_bytes: info.file_bytes,
                    device: model.placement().label.clone(),
                    device_note: model.placement().fallback.clone(),
                    context_length: model.config().context_length(),
                    has_chat_template: model.has_chat_template(),
                    load_ms: t0.elapsed().as_secs_f64() * 1e3,
                }));
                let mut session = model.chat_session();
                // Serve this model until another is asked for.
                while let Ok(r) = rx.recv() {
                    match r {
                        Request::Load { .. } => {
                            next = Some(r);
                            break;
                        }
                        Request::Reset => session.reset(),
                        Request::Restore(messages) => session.restore(messages),
                        Request::Unload => break,
                        Request::Send {
                            user,
                            system,
                            settings,
                            sink,
                        } => {
                            let mut turn = Vec::new();
                            if session.messages().is_empty() {
                                if let Some(s) = system.filter(|s| !s.trim().is_empty()) {
                                    turn.push(Message::system(s));
                                }
                            }
                            turn.push(Message::user(user));
                            let params = params(&model, &settings);
                            let mut on_token = |t: &unicorn_engine::session::TokenEvent| {
                                if !t.text.is_empty() {
                                    sink(ChatEvent::Token {
                                        text: t.text.clone(),
                                    });
                                }
                                !stop.load(Ordering::SeqCst)
                            };
                            match session.send(&turn, &params, &mut on_token) {
                                Ok(reply) => sink(ChatEvent::Done {
                                    stop_reason: serde_json::to_value(reply.stop_reason)
                                        .ok()
                                        .and_then(|v| v.as_str().map(str::to_string))
                                        .unwrap_or_default(),
                                    stats: reply.stats,
                                }),
                                Err(e) => sink(ChatEvent::Error {
                                    message: e.to_string(),
                                }),
                            }
                        }
                    }
                }
            }
            Request::Send { sink, .. } => sink(ChatEvent::Error {
                message: "no model is loaded: pick one in the library first".into(),
            }),
            Request::Reset | Request::Restore(_) | Request::Unload => {}
        }
    }
}

/// The model's recommended sampling, overridden by what the user set.
fn params(model: &LoadedModel, s: &ChatSettings) -> GenerationParams {
    let mut p = GenerationParams::greedy(s.max_tokens.unwrap_or(512));
    if let Some(d) = model.default_sampling() {
        p.sampling = d.clone();
    } else {
        p.sampling = Default::default();
    }
    if let Some(t) = s.temperature {
        p.sampling.temperature = t;
    }
    if let Some(k) = s.top_k {
        p.sampling.top_k = k;
    }
    if let Some(v) = s.top_p {
        p.sampling.top_p = v;
    }
    if let Some(seed) = s.seed {
        p.sampling.seed = seed;
    }
    p
}

/// The chat history in the library database: which model the worker holds, which
/// stored conversation the next turn continues, and the wrapper that stores replies.
pub struct History {
    db: PathBuf,
    state: Mutex<(Option<String>, Option<i64>)>,
}

impl History {
    /// History kept in the library database at `db`.
    pub fn new(db: PathBuf) -> Self {
        Self {
            db,
            state: Mutex::new((None, None)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<String>, Option<i64>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn library(&self) -> Result<unicorn_engine::library::Library, String> {
        unicorn_engine::library::Library::open(&self.db).map_err(|e| e.to_string())
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

    /// Stores the user's turn (and the system prompt, on a new conversation); returns
    /// the conversation's id.
    pub fn begin(&self, system: Option<&str>, user: &str) -> Result<i64, String> {
        let mut st = self.lock();
        let model =
            st.0.clone()
                .ok_or("no model is loaded: pick one in the library first")?;
        let lib = self.library()?;
        let id = match st.1 {
            Some(id) => id,
            None => {
                let id = lib.chat_new(&model, user).map_err(|e| e.to_string())?;
                if let Some(s) = system.filter(|s| !s.trim().is_empty()) {
                    lib.chat_append(id, "system", s, None)
                        .map_err(|e| e.to_string())?;
                }
                st.1 = Some(id);
                id
            }
        };
        lib.chat_append(id, "user", user, None)
            .map_err(|e| e.to_string())?;
        Ok(id)
    }

    /// `inner`, also storing the reply in conversation `id` when it is done.
    pub fn storing(&self, id: i64, inner: Sink) -> Sink {
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
                    let stored = unicorn_engine::library::Library::open(&db)
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
    use std::sync::mpsc::Receiver;
    use std::time::Duration;

    fn demo() -> PathBuf {
        crate::commands::demo_model_path()
            .expect("demo model missing: run scripts/fetch-test-models")
            .into()
    }

    fn load(w: &ChatWorker, path: PathBuf) -> Result<LoadedSummary, String> {
        let (tx, rx) = channel();
        w.load_async(path, DeviceChoice::Auto, Box::new(|_| {}), tx)?;
        rx.recv().unwrap()
    }

    fn say(w: &ChatWorker, text: &str, max_tokens: usize) -> Receiver<ChatEvent> {
        let (tx, rx) = channel();
        let settings = ChatSettings {
            temperature: Some(0.0),
            max_tokens: Some(max_tokens),
            ..Default::default()
        };
        w.say(
            text.into(),
            None,
            settings,
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        )
        .unwrap();
        rx
    }

    /// Tokens until `Done`; the text and the final event.
    fn reply(rx: &Receiver<ChatEvent>) -> (String, ChatEvent) {
        let mut text = String::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(120)).expect("an event") {
                ChatEvent::Token { text: t } => text.push_str(&t),
                done => return (text, done),
            }
        }
    }

    #[test]
    fn chats_over_turns_on_the_cache_and_stops_when_asked() {
        let w = ChatWorker::new();
        let s = load(&w, demo()).unwrap();
        assert_eq!(s.architecture, "llama");
        assert!(s.has_chat_template && s.weights_bytes > 50 << 20);
        assert_eq!(s.quantization, "Q4_1");
        assert!(
            (4.5..6.0).contains(&s.bits_per_weight) && s.parameters > 100_000_000,
            "{s:?}"
        );

        let (text, done) = reply(&say(&w, "What is the capital of France?", 24));
        assert!(text.contains("Paris"), "{text}");
        let ChatEvent::Done { stop_reason, stats } = done else {
            panic!("{done:?}")
        };
        assert_eq!(stop_reason, "eos");
        assert!(stats.decode_tok_s > 0.0 && stats.ttft_ms > 0.0);

        // The second turn reuses the first turn's cache.
        let (_, done) = reply(&say(&w, "And of Germany?", 24));
        let ChatEvent::Done { stats, .. } = done else {
            panic!("{done:?}")
        };
        assert!(
            stats.prefill_tokens < stats.prompt_tokens,
            "{} of {} prompt tokens computed again",
            stats.prefill_tokens,
            stats.prompt_tokens
        );

        // Stop: a long reply ends early with `cancelled`.
        let rx = say(&w, "Write a long story about a dragon.", 400);
        let first = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert!(matches!(first, ChatEvent::Token { .. }), "{first:?}");
        w.stop();
        let (_, done) = reply(&rx);
        let ChatEvent::Done { stop_reason, stats } = done else {
            panic!("{done:?}")
        };
        assert_eq!(stop_reason, "cancelled");
        assert!(stats.generated_tokens < 400);
    }

    /// A turn is stored with its reply and measured figures; the stored conversation
    /// reopened in a fresh worker continues with its history in the prompt.
    #[test]
    fn conversations_are_stored_and_continue_after_reopening() {
        let d = std::env::temp_dir().join(format!("unicorn-history-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        let db = d.join("library.sqlite3");
        let history = History::new(db.clone());
        let w = ChatWorker::new();
        assert!(history.begin(None, "hello").is_err(), "no model yet");
        let s = load(&w, demo()).unwrap();
        history.loaded(&s.path);
        let say_stored = |w: &ChatWorker, text: &str| {
            let id = history.begin(Some("Answer briefly."), text).unwrap();
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
            w.say(text.into(), Some("Answer briefly.".into()), settings, sink)
                .unwrap();
            (id, reply(&rx))
        };
        let (id, (text, _)) = say_stored(&w, "What is the capital of France?");
        let lib = unicorn_engine::library::Library::open(&db).unwrap();
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
        w2.restore(history_messages).unwrap();
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

    /// Loading streams its progress up to the weights' bytes, and can be cancelled;
    /// the worker loads again afterwards.
    #[test]
    fn loading_reports_progress_and_can_be_cancelled() {
        let w = Arc::new(ChatWorker::new());
        let (ptx, prx) = channel();
        let (tx, rx) = channel();
        w.load_async(
            demo(),
            DeviceChoice::Cpu,
            Box::new(move |e| {
                let _ = ptx.send(e);
            }),
            tx,
        )
        .unwrap();
        let loaded = rx.recv().unwrap().unwrap();
        let events: Vec<(u64, u64)> = prx
            .try_iter()
            .map(
                |LoadEvent::Progress {
                     bytes_done,
                     bytes_total,
                 }| (bytes_done, bytes_total),
            )
            .collect();
        assert!(events.len() >= 10, "{} events", events.len());
        assert!(events.len() <= 101, "at most one per percent");
        assert_eq!(
            *events.last().unwrap(),
            (loaded.weights_bytes, loaded.weights_bytes)
        );

        let (tx, rx) = channel();
        let canceller = w.clone();
        w.load_async(
            demo(),
            DeviceChoice::Cpu,
            Box::new(move |_| canceller.cancel_load()),
            tx,
        )
        .unwrap();
        let e = rx.recv().unwrap().unwrap_err();
        assert_eq!(e, "cancelled");
        assert!(load(&w, demo()).is_ok());
    }

    #[test]
    fn a_bad_model_or_no_model_is_an_error_not_a_panic() {
        let w = ChatWorker::new();
        let (_, done) = reply(&say(&w, "hello", 4));
        assert!(
            matches!(&done, ChatEvent::Error { message } if message.contains("no model")),
            "{done:?}"
        );
        let bad =
            std::env::temp_dir().join(format!("unicorn-chat-bad-{}.gguf", std::process::id()));
        std::fs::write(&bad, b"GGUF but not really").unwrap();
        let e = load(&w, bad.clone()).unwrap_err();
        assert!(e.contains("unicorn-chat-bad"), "{e}");
        std::fs::remove_file(&bad).ok();
        // The worker still serves after a failed load.
        assert!(load(&w, demo()).is_ok());
    }
}

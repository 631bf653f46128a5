//! The chat worker: one thread owns the loaded model and its conversation (the
//! engine's `ChatSession` borrows the model, so both live on that thread's stack)
//! and serves requests in order. Heavy work never runs on the async runtime.

use crate::events::{ChatEvent, ChatSettings, LoadedSummary};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use unicorn_engine::session::{GenerationParams, LoadOptions, LoadedModel};
use unicorn_engine::template::Message;

/// Where the worker's events go: a Tauri channel in the app, a closure in tests.
pub type Sink = Box<dyn Fn(ChatEvent) + Send>;

enum Request {
    Load {
        path: PathBuf,
        reply: Sender<Result<LoadedSummary, String>>,
    },
    Send {
        user: String,
        system: Option<String>,
        settings: ChatSettings,
        sink: Sink,
    },
    Reset,
}

/// Handle to the worker thread.
pub struct ChatWorker {
    tx: Mutex<Sender<Request>>,
    stop: Arc<AtomicBool>,
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
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("unicorn-chat".into())
            .spawn(move || serve(rx, flag))
            .expect("the chat thread starts");
        Self {
            tx: Mutex::new(tx),
            stop,
        }
    }

    fn send(&self, r: Request) -> Result<(), String> {
        self.tx
            .lock()
            .map_err(|_| "the chat worker is gone".to_string())?
            .send(r)
            .map_err(|_| "the chat worker stopped".to_string())
    }

    /// Queues a load; the outcome arrives on `reply`.
    pub fn load_async(
        &self,
        path: PathBuf,
        reply: Sender<Result<LoadedSummary, String>>,
    ) -> Result<(), String> {
        self.stop();
        self.send(Request::Load { path, reply })
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

    /// Starts a new conversation with the same model.
    pub fn reset(&self) -> Result<(), String> {
        self.send(Request::Reset)
    }
}

fn serve(rx: Receiver<Request>, stop: Arc<AtomicBool>) {
    let mut next: Option<Request> = None;
    loop {
        let Some(request) = next.take().or_else(|| rx.recv().ok()) else {
            return;
        };
        match request {
            Request::Load { path, reply } => {
                let t0 = std::time::Instant::now();
                let model = match LoadedModel::load(&path, &LoadOptions::default()) {
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
            Request::Reset => {}
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
        w.load_async(path, tx)?;
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

//! The chat worker: one thread owns the loaded model and its conversation (the
//! engine's `ChatSession` borrows the model, so both live on that thread's stack)
//! and serves requests in order. Heavy work never runs on the async runtime.

use super::types::{
    ChatEvent, ChatSettings, ContextEstimate, ImageLimits, LoadEvent, LoadedSummary, Turn,
};
use crate::jobs::Sink;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use unicorn_engine::sampler::SamplingOverrides;
use unicorn_engine::session::{GenerationParams, LoadOptions, LoadedModel};
use unicorn_engine::template::Message;
use unicorn_engine::vision::Image;
use unicorn_engine::SamplingParams;

enum Request {
    Load {
        path: PathBuf,
        opts: LoadOptions,
        progress: Box<dyn Fn(LoadEvent) + Send>,
        reply: Sender<Result<LoadedSummary, String>>,
    },
    /// Decode and preprocess images (name, file bytes) for the held model.
    Prepare {
        images: Vec<(String, Arc<[u8]>)>,
        reply: Sender<Result<Vec<Image>, String>>,
    },
    Send {
        turn: Turn,
        settings: ChatSettings,
        /// The images of a new message, prepared for the held model.
        images: Vec<Image>,
        sink: Sink<ChatEvent>,
    },
    Reset,
    /// Continue a stored conversation: its messages (one image marker per image
    /// where a message shows it) and those images (name, file bytes), in order.
    Restore {
        messages: Vec<Message>,
        images: Vec<(String, Arc<[u8]>)>,
        reply: Sender<Result<(), String>>,
    },
    Unload,
}

/// Handle to the worker thread.
pub struct ChatWorker {
    tx: Mutex<Sender<Request>>,
    stop: Arc<AtomicBool>,
    cancel_load: Arc<AtomicBool>,
    /// The file or folder of the model the thread holds (for deleting a model).
    held: Arc<Mutex<Option<PathBuf>>>,
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
        let held = Arc::new(Mutex::new(None));
        let (flag, cancel, holds) = (stop.clone(), cancel_load.clone(), held.clone());
        std::thread::Builder::new()
            .name("unicorn-chat".into())
            .spawn(move || serve(rx, flag, cancel, holds))
            .expect("the chat thread starts");
        Self {
            tx: Mutex::new(tx),
            stop,
            cancel_load,
            held,
        }
    }

    /// The model the thread holds, if any.
    pub fn held(&self) -> Option<PathBuf> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
        opts: LoadOptions,
        progress: Box<dyn Fn(LoadEvent) + Send>,
        reply: Sender<Result<LoadedSummary, String>>,
    ) -> Result<(), String> {
        self.stop();
        self.cancel_load.store(false, Ordering::SeqCst);
        self.send(Request::Load {
            path,
            opts,
            progress,
            reply,
        })
    }

    /// Cancels the load in progress (it ends with a "cancelled" error; the model held
    /// before it is gone either way).
    pub fn cancel_load(&self) {
        self.cancel_load.store(true, Ordering::SeqCst);
    }

    /// Queues decoding `images` (name, file bytes) for the held model; the images,
    /// or the first one's error naming it (not an image, no vision tower), go to
    /// `reply`.
    pub fn prepare_async(
        &self,
        images: Vec<(String, Arc<[u8]>)>,
        reply: Sender<Result<Vec<Image>, String>>,
    ) -> Result<(), String> {
        self.send(Request::Prepare { images, reply })
    }

    /// Queues the next turn, with the images of a new message ([`Self::prepare_async`]);
    /// the reply streams to `sink`.
    pub fn say(
        &self,
        turn: Turn,
        settings: ChatSettings,
        images: Vec<Image>,
        sink: Sink<ChatEvent>,
    ) -> Result<(), String> {
        self.stop.store(false, Ordering::SeqCst);
        self.send(Request::Send {
            turn,
            settings,
            images,
            sink,
        })
    }

    /// Stops the reply being generated (it ends with `stop_reason: cancelled`).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Continues a stored conversation with the loaded model: `messages` hold one
    /// [`unicorn_engine::vision::MARKER`] per image where they show it, `images` are
    /// those images (name, file bytes) in order. Whether the model has the images
    /// again goes to `reply`: when it cannot take them, it continues with the text
    /// and the error says why.
    pub fn restore(
        &self,
        messages: Vec<Message>,
        images: Vec<(String, Arc<[u8]>)>,
        reply: Sender<Result<(), String>>,
    ) -> Result<(), String> {
        self.send(Request::Restore {
            messages,
            images,
            reply,
        })
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

fn serve(
    rx: Receiver<Request>,
    stop: Arc<AtomicBool>,
    cancel_load: Arc<AtomicBool>,
    held: Arc<Mutex<Option<PathBuf>>>,
) {
    let hold = |p: Option<PathBuf>| *held.lock().unwrap_or_else(|e| e.into_inner()) = p;
    let mut next: Option<Request> = None;
    loop {
        // Whatever comes next, the model held before is gone (loads replace it).
        hold(None);
        let Some(request) = next.take().or_else(|| rx.recv().ok()) else {
            return;
        };
        match request {
            Request::Load {
                path,
                opts,
                progress,
                reply,
            } => {
                let loaded = catch(|| load(&path, &opts, &*progress, &cancel_load));
                let (model, summary) = match loaded {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                };
                let ctx_default = summary.ctx_default;
                hold(Some(path.clone()));
                let _ = reply.send(Ok(summary));
                let mut session = model.chat_session();
                // The draft the session uses, by the path the settings named.
                let mut drafting: Option<String> = None;
                // Serve this model until another is asked for.
                while let Ok(r) = rx.recv() {
                    match r {
                        Request::Load { .. } => {
                            next = Some(r);
                            break;
                        }
                        Request::Reset => session.reset(),
                        Request::Restore {
                            messages,
                            images,
                            reply,
                        } => {
                            let restored = catch(|| {
                                let decoded = images
                                    .iter()
                                    .map(|(name, bytes)| model.image_from_bytes(bytes, name))
                                    .collect::<Result<Vec<_>, _>>()
                                    .map_err(|e| e.to_string())?;
                                session
                                    .restore_with_images(messages.clone(), decoded)
                                    .map_err(|e| e.to_string())
                            });
                            if restored.is_err() {
                                session.restore(messages);
                            }
                            let _ = reply.send(restored);
                        }
                        Request::Unload => break,
                        Request::Prepare { images, reply } => {
                            let prepared = catch(|| {
                                images
                                    .iter()
                                    .map(|(name, bytes)| {
                                        model
                                            .image_from_bytes(bytes, name)
                                            .map_err(|e| e.to_string())
                                    })
                                    .collect()
                            });
                            let _ = reply.send(prepared);
                        }
                        Request::Send {
                            turn,
                            settings,
                            images,
                            sink,
                        } => {
                            let params = params(&model, &settings);
                            if settings.draft != drafting {
                                let draft = catch(|| {
                                    settings
                                        .draft
                                        .as_deref()
                                        .map(|d| load_draft(&model, d, &opts))
                                        .transpose()
                                });
                                match draft {
                                    Ok(d) => {
                                        session.set_draft(d);
                                        drafting = settings.draft.clone();
                                    }
                                    Err(message) => {
                                        sink(ChatEvent::Error { message });
                                        continue;
                                    }
                                }
                            }
                            let mut on_token = |t: &unicorn_engine::session::TokenEvent| {
                                if !t.text.is_empty() {
                                    sink(ChatEvent::Token {
                                        text: t.text.clone(),
                                    });
                                }
                                !stop.load(Ordering::SeqCst)
                            };
                            let sent = catch(|| {
                                session
                                    .set_context(
                                        settings.ctx.unwrap_or(ctx_default),
                                        settings.overflow.unwrap_or_default(),
                                    )
                                    .and_then(|()| match turn {
                                        Turn::New { text, system, .. } => {
                                            let mut turn = Vec::new();
                                            if session.messages().is_empty() {
                                                if let Some(s) =
                                                    system.filter(|s| !s.trim().is_empty())
                                                {
                                                    turn.push(Message::system(s));
                                                }
                                            }
                                            turn.push(Message::user(text));
                                            session.send_with_images(
                                                &turn,
                                                &images,
                                                &params,
                                                &mut on_token,
                                            )
                                        }
                                        Turn::Regenerate => {
                                            session.regenerate(&params, &mut on_token)
                                        }
                                        Turn::Edit { index, text } => {
                                            session.edit(index, text, &params, &mut on_token)
                                        }
                                    })
                                    .map_err(|e| e.to_string())
                            });
                            match sent {
                                Ok(reply) => sink(ChatEvent::Done {
                                    stop_reason: serde_json::to_value(reply.stop_reason)
                                        .ok()
                                        .and_then(|v| v.as_str().map(str::to_string))
                                        .unwrap_or_default(),
                                    stats: reply.stats,
                                    context: reply.context,
                                }),
                                Err(message) => {
                                    // After a panic mid-turn the cache may be half
                                    // written: start the conversation over.
                                    session.reset();
                                    sink(ChatEvent::Error { message })
                                }
                            }
                        }
                    }
                }
            }
            Request::Send { sink, .. } => sink(ChatEvent::Error {
                message: NO_MODEL.into(),
            }),
            Request::Prepare { reply, .. } => {
                let _ = reply.send(Err(NO_MODEL.into()));
            }
            // Nothing held, nothing to continue: the next turn says no model is loaded.
            Request::Restore { reply, .. } => {
                let _ = reply.send(Ok(()));
            }
            Request::Reset | Request::Unload => {}
        }
    }
}

/// Why a turn or its images cannot go ahead before a load.
const NO_MODEL: &str = "no model is loaded: pick one in the library first";

/// Runs `f`, turning a panic into an error: the worker (and the app) must survive
/// whatever slips through the engine's checks.
fn catch<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(crate::error::panic_message(p)))
}

/// Loads `path`, reporting at most one progress event per percent (and the last).
fn load(
    path: &std::path::Path,
    opts: &LoadOptions,
    progress: &(dyn Fn(LoadEvent) + Send),
    cancel: &AtomicBool,
) -> Result<(LoadedModel, LoadedSummary), String> {
    let t0 = std::time::Instant::now();
    let mut shown = u64::MAX;
    let mut report = |p: &unicorn_engine::Progress| {
        let percent = p.done * 100 / p.total.max(1);
        if percent != shown || p.finished() {
            shown = percent;
            progress(LoadEvent::Progress {
                progress: p.clone(),
            });
        }
        !cancel.load(Ordering::SeqCst)
    };
    let model =
        LoadedModel::load_with_progress(path, opts, &mut report).map_err(|e| e.to_string())?;
    let info = unicorn_engine::info::inspect(path, Some(1)).map_err(|e| e.to_string())?;
    let quantization = unicorn_library::quantization_of(path, &info).map_err(|e| e.to_string())?;
    let summary = LoadedSummary {
        path: path.display().to_string(),
        architecture: model.config().architecture().to_string(),
        weights_bytes: model.model().weight_bytes().total as u64,
        parameters: info.parameters,
        quantization,
        bits_per_weight: info.bits_per_weight,
        file_bytes: info.file_bytes,
        device: model.placement().label.clone(),
        kv_type: model.model().kv_type(),
        head_type: model.model().head_type(),
        device_note: model.placement().fallback.clone(),
        context_length: model.config().context_length(),
        ctx_default: fitting_ctx(path, &model),
        sampling: model.default_sampling().cloned().unwrap_or_default(),
        sampling_from_model: model.default_sampling().is_some(),
        has_chat_template: model.has_chat_template(),
        load_ms: t0.elapsed().as_secs_f64() * 1e3,
        images: model.vision().map(|v| ImageLimits {
            tokens_per_image: v.tokens_per_image(),
            max_per_message: super::images::MAX_PER_MESSAGE,
            max_bytes: super::images::MAX_IMAGE_BYTES as u64,
        }),
    };
    Ok((model, summary))
}

/// A draft model for `target`, on its device, without a vision tower; refused
/// (naming the ids) when its vocabulary differs.
fn load_draft(
    target: &LoadedModel,
    path: &str,
    opts: &LoadOptions,
) -> Result<unicorn_engine::speculative::Draft, String> {
    let draft = LoadedModel::load(std::path::Path::new(path), &opts.for_draft())
        .map_err(|e| format!("the draft model: {e}"))?;
    unicorn_engine::speculative::Draft::new(target, Arc::new(draft), 8).map_err(|e| e.to_string())
}

/// The model's recommended sampling (else ours), overridden by what the user set.
fn params(model: &LoadedModel, s: &ChatSettings) -> GenerationParams {
    GenerationParams {
        max_tokens: s.max_tokens.unwrap_or(512),
        sampling: SamplingParams::resolve(
            model.default_sampling(),
            &SamplingOverrides {
                temperature: s.temperature,
                top_k: s.top_k,
                top_p: s.top_p,
                min_p: s.min_p,
                repeat_penalty: s.repeat_penalty,
                repeat_last_n: None,
                seed: s.seed,
            },
        ),
        stop_strings: s.stop.clone().unwrap_or_default(),
        ignore_eos: false,
        stop_on_loop: s.stop_on_loop.unwrap_or(false),
    }
}

/// What `ctx` tokens of context take with the model at `path` loaded, its KV cache
/// held as `kv` (the engine's estimate: KV cache and a prompt's activations on top
/// of what the process holds now, weights included).
pub(crate) fn context_estimate(
    path: &std::path::Path,
    ctx: usize,
    kv: unicorn_engine::attention::KvType,
) -> Result<ContextEstimate, String> {
    let src = unicorn_engine::source::Source::open(path).map_err(|e| e.to_string())?;
    estimate_in(&src, ctx, kv)
}

/// [`context_estimate`] for a source already open.
fn estimate_in(
    src: &unicorn_engine::source::Source,
    ctx: usize,
    kv: unicorn_engine::attention::KvType,
) -> Result<ContextEstimate, String> {
    let e = unicorn_engine::memory::estimate(src, ctx, kv, 0).map_err(|e| e.to_string())?;
    let more = e.kv_cache_bytes + e.activation_bytes;
    Ok(ContextEstimate {
        ctx,
        kv_cache_bytes: e.kv_cache_bytes,
        memory_bytes: unicorn_engine::stats::rss_bytes() + more,
        free_ram_bytes: e.free_ram_bytes,
        // Leave a quarter of what is free to the rest of the machine.
        fits: more <= e.free_ram_bytes / 4 * 3,
    })
}

/// The model's context length, or the longest power of two from 2048 up that fits
/// in memory by [`context_estimate`] (the file's header read once).
fn fitting_ctx(path: &std::path::Path, model: &LoadedModel) -> usize {
    let max = model.config().context_length();
    let kv = model.model().kv_type();
    let src = unicorn_engine::source::Source::open(path).ok();
    let fits = |ctx| {
        src.as_ref()
            .is_some_and(|s| estimate_in(s, ctx, kv).is_ok_and(|e| e.fits))
    };
    let mut ctx = max;
    while ctx > 2048 && !fits(ctx) {
        ctx = (ctx / 2).next_power_of_two().max(2048);
    }
    ctx.min(max)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::mpsc::Receiver;
    use std::time::Duration;
    use unicorn_engine::device::DeviceChoice;

    pub(crate) fn demo() -> PathBuf {
        crate::library::demo_model_file()
            .expect("demo model missing: run scripts/fetch-test-models")
            .into()
    }

    pub(crate) fn load(w: &ChatWorker, path: PathBuf) -> Result<LoadedSummary, String> {
        let (tx, rx) = channel();
        w.load_async(path, LoadOptions::default(), Box::new(|_| {}), tx)?;
        rx.recv().unwrap()
    }

    pub(crate) fn say(w: &ChatWorker, text: &str, max_tokens: usize) -> Receiver<ChatEvent> {
        let (tx, rx) = channel();
        let settings = ChatSettings {
            temperature: Some(0.0),
            max_tokens: Some(max_tokens),
            ..Default::default()
        };
        w.say(
            Turn::New {
                text: text.into(),
                system: None,
                images: Vec::new(),
            },
            settings,
            Vec::new(),
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        )
        .unwrap();
        rx
    }

    /// Tokens until `Done`; the text and the final event.
    pub(crate) fn reply(rx: &Receiver<ChatEvent>) -> (String, ChatEvent) {
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
        let ChatEvent::Done {
            stop_reason, stats, ..
        } = done
        else {
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
        let ChatEvent::Done {
            stop_reason, stats, ..
        } = done
        else {
            panic!("{done:?}")
        };
        assert_eq!(stop_reason, "cancelled");
        assert!(stats.generated_tokens < 400);
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
            LoadOptions {
                device: DeviceChoice::Cpu,
                ..Default::default()
            },
            Box::new(move |e| {
                let _ = ptx.send(e);
            }),
            tx,
        )
        .unwrap();
        let loaded = rx.recv().unwrap().unwrap();
        let events: Vec<(u64, u64)> = prx
            .try_iter()
            .map(|LoadEvent::Progress { progress: p }| (p.done, p.total))
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
            LoadOptions {
                device: DeviceChoice::Cpu,
                ..Default::default()
            },
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

    /// The bad-input corpus through the app's commands: import and `model_info`
    /// refuse what has bad headers, the worker refuses to load what has bad headers
    /// or values, and a hostile template ends a chat turn with an error; each names
    /// the file and the problem, and the worker keeps serving.
    #[test]
    fn the_bad_input_corpus_is_refused_through_the_app() {
        let d = std::env::temp_dir().join(format!("unicorn-app-bad-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        std::fs::create_dir_all(&d).unwrap();
        let db = d.join("library.sqlite3");
        let w = ChatWorker::new();
        let named = |m: &str, c: &unicorn_test_support::BadInput| {
            let file = c.path().file_name().unwrap().to_string_lossy().into_owned();
            assert!(m.contains(&file) && m.contains(&c.want), "{}: {m}", c.name);
        };
        let mut seen = 0;
        for c in unicorn_test_support::bad_inputs() {
            let path = c.path().display().to_string();
            match c.kind.as_str() {
                "load" if c.name.starts_with('/') => {
                    // The webview's paths are checked before any reading.
                    assert!(crate::library::import_at(&db, &path).is_err(), "{}", c.name);
                }
                "load" => {
                    let m = match crate::library::import_at(&db, &path) {
                        Err(crate::error::CommandError::Engine(m)) => m,
                        other => panic!("{}: {other:?}", c.name),
                    };
                    named(&m, &c);
                    named(&load(&w, c.path()).unwrap_err(), &c);
                }
                "weights" => named(&load(&w, c.path()).unwrap_err(), &c),
                "chat" => {
                    load(&w, c.path()).unwrap();
                    let (_, done) = reply(&say(&w, "hi", 1));
                    let ChatEvent::Error { message } = done else {
                        panic!("{}: {done:?}", c.name)
                    };
                    assert!(message.contains(&c.want), "{}: {message}", c.name);
                }
                _ => continue,
            }
            seen += 1;
        }
        assert!(seen >= 40, "{seen} cases");
        // Still serving.
        assert!(load(&w, demo()).is_ok());
        std::fs::remove_dir_all(&d).ok();
    }
}

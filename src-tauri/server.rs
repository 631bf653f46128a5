//! The Server panel: `unicorn serve` (crates/server) inside the app, on 127.0.0.1,
//! over a model the user picks (loaded once more for the server: the chat keeps
//! its own). It runs on its own thread and async runtime and stops when the panel
//! stops it or the app exits; the panel polls its status (requests with their
//! tokens, TTFT and tok/s; the aggregate tok/s the dashboard shows too).

use crate::error::{existing, CommandError, CommandResult};
use crate::state::AppState;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tauri::State;
use ts_rs::TS;

/// A running server.
struct Running {
    state: Arc<unicorn_server::State>,
    base_url: String,
    model: String,
    /// The model's file or folder.
    path: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// (when, tokens streamed then): the last status call, for the live rate.
    last: (Instant, u64),
    tok_s: f64,
}

/// The app's server, if started.
#[derive(Default)]
pub struct AppServer {
    running: Mutex<Option<Running>>,
}

impl AppServer {
    /// The model the server is serving, if it runs.
    pub fn serving(&self) -> Option<std::path::PathBuf> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.path.clone())
    }

    /// Stops the server (open streams end, queued requests fail).
    pub fn stop(&self) {
        let taken = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut r) = taken {
            if let Some(tx) = r.stop.take() {
                let _ = tx.send(());
            }
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// One request in the panel's list.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ServerRequest {
    /// Response id.
    pub id: String,
    /// Route.
    pub endpoint: String,
    /// `queued`, `running`, `done`, `cancelled`, `failed` or `refused`.
    pub state: String,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Of those, reused from a slot's cache.
    pub reused_tokens: usize,
    /// Tokens generated so far.
    pub tokens: usize,
    /// Time to first token, ms (measured; queue wait included).
    pub ttft_ms: Option<f64>,
    /// Decode speed, tokens/s (measured).
    pub tok_s: Option<f64>,
}

/// What the panel and the dashboard show.
#[derive(Debug, Clone, Serialize, TS)]
pub struct ServerStatus {
    /// Whether it runs.
    pub running: bool,
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: Option<String>,
    /// The model's id in requests.
    pub model: Option<String>,
    /// Sequences being decoded.
    pub active: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Tokens streamed per second over the last poll interval (measured).
    pub tok_s: f64,
    /// Recent requests, newest last.
    pub requests: Vec<ServerRequest>,
}

fn status(r: Option<&mut Running>) -> ServerStatus {
    let Some(r) = r else {
        return ServerStatus {
            running: false,
            base_url: None,
            model: None,
            active: 0,
            queued: 0,
            tok_s: 0.0,
            requests: Vec::new(),
        };
    };
    let now = Instant::now();
    let tokens = r.state.metrics.tokens_live.load(Ordering::Relaxed);
    let dt = (now - r.last.0).as_secs_f64();
    // A rate over at least half a second; polls closer together keep the last one.
    if dt >= 0.5 {
        r.tok_s = (tokens - r.last.1) as f64 / dt;
        r.last = (now, tokens);
    }
    let load = r.state.models[0].batcher.load();
    ServerStatus {
        running: true,
        base_url: Some(r.base_url.clone()),
        model: Some(r.model.clone()),
        active: load.active.load(Ordering::Relaxed),
        queued: load.queued.load(Ordering::Relaxed),
        tok_s: r.tok_s,
        requests: r
            .state
            .metrics
            .recent()
            .into_iter()
            .map(|q| ServerRequest {
                id: q.id,
                endpoint: q.endpoint.to_string(),
                state: q.state.to_string(),
                prompt_tokens: q.prompt_tokens,
                reused_tokens: q.reused_tokens,
                tokens: q.tokens,
                ttft_ms: q.ttft_ms,
                tok_s: q.tok_s,
            })
            .collect(),
    }
}

/// Loads the model at `path` and serves it on 127.0.0.1:`port` (0: any free port)
/// with `parallel` slots; `api_key` (if not empty) is then required.
#[tauri::command(async)]
pub fn server_start(
    path: String,
    port: u16,
    api_key: Option<String>,
    parallel: usize,
    state: State<'_, AppState>,
) -> CommandResult<ServerStatus> {
    let path = existing(&path)?;
    if !(1..=64).contains(&parallel) {
        return Err(CommandError::Invalid(format!(
            "parallel requests must be 1 to 64, got {parallel}"
        )));
    }
    if state
        .server
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some()
    {
        return Err(CommandError::Invalid(
            "the server is already running: stop it first".into(),
        ));
    }
    let opts = unicorn_server::Options {
        parallel,
        queue: 4 * parallel,
        ctx: None,
        api_key: api_key.filter(|k| !k.trim().is_empty()),
        draft: None,
    };
    let served =
        unicorn_server::State::load(std::slice::from_ref(&path), &Default::default(), &opts)
            .map_err(CommandError::Engine)?;
    let served = Arc::new(served);
    let model = served.models[0].id.clone();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| CommandError::Invalid(format!("port {port}: {e}")))?;
    let io = |e: std::io::Error| CommandError::Engine(e.to_string());
    listener.set_nonblocking(true).map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = served.clone();
    let thread = std::thread::Builder::new()
        .name("unicorn-server".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return eprintln!("server runtime: {e}"),
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let _ = unicorn_server::serve(listener, st, async {
                    let _ = rx.await;
                })
                .await;
            });
        })
        .map_err(io)?;
    let mut running = Running {
        state: served,
        base_url: format!("http://{addr}/v1"),
        model,
        path,
        stop: Some(tx),
        thread: Some(thread),
        last: (Instant::now(), 0),
        tok_s: 0.0,
    };
    let s = status(Some(&mut running));
    *state
        .server
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(running);
    Ok(s)
}

/// Stops the server.
#[tauri::command(async)]
pub fn server_stop(state: State<'_, AppState>) -> ServerStatus {
    state.server.stop();
    status(None)
}

/// The server's status now.
#[tauri::command]
pub fn server_status(state: State<'_, AppState>) -> ServerStatus {
    let mut g = state
        .server
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    status(g.as_mut())
}

//! Commands the web front end may call. Each validates its input and returns a
//! serializable error, never a bare string.

use crate::chat::{ChatWorker, History};
use crate::events::{
    ChatEvent, ChatSettings, CompareEvent, HubFile, HubListing, LoadEvent, LoadedSummary,
    OpenedChat, PullEvent, QuantizeEvent, QuantizePrediction, SystemStats,
};
use crate::jobs::{Jobs, QuantizeJob};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use tauri::ipc::Channel;
use tauri::State;
use unicorn_engine::chats::ChatRecord;
use unicorn_engine::hub::Hub;
use unicorn_engine::info::{inspect, ModelInfo};
use unicorn_engine::library::{Entry, Library};
use unicorn_engine::template::Message;

/// What the commands share: the chat workers and the history, running jobs, and the
/// machine probe.
pub struct AppState {
    /// Holds the loaded model and the conversation.
    pub chat: ChatWorker,
    /// Side-by-side mode's second model, sent the same turns (its replies are shown
    /// beside the first model's, not stored).
    pub side: ChatWorker,
    /// Stored conversations (in the library database).
    pub history: History,
    /// Quantizations in flight.
    pub jobs: Jobs,
    system: Mutex<Option<sysinfo::System>>,
    bandwidth: std::sync::Arc<OnceLock<f64>>,
    /// The app's data folder: the library database and quantized models.
    data: PathBuf,
}

impl Default for AppState {
    fn default() -> Self {
        Self::at(unicorn_engine::library::data_dir())
    }
}

impl AppState {
    /// State keeping its library and models in `data`.
    pub fn at(data: PathBuf) -> Self {
        Self {
            chat: ChatWorker::new(),
            side: ChatWorker::new(),
            history: History::new(data.join("library.sqlite3")),
            jobs: Jobs::default(),
            system: Mutex::new(None),
            bandwidth: Default::default(),
            data,
        }
    }

    fn library_db(&self) -> PathBuf {
        self.data.join("library.sqlite3")
    }

    fn models_dir(&self) -> PathBuf {
        self.data.join("models")
    }
}

/// An error the front end can show: what failed, in words, and on which file.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "camelCase")]
pub enum CommandError {
    /// The request itself is malformed.
    Invalid(String),
    /// The engine failed (the message names the file).
    Engine(String),
}

/// A job's sink that forwards its events to the front end's channel (a closed
/// window just drops them).
fn to_channel<T: tauri::ipc::IpcResponse + Send + 'static>(
    ch: Channel<T>,
) -> Box<dyn Fn(T) + Send> {
    Box::new(move |e| {
        let _ = ch.send(e);
    })
}

/// An absolute path that exists, or why not.
fn existing(path: &str) -> Result<PathBuf, CommandError> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(CommandError::Invalid(format!(
            "{path}: give an absolute path"
        )));
    }
    if !p.exists() {
        return Err(CommandError::Invalid(format!(
            "{path}: no such file or folder"
        )));
    }
    Ok(p)
}

/// Summary of a `.gguf` file: architecture, parameters, tensor types, layer pattern.
#[tauri::command]
pub fn model_info(path: String) -> Result<ModelInfo, CommandError> {
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(CommandError::Invalid(format!(
            "{}: give an absolute path",
            path.display()
        )));
    }
    inspect(&path, None).map_err(|e| CommandError::Engine(e.to_string()))
}

/// The model library the CLI also writes (`unicorn list`), after recording what the
/// HF cache holds.
#[tauri::command]
pub fn library_list(state: State<'_, AppState>) -> Result<Vec<Entry>, CommandError> {
    library_list_at(&state.library_db())
}

/// Adds a dropped or picked model (a `.gguf` file or an HF folder) to the library.
/// The drop handler and the import button both come here; a file that is not a
/// model is refused with the engine's reason, naming it.
#[tauri::command]
pub fn library_import(path: String, state: State<'_, AppState>) -> Result<Entry, CommandError> {
    library_import_at(&state.library_db(), &path)
}

pub(crate) fn library_import_at(db: &Path, path: &str) -> Result<Entry, CommandError> {
    let p = existing(path)?;
    let is_gguf = p.is_file()
        && p.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let is_folder = p.is_dir() && p.join("config.json").is_file();
    if !is_gguf && !is_folder {
        return Err(CommandError::Invalid(format!(
            "{path}: not a model: drop a .gguf file or a folder with config.json"
        )));
    }
    let engine = |e: unicorn_engine::Error| CommandError::Engine(e.to_string());
    Library::open(db)
        .map_err(engine)?
        .add(&p, unicorn_engine::library::source::IMPORTED, None)
        .map_err(engine)
}

/// Loads a model for chat (replacing the one loaded), off the async runtime.
#[tauri::command]
pub async fn chat_load(
    path: String,
    device: Option<String>,
    on_progress: Channel<LoadEvent>,
    state: State<'_, AppState>,
) -> Result<LoadedSummary, CommandError> {
    let loaded = load_into(&state.chat, &path, device.as_deref(), on_progress).await?;
    state.history.loaded(&loaded.path);
    Ok(loaded)
}

/// Loads side-by-side mode's second model (replacing the one there).
#[tauri::command]
pub async fn side_load(
    path: String,
    device: Option<String>,
    on_progress: Channel<LoadEvent>,
    state: State<'_, AppState>,
) -> Result<LoadedSummary, CommandError> {
    load_into(&state.side, &path, device.as_deref(), on_progress).await
}

/// Cancels the loads in progress (the chat model's and the side model's).
#[tauri::command]
pub fn chat_load_cancel(state: State<'_, AppState>) {
    state.chat.cancel_load();
    state.side.cancel_load();
}

/// Leaves side-by-side mode, freeing its model.
#[tauri::command]
pub fn side_unload(state: State<'_, AppState>) -> Result<(), CommandError> {
    state.side.unload().map_err(CommandError::Engine)
}

async fn load_into(
    worker: &ChatWorker,
    path: &str,
    device: Option<&str>,
    on_progress: Channel<LoadEvent>,
) -> Result<LoadedSummary, CommandError> {
    let p = existing(path)?;
    let device = device
        .unwrap_or("auto")
        .parse()
        .map_err(CommandError::Invalid)?;
    let (tx, rx) = std::sync::mpsc::channel();
    // The worker does the loading; this task only waits for its answer.
    worker
        .load_async(p, device, to_channel(on_progress), tx)
        .map_err(CommandError::Engine)?;
    tauri::async_runtime::spawn_blocking(move || rx.recv())
        .await
        .map_err(|e| CommandError::Engine(e.to_string()))?
        .map_err(|_| CommandError::Engine("the chat worker stopped".into()))?
        .map_err(CommandError::Engine)
}

/// Stored conversations, newest first.
#[tauri::command]
pub fn chat_list(state: State<'_, AppState>) -> Result<Vec<ChatRecord>, CommandError> {
    Library::open(&state.library_db())
        .and_then(|l| l.chats())
        .map_err(|e| CommandError::Engine(e.to_string()))
}

/// Reopens stored conversation `id`: loads its model if another is held, and the
/// next turn continues it. Returns the model and the messages.
#[tauri::command]
pub async fn chat_open(id: i64, state: State<'_, AppState>) -> Result<OpenedChat, CommandError> {
    let engine = |e: unicorn_engine::Error| CommandError::Engine(e.to_string());
    let (model, messages) = Library::open(&state.library_db())
        .and_then(|l| l.chat(id))
        .map_err(engine)?
        .ok_or_else(|| CommandError::Invalid(format!("no stored chat {id}")))?;
    // Reopening shows no progress of its own: the view says it is loading.
    let quiet = Channel::new(|_| Ok(()));
    let loaded = chat_load(model, None, quiet, state.clone()).await?;
    let history: Vec<Message> = messages
        .iter()
        .map(|m| Message {
            role: m.role.clone(),
            content: m.content.clone(),
        })
        .collect();
    // A side model continues from the same history.
    state
        .side
        .restore(history.clone())
        .map_err(CommandError::Engine)?;
    state.chat.restore(history).map_err(CommandError::Engine)?;
    state.history.continue_chat(id);
    Ok(OpenedChat { loaded, messages })
}

/// Deletes stored conversation `id`.
#[tauri::command]
pub fn chat_delete(id: i64, state: State<'_, AppState>) -> Result<bool, CommandError> {
    state.history.forget(id);
    Library::open(&state.library_db())
        .and_then(|l| l.chat_delete(id))
        .map_err(|e| CommandError::Engine(e.to_string()))
}

/// Sends the next user turn; the reply streams through `on_event`.
#[tauri::command]
pub fn chat_send(
    text: String,
    system: Option<String>,
    settings: ChatSettings,
    on_event: Channel<ChatEvent>,
    state: State<'_, AppState>,
) -> Result<(), CommandError> {
    check_turn(&text, &settings)?;
    let id = state
        .history
        .begin(system.as_deref(), &text)
        .map_err(CommandError::Engine)?;
    let sink = state.history.storing(id, to_channel(on_event));
    state
        .chat
        .say(text, system, settings, sink)
        .map_err(CommandError::Engine)
}

/// Sends the same turn to the side model. The front end sends it after the first
/// model's reply is done: run together, the two would share the cores and neither
/// speed would be the model's own.
#[tauri::command]
pub fn side_send(
    text: String,
    system: Option<String>,
    settings: ChatSettings,
    on_event: Channel<ChatEvent>,
    state: State<'_, AppState>,
) -> Result<(), CommandError> {
    check_turn(&text, &settings)?;
    state
        .side
        .say(text, system, settings, to_channel(on_event))
        .map_err(CommandError::Engine)
}

/// A turn the workers accept, or why not.
fn check_turn(text: &str, settings: &ChatSettings) -> Result<(), CommandError> {
    if text.trim().is_empty() {
        return Err(CommandError::Invalid("the message is empty".into()));
    }
    if settings
        .temperature
        .is_some_and(|t| !(0.0..=5.0).contains(&t))
        || settings.top_p.is_some_and(|p| !(0.0..=1.0).contains(&p))
        || settings.max_tokens.is_some_and(|m| m == 0 || m > 1 << 20)
    {
        return Err(CommandError::Invalid(
            "sampling: temperature 0-5, top-p 0-1, max tokens 1-1048576".into(),
        ));
    }
    Ok(())
}

/// Stops the replies being generated (both models').
#[tauri::command]
pub fn chat_stop(state: State<'_, AppState>) {
    state.chat.stop();
    state.side.stop();
}

/// Starts a new conversation with the loaded model (and the side model).
#[tauri::command]
pub fn chat_reset(state: State<'_, AppState>) -> Result<(), CommandError> {
    state.history.reset();
    state.side.reset().map_err(CommandError::Engine)?;
    state.chat.reset().map_err(CommandError::Engine)
}

/// Quantizes a library model to `to` (NF4 or a GGUF type) into the app's models
/// folder; progress and the report stream through `on_event`. Returns the job id.
#[tauri::command]
pub fn quantize_start(
    source: String,
    to: String,
    on_event: Channel<QuantizeEvent>,
    state: State<'_, AppState>,
) -> Result<u64, CommandError> {
    let job = QuantizeJob::new(&source, &to, &state.models_dir(), state.library_db())
        .map_err(CommandError::Invalid)?;
    Ok(state.jobs.quantize(job, to_channel(on_event)))
}

/// Lists a hub repository's files with sizes, and what this machine has room for.
#[tauri::command]
pub async fn hub_list(repo: String, revision: Option<String>) -> Result<HubListing, CommandError> {
    let revision = revision.unwrap_or_else(|| "main".into());
    tauri::async_runtime::spawn_blocking(move || hub_list_with(&Hub::from_env(), &repo, &revision))
        .await
        .map_err(|e| CommandError::Engine(e.to_string()))?
}

pub(crate) fn hub_list_with(
    hub: &Hub,
    repo: &str,
    revision: &str,
) -> Result<HubListing, CommandError> {
    if !unicorn_engine::hub::is_repo_id(repo.trim()) {
        return Err(CommandError::Invalid(format!(
            "`{repo}`: give a repository id like google/gemma-3-1b-it"
        )));
    }
    let l = hub
        .list(repo.trim(), revision, &[])
        .map_err(|e| CommandError::Engine(e.to_string()))?;
    let weights = |p: &str| {
        [".safetensors", ".gguf", ".bin"]
            .iter()
            .any(|x| p.ends_with(x))
    };
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let disks = sysinfo::Disks::new_with_refreshed_list();
    // The disk whose mount point is the longest prefix of the cache folder.
    let free_disk = disks
        .list()
        .iter()
        .filter(|d| {
            hub.cache.starts_with(d.mount_point())
                || hub
                    .cache
                    .parent()
                    .is_some_and(|p| p.starts_with(d.mount_point()))
        })
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| d.available_space());
    Ok(HubListing {
        repo: l.repo.clone(),
        commit: l.commit.clone(),
        total_bytes: l.files.iter().map(|f| f.size).sum(),
        weights_bytes: l
            .files
            .iter()
            .filter(|f| weights(&f.path))
            .map(|f| f.size)
            .sum(),
        files: l
            .files
            .iter()
            .map(|f| HubFile {
                path: f.path.clone(),
                size: f.size,
            })
            .collect(),
        available_memory: sys.available_memory(),
        free_disk,
    })
}

/// Downloads a repository into the HF cache (resuming what an earlier pull left);
/// progress streams through `on_event`, `job_cancel` pauses. Returns the job id.
#[tauri::command]
pub async fn hub_pull(
    repo: String,
    revision: Option<String>,
    on_event: Channel<PullEvent>,
    state: State<'_, AppState>,
) -> Result<u64, CommandError> {
    let revision = revision.unwrap_or_else(|| "main".into());
    let hub = Hub::from_env();
    let (h, r, rev) = (hub.clone(), repo.clone(), revision.clone());
    let listing = tauri::async_runtime::spawn_blocking(move || h.list(r.trim(), &rev, &[]))
        .await
        .map_err(|e| CommandError::Engine(e.to_string()))?
        .map_err(|e| CommandError::Engine(e.to_string()))?;
    Ok(state.jobs.pull(
        hub,
        listing,
        revision,
        state.library_db(),
        to_channel(on_event),
    ))
}

/// Deletes what a paused pull of `repo` left for resuming; returns the bytes freed.
#[tauri::command]
pub fn hub_discard(repo: String) -> Result<u64, CommandError> {
    if !unicorn_engine::hub::is_repo_id(repo.trim()) {
        return Err(CommandError::Invalid(format!(
            "`{repo}`: not a repository id"
        )));
    }
    unicorn_engine::hub::discard_partial(&unicorn_engine::hub::cache_dir(), repo.trim())
        .map_err(|e| CommandError::Engine(e.to_string()))
}

/// Saves the Hugging Face token (for gated models) where huggingface_hub keeps it;
/// an empty one removes it.
#[tauri::command]
pub fn hub_token_set(token: String) -> Result<(), CommandError> {
    unicorn_engine::hub::save_token(&token)
        .map(|_| ())
        .map_err(|e| CommandError::Invalid(e.to_string()))
}

/// Whether a token is set (never the token itself).
#[tauri::command]
pub fn hub_token_present() -> bool {
    unicorn_engine::hub::token().is_some()
}

/// What quantizing `source` to `to` will write (sizes, bits per weight, warnings),
/// computed from the plan without reading weights.
#[tauri::command]
pub async fn quantize_predict(
    source: String,
    to: String,
    state: State<'_, AppState>,
) -> Result<QuantizePrediction, CommandError> {
    let job = QuantizeJob::new(&source, &to, &state.models_dir(), state.library_db())
        .map_err(CommandError::Invalid)?;
    tauri::async_runtime::spawn_blocking(move || job.predict())
        .await
        .map_err(|e| CommandError::Engine(e.to_string()))?
        .map_err(CommandError::Engine)
}

/// Measures a quantized model against its source (perplexity, KL divergence, top-1)
/// on the app's evaluation text; progress streams through `on_event`. Returns the job
/// id (`job_cancel` stops it).
#[tauri::command]
pub fn compare_start(
    base: String,
    quant: String,
    on_event: Channel<CompareEvent>,
    state: State<'_, AppState>,
) -> Result<u64, CommandError> {
    let (b, q) = (existing(&base)?, existing(&quant)?);
    Ok(state.jobs.compare(b, q, to_channel(on_event)))
}

/// Cancels a running job.
#[tauri::command]
pub fn job_cancel(id: u64, state: State<'_, AppState>) -> bool {
    state.jobs.cancel(id)
}

/// RAM, CPU and this process's memory, measured now; the memory bandwidth once
/// measured (0 until then: it is measured in the background on the first call).
#[tauri::command]
pub fn system_stats(state: State<'_, AppState>) -> SystemStats {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let mut guard = state.system.lock().unwrap_or_else(|e| e.into_inner());
    let sys = guard.get_or_insert_with(|| {
        let bw = state.bandwidth.clone();
        std::thread::spawn(move || {
            let _ = bw.set(unicorn_engine::bench::memory_bandwidth());
        });
        System::new()
    });
    sys.refresh_memory();
    sys.refresh_cpu_usage();
    let gpus = unicorn_engine::device::gpus();
    let pid = Pid::from_u32(std::process::id());
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing().with_memory(),
    );
    SystemStats {
        total_memory: sys.total_memory(),
        used_memory: sys.used_memory(),
        process_rss: sys.process(pid).map(|p| p.memory()).unwrap_or(0),
        cpu_percent: sys.global_cpu_usage(),
        cores: sys.cpus().len(),
        memory_bandwidth: state.bandwidth.get().copied().unwrap_or(0.0),
        gpus: gpus.as_ref().cloned().unwrap_or_default(),
        gpu_note: gpus.err(),
    }
}

fn library_list_at(db: &std::path::Path) -> Result<Vec<Entry>, CommandError> {
    let engine = |e: unicorn_engine::Error| CommandError::Engine(e.to_string());
    let lib = Library::open(db).map_err(engine)?;
    lib.scan_hf_cache(&unicorn_engine::hub::cache_dir())
        .map_err(engine)?;
    lib.list().map_err(engine)
}

/// Where the built-in demo model is (fetched by `scripts/run`), if it is there.
#[tauri::command]
pub fn demo_model_path() -> Option<String> {
    let dir = std::env::var_os("UNICORN_TEST_MODELS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/unicorn/test-models"))
        })?;
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then(|| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_refused_with_a_reason() {
        let e = model_info("model.gguf".into()).unwrap_err();
        assert!(
            matches!(&e, CommandError::Invalid(m) if m.contains("model.gguf")),
            "{e:?}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_model_names_the_file() {
        let p = std::env::temp_dir().join(format!("unicorn-app-test-{}.gguf", std::process::id()));
        std::fs::write(&p, b"not a model").unwrap();
        let e = model_info(p.display().to_string()).unwrap_err();
        std::fs::remove_file(&p).ok();
        assert!(
            matches!(&e, CommandError::Engine(m) if m.contains("unicorn-app-test")),
            "{e:?}"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "engine");
    }

    #[test]
    fn the_library_lists_what_the_cli_recorded() {
        let dir = std::env::temp_dir().join(format!("unicorn-app-lib-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let db = dir.join("library.sqlite3");
        let demo = demo_model_path().expect("demo model: run scripts/fetch-test-models");
        Library::open(&db)
            .unwrap()
            .add(
                demo.as_ref(),
                unicorn_engine::library::source::IMPORTED,
                None,
            )
            .unwrap();
        let list = library_list_at(&db).unwrap();
        let e = list
            .iter()
            .find(|e| e.path == demo)
            .expect("the imported model");
        assert_eq!(
            (e.architecture.as_str(), e.quantization.as_str()),
            ("llama", "Q4_1")
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn imports_models_and_refuses_what_is_not_one() {
        let dir = std::env::temp_dir().join(format!("unicorn-app-import-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("library.sqlite3");
        let demo = demo_model_path().expect("demo model: run scripts/fetch-test-models");
        let e = library_import_at(&db, &demo).unwrap();
        assert_eq!(
            (e.source.as_str(), e.quantization.as_str()),
            ("imported", "Q4_1")
        );
        let refuse = |p: &str| match library_import_at(&db, p) {
            Err(CommandError::Invalid(m)) | Err(CommandError::Engine(m)) => m,
            Ok(e) => panic!("imported {e:?}"),
        };
        assert!(refuse("relative.gguf").contains("absolute"));
        assert!(refuse("/no/such/model.gguf").contains("no such"));
        let notes = dir.join("notes.txt");
        std::fs::write(&notes, "hi").unwrap();
        assert!(refuse(&notes.display().to_string()).contains("not a model"));
        let fake = dir.join("fake.gguf");
        std::fs::write(&fake, "not gguf at all").unwrap();
        assert!(refuse(&fake.display().to_string()).contains("fake.gguf"));
        assert_eq!(
            library_list_at(&db)
                .unwrap()
                .iter()
                .filter(|e| e.source == "imported")
                .count(),
            1
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_demo_model_is_described_when_present() {
        let Some(path) = demo_model_path() else {
            panic!("demo model missing: run scripts/fetch-test-models first");
        };
        let info = model_info(path).unwrap();
        assert_eq!(info.architecture, "llama");
        assert_eq!(info.layers, 30);
    }
}

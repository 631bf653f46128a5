//! Chat: loading a model into a slot (the conversation's, or side-by-side mode's
//! second one), sending turns whose replies stream through a channel, stopping,
//! starting over, and the stored conversations. The models live on the workers'
//! threads ([`worker`]); the main slot's turns are stored ([`history`]), their
//! images too ([`images`]).

pub mod history;
pub mod images;
pub mod store;
pub mod types;
pub mod worker;

use crate::error::{existing, message_text, CommandError, CommandResult};
use crate::state::AppState;
use crate::to_channel;
use tauri::ipc::Channel;
use tauri::State;
use types::{
    ChatEvent, ChatSettings, ContextEstimate, ImageFile, LoadEvent, LoadedSummary, OpenedChat,
    Slot, Turn,
};
use unicorn_engine::attention::KvType;
use unicorn_engine::models::HeadType;
use unicorn_engine::session::LoadOptions;
use unicorn_engine::template::Message;
use unicorn_library::chats::ChatRecord;

/// Loads a model into `slot` (replacing the one there), off the async runtime; the
/// load's progress streams through `on_progress`.
#[tauri::command]
pub async fn chat_load(
    path: String,
    device: Option<String>,
    kv_type: Option<String>,
    head_type: Option<String>,
    slot: Option<Slot>,
    on_progress: Channel<LoadEvent>,
    state: State<'_, AppState>,
) -> CommandResult<LoadedSummary> {
    let slot = slot.unwrap_or_default();
    let p = existing(&path)?;
    let device = device
        .unwrap_or_else(|| "auto".into())
        .parse()
        .map_err(CommandError::Invalid)?;
    let kv_type = kv_type
        .map(|k| KvType::parse(&k))
        .transpose()
        .map_err(CommandError::Invalid)?;
    let head_type = head_type
        .map(|h| HeadType::parse(&h))
        .transpose()
        .map_err(CommandError::Invalid)?
        .unwrap_or_default();
    let opts = LoadOptions {
        device,
        kv_type,
        head_type,
        ..Default::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    // The worker does the loading; this task only waits for its answer.
    state
        .worker(slot)
        .load_async(p, opts, to_channel(on_progress), tx)
        .map_err(CommandError::Engine)?;
    let loaded = tauri::async_runtime::spawn_blocking(move || rx.recv())
        .await?
        .map_err(|_| CommandError::Engine("the chat worker stopped".into()))?
        .map_err(CommandError::Engine)?;
    if slot == Slot::Main {
        state.history.loaded(&loaded.path);
    }
    Ok(loaded)
}

/// Cancels the loads in progress (both slots').
#[tauri::command]
pub fn chat_load_cancel(state: State<'_, AppState>) {
    for slot in [Slot::Main, Slot::Side] {
        state.worker(slot).cancel_load();
    }
}

/// Frees the model in `slot` (for the side slot: leaves side-by-side mode).
#[tauri::command]
pub fn chat_unload(slot: Option<Slot>, state: State<'_, AppState>) -> CommandResult<()> {
    state
        .worker(slot.unwrap_or_default())
        .unload()
        .map_err(CommandError::Engine)
}

/// Sends the next turn to `slot`'s model: a new message (with its images), the last
/// reply again, or an edited message; the reply streams through `on_event`. Returns
/// the stored chat's id (main slot). Turns of the main slot are stored (regenerate
/// and edit rewrite the stored conversation from their turn on). A new message's
/// images are checked, then decoded by the model, before anything is stored: an
/// image the model cannot take is this command's error, and the chat keeps no
/// message it could not send. The front end sends the side slot its turn after the
/// main reply is done: run together, the two would share the cores and neither
/// speed would be the model's own.
#[tauri::command]
pub async fn chat_send(
    mut turn: Turn,
    settings: ChatSettings,
    slot: Option<Slot>,
    on_event: Channel<ChatEvent>,
    state: State<'_, AppState>,
) -> CommandResult<Option<i64>> {
    check_turn(&turn, &settings)?;
    // The images leave the turn here: the worker gets them decoded.
    let uploads = match &mut turn {
        Turn::New { images, .. } => std::mem::take(images),
        _ => Vec::new(),
    };
    let attachments =
        tauri::async_runtime::spawn_blocking(move || images::check(uploads)).await??;
    let slot = slot.unwrap_or_default();
    let prepared = match attachments.is_empty() {
        true => Vec::new(),
        false => {
            let (tx, rx) = std::sync::mpsc::channel();
            let files = attachments
                .iter()
                .map(|a| (a.name.clone(), a.bytes.clone()))
                .collect();
            state
                .worker(slot)
                .prepare_async(files, tx)
                .map_err(CommandError::Engine)?;
            tauri::async_runtime::spawn_blocking(move || rx.recv())
                .await?
                .map_err(|_| CommandError::Engine("the chat worker stopped".into()))?
                .map_err(CommandError::Invalid)?
        }
    };
    let (id, sink) = match slot {
        Slot::Main => {
            let id = match &turn {
                Turn::New { text, system, .. } => {
                    state.history.begin(system.as_deref(), text, &attachments)
                }
                Turn::Regenerate => state.history.regenerate(),
                Turn::Edit { index, text } => state.history.edit(*index, text),
            }
            .map_err(CommandError::Engine)?;
            (Some(id), state.history.storing(id, to_channel(on_event)))
        }
        Slot::Side => (None, to_channel(on_event)),
    };
    state
        .worker(slot)
        .say(turn, settings, prepared, sink)
        .map_err(CommandError::Engine)?;
    Ok(id)
}

/// Reads an image file dropped on the window, for the chat to preview and send
/// (a PNG, JPEG or WebP of at most [`images::MAX_IMAGE_BYTES`]).
#[tauri::command]
pub async fn chat_image_read(path: String) -> CommandResult<ImageFile> {
    tauri::async_runtime::spawn_blocking(move || images::read_file(&path)).await?
}

/// A turn the workers accept, or why not.
fn check_turn(turn: &Turn, settings: &ChatSettings) -> CommandResult<()> {
    if let Turn::New { text, .. } | Turn::Edit { text, .. } = turn {
        // A new message may be images alone.
        let pictured = matches!(turn, Turn::New { images, .. } if !images.is_empty());
        if text.trim().is_empty() && !pictured {
            return Err(CommandError::Invalid("the message is empty".into()));
        }
        message_text(text, "message")?;
    }
    if let Turn::New {
        system: Some(system),
        ..
    } = turn
    {
        message_text(system, "system prompt")?;
    }
    if let Some(d) = &settings.draft {
        existing(d)?;
    }
    let stop = settings.stop.as_deref().unwrap_or_default();
    if settings
        .temperature
        .is_some_and(|t| !(0.0..=5.0).contains(&t))
        || settings
            .top_p
            .is_some_and(|p| !(0.0..=1.0).contains(&p) || p == 0.0)
        || settings.min_p.is_some_and(|p| !(0.0..=1.0).contains(&p))
        || settings
            .repeat_penalty
            .is_some_and(|r| !(0.5..=3.0).contains(&r))
        || settings.top_k.is_some_and(|k| k > 1 << 20)
        || settings.max_tokens.is_some_and(|m| m == 0 || m > 1 << 20)
        || settings.ctx.is_some_and(|c| !(16..=1 << 24).contains(&c))
        || stop.len() > 16
        || stop.iter().any(|s| s.is_empty() || s.len() > 256)
    {
        return Err(CommandError::Invalid(
            "settings: temperature 0-5, top-p (0, 1], min-p 0-1, repeat penalty 0.5-3, top-k up to 1048576, max tokens 1-1048576, context 16-16777216 tokens, up to 16 stop strings of 1-256 bytes".into(),
        ));
    }
    Ok(())
}

/// What `ctx` tokens of context would take with the model at `path` (its KV cache
/// as `kv_type`): an estimate, shown beside the context setting.
#[tauri::command]
pub async fn chat_context_estimate(
    path: String,
    ctx: usize,
    kv_type: KvType,
) -> CommandResult<ContextEstimate> {
    let p = existing(&path)?;
    if !(16..=1 << 24).contains(&ctx) {
        return Err(CommandError::Invalid(format!(
            "context {ctx}: give 16 to 16777216 tokens"
        )));
    }
    tauri::async_runtime::spawn_blocking(move || worker::context_estimate(&p, ctx, kv_type))
        .await?
        .map_err(CommandError::Engine)
}

/// Stops the replies being generated (both slots').
#[tauri::command]
pub fn chat_stop(state: State<'_, AppState>) {
    for slot in [Slot::Main, Slot::Side] {
        state.worker(slot).stop();
    }
}

/// Starts a new conversation with the loaded models.
#[tauri::command]
pub fn chat_reset(state: State<'_, AppState>) -> CommandResult<()> {
    state.history.reset();
    for slot in [Slot::Main, Slot::Side] {
        state.worker(slot).reset().map_err(CommandError::Engine)?;
    }
    Ok(())
}

/// Stored conversations, newest first.
#[tauri::command]
pub fn chat_list(state: State<'_, AppState>) -> CommandResult<Vec<ChatRecord>> {
    Ok(state.library()?.chats()?)
}

/// Reopens stored conversation `id`: loads its model into the main slot if another
/// is held, and the next turn continues it (in both slots). Returns the model and
/// the messages.
#[tauri::command]
pub async fn chat_open(id: i64, state: State<'_, AppState>) -> CommandResult<OpenedChat> {
    let (model, messages) = state
        .library()?
        .chat(id)?
        .ok_or_else(|| CommandError::Invalid(format!("no stored chat {id}")))?;
    let kept = state.history.images().load(id, messages.len());
    // Reopening shows no progress of its own: the view says it is loading.
    let quiet = Channel::new(|_| Ok(()));
    let loaded = chat_load(
        model,
        None,
        None,
        None,
        Some(Slot::Main),
        quiet,
        state.clone(),
    )
    .await?;
    // Each message shows its images before its text, as the turn that sent them
    // placed them (a stored text's own markers, from an imported file, go).
    let marker = unicorn_engine::vision::MARKER;
    let history: Vec<Message> = messages
        .iter()
        .zip(&kept)
        .map(|(m, imgs)| Message {
            role: m.role.clone(),
            content: std::iter::repeat_n(marker, imgs.len())
                .chain(m.content.chars().filter(|&c| c != marker))
                .collect(),
        })
        .collect();
    let files: Vec<(String, std::sync::Arc<[u8]>)> = kept
        .iter()
        .flatten()
        .map(|k| (k.shown.name.clone(), k.bytes.clone()))
        .collect();
    let mut notice = None;
    for slot in [Slot::Side, Slot::Main] {
        let (tx, rx) = std::sync::mpsc::channel();
        state
            .worker(slot)
            .restore(history.clone(), files.clone(), tx)
            .map_err(CommandError::Engine)?;
        let restored = tauri::async_runtime::spawn_blocking(move || rx.recv())
            .await?
            .map_err(|_| CommandError::Engine("the chat worker stopped".into()))?;
        if let (Slot::Main, Err(e)) = (slot, restored) {
            notice = Some(format!(
                "The model does not have this chat's images again ({e}); it continues with the text."
            ));
        }
    }
    state.history.continue_chat(id);
    Ok(OpenedChat {
        loaded,
        messages,
        images: kept
            .into_iter()
            .map(|v| v.into_iter().map(|k| k.shown).collect())
            .collect(),
        notice,
    })
}

/// Deletes stored conversation `id`, and its images.
#[tauri::command]
pub fn chat_delete(id: i64, state: State<'_, AppState>) -> CommandResult<bool> {
    state.history.forget(id);
    let deleted = state.library()?.chat_delete(id)?;
    state
        .history
        .images()
        .delete(id)
        .map_err(CommandError::Engine)?;
    Ok(deleted)
}

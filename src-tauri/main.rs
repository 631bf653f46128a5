//! The Unicorn desktop app: a thin Tauri shell. Commands check their input, call
//! the engine, and stream its events; no model logic lives here. One module per
//! domain, each with its commands, its jobs and its types: [`chat`], [`quantize`],
//! [`hub`] (download), [`library`], [`links`] (replies' links open in the browser,
//! never in the window), the dashboard's [`system`] figures, the API [`server`], and the hand-over to the CUDA build ([`gpu`]). Long work runs as
//! [`jobs`]; every command returns [`error::CommandError`].
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod bindings;
mod chat;
mod error;
mod gpu;
mod hub;
mod jobs;
mod library;
mod links;
mod quantize;
mod server;
mod state;
mod system;

#[cfg(test)]
mod ipc_tests;

/// A job's sink that forwards its events to the front end's channel (a closed
/// window just drops them).
pub(crate) fn to_channel<T: tauri::ipc::IpcResponse + Send + 'static>(
    ch: tauri::ipc::Channel<T>,
) -> jobs::Sink<T> {
    Box::new(move |e| {
        let _ = ch.send(e);
    })
}

/// Cancels a running job (a quantization, a comparison, a download: paused).
#[tauri::command]
fn job_cancel(id: u64, state: tauri::State<'_, state::AppState>) -> bool {
    state.jobs.cancel(id)
}

/// The app's state and commands on any runtime: `main` runs them in a window, the
/// IPC tests on Tauri's mock runtime.
fn app<R: tauri::Runtime>(builder: tauri::Builder<R>, state: state::AppState) -> tauri::Builder<R> {
    builder
        .manage(state)
        .plugin(links::navigation_guard())
        .invoke_handler(tauri::generate_handler![
            library::model_info,
            library::demo_model_path,
            library::library_list,
            library::library_import,
            library::model_delete_plan,
            library::model_delete,
            library::model_reveal,
            library::models_dir_get,
            library::models_dir_set,
            chat::store::chat_rename,
            chat::store::chat_search,
            chat::store::chat_export,
            chat::store::chat_import,
            chat::store::preset_save,
            chat::store::presets_list,
            chat::store::preset_delete,
            chat::store::model_settings_get,
            chat::store::model_settings_save,
            chat::chat_load,
            chat::chat_load_cancel,
            chat::chat_unload,
            chat::chat_send,
            chat::chat_image_read,
            chat::chat_context_estimate,
            chat::chat_stop,
            chat::chat_reset,
            chat::chat_list,
            chat::chat_open,
            chat::chat_delete,
            quantize::quantize_start,
            quantize::quantize_predict,
            quantize::compare_start,
            job_cancel,
            links::open_external,
            system::system_stats,
            hub::hub_list,
            hub::hub_search,
            hub::hub_plan,
            hub::hub_pull,
            hub::hub_discard,
            hub::hub_token_set,
            hub::hub_token_present,
            server::server_start,
            server::server_stop,
            server::server_status
        ])
}

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == gpu::PROBE) {
        gpu::probe();
    }
    // The CPU build hands over to the CUDA build when it can use a GPU (never
    // returning then); otherwise the dashboard shows why.
    let mut state = state::AppState::default();
    state.engine_note = gpu::hand_over();
    let result = app(tauri::Builder::default(), state).run(tauri::generate_context!());
    if let Err(e) = result {
        eprintln!("error: Unicorn could not start: {e}");
        std::process::exit(1);
    }
}

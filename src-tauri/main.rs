//! The Unicorn desktop app: a thin Tauri shell. Commands parse input, call
//! `unicorn_engine`, and return its results; no model logic lives here.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod chat;
mod commands;
mod events;
mod jobs;

#[cfg(test)]
mod ipc_tests;

/// The app's state and commands on any runtime: `main` runs them in a window, the
/// IPC tests on Tauri's mock runtime.
fn app<R: tauri::Runtime>(
    builder: tauri::Builder<R>,
    state: commands::AppState,
) -> tauri::Builder<R> {
    builder
        .manage(state)
        .invoke_handler(tauri::generate_handler![
            commands::model_info,
            commands::demo_model_path,
            commands::library_list,
            commands::library_import,
            commands::chat_load,
            commands::chat_send,
            commands::chat_stop,
            commands::chat_reset,
            commands::chat_list,
            commands::chat_open,
            commands::chat_delete,
            commands::side_load,
            commands::side_unload,
            commands::side_send,
            commands::chat_load_cancel,
            commands::quantize_start,
            commands::quantize_predict,
            commands::compare_start,
            commands::job_cancel,
            commands::system_stats,
            commands::hub_list,
            commands::hub_pull,
            commands::hub_discard,
            commands::hub_token_set,
            commands::hub_token_present
        ])
}

fn main() {
    let result = app(tauri::Builder::default(), commands::AppState::default())
        .run(tauri::generate_context!());
    if let Err(e) = result {
        eprintln!("error: Unicorn could not start: {e}");
        std::process::exit(1);
    }
}

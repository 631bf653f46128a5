//! The Unicorn desktop app: a thin Tauri shell. Commands parse input, call
//! `unicorn_engine`, and return its results; no model logic lives here.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;

fn main() {
    let result = tauri::Builder::default()
        .invoke_handler(tauri::generate_handler![
            commands::model_info,
            commands::demo_model_path,
            commands::library_list
        ])
        .run(tauri::generate_context!());
    if let Err(e) = result {
        eprintln!("error: Unicorn could not start: {e}");
        std::process::exit(1);
    }
}

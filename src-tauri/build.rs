fn main() {
    // Listing the app's commands makes Tauri generate one permission per command
    // (allow-model-info, ...), so capabilities/ grants each window only what it uses.
    let manifest = tauri_build::AppManifest::new().commands(&[
        "model_info",
        "demo_model_path",
        "library_list",
        "library_import",
        "model_delete_plan",
        "model_delete",
        "model_reveal",
        "models_dir_get",
        "models_dir_set",
        "chat_rename",
        "chat_search",
        "chat_export",
        "chat_import",
        "preset_save",
        "presets_list",
        "preset_delete",
        "model_settings_get",
        "model_settings_save",
        "chat_load",
        "chat_send",
        "chat_context_estimate",
        "chat_stop",
        "chat_reset",
        "chat_list",
        "chat_open",
        "chat_delete",
        "quantize_start",
        "quantize_predict",
        "compare_start",
        "job_cancel",
        "system_stats",
        "hub_list",
        "hub_search",
        "hub_plan",
        "hub_pull",
        "hub_discard",
        "hub_token_set",
        "hub_token_present",
        "chat_unload",
        "chat_load_cancel",
        "open_external",
        "server_start",
        "server_stop",
        "server_status",
    ]);
    if let Err(e) = tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest)) {
        eprintln!("tauri build step failed: {e:#}");
        std::process::exit(1);
    }
}

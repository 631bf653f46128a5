//! Stored conversations beyond the live chat: rename, search, export and import,
//! and the saved presets and per-model sampling defaults.

use crate::error::{existing, CommandError, CommandResult};
use crate::state::AppState;
use std::io::Read;
use std::path::{Path, PathBuf};
use tauri::State;
use unicorn_common::atomic;
use unicorn_library::chats::ChatRecord;
use unicorn_library::export::MAX_IMPORT_BYTES;
use unicorn_library::settings::Preset;
use unicorn_library::Library;

fn invalid(e: unicorn_engine::Error) -> CommandError {
    CommandError::Invalid(e.to_string())
}

/// Renames stored conversation `id`; returns its updated listing row.
#[tauri::command]
pub fn chat_rename(
    id: i64,
    title: String,
    state: State<'_, AppState>,
) -> CommandResult<ChatRecord> {
    rename_at(&state.library()?, id, &title)
}

fn rename_at(lib: &Library, id: i64, title: &str) -> CommandResult<ChatRecord> {
    if !lib.chat_rename(id, title).map_err(invalid)? {
        return Err(CommandError::Invalid(format!("no stored chat {id}")));
    }
    lib.chat_record(id)?
        .ok_or_else(|| CommandError::Invalid(format!("no stored chat {id}")))
}

/// Stored conversations whose title or messages contain `query` (any case), newest
/// first, at most 200.
#[tauri::command]
pub fn chat_search(query: String, state: State<'_, AppState>) -> CommandResult<Vec<ChatRecord>> {
    state.library()?.chat_search(&query).map_err(invalid)
}

/// Writes stored conversation `id` to `path` as `json` (the `unicorn-chat` format,
/// docs/chat-format.md) or `markdown`, whole or not at all. An existing file is
/// replaced only with `overwrite` (and only a regular file). Returns the bytes
/// written.
#[tauri::command]
pub fn chat_export(
    id: i64,
    format: String,
    path: String,
    overwrite: Option<bool>,
    state: State<'_, AppState>,
) -> CommandResult<u64> {
    export_at(
        &state.library()?,
        id,
        &format,
        &path,
        overwrite.unwrap_or(false),
    )
}

/// An output path from the webview: absolute, in an existing folder, not a system
/// folder.
fn output_path(path: &str) -> CommandResult<PathBuf> {
    let p = PathBuf::from(path);
    if !p.is_absolute() || p.file_name().is_none() {
        return Err(CommandError::Invalid(format!(
            "{path}: give an absolute path to a file"
        )));
    }
    if ["/proc", "/sys", "/dev"].iter().any(|r| p.starts_with(r)) {
        return Err(CommandError::Invalid(format!(
            "{path}: system folders are refused"
        )));
    }
    if !p.parent().is_some_and(Path::is_dir) {
        return Err(CommandError::Invalid(format!(
            "{path}: its folder does not exist"
        )));
    }
    Ok(p)
}

pub(crate) fn export_at(
    lib: &Library,
    id: i64,
    format: &str,
    path: &str,
    overwrite: bool,
) -> CommandResult<u64> {
    let text = match format {
        "json" => lib.chat_export_json(id),
        "markdown" => lib.chat_export_markdown(id),
        other => {
            return Err(CommandError::Invalid(format!(
                "export format {other:?}: give json or markdown"
            )))
        }
    }
    .map_err(invalid)?;
    let out = output_path(path)?;
    if !overwrite && std::fs::symlink_metadata(&out).is_ok() {
        return Err(CommandError::Invalid(format!(
            "{path}: already exists; choose overwrite to replace it"
        )));
    }
    let refused = |e: atomic::OutputError| CommandError::Invalid(e.to_string());
    atomic::check_target(&out, atomic::Kind::File, true, None).map_err(refused)?;
    atomic::file(&out, |tmp| {
        std::fs::write(tmp, text.as_bytes()).map_err(|source| atomic::OutputError::Io {
            path: out.clone(),
            source,
        })
    })
    .map_err(refused)?;
    Ok(text.len() as u64)
}

/// Imports a `unicorn-chat` JSON file as a new stored conversation; returns its
/// listing row. A file that is too large, not UTF-8 or not in the format is refused
/// with one line naming it and the problem.
#[tauri::command]
pub fn chat_import(path: String, state: State<'_, AppState>) -> CommandResult<ChatRecord> {
    let record = import_at(&state.library()?, &path)?;
    // The format holds no images; the new id may be a deleted chat's, whose images
    // must not show with it.
    state
        .history
        .images()
        .delete(record.id)
        .map_err(CommandError::Engine)?;
    Ok(record)
}

pub(crate) fn import_at(lib: &Library, path: &str) -> CommandResult<ChatRecord> {
    let p = existing(path)?;
    let bad = |m: String| CommandError::Invalid(format!("{path}: {m}"));
    let meta = std::fs::metadata(&p).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a file".into()));
    }
    if meta.len() > MAX_IMPORT_BYTES as u64 {
        return Err(bad(format!(
            "{} MiB; chats of at most {} MiB are imported",
            meta.len() >> 20,
            MAX_IMPORT_BYTES >> 20
        )));
    }
    // Bounded read: the file may grow after the check.
    let mut bytes = Vec::new();
    std::fs::File::open(&p)
        .and_then(|f| f.take(MAX_IMPORT_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| bad(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
    let id = lib
        .chat_import_json(&text)
        .map_err(|e| bad(e.to_string()))?;
    lib.chat_record(id)?
        .ok_or_else(|| bad("the imported chat is missing".into()))
}

/// Saves preset `name` (a system prompt and a sampling settings object's JSON
/// text), replacing one of the same name.
#[tauri::command]
pub fn preset_save(
    name: String,
    system: Option<String>,
    settings: String,
    state: State<'_, AppState>,
) -> CommandResult<()> {
    state
        .library()?
        .preset_save(&name, system.as_deref().unwrap_or(""), &settings)
        .map_err(invalid)
}

/// The saved presets, by name.
#[tauri::command]
pub fn presets_list(state: State<'_, AppState>) -> CommandResult<Vec<Preset>> {
    Ok(state.library()?.presets()?)
}

/// Deletes preset `name`; returns whether there was one.
#[tauri::command]
pub fn preset_delete(name: String, state: State<'_, AppState>) -> CommandResult<bool> {
    Ok(state.library()?.preset_delete(&name)?)
}

/// The sampling settings remembered for `model` (its path), if any: a JSON
/// object's text.
#[tauri::command]
pub fn model_settings_get(
    model: String,
    state: State<'_, AppState>,
) -> CommandResult<Option<String>> {
    Ok(state.library()?.model_settings(&model)?)
}

/// Remembers `settings` (a JSON object's text, at most 64 KiB) as the defaults of
/// `model`.
#[tauri::command]
pub fn model_settings_save(
    model: String,
    settings: String,
    state: State<'_, AppState>,
) -> CommandResult<()> {
    state
        .library()?
        .model_settings_save(&model, &settings)
        .map_err(invalid)
}

#[cfg(test)]
mod tests {
    use crate::ipc_tests::Ipc;
    use serde_json::json;

    /// Every command of this module through the IPC: rename, search, export in both
    /// formats (no overwrite unless asked), import (and hostile files refused, naming
    /// them), presets and per-model defaults.
    #[test]
    fn stored_chats_presets_and_defaults_through_the_ipc() {
        let ipc = Ipc::temp("store");
        let lib = ipc.library();
        let id = lib.chat_new("/m/a.gguf", "What is 100% of x_y?").unwrap();
        lib.chat_append(id, "user", "What is 100% of x_y?", None)
            .unwrap();
        lib.chat_append(id, "assistant", "```\nx_y\n```", None)
            .unwrap();

        let r = ipc
            .invoke("chat_rename", json!({"id": id, "title": "Percent"}))
            .unwrap();
        assert_eq!(
            (r["title"].as_str(), r["messages"].as_u64()),
            (Some("Percent"), Some(2))
        );
        let e = ipc
            .invoke("chat_rename", json!({"id": id, "title": "a\nb"}))
            .unwrap_err();
        assert_eq!(e["kind"], "invalid");
        assert!(e["message"].as_str().unwrap().contains("control"), "{e}");
        let e = ipc
            .invoke("chat_rename", json!({"id": 999, "title": "x"}))
            .unwrap_err();
        assert!(e["message"]
            .as_str()
            .unwrap()
            .contains("no stored chat 999"));

        let found = ipc.invoke("chat_search", json!({"query": "X_Y"})).unwrap();
        assert_eq!(found.as_array().unwrap().len(), 1);
        let none = ipc.invoke("chat_search", json!({"query": "x%y"})).unwrap();
        assert!(none.as_array().unwrap().is_empty());

        let json_out = ipc.dir.join("chat.json");
        let md_out = ipc.dir.join("chat.md");
        let js = json_out.display().to_string();
        let n = ipc
            .invoke(
                "chat_export",
                json!({"id": id, "format": "json", "path": js}),
            )
            .unwrap();
        assert_eq!(
            n.as_u64().unwrap(),
            std::fs::metadata(&json_out).unwrap().len()
        );
        ipc.invoke(
            "chat_export",
            json!({"id": id, "format": "markdown", "path": md_out.display().to_string()}),
        )
        .unwrap();
        assert!(std::fs::read_to_string(&md_out)
            .unwrap()
            .starts_with("# Percent\n"));
        let e = ipc
            .invoke(
                "chat_export",
                json!({"id": id, "format": "json", "path": js}),
            )
            .unwrap_err();
        assert!(
            e["message"].as_str().unwrap().contains("already exists"),
            "{e}"
        );
        ipc.invoke(
            "chat_export",
            json!({"id": id, "format": "json", "path": js, "overwrite": true}),
        )
        .unwrap();
        for (args, why) in [
            (
                json!({"id": id, "format": "pdf", "path": js}),
                "json or markdown",
            ),
            (
                json!({"id": id, "format": "json", "path": "rel.json"}),
                "absolute",
            ),
            (
                json!({"id": id, "format": "json", "path": "/no/such/dir/x.json"}),
                "does not exist",
            ),
            (
                json!({"id": 999, "format": "json", "path": js}),
                "no stored chat",
            ),
        ] {
            let e = ipc.invoke("chat_export", args.clone()).unwrap_err();
            assert!(e["message"].as_str().unwrap().contains(why), "{args}: {e}");
        }
        // Overwrite never replaces a folder.
        let folder = ipc.dir.join("folder.json");
        std::fs::create_dir_all(&folder).unwrap();
        assert!(ipc
            .invoke(
                "chat_export",
                json!({"id": id, "format": "json", "path": folder.display().to_string(), "overwrite": true}),
            )
            .is_err());

        let imported = ipc.invoke("chat_import", json!({"path": js})).unwrap();
        assert_ne!(imported["id"], json!(id));
        assert_eq!(
            (imported["title"].as_str(), imported["messages"].as_u64()),
            (Some("Percent"), Some(2))
        );
        let bad = ipc.dir.join("bad.json");
        for (bytes, why) in [
            (b"\xff\xfe{}".to_vec(), "not UTF-8"),
            (br#"{"format":"unicorn-chat","version":9,"messages":[]}"#.to_vec(), "version 9"),
            (br#"{"format":"unicorn-chat","version":1,"messages":[{"role":"root","content":""}]}"#.to_vec(), "role \"root\""),
        ] {
            std::fs::write(&bad, bytes).unwrap();
            let e = ipc
                .invoke("chat_import", json!({"path": bad.display().to_string()}))
                .unwrap_err();
            let m = e["message"].as_str().unwrap();
            assert!(m.starts_with(&bad.display().to_string()) && m.contains(why), "{m}");
            assert!(!m.contains('\n'));
        }
        let big = ipc.dir.join("big.json");
        std::fs::File::create(&big)
            .unwrap()
            .set_len((33 << 20) as u64)
            .unwrap();
        let e = ipc
            .invoke("chat_import", json!({"path": big.display().to_string()}))
            .unwrap_err();
        assert!(
            e["message"].as_str().unwrap().contains("at most 32 MiB"),
            "{e}"
        );
        assert_eq!(
            ipc.invoke("chat_list", json!({}))
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );

        ipc.invoke(
            "preset_save",
            json!({"name": "Precise", "system": "Be exact.", "settings": r#"{"temperature": 0.2}"#}),
        )
        .unwrap();
        ipc.invoke(
            "preset_save",
            json!({"name": "Loose", "system": null, "settings": "{}"}),
        )
        .unwrap();
        let e = ipc
            .invoke(
                "preset_save",
                json!({"name": "x", "system": null, "settings": "[1]"}),
            )
            .unwrap_err();
        assert!(
            e["message"].as_str().unwrap().contains("not a JSON object"),
            "{e}"
        );
        let list = ipc.invoke("presets_list", json!({})).unwrap();
        assert_eq!(list[1]["name"], "Precise");
        assert_eq!(list[1]["settings"], r#"{"temperature":0.2}"#);
        assert_eq!(list[0]["system"], "");
        assert_eq!(
            ipc.invoke("preset_delete", json!({"name": "Loose"}))
                .unwrap(),
            true
        );
        assert_eq!(
            ipc.invoke("presets_list", json!({}))
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            1
        );

        let m = json!({"model": "/m/a.gguf"});
        assert_eq!(
            ipc.invoke("model_settings_get", m.clone()).unwrap(),
            json!(null)
        );
        ipc.invoke(
            "model_settings_save",
            json!({"model": "/m/a.gguf", "settings": r#"{"temperature":0.7,"min_p":0.05}"#}),
        )
        .unwrap();
        let got = ipc.invoke("model_settings_get", m).unwrap();
        let got: serde_json::Value = serde_json::from_str(got.as_str().unwrap()).unwrap();
        assert_eq!(got["min_p"], 0.05);
        let e = ipc
            .invoke(
                "model_settings_save",
                json!({"model": "/m/a.gguf", "settings": "hot"}),
            )
            .unwrap_err();
        assert_eq!(e["kind"], "invalid");
    }
}

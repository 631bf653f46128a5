//! Library: the models the CLI and the app know (SQLite, shared with `unicorn list`),
//! adding one the user dropped, what a model file holds, and the demo model; and
//! managing them: deleting a model's files (only inside the app's models folder and
//! the HF cache unless the user confirmed the path), revealing one in the file
//! manager, and the models folder setting.

use crate::chat::types::Slot;
use crate::error::{existing, CommandError, CommandResult};
use crate::state::AppState;
use std::path::{Path, PathBuf};
use tauri::State;
use unicorn_engine::info::{inspect, ModelInfo};
use unicorn_library::files::DeletionPlan;
use unicorn_library::{Entry, Library};

/// Summary of a model file or folder: architecture, parameters, tensor types, layer
/// pattern, memory. Off the UI thread: headers of a large model take a while.
#[tauri::command]
pub async fn model_info(path: String) -> CommandResult<ModelInfo> {
    let path = existing(&path)?;
    Ok(tauri::async_runtime::spawn_blocking(move || inspect(&path, None)).await??)
}

/// The model library the CLI also writes (`unicorn list`), after recording what the
/// HF cache holds.
#[tauri::command]
pub async fn library_list(state: State<'_, AppState>) -> CommandResult<Vec<Entry>> {
    let db = state.library_db();
    tauri::async_runtime::spawn_blocking(move || list_at(&db)).await?
}

pub(crate) fn list_at(db: &Path) -> CommandResult<Vec<Entry>> {
    let lib = Library::open(db)?;
    lib.scan_hf_cache(&unicorn_hub::cache_dir())?;
    Ok(lib.list()?)
}

/// Adds a dropped or picked model (a `.gguf` file or an HF folder) to the library.
/// The drop handler and the import button both come here; a file that is not a
/// model is refused with the engine's reason, naming it.
#[tauri::command]
pub async fn library_import(path: String, state: State<'_, AppState>) -> CommandResult<Entry> {
    let db = state.library_db();
    tauri::async_runtime::spawn_blocking(move || import_at(&db, &path)).await?
}

pub(crate) fn import_at(db: &Path, path: &str) -> CommandResult<Entry> {
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
    Ok(Library::open(db)?.add(&p, unicorn_library::source::IMPORTED, None)?)
}

/// The demo model the app opens with, when launched to show it (`scripts/run` sets
/// `UNICORN_DEMO`); an installed app starts with an empty library and its welcome.
#[tauri::command]
pub fn demo_model_path() -> Option<String> {
    std::env::var_os("UNICORN_DEMO").and(demo_model_file())
}

/// Where the built-in demo model is (fetched by `scripts/fetch-test-models`), if it is
/// there.
pub fn demo_model_file() -> Option<String> {
    let dir = std::env::var_os("UNICORN_TEST_MODELS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/unicorn/test-models"))
        })?;
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then(|| p.display().to_string())
}

/// The folder the app writes models to: the `models_dir` setting, else the data
/// folder's `models`.
pub(crate) fn models_dir_of(state: &AppState) -> CommandResult<PathBuf> {
    Ok(state.library()?.models_dir(&state.models_dir())?)
}

/// Where deleting needs no confirmation: the models folder (as set, and the
/// default) and the HF cache.
fn allowed_roots(state: &AppState) -> CommandResult<Vec<PathBuf>> {
    Ok(vec![
        models_dir_of(state)?,
        state.models_dir(),
        unicorn_hub::cache_dir(),
    ])
}

/// A path from the webview naming a model in the library (deleting is limited to
/// recorded models).
fn recorded(lib: &Library, path: &str) -> CommandResult<PathBuf> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(CommandError::Invalid(format!(
            "{path}: give an absolute path"
        )));
    }
    if lib.get(&p)?.is_none() {
        return Err(CommandError::Invalid(format!(
            "{path}: not in the library; nothing deleted"
        )));
    }
    Ok(p)
}

/// What deleting the model at `path` would remove (links resolved), the bytes it
/// would free, and whether it lies outside the app's folders (then deleting needs
/// `confirm_outside`).
#[tauri::command]
pub async fn model_delete_plan(
    path: String,
    state: State<'_, AppState>,
) -> CommandResult<DeletionPlan> {
    let lib = state.library()?;
    let p = recorded(&lib, &path)?;
    let roots = allowed_roots(&state)?;
    tauri::async_runtime::spawn_blocking(move || {
        unicorn_library::files::deletion_plan(&p, &roots)
            .map_err(|e| CommandError::Invalid(e.to_string()))
    })
    .await?
}

/// Deletes the files of the model at `path` (every part of a split GGUF; for a
/// model in the HF cache, its repository folder) and its library rows; returns
/// the bytes freed. Outside the app's models folder and the HF cache only with
/// `confirm_outside` (the user confirmed that path). The front end unloads the
/// model first when it is loaded.
#[tauri::command]
pub async fn model_delete(
    path: String,
    confirm_outside: Option<bool>,
    state: State<'_, AppState>,
) -> CommandResult<u64> {
    let db = state.library_db();
    let roots = allowed_roots(&state)?;
    let p = recorded(&Library::open(&db)?, &path)?;
    // A model in use among what goes (a hub model takes its repository folder, so
    // another quantization of it too): the API server's is refused, as its clients
    // would fail mid-reply; the chat slots' are unloaded first.
    let targets: Vec<PathBuf> = unicorn_library::files::deletion_plan(&p, &roots)
        .map_err(|e| CommandError::Invalid(e.to_string()))?
        .targets
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let same = |q: &Path| {
        let q = std::fs::canonicalize(q).unwrap_or_else(|_| q.to_path_buf());
        targets.iter().any(|t| q.starts_with(t))
    };
    if state.server.serving().is_some_and(|s| same(&s)) {
        return Err(CommandError::Invalid(format!(
            "{path}: the API server is serving it; stop the server first"
        )));
    }
    for slot in [Slot::Main, Slot::Side] {
        let w = state.worker(slot);
        if w.held().is_some_and(|h| same(&h)) {
            w.unload().map_err(CommandError::Engine)?;
        }
    }
    tauri::async_runtime::spawn_blocking(move || {
        let lib = Library::open(&db)?;
        lib.delete_model_files(&p, &roots, confirm_outside.unwrap_or(false))
            .map_err(|e| CommandError::Invalid(e.to_string()))
    })
    .await?
}

/// The folder [`model_reveal`] opens for `path`: a file's folder, or a model folder
/// itself, links resolved. Always a folder, so the file manager shows it and
/// nothing is opened or run.
pub(crate) fn reveal_folder(path: &str) -> CommandResult<PathBuf> {
    let p = existing(path)?;
    let dir = if p.is_dir() {
        p
    } else {
        p.parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| CommandError::Invalid(format!("{path}: has no folder")))?
    };
    let dir =
        std::fs::canonicalize(&dir).map_err(|e| CommandError::Invalid(format!("{path}: {e}")))?;
    if !dir.is_dir() {
        return Err(CommandError::Invalid(format!("{path}: not in a folder")));
    }
    Ok(dir)
}

/// Shows the folder holding the model at `path` in the system's file manager
/// (the platform's opener, as links use, given a folder as one argument: no shell,
/// no URL, never a file).
#[tauri::command]
pub fn model_reveal(path: String) -> CommandResult<()> {
    let dir = reveal_folder(&path)?;
    let mut cmd = folder_opener();
    cmd.arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().map_err(|e| {
        CommandError::Invalid(format!(
            "could not start {:?} to show {}: {e}",
            cmd.get_program(),
            dir.display()
        ))
    })?;
    // Reaped on a thread so the opener never lingers as a zombie.
    std::thread::spawn(move || child.wait());
    Ok(())
}

#[cfg(target_os = "macos")]
fn folder_opener() -> std::process::Command {
    std::process::Command::new("open")
}

#[cfg(target_os = "windows")]
fn folder_opener() -> std::process::Command {
    std::process::Command::new("explorer")
}

#[cfg(not(any(target_os = "macos", target_os = "windows")))]
fn folder_opener() -> std::process::Command {
    std::process::Command::new("xdg-open")
}

/// The folder the app writes models to (quantizations).
#[tauri::command]
pub fn models_dir_get(state: State<'_, AppState>) -> CommandResult<String> {
    Ok(models_dir_of(&state)?.display().to_string())
}

/// Sets the folder the app writes models to: absolute, not a system folder,
/// created if missing, and writable. Returns it (links resolved).
#[tauri::command]
pub fn models_dir_set(path: String, state: State<'_, AppState>) -> CommandResult<String> {
    let dir = checked_models_dir(&path)?;
    let shown = dir.display().to_string();
    state
        .library()?
        .set_setting(unicorn_library::settings::MODELS_DIR, &shown)?;
    Ok(shown)
}

pub(crate) fn checked_models_dir(path: &str) -> CommandResult<PathBuf> {
    let bad = |m: &str| CommandError::Invalid(format!("{path}: {m}"));
    let p = PathBuf::from(path.trim());
    if !p.is_absolute() {
        return Err(bad("give an absolute path"));
    }
    if ["/proc", "/sys", "/dev"].iter().any(|r| p.starts_with(r)) {
        return Err(bad("system folders are refused"));
    }
    std::fs::create_dir_all(&p).map_err(|e| bad(&format!("cannot create it: {e}")))?;
    let dir = std::fs::canonicalize(&p).map_err(|e| bad(&e.to_string()))?;
    if !dir.is_dir() {
        return Err(bad("not a folder"));
    }
    let probe = dir.join(format!(".unicorn-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| bad(&format!("not writable: {e}")))?;
    std::fs::remove_file(&probe).ok();
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_refused_with_a_reason() {
        let e = tauri::async_runtime::block_on(model_info("model.gguf".into())).unwrap_err();
        assert!(
            matches!(&e, CommandError::Invalid(m) if m.contains("model.gguf")),
            "{e:?}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_model_names_the_file() {
        let p = std::env::temp_dir().join(format!("unicorn-app-test-{}.gguf", std::process::id()));
        std::fs::write(&p, b"not a model").unwrap();
        let e = tauri::async_runtime::block_on(model_info(p.display().to_string())).unwrap_err();
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
        let demo = demo_model_file().expect("demo model: run scripts/fetch-test-models");
        Library::open(&db)
            .unwrap()
            .add(demo.as_ref(), unicorn_library::source::IMPORTED, None)
            .unwrap();
        let list = list_at(&db).unwrap();
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
        let demo = demo_model_file().expect("demo model: run scripts/fetch-test-models");
        let e = import_at(&db, &demo).unwrap();
        assert_eq!(
            (e.source.as_str(), e.quantization.as_str()),
            ("imported", "Q4_1")
        );
        let refuse = |p: &str| match import_at(&db, p) {
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
            list_at(&db)
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
        let Some(path) = demo_model_file() else {
            panic!("demo model missing: run scripts/fetch-test-models first");
        };
        let info = tauri::async_runtime::block_on(model_info(path)).unwrap();
        assert_eq!(info.architecture, "llama");
        assert_eq!(info.layers, 30);
    }

    fn fake_gguf(p: &Path, bytes: usize) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![0u8; bytes]).unwrap();
    }

    /// Deleting through the IPC: the plan (size, targets, outside or not), a model in
    /// the models folder deleted with its row, one outside refused until confirmed,
    /// a path not in the library refused; disk usage in the listing.
    #[test]
    fn models_are_deleted_through_the_ipc_only_where_allowed() {
        let ipc = crate::ipc_tests::Ipc::temp("delete");
        let demo = demo_model_file().expect("demo model: run scripts/fetch-test-models");
        let inside = ipc.dir.join("models").join("demo.gguf");
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::copy(&demo, &inside).unwrap();
        let size = std::fs::metadata(&inside).unwrap().len();
        let outside = ipc.dir.join("mine").join("demo.gguf");
        std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
        std::fs::copy(&demo, &outside).unwrap();
        for p in [&inside, &outside] {
            ipc.invoke("library_import", serde_json::json!({"path": p}))
                .unwrap();
        }
        let listed = ipc.invoke("library_list", serde_json::json!({})).unwrap();
        let row = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == inside.display().to_string())
            .unwrap()
            .clone();
        assert_eq!(row["disk_bytes"].as_u64(), Some(size));

        let plan = ipc
            .invoke("model_delete_plan", serde_json::json!({"path": inside}))
            .unwrap();
        assert_eq!(plan["bytes"].as_u64(), Some(size));
        assert_eq!(plan["outside"], false);
        let plan = ipc
            .invoke("model_delete_plan", serde_json::json!({"path": outside}))
            .unwrap();
        assert_eq!(plan["outside"], true);

        // In use: the API server's model is refused until the server stops; a chat
        // slot's is unloaded first.
        let started = ipc.invoke(
            "server_start",
            serde_json::json!({"path": inside, "port": 0, "apiKey": null, "parallel": 1}),
        );
        started.unwrap();
        let e = ipc
            .invoke("model_delete", serde_json::json!({"path": inside}))
            .unwrap_err();
        assert!(
            e["message"].as_str().unwrap().contains("stop the server"),
            "{e}"
        );
        assert!(inside.exists());
        ipc.invoke("server_stop", serde_json::json!({})).unwrap();
        ipc.invoke(
            "chat_load",
            serde_json::json!({"path": inside, "device": "cpu", "onProgress": "__CHANNEL__:7"}),
        )
        .unwrap();
        let main = || ipc.state().worker(crate::chat::types::Slot::Main).held();
        assert_eq!(main(), Some(inside.clone()));
        let freed = ipc
            .invoke("model_delete", serde_json::json!({"path": inside}))
            .unwrap();
        assert_eq!(freed.as_u64(), Some(size));
        assert!(!inside.exists());
        let t0 = std::time::Instant::now();
        while main().is_some() && t0.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(main(), None, "the deleted model was unloaded");
        let e = ipc
            .invoke("model_delete", serde_json::json!({"path": outside}))
            .unwrap_err();
        assert!(
            e["message"].as_str().unwrap().contains("confirmation"),
            "{e}"
        );
        assert!(outside.exists());
        ipc.invoke(
            "model_delete",
            serde_json::json!({"path": outside, "confirmOutside": true}),
        )
        .unwrap();
        assert!(!outside.exists());
        let left = ipc.invoke("library_list", serde_json::json!({})).unwrap();
        assert!(!left.as_array().unwrap().iter().any(|e| e["path"]
            .as_str()
            .unwrap()
            .starts_with(&*ipc.dir.display().to_string())));
        // Not in the library: refused, even confirmed; nothing touched.
        let stray = ipc.dir.join("models").join("stray.gguf");
        fake_gguf(&stray, 10);
        let e = ipc
            .invoke(
                "model_delete",
                serde_json::json!({"path": stray, "confirmOutside": true}),
            )
            .unwrap_err();
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("not in the library"),
            "{e}"
        );
        assert!(stray.exists());
        let e = ipc
            .invoke("model_delete", serde_json::json!({"path": "rel.gguf"}))
            .unwrap_err();
        assert!(e["message"].as_str().unwrap().contains("absolute"), "{e}");
    }

    /// The models folder setting: checked, stored, and the folder deleting allows.
    #[test]
    fn the_models_folder_is_set_checked_and_allowed() {
        let ipc = crate::ipc_tests::Ipc::temp("modelsdir");
        let got = ipc.invoke("models_dir_get", serde_json::json!({})).unwrap();
        assert_eq!(got, ipc.dir.join("models").display().to_string());
        let want = ipc.dir.join("elsewhere").join("models");
        let set = ipc
            .invoke("models_dir_set", serde_json::json!({"path": want}))
            .unwrap();
        assert_eq!(set, want.display().to_string());
        assert!(want.is_dir(), "created");
        assert_eq!(
            ipc.invoke("models_dir_get", serde_json::json!({})).unwrap(),
            set
        );
        for (p, why) in [
            ("rel/models", "absolute"),
            ("/proc/models", "system folders"),
        ] {
            let e = ipc
                .invoke("models_dir_set", serde_json::json!({"path": p}))
                .unwrap_err();
            assert!(e["message"].as_str().unwrap().contains(why), "{p}: {e}");
        }
        let file = ipc.dir.join("a-file");
        std::fs::write(&file, "x").unwrap();
        assert!(ipc
            .invoke("models_dir_set", serde_json::json!({"path": file}))
            .is_err());
        // A model in the new folder is deleted without confirmation.
        let demo = demo_model_file().expect("demo model: run scripts/fetch-test-models");
        let m = want.join("demo.gguf");
        std::fs::copy(&demo, &m).unwrap();
        ipc.invoke("library_import", serde_json::json!({"path": m}))
            .unwrap();
        let plan = ipc
            .invoke("model_delete_plan", serde_json::json!({"path": m}))
            .unwrap();
        assert_eq!(plan["outside"], false, "{plan}");
    }

    #[test]
    fn reveal_shows_a_folder_and_never_opens_a_file() {
        let d = std::env::temp_dir().join(format!("unicorn-reveal-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        let f = d.join("m").join("model.gguf");
        fake_gguf(&f, 1);
        let d = std::fs::canonicalize(&d).unwrap();
        assert_eq!(
            reveal_folder(&f.display().to_string()).unwrap(),
            d.join("m")
        );
        assert_eq!(
            reveal_folder(&d.join("m").display().to_string()).unwrap(),
            d.join("m")
        );
        for bad in [
            "model.gguf",
            "/no/such/model.gguf",
            "/dev/null",
            "https://example.com/",
        ] {
            assert!(reveal_folder(bad).is_err(), "{bad}");
        }
        std::fs::remove_dir_all(&d).ok();
    }
}

//! Library: the models the CLI and the app know (SQLite, shared with `unicorn list`),
//! adding one the user dropped, what a model file holds, and the demo model.

use crate::error::{existing, CommandError, CommandResult};
use crate::state::AppState;
use std::path::{Path, PathBuf};
use tauri::State;
use unicorn_engine::info::{inspect, ModelInfo};
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
        let demo = demo_model_path().expect("demo model: run scripts/fetch-test-models");
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
        let demo = demo_model_path().expect("demo model: run scripts/fetch-test-models");
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
        let Some(path) = demo_model_path() else {
            panic!("demo model missing: run scripts/fetch-test-models first");
        };
        let info = tauri::async_runtime::block_on(model_info(path)).unwrap();
        assert_eq!(info.architecture, "llama");
        assert_eq!(info.layers, 30);
    }
}

//! Commands the web front end may call. Each validates its input and returns a
//! serializable error, never a bare string.

use serde::Serialize;
use std::path::PathBuf;
use unicorn_engine::info::{inspect, ModelInfo};
use unicorn_engine::library::{Entry, Library};

/// An error the front end can show: what failed, in words, and on which file.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "camelCase")]
pub enum CommandError {
    /// The request itself is malformed.
    Invalid(String),
    /// The engine failed (the message names the file).
    Engine(String),
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
pub fn library_list() -> Result<Vec<Entry>, CommandError> {
    library_list_at(&unicorn_engine::library::data_dir().join("library.sqlite3"))
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
    fn the_demo_model_is_described_when_present() {
        let Some(path) = demo_model_path() else {
            panic!("demo model missing: run scripts/fetch-test-models first");
        };
        let info = model_info(path).unwrap();
        assert_eq!(info.architecture, "llama");
        assert_eq!(info.layers, 30);
    }
}

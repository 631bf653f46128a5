//! The user's model library: every model they pulled, imported, converted or
//! quantized, and what the HF cache holds, with source, format, size, architecture
//! and quantization, persisted in SQLite under the app's data folder so the desktop
//! app and the CLI see the same list. Rows describe files; only [`files`] deletes a
//! model, and only inside the folders it is given unless the user confirmed the path.
//! Also stored here: conversations ([`chats`], exported and imported by [`export`]),
//! presets, per-model sampling defaults and the app's settings ([`settings`]).

pub mod chats;
pub mod export;
pub mod files;
pub mod settings;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::{Path, PathBuf};
use unicorn_engine::info::inspect;
use unicorn_engine::{Error, Result};

/// The desktop app's bundle identifier: Tauri puts its data folder under this name.
pub const APP_ID: &str = "dev.unicorn.desktop";

/// Where a model came from.
pub mod source {
    /// Downloaded by `unicorn pull` (or found in the HF cache).
    pub const HUB: &str = "hub";
    /// Added by the user (drag-and-drop, `unicorn import`).
    pub const IMPORTED: &str = "imported";
    /// Written by `unicorn convert`.
    pub const CONVERTED: &str = "converted";
    /// Written by `unicorn quantize`.
    pub const QUANTIZED: &str = "quantized";
}

/// One model in the library.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Entry {
    /// File or folder.
    pub path: String,
    /// [`source`]: hub, imported, converted, quantized.
    pub source: String,
    /// Repository id, for models from the hub.
    pub repo: Option<String>,
    /// `gguf` or `safetensors`.
    pub format: String,
    /// Bytes of weights on disk.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub size_bytes: u64,
    /// Bytes deleting it would free ([`files::disk_usage`] of what
    /// [`files::deletion_targets`] names: every part of a split GGUF, the whole
    /// repository folder of a model in the HF cache); 0 when it is gone.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub disk_bytes: u64,
    /// Engine architecture name.
    pub architecture: String,
    /// `Q4_K_M`, `BF16`, ...: the file type, or the dominant tensor type.
    pub quantization: String,
    /// Number of weights.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub parameters: u64,
    /// Unix time it was added or last refreshed.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub added_at: i64,
    /// Whether the path still exists.
    pub present: bool,
}

/// The library database.
pub struct Library {
    pub(crate) conn: Connection,
    path: PathBuf,
}

/// The app data folder: `UNICORN_DATA_DIR`, else the platform's data folder for
/// [`APP_ID`] (where Tauri's `app_data_dir` points).
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("UNICORN_DATA_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let base = if cfg!(target_os = "macos") {
        home.join("Library/Application Support")
    } else if cfg!(windows) {
        std::env::var_os("APPDATA")
            .map(PathBuf::from)
            .unwrap_or(home)
    } else {
        std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".local/share"))
    };
    base.join(APP_ID)
}

pub(crate) fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::BadFile {
        path: path.to_path_buf(),
        message: format!("model library: {e}"),
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// llama.cpp's `general.file_type` names.
fn file_type_name(t: u64) -> Option<&'static str> {
    Some(match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

impl Library {
    /// Opens (creating if needed) the library in [`data_dir`].
    pub fn open_default() -> Result<Self> {
        Self::open(&data_dir().join("library.sqlite3"))
    }

    /// Opens (creating if needed) the library at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(sql(path))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS models (
                 path TEXT PRIMARY KEY,
                 source TEXT NOT NULL,
                 repo TEXT,
                 format TEXT NOT NULL,
                 size_bytes INTEGER NOT NULL,
                 architecture TEXT NOT NULL,
                 quantization TEXT NOT NULL,
                 parameters INTEGER NOT NULL,
                 added_at INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS chats (
                 id INTEGER PRIMARY KEY,
                 model TEXT NOT NULL,
                 title TEXT NOT NULL,
                 created_at INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS chat_messages (
                 chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
                 seq INTEGER NOT NULL,
                 role TEXT NOT NULL,
                 content TEXT NOT NULL,
                 stats TEXT,
                 PRIMARY KEY (chat_id, seq)
             );
             CREATE TABLE IF NOT EXISTS presets (
                 name TEXT PRIMARY KEY,
                 system TEXT,
                 settings TEXT
             );
             CREATE TABLE IF NOT EXISTS model_settings (
                 model TEXT PRIMARY KEY,
                 settings TEXT
             );
             CREATE TABLE IF NOT EXISTS settings (
                 key TEXT PRIMARY KEY,
                 value TEXT
             );",
        )
        .map_err(sql(path))?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the model at `model` and records it (replacing an older row for the same
    /// path, keeping its original source unless `source` says otherwise).
    pub fn add(&self, model: &Path, source: &str, repo: Option<&str>) -> Result<Entry> {
        // Absolute, but symlinks kept: an HF snapshot's file names its blob by hash.
        let model = std::path::absolute(model).map_err(|e| Error::Io {
            path: model.to_path_buf(),
            source: e,
        })?;
        let info = inspect(&model, Some(1))?;
        let quantization = quantization_of(&model, &info)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let e = Entry {
            path: model.display().to_string(),
            source: source.to_string(),
            repo: repo.map(str::to_string),
            format: info.format.clone(),
            size_bytes: info.file_bytes,
            disk_bytes: files::model_disk_usage(&model),
            architecture: info.architecture.clone(),
            quantization,
            parameters: info.parameters,
            added_at: now,
            present: true,
        };
        self.conn
            .execute(
                "INSERT INTO models (path, source, repo, format, size_bytes, architecture, quantization, parameters, added_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(path) DO UPDATE SET source = ?2, repo = COALESCE(?3, repo), format = ?4,
                     size_bytes = ?5, architecture = ?6, quantization = ?7, parameters = ?8, added_at = ?9",
                params![e.path, e.source, e.repo, e.format, e.size_bytes as i64, e.architecture, e.quantization, e.parameters as i64, e.added_at],
            )
            .map_err(sql(&self.path))?;
        Ok(e)
    }

    /// Drops the row for `model` (the files stay). Returns whether there was one.
    pub fn forget(&self, model: &Path) -> Result<bool> {
        let p = std::path::absolute(model).unwrap_or_else(|_| model.to_path_buf());
        let n = self
            .conn
            .execute(
                "DELETE FROM models WHERE path = ?1",
                params![p.display().to_string()],
            )
            .map_err(sql(&self.path))?;
        Ok(n > 0)
    }

    /// One row, if recorded.
    pub fn get(&self, model: &Path) -> Result<Option<Entry>> {
        let p = std::path::absolute(model).unwrap_or_else(|_| model.to_path_buf());
        self.conn
            .query_row(
                "SELECT path, source, repo, format, size_bytes, architecture, quantization, parameters, added_at FROM models WHERE path = ?1",
                params![p.display().to_string()],
                row_to_entry,
            )
            .optional()
            .map_err(sql(&self.path))
    }

    /// Every recorded model, newest first.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let mut st = self
            .conn
            .prepare("SELECT path, source, repo, format, size_bytes, architecture, quantization, parameters, added_at FROM models ORDER BY added_at DESC, path")
            .map_err(sql(&self.path))?;
        let rows = st.query_map([], row_to_entry).map_err(sql(&self.path))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(sql(&self.path))
    }

    /// Records the models in the HF cache: each repository's `main` snapshot that is
    /// a model folder, and each `.gguf` in a snapshot. Returns how many were added;
    /// ones that fail to read are skipped (the cache holds non-model repos too).
    pub fn scan_hf_cache(&self, cache: &Path) -> Result<usize> {
        let Ok(dirs) = std::fs::read_dir(cache) else {
            return Ok(0);
        };
        let mut n = 0;
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix("models--") else {
                continue;
            };
            let repo = id.replacen("--", "/", 1);
            let Some(snap) = unicorn_hub::cached_snapshot(cache, &repo, "main") else {
                continue;
            };
            let mut candidates = Vec::new();
            if snap.join("config.json").is_file() {
                candidates.push(snap.clone());
            }
            if let Ok(files) = std::fs::read_dir(&snap) {
                candidates.extend(
                    files
                        .flatten()
                        .map(|f| f.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "gguf")),
                );
            }
            for c in candidates {
                let known = self.get(&c)?.is_some();
                if !known && self.add(&c, source::HUB, Some(&repo)).is_ok() {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

fn row_to_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let path: String = r.get(0)?;
    Ok(Entry {
        present: Path::new(&path).exists(),
        disk_bytes: files::model_disk_usage(Path::new(&path)),
        path,
        source: r.get(1)?,
        repo: r.get(2)?,
        format: r.get(3)?,
        size_bytes: r.get::<_, i64>(4)? as u64,
        architecture: r.get(5)?,
        quantization: r.get(6)?,
        parameters: r.get::<_, i64>(7)? as u64,
        added_at: r.get(8)?,
    })
}

/// The name users know a model's quantization by: a GGUF's file type (`Q4_K_M`), else
/// the type holding the most weights (`BF16`, `NF4`).
pub fn quantization_of(model: &Path, info: &unicorn_engine::info::ModelInfo) -> Result<String> {
    let named = if info.format == "gguf" {
        unicorn_engine::gguf::GgufFile::open(model)?
            .u64_opt("general.file_type")?
            .and_then(file_type_name)
            .map(str::to_string)
    } else {
        None
    };
    Ok(named
        .or_else(|| info.tensor_types.first().map(|t| t.r#type.clone()))
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_lists_refreshes_and_forgets() {
        let dir = std::env::temp_dir().join(format!("unicorn-lib-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let lib = Library::open(&dir.join("lib.sqlite3")).unwrap();
        let tiny = unicorn_test_support::golden_path("tiny");
        let a = lib
            .add(&tiny.join("qwen2"), source::IMPORTED, None)
            .unwrap();
        assert_eq!(
            (
                a.architecture.as_str(),
                a.format.as_str(),
                a.quantization.as_str()
            ),
            ("qwen2", "safetensors", "F32")
        );
        assert_eq!(a.parameters, 181_312);
        lib.add(
            &tiny.join("gemma3_multimodal_layout"),
            source::HUB,
            Some("org/x"),
        )
        .unwrap();
        // Re-adding refreshes the row instead of duplicating it.
        lib.add(&tiny.join("qwen2"), source::CONVERTED, None)
            .unwrap();
        let all = lib.list().unwrap();
        assert_eq!(all.len(), 2);
        let q = all.iter().find(|e| e.architecture == "qwen2").unwrap();
        assert_eq!(q.source, source::CONVERTED);
        // Persisted: a second connection sees the same rows.
        drop(lib);
        let lib = Library::open(&dir.join("lib.sqlite3")).unwrap();
        assert_eq!(lib.list().unwrap().len(), 2);
        assert!(lib.forget(&tiny.join("qwen2")).unwrap());
        assert!(!lib.forget(&tiny.join("qwen2")).unwrap());
        assert_eq!(lib.list().unwrap()[0].repo.as_deref(), Some("org/x"));
        // A model that is not readable is an error naming it, and no row.
        let e = lib
            .add(&dir.join("lib.sqlite3"), source::IMPORTED, None)
            .unwrap_err();
        assert!(e.to_string().contains("lib.sqlite3"), "{e}");
        assert_eq!(lib.list().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }
}

//! What the user keeps besides models and chats: named presets (a system prompt and
//! sampling settings), each model's remembered sampling defaults, and the app's
//! settings (such as [`MODELS_DIR`]). Sampling settings are JSON objects the front
//! end defines; the library only checks that they are one, and bounded.

use crate::{sql, Library};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use unicorn_engine::{Error, Result};

/// Largest settings object stored (its JSON text).
pub const MAX_SETTINGS_BYTES: usize = 64 << 10;
/// Longest preset name, in characters.
pub const MAX_PRESET_NAME: usize = 100;
/// Longest system prompt kept in a preset (bytes).
pub const MAX_SYSTEM_BYTES: usize = 4 << 20;
/// Longest setting key and value (bytes).
const MAX_KEY: usize = 200;
const MAX_VALUE: usize = 64 << 10;

/// The setting naming the folder the app writes models to (absolute path).
pub const MODELS_DIR: &str = "models_dir";

/// A named preset: system prompt and sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Preset {
    /// Its name (unique).
    pub name: String,
    /// The system prompt (empty: none).
    pub system: String,
    /// Sampling settings: a JSON object's text, as the front end saved it.
    pub settings: String,
}

/// Checks a settings object's JSON text: it parses, is an object, and is at most
/// [`MAX_SETTINGS_BYTES`]. Returns it re-serialized (compact).
pub fn check_settings(json: &str) -> Result<String> {
    if json.len() > MAX_SETTINGS_BYTES {
        return Err(Error::Invalid(format!(
            "settings: {} bytes; at most {} KiB are stored",
            json.len(),
            MAX_SETTINGS_BYTES >> 10
        )));
    }
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| Error::Invalid(format!("settings: not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::Invalid("settings: not a JSON object".into()));
    }
    Ok(v.to_string())
}

/// Checks a name shown to the user (a chat title, a preset name): not blank, at most
/// `max` characters, no control characters. Returns it trimmed.
pub fn check_name(what: &str, name: &str, max: usize) -> Result<String> {
    let t = name.trim();
    if t.is_empty() {
        return Err(Error::Invalid(format!("{what}: empty")));
    }
    if t.chars().count() > max {
        return Err(Error::Invalid(format!(
            "{what}: longer than {max} characters"
        )));
    }
    if t.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{what}: control characters (such as line breaks or tabs) are not allowed"
        )));
    }
    Ok(t.to_string())
}

impl Library {
    /// Saves preset `name` (replacing one of that name).
    pub fn preset_save(&self, name: &str, system: &str, settings_json: &str) -> Result<()> {
        let name = check_name("preset name", name, MAX_PRESET_NAME)?;
        if system.len() > MAX_SYSTEM_BYTES {
            return Err(Error::Invalid(format!(
                "preset {name:?}: the system prompt is over {} MiB",
                MAX_SYSTEM_BYTES >> 20
            )));
        }
        let settings = check_settings(settings_json)
            .map_err(|e| Error::Invalid(format!("preset {name:?}: {e}")))?;
        self.conn
            .execute(
                "INSERT INTO presets (name, system, settings) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET system = ?2, settings = ?3",
                params![name, system, settings],
            )
            .map_err(sql(self.path()))?;
        Ok(())
    }

    /// Every preset, by name.
    pub fn presets(&self) -> Result<Vec<Preset>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT name, system, settings FROM presets ORDER BY name COLLATE NOCASE, name",
            )
            .map_err(sql(self.path()))?;
        let rows = st
            .query_map([], |r| {
                let settings: Option<String> = r.get(2)?;
                Ok(Preset {
                    name: r.get(0)?,
                    system: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    settings: settings.unwrap_or_else(|| "{}".into()),
                })
            })
            .map_err(sql(self.path()))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sql(self.path()))
    }

    /// Deletes preset `name`; returns whether there was one.
    pub fn preset_delete(&self, name: &str) -> Result<bool> {
        let n = self
            .conn
            .execute("DELETE FROM presets WHERE name = ?1", params![name.trim()])
            .map_err(sql(self.path()))?;
        Ok(n > 0)
    }

    /// Remembers `json` (a settings object) as the defaults of `model` (its path).
    pub fn model_settings_save(&self, model: &str, json: &str) -> Result<()> {
        if model.is_empty() || model.len() > 4096 {
            return Err(Error::Invalid(
                "model settings: the model path is empty or too long".into(),
            ));
        }
        let settings = check_settings(json)?;
        self.store_value(
            "INSERT INTO model_settings (model, settings) VALUES (?1, ?2)
             ON CONFLICT(model) DO UPDATE SET settings = ?2",
            model,
            &settings,
        )
    }

    /// The remembered defaults of `model`, if any (a JSON object's text).
    pub fn model_settings(&self, model: &str) -> Result<Option<String>> {
        self.value_of(
            "SELECT settings FROM model_settings WHERE model = ?1",
            model,
        )
    }

    /// The value of setting `key`, if set.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.value_of("SELECT value FROM settings WHERE key = ?1", key)
    }

    /// The text `query` finds for `key` in one of the key-value tables.
    fn value_of(&self, query: &str, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row(query, params![key], |r| r.get::<_, Option<String>>(0))
            .optional()
            .map(Option::flatten)
            .map_err(sql(self.path()))
    }

    /// Stores `value` for `key` with `upsert` in one of the key-value tables.
    fn store_value(&self, upsert: &str, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(upsert, params![key, value])
            .map_err(sql(self.path()))?;
        Ok(())
    }

    /// Sets `key` to `value`.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        if key.is_empty() || key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(Error::Invalid(format!(
                "setting {:?}: the key or the value is too long",
                key.chars().take(40).collect::<String>()
            )));
        }
        self.store_value(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = ?2",
            key,
            value,
        )
    }

    /// The folder the app writes models to: the [`MODELS_DIR`] setting, else
    /// `default` (the app passes its data folder's `models`).
    pub fn models_dir(&self, default: &std::path::Path) -> Result<std::path::PathBuf> {
        Ok(self
            .setting(MODELS_DIR)?
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| default.to_path_buf()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(name: &str) -> (Library, std::path::PathBuf) {
        let d =
            std::env::temp_dir().join(format!("unicorn-settings-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        (Library::open(&d.join("library.sqlite3")).unwrap(), d)
    }

    #[test]
    fn presets_are_saved_replaced_listed_and_deleted() {
        let (lib, d) = lib("presets");
        lib.preset_save("Precise", "Answer briefly.", r#"{"temperature":0.2}"#)
            .unwrap();
        lib.preset_save("creative", "", r#"{"temperature":1.1,"top_p":0.95}"#)
            .unwrap();
        // Same name: replaced, not duplicated.
        lib.preset_save(" Precise ", "Be exact.", r#"{"temperature":0}"#)
            .unwrap();
        let all = lib.presets().unwrap();
        assert_eq!(
            all.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["creative", "Precise"]
        );
        assert_eq!(all[1].system, "Be exact.");
        assert_eq!(all[1].settings, r#"{"temperature":0}"#);
        // Survives reopening.
        drop(lib);
        let lib = Library::open(&d.join("library.sqlite3")).unwrap();
        assert_eq!(lib.presets().unwrap().len(), 2);
        assert!(lib.preset_delete("creative").unwrap());
        assert!(!lib.preset_delete("creative").unwrap());
        assert_eq!(lib.presets().unwrap().len(), 1);
        // Refused, with the reason.
        let err = |r: Result<()>| r.unwrap_err().to_string();
        assert!(err(lib.preset_save("", "", "{}")).contains("empty"));
        assert!(err(lib.preset_save("a\nb", "", "{}")).contains("control"));
        assert!(err(lib.preset_save(&"n".repeat(101), "", "{}")).contains("100"));
        assert!(err(lib.preset_save("x", "", "[1]")).contains("not a JSON object"));
        assert!(err(lib.preset_save("x", "", "{")).contains("not valid JSON"));
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(70_000));
        assert!(err(lib.preset_save("x", "", &big)).contains("64 KiB"));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn model_defaults_and_settings_are_remembered() {
        let (lib, d) = lib("models");
        assert_eq!(lib.model_settings("/m/a.gguf").unwrap(), None);
        lib.model_settings_save("/m/a.gguf", r#"{ "temperature": 0.7 }"#)
            .unwrap();
        lib.model_settings_save("/m/a.gguf", r#"{"temperature":0.5,"min_p":0.05}"#)
            .unwrap();
        let s: serde_json::Value =
            serde_json::from_str(&lib.model_settings("/m/a.gguf").unwrap().unwrap()).unwrap();
        assert_eq!(s["min_p"], 0.05);
        assert!(lib.model_settings_save("/m/a.gguf", "3").is_err());

        let default = d.join("models");
        assert_eq!(lib.models_dir(&default).unwrap(), default);
        assert_eq!(lib.setting(MODELS_DIR).unwrap(), None);
        lib.set_setting(MODELS_DIR, "/data/models").unwrap();
        lib.set_setting(MODELS_DIR, "/big/models").unwrap();
        assert_eq!(
            lib.setting(MODELS_DIR).unwrap().as_deref(),
            Some("/big/models")
        );
        assert_eq!(
            lib.models_dir(&default).unwrap(),
            std::path::PathBuf::from("/big/models")
        );
        assert!(lib.set_setting("", "x").is_err());
        std::fs::remove_dir_all(&d).ok();
    }
}

//! `config.json` with typed getters whose errors name the file and key. For
//! multimodal checkpoints the text model's keys live under `text_config`, which lists
//! only what differs from the defaults; [`HfConfig::text`] reads there first.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A parsed `config.json`.
#[derive(Debug, Clone)]
pub struct HfConfig {
    path: PathBuf,
    root: Value,
}

impl HfConfig {
    /// Reads and parses `path`.
    pub fn open(path: &Path) -> Result<Self> {
        // A config is a few kB; a larger one is not a config.
        const MAX_BYTES: u64 = 16 << 20;
        let mut text = Vec::new();
        use std::io::Read;
        crate::source::open_regular(path)?
            .take(MAX_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if text.len() as u64 > MAX_BYTES {
            return Err(Error::BadFile {
                path: path.to_path_buf(),
                message: format!("larger than {MAX_BYTES} bytes: not a config"),
            });
        }
        let root: Value = serde_json::from_slice(&text).map_err(|e| Error::BadFile {
            path: path.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        })?;
        if !root.is_object() {
            return Err(Error::BadFile {
                path: path.to_path_buf(),
                message: "expected a JSON object".into(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            root,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole document.
    pub fn json(&self) -> &Value {
        &self.root
    }

    /// `architectures[0]`, or `model_type` when the list is missing.
    pub fn architecture(&self) -> Result<String> {
        if let Some(a) = self.root["architectures"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
        {
            return Ok(a.to_string());
        }
        self.root["model_type"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.err("architectures", "missing (and no model_type)"))
    }

    /// A text-model key: from `text_config` when there is one, else the top level.
    pub fn text(&self, key: &str) -> Option<&Value> {
        let v = self
            .root
            .get("text_config")
            .and_then(|t| t.get(key))
            .filter(|v| !v.is_null());
        v.or_else(|| self.root.get(key).filter(|v| !v.is_null()))
    }

    pub(crate) fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Metadata {
            path: self.path.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// An optional non-negative integer text-model key, within its size limit
    /// ([`crate::models::size_limit`]).
    pub fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.text(key) else {
            return Ok(None);
        };
        let n = v
            .as_u64()
            .ok_or_else(|| self.err(key, format!("expected a non-negative integer, found {v}")))?;
        let most = crate::models::size_limit(key).unwrap_or(u32::MAX as u64);
        if n > most {
            return Err(self.err(key, format!("{n} is more than {most}: not a real model")));
        }
        Ok(Some(n as usize))
    }

    /// A required non-negative integer text-model key.
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?.ok_or_else(|| self.err(key, "missing"))
    }

    /// An optional number.
    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.text(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, found {v}"))),
        }
    }

    /// An optional boolean.
    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.text(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected true or false, found {v}"))),
        }
    }

    /// An optional string.
    pub fn str_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.text(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a string, found {v}"))),
        }
    }

    /// Token ids from a key that holds one id or a list (`eos_token_id`).
    pub fn ids(&self, key: &str) -> Result<Vec<u32>> {
        ids_of(self.text(key)).ok_or_else(|| self.err(key, "expected an id or a list of ids"))
    }

    /// Rope parameters as (theta, scaling) for one attention type. Reads the
    /// classic keys (`rope_theta`, `rope_scaling`) or transformers 5's
    /// `rope_parameters`, flat or keyed by layer type (`full_attention`,
    /// `sliding_attention`). `default_theta` applies when neither names a theta.
    pub fn rope(
        &self,
        layer_type: Option<&str>,
        default_theta: f64,
    ) -> Result<(f64, crate::attention::RopeScaling)> {
        let params = self.text("rope_parameters");
        let params = match (params, layer_type) {
            (Some(p), Some(lt)) if p.get(lt).is_some() => p.get(lt),
            (p, _) => p,
        };
        let theta = match params.and_then(|p| p.get("rope_theta")) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err("rope_parameters.rope_theta", "expected a number"))?,
            None => self.f64_opt("rope_theta")?.unwrap_or(default_theta),
        };
        let scaling = params.or_else(|| self.text("rope_scaling"));
        let max_positions = self.usize_opt("max_position_embeddings")?;
        let scaling = crate::attention::RopeScaling::from_hf(scaling, max_positions)
            .map_err(|(key, message)| self.err(&key, message))?;
        Ok((theta, scaling))
    }
}

/// One id or a list of ids, as `eos_token_id` may be written.
pub(crate) fn ids_of(v: Option<&Value>) -> Option<Vec<u32>> {
    match v {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]),
        Some(Value::Array(a)) => a.iter().map(|x| x.as_u64().map(|x| x as u32)).collect(),
        Some(_) => None,
    }
}

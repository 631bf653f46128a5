//! The tokenizer side of an HF folder: `tokenizer.json`, `tokenizer_config.json`
//! (special tokens, BOS policy, chat template), `chat_template.jinja` as newer
//! transformers save it, and `generation_config.json` (EOS ids, default sampling).
//! Every file is optional: a folder without them runs from token ids only.

use super::config::ids_of;
use crate::error::{Error, Result};
use crate::sampler::SamplingParams;
use crate::tokenizer::Tokenizer;
use serde_json::Value;
use std::path::Path;

/// What the tokenizer files of a folder say.
#[derive(Default)]
pub struct TokenizerFiles {
    /// The tokenizer, if `tokenizer.json` exists.
    pub tokenizer: Option<Tokenizer>,
    /// The chat template source, if any.
    pub chat_template: Option<String>,
    /// Ids that end generation (from generation_config.json and config.json).
    pub eos_ids: Vec<u32>,
    /// Sampling the model's authors recommend, if generation_config.json says.
    pub sampling: Option<SamplingParams>,
}

/// Largest JSON side file read (tokenizer_config.json holds a template, which is
/// small; a bigger one is not a config).
const MAX_JSON: u64 = 16 << 20;
/// Largest tokenizer.json read (Gemma 3's 262k vocabulary is 33 MB).
const MAX_TOKENIZER: u64 = 256 << 20;
/// Largest chat template read.
const MAX_TEMPLATE: u64 = 1 << 20;

fn read_json(dir: &Path, name: &str) -> Result<Option<Value>> {
    let Some(bytes) = crate::source::read_folder_file(dir, name, MAX_JSON)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::BadFile {
            path: dir.join(name),
            message: format!("not valid JSON: {e}"),
        })
}

/// A special token as tokenizer_config.json writes it: a string or `{"content": ..}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Reads the tokenizer files of `dir`; `config` is its parsed `config.json`.
pub fn read(dir: &Path, config: &Value) -> Result<TokenizerFiles> {
    let tc = read_json(dir, "tokenizer_config.json")?.unwrap_or(Value::Null);
    let gen_path = dir.join("generation_config.json");
    let gen = read_json(dir, "generation_config.json")?.unwrap_or(Value::Null);

    let tok_path = dir.join("tokenizer.json");
    let tokenizer = match crate::source::read_folder_file(dir, "tokenizer.json", MAX_TOKENIZER)? {
        Some(bytes) => {
            let bos = token_text(tc.get("bos_token"));
            let eos = token_text(tc.get("eos_token"));
            let add_bos = tc.get("add_bos_token").and_then(Value::as_bool);
            Some(Tokenizer::from_bytes(
                &tok_path,
                &bytes,
                bos.as_deref(),
                eos.as_deref(),
                add_bos,
            )?)
        }
        None => None,
    };

    let chat_template = match tc.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        // A list of named templates: the default one is for chat.
        Some(Value::Array(list)) => list
            .iter()
            .find(|t| t["name"] == "default")
            .or_else(|| list.first())
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => None,
    };
    let chat_template = match chat_template {
        Some(t) => Some(t),
        None => match crate::source::read_folder_file(dir, "chat_template.jinja", MAX_TEMPLATE)? {
            Some(bytes) => Some(String::from_utf8(bytes).map_err(|_| Error::BadFile {
                path: dir.join("chat_template.jinja"),
                message: "not UTF-8 text".into(),
            })?),
            None => read_json(dir, "chat_template.json")?
                .and_then(|v| v["chat_template"].as_str().map(str::to_string)),
        },
    };

    let mut eos_ids = Vec::new();
    for (path, v) in [
        (&gen_path, gen.get("eos_token_id")),
        (&dir.join("config.json"), config.get("eos_token_id")),
        (
            &dir.join("config.json"),
            config
                .get("text_config")
                .and_then(|t| t.get("eos_token_id")),
        ),
    ] {
        let ids = ids_of(v).ok_or_else(|| Error::Metadata {
            path: path.to_path_buf(),
            key: "eos_token_id".into(),
            message: "expected an id or a list of ids".into(),
        })?;
        for id in ids {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
    }
    if let Some(t) = &tokenizer {
        if let Some(id) = t.eos_id {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
    }

    let sampling = if gen.get("do_sample").and_then(Value::as_bool) == Some(true) {
        let d = SamplingParams::default();
        let f = |k: &str| gen.get(k).and_then(Value::as_f64);
        Some(SamplingParams {
            temperature: f("temperature").map_or(1.0, |x| x as f32),
            top_k: f("top_k").map_or(50, |x| x as usize),
            top_p: f("top_p").map_or(1.0, |x| x as f32),
            min_p: f("min_p").map_or(0.0, |x| x as f32),
            repeat_penalty: f("repetition_penalty").map_or(1.0, |x| x as f32),
            ..d
        })
    } else {
        None
    };
    Ok(TokenizerFiles {
        tokenizer,
        chat_template,
        eos_ids,
        sampling,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_eos_ids_sampling_and_every_template_location() {
        let dir = std::env::temp_dir().join(format!("unicorn-tokfiles-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        let w = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        // Nothing at all: a model that runs from ids.
        let f = read(&dir, &serde_json::json!({})).unwrap();
        assert!(f.tokenizer.is_none() && f.chat_template.is_none() && f.sampling.is_none());
        w(
            "generation_config.json",
            r#"{"do_sample": true, "temperature": 0.6, "top_p": 0.9, "top_k": 20, "eos_token_id": [1, 106]}"#,
        );
        w("chat_template.jinja", "{{ messages[0]['content'] }}");
        let f = read(&dir, &serde_json::json!({"eos_token_id": 2})).unwrap();
        assert_eq!(f.eos_ids, vec![1, 106, 2]);
        let s = f.sampling.unwrap();
        assert_eq!(
            (s.temperature, s.top_p, s.top_k, s.min_p),
            (0.6, 0.9, 20, 0.0)
        );
        assert_eq!(
            f.chat_template.as_deref(),
            Some("{{ messages[0]['content'] }}")
        );
        // tokenizer_config.json's template wins, and may be a list of named ones.
        w(
            "tokenizer_config.json",
            r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
        );
        assert_eq!(
            read(&dir, &serde_json::json!({}))
                .unwrap()
                .chat_template
                .as_deref(),
            Some("D")
        );
        // Greedy by default when do_sample is not set.
        w("generation_config.json", r#"{"eos_token_id": 7}"#);
        let f = read(&dir, &serde_json::json!({})).unwrap();
        assert!(f.sampling.is_none());
        assert_eq!(f.eos_ids, vec![7]);
        // Malformed files name themselves.
        w("generation_config.json", r#"{"eos_token_id": "x"}"#);
        let e = read(&dir, &serde_json::json!({}))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("generation_config.json") && e.contains("eos_token_id"),
            "{e}"
        );
        w("tokenizer_config.json", "{not json");
        let e = read(&dir, &serde_json::json!({}))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tokenizer_config.json"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

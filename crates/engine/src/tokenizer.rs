//! Tokenizers: HF `tokenizer.json` when there is one, otherwise built from GGUF
//! metadata (GPT-2 byte-level BPE with merges, or SentencePiece-style with scores and
//! byte fallback), with ids equal to the HF tokenizer's. Streaming detokenization
//! never emits broken UTF-8.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use std::path::Path;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, NormalizerWrapper, SplitDelimiterBehavior};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_NORMAL: i64 = 1;
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;
/// A slot with no piece (llama.cpp's vocabulary padding): never produced or matched.
const TOKEN_UNUSED: i64 = 5;

/// SentencePiece's visible space.
const SPIECE_SPACE: &str = "\u{2581}";
/// `tokenizer.ggml.model` of SentencePiece vocabularies. GGUF names the tokenizer
/// kind after the model family that introduced it; this is not an architecture.
pub const MODEL_SPM: &str = "llama";
/// `tokenizer.ggml.model` of GPT-2-style byte-level BPE vocabularies.
pub const MODEL_BPE: &str = "gpt2";
/// `tokenizer.ggml.pre` of Qwen 2's pre-tokenizer (a tokenizer name, like the others
/// written inline below; this one only looks like an architecture).
const PRE_QWEN2: &str = "qwen2";

/// Llama 3's pre-tokenizer split (llama.cpp `llama-bpe`).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's pre-tokenizer split (llama.cpp `qwen2`).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer plus the special ids generation needs.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Beginning-of-sequence id, if the model has one.
    pub bos_id: Option<u32>,
    /// Whether prompts start with BOS.
    pub add_bos: bool,
    /// Text of the BOS token (for chat templates).
    pub bos_token: String,
    /// Text of the EOS token (for chat templates).
    pub eos_token: String,
    /// The GGUF / config EOS id.
    pub eos_id: Option<u32>,
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let model = g.string("tokenizer.ggml.model")?;
        let tokens = g.strings("tokenizer.ggml.tokens")?;
        let types = match g.get("tokenizer.ggml.token_type") {
            Some(_) => g.i64s("tokenizer.ggml.token_type")?,
            None => vec![TOKEN_NORMAL; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(bad(
                g,
                "tokenizer.ggml.token_type has a different length than tokens",
            ));
        }
        let inner = match model.as_str() {
            MODEL_BPE => gpt2_from_gguf(g, &tokens, &types)?,
            MODEL_SPM => spm_from_gguf(g, &tokens, &types)?,
            other => {
                return Err(Error::Metadata {
                    path: g.path().to_path_buf(),
                    key: "tokenizer.ggml.model".into(),
                    message: format!("tokenizer model `{other}` is not supported (gpt2, llama)"),
                })
            }
        };
        let bos_id = g.u64_opt("tokenizer.ggml.bos_token_id")?.map(|x| x as u32);
        let eos_id = g.u64_opt("tokenizer.ggml.eos_token_id")?.map(|x| x as u32);
        let text = |id: Option<u32>| {
            id.and_then(|i| tokens.get(i as usize).cloned())
                .unwrap_or_default()
        };
        Ok(Self {
            bos_token: text(bos_id),
            eos_token: text(eos_id),
            add_bos: g
                .bool_opt("tokenizer.ggml.add_bos_token")?
                .unwrap_or(model == MODEL_SPM)
                && bos_id.is_some(),
            bos_id,
            eos_id,
            inner,
        })
    }

    /// Loads an HF `tokenizer.json`; special tokens come from the caller (they live in
    /// `tokenizer_config.json` or GGUF metadata). Whether prompts start with BOS is
    /// `add_bos` when given, otherwise what the file's post-processor does.
    pub fn from_file(
        path: &Path,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
        add_bos: Option<bool>,
    ) -> Result<Self> {
        let mut f = crate::source::open_regular(path)?;
        let mut bytes = Vec::new();
        use std::io::Read;
        f.read_to_end(&mut bytes).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(path, &bytes, bos_token, eos_token, add_bos)
    }

    /// [`Tokenizer::from_file`] of the bytes of `path`, already read.
    pub fn from_bytes(
        path: &Path,
        bytes: &[u8],
        bos_token: Option<&str>,
        eos_token: Option<&str>,
        add_bos: Option<bool>,
    ) -> Result<Self> {
        // The JSON is checked whole first: the tokenizers crate panics (an
        // `expect`, decoders/mod.rs) on a syntax error inside `decoder` (found by
        // fuzzing), where on valid JSON it returns errors.
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            .map_err(|e| Error::Tokenizer(format!("{}: not valid JSON: {e}", path.display())))?;
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let bos_id = bos_token.and_then(|t| inner.token_to_id(t));
        let eos_id = eos_token.and_then(|t| inner.token_to_id(t));
        let add_bos = match add_bos {
            Some(b) => b,
            None => inner
                .encode_fast("a", true)
                .ok()
                .and_then(|e| e.get_ids().first().copied())
                .is_some_and(|first| Some(first) == bos_id),
        };
        // We add BOS ourselves so every entry point treats it the same way.
        inner.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        Ok(Self {
            bos_token: bos_token.unwrap_or_default().to_string(),
            eos_token: eos_token.unwrap_or_default().to_string(),
            add_bos: add_bos && bos_id.is_some(),
            bos_id,
            eos_id,
            inner,
        })
    }

    /// Token ids of `text`, without BOS. Special tokens written in the text
    /// (`<|im_start|>`, `<start_of_turn>`) are recognised, as HF does.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Like [`Tokenizer::encode`], with BOS first when the model wants it.
    pub fn encode_with_bos(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// Text of `ids`; special tokens are kept when `keep_special`.
    pub fn decode(&self, ids: &[u32], keep_special: bool) -> Result<String> {
        self.inner
            .decode(ids, !keep_special)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped HF tokenizer (for saving as `tokenizer.json`).
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn bad(g: &GgufFile, message: &str) -> Error {
    Error::BadFile {
        path: g.path().to_path_buf(),
        message: message.to_string(),
    }
}

fn tok_err(g: &GgufFile, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{}: {e}", g.path().display()))
}

/// The vocabulary as a map, keeping the first id of duplicated strings.
fn vocab_map(tokens: &[String]) -> Vocab {
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        vocab.entry(t.clone()).or_insert(i as u32);
    }
    vocab
}

/// Control tokens become special added tokens, user-defined ones plain added tokens,
/// both matched on the raw text as HF's `normalized: false` does.
fn added_tokens(tokens: &[String], types: &[i64]) -> Vec<AddedToken> {
    tokens
        .iter()
        .zip(types)
        .filter(|(_, t)| **t == TOKEN_CONTROL || **t == TOKEN_USER_DEFINED)
        .map(|(s, t)| AddedToken::from(s.clone(), *t == TOKEN_CONTROL).normalized(false))
        .collect()
}

fn gpt2_from_gguf(g: &GgufFile, tokens: &[String], types: &[i64]) -> Result<tokenizers::Tokenizer> {
    let merges: Vec<(String, String)> = g
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_string(), b.to_string())),
            None => Err(bad(
                g,
                &format!("tokenizer.ggml.merges: malformed merge `{m}`"),
            )),
        })
        .collect::<Result<_>>()?;
    let pre = g.string_opt("tokenizer.ggml.pre")?.unwrap_or_default();
    let byte_level = || tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true);
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        let p = SplitPattern::Regex(pattern.to_string());
        Ok(Split::new(p, SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| tok_err(g, e))?
            .into())
    };
    let (pre_tokenizer, ignore_merges): (PreTokenizerWrapper, bool) = match pre.as_str() {
        // SmolLM: digits one by one, then GPT-2's byte-level split.
        "smollm" => (
            PreSequence::new(vec![Digits::new(true).into(), byte_level().into()]).into(),
            false,
        ),
        "llama-bpe" | "llama3" => (
            PreSequence::new(vec![
                split(LLAMA3_PATTERN)?,
                byte_level().use_regex(false).into(),
            ])
            .into(),
            true,
        ),
        PRE_QWEN2 => (
            PreSequence::new(vec![
                split(QWEN2_PATTERN)?,
                byte_level().use_regex(false).into(),
            ])
            .into(),
            false,
        ),
        _ => (byte_level().into(), false),
    };
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(tokens), merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| tok_err(g, e))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(pre_tokenizer));
    tk.with_decoder(Some(ByteLevel::default()));
    add_all(g, &mut tk, tokens, types)?;
    Ok(tk)
}

fn add_all(
    g: &GgufFile,
    tk: &mut tokenizers::Tokenizer,
    tokens: &[String],
    types: &[i64],
) -> Result<()> {
    let (special, plain): (Vec<_>, Vec<_>) = added_tokens(tokens, types)
        .into_iter()
        .partition(|t| t.special);
    tk.add_special_tokens(special).map_err(|e| tok_err(g, e))?;
    tk.add_tokens(plain).map_err(|e| tok_err(g, e))?;
    Ok(())
}

/// SentencePiece-style BPE (Gemma, Llama 2): merges derived from the piece scores the
/// same way transformers' GGUF converter derives them, so the result matches HF's
/// `tokenizer.json` for these models.
fn spm_from_gguf(g: &GgufFile, tokens: &[String], types: &[i64]) -> Result<tokenizers::Tokenizer> {
    let scores = g.f32s("tokenizer.ggml.scores")?;
    if scores.len() != tokens.len() {
        return Err(bad(
            g,
            "tokenizer.ggml.scores has a different length than tokens",
        ));
    }
    // GGUF spells some pieces (Gemma's whitespace runs) with real spaces.
    let tokens: Vec<String> = tokens
        .iter()
        .map(|t| t.replace(' ', SPIECE_SPACE))
        .collect();
    let vocab = vocab_map(&tokens);
    let merges = merges_from_scores(&tokens, &scores, types, &vocab);
    let add_space_prefix = g
        .bool_opt("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let unk = g
        .u64_opt("tokenizer.ggml.unknown_token_id")?
        .and_then(|i| tokens.get(i as usize).cloned())
        .unwrap_or_else(|| "<unk>".into());
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(unk)
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| tok_err(g, e))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        norms.push(Prepend::new(SPIECE_SPACE.into()).into());
    }
    norms.push(
        Replace::new(" ", SPIECE_SPACE)
            .map_err(|e| tok_err(g, e))?
            .into(),
    );
    tk.with_normalizer(Some(NormalizerSequence::new(norms)))
        .map_err(|e| tok_err(g, e))?;
    let mut decs: Vec<DecoderWrapper> = vec![
        tokenizers::decoders::DecoderWrapper::Replace(
            Replace::new(SPIECE_SPACE, " ").map_err(|e| tok_err(g, e))?,
        ),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decs.push(Strip::new(' ', 1, 0).into());
    }
    tk.with_decoder(Some(DecoderSequence::new(decs)));
    add_all(g, &mut tk, &tokens, types)?;
    Ok(tk)
}

/// Every way a normal piece splits into two pieces of the vocabulary is a merge,
/// ranked by the merged piece's score (higher first), ties by longer left then right
/// piece, then by the pieces' ids. User-defined pieces (Gemma's whitespace and
/// newline runs) merge before everything else, as in HF's tokenizer.json, whatever
/// score the GGUF converter gave them.
fn merges_from_scores(
    tokens: &[String],
    scores: &[f32],
    types: &[i64],
    vocab: &Vocab,
) -> Vec<(String, String)> {
    struct M {
        score: f32,
        len_l: usize,
        len_r: usize,
        id_l: u32,
        id_r: u32,
        split: usize,
        piece: usize,
    }
    let mut all = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if types[i] != TOKEN_NORMAL && types[i] != TOKEN_USER_DEFINED {
            continue;
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(split);
            if let (Some(&id_l), Some(&id_r)) = (vocab.get(l), vocab.get(r)) {
                all.push(M {
                    score: if types[i] == TOKEN_USER_DEFINED {
                        f32::INFINITY
                    } else {
                        scores[i]
                    },
                    len_l: l.chars().count(),
                    len_r: r.chars().count(),
                    id_l,
                    id_r,
                    split,
                    piece: i,
                });
            }
        }
    }
    all.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.len_l.cmp(&a.len_l))
            .then(b.len_r.cmp(&a.len_r))
            .then(a.piece.cmp(&b.piece))
            .then(a.id_l.cmp(&b.id_l))
            .then(a.id_r.cmp(&b.id_r))
    });
    all.into_iter()
        .map(|m| {
            let (l, r) = tokens[m.piece].split_at(m.split);
            (l.to_string(), r.to_string())
        })
        .collect()
}

/// Turns a stream of token ids into text pieces, holding back bytes until they form
/// complete UTF-8 characters (byte-fallback and byte-level tokens split characters).
pub struct TokenStream<'t> {
    tokenizer: &'t Tokenizer,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl<'t> TokenStream<'t> {
    /// A stream with nothing decoded yet.
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    /// Adds one id; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let (prev, now) = self.window_texts()?;
        if now.len() > prev.len() && !now.ends_with('\u{FFFD}') && now.starts_with(&prev) {
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(Some(now[prev.len()..].to_string()))
        } else {
            Ok(None)
        }
    }

    /// Whatever is still held back (an incomplete character at the very end).
    pub fn finish(&mut self) -> Result<Option<String>> {
        let (prev, now) = self.window_texts()?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok((now.len() > prev.len() && now.starts_with(&prev))
            .then(|| now[prev.len()..].to_string()))
    }

    /// Text of the window up to what was already emitted, and of the whole window.
    /// Decoding a window that starts a few tokens back (not each token alone) keeps
    /// SentencePiece's leading-space handling right.
    fn window_texts(&self) -> Result<(String, String)> {
        let window = &self.ids[self.prefix_offset..];
        let prev = self
            .tokenizer
            .decode(&window[..self.read_offset - self.prefix_offset], false)?;
        Ok((prev, self.tokenizer.decode(window, false)?))
    }
}

/// GGUF token type of a byte-fallback piece (`<0x0A>`).
const TOKEN_BYTE: i64 = 6;
const TOKEN_UNKNOWN: i64 = 2;

impl Tokenizer {
    /// The `tokenizer.ggml.*` metadata llama.cpp needs to rebuild this tokenizer: the
    /// inverse of [`Tokenizer::from_gguf`]. Byte-level BPE becomes `gpt2` with its
    /// merges and the pre-tokenizer's llama.cpp name; byte-fallback BPE (Gemma, Llama
    /// 2) becomes `llama` with scores that rank pieces in merge order, so the merges
    /// derived from them (ours, and llama.cpp's score-driven merging) follow the same
    /// order.
    ///
    /// The vocabulary has exactly `rows` entries (the embedding's rows), as
    /// llama.cpp's converter makes it: a shorter tokenizer is padded (Gemma 3 4B-27B
    /// have 262208 rows for 262145 tokens; padding and holes are unused `[PAD{id}]`
    /// pieces), and tokens whose ids are past the rows are left out (Gemma 3 270M-1B's
    /// `<image_soft_token>`, id 262144 of 262144 rows), returned as the second value
    /// for a warning. A GGUF whose vocabulary and embedding differ loads nowhere.
    #[allow(clippy::type_complexity)]
    pub fn gguf_metadata(
        &self,
        rows: usize,
    ) -> Result<(
        Vec<(String, candle_core::quantized::gguf_file::Value)>,
        Vec<String>,
    )> {
        use candle_core::quantized::gguf_file::Value;
        let json: serde_json::Value = serde_json::from_str(
            &self
                .inner
                .to_string(false)
                .map_err(|e| Error::Tokenizer(e.to_string()))?,
        )
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let model = &json["model"];
        if model["type"] != "BPE" {
            return Err(Error::Tokenizer(format!(
                "only BPE tokenizers can be written to GGUF, this one is {}",
                model["type"]
            )));
        }
        let n = rows;
        let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
        let mut types = vec![TOKEN_UNUSED; n];
        let mut dropped = Vec::new();
        for (tok, id) in self.inner.get_vocab(true) {
            match tokens.get_mut(id as usize) {
                Some(slot) => {
                    *slot = tok;
                    types[id as usize] = TOKEN_NORMAL;
                }
                None => dropped.push(tok),
            }
        }
        dropped.sort();
        for a in json["added_tokens"].as_array().into_iter().flatten() {
            if let Some(id) = a["id"].as_u64().map(|x| x as usize).filter(|&i| i < n) {
                types[id] = if a["special"] == true {
                    TOKEN_CONTROL
                } else {
                    TOKEN_USER_DEFINED
                };
            }
        }
        let merges: Vec<String> = model["merges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| match m {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Array(p) => {
                    Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
                }
                _ => None,
            })
            .collect();
        let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
        let mut meta = Vec::new();
        let byte_fallback = model["byte_fallback"] == true;
        if byte_fallback {
            let unk = model["unk_token"]
                .as_str()
                .and_then(|u| self.inner.token_to_id(u));
            for (i, t) in tokens.iter().enumerate() {
                if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
                    types[i] = TOKEN_BYTE;
                }
            }
            if let Some(t) = unk.and_then(|u| types.get_mut(u as usize)) {
                *t = TOKEN_UNKNOWN;
            }
            // llama.cpp matches user-defined pieces on raw text: spaces, not ▁.
            for (t, ty) in tokens.iter_mut().zip(&types) {
                if *ty == TOKEN_USER_DEFINED {
                    *t = t.replace(SPIECE_SPACE, " ");
                }
            }
            // Rank of the first merge producing each piece; others rank last.
            let mut rank = vec![None; n];
            for (r, m) in merges.iter().enumerate() {
                // Pieces past the rows were left out of the vocabulary.
                let id = self.inner.token_to_id(&m.replacen(' ', "", 1));
                if let Some(slot) = id.and_then(|id| rank.get_mut(id as usize)) {
                    slot.get_or_insert(r);
                }
            }
            let last = merges.len() as f32 + 1.0;
            let scores: Vec<Value> = rank
                .iter()
                .map(|r| Value::F32(r.map_or(-last, |r| -(r as f32))))
                .collect();
            let prepends = json["normalizer"].to_string().contains("\"Prepend\"");
            meta.push((
                "tokenizer.ggml.model".into(),
                Value::String(MODEL_SPM.into()),
            ));
            meta.push(("tokenizer.ggml.pre".into(), Value::String("default".into())));
            meta.push(("tokenizer.ggml.scores".into(), Value::Array(scores)));
            meta.push((
                "tokenizer.ggml.add_space_prefix".into(),
                Value::Bool(prepends),
            ));
            if let Some(u) = unk.filter(|&u| (u as usize) < n) {
                meta.push(("tokenizer.ggml.unknown_token_id".into(), Value::U32(u)));
            }
        } else {
            let pre = json["pre_tokenizer"].to_string();
            let name = if pre.contains("\"Digits\"") {
                "smollm"
            } else if pre.contains(r"\\p{N}{1,3}") {
                "llama-bpe"
            } else if pre.contains(r"\\p{N}|") {
                PRE_QWEN2
            } else {
                "gpt2"
            };
            meta.push((
                "tokenizer.ggml.model".into(),
                Value::String(MODEL_BPE.into()),
            ));
            meta.push(("tokenizer.ggml.pre".into(), Value::String(name.into())));
            meta.push(("tokenizer.ggml.merges".into(), strings(merges)));
        }
        meta.push(("tokenizer.ggml.tokens".into(), strings(tokens)));
        meta.push((
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(|t| Value::I32(t as i32)).collect()),
        ));
        // An id past the rows names a token that was left out.
        let kept = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        if let Some(b) = kept(self.bos_id) {
            meta.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(b)));
        }
        if let Some(e) = kept(self.eos_id) {
            meta.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(e)));
        }
        meta.push((
            "tokenizer.ggml.add_bos_token".into(),
            Value::Bool(self.add_bos),
        ));
        Ok((meta, dropped))
    }
}

//! Constrained decoding with llguidance: JSON schemas, regular expressions and Lark
//! grammars become a token mask per step, so the output always parses. llguidance
//! computes a 262k-token mask in well under a millisecond by walking a trie of the
//! vocabulary's bytes with an Earley parser; writing our own would only be slower.
//!
//! A [`Grammars`] is built once per model (the vocabulary trie); each request gets
//! its own [`Guided`] ([`crate::batch::Constraint`]).

use crate::batch::Constraint;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use std::sync::Arc;

/// Largest grammar or schema text accepted (a real schema is a few kilobytes).
pub const MAX_GRAMMAR_BYTES: usize = 64 << 10;

/// What the output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// Any JSON object.
    JsonObject,
    /// JSON matching this schema.
    JsonSchema(serde_json::Value),
    /// Text matching this regular expression (whole).
    Regex(String),
    /// Text matching this Lark grammar (llguidance's dialect).
    Lark(String),
}

/// The vocabulary of one model, ready to build per-request constraints.
pub struct Grammars {
    factory: ParserFactory,
}

/// The tokenizer as llguidance sees it: each token's bytes, and encoding of text
/// (used to fast-forward forced text).
struct Env {
    trie: TokTrie,
    hf: tokenizers::Tokenizer,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        let text = String::from_utf8_lossy(s);
        self.hf
            .encode_fast(text.as_ref(), false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }
}

impl Grammars {
    /// The trie of `tokenizer`'s vocabulary, padded to `vocab` (the logits' width);
    /// `eos` is the token that ends a complete output.
    pub fn new(tokenizer: &Tokenizer, vocab: usize, eos: u32) -> Result<Self> {
        let err = |e: String| Error::Invalid(format!("constrained decoding: {e}"));
        let json = tokenizer
            .hf()
            .to_string(false)
            .map_err(|e| err(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| err(e.to_string()))?;
        let mut words =
            llguidance::token_bytes_from_tokenizer_json(&value).map_err(|e| err(e.to_string()))?;
        if words.len() > vocab {
            return Err(err(format!(
                "the tokenizer has {} tokens, the model {vocab}",
                words.len()
            )));
        }
        // Rows past the tokenizer (padding) are never allowed: a lone marker byte.
        words.resize(vocab, vec![TokTrie::SPECIAL_TOKEN_MARKER]);
        let info = TokRxInfo::new(vocab as u32, eos);
        let env: TokEnv = Arc::new(Env {
            trie: TokTrie::from(&info, &words),
            hf: tokenizer.hf().clone(),
        });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| err(e.to_string()))?;
        factory.quiet();
        // Bounded work per mask and per grammar, whatever a request sends.
        *factory.limits_mut() = ParserLimits {
            max_grammar_size: 200_000,
            ..ParserLimits::default()
        };
        Ok(Self { factory })
    }

    /// A fresh constraint for one request; a grammar that does not compile (or is
    /// too large) is an [`Error::Invalid`] naming the problem.
    pub fn guide(&self, grammar: &Grammar) -> Result<Guided> {
        let size = match grammar {
            Grammar::JsonObject => 0,
            Grammar::JsonSchema(v) => v.to_string().len(),
            Grammar::Regex(s) | Grammar::Lark(s) => s.len(),
        };
        if size > MAX_GRAMMAR_BYTES {
            return Err(Error::Invalid(format!(
                "the grammar has {size} bytes; at most {MAX_GRAMMAR_BYTES} are accepted"
            )));
        }
        let top = match grammar {
            Grammar::JsonObject => {
                TopLevelGrammar::from_json_schema(serde_json::json!({"type": "object"}))
            }
            Grammar::JsonSchema(v) => TopLevelGrammar::from_json_schema(v.clone()),
            Grammar::Regex(r) => TopLevelGrammar::from_regex(r),
            Grammar::Lark(l) => TopLevelGrammar::from_lark(l.clone()),
        };
        let parser = self
            .factory
            .create_parser(top)
            .map_err(|e| Error::Invalid(format!("grammar: {}", first_line(&e.to_string()))))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::Invalid(format!("grammar: {}", first_line(&e))));
        }
        Ok(Guided { matcher })
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    line.chars().take(300).collect()
}

/// One request's constraint.
pub struct Guided {
    matcher: Matcher,
}

impl Constraint for Guided {
    fn mask(&mut self, logits: &mut [f32]) -> std::result::Result<(), String> {
        let mask = self
            .matcher
            .compute_mask()
            .map_err(|e| first_line(&e.to_string()))?;
        let mut any = false;
        for (i, l) in logits.iter_mut().enumerate() {
            if mask.is_allowed(i as u32) {
                any |= l.is_finite() || *l == f32::INFINITY;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        if !any {
            return Err("no token can continue the grammar".into());
        }
        Ok(())
    }

    fn accept(&mut self, id: u32) -> std::result::Result<(), String> {
        self.matcher
            .consume_token(id)
            .map_err(|e| first_line(&e.to_string()))
    }

    fn finished(&mut self) -> bool {
        self.matcher.is_stopped()
    }
}

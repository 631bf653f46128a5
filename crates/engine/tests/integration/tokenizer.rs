//! The tokenizer built from GGUF metadata against HF's own tokenizer.json on text
//! that stresses the edges (whitespace runs, newlines, digits, non-ASCII, emoji,
//! special tokens), and streaming detokenization of split UTF-8 characters.

use crate::common::*;
use unicorn_engine::gguf::GgufFile;
use unicorn_engine::tokenizer::{TokenStream, Tokenizer};

const SAMPLES: &[&str] = &[
    "Hello world",
    "  leading spaces and   runs of    spaces\tand\ttabs",
    "line one\nline two\n\n\nthree newlines\r\nwindows",
    "Numbers: 1234567890, 3.14159, -42, 1e10",
    "Ünïcödé — “quotes” ‘single’ … naïve café",
    "日本語のテキストと中文文本",
    "emoji 🦄🚀 and a family 👨‍👩‍👧 done",
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "code: fn main() { println!(\"{}\", x); }",
    "",
];

#[test]
fn gemma3_gguf_tokenizer_equals_hf_tokenizer_json() {
    let g = GgufFile::open(&model(GEMMA)).unwrap();
    let ours = Tokenizer::from_gguf(&g).unwrap();
    let hf = Tokenizer::from_file(
        &model("gemma3-tokenizer.json"),
        Some("<bos>"),
        Some("<eos>"),
        Some(true),
    )
    .unwrap();
    for s in SAMPLES {
        assert_eq!(ours.encode(s).unwrap(), hf.encode(s).unwrap(), "text {s:?}");
        let ids = ours.encode(s).unwrap();
        assert_eq!(
            ours.decode(&ids, true).unwrap(),
            hf.decode(&ids, true).unwrap(),
            "decode {s:?}"
        );
    }
    assert_eq!(ours.bos_id, Some(2));
    assert!(ours.add_bos);
}

#[test]
fn smollm2_round_trips_text_and_recognises_chat_tokens() {
    let g = GgufFile::open(&model(SMOLLM)).unwrap();
    let t = Tokenizer::from_gguf(&g).unwrap();
    for s in SAMPLES {
        let ids = t.encode(s).unwrap();
        assert_eq!(&t.decode(&ids, true).unwrap(), s);
    }
    let ids = t.encode("<|im_start|>user\nHi<|im_end|>").unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(*ids.last().unwrap(), 2);
    // Digits are split one by one (SmolLM's pre-tokenizer).
    let digits = t.encode("2024").unwrap();
    assert_eq!(digits.len(), 4);
    assert!(!t.add_bos);
}

#[test]
fn streaming_detokenization_never_emits_broken_utf8() {
    for name in [SMOLLM, GEMMA] {
        let g = GgufFile::open(&model(name)).unwrap();
        let t = Tokenizer::from_gguf(&g).unwrap();
        for s in SAMPLES {
            let ids = t.encode(s).unwrap();
            let mut stream = TokenStream::new(&t);
            let mut out = String::new();
            for id in ids.iter().copied() {
                if let Some(piece) = stream.push(id).unwrap() {
                    assert!(
                        !piece.contains('\u{FFFD}'),
                        "{name}: broken UTF-8 in {piece:?} for {s:?}"
                    );
                    out.push_str(&piece);
                }
            }
            if let Some(rest) = stream.finish().unwrap() {
                out.push_str(&rest);
            }
            assert_eq!(out, t.decode(&ids, false).unwrap(), "{name}: {s:?}");
        }
    }
}

/// A tokenizer larger than the embedding (Gemma's 262 145 tokens on a Llama 3 shape's
/// 128 256 rows, as `unicorn synth` pairs them) is trimmed to the rows: the pieces
/// past them are dropped and named, and no merge rank or special id points past the
/// vocabulary (this used to index out of bounds).
#[test]
fn a_vocabulary_trimmed_to_fewer_rows_keeps_every_id_inside() {
    use candle_core::quantized::gguf_file::Value;
    let t = Tokenizer::from_file(
        &model("gemma3-tokenizer.json"),
        Some("<bos>"),
        Some("<eos>"),
        Some(true),
    )
    .unwrap();
    let rows = 128_256;
    let (meta, dropped) = t.gguf_metadata(rows).unwrap();
    assert_eq!(dropped.len(), 262_145 - rows);
    let get = |k: &str| meta.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let Some(Value::Array(tokens)) = get("tokenizer.ggml.tokens") else {
        panic!("no tokens")
    };
    assert_eq!(tokens.len(), rows);
    for k in [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
    ] {
        if let Some(Value::U32(id)) = get(k) {
            assert!((*id as usize) < rows, "{k} {id}");
        }
    }
}

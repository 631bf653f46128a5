//! Tensor names: llama.cpp's GGUF names and transformers' names. The names every
//! architecture shares are here; each architecture adds its own per-block ones
//! ([`Architecture::block_tensors`]). Model files ask for GGUF names; loading an HF
//! folder, converting GGUF to safetensors and quantizing HF to GGUF translate here.

use crate::models::Architecture;

/// Per-block tensors every architecture has: (GGUF suffix, HF suffix after
/// `model.layers.N.`).
const BLOCK_COMMON: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

const GLOBAL: &[(&str, &str)] = &[
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

fn block_table(arch: &Architecture) -> impl Iterator<Item = &(&'static str, &'static str)> {
    BLOCK_COMMON.iter().chain(arch.block_tensors)
}

/// Splits `stem.weight` / `stem.bias`.
fn split_kind(name: &str) -> Option<(&str, &str)> {
    name.rsplit_once('.')
        .filter(|(_, k)| *k == "weight" || *k == "bias")
}

/// The transformers name of a GGUF tensor name (`blk.3.attn_q.weight` →
/// `model.layers.3.self_attn.q_proj.weight`), or `None` if it has no counterpart.
pub fn gguf_to_hf(arch: &Architecture, name: &str) -> Option<String> {
    let (stem, kind) = split_kind(name)?;
    if let Some((_, hf)) = GLOBAL.iter().find(|(g, _)| *g == stem) {
        return Some(format!("{hf}.{kind}"));
    }
    let rest = stem.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    block_table(arch)
        .find(|(g, _)| *g == suffix)
        .map(|(_, hf)| format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The GGUF name of a transformers tensor name, or `None` for tensors a text model
/// does not use (vision tower, projector, rotary buffers).
pub fn hf_to_gguf(arch: &Architecture, name: &str) -> Option<String> {
    let (stem, kind) = split_kind(name)?;
    if let Some((g, _)) = GLOBAL.iter().find(|(_, h)| *h == stem) {
        return Some(format!("{g}.{kind}"));
    }
    let rest = stem.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    block_table(arch)
        .find(|(_, h)| *h == suffix)
        .map(|(g, _)| format!("blk.{layer}.{g}.{kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{gemma3::GEMMA3, llama::LLAMA, llama::QWEN2, llama::QWEN3};

    #[test]
    fn names_round_trip_per_architecture() {
        for (arch, g, h) in [
            (
                &LLAMA,
                "blk.3.ffn_norm.weight",
                "model.layers.3.post_attention_layernorm.weight",
            ),
            (
                &GEMMA3,
                "blk.3.ffn_norm.weight",
                "model.layers.3.pre_feedforward_layernorm.weight",
            ),
            (
                &GEMMA3,
                "blk.0.post_attention_norm.weight",
                "model.layers.0.post_attention_layernorm.weight",
            ),
            (
                &QWEN2,
                "blk.1.attn_q.bias",
                "model.layers.1.self_attn.q_proj.bias",
            ),
            (
                &QWEN3,
                "blk.1.attn_k_norm.weight",
                "model.layers.1.self_attn.k_norm.weight",
            ),
            (&LLAMA, "token_embd.weight", "model.embed_tokens.weight"),
            (&LLAMA, "output.weight", "lm_head.weight"),
        ] {
            assert_eq!(gguf_to_hf(arch, g).as_deref(), Some(h), "{arch:?} {g}");
            assert_eq!(hf_to_gguf(arch, h).as_deref(), Some(g), "{arch:?} {h}");
        }
        assert_eq!(
            hf_to_gguf(&GEMMA3, "vision_tower.vision_model.post_layernorm.weight"),
            None
        );
        assert_eq!(
            hf_to_gguf(&LLAMA, "model.layers.0.post_feedforward_layernorm.weight"),
            None
        );
    }
}

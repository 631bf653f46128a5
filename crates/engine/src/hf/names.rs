//! Tensor names: llama.cpp's GGUF names and transformers' names, for every supported
//! architecture, in one table. Model files ask for GGUF names; loading an HF folder,
//! converting GGUF to safetensors and quantizing HF to GGUF all translate here.

/// Per-block tensors: (GGUF suffix, HF suffix after `model.layers.N.`).
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

/// Llama-style blocks have one norm before the MLP.
const BLOCK_LLAMA: &[(&str, &str)] = &[("ffn_norm", "post_attention_layernorm")];

/// Gemma 3 blocks have four norms; HF's `post_attention_layernorm` is a different
/// tensor from llama's.
const BLOCK_GEMMA3: &[(&str, &str)] = &[
    ("post_attention_norm", "post_attention_layernorm"),
    ("ffn_norm", "pre_feedforward_layernorm"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
];

const GLOBAL: &[(&str, &str)] = &[
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

fn block_table(arch: &str) -> [&'static [(&'static str, &'static str)]; 2] {
    if arch == "gemma3" {
        [BLOCK_COMMON, BLOCK_GEMMA3]
    } else {
        [BLOCK_COMMON, BLOCK_LLAMA]
    }
}

/// Splits `stem.weight` / `stem.bias`.
fn split_kind(name: &str) -> Option<(&str, &str)> {
    name.rsplit_once('.')
        .filter(|(_, k)| *k == "weight" || *k == "bias")
}

/// The transformers name of a GGUF tensor name (`blk.3.attn_q.weight` →
/// `model.layers.3.self_attn.q_proj.weight`), or `None` if it has no counterpart.
pub fn gguf_to_hf(arch: &str, name: &str) -> Option<String> {
    let (stem, kind) = split_kind(name)?;
    if let Some((_, hf)) = GLOBAL.iter().find(|(g, _)| *g == stem) {
        return Some(format!("{hf}.{kind}"));
    }
    let rest = stem.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    block_table(arch)
        .iter()
        .flat_map(|t| t.iter())
        .find(|(g, _)| *g == suffix)
        .map(|(_, hf)| format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The GGUF name of a transformers tensor name, or `None` for tensors a text model
/// does not use (vision tower, projector, rotary buffers).
pub fn hf_to_gguf(arch: &str, name: &str) -> Option<String> {
    let (stem, kind) = split_kind(name)?;
    if let Some((g, _)) = GLOBAL.iter().find(|(_, h)| *h == stem) {
        return Some(format!("{g}.{kind}"));
    }
    let rest = stem.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    block_table(arch)
        .iter()
        .flat_map(|t| t.iter())
        .find(|(_, h)| *h == suffix)
        .map(|(g, _)| format!("blk.{layer}.{g}.{kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_per_architecture() {
        for (arch, g, h) in [
            (
                "llama",
                "blk.3.ffn_norm.weight",
                "model.layers.3.post_attention_layernorm.weight",
            ),
            (
                "gemma3",
                "blk.3.ffn_norm.weight",
                "model.layers.3.pre_feedforward_layernorm.weight",
            ),
            (
                "gemma3",
                "blk.0.post_attention_norm.weight",
                "model.layers.0.post_attention_layernorm.weight",
            ),
            (
                "qwen2",
                "blk.1.attn_q.bias",
                "model.layers.1.self_attn.q_proj.bias",
            ),
            (
                "qwen3",
                "blk.1.attn_k_norm.weight",
                "model.layers.1.self_attn.k_norm.weight",
            ),
            ("llama", "token_embd.weight", "model.embed_tokens.weight"),
            ("llama", "output.weight", "lm_head.weight"),
        ] {
            assert_eq!(gguf_to_hf(arch, g).as_deref(), Some(h), "{arch} {g}");
            assert_eq!(hf_to_gguf(arch, h).as_deref(), Some(g), "{arch} {h}");
        }
        assert_eq!(
            hf_to_gguf("gemma3", "vision_tower.vision_model.post_layernorm.weight"),
            None
        );
        assert_eq!(
            hf_to_gguf("llama", "model.layers.0.post_feedforward_layernorm.weight"),
            None
        );
    }
}

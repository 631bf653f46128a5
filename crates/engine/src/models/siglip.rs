//! Gemma 3's vision tower (SigLIP) and its multimodal projector, exactly as HF
//! transformers computes them: the patch embedding (a convolution with kernel =
//! stride = patch, so one matmul over flattened patches) plus learned position
//! embeddings; pre-LayerNorm encoder layers with biases everywhere, bidirectional
//! attention scaled by head_dim^-0.5 and a GELU-tanh MLP; `post_layernorm`. The
//! projector average-pools the patch grid to `mm_tokens_per_image` tokens, applies
//! Gemma's RMSNorm (`1 + w`, eps of the vision LayerNorms) and multiplies by
//! `mm_input_projection_weight` as stored (`[vision, text]`, not transposed).
//!
//! The same tower loads from an HF folder (its `vision_tower.*` and
//! `multi_modal_projector.*` tensors, [`crate::hf::vision_name`]) or from a
//! llama.cpp `mmproj` GGUF (`clip.*` metadata, `v.*` and `mm.*` tensors), whose names
//! and metadata keys this file owns, both ways.

use crate::attention::{attend_blocks, rms_norm};
use crate::error::{Error, Result};
use crate::formats::Weight;
use crate::gguf::GgufFile;
use crate::hf::config::HfConfig;
use crate::hf::HfFolder;
use crate::models::{Config, Stored};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};

/// `clip.projector_type` of the mmproj files this tower reads.
pub const PROJECTOR_TYPE: &str = "gemma3";

/// Whether text models of this configuration take this tower's features.
pub fn supports(text: &Config) -> bool {
    text.arch.name == "gemma3"
}

/// The vision tower of the public Gemma 3 shapes that see (4B, 12B, 27B: SigLIP
/// so400m at 896 pixels, 256 tokens an image), for `unicorn synth`; `None` for the
/// text-only ones (270M, 1B).
pub fn public_tower(text: &Config) -> Option<VisionConfig> {
    (supports(text) && [2560, 3840, 5376].contains(&text.hidden_size)).then_some(VisionConfig {
        hidden_size: 1152,
        intermediate_size: 4304,
        num_hidden_layers: 27,
        num_attention_heads: 16,
        image_size: 896,
        patch_size: 14,
        layer_norm_eps: 1e-6,
        tokens_per_image: 256,
        text_hidden_size: text.hidden_size,
        tokens: Some(ImageTokens {
            image: 262_144,
            begin: 255_999,
            end: 256_000,
        }),
    })
}

/// The special tokens an image occupies in a prompt: the processor writes
/// `\n\n<begin><image>×tokens_per_image<end>\n\n` where the chat template wrote
/// `<begin>` (transformers' `Gemma3Processor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageTokens {
    /// `image_token_index`: the placeholder each image row replaces.
    pub image: u32,
    /// `boi_token_index` (`<start_of_image>`).
    pub begin: u32,
    /// `eoi_token_index` (`<end_of_image>`).
    pub end: u32,
}

impl ImageTokens {
    /// Their spellings in Gemma 3's vocabulary, for sources that name no ids.
    pub const TEXT: [&'static str; 3] =
        ["<image_soft_token>", "<start_of_image>", "<end_of_image>"];
}

/// The validated hyper-parameters of the tower and projector.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Width of the tower (`vision_config.hidden_size`).
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Side of the square input image, in pixels.
    pub image_size: usize,
    /// Side of a patch, in pixels.
    pub patch_size: usize,
    /// LayerNorm epsilon, also the projector's RMSNorm epsilon.
    pub layer_norm_eps: f64,
    /// Tokens one image becomes (a square number).
    pub tokens_per_image: usize,
    /// Width of the text model the projector feeds.
    pub text_hidden_size: usize,
    /// The image's special tokens, where the source names them.
    pub tokens: Option<ImageTokens>,
}

impl VisionConfig {
    /// Patches along one side of the image.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Output tokens along one side (√tokens_per_image).
    pub fn tokens_per_side(&self) -> usize {
        (self.tokens_per_image as f64).sqrt().round() as usize
    }

    /// The configuration of a multimodal `config.json` (`vision_config` and the
    /// top-level `mm_tokens_per_image` and image token ids, with transformers'
    /// defaults for absent keys), or `None` when it has no `vision_config`.
    pub fn from_hf(c: &HfConfig, text: &Config) -> Result<Option<Self>> {
        let root = c.json();
        let Some(v) = root.get("vision_config").filter(|v| v.is_object()) else {
            return Ok(None);
        };
        let num = |key: &str, default: u64, most: u64| -> Result<usize> {
            let full = format!("vision_config.{key}");
            match v.get(key).filter(|x| !x.is_null()) {
                None => Ok(default as usize),
                Some(x) => match x.as_u64() {
                    Some(n) if n <= most => Ok(n as usize),
                    _ => Err(c.err(
                        &full,
                        format!("expected an integer up to {most}, found {x}"),
                    )),
                },
            }
        };
        for (key, want) in [
            ("hidden_act", "gelu_pytorch_tanh"),
            ("model_type", "siglip_vision_model"),
        ] {
            if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
                if x.as_str() != Some(want) {
                    return Err(c.err(
                        &format!("vision_config.{key}"),
                        format!("{x} is not supported (only {want})"),
                    ));
                }
            }
        }
        if num("num_channels", 3, 3)? != 3 {
            return Err(c.err("vision_config.num_channels", "only RGB (3) is supported"));
        }
        let eps = match v.get("layer_norm_eps").filter(|x| !x.is_null()) {
            None => 1e-6,
            Some(x) => x.as_f64().ok_or_else(|| {
                c.err(
                    "vision_config.layer_norm_eps",
                    format!("expected a number, found {x}"),
                )
            })?,
        };
        let id = |key: &str, default: u32| -> Result<u32> {
            match root.get(key).filter(|x| !x.is_null()) {
                None => Ok(default),
                Some(x) => x
                    .as_u64()
                    .filter(|&n| n < text.vocab_size as u64)
                    .map(|n| n as u32)
                    .ok_or_else(|| {
                        c.err(
                            key,
                            format!(
                                "{x}: expected a token id below the vocabulary size {}",
                                text.vocab_size
                            ),
                        )
                    }),
            }
        };
        let cfg = Self {
            hidden_size: num("hidden_size", 768, 1 << 16)?,
            intermediate_size: num("intermediate_size", 3072, 1 << 18)?,
            num_hidden_layers: num("num_hidden_layers", 12, 1024)?,
            num_attention_heads: num("num_attention_heads", 12, 1024)?,
            image_size: num("image_size", 224, 1 << 13)?,
            patch_size: num("patch_size", 16, 1 << 10)?,
            layer_norm_eps: eps,
            tokens_per_image: match root.get("mm_tokens_per_image").filter(|x| !x.is_null()) {
                None => 256,
                Some(x) => x.as_u64().filter(|&n| n <= 1 << 16).ok_or_else(|| {
                    c.err(
                        "mm_tokens_per_image",
                        format!("expected an integer up to 65536, found {x}"),
                    )
                })? as usize,
            },
            text_hidden_size: text.hidden_size,
            tokens: Some(ImageTokens {
                image: id("image_token_index", 262_144)?,
                begin: id("boi_token_index", 255_999)?,
                end: id("eoi_token_index", 256_000)?,
            }),
        };
        cfg.check(c.path())?;
        Ok(Some(cfg))
    }

    /// The multimodal `config.json` keys this tower needs (what [`Self::from_hf`]
    /// reads): `vision_config` and the top-level image keys, over `text_config`
    /// (the text model's own JSON). Gemma 3's published layout.
    pub fn to_hf_json(
        &self,
        text_config: serde_json::Value,
        tokens: ImageTokens,
    ) -> serde_json::Value {
        let mut text = text_config;
        let dtype = text.get("torch_dtype").cloned();
        let (bos, eos) = (
            text.get("bos_token_id").cloned(),
            text.get("eos_token_id").cloned(),
        );
        if let Some(o) = text.as_object_mut() {
            o.remove("architectures");
        }
        serde_json::json!({
            "architectures": ["Gemma3ForConditionalGeneration"],
            "model_type": "gemma3",
            "text_config": text,
            "vision_config": {
                "model_type": "siglip_vision_model",
                "hidden_size": self.hidden_size,
                "intermediate_size": self.intermediate_size,
                "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads,
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "layer_norm_eps": self.layer_norm_eps,
                "num_channels": 3,
                "hidden_act": "gelu_pytorch_tanh",
                "vision_use_head": false,
                "attention_dropout": 0.0,
            },
            "mm_tokens_per_image": self.tokens_per_image,
            "image_token_index": tokens.image,
            "boi_token_index": tokens.begin,
            "eoi_token_index": tokens.end,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "torch_dtype": dtype,
            "initializer_range": 0.02,
        })
    }

    /// The configuration of an mmproj GGUF (`clip.vision.*`).
    pub fn from_mmproj(g: &GgufFile) -> Result<Self> {
        let meta = |key: &str, message: String| Error::Metadata {
            path: g.path().to_path_buf(),
            key: key.to_string(),
            message,
        };
        let kind = g.string_opt("clip.projector_type")?;
        if kind.as_deref() != Some(PROJECTOR_TYPE) {
            return Err(meta(
                "clip.projector_type",
                format!("{kind:?}: only `{PROJECTOR_TYPE}` (Gemma 3) projectors are supported"),
            ));
        }
        if g.bool_opt("clip.has_vision_encoder")? == Some(false) {
            return Err(meta(
                "clip.has_vision_encoder",
                "false: this file has no vision tower".into(),
            ));
        }
        let num = |key: &str, most: u64| -> Result<usize> {
            let n = g.u64(key)?;
            if n > most {
                return Err(meta(
                    key,
                    format!("{n} is more than {most}: not a real model"),
                ));
            }
            Ok(n as usize)
        };
        let image_size = num("clip.vision.image_size", 1 << 13)?;
        let patch_size = num("clip.vision.patch_size", 1 << 10)?;
        // llama.cpp writes the pooling kernel only when it is not 4 (896 / 14 / 16).
        let kernel = match g.u64_opt("clip.vision.projector.scale_factor")? {
            Some(k) => k as usize,
            None => 4,
        };
        let side = (image_size / patch_size.max(1)) / kernel.max(1);
        let cfg = Self {
            hidden_size: num("clip.vision.embedding_length", 1 << 16)?,
            intermediate_size: num("clip.vision.feed_forward_length", 1 << 18)?,
            num_hidden_layers: num("clip.vision.block_count", 1024)?,
            num_attention_heads: num("clip.vision.attention.head_count", 1024)?,
            image_size,
            patch_size,
            layer_norm_eps: g
                .f64_opt("clip.vision.attention.layer_norm_epsilon")?
                .unwrap_or(1e-6),
            tokens_per_image: side * side,
            text_hidden_size: num("clip.vision.projection_dim", 1 << 17)?,
            tokens: match (
                g.u64_opt(MMPROJ_IMAGE_TOKEN)?,
                g.u64_opt(MMPROJ_BEGIN_TOKEN)?,
                g.u64_opt(MMPROJ_END_TOKEN)?,
            ) {
                (Some(image), Some(begin), Some(end)) => Some(ImageTokens {
                    image: image as u32,
                    begin: begin as u32,
                    end: end as u32,
                }),
                _ => None,
            },
        };
        if kernel == 0 || side * kernel * patch_size != image_size {
            return Err(meta(
                "clip.vision.projector.scale_factor",
                format!(
                    "a pooling kernel of {kernel} does not divide the {} patches of a side",
                    image_size / patch_size.max(1)
                ),
            ));
        }
        cfg.check(g.path())?;
        Ok(cfg)
    }

    /// The `clip.*` metadata llama.cpp reads for this tower (and the image token ids
    /// under keys of our own, which llama.cpp ignores), with the preprocessor's
    /// normalisation.
    pub fn mmproj_metadata(&self, mean: [f32; 3], std: [f32; 3]) -> Vec<(String, Value)> {
        let u = |x: usize| Value::U32(x as u32);
        let f3 = |x: [f32; 3]| Value::Array(x.iter().map(|&v| Value::F32(v)).collect());
        let mut m = vec![
            (
                "general.architecture".to_string(),
                Value::String("clip".into()),
            ),
            ("general.type".to_string(), Value::String("mmproj".into())),
            (
                "clip.projector_type".to_string(),
                Value::String(PROJECTOR_TYPE.into()),
            ),
            ("clip.has_vision_encoder".to_string(), Value::Bool(true)),
            ("clip.use_gelu".to_string(), Value::Bool(true)),
            (
                "clip.vision.projection_dim".to_string(),
                u(self.text_hidden_size),
            ),
            ("clip.vision.image_size".to_string(), u(self.image_size)),
            ("clip.vision.patch_size".to_string(), u(self.patch_size)),
            (
                "clip.vision.embedding_length".to_string(),
                u(self.hidden_size),
            ),
            (
                "clip.vision.feed_forward_length".to_string(),
                u(self.intermediate_size),
            ),
            (
                "clip.vision.block_count".to_string(),
                u(self.num_hidden_layers),
            ),
            (
                "clip.vision.attention.head_count".to_string(),
                u(self.num_attention_heads),
            ),
            (
                "clip.vision.attention.layer_norm_epsilon".to_string(),
                Value::F32(self.layer_norm_eps as f32),
            ),
            ("clip.vision.image_mean".to_string(), f3(mean)),
            ("clip.vision.image_std".to_string(), f3(std)),
        ];
        let kernel = self.patches_per_side() / self.tokens_per_side().max(1);
        if kernel != 4 {
            m.push(("clip.vision.projector.scale_factor".to_string(), u(kernel)));
        }
        if let Some(t) = self.tokens {
            m.push((MMPROJ_IMAGE_TOKEN.to_string(), Value::U32(t.image)));
            m.push((MMPROJ_BEGIN_TOKEN.to_string(), Value::U32(t.begin)));
            m.push((MMPROJ_END_TOKEN.to_string(), Value::U32(t.end)));
        }
        m
    }

    /// Rejects shapes no forward pass can run.
    fn check(&self, path: &Path) -> Result<()> {
        let bad = |message: String| {
            Err(Error::BadFile {
                path: path.to_path_buf(),
                message: format!("vision tower: {message}"),
            })
        };
        let (d, heads) = (self.hidden_size, self.num_attention_heads);
        if d == 0 || heads == 0 || !d.is_multiple_of(heads) {
            return bad(format!("hidden size {d} is not split into {heads} heads"));
        }
        if self.intermediate_size == 0 || self.num_hidden_layers == 0 || self.text_hidden_size == 0
        {
            return bad("an empty layer".into());
        }
        if self.patch_size == 0
            || self.image_size == 0
            || !self.image_size.is_multiple_of(self.patch_size)
        {
            return bad(format!(
                "an image of {} pixels is not divided into patches of {}",
                self.image_size, self.patch_size
            ));
        }
        let (g, n) = (self.patches_per_side(), self.tokens_per_side());
        if n == 0 || n * n != self.tokens_per_image || !g.is_multiple_of(n) {
            return bad(format!(
                "{} tokens per image do not pool a {g}×{g} patch grid evenly",
                self.tokens_per_image
            ));
        }
        // Attention over the patches is quadratic: far beyond SigLIP's 4096.
        if g * g > 1 << 16 {
            return bad(format!("{} patches per image: more than 65536", g * g));
        }
        let eps = self.layer_norm_eps;
        if !(eps.is_finite() && eps > 0.0 && eps < 1.0) {
            return bad(format!(
                "layer_norm_eps {eps}: expected a positive number below 1"
            ));
        }
        Ok(())
    }

    /// The tower's and projector's tensors: mmproj GGUF names and row-major shapes.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (d, ff, p) = (self.hidden_size, self.intermediate_size, self.patch_size);
        let g = self.patches_per_side();
        let mut t = vec![
            ("v.patch_embd.weight".to_string(), vec![d, 3, p, p]),
            ("v.patch_embd.bias".to_string(), vec![d]),
            ("v.position_embd.weight".to_string(), vec![g * g, d]),
        ];
        for i in 0..self.num_hidden_layers {
            let n = |s: &str| format!("v.blk.{i}.{s}");
            for (s, shape) in [
                ("ln1", vec![d]),
                ("attn_q", vec![d, d]),
                ("attn_k", vec![d, d]),
                ("attn_v", vec![d, d]),
                ("attn_out", vec![d, d]),
                ("ln2", vec![d]),
                ("ffn_up", vec![ff, d]),
                ("ffn_down", vec![d, ff]),
            ] {
                let bias = vec![shape[0]];
                t.push((n(&format!("{s}.weight")), shape));
                t.push((n(&format!("{s}.bias")), bias));
            }
        }
        t.push(("v.post_ln.weight".to_string(), vec![d]));
        t.push(("v.post_ln.bias".to_string(), vec![d]));
        t.push((
            "mm.input_projection.weight".to_string(),
            vec![d, self.text_hidden_size],
        ));
        t.push(("mm.soft_emb_norm.weight".to_string(), vec![d]));
        t
    }
}

/// Our own mmproj keys for the image token ids (llama.cpp takes them from the text
/// model's vocabulary; a GGUF without one needs them here).
const MMPROJ_IMAGE_TOKEN: &str = "unicorn.vision.image_token_id";
const MMPROJ_BEGIN_TOKEN: &str = "unicorn.vision.begin_token_id";
const MMPROJ_END_TOKEN: &str = "unicorn.vision.end_token_id";

/// Per-layer tensors: (mmproj suffix, HF suffix after `encoder.layers.N.`).
const LAYER_NAMES: &[(&str, &str)] = &[
    ("ln1", "layer_norm1"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_out", "self_attn.out_proj"),
    ("ln2", "layer_norm2"),
    ("ffn_up", "mlp.fc1"),
    ("ffn_down", "mlp.fc2"),
];

/// Tensors outside the layers: (mmproj stem, HF name without `.weight`/`.bias`).
const GLOBAL_NAMES: &[(&str, &str)] = &[
    ("v.patch_embd", "vision_tower.embeddings.patch_embedding"),
    (
        "v.position_embd",
        "vision_tower.embeddings.position_embedding",
    ),
    ("v.post_ln", "vision_tower.post_layernorm"),
    (
        "mm.input_projection",
        "multi_modal_projector.mm_input_projection",
    ),
    ("mm.soft_emb_norm", "multi_modal_projector.mm_soft_emb_norm"),
];

/// The HF name ([`crate::hf::vision_name`]) of an mmproj tensor name.
pub fn hf_name(mmproj: &str) -> Option<String> {
    let (stem, kind) = mmproj.rsplit_once('.')?;
    if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == stem) {
        // The projection matrix is a bare parameter: `mm_input_projection_weight`.
        return Some(match hf.ends_with("mm_input_projection") {
            true => format!("{hf}_{kind}"),
            false => format!("{hf}.{kind}"),
        });
    }
    let rest = stem.strip_prefix("v.blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    LAYER_NAMES
        .iter()
        .find(|(g, _)| *g == suffix)
        .map(|(_, hf)| format!("vision_tower.encoder.layers.{layer}.{hf}.{kind}"))
}

/// The name an mmproj tensor has in Gemma 3's published multimodal checkpoints
/// (`vision_tower.vision_model.…`, `multi_modal_projector.…`).
pub fn published_name(mmproj: &str) -> Option<String> {
    let hf = hf_name(mmproj)?;
    Some(match hf.strip_prefix("vision_tower.") {
        Some(rest) => format!("vision_tower.vision_model.{rest}"),
        None => hf,
    })
}

/// The mmproj name of an HF vision tensor ([`crate::hf::vision_name`]), `None` for
/// one the tower does not use (SigLIP's pooling head).
pub fn mmproj_name(hf: &str) -> Option<String> {
    if let Some(stem) = hf.strip_suffix("_weight") {
        if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, h)| *h == stem) {
            return Some(format!("{g}.weight"));
        }
    }
    let (stem, kind) = hf.rsplit_once('.')?;
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, h)| *h == stem) {
        return Some(format!("{g}.{kind}"));
    }
    let rest = stem.strip_prefix("vision_tower.encoder.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    LAYER_NAMES
        .iter()
        .find(|(_, h)| *h == suffix)
        .map(|(g, _)| format!("v.blk.{layer}.{g}.{kind}"))
}

/// How an mmproj stores a tensor relative to transformers: the projector's norm
/// as `1 + w` (llama.cpp's converter adds the one), the rest as is.
pub fn stored(mmproj: &str) -> Stored {
    match mmproj {
        "mm.soft_emb_norm.weight" => Stored::PlusOne,
        _ => Stored::Same,
    }
}

/// Where the tower's tensors are: an HF folder or an mmproj GGUF.
#[derive(Clone, Copy)]
pub enum VisionFiles<'a> {
    /// A multimodal HF folder.
    Hf(&'a HfFolder),
    /// A llama.cpp mmproj file.
    Mmproj(&'a GgufFile),
}

impl VisionFiles<'_> {
    /// The folder or file.
    pub fn path(&self) -> &Path {
        match self {
            Self::Hf(h) => h.dir(),
            Self::Mmproj(g) => g.path(),
        }
    }

    fn hf(h: &HfFolder, name: &str) -> Result<String> {
        hf_name(name).ok_or_else(|| Error::Tensor {
            path: h.dir().to_path_buf(),
            tensor: name.to_string(),
            message: "no transformers name for this vision tensor".into(),
        })
    }

    /// The shape tensor `name` (mmproj name) holds, `None` when absent.
    pub fn shape(&self, name: &str) -> Result<Option<Vec<usize>>> {
        match self {
            Self::Hf(h) => h.logical_shape(&Self::hf(h, name)?),
            Self::Mmproj(g) if g.has_tensor(name) => Ok(Some(g.tensor_location(name)?.2)),
            Self::Mmproj(_) => Ok(None),
        }
    }

    /// The file and stored name of tensor `name`, for errors.
    pub fn whereabouts(&self, name: &str) -> (PathBuf, String) {
        match self {
            Self::Hf(h) => match hf_name(name) {
                Some(n) => h.whereabouts(&n),
                None => (h.dir().to_path_buf(), name.to_string()),
            },
            Self::Mmproj(g) => (g.path().to_path_buf(), name.to_string()),
        }
    }

    /// Checks that every tensor `cfg` implies is present in its shape, before any
    /// is read.
    pub fn check(&self, cfg: &VisionConfig) -> Result<()> {
        for (name, want) in cfg.tensors() {
            let (path, tensor) = self.whereabouts(&name);
            let err = |message: String| Error::Tensor {
                path: path.clone(),
                tensor: tensor.clone(),
                message: format!("vision tower: {message}"),
            };
            match self.shape(&name)? {
                None => return Err(err(format!("missing (a tensor of shape {want:?})"))),
                Some(have) if have != want => {
                    return Err(err(format!(
                        "shape {have:?}, but the configuration implies {want:?}"
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// A matrix `[out, in]` in its stored precision (F32, F16, BF16 or a GGUF block
    /// format; an mmproj's F16 stays F16 on the CPU, where it is multiplied in f32).
    fn matrix(&self, name: &str, shape: (usize, usize), dev: &Device) -> Result<Weight> {
        match self {
            Self::Hf(h) => h.weight(&Self::hf(h, name)?, shape, dev),
            Self::Mmproj(g) => {
                let w = g.weight(name, shape, dev)?;
                match (&w, g.tensor_location(name)?.1) {
                    (Weight::Dense(t), GgmlDType::F16) if dev.is_cpu() => {
                        Ok(Weight::Dense(t.to_dtype(DType::F16)?))
                    }
                    _ => Ok(w),
                }
            }
        }
    }

    /// A tensor of any shape, in F32 (vectors, embeddings, the patch kernel), with
    /// the value transform of its storage undone.
    /// Tensor `name` (mmproj name) of `shape` as F32, in the engine's form
    /// ([`stored`]: the projector's norm as `1 + w`).
    pub fn f32(&self, name: &str, shape: &[usize], dev: &Device) -> Result<Tensor> {
        let t = match self {
            Self::Hf(h) => {
                let hf = Self::hf(h, name)?;
                let (bytes, dtype, have) = h.raw(&hf)?;
                if have != shape {
                    let (path, tensor) = h.whereabouts(&hf);
                    return Err(Error::Tensor {
                        path,
                        tensor,
                        message: format!("shape {have:?}, expected {shape:?}"),
                    });
                }
                let t = Tensor::from_raw_buffer(bytes, dtype, shape, dev)?.to_dtype(DType::F32)?;
                match stored(name) {
                    Stored::PlusOne => (t + 1.0)?,
                    _ => t,
                }
            }
            Self::Mmproj(g) => {
                let err = |message: String| Error::Tensor {
                    path: g.path().to_path_buf(),
                    tensor: name.to_string(),
                    message,
                };
                let q = g.qtensor(name, dev)?;
                if q.shape().dims() != shape {
                    return Err(err(format!(
                        "shape {:?}, expected {shape:?}",
                        q.shape().dims()
                    )));
                }
                if dev.is_cpu() {
                    if let Some(why) =
                        crate::formats::first_non_finite(&q).map_err(|e| err(e.to_string()))?
                    {
                        return Err(err(why));
                    }
                }
                q.dequantize(dev)
                    .map_err(|e| err(e.to_string()))?
                    .to_dtype(DType::F32)?
            }
        };
        Ok(t)
    }
}

struct Layer {
    ln1: (Tensor, Tensor),
    q: (Weight, Tensor),
    k: (Weight, Tensor),
    v: (Weight, Tensor),
    out: (Weight, Tensor),
    ln2: (Tensor, Tensor),
    up: (Weight, Tensor),
    down: (Weight, Tensor),
}

/// A loaded vision tower and projector.
pub struct VisionTower {
    cfg: VisionConfig,
    patch: (Weight, Tensor),
    position: Tensor,
    layers: Vec<Layer>,
    post_ln: (Tensor, Tensor),
    /// `[text, vision]`: the stored `[vision, text]` matrix transposed once, so the
    /// projection is an ordinary `x · Wᵀ`.
    projection: Weight,
    /// `1 + w`.
    soft_emb_norm: Tensor,
    device: Device,
}

impl VisionTower {
    /// Loads the tower of configuration `cfg` from `files` (checked first).
    pub fn load(files: VisionFiles<'_>, cfg: &VisionConfig, dev: &Device) -> Result<Self> {
        files.check(cfg)?;
        let (d, ff, p) = (cfg.hidden_size, cfg.intermediate_size, cfg.patch_size);
        let g = cfg.patches_per_side();
        let linear = |stem: &str, out: usize, inp: usize| -> Result<(Weight, Tensor)> {
            Ok((
                files.matrix(&format!("{stem}.weight"), (out, inp), dev)?,
                files.f32(&format!("{stem}.bias"), &[out], dev)?,
            ))
        };
        let norm = |stem: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                files.f32(&format!("{stem}.weight"), &[d], dev)?,
                files.f32(&format!("{stem}.bias"), &[d], dev)?,
            ))
        };
        let kernel = files.f32("v.patch_embd.weight", &[d, 3, p, p], dev)?;
        let patch = (
            Weight::Dense(kernel.reshape((d, 3 * p * p))?),
            files.f32("v.patch_embd.bias", &[d], dev)?,
        );
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let n = |s: &str| format!("v.blk.{i}.{s}");
            layers.push(Layer {
                ln1: norm(&n("ln1"))?,
                q: linear(&n("attn_q"), d, d)?,
                k: linear(&n("attn_k"), d, d)?,
                v: linear(&n("attn_v"), d, d)?,
                out: linear(&n("attn_out"), d, d)?,
                ln2: norm(&n("ln2"))?,
                up: linear(&n("ffn_up"), ff, d)?,
                down: linear(&n("ffn_down"), d, ff)?,
            });
        }
        let t = cfg.text_hidden_size;
        let projection = files.f32("mm.input_projection.weight", &[d, t], dev)?;
        Ok(Self {
            patch,
            position: files.f32("v.position_embd.weight", &[g * g, d], dev)?,
            layers,
            post_ln: norm("v.post_ln")?,
            projection: Weight::Dense(projection.t()?.contiguous()?),
            soft_emb_norm: files.f32("mm.soft_emb_norm.weight", &[d], dev)?,
            cfg: cfg.clone(),
            device: dev.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Where it computes.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes the weights hold.
    pub fn weight_bytes(&self) -> usize {
        let t = |x: &Tensor| x.elem_count() * x.dtype().size_in_bytes();
        let lin = |(w, b): &(Weight, Tensor)| w.bytes() + t(b);
        let mut n = lin(&self.patch) + t(&self.position) + self.projection.bytes();
        n += t(&self.soft_emb_norm) + t(&self.post_ln.0) + t(&self.post_ln.1);
        for l in &self.layers {
            n += lin(&l.q) + lin(&l.k) + lin(&l.v) + lin(&l.out) + lin(&l.up) + lin(&l.down);
            n += t(&l.ln1.0) + t(&l.ln1.1) + t(&l.ln2.0) + t(&l.ln2.1);
        }
        n
    }

    /// One image's features for the text model: `pixels` `[3, image, image]`
    /// (preprocessed) to `[tokens_per_image, text hidden]`.
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        self.encode_until(pixels, &|| false)
    }

    /// [`Self::encode`], giving up with [`Error::Cancelled`] before any layer once
    /// `stop()` says so (about 2 s apart for Gemma 3 4B's tower on 2 cores): for a
    /// server client that has left.
    pub fn encode_until(&self, pixels: &Tensor, stop: &dyn Fn() -> bool) -> Result<Tensor> {
        self.project(&self.hidden_states_until(pixels, stop)?)
    }

    /// The tower's output after `post_layernorm`: `[patches, hidden]`, patches in
    /// row-major order.
    pub fn hidden_states(&self, pixels: &Tensor) -> Result<Tensor> {
        self.hidden_states_until(pixels, &|| false)
    }

    /// [`Self::hidden_states`], stopping between layers once `stop()` says so.
    fn hidden_states_until(&self, pixels: &Tensor, stop: &dyn Fn() -> bool) -> Result<Tensor> {
        let c = &self.cfg;
        let (s, p, g, d) = (
            c.image_size,
            c.patch_size,
            c.patches_per_side(),
            c.hidden_size,
        );
        if pixels.dims() != [3, s, s] {
            return Err(Error::Invalid(format!(
                "the vision tower takes [3, {s}, {s}] pixels, not {:?}",
                pixels.dims()
            )));
        }
        // The convolution (kernel = stride = patch) as one matmul: each patch's
        // pixels flattened in the kernel's (channel, row, column) order.
        let px = pixels
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut patches = Vec::with_capacity(g * g * 3 * p * p);
        for py in 0..g {
            for pxi in 0..g {
                for ch in 0..3 {
                    for ky in 0..p {
                        let row = (ch * s + py * p + ky) * s + pxi * p;
                        patches.extend_from_slice(&px[row..row + p]);
                    }
                }
            }
        }
        let patches = Tensor::from_vec(patches, (g * g, 3 * p * p), &self.device)?;
        let x = linear(&self.patch, &patches)?;
        let mut x = (x + &self.position)?.unsqueeze(0)?; // [1, P, d]
        let heads = c.num_attention_heads;
        let hd = d / heads;
        let scale = (hd as f64).powf(-0.5);
        let all = 0..g * g;
        let eps = c.layer_norm_eps as f32;
        for l in &self.layers {
            if stop() {
                return Err(Error::Cancelled);
            }
            let h = candle_nn::ops::layer_norm(&x.contiguous()?, &l.ln1.0, &l.ln1.1, eps)?;
            let [q, k, v] = Weight::forward_n([&l.q.0, &l.k.0, &l.v.0], &h)?;
            let split = |t: Tensor, b: &Tensor| super::heads(&t.broadcast_add(b)?, heads, hd);
            let (q, k, v) = (split(q, &l.q.1)?, split(k, &l.k.1)?, split(v, &l.v.1)?);
            let a = full_attention(&q, &k, &v, scale, &all)?;
            x = (x + linear(&l.out, &a)?)?;
            let h = candle_nn::ops::layer_norm(&x.contiguous()?, &l.ln2.0, &l.ln2.1, eps)?;
            let m = linear(&l.down, &crate::activation::gelu_tanh(&linear(&l.up, &h)?)?)?;
            x = (x + m)?;
        }
        let x =
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.post_ln.0, &self.post_ln.1, eps)?;
        Ok(x.squeeze(0)?)
    }

    /// The projector: `[patches, hidden]` → `[tokens_per_image, text hidden]`.
    pub fn project(&self, hidden: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        let (g, n, d) = (c.patches_per_side(), c.tokens_per_side(), c.hidden_size);
        let k = g / n;
        // AvgPool2d(kernel = stride = k) over the patch grid (row = patch row), then
        // the pooled grid in row-major order.
        let pooled = hidden
            .reshape((n, k, n, k, d))?
            .sum(3)?
            .sum(1)?
            .reshape((n * n, d))?;
        let pooled = (pooled / (k * k) as f64)?;
        let normed = rms_norm(&pooled, &self.soft_emb_norm, c.layer_norm_eps)?;
        Ok(self.projection.forward(&normed)?)
    }
}

/// Attention of every patch over every patch (`[1, heads, P, d]` each), as
/// `[1, P, heads · d]`. On the CPU, one head and [`QUERY_ROWS`] queries at a time
/// through matmuls: four times faster there than the row-by-row kernel the text
/// model's prefill uses, which is built for causal rows over a cache. The block of
/// scores (16 MB at 4096 patches) stays under the allocator's mmap threshold, so it
/// is reused instead of being mapped, faulted in and cleared for every block (four
/// heads' 268 MB at once spent a fifth of the tower's time in the kernel).
fn full_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    all: &std::ops::Range<usize>,
) -> Result<Tensor> {
    if !q.device().is_cpu() {
        return Ok(attend_blocks(
            q,
            k,
            v,
            (0, 0),
            scale,
            None,
            std::slice::from_ref(all),
        )?);
    }
    let (_, heads, p, d) = q.dims4()?;
    let mut outs = Vec::with_capacity(heads);
    for h in 0..heads {
        let qh = q.narrow(1, h, 1)?.squeeze(0)?.squeeze(0)?;
        let kt = k
            .narrow(1, h, 1)?
            .squeeze(0)?
            .squeeze(0)?
            .t()?
            .contiguous()?;
        let vh = v.narrow(1, h, 1)?.squeeze(0)?.squeeze(0)?.contiguous()?;
        let mut rows = Vec::with_capacity(p.div_ceil(QUERY_ROWS));
        for first in (0..p).step_by(QUERY_ROWS) {
            let qb = qh.narrow(0, first, QUERY_ROWS.min(p - first))?;
            // Scaled after the product, as transformers does.
            let probs = crate::activation::softmax_scaled(&qb.matmul(&kt)?, scale as f32)?;
            rows.push(probs.matmul(&vh)?);
        }
        outs.push(Tensor::cat(&rows, 0)?);
    }
    // [P, heads · d]: each head's columns side by side.
    Ok(Tensor::cat(&outs, 1)?.reshape((1, p, heads * d))?)
}

/// Queries per block of [`full_attention`] on the CPU.
const QUERY_ROWS: usize = 1024;

/// `x · Wᵀ + b`.
fn linear((w, b): &(Weight, Tensor), x: &Tensor) -> Result<Tensor> {
    Ok(w.forward(x)?.broadcast_add(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_between_mmproj_and_transformers() {
        let cfg = VisionConfig {
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            image_size: 16,
            patch_size: 4,
            layer_norm_eps: 1e-6,
            tokens_per_image: 4,
            text_hidden_size: 8,
            tokens: None,
        };
        for (g, _) in cfg.tensors() {
            let hf = hf_name(&g).unwrap_or_else(|| panic!("{g}: no HF name"));
            assert_eq!(mmproj_name(&hf).as_deref(), Some(g.as_str()), "{hf}");
        }
        assert_eq!(
            hf_name("v.blk.1.ffn_up.bias").as_deref(),
            Some("vision_tower.encoder.layers.1.mlp.fc1.bias")
        );
        assert_eq!(
            hf_name("mm.input_projection.weight").as_deref(),
            Some("multi_modal_projector.mm_input_projection_weight")
        );
        assert_eq!(
            mmproj_name("vision_tower.head.attention.in_proj_weight"),
            None
        );
        assert_eq!(stored("mm.soft_emb_norm.weight"), Stored::PlusOne);
    }
}

//! Images in prompts. A model that sees ([`Vision`]: Gemma 3's SigLIP tower and
//! projector, from its HF folder or a llama.cpp `mmproj` GGUF beside its GGUF)
//! turns an image file into an [`Image`] (decoded and preprocessed as its
//! processor does, [`preprocess`]), and an image into rows of features that take
//! the place of its image tokens in the prompt ([`crate::models::ImageSpan`]).
//!
//! In token ids an image is a run of `tokens_per_image` image tokens
//! ([`ImageTokens::image`]); in chat text, one [`MARKER`] where the message holds
//! it, which rendering expands to what transformers' processor writes:
//! `\n\n<start_of_image>` + `<image_soft_token>` × N + `<end_of_image>\n\n`.

pub mod preprocess;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::hf::HfFolder;
use crate::models::siglip::{ImageTokens, VisionConfig, VisionFiles, VisionTower};
use crate::models::Config;
use crate::tokenizer::Tokenizer;
use candle_core::{Device, Tensor};
use preprocess::Preprocess;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Where a chat message holds an image: the object replacement character, which
/// rendering expands to the image's tokens. User text may not contain it.
pub const MARKER: char = '\u{FFFC}';

/// A model's vision: its tower and projector, how it preprocesses an image, and the
/// tokens an image takes in a prompt.
pub struct Vision {
    tower: VisionTower,
    preprocess: Preprocess,
    tokens: ImageTokens,
    origin: PathBuf,
    /// Tells this model's images from another's.
    id: u64,
}

impl std::fmt::Debug for Vision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vision({})", self.origin.display())
    }
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Vision {
    /// The vision of a multimodal HF folder (`vision_config` in `config.json`, its
    /// `preprocessor_config.json`), or `None` for a text-only one.
    pub fn from_folder(h: &HfFolder, text: &Config, device: &Device) -> Result<Option<Self>> {
        if !crate::models::siglip::supports(text) {
            return Ok(None);
        }
        let Some(cfg) = VisionConfig::from_hf(h.config(), text)? else {
            return Ok(None);
        };
        let preprocess = Preprocess::of_folder(h, &cfg)?;
        let tokens = cfg.tokens.ok_or_else(|| Error::BadFile {
            path: h.config().path().to_path_buf(),
            message: "no image token ids".into(),
        })?;
        Self::new(VisionFiles::Hf(h), cfg, preprocess, tokens, device).map(Some)
    }

    /// The vision of an mmproj GGUF for a text model of configuration `text`; the
    /// image token ids come from the file, else from the text model's vocabulary.
    pub fn from_mmproj(
        path: &Path,
        text: &Config,
        tokenizer: Option<&Tokenizer>,
        device: &Device,
    ) -> Result<Self> {
        let m = Mmproj::open(path, text, tokenizer)?;
        let preprocess = Preprocess::gemma(m.cfg.image_size as u32, m.mean, m.std);
        Self::new(
            VisionFiles::Mmproj(&m.gguf),
            m.cfg,
            preprocess,
            m.tokens,
            device,
        )
    }

    fn new(
        files: VisionFiles<'_>,
        cfg: VisionConfig,
        preprocess: Preprocess,
        tokens: ImageTokens,
        device: &Device,
    ) -> Result<Self> {
        let side = cfg.image_size as u32;
        if preprocess.size != Some((side, side)) {
            return Err(Error::BadFile {
                path: files.path().to_path_buf(),
                message: format!(
                    "the preprocessor makes {:?} images; the vision tower takes {side}×{side}",
                    preprocess.size
                ),
            });
        }
        Ok(Self {
            tower: VisionTower::load(files, &cfg, device)?,
            preprocess,
            tokens,
            origin: files.path().to_path_buf(),
            id: next_id(),
        })
    }

    /// The mmproj GGUF that goes with the GGUF model at `model`: one `mmproj*.gguf`
    /// in the same folder whose projector is this tower's kind and feeds a text model
    /// of `text`'s width. `None` when there is none; an error when several fit.
    pub fn find_mmproj(model: &Path, text: &Config) -> Result<Option<PathBuf>> {
        if !crate::models::siglip::supports(text) {
            return Ok(None);
        }
        let Some(dir) = model.parent() else {
            return Ok(None);
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(None);
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.to_ascii_lowercase().starts_with("mmproj")
                        && n.to_ascii_lowercase().ends_with(".gguf")
                })
            })
            .filter(|p| {
                // Only what is this tower's kind, for this width: a folder may hold
                // other models' files.
                GgufFile::open(p)
                    .and_then(|g| VisionConfig::from_mmproj(&g))
                    .is_ok_and(|c| c.text_hidden_size == text.hidden_size)
            })
            .collect();
        found.sort();
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(Error::Invalid(format!(
                "{} mmproj files beside {} fit it ({}): name one",
                found.len(),
                model.display(),
                found
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The tokens an image takes in a prompt.
    pub fn tokens(&self) -> ImageTokens {
        self.tokens
    }

    /// Tokens per image.
    pub fn tokens_per_image(&self) -> usize {
        self.tower.config().tokens_per_image
    }

    /// The tower's configuration.
    pub fn config(&self) -> &VisionConfig {
        self.tower.config()
    }

    /// How images are preprocessed.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The folder or mmproj file the tower came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Bytes of the tower's weights.
    pub fn weight_bytes(&self) -> usize {
        self.tower.weight_bytes()
    }

    /// The tower itself.
    pub fn tower(&self) -> &VisionTower {
        &self.tower
    }

    /// An image file for this model.
    pub fn open(&self, path: &Path) -> Result<Image> {
        self.image(self.preprocess.file(path)?, path)
    }

    /// An image file's bytes for this model; `name` names it in errors.
    pub fn image_from_bytes(&self, bytes: &[u8], name: &str) -> Result<Image> {
        self.image(
            self.preprocess.bytes(bytes, Path::new(name))?,
            Path::new(name),
        )
    }

    /// Preprocessed pixels (`[3, side, side]`) as an image of this model.
    pub fn image(&self, pixels: Tensor, origin: &Path) -> Result<Image> {
        let side = self.config().image_size;
        if pixels.dims() != [3, side, side] {
            return Err(Error::Invalid(format!(
                "{}: pixels {:?}, the model takes [3, {side}, {side}]",
                origin.display(),
                pixels.dims()
            )));
        }
        let values = pixels.flatten_all()?.to_vec1::<f32>()?;
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash_slice(
            &values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            &mut h,
        );
        Ok(Image(Arc::new(ImageInner {
            pixels,
            hash: std::hash::Hasher::finish(&h),
            vision: self.id,
            origin: origin.display().to_string(),
            features: OnceLock::new(),
        })))
    }

    /// The image's features (`[tokens_per_image, text hidden]`), computed once per
    /// image and kept with it.
    pub fn features(&self, image: &Image) -> Result<Tensor> {
        self.features_until(image, &|| false)
    }

    /// [`Self::features`], giving up with [`Error::Cancelled`] between the tower's
    /// layers once `stop()` says so; nothing is kept then, so a later call computes
    /// them whole.
    pub fn features_until(&self, image: &Image, stop: &dyn Fn() -> bool) -> Result<Tensor> {
        if image.0.vision != self.id {
            return Err(Error::Invalid(format!(
                "{} was prepared for another model",
                image.0.origin
            )));
        }
        if let Some(f) = image.0.features.get() {
            return Ok(f.clone());
        }
        let f = self
            .tower
            .encode_until(&image.0.pixels.to_device(self.tower.device())?, stop)?;
        Ok(image.0.features.get_or_init(|| f).clone())
    }

    /// Where the runs of image tokens are in `ids`, each checked to be one whole
    /// image.
    pub fn image_runs(&self, ids: &[u32]) -> Result<Vec<Range<usize>>> {
        let n = self.tokens_per_image();
        let mut runs = Vec::new();
        let mut i = 0;
        while i < ids.len() {
            if ids[i] != self.tokens.image {
                i += 1;
                continue;
            }
            let start = i;
            while i < ids.len() && ids[i] == self.tokens.image {
                i += 1;
            }
            if i - start != n {
                return Err(Error::Invalid(format!(
                    "a run of {} image tokens ({}) at token {start}: an image takes exactly {n}",
                    i - start,
                    self.tokens.image
                )));
            }
            runs.push(start..i);
        }
        Ok(runs)
    }

    /// `text` (a rendered chat) with each [`MARKER`] replaced by the text of one
    /// image's tokens, as transformers' processor expands `<start_of_image>`.
    pub fn expand_markers(&self, text: &str, tok: &Tokenizer) -> Result<String> {
        expand_markers(text, self.tokens, self.tokens_per_image(), tok)
    }
}

/// A llama.cpp mmproj GGUF checked against the text model it goes with: its
/// tower's configuration, the image token ids (its own keys, or looked up in the
/// text model's vocabulary) and the preprocessor's normalisation.
pub struct Mmproj {
    /// The file.
    pub gguf: GgufFile,
    /// The tower.
    pub cfg: VisionConfig,
    /// The image's tokens.
    pub tokens: ImageTokens,
    /// Normalisation mean.
    pub mean: [f32; 3],
    /// Normalisation standard deviation.
    pub std: [f32; 3],
}

impl Mmproj {
    /// Opens and checks the mmproj at `path` for the text model `text`.
    pub fn open(path: &Path, text: &Config, tokenizer: Option<&Tokenizer>) -> Result<Self> {
        let g = GgufFile::open(path)?;
        let cfg = VisionConfig::from_mmproj(&g)?;

        let bad = |message: String| Error::BadFile {
            path: path.to_path_buf(),
            message,
        };
        if !crate::models::siglip::supports(text) {
            return Err(bad(format!(
                "a vision tower for Gemma 3; this model is {}",
                text.arch.name
            )));
        }
        if cfg.text_hidden_size != text.hidden_size {
            return Err(bad(format!(
                "projects to width {}, but the text model's is {}: the mmproj of another model",
                cfg.text_hidden_size, text.hidden_size
            )));
        }
        let tokens = match (cfg.tokens, tokenizer) {
            (Some(t), _) => t,
            (None, Some(tok)) => {
                let [image, begin, end] = ImageTokens::TEXT.map(|s| tok.token_id(s));
                match (image, begin, end) {
                    (Some(image), Some(begin), Some(end)) => ImageTokens { image, begin, end },
                    _ => {
                        return Err(bad(format!(
                            "the text model's vocabulary lacks {:?}",
                            ImageTokens::TEXT
                        )))
                    }
                }
            }
            (None, None) => {
                return Err(bad(
                    "no image token ids, and the text model has no vocabulary to find them in"
                        .into(),
                ))
            }
        };
        if [tokens.image, tokens.begin, tokens.end]
            .iter()
            .any(|&t| t as usize >= text.vocab_size)
        {
            return Err(bad(format!(
                "image token ids {tokens:?} outside the vocabulary ({})",
                text.vocab_size
            )));
        }
        let f3 = |key: &str| -> Result<[f32; 3]> {
            match g.get(key) {
                None => Ok([0.5; 3]),
                Some(_) => g
                    .f32s(key)?
                    .try_into()
                    .map_err(|v: Vec<f32>| Error::Metadata {
                        path: path.to_path_buf(),
                        key: key.into(),
                        message: format!("{} values, expected 3", v.len()),
                    }),
            }
        };
        let (mean, std) = (f3("clip.vision.image_mean")?, f3("clip.vision.image_std")?);
        if std.iter().any(|&s| !(s.is_finite() && s > 0.0)) || mean.iter().any(|m| !m.is_finite()) {
            return Err(bad(format!(
                "image mean {mean:?} / std {std:?}: not a normalisation"
            )));
        }
        Ok(Self {
            gguf: g,
            cfg,
            tokens,
            mean,
            std,
        })
    }
}

/// `text` with each [`MARKER`] replaced by the text of one image's `per_image`
/// tokens, as transformers' `Gemma3Processor` expands `<start_of_image>`:
/// `\n\n<begin>` + `<image>` × `per_image` + `<end>\n\n`.
pub fn expand_markers(
    text: &str,
    tokens: ImageTokens,
    per_image: usize,
    tok: &Tokenizer,
) -> Result<String> {
    let name = |id: u32| {
        tok.hf()
            .id_to_token(id)
            .ok_or_else(|| Error::Invalid(format!("the vocabulary has no token {id} for images")))
    };
    let seq = format!(
        "\n\n{}{}{}\n\n",
        name(tokens.begin)?,
        name(tokens.image)?.repeat(per_image),
        name(tokens.end)?
    );
    Ok(text.replace(MARKER, &seq))
}

/// An image prepared for one model: its preprocessed pixels and, once encoded, its
/// features. Cheap to clone; equal images (same pixels) compare equal, so a chat's
/// cache can tell whether the image at a position changed.
#[derive(Clone)]
pub struct Image(Arc<ImageInner>);

struct ImageInner {
    pixels: Tensor,
    hash: u64,
    vision: u64,
    origin: String,
    features: OnceLock<Tensor>,
}

impl Image {
    /// The preprocessed pixels, `[3, side, side]`.
    pub fn pixels(&self) -> &Tensor {
        &self.0.pixels
    }

    /// Where it came from (a file name), for messages.
    pub fn origin(&self) -> &str {
        &self.0.origin
    }

    /// A hash of its pixels.
    pub fn hash(&self) -> u64 {
        self.0.hash
    }
}

impl PartialEq for Image {
    fn eq(&self, other: &Self) -> bool {
        self.0.vision == other.0.vision && self.0.hash == other.0.hash
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Image({}, {:016x})", self.0.origin, self.0.hash)
    }
}

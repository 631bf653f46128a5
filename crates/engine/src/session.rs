//! A loaded model ready to talk: the model, its tokenizer and chat template, and the
//! generation loop. A [`ChatSession`] keeps the KV cache across turns and only feeds
//! the tokens the cache does not already hold.

use crate::attention::KvCache;
use crate::error::{Error, Result};
use crate::hf::tokenizer_files;
use crate::models::ImageSpan;
use crate::models::{Config, Model};
use crate::sampler::{Sampler, SamplingParams};
use crate::source::Source;
use crate::speculative::Draft;
use crate::stats::{peak_rss_bytes, rss_bytes, Stats};
use crate::template::{ChatTemplate, Message};
use crate::tokenizer::{TokenStream, Tokenizer};
use crate::vision::{self, Image, Vision};
use candle_core::{DType, Device};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// A `tokenizer.json` to use instead of the one built from the file's metadata.
    pub tokenizer_json: Option<PathBuf>,
    /// Where to run it.
    pub device: crate::device::DeviceChoice,
    /// How the KV cache holds keys and values (default: f16 on the CPU, f32 on a GPU).
    pub kv_type: Option<crate::attention::KvType>,
    /// How the output head runs (default: as stored).
    pub head_type: crate::models::HeadType,
    /// The mmproj GGUF of a GGUF model's vision tower (default: an `mmproj*.gguf`
    /// beside the model that fits it, [`Vision::find_mmproj`]).
    pub mmproj: Option<PathBuf>,
    /// Load no vision tower (saves its memory; images are then refused).
    pub text_only: bool,
}

impl LoadOptions {
    /// How a draft model for a target loaded with these options loads
    /// ([`crate::speculative`]): on the same device with the same cache and head, its
    /// own tokenizer, no vision tower (a draft proposes text).
    pub fn for_draft(&self) -> Self {
        Self {
            tokenizer_json: None,
            mmproj: None,
            text_only: true,
            ..self.clone()
        }
    }
}

/// A model with everything needed to turn text into text.
pub struct LoadedModel {
    path: PathBuf,
    model: Model,
    config: Config,
    tokenizer: Option<Tokenizer>,
    template: Option<ChatTemplate>,
    stop_ids: Vec<u32>,
    default_sampling: Option<SamplingParams>,
    load_time: Duration,
    device: Device,
    placement: crate::device::Placement,
    vision: Option<Vision>,
}

/// What one generated token looks like to a sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenEvent {
    /// The token id.
    pub id: u32,
    /// Text this token completes (may be empty while a character is incomplete or a
    /// possible stop string is held back).
    pub text: String,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A stop token (EOS, end of turn).
    Eos,
    /// A stop string appeared in the text.
    StopString,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The sink asked to stop (user cancelled).
    Cancelled,
    /// The context window is full.
    ContextFull,
    /// The reply fell into an exact loop (only with [`GenerationParams::stop_on_loop`]).
    Loop,
}

/// Settings of one generation.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct GenerationParams {
    /// Upper bound on generated tokens.
    pub max_tokens: usize,
    /// How the next token is picked.
    pub sampling: SamplingParams,
    /// Generation stops when the text contains one of these (it is cut before it).
    pub stop_strings: Vec<String>,
    /// Keep going past stop tokens (for benchmarks and raw completion).
    pub ignore_eos: bool,
    /// End a reply that repeats one block of tokens back to back ([`ends_in_loop`]).
    #[serde(default)]
    pub stop_on_loop: bool,
}

impl GenerationParams {
    /// Greedy decoding of up to `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            sampling: SamplingParams::greedy(),
            stop_strings: Vec::new(),
            ignore_eos: false,
            stop_on_loop: false,
        }
    }
}

/// Whether `ids` ends in one block of 1 to 64 tokens repeated back to back at least
/// four times and over at least 32 tokens: a loop a reply does not leave by itself.
pub fn ends_in_loop(ids: &[u32]) -> bool {
    (1..=64).any(|period: usize| {
        let need = (4 * period).max(32);
        ids.len() >= need && {
            let tail = &ids[ids.len() - need..];
            (period..need).all(|i| tail[i] == tail[i - period])
        }
    })
}

/// What a conversation does when its next turn would not fit its context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Refuse a turn whose prompt does not fit, end a reply that fills the context,
    /// and say so.
    Stop,
    /// Let the oldest turns go, whole, keeping the system prompt and the latest turns.
    #[default]
    DropOldest,
    /// Keep the system prompt and the latest text, cutting through older turns.
    Rolling,
}

impl std::str::FromStr for Overflow {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "stop" => Ok(Self::Stop),
            "drop-oldest" => Ok(Self::DropOldest),
            "rolling" => Ok(Self::Rolling),
            _ => Err(format!("overflow `{s}`: use stop, drop-oldest or rolling")),
        }
    }
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Stop => "stop",
            Self::DropOldest => "drop-oldest",
            Self::Rolling => "rolling",
        })
    }
}

/// How a conversation's context stands after a turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ContextUse {
    /// Positions the conversation takes now (prompt and reply).
    pub used: usize,
    /// The context length in force.
    pub limit: usize,
    /// What happens when it is full.
    pub overflow: Overflow,
    /// Messages left out of the context (drop-oldest).
    pub dropped_messages: usize,
    /// Tokens of the conversation no longer in the context.
    pub dropped_tokens: usize,
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reply {
    /// Generated text (stop token and stop string excluded).
    pub text: String,
    /// Generated ids (a stop token, if one ended generation, is included last).
    pub token_ids: Vec<u32>,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// Measured figures.
    pub stats: Stats,
    /// The conversation's context after this reply (chat turns only).
    pub context: Option<ContextUse>,
}

impl LoadedModel {
    /// Loads a `.gguf` model file or an HF model folder.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        Self::load_with_progress(path, opts, &mut |_| true)
    }

    /// [`LoadedModel::load`], telling `progress` the weight bytes loaded so far and in
    /// all after each tensor; `progress` returning false cancels with
    /// [`Error::Cancelled`].
    pub fn load_with_progress(
        path: &Path,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(&unicorn_common::Progress) -> bool,
    ) -> Result<Self> {
        let t0 = Instant::now();
        let src = Source::open(path)?;
        let placement = crate::device::place(opts.device)?;
        let device = placement.device.clone();
        let config = Config::from_source(&src)?;
        let fold_system = config.arch.folds_system_prompt;
        let (tokenizer, template_src, mut stop_ids, default_sampling) = match &src {
            // A GGUF without tokenizer metadata (`unicorn synth --to`, or written
            // from a folder without one) runs from token ids, as such a folder does.
            Source::Gguf(g) => {
                let vocab = g.string_opt("tokenizer.ggml.model")?.is_some();
                let tokenizer = match (&opts.tokenizer_json, vocab) {
                    (None, false) => None,
                    (None, true) => Some(Tokenizer::from_gguf(g)?),
                    (Some(tj), false) => Some(Tokenizer::from_file(tj, None, None, None)?),
                    (Some(tj), true) => {
                        let gt = Tokenizer::from_gguf(g)?;
                        Some(Tokenizer::from_file(
                            tj,
                            Some(&gt.bos_token),
                            Some(&gt.eos_token),
                            Some(gt.add_bos),
                        )?)
                    }
                };
                let template = match &tokenizer {
                    Some(_) => g.string_opt("tokenizer.chat_template")?,
                    None => None,
                };
                let eos: Vec<u32> = tokenizer.iter().filter_map(|t| t.eos_id).collect();
                (tokenizer, template, eos, None)
            }
            Source::Hf(h) => {
                let mut files = tokenizer_files::read(h.dir(), h.config().json())?;
                if let Some(tj) = &opts.tokenizer_json {
                    let (bos, eos, add) = match &files.tokenizer {
                        Some(t) => (
                            Some(t.bos_token.clone()),
                            Some(t.eos_token.clone()),
                            Some(t.add_bos),
                        ),
                        None => (None, None, None),
                    };
                    files.tokenizer = Some(Tokenizer::from_file(
                        tj,
                        bos.as_deref(),
                        eos.as_deref(),
                        add,
                    )?);
                }
                (
                    files.tokenizer,
                    files.chat_template,
                    files.eos_ids,
                    files.sampling,
                )
            }
        };
        let template = match (&tokenizer, template_src) {
            (Some(_), Some(src)) => Some(ChatTemplate::new(
                &src,
                &path.display().to_string(),
                fold_system,
            )?),
            _ => None,
        };
        let mut model = Model::load_with_progress(&src, &device, progress)?;
        let vision = match (&src, &opts.mmproj) {
            _ if opts.text_only => None,
            (Source::Hf(_), Some(m)) => {
                return Err(Error::Invalid(format!(
                "{}: an mmproj goes with a GGUF model; the folder {} holds its own vision tower",
                m.display(),
                path.display()
            )))
            }
            (Source::Hf(h), None) => Vision::from_folder(h, &config, &device)?,
            (Source::Gguf(_), named) => {
                let found = match named {
                    Some(m) => Some(m.clone()),
                    None => Vision::find_mmproj(path, &config)?,
                };
                match found {
                    Some(m) => Some(Vision::from_mmproj(
                        &m,
                        &config,
                        tokenizer.as_ref(),
                        &device,
                    )?),
                    None => None,
                }
            }
        };
        if let Some(kv) = opts.kv_type {
            model
                .set_kv_type(kv)
                .map_err(|e| Error::Invalid(format!("--kv-type {kv}: {e}")))?;
        }
        model
            .set_head_type(opts.head_type)
            .map_err(|e| Error::Invalid(format!("--head-type {}: {e}", opts.head_type)))?;
        // Chat models end a turn with these, whatever their config calls EOS.
        if let Some(tok) = &tokenizer {
            for t in [
                "<end_of_turn>",
                "<|im_end|>",
                "<|eot_id|>",
                "<|endoftext|>",
                "<eos>",
            ] {
                if let Some(id) = tok.token_id(t) {
                    if !stop_ids.contains(&id) {
                        stop_ids.push(id);
                    }
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            model,
            config,
            tokenizer,
            template,
            stop_ids,
            default_sampling,
            load_time: t0.elapsed(),
            device,
            placement,
            vision,
        })
    }

    /// The vision tower, when the model sees images (a multimodal folder, or a GGUF
    /// with its mmproj).
    pub fn vision(&self) -> Option<&Vision> {
        self.vision.as_ref()
    }

    /// The vision tower, or an error saying the model takes no images.
    fn eyes(&self) -> Result<&Vision> {
        self.vision.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "{} takes no images: it has no vision tower (a Gemma 3 4B or larger \
                 folder, or a GGUF with its mmproj file beside it or named)",
                self.path.display()
            ))
        })
    }

    /// An image file (PNG, JPEG or WebP) prepared for this model.
    pub fn open_image(&self, path: &Path) -> Result<Image> {
        self.eyes()?.open(path)
    }

    /// An image file's bytes prepared for this model; `name` names it in errors.
    pub fn image_from_bytes(&self, bytes: &[u8], name: &str) -> Result<Image> {
        self.eyes()?.image_from_bytes(bytes, name)
    }

    /// Raw completion of `prompt_ids` with images: each run of the image token
    /// ([`Vision::tokens`], `tokens_per_image` long) takes the next image's
    /// features, in order.
    pub fn generate_with_images(
        &self,
        prompt_ids: &[u32],
        images: &[Image],
        params: &GenerationParams,
        sink: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Reply> {
        self.chat_session()
            .complete_with_images(prompt_ids, images, params, sink)
    }

    /// The image tokens of `prompt` (its images times the tokens each takes).
    pub(crate) fn image_tokens(&self, prompt: &Prompt) -> usize {
        prompt.images.len() * self.vision.as_ref().map_or(0, |v| v.tokens_per_image())
    }

    /// `ids` with `images` placed at its runs of image tokens (one each, in order).
    fn placed(&self, ids: Vec<u32>, images: &[Image]) -> Result<Prompt> {
        let runs = match (&self.vision, images.is_empty()) {
            (None, true) => Vec::new(),
            _ => self.eyes()?.image_runs(&ids)?,
        };
        if runs.len() != images.len() {
            return Err(Error::Invalid(format!(
                "the prompt holds {} images' tokens but {} images were given",
                runs.len(),
                images.len()
            )));
        }
        let images = runs
            .iter()
            .map(|r| r.start)
            .zip(images.iter().cloned())
            .collect();
        Ok(Prompt { ids, images })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The tokenizer, or an error saying the model has none (an HF folder without
    /// `tokenizer.json` runs from token ids only).
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "{} has no tokenizer (no tokenizer.json or GGUF tokenizer metadata): text input and output are unavailable; pass token ids",
                self.path.display()
            ))
        })
    }

    /// Whether text can be encoded and decoded.
    pub fn has_tokenizer(&self) -> bool {
        self.tokenizer.is_some()
    }

    /// Sampling recommended by the model's `generation_config.json`, if any.
    pub fn default_sampling(&self) -> Option<&SamplingParams> {
        self.default_sampling.as_ref()
    }

    /// Whether the model ships a chat template (base models do not).
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Token ids that end a reply.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// How long loading took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The compute device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Where it runs (`cpu`, `cuda:0`, ...) and why `auto` chose the CPU, if it did.
    pub fn placement(&self) -> &crate::device::Placement {
        &self.placement
    }

    /// A new conversation with an empty cache.
    pub fn chat_session(&self) -> ChatSession<'_> {
        ChatSession {
            model: self,
            cache: self.model.new_cache(),
            cached: Vec::new(),
            messages: Vec::new(),
            ctx: self.config.context_length(),
            overflow: Overflow::default(),
            dropped: 0,
            cut: 0,
            draft: None,
            images: Vec::new(),
            turn_images: Vec::new(),
            cached_images: Vec::new(),
        }
    }

    /// The prompt ids for a conversation: the chat template when there is one,
    /// otherwise the messages' text as a plain continuation.
    pub fn render_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.encode_rendered(&self.render_text(messages)?)
    }

    /// The prompt text for a conversation ([`LoadedModel::render_chat`] before
    /// tokenizing).
    pub fn render_text(&self, messages: &[Message]) -> Result<String> {
        let tok = self.tokenizer()?;
        match &self.template {
            Some(t) => t.render(messages, true, &tok.bos_token, &tok.eos_token),
            None => {
                let text: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
                Ok(text.join("\n"))
            }
        }
    }

    /// Tokens of a rendered prompt: a template writes BOS itself where the model wants
    /// one; plain text gets it here.
    fn encode_rendered(&self, text: &str) -> Result<Vec<u32>> {
        let tok = self.tokenizer()?;
        match &self.template {
            Some(_) => tok.encode(text),
            None => tok.encode_with_bos(text),
        }
    }

    /// The prompt of rendered chat text whose image markers stand for `images`, in
    /// order.
    fn encode_prompt(&self, text: &str, images: &[Image]) -> Result<Prompt> {
        let n = text.matches(vision::MARKER).count();
        if n != images.len() {
            return Err(Error::Invalid(format!(
                "the conversation places {n} images but holds {}",
                images.len()
            )));
        }
        if n == 0 {
            return Ok(self.encode_rendered(text)?.into());
        }
        let expanded = self.eyes()?.expand_markers(text, self.tokenizer()?)?;
        self.placed(self.encode_rendered(&expanded)?, images)
    }

    /// Whether the chat template renders tools itself, and how its model calls one.
    pub fn tool_syntax(&self) -> Option<crate::template::ToolSyntax> {
        self.template.as_ref().and_then(|t| t.tool_syntax())
    }

    /// The prompt ids for a conversation with tools, through a template that renders
    /// them ([`LoadedModel::tool_syntax`]); `messages` and `tools` as JSON.
    pub fn render_chat_with_tools(
        &self,
        messages: &serde_json::Value,
        tools: &serde_json::Value,
    ) -> Result<Vec<u32>> {
        Ok(self.chat_prompt_with_tools(messages, tools, &[])?.ids)
    }

    /// The prompt of a conversation whose messages place `images` with
    /// [`vision::MARKER`]s (one per image, in order; the model's template puts
    /// each marker's image tokens where it stands). A marker count that differs
    /// from the images, or images for a model without a vision tower, is an error.
    pub fn chat_prompt(&self, messages: &[Message], images: &[Image]) -> Result<Prompt> {
        self.encode_prompt(&self.render_text(messages)?, images)
    }

    /// [`LoadedModel::chat_prompt`] through a template that renders tools
    /// ([`LoadedModel::render_chat_with_tools`]).
    pub fn chat_prompt_with_tools(
        &self,
        messages: &serde_json::Value,
        tools: &serde_json::Value,
        images: &[Image],
    ) -> Result<Prompt> {
        let tok = self.tokenizer()?;
        let t = self.template.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no chat template to render tools",
                self.path.display()
            ))
        })?;
        let text = t.render_with_tools(messages, tools, &tok.bos_token, &tok.eos_token)?;
        self.encode_prompt(&text, images)
    }

    /// Raw completion of `prompt_ids` (no template, no BOS added) in a fresh cache.
    pub fn generate(
        &self,
        prompt_ids: &[u32],
        params: &GenerationParams,
        sink: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Reply> {
        let mut s = self.chat_session();
        s.complete(prompt_ids, params, sink)
    }
}

/// A prompt's ids and the images placed in it (each at the first of its run of
/// image tokens). Made by [`LoadedModel::chat_prompt`] and its siblings, which check
/// that each image sits on a run of image tokens; plain ids convert with `From`.
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    ids: Vec<u32>,
    images: Vec<(usize, Image)>,
}

impl Prompt {
    /// Its token ids (an image's run of image tokens included).
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Its images, each with the position of the first of its tokens.
    pub fn images(&self) -> &[(usize, Image)] {
        &self.images
    }

    /// Tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it has no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl From<Vec<u32>> for Prompt {
    fn from(ids: Vec<u32>) -> Self {
        Self {
            ids,
            images: Vec::new(),
        }
    }
}

/// A conversation: its messages and the KV cache of everything already computed,
/// within a context length, with a policy for when the conversation outgrows it.
pub struct ChatSession<'m> {
    model: &'m LoadedModel,
    cache: KvCache,
    cached: Vec<u32>,
    messages: Vec<Message>,
    ctx: usize,
    overflow: Overflow,
    /// Drop-oldest: leading non-system messages left out of the context.
    dropped: usize,
    /// Rolling: where, in the rendered conversation, the kept text resumes after the
    /// head (0: nothing cut). Kept across turns so the prompt keeps its prefix and the
    /// cache its work.
    cut: usize,
    /// A model proposing tokens for this one to check ([`crate::speculative`]).
    draft: Option<Draft>,
    /// The images of `messages`, in the order of their markers ([`vision::MARKER`]).
    images: Vec<Image>,
    /// The images of the conversation a turn renders (`images` and the turn's).
    turn_images: Vec<Image>,
    /// The images the cache holds: (position of the first of its tokens, image).
    cached_images: Vec<(usize, Image)>,
}

impl<'m> ChatSession<'m> {
    /// Adds `new_messages` (usually one user message, optionally after a system one)
    /// and generates the assistant's reply, which is then part of the history. A
    /// conversation that outgrows the context is handled by its [`Overflow`] policy.
    pub fn send(
        &mut self,
        new_messages: &[Message],
        params: &GenerationParams,
        sink: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Reply> {
        self.send_with_images(new_messages, &[], params, sink)
    }

    /// [`ChatSession::send`] with images ([`LoadedModel::open_image`]) shown in the
    /// last new user message, before its text, as Gemma's chat template places an
    /// image content part: the message keeps one [`vision::MARKER`] per image, and
    /// the conversation keeps the images for later turns (an overflow policy that
    /// lets a message go lets its images go with it).
    pub fn send_with_images(
        &mut self,
        new_messages: &[Message],
        images: &[Image],
        params: &GenerationParams,
        sink: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Reply> {
        if new_messages
            .iter()
            .any(|m| m.content.contains(vision::MARKER))
        {
            return Err(Error::Invalid(format!(
                "a message may not contain {:?} (U+FFFC, the image placeholder)",
                vision::MARKER
            )));
        }
        let mut new_messages = new_messages.to_vec();
        if !images.is_empty() {
            self.model.eyes()?;
            let last = new_messages
                .iter_mut()
                .rev()
                .find(|m| m.role == "user")
                .ok_or_else(|| Error::Invalid("images need a user message to go with".into()))?;
            let markers: String = std::iter::repeat_n(vision::MARKER, images.len()).collect();
            last.content = format!("{markers}{}", last.content);
        }
        let mut messages = self.messages.clone();
        messages.extend(new_messages);
        self.turn_images = self.images.iter().chain(images).cloned().collect();
        let reply = self.reply_to(&messages, params, sink)?;
        messages.push(Message::assistant(reply.text.clone()));
        self.messages = messages;
        self.images = std::mem::take(&mut self.turn_images);
        Ok(reply)
    }

    /// Samples the last reply again: the assistant's last message is replaced (the
    /// cache keeps everything before it).
    pub fn regenerate(
        &mut self,
        params: &GenerationParams,
        sink: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Reply> {
        let mut messages = self.messages.clone();
        if messages.last().is_some_and(|m| m.role == "assistant") {
            messages.pop();
        }
        if messages.last().is_none_or(|m| m.role != "user") {
            return Err(Error::Invalid(
                "there is no user turn to answer again".into(),
            ));
        }
        self.rewind_to(messages.len());
        self.turn_images = self.images.clone();
        let reply = self.reply_to(&messages, params, sink)?;
        messages.push(Message::assistant(reply.text.clone()));
        self.messages = messages;
        Ok(reply)
    }

    /// Replaces user message `index` (counting all messages) with `text`, forgets what
    /// came after it, and answers it; the cache rolls back to that turn.
    pub fn edit(
        &mut self,
        index: usize,
        text: String,
        params: &GenerationParams,
        sink: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Reply> {
        if self.messages.get(index).is_none_or(|m| m.role != "user") {
            return Err(Error::Invalid(format!(
                "message {index} is not a user message of this conversation"
            )));
        }
        if text.contains(vision::MARKER) {
            return Err(Error::Invalid(
                "a message may not contain U+FFFC, the image placeholder".into(),
            ));
        }
        let mut messages = self.messages[..index].to_vec();
        messages.push(Message::user(text));
        self.rewind_to(index);
        self.turn_images = self.images.clone();
        let reply = self.reply_to(&messages, params, sink)?;
        messages.push(Message::assistant(reply.text.clone()));
        self.messages = messages;
        Ok(reply)
    }

    /// Keeps the first `n` messages. The cache keeps what it holds: the next prompt
    /// shares its prefix up to there, so only what follows is computed again.
    fn rewind_to(&mut self, n: usize) {
        self.messages.truncate(n);
        self.images.truncate(markers(&self.messages));
        // The policy's state may point past the new end; the next turn refits.
        self.dropped = 0;
        self.cut = 0;
    }

    /// Sets the context length (at most the model's) and the overflow policy; the
    /// conversation refits on its next turn.
    pub fn set_context(&mut self, ctx: usize, overflow: Overflow) -> Result<()> {
        let max = self.model.config.context_length();
        if ctx < 16 || ctx > max {
            return Err(Error::Invalid(format!(
                "context length {ctx}: this model takes 16 to {max} tokens"
            )));
        }
        if ctx < self.ctx || overflow != self.overflow {
            self.dropped = 0;
            self.cut = 0;
        }
        self.ctx = ctx;
        self.overflow = overflow;
        Ok(())
    }

    /// Lets `draft` propose tokens for this conversation's replies (speculative
    /// decoding: the output stays this model's), or stops that with `None`.
    pub fn set_draft(&mut self, draft: Option<Draft>) {
        self.draft = draft;
    }

    /// The context length in force.
    pub fn context_length(&self) -> usize {
        self.ctx
    }

    /// The tokens the KV cache holds, in order.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// The messages as the context keeps them under drop-oldest (all of them under
    /// the other policies, where rolling may also cut through the oldest kept one).
    pub fn context_messages(&self) -> Vec<Message> {
        kept(&self.messages, self.dropped)
    }

    /// Renders `messages` as the policy keeps them and generates the reply.
    fn reply_to(
        &mut self,
        messages: &[Message],
        params: &GenerationParams,
        sink: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Reply> {
        let reserve = params.max_tokens.min(self.ctx / 4).max(1);
        let prompt = self
            .fit(messages, 0, reserve)?
            .ok_or_else(|| Error::Invalid(self.too_long(messages, reserve)))?;
        let mut reply = self.run(&prompt, params, sink, Some(messages))?;
        let (dropped_messages, dropped_tokens) = match (self.dropped, self.cut) {
            (0, 0) => (0, 0),
            (d, _) => {
                let all = self.prompt_for(messages, 0)?.ids.len();
                (d, all.saturating_sub(reply.stats.prompt_tokens))
            }
        };
        reply.context = Some(ContextUse {
            used: self.cache.len() + 1,
            limit: self.ctx,
            overflow: self.overflow,
            dropped_messages,
            dropped_tokens,
        });
        Ok(reply)
    }

    /// Why a turn cannot go ahead under the policy, in words a user can act on.
    fn too_long(&self, messages: &[Message], reserve: usize) -> String {
        let n = self.prompt_for(messages, 0).map_or(0, |p| p.ids.len());
        match self.overflow {
            Overflow::Stop => format!(
                "the conversation takes {n} tokens and the reply needs room for {reserve} more; the context holds {}: start a new chat, raise the context length, or let the oldest turns go",
                self.ctx
            ),
            _ => format!(
                "the latest message and room for a {reserve}-token reply do not fit a context of {} tokens: shorten the message or raise the context length",
                self.ctx
            ),
        }
    }

    /// The prompt ids of `messages` as the overflow policy keeps them, such that the
    /// prompt and `extra` tokens already generated leave `reserve` positions free.
    /// When they do not, the policy lets go of more, down to half the context (so
    /// that the turns after it append to the cache again instead of recomputing it
    /// each time), and at least enough to fit; `None` when it cannot.
    fn fit(
        &mut self,
        messages: &[Message],
        extra: usize,
        reserve: usize,
    ) -> Result<Option<Prompt>> {
        let ctx = self.ctx;
        let fits = |n: usize| n + extra + reserve <= ctx;
        let roomy = |n: usize| n + extra <= ctx / 2;
        match self.overflow {
            Overflow::Stop => {
                let p = self.prompt_for(messages, 0)?;
                Ok(fits(p.ids.len()).then_some(p))
            }
            Overflow::DropOldest => {
                let mut d = self.dropped.min(droppable(messages));
                let p = self.prompt_for(messages, d)?;
                if fits(p.ids.len()) {
                    self.dropped = d;
                    return Ok(Some(p));
                }
                let mut best = None;
                while let Some(next) = next_turn(messages, d) {
                    d = next;
                    let p = self.prompt_for(messages, d)?;
                    if fits(p.ids.len()) {
                        let done = roomy(p.ids.len());
                        best = Some((d, p));
                        if done {
                            break;
                        }
                    }
                }
                Ok(best.map(|(d, p)| {
                    self.dropped = d;
                    p
                }))
            }
            Overflow::Rolling => {
                let full = self.model.render_text(&plain_replies(messages))?;
                let head = self.head_len(messages)?.min(full.len());
                // Never cut into the latest user message.
                let last = messages
                    .iter()
                    .rev()
                    .find(|m| m.role == "user")
                    .and_then(|m| find_message(&full, &m.content))
                    .unwrap_or(head)
                    .max(head);
                let text = |cut: usize| -> String {
                    if cut <= head {
                        full.clone()
                    } else {
                        format!("{}{}", &full[..head], &full[cut..])
                    }
                };
                // The images of markers cut away go with them.
                let ids = |cut: usize| -> Result<Prompt> {
                    let images = match cut <= head {
                        true => self.turn_images.clone(),
                        false => {
                            let (before, upto) = (count(&full[..head]), count(&full[..cut]));
                            let imgs = &self.turn_images;
                            let mut kept = imgs[..before.min(imgs.len())].to_vec();
                            kept.extend_from_slice(&imgs[upto.min(imgs.len())..]);
                            kept
                        }
                    };
                    self.model.encode_prompt(&text(cut), &images)
                };
                let cut = if self.cut > last { 0 } else { self.cut };
                let kept = ids(cut)?;
                if fits(kept.ids.len()) {
                    self.cut = cut;
                    return Ok(Some(kept));
                }
                // The smallest cut that leaves half the context, else the latest
                // possible one, which must fit at all. (Half the context always
                // leaves the reserve, at most a quarter of it, free.)
                let (mut lo, mut hi) = (cut.max(head), last);
                let mut best = ids(hi)?;
                if !fits(best.ids.len()) {
                    return Ok(None);
                }
                while lo < hi {
                    let mid = floor_char_boundary(&full, lo + (hi - lo) / 2).max(lo);
                    if mid == lo {
                        break;
                    }
                    let at = ids(mid)?;
                    if roomy(at.ids.len()) {
                        (hi, best) = (mid, at);
                    } else {
                        lo = mid;
                    }
                }
                // Resume at a word's start where one is near.
                if let Some(ws) = full[hi..last].find(char::is_whitespace) {
                    let after = hi + ws + 1;
                    if ws < 64 && full.is_char_boundary(after) {
                        let at = ids(after)?;
                        if fits(at.ids.len()) {
                            (hi, best) = (after, at);
                        }
                    }
                }
                self.cut = hi;
                Ok(Some(best))
            }
        }
    }

    /// The prompt of `messages` with the first `dropped` after the system ones left
    /// out, with the turn's images of the markers it keeps.
    fn prompt_for(&self, messages: &[Message], dropped: usize) -> Result<Prompt> {
        let system = messages.iter().take_while(|m| m.role == "system").count();
        let gone = &messages[system..(system + dropped).min(messages.len())];
        let skip = markers(gone).min(self.turn_images.len());
        let kept = plain_replies(&kept(messages, dropped));
        let text = self.model.render_text(&kept)?;
        self.model.encode_prompt(&text, &self.turn_images[skip..])
    }

    /// Bytes of the rendered conversation before the first user message's text: the
    /// template's start, the system prompt and the user header, which rolling keeps.
    fn head_len(&self, messages: &[Message]) -> Result<usize> {
        let system: Vec<Message> = messages
            .iter()
            .take_while(|m| m.role == "system")
            .cloned()
            .collect();
        let probe = |c: &str| {
            let mut m = system.clone();
            m.push(Message::user(c));
            self.model.render_text(&m)
        };
        let (a, b) = (probe("\u{E000}")?, probe("\u{E001}")?);
        Ok(floor_char_boundary(
            &a,
            a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count(),
        ))
    }

    /// The conversation so far.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Continues a stored conversation: its messages become the history (the cache
    /// starts empty, so the next turn computes them once).
    pub fn restore(&mut self, messages: Vec<Message>) {
        self.reset();
        // Images are not part of a stored conversation: their places go.
        self.messages = messages
            .into_iter()
            .map(|m| Message {
                content: m.content.replace(vision::MARKER, ""),
                role: m.role,
            })
            .collect();
    }

    /// [`ChatSession::restore`] of a conversation with images: its messages hold one
    /// [`vision::MARKER`] per image where they show it (as [`ChatSession::messages`]
    /// holds them after [`ChatSession::send_with_images`]), and `images` are those
    /// images in the order of their markers. A count that differs, or images for a
    /// model without a vision tower, is an error, and the conversation is then empty.
    pub fn restore_with_images(
        &mut self,
        messages: Vec<Message>,
        images: Vec<Image>,
    ) -> Result<()> {
        self.reset();
        let n = markers(&messages);
        if n != images.len() {
            return Err(Error::Invalid(format!(
                "the conversation places {n} images but {} were given",
                images.len()
            )));
        }
        if n > 0 {
            self.model.eyes()?;
        }
        self.messages = messages;
        self.images = images;
        Ok(())
    }

    /// Forgets the conversation and the cache.
    pub fn reset(&mut self) {
        self.messages.clear();
        self.cached.clear();
        self.cache.clear();
        self.images.clear();
        self.cached_images.clear();
    }

    /// Bytes the KV cache holds.
    pub fn kv_cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Continues `prompt_ids`, reusing the longest prefix the cache already holds; a
    /// reply that fills the context ends there.
    pub fn complete(
        &mut self,
        prompt_ids: &[u32],
        params: &GenerationParams,
        sink: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Reply> {
        self.run(&prompt_ids.to_vec().into(), params, sink, None)
    }

    /// [`ChatSession::complete`] with images placed at the runs of image tokens
    /// ([`LoadedModel::generate_with_images`]); the cache is reused up to the first
    /// image that differs from what it holds.
    pub fn complete_with_images(
        &mut self,
        prompt_ids: &[u32],
        images: &[Image],
        params: &GenerationParams,
        sink: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Reply> {
        let prompt = self.model.placed(prompt_ids.to_vec(), images)?;
        self.run(&prompt, params, sink, None)
    }

    /// The generation loop. With `messages` (a chat turn), a reply that fills the
    /// context refits the conversation by its policy and goes on.
    fn run(
        &mut self,
        prompt: &Prompt,
        params: &GenerationParams,
        sink: &mut dyn FnMut(&TokenEvent) -> bool,
        messages: Option<&[Message]>,
    ) -> Result<Reply> {
        params.sampling.validate().map_err(Error::Invalid)?;
        let prompt_ids = &prompt.ids[..];
        let m = self.model;
        let ctx = self.ctx;
        if prompt_ids.is_empty() {
            return Err(Error::Invalid("the prompt is empty".into()));
        }
        if prompt_ids.len() >= ctx {
            return Err(Error::Invalid(format!(
                "the prompt has {} tokens; the model's context is {ctx}",
                prompt_ids.len()
            )));
        }
        let mut clock = Clock::start();
        let (mut logits, mut computed) = self.prefill(prompt)?;
        clock.prefilled();
        let mut sampler = Sampler::new(params.sampling.clone());
        let mut text = TextOut::new(m.tokenizer.as_ref(), &params.stop_strings);
        let mut history: Vec<u32> = prompt_ids.to_vec();
        let mut generated: Vec<u32> = Vec::new();
        // A draft reads ids only: a conversation with images' features decodes alone.
        let drafting = prompt.images.is_empty();
        if let Some(d) = &mut self.draft {
            d.begin(&params.sampling);
        }
        // Tokens a speculative step settled: all but the last are in the cache.
        let mut settled = std::collections::VecDeque::new();
        let stop_reason = loop {
            if generated.len() >= params.max_tokens {
                break StopReason::MaxTokens;
            }
            let next = match settled.pop_front() {
                Some(t) => t,
                None => sampler.sample(&logits, &history),
            };
            clock.token();
            generated.push(next);
            history.push(next);
            if !params.ignore_eos && m.stop_ids.contains(&next) {
                break StopReason::Eos;
            }
            let (piece, stopped) = text.push(next)?;
            if stopped {
                sink(&TokenEvent {
                    id: next,
                    text: piece,
                });
                break StopReason::StopString;
            }
            if !sink(&TokenEvent {
                id: next,
                text: piece,
            }) {
                break StopReason::Cancelled;
            }
            if generated.len() >= params.max_tokens {
                break StopReason::MaxTokens;
            }
            if params.stop_on_loop && ends_in_loop(&generated) {
                break StopReason::Loop;
            }
            if !settled.is_empty() {
                continue;
            }
            if self.cache.len() + 1 >= ctx {
                let refit = match (messages, self.overflow) {
                    (Some(msgs), Overflow::DropOldest | Overflow::Rolling) => {
                        self.fit(msgs, generated.len(), (ctx / 8).clamp(1, 64))?
                    }
                    _ => None,
                };
                let Some(mut refit) = refit else {
                    break StopReason::ContextFull;
                };
                // The kept conversation and the reply so far, computed once; the
                // reply then goes on from there.
                refit.ids.extend_from_slice(&generated);
                let (l, n) = self.prefill(&refit)?;
                logits = l;
                computed += n;
                continue;
            }
            if let Some(d) = self.draft.as_mut().filter(|_| drafting) {
                // Room for proposals: the context, and the tokens still wanted.
                let room = (ctx - 2 - self.cache.len())
                    .min(params.max_tokens.saturating_sub(generated.len() + 1));
                settled.extend(d.step(
                    &m.model,
                    &mut self.cache,
                    &mut self.cached,
                    &history,
                    &mut sampler,
                    room,
                )?);
                continue;
            }
            logits = last_logits(m.model.forward(&[next], &mut self.cache, 0)?)?;
            self.cached.push(next);
        };
        if let Some(rest) = text.finish(stop_reason)? {
            // Text held back for a stop string that never came.
            sink(&TokenEvent {
                id: *generated.last().unwrap_or(&0),
                text: rest,
            });
        }
        let stats = Stats {
            image_tokens: m.image_tokens(prompt),
            prompt_tokens: prompt_ids.len(),
            prefill_tokens: computed,
            generated_tokens: generated.len(),
            ttft_ms: clock.ttft_ms(),
            prefill_tok_s: clock.prefill_tok_s(computed),
            decode_tok_s: clock.decode_tok_s(generated.len()),
            weights_bytes: m.model.weight_bytes().total,
            kv_cache_bytes: self.cache.bytes(),
            rss_bytes: rss_bytes(),
            peak_rss_bytes: peak_rss_bytes(),
            vram_bytes: crate::device::vram_used(&m.placement),
            device: m.placement.label.clone(),
            draft: self.draft.as_ref().map(|d| Box::new(d.stats())),
        };
        Ok(Reply {
            text: text.into_text(),
            token_ids: generated,
            stop_reason,
            stats,
            context: None,
        })
    }

    /// Computes what the cache lacks of `prompt_ids` (at least its last token, whose
    /// logits pick the first reply token); returns those logits and how many tokens
    /// were computed.
    fn prefill(&mut self, prompt: &Prompt) -> Result<(Vec<f32>, usize)> {
        prefill_prompt(
            self.model,
            &mut self.cache,
            &mut self.cached,
            &mut self.cached_images,
            prompt,
        )
    }
}

/// Computes what `cache` lacks of `prompt` (at least its last token, whose logits
/// pick the first reply token): `cached` are the tokens it holds and
/// `cached_images` the images among them. Returns the last position's logits and
/// how many tokens were computed.
pub(crate) fn prefill_prompt(
    model: &LoadedModel,
    cache: &mut KvCache,
    cached: &mut Vec<u32>,
    cached_images: &mut Vec<(usize, Image)>,
    prompt: &Prompt,
) -> Result<(Vec<f32>, usize)> {
    let reuse = keep_prefix(model, cache, cached, cached_images, prompt);
    compute_rest(model, cache, cached, cached_images, prompt, reuse)
}

/// Keeps of `cache` the longest prefix it shares with `prompt` ([`reuse_prefix`]),
/// where an image is reused whole and only where the same image is again; returns
/// how many positions it kept.
pub(crate) fn keep_prefix(
    model: &LoadedModel,
    cache: &mut KvCache,
    cached: &mut Vec<u32>,
    cached_images: &mut Vec<(usize, Image)>,
    prompt: &Prompt,
) -> usize {
    let ids = &prompt.ids;
    match (
        &model.vision,
        prompt.images.is_empty() && cached_images.is_empty(),
    ) {
        (Some(v), false) => {
            let n = v.tokens_per_image();
            let mut want = common_prefix(cached, ids).min(ids.len().saturating_sub(1));
            for &(at, ref img) in cached_images.iter() {
                let same = prompt.images.iter().any(|(a, i)| *a == at && i == img);
                if at < want && (!same || at + n > want) {
                    want = at;
                }
            }
            // A prompt image is reused only where the cache holds that very
            // image's features there (not its tokens computed without it).
            for (at, img) in &prompt.images {
                let held = cached_images.iter().any(|(a, i)| a == at && i == img);
                if *at < want && !held {
                    want = *at;
                }
            }
            let reuse = cache.truncate(want);
            cached.truncate(reuse);
            cached_images.retain(|(at, _)| at + n <= reuse);
            reuse
        }
        _ => {
            cached_images.clear();
            reuse_prefix(cache, cached, ids)
        }
    }
}

/// Computes `prompt` from position `reuse` on (what [`keep_prefix`] kept), the
/// images placed there included; returns the last position's logits and how many
/// tokens were computed.
pub(crate) fn compute_rest(
    model: &LoadedModel,
    cache: &mut KvCache,
    cached: &mut Vec<u32>,
    cached_images: &mut Vec<(usize, Image)>,
    prompt: &Prompt,
    reuse: usize,
) -> Result<(Vec<f32>, usize)> {
    let fresh = &prompt.ids[reuse..];
    let new_images: Vec<&(usize, Image)> = prompt
        .images
        .iter()
        .filter(|(at, _)| *at >= reuse)
        .collect();
    let logits = match new_images.is_empty() {
        true => model.model.forward(fresh, cache, fresh.len() - 1)?,
        false => {
            let v = model.eyes()?;
            let features = new_images
                .iter()
                .map(|(_, img)| v.features(img))
                .collect::<Result<Vec<_>>>()?;
            let spans: Vec<ImageSpan> = new_images
                .iter()
                .zip(&features)
                .map(|((at, _), f)| ImageSpan {
                    at: at - reuse,
                    features: f,
                })
                .collect();
            model
                .model
                .forward_with_images(fresh, cache, fresh.len() - 1, &spans)?
        }
    };
    cached.extend_from_slice(fresh);
    cached_images.extend(new_images.into_iter().cloned());
    Ok((last_logits(logits)?, fresh.len()))
}

/// Where `content` starts in the rendered `text`, searching from the end. Templates
/// may trim a message (Gemma's do) or rewrite part of it, so this looks for the
/// longest start of its trimmed text that the rendering holds (at least 16 bytes, or
/// all of a shorter message).
fn find_message(text: &str, content: &str) -> Option<usize> {
    let trimmed = content.trim();
    if trimmed.is_empty() {
        return None;
    }
    if let Some(i) = text.rfind(trimmed) {
        return Some(i);
    }
    // A prefix the text holds stays held when shortened: search its length.
    let held = |n: usize| text.contains(&trimmed[..floor_char_boundary(trimmed, n)]);
    let (mut lo, mut hi) = (0, trimmed.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if held(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let prefix = &trimmed[..floor_char_boundary(trimmed, lo)];
    (prefix.len() >= 16.min(trimmed.len()))
        .then(|| text.rfind(prefix))
        .flatten()
}

/// Image markers in `messages`' user turns.
fn markers(messages: &[Message]) -> usize {
    messages
        .iter()
        .filter(|m| m.role == "user")
        .map(|m| count(&m.content))
        .sum()
}

/// Image markers in `text`.
fn count(text: &str) -> usize {
    text.matches(vision::MARKER).count()
}

/// `messages` with any image marker out of other turns than the user's (a reply
/// may have written one): only user turns hold images.
fn plain_replies(messages: &[Message]) -> Vec<Message> {
    messages
        .iter()
        .map(
            |m| match m.role != "user" && m.content.contains(vision::MARKER) {
                true => Message {
                    role: m.role.clone(),
                    content: m.content.replace(vision::MARKER, "\u{FFFD}"),
                },
                false => m.clone(),
            },
        )
        .collect()
}

/// `messages` without the first `dropped` messages after the leading system ones.
fn kept(messages: &[Message], dropped: usize) -> Vec<Message> {
    let system = messages.iter().take_while(|m| m.role == "system").count();
    let mut v = messages[..system].to_vec();
    v.extend_from_slice(&messages[(system + dropped).min(messages.len())..]);
    v
}

/// The most messages drop-oldest may leave out: all before the latest user message.
fn droppable(messages: &[Message]) -> usize {
    let system = messages.iter().take_while(|m| m.role == "system").count();
    messages
        .iter()
        .rposition(|m| m.role == "user")
        .map_or(0, |last| last.saturating_sub(system))
}

/// The next number of dropped messages after `dropped` that starts the kept history
/// at a user message (a whole turn goes), or `None` when no more may go.
fn next_turn(messages: &[Message], dropped: usize) -> Option<usize> {
    let system = messages.iter().take_while(|m| m.role == "system").count();
    let max = droppable(messages);
    (dropped + 1..=max).find(|&d| messages[system + d].role == "user")
}

/// Keeps of `cache` (holding the tokens `cached`) the longest prefix it shares with
/// `prompt`, short of the prompt's last token (whose logits must be computed), and
/// returns how many positions it kept. The cache may keep less than asked: a sliding
/// layer may already have dropped keys.
pub(crate) fn reuse_prefix(cache: &mut KvCache, cached: &mut Vec<u32>, prompt: &[u32]) -> usize {
    let want = common_prefix(cached, prompt).min(prompt.len().saturating_sub(1));
    let reuse = cache.truncate(want);
    cached.truncate(reuse);
    reuse
}

/// The logits of a one-position forward pass as floats.
pub(crate) fn last_logits(t: candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// The timings a reply reports. Decode speed is end to end: forward pass, sampling
/// and detokenization of every token after the first, from the first sampled token
/// to the last.
struct Clock {
    start: Instant,
    prefill_s: f64,
    first: Option<Instant>,
    last: Instant,
}

impl Clock {
    fn start() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            prefill_s: 0.0,
            first: None,
            last: now,
        }
    }

    fn prefilled(&mut self) {
        self.prefill_s = self.start.elapsed().as_secs_f64();
    }

    fn token(&mut self) {
        self.last = Instant::now();
        self.first.get_or_insert(self.last);
    }

    fn ttft_ms(&self) -> f64 {
        self.first
            .map_or(0.0, |f| (f - self.start).as_secs_f64() * 1e3)
    }

    fn prefill_tok_s(&self, computed: usize) -> f64 {
        computed as f64 / self.prefill_s.max(1e-9)
    }

    fn decode_tok_s(&self, generated: usize) -> f64 {
        match self.first {
            Some(first) if generated > 1 => {
                (generated - 1) as f64 / (self.last - first).as_secs_f64().max(1e-9)
            }
            _ => 0.0,
        }
    }
}

/// The reply's text as tokens arrive: detokenized incrementally, cut before the first
/// stop string, and held back while its tail could still become one.
pub(crate) struct TextOut<'t> {
    stream: Option<TokenStream<'t>>,
    stops: Vec<String>,
    longest_stop: usize,
    /// Everything decoded so far.
    text: String,
    /// Bytes of `text` already handed out.
    emitted: usize,
    /// The stop string that ended the text.
    hit: Option<String>,
}

impl<'t> TextOut<'t> {
    /// Without a tokenizer the reply is ids only, and the text stays empty.
    pub(crate) fn new(tokenizer: Option<&'t Tokenizer>, stops: &[String]) -> Self {
        Self {
            stream: tokenizer.map(TokenStream::new),
            stops: stops.to_vec(),
            longest_stop: stops.iter().map(|s| s.len()).max().unwrap_or(0),
            text: String::new(),
            emitted: 0,
            hit: None,
        }
    }

    /// Adds token `id`; returns the text that may be shown now, and whether a stop
    /// string ended the reply (the text is then cut before it).
    pub(crate) fn push(&mut self, id: u32) -> Result<(String, bool)> {
        if let Some(piece) = self
            .stream
            .as_mut()
            .map(|s| s.push(id))
            .transpose()?
            .flatten()
        {
            self.text.push_str(&piece);
        }
        let from = floor_char_boundary(&self.text, self.emitted.saturating_sub(self.longest_stop));
        let hit = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| (i + from, s)))
            .min_by_key(|(i, _)| *i);
        let (safe, stop) = match hit {
            Some((i, s)) => {
                self.hit = Some(s.clone());
                (i, true)
            }
            None => (safe_boundary(&self.text, &self.stops), false),
        };
        let piece = if safe > self.emitted {
            self.text[self.emitted..safe].to_string()
        } else {
            String::new()
        };
        self.emitted = self.emitted.max(safe);
        if stop {
            self.text.truncate(safe);
        }
        Ok((piece, stop))
    }

    /// Flushes the detokenizer; returns text still held back (none after a stop
    /// string, which cut it).
    pub(crate) fn finish(&mut self, why: StopReason) -> Result<Option<String>> {
        if why == StopReason::StopString {
            return Ok(None);
        }
        if let Some(rest) = self
            .stream
            .as_mut()
            .map(|s| s.finish())
            .transpose()?
            .flatten()
        {
            self.text.push_str(&rest);
        }
        // Text held back for a stop string that never came is part of the reply,
        // whatever ended it (a stop token too): the stream must add up to the text.
        if self.emitted < self.text.len() {
            let rest = self.text[self.emitted..].to_string();
            self.emitted = self.text.len();
            return Ok(Some(rest));
        }
        Ok(None)
    }

    /// The stop string that ended the text, if one did.
    pub(crate) fn stop_string(&self) -> Option<&str> {
        self.hit.as_deref()
    }

    pub(crate) fn into_text(self) -> String {
        self.text
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

pub(crate) fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The largest byte index such that no suffix of `text[..]` from there on could be
/// the start of a stop string (so it is safe to show everything before it).
fn safe_boundary(text: &str, stops: &[String]) -> usize {
    let mut safe = text.len();
    for s in stops.iter().filter(|s| !s.is_empty()) {
        for (i, _) in text.char_indices().rev().take(s.chars().count()) {
            if s.starts_with(&text[i..]) {
                safe = safe.min(i);
            }
        }
    }
    safe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_boundary_holds_back_partial_stop_strings() {
        let stops = vec!["</s>".to_string()];
        assert_eq!(safe_boundary("hello </", &stops), 6);
        assert_eq!(safe_boundary("hello", &stops), 5);
        assert_eq!(safe_boundary("a<", &stops), 1);
    }

    #[test]
    fn a_message_is_found_in_its_rendering_even_trimmed_or_rewritten() {
        let text = "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>user\nSummarise this, briefly.<end_of_turn>\n";
        let at = text.find("Summarise");
        assert_eq!(find_message(text, "Summarise this, briefly."), at);
        assert_eq!(find_message(text, "  Summarise this, briefly. \n"), at);
        // A template that rewrote the end: the start is enough.
        assert_eq!(find_message(text, "Summarise this, briefly. And\nmore"), at);
        assert_eq!(find_message(text, "   "), None);
        assert_eq!(find_message(text, "absent"), None);
    }

    #[test]
    fn common_prefix_counts_shared_ids() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
    }
}

//! Continuous batching: many requests on one model, decoded together.
//!
//! A [`Batcher`] owns a fixed number of slots, each a KV cache with the tokens it
//! holds. Its thread admits queued requests into free slots (the slot whose cache
//! shares the longest prefix with the prompt, so a chat client that resends its
//! history computes only the new turn), prefills each alone, then runs one forward
//! pass per step over every decoding sequence ([`crate::models::Model::forward_batch`]):
//! decode reads the weights from memory once per step for all of them. A request
//! joins or leaves between steps; one whose client is gone (its sink returns false,
//! or its cancel flag is set) leaves at the next step.
//!
//! A sequence's tokens do not depend on what else is batched with it (see
//! `forward_batch`): greedy output through the batcher equals
//! [`crate::session::ChatSession`]'s on the same prompt. The one exception is
//! prefix reuse on AVX-512: when fewer than four prompt tokens are new, they take the
//! decode kernels where a whole prompt took the tiled prefill kernels, and their
//! logits differ in the last bits (16-bit activation scales per 32 or per 256 values).

use crate::attention::KvCache;
use crate::error::{Error, Result};
use crate::sampler::Sampler;
use crate::session::{
    common_prefix, compute_rest, keep_prefix, GenerationParams, LoadedModel, Prompt, StopReason,
    TextOut,
};
use crate::speculative::Draft;
use crate::stats::{peak_rss_bytes, rss_bytes, Stats};
use crate::vision::Image;
use candle_core::DType;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Restricts which tokens may come next (constrained decoding: JSON schemas,
/// regular expressions, grammars; see [`crate::constrain`]).
pub trait Constraint: Send {
    /// Sets the logits of tokens the constraint forbids now to −∞.
    fn mask(&mut self, logits: &mut [f32]) -> std::result::Result<(), String>;
    /// Records the token that was picked.
    fn accept(&mut self, id: u32) -> std::result::Result<(), String>;
    /// Whether the constrained text is complete and nothing may follow.
    fn finished(&mut self) -> bool;
}

/// A token's log-probability, and the most likely alternatives at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Logprob {
    /// ln p of the picked token under the model (before any constraint).
    pub logprob: f32,
    /// The `top` most likely tokens and their ln p, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// What a request hears from the batcher.
#[derive(Debug, Clone)]
pub enum Event {
    /// Its prompt was admitted into a slot: how many tokens it has and how many the
    /// slot's cache already held.
    Admitted {
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Of those, taken from the cache.
        reused: usize,
    },
    /// A generated token and the text it completes (empty while held back).
    Token {
        /// The token id.
        id: u32,
        /// Its text.
        text: String,
        /// When asked for.
        logprob: Option<Logprob>,
    },
    /// The end: the whole text, why it ended, and the measured figures.
    Done {
        /// The generated text (stop strings and stop tokens excluded).
        text: String,
        /// Generated ids.
        token_ids: Vec<u32>,
        /// Why it ended.
        stop_reason: StopReason,
        /// The stop string that ended it ([`StopReason::StopString`]).
        stop_string: Option<String>,
        /// Figures (TTFT counts from submission, queue wait included).
        stats: Stats,
    },
    /// It failed; nothing more follows.
    Failed(String),
}

/// The sink a request's events go to; returning false means the client is gone.
pub type Sink = Box<dyn FnMut(Event) -> bool + Send>;

/// One completion to run.
pub struct Request {
    /// The prompt's token ids and images (rendered and tokenized by the caller:
    /// [`LoadedModel::chat_prompt`], or plain ids with `.into()`).
    pub prompt: Prompt,
    /// Sampling, limits and stop strings.
    pub params: GenerationParams,
    /// Report log-probabilities with this many alternatives (`Some(0)`: only the
    /// picked token's).
    pub logprobs: Option<usize>,
    /// A constraint on the output.
    pub constraint: Option<Box<dyn Constraint>>,
    /// Where events go.
    pub sink: Sink,
    /// Set by the caller to cancel (a client that disconnected while queued).
    pub cancel: Arc<AtomicBool>,
}

/// Why a request was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// The queue is full: try again later.
    QueueFull,
    /// The prompt and `max_tokens` do not fit the context of a slot.
    TooLong(String),
    /// The batcher has shut down.
    Closed,
}

/// Limits of a [`Batcher`].
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Sequences decoded together (slots, each with its own cache).
    pub parallel: usize,
    /// Requests that may wait for a slot; more are refused with [`Rejected::QueueFull`].
    pub queue: usize,
    /// Tokens per sequence (prompt and reply); at most the model's context.
    pub ctx: usize,
}

/// Live figures of a [`Batcher`].
#[derive(Debug, Default)]
pub struct Load {
    /// Requests waiting for a slot.
    pub queued: AtomicUsize,
    /// Sequences in slots.
    pub active: AtomicUsize,
    /// Decode steps run since start.
    pub steps: AtomicUsize,
}

struct Queue {
    waiting: VecDeque<(Request, Instant)>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    load: Load,
}

/// Runs requests on one model with continuous batching (see the module docs).
pub struct Batcher {
    shared: Arc<Shared>,
    opts: BatchOptions,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Batcher {
    /// Starts the batching thread on `model`.
    pub fn new(model: Arc<LoadedModel>, opts: BatchOptions) -> Result<Self> {
        Self::with_draft(model, opts, None)
    }

    /// [`Batcher::new`] with a draft model ([`crate::speculative`]): while one
    /// sequence decodes alone (no constraint, no log-probabilities asked), the
    /// draft proposes and a step checks its proposals in one pass; with several,
    /// batching already reads each weight once for all of them.
    pub fn with_draft(
        model: Arc<LoadedModel>,
        opts: BatchOptions,
        draft: Option<Draft>,
    ) -> Result<Self> {
        if opts.parallel == 0 || opts.parallel > 256 {
            return Err(Error::Invalid(format!(
                "parallel sequences must be 1 to 256, got {}",
                opts.parallel
            )));
        }
        let ctx = model.config().context_length();
        if opts.ctx < 2 || opts.ctx > ctx {
            return Err(Error::Invalid(format!(
                "context of {} tokens per sequence: the model allows 2 to {ctx}",
                opts.ctx
            )));
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
            load: Load::default(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("unicorn-batch".into())
            .spawn(move || {
                let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&model, &s, opts, draft)
                }))
                .is_err();
                if crashed {
                    // The running sequences' sinks were dropped with the stack (their
                    // clients see the end of their events); the queued ones are told,
                    // and no more are taken.
                    let mut q = s.queue.lock().unwrap_or_else(|e| e.into_inner());
                    q.closed = true;
                    for (mut r, _) in q.waiting.drain(..) {
                        (r.sink)(Event::Failed("the batching thread failed".into()));
                    }
                    s.load.active.store(0, Ordering::Relaxed);
                    s.load.queued.store(0, Ordering::Relaxed);
                }
            })
            .map_err(|e| Error::Invalid(format!("cannot start the batching thread: {e}")))?;
        Ok(Self {
            shared,
            opts,
            thread: Some(thread),
        })
    }

    /// Queues `req`; its events go to its sink from the batching thread.
    pub fn submit(&self, req: Request) -> std::result::Result<(), Rejected> {
        let need = req.prompt.len().saturating_add(req.params.max_tokens);
        if req.prompt.is_empty() {
            return Err(Rejected::TooLong("the prompt is empty".into()));
        }
        if req.prompt.len() >= self.opts.ctx {
            return Err(Rejected::TooLong(format!(
                "the prompt has {} tokens; the context is {}",
                req.prompt.len(),
                self.opts.ctx
            )));
        }
        if need > self.opts.ctx {
            return Err(Rejected::TooLong(format!(
                "the prompt ({} tokens) and max_tokens ({}) exceed the context of {} tokens",
                req.prompt.len(),
                req.params.max_tokens,
                self.opts.ctx
            )));
        }
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.closed {
            return Err(Rejected::Closed);
        }
        let free = self.opts.parallel - self.shared.load.active.load(Ordering::Relaxed);
        if q.waiting.len() >= self.opts.queue + free {
            return Err(Rejected::QueueFull);
        }
        q.waiting.push_back((req, Instant::now()));
        self.shared
            .load
            .queued
            .store(q.waiting.len(), Ordering::Relaxed);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Live figures.
    pub fn load(&self) -> &Load {
        &self.shared.load
    }

    /// The limits it runs with.
    pub fn options(&self) -> BatchOptions {
        self.opts
    }
}

impl Drop for Batcher {
    /// Stops the thread: queued requests fail, running ones end as cancelled.
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A KV cache and the tokens it holds, kept between requests for prefix reuse.
struct Slot<'m> {
    cache: KvCache,
    cached: Vec<u32>,
    /// The images among `cached`: a prefix is reused only with the same images.
    cached_images: Vec<(usize, Image)>,
    seq: Option<Seq<'m>>,
}

/// A request in a slot.
struct Seq<'m> {
    req: Request,
    sampler: Sampler,
    text: TextOut<'m>,
    history: Vec<u32>,
    generated: Vec<u32>,
    /// The token to feed at the next step.
    next: Option<u32>,
    submitted: Instant,
    prefill: (usize, f64),
    first: Option<Instant>,
    last: Instant,
    ended: Option<StopReason>,
    /// A `Failed` event was sent: no `Done` follows.
    failed: bool,
    /// What the draft did for this sequence, once it proposed for it.
    draft: Option<crate::speculative::DraftStats>,
}

fn run(model: &LoadedModel, shared: &Shared, opts: BatchOptions, mut draft: Option<Draft>) {
    let mut slots: Vec<Slot> = (0..opts.parallel)
        .map(|_| Slot {
            cache: model.model().new_cache(),
            cached: Vec::new(),
            cached_images: Vec::new(),
            seq: None,
        })
        .collect();
    loop {
        // Admit what fits, or wait for work.
        let admitted = {
            let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if q.closed {
                    break None;
                }
                let busy = slots.iter().any(|s| s.seq.is_some());
                if busy || !q.waiting.is_empty() {
                    break Some(admit(&mut slots, &mut q.waiting, model));
                }
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            .inspect(|_| {
                // Counted as active from admission (not after its prefill), so that
                // submit sees the slot taken at once.
                shared.load.queued.store(q.waiting.len(), Ordering::Relaxed);
                shared.load.active.store(
                    slots.iter().filter(|s| s.seq.is_some()).count(),
                    Ordering::Relaxed,
                );
            })
        };
        let Some(admitted) = admitted else {
            let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            for (mut r, _) in q.waiting.drain(..) {
                (r.sink)(Event::Failed("the server is shutting down".into()));
            }
            for s in &mut slots {
                if let Some(mut seq) = s.seq.take() {
                    seq.ended = Some(StopReason::Cancelled);
                    finish(model, seq, &s.cache);
                }
            }
            return;
        };
        // Prefill the newcomers, one at a time (as a chat session would).
        for i in admitted {
            let slot = &mut slots[i];
            if let Err(e) = prefill(model, slot, opts.ctx) {
                if let Some(mut seq) = slot.seq.take() {
                    (seq.req.sink)(Event::Failed(e.to_string()));
                }
                slot.cache.clear();
                slot.cached.clear();
                slot.cached_images.clear();
            }
        }
        shared.load.active.store(
            slots.iter().filter(|s| s.seq.is_some()).count(),
            Ordering::Relaxed,
        );
        // One sequence decoding alone, with a draft: a speculative step instead.
        let alone = match slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.seq
                    .as_ref()
                    .is_some_and(|q| q.next.is_some() && !q.req.cancel.load(Ordering::Relaxed))
            })
            .collect::<Vec<_>>()[..]
        {
            [(i, s)]
                if s.seq.as_ref().is_some_and(|q| {
                    // The draft reads text only: a conversation with images is
                    // decoded alone (as a chat session does).
                    q.req.constraint.is_none()
                        && q.req.logprobs.is_none()
                        && q.req.prompt.images().is_empty()
                }) =>
            {
                Some(i)
            }
            _ => None,
        };
        if let (Some(d), Some(i)) = (draft.as_mut(), alone) {
            speculate(model, d, &mut slots[i], opts.ctx);
            shared.load.steps.fetch_add(1, Ordering::Relaxed);
        } else {
            decode_step(model, shared, &mut slots, opts.ctx);
        }
        // Sequences that ended (or whose client left) free their slots; the cache
        // keeps what it computed for the next request that shares a prefix. The
        // slots count as free before the last events go out, so a client that has
        // its reply sees its slot free.
        let mut ended = Vec::new();
        for (i, s) in slots.iter_mut().enumerate() {
            let gone = s
                .seq
                .as_ref()
                .is_some_and(|q| q.ended.is_some() || q.req.cancel.load(Ordering::Relaxed));
            if gone {
                let mut seq = s.seq.take().expect("checked");
                seq.ended.get_or_insert(StopReason::Cancelled);
                ended.push((i, seq));
            }
        }
        shared.load.active.store(
            slots.iter().filter(|s| s.seq.is_some()).count(),
            Ordering::Relaxed,
        );
        for (i, seq) in ended {
            finish(model, seq, &slots[i].cache);
        }
    }
}

/// One decode step over every sequence that has a token to feed.
fn decode_step(model: &LoadedModel, shared: &Shared, slots: &mut [Slot<'_>], ctx: usize) {
    let mut ids: Vec<[u32; 1]> = Vec::new();
    let mut caches: Vec<&mut KvCache> = Vec::new();
    let mut which: Vec<usize> = Vec::new();
    for (i, s) in slots.iter_mut().enumerate() {
        if let Some(seq) = &s.seq {
            if seq.req.cancel.load(Ordering::Relaxed) {
                continue;
            }
            if let Some(next) = seq.next {
                ids.push([next]);
                caches.push(&mut s.cache);
                which.push(i);
            }
        }
    }
    if !ids.is_empty() {
        let refs: Vec<&[u32]> = ids.iter().map(|a| a.as_slice()).collect();
        let out = model
            .model()
            .forward_batch(&refs, &mut caches, 0)
            .and_then(|t| Ok(t.squeeze(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?));
        drop(caches);
        shared.load.steps.fetch_add(1, Ordering::Relaxed);
        match out {
            Ok(rows) => {
                for (i, logits) in which.iter().zip(rows) {
                    let s = &mut slots[*i];
                    if let Some(seq) = s.seq.as_mut() {
                        if let Some(next) = seq.next.take() {
                            s.cached.push(next);
                        }
                        let ctx_left = ctx.saturating_sub(s.cache.len());
                        step(model, seq, logits, ctx_left);
                    }
                }
            }
            Err(e) => {
                for i in which {
                    let s = &mut slots[i];
                    if let Some(mut seq) = s.seq.take() {
                        (seq.req.sink)(Event::Failed(e.to_string()));
                    }
                    s.cache.clear();
                    s.cached.clear();
                    s.cached_images.clear();
                }
            }
        }
    }
}

/// A speculative step for the one sequence of `slot`: the draft proposes, the
/// target checks in one pass, and the tokens it settles go out one by one.
fn speculate(model: &LoadedModel, d: &mut Draft, slot: &mut Slot<'_>, ctx: usize) {
    let Some(seq) = slot.seq.as_mut() else {
        return;
    };
    if seq.draft.is_none() {
        d.begin(&seq.req.params.sampling);
    }
    let before = slot.cache.len();
    let wanted = seq
        .req
        .params
        .max_tokens
        .saturating_sub(seq.generated.len());
    let room = ctx.saturating_sub(before + 2).min(wanted.saturating_sub(1));
    seq.next = None;
    let settled = d.step(
        model.model(),
        &mut slot.cache,
        &mut slot.cached,
        &seq.history,
        &mut seq.sampler,
        room,
    );
    seq.draft = Some(d.stats());
    match settled {
        Ok(tokens) => {
            for (j, t) in tokens.into_iter().enumerate() {
                seq.next = None;
                emit(model, seq, t, ctx.saturating_sub(before + 1 + j), None);
                if seq.ended.is_some() {
                    break;
                }
            }
        }
        Err(e) => {
            (seq.req.sink)(Event::Failed(e.to_string()));
            seq.failed = true;
            seq.ended = Some(StopReason::Cancelled);
            slot.cache.clear();
            slot.cached.clear();
            slot.cached_images.clear();
        }
    }
}

/// Moves waiting requests into free slots, each into the free slot whose cache
/// shares the longest prefix with its prompt; returns the slots filled.
fn admit<'m>(
    slots: &mut [Slot<'m>],
    waiting: &mut VecDeque<(Request, Instant)>,
    model: &'m LoadedModel,
) -> Vec<usize> {
    let mut filled = Vec::new();
    // Requests whose clients left while queued give their places back at once (they
    // would otherwise count against the queue's bound until they reached its front).
    let mut kept = VecDeque::with_capacity(waiting.len());
    for (mut r, at) in waiting.drain(..) {
        if r.cancel.load(Ordering::Relaxed) {
            (r.sink)(Event::Failed("cancelled while queued".into()));
        } else {
            kept.push_back((r, at));
        }
    }
    *waiting = kept;
    while let Some((req, _)) = waiting.front() {
        let best = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.seq.is_none())
            .max_by_key(|(_, s)| common_prefix(&s.cached, req.prompt.ids()))
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        let (req, submitted) = waiting.pop_front().expect("front");
        let tok = model.tokenizer().ok();
        slots[i].seq = Some(Seq {
            sampler: Sampler::new(req.params.sampling.clone()),
            text: TextOut::new(tok, &req.params.stop_strings),
            history: req.prompt.ids().to_vec(),
            generated: Vec::new(),
            next: None,
            submitted,
            prefill: (0, 0.0),
            first: None,
            last: submitted,
            ended: None,
            failed: false,
            draft: None,
            req,
        });
        filled.push(i);
    }
    filled
}

/// Computes what the slot's cache lacks of the prompt and picks the first token.
fn prefill(model: &LoadedModel, slot: &mut Slot, ctx: usize) -> Result<()> {
    let Some(seq) = slot.seq.as_mut() else {
        return Ok(());
    };
    let prompt = &seq.req.prompt;
    let reuse = keep_prefix(
        model,
        &mut slot.cache,
        &mut slot.cached,
        &mut slot.cached_images,
        prompt,
    );
    if !(seq.req.sink)(Event::Admitted {
        prompt_tokens: prompt.len(),
        reused: reuse,
    }) {
        seq.ended = Some(StopReason::Cancelled);
        return Ok(());
    }
    let t0 = Instant::now();
    let (logits, computed) = compute_rest(
        model,
        &mut slot.cache,
        &mut slot.cached,
        &mut slot.cached_images,
        prompt,
        reuse,
    )?;
    seq.prefill = (computed, t0.elapsed().as_secs_f64());
    let ctx_left = ctx.saturating_sub(slot.cache.len());
    step(model, seq, logits, ctx_left);
    Ok(())
}

/// Picks the next token from `logits`, tells the sink, and decides whether the
/// sequence goes on (then `seq.next` is the token to feed).
fn step(model: &LoadedModel, seq: &mut Seq, mut logits: Vec<f32>, ctx_left: usize) {
    let p = &seq.req.params;
    if seq.generated.len() >= p.max_tokens {
        seq.ended = Some(StopReason::MaxTokens);
        return;
    }
    let logprob = seq.req.logprobs.map(|top| logprobs(&logits, top));
    if let Some(c) = seq.req.constraint.as_mut() {
        if let Err(e) = c.mask(&mut logits) {
            (seq.req.sink)(Event::Failed(format!("constraint: {e}")));
            seq.failed = true;
            seq.ended = Some(StopReason::Cancelled);
            return;
        }
    }
    let next = seq.sampler.sample(&logits, &seq.history);
    let logprob = logprob.map(|(all, top)| Logprob {
        logprob: all[next as usize],
        top,
    });
    emit(model, seq, next, ctx_left, logprob);
}

/// Tells the sink about token `next` and decides whether the sequence goes on
/// (then `seq.next` is the token to feed).
fn emit(model: &LoadedModel, seq: &mut Seq, next: u32, ctx_left: usize, logprob: Option<Logprob>) {
    let p = &seq.req.params;
    let now = Instant::now();
    seq.first.get_or_insert(now);
    seq.last = now;
    seq.generated.push(next);
    seq.history.push(next);
    let is_stop = !p.ignore_eos && model.stop_ids().contains(&next);
    if let Some(c) = seq.req.constraint.as_mut() {
        if !is_stop {
            if let Err(e) = c.accept(next) {
                (seq.req.sink)(Event::Failed(format!("constraint: {e}")));
                seq.failed = true;
                seq.ended = Some(StopReason::Cancelled);
                return;
            }
        }
    }
    if is_stop {
        seq.ended = Some(StopReason::Eos);
        return;
    }
    let (piece, stopped) = match seq.text.push(next) {
        Ok(x) => x,
        Err(e) => {
            (seq.req.sink)(Event::Failed(e.to_string()));
            seq.failed = true;
            seq.ended = Some(StopReason::Cancelled);
            return;
        }
    };
    let alive = (seq.req.sink)(Event::Token {
        id: next,
        text: piece,
        logprob,
    });
    seq.ended = if stopped {
        Some(StopReason::StopString)
    } else if !alive {
        Some(StopReason::Cancelled)
    } else if seq.generated.len() >= p.max_tokens {
        Some(StopReason::MaxTokens)
    } else if seq.req.constraint.as_mut().is_some_and(|c| c.finished()) {
        Some(StopReason::Eos)
    } else if p.stop_on_loop && crate::session::ends_in_loop(&seq.generated) {
        Some(StopReason::Loop)
    } else if ctx_left <= 1 {
        Some(StopReason::ContextFull)
    } else {
        None
    };
    if seq.ended.is_none() {
        seq.next = Some(next);
    }
}

/// Log-softmax of `logits` and the `top` most likely tokens.
fn logprobs(logits: &[f32], top: usize) -> (Vec<f32>, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    let all: Vec<f32> = logits.iter().map(|&l| l - lse).collect();
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    for (i, &l) in all.iter().enumerate() {
        if top == 0 {
            break;
        }
        if best.len() < top || l > best[best.len() - 1].1 {
            let at = best.partition_point(|&(_, b)| b >= l);
            best.insert(at, (i as u32, l));
            best.truncate(top);
        }
    }
    (all, best)
}

/// Sends the last events of a sequence that ended.
fn finish(model: &LoadedModel, mut seq: Seq, cache: &KvCache) {
    if seq.failed {
        return;
    }
    let why = seq.ended.unwrap_or(StopReason::Cancelled);
    match seq.text.finish(why) {
        Ok(Some(rest)) => {
            let id = *seq.generated.last().unwrap_or(&0);
            (seq.req.sink)(Event::Token {
                id,
                text: rest,
                logprob: None,
            });
        }
        Ok(None) => {}
        Err(e) => {
            (seq.req.sink)(Event::Failed(e.to_string()));
            return;
        }
    }
    let (computed, prefill_s) = seq.prefill;
    let n = seq.generated.len();
    let stats = Stats {
        image_tokens: model.image_tokens(&seq.req.prompt),
        prompt_tokens: seq.req.prompt.len(),
        prefill_tokens: computed,
        generated_tokens: n,
        ttft_ms: seq
            .first
            .map_or(0.0, |f| (f - seq.submitted).as_secs_f64() * 1e3),
        prefill_tok_s: computed as f64 / prefill_s.max(1e-9),
        decode_tok_s: match seq.first {
            Some(f) if n > 1 => (n - 1) as f64 / (seq.last - f).as_secs_f64().max(1e-9),
            _ => 0.0,
        },
        weights_bytes: model.model().weight_bytes().total,
        kv_cache_bytes: cache.bytes(),
        rss_bytes: rss_bytes(),
        peak_rss_bytes: peak_rss_bytes(),
        vram_bytes: crate::device::vram_used(model.placement()),
        device: model.placement().label.clone(),
        draft: seq.draft.take().map(Box::new),
    };
    let stop_string = seq.text.stop_string().map(str::to_string);
    let text = std::mem::replace(&mut seq.text, TextOut::new(None, &[])).into_text();
    let mut ids = std::mem::take(&mut seq.generated);
    if why == StopReason::Eos && ids.last().is_some_and(|t| model.stop_ids().contains(t)) {
        ids.pop();
    }
    (seq.req.sink)(Event::Done {
        text,
        token_ids: ids,
        stop_reason: why,
        stop_string,
        stats,
    });
}

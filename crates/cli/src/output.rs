//! How the CLI prints: sizes in words, progress bars and their JSON twins, and the
//! tables and lines several commands share. Human-readable by default; with
//! `--json`, one JSON object per line on stdout.

use serde::Serialize;
use std::time::{Duration, Instant};
use unicorn_engine::Progress;

/// `1.5 GiB`, `12.0 MiB`, `640 B`.
pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints one JSON line `{"event": event, ...fields}`.
pub fn event(event: &str, fields: serde_json::Value) {
    let mut v = serde_json::json!({ "event": event });
    if let (Some(o), serde_json::Value::Object(f)) = (v.as_object_mut(), fields) {
        o.extend(f);
    }
    println!("{v}");
}

/// Prints `value` as one JSON line.
pub fn json_line(value: &impl Serialize) {
    match serde_json::to_string(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: printing JSON: {e}"),
    }
}

/// Shows a job's [`Progress`]: a bar on stderr, or (with `--json`) `progress` events,
/// one per item (tensor, file) or change of what the item says (a retry), and within
/// an item at most five a second. Commands whose JSON output is one result (loading
/// a model, scoring text) print no events. The bar is cleared when the reporter is
/// dropped, so an error printed after it starts on a line of its own.
pub struct Reporter {
    bar: indicatif::ProgressBar,
    events: bool,
    last: Option<(Instant, String)>,
}

impl Reporter {
    /// A bar counting bytes (rate and time left), labelled `what`.
    pub fn bytes(json: bool, what: &str) -> Self {
        Self::with_template(
            json,
            what,
            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        )
    }

    /// A bar counting items (windows of text); no JSON events.
    pub fn count(json: bool, what: &str) -> Self {
        Self::with_template(json, what, "{bar:30} {pos}/{len} eta {eta} {msg}").quiet()
    }

    /// Prints no JSON events (the command's JSON output is its one result).
    pub fn quiet(mut self) -> Self {
        self.events = false;
        self
    }

    fn with_template(json: bool, what: &str, template: &str) -> Self {
        let bar = if json {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(template).expect("static template"),
            )
        };
        bar.set_message(what.to_string());
        Self {
            bar,
            events: json,
            last: None,
        }
    }

    /// Shows `p`; returns whether to go on (false once Ctrl-C was pressed during
    /// cancellable work).
    pub fn show(&mut self, p: &Progress) -> bool {
        self.bar.set_length(p.total);
        self.bar.set_position(p.done);
        self.bar
            .set_message(format!("{}/{} {}", p.item_index, p.items, p.item));
        let due = self
            .last
            .as_ref()
            .is_none_or(|(t, item)| *item != p.item || t.elapsed() >= Duration::from_millis(200));
        if self.events && (due || p.finished()) {
            self.last = Some((Instant::now(), p.item.clone()));
            event("progress", serde_json::json!({ "progress": p }));
        }
        !crate::interrupt::cancel_requested()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// A quantizer's per-tensor error table.
pub fn print_tensors(tensors: &[unicorn_engine::quantize::TensorReport]) {
    println!(
        "{:<40} {:<6} {:>10} {:>6} {:>10} {:>9} {:>8}",
        "tensor", "type", "bytes", "bpw", "rmse", "rel err", "SNR dB"
    );
    for t in tensors {
        println!(
            "{:<40} {:<6} {:>10} {:>6.2} {:>10.3e} {:>9.4} {:>8.1}",
            t.name,
            t.r#type,
            human_bytes(t.bytes as f64),
            t.bits_per_weight,
            t.rmse,
            t.relative_error,
            t.snr_db
        );
    }
}

/// Runs one generation, streaming its tokens to stdout (text, or `token` events);
/// Ctrl-C stops the reply, not the program.
pub fn stream_reply(
    json: bool,
    run: impl FnOnce(
        &mut dyn FnMut(&unicorn_engine::TokenEvent) -> bool,
    ) -> unicorn_engine::Result<unicorn_engine::Reply>,
) -> anyhow::Result<unicorn_engine::Reply> {
    use std::io::Write;
    let _reply = crate::interrupt::Cancellable::start()?;
    let mut out = std::io::stdout().lock();
    let mut sink = |ev: &unicorn_engine::TokenEvent| -> bool {
        let ok = if json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"event": "token", "id": ev.id, "text": ev.text})
            )
        } else {
            write!(out, "{}", ev.text)
        };
        let _ = out.flush();
        ok.is_ok() && !crate::interrupt::cancel_requested()
    };
    Ok(run(&mut sink)?)
}

/// The `done` line of a reply: its measured figures.
pub fn print_done(json: bool, reply: &unicorn_engine::Reply) {
    let s = &reply.stats;
    if json {
        event(
            "done",
            serde_json::json!({
                "prompt_tokens": s.prompt_tokens,
                "image_tokens": s.image_tokens,
                "prefill_tokens": s.prefill_tokens,
                "generated_tokens": s.generated_tokens,
                "token_ids": reply.token_ids,
                "text": reply.text,
                "stop_reason": reply.stop_reason,
                "ttft_ms": s.ttft_ms,
                "prefill_tok_s": s.prefill_tok_s,
                "decode_tok_s": s.decode_tok_s,
                "weights_bytes": s.weights_bytes,
                "kv_cache_bytes": s.kv_cache_bytes,
                "rss_bytes": s.rss_bytes,
                "peak_rss_bytes": s.peak_rss_bytes,
                "device": s.device,
                "vram_bytes": s.vram_bytes,
                "context": reply.context,
                "drafted": s.draft.as_ref().map(|d| d.drafted),
                "accepted": s.draft.as_ref().map(|d| d.accepted),
                "acceptance_rate": s.draft.as_ref().map(|d| d.acceptance_rate),
                "draft": s.draft,
            }),
        );
    } else {
        println!();
        let images = match s.image_tokens {
            0 => String::new(),
            n => format!(", {n} of them image"),
        };
        eprintln!(
            "[{} prompt tokens{images} ({} computed) · TTFT {:.0} ms · prefill {:.1} tok/s · {} tokens at {:.1} tok/s · {:?} · weights {} · KV cache {} · RSS {}]",
            s.prompt_tokens,
            s.prefill_tokens,
            s.ttft_ms,
            s.prefill_tok_s,
            s.generated_tokens,
            s.decode_tok_s,
            reply.stop_reason,
            human_bytes(s.weights_bytes as f64),
            human_bytes(s.kv_cache_bytes as f64),
            human_bytes(s.rss_bytes as f64),
        );
        if let Some(d) = &s.draft {
            eprintln!(
                "[draft {}: {} proposed, {} accepted ({:.0} %) in {} passes · est. speedup {:.2}x]",
                d.draft_model,
                d.drafted,
                d.accepted,
                100.0 * d.acceptance_rate,
                d.verify_passes,
                d.est_speedup
            );
        }
        if let Some(c) = &reply.context {
            let dropped = match c.dropped_tokens {
                0 => String::new(),
                n => format!(" · {n} earlier tokens out of context ({})", c.overflow),
            };
            eprintln!("[context {} of {} tokens{dropped}]", c.used, c.limit);
        }
    }
}

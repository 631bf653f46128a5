//! The `unicorn` command end to end, on the real test models.

use unicorn_test_support::cli::*;
use unicorn_test_support::*;

pub(crate) fn path(name: &str) -> String {
    model(name).display().to_string()
}

#[test]
fn chat_answers_paris_and_streams_json_events() {
    let out = chat_paris(&path(SMOLLM), &["--json"]);
    assert_ok(&out);
    let lines = json_lines(&out);
    let done = lines.last().expect("a done event");
    assert_eq!(done["event"], "done");
    assert_eq!(done["text"], PARIS_ANSWER);
    assert_eq!(done["stop_reason"], "eos");
    let tokens: Vec<_> = lines.iter().filter(|l| l["event"] == "token").collect();
    let streamed: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(streamed, PARIS_ANSWER);
    let ids = done_ids(&out);
    // The reference greedy ids up to and including <|im_end|> (id 2).
    assert_eq!(ids, vec![504, 3575, 282, 4649, 314, 7042, 30, 2]);
    assert_eq!(done["prompt_tokens"], 37);
    assert_eq!(done["generated_tokens"], 8);
    for key in ["ttft_ms", "prefill_tok_s", "decode_tok_s"] {
        assert!(
            done[key].as_f64().unwrap() > 0.0,
            "{key} must be measured: {done}"
        );
    }
    assert!(done["rss_bytes"].as_u64().unwrap() > 50 << 20);
    assert!(done["weights_bytes"].as_u64().unwrap() > 80 << 20);
    assert!(done["kv_cache_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn chat_prints_human_text_and_stats() {
    let out = chat_paris(&path(SMOLLM), &[]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Paris"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tok/s") && err.contains("TTFT"), "{err}");
}

/// A conversation five times its context, from standard input, under each policy:
/// drop-oldest and rolling answer every turn and say how much is out of context;
/// stop says it is full and refuses the turn that does not fit.
#[test]
fn interactive_chat_outgrows_its_context_under_each_overflow_policy() {
    let questions = [
        "What is the capital of France?",
        "Name a large ocean.",
        "What colour is the sky on a clear day?",
        "How many legs does a spider have?",
    ];
    let input: String = (0..24).map(|i| format!("{}\n", questions[i % 4])).collect();
    let chat = |overflow: &str| {
        let out = run(
            &[
                "chat",
                &path(SMOLLM),
                "--temperature",
                "0",
                "--max-tokens",
                "16",
                "--ctx",
                "128",
                "--overflow",
                overflow,
                "--json",
            ],
            Some(&input),
        );
        assert_ok(&out);
        let done: Vec<_> = done_events(&out);
        (done, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for overflow in ["drop-oldest", "rolling"] {
        let (done, _) = chat(overflow);
        assert_eq!(done.len(), 24, "{overflow}");
        for d in &done {
            let c = &d["context"];
            assert_eq!(c["limit"], 128);
            assert_eq!(c["overflow"], overflow);
            assert!(c["used"].as_u64().unwrap() <= 128, "{d}");
        }
        let last = &done[23]["context"];
        assert!(
            last["dropped_tokens"].as_u64().unwrap() > 400,
            "{overflow}: {last}"
        );
        assert!(
            done[23]["text"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("eight")
                || done[23]["text"].as_str().unwrap().contains('8'),
            "{}",
            done[23]["text"]
        );
    }
    let (done, err) = chat("stop");
    assert!(done.len() < 24 && done.len() >= 2, "{}", done.len());
    assert!(err.contains("the context holds 128"), "{err}");
    // A bad policy is one clear line.
    let out = run(
        &[
            "chat",
            &path(SMOLLM),
            "--overflow",
            "sometimes",
            "--prompt",
            "hi",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("use stop, drop-oldest or rolling"));
}

#[test]
fn interactive_chat_keeps_turns_and_resets() {
    let input =
        "What is the capital of France?\nAnd of Germany?\n/reset\nWhat is the capital of France?\n";
    let out = run(
        &[
            "chat",
            &path(SMOLLM),
            "--temperature",
            "0",
            "--max-tokens",
            "24",
            "--json",
        ],
        Some(input),
    );
    assert_ok(&out);
    let done: Vec<_> = done_events(&out);
    assert_eq!(done.len(), 3);
    assert!(done[0]["text"].as_str().unwrap().contains("Paris"));
    // The second turn reuses the cached first turn: only the new tokens are computed.
    let (p1, c1) = (
        done[1]["prompt_tokens"].as_u64().unwrap(),
        done[1]["prefill_tokens"].as_u64().unwrap(),
    );
    assert!(p1 > done[0]["prompt_tokens"].as_u64().unwrap());
    assert!(
        c1 < p1 / 2,
        "second turn computed {c1} of {p1} prompt tokens"
    );
    // After /reset the conversation starts over and gives the same first answer.
    assert_eq!(done[2]["text"], done[0]["text"]);
    assert_eq!(done[2]["prompt_tokens"], done[0]["prompt_tokens"]);
}

#[test]
fn generate_from_prompt_ids_follows_the_gemma_reference() {
    let out = run(
        &[
            "generate",
            &path(GEMMA),
            "--prompt-ids",
            "2 818 5279 529 7001 563",
            "--ignore-eos",
            "--max-tokens",
            "11",
            "--temperature",
            "0",
            "--json",
        ],
        None,
    );
    assert_ok(&out);
    let done = json_lines(&out).pop().unwrap();
    let ids = done_ids(&out);
    // Reference greedy ids before the first near-tie (step 11, margin 0.0136).
    assert_eq!(
        ids,
        vec![506, 5279, 529, 506, 2891, 529, 7001, 236761, 1030, 563, 506]
    );
    assert_eq!(
        done["text"],
        " the capital of the country of France. It is the"
    );
}

/// `--draft`: the same reference ids with the model drafting for itself (every
/// proposal accepted, as the verify pass computes each position as decode does),
/// and the `done` event says how many were proposed and kept.
/// A draft of another vocabulary is refused in one line.
#[test]
fn generate_with_a_draft_keeps_the_reference_ids_and_reports_acceptance() {
    let out = run(
        &[
            "generate",
            &path(GEMMA),
            "--prompt-ids",
            "2 818 5279 529 7001 563",
            "--ignore-eos",
            "--max-tokens",
            "11",
            "--temperature",
            "0",
            "--draft",
            &path(GEMMA),
            "--draft-tokens",
            "4",
            // A model drafting for itself never pays; make it propose anyway.
            "--draft-min",
            "4",
            "--json",
        ],
        None,
    );
    assert_ok(&out);
    let done = json_lines(&out).pop().unwrap();
    assert_eq!(
        done_ids(&out),
        vec![506, 5279, 529, 506, 2891, 529, 7001, 236761, 1030, 563, 506]
    );
    let (drafted, accepted) = (
        done["drafted"].as_u64().unwrap(),
        done["accepted"].as_u64().unwrap(),
    );
    assert!(drafted >= 4 && accepted == drafted, "{done}");
    assert_eq!(done["acceptance_rate"], 1.0);
    assert_eq!(done["draft"]["max_draft_tokens"], 4);

    let out = run(
        &[
            "generate",
            &path(GEMMA),
            "--prompt",
            "Hi",
            "--draft",
            &path(SMOLLM),
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot draft for"), "{err}");
}

/// `bench --draft` measures decode alone and with the draft, alternating, and says
/// whether the ids were the same.
#[test]
fn bench_with_a_draft_measures_both_and_checks_the_ids() {
    let out = run(
        &[
            "bench",
            &path(GEMMA),
            "--pp",
            "0",
            "--tg",
            "8",
            "--reps",
            "1",
            "--draft",
            &path(GEMMA),
            "--draft-min",
            "2",
            "--json",
        ],
        None,
    );
    assert_ok(&out);
    let r = json_lines(&out).pop().unwrap();
    let d = &r["draft"];
    assert_eq!(d["identical"], true, "{r}");
    assert!(d["alone"]["mean_tok_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(d["drafted"]["mean_tok_s"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(d["acceptance_rate"], 1.0, "{r}");
}

#[test]
fn generate_text_prompt_adds_bos_for_gemma() {
    let out = run(
        &[
            "generate",
            &path(GEMMA),
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "3",
            "--temperature",
            "0",
            "--json",
        ],
        None,
    );
    assert_ok(&out);
    let done = json_lines(&out).pop().unwrap();
    assert_eq!(done["prompt_tokens"], 6);
    assert_eq!(done["text"], " the capital of");
}

#[test]
fn perplexity_matches_the_golden_reference() {
    let text = golden_path("real/smollm2-135m-instruct__ppl_jargon.txt");
    let out = run(
        &[
            "perplexity",
            &path(SMOLLM),
            "--text",
            &text.display().to_string(),
            "--ctx",
            "512",
            "--json",
        ],
        None,
    );
    assert_ok(&out);
    let r = json_lines(&out).pop().unwrap();
    assert_eq!(r["tokens_scored"], 255);
    // Reference: mean golden NLL over the same scored positions (256..511); see
    // crates/engine/tests/golden_real.rs for the 0.1 % tolerance.
    let g = candle_core::safetensors::load(
        golden_path("real/smollm2-135m-instruct__ppl_jargon.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let nll = g["nll"].to_vec1::<f32>().unwrap();
    let want = (nll[256..511].iter().map(|&x| x as f64).sum::<f64>() / 255.0).exp();
    let got = r["perplexity"].as_f64().unwrap();
    assert!(
        (got - want).abs() / want < 0.001,
        "perplexity {got} vs {want}"
    );
    assert!((r["nll_mean"].as_f64().unwrap().exp() - got).abs() < 1e-6 * got);
}

#[test]
fn info_describes_both_models() {
    let out = run(&["info", &path(GEMMA), "--json"], None);
    assert_ok(&out);
    let i: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(i["architecture"], "gemma3");
    assert_eq!(i["layers"], 18);
    assert_eq!(i["parameters"], 268_098_176u64);
    assert!(
        i["layer_pattern"]
            .as_str()
            .unwrap()
            .contains("global at [5, 11, 17]"),
        "{}",
        i["layer_pattern"]
    );
    let types: Vec<&str> = i["tensor_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    for t in ["Q8_0", "Q5_0", "Q4_K", "Q6_K", "F32"] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    let bpw = i["bits_per_weight"].as_f64().unwrap();
    assert!((7.0..8.0).contains(&bpw), "{bpw}");

    let out = run(&["info", &path(SMOLLM)], None);
    assert_ok(&out);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("llama") && s.contains("Q4_1") && s.contains("with chat template"),
        "{s}"
    );
}

#[test]
fn bench_reports_throughput_memory_and_roofline() {
    let out = run(
        &[
            "bench",
            &path(SMOLLM),
            "--pp",
            "32",
            "--tg",
            "8",
            "--reps",
            "2",
            "--json",
        ],
        None,
    );
    assert_ok(&out);
    let r = json_lines(&out).pop().unwrap();
    assert_eq!(r["pp"]["samples"].as_array().unwrap().len(), 2);
    assert!(r["pp"]["mean_tok_s"].as_f64().unwrap() > 0.0);
    assert!(r["tg"]["mean_tok_s"].as_f64().unwrap() > 0.0);
    assert!(r["memory_bandwidth_bytes_s"].as_f64().unwrap() > 1e9);
    let pct = r["roofline_pct"].as_f64().unwrap();
    assert!(pct > 0.0 && pct < 100.0, "{pct}");
    assert!(r["bytes_per_token"].as_u64().unwrap() > 80 << 20);
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["vram_bytes"], serde_json::Value::Null);
}

#[test]
fn bad_files_get_clear_errors_not_panics() {
    let dir = std::env::temp_dir().join(format!("unicorn-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("nope.gguf");
    let out = run(
        &["chat", &missing.display().to_string(), "--prompt", "hi"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.gguf"));

    let text = dir.join("notes.gguf");
    std::fs::write(&text, "this is not a model").unwrap();
    let out = run(&["info", &text.display().to_string()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("notes.gguf") && err.contains("GGUF"), "{err}");

    // A truncated model: the header parses, tensor data is missing.
    let full = std::fs::read(model(SMOLLM)).unwrap();
    let cut = dir.join("truncated.gguf");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let out = run(
        &[
            "generate",
            &cut.display().to_string(),
            "--prompt",
            "hi",
            "--max-tokens",
            "2",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("truncated.gguf") && err.contains("tensor"),
        "{err}"
    );

    let out = run(
        &["generate", &path(SMOLLM), "--prompt-ids", "1 99999999"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the vocabulary"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ctrl_c_stops_the_reply_not_the_program() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new(unicorn_bin())
        .args([
            "chat",
            &path(SMOLLM),
            "--json",
            "--temperature",
            "1.5",
            "--top-k",
            "0",
            "--top-p",
            "1",
            "--min-p",
            "0",
        ])
        .args(["--max-tokens", "2000", "--threads", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "Write a very long story about a unicorn.").unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait for a few streamed tokens, then interrupt.
    for _ in 0..5 {
        let l = lines.next().unwrap().unwrap();
        assert!(l.contains("\"token\""), "{l}");
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let done = loop {
        let l = lines.next().expect("a done event after Ctrl-C").unwrap();
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        if v["event"] == "done" {
            break v;
        }
    };
    assert_eq!(done["stop_reason"], "cancelled");
    assert!(done["generated_tokens"].as_u64().unwrap() < 2000);
    // The program is still there and takes the next command.
    writeln!(stdin, "/exit").unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn threads_flag_sets_the_worker_count() {
    let out = run(
        &[
            "bench",
            &path(SMOLLM),
            "--pp",
            "16",
            "--tg",
            "4",
            "--reps",
            "1",
            "--threads",
            "1",
            "--json",
        ],
        None,
    );
    assert_ok(&out);
    assert_eq!(json_lines(&out).pop().unwrap()["threads"], 1);
    let out = run(&["bench", &path(SMOLLM), "--threads", "0"], None);
    assert_eq!(out.status.code(), Some(1));
}

/// `unicorn synth` writes Gemma 3 270M's exact shape with random weights straight to
/// Q4_K_M (no BF16 folder left behind), and `unicorn bench` runs it from token ids.
#[test]
fn synth_writes_a_real_shape_that_benches() {
    let dir = std::env::temp_dir().join(format!("unicorn-e2e-synth-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("gemma3-270m.Q4_K_M.gguf");
    let o = out.to_str().unwrap();
    let r = run(
        &[
            "synth", "--arch", "gemma3", "--shape", "270m", "--to", "q4_k_m", "--out", o, "--json",
        ],
        None,
    );
    assert_ok(&r);
    let done = json_lines(&r).pop().unwrap();
    assert_eq!(done["parameters"], 268_098_176_u64, "Gemma 3 270M's count");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("gemma3-270m.Q4_K_M.gguf")]);

    let info = run(&["info", o, "--json"], None);
    assert_ok(&info);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["architecture"], "gemma3");
    assert_eq!(info["layer_pattern"], path_pattern_of(&path(GEMMA)));

    let b = run(
        &[
            "bench", o, "--pp", "16", "--tg", "4", "--reps", "1", "--json",
        ],
        None,
    );
    assert_ok(&b);
    let b = json_lines(&b).pop().unwrap();
    assert!(b["tg"]["mean_tok_s"].as_f64().unwrap() > 0.0);

    let again = run(
        &["synth", "--arch", "gemma3", "--shape", "270m", "--out", o],
        None,
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = run(
        &["synth", "--arch", "gemma3", "--shape", "2b", "--out", o],
        None,
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("gemma3: 270m, 1b, 4b, 12b, 27b"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `--head-type q8_0` runs a dense output head from a Q8_0 copy: bench says so, the
/// logits move by Q8_0's rounding only (and do move), and a GGUF's quantized head is
/// left as stored.
#[test]
fn a_q8_0_head_copy_is_reported_and_close() {
    let dir = scratch("head");
    let tiny = unicorn_test_support::golden_dir().join("tiny/gemma3_text");
    let tiny = tiny.to_str().unwrap();
    let logits = |head: &str| -> Vec<f32> {
        let file = dir.join(format!("{head}.f32"));
        let r = run(
            &[
                "generate",
                tiny,
                "--prompt-ids",
                "2 10 20 30",
                "--max-tokens",
                "1",
                "--temperature",
                "0",
                "--head-type",
                head,
                "--logits-out",
                file.to_str().unwrap(),
            ],
            None,
        );
        assert_ok(&r);
        std::fs::read(&file)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let (stored, q8) = (logits("stored"), logits("q8_0"));
    let top = stored.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&stored, &q8);
    assert!(
        diff > 0.0 && diff < 0.02 * top,
        "largest change {diff} of {top}"
    );
    let head_of = |model: &str| -> String {
        let r = run(
            &[
                "bench",
                model,
                "--pp",
                "4",
                "--tg",
                "2",
                "--reps",
                "1",
                "--head-type",
                "q8_0",
                "--json",
            ],
            None,
        );
        assert_ok(&r);
        json_lines(&r).pop().unwrap()["head_type"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(head_of(tiny), "q8_0");
    assert_eq!(
        head_of(&path(GEMMA)),
        "stored",
        "a GGUF's quantized head stays as stored"
    );
    let bad = run(
        &["generate", tiny, "--prompt-ids", "2", "--head-type", "q4"],
        None,
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an output head type"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `synth --to nf4` generates each tensor where it is quantized (no BF16 folder):
/// byte for byte what writing the folder and quantizing it gives, and nothing is
/// left beside the output.
#[test]
fn synth_to_nf4_equals_the_folder_quantized() {
    let dir = scratch("synth-nf4");
    let config = unicorn_test_support::golden_dir().join("tiny/gemma3_text/config.json");
    let c = config.to_str().unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    let (folder, direct, via) = (p("bf16"), p("direct-nf4"), p("via-nf4"));
    let synth = |extra: &[&str]| {
        let mut args = vec!["synth", "--arch", "gemma3", "--shape", c, "--seed", "7"];
        args.extend_from_slice(extra);
        let r = run(&args, None);
        assert_ok(&r);
    };
    synth(&["--out", &folder]);
    synth(&["--to", "nf4", "--out", &direct]);
    assert_ok(&run(
        &["quantize", &folder, "--to", "nf4", "--out", &via],
        None,
    ));
    for f in ["model.safetensors", "config.json"] {
        let a = std::fs::read(dir.join("direct-nf4").join(f)).unwrap();
        let b = std::fs::read(dir.join("via-nf4").join(f)).unwrap();
        assert!(a == b, "{f} differs");
    }
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["bf16", "direct-nf4", "via-nf4", "via-nf4.report.json"]
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The real model's layer pattern, as `unicorn info --json` gives it.
fn path_pattern_of(model: &str) -> serde_json::Value {
    let i = run(&["info", model, "--json"], None);
    assert_ok(&i);
    serde_json::from_slice::<serde_json::Value>(&i.stdout).unwrap()["layer_pattern"].clone()
}

/// On a machine without an NVIDIA driver (CI): `auto` runs on the CPU and says so in
/// the done event, an explicit GPU is a clear error, and an installed `unicorn-cuda`
/// (which could not even start without the driver) is not handed the command.
#[test]
fn device_choice_without_a_gpu() {
    let model = path(SMOLLM);
    let chat = |extra: &[&str]| {
        let mut args = vec![
            "chat",
            &model,
            "--prompt",
            "hi",
            "--max-tokens",
            "2",
            "--json",
        ];
        args.extend_from_slice(extra);
        run(&args, None)
    };
    let info = run(&["info", &model, "--json"], None);
    assert_ok(&info);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    if info["gpus"].as_array().is_some_and(|g| !g.is_empty()) {
        return; // A GPU machine: scripts/gpu-check covers it.
    }
    assert!(info["gpu_note"]
        .as_str()
        .unwrap()
        .contains("no NVIDIA driver"));
    assert_eq!(info["memory"]["free_vram_bytes"], serde_json::Value::Null);

    let out = chat(&[]);
    assert_ok(&out);
    let done = json_lines(&out).pop().unwrap();
    assert_eq!(done["device"], "cpu");
    assert_eq!(done["vram_bytes"], serde_json::Value::Null);

    let out = chat(&["--device", "cuda"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    // Without unicorn-cuda beside it, how to get one; with it, why it cannot run.
    assert!(
        e.contains("--device cuda:0: this unicorn was built without CUDA: build it with scripts/build-cuda")
            || e.contains("--device cuda:0: NVML unavailable"),
        "{e}"
    );
    let out = chat(&["--device", "tpu"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("give auto, cpu, cuda, cuda:N or metal"));

    // A copy of the CPU build with a stand-in `unicorn-cuda` that would leave a mark.
    let dir = std::env::temp_dir().join(format!("unicorn-e2e-handover-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("unicorn");
    std::fs::copy(unicorn_bin(), &bin).unwrap();
    let mark = dir.join("handed-over");
    let fake = dir.join("unicorn-cuda");
    std::fs::write(&fake, format!("#!/bin/sh\ntouch {}\n", mark.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run_copy = |device: &str| {
        std::process::Command::new(&bin)
            .args([
                "chat",
                &model,
                "--prompt",
                "hi",
                "--max-tokens",
                "2",
                "--json",
                "--device",
                device,
            ])
            .output()
            .unwrap()
    };
    let out = run_copy("auto");
    assert_ok(&out);
    assert!(!mark.exists(), "no driver: the CPU build keeps the command");
    let out = run_copy("cuda");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--device cuda:0: NVML unavailable"));
    assert!(!mark.exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// `generate --logits-out` writes the prompt's last logits (what scripts/gpu-check
/// compares across devices): one f32 per vocabulary entry, whose argmax is the first
/// greedy token.
#[test]
fn generate_writes_the_last_logits() {
    let dir = std::env::temp_dir().join(format!("unicorn-e2e-logits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("logits.f32");
    let out = run(
        &[
            "generate",
            &path(GEMMA),
            "--prompt-ids",
            "2 818 5279 529",
            "--max-tokens",
            "1",
            "--temperature",
            "0",
            "--logits-out",
            file.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    assert_ok(&out);
    let first = json_lines(&out).pop().unwrap()["token_ids"][0]
        .as_u64()
        .unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let logits: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(logits.len(), 262_144);
    let argmax = (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap();
    assert_eq!(argmax as u64, first);
    std::fs::remove_dir_all(&dir).ok();
}

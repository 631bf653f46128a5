//! `unicorn serve` end to end: two real servers on 127.0.0.1 driven by the official
//! Python SDKs (`tests/server/sdk_test.py`, PyPI `openai` and `anthropic`, which
//! scripts/setup installs), on both real test models; greedy replies must equal
//! `unicorn chat --temperature 0`'s.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use unicorn_test_support::cli::{run, unicorn_bin};
use unicorn_test_support::*;

/// A running `unicorn serve`, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(model: &std::path::Path, extra: &[&str]) -> Server {
    let mut child = Command::new(unicorn_bin())
        .arg("serve")
        .arg(model)
        .args(["--port", "0", "--json", "--threads", "2"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn unicorn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let base = v["base_url"].as_str().expect("base_url");
    Server {
        child,
        url: base.trim_end_matches("/v1").to_string(),
    }
}

fn sdk_suite(name: &str) {
    let path = model(name);
    let id = name.trim_end_matches(".gguf");
    let out = run(
        &[
            "chat",
            path.to_str().unwrap(),
            "--prompt",
            "What is the capital of France?",
            "--temperature",
            "0",
            "--max-tokens",
            "40",
            "--json",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = cli::json_lines(&out)
        .into_iter()
        .find_map(|v| {
            v["text"]
                .as_str()
                .filter(|_| v["event"] == "done")
                .map(str::to_string)
        })
        .expect("the reply in unicorn chat --json");
    let main = serve(
        &path,
        &["--api-key", "sekret", "--parallel", "4", "--queue", "16"],
    );
    let small = serve(&path, &["--parallel", "1", "--queue", "1"]);
    let status = Command::new("python3")
        .arg(repo_root().join("tests/server/sdk_test.py"))
        .args([&main.url, &small.url, id, "sekret", &expected])
        .env("PYTHONPATH", python_path())
        .status()
        .expect("run python3");
    assert!(
        status.success(),
        "the SDK tests failed on {name} (output above)"
    );
}

#[test]
fn openai_and_anthropic_sdks_against_smollm2() {
    sdk_suite(SMOLLM);
}

#[test]
fn openai_and_anthropic_sdks_against_gemma3() {
    sdk_suite(GEMMA);
}

/// 200 requests over 60 s (random lengths, streaming or not, 30 % of clients
/// leaving early) against 4 slots and a queue of 8: nothing hangs, every slot comes
/// back, resident memory stays within 48 MB of its level after a warm-up.
#[test]
fn load_test_leaves_no_slot_or_memory_behind() {
    let path = model(SMOLLM);
    let s = serve(&path, &["--parallel", "4", "--queue", "8", "--ctx", "2048"]);
    let status = Command::new("python3")
        .arg(repo_root().join("tests/server/load_test.py"))
        .args([
            &s.url,
            SMOLLM.trim_end_matches(".gguf"),
            &s.child.id().to_string(),
            "200",
            "60",
            "48",
        ])
        .status()
        .expect("run python3");
    assert!(status.success(), "the load test failed (output above)");
}

/// Tools through a template that renders them (SmolLM2 converted to a folder whose
/// chat template is tests/server/tools_template.jinja, Qwen 2.5 / Hermes style).
#[test]
fn tools_through_a_template_that_renders_them() {
    let dir = scratch("server-tools-template").join("smollm2-tools");
    let out = run(
        &[
            "convert",
            model(SMOLLM).to_str().unwrap(),
            "--to",
            "safetensors",
            "--out",
            dir.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg_path = dir.join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["chat_template"] =
        std::fs::read_to_string(repo_root().join("tests/server/tools_template.jinja"))
            .unwrap()
            .into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let s = serve(&dir, &["--parallel", "2"]);
    let id = dir.file_name().unwrap().to_string_lossy().into_owned();
    let status = Command::new("python3")
        .arg(repo_root().join("tests/server/native_tools_test.py"))
        .args([&s.url, &id])
        .env("PYTHONPATH", python_path())
        .status()
        .expect("run python3");
    assert!(
        status.success(),
        "the native tools test failed (output above)"
    );
}

/// `serve --draft`: a lone request is drafted for (the model drafting for itself,
/// made to propose), its greedy reply is the one without a draft, and its timings
/// say what the draft did.
#[test]
fn a_served_model_with_a_draft_answers_the_same() {
    let m = model(GEMMA);
    let ask = |url: &str| -> serde_json::Value {
        let script = r#"
import json, sys, urllib.request
body = {"model": sys.argv[2], "temperature": 0, "max_tokens": 16,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]}
req = urllib.request.Request(sys.argv[1] + "/v1/chat/completions", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
print(urllib.request.urlopen(req, timeout=120).read().decode())
"#;
        let out = Command::new("python3")
            .args(["-c", script, url, GEMMA.trim_end_matches(".gguf")])
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let plain = ask(&serve(&m, &["--parallel", "1"]).url);
    let drafted = ask(&serve(
        &m,
        &[
            "--parallel",
            "1",
            "--draft",
            m.to_str().unwrap(),
            "--draft-min",
            "2",
        ],
    )
    .url);
    assert_eq!(
        drafted["choices"][0]["message"]["content"],
        plain["choices"][0]["message"]["content"]
    );
    assert!(plain["timings"]["draft"].is_null());
    let d = &drafted["timings"]["draft"];
    assert!(d["drafted"].as_u64().unwrap() >= 2, "{drafted}");
    assert_eq!(d["acceptance_rate"], 1.0, "{drafted}");
}

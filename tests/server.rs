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

/// Images in requests, on the tiny Gemma 3 vision model: an OpenAI `image_url`
/// data URL and an Anthropic base64 `image` block each give the greedy reply of
/// `unicorn chat --image` (the image's 16 tokens placed by the chat template), the
/// same image sent again with the history reuses its cached features, and each bad
/// image is one 400 naming the part at fault.
#[test]
fn images_in_requests_answer_as_chat_does() {
    let dir = scratch("served-images");
    let m = tiny_vision_chat(&dir);
    let image = tiny("gemma3_vision").join("image.png");
    let out = run(
        &[
            "chat",
            m.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "--prompt",
            "Describe it.",
            "--temperature",
            "0",
            "--max-tokens",
            "12",
            "--json",
        ],
        None,
    );
    cli::assert_ok(&out);
    let done = cli::done_events(&out).pop().expect("a done event");
    assert_eq!(done["image_tokens"], 16, "{done}");
    let expected = done["text"].as_str().unwrap().to_string();
    let server = serve(&m, &["--parallel", "2"]);
    let text_only = serve(&model(GEMMA), &["--parallel", "1"]);
    let fresh = serve(&m, &["--parallel", "1"]);
    let script = r#"
import base64, json, sys, urllib.request, urllib.error
url, other, fresh, image, expected = sys.argv[1:6]
png = base64.b64encode(open(image, "rb").read()).decode()
def post(base, path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json", "anthropic-version": "2023-06-01"})
    try:
        return 200, json.loads(urllib.request.urlopen(req, timeout=300).read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
def chat(content, base=url, model="tiny-vision-chat", history=()):
    return post(base, "/v1/chat/completions", {"model": model, "temperature": 0, "max_tokens": 12,
        "messages": list(history) + [{"role": "user", "content": content}]})
image_part = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + png}}
code, r = chat([image_part, {"type": "text", "text": "Describe it."}])
assert code == 200, r
reply = r["choices"][0]["message"]["content"]
assert reply == expected, (reply, expected)
assert r["timings"]["image_tokens"] == 16, r["timings"]
first = r["usage"]["prompt_tokens"]
# A second turn resends the image: its features and tokens come from the cache.
history = [{"role": "user", "content": [image_part, {"type": "text", "text": "Describe it."}]},
           {"role": "assistant", "content": reply}]
code, r2 = chat("And again?", history=history)
assert code == 200, r2
assert r2["timings"]["prompt_n"] > first, r2["timings"]
# The first turn's prompt (the image in it) is a prefix of the second's.
assert r2["timings"]["prompt_computed"] <= r2["timings"]["prompt_n"] - first + 1, r2["timings"]
# Anthropic's image block: the same reply (from a server whose cache is empty, as
# one-token prefills take the decode kernels and may differ in the last bits).
code, a = post(fresh, "/v1/messages", {"model": "tiny-vision-chat", "max_tokens": 12, "temperature": 0,
    "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "text", "text": "Describe it."}]}]})
assert code == 200, a
assert a["content"][0]["text"] == expected, (a, expected)
# Bad images: one 400 each, naming the part.
def refused(content, want, base=url, model="tiny-vision-chat"):
    code, e = chat(content, base, model)
    assert code == 400, (code, e)
    msg = e["error"]["message"]
    assert want in msg, (want, e)
    return e["error"]
bad = lambda u: [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": u}}]
e = refused(bad("https://example.com/cat.png"), "not fetched")
assert e["param"] == "messages[0].content[1]", e
refused(bad("data:image/png;base64,%%%"), "not valid base64")
refused(bad("data:image/png;base64," + base64.b64encode(b"not an image at all").decode()), "image")
refused("a \ufffc b", "U+FFFC")
refused([image_part], "no vision tower", other, "gemma-3-270m-q4_k_m")
code, r = chat([image_part] * 17)
assert code == 400 and "at most 16 images" in r["error"]["message"], r
print("ok")
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &server.url,
            &text_only.url,
            &fresh.url,
            image.to_str().unwrap(),
            &expected,
        ])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

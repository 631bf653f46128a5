//! Running the `unicorn` binary as a user would, for the end-to-end tests: where the
//! release binary is, running it with arguments and input, and reading its output.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The release `unicorn` binary next to this test binary (scripts/test builds it first).
pub fn unicorn_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("UNICORN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/cli-<hash> → target/<profile>/unicorn
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(format!("unicorn{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build --release --workspace)",
        p.display()
    );
    p
}

/// Runs `unicorn` with `args` and optional standard input.
pub fn run(args: &[&str], stdin: Option<&str>) -> Output {
    run_env(args, stdin, &[])
}

/// [`run`] with extra environment variables.
pub fn run_env(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    use std::io::Write;
    // The model library goes to a per-run folder unless a test names one.
    let data = std::env::temp_dir().join(format!("unicorn-e2e-data-{}", std::process::id()));
    let mut child = Command::new(unicorn_bin())
        .args(args)
        .env("UNICORN_DATA_DIR", data)
        .envs(env.iter().copied())
        .env("RAYON_NUM_THREADS", "2")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unicorn");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().expect("stdin");
        s.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for unicorn")
}

/// The JSON lines a `--json` run printed.
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// The `done` events a `--json` run printed (one per reply), in order.
pub fn done_events(out: &Output) -> Vec<serde_json::Value> {
    json_lines(out)
        .into_iter()
        .filter(|l| l["event"] == "done")
        .collect()
}

/// The token ids of the last `done` event a `--json` run printed.
pub fn done_ids(out: &Output) -> Vec<u64> {
    let lines = json_lines(out);
    let done = lines.last().expect("a done event");
    done["token_ids"]
        .as_array()
        .expect("token_ids")
        .iter()
        .map(|v| v.as_u64().expect("an id"))
        .collect()
}

/// Fails with both output streams shown when the command did not succeed.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "unicorn failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How a bounded run of `unicorn` ended.
pub struct Bounded {
    /// Exit status and output.
    pub output: Output,
    /// Wall time.
    pub elapsed: std::time::Duration,
    /// Whether it had to be killed at the time limit.
    pub killed: bool,
}

/// Runs `unicorn` with `args` in `cwd`, its heap limited to `data_bytes` (RLIMIT_DATA,
/// which counts every private allocation but not mapped model files) and killed after
/// `seconds`: a run that needs more is a failure the caller sees.
pub fn run_bounded(args: &[&str], cwd: &std::path::Path, data_bytes: u64, seconds: u64) -> Bounded {
    let data = std::env::temp_dir().join(format!("unicorn-e2e-data-{}", std::process::id()));
    let start = std::time::Instant::now();
    let mut child = Command::new("prlimit")
        .arg(format!("--data={data_bytes}"))
        .arg("--")
        .arg(unicorn_bin())
        .args(args)
        .current_dir(cwd)
        .env("UNICORN_DATA_DIR", data)
        .env("RAYON_NUM_THREADS", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn prlimit unicorn (util-linux)");
    let mut killed = false;
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed().as_secs() >= seconds {
            child.kill().ok();
            killed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Bounded {
        output: child.wait_with_output().expect("wait for unicorn"),
        elapsed: start.elapsed(),
        killed,
    }
}

/// The question every chat test asks, and SmolLM2's greedy answer to it.
pub const PARIS_PROMPT: &str = "What is the capital of France?";
/// See [`PARIS_PROMPT`].
pub const PARIS_ANSWER: &str = "The capital of France is Paris.";

/// `unicorn chat MODEL --prompt PARIS_PROMPT --temperature 0` plus `extra` arguments.
pub fn chat_paris(model: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "chat",
        model,
        "--prompt",
        PARIS_PROMPT,
        "--temperature",
        "0",
    ];
    args.extend_from_slice(extra);
    run(&args, None)
}

/// The ids `unicorn generate MODEL` decodes greedily for `n` tokens after the prompt
/// `ids` (ignoring end-of-sequence), with extra environment variables; fails the
/// test when the command fails.
pub fn generate_ids(model: &str, ids: &[u32], n: usize, env: &[(&str, &str)]) -> Vec<u64> {
    let prompt: Vec<String> = ids.iter().map(u32::to_string).collect();
    let n = n.to_string();
    let out = run_env(
        &[
            "generate",
            model,
            "--prompt-ids",
            &prompt.join(" "),
            "--max-tokens",
            &n,
            "--temperature",
            "0",
            "--ignore-eos",
            "--json",
        ],
        None,
        env,
    );
    assert_ok(&out);
    done_ids(&out)
}

//! Helpers for the end-to-end tests: where the `unicorn` binary, the test models and
//! the golden data are, and a way to run the binary.

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

/// A file in the test-model cache; a missing one fails the test with instructions.
pub fn model(name: &str) -> PathBuf {
    let dir = std::env::var_os("UNICORN_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache")
                });
            cache.join("unicorn/test-models")
        });
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-test-models first",
        p.display()
    );
    p
}

/// ../shared/golden next to the repository.
pub fn golden(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/golden")
        .join(rel);
    assert!(p.exists(), "golden file {} not found", p.display());
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

//! `kill -9` at random points of quantize, convert and pull: the output is absent or
//! complete (and loads), and the next run removes what the killed one left and
//! succeeds.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use unicorn_test_support::cli::*;
use unicorn_test_support::fake_hub::*;
use unicorn_test_support::*;

/// A delay in `0..max_ms`, different each run (the point of the kill is random).
fn random_ms(max_ms: u64, salt: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (t ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % max_ms.max(1)
}

/// Starts `unicorn args`, kills it with SIGKILL after `ms` (if it has not ended).
fn kill_after(args: &[&str], env: &[(&str, &str)], ms: u64) {
    let data = std::env::temp_dir().join(format!("unicorn-e2e-data-{}", std::process::id()));
    let mut child = Command::new(unicorn_bin())
        .args(args)
        .env("UNICORN_DATA_DIR", data)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(ms) {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL: no handler runs, nothing is cleaned up by the process itself.
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Names in `dir` that a killed run left: partial outputs.
fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-"))
        .collect()
}

/// After a kill the output is whole (it loads) or absent.
fn whole_or_absent(out: &Path) {
    if out.exists() {
        let o = run(&["info", &out.display().to_string()], None);
        assert!(
            o.status.success(),
            "a half-written {} exists",
            out.display()
        );
    }
}

#[test]
fn killed_quantize_and_convert_leave_whole_outputs_or_none() {
    let work = scratch("crash");
    let gemma = model(GEMMA).display().to_string();
    let smol = model(SMOLLM).display().to_string();
    for round in 0..3u64 {
        // Re-quantizing Gemma 3 270M takes a few seconds: killed somewhere inside.
        let out = work.join(format!("q{round}.gguf"));
        let o = out.display().to_string();
        kill_after(
            &["quantize", &gemma, "--to", "Q8_0", "--out", &o],
            &[],
            300 + random_ms(3000, round),
        );
        whole_or_absent(&out);
        let folder = work.join(format!("c{round}"));
        let f = folder.display().to_string();
        kill_after(
            &["convert", &smol, "--to", "safetensors", "--out", &f],
            &[],
            200 + random_ms(2000, round + 7),
        );
        whole_or_absent(&folder);
        // The next runs (onto the same outputs) clean up and succeed.
        assert_ok(&run(
            &["quantize", &gemma, "--to", "Q8_0", "--out", &o, "--force"],
            None,
        ));
        assert_ok(&run(
            &[
                "convert",
                &smol,
                "--to",
                "safetensors",
                "--out",
                &f,
                "--force",
            ],
            None,
        ));
        assert!(partials(&work).is_empty(), "{:?}", partials(&work));
        assert!(run(&["info", &o], None).status.success());
        assert!(run(&["info", &f], None).status.success());
    }
    std::fs::remove_dir_all(&work).ok();
}

#[test]
fn a_killed_pull_resumes_and_never_shows_a_partial_file() {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let files = vec![
        (
            "config.json".to_string(),
            std::fs::read(tiny("llama").join("config.json")).unwrap(),
        ),
        (
            "model.safetensors".to_string(),
            std::fs::read(tiny("llama").join("model.safetensors")).unwrap(),
        ),
        ("extra.bin".to_string(), big.clone()),
    ];
    let hub = FakeHub::start(
        "unicorn-test/crash",
        files,
        Faults {
            // 64 kB a millisecond: a few tenths of a second for the whole pull.
            throttle: Some(64 << 10),
            ..Default::default()
        },
    );
    let hf_home = scratch("crash-pull");
    let h = hf_home.display().to_string();
    let env = [("HF_ENDPOINT", hub.url.as_str()), ("HF_HOME", h.as_str())];
    let snap = hf_home
        .join("hub/models--unicorn-test--crash/snapshots")
        .join(COMMIT);
    for round in 0..3u64 {
        kill_after(
            &["pull", "unicorn-test/crash", "--all"],
            &env,
            20 + random_ms(400, round),
        );
        // What the snapshot shows is whole: every link resolves to a verified blob.
        if let Ok(rd) = std::fs::read_dir(&snap) {
            for e in rd.flatten() {
                let bytes = std::fs::read(e.path()).unwrap();
                if e.file_name() == "extra.bin" {
                    assert_eq!(bytes, big, "a partial extra.bin is visible");
                }
            }
        }
    }
    assert_ok(&run_env(
        &["pull", "unicorn-test/crash", "--all"],
        None,
        &env,
    ));
    assert_eq!(std::fs::read(snap.join("extra.bin")).unwrap(), big);
    std::fs::remove_dir_all(&hf_home).ok();
}

//! The bad-input corpus (`tests/bad-inputs`, written by `scripts/make-bad-inputs`):
//! every hostile or damaged model is refused by every command that reads it, with a
//! non-zero exit and one clear line that names the file and the problem, in seconds,
//! in well under 1 GB of memory, without a panic, and without writing anywhere.

use std::path::{Path, PathBuf};
use unicorn_test_support::cli::*;
use unicorn_test_support::*;

/// Heap any run may use (RLIMIT_DATA).
const MEMORY: u64 = 1 << 30;
/// Seconds any run may take.
const SECONDS: u64 = 30;

fn corpus() -> PathBuf {
    repo_root().join("tests/bad-inputs")
}

/// Every file under `dir` with its size and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), m.len(), m.modified().unwrap()));
        }
    }
    out.sort();
    out
}

/// `args` on the case, in a scratch folder that must stay as it was.
fn refused(case: &str, want: &str, args: &[&str], work: &Path) {
    let before = snapshot(work);
    let b = run_bounded(args, work, MEMORY, SECONDS);
    let err = String::from_utf8_lossy(&b.output.stderr);
    let what = format!("{case}: `unicorn {}`", args.join(" "));
    assert!(!b.killed, "{what}: still running after {SECONDS} s");
    assert!(!b.output.status.success(), "{what}: accepted\n{err}");
    assert_eq!(
        b.output.status.code(),
        Some(1),
        "{what}: not a clean error exit (a panic is 101, an abort 134)\n{err}"
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note:"))
        .collect();
    assert_eq!(lines.len(), 1, "{what}: one line wanted\n{err}");
    let line = lines[0];
    let file = Path::new(case).file_name().unwrap().to_string_lossy();
    assert!(
        line.starts_with("error: ") && line.contains(&*file) && line.contains(want),
        "{what}: wanted the file and `{want}` in: {line}"
    );
    assert_eq!(snapshot(work), before, "{what}: wrote into its folder");
}

/// Every load case through info, import and generate; chat cases through a chat
/// turn; and the references, which must work (so each case's damage is what fails).
#[test]
fn every_bad_input_is_refused_clearly_quickly_and_cheaply() {
    let all = bad_inputs();
    assert!(all.len() >= 40, "{} cases", all.len());
    for c in &all {
        let (name, use_, want) = (c.name.as_str(), c.kind.as_str(), c.want.as_str());
        // Each case in a scratch copy, so nothing can touch the corpus.
        let work = scratch(&format!("bad-{}", name.replace('/', "_")));
        let model = if name.starts_with('/') {
            PathBuf::from(name)
        } else if use_ == "fifo" {
            let p = work.join("model.gguf");
            let ok = std::process::Command::new("mkfifo")
                .arg(&p)
                .status()
                .unwrap();
            assert!(ok.success());
            p
        } else {
            let dst = work.join(name);
            let ok = std::process::Command::new("cp")
                .args([
                    "-a",
                    &corpus().join(name).display().to_string(),
                    &dst.display().to_string(),
                ])
                .status()
                .unwrap();
            assert!(ok.success());
            dst
        };
        let m = model.display().to_string();
        let shown = model.file_name().unwrap().to_string_lossy().into_owned();
        match use_ {
            "sound" => {
                for args in [
                    vec!["info", m.as_str()],
                    vec!["generate", &m, "--prompt-ids", "1 2", "--max-tokens", "2"],
                ] {
                    let b = run_bounded(&args, &work, MEMORY, SECONDS);
                    assert!(
                        b.output.status.success(),
                        "{name}: {args:?}\n{}",
                        String::from_utf8_lossy(&b.output.stderr)
                    );
                }
            }
            "chat" => refused(
                &shown,
                want,
                &["chat", &m, "--prompt", "hi", "--max-tokens", "1"],
                &work,
            ),
            "weights" => refused(
                &shown,
                want,
                &["generate", &m, "--prompt-ids", "1 2", "--max-tokens", "1"],
                &work,
            ),
            _ => {
                refused(&shown, want, &["info", &m], &work);
                refused(&shown, want, &["import", &m], &work);
                refused(
                    &shown,
                    want,
                    &["generate", &m, "--prompt-ids", "1 2", "--max-tokens", "1"],
                    &work,
                );
            }
        }
        std::fs::remove_dir_all(&work).ok();
    }
}

/// Command lines an unlucky user types: refused before any work, nothing replaced.
#[test]
fn hostile_command_lines_are_refused() {
    let work = scratch("bad-args");
    let sound = corpus().join("sound");
    let src = work.join("src");
    std::process::Command::new("cp")
        .args([
            "-a",
            &sound.display().to_string(),
            &src.display().to_string(),
        ])
        .status()
        .unwrap();
    let s = src.display().to_string();
    let mine = work.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("holiday.jpg"), b"precious").unwrap();
    let mi = mine.display().to_string();
    for (args, want) in [
        (
            vec![
                "generate",
                s.as_str(),
                "--prompt-ids",
                "1",
                "--threads",
                "10000",
            ],
            "at most",
        ),
        (
            vec!["generate", &s, "--prompt-ids", "1", "--threads", "0"],
            "at least 1",
        ),
        (
            vec!["compare", &s, &s, "--text", &s, "--threads", "0"],
            "at least 1",
        ),
        (vec!["quantize", &s, "--to", "nf4", "--out", "."], "source"),
        (
            vec!["quantize", &s, "--to", "nf4", "--out", &mi, "--force"],
            "did not write",
        ),
        (
            vec!["quantize", &s, "--to", "nf4", "--out", &s, "--force"],
            "source",
        ),
        (
            vec![
                "quantize",
                &s,
                "--to",
                "Q8_0",
                "--out",
                "/dev/null",
                "--force",
            ],
            "device",
        ),
        (
            vec!["quantize", &s, "--to", "Q8_0", "--out", &mi, "--force"],
            "not a file",
        ),
    ] {
        let before = snapshot(&work);
        let b = run_bounded(&args, &work, MEMORY, SECONDS);
        let err = String::from_utf8_lossy(&b.output.stderr);
        assert_eq!(b.output.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: wanted `{want}` in {err}");
        assert_eq!(snapshot(&work), before, "{args:?} changed the folder");
    }
    assert_eq!(
        std::fs::read(mine.join("holiday.jpg")).unwrap(),
        b"precious"
    );
    std::fs::remove_dir_all(&work).ok();
}

//! Outputs that appear whole or not at all. The work writes into a temporary sibling
//! of the target, `.<name>.partial-<pid>` (same file system, so the final rename is
//! atomic), which replaces the target only when the work succeeded and is removed
//! when it failed or was cancelled. A process killed mid-way leaves its sibling
//! behind; the next output to the same target removes it once its process is gone.
//!
//! Nothing the user had is replaced by accident: an existing target is replaced only
//! when the caller was asked to (`--force`), and then only if it is a previous output
//! of the same kind: a regular file for a file output, or, for a folder output, a
//! folder this program wrote (it holds the [`MARKER`] file). Never the source, a
//! device, a link, or a folder holding anything else.

use std::path::{Path, PathBuf};

/// The file every output folder holds, so that `--force` can tell a folder this
/// program wrote from one with the user's files.
pub const MARKER: &str = ".unicorn-output";

/// Why an output could not be written.
#[derive(Debug)]
pub enum OutputError {
    /// A file system operation failed.
    Io {
        /// The path it failed on.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The target may not be replaced, or the work would overwrite its source.
    Refused {
        /// The target.
        path: PathBuf,
        /// Why not.
        message: String,
    },
}

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Refused { path, message } => write!(f, "{}: {message}", path.display()),
        }
    }
}

impl std::error::Error for OutputError {}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One file (a GGUF, a downloaded blob).
    File,
    /// A folder (an HF model folder).
    Folder,
}

/// Checks that an output of `kind` may be written at `out`: it does not exist, or
/// `force` was given and it is a previous output of the same kind; and it is not,
/// and does not contain, `source`.
pub fn check_target(
    out: &Path,
    kind: Kind,
    force: bool,
    source: Option<&Path>,
) -> Result<(), OutputError> {
    let refuse = |message: String| {
        Err(OutputError::Refused {
            path: out.to_path_buf(),
            message,
        })
    };
    if let Some(src) = source {
        let (s, o) = (std::path::absolute(src), std::path::absolute(out));
        let (s, o) = (
            std::fs::canonicalize(src).or(s).map_err(io(src))?,
            std::fs::canonicalize(out).or(o).map_err(io(out))?,
        );
        if s == o || s.starts_with(&o) {
            return refuse(format!(
                "the output would overwrite the source {}",
                src.display()
            ));
        }
    }
    let meta = match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(out)(e)),
        Ok(m) => m,
    };
    if !force {
        return refuse("already exists; pass --force to replace it".into());
    }
    let t = meta.file_type();
    match kind {
        Kind::File if t.is_file() => Ok(()),
        Kind::File => refuse(format!(
            "is {}, not a file this program wrote; refusing to replace it",
            describe(&t)
        )),
        Kind::Folder if t.is_dir() && out.join(MARKER).is_file() => Ok(()),
        Kind::Folder if t.is_dir() => refuse(
            "is a folder this program did not write; refusing to replace it (remove it yourself, or give a new folder)".into(),
        ),
        Kind::Folder => refuse(format!(
            "is {}, not a folder this program wrote; refusing to replace it",
            describe(&t)
        )),
    }
}

fn describe(t: &std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a link"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_file() {
        "a file"
    } else {
        "a device, pipe or socket"
    }
}

/// `.<name>.partial-<pid>` next to `out`, for process `pid`.
fn sibling_of(out: &Path, pid: u32) -> PathBuf {
    parent(out).join(format!(".{}{pid}", partial_prefix(out)))
}

fn parent(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `<name>.partial-`: what every partial sibling's name (after the dot) starts with.
fn partial_prefix(out: &Path) -> String {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    format!("{name}.partial-")
}

/// Removes partial siblings of `out` whose process no longer runs (killed mid-way);
/// returns how many were removed. Ones of live processes (another run writing the
/// same target) are left alone.
pub fn remove_stale(out: &Path) -> usize {
    let prefix = format!(".{}", partial_prefix(out));
    let Ok(entries) = std::fs::read_dir(parent(out)) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || alive(pid) {
            continue;
        }
        let p = e.path();
        let gone = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p).is_ok(),
            _ => std::fs::remove_file(&p).is_ok(),
        };
        removed += usize::from(gone);
    }
    removed
}

/// Whether process `pid` exists. Where this cannot be told, it is assumed alive, so
/// nothing is removed.
fn alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        Path::new("/proc").join(pid.to_string()).exists()
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .map_or(true, |s| s.success())
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Runs `work` on a fresh temporary folder, then moves it to `out` (replacing a
/// folder there, which [`check_target`] must have allowed). The folder gets the
/// [`MARKER`] file.
pub fn folder<T, E: From<OutputError>>(
    out: &Path,
    work: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    remove_stale(out);
    let tmp = sibling_of(out, std::process::id());
    std::fs::remove_dir_all(&tmp).ok();
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = work(&tmp).and_then(|v| {
        let marker = tmp.join(MARKER);
        std::fs::write(
            &marker,
            b"written by unicorn; --force may replace this folder\n",
        )
        .map_err(io(&marker))?;
        if out.is_dir() {
            std::fs::remove_dir_all(out).map_err(io(out))?;
        }
        std::fs::rename(&tmp, out).map_err(io(out))?;
        Ok(v)
    });
    if result.is_err() {
        std::fs::remove_dir_all(&tmp).ok();
    }
    result
}

/// Runs `work` on a temporary file path, then renames it to `out` (replacing a file
/// there, which [`check_target`] must have allowed).
pub fn file<T, E: From<OutputError>>(
    out: &Path,
    work: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    remove_stale(out);
    let tmp = sibling_of(out, std::process::id());
    let result = work(&tmp).and_then(|v| {
        std::fs::rename(&tmp, out).map_err(io(out))?;
        Ok(v)
    });
    if result.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("unicorn-atomic-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn force_replaces_only_previous_outputs_of_the_same_kind() {
        let d = temp("force");
        let out = d.join("model.gguf");
        assert!(check_target(&out, Kind::File, false, None).is_ok());
        std::fs::write(&out, b"old").unwrap();
        let e = check_target(&out, Kind::File, false, None).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        assert!(check_target(&out, Kind::File, true, None).is_ok());
        // A folder of the user's: never, even with --force.
        let mine = d.join("photos");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(mine.join("cat.jpg"), b"meow").unwrap();
        let e = check_target(&mine, Kind::Folder, true, None).unwrap_err();
        assert!(e.to_string().contains("did not write"), "{e}");
        assert!(check_target(&mine, Kind::File, true, None).is_err());
        // One we wrote: yes.
        let ours = d.join("model.nf4");
        folder(&ours, |tmp| {
            std::fs::write(tmp.join("x"), b"1").map_err(io(tmp))
        })
        .unwrap();
        assert!(check_target(&ours, Kind::Folder, true, None).is_ok());
        // Never the source, nor a folder holding it.
        let e = check_target(&ours, Kind::Folder, true, Some(&ours)).unwrap_err();
        assert!(e.to_string().contains("source"), "{e}");
        let e = check_target(&d, Kind::Folder, true, Some(&out)).unwrap_err();
        assert!(e.to_string().contains("source"), "{e}");
        #[cfg(unix)]
        {
            let e = check_target(Path::new("/dev/null"), Kind::File, true, None).unwrap_err();
            assert!(e.to_string().contains("device"), "{e}");
            let link = d.join("link.gguf");
            std::os::unix::fs::symlink(&out, &link).unwrap();
            assert!(check_target(&link, Kind::File, true, None).is_err());
        }
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn failed_work_leaves_nothing_and_stale_partials_are_removed() {
        let d = temp("stale");
        let out = d.join("m.gguf");
        let r: Result<(), OutputError> = file(&out, |tmp| {
            std::fs::write(tmp, b"half").map_err(io(tmp))?;
            Err(OutputError::Refused {
                path: tmp.to_path_buf(),
                message: "cancelled".into(),
            })
        });
        assert!(r.is_err() && !out.exists());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        // What a killed run left (pid 0 and u32::MAX never name a live process here),
        // and one of a live process (ours), which stays.
        let dead = sibling_of(&out, u32::MAX);
        std::fs::write(&dead, b"x").unwrap();
        std::fs::create_dir_all(sibling_of(&out, 0)).unwrap();
        let live = d.join(format!(".m.gguf.partial-{}x", std::process::id()));
        std::fs::write(&live, b"not ours to judge").unwrap();
        file(&out, |tmp| std::fs::write(tmp, b"whole").map_err(io(tmp))).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"whole");
        assert!(!dead.exists() && !sibling_of(&out, 0).exists());
        assert!(live.exists());
        std::fs::remove_dir_all(&d).ok();
    }
}

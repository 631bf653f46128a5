//! Hugging Face Hub downloads into the standard HF cache, so Python tools share the
//! files: `models--org--name/blobs/<etag>`, `snapshots/<commit>/<file>` links and
//! `refs/<revision>`, with folder naming from `hf-hub`. The transfer itself is ours
//! because the pull must resume an interrupted file from where it stopped (the
//! partial file is `blobs/<etag>.incomplete`, as huggingface_hub names it), verify
//! size and sha256 before a blob becomes visible, report progress and be
//! cancellable, and explain 401/403 (gated models) in words a user can act on.
//! LFS files are checked against their sha256, other files against their git blob
//! id.

use crate::error::{Error, Result};
use hf_hub::{Repo, RepoType};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Retries of one file after a dropped connection, each resuming where it stopped.
const RETRIES: usize = 3;

/// A file of a repository, as the hub lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoteFile {
    /// Path inside the repository.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the content, for files stored with Git LFS.
    pub sha256: Option<String>,
    /// The cache's blob name: the sha256 for LFS files, else the git blob id.
    pub etag: String,
}

/// A repository at one commit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing {
    /// `org/name`.
    pub repo: String,
    /// The commit the revision resolved to.
    pub commit: String,
    /// Its files (after include filters).
    pub files: Vec<RemoteFile>,
}

/// Progress of a pull, reported as bytes arrive.
#[derive(Debug, Clone, Serialize)]
pub struct PullProgress {
    /// The file being downloaded.
    pub file: String,
    /// Its index (from 0) and the number of files.
    pub file_index: usize,
    /// Files in the pull.
    pub files: usize,
    /// Bytes of this file present (resumed bytes included).
    pub file_bytes_done: u64,
    /// Size of this file.
    pub file_bytes_total: u64,
    /// Bytes of the whole pull present.
    pub bytes_done: u64,
    /// Size of the whole pull.
    pub bytes_total: u64,
    /// Transfer rate over this run, bytes per second.
    pub bytes_per_sec: f64,
    /// Seconds left at that rate.
    pub eta_s: Option<f64>,
}

/// Where the hub is, who we are, and where the cache is.
#[derive(Debug, Clone)]
pub struct Hub {
    /// Base URL (`HF_ENDPOINT`, default https://huggingface.co).
    pub endpoint: String,
    /// Access token (`HF_TOKEN`, else the token file).
    pub token: Option<String>,
    /// The hub cache folder.
    pub cache: PathBuf,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `HF_HOME`, default `~/.cache/huggingface`.
pub fn hf_home() -> PathBuf {
    std::env::var_os("HF_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/huggingface"))
}

/// The hub cache: `HF_HUB_CACHE`, else `$HF_HOME/hub`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("HF_HUB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| hf_home().join("hub"))
}

/// `HF_TOKEN`, else the file at `HF_TOKEN_PATH` or `$HF_HOME/token`.
pub fn token() -> Option<String> {
    if let Some(t) = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Some(t.trim().to_string());
    }
    std::fs::read_to_string(token_path())
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Where [`token`] reads the token file: `HF_TOKEN_PATH`, else `$HF_HOME/token`.
pub fn token_path() -> PathBuf {
    std::env::var_os("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| hf_home().join("token"))
}

/// Saves `token` where huggingface_hub keeps it (the file [`token`] reads), whole or
/// not at all; an empty token removes the file.
pub fn save_token(token: &str) -> Result<PathBuf> {
    save_token_to(token_path(), token)
}

/// [`save_token`] into the file `path`.
pub fn save_token_to(path: PathBuf, token: &str) -> Result<PathBuf> {
    let token = token.trim();
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Invalid(
            "the token contains spaces or control characters".into(),
        ));
    }
    if token.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Io { path, source: e })
            }
            _ => Ok(path),
        };
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    crate::atomic::file(&path, |tmp| {
        std::fs::write(tmp, token).map_err(|source| Error::Io {
            path: tmp.to_path_buf(),
            source,
        })
    })?;
    Ok(path)
}

/// Deletes the partial downloads (`blobs/*.incomplete`) a stopped pull of `repo` left
/// for resuming; returns how many bytes that freed.
pub fn discard_partial(cache: &Path, repo: &str) -> Result<u64> {
    let blobs = repo_dir(cache, repo).join("blobs");
    let mut freed = 0;
    let Ok(rd) = std::fs::read_dir(&blobs) else {
        return Ok(0);
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "incomplete") {
            freed += e.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&p).map_err(|source| Error::Io { path: p, source })?;
        }
    }
    Ok(freed)
}

/// The models a finished pull brought: the snapshot folder when it has a
/// `config.json`, and each `.gguf` file.
pub fn pulled_models(snapshot: &Path, listing: &Listing) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if snapshot.join("config.json").is_file() {
        out.push(snapshot.to_path_buf());
    }
    out.extend(
        listing
            .files
            .iter()
            .filter(|f| f.path.ends_with(".gguf"))
            .map(|f| snapshot.join(&f.path)),
    );
    out
}

/// Whether `s` looks like `org/name`.
pub fn is_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p != ".."
                && p != "."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(Repo::new(repo.to_string(), RepoType::Model).folder_name())
}

/// The snapshot folder of a cached repository at `revision` (a branch, tag or
/// commit), if it is in the cache.
pub fn cached_snapshot(cache: &Path, repo: &str, revision: &str) -> Option<PathBuf> {
    let dir = repo_dir(cache, repo);
    let commit = std::fs::read_to_string(dir.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let snap = dir.join("snapshots").join(commit);
    snap.is_dir().then_some(snap)
}

/// Resolves a MODEL argument: an existing file or folder, or a repository id in the
/// cache (its snapshot folder when it holds `config.json`, or its one `.gguf`).
pub fn resolve_model(arg: &str) -> Result<PathBuf> {
    let p = PathBuf::from(arg);
    if p.exists() {
        return Ok(p);
    }
    if !is_repo_id(arg) {
        return Err(Error::Invalid(format!("{arg}: no such file or folder")));
    }
    let cache = cache_dir();
    let snap = cached_snapshot(&cache, arg, "main").ok_or_else(|| {
        Error::Invalid(format!(
            "{arg}: no such file or folder, and not in the HF cache ({}); run `unicorn pull {arg}` first",
            cache.display()
        ))
    })?;
    if snap.join("config.json").is_file() {
        return Ok(snap);
    }
    let ggufs: Vec<PathBuf> = std::fs::read_dir(&snap)
        .map_err(|source| Error::Io {
            path: snap.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::Invalid(format!(
            "{arg}: the cached snapshot {} has neither config.json nor a .gguf file",
            snap.display()
        ))),
        many => Err(Error::Invalid(format!(
            "{arg}: the cached snapshot has several .gguf files; pass one: {}",
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

impl Hub {
    /// Endpoint, token and cache from the environment, as huggingface_hub reads them.
    pub fn from_env() -> Self {
        Self {
            endpoint: std::env::var("HF_ENDPOINT")
                .unwrap_or_else(|_| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            token: token(),
            cache: cache_dir(),
        }
    }

    fn agent(&self) -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(20))
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("unicorn/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    fn get(&self, url: &str) -> ureq::Request {
        let r = self.agent().get(url);
        match &self.token {
            Some(t) => r.set("Authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    fn http_error(&self, repo: &str, what: &str, e: ureq::Error) -> Error {
        match e {
            ureq::Error::Status(401 | 403, _) => Error::Invalid(format!(
                "{repo}: access denied ({what}). If the model is gated, accept its licence at {}/{repo} while logged in, then set HF_TOKEN (or run `huggingface-cli login`); {}",
                self.endpoint,
                if self.token.is_some() {
                    "the token you set was refused"
                } else {
                    "no token is set"
                }
            )),
            ureq::Error::Status(404, _) => {
                Error::Invalid(format!("{repo}: not found on {} ({what})", self.endpoint))
            }
            ureq::Error::Status(code, _) => {
                Error::Invalid(format!("{repo}: the hub answered HTTP {code} ({what})"))
            }
            ureq::Error::Transport(t) => Error::Invalid(format!("{repo}: {what}: {t}")),
        }
    }

    /// Lists the files of `repo` at `revision`, with sizes and checksums, keeping
    /// those that match one of `include` (all when empty).
    pub fn list(&self, repo: &str, revision: &str, include: &[String]) -> Result<Listing> {
        if !is_repo_id(repo) {
            return Err(Error::Invalid(format!(
                "`{repo}` is not a repository id (org/name)"
            )));
        }
        let patterns = include
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| Error::Invalid(format!("--include {p}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let url = format!(
            "{}/api/models/{repo}/revision/{revision}?blobs=true",
            self.endpoint
        );
        let body = self
            .get(&url)
            .call()
            .map_err(|e| self.http_error(repo, "listing files", e))?
            .into_string()
            .map_err(|e| Error::Invalid(format!("{repo}: reading the file list: {e}")))?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| Error::Invalid(format!("{repo}: the file list is not JSON: {e}")))?;
        let commit = v["sha"]
            .as_str()
            .ok_or_else(|| Error::Invalid(format!("{repo}: the file list has no commit sha")))?
            .to_string();
        let mut files = Vec::new();
        for s in v["siblings"].as_array().into_iter().flatten() {
            let Some(path) = s["rfilename"].as_str() else {
                continue;
            };
            if path.split('/').any(|c| c == ".." || c.is_empty()) {
                return Err(Error::Invalid(format!("{repo}: unsafe file name `{path}`")));
            }
            if !patterns.is_empty() && !patterns.iter().any(|p| p.matches(path)) {
                continue;
            }
            let sha256 = s["lfs"]["sha256"].as_str().map(str::to_string);
            let size = s["lfs"]["size"]
                .as_u64()
                .or_else(|| s["size"].as_u64())
                .ok_or_else(|| {
                    Error::Invalid(format!("{repo}: no size for `{path}` in the file list"))
                })?;
            let etag = sha256
                .clone()
                .or_else(|| s["blobId"].as_str().map(str::to_string))
                .ok_or_else(|| Error::Invalid(format!("{repo}: no blob id for `{path}`")))?;
            files.push(RemoteFile {
                path: path.to_string(),
                size,
                sha256,
                etag,
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Listing {
            repo: repo.to_string(),
            commit,
            files,
        })
    }

    /// Downloads every file of `listing` that the cache lacks, then points
    /// `refs/<revision>` at its commit. Returns the snapshot folder. `progress`
    /// returning false cancels; a partial file stays for the next pull to resume.
    pub fn pull(
        &self,
        listing: &Listing,
        revision: &str,
        progress: &mut dyn FnMut(&PullProgress) -> bool,
    ) -> Result<PathBuf> {
        let dir = repo_dir(&self.cache, &listing.repo);
        let snap = dir.join("snapshots").join(&listing.commit);
        let blobs = dir.join("blobs");
        for d in [&snap, &blobs] {
            std::fs::create_dir_all(d).map_err(|source| Error::Io {
                path: d.clone(),
                source,
            })?;
        }
        let bytes_total: u64 = listing.files.iter().map(|f| f.size).sum();
        let mut bytes_before = 0u64;
        let started = Instant::now();
        let mut transferred = 0u64;
        for (i, f) in listing.files.iter().enumerate() {
            let blob = blobs.join(&f.etag);
            let have = std::fs::metadata(&blob)
                .map(|m| m.len() == f.size)
                .unwrap_or(false);
            if !have {
                self.download(listing, f, &blob, &mut |done, fresh| {
                    transferred += fresh;
                    let rate = transferred as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    let all = bytes_before + done;
                    progress(&PullProgress {
                        file: f.path.clone(),
                        file_index: i,
                        files: listing.files.len(),
                        file_bytes_done: done,
                        file_bytes_total: f.size,
                        bytes_done: all,
                        bytes_total,
                        bytes_per_sec: rate,
                        eta_s: (rate > 0.0).then(|| (bytes_total - all) as f64 / rate),
                    })
                })?;
            }
            link_snapshot(&snap, &f.path, &f.etag)?;
            bytes_before += f.size;
            if have {
                progress(&PullProgress {
                    file: f.path.clone(),
                    file_index: i,
                    files: listing.files.len(),
                    file_bytes_done: f.size,
                    file_bytes_total: f.size,
                    bytes_done: bytes_before,
                    bytes_total,
                    bytes_per_sec: 0.0,
                    eta_s: None,
                });
            }
        }
        if revision != listing.commit {
            let r = dir.join("refs").join(revision);
            if let Some(p) = r.parent() {
                std::fs::create_dir_all(p).map_err(|source| Error::Io {
                    path: p.to_path_buf(),
                    source,
                })?;
            }
            std::fs::write(&r, &listing.commit).map_err(|source| Error::Io { path: r, source })?;
        }
        Ok(snap)
    }

    /// One file into `blob`, resuming `blob.incomplete`, retrying dropped
    /// connections, verifying size and sha256 before the rename.
    fn download(
        &self,
        listing: &Listing,
        f: &RemoteFile,
        blob: &Path,
        progress: &mut dyn FnMut(u64, u64) -> bool,
    ) -> Result<()> {
        let part = blob.with_file_name(format!("{}.incomplete", f.etag));
        let io = |source| Error::Io {
            path: part.clone(),
            source,
        };
        let url = format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint, listing.repo, listing.commit, f.path
        );
        let mut attempt = 0;
        loop {
            let mut start = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            if start > f.size {
                std::fs::remove_file(&part).map_err(io)?;
                start = 0;
            }
            if start < f.size {
                let mut req = self.get(&url);
                if start > 0 {
                    req = req.set("Range", &format!("bytes={start}-"));
                }
                let resp = req
                    .call()
                    .map_err(|e| self.http_error(&listing.repo, &f.path, e))?;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&part)
                    .map_err(io)?;
                if start > 0 && resp.status() != 206 {
                    // The server ignored the range: start over.
                    file.set_len(0).map_err(io)?;
                    start = 0;
                }
                let mut reader = resp.into_reader();
                let mut buf = vec![0u8; 1 << 20];
                let mut done = start;
                let outcome: std::io::Result<bool> = (|| loop {
                    let n = reader.read(&mut buf)?;
                    if n == 0 {
                        return Ok(true);
                    }
                    file.write_all(&buf[..n])?;
                    done += n as u64;
                    if !progress(done, n as u64) {
                        return Ok(false);
                    }
                })();
                file.flush().map_err(io)?;
                match outcome {
                    Ok(false) => return Err(Error::Cancelled),
                    Ok(true) if done >= f.size => {}
                    // Dropped connection (or a short body): resume from what arrived.
                    Ok(true) | Err(_) if attempt < RETRIES => {
                        attempt += 1;
                        continue;
                    }
                    Ok(true) => {
                        return Err(Error::Invalid(format!(
                        "{}: {} ended after {done} of {} bytes (kept for the next pull to resume)",
                        listing.repo, f.path, f.size
                    )))
                    }
                    Err(e) => {
                        return Err(Error::Invalid(format!(
                        "{}: {}: {e} after {done} of {} bytes (kept for the next pull to resume)",
                        listing.repo, f.path, f.size
                    )))
                    }
                }
            }
            break;
        }
        let got = std::fs::metadata(&part).map_err(io)?.len();
        if got != f.size {
            std::fs::remove_file(&part).ok();
            return Err(Error::Invalid(format!(
                "{}: {} has {got} bytes, the hub lists {}; removed, pull again",
                listing.repo, f.path, f.size
            )));
        }
        // LFS files carry their sha256; other files are named by their git blob id,
        // the sha1 of "blob <size>\0" and the content.
        let (kind, want, have) = match &f.sha256 {
            Some(want) => ("sha256", want.clone(), sha256_file(&part)?),
            None => ("git blob sha1", f.etag.clone(), git_blob_sha1(&part)?),
        };
        if have != want {
            std::fs::remove_file(&part).ok();
            return Err(Error::Invalid(format!(
                "{}: {} failed its checksum ({kind} {have}, expected {want}); the download was removed, pull again",
                listing.repo, f.path
            )));
        }
        std::fs::rename(&part, blob).map_err(io)
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The git blob id of a file: sha1 of `blob <size>\0` followed by the content.
pub fn git_blob_sha1(path: &Path) -> Result<String> {
    use sha1::Digest as _;
    let data = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(&data);
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `snapshots/<commit>/<path>` → `../../blobs/<etag>` (relative, as huggingface_hub).
fn link_snapshot(snap: &Path, path: &str, etag: &str) -> Result<()> {
    let link = snap.join(path);
    let depth = path.matches('/').count();
    if let Some(p) = link.parent() {
        std::fs::create_dir_all(p).map_err(|source| Error::Io {
            path: p.to_path_buf(),
            source,
        })?;
    }
    let target = PathBuf::from("../".repeat(depth + 2))
        .join("blobs")
        .join(etag);
    if std::fs::symlink_metadata(&link).is_ok() {
        std::fs::remove_file(&link).map_err(|source| Error::Io {
            path: link.clone(),
            source,
        })?;
    }
    #[cfg(unix)]
    let r = std::os::unix::fs::symlink(&target, &link);
    #[cfg(not(unix))]
    let r = std::fs::copy(snap.join(&target), &link).map(|_| ());
    r.map_err(|source| Error::Io { path: link, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_saved_whole_checked_and_removed() {
        let d = std::env::temp_dir().join(format!("unicorn-token-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        let p = d.join("hf").join("token");
        save_token_to(p.clone(), "  hf_abc123\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "hf_abc123");
        assert!(save_token_to(p.clone(), "hf_a b").is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "hf_abc123");
        save_token_to(p.clone(), "").unwrap();
        assert!(!p.exists());
        save_token_to(p.clone(), "").unwrap();
        std::fs::remove_dir_all(&d).ok();
    }
}

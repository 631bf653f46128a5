//! Hugging Face Hub downloads into the standard HF cache, so Python tools share the
//! files: `models--org--name/blobs/<etag>`, `snapshots/<commit>/<file>` links and
//! `refs/<revision>`, with folder naming from `hf-hub`. The transfer itself is ours
//! because the pull must resume an interrupted file from where it stopped (the
//! partial file is `blobs/<etag>.incomplete`, as huggingface_hub names it), verify
//! size and sha256 before a blob becomes visible, report progress and be
//! cancellable, and explain 401/403 (gated models) in words a user can act on.
//! LFS files are checked against their sha256, other files against their git blob
//! id.
//!
//! A hub's answers are not trusted: every string it sends that becomes part of a
//! path (the commit, blob ids and hashes, file names) and every revision a user
//! names is checked against its grammar first, and every path built from them is
//! checked to stay inside the cache.

pub mod fit;
pub mod plan;
pub mod search;

pub use search::{Gated, SearchResult};

use hf_hub::{Repo, RepoType};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use unicorn_common::{Meter, Progress};

/// Everything a hub operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file in the cache could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A request that cannot be served, or an answer we refuse, said in words.
    #[error("{0}")]
    Invalid(String),
    /// The user cancelled; a partial file stays for the next pull to resume.
    #[error("cancelled")]
    Cancelled,
    /// An output could not be written whole.
    #[error(transparent)]
    Output(#[from] unicorn_common::atomic::OutputError),
}

/// The hub's result type.
pub type Result<T> = std::result::Result<T, Error>;

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
    /// Whether the hub asks users to accept a licence first.
    pub gated: Gated,
    /// The licence the repository's tags name (`license:...`).
    pub license: Option<String>,
}

impl Listing {
    /// The same listing with exactly the files named in `paths` (in the listing's
    /// order): the choice of a plan, or of a user. A name the listing lacks is an
    /// error naming it, so nothing else is downloaded in its place.
    pub fn only(&self, paths: &[String]) -> Result<Listing> {
        if paths.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no files chosen to download",
                self.repo
            )));
        }
        if let Some(missing) = paths
            .iter()
            .find(|p| !self.files.iter().any(|f| &f.path == *p))
        {
            return Err(Error::Invalid(format!(
                "{}: no file `{}` at commit {}",
                self.repo,
                missing.escape_debug(),
                self.commit
            )));
        }
        Ok(Listing {
            files: self
                .files
                .iter()
                .filter(|f| paths.contains(&f.path))
                .cloned()
                .collect(),
            ..self.clone()
        })
    }

    /// Bytes of the weight files (`.safetensors`, `.gguf`, `.bin`).
    pub fn weight_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| {
                [".safetensors", ".gguf", ".bin"]
                    .iter()
                    .any(|x| f.path.ends_with(x))
            })
            .map(|f| f.size)
            .sum()
    }
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
    /// A transfer that brings fewer than [`STALL_BYTES`] in this long is stalled: it
    /// is retried, then fails.
    pub stall_timeout: Duration,
}

/// Bytes a transfer must bring per [`Hub::stall_timeout`] not to count as stalled.
pub const STALL_BYTES: u64 = 16 << 10;

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
    unicorn_common::atomic::file(&path, |tmp| {
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
    if !is_repo_id(repo) {
        return Err(Error::Invalid(format!(
            "`{repo}` is not a repository id (org/name)"
        )));
    }
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
/// `config.json`, and each `.gguf` model file (of a split one, its first part; a
/// vision projector, `mmproj*.gguf`, is not a model of its own).
pub fn pulled_models(snapshot: &Path, listing: &Listing) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if snapshot.join("config.json").is_file() {
        out.push(snapshot.to_path_buf());
    }
    out.extend(
        listing
            .files
            .iter()
            .filter(|f| {
                f.path.ends_with(".gguf")
                    && !plan::is_mmproj(&f.path)
                    && plan::split_part(&f.path).is_none_or(|(i, _)| i == 1)
            })
            .map(|f| snapshot.join(&f.path)),
    );
    out
}

/// Reads at most `max` bytes of an answer's body, refusing a longer one whole (a
/// hub that sends more than any real answer holds is not believed).
fn read_body(resp: ureq::Response, max: u64, what: &str) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    resp.into_reader()
        .take(max + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::Invalid(format!("{what}: reading the answer: {e}")))?;
    if body.len() as u64 > max {
        return Err(Error::Invalid(format!(
            "{what}: the answer is larger than {} KiB; refused",
            max >> 10
        )));
    }
    Ok(body)
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

/// Whether `s` is exactly `len` lowercase hexadecimal digits (a commit or blob id is
/// 40, a sha256 64).
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a revision (a branch, tag or commit) before it becomes a path under
/// `refs/` and part of a URL: ASCII letters, digits and `._-/`, components that are
/// neither empty, `.` nor `..`, at most 255 bytes.
pub fn check_revision(revision: &str) -> Result<()> {
    let ok = relative_names(revision, 255)
        && revision
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "revision `{}`: not a branch, tag or commit name (letters, digits, `._-/`, no `..`)",
            revision.escape_debug()
        )))
    }
}

/// Checks a file name from a listing before it becomes a path in the snapshot:
/// relative, no empty, `.` or `..` components, no backslashes or control characters.
fn check_file_name(repo: &str, path: &str) -> Result<()> {
    let ok = relative_names(path, 1024) && !path.chars().any(|c| c.is_control() || c == '\\');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{repo}: the hub listed an unsafe file name `{}`",
            path.escape_debug()
        )))
    }
}

/// Whether `s` (at most `max` bytes) is `/`-separated names, none empty, `.` or `..`:
/// a relative path that cannot climb.
fn relative_names(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Whether `path` is inside `root`: below it by plain names only (every part that
/// built it was checked; this proves it once more where the path is used).
fn inside(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root).is_ok_and(|rest| {
        rest.components().count() > 0
            && rest.components().all(|c| matches!(c, Component::Normal(_)))
    })
}

/// `path`, once proven inside the cache `root`.
fn in_cache(root: &Path, path: PathBuf) -> Result<PathBuf> {
    if inside(root, &path) {
        Ok(path)
    } else {
        Err(Error::Invalid(format!(
            "{}: outside the cache {}; refusing to write there",
            path.display(),
            root.display()
        )))
    }
}

fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(Repo::new(repo.to_string(), RepoType::Model).folder_name())
}

/// The snapshot folder of a cached repository at `revision` (a branch, tag or
/// commit), if it is in the cache.
pub fn cached_snapshot(cache: &Path, repo: &str, revision: &str) -> Option<PathBuf> {
    if !is_repo_id(repo) || check_revision(revision).is_err() {
        return None;
    }
    let dir = repo_dir(cache, repo);
    let commit = std::fs::read_to_string(dir.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    // A ref file holds a commit id; anything else is not followed.
    if !is_hex(&commit, 40) {
        return None;
    }
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
        let endpoint = std::env::var("HF_ENDPOINT")
            .unwrap_or_else(|_| "https://huggingface.co".into())
            .trim_end_matches('/')
            .to_string();
        Self {
            token: token(),
            ..Self::at(endpoint, cache_dir())
        }
    }

    /// The hub at `endpoint` without a token, caching into `cache`.
    pub fn at(endpoint: impl Into<String>, cache: PathBuf) -> Self {
        Self {
            endpoint: endpoint.into(),
            token: None,
            cache,
            stall_timeout: Duration::from_secs(30),
        }
    }

    fn agent(&self) -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(20))
            // A silent server fails a read after this long; a trickling one is caught
            // by the stall check in `download`.
            .timeout_read(self.stall_timeout)
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
        check_revision(revision)?;
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
        // ureq caps a string body at 10 MB: a listing larger than that is refused,
        // not held in memory.
        let body = self
            .get(&url)
            .call()
            .map_err(|e| self.http_error(repo, "listing files", e))?
            .into_string()
            .map_err(|e| Error::Invalid(format!("{repo}: reading the file list: {e}")))?;
        parse_listing(repo, &body, &patterns)
    }

    /// Downloads every file of `listing` that the cache lacks, then points
    /// `refs/<revision>` at its commit. Returns the snapshot folder. `progress` is
    /// told the bytes of the whole pull (item: the file) and returning false cancels;
    /// a partial file stays for the next pull to resume.
    pub fn pull(
        &self,
        listing: &Listing,
        revision: &str,
        progress: &mut dyn FnMut(&Progress) -> bool,
    ) -> Result<PathBuf> {
        // A listing may come from anywhere (the app passes one back): check it again.
        if !is_repo_id(&listing.repo) || !is_hex(&listing.commit, 40) {
            return Err(Error::Invalid(format!(
                "`{}` at `{}`: not a repository id and commit",
                listing.repo.escape_debug(),
                listing.commit.escape_debug()
            )));
        }
        check_revision(revision)?;
        for f in &listing.files {
            check_file_name(&listing.repo, &f.path)?;
            let etag_ok = match &f.sha256 {
                Some(h) => is_hex(h, 64) && *h == f.etag,
                None => is_hex(&f.etag, 40),
            };
            if !etag_ok {
                return Err(Error::Invalid(format!(
                    "{}: `{}` has an invalid blob id",
                    listing.repo, f.path
                )));
            }
        }
        let cache = &self.cache;
        let dir = in_cache(cache, repo_dir(cache, &listing.repo))?;
        let snap = in_cache(cache, dir.join("snapshots").join(&listing.commit))?;
        let blobs = in_cache(cache, dir.join("blobs"))?;
        for d in [&snap, &blobs] {
            std::fs::create_dir_all(d).map_err(|source| Error::Io {
                path: d.clone(),
                source,
            })?;
        }
        let total: u64 = listing.files.iter().map(|f| f.size).sum();
        let present = |f: &RemoteFile| -> u64 {
            let blob = blobs.join(&f.etag);
            match std::fs::metadata(&blob) {
                Ok(m) if m.len() == f.size => f.size,
                _ => std::fs::metadata(blob.with_file_name(format!("{}.incomplete", f.etag)))
                    .map_or(0, |m| m.len().min(f.size)),
            }
        };
        // What was already here does not count towards the rate.
        let meter = Meter::resuming(listing.files.iter().map(present).sum());
        let n = listing.files.len();
        let mut before = 0u64;
        for (i, f) in listing.files.iter().enumerate() {
            let blob = in_cache(cache, blobs.join(&f.etag))?;
            let have = std::fs::metadata(&blob).is_ok_and(|m| m.len() == f.size);
            if !have {
                self.download(listing, f, &blob, &mut |done, note| {
                    let item = match note {
                        Some(note) => format!("{} ({note})", f.path),
                        None => f.path.clone(),
                    };
                    progress(&meter.at(item, i + 1, n, before + done, total))
                })?;
            }
            link_snapshot(cache, &snap, &f.path, &f.etag)?;
            before += f.size;
            if have && !progress(&meter.at(f.path.clone(), i + 1, n, before, total)) {
                return Err(Error::Cancelled);
            }
        }
        if revision != listing.commit {
            let r = in_cache(cache, dir.join("refs").join(revision))?;
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

    /// One file into `blob`, resuming `blob.incomplete`, retrying dropped and stalled
    /// connections, verifying size and sha256 before the rename. `progress(bytes of
    /// this file present, note)` is told each piece, and of a retry with a note.
    fn download(
        &self,
        listing: &Listing,
        f: &RemoteFile,
        blob: &Path,
        progress: &mut dyn FnMut(u64, Option<&str>) -> bool,
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
            if start >= f.size {
                break;
            }
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
            let stall = self.stall_timeout;
            let mut window = (std::time::Instant::now(), done);
            let outcome: std::io::Result<Transfer> = (|| loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    return Ok(Transfer::Ended);
                }
                file.write_all(&buf[..n])?;
                done += n as u64;
                if !progress(done, None) {
                    return Ok(Transfer::Cancelled);
                }
                // A server that trickles bytes never trips the read timeout.
                if window.0.elapsed() >= stall {
                    if done - window.1 < STALL_BYTES {
                        return Ok(Transfer::Stalled);
                    }
                    window = (std::time::Instant::now(), done);
                }
            })();
            file.flush().map_err(io)?;
            let why = match outcome {
                Ok(Transfer::Cancelled) => return Err(Error::Cancelled),
                Ok(Transfer::Ended) if done >= f.size => break,
                Ok(Transfer::Ended) => "the connection ended early".to_string(),
                Ok(Transfer::Stalled) => format!(
                    "stalled: under {} KiB in {} s",
                    STALL_BYTES >> 10,
                    stall.as_secs()
                ),
                Err(e) => e.to_string(),
            };
            if attempt >= RETRIES {
                return Err(Error::Invalid(format!(
                    "{}: {}: {why}, after {done} of {} bytes and {RETRIES} retries (kept for the next pull to resume)",
                    listing.repo, f.path, f.size
                )));
            }
            attempt += 1;
            // Resume from what arrived, and say so.
            let note = format!("{why}; retry {attempt} of {RETRIES}");
            if !progress(done, Some(&note)) {
                return Err(Error::Cancelled);
            }
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

/// How one transfer of a file ended.
enum Transfer {
    /// The server closed the body.
    Ended,
    /// The progress callback asked to stop.
    Cancelled,
    /// Too few bytes arrived in [`Hub::stall_timeout`].
    Stalled,
}

/// The file list the hub sends for `repo` (`/api/models/{repo}/revision/{rev}?blobs=true`),
/// checked: a commit id, safe file names, sizes, and blob ids and hashes of the right
/// form. Files matching none of `include` (when given) are left out.
pub fn parse_listing(repo: &str, body: &str, include: &[glob::Pattern]) -> Result<Listing> {
    let patterns = include;
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| Error::Invalid(format!("{repo}: the file list is not JSON: {e}")))?;
    let commit = v["sha"]
        .as_str()
        .filter(|c| is_hex(c, 40))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{repo}: the file list has no valid commit id (40 hex digits): {}",
                v["sha"]
            ))
        })?
        .to_string();
    let mut files = Vec::new();
    for s in v["siblings"].as_array().into_iter().flatten() {
        let Some(path) = s["rfilename"].as_str() else {
            continue;
        };
        check_file_name(repo, path)?;
        if !patterns.is_empty() && !patterns.iter().any(|p| p.matches(path)) {
            continue;
        }
        let sha256 = match s["lfs"]["sha256"].as_str() {
            Some(h) if is_hex(h, 64) => Some(h.to_string()),
            Some(h) => {
                return Err(Error::Invalid(format!(
                    "{repo}: `{path}` has an invalid sha256 `{}` in the file list",
                    h.escape_debug()
                )))
            }
            None => None,
        };
        let size = s["lfs"]["size"]
            .as_u64()
            .or_else(|| s["size"].as_u64())
            .ok_or_else(|| {
                Error::Invalid(format!("{repo}: no size for `{path}` in the file list"))
            })?;
        let etag = match (&sha256, s["blobId"].as_str()) {
            (Some(h), _) => h.clone(),
            (None, Some(b)) if is_hex(b, 40) => b.to_string(),
            (None, b) => {
                return Err(Error::Invalid(format!(
                    "{repo}: `{path}` has no valid blob id (40 hex digits) in the file list: {}",
                    b.unwrap_or("none").escape_debug()
                )))
            }
        };
        files.push(RemoteFile {
            path: path.to_string(),
            size,
            sha256,
            etag,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let (gated, license) = search::gated_and_license(&v)
        .map_err(|e| Error::Invalid(format!("{repo}: the file list: {e}")))?;
    Ok(Listing {
        repo: repo.to_string(),
        commit,
        files,
        gated,
        license,
    })
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
fn link_snapshot(cache: &Path, snap: &Path, path: &str, etag: &str) -> Result<()> {
    let link = in_cache(cache, snap.join(path))?;
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

    /// The fuzzing corpus of listings (tests/corpus/listing) returns without a panic.
    #[test]
    fn listing_corpus_replays() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus/listing");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let data = std::fs::read(e.path()).unwrap();
            let outcome = std::panic::catch_unwind(|| fuzz::listing(&data));
            assert!(outcome.is_ok(), "{}: panicked", e.path().display());
            n += 1;
        }
        assert!(n > 0);
        let good = std::fs::read(dir.join("good")).unwrap();
        assert!(fuzz::listing(&good).is_ok());
    }

    /// The fuzzing corpus of search answers (tests/corpus/search) returns without a
    /// panic, and its good answer parses.
    #[test]
    fn search_corpus_replays() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus/search");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let data = std::fs::read(e.path()).unwrap();
            let outcome = std::panic::catch_unwind(|| fuzz::search(&data));
            assert!(outcome.is_ok(), "{}: panicked", e.path().display());
            n += 1;
        }
        assert!(n > 0);
        let good = std::fs::read(dir.join("good")).unwrap();
        assert!(fuzz::search(&good).is_ok());
    }

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

/// Entry points for fuzzing and for replaying its corpus in the tests.
#[doc(hidden)]
pub mod fuzz {
    /// A hub file listing, as `/api/models/{repo}/revision/{rev}?blobs=true` sends it.
    /// It is also read as a download plan (quantizations, split parts, projectors,
    /// the engine's files), and every choice the plan offers is looked up by name.
    pub fn listing(data: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
        let patterns = [glob::Pattern::new("*.json").expect("a valid pattern")];
        super::parse_listing("org/name", text, &patterns).map_err(|e| e.to_string())?;
        let listing = super::parse_listing("org/name", text, &[]).map_err(|e| e.to_string())?;
        let plan = super::plan::plan(&listing);
        let _ = plan.choices();
        for q in &plan.quants {
            let _ = plan.quant(&q.name);
        }
        let _ = plan.quant("Q4_K_M");
        let _ = plan.projector("");
        Ok(())
    }

    /// A search answer, as `/api/models?search=...` sends it.
    pub fn search(data: &[u8]) -> Result<(), String> {
        super::search::parse_search(data, 100).map(|_| ())
    }
}

//! A minimal HTTP/1.1 server on 127.0.0.1 that answers like the Hugging Face Hub for
//! the endpoints `unicorn pull` uses: the file list (`/api/models/{repo}/revision/
//! {rev}?blobs=true`) and `/{repo}/resolve/{rev}/{file}` with Range, ETag and
//! X-Repo-Commit. It can require a token (a gated repo), drop a connection part-way
//! through a file, and serve a corrupted byte. Every request is logged.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Clone, Default)]
pub struct Faults {
    /// Close the connection after this many body bytes, on the first full request of the file.
    pub drop_after: Option<(String, usize)>,
    /// Flip one byte of this file in every response.
    pub corrupt: Option<String>,
    /// Require `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Serve this body as the file list instead of the real one (a hostile hub).
    pub listing: Option<String>,
    /// Send this file one byte per this many milliseconds (a trickling server).
    pub trickle: Option<(String, u64)>,
    /// Send every file in pieces of this many bytes a millisecond (slow enough that a
    /// test can interrupt a download part-way).
    pub throttle: Option<usize>,
}

pub struct FakeHub {
    pub url: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Git's blob id: sha1 of "blob <size>\0" and the content, as the hub lists it.
pub fn git_blob_sha1(b: &[u8]) -> String {
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", b.len()).as_bytes());
    h.update(b);
    h.finalize().iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

impl FakeHub {
    /// Serves `files` (path → bytes; `.safetensors` ones as LFS files) of `repo`.
    pub fn start(repo: &str, files: Vec<(String, Vec<u8>)>, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Mutex::new((faults, HashMap::<String, usize>::new())));
        let files: Arc<HashMap<String, Vec<u8>>> = Arc::new(files.into_iter().collect());
        let repo = repo.to_string();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (files, repo, log, state) =
                    (files.clone(), repo.clone(), log2.clone(), state.clone());
                std::thread::spawn(move || serve(stream, &files, &repo, &log, &state));
            }
        });
        Self { url, log }
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn respond(s: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut h = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    let _ = s.write_all(h.as_bytes()).and_then(|_| s.write_all(body));
}

/// A response whose body goes out `n` bytes at a time, `every` apart.
fn slowly(
    s: &mut TcpStream,
    status: &str,
    headers: &[(String, String)],
    body: &[u8],
    n: usize,
    every: Duration,
) {
    let mut h = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    if s.write_all(h.as_bytes()).is_err() {
        return;
    }
    for piece in body.chunks(n.max(1)) {
        if s.write_all(piece).and_then(|_| s.flush()).is_err() {
            return;
        }
        std::thread::sleep(every);
    }
}

type State = Mutex<(Faults, HashMap<String, usize>)>;

fn serve(
    mut s: TcpStream,
    files: &HashMap<String, Vec<u8>>,
    repo: &str,
    log: &Mutex<Vec<String>>,
    state: &State,
) {
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range = headers.get("range").cloned();
    log.lock()
        .unwrap()
        .push(format!("{path} range={}", range.as_deref().unwrap_or("-")));
    let faults = state.lock().unwrap().0.clone();
    if let Some(t) = &faults.token {
        if headers.get("authorization") != Some(&format!("Bearer {t}")) {
            respond(
                &mut s,
                "401 Unauthorized",
                &[],
                b"{\"error\":\"Access to model is restricted.\"}",
            );
            return;
        }
    }
    let list_path = format!("/api/models/{repo}/revision/");
    let resolve_prefix = format!("/{repo}/resolve/");
    if let (true, Some(body)) = (path.starts_with(&list_path), &faults.listing) {
        respond(
            &mut s,
            "200 OK",
            &[("Content-Type".into(), "application/json".into())],
            body.as_bytes(),
        );
    } else if path.starts_with(&list_path) {
        let mut names: Vec<&String> = files.keys().collect();
        names.sort();
        let siblings: Vec<serde_json::Value> = names
            .iter()
            .map(|n| {
                let b = &files[*n];
                let mut v = serde_json::json!({"rfilename": n, "size": b.len(), "blobId": git_blob_sha1(b)});
                if n.ends_with(".safetensors") {
                    v["lfs"] = serde_json::json!({"sha256": sha256_hex(b), "size": b.len(), "pointerSize": 134});
                }
                v
            })
            .collect();
        let body = serde_json::json!({"id": repo, "sha": COMMIT, "siblings": siblings}).to_string();
        respond(
            &mut s,
            "200 OK",
            &[("Content-Type".into(), "application/json".into())],
            body.as_bytes(),
        );
    } else if let Some(rest) = path.strip_prefix(&resolve_prefix) {
        let file = rest.split_once('/').map(|(_, f)| f).unwrap_or("");
        let Some(orig) = files.get(file) else {
            respond(&mut s, "404 Not Found", &[], b"Entry not found");
            return;
        };
        let mut body = orig.clone();
        if faults.corrupt.as_deref() == Some(file) {
            let mid = body.len() / 2;
            body[mid] ^= 0x55;
        }
        let start: usize = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.trim_end_matches('-').parse().ok())
            .unwrap_or(0);
        let mut hs = vec![
            ("X-Repo-Commit".to_string(), COMMIT.to_string()),
            ("ETag".to_string(), format!("\"{}\"", sha256_hex(orig))),
        ];
        let status = if range.is_some() {
            hs.push((
                "Content-Range".into(),
                format!("bytes {start}-{}/{}", body.len() - 1, body.len()),
            ));
            "206 Partial Content"
        } else {
            "200 OK"
        };
        let part = &body[start.min(body.len())..];
        let mut st = state.lock().unwrap();
        let seen = {
            let c = st.1.entry(file.to_string()).or_insert(0);
            *c += 1;
            *c
        };
        let cut = match &st.0.drop_after {
            Some((f, n)) if f == file && seen == 1 => Some(*n),
            _ => None,
        };
        drop(st);
        match cut {
            Some(n) => {
                // Promise the whole body, send part of it, hang up.
                let mut h = format!(
                    "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
                    part.len()
                );
                for (k, v) in &hs {
                    h.push_str(&format!("{k}: {v}\r\n"));
                }
                h.push_str("\r\n");
                let _ = s
                    .write_all(h.as_bytes())
                    .and_then(|_| s.write_all(&part[..n]));
                let _ = s.flush();
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            None => match (&faults.trickle, faults.throttle) {
                (Some((f, ms)), _) if f == file => {
                    slowly(&mut s, status, &hs, part, 1, Duration::from_millis(*ms))
                }
                (_, Some(n)) => slowly(&mut s, status, &hs, part, n, Duration::from_millis(1)),
                _ => respond(&mut s, status, &hs, part),
            },
        }
    } else {
        respond(&mut s, "404 Not Found", &[], b"not found");
    }
}

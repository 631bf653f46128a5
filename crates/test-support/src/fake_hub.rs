//! A minimal HTTP/1.1 server on 127.0.0.1 that answers like the Hugging Face Hub for
//! the endpoints `unicorn pull` and `unicorn search` use: the search
//! (`/api/models?search=...&filter=...&sort=...&limit=...`), the file list
//! (`/api/models/{repo}/revision/{rev}?blobs=true`) and `/{repo}/resolve/{rev}/{file}`
//! with Range (`bytes=A-` and `bytes=A-B`), ETag and X-Repo-Commit. It serves one
//! repository or several ([`FakeRepo`]; [`demo_repos`] is a multi-quant GGUF
//! repository with split files, a safetensors one with duplicates and a gated one),
//! can require a token (a gated repo), drop a connection part-way through a file,
//! and serve a corrupted byte. Every request is logged.

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
    /// Serve this body as the search answer instead of the real one (a hostile hub).
    pub search: Option<String>,
    /// Answer every request with the whole file, ignoring `Range` (as some servers do).
    pub ignore_range: bool,
}

pub struct FakeHub {
    pub url: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// One repository the fake hub serves.
#[derive(Clone, Default)]
pub struct FakeRepo {
    /// `org/name`.
    pub id: String,
    /// Path → bytes. `.safetensors`, `.gguf`, `.bin` and `.pth` files are LFS files.
    pub files: Vec<(String, Vec<u8>)>,
    /// Gated: `auto` or `manual`, and the token that is let in.
    pub gated: Option<(&'static str, String)>,
    /// Tags (`license:mit`, ...).
    pub tags: Vec<String>,
    /// What the search reports.
    pub downloads: u64,
    pub likes: u64,
}

impl FakeRepo {
    pub fn new(id: &str, files: Vec<(String, Vec<u8>)>) -> Self {
        Self {
            id: id.to_string(),
            files,
            ..Default::default()
        }
    }
}

/// A served file, its hashes computed once.
struct Served {
    bytes: Vec<u8>,
    sha256: String,
    blob: String,
}

struct Repo {
    meta: FakeRepo,
    files: HashMap<String, Served>,
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
    /// Serves `files` (path → bytes; weight files as LFS files) of `repo`.
    pub fn start(repo: &str, files: Vec<(String, Vec<u8>)>, faults: Faults) -> Self {
        Self::start_repos(vec![FakeRepo::new(repo, files)], faults)
    }

    /// Serves `repos` on a free port.
    pub fn start_repos(repos: Vec<FakeRepo>, faults: Faults) -> Self {
        Self::start_on(repos, faults, 0)
    }

    /// Serves `repos` on 127.0.0.1:`port` (0: a free one).
    pub fn start_on(repos: Vec<FakeRepo>, faults: Faults, port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Mutex::new((faults, HashMap::<String, usize>::new())));
        let repos: Arc<Vec<Repo>> = Arc::new(
            repos
                .into_iter()
                .map(|r| Repo {
                    files: r
                        .files
                        .iter()
                        .map(|(n, b)| {
                            (
                                n.clone(),
                                Served {
                                    sha256: sha256_hex(b),
                                    blob: git_blob_sha1(b),
                                    bytes: b.clone(),
                                },
                            )
                        })
                        .collect(),
                    meta: r,
                })
                .collect(),
        );
        let log2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (repos, log, state) = (repos.clone(), log2.clone(), state.clone());
                std::thread::spawn(move || serve(stream, &repos, &log, &state));
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

/// Whether the hub stores `path` with Git LFS (and lists its sha256).
fn is_lfs(path: &str) -> bool {
    [".safetensors", ".gguf", ".bin", ".pth", ".onnx"]
        .iter()
        .any(|x| path.ends_with(x))
}

/// `%41+b` → `A b`: a query value as a browser or ureq encodes it.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && s.is_char_boundary(i + 3) => {
                match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(x) => {
                        out.push(x);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            x => out.push(x),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The search answer: repositories whose id contains the query (any case), holding
/// the filter's format, sorted highest first, at most `limit`.
fn search(repos: &[Repo], query: &str) -> String {
    let q: HashMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    let text = q
        .get("search")
        .map(|s| s.to_lowercase())
        .unwrap_or_default();
    let ext = match q.get("filter").map(String::as_str) {
        Some("gguf") => Some(".gguf"),
        Some("safetensors") => Some(".safetensors"),
        _ => None,
    };
    let mut hits: Vec<&Repo> = repos
        .iter()
        .filter(|r| r.meta.id.to_lowercase().contains(&text))
        .filter(|r| ext.is_none_or(|x| r.files.keys().any(|f| f.ends_with(x))))
        .collect();
    let key = |r: &Repo| match q.get("sort").map(String::as_str) {
        Some("likes") => r.meta.likes,
        Some("trendingScore") => r.meta.likes + r.meta.downloads / 10,
        _ => r.meta.downloads,
    };
    hits.sort_by_key(|r| std::cmp::Reverse(key(r)));
    let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(30);
    let list: Vec<serde_json::Value> = hits
        .iter()
        .take(limit)
        .map(|r| {
            let gguf = r.files.keys().any(|f| f.ends_with(".gguf"));
            serde_json::json!({
                "_id": format!("{:024x}", r.meta.downloads),
                "id": r.meta.id,
                "downloads": r.meta.downloads,
                "likes": r.meta.likes,
                "gated": r.meta.gated.as_ref().map_or(serde_json::json!(false), |g| serde_json::json!(g.0)),
                "tags": r.meta.tags,
                "pipeline_tag": "text-generation",
                "library_name": if gguf { "gguf" } else { "transformers" },
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// (start, end inclusive) of `bytes=A-` or `bytes=A-B` over `len` bytes.
fn range(header: &str, len: usize) -> Option<(usize, usize)> {
    let (a, b) = header.strip_prefix("bytes=")?.split_once('-')?;
    let start: usize = a.parse().ok()?;
    let end = match b {
        "" => len.checked_sub(1)?,
        b => b.parse::<usize>().ok()?.min(len.checked_sub(1)?),
    };
    (start <= end).then_some((start, end))
}

fn serve(mut s: TcpStream, repos: &[Repo], log: &Mutex<Vec<String>>, state: &State) {
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
    let range_header = headers.get("range").cloned();
    log.lock().unwrap().push(format!(
        "{path} range={}",
        range_header.as_deref().unwrap_or("-")
    ));
    let faults = state.lock().unwrap().0.clone();
    let json = [("Content-Type".to_string(), "application/json".to_string())];
    let (route, query) = path.split_once('?').unwrap_or((&path, ""));
    let authorized = |token: &str| headers.get("authorization") == Some(&format!("Bearer {token}"));
    let denied = |s: &mut TcpStream| {
        respond(
            s,
            "401 Unauthorized",
            &[],
            b"{\"error\":\"Access to model is restricted.\"}",
        )
    };
    if faults.token.as_deref().is_some_and(|t| !authorized(t)) {
        denied(&mut s);
        return;
    }
    if route == "/api/models" {
        let body = faults
            .search
            .clone()
            .unwrap_or_else(|| search(repos, query));
        respond(&mut s, "200 OK", &json, body.as_bytes());
        return;
    }
    let repo = repos.iter().find(|r| {
        route.starts_with(&format!("/api/models/{}/revision/", r.meta.id))
            || route.starts_with(&format!("/{}/resolve/", r.meta.id))
    });
    let Some(repo) = repo else {
        respond(&mut s, "404 Not Found", &[], b"not found");
        return;
    };
    if let Some((_, token)) = &repo.meta.gated {
        if !authorized(token) {
            denied(&mut s);
            return;
        }
    }
    let id = &repo.meta.id;
    let resolve_prefix = format!("/{id}/resolve/");
    if route.starts_with("/api/models/") {
        if let Some(body) = &faults.listing {
            respond(&mut s, "200 OK", &json, body.as_bytes());
            return;
        }
        let mut names: Vec<&String> = repo.files.keys().collect();
        names.sort();
        let siblings: Vec<serde_json::Value> = names
            .iter()
            .map(|n| {
                let f = &repo.files[*n];
                let mut v = serde_json::json!({"rfilename": n, "size": f.bytes.len(), "blobId": f.blob});
                if is_lfs(n) {
                    v["lfs"] = serde_json::json!({"sha256": f.sha256, "size": f.bytes.len(), "pointerSize": 134});
                }
                v
            })
            .collect();
        let gated = repo
            .meta
            .gated
            .as_ref()
            .map_or(serde_json::json!(false), |g| serde_json::json!(g.0));
        let body = serde_json::json!({"id": id, "sha": COMMIT, "siblings": siblings,
            "gated": gated, "tags": repo.meta.tags})
        .to_string();
        respond(&mut s, "200 OK", &json, body.as_bytes());
    } else if let Some(rest) = route.strip_prefix(&resolve_prefix) {
        let file = rest.split_once('/').map(|(_, f)| f).unwrap_or("");
        let Some(served) = repo.files.get(file) else {
            respond(&mut s, "404 Not Found", &[], b"Entry not found");
            return;
        };
        let orig = &served.bytes;
        let mut body = orig.clone();
        if faults.corrupt.as_deref() == Some(file) {
            let mid = body.len() / 2;
            body[mid] ^= 0x55;
        }
        let mut hs = vec![
            ("X-Repo-Commit".to_string(), COMMIT.to_string()),
            ("ETag".to_string(), format!("\"{}\"", served.sha256)),
        ];
        let asked = range_header.as_deref().filter(|_| !faults.ignore_range);
        let (status, part) = match asked.map(|r| range(r, body.len())) {
            Some(Some((a, b))) => {
                hs.push((
                    "Content-Range".into(),
                    format!("bytes {a}-{b}/{}", body.len()),
                ));
                ("206 Partial Content", &body[a..=b])
            }
            Some(None) => {
                hs.push(("Content-Range".into(), format!("bytes */{}", body.len())));
                respond(&mut s, "416 Range Not Satisfiable", &hs, b"");
                return;
            }
            None => ("200 OK", &body[..]),
        };
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
                    .and_then(|_| s.write_all(&part[..n.min(part.len())]));
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

/// The shape of the GGUF models [`tiny_gguf`] writes: a llama with a 256-wide
/// hidden state (a whole k-quant super-block per row), so every GGML type the engine
/// reads can hold it.
const HIDDEN: usize = 256;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const LAYERS: usize = 2;
const FFN: usize = 512;
const VOCAB: usize = 512;
/// Bytes of text in each file's metadata, so the header outgrows a first 1 MiB range
/// request as a real vocabulary does.
pub const TINY_GGUF_PADDING: usize = 1_300_000;

/// A tiny llama GGUF with its tensors in `dtype` (norms in F32), deterministic,
/// in `parts` files as llama.cpp's `gguf-split` writes them (every part a GGUF of
/// its own with `split.*` keys; the metadata in the first).
pub fn tiny_gguf(dtype: candle_core::quantized::GgmlDType, parts: usize) -> Vec<Vec<u8>> {
    use candle_core::quantized::gguf_file::Value;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    let hd = HIDDEN / HEADS;
    let mut shapes: Vec<(String, Vec<usize>)> =
        vec![("token_embd.weight".into(), vec![VOCAB, HIDDEN])];
    for i in 0..LAYERS {
        let n = |s: &str| format!("blk.{i}.{s}");
        shapes.extend([
            (n("attn_norm.weight"), vec![HIDDEN]),
            (n("attn_q.weight"), vec![HEADS * hd, HIDDEN]),
            (n("attn_k.weight"), vec![KV_HEADS * hd, HIDDEN]),
            (n("attn_v.weight"), vec![KV_HEADS * hd, HIDDEN]),
            (n("attn_output.weight"), vec![HIDDEN, HEADS * hd]),
            (n("ffn_norm.weight"), vec![HIDDEN]),
            (n("ffn_gate.weight"), vec![FFN, HIDDEN]),
            (n("ffn_up.weight"), vec![FFN, HIDDEN]),
            (n("ffn_down.weight"), vec![HIDDEN, FFN]),
        ]);
    }
    shapes.push(("output_norm.weight".into(), vec![HIDDEN]));
    shapes.push(("output.weight".into(), vec![VOCAB, HIDDEN]));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let tensors: Vec<(String, QTensor)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let (values, t) = if shape.len() == 1 {
                (vec![1f32; n], GgmlDType::F32)
            } else {
                let v = (0..n)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
                    })
                    .collect();
                (v, dtype)
            };
            let t = QTensor::quantize(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap(), t)
                .unwrap();
            (name, t)
        })
        .collect();
    let u32v = |x: usize| Value::U32(x as u32);
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String("Tiny Llama".into())),
        (
            "general.description",
            Value::String("a tiny test model. ".repeat(TINY_GGUF_PADDING / 19)),
        ),
        ("llama.embedding_length", u32v(HIDDEN)),
        ("llama.attention.head_count", u32v(HEADS)),
        ("llama.attention.head_count_kv", u32v(KV_HEADS)),
        ("llama.block_count", u32v(LAYERS)),
        ("llama.feed_forward_length", u32v(FFN)),
        ("llama.context_length", u32v(2048)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
    ];
    let per = tensors.len().div_ceil(parts.max(1));
    let total = tensors.len();
    tensors
        .chunks(per)
        .enumerate()
        .map(|(i, chunk)| {
            let mut kv: Vec<(&str, Value)> = if i == 0 { meta.clone() } else { Vec::new() };
            if parts > 1 {
                kv.push(("split.no", Value::U16(i as u16)));
                kv.push(("split.count", Value::U16(parts as u16)));
                kv.push(("split.tensors.count", Value::I32(total as i32)));
            }
            let kv_refs: Vec<(&str, &Value)> = kv.iter().map(|(k, v)| (*k, v)).collect();
            let t_refs: Vec<(&str, &QTensor)> =
                chunk.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let mut out = std::io::Cursor::new(Vec::new());
            candle_core::quantized::gguf_file::write(&mut out, &kv_refs, &t_refs).unwrap();
            out.into_inner()
        })
        .collect()
}

/// The multi-quant GGUF repository of [`demo_repos`].
pub const GGUF_REPO: &str = "unicorn-test/Tiny-Llama-GGUF";
/// The safetensors repository with duplicates of [`demo_repos`].
pub const SAFETENSORS_REPO: &str = "unicorn-test/Tiny-Llama";
/// The gated repository of [`demo_repos`], and the token it lets in.
pub const GATED_REPO: &str = "unicorn-test/Gated-Llama-GGUF";
pub const GATED_TOKEN: &str = "hf_unicorn_test_token";

/// The repositories of a realistic hub: [`GGUF_REPO`] with quantizations Q4_0,
/// Q8_0, F16 and Q4_K_M in two parts, an incomplete Q6_K set (part 2 of 3 missing)
/// and a vision projector; [`SAFETENSORS_REPO`], the tiny llama with what real
/// repositories hold beside it (`original/`, `pytorch_model.bin`, ONNX, a README);
/// and [`GATED_REPO`], gated (`manual`), open to [`GATED_TOKEN`].
pub fn demo_repos() -> Vec<FakeRepo> {
    use candle_core::quantized::GgmlDType;
    let one = |t| tiny_gguf(t, 1).remove(0);
    let mut gguf: Vec<(String, Vec<u8>)> = vec![
        ("README.md".into(), b"# Tiny Llama GGUF\n".to_vec()),
        ("Tiny-Llama-Q4_0.gguf".into(), one(GgmlDType::Q4_0)),
        ("Tiny-Llama-Q8_0.gguf".into(), one(GgmlDType::Q8_0)),
        ("Tiny-Llama-F16.gguf".into(), one(GgmlDType::F16)),
    ];
    for (i, part) in tiny_gguf(GgmlDType::Q4K, 2).into_iter().enumerate() {
        gguf.push((
            format!("Tiny-Llama-Q4_K_M-{:05}-of-00002.gguf", i + 1),
            part,
        ));
    }
    let q6 = tiny_gguf(GgmlDType::Q6K, 3);
    gguf.push(("Tiny-Llama-Q6_K-00001-of-00003.gguf".into(), q6[0].clone()));
    gguf.push(("Tiny-Llama-Q6_K-00003-of-00003.gguf".into(), q6[2].clone()));
    // A projector is a GGUF of its own; its content does not matter here.
    gguf.push((
        "mmproj-Tiny-Llama-F16.gguf".into(),
        b"GGUF-projector".repeat(100),
    ));
    let tiny = crate::tiny("llama");
    let read = |n: &str| std::fs::read(tiny.join(n)).unwrap();
    let safetensors = vec![
        ("config.json".into(), read("config.json")),
        ("model.safetensors".into(), read("model.safetensors")),
        (
            "generation_config.json".into(),
            b"{\"do_sample\": false}".to_vec(),
        ),
        ("README.md".into(), b"# Tiny Llama\n".to_vec()),
        ("pytorch_model.bin".into(), vec![7u8; 200_000]),
        ("original/consolidated.00.pth".into(), vec![8u8; 200_000]),
        ("original/params.json".into(), b"{}".to_vec()),
        ("onnx/model.onnx".into(), vec![9u8; 100_000]),
    ];
    vec![
        FakeRepo {
            tags: vec!["gguf".into(), "llama".into(), "license:apache-2.0".into()],
            downloads: 12_345,
            likes: 67,
            ..FakeRepo::new(GGUF_REPO, gguf)
        },
        FakeRepo {
            tags: vec!["safetensors".into(), "llama".into(), "license:mit".into()],
            downloads: 2_000,
            likes: 300,
            ..FakeRepo::new(SAFETENSORS_REPO, safetensors)
        },
        FakeRepo {
            tags: vec!["gguf".into(), "license:llama3.2".into()],
            downloads: 500,
            likes: 5,
            gated: Some(("manual", GATED_TOKEN.into())),
            ..FakeRepo::new(
                GATED_REPO,
                vec![("Gated-Llama-Q8_0.gguf".into(), one(GgmlDType::Q8_0))],
            )
        },
    ]
}

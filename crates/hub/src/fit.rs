//! Whether each quantization of a GGUF repository fits this machine, before any of
//! it is downloaded: the header of each file (metadata and tensor list, the first
//! few MiB) is fetched with range requests and handed to the engine's own memory
//! estimate ([`unicorn_engine::memory::estimate_gguf`]: weights as the loader holds
//! them, the KV cache at the chosen context, activations and tokenizer). The largest
//! quantization that fits with [`HEADROOM`] to spare is the best fit.
//!
//! The hub's bytes are not trusted: a range answer longer than asked is cut, a
//! shorter one refused, the header grows by range requests only up to
//! [`MAX_HEADER`], and the engine checks it as it checks a whole file.

use crate::plan::{Plan, Quant};
use crate::{check_file_name, is_hex, is_repo_id, Error, Hub, Listing, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use unicorn_engine::attention::KvType;
use unicorn_engine::gguf::GgufFile;
use unicorn_engine::memory::MemoryEstimate;

/// The first range asked for: a header with a small vocabulary fits in it.
pub const FIRST_RANGE: u64 = 1 << 20;
/// The longest header fetched (Gemma 3's 262k-entry vocabulary takes ~6 MiB).
pub const MAX_HEADER: u64 = 64 << 20;
/// The share of available memory the best fit leaves free: the estimate is an
/// estimate, and the desktop keeps running beside the model.
pub const HEADROOM: f64 = 0.2;
/// Headers fetched at once.
const PARALLEL: usize = 4;

/// Fetched header prefixes by file URL, so a new context length re-estimates without
/// fetching again. Bounded: past [`HeaderCache::MAX_BYTES`] it starts over.
#[derive(Default)]
pub struct HeaderCache {
    entries: Mutex<Prefixes>,
}

/// Prefixes by URL, and their bytes in all.
type Prefixes = (HashMap<String, Arc<Vec<u8>>>, u64);

impl HeaderCache {
    /// Most bytes of prefixes kept.
    pub const MAX_BYTES: u64 = 256 << 20;

    fn get(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        self.entries.lock().ok()?.0.get(key).cloned()
    }

    fn put(&self, key: String, bytes: Arc<Vec<u8>>) {
        if let Ok(mut e) = self.entries.lock() {
            if e.1 + bytes.len() as u64 > Self::MAX_BYTES {
                *e = Default::default();
            }
            e.1 += bytes.len() as u64;
            e.0.insert(key, bytes);
        }
    }
}

/// How one quantization fits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantFit {
    /// The quantization ([`Quant::id`]).
    pub id: String,
    /// Weights in its tensors, from the header.
    pub parameters: Option<u64>,
    /// Bits per weight: measured from the header's tensors when it was read, else
    /// typical of the type its name says.
    pub bits_per_weight: Option<f64>,
    /// The engine's estimate at the chosen context.
    pub estimate: Option<MemoryEstimate>,
    /// Whether the estimate fits in the available memory.
    pub fits: Option<bool>,
    /// The largest that fits with [`HEADROOM`] to spare.
    pub best_fit: bool,
    /// Why there is no estimate (a header the engine cannot read, say).
    pub error: Option<String>,
}

impl Hub {
    /// The GGUF header of `path` of `listing`, from its first bytes fetched with
    /// range requests: [`FIRST_RANGE`], then twice as many each time, up to
    /// [`MAX_HEADER`].
    pub fn gguf_header(&self, listing: &Listing, path: &str) -> Result<GgufFile> {
        self.gguf_header_cached(listing, path, &HeaderCache::default())
    }

    fn gguf_header_cached(
        &self,
        listing: &Listing,
        path: &str,
        cache: &HeaderCache,
    ) -> Result<GgufFile> {
        let repo = &listing.repo;
        // A listing may come from anywhere (the app passes one back): check it again.
        if !is_repo_id(repo) || !is_hex(&listing.commit, 40) {
            return Err(Error::Invalid(format!(
                "`{}` at `{}`: not a repository id and commit",
                repo.escape_debug(),
                listing.commit.escape_debug()
            )));
        }
        check_file_name(repo, path)?;
        let f = listing
            .files
            .iter()
            .find(|f| f.path == path)
            .ok_or_else(|| Error::Invalid(format!("{repo}: no file `{path}` in the listing")))?;
        let name = format!("{repo}/{path}");
        let parse = |prefix: Vec<u8>| {
            GgufFile::from_prefix(Path::new(&name), prefix, f.size)
                .map_err(|e| Error::Invalid(e.to_string()))
        };
        let url = format!("{}/{repo}/resolve/{}/{path}", self.endpoint, listing.commit);
        if let Some(prefix) = cache.get(&url) {
            if let Some(g) = parse(prefix.to_vec())? {
                return Ok(g);
            }
        }
        if f.size == 0 {
            return Err(Error::Invalid(format!("{name}: the file is empty")));
        }
        // Each request brings only the bytes not yet here, so a header of H bytes
        // costs at most 2H of transfer.
        let mut prefix: Vec<u8> = Vec::new();
        let mut n = FIRST_RANGE.min(f.size);
        loop {
            let have = prefix.len() as u64;
            let resp = self
                .get(&url)
                .set("Range", &format!("bytes={have}-{}", n - 1))
                .call()
                .map_err(|e| self.http_error(repo, &format!("the header of {path}"), e))?;
            // A server that ignores the range sends the whole file from its start:
            // what is already here is skipped, only the bytes asked for are read, and
            // the connection is dropped.
            let skip = if resp.status() == 206 { 0 } else { have };
            let mut body = resp.into_reader();
            std::io::copy(&mut (&mut body).take(skip), &mut std::io::sink())
                .map_err(|e| Error::Invalid(format!("{name}: reading the header: {e}")))?;
            body.take(n - have)
                .read_to_end(&mut prefix)
                .map_err(|e| Error::Invalid(format!("{name}: reading the header: {e}")))?;
            if (prefix.len() as u64) < n {
                return Err(Error::Invalid(format!(
                    "{name}: the hub sent {} of the {n} header bytes asked for",
                    prefix.len()
                )));
            }
            match parse(prefix.clone())? {
                Some(g) => {
                    cache.put(url, Arc::new(prefix));
                    return Ok(g);
                }
                None if n < MAX_HEADER.min(f.size) => n = (n * 2).min(MAX_HEADER).min(f.size),
                None => {
                    return Err(Error::Invalid(format!(
                        "{name}: the header is longer than {} MiB; not read",
                        MAX_HEADER >> 20
                    )))
                }
            }
        }
    }
}

/// How each quantization of `plan` (from `listing`) fits in `available` bytes of
/// memory at `ctx` tokens of context, for a process that already holds
/// `baseline_bytes`; headers come from `cache` or the hub. The best fit is marked.
pub fn assess(
    hub: &Hub,
    listing: &Listing,
    plan: &Plan,
    ctx: usize,
    available: u64,
    baseline_bytes: u64,
    cache: &HeaderCache,
) -> Vec<QuantFit> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Mutex<Vec<Option<QuantFit>>> = Mutex::new(vec![None; plan.quants.len()]);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(plan.quants.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(q) = plan.quants.get(i) else {
                    break;
                };
                let fit = one(hub, listing, q, ctx, available, baseline_bytes, cache);
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(fit);
                }
            });
        }
    });
    let mut fits: Vec<QuantFit> = results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    let room = available as f64 * (1.0 - HEADROOM);
    let best = plan
        .quants
        .iter()
        .zip(&fits)
        .filter(|(_, f)| {
            f.estimate
                .as_ref()
                .is_some_and(|e| e.memory_estimate_bytes as f64 <= room)
        })
        .max_by_key(|(q, _)| q.size)
        .map(|(q, _)| q.id.clone());
    for f in &mut fits {
        f.best_fit = best.as_deref() == Some(f.id.as_str());
    }
    fits
}

/// [`assess`] of one quantization.
fn one(
    hub: &Hub,
    listing: &Listing,
    q: &Quant,
    ctx: usize,
    available: u64,
    baseline_bytes: u64,
    cache: &HeaderCache,
) -> QuantFit {
    let headers = q
        .files
        .iter()
        .map(|p| hub.gguf_header_cached(listing, p, cache))
        .collect::<Result<Vec<GgufFile>>>();
    let mut fit = QuantFit {
        id: q.id.clone(),
        parameters: None,
        bits_per_weight: q.bits_per_weight,
        estimate: None,
        fits: None,
        best_fit: false,
        error: None,
    };
    let headers = match headers {
        Ok(h) => h,
        Err(e) => {
            fit.error = Some(e.to_string());
            return fit;
        }
    };
    let (params, bytes) = headers.iter().flat_map(|g| g.tensor_infos()).fold(
        (0u64, 0u64),
        |(p, b), (_, t, shape)| {
            let n: u64 = shape.iter().map(|&d| d as u64).product();
            (p + n, b + n / t.block_size() as u64 * t.type_size() as u64)
        },
    );
    if params > 0 {
        fit.parameters = Some(params);
        fit.bits_per_weight = Some(bytes as f64 * 8.0 / params as f64);
    }
    match unicorn_engine::memory::estimate_gguf(headers, ctx, KvType::default(), baseline_bytes) {
        Ok(e) => {
            fit.fits = Some(e.memory_estimate_bytes <= available);
            fit.estimate = Some(e);
        }
        Err(e) => fit.error = Some(e.to_string()),
    }
    fit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan;
    use unicorn_test_support::fake_hub::{demo_repos, FakeHub, Faults, GGUF_REPO};

    fn hub(url: &str, tag: &str) -> Hub {
        Hub::at(
            url,
            std::env::temp_dir().join(format!("unicorn-fit-{tag}-{}", std::process::id())),
        )
    }

    /// Headers come by growing range requests, the estimate is the engine's own on
    /// the whole file, and the best fit is the largest that fits with headroom.
    #[test]
    fn range_headers_give_the_engines_estimate_and_the_best_fit() {
        let server = FakeHub::start_repos(demo_repos(), Faults::default());
        let hub = hub(&server.url, "range");
        let listing = hub.list(GGUF_REPO, "main", &[]).unwrap();
        let p = plan::plan(&listing);
        let names: Vec<&str> = p.quants.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["Q4_0", "Q4_K_M", "Q8_0", "F16"]);
        assert!(p.notes.iter().any(|n| n.contains("Q6_K")), "{:?}", p.notes);

        let cache = HeaderCache::default();
        let fits = assess(&hub, &listing, &p, 1024, u64::MAX / 4, 0, &cache);
        let ranges: Vec<String> = server
            .requests()
            .into_iter()
            .filter(|r| r.contains("Q8_0"))
            .collect();
        // The header (1.3 MB of metadata) outgrows the first 1 MiB range.
        assert_eq!(
            ranges,
            [
                format!(
                    "/{GGUF_REPO}/resolve/{}/Tiny-Llama-Q8_0.gguf range=bytes=0-1048575",
                    listing.commit
                ),
                // Then only the next bytes, up to twice as many.
                format!(
                    "/{GGUF_REPO}/resolve/{}/Tiny-Llama-Q8_0.gguf range=bytes=1048576-2097151",
                    listing.commit
                ),
            ]
        );
        for f in &fits {
            assert!(f.error.is_none(), "{}: {:?}", f.id, f.error);
            assert_eq!(f.fits, Some(true));
        }
        let f16 = &fits[3];
        assert!(f16.best_fit && fits.iter().filter(|f| f.best_fit).count() == 1);
        // Measured bits per weight: Q8_0 is 8.5 bits, F16 16 (norms in F32 add a little).
        let bpw = |i: usize| fits[i].bits_per_weight.unwrap();
        assert!(
            (8.5..8.6).contains(&bpw(2)) && (16.0..16.1).contains(&bpw(3)),
            "{fits:?}"
        );
        assert_eq!(fits[0].parameters, fits[3].parameters);

        // The estimate from the header is the engine's estimate of the whole file.
        let q8 = &p.quants[2];
        let whole = hub
            .pull(&listing.only(&q8.files).unwrap(), "main", &mut |_| true)
            .unwrap();
        let src = unicorn_engine::source::Source::open(&whole.join(&q8.files[0])).unwrap();
        let full = unicorn_engine::memory::estimate(&src, 1024, KvType::default(), 0).unwrap();
        let from_header = fits[2].estimate.as_ref().unwrap();
        assert_eq!(
            from_header.memory_estimate_bytes,
            full.memory_estimate_bytes
        );
        assert_eq!(from_header.kv_cache_bytes, full.kv_cache_bytes);

        // The split set's parts add up: the same model as Q4_0's, in other types.
        let split = &fits[1];
        assert!(split.estimate.as_ref().unwrap().weights_bytes > 0);
        assert_eq!(split.parameters, fits[0].parameters);

        // With less memory the best fit is the largest under 80 % of it; the cache
        // answers without a request.
        let need = |i: usize| fits[i].estimate.as_ref().unwrap().memory_estimate_bytes;
        let before = server.requests().len();
        let available = (need(2) as f64 / (1.0 - HEADROOM)) as u64 + 1;
        let fits = assess(&hub, &listing, &p, 1024, available, 0, &cache);
        assert_eq!(
            server.requests().len(),
            before,
            "headers come from the cache"
        );
        assert!(fits[2].best_fit, "{fits:?}");
        assert_eq!(fits[3].fits, Some(need(3) <= available));
        let fits = assess(&hub, &listing, &p, 1024, 1000, 0, &cache);
        assert!(fits.iter().all(|f| !f.best_fit && f.fits == Some(false)));
        std::fs::remove_dir_all(&hub.cache).ok();
    }

    /// A prefix shorter than the header asks for more; one that holds it reads;
    /// a bad header is an error however short the prefix.
    #[test]
    fn prefixes_read_once_they_hold_the_header() {
        use candle_core::quantized::GgmlDType;
        let file = unicorn_test_support::fake_hub::tiny_gguf(GgmlDType::Q8_0, 1).remove(0);
        let len = file.len() as u64;
        let name = Path::new("t.gguf");
        let whole = GgufFile::from_bytes(name, file.clone()).unwrap();
        let header = whole.header_bytes() as usize;
        assert!(
            header > FIRST_RANGE as usize,
            "the test header outgrows the first range"
        );
        for n in [0, 3, 4, 24, 1000, FIRST_RANGE as usize, header - 64] {
            let got = GgufFile::from_prefix(name, file[..n].to_vec(), len).unwrap();
            assert!(got.is_none(), "prefix {n}");
        }
        let g = GgufFile::from_prefix(name, file[..header].to_vec(), len)
            .unwrap()
            .expect("the header");
        assert_eq!(g.tensor_infos(), whole.tensor_infos());
        let mut bad = file[..100].to_vec();
        bad[0] = b'X';
        assert!(GgufFile::from_prefix(name, bad, len).is_err());
        // A file shorter than its tensors say is refused, not fetched further.
        assert!(GgufFile::from_prefix(name, file[..header].to_vec(), header as u64 + 10).is_err());
    }

    /// A server that ignores ranges sends whole files: the header is still read
    /// from their first bytes, and the same as through ranges.
    #[test]
    fn a_server_without_ranges_still_gives_the_header() {
        let faults = Faults {
            ignore_range: true,
            ..Default::default()
        };
        let server = FakeHub::start_repos(demo_repos(), faults);
        let hub = hub(&server.url, "no-range");
        let listing = hub.list(GGUF_REPO, "main", &[]).unwrap();
        let g = hub.gguf_header(&listing, "Tiny-Llama-F16.gguf").unwrap();
        let server2 = FakeHub::start_repos(demo_repos(), Faults::default());
        let hub2 = self::hub(&server2.url, "ranges");
        let listing2 = hub2.list(GGUF_REPO, "main", &[]).unwrap();
        let g2 = hub2.gguf_header(&listing2, "Tiny-Llama-F16.gguf").unwrap();
        assert_eq!(g.tensor_infos(), g2.tensor_infos());
        assert_eq!(g.header_bytes(), g2.header_bytes());
    }

    /// A hub that answers a range request with junk, too little, or a header that
    /// never ends is refused with the file's name, never a panic or an endless fetch.
    #[test]
    fn hostile_headers_are_refused_with_the_reason() {
        let junk = vec![0x55u8; 3 << 20];
        let mut endless = b"GGUF".to_vec();
        endless.extend(3u32.to_le_bytes());
        endless.extend(0u64.to_le_bytes());
        endless.extend(1u64.to_le_bytes());
        // One metadata key whose name is 200 MB long: the header "goes on" past the cap.
        endless.extend(200_000_000u64.to_le_bytes());
        endless.resize(300 << 20 >> 2, b'k');
        let server = FakeHub::start(
            "org/bad-GGUF",
            vec![
                ("junk-Q4_0.gguf".into(), junk),
                ("endless-Q8_0.gguf".into(), endless),
                ("empty-F16.gguf".into(), Vec::new()),
            ],
            Faults::default(),
        );
        let hub = hub(&server.url, "hostile");
        let listing = hub.list("org/bad-GGUF", "main", &[]).unwrap();
        let err = |hub: &Hub, l: &Listing, path: &str| match hub.gguf_header(l, path) {
            Ok(_) => panic!("{path}: read"),
            Err(e) => e.to_string(),
        };
        let e = err(&hub, &listing, "junk-Q4_0.gguf");
        assert!(
            e.contains("org/bad-GGUF/junk-Q4_0.gguf") && e.contains("not a GGUF"),
            "{e}"
        );
        let e = err(&hub, &listing, "empty-F16.gguf");
        assert!(e.contains("empty"), "{e}");
        let e = err(&hub, &listing, "endless-Q8_0.gguf");
        assert!(e.contains("endless-Q8_0.gguf"), "{e}");
        let e = err(&hub, &listing, "nope.gguf");
        assert!(e.contains("no file"), "{e}");
        let p = plan::plan(&listing);
        let fits = assess(
            &hub,
            &listing,
            &p,
            512,
            u64::MAX,
            0,
            &HeaderCache::default(),
        );
        assert!(
            fits.iter().all(|f| f.error.is_some() && !f.best_fit),
            "{fits:?}"
        );
    }
}

//! `unicorn pull` and `unicorn search` against a fake hub on 127.0.0.1 (nothing
//! reaches the network): listing with sizes, downloads into the standard HF cache
//! layout, resume after a dropped connection and across runs, the checksum catching
//! a corrupted byte, gated repositories with and without a token, MODEL arguments
//! naming a cached repo, search and its hostile answers, choosing one quantization
//! of a multi-quant GGUF repository (and only its files arriving), and the files the
//! engine reads of a safetensors repository.

use std::path::{Path, PathBuf};
use unicorn_test_support::cli::*;
use unicorn_test_support::fake_hub::*;
use unicorn_test_support::*;

const REPO: &str = "unicorn-test/tiny-llama";

fn tiny_files() -> Vec<(String, Vec<u8>)> {
    let dir = golden_path("tiny/llama");
    vec![
        (
            "config.json".into(),
            std::fs::read(dir.join("config.json")).unwrap(),
        ),
        (
            "model.safetensors".into(),
            std::fs::read(dir.join("model.safetensors")).unwrap(),
        ),
        ("README.md".into(), b"# tiny llama\n".to_vec()),
    ]
}

fn home(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unicorn-hub-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pull(
    hub: &FakeHub,
    hf_home: &Path,
    extra: &[&str],
    token: Option<&str>,
) -> std::process::Output {
    let h = hf_home.display().to_string();
    let mut args = vec!["pull", REPO, "--json"];
    args.extend_from_slice(extra);
    let mut env = vec![
        ("HF_ENDPOINT", hub.url.as_str()),
        ("HF_HOME", h.as_str()),
        ("UNICORN_DATA_DIR", h.as_str()),
    ];
    if let Some(t) = token {
        env.push(("HF_TOKEN", t));
    }
    run_env(&args, None, &env)
}

fn repo_dir(hf_home: &Path) -> PathBuf {
    hf_home.join("hub/models--unicorn-test--tiny-llama")
}

#[test]
fn pull_lists_files_resumes_a_dropped_connection_and_fills_the_hf_cache() {
    let files = tiny_files();
    let st = files[1].1.clone();
    let hub = FakeHub::start(
        REPO,
        files.clone(),
        Faults {
            drop_after: Some(("model.safetensors".into(), 300_000)),
            ..Default::default()
        },
    );
    let hf_home = home("resume");
    let out = pull(&hub, &hf_home, &[], None);
    assert_ok(&out);
    let lines = json_lines(&out);
    // The listing comes first, with sizes.
    assert_eq!(lines[0]["event"], "listing");
    let listed: Vec<(String, u64)> = lines[0]["listing"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(listed.contains(&("model.safetensors".to_string(), st.len() as u64)));
    assert_eq!(lines.last().unwrap()["event"], "done");
    let progress: Vec<_> = lines.iter().filter(|l| l["event"] == "progress").collect();
    assert!(
        !progress.is_empty()
            && progress
                .iter()
                .all(|p| p["progress"]["total"].as_u64().is_some())
    );
    // The dropped transfer was resumed with a Range request from where it stopped.
    let reqs = hub.requests();
    assert!(
        reqs.iter().any(|r| r.contains("resolve")
            && r.contains("model.safetensors")
            && r.ends_with("range=bytes=300000-")),
        "{reqs:#?}"
    );
    // Standard HF cache layout: refs/main, snapshot links into blobs named by etag.
    let dir = repo_dir(&hf_home);
    assert_eq!(
        std::fs::read_to_string(dir.join("refs/main")).unwrap(),
        COMMIT
    );
    let snap = dir.join("snapshots").join(COMMIT);
    // Of a safetensors repository, only what the engine reads: no README.
    assert!(!snap.join("README.md").exists());
    for (name, bytes) in files.iter().filter(|f| f.0 != "README.md") {
        let link = snap.join(name);
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{name}"
        );
        assert_eq!(&std::fs::read(&link).unwrap(), bytes, "{name}");
    }
    assert!(dir.join("blobs").join(sha256_hex(&st)).is_file());
    // The library lists it (the pull recorded it; `list` also scans the cache).
    let h = hf_home.display().to_string();
    let out = run_env(
        &["list", "--json"],
        None,
        &[("HF_HOME", h.as_str()), ("UNICORN_DATA_DIR", h.as_str())],
    );
    assert_ok(&out);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let e = list
        .iter()
        .find(|e| e["repo"] == REPO)
        .unwrap_or_else(|| panic!("{list:#?}"));
    assert_eq!(
        (
            e["source"].as_str(),
            e["architecture"].as_str(),
            e["format"].as_str()
        ),
        (Some("hub"), Some("llama"), Some("safetensors"))
    );
    // A second pull downloads nothing.
    let before = hub.requests().len();
    assert_ok(&pull(&hub, &hf_home, &[], None));
    assert_eq!(
        hub.requests()
            .iter()
            .skip(before)
            .filter(|r| r.contains("resolve"))
            .count(),
        0
    );
    // The repo id is now a MODEL argument.
    let (input, want) = tiny_greedy("llama");
    let h = hf_home.display().to_string();
    assert_eq!(
        generate_ids(REPO, &input, 16, &[("HF_HOME", h.as_str())]),
        want
    );
    std::fs::remove_dir_all(&hf_home).ok();
}

#[test]
fn an_interrupted_file_resumes_on_the_next_pull_and_include_filters() {
    let files = tiny_files();
    let st = files[1].1.clone();
    let hub = FakeHub::start(REPO, files, Faults::default());
    let hf_home = home("partial");
    // Only the JSON files.
    let out = pull(&hub, &hf_home, &["--include", "*.json"], None);
    assert_ok(&out);
    let snap = repo_dir(&hf_home).join("snapshots").join(COMMIT);
    assert!(snap.join("config.json").exists() && !snap.join("model.safetensors").exists());
    // Half a file left by an interrupted pull.
    let blobs = repo_dir(&hf_home).join("blobs");
    let half = st.len() / 2;
    std::fs::write(
        blobs.join(format!("{}.incomplete", sha256_hex(&st))),
        &st[..half],
    )
    .unwrap();
    assert_ok(&pull(&hub, &hf_home, &[], None));
    let want = format!("range=bytes={half}-");
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.contains("model.safetensors") && r.ends_with(&want)));
    assert_eq!(std::fs::read(snap.join("model.safetensors")).unwrap(), st);
    std::fs::remove_dir_all(&hf_home).ok();
}

/// A small (non-LFS) file is checked against its git blob id.
#[test]
fn a_corrupted_small_file_fails_its_git_blob_id() {
    let hub = FakeHub::start(
        REPO,
        tiny_files(),
        Faults {
            corrupt: Some("config.json".into()),
            ..Default::default()
        },
    );
    let hf_home = home("corrupt-small");
    let out = pull(&hub, &hf_home, &["--include", "*.json"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.json") && err.contains("git blob sha1"),
        "{err}"
    );
    std::fs::remove_dir_all(&hf_home).ok();
}

#[test]
fn a_corrupted_byte_fails_the_checksum_and_leaves_nothing() {
    let hub = FakeHub::start(
        REPO,
        tiny_files(),
        Faults {
            corrupt: Some("model.safetensors".into()),
            ..Default::default()
        },
    );
    let hf_home = home("corrupt");
    let out = pull(&hub, &hf_home, &[], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model.safetensors") && err.contains("checksum"),
        "{err}"
    );
    let blobs: Vec<_> = std::fs::read_dir(repo_dir(&hf_home).join("blobs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    let st_sha = sha256_hex(&tiny_files()[1].1);
    assert!(!blobs.iter().any(|b| b.starts_with(&st_sha)), "{blobs:?}");
    assert!(!repo_dir(&hf_home)
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors")
        .exists());
    std::fs::remove_dir_all(&hf_home).ok();
}

#[test]
fn gated_repos_explain_the_licence_and_accept_a_token() {
    let hub = FakeHub::start(
        REPO,
        tiny_files(),
        Faults {
            token: Some("hf_secret".into()),
            ..Default::default()
        },
    );
    let hf_home = home("gated");
    let out = pull(&hub, &hf_home, &[], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("licence") && err.contains("HF_TOKEN") && err.contains(REPO),
        "{err}"
    );
    let out = pull(&hub, &hf_home, &[], Some("wrong"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"));
    assert_ok(&pull(&hub, &hf_home, &[], Some("hf_secret")));
    // The token file under HF_HOME works too.
    let other = home("gated-file");
    std::fs::write(other.join("token"), "hf_secret\n").unwrap();
    assert_ok(&pull(&hub, &other, &[], None));
    std::fs::remove_dir_all(&hf_home).ok();
    std::fs::remove_dir_all(&other).ok();
}

/// Every file under `dir` with its size, modification time and link target.
fn tree(dir: &Path) -> Vec<(PathBuf, u64, Option<PathBuf>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), m.len(), std::fs::read_link(e.path()).ok()));
        }
    }
    out.sort();
    out
}

/// A hub that answers with hostile listings (paths in the commit id, hashes and
/// blob ids, file names that climb out, a revision that does): each pull is refused
/// with the reason, and nothing outside the cache is written, replaced or linked.
#[test]
fn hostile_listings_cannot_write_outside_the_cache() {
    let work = home("hostile");
    // What the user has beside the cache.
    let victim = work.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("x"), b"mine").unwrap();
    std::fs::write(victim.join("y"), b"mine too").unwrap();
    let hf_home = work.join("hf");
    let cache = hf_home.join("hub");
    let sibling = |name: &str, extra: serde_json::Value| {
        let mut v = serde_json::json!({"rfilename": name, "size": 13,
            "blobId": "0123456789abcdef0123456789abcdef01234567"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let listing = |sha: &str, siblings: Vec<serde_json::Value>| {
        serde_json::json!({"id": REPO, "sha": sha, "siblings": siblings}).to_string()
    };
    let climb = "../../../victim/x";
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (
            listing(climb, vec![sibling("README.md", serde_json::json!({}))]),
            vec![],
            "commit id",
        ),
        (
            listing(
                COMMIT,
                vec![sibling(
                    "model.safetensors",
                    serde_json::json!({"lfs": {"sha256": "../../../victim/y", "size": 13}}),
                )],
            ),
            vec![],
            "sha256",
        ),
        (
            listing(
                COMMIT,
                vec![sibling(
                    "README.md",
                    serde_json::json!({"blobId": "/etc/hostname"}),
                )],
            ),
            vec![],
            "blob id",
        ),
        (
            listing(COMMIT, vec![sibling(climb, serde_json::json!({}))]),
            vec![],
            "unsafe file name",
        ),
        (
            listing(COMMIT, vec![sibling("/etc/passwd", serde_json::json!({}))]),
            vec![],
            "unsafe file name",
        ),
        (
            listing(COMMIT, vec![sibling("a\\..\\b", serde_json::json!({}))]),
            vec![],
            "unsafe file name",
        ),
        (
            listing(
                COMMIT,
                vec![sibling("README.md", serde_json::json!({"size": "13"}))],
            ),
            vec![],
            "no size",
        ),
        ("{\"sha\": 1}".into(), vec![], "commit id"),
        ("not json".into(), vec![], "not JSON"),
        (
            listing(COMMIT, vec![sibling("README.md", serde_json::json!({}))]),
            vec!["--revision", "../../../victim/z"],
            "revision",
        ),
    ];
    for (body, extra, want) in cases {
        let hub = FakeHub::start(
            REPO,
            tiny_files(),
            Faults {
                listing: Some(body.clone()),
                ..Default::default()
            },
        );
        let before: Vec<_> = tree(&work)
            .into_iter()
            .filter(|(p, _, _)| !p.starts_with(&cache))
            .collect();
        let out = pull(&hub, &hf_home, &extra, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{body}: {err}");
        assert!(err.contains(want), "{body}: wanted `{want}` in {err}");
        let after: Vec<_> = tree(&work)
            .into_iter()
            .filter(|(p, _, _)| !p.starts_with(&cache))
            .collect();
        assert_eq!(after, before, "{body}: something outside the cache changed");
        // Nothing inside the cache points outside it.
        for (p, _, link) in tree(&cache) {
            if let Some(target) = link {
                let real = p.parent().unwrap().join(&target);
                let real = std::fs::canonicalize(&real).unwrap_or(real);
                assert!(
                    real.starts_with(&cache),
                    "{} -> {}",
                    p.display(),
                    target.display()
                );
            }
        }
    }
    assert_eq!(std::fs::read(victim.join("x")).unwrap(), b"mine");
    assert_eq!(std::fs::read(victim.join("y")).unwrap(), b"mine too");
    std::fs::remove_dir_all(&work).ok();
}

/// A server that trickles a byte at a time is a stalled transfer: retried, said so
/// in the progress, then a clear error in bounded time; the partial file stays for
/// the next pull.
#[test]
fn a_trickling_server_is_a_stall_not_a_hang() {
    let hub = FakeHub::start(
        REPO,
        tiny_files(),
        Faults {
            trickle: Some(("model.safetensors".into(), 50)),
            ..Default::default()
        },
    );
    let hf_home = home("stall");
    let t0 = std::time::Instant::now();
    let h = hf_home.display().to_string();
    let out = run_env(
        &["pull", REPO, "--json", "--stall-timeout", "1"],
        None,
        &[
            ("HF_ENDPOINT", hub.url.as_str()),
            ("HF_HOME", h.as_str()),
            ("UNICORN_DATA_DIR", h.as_str()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stalled") && err.contains("model.safetensors"),
        "{err}"
    );
    assert!(t0.elapsed().as_secs() < 30, "{:?}", t0.elapsed());
    let retried = json_lines(&out).iter().any(|l| {
        l["event"] == "progress" && l["progress"]["item"].as_str().unwrap().contains("retry")
    });
    assert!(retried, "the retries show in the progress");
    std::fs::remove_dir_all(&hf_home).ok();
}

fn demo_env<'a>(hub: &'a FakeHub, h: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("HF_ENDPOINT", hub.url.as_str()),
        ("HF_HOME", h),
        ("UNICORN_DATA_DIR", h),
    ]
}

/// Every file under the cache's `blobs/` for `repo` (`org--name`).
fn blobs(hf_home: &Path, folder: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(hf_home.join("hub").join(folder).join("blobs"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn search_lists_models_and_refuses_hostile_answers() {
    let hub = FakeHub::start_repos(demo_repos(), Faults::default());
    let hf_home = home("search");
    let h = hf_home.display().to_string();
    let out = run_env(
        &["search", "tiny", "--gguf", "--json"],
        None,
        &demo_env(&hub, &h),
    );
    assert_ok(&out);
    let lines = json_lines(&out);
    let ids: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "result")
        .map(|l| l["result"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [GGUF_REPO]);
    assert_eq!(lines[0]["result"]["license"], "apache-2.0");
    assert_eq!(lines[0]["result"]["downloads"], 12_345);
    assert_eq!(lines.last().unwrap()["event"], "done");
    // Sorted by likes; the gated one says so in words.
    let out = run_env(
        &["search", "llama", "--sort", "likes"],
        None,
        &demo_env(&hub, &h),
    );
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with(SAFETENSORS_REPO), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(GATED_REPO) && l.contains("gated")),
        "{text}"
    );
    let out = run_env(
        &["search", "x", "--sort", "name"],
        None,
        &demo_env(&hub, &h),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected downloads"));
    // Hostile answers: one line each, naming the problem.
    for (body, want) in [
        ("[".repeat(10) + "x", "not JSON"),
        (
            format!("[{}]", vec![r#"{"id":"a/b"}"#; 30].join(",")),
            "more than the 20",
        ),
        (r#"[{"id":"../x/y"}]"#.into(), "not a repository id"),
        (format!("\"{}\"", "x".repeat(5 << 20)), "larger than"),
        (
            r#"[{"id":"a/b","tags":["license:\u001b]0;pwned\u0007"]}]"#.into(),
            "not a short line",
        ),
    ] {
        let hub = FakeHub::start_repos(
            demo_repos(),
            Faults {
                search: Some(body.clone()),
                ..Default::default()
            },
        );
        let out = run_env(&["search", "llama"], None, &demo_env(&hub, &h));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "wanted `{want}` in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    std::fs::remove_dir_all(&hf_home).ok();
}

#[test]
fn a_multi_quant_repo_asks_which_and_pulls_only_that_quantization() {
    let hub = FakeHub::start_repos(demo_repos(), Faults::default());
    let hf_home = home("quant");
    let h = hf_home.display().to_string();
    let folder = "models--unicorn-test--Tiny-Llama-GGUF";
    // No --quant: the choices with size and fit, and an error naming them.
    let out = run_env(
        &["pull", GGUF_REPO, "--json", "--ctx", "512"],
        None,
        &demo_env(&hub, &h),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pick one with --quant: Q4_0, Q4_K_M, Q8_0, F16"),
        "{err}"
    );
    let lines = json_lines(&out);
    let notes: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "note")
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("Q6_K: part 2 of 3 missing")),
        "{notes:?}"
    );
    let plan = lines.iter().find(|l| l["event"] == "plan").unwrap();
    let fits = plan["fits"].as_array().unwrap();
    assert_eq!(fits.len(), 4);
    for f in fits {
        assert!(
            f["estimate"]["memory_estimate_bytes"].as_u64().unwrap() > 0,
            "{f}"
        );
        assert_eq!(f["estimate"]["ctx"], 512);
    }
    assert_eq!(fits.iter().filter(|f| f["best_fit"] == true).count(), 1);
    // Only header ranges were fetched (no request without a range): nothing is in
    // the cache.
    assert!(blobs(&hf_home, folder).is_empty());
    assert!(hub
        .requests()
        .iter()
        .filter(|r| r.contains("/resolve/"))
        .all(|r| !r.ends_with("range=-")));

    // --quant Q4_K_M --mmproj: its two parts and the projector, nothing else.
    let out = run_env(
        &["pull", GGUF_REPO, "--quant", "q4_k_m", "--mmproj", "--json"],
        None,
        &demo_env(&hub, &h),
    );
    assert_ok(&out);
    let snap = hf_home
        .join("hub")
        .join(folder)
        .join("snapshots")
        .join(COMMIT);
    let mut got: Vec<String> = std::fs::read_dir(&snap)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "Tiny-Llama-Q4_K_M-00001-of-00002.gguf",
            "Tiny-Llama-Q4_K_M-00002-of-00002.gguf",
            "mmproj-Tiny-Llama-F16.gguf"
        ]
    );
    assert_eq!(blobs(&hf_home, folder).len(), 3);
    let repo = demo_repos().remove(0);
    for name in &got {
        let want = &repo.files.iter().find(|f| &f.0 == name).unwrap().1;
        assert_eq!(&std::fs::read(snap.join(name)).unwrap(), want, "{name}");
    }
    // An unknown quantization names the choices.
    let out = run_env(
        &["pull", GGUF_REPO, "--quant", "Q2_K"],
        None,
        &demo_env(&hub, &h),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no quantization `Q2_K`") && err.contains("Q8_0"),
        "{err}"
    );

    // Q8_0 in a fresh cache: one file, in the library as Q8_0.
    let other = home("quant-q8");
    let o = other.display().to_string();
    assert_ok(&run_env(
        &["pull", GGUF_REPO, "--quant", "Q8_0"],
        None,
        &demo_env(&hub, &o),
    ));
    assert_eq!(blobs(&other, folder).len(), 1);
    let out = run_env(&["list", "--json"], None, &demo_env(&hub, &o));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let e = list.iter().find(|e| e["repo"] == GGUF_REPO).unwrap();
    assert_eq!(
        (e["quantization"].as_str(), e["format"].as_str()),
        (Some("Q8_0"), Some("gguf"))
    );
    std::fs::remove_dir_all(&hf_home).ok();
    std::fs::remove_dir_all(&other).ok();
}

#[test]
fn a_safetensors_repo_pulls_only_what_the_engine_reads() {
    let hub = FakeHub::start_repos(demo_repos(), Faults::default());
    let hf_home = home("engine-files");
    let h = hf_home.display().to_string();
    let out = run_env(
        &["pull", SAFETENSORS_REPO, "--json"],
        None,
        &demo_env(&hub, &h),
    );
    assert_ok(&out);
    let listed: Vec<String> = json_lines(&out)[0]["listing"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        ["config.json", "generation_config.json", "model.safetensors"]
    );
    assert_eq!(blobs(&hf_home, "models--unicorn-test--Tiny-Llama").len(), 3);
    // --all takes everything, duplicates included.
    assert_ok(&run_env(
        &["pull", SAFETENSORS_REPO, "--all"],
        None,
        &demo_env(&hub, &h),
    ));
    assert_eq!(blobs(&hf_home, "models--unicorn-test--Tiny-Llama").len(), 8);
    std::fs::remove_dir_all(&hf_home).ok();
}

#[test]
fn a_gated_quant_repo_is_refused_in_words_and_opens_to_its_token() {
    let hub = FakeHub::start_repos(demo_repos(), Faults::default());
    let hf_home = home("gated-quant");
    let h = hf_home.display().to_string();
    let out = run_env(
        &["pull", GATED_REPO, "--quant", "Q8_0"],
        None,
        &demo_env(&hub, &h),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(GATED_REPO) && err.contains("licence") && err.contains("HF_TOKEN"),
        "{err}"
    );
    let mut env = demo_env(&hub, &h);
    env.push(("HF_TOKEN", GATED_TOKEN));
    assert_ok(&run_env(
        &["pull", GATED_REPO, "--quant", "Q8_0"],
        None,
        &env,
    ));
    std::fs::remove_dir_all(&hf_home).ok();
}

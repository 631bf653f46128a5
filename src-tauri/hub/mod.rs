//! Download: searching the hub, a repository's choices (each GGUF quantization with
//! whether it fits this machine, from its header fetched with range requests; the
//! files the engine reads of a safetensors model) and its files, pulling the chosen
//! files into the HF cache as a job that pauses and resumes, discarding what a
//! paused pull left, and the token gated models need.

pub mod types;

use crate::error::{CommandError, CommandResult};
use crate::jobs::Job;
use crate::state::AppState;
use crate::to_channel;
use std::path::Path;
use tauri::ipc::Channel;
use tauri::State;
use types::{HubFile, HubFileSet, HubListing, HubPlan, HubQuant, HubSearchResult, PullEvent};
use unicorn_hub::fit::{assess, HeaderCache, QuantFit};
use unicorn_hub::plan::Quant;
use unicorn_hub::search::{Format, Sort};
use unicorn_hub::{Gated, Hub, Listing};
use unicorn_library::{source, Library};

/// Lists a hub repository's files with sizes, and what this machine has room for.
#[tauri::command]
pub async fn hub_list(repo: String, revision: Option<String>) -> CommandResult<HubListing> {
    let revision = revision.unwrap_or_else(|| "main".into());
    tauri::async_runtime::spawn_blocking(move || list_with(&Hub::from_env(), &repo, &revision))
        .await?
}

/// The listing of `repo` at `revision` from `hub`, with this machine's room.
pub(crate) fn list_with(hub: &Hub, repo: &str, revision: &str) -> CommandResult<HubListing> {
    let repo = repo.trim();
    if !unicorn_hub::is_repo_id(repo) {
        return Err(CommandError::Invalid(format!(
            "`{repo}`: give a repository id like google/gemma-3-1b-it"
        )));
    }
    unicorn_hub::check_revision(revision).map_err(|e| CommandError::Invalid(e.to_string()))?;
    let l = hub.list(repo, revision, &[])?;
    Ok(HubListing {
        repo: l.repo.clone(),
        commit: l.commit.clone(),
        total_bytes: l.files.iter().map(|f| f.size).sum(),
        weights_bytes: l.weight_bytes(),
        files: l
            .files
            .iter()
            .map(|f| HubFile {
                path: f.path.clone(),
                size: f.size,
            })
            .collect(),
        available_memory: unicorn_engine::stats::available_memory(),
        free_disk: unicorn_engine::stats::free_disk(&hub.cache),
    })
}

/// Searches the hub's models: `format` `any`, `gguf` or `safetensors`; `sort`
/// `downloads`, `trending` or `likes`; at most `limit` (default 30).
#[tauri::command]
pub async fn hub_search(
    query: String,
    format: Option<String>,
    sort: Option<String>,
    limit: Option<usize>,
) -> CommandResult<Vec<HubSearchResult>> {
    tauri::async_runtime::spawn_blocking(move || {
        search_with(
            &Hub::from_env(),
            &query,
            format.as_deref().unwrap_or("any"),
            sort.as_deref().unwrap_or("downloads"),
            limit.unwrap_or(30),
        )
    })
    .await?
}

/// [`hub_search`] on `hub`.
pub(crate) fn search_with(
    hub: &Hub,
    query: &str,
    format: &str,
    sort: &str,
    limit: usize,
) -> CommandResult<Vec<HubSearchResult>> {
    let invalid = |e: unicorn_hub::Error| CommandError::Invalid(e.to_string());
    let format = Format::parse(format).map_err(invalid)?;
    let sort = Sort::parse(sort).map_err(invalid)?;
    Ok(hub
        .search(query, format, sort, limit)?
        .into_iter()
        .map(|r| HubSearchResult {
            gated: gated(r.gated),
            id: r.id,
            downloads: r.downloads,
            likes: r.likes,
            license: r.license,
            pipeline: r.pipeline,
            library: r.library,
        })
        .collect())
}

fn gated(g: Gated) -> String {
    match g {
        Gated::No => "no",
        Gated::Auto => "auto",
        Gated::Manual => "manual",
    }
    .into()
}

/// Headers fetched for plans, so a new context length re-estimates without fetching.
fn header_cache() -> &'static HeaderCache {
    static CACHE: std::sync::OnceLock<HeaderCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(HeaderCache::default)
}

/// Context length a plan estimates for when none is given.
const DEFAULT_CTX: usize = 4096;

/// What a repository offers to download: each GGUF quantization with its size, bits
/// per weight and whether it fits at `ctx` tokens (the best fit marked), its vision
/// projectors, the files the engine reads of a safetensors model, and every file.
#[tauri::command]
pub async fn hub_plan(
    repo: String,
    revision: Option<String>,
    ctx: Option<usize>,
) -> CommandResult<HubPlan> {
    let revision = revision.unwrap_or_else(|| "main".into());
    tauri::async_runtime::spawn_blocking(move || {
        plan_with(
            &Hub::from_env(),
            &repo,
            &revision,
            ctx.unwrap_or(DEFAULT_CTX),
            unicorn_engine::stats::available_memory(),
        )
    })
    .await?
}

/// [`hub_plan`] on `hub`, for a machine with `available` bytes of memory.
pub(crate) fn plan_with(
    hub: &Hub,
    repo: &str,
    revision: &str,
    ctx: usize,
    available: u64,
) -> CommandResult<HubPlan> {
    let repo = repo.trim();
    if !unicorn_hub::is_repo_id(repo) {
        return Err(CommandError::Invalid(format!(
            "`{repo}`: give a repository id like google/gemma-3-1b-it"
        )));
    }
    if !(1..=1 << 20).contains(&ctx) {
        return Err(CommandError::Invalid(format!(
            "a context of {ctx} tokens (1 to 1048576)"
        )));
    }
    unicorn_hub::check_revision(revision).map_err(|e| CommandError::Invalid(e.to_string()))?;
    let listing = hub.list(repo, revision, &[])?;
    let p = unicorn_hub::plan::plan(&listing);
    let fits = assess(
        hub,
        &listing,
        &p,
        ctx,
        available,
        unicorn_engine::stats::rss_bytes(),
        header_cache(),
    );
    let quant = |q: &Quant, f: Option<&QuantFit>| HubQuant {
        id: q.id.clone(),
        name: q.name.clone(),
        files: q.files.clone(),
        size: q.size,
        bits_per_weight: f.map_or(q.bits_per_weight, |f| f.bits_per_weight),
        parameters: f.and_then(|f| f.parameters),
        memory_estimate: f.and_then(|f| f.estimate.as_ref().map(|e| e.memory_estimate_bytes)),
        fits: f.and_then(|f| f.fits),
        best_fit: f.is_some_and(|f| f.best_fit),
        error: f.and_then(|f| f.error.clone()),
    };
    Ok(HubPlan {
        repo: p.repo.clone(),
        commit: p.commit.clone(),
        gated: gated(p.gated),
        license: p.license.clone(),
        ctx,
        quants: p
            .quants
            .iter()
            .zip(&fits)
            .map(|(q, f)| quant(q, Some(f)))
            .collect(),
        mmproj: p.mmproj.iter().map(|q| quant(q, None)).collect(),
        safetensors: p.safetensors.as_ref().map(|s| HubFileSet {
            files: s.files.clone(),
            size: s.size,
            skipped: s.skipped.clone(),
            skipped_size: s.skipped_size,
        }),
        notes: p.notes.clone(),
        files: listing
            .files
            .iter()
            .map(|f| HubFile {
                path: f.path.clone(),
                size: f.size,
            })
            .collect(),
        available_memory: available,
        free_disk: unicorn_engine::stats::free_disk(&hub.cache),
    })
}

/// Downloads `files` of a repository (all of them when `None`) into the HF cache,
/// resuming what an earlier pull left; progress streams through `on_event`,
/// `job_cancel` pauses. Returns the job id.
#[tauri::command]
pub async fn hub_pull(
    repo: String,
    revision: Option<String>,
    files: Option<Vec<String>>,
    on_event: Channel<PullEvent>,
    state: State<'_, AppState>,
) -> CommandResult<u64> {
    let revision = revision.unwrap_or_else(|| "main".into());
    unicorn_hub::check_revision(&revision).map_err(|e| CommandError::Invalid(e.to_string()))?;
    let hub = Hub::from_env();
    let (h, r, rev) = (hub.clone(), repo.trim().to_string(), revision.clone());
    let listing =
        tauri::async_runtime::spawn_blocking(move || chosen(&h, &r, &rev, files.as_deref()))
            .await??;
    let library = state.library_db();
    Ok(state.jobs.spawn(to_channel(on_event), move |run| {
        pull(&hub, &listing, &revision, &library, run)
    }))
}

/// The listing of `repo` at `revision`, narrowed to exactly `files` when given.
pub(crate) fn chosen(
    hub: &Hub,
    repo: &str,
    revision: &str,
    files: Option<&[String]>,
) -> CommandResult<Listing> {
    let listing = hub.list(repo, revision, &[])?;
    Ok(match files {
        Some(files) => listing.only(files)?,
        None => listing,
    })
}

/// Pulls `listing`, then records the models it brought in the library at `library`.
fn pull(
    hub: &Hub,
    listing: &Listing,
    revision: &str,
    library: &Path,
    run: &Job<PullEvent>,
) -> Result<PullEvent, String> {
    let snap = hub
        .pull(listing, revision, &mut |p| run.progress(p))
        .map_err(|e| e.to_string())?;
    let mut models = Vec::new();
    let mut failed = None;
    for m in unicorn_hub::pulled_models(&snap, listing) {
        match Library::open(library).and_then(|l| l.add(&m, source::HUB, Some(&listing.repo))) {
            Ok(_) => models.push(m.display().to_string()),
            Err(e) => failed = Some(e.to_string()),
        }
    }
    match failed {
        Some(message) if models.is_empty() => Err(message),
        _ => Ok(PullEvent::Done {
            snapshot: snap.display().to_string(),
            models,
        }),
    }
}

/// Deletes what a paused pull of `repo` left for resuming; returns the bytes freed.
#[tauri::command]
pub fn hub_discard(repo: String) -> CommandResult<u64> {
    let repo = repo.trim();
    if !unicorn_hub::is_repo_id(repo) {
        return Err(CommandError::Invalid(format!(
            "`{repo}`: not a repository id"
        )));
    }
    Ok(unicorn_hub::discard_partial(
        &unicorn_hub::cache_dir(),
        repo,
    )?)
}

/// Saves the Hugging Face token (for gated models) where huggingface_hub keeps it;
/// an empty one removes it.
#[tauri::command]
pub fn hub_token_set(token: String) -> CommandResult<()> {
    unicorn_hub::save_token(&token)
        .map(|_| ())
        .map_err(|e| CommandError::Invalid(e.to_string()))
}

/// Whether a token is set (never the token itself).
#[tauri::command]
pub fn hub_token_present() -> bool {
    unicorn_hub::token().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::mpsc::{channel, Receiver};
    use unicorn_test_support::fake_hub::{FakeHub, Faults};

    const REPO: &str = "unicorn-test/tiny-llama";

    fn files() -> Vec<(String, Vec<u8>)> {
        let dir = unicorn_test_support::tiny("llama");
        let mut f: Vec<(String, Vec<u8>)> = ["config.json", "model.safetensors"]
            .iter()
            .map(|n| (n.to_string(), std::fs::read(dir.join(n)).unwrap()))
            .collect();
        // Big enough to be stopped part-way.
        f.push((
            "extra/weights.bin".into(),
            (0..6_000_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ));
        f
    }

    fn until_end(rx: &Receiver<PullEvent>) -> (usize, PullEvent) {
        let mut progress = 0;
        loop {
            match rx
                .recv_timeout(std::time::Duration::from_secs(120))
                .unwrap()
            {
                PullEvent::Progress { .. } => progress += 1,
                e => return (progress, e),
            }
        }
    }

    #[test]
    fn lists_pulls_pauses_resumes_and_records_the_model() {
        let server = FakeHub::start(REPO, files(), Faults::default());
        let d = std::env::temp_dir().join(format!("unicorn-app-pull-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        let hub = Hub::at(server.url.clone(), d.join("hub"));
        let lib = d.join("library.sqlite3");

        let l = list_with(&hub, REPO, "main").unwrap();
        assert_eq!(l.files.len(), 3);
        assert_eq!(
            l.total_bytes,
            files().iter().map(|f| f.1.len() as u64).sum::<u64>()
        );
        assert_eq!(
            l.weights_bytes,
            l.total_bytes
                - l.files
                    .iter()
                    .find(|f| f.path == "config.json")
                    .unwrap()
                    .size
        );
        assert!(l.available_memory > 0);
        assert!(list_with(&hub, "not a repo", "main").is_err());

        let listing = hub.list(REPO, "main", &[]).unwrap();
        let jobs = crate::jobs::Jobs::default();
        let start = |listing: unicorn_hub::Listing| {
            let (tx, rx) = channel();
            let (hub, lib) = (hub.clone(), lib.clone());
            let id = jobs.spawn(
                Box::new(move |e| {
                    let _ = tx.send(e);
                }),
                move |run| pull(&hub, &listing, "main", &lib, run),
            );
            (id, rx)
        };
        // Paused before it finishes: the partial file stays.
        let (id, rx) = start(listing.clone());
        assert!(jobs.cancel(id));
        let (_, end) = until_end(&rx);
        assert!(matches!(end, PullEvent::Paused), "{end:?}");
        // Resumed to the end: the folder is a model in the library, from the hub.
        let (_, rx) = start(listing);
        let (progress, end) = until_end(&rx);
        let PullEvent::Done { snapshot, models } = end else {
            panic!("{end:?}")
        };
        assert!(progress > 0);
        assert_eq!(models, vec![snapshot.clone()]);
        let e = Library::open(&lib)
            .unwrap()
            .get(Path::new(&snapshot))
            .unwrap()
            .expect("recorded");
        assert_eq!(
            (
                e.source.as_str(),
                e.repo.as_deref(),
                e.architecture.as_str()
            ),
            ("hub", Some(REPO), "llama")
        );
        assert_eq!(unicorn_hub::discard_partial(&hub.cache, REPO).unwrap(), 0);
        std::fs::remove_dir_all(&d).ok();
    }

    /// Search, a repository's plan with fits at a context, and a pull of one
    /// quantization that brings exactly its files into the cache and the library.
    #[test]
    fn search_plan_and_one_quantization_pulled() {
        use unicorn_test_support::fake_hub::{
            demo_repos, GATED_REPO, GATED_TOKEN, GGUF_REPO, SAFETENSORS_REPO,
        };
        let server = FakeHub::start_repos(demo_repos(), Faults::default());
        let d = std::env::temp_dir().join(format!("unicorn-app-plan-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        let hub = Hub::at(server.url.clone(), d.join("hub"));
        let lib = d.join("library.sqlite3");

        let found = search_with(&hub, "llama", "gguf", "downloads", 10).unwrap();
        let ids: Vec<&str> = found.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [GGUF_REPO, GATED_REPO]);
        assert_eq!(
            (found[0].license.as_deref(), found[1].gated.as_str()),
            (Some("apache-2.0"), "manual")
        );
        assert!(search_with(&hub, "llama", "onnx", "downloads", 10).is_err());
        let by_likes = search_with(&hub, "", "any", "likes", 1).unwrap();
        assert_eq!(by_likes[0].id, SAFETENSORS_REPO);

        let plan = plan_with(&hub, GGUF_REPO, "main", 2048, 1 << 40).unwrap();
        let names: Vec<&str> = plan.quants.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["Q4_0", "Q4_K_M", "Q8_0", "F16"]);
        assert!(plan.quants.iter().all(|q| q.fits == Some(true)
            && q.memory_estimate.is_some()
            && q.bits_per_weight.is_some()));
        assert!(plan.quants[3].best_fit);
        assert_eq!(plan.quants[1].files.len(), 2);
        assert_eq!(plan.mmproj.len(), 1);
        assert!(plan.notes.iter().any(|n| n.contains("Q6_K")));
        assert_eq!(plan.license.as_deref(), Some("apache-2.0"));
        assert!(plan_with(&hub, GGUF_REPO, "main", 0, 1 << 40).is_err());
        let st = plan_with(&hub, SAFETENSORS_REPO, "main", 2048, 1 << 40).unwrap();
        let set = st.safetensors.expect("a safetensors set");
        assert_eq!(
            set.files,
            ["config.json", "generation_config.json", "model.safetensors"]
        );
        assert!(st.quants.is_empty() && set.skipped.contains(&"pytorch_model.bin".into()));

        // Pull Q8_0 only: its one blob arrives, nothing else.
        let q8 = plan.quants[2].files.clone();
        let listing = chosen(&hub, GGUF_REPO, "main", Some(&q8)).unwrap();
        assert!(chosen(&hub, GGUF_REPO, "main", Some(&["nope.gguf".into()])).is_err());
        let jobs = crate::jobs::Jobs::default();
        let (tx, rx) = channel();
        let (h, l) = (hub.clone(), lib.clone());
        jobs.spawn(
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
            move |run| pull(&h, &listing, "main", &l, run),
        );
        let (_, end) = until_end(&rx);
        let PullEvent::Done { snapshot, models } = end else {
            panic!("{end:?}")
        };
        assert_eq!(models, [format!("{snapshot}/{}", q8[0])]);
        let snap: Vec<String> = std::fs::read_dir(&snapshot)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(snap, q8);
        let blobs = hub
            .cache
            .join("models--unicorn-test--Tiny-Llama-GGUF/blobs");
        assert_eq!(std::fs::read_dir(blobs).unwrap().count(), 1);
        let e = Library::open(&lib)
            .unwrap()
            .get(Path::new(&models[0]))
            .unwrap()
            .expect("recorded");
        assert_eq!(e.quantization, "Q8_0");

        // A gated repository says how to get access, and opens to its token.
        let Err(CommandError::Engine(m)) = plan_with(&hub, GATED_REPO, "main", 2048, 1 << 40)
        else {
            panic!("planned a gated repo without a token")
        };
        assert!(m.contains("licence") && m.contains(GATED_REPO), "{m}");
        let hub = Hub {
            token: Some(GATED_TOKEN.into()),
            ..hub
        };
        let gated = plan_with(&hub, GATED_REPO, "main", 2048, 1 << 40).unwrap();
        assert_eq!((gated.gated.as_str(), gated.quants.len()), ("manual", 1));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_gated_model_says_how_to_get_access() {
        let server = FakeHub::start(
            REPO,
            files(),
            Faults {
                token: Some("hf_right".into()),
                ..Default::default()
            },
        );
        let d = std::env::temp_dir().join(format!("unicorn-app-gated-{}", std::process::id()));
        let hub = Hub::at(server.url.clone(), d.join("hub"));
        let Err(crate::error::CommandError::Engine(m)) = list_with(&hub, REPO, "main") else {
            panic!("listed a gated repo without a token")
        };
        assert!(m.contains("licence") && m.contains("HF_TOKEN"), "{m}");
        let hub = Hub {
            token: Some("hf_right".into()),
            ..hub
        };
        assert!(list_with(&hub, REPO, "main").is_ok());
        std::fs::remove_dir_all(&d).ok();
    }
}

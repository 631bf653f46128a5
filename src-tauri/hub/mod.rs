//! Download: a hub repository's files and whether they fit this machine, pulling them
//! into the HF cache as a job that pauses and resumes, discarding what a paused pull
//! left, and the token gated models need.

pub mod types;

use crate::error::{CommandError, CommandResult};
use crate::jobs::Job;
use crate::state::AppState;
use crate::to_channel;
use std::path::Path;
use tauri::ipc::Channel;
use tauri::State;
use types::{HubFile, HubListing, PullEvent};
use unicorn_hub::{Hub, Listing};
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

/// Downloads a repository into the HF cache (resuming what an earlier pull left);
/// progress streams through `on_event`, `job_cancel` pauses. Returns the job id.
#[tauri::command]
pub async fn hub_pull(
    repo: String,
    revision: Option<String>,
    on_event: Channel<PullEvent>,
    state: State<'_, AppState>,
) -> CommandResult<u64> {
    let revision = revision.unwrap_or_else(|| "main".into());
    unicorn_hub::check_revision(&revision).map_err(|e| CommandError::Invalid(e.to_string()))?;
    let hub = Hub::from_env();
    let (h, r, rev) = (hub.clone(), repo.trim().to_string(), revision.clone());
    let listing = tauri::async_runtime::spawn_blocking(move || h.list(&r, &rev, &[])).await??;
    let library = state.library_db();
    Ok(state.jobs.spawn(to_channel(on_event), move |run| {
        pull(&hub, &listing, &revision, &library, run)
    }))
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
        let hub = Hub {
            endpoint: server.url.clone(),
            token: None,
            cache: d.join("hub"),
            stall_timeout: std::time::Duration::from_secs(30),
        };
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
        let hub = Hub {
            endpoint: server.url.clone(),
            token: None,
            cache: d.join("hub"),
            stall_timeout: std::time::Duration::from_secs(30),
        };
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

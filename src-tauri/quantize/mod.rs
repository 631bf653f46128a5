//! Quantize: what a quantization of a library model will write, running it as a
//! cancellable job whose progress and report stream through a channel, and measuring
//! the result against its source.

pub mod job;
pub mod types;

use crate::error::{existing, CommandError, CommandResult};
use crate::state::AppState;
use crate::to_channel;
use job::QuantizeJob;
use tauri::ipc::Channel;
use tauri::State;
use types::{CompareEvent, QuantizeEvent, QuantizePrediction};

/// Quantizes a library model to `to` (NF4 or a GGUF type) into the app's models
/// folder; progress and the report stream through `on_event`. Returns the job id.
#[tauri::command]
pub fn quantize_start(
    source: String,
    to: String,
    on_event: Channel<QuantizeEvent>,
    state: State<'_, AppState>,
) -> CommandResult<u64> {
    let job = job_for(&source, &to, &state)?;
    Ok(state
        .jobs
        .spawn(to_channel(on_event), move |run| job::run(&job, run)))
}

/// The job quantizing `source` to `to` into the models folder (the setting, else the
/// default), or why it cannot run.
fn job_for(source: &str, to: &str, state: &AppState) -> CommandResult<QuantizeJob> {
    let out = crate::library::models_dir_of(state)?;
    QuantizeJob::new(source, to, &out, state.library_db()).map_err(CommandError::Invalid)
}

/// What quantizing `source` to `to` will write (sizes, bits per weight, warnings,
/// the memory of chatting with it), computed from the plan without reading weights.
#[tauri::command]
pub async fn quantize_predict(
    source: String,
    to: String,
    state: State<'_, AppState>,
) -> CommandResult<QuantizePrediction> {
    let job = job_for(&source, &to, &state)?;
    tauri::async_runtime::spawn_blocking(move || job.predict())
        .await?
        .map_err(CommandError::Engine)
}

/// Measures a quantized model against its source (perplexity, KL divergence, top-1)
/// on the app's evaluation text; progress streams through `on_event`. Returns the
/// job id (`job_cancel` stops it).
#[tauri::command]
pub fn compare_start(
    base: String,
    quant: String,
    on_event: Channel<CompareEvent>,
    state: State<'_, AppState>,
) -> CommandResult<u64> {
    let (b, q) = (existing(&base)?, existing(&quant)?);
    Ok(state
        .jobs
        .spawn(to_channel(on_event), move |run| job::compare(&b, &q, run)))
}

//! The CPU build and the CUDA build side by side. candle's CUDA build links the
//! driver, so it cannot even start on a machine without one; the CPU `unicorn` is
//! the one users run, and hands a GPU request over to `unicorn-cuda` next to it
//! (scripts/build-cuda puts it there) when the machine has an NVIDIA driver.

use anyhow::{bail, Result};
use unicorn_engine::device::{self, DeviceChoice};
use unicorn_engine::LoadedModel;

/// How long `unicorn-cuda --version` may take to show that it starts.
const PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Re-runs this command with `unicorn-cuda` when `choice` may use CUDA, this build
/// has none, that build is installed and starts, and a driver reports a GPU. Returns
/// when this process should go on by itself.
pub fn hand_over(choice: DeviceChoice) -> Result<()> {
    if device::CUDA_BUILD || !matches!(choice, DeviceChoice::Auto | DeviceChoice::Cuda(_)) {
        return Ok(());
    }
    let Some(cuda) = device::cuda_twin("unicorn-cuda") else {
        return Ok(());
    };
    match device::gpus() {
        // The CUDA build links the CUDA libraries: one that cannot even start (a
        // missing libcublas) must not take the command down with it.
        Ok(g) if !g.is_empty() => match device::probe_twin(&cuda, "--version", PROBE_LIMIT) {
            Ok(()) => bail!("{}", device::exec_twin(&cuda)),
            Err(why) if matches!(choice, DeviceChoice::Cuda(_)) => {
                bail!("--device {choice}: the CUDA build cannot start: {why}")
            }
            Err(why) => {
                eprintln!("note: running on the CPU: the CUDA build cannot start: {why}");
                Ok(())
            }
        },
        Ok(_) if matches!(choice, DeviceChoice::Cuda(_)) => {
            bail!("--device {choice}: the NVIDIA driver reports no GPU")
        }
        Err(why) if matches!(choice, DeviceChoice::Cuda(_)) => bail!("--device {choice}: {why}"),
        // auto on a machine without a usable GPU: the CPU, said once when loading.
        _ => Ok(()),
    }
}

/// Tells the user where the model runs when it is not where they might expect.
pub fn say_placement(model: &LoadedModel, json: bool) {
    let p = model.placement();
    if let Some(why) = &p.fallback {
        if json {
            eprintln!(
                "{}",
                serde_json::json!({"event": "device", "device": p.label, "note": why})
            );
        } else {
            eprintln!("note: {why}");
        }
    }
}

//! The app's CPU and CUDA engines in one package. candle's CUDA build links the
//! NVIDIA driver and the CUDA libraries, so it cannot even start on a machine without
//! them: the package's `unicorn-app` is the CPU build, and at start-up it hands the
//! window over to `unicorn-app-cuda` beside it (scripts/build-cuda --app, packaged by
//! scripts/package --cuda) when NVML sees a GPU and that build's probe says it can
//! use it. Otherwise it stays on the CPU, and the dashboard says why.

use std::path::{Path, PathBuf};
use unicorn_engine::device::{self, GpuMemory};

/// The CUDA build's file name beside the CPU build.
pub const CUDA_APP: &str = "unicorn-app-cuda";
/// The argument that makes a build answer whether it can use a GPU, and exit.
pub const PROBE: &str = "--probe-gpu";

/// `unicorn-app --probe-gpu`: exits 0 when this build can run on the first CUDA
/// device, else prints why on standard error and exits 1.
pub fn probe() -> ! {
    match device::probe_cuda() {
        Ok(()) => std::process::exit(0),
        Err(why) => {
            eprintln!("{why}");
            std::process::exit(1)
        }
    }
}

/// Hands this process over to the CUDA build when it should run instead (never
/// returns then); otherwise returns why the CPU engine runs, for the dashboard (None
/// in the CUDA build itself).
pub fn hand_over() -> Option<String> {
    if device::CUDA_BUILD {
        return None;
    }
    // NVML is asked only when there is a CUDA build to hand over to.
    match choose(device::cuda_twin(CUDA_APP).as_deref(), device::gpus) {
        Ok(cuda) => Some(device::exec_twin(&cuda)),
        Err(why) => Some(why),
    }
}

/// The CUDA build to run, or why the CPU one stays: there must be a CUDA build, a GPU
/// that NVML reports, and a probe of the build that succeeds (it starts, finds its
/// libraries and the device) within a bounded time.
fn choose(
    twin: Option<&Path>,
    gpus: impl FnOnce() -> Result<Vec<GpuMemory>, String>,
) -> Result<PathBuf, String> {
    let Some(twin) = twin else {
        return Err(format!(
            "this installation has no CUDA engine ({CUDA_APP}: scripts/build-cuda --app, \
             then scripts/package --cuda)"
        ));
    };
    match gpus() {
        Ok(g) if !g.is_empty() => {}
        Ok(_) => return Err("the NVIDIA driver reports no GPU".into()),
        Err(why) => return Err(format!("no GPU: {why}")),
    }
    device::probe_twin(twin, PROBE, std::time::Duration::from_secs(20))
        .map_err(|e| format!("the CUDA engine cannot use the GPU: {e}"))?;
    Ok(twin.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu() -> Vec<GpuMemory> {
        vec![GpuMemory {
            index: 0,
            name: "NVIDIA H200".into(),
            total_bytes: 150 << 30,
            used_bytes: 1 << 30,
            free_bytes: 149 << 30,
        }]
    }

    /// A stand-in CUDA build answering the probe with `body`.
    fn twin(dir: &Path, name: &str, body: &str) -> PathBuf {
        unicorn_test_support::stand_in(dir, name, PROBE, body)
    }

    /// Each reason to stay on the CPU is said, and a build whose probe succeeds on a
    /// machine with a GPU is chosen.
    #[test]
    fn the_cuda_build_runs_only_where_it_can() {
        let dir = std::env::temp_dir().join(format!("unicorn-gpu-choice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = twin(&dir, "ok", "exit 0");
        let no_lib = twin(
            &dir,
            "no-lib",
            "echo 'error while loading shared libraries: libcublas.so.13: cannot open shared object file' >&2; exit 127",
        );

        let e = choose(None, || panic!("NVML asked without a CUDA build")).unwrap_err();
        assert!(
            e.contains("no CUDA engine") && e.contains("scripts/build-cuda --app"),
            "{e}"
        );
        let e = choose(Some(&ok), || Ok(vec![])).unwrap_err();
        assert_eq!(e, "the NVIDIA driver reports no GPU");
        let e = choose(Some(&ok), || {
            Err("NVML unavailable (no NVIDIA driver)".into())
        })
        .unwrap_err();
        assert!(e.contains("NVML unavailable"), "{e}");
        let e = choose(Some(&no_lib), || Ok(gpu())).unwrap_err();
        assert!(e.starts_with("the CUDA engine cannot use the GPU"), "{e}");
        assert!(e.contains("libcublas.so.13"), "{e}");
        let e = choose(Some(&dir.join("missing")), || Ok(gpu())).unwrap_err();
        assert!(e.contains("cannot start"), "{e}");
        assert_eq!(choose(Some(&ok), || Ok(gpu())).unwrap(), ok);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// This (CPU) build, probed as the CPU build would probe its twin, says it has no
    /// CUDA.
    #[test]
    #[cfg(not(feature = "cuda"))]
    fn the_cpu_build_probe_says_why() {
        let e = device::probe_cuda().unwrap_err();
        assert!(e.contains("built without CUDA"), "{e}");
    }
}

//! Where a model runs (`--device auto|cpu|cuda[:N]|metal`) and what the GPUs hold.
//!
//! `auto` takes CUDA, then Metal, then the CPU, and says why it fell back. GPU
//! memory comes from NVIDIA's management library, loaded at run time: a machine
//! without a driver simply has no GPUs to report.

use crate::error::{Error, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The device the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA, then Metal, then the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// The Metal device.
    Metal,
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("device `{s}`: give auto, cpu, cuda, cuda:N or metal");
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            "metal" => Ok(Self::Metal),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(Self::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal => write!(f, "metal"),
        }
    }
}

/// Where a model was placed, and why there.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The device tensors live on.
    pub device: Device,
    /// `cpu`, `cuda:0`, `metal`.
    pub label: String,
    /// Why `auto` did not take a GPU, when there was reason to expect one.
    pub fallback: Option<String>,
}

/// Whether this build can run on CUDA / Metal.
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");
/// See [`CUDA_BUILD`].
pub const METAL_BUILD: bool = cfg!(feature = "metal");

const NO_CUDA: &str = "this unicorn was built without CUDA: build it with scripts/build-cuda \
                       (README, \"GPU\")";
const NO_METAL: &str = "this unicorn was built without Metal: build it on macOS with \
                        `cargo build --release --features metal`";

/// Places a model according to `choice`. An explicit device that cannot be used is
/// an error; `auto` falls back to the CPU and says why.
pub fn place(choice: DeviceChoice) -> Result<Placement> {
    let cpu = |fallback| Placement {
        device: Device::Cpu,
        label: "cpu".into(),
        fallback,
    };
    match choice {
        DeviceChoice::Cpu => Ok(cpu(None)),
        DeviceChoice::Cuda(n) => {
            cuda(n).map_err(|e| Error::Invalid(format!("--device cuda:{n}: {e}")))
        }
        DeviceChoice::Metal => metal().map_err(|e| Error::Invalid(format!("--device metal: {e}"))),
        DeviceChoice::Auto => {
            let mut why = Vec::new();
            if CUDA_BUILD {
                match cuda(0) {
                    Ok(p) => return Ok(p),
                    Err(e) => why.push(format!("CUDA: {e}")),
                }
            } else if let Ok(g) = gpus() {
                if let Some(g) = g.first() {
                    why.push(format!("{} is present, but {NO_CUDA}", g.name));
                }
            }
            if METAL_BUILD {
                match metal() {
                    Ok(p) => return Ok(p),
                    Err(e) => why.push(format!("Metal: {e}")),
                }
            }
            Ok(cpu((!why.is_empty()).then(|| {
                format!("running on the CPU: {}", why.join("; "))
            })))
        }
    }
}

/// The CUDA build of this program installed beside it as `name` (`unicorn-cuda`,
/// `unicorn-app-cuda`), when this build has none. candle's CUDA build links the
/// driver, so it cannot even start without one: the CPU build is the one users start,
/// and it hands over to this twin when a driver reports a GPU.
pub fn cuda_twin(name: &str) -> Option<std::path::PathBuf> {
    if CUDA_BUILD {
        return None;
    }
    std::env::current_exe()
        .ok()
        .map(|e| e.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
        .filter(|p| p.is_file())
}

/// Runs `exe arg` (a CUDA twin's probe) and says whether it succeeded, or why not
/// (its status and first line on standard error: a missing `libcublas.so.13`, no
/// usable device). One that runs longer than `limit` is killed: a hanging driver
/// must not hang whoever asked.
pub fn probe_twin(
    exe: &std::path::Path,
    arg: &str,
    limit: std::time::Duration,
) -> std::result::Result<(), String> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(exe)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{} cannot start: {e}", exe.display()))?;
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} {arg} took over {} s",
                exe.display(),
                limit.as_secs_f32()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    if status.success() {
        return Ok(());
    }
    // The message is a line or two; what is read is bounded anyway.
    let mut stderr = Vec::new();
    if let Some(e) = child.stderr.take() {
        let _ = e.take(64 * 1024).read_to_end(&mut stderr);
    }
    let stderr = String::from_utf8_lossy(&stderr);
    let first = stderr.lines().find(|l| !l.trim().is_empty());
    Err(format!(
        "{} ({status}): {}",
        exe.display(),
        first.map_or("no message".into(), |l| l
            .chars()
            .take(300)
            .collect::<String>())
    ))
}

/// Replaces this process with `twin` (a CUDA build), given this one's arguments;
/// returns why, when that fails. Elsewhere than Unix, runs it and exits with its
/// status.
pub fn exec_twin(twin: &std::path::Path) -> String {
    let mut cmd = std::process::Command::new(twin);
    cmd.args(std::env::args_os().skip(1));
    #[cfg(unix)]
    let err = std::os::unix::process::CommandExt::exec(&mut cmd);
    #[cfg(not(unix))]
    let err = match cmd.status() {
        Ok(status) => std::process::exit(status.code().unwrap_or(1)),
        Err(err) => err,
    };
    format!("{} could not start: {err}", twin.display())
}

/// Whether this build can run on the first CUDA device, and if not why: a CUDA
/// build's start-up probe, run by its CPU twin before handing over.
pub fn probe_cuda() -> std::result::Result<(), String> {
    cuda(0).map(|_| ())
}

fn cuda(n: usize) -> std::result::Result<Placement, String> {
    if !CUDA_BUILD {
        return Err(NO_CUDA.into());
    }
    let device =
        Device::new_cuda(n).map_err(|e| format!("no usable CUDA device ({})", first_line(&e)))?;
    Ok(Placement {
        device,
        label: format!("cuda:{n}"),
        fallback: None,
    })
}

fn metal() -> std::result::Result<Placement, String> {
    if !METAL_BUILD {
        return Err(NO_METAL.into());
    }
    let device =
        Device::new_metal(0).map_err(|e| format!("no usable Metal device ({})", first_line(&e)))?;
    Ok(Placement {
        device,
        label: "metal".into(),
        fallback: None,
    })
}

/// candle's errors carry a backtrace after the first line; users need the first.
fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// One GPU's memory, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct GpuMemory {
    /// NVML's device index.
    pub index: u32,
    /// `NVIDIA H200`, ...
    pub name: String,
    /// Memory on the card.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub total_bytes: u64,
    /// In use, by every process.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub used_bytes: u64,
    /// Free.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub free_bytes: u64,
}

/// The NVIDIA GPUs and their memory now, or why they cannot be read (no driver).
pub fn gpus() -> std::result::Result<Vec<GpuMemory>, String> {
    use nvml_wrapper::Nvml;
    use std::sync::OnceLock;
    static NVML: OnceLock<std::result::Result<Nvml, String>> = OnceLock::new();
    let nvml = NVML
        .get_or_init(|| {
            Nvml::init().map_err(|e| format!("NVML unavailable ({e}): no NVIDIA driver"))
        })
        .as_ref()
        .map_err(Clone::clone)?;
    let n = nvml.device_count().map_err(|e| e.to_string())?;
    (0..n)
        .map(|index| {
            let d = nvml.device_by_index(index).map_err(|e| e.to_string())?;
            let m = d.memory_info().map_err(|e| e.to_string())?;
            Ok(GpuMemory {
                index,
                name: d.name().unwrap_or_else(|_| format!("GPU {index}")),
                total_bytes: m.total,
                used_bytes: m.used,
                free_bytes: m.free,
            })
        })
        .collect()
}

/// GPU memory in use on the device a model was placed on (`None` on the CPU, or
/// when the driver cannot say). NVML numbers cards in PCI order and CUDA by speed
/// unless `CUDA_DEVICE_ORDER=PCI_BUS_ID`; with one card they agree.
pub fn vram_used(p: &Placement) -> Option<u64> {
    let ordinal = p.label.strip_prefix("cuda:")?.parse::<u32>().ok()?;
    gpus()
        .ok()?
        .into_iter()
        .find(|g| g.index == ordinal)
        .map(|g| g.used_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in twin answering `--probe` with `body`.
    #[cfg(unix)]
    fn twin(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
        unicorn_test_support::stand_in(dir, name, "--probe", body)
    }

    /// A probe succeeds, fails with its first line said, is missing, or hangs and is
    /// killed within its limit.
    #[cfg(unix)]
    #[test]
    fn twins_are_probed_in_bounded_time() {
        use std::time::{Duration, Instant};
        let dir = std::env::temp_dir().join(format!("unicorn-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let limit = Duration::from_secs(10);
        assert_eq!(
            probe_twin(&twin(&dir, "ok", "exit 0"), "--probe", limit),
            Ok(())
        );
        let lib = twin(
            &dir,
            "lib",
            "echo; echo 'error while loading shared libraries: libcublas.so.13' >&2; exit 127",
        );
        let e = probe_twin(&lib, "--probe", limit).unwrap_err();
        assert!(
            e.contains("exit status: 127") && e.ends_with("libcublas.so.13"),
            "{e}"
        );
        let e = probe_twin(&dir.join("missing"), "--probe", limit).unwrap_err();
        assert!(e.contains("cannot start"), "{e}");
        let t = Instant::now();
        let hang = twin(&dir, "hang", "exec sleep 30");
        let e = probe_twin(&hang, "--probe", Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("took over 0.3 s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn choices_parse_and_print() {
        for (s, c) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:1", DeviceChoice::Cuda(1)),
            ("metal", DeviceChoice::Metal),
        ] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap(), c);
        }
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
        for bad in ["cuda:x", "tpu", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.contains("give auto, cpu, cuda, cuda:N or metal"), "{e}");
        }
    }

    /// What a machine without a GPU (this one, in CI) gets: auto runs on the CPU, an
    /// explicit GPU is a clear error, and there are no GPUs to report.
    #[test]
    fn without_a_gpu_auto_is_the_cpu_and_a_gpu_request_says_why() {
        if gpus().is_ok_and(|g| !g.is_empty()) {
            return; // A GPU machine: the device tests run there instead.
        }
        let p = place(DeviceChoice::Auto).unwrap();
        assert!(p.device.is_cpu());
        assert_eq!(p.label, "cpu");
        assert!(vram_used(&p).is_none());
        let e = place(DeviceChoice::Cuda(0)).unwrap_err().to_string();
        assert!(e.starts_with("--device cuda:0: "), "{e}");
        if !CUDA_BUILD {
            assert!(e.contains("scripts/build-cuda"), "{e}");
        }
        let e = place(DeviceChoice::Metal).unwrap_err().to_string();
        assert!(e.contains("Metal"), "{e}");
        assert!(gpus().unwrap_or_default().is_empty());
    }
}

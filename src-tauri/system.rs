//! The dashboard's machine figures: memory, CPU, this process, the memory bandwidth
//! (measured once, in the background) and the GPUs.

use crate::state::AppState;
use serde::Serialize;
use tauri::State;
use ts_rs::TS;

/// Machine figures for the dashboard, measured when asked.
#[derive(Debug, Clone, Serialize, TS)]
pub struct SystemStats {
    /// Physical memory.
    #[ts(type = "number")]
    pub total_memory: u64,
    /// Memory in use by everything.
    #[ts(type = "number")]
    pub used_memory: u64,
    /// This process's resident memory.
    #[ts(type = "number")]
    pub process_rss: u64,
    /// CPU use across all cores since the last call, 0-100.
    pub cpu_percent: f32,
    /// Logical cores.
    pub cores: usize,
    /// Memory read bandwidth measured once at start-up (bytes/s), for the roofline.
    pub memory_bandwidth: f64,
    /// NVIDIA GPUs and their memory now (NVML).
    pub gpus: Vec<unicorn_engine::device::GpuMemory>,
    /// Why there are none, when the driver cannot be read.
    pub gpu_note: Option<String>,
    /// The engine this window runs: `CUDA` or `CPU` (the package's two builds).
    pub engine: String,
    /// Why the CPU engine runs, when the package could have a CUDA one.
    pub engine_note: Option<String>,
}

/// RAM, CPU and this process's memory, measured now; the memory bandwidth once
/// measured (0 until then: it is measured in the background on the first call).
#[tauri::command]
pub fn system_stats(state: State<'_, AppState>) -> SystemStats {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let mut guard = state.system.lock().unwrap_or_else(|e| e.into_inner());
    let sys = guard.get_or_insert_with(|| {
        let bw = state.bandwidth.clone();
        std::thread::spawn(move || {
            let _ = bw.set(unicorn_engine::bench::memory_bandwidth());
        });
        System::new()
    });
    sys.refresh_memory();
    sys.refresh_cpu_usage();
    let gpus = unicorn_engine::device::gpus();
    let pid = Pid::from_u32(std::process::id());
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing().with_memory(),
    );
    SystemStats {
        total_memory: sys.total_memory(),
        used_memory: sys.used_memory(),
        process_rss: sys.process(pid).map(|p| p.memory()).unwrap_or(0),
        cpu_percent: sys.global_cpu_usage(),
        cores: sys.cpus().len(),
        memory_bandwidth: state.bandwidth.get().copied().unwrap_or(0.0),
        gpus: gpus.as_ref().cloned().unwrap_or_default(),
        gpu_note: gpus.err(),
        engine: if unicorn_engine::device::CUDA_BUILD {
            "CUDA"
        } else {
            "CPU"
        }
        .into(),
        engine_note: state.engine_note.clone(),
    }
}

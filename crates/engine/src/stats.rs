//! Measured numbers: generation statistics and the process's memory.

use serde::{Deserialize, Serialize};

/// What one reply cost, all measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Stats {
    /// Tokens in the rendered prompt (the whole conversation so far).
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (the rest came from the KV cache).
    pub prefill_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Time from the request to the first generated token, milliseconds.
    pub ttft_ms: f64,
    /// Prefill throughput, tokens per second.
    pub prefill_tok_s: f64,
    /// Decode throughput over the tokens after the first, tokens per second, end to end
    /// (forward pass, sampling and detokenization).
    pub decode_tok_s: f64,
    /// Bytes held by the model's weights.
    pub weights_bytes: usize,
    /// Bytes allocated for the KV cache.
    pub kv_cache_bytes: usize,
    /// Resident set size of this process after the reply.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub rss_bytes: u64,
    /// Highest resident set size of this process so far (loading included), where
    /// the OS records it.
    #[cfg_attr(feature = "ts", ts(type = "number | null"))]
    pub peak_rss_bytes: Option<u64>,
    /// Where it ran: `cpu`, `cuda:0`, `metal`.
    #[serde(default)]
    pub device: String,
    /// GPU memory in use on the model's device after the reply (NVML; none on the
    /// CPU). Stored replies from before GPUs have none.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(type = "number | null"))]
    pub vram_bytes: Option<u64>,
    /// Speculative decoding's figures, when a draft model proposed tokens.
    #[serde(default)]
    pub draft: Option<Box<crate::speculative::DraftStats>>,
    /// Prompt tokens that were images' features (part of `prompt_tokens`).
    #[serde(default)]
    pub image_tokens: usize,
}

/// Resident set size of this process in bytes (0 if the OS does not say).
pub fn rss_bytes() -> u64 {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let pid = Pid::from_u32(std::process::id());
    let mut sys = System::new();
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing().with_memory(),
    );
    sys.process(pid).map(|p| p.memory()).unwrap_or(0)
}

/// Peak resident set size of this process in bytes, where the OS records it
/// (Linux `VmHWM`); `None` elsewhere.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Mean and sample standard deviation.
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Memory the OS reports available now, in bytes.
pub fn available_memory() -> u64 {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.available_memory()
}

/// Free space on the disk that holds `path` (the disk whose mount point is the
/// longest prefix of it, or of its parent when it does not exist yet), where the OS
/// says.
pub fn free_disk(path: &std::path::Path) -> Option<u64> {
    let disks = sysinfo::Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|d| {
            path.starts_with(d.mount_point())
                || path
                    .parent()
                    .is_some_and(|p| p.starts_with(d.mount_point()))
        })
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| d.available_space())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_measured_and_grows_with_touched_memory() {
        let before = rss_bytes();
        assert!(before > 0);
        let v = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = rss_bytes();
        assert!(after >= before + (48 << 20), "{before} -> {after}");
        drop(std::hint::black_box(v));
    }

    #[test]
    fn mean_and_sd() {
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12 && (s - 1.0).abs() < 1e-12);
    }
}

// The machine figures over time, for the dashboard's charts: sampled once a second
// from the first time the dashboard opens (the first sample also starts the one-off
// memory-bandwidth measurement), and kept while the app runs, so that the last 10
// minutes are there when the dashboard is opened again.
import { signal } from "@preact/signals";
import { api } from "./api";
import type { SystemStats } from "./bindings/SystemStats";
import { pushSample } from "./chartdata";

/** One sample: when (ms) and what, as the backend reported it. */
export type Sample = { t: number; cpu: number; used: number; rss: number; gpus: number[] };

/** The latest figures. */
export const system = signal<SystemStats | null>(null);
/** Samples of the last WINDOW_S seconds, oldest first. */
export const samples = signal<Sample[]>([]);

let timer: ReturnType<typeof setInterval> | null = null;
let busy = false;

async function tick() {
  if (busy) return; // a slow reply: skip rather than queue
  busy = true;
  try {
    const s = await api.systemStats();
    system.value = s;
    samples.value = pushSample(samples.value, {
      t: Date.now(),
      cpu: s.cpu_percent,
      used: s.used_memory,
      rss: s.process_rss,
      gpus: s.gpus.map((g) => g.used_bytes),
    });
  } catch {
    // The next tick tries again.
  } finally {
    busy = false;
  }
}

/** Starts sampling (once; later calls do nothing). */
export function startMonitor() {
  if (timer !== null) return;
  void tick();
  timer = setInterval(tick, 1000);
}

// The charts' pure parts: the time window, axis ticks and their labels with units.
// Unit-tested (chartdata.test.ts); charts.tsx hands these to uPlot.

/** The dashboard's time charts show this much history, in seconds. */
export const WINDOW_S = 600;

/** `samples` (oldest first, `t` in milliseconds) without those older than `windowS`
 * before `now`. Returns the same array when nothing is dropped. */
export function trimWindow<T extends { t: number }>(samples: T[], now: number, windowS = WINDOW_S): T[] {
  const from = now - windowS * 1000;
  let i = 0;
  while (i < samples.length && samples[i].t < from) i++;
  return i === 0 ? samples : samples.slice(i);
}

/** Appends `s` and drops what has left the window before it. */
export function pushSample<T extends { t: number }>(samples: T[], s: T, windowS = WINDOW_S): T[] {
  return trimWindow([...samples, s], s.t, windowS);
}

/** Seconds relative to now (≤ 0) as the time axis shows them: "now", "−30 s", "−2 min", "−1.5 min". */
export function agoLabel(s: number): string {
  const a = Math.round(Math.abs(s));
  if (a === 0) return "now";
  if (a < 60) return `−${a} s`;
  const m = a / 60;
  return `−${Number.isInteger(m) ? m : m.toFixed(1)} min`;
}

/** Tick spacings the time axis may use, in seconds. */
export const AGO_INCRS = [5, 10, 15, 30, 60, 120, 180, 300, 600];

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
const BYTE_STEPS = [0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500];

/** Tick spacings for a byte axis: ¼, ½, 1, 2, 5, 10, … of each binary unit, so that
 * every tick is a round number in the unit it is shown in. */
export const BYTE_INCRS: number[] = [...new Set(
  BYTE_UNITS.flatMap((_, u) => BYTE_STEPS.map((m) => m * 1024 ** u)).filter((v) => v >= 1),
)].sort((a, b) => a - b);

/** The unit (index into B, KiB, MiB, …) a tick spacing of `incr` bytes is round in:
 * 256 MiB → GiB (¼ GiB), 200 MiB → MiB. */
export function byteUnitFor(incr: number): number {
  for (let u = BYTE_UNITS.length - 1; u > 0; u--) {
    const m = incr / 1024 ** u;
    if (BYTE_STEPS.some((s) => Math.abs(m - s) < 1e-9 * s)) return u;
  }
  return 0;
}

/** Trims a number to at most two decimals, without trailing zeros. */
function short(v: number): string {
  return String(Number(v.toFixed(2)));
}

/** A byte axis's tick labels: all in the unit the spacing `incr` is round in ("0", "0.25 GiB", "0.5 GiB"). */
export function byteTicks(splits: number[], incr: number): string[] {
  const u = byteUnitFor(incr);
  return splits.map((v) => (v === 0 ? "0" : `${short(v / 1024 ** u)} ${BYTE_UNITS[u]}`));
}

/** Percent ticks: "0 %", "50 %". */
export function percentTicks(splits: number[]): string[] {
  return splits.map((v) => `${short(v)} %`);
}

/** Up to about `count` round ticks from 0 to at least `max` (1, 2, 2.5 or 5 × 10ⁿ apart). */
export function niceTicks(max: number, count = 4): number[] {
  if (!Number.isFinite(max) || max <= 0) return [0];
  const raw = max / count;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  const n = Math.ceil(max / step - 1e-9);
  return Array.from({ length: n + 1 }, (_, i) => Number((i * step).toPrecision(12)));
}

/** The upper end of a value axis: a little above the largest value, so the line does not touch the top. */
export function headroom(values: (number | null | undefined)[], min = 1): number {
  let max = 0;
  for (const v of values) if (v != null && Number.isFinite(v) && v > max) max = v;
  return Math.max(min, max * 1.15);
}

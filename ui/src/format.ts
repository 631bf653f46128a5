// Units as the app shows them: binary sizes, rates, durations. Pure functions, unit-tested.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** 1536 -> "1.5 KiB"; three significant digits. */
export function bytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return "–";
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toPrecision(3)} ${UNITS[i]}`;
}

/** Seconds as "42 s", "3 min 5 s", "1 h 2 min". */
export function duration(s: number | null | undefined): string {
  if (s == null || !Number.isFinite(s) || s < 0) return "–";
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

/** Tokens per second with one decimal. */
export function tokS(v: number): string {
  return Number.isFinite(v) && v > 0 ? `${v.toFixed(1)} tok/s` : "–";
}

/** Parameters as "135 M", "4.3 B". */
export function params(n: number): string {
  if (!Number.isFinite(n) || n <= 0) return "–";
  return n >= 1e9 ? `${(n / 1e9).toPrecision(3)} B` : `${(n / 1e6).toPrecision(3)} M`;
}

/** Fraction 0..1 as a percentage with one decimal. */
export function percent(f: number): string {
  return Number.isFinite(f) ? `${(100 * f).toFixed(1)} %` : "–";
}

/** The last path component ("/a/b/model.gguf" -> "model.gguf"). */
export function baseName(path: string): string {
  const parts = path.split(/[\\/]/).filter((p) => p.length > 0);
  return parts.length ? parts[parts.length - 1] : path;
}

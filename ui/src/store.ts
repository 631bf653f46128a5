// State shared across views: the library, the loaded model, and measured speeds.
import { signal } from "@preact/signals";
import type { Entry } from "./bindings/Entry";
import type { LoadedSummary } from "./bindings/LoadedSummary";
import type { Stats } from "./bindings/Stats";
import type { KvType } from "./bindings/KvType";
import type { HeadType } from "./bindings/HeadType";

export const library = signal<Entry[]>([]);
export const loaded = signal<LoadedSummary | null>(null);
/** Every finished reply's measured figures, oldest first (the dashboard charts them). */
export const replies = signal<{ at: number; stats: Stats }[]>([]);
export const view = signal<"library" | "download" | "chat" | "quantize" | "server" | "dashboard">("library");
/** A repository id for the Download view to search for (set by the Library's suggestions). */
export const downloadQuery = signal<string | null>(null);
/** The model the chat and quantize views start from. */
export const selected = signal<string | null>(null);
/** Where models run: auto (CUDA, then Metal, then the CPU), cpu, cuda, cuda:N, metal. */
export const device = signal(localStorage.getItem("device") ?? "auto");
device.subscribe((d) => localStorage.setItem("device", d));
/** How the KV cache holds keys and values: f16 (the engine's default on the CPU), q8_0, f32. */
export const kvType = signal<KvType>((localStorage.getItem("kvType") as KvType | null) ?? "f16");
kvType.subscribe((k) => localStorage.setItem("kvType", k));
/** How the output head runs: as stored, or a Q8_0 copy of a dense head made at load (faster NF4 decode). */
export const headType = signal<HeadType>((localStorage.getItem("headType") as HeadType | null) ?? "stored");
headType.subscribe((h) => localStorage.setItem("headType", h));

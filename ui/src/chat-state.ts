// The chat view's state, kept outside the view: a reply keeps streaming into it while
// another tab is shown, and switching back shows it as it stands. The open chat and
// the settings form also survive a restart (localStorage; the messages themselves
// are in the library database).
import { signal, type Signal } from "@preact/signals";
import type { ChatSettings } from "./bindings/ChatSettings";
import type { ContextUse } from "./bindings/ContextUse";
import type { Overflow } from "./bindings/Overflow";
import type { ShownImage } from "./bindings/ShownImage";
import type { Stats } from "./bindings/Stats";

/** One message as shown; `live`: a reply still streaming in; `images`: a user
 * message's images (previews). */
export type Turn = { role: "user" | "assistant"; text: string; images?: ShownImage[]; live?: boolean; stats?: Stats; stop?: string; error?: string };

/** The settings form: text fields as typed (empty: the model's default). */
export type Form = {
  temperature: string; top_k: string; top_p: string; min_p: string; repeat_penalty: string;
  max_tokens: string; seed: string; stop: string; stop_on_loop: boolean; ctx: string; overflow: Overflow;
  /** A library model drafting for the loaded one ("": none). */
  draft: string;
};

export const EMPTY_FORM: Form = {
  temperature: "", top_k: "", top_p: "", min_p: "", repeat_penalty: "",
  max_tokens: "512", seed: "", stop: "", stop_on_loop: false, ctx: "", overflow: "drop-oldest", draft: "",
};

function stored<T>(key: string, fallback: T): Signal<T> {
  let v = fallback;
  try {
    const s = localStorage.getItem(key);
    if (s !== null) {
      const parsed = JSON.parse(s);
      v = fallback !== null && typeof fallback === "object" ? ({ ...fallback, ...parsed } as T) : (parsed as T);
    }
  } catch { /* a bad stored value: the default */ }
  const sig = signal<T>(v);
  sig.subscribe((x) => localStorage.setItem(key, JSON.stringify(x)));
  return sig;
}

export const turns = signal<Turn[]>([]);
export const sideTurns = signal<Turn[]>([]);
export const busy = signal(false);
export const draft = signal("");
/** Whether the conversation's first message is a system prompt (message indices count it). */
export const hasSystem = signal(false);
export const contextUse = signal<ContextUse | null>(null);
/** Whether the settings panel is open. */
export const settingsOpen = stored<boolean>("chatSettingsOpen", false);
export const system = stored<string>("chatSystem", "");
export const form = stored<Form>("chatForm", EMPTY_FORM);
/** The stored chat the next turn continues (reopened after a restart). */
export const chatId = stored<number | null>("chatId", null);

const num = (s: string) => (s.trim() === "" ? null : Number(s));

/** The form as the shell takes it; an error line for a field that is not a number. */
export function toSettings(f: Form): ChatSettings | string {
  const fields = ["temperature", "top_k", "top_p", "min_p", "repeat_penalty", "max_tokens", "seed", "ctx"] as const;
  for (const k of fields) {
    const v = f[k].trim();
    if (v !== "" && !Number.isFinite(Number(v))) return `${k.replace("_", " ")}: "${v}" is not a number`;
  }
  const stop = f.stop.split("\n").filter((s) => s !== "");
  return {
    temperature: num(f.temperature), top_k: num(f.top_k), top_p: num(f.top_p), min_p: num(f.min_p),
    repeat_penalty: num(f.repeat_penalty), max_tokens: num(f.max_tokens), seed: num(f.seed),
    stop: stop.length ? stop : null, stop_on_loop: f.stop_on_loop, ctx: num(f.ctx), overflow: f.overflow,
    draft: f.draft === "" ? null : f.draft,
  };
}

/** Settings saved in a preset or as a model's defaults: the form, as JSON. */
export function formFromJson(json: string): Form {
  try {
    const v = JSON.parse(json);
    return { ...EMPTY_FORM, ...(v && typeof v === "object" ? v : {}) };
  } catch {
    return EMPTY_FORM;
  }
}

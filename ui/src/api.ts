// The app's commands, typed by the bindings generated from the Rust types
// (src/bindings, checked by the shell's `bindings_are_current` test).
import { Channel, invoke } from "@tauri-apps/api/core";
import type { ChatEvent } from "./bindings/ChatEvent";
import type { ChatRecord } from "./bindings/ChatRecord";
import type { CompareEvent } from "./bindings/CompareEvent";
import type { OpenedChat } from "./bindings/OpenedChat";
import type { ChatSettings } from "./bindings/ChatSettings";
import type { Entry } from "./bindings/Entry";
import type { DeletionPlan } from "./bindings/DeletionPlan";
import type { Preset } from "./bindings/Preset";
import type { HubListing } from "./bindings/HubListing";
import type { ImageFile } from "./bindings/ImageFile";
import type { HubPlan } from "./bindings/HubPlan";
import type { HubSearchResult } from "./bindings/HubSearchResult";
import type { PullEvent } from "./bindings/PullEvent";
import type { LoadEvent } from "./bindings/LoadEvent";
import type { KvType } from "./bindings/KvType";
import type { HeadType } from "./bindings/HeadType";
import type { LoadedSummary } from "./bindings/LoadedSummary";
import type { QuantizeEvent } from "./bindings/QuantizeEvent";
import type { QuantizePrediction } from "./bindings/QuantizePrediction";
import type { Slot } from "./bindings/Slot";
import type { Turn } from "./bindings/Turn";
import type { ContextEstimate } from "./bindings/ContextEstimate";
import type { SystemStats } from "./bindings/SystemStats";
import type { ServerStatus } from "./bindings/ServerStatus";

/** The shell's error shape: `{kind, message}`. */
export function errorText(e: unknown): string {
  if (e && typeof e === "object" && "message" in e) return String((e as { message: unknown }).message);
  return String(e);
}

export const api = {
  // Opens a link from a reply in the system browser (http and https only).
  openExternal: (url: string) => invoke<void>("open_external", { url }),
  libraryList: () => invoke<Entry[]>("library_list"),
  libraryImport: (path: string) => invoke<Entry>("library_import", { path }),
  demoModelPath: () => invoke<string | null>("demo_model_path"),
  // Model management: what deleting would remove (size, paths, outside the app's folders?),
  // deleting (outside only with confirmOutside), the file manager, the models folder.
  modelDeletePlan: (path: string) => invoke<DeletionPlan>("model_delete_plan", { path }),
  modelDelete: (path: string, confirmOutside: boolean) => invoke<number>("model_delete", { path, confirmOutside }),
  modelReveal: (path: string) => invoke<void>("model_reveal", { path }),
  modelsDirGet: () => invoke<string>("models_dir_get"),
  modelsDirSet: (path: string) => invoke<string>("models_dir_set", { path }),
  // Stored chats: rename, search, export (json | markdown) to a file, import a unicorn-chat JSON file.
  chatRename: (id: number, title: string) => invoke<ChatRecord>("chat_rename", { id, title }),
  chatSearch: (query: string) => invoke<ChatRecord[]>("chat_search", { query }),
  chatExport: (id: number, format: "json" | "markdown", path: string, overwrite = false) =>
    invoke<number>("chat_export", { id, format, path, overwrite }),
  chatImport: (path: string) => invoke<ChatRecord>("chat_import", { path }),
  // Presets (system prompt + sampling settings) and per-model sampling defaults.
  // `settings`: a JSON object's text (at most 64 KiB), opaque to the shell.
  presetSave: (name: string, system: string | null, settings: string) =>
    invoke<void>("preset_save", { name, system, settings }),
  presetsList: () => invoke<Preset[]>("presets_list"),
  presetDelete: (name: string) => invoke<boolean>("preset_delete", { name }),
  modelSettingsGet: (model: string) => invoke<string | null>("model_settings_get", { model }),
  modelSettingsSave: (model: string, settings: string) =>
    invoke<void>("model_settings_save", { model, settings }),
  // `slot`: the conversation's model ("main") or side-by-side mode's second ("side").
  chatLoad(slot: Slot, path: string, device: string, kvType: KvType, headType: HeadType, onProgress: (e: LoadEvent) => void) {
    const ch = new Channel<LoadEvent>();
    ch.onmessage = onProgress;
    return invoke<LoadedSummary>("chat_load", { path, device, kvType, headType, slot, onProgress: ch });
  },
  chatLoadCancel: () => invoke<void>("chat_load_cancel"),
  chatUnload: (slot: Slot) => invoke<void>("chat_unload", { slot }),
  // A new message, the last reply again, or an edited message; resolves with the
  // stored chat's id (main slot) once the turn is queued.
  chatSend(slot: Slot, turn: Turn, settings: ChatSettings, onEvent: (e: ChatEvent) => void) {
    const ch = new Channel<ChatEvent>();
    ch.onmessage = onEvent;
    return invoke<number | null>("chat_send", { turn, settings, slot, onEvent: ch });
  },
  // An image file dropped on the window, read by the shell (PNG, JPEG or WebP, bounded).
  chatImageRead: (path: string) => invoke<ImageFile>("chat_image_read", { path }),
  chatContextEstimate: (path: string, ctx: number, kvType: KvType) =>
    invoke<ContextEstimate>("chat_context_estimate", { path, ctx, kvType }),
  chatStop: () => invoke<void>("chat_stop"),
  chatReset: () => invoke<void>("chat_reset"),
  chatList: () => invoke<ChatRecord[]>("chat_list"),
  chatOpen: (id: number) => invoke<OpenedChat>("chat_open", { id }),
  chatDelete: (id: number) => invoke<boolean>("chat_delete", { id }),
  quantizeStart(source: string, to: string, onEvent: (e: QuantizeEvent) => void) {
    const ch = new Channel<QuantizeEvent>();
    ch.onmessage = onEvent;
    return invoke<number>("quantize_start", { source, to, onEvent: ch });
  },
  quantizePredict: (source: string, to: string) => invoke<QuantizePrediction>("quantize_predict", { source, to }),
  compareStart(base: string, quant: string, onEvent: (e: CompareEvent) => void) {
    const ch = new Channel<CompareEvent>();
    ch.onmessage = onEvent;
    return invoke<number>("compare_start", { base, quant, onEvent: ch });
  },
  jobCancel: (id: number) => invoke<boolean>("job_cancel", { id }),
  systemStats: () => invoke<SystemStats>("system_stats"),
  // The API server on 127.0.0.1 (`port` 0: any free port).
  serverStart: (path: string, port: number, apiKey: string | null, parallel: number) =>
    invoke<ServerStatus>("server_start", { path, port, apiKey, parallel }),
  serverStop: () => invoke<ServerStatus>("server_stop"),
  serverStatus: () => invoke<ServerStatus>("server_status"),
  hubList: (repo: string, revision: string | null) => invoke<HubListing>("hub_list", { repo, revision }),
  // Search the hub: format "any" | "gguf" | "safetensors"; sort "downloads" | "trending" | "likes".
  hubSearch: (query: string, format: string, sort: string, limit: number | null) =>
    invoke<HubSearchResult[]>("hub_search", { query, format, sort, limit }),
  // A repository's download choices, each GGUF quantization's fit at `ctx` tokens.
  hubPlan: (repo: string, revision: string | null, ctx: number | null) =>
    invoke<HubPlan>("hub_plan", { repo, revision, ctx }),
  // Downloads `files` of the repository (all of them when null).
  hubPull(repo: string, revision: string | null, files: string[] | null, onEvent: (e: PullEvent) => void) {
    const ch = new Channel<PullEvent>();
    ch.onmessage = onEvent;
    return invoke<number>("hub_pull", { repo, revision, files, onEvent: ch });
  },
  hubDiscard: (repo: string) => invoke<number>("hub_discard", { repo }),
  hubTokenSet: (token: string) => invoke<void>("hub_token_set", { token }),
  hubTokenPresent: () => invoke<boolean>("hub_token_present"),
};

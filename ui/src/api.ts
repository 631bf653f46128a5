// The app's commands, typed by the bindings generated from the Rust types
// (src/bindings, checked by the shell's `bindings_are_current` test).
import { Channel, invoke } from "@tauri-apps/api/core";
import type { ChatEvent } from "./bindings/ChatEvent";
import type { ChatRecord } from "./bindings/ChatRecord";
import type { CompareEvent } from "./bindings/CompareEvent";
import type { OpenedChat } from "./bindings/OpenedChat";
import type { ChatSettings } from "./bindings/ChatSettings";
import type { Entry } from "./bindings/Entry";
import type { HubListing } from "./bindings/HubListing";
import type { PullEvent } from "./bindings/PullEvent";
import type { LoadEvent } from "./bindings/LoadEvent";
import type { KvType } from "./bindings/KvType";
import type { HeadType } from "./bindings/HeadType";
import type { LoadedSummary } from "./bindings/LoadedSummary";
import type { QuantizeEvent } from "./bindings/QuantizeEvent";
import type { QuantizePrediction } from "./bindings/QuantizePrediction";
import type { Slot } from "./bindings/Slot";
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
  // `slot`: the conversation's model ("main") or side-by-side mode's second ("side").
  chatLoad(slot: Slot, path: string, device: string, kvType: KvType, headType: HeadType, onProgress: (e: LoadEvent) => void) {
    const ch = new Channel<LoadEvent>();
    ch.onmessage = onProgress;
    return invoke<LoadedSummary>("chat_load", { path, device, kvType, headType, slot, onProgress: ch });
  },
  chatLoadCancel: () => invoke<void>("chat_load_cancel"),
  chatUnload: (slot: Slot) => invoke<void>("chat_unload", { slot }),
  chatSend(slot: Slot, text: string, system: string | null, settings: ChatSettings, onEvent: (e: ChatEvent) => void) {
    const ch = new Channel<ChatEvent>();
    ch.onmessage = onEvent;
    return invoke<void>("chat_send", { text, system, settings, slot, onEvent: ch });
  },
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
  hubPull(repo: string, revision: string | null, onEvent: (e: PullEvent) => void) {
    const ch = new Channel<PullEvent>();
    ch.onmessage = onEvent;
    return invoke<number>("hub_pull", { repo, revision, onEvent: ch });
  },
  hubDiscard: (repo: string) => invoke<number>("hub_discard", { repo }),
  hubTokenSet: (token: string) => invoke<void>("hub_token_set", { token }),
  hubTokenPresent: () => invoke<boolean>("hub_token_present"),
};

// Streaming chat with the loaded model: multi-turn on the worker's KV cache, stop,
// system prompt, sampling, and each reply's measured TTFT and speed. Side by side,
// each turn also goes to a second model (typically the quantization's source) once
// the first has answered: run together they would share the cores, and neither
// measured speed would be the model's own.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, errorText } from "../api";
import type { ChatRecord } from "../bindings/ChatRecord";
import type { ChatSettings } from "../bindings/ChatSettings";
import type { LoadEvent } from "../bindings/LoadEvent";
import type { LoadedSummary } from "../bindings/LoadedSummary";
import type { Slot } from "../bindings/Slot";
import type { KvType } from "../bindings/KvType";
import type { HeadType } from "../bindings/HeadType";
import type { Stats } from "../bindings/Stats";
import { baseName, bytes, tokS } from "../format";
import { renderMarkdown, splitBlocks } from "../markdown";
import { device, headType, kvType, library, loaded, replies, selected } from "../store";

// `live`: a reply still streaming in.
type Turn = { role: "user" | "assistant"; text: string; live?: boolean; stats?: Stats; stop?: string; error?: string };
type Setter = (f: (t: Turn[]) => Turn[]) => void;

/** Streams `slot`'s reply into the last turn of `setTurns`; resolves with its figures. */
function stream(slot: Slot, text: string, system: string | null, settings: ChatSettings, setTurns: Setter): Promise<Stats | null> {
  const update = (f: (a: Turn) => Turn) => setTurns((t) => [...t.slice(0, -1), f(t[t.length - 1])]);
  // Tokens are shown in batches at most every 50 ms: re-rendering the Markdown on
  // every token costs the CPU the model needs (measured 4x slower decode on 2 cores).
  let pending = "";
  let timer: ReturnType<typeof setTimeout> | null = null;
  const flush = () => {
    timer = null;
    const chunk = pending;
    pending = "";
    if (chunk) update((a) => ({ ...a, text: a.text + chunk }));
  };
  return new Promise((resolve) => {
    api.chatSend(slot, text, system, settings, (e) => {
      if (e.event === "token") {
        pending += e.text;
        timer ??= setTimeout(flush, 50);
        return;
      }
      if (timer) clearTimeout(timer);
      flush();
      if (e.event === "done") {
        update((a) => ({ ...a, live: false, stats: e.stats, stop: e.stop_reason }));
        resolve(e.stats);
      } else {
        update((a) => ({ ...a, live: false, error: e.message }));
        resolve(null);
      }
    }).catch((err) => {
      update((a) => ({ ...a, live: false, error: errorText(err) }));
      resolve(null);
    });
  });
}

/** A click on a link in a reply: never followed in the app's window (the shell's
 * navigation guard would refuse it anyway); web links open in the system browser. */
function openLink(e: MouseEvent, onError: (m: string) => void) {
  const a = (e.target as Element | null)?.closest?.("a[href]") as HTMLAnchorElement | null;
  if (!a) return;
  e.preventDefault();
  api.openExternal(a.href).catch((err) => onError(errorText(err)));
}

/** Markdown rendered once per distinct text (a memo per block). */
function Html({ md }: { md: string }) {
  const html = useMemo(() => renderMarkdown(md), [md]);
  return <div dangerouslySetInnerHTML={{ __html: html }} />;
}

/** A reply: while it streams, its closed blocks are rendered once each and only the
 * open tail again on each update (constant work per token); finished, it is
 * rendered whole, once. Earlier replies are not re-rendered at all. */
function Reply({ text, live }: { text: string; live: boolean }) {
  if (!live) return <div class="text"><Html md={text} /></div>;
  const { blocks, tail } = splitBlocks(text);
  return (
    <div class="text">
      {blocks.map((b, i) => <Html key={i} md={b} />)}
      <Html key="tail" md={tail} />
    </div>
  );
}

function Messages({ id, turns, onError }: { id: string; turns: Turn[]; onError: (m: string) => void }) {
  return (
    <div class="messages" id={id} onClick={(e) => openLink(e, onError)}>
      {turns.map((t) => (
        <div class={`msg ${t.role}`}>
          {t.role === "assistant"
            ? <Reply text={t.text} live={t.live === true} />
            : <div class="text">{t.text}</div>}
          {t.error && <p class="error">{t.error}</p>}
          {t.stats && (
            <div class="stats">
              TTFT {t.stats.ttft_ms.toFixed(0)} ms · <span class="tok-s">{tokS(t.stats.decode_tok_s)}</span> · {t.stats.generated_tokens} tokens
              {t.stop === "cancelled" ? " · stopped" : ""}
            </div>
          )}
        </div>
      ))}
    </div>
  );
}

export function Chat() {
  const [turns, setTurns] = useState<Turn[]>([]);
  const [input, setInput] = useState("");
  const [system, setSystem] = useState("");
  const [busy, setBusy] = useState(false);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState("");
  const [temperature, setTemperature] = useState("");
  const [topP, setTopP] = useState("");
  const [maxTokens, setMaxTokens] = useState("512");
  const [history, setHistory] = useState<ChatRecord[]>([]);
  const [sideBySide, setSideBySide] = useState(false);
  const [side, setSide] = useState<LoadedSummary | null>(null);
  const [sideTurns, setSideTurns] = useState<Turn[]>([]);
  const [sideLoading, setSideLoading] = useState(false);
  // Weight bytes loaded of all, while a model loads.
  const [progress, setProgress] = useState<[number, number] | null>(null);
  const onProgress = (e: LoadEvent) => setProgress([e.progress.done, e.progress.total]);
  const end = useRef<HTMLDivElement>(null);
  const refreshHistory = () => api.chatList().then(setHistory, () => {});
  useEffect(() => void refreshHistory(), []);

  async function reopen(id: number) {
    setLoading(true);
    setError("");
    try {
      const opened = await api.chatOpen(id);
      loaded.value = opened.loaded;
      selected.value = opened.loaded.path;
      setSystem(opened.messages.find((m) => m.role === "system")?.content ?? "");
      const stored: Turn[] = opened.messages.filter((m) => m.role !== "system").map((m) => ({
        role: m.role === "user" ? "user" : "assistant",
        text: m.content,
        stats: m.stats ?? undefined,
      }));
      setTurns(stored);
      // The side model continues from the same stored history (without the figures,
      // which were the first model's).
      setSideTurns(side ? stored.map((t) => ({ ...t, stats: undefined })) : []);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setLoading(false);
    }
  }
  const model = selected.value;

  async function load(path: string) {
    setLoading(true);
    setError("");
    try {
      loaded.value = await api.chatLoad("main", path, device.value, kvType.value, headType.value, onProgress);
      setTurns([]);
      setSideTurns([]);
    } catch (e) {
      loaded.value = null;
      setError(errorText(e) === "cancelled" ? "Loading cancelled." : errorText(e));
    } finally {
      setLoading(false);
      setProgress(null);
    }
  }

  useEffect(() => {
    if (model && loaded.value?.path !== model) void load(model);
  }, [model]);
  useEffect(() => end.current?.scrollIntoView?.({ block: "end" }), [turns, sideTurns]);

  const num = (s: string) => (s.trim() === "" ? null : Number(s));

  async function loadSide(path: string) {
    setSideLoading(true);
    setError("");
    try {
      setSide(await api.chatLoad("side", path, device.value, kvType.value, headType.value, onProgress));
      setSideTurns([]);
      // The side model starts afresh: so must the first, to answer the same prompts.
      await api.chatReset();
      setTurns([]);
    } catch (e) {
      setSide(null);
      setError(errorText(e) === "cancelled" ? "Loading cancelled." : errorText(e));
    } finally {
      setSideLoading(false);
      setProgress(null);
    }
  }

  async function toggleSide(on: boolean) {
    setSideBySide(on);
    if (!on && side) {
      await api.chatUnload("side");
      setSide(null);
      setSideTurns([]);
    }
  }

  async function send() {
    const text = input.trim();
    if (!text || busy) return;
    setInput("");
    setBusy(true);
    const settings: ChatSettings = { temperature: num(temperature), top_p: num(topP), top_k: null, max_tokens: num(maxTokens), seed: null };
    const ask = (t: Turn[]) => [...t, { role: "user", text } as Turn, { role: "assistant", text: "", live: true } as Turn];
    setTurns(ask);
    const stats = await stream("main", text, system || null, settings, setTurns);
    if (stats) replies.value = [...replies.value, { at: Date.now(), stats }];
    void refreshHistory();
    if (side) {
      setSideTurns(ask);
      await stream("side", text, system || null, settings, setSideTurns);
    }
    setBusy(false);
  }

  return (
    <section id="chat">
      <h2>Chat</h2>
      <div class="row">
        <select id="chat-model" value={model ?? ""} onChange={(e) => (selected.value = (e.target as HTMLSelectElement).value)}>
          <option value="" disabled>Pick a model…</option>
          {library.value.filter((m) => m.present).map((m) => (
            <option key={m.path} value={m.path}>{m.repo ?? baseName(m.path)} ({m.quantization})</option>
          ))}
        </select>
        <span id="chat-status" class="hint">
          {loading ? "Loading…" : loaded.value ? `${loaded.value.architecture} on ${loaded.value.device} (KV cache ${loaded.value.kv_type}${loaded.value.head_type === "q8_0" ? ", Q8_0 head copy" : ""}), loaded in ${loaded.value.load_ms.toFixed(0)} ms${loaded.value.has_chat_template ? "" : " — no chat template: plain completion"}` : "No model loaded"}
        </span>
        <button id="new-chat" onClick={async () => { await api.chatReset(); setTurns([]); setSideTurns([]); }} disabled={busy || !loaded.value}>New chat</button>
      </div>
      <details>
        <summary>System prompt and sampling</summary>
        <textarea id="system" placeholder="System prompt (Gemma folds it into the first turn)" value={system}
          onInput={(e) => setSystem((e.target as HTMLTextAreaElement).value)} />
        <div class="row">
          <label>temperature <input id="temperature" size={4} placeholder="model" value={temperature} onInput={(e) => setTemperature((e.target as HTMLInputElement).value)} /></label>
          <label>top-p <input size={4} placeholder="model" value={topP} onInput={(e) => setTopP((e.target as HTMLInputElement).value)} /></label>
          <label>max tokens <input id="max-tokens" size={5} value={maxTokens} onInput={(e) => setMaxTokens((e.target as HTMLInputElement).value)} /></label>
          <label>device <select id="device" value={device.value} onChange={(e) => { device.value = (e.target as HTMLSelectElement).value; if (model) void load(model); }}>
            {["auto", "cpu", "cuda", "metal"].map((d) => <option key={d} value={d}>{d}</option>)}
          </select></label>
          <label title="How the KV cache holds keys and values: f16 halves f32's memory, q8_0 quarters it (on the CPU; a GPU keeps f32)">KV cache <select id="kv-type" value={kvType.value} onChange={(e) => { kvType.value = (e.target as HTMLSelectElement).value as KvType; if (model) void load(model); }}>
            {(["f16", "q8_0", "f32"] as KvType[]).map((k) => <option key={k} value={k}>{k}</option>)}
          </select></label>
          <label title="How the output head runs: as the model stores it, or a Q8_0 copy made at load of a dense (BF16/F16/F32) head, as an NF4 model's tied head is. At 4B NF4 decode ran 10.4 → 12.2 tok/s with KL divergence 2e-5 (measured, README). Files are unchanged; a quantized head is kept.">output head <select id="head-type" value={headType.value} onChange={(e) => { headType.value = (e.target as HTMLSelectElement).value as HeadType; if (model) void load(model); }}>
            {(["stored", "q8_0"] as HeadType[]).map((h) => <option key={h} value={h}>{h}</option>)}
          </select></label>
        </div>
      </details>
      <div class="row">
        <label><input id="side-by-side" type="checkbox" checked={sideBySide} disabled={busy}
          onChange={(e) => void toggleSide((e.target as HTMLInputElement).checked)} /> Side by side with</label>
        {sideBySide && (
          <select id="side-model" value={side?.path ?? ""} disabled={busy || sideLoading}
            onChange={(e) => void loadSide((e.target as HTMLSelectElement).value)}>
            <option value="" disabled>Pick a second model…</option>
            {library.value.filter((m) => m.present).map((m) => (
              <option key={m.path} value={m.path}>{m.repo ?? baseName(m.path)} ({m.quantization})</option>
            ))}
          </select>
        )}
        {sideBySide && <span id="side-status" class="hint">{sideLoading ? "Loading…" : side ? `${side.architecture}, loaded in ${side.load_ms.toFixed(0)} ms; each turn goes to it after the first model answers` : ""}</span>}
      </div>
      {progress && (
        <div class="row" id="loading">
          <progress id="load-progress" value={progress[0]} max={Math.max(1, progress[1])} />
          <span class="hint">{bytes(progress[0])} of {bytes(progress[1])} of weights</span>
          <button id="load-cancel" onClick={() => api.chatLoadCancel()}>Cancel</button>
        </div>
      )}
      {loaded.value?.device_note && <p class="hint" id="device-note">{loaded.value.device_note}</p>}
      {history.length > 0 && (
        <details id="history">
          <summary>Previous chats ({history.length})</summary>
          <ul>
            {history.map((c) => (
              <li key={c.id}>
                <button class="link" onClick={() => reopen(c.id)} disabled={busy}>{c.title}</button>{" "}
                <span class="hint">{baseName(c.model)} · {c.messages} messages · {new Date(c.created_at * 1000).toLocaleString()}</span>{" "}
                <button class="link" onClick={async () => { await api.chatDelete(c.id); void refreshHistory(); }}>delete</button>
              </li>
            ))}
          </ul>
        </details>
      )}
      {error && <p class="error">{error}</p>}
      {side
        ? (
          <div class="side-by-side">
            <div><h3>{baseName(loaded.value?.path ?? "")}</h3><Messages id="main-messages" turns={turns} onError={setError} /></div>
            <div><h3>{baseName(side.path)}</h3><Messages id="side-messages" turns={sideTurns} onError={setError} /></div>
          </div>
        )
        : <Messages id="main-messages" turns={turns} onError={setError} />}
      <div ref={end} />
      <form class="row composer" onSubmit={(e) => { e.preventDefault(); void send(); }}>
        <textarea id="prompt" placeholder={loaded.value ? "Message" : "Load a model first"} value={input}
          onInput={(e) => setInput((e.target as HTMLTextAreaElement).value)}
          onKeyDown={(e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); void send(); } }} />
        {busy
          ? <button id="stop" type="button" onClick={() => api.chatStop()}>Stop</button>
          : <button id="send" type="submit" disabled={!loaded.value || !input.trim()}>Send</button>}
      </form>
    </section>
  );
}

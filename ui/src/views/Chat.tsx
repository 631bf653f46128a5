// Streaming chat with the loaded model: multi-turn on the worker's KV cache, stop,
// system prompt, sampling, and each reply's measured TTFT and speed.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, errorText } from "../api";
import type { ChatRecord } from "../bindings/ChatRecord";
import type { Stats } from "../bindings/Stats";
import { baseName, tokS } from "../format";
import { renderMarkdown } from "../markdown";
import { library, loaded, replies, selected } from "../store";

type Turn = { role: "user" | "assistant"; text: string; stats?: Stats; stop?: string; error?: string };

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
      setTurns(opened.messages.filter((m) => m.role !== "system").map((m) => ({
        role: m.role === "user" ? "user" : "assistant",
        text: m.content,
        stats: m.stats ?? undefined,
      })));
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
      loaded.value = await api.chatLoad(path);
      setTurns([]);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setLoading(false);
    }
  }

  useEffect(() => {
    if (model && loaded.value?.path !== model) void load(model);
  }, [model]);
  useEffect(() => end.current?.scrollIntoView?.({ block: "end" }), [turns]);

  const num = (s: string) => (s.trim() === "" ? null : Number(s));

  async function send() {
    const text = input.trim();
    if (!text || busy) return;
    setInput("");
    setBusy(true);
    setTurns((t) => [...t, { role: "user", text }, { role: "assistant", text: "" }]);
    const update = (f: (a: Turn) => Turn) =>
      setTurns((t) => [...t.slice(0, -1), f(t[t.length - 1])]);
    // Tokens are shown in batches at most every 50 ms: re-rendering the Markdown on
    // every token costs the CPU the model needs (measured 4x slower decode on 2 cores).
    let pending = "";
    let timer: ReturnType<typeof setTimeout> | null = null;
    const flush = () => {
      timer = null;
      const text = pending;
      pending = "";
      if (text) update((a) => ({ ...a, text: a.text + text }));
    };
    try {
      await api.chatSend(text, system || null,
        { temperature: num(temperature), top_p: num(topP), top_k: null, max_tokens: num(maxTokens), seed: null },
        (e) => {
          if (e.event === "token") {
            pending += e.text;
            timer ??= setTimeout(flush, 50);
            return;
          }
          if (timer) clearTimeout(timer);
          flush();
          if (e.event === "done") {
            update((a) => ({ ...a, stats: e.stats, stop: e.stop_reason }));
            replies.value = [...replies.value, { at: Date.now(), stats: e.stats }];
            setBusy(false);
            void refreshHistory();
          } else {
            update((a) => ({ ...a, error: e.message }));
            setBusy(false);
          }
        });
    } catch (e) {
      update((a) => ({ ...a, error: errorText(e) }));
      setBusy(false);
    }
  }

  return (
    <section id="chat">
      <h2>Chat</h2>
      <div class="row">
        <select id="chat-model" value={model ?? ""} onChange={(e) => (selected.value = (e.target as HTMLSelectElement).value)}>
          <option value="" disabled>Pick a model…</option>
          {library.value.filter((m) => m.present).map((m) => (
            <option value={m.path}>{m.repo ?? baseName(m.path)} ({m.quantization})</option>
          ))}
        </select>
        <span id="chat-status" class="hint">
          {loading ? "Loading…" : loaded.value ? `${loaded.value.architecture}, loaded in ${loaded.value.load_ms.toFixed(0)} ms${loaded.value.has_chat_template ? "" : " — no chat template: plain completion"}` : "No model loaded"}
        </span>
        <button id="new-chat" onClick={async () => { await api.chatReset(); setTurns([]); }} disabled={busy || !loaded.value}>New chat</button>
      </div>
      <details>
        <summary>System prompt and sampling</summary>
        <textarea id="system" placeholder="System prompt (Gemma folds it into the first turn)" value={system}
          onInput={(e) => setSystem((e.target as HTMLTextAreaElement).value)} />
        <div class="row">
          <label>temperature <input id="temperature" size={4} placeholder="model" value={temperature} onInput={(e) => setTemperature((e.target as HTMLInputElement).value)} /></label>
          <label>top-p <input size={4} placeholder="model" value={topP} onInput={(e) => setTopP((e.target as HTMLInputElement).value)} /></label>
          <label>max tokens <input id="max-tokens" size={5} value={maxTokens} onInput={(e) => setMaxTokens((e.target as HTMLInputElement).value)} /></label>
        </div>
      </details>
      {history.length > 0 && (
        <details id="history">
          <summary>Previous chats ({history.length})</summary>
          <ul>
            {history.map((c) => (
              <li>
                <button class="link" onClick={() => reopen(c.id)} disabled={busy}>{c.title}</button>{" "}
                <span class="hint">{baseName(c.model)} · {c.messages} messages · {new Date(c.created_at * 1000).toLocaleString()}</span>{" "}
                <button class="link" onClick={async () => { await api.chatDelete(c.id); void refreshHistory(); }}>delete</button>
              </li>
            ))}
          </ul>
        </details>
      )}
      {error && <p class="error">{error}</p>}
      <div class="messages">
        {turns.map((t) => (
          <div class={`msg ${t.role}`}>
            {t.role === "assistant"
              ? <div class="text" dangerouslySetInnerHTML={{ __html: renderMarkdown(t.text) }} />
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
        <div ref={end} />
      </div>
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

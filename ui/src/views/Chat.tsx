// Streaming chat with the loaded model: multi-turn on the worker's KV cache within a
// context length and an overflow policy, stop, regenerate, edit and resend, copy,
// system prompt, every sampling setting with presets and per-model defaults, a
// sidebar of stored chats (search, rename, delete, export, import), and each reply's
// measured TTFT and speed. A model that sees images takes them with a message
// (pasted, picked or dropped: attachments.ts), shown as previews in the message and
// kept with the stored chat; the reply's figures count their tokens. Side by side,
// each turn also goes to a second model (typically the quantization's source) once
// the first has answered: run together they would share the cores, and neither
// measured speed would be the model's own.
// The conversation lives in chat-state.ts, so a reply streams on while another tab
// is shown.
import { memo } from "preact/compat";
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { Signal } from "@preact/signals";
import { api, errorText } from "../api";
import { attachError, attachFiles, attachments, IMAGE_TYPES, noImagesReason, pastedImages } from "../attachments";
import type { ChatRecord } from "../bindings/ChatRecord";
import type { ChatSettings } from "../bindings/ChatSettings";
import type { ContextEstimate } from "../bindings/ContextEstimate";
import type { LoadEvent } from "../bindings/LoadEvent";
import type { LoadedSummary } from "../bindings/LoadedSummary";
import type { Overflow } from "../bindings/Overflow";
import type { Slot } from "../bindings/Slot";
import type { Turn as TurnKind } from "../bindings/Turn";
import type { KvType } from "../bindings/KvType";
import type { HeadType } from "../bindings/HeadType";
import type { Stats } from "../bindings/Stats";
import { baseName, bytes, tokS } from "../format";
import { renderMarkdown, splitBlocks } from "../markdown";
import { device, headType, kvType, library, loaded, replies, selected } from "../store";
import {
  busy, chatId, contextUse, draft, EMPTY_FORM, form, formFromJson, hasSystem, settingsOpen, sideTurns, system, toSettings, turns,
  type Form, type Turn,
} from "../chat-state";

/** Streams `slot`'s reply to `turn` into the last message of `target`; resolves with
 * its figures (null when it failed). */
function stream(slot: Slot, turn: TurnKind, settings: ChatSettings, target: Signal<Turn[]>): Promise<Stats | null> {
  const update = (f: (a: Turn) => Turn) => {
    const t = target.value;
    target.value = [...t.slice(0, -1), f(t[t.length - 1])];
  };
  // Tokens are shown in batches at most every 100 ms (10 updates a second still read
  // as streaming): re-rendering the Markdown on every token costs the CPU the model
  // needs (measured 4x slower decode on 2 cores), and at 50 ms the app decoded at
  // 0.74-0.86x the CLI's speed on 2 cores with the chat view's panels open.
  let pending = "";
  let timer: ReturnType<typeof setTimeout> | null = null;
  const flush = () => {
    timer = null;
    const chunk = pending;
    pending = "";
    if (chunk) update((a) => ({ ...a, text: a.text + chunk }));
  };
  return new Promise((resolve) => {
    api.chatSend(slot, turn, settings, (e) => {
      if (e.event === "token") {
        pending += e.text;
        timer ??= setTimeout(flush, 100);
        return;
      }
      if (timer) clearTimeout(timer);
      flush();
      if (e.event === "done") {
        update((a) => ({ ...a, live: false, stats: e.stats, stop: e.stop_reason }));
        if (slot === "main") contextUse.value = e.context;
        resolve(e.stats);
      } else {
        update((a) => ({ ...a, live: false, error: e.message }));
        resolve(null);
      }
    }).then((id) => {
      if (slot === "main" && id !== null) chatId.value = id;
    }, (err) => {
      update((a) => ({ ...a, live: false, error: errorText(err) }));
      resolve(null);
    });
  });
}

/** Copies `text` to the clipboard (the async API, else the older command). */
async function copy(text: string) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const t = document.createElement("textarea");
    t.value = text;
    document.body.appendChild(t);
    t.select();
    document.execCommand("copy");
    t.remove();
  }
}

/** A click in the messages: a code block's copy button copies its code; a link is
 * never followed in the app's window (the shell's navigation guard would refuse it
 * anyway): web links open in the system browser. */
function onMessagesClick(e: MouseEvent, onError: (m: string) => void) {
  const target = e.target as Element | null;
  const button = target?.closest?.("button.copy-code");
  if (button) {
    const code = button.closest("pre")?.querySelector("code")?.textContent ?? "";
    void copy(code);
    button.textContent = "copied";
    return;
  }
  const a = target?.closest?.("a[href]") as HTMLAnchorElement | null;
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

const STOPS: Record<string, string> = {
  cancelled: " · stopped", context_full: " · the context is full", loop: " · stopped: it was repeating itself",
  max_tokens: " · max tokens reached",
};

type Actions = { onRegenerate?: () => void; onEdit?: (i: number, text: string) => void };

/** A message's images as previews; `onRemove`: each gets a remove button. */
function Thumbs({ images, onRemove }: { images: { name: string; thumb: string }[]; onRemove?: (i: number) => void }) {
  return (
    <div class="thumbs">
      {images.map((img, i) => (
        <figure class="thumb" key={i} title={img.name}>
          <img src={img.thumb} alt={img.name} />
          {onRemove && <button type="button" class="thumb-remove" title={`Remove ${img.name}`} onClick={() => onRemove(i)}>×</button>}
        </figure>
      ))}
    </div>
  );
}

/** The messages of `source`; only this re-renders as a reply streams in (it alone
 * reads the signal), not the whole view with its forms. */
function Messages({ id, source, onError, actions }: { id: string; source: Signal<Turn[]>; onError: (m: string) => void; actions?: Actions }) {
  const [editing, setEditing] = useState<number | null>(null);
  const [text, setText] = useState("");
  const end = useRef<HTMLDivElement>(null);
  const turns = source.value;
  useEffect(() => end.current?.scrollIntoView?.({ block: "end" }), [turns]);
  const last = turns.length - 1;
  return (
    <div class="messages" id={id} onClick={(e) => onMessagesClick(e, onError)}>
      {turns.map((t, i) => (
        <div class={`msg ${t.role}`} data-index={i}>
          {editing === i
            ? (
              <form class="edit" onSubmit={(e) => { e.preventDefault(); setEditing(null); actions?.onEdit?.(i, text); }}>
                <textarea class="edit-text" value={text} onInput={(e) => setText((e.target as HTMLTextAreaElement).value)} />
                {t.images?.length ? <p class="hint edit-images">The edited message is sent as text alone, without its images.</p> : null}
                <button class="edit-send" type="submit" disabled={!text.trim()}>Send</button>
                <button type="button" onClick={() => setEditing(null)}>Cancel</button>
              </form>
            )
            : t.role === "assistant"
              ? <Reply text={t.text} live={t.live === true} />
              : (
                <>
                  {t.images?.length ? <Thumbs images={t.images} /> : null}
                  {t.text && <div class="text">{t.text}</div>}
                </>
              )}
          {t.error && <p class="error">{t.error}</p>}
          {t.stats && (
            <div class="stats">
              TTFT {t.stats.ttft_ms.toFixed(0)} ms · <span class="tok-s">{tokS(t.stats.decode_tok_s)}</span> · {t.stats.generated_tokens} tokens
              {t.stats.image_tokens > 0 && (
                <span class="image-tokens" title="Prompt tokens that were the images' features (part of the prompt)">{` · ${t.stats.image_tokens} image tokens`}</span>
              )}
              {t.stats.draft && (
                <span class="draft-stats" title="Tokens the draft model proposed and the loaded model kept; the speedup is an estimate (the loaded model's own speed is timed on its plain steps)">
                  {` · draft ${t.stats.draft.accepted}/${t.stats.draft.drafted} accepted, est. ${t.stats.draft.est_speedup.toFixed(2)}×`}
                </span>
              )}
              {STOPS[t.stop ?? ""] ?? ""}
            </div>
          )}
          {!t.live && editing !== i && (
            <div class="msg-actions">
              <button class="link copy" title="Copy this message" onClick={() => void copy(t.text)}>copy</button>
              {actions?.onEdit && t.role === "user" && (
                <button class="link edit" title="Edit this message and answer it again" onClick={() => { setText(t.text); setEditing(i); }}>edit</button>
              )}
              {actions?.onRegenerate && t.role === "assistant" && i === last && !t.error && (
                <button class="link regenerate" title="Answer the last message again" onClick={actions.onRegenerate}>regenerate</button>
              )}
            </div>
          )}
        </div>
      ))}
      <div ref={end} />
    </div>
  );
}

/** A field of the settings form; the placeholder shows the default in force. */
function Field(props: { id: string; label: string; k: keyof Form; placeholder: string; size?: number; title?: string }) {
  return (
    <label title={props.title}>{props.label}{" "}
      <input id={props.id} size={props.size ?? 4} placeholder={props.placeholder} value={form.value[props.k] as string}
        onInput={(e) => (form.value = { ...form.value, [props.k]: (e.target as HTMLInputElement).value })} />
    </label>
  );
}

/** Stored chats: search (titles and messages), open, rename, delete, export, import.
 * Memoized (as the other panels): a streaming reply re-renders the view every 100 ms,
 * and the cores are the model's. */
const Sidebar = memo(function Sidebar(props: { disabled: boolean; onOpen: (id: number) => void; onNew: () => void; version: number }) {
  const [chats, setChats] = useState<ChatRecord[]>([]);
  const [query, setQuery] = useState("");
  const [renaming, setRenaming] = useState<number | null>(null);
  const [title, setTitle] = useState("");
  const [path, setPath] = useState("");
  const [note, setNote] = useState("");
  const refresh = () => (query.trim() ? api.chatSearch(query.trim()) : api.chatList()).then(setChats, (e) => setNote(errorText(e)));
  useEffect(() => void refresh(), [query, props.version]);
  const run = async (f: () => Promise<string>) => {
    setNote("");
    try {
      setNote(await f());
    } catch (e) {
      setNote(errorText(e));
    }
    void refresh();
  };
  const current = chatId.value;
  return (
    <aside id="chat-sidebar">
      <button id="new-chat" onClick={props.onNew} disabled={props.disabled} title="Ctrl+N">New chat</button>
      <input id="chat-search" type="search" placeholder="Search chats" value={query} onInput={(e) => setQuery((e.target as HTMLInputElement).value)} />
      <ul id="chat-list">
        {chats.map((c) => (
          <li key={c.id} class={c.id === current ? "current" : ""} data-chat={c.id}>
            {renaming === c.id
              ? (
                <form onSubmit={(e) => { e.preventDefault(); setRenaming(null); void run(async () => { await api.chatRename(c.id, title); return ""; }); }}>
                  <input class="rename-title" value={title} onInput={(e) => setTitle((e.target as HTMLInputElement).value)} />
                  <button class="rename-save" type="submit" disabled={!title.trim()}>save</button>
                </form>
              )
              : <button class="link open-chat" onClick={() => props.onOpen(c.id)} disabled={props.disabled} title={`${baseName(c.model)} · ${c.messages} messages · ${new Date(c.created_at * 1000).toLocaleString()}`}>{c.title}</button>}
            <span class="chat-actions">
              <button class="link rename" onClick={() => { setTitle(c.title); setRenaming(c.id); }}>rename</button>
              <button class="link delete" onClick={() => void run(async () => {
                await api.chatDelete(c.id);
                if (chatId.value === c.id) chatId.value = null;
                return "";
              })}>delete</button>
            </span>
          </li>
        ))}
      </ul>
      <details id="chat-files">
        <summary>Export / import</summary>
        <input id="chat-file" placeholder="/path/to/chat.json or .md" value={path} onInput={(e) => setPath((e.target as HTMLInputElement).value)} />
        <div class="row">
          <button id="export-md" disabled={current === null || !path} onClick={() => void run(async () => { await api.chatExport(current!, "markdown", path, false); return `Saved ${path}`; })}>Export Markdown</button>
          <button id="export-json" disabled={current === null || !path} onClick={() => void run(async () => { await api.chatExport(current!, "json", path, false); return `Saved ${path}`; })}>Export JSON</button>
          <button id="import-chat" disabled={!path} onClick={() => void run(async () => { const r = await api.chatImport(path); return `Imported "${r.title}"`; })}>Import JSON</button>
        </div>
      </details>
      {note && <p class="hint" id="chat-note">{note}</p>}
    </aside>
  );
});

/** The context setting's meter and the memory its length takes (an estimate). */
const ContextMeter = memo(function ContextMeter({ model, ctx }: { model: LoadedSummary | null; ctx: number }) {
  const [estimate, setEstimate] = useState<ContextEstimate | null>(null);
  useEffect(() => {
    setEstimate(null);
    if (model && ctx >= 16) api.chatContextEstimate(model.path, ctx, model.kv_type).then(setEstimate, () => {});
  }, [model?.path, model?.kv_type, ctx]);
  const use = contextUse.value;
  return (
    <div class="row" id="context-meter">
      <meter id="context-used" min={0} max={use?.limit ?? ctx} value={use?.used ?? 0} />
      <span class="hint" id="context-text">
        {use ? `${use.used} of ${use.limit} tokens` : `0 of ${ctx} tokens`}
        {use && use.dropped_tokens > 0 ? ` · ${use.dropped_tokens} earlier tokens out of context (${use.overflow})` : ""}
        {estimate ? ` · ${ctx} tokens take about ${bytes(estimate.kv_cache_bytes)} of KV cache (estimate${estimate.fits ? "" : "; more than this machine has free"})` : ""}
      </span>
    </div>
  );
});

/** Presets (system prompt + settings, saved in the library) and the loaded model's
 * remembered defaults. */
const Presets = memo(function Presets({ model }: { model: string | null }) {
  const [presets, setPresets] = useState<{ name: string; system: string; settings: string }[]>([]);
  const [name, setName] = useState("");
  const [note, setNote] = useState("");
  const refresh = () => api.presetsList().then(setPresets, (e) => setNote(errorText(e)));
  useEffect(() => void refresh(), []);
  const act = async (f: () => Promise<unknown>, ok: string) => {
    try {
      await f();
      setNote(ok);
      void refresh();
    } catch (e) {
      setNote(errorText(e));
    }
  };
  return (
    <div class="row" id="presets">
      <select id="preset" value="" onChange={(e) => {
        const p = presets.find((x) => x.name === (e.target as HTMLSelectElement).value);
        if (p) { system.value = p.system; form.value = formFromJson(p.settings); setNote(`Preset "${p.name}" applied`); }
      }}>
        <option value="">Presets…</option>
        {presets.map((p) => <option key={p.name} value={p.name}>{p.name}</option>)}
      </select>
      <input id="preset-name" size={12} placeholder="preset name" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
      <button id="preset-save" disabled={!name.trim()} onClick={() => void act(() => api.presetSave(name.trim(), system.value, JSON.stringify(form.value)), `Saved preset "${name.trim()}"`)}>Save preset</button>
      <button id="preset-delete" disabled={!presets.some((p) => p.name === name.trim())} onClick={() => void act(() => api.presetDelete(name.trim()), `Deleted preset "${name.trim()}"`)}>Delete preset</button>
      <button id="model-defaults-save" disabled={!model} title="Use these settings whenever this model is loaded"
        onClick={() => void act(() => api.modelSettingsSave(model!, JSON.stringify(form.value)), "Remembered for this model")}>Remember for this model</button>
      <button id="settings-reset" onClick={() => { form.value = EMPTY_FORM; setNote("Settings back to the model's defaults"); }}>Defaults</button>
      {note && <span class="hint" id="preset-note">{note}</span>}
    </div>
  );
});

/** Whether this run of the app has tried to reopen the chat open when it last closed. */
let restoreTried = false;

export function Chat() {
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState("");
  // What the conversation shown lacks that the user should know (one line), or "".
  const [notice, setNotice] = useState("");
  const [sideBySide, setSideBySide] = useState(false);
  const [side, setSide] = useState<LoadedSummary | null>(null);
  const [sideLoading, setSideLoading] = useState(false);
  const [version, setVersion] = useState(0);
  // Weight bytes loaded of all, while a model loads.
  const [progress, setProgress] = useState<[number, number] | null>(null);
  const onProgress = (e: LoadEvent) => setProgress([e.progress.done, e.progress.total]);
  const model = selected.value;
  const summary = loaded.value;
  const defaults = summary?.sampling;

  async function reopen(id: number): Promise<boolean> {
    setLoading(true);
    setError("");
    try {
      const opened = await api.chatOpen(id);
      loaded.value = opened.loaded;
      selected.value = opened.loaded.path;
      const sys = opened.messages.find((m) => m.role === "system");
      hasSystem.value = sys !== undefined;
      system.value = sys?.content ?? "";
      const stored: Turn[] = opened.messages.flatMap((m, i) => m.role === "system" ? [] : [{
        role: m.role === "user" ? "user" : "assistant",
        text: m.content,
        images: opened.images[i]?.length ? opened.images[i] : undefined,
        stats: m.stats ?? undefined,
      }]);
      turns.value = stored;
      chatId.value = id;
      contextUse.value = null;
      // Said when the model could not take the chat's images again (it goes on
      // with the text).
      setNotice(opened.notice ?? "");
      // The side model continues from the same stored history (without the figures,
      // which were the first model's).
      sideTurns.value = side ? stored.map((t) => ({ ...t, stats: undefined })) : [];
      return true;
    } catch (e) {
      setError(errorText(e));
      if (chatId.value === id) chatId.value = null;
      return false;
    } finally {
      setLoading(false);
    }
  }

  async function load(path: string) {
    setLoading(true);
    setError("");
    try {
      loaded.value = await api.chatLoad("main", path, device.value, kvType.value, headType.value, onProgress);
      setNotice("");
      turns.value = [];
      sideTurns.value = [];
      chatId.value = null;
      contextUse.value = null;
      // This model's remembered settings, if the user saved some.
      const saved = await api.modelSettingsGet(path).catch(() => null);
      if (saved) form.value = formFromJson(saved);
    } catch (e) {
      loaded.value = null;
      setError(errorText(e) === "cancelled" ? "Loading cancelled." : errorText(e));
    } finally {
      setLoading(false);
      setProgress(null);
    }
  }

  useEffect(() => {
    // The first time the view opens after a start: the chat that was open, with its
    // model (else, or if it is gone, the selected model).
    if (!restoreTried && !loaded.value && chatId.value !== null && turns.value.length === 0) {
      restoreTried = true;
      void reopen(chatId.value).then((ok) => {
        if (!ok && model && loaded.value?.path !== model) void load(model);
      });
      return;
    }
    restoreTried = true;
    if (model && loaded.value?.path !== model) void load(model);
  }, [model]);
  useEffect(() => {
    const onNew = () => void newChat();
    window.addEventListener("unicorn:new-chat", onNew);
    return () => window.removeEventListener("unicorn:new-chat", onNew);
  }, []);

  async function loadSide(path: string) {
    setSideLoading(true);
    setError("");
    try {
      setSide(await api.chatLoad("side", path, device.value, kvType.value, headType.value, onProgress));
      sideTurns.value = [];
      // The side model starts afresh: so must the first, to answer the same prompts.
      await newChat();
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
      sideTurns.value = [];
    }
  }

  async function newChat() {
    if (busy.value) return;
    await api.chatReset().catch(() => {});
    setNotice("");
    turns.value = [];
    sideTurns.value = [];
    chatId.value = null;
    contextUse.value = null;
    hasSystem.value = false;
    document.getElementById("prompt")?.focus();
  }

  /** Runs one turn on the main model, then the side one; `shown` rewrites the
   * messages for it (the new reply streams into the last). */
  async function turn(kind: TurnKind, shown: (t: Turn[]) => Turn[]) {
    const settings = toSettings(form.value);
    if (typeof settings === "string") {
      setError(settings);
      return;
    }
    setError("");
    busy.value = true;
    turns.value = shown(turns.value);
    const stats = await stream("main", kind, settings, turns);
    if (stats) replies.value = [...replies.value, { at: Date.now(), stats }];
    setVersion((v) => v + 1);
    if (side) {
      sideTurns.value = shown(sideTurns.value);
      await stream("side", kind, settings, sideTurns);
    }
    busy.value = false;
  }

  async function send() {
    const text = draft.value.trim();
    const images = attachments.value;
    if ((!text && images.length === 0) || busy.value) return;
    draft.value = "";
    attachments.value = [];
    attachError.value = "";
    if (turns.value.length === 0) hasSystem.value = system.value.trim() !== "";
    const live: Turn = { role: "assistant", text: "", live: true };
    const shown = images.length ? images.map(({ name, thumb }) => ({ name, thumb })) : undefined;
    await turn({ kind: "new", text, system: system.value || null, images }, (t) => [...t, { role: "user", text, images: shown }, live]);
  }

  const regenerate = () => void turn({ kind: "regenerate" }, (t) => [...t.slice(0, -1), { role: "assistant", text: "", live: true }]);
  const edit = (i: number, text: string) => void turn(
    { kind: "edit", index: i + (hasSystem.value ? 1 : 0), text },
    (t) => [...t.slice(0, i), { role: "user", text }, { role: "assistant", text: "", live: true }],
  );
  const ctx = Number(form.value.ctx) || summary?.ctx_default || 0;
  // Stable callbacks, so the memoized sidebar stays put while a reply streams.
  const latest = useRef({ reopen, newChat });
  latest.current = { reopen, newChat };
  const onOpen = useCallback((id: number) => void latest.current.reopen(id), []);
  const onNew = useCallback(() => void latest.current.newChat(), []);
  const actions: Actions | undefined = busy.value ? undefined : { onRegenerate: regenerate, onEdit: edit };

  return (
    <section id="chat" class="with-sidebar">
      <Sidebar disabled={busy.value || loading} onOpen={onOpen} onNew={onNew} version={version} />
      <div class="chat-main">
        <h2>Chat</h2>
        <div class="row">
          <select id="chat-model" value={model ?? ""} onChange={(e) => (selected.value = (e.target as HTMLSelectElement).value)}>
            <option value="" disabled>Pick a model…</option>
            {library.value.filter((m) => m.present).map((m) => (
              <option key={m.path} value={m.path}>{m.repo ?? baseName(m.path)} ({m.quantization})</option>
            ))}
          </select>
          <span id="chat-status" class="hint">
            {loading ? "Loading…" : summary ? `${summary.architecture} on ${summary.device} (KV cache ${summary.kv_type}${summary.head_type === "q8_0" ? ", Q8_0 head copy" : ""}), loaded in ${summary.load_ms.toFixed(0)} ms${summary.has_chat_template ? "" : " — no chat template: plain completion"}` : "No model loaded"}
          </span>
        </div>
        <details id="chat-settings" open={settingsOpen.value} onToggle={(e) => (settingsOpen.value = (e.target as HTMLDetailsElement).open)}>
          <summary>System prompt and sampling</summary>
          <textarea id="system" placeholder="System prompt (Gemma folds it into the first turn)" value={system.value}
            onInput={(e) => (system.value = (e.target as HTMLTextAreaElement).value)} />
          <p class="hint" id="sampling-source">
            Empty fields take {summary?.sampling_from_model ? "the model's recommended sampling (its generation_config.json)" : "Unicorn's defaults (the model recommends none)"}, shown greyed; temperature 0 is greedy, without the repeat penalty unless one is set.
          </p>
          <div class="row">
            <Field id="temperature" label="temperature" k="temperature" placeholder={defaults ? `${+defaults.temperature.toFixed(2)}` : "model"} />
            <Field id="top-k" label="top-k" k="top_k" placeholder={defaults ? `${defaults.top_k}` : "model"} />
            <Field id="top-p" label="top-p" k="top_p" placeholder={defaults ? `${+defaults.top_p.toFixed(2)}` : "model"} />
            <Field id="min-p" label="min-p" k="min_p" placeholder={defaults ? `${+defaults.min_p.toFixed(2)}` : "model"} />
            <Field id="repeat-penalty" label="repeat penalty" k="repeat_penalty" placeholder={defaults ? `${+defaults.repeat_penalty.toFixed(2)}` : "model"} title="1 = off; with temperature 0 the default is off" />
            <Field id="max-tokens" label="max tokens" k="max_tokens" placeholder="512" size={5} />
            <Field id="seed" label="seed" k="seed" placeholder={defaults ? `${defaults.seed}` : "42"} size={6} />
          </div>
          <div class="row">
            <label>stop strings <textarea id="stop-strings" rows={1} placeholder="one per line" value={form.value.stop}
              onInput={(e) => (form.value = { ...form.value, stop: (e.target as HTMLTextAreaElement).value })} /></label>
            <label title="End a reply that repeats one block of tokens back to back"><input id="stop-on-loop" type="checkbox" checked={form.value.stop_on_loop}
              onChange={(e) => (form.value = { ...form.value, stop_on_loop: (e.target as HTMLInputElement).checked })} /> stop a reply that loops</label>
          </div>
          <div class="row">
            <Field id="ctx" label="context" k="ctx" placeholder={summary ? `${summary.ctx_default}` : "model"} size={7}
              title={summary ? `The model takes up to ${summary.context_length} tokens; the default is clamped to what fits in memory` : undefined} />
            <label title="What happens when the conversation outgrows the context">when full <select id="overflow" value={form.value.overflow}
              onChange={(e) => (form.value = { ...form.value, overflow: (e.target as HTMLSelectElement).value as Overflow })}>
              <option value="drop-oldest">drop the oldest turns</option>
              <option value="rolling">rolling window</option>
              <option value="stop">stop and tell me</option>
            </select></label>
            <label title="A smaller model with the same vocabulary proposes tokens that the loaded one checks in one pass (speculative decoding): the reply is the loaded model's, faster when the draft guesses well. A quantized copy of the model drafts well.">draft <select id="draft-model" value={form.value.draft}
              onChange={(e) => (form.value = { ...form.value, draft: (e.target as HTMLSelectElement).value })}>
              <option value="">none</option>
              {library.value.filter((m) => m.present && m.path !== summary?.path).map((m) => (
                <option key={m.path} value={m.path}>{m.repo ?? baseName(m.path)} ({m.quantization})</option>
              ))}
            </select></label>
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
          <Presets model={summary?.path ?? null} />
        </details>
        <ContextMeter model={summary} ctx={ctx} />
        <div class="row">
          <label><input id="side-by-side" type="checkbox" checked={sideBySide} disabled={busy.value}
            onChange={(e) => void toggleSide((e.target as HTMLInputElement).checked)} /> Side by side with</label>
          {sideBySide && (
            <select id="side-model" value={side?.path ?? ""} disabled={busy.value || sideLoading}
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
        {summary?.device_note && <p class="hint" id="device-note">{summary.device_note}</p>}
        {error && <p class="error">{error}</p>}
        {notice && <p class="hint" id="chat-notice">{notice}</p>}
        {side
          ? (
            <div class="side-by-side">
              <div><h3>{baseName(summary?.path ?? "")}</h3><Messages id="main-messages" source={turns} onError={setError} actions={actions} /></div>
              <div><h3>{baseName(side.path)}</h3><Messages id="side-messages" source={sideTurns} onError={setError} /></div>
            </div>
          )
          : <Messages id="main-messages" source={turns} onError={setError} actions={actions} />}
        {attachments.value.length > 0 && (
          <div id="attachments">
            <Thumbs images={attachments.value} onRemove={(i) => (attachments.value = attachments.value.filter((_, k) => k !== i))} />
          </div>
        )}
        {attachError.value && <p class="error" id="attach-error">{attachError.value}</p>}
        <form class="row composer" onSubmit={(e) => { e.preventDefault(); void send(); }}>
          {summary?.images
            ? (
              <>
                <button id="attach" type="button" title={`Attach images (PNG, JPEG or WebP; up to ${summary.images.max_per_message}, each ${summary.images.tokens_per_image} tokens): or paste one, or drop files on the window`}
                  onClick={() => document.getElementById("attach-file")?.click()}>Attach</button>
                <input id="attach-file" type="file" accept={IMAGE_TYPES.join(",")} multiple hidden
                  onChange={(e) => {
                    const input = e.target as HTMLInputElement;
                    void attachFiles(Array.from(input.files ?? []));
                    input.value = "";
                  }} />
              </>
            )
            : summary && <span id="no-images" class="hint" title={noImagesReason(summary.path)}>Text only</span>}
          <textarea id="prompt" placeholder={summary ? "Message (Enter sends, Shift+Enter a new line)" : "Load a model first"} value={draft.value}
            onInput={(e) => (draft.value = (e.target as HTMLTextAreaElement).value)}
            onPaste={(e) => {
              const files = pastedImages(e.clipboardData);
              if (files.length) {
                e.preventDefault();
                void attachFiles(files);
              }
            }}
            onKeyDown={(e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); void send(); } }} />
          {busy.value
            ? <button id="stop" type="button" title="Esc" onClick={() => api.chatStop()}>Stop</button>
            : <button id="send" type="submit" disabled={!summary || (!draft.value.trim() && attachments.value.length === 0)}>Send</button>}
        </form>
      </div>
    </section>
  );
}

// The user's models; drop a .gguf or a model folder anywhere on the window to add
// one (main.tsx routes Tauri's drop event to importPaths, as the Import field does).
// Each row: its disk use, Reveal in folder, Unload when loaded, Delete (a confirmation
// that shows the size and the paths; a second one when they are outside the app's
// folders). An empty library shows a welcome with models that suit this machine.
import { useEffect, useState } from "preact/hooks";
import { api, errorText } from "../api";
import type { DeletionPlan } from "../bindings/DeletionPlan";
import type { Entry } from "../bindings/Entry";
import { baseName, bytes, params } from "../format";
import { downloadQuery, library, loaded, selected, view } from "../store";

export async function refreshLibrary() {
  library.value = await api.libraryList();
}

/** Imports each path; returns the errors, one line per refused path. */
export async function importPaths(paths: string[]): Promise<string[]> {
  const errors: string[] = [];
  for (const p of paths) {
    try {
      await api.libraryImport(p);
    } catch (e) {
      errors.push(errorText(e));
    }
  }
  await refreshLibrary();
  return errors;
}

/** Gemma 3 sizes suggested on first launch: the instruction-tuned GGUF repositories. */
const SUGGESTED = [
  { name: "Gemma 3 270M", repo: "unsloth/gemma-3-270m-it-GGUF", params: 268e6 },
  { name: "Gemma 3 1B", repo: "unsloth/gemma-3-1b-it-GGUF", params: 1.0e9 },
  { name: "Gemma 3 4B", repo: "unsloth/gemma-3-4b-it-GGUF", params: 3.88e9 },
];
/** Quantizations from best to smallest, with their typical bits per weight. */
const QUANTS = [
  { name: "Q8_0", bpw: 8.5 },
  { name: "Q6_K", bpw: 6.56 },
  { name: "Q4_K_M", bpw: 4.85 },
];

/**
 * The best quantization of a model with `n` weights that fits in `available` bytes,
 * and the memory it needs: weights, plus a fifth for the KV cache at a moderate
 * context and the runtime, plus 512 MiB. A rough estimate, labelled as one.
 */
export function suggestQuant(n: number, available: number): { quant: string; need: number } | null {
  for (const q of QUANTS) {
    const need = (n * q.bpw) / 8 * 1.2 + 512 * 2 ** 20;
    if (need <= available) return { quant: q.name, need };
  }
  return null;
}

function Welcome() {
  const [available, setAvailable] = useState<number | null>(null);
  useEffect(() => {
    api.systemStats()
      .then((s) => setAvailable(Math.max(0, s.total_memory - s.used_memory)))
      .catch(() => setAvailable(null));
  }, []);
  const download = (repo: string) => {
    downloadQuery.value = repo;
    view.value = "download";
  };
  return (
    <div id="welcome" class="card">
      <h3>No models yet</h3>
      <p class="hint">
        Drop a .gguf file or a model folder anywhere on this window to add one you already have, or
        download one of these (they suit this machine{available != null ? `: ${bytes(available)} of memory free now` : ""}).
      </p>
      <table id="suggested">
        <thead>
          <tr><th>model</th><th>quantization that fits</th><th>memory needed (estimate)</th><th /></tr>
        </thead>
        <tbody>
          {SUGGESTED.map((m) => {
            const fit = available == null ? null : suggestQuant(m.params, available);
            return (
              <tr key={m.repo} data-repo={m.repo}>
                <td title={m.repo}>{m.name}</td>
                <td>{available == null ? "–" : fit ? fit.quant : "too large for the free memory"}</td>
                <td>{fit ? `≈ ${bytes(fit.need)}` : "–"}</td>
                <td class="actions">
                  <button class="suggest-download" onClick={() => download(m.repo)}>Download…</button>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <p class="hint">Estimates: weights at the quantization's typical bits per weight, plus a fifth for the KV cache and runtime, plus 512 MiB.</p>
    </div>
  );
}

/** The delete confirmation of one model: what goes and how much; outside the app's folders, a second confirmation. */
// onDone: null when cancelled, the error's text, or the bytes freed.
function DeleteConfirm(props: { plan: DeletionPlan; onDone: (result: string | number | null) => void }) {
  const { plan } = props;
  const [outsideOk, setOutsideOk] = useState(false);
  const [busy, setBusy] = useState(false);
  const go = async () => {
    setBusy(true);
    try {
      if (loaded.value?.path === plan.path) {
        await api.chatUnload("main");
        loaded.value = null;
      }
      props.onDone(await api.modelDelete(plan.path, plan.outside && outsideOk));
    } catch (e) {
      props.onDone(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div id="delete-confirm" class="card warning">
      <p>
        Delete <b>{bytes(plan.bytes)}</b> from disk? This removes:
      </p>
      <ul>{plan.targets.map((t) => <li key={t}><code>{t}</code></li>)}</ul>
      {plan.outside && (
        <label class="row">
          <input id="delete-outside-ok" type="checkbox" checked={outsideOk}
            onChange={(e) => setOutsideOk((e.target as HTMLInputElement).checked)} />
          These files are outside the app's models folder and the Hugging Face cache (perhaps your own copy). Delete them anyway.
        </label>
      )}
      <div class="row">
        <button id="delete-confirm-yes" disabled={busy || (plan.outside && !outsideOk)} onClick={go}>
          Delete {bytes(plan.bytes)}
        </button>
        <button id="delete-cancel" disabled={busy} onClick={() => props.onDone(null)}>Cancel</button>
      </div>
    </div>
  );
}

function ModelsFolder() {
  const [dir, setDir] = useState("");
  const [note, setNote] = useState<{ error: boolean; text: string } | null>(null);
  useEffect(() => {
    api.modelsDirGet().then(setDir).catch((e) => setNote({ error: true, text: errorText(e) }));
  }, []);
  return (
    <form
      class="row"
      id="models-dir-form"
      onSubmit={async (e) => {
        e.preventDefault();
        try {
          const set = await api.modelsDirSet(dir.trim());
          setDir(set);
          setNote({ error: false, text: `New models are written to ${set}` });
        } catch (err) {
          setNote({ error: true, text: errorText(err) });
        }
      }}
    >
      <label for="models-dir">Models folder</label>
      <input id="models-dir" value={dir} placeholder="/path/to/models"
        onInput={(e) => setDir((e.target as HTMLInputElement).value)} />
      <button id="models-dir-save" type="submit" disabled={!dir.trim()}>Set</button>
      {note && <span class={note.error ? "error" : "hint"}>{note.text}</span>}
    </form>
  );
}

export function Library(props: { dropErrors: string[] }) {
  const [path, setPath] = useState("");
  const [errors, setErrors] = useState<string[]>([]);
  const [plan, setPlan] = useState<DeletionPlan | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const shown = [...props.dropErrors, ...errors];
  const open = (p: string, v: "chat" | "quantize") => {
    selected.value = p;
    view.value = v;
  };
  const act = async (f: () => Promise<unknown>) => {
    try {
      await f();
    } catch (e) {
      setErrors([errorText(e)]);
    }
  };
  const askDelete = (m: Entry) =>
    act(async () => {
      setNotice(null);
      setErrors([]);
      setPlan(await api.modelDeletePlan(m.path));
    });
  const deleted = async (result: string | number | null, p: DeletionPlan) => {
    setPlan(null);
    if (typeof result === "string") setErrors([result]);
    else if (typeof result === "number") setNotice(`Deleted ${baseName(p.path)}: ${bytes(result)} freed.`);
    if (result !== null) await refreshLibrary();
  };
  return (
    <section id="library">
      <h2>Library</h2>
      <p class="hint">Drop a .gguf file or a model folder anywhere on this window to add it.</p>
      <form
        class="row"
        onSubmit={async (e) => {
          e.preventDefault();
          setErrors(await importPaths([path.trim()]));
        }}
      >
        <input id="import-path" placeholder="/path/to/model.gguf or model folder" value={path}
          onInput={(e) => setPath((e.target as HTMLInputElement).value)} />
        <button id="import" type="submit" disabled={!path.trim()}>Import</button>
      </form>
      {shown.map((e) => <p class="error">{e}</p>)}
      {notice && <p class="hint" id="library-notice">{notice}</p>}
      {plan && <DeleteConfirm plan={plan} onDone={(e) => deleted(e, plan)} />}
      {library.value.length === 0 ? (
        <Welcome />
      ) : (
        <table>
          <thead>
            <tr><th>model</th><th>format</th><th>quantization</th><th>architecture</th><th>size</th><th>on disk</th><th>parameters</th><th>source</th><th /></tr>
          </thead>
          <tbody>
            {library.value.map((m) => {
              const isLoaded = loaded.value?.path === m.path;
              return (
                // Keyed by path: a refresh that reorders rows must not hand a row's buttons
                // (and a click in flight) to another model.
                <tr key={m.path} class={m.present ? "" : "missing"} data-path={m.path}>
                  <td title={m.path}>{m.repo ?? baseName(m.path)}</td>
                  <td>{m.format}</td>
                  <td>{m.quantization}</td>
                  <td>{m.architecture}</td>
                  <td>{bytes(m.size_bytes)}</td>
                  <td class="disk" title="what deleting it frees (a model from the hub: its whole repository folder)">
                    {m.present ? bytes(m.disk_bytes) : "missing"}
                  </td>
                  <td>{params(m.parameters)}</td>
                  <td>{m.source}</td>
                  <td class="actions">
                    <button class="chat" disabled={!m.present} onClick={() => open(m.path, "chat")}>Chat</button>
                    <button class="quantize" disabled={!m.present} onClick={() => open(m.path, "quantize")}>Quantize</button>
                    {isLoaded && (
                      <button class="unload" onClick={() => act(async () => {
                        await api.chatUnload("main");
                        loaded.value = null;
                      })}>Unload</button>
                    )}
                    <button class="reveal" disabled={!m.present} onClick={() => act(() => api.modelReveal(m.path))}>Reveal</button>
                    <button class="delete" disabled={!m.present} onClick={() => askDelete(m)}>Delete…</button>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <ModelsFolder />
    </section>
  );
}

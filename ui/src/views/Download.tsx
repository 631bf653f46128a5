// Download from the Hugging Face hub into its standard cache. Search the hub (GGUF
// or safetensors, by downloads, trending or likes: downloads, likes, licence and
// gated shown), or name a repository; its page offers what it holds: one row per GGUF
// quantization with size, bits per weight and whether it fits at the chosen context
// (the engine's estimate from the file's header, fetched with a range request; the
// best fit marked), the vision projector, or the files the engine reads of a
// safetensors model. Exactly the chosen files are downloaded, with progress, rate
// and ETA; pause (the partial file stays and the next download resumes it), cancel
// (the partial file is deleted), and the token gated models need.
import { useEffect, useState } from "preact/hooks";
import { api, errorText } from "../api";
import type { HubPlan } from "../bindings/HubPlan";
import type { HubQuant } from "../bindings/HubQuant";
import type { HubSearchResult } from "../bindings/HubSearchResult";
import { bytes, duration, params } from "../format";
import { downloadQuery, selected, view } from "../store";
import { refreshLibrary } from "./Library";

type Progress = { done: number; total: number; rate: number; eta: number | null; file: string };

function gatedText(g: string): string {
  return g === "manual" ? "gated (authors approve)" : g === "auto" ? "gated (accept licence)" : "open";
}

export function Download() {
  const [query, setQuery] = useState("");
  const [format, setFormat] = useState("gguf");
  const [sort, setSort] = useState("downloads");
  const [results, setResults] = useState<HubSearchResult[] | null>(null);
  const [repo, setRepo] = useState("");
  const [ctx, setCtx] = useState(4096);
  const [plan, setPlan] = useState<HubPlan | null>(null);
  const [withMmproj, setWithMmproj] = useState(false);
  const [pulling, setPulling] = useState<string[] | null>(null);
  const [job, setJob] = useState<number | null>(null);
  const [progress, setProgress] = useState<Progress | null>(null);
  const [message, setMessage] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const [token, setToken] = useState("");
  const [hasToken, setHasToken] = useState(false);
  useEffect(() => void api.hubTokenPresent().then(setHasToken), []);
  // A model the welcome view suggested: its repository page, straight away.
  useEffect(() => {
    const suggested = downloadQuery.value;
    if (suggested) {
      downloadQuery.value = null;
      setQuery(suggested);
      void open(suggested);
    }
  }, []);
  const [pulled, setPulled] = useState<string | null>(null);

  async function search() {
    setError("");
    setBusy(true);
    try {
      setResults(await api.hubSearch(query.trim(), format, sort, 30));
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  }

  async function open(id: string, atCtx = ctx) {
    setError("");
    setMessage("");
    setRepo(id);
    setBusy(true);
    try {
      setPlan(await api.hubPlan(id.trim(), null, atCtx));
    } catch (e) {
      setPlan(null);
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  }

  async function pull(files: string[] | null) {
    if (!plan) return;
    setError("");
    setMessage("");
    setPulling(files);
    try {
      const id = await api.hubPull(plan.repo, null, files, (e) => {
        if (e.event === "progress") {
          const p = e.progress;
          setProgress({ done: p.done, total: p.total, rate: p.per_sec, eta: p.eta_s, file: p.item });
          return;
        }
        setJob(null);
        if (e.event === "done") {
          setProgress(null);
          setMessage(`Downloaded; in the library: ${e.models.join(", ") || "no model files"}`);
          setPulled(e.models[0] ?? null);
          void refreshLibrary();
        } else if (e.event === "paused") setMessage("Paused; Download resumes where it stopped.");
        else {
          setProgress(null);
          setError(e.message);
        }
      });
      setJob(id);
    } catch (e) {
      setError(errorText(e));
    }
  }

  async function cancel() {
    if (job !== null) await api.jobCancel(job);
    if (plan) {
      const repoId = plan.repo;
      // Give the paused job a moment to close its file before deleting it.
      setTimeout(async () => {
        const freed = await api.hubDiscard(repoId);
        setProgress(null);
        setPulling(null);
        setMessage(`Cancelled; ${bytes(freed)} of partial download deleted.`);
      }, 300);
    }
  }

  const quantFiles = (q: HubQuant) => (withMmproj && plan && plan.mmproj.length > 0 ? [...q.files, ...plan.mmproj[0].files] : q.files);
  const same = (a: string[] | null, b: string[] | null) => JSON.stringify(a) === JSON.stringify(b);
  // One Download button per choice; the running (or paused) one becomes Pause/Resume.
  function pullButton(files: string[] | null, id: string | undefined, size: number) {
    const mine = same(pulling, files) && (job !== null || progress !== null);
    const tooBig = plan?.free_disk != null && plan.free_disk < size;
    if (mine && job !== null) return <button id="pause" onClick={() => api.jobCancel(job)}>Pause</button>;
    return (
      <button id={id} class="pull-choice" disabled={job !== null} title={tooBig ? "not enough free disk space" : ""} onClick={() => pull(files)}>
        {mine ? "Resume" : "Download"}
      </button>
    );
  }

  return (
    <section id="download">
      <h2>Download</h2>
      <form class="row" onSubmit={(e) => { e.preventDefault(); void search(); }}>
        <input id="hub-query" placeholder="Search models: gemma 3, qwen…" value={query} onInput={(e) => setQuery((e.target as HTMLInputElement).value)} />
        <select id="hub-format" value={format} onChange={(e) => setFormat((e.target as HTMLSelectElement).value)}>
          <option value="gguf">GGUF</option>
          <option value="safetensors">safetensors</option>
          <option value="any">any format</option>
        </select>
        <select id="hub-sort" value={sort} onChange={(e) => setSort((e.target as HTMLSelectElement).value)}>
          <option value="downloads">most downloaded</option>
          <option value="trending">trending</option>
          <option value="likes">most liked</option>
        </select>
        <button id="hub-search" type="submit" disabled={busy}>Search</button>
      </form>
      {results && (
        results.length === 0 ? <p class="hint">No models found.</p> : (
          <table id="hub-results">
            <thead><tr><th>Model</th><th>Downloads</th><th>Likes</th><th>Licence</th><th>Access</th><th /></tr></thead>
            <tbody>
              {results.map((r) => (
                <tr data-repo={r.id}>
                  <td>{r.id}</td>
                  <td>{r.downloads.toLocaleString()}</td>
                  <td>{r.likes.toLocaleString()}</td>
                  <td>{r.license ?? "–"}</td>
                  <td class={r.gated === "no" ? "" : "error"}>{gatedText(r.gated)}</td>
                  <td><button class="open-repo" disabled={busy} onClick={() => open(r.id)}>Open</button></td>
                </tr>
              ))}
            </tbody>
          </table>
        )
      )}
      <form class="row" onSubmit={(e) => { e.preventDefault(); void open(repo); }}>
        <input id="repo" placeholder="or a repository id: google/gemma-3-1b-it" value={repo} onInput={(e) => setRepo((e.target as HTMLInputElement).value)} />
        <label>
          Context{" "}
          <input id="hub-ctx" type="number" min={1} max={1048576} step={512} value={ctx}
            onChange={(e) => {
              const v = Number((e.target as HTMLInputElement).value);
              if (Number.isFinite(v) && v > 0) {
                setCtx(v);
                if (plan) void open(plan.repo, v);
              }
            }} />{" "}
          tokens
        </label>
        <button id="list" type="submit" disabled={!repo.trim() || busy}>Open</button>
      </form>
      {busy && <p class="hint">Reading the hub…</p>}
      {error && <p class="error">{error}</p>}
      {plan && (
        <div id="repo-page">
          <h3>{plan.repo}</h3>
          <p>
            At {plan.commit.slice(0, 10)} · licence {plan.license ?? "unknown"} ·{" "}
            <span class={plan.gated === "no" ? "" : "error"}>{gatedText(plan.gated)}</span> · {bytes(plan.available_memory)} of memory available now
            {plan.free_disk != null && <> · {bytes(plan.free_disk)} free on disk</>}
          </p>
          {plan.quants.length > 0 && (
            <>
              <p class="hint">
                Memory needed at {plan.ctx} tokens of context: the engine's estimate (weights, KV cache, activations, tokenizer) from each
                file's header. Best fit: the largest that leaves 20 % of the available memory free.
              </p>
              <table id="quants">
                <thead><tr><th>Quantization</th><th>Size</th><th>Bits/weight</th><th>Parameters</th><th>Needs</th><th>Fits</th><th /></tr></thead>
                <tbody>
                  {plan.quants.map((q) => (
                    <tr data-quant={q.id} class={q.best_fit ? "best-fit" : ""}>
                      <td>{q.name}{q.files.length > 1 && <span class="hint"> ({q.files.length} parts)</span>}{q.best_fit && <b class="badge"> best fit</b>}</td>
                      <td>{bytes(q.size)}</td>
                      <td>{q.bits_per_weight != null ? q.bits_per_weight.toFixed(2) : "–"}</td>
                      <td>{q.parameters != null ? params(q.parameters) : "–"}</td>
                      <td>{q.memory_estimate != null ? bytes(q.memory_estimate) : <span class="hint" title={q.error ?? ""}>unknown</span>}</td>
                      <td class={q.fits === false ? "error" : ""}>{q.fits == null ? (q.error ? <span title={q.error}>cannot tell</span> : "–") : q.fits ? "fits" : "does not fit"}</td>
                      <td>{pullButton(quantFiles(q), undefined, q.size)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
              {plan.mmproj.length > 0 && (
                <label class="row">
                  <input id="with-mmproj" type="checkbox" checked={withMmproj} onChange={(e) => setWithMmproj((e.target as HTMLInputElement).checked)} />
                  with the vision projector {plan.mmproj[0].files[0]} ({bytes(plan.mmproj[0].size)}), to chat about images
                </label>
              )}
            </>
          )}
          {plan.notes.map((n) => <p class="hint">{n}</p>)}
          {plan.safetensors && (
            <div id="safetensors-set" class="row">
              <span>
                The model in safetensors: {plan.safetensors.files.length} files the engine reads, {bytes(plan.safetensors.size)}
                {plan.safetensors.skipped.length > 0 && <> (leaving out {plan.safetensors.skipped.length} others, {bytes(plan.safetensors.skipped_size)}: other formats and duplicates)</>}
              </span>
              {pullButton(plan.safetensors.files, "pull-safetensors", plan.safetensors.size)}
            </div>
          )}
          <details>
            <summary>All {plan.files.length} files ({bytes(plan.files.reduce((a, f) => a + f.size, 0))})</summary>
            <table>
              <tbody>
                {plan.files.map((f) => <tr><td>{f.path}</td><td>{bytes(f.size)}</td></tr>)}
              </tbody>
            </table>
            <div class="row">{pullButton(null, "pull", plan.files.reduce((a, f) => a + f.size, 0))}</div>
          </details>
          {(job !== null || progress) && <div class="row"><button id="cancel-pull" onClick={cancel}>Cancel</button></div>}
        </div>
      )}
      {progress && (
        <div id="pull-progress">
          <progress value={progress.done} max={Math.max(1, progress.total)} /> {bytes(progress.done)} of {bytes(progress.total)} ·{" "}
          {bytes(progress.rate)}/s · ETA {duration(progress.eta)} · {progress.file}
        </div>
      )}
      {message && <p id="pull-message" class="hint">{message}</p>}
      {pulled && message.startsWith("Downloaded") && (
        <button id="chat-pulled" onClick={() => { selected.value = pulled; view.value = "chat"; }}>Chat with it</button>
      )}
      <details>
        <summary>Access token for gated models {hasToken ? "(set)" : "(not set)"}</summary>
        <p class="hint">Gated models (Gemma, Llama) need their licence accepted on huggingface.co and a token. It is kept where huggingface_hub keeps it, shared with Python tools.</p>
        <form class="row" onSubmit={async (e) => {
          e.preventDefault();
          try {
            await api.hubTokenSet(token);
            setToken("");
            setHasToken(await api.hubTokenPresent());
          } catch (err) {
            setError(errorText(err));
          }
        }}>
          <input type="password" placeholder="hf_…" value={token} onInput={(e) => setToken((e.target as HTMLInputElement).value)} />
          <button type="submit">{token ? "Save token" : "Remove token"}</button>
        </form>
      </details>
    </section>
  );
}

// Download from the Hugging Face hub into its standard cache: the files and sizes
// first, whether they fit, then progress with rate and ETA; pause (the partial file
// stays and the next download resumes it), cancel (the partial file is deleted),
// and the token gated models need.
import { useEffect, useState } from "preact/hooks";
import { api, errorText } from "../api";
import type { HubListing } from "../bindings/HubListing";
import { bytes, duration } from "../format";
import { refreshLibrary } from "./Library";

type Progress = { done: number; total: number; rate: number; eta: number | null; file: string };

export function Download() {
  const [repo, setRepo] = useState("");
  const [listing, setListing] = useState<HubListing | null>(null);
  const [job, setJob] = useState<number | null>(null);
  const [progress, setProgress] = useState<Progress | null>(null);
  const [message, setMessage] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const [token, setToken] = useState("");
  const [hasToken, setHasToken] = useState(false);
  useEffect(() => void api.hubTokenPresent().then(setHasToken), []);

  async function list() {
    setError("");
    setMessage("");
    setListing(null);
    setBusy(true);
    try {
      setListing(await api.hubList(repo.trim(), null));
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  }

  async function pull() {
    if (!listing) return;
    setError("");
    setMessage("");
    try {
      const id = await api.hubPull(listing.repo, null, (e) => {
        if (e.event === "progress") {
          const p = e.progress;
          setProgress({ done: p.done, total: p.total, rate: p.per_sec, eta: p.eta_s, file: p.item });
          return;
        }
        setJob(null);
        if (e.event === "done") {
          setProgress(null);
          setMessage(`Downloaded; in the library: ${e.models.join(", ") || "no model files"}`);
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
    if (listing) {
      // Give the paused job a moment to close its file before deleting it.
      setTimeout(async () => {
        const freed = await api.hubDiscard(listing.repo);
        setProgress(null);
        setMessage(`Cancelled; ${bytes(freed)} of partial download deleted.`);
      }, 300);
    }
  }

  const fits = listing ? listing.weights_bytes * 1.2 < listing.available_memory : null;
  return (
    <section id="download">
      <h2>Download</h2>
      <form class="row" onSubmit={(e) => { e.preventDefault(); void list(); }}>
        <input id="repo" placeholder="google/gemma-3-1b-it" value={repo} onInput={(e) => setRepo((e.target as HTMLInputElement).value)} />
        <button id="list" type="submit" disabled={!repo.trim() || busy}>Show files</button>
      </form>
      {error && <p class="error">{error}</p>}
      {listing && (
        <div>
          <p>
            {listing.repo} at {listing.commit.slice(0, 10)}: {listing.files.length} files, {bytes(listing.total_bytes)};
            weights {bytes(listing.weights_bytes)} against {bytes(listing.available_memory)} of memory available now —{" "}
            <b class={fits ? "" : "error"}>{fits ? "fits" : "likely does not fit"}</b> (estimate: weights plus 20 %).
            {listing.free_disk != null && listing.free_disk < listing.total_bytes && <span class="error"> Not enough disk space ({bytes(listing.free_disk)} free).</span>}
          </p>
          <table>
            <tbody>
              {listing.files.map((f) => <tr><td>{f.path}</td><td>{bytes(f.size)}</td></tr>)}
            </tbody>
          </table>
          <div class="row">
            {job === null
              ? <button id="pull" onClick={pull}>{progress ? "Resume" : "Download"}</button>
              : <button id="pause" onClick={() => api.jobCancel(job)}>Pause</button>}
            {(job !== null || progress) && <button id="cancel-pull" onClick={cancel}>Cancel</button>}
          </div>
        </div>
      )}
      {progress && (
        <div id="pull-progress">
          <progress value={progress.done} max={Math.max(1, progress.total)} /> {bytes(progress.done)} of {bytes(progress.total)} ·{" "}
          {bytes(progress.rate)}/s · ETA {duration(progress.eta)} · {progress.file}
        </div>
      )}
      {message && <p class="hint">{message}</p>}
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

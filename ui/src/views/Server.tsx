// The API server (`unicorn serve` inside the app): start it on the selected model,
// on 127.0.0.1 with a port and an optional key, copy the base URL into any OpenAI-
// or Anthropic-compatible client, and watch its requests live (measured tokens,
// TTFT and tok/s). It stops with the Stop button or when the app exits.
import { useEffect, useState } from "preact/hooks";
import { api, errorText } from "../api";
import type { ServerStatus } from "../bindings/ServerStatus";
import { selected } from "../store";

export function Server() {
  const [status, setStatus] = useState<ServerStatus | null>(null);
  const [port, setPort] = useState("8080");
  const [key, setKey] = useState("");
  const [parallel, setParallel] = useState("4");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    const tick = async () => setStatus(await api.serverStatus());
    void tick();
    const t = setInterval(tick, 1000);
    return () => clearInterval(t);
  }, []);
  const start = async () => {
    if (!selected.value) return setError("Select a model in the Library first.");
    setBusy(true);
    setError(null);
    try {
      setStatus(await api.serverStart(selected.value, Number(port), key || null, Number(parallel)));
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  const stop = async () => {
    setBusy(true);
    setStatus(await api.serverStop());
    setBusy(false);
  };
  const running = status?.running ?? false;
  return (
    <section id="server">
      <h2>API server</h2>
      <p>OpenAI (<code>/v1/chat/completions</code>, <code>/v1/completions</code>) and Anthropic (<code>/v1/messages</code>) compatible, on this machine only (127.0.0.1).</p>
      {!running && (
        <div class="row">
          <label>Model <code id="server-model">{selected.value ?? "none selected"}</code></label>
          <label>Port <input id="server-port" value={port} onInput={(e) => setPort(e.currentTarget.value)} size={6} /></label>
          <label>API key <input id="server-key" value={key} placeholder="none" onInput={(e) => setKey(e.currentTarget.value)} /></label>
          <label>Parallel <input id="server-parallel" value={parallel} onInput={(e) => setParallel(e.currentTarget.value)} size={3} /></label>
          <button id="server-start" disabled={busy} onClick={start}>{busy ? "Loading…" : "Start"}</button>
        </div>
      )}
      {running && status && (
        <div class="row">
          <span>Base URL <code id="server-url">{status.base_url}</code></span>
          <button onClick={() => void navigator.clipboard.writeText(status.base_url ?? "")}>Copy</button>
          <span>model <code>{status.model}</code></span>
          <button id="server-stop" disabled={busy} onClick={stop}>Stop</button>
        </div>
      )}
      {error && <p class="error" id="server-error">{error}</p>}
      {running && status && (
        <>
          <div class="cards">
            <div class="card" id="server-toks"><b>Throughput</b> {status.tok_s.toFixed(1)} tok/s (all requests, measured)</div>
            <div class="card"><b>Active</b> {status.active}, queued {status.queued}</div>
          </div>
          <table id="server-requests">
            <thead><tr><th>id</th><th>route</th><th>state</th><th>prompt (cached)</th><th>tokens</th><th>TTFT</th><th>tok/s</th></tr></thead>
            <tbody>
              {[...status.requests].reverse().map((r) => (
                <tr>
                  <td>{r.id}</td><td>{r.endpoint}</td><td>{r.state}</td>
                  <td>{r.prompt_tokens} ({r.reused_tokens})</td><td>{r.tokens}</td>
                  <td>{r.ttft_ms === null ? "" : `${r.ttft_ms.toFixed(0)} ms`}</td>
                  <td>{r.tok_s === null ? "" : r.tok_s.toFixed(1)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}

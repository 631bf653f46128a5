// Live machine and model figures, all measured: RAM, CPU, GPU and process memory over
// the last 10 minutes, the speed of each reply, and decode speed against the
// memory-bandwidth roofline.
import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import type { ServerStatus } from "../bindings/ServerStatus";
import { RepliesChart, TimeChart } from "../charts";
import { bytes, params, percent, tokS } from "../format";
import { samples, startMonitor, system } from "../monitor";
import { loaded, replies } from "../store";

export function Dashboard() {
  const [server, setServer] = useState<ServerStatus | null>(null);
  useEffect(() => {
    startMonitor();
    const tick = async () => setServer(await api.serverStatus());
    void tick();
    const t = setInterval(tick, 1000);
    return () => clearInterval(t);
  }, []);
  const now = system.value;
  const s = samples.value;
  const edge = s.length ? s[s.length - 1].t : Date.now();
  const times = s.map((x) => x.t);
  const gpus = now?.gpus ?? [];
  const last = replies.value.length ? replies.value[replies.value.length - 1].stats : null;
  // Decode reads every weight once per token: bytes/token × tok/s over bandwidth.
  const roofline = last && now && now.memory_bandwidth > 0
    ? (last.weights_bytes * last.decode_tok_s) / now.memory_bandwidth : null;
  return (
    <section id="dashboard">
      <h2>Dashboard</h2>
      {now && (
        <div class="cards">
          <div class="card" id="ram"><b>RAM</b> {bytes(now.used_memory)} / {bytes(now.total_memory)}</div>
          <div class="card"><b>CPU</b> {now.cpu_percent.toFixed(0)} % of {now.cores} cores</div>
          <div class="card"><b>Unicorn</b> {bytes(now.process_rss)} resident</div>
          {now.gpus.map((g) => (
            <div class="card vram"><b>GPU {g.index}</b> {g.name}: {bytes(g.used_bytes)} / {bytes(g.total_bytes)} VRAM</div>
          ))}
          {!now.gpus.length && <div class="card" id="gpu" title={now.gpu_note ?? ""}><b>GPU</b> none{now.gpu_note ? " (no NVIDIA driver)" : ""}</div>}
          <div class="card" id="engine" title={now.engine_note ?? ""}><b>Engine</b> {now.engine}</div>
          {server?.running && <div class="card" id="server-dash"><b>API server</b> {server.tok_s.toFixed(1)} tok/s, {server.active} active, {server.queued} queued</div>}
          <div class="card"><b>Bandwidth</b> {now.memory_bandwidth > 0 ? `${(now.memory_bandwidth / 1e9).toFixed(1)} GB/s measured` : "measuring…"}</div>
        </div>
      )}
      {now?.engine_note && <p class="hint" id="engine-note">Running on the CPU engine: {now.engine_note}.</p>}
      <div class="charts">
        <TimeChart id="cpu-chart" unit="percent" now={edge} times={times} label={`CPU, % of all ${now?.cores ?? ""} cores, last 10 minutes`}
          series={[{ label: "CPU", values: s.map((x) => x.cpu) }]} />
        <TimeChart id="ram-chart" unit="bytes" now={edge} times={times} label={`Memory in use, last 10 minutes${now ? ` (of ${bytes(now.total_memory)} RAM)` : ""}`}
          series={[{ label: "RAM", values: s.map((x) => x.used) }, { label: "Unicorn", values: s.map((x) => x.rss) }]} />
        {gpus.length > 0 && (
          <TimeChart id="vram-chart" unit="bytes" now={edge} times={times} label={`GPU memory in use, last 10 minutes (of ${gpus.map((g) => bytes(g.total_bytes)).join(", ")})`}
            series={gpus.map((g, i) => ({ label: `GPU ${g.index}`, values: s.map((x) => x.gpus[i] ?? null) }))} />
        )}
        <RepliesChart id="toks-chart" label="Decode speed of each reply (tok/s)"
          replies={replies.value.map((r) => ({ at: r.at, tokS: r.stats.decode_tok_s }))} />
      </div>
      {loaded.value && (
        <div class="cards">
          <div class="card"><b>Model</b> on {loaded.value.device}, {loaded.value.architecture}, {params(loaded.value.parameters)} parameters, weights {bytes(loaded.value.weights_bytes)} in memory</div>
          <div class="card" id="compression">
            <b>Compression</b> {loaded.value.quantization}, {loaded.value.bits_per_weight.toFixed(2)} bits per weight:{" "}
            {(16 / loaded.value.bits_per_weight).toFixed(2)}x smaller than 16-bit ({bytes(loaded.value.file_bytes)} on disk)
          </div>
          {last && <div class="card"><b>KV cache</b> {bytes(last.kv_cache_bytes)}</div>}
          {last && <div class="card"><b>Last reply</b> {tokS(last.decode_tok_s)}, TTFT {last.ttft_ms.toFixed(0)} ms</div>}
          {roofline !== null && <div class="card" id="roofline"><b>Roofline</b> {percent(roofline)} of memory bandwidth</div>}
        </div>
      )}
    </section>
  );
}

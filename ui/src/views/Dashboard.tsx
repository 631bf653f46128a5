// Live machine and model figures, all measured: RAM, CPU, process memory, speed of
// each reply over time, and decode speed against the memory-bandwidth roofline.
import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import type { SystemStats } from "../bindings/SystemStats";
import type { ServerStatus } from "../bindings/ServerStatus";
import { Line } from "../charts";
import { bytes, params, percent, tokS } from "../format";
import { loaded, replies } from "../store";

const HISTORY = 120;

export function Dashboard() {
  const [now, setNow] = useState<SystemStats | null>(null);
  const [cpu, setCpu] = useState<number[]>([]);
  const [rss, setRss] = useState<number[]>([]);
  const [vram, setVram] = useState<number[]>([]);
  const [server, setServer] = useState<ServerStatus | null>(null);
  useEffect(() => {
    const tick = async () => {
      setServer(await api.serverStatus());
      const s = await api.systemStats();
      setNow(s);
      setCpu((v) => [...v, s.cpu_percent].slice(-HISTORY));
      setRss((v) => [...v, s.process_rss].slice(-HISTORY));
      if (s.gpus.length) setVram((v) => [...v, s.gpus[0].used_bytes].slice(-HISTORY));
    };
    void tick();
    const t = setInterval(tick, 1000);
    return () => clearInterval(t);
  }, []);
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
          {server?.running && <div class="card" id="server-dash"><b>API server</b> {server.tok_s.toFixed(1)} tok/s, {server.active} active, {server.queued} queued</div>}
          <div class="card"><b>Bandwidth</b> {now.memory_bandwidth > 0 ? `${(now.memory_bandwidth / 1e9).toFixed(1)} GB/s measured` : "measuring…"}</div>
        </div>
      )}
      <div class="cards">
        <Line id="cpu-chart" values={cpu} max={100} label="CPU %, last 2 minutes" />
        <Line values={rss} label="Resident memory, last 2 minutes" />
        {vram.length > 0 && <Line id="vram-chart" values={vram} label="GPU 0 memory in use, last 2 minutes" />}
        <Line id="toks-chart" values={replies.value.map((r) => r.stats.decode_tok_s)} label="Decode tok/s per reply" />
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

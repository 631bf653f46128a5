// Quantize a library model to NF4 or a GGUF type (each with its predicted size and
// typical quality class): live progress and ETA, cancel, then the compression report
// with a per-tensor error chart.
import { useEffect, useState } from "preact/hooks";
import { api, errorText } from "../api";
import type { Comparison } from "../bindings/Comparison";
import type { QuantizePrediction } from "../bindings/QuantizePrediction";
import type { QuantizeSummary } from "../bindings/QuantizeSummary";
import { Bars } from "../charts";
import { baseName, bytes, duration } from "../format";
import { quality as typicalQuality, TYPES } from "../quanttypes";
import { library, selected } from "../store";
import { refreshLibrary } from "./Library";

/** A type's prediction, or why there is none (NF4 of a GGUF file, an output that exists). */
type Predicted = { ok: QuantizePrediction } | { err: string };

export function Quantize() {
  const [to, setTo] = useState("Q8_0");
  const [job, setJob] = useState<number | null>(null);
  const [progress, setProgress] = useState<{ frac: number; eta: number | null; tensor: string } | null>(null);
  const [report, setReport] = useState<QuantizeSummary | null>(null);
  const [error, setError] = useState("");
  const [predictions, setPredictions] = useState<Partial<Record<string, Predicted>>>({});
  const [quality, setQuality] = useState<Comparison | null>(null);
  const [measuring, setMeasuring] = useState<string | null>(null);

  async function measure(r: QuantizeSummary) {
    setQuality(null);
    setMeasuring("loading both models…");
    try {
      await api.compareStart(r.source, r.output, (e) => {
        if (e.event === "progress") setMeasuring(`window ${e.progress.done} of ${e.progress.total}`);
        else {
          setMeasuring(null);
          if (e.event === "done") setQuality(e.comparison);
          else if (e.event === "error") setError(e.message);
        }
      });
    } catch (e) {
      setMeasuring(null);
      setError(errorText(e));
    }
  }
  const source = selected.value;
  const entry = library.value.find((m) => m.path === source);
  // Every type's prediction: each reads only the source's headers and config (the
  // quantization plan), so all of them together take a moment.
  useEffect(() => {
    setPredictions({});
    if (!source) return;
    let current = true;
    for (const t of TYPES) {
      api.quantizePredict(source, t).then(
        (p) => current && setPredictions((m) => ({ ...m, [t]: { ok: p } })),
        (e) => current && setPredictions((m) => ({ ...m, [t]: { err: errorText(e) } })),
      );
    }
    return () => void (current = false);
  }, [source, report]);
  const predicted = predictions[to];
  const prediction = predicted && "ok" in predicted ? predicted.ok : null;

  async function start() {
    if (!source) return;
    setError("");
    setReport(null);
    setQuality(null);
    setProgress({ frac: 0, eta: null, tensor: "" });
    try {
      const id = await api.quantizeStart(source, to, (e) => {
        if (e.event === "progress") {
          const p = e.progress;
          setProgress({
            frac: p.total > 0 ? p.done / p.total : p.item_index / Math.max(1, p.items),
            eta: p.eta_s,
            tensor: `${p.item_index}/${p.items}`,
          });
        } else {
          setJob(null);
          setProgress(null);
          if (e.event === "done") {
            setReport(e.report);
            void refreshLibrary();
          } else if (e.event === "cancelled") setError("Cancelled; nothing was written.");
          else setError(e.message);
        }
      });
      setJob(id);
    } catch (e) {
      setProgress(null);
      setError(errorText(e));
    }
  }

  return (
    <section id="quantize">
      <h2>Quantize</h2>
      <div class="row">
        <select id="quantize-source" value={source ?? ""} onChange={(e) => (selected.value = (e.target as HTMLSelectElement).value)}>
          <option value="" disabled>Pick a model…</option>
          {library.value.filter((m) => m.present).map((m) => (
            <option key={m.path} value={m.path}>{m.repo ?? baseName(m.path)} ({m.quantization})</option>
          ))}
        </select>
        <select id="quantize-to" value={to} onChange={(e) => setTo((e.target as HTMLSelectElement).value)}>
          {TYPES.map((t) => <option value={t} title={`${typicalQuality(t).cls}: ${typicalQuality(t).note}`}>{t}</option>)}
        </select>
        {job === null
          ? <button id="quantize-start" disabled={!source || progress !== null} onClick={start}>Quantize</button>
          : <button id="quantize-cancel" onClick={() => api.jobCancel(job)}>Cancel</button>}
      </div>
      {entry && <p class="hint">Source: {bytes(entry.size_bytes)}, {entry.quantization}, {entry.format}.</p>}
      {source && !progress && (
        <table id="quantize-types" class="types">
          <thead>
            <tr><th>type</th><th class="num">predicted size</th><th class="num">bits per weight</th><th class="num">vs. source</th><th>chat memory</th><th>typical quality (ΔPPL)</th></tr>
          </thead>
          <tbody>
            {TYPES.map((t) => {
              const p = predictions[t];
              const q = typicalQuality(t);
              const ok = p && "ok" in p ? p.ok : null;
              return (
                <tr key={t} data-type={t} class={t === to ? "chosen" : ""} onClick={() => setTo(t)} title={`Choose ${t}`}>
                  <td><label><input type="radio" name="quantize-type" checked={t === to} onChange={() => setTo(t)} /> {t}</label></td>
                  {ok ? <>
                    <td class="num">{bytes(ok.output_bytes)}</td>
                    <td class="num">{ok.bits_per_weight.toFixed(2)}</td>
                    <td class="num">{ok.output_bytes <= ok.source_bytes
                      ? `${(ok.source_bytes / Math.max(1, ok.output_bytes)).toFixed(2)}x smaller`
                      : `${(ok.output_bytes / Math.max(1, ok.source_bytes)).toFixed(2)}x larger`}</td>
                    <td class={ok.memory_bytes > ok.free_ram_bytes ? "warning" : ""}>{bytes(ok.memory_bytes)}{ok.memory_bytes > ok.free_ram_bytes ? " (does not fit)" : ""}</td>
                  </> : <td colSpan={4} class="hint">{p ? ("err" in p ? p.err : "") : "…"}</td>}
                  <td title={q.note}>
                    <span class={`quality q-${q.cls.replace(/\W+/g, "-")}`}>{q.cls}</span>
                    {q.delta !== null && <span class="hint"> {q.delta >= 0 ? "+" : ""}{q.delta.toFixed(4)}</span>}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {source && !progress && (
        <p class="hint">
          Sizes are computed from this model's quantization plan. Quality classes are typical, not measured on this model:
          they come from the perplexity increase (ΔPPL) llama.cpp publishes for each type, measured on Llama-3-8B (hover a
          class for its source). "Measure quality" after quantizing gives this model's own.
        </p>
      )}
      {predicted && "err" in predicted && !report && <p class="error" id="quantize-predict-error">{to}: {predicted.err}</p>}
      {prediction && !report && (
        <p id="quantize-prediction">
          Will write {bytes(prediction.output_bytes)} of weights ({prediction.bits_per_weight.toFixed(2)} bits per weight,{" "}
          {(prediction.source_bytes / Math.max(1, prediction.output_bytes)).toFixed(2)}x smaller than {bytes(prediction.source_bytes)}),
          computed from the quantization plan.
        </p>
      )}
      {prediction && !report && (
        <p id="quantize-memory">
          Chatting with it at {prediction.ctx} tokens of context takes about {bytes(prediction.memory_bytes)}{" "}
          (estimate: {bytes(prediction.weights_bytes)} of weights as loaded, {bytes(prediction.kv_cache_bytes)} of KV cache,
          the rest activations and tokenizer); {bytes(prediction.free_ram_bytes)} is available now
          {prediction.memory_bytes > prediction.free_ram_bytes ? " — it will not fit." : "."}
        </p>
      )}
      {prediction && !report && prediction.warnings.map((w) => <p class="warning">{w}</p>)}
      {progress && (
        <div id="quantize-progress">
          <progress value={progress.frac} max={1} /> {(100 * progress.frac).toFixed(0)} % · tensor {progress.tensor} · ETA {duration(progress.eta)}
        </div>
      )}
      {error && <p class="error">{error}</p>}
      {report && (
        <div id="quantize-report">
          <table>
            <tbody>
              <tr><th>output</th><td>{report.output}</td></tr>
              <tr><th>size</th><td>{bytes(report.source_bytes)} → {bytes(report.output_bytes)}</td></tr>
              <tr><th>ratio</th><td id="report-ratio">{report.ratio.toFixed(2)}x</td></tr>
              <tr><th>bits per weight</th><td>{report.bits_per_weight.toFixed(2)}</td></tr>
              <tr><th>time</th><td>{report.seconds.toFixed(1)} s</td></tr>
            </tbody>
          </table>
          {report.warnings.map((w) => <p class="warning">{w}</p>)}
          <div class="row">
            <button id="measure" disabled={measuring !== null} onClick={() => measure(report)}>Measure quality against the source</button>
            {measuring && <span class="hint">{measuring}</span>}
          </div>
          {quality && (
            <p id="quality">
              Perplexity {quality.ppl_base.toFixed(3)} → {quality.ppl_quant.toFixed(3)} (ΔPPL {quality.delta_ppl_percent >= 0 ? "+" : ""}
              {quality.delta_ppl_percent.toFixed(2)} %), KL divergence {quality.kld_mean.toFixed(4)} mean / {quality.kld_p99.toFixed(4)} p99,
              same top token {(100 * quality.top1_agreement).toFixed(1)} % — {quality.tokens_scored} tokens of public-domain prose.
            </p>
          )}
          {report.tensors.length > 0 && (
            <Bars id="tensor-errors" label="Relative error per tensor (‖error‖ / ‖weights‖), one bar per tensor in file order"
              axis="relative error, %" format={(v) => `${Number((100 * v).toPrecision(3))} %`}
              items={report.tensors.map((t) => ({ label: t.name, value: t.relative_error, title: `${t.name} ${t.type}: ${(100 * t.relative_error).toFixed(2)} %` }))} />
          )}
        </div>
      )}
    </section>
  );
}

// Charts: live time series and per-reply speeds drawn by uPlot (axes with units, a
// legend that shows the value under the cursor, or the latest one), and SVG bars for
// the quantization report. Colours come from the theme's CSS variables; a chart is
// rebuilt when the system switches between light and dark.
import "./intl"; // before uPlot
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { useEffect, useRef } from "preact/hooks";
import { AGO_INCRS, BYTE_INCRS, WINDOW_S, agoLabel, byteTicks, headroom, niceTicks, percentTicks } from "./chartdata";
import { bytes } from "./format";
import { cssVar, dark } from "./theme";

const HEIGHT = 200;

type Palette = { text: string; grid: string; series: string[] };

function palette(): Palette {
  return {
    text: cssVar("--muted", "#666"),
    grid: cssVar("--chart-grid", "#e4e4e4"),
    series: [cssVar("--chart-1", "#7a5cff"), cssVar("--chart-2", "#e07a00"), cssVar("--chart-3", "#0a8f6a")],
  };
}

/** A series' legend value: the one under the cursor, or the latest when the cursor is elsewhere. */
function legendValue(fmt: (v: number) => string) {
  return (u: uPlot, v: number | null, sidx: number, idx: number | null): string => {
    if (idx == null) {
      const d = u.data[sidx] as (number | null)[];
      v = d.length ? d[d.length - 1] : null;
    }
    return v == null ? "–" : fmt(v);
  };
}

function axisBase(p: Palette): uPlot.Axis {
  return {
    stroke: p.text,
    grid: { stroke: p.grid, width: 1 },
    ticks: { stroke: p.grid, width: 1, size: 4 },
    font: "11px system-ui, sans-serif",
    labelFont: "11px system-ui, sans-serif",
  };
}

/** uPlot in a figure: created on mount and when the theme or `shape` changes, fed `data` otherwise. */
function UPlot(props: { id?: string; label: string; shape: string; data: uPlot.AlignedData; options: (p: Palette) => Omit<uPlot.Options, "width" | "height"> }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const data = useRef(props.data);
  data.current = props.data;
  const options = useRef(props.options);
  options.current = props.options;
  const isDark = dark.value;
  useEffect(() => {
    const el = box.current!;
    const width = () => Math.max(200, el.clientWidth || 360);
    const u = new uPlot({ ...options.current(palette()), width: width(), height: HEIGHT }, data.current, el);
    plot.current = u;
    const ro = typeof ResizeObserver === "function" ? new ResizeObserver(() => u.setSize({ width: width(), height: HEIGHT })) : null;
    ro?.observe(el);
    return () => {
      ro?.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, [isDark, props.shape]);
  useEffect(() => plot.current?.setData(props.data), [props.data]);
  return (
    <figure class="chart" id={props.id} aria-label={props.label}>
      <div ref={box} class="plot" />
      <figcaption>{props.label}</figcaption>
    </figure>
  );
}

export type TimeSeries = { label: string; values: (number | null)[] };

/** Series over the last WINDOW_S seconds. `times`: each sample's time (ms), oldest
 * first; `now`: the right edge. `unit`: "bytes" (binary units) or "percent" (0-100). */
export function TimeChart(props: { id?: string; label: string; unit: "bytes" | "percent"; now: number; times: number[]; series: TimeSeries[] }) {
  const x = props.times.map((t) => (t - props.now) / 1000);
  const data = [x, ...props.series.map((s) => s.values)] as uPlot.AlignedData;
  const fmt = props.unit === "bytes" ? bytes : (v: number) => `${v.toFixed(0)} %`;
  const shape = `${props.unit}:${props.series.map((s) => s.label).join("|")}`;
  return (
    <UPlot id={props.id} label={props.label} shape={shape} data={data} options={(p) => ({
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: false, range: () => [-WINDOW_S, 0] },
        y: { range: props.unit === "percent" ? () => [0, 100] : (u) => [0, headroom(u.data.slice(1).flatMap((d) => Array.from(d)), 1024 ** 2)] },
      },
      series: [
        { label: "time", value: (_u, v, _s, idx) => (idx == null || v == null ? "now" : agoLabel(v)) },
        ...props.series.map((s, i) => ({ label: s.label, stroke: p.series[i % p.series.length], width: 2, value: legendValue(fmt), points: { show: false } })),
      ],
      axes: [
        { ...axisBase(p), incrs: AGO_INCRS, values: (_u, splits) => splits.map(agoLabel) },
        props.unit === "bytes"
          ? { ...axisBase(p), size: 70, incrs: BYTE_INCRS, values: (_u, splits, _a, _s, incr) => byteTicks(splits, incr) }
          : { ...axisBase(p), size: 50, values: (_u, splits) => percentTicks(splits) },
      ],
    })} />
  );
}

/** Decode speed of each reply (x: the reply's number in this session), with when it came.
 * Rebuilt for each new reply (rare), so the legend's times are never stale. */
export function RepliesChart(props: { id?: string; label: string; replies: { at: number; tokS: number }[] }) {
  const data = [props.replies.map((_, i) => i + 1), props.replies.map((r) => r.tokS)] as uPlot.AlignedData;
  const at = props.replies.map((r) => r.at);
  return (
    <UPlot id={props.id} label={props.label} shape={`replies:${at.length}`} data={data} options={(p) => ({
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: false, range: (u) => [0.5, Math.max(1, u.data[0].length) + 0.5] },
        y: { range: (u) => [0, headroom(u.data[1] as (number | null)[], 1)] },
      },
      series: [
        {
          label: "reply",
          value: (_u, v, _s, idx) => {
            const i = idx ?? at.length - 1;
            if (i < 0) return "–";
            return `#${v ?? i + 1} at ${new Date(at[i]).toLocaleTimeString()}`;
          },
        },
        { label: "decode", stroke: p.series[0], width: 2, value: legendValue((v) => `${v.toFixed(1)} tok/s`), points: { show: true, size: 6, fill: p.series[0] } },
      ],
      axes: [
        { ...axisBase(p), incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000], values: (_u, splits) => splits.map((v) => `#${v}`), label: "reply", labelSize: 18 },
        { ...axisBase(p), size: 50, label: "tok/s", labelSize: 18 },
      ],
    })} />
  );
}

/** Horizontal bars, one per item, on a value axis from 0 with its unit. */
export function Bars(props: { items: { label: string; value: number; title?: string }[]; label: string; axis: string; format: (v: number) => string; id?: string }) {
  const w = 420, bar = 6, axisH = 30;
  const ticks = niceTicks(Math.max(1e-12, ...props.items.map((i) => i.value)));
  const max = ticks[ticks.length - 1] || 1;
  const h = Math.max(bar, props.items.length * bar);
  return (
    <figure class="chart" id={props.id}>
      <svg viewBox={`-4 0 ${w + 40} ${h + axisH}`} width={w + 40} height={h + axisH} role="img" aria-label={props.label}>
        {ticks.map((t) => <line class="grid" x1={(t / max) * w} x2={(t / max) * w} y1={0} y2={h + 4} />)}
        {props.items.map((it, i) => (
          <rect x={0} y={i * bar} width={(it.value / max) * w} height={bar - 1} class="bar">
            <title>{it.title ?? `${it.label}: ${props.format(it.value)}`}</title>
          </rect>
        ))}
        <line class="axis" x1={0} x2={w} y1={h + 0.5} y2={h + 0.5} />
        {ticks.map((t, i) => (
          <text class="tick" x={(t / max) * w} y={h + 14} text-anchor={i === 0 ? "start" : "middle"}>{props.format(t)}</text>
        ))}
        <text class="tick" x={w / 2} y={h + 27} text-anchor="middle">{props.axis}</text>
      </svg>
      <figcaption>{props.label}</figcaption>
    </figure>
  );
}

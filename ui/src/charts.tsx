// Two small SVG charts, enough for the dashboard and the quantization report.

/** A line over `values` (oldest first), scaled to its own maximum unless `max` is given. */
export function Line(props: { values: number[]; max?: number; label: string; id?: string }) {
  const w = 300, h = 80;
  const v = props.values;
  const max = props.max ?? Math.max(1e-9, ...v);
  const pts = v.map((y, i) => `${v.length < 2 ? 0 : (i / (v.length - 1)) * w},${h - (Math.min(y, max) / max) * h}`);
  return (
    <figure class="chart" id={props.id}>
      <svg viewBox={`0 0 ${w} ${h}`} width={w} height={h} role="img" aria-label={props.label}>
        <rect x={0} y={0} width={w} height={h} class="bg" />
        {v.length > 1 && <polyline points={pts.join(" ")} class="line" />}
        {v.length === 1 && <circle cx={w / 2} cy={pts[0].split(",")[1]} r={3} class="dot" />}
      </svg>
      <figcaption>{props.label}</figcaption>
    </figure>
  );
}

/** Horizontal bars, one per item, scaled to the largest. */
export function Bars(props: { items: { label: string; value: number; title?: string }[]; label: string; id?: string }) {
  const w = 420, bar = 6;
  const max = Math.max(1e-12, ...props.items.map((i) => i.value));
  const h = Math.max(bar, props.items.length * bar);
  return (
    <figure class="chart" id={props.id}>
      <svg viewBox={`0 0 ${w} ${h}`} width={w} height={h} role="img" aria-label={props.label}>
        {props.items.map((it, i) => (
          <rect x={0} y={i * bar} width={(it.value / max) * w} height={bar - 1} class="bar">
            <title>{it.title ?? `${it.label}: ${it.value}`}</title>
          </rect>
        ))}
      </svg>
      <figcaption>{props.label}</figcaption>
    </figure>
  );
}

// Activity: rates and percentiles from the node's cumulative counters (GET /v1/activity),
// and the small SVG line charts that show them. The node only counts; each poll is a
// snapshot, and the page differences snapshots (see node/jobs/activity.py).

import { svg, replace, el, fmtNum } from "./dom.js";

export const HISTORY_SECONDS = 300;
const LATENCY_WINDOW = 10;
const RATE_WINDOW = 10;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04",
  "#db2777", "#4b5563", "#65a30d"];

/** Keeps the snapshots of the last HISTORY_SECONDS (a node restart starts over). */
export class ActivityHistory {
  constructor() { this.snapshots = []; }

  add(snapshot) {
    const last = this.snapshots[this.snapshots.length - 1];
    if (last && snapshot.at < last.at) this.snapshots = [];
    if (last && snapshot.at === last.at) return;
    this.snapshots.push(snapshot);
    const oldest = snapshot.at - HISTORY_SECONDS - 1;
    while (this.snapshots.length > 2 && this.snapshots[0].at < oldest) this.snapshots.shift();
  }

  kinds() {
    const names = new Set();
    for (const s of this.snapshots) for (const k of Object.keys(s.kinds)) names.add(k);
    return [...names].sort();
  }

  /** [{t, value}] per kind: jobs/s (served + failed) between consecutive snapshots. */
  jobRates() {
    const series = {};
    for (const kind of this.kinds()) series[kind] = this.#rates((c) => c.served + c.failed, kind);
    return series;
  }

  /** Tokens/s over the RATE_WINDOW before each snapshot: a generation's tokens are counted
   * when it ends, so a per-poll rate would be one spike. */
  tokenRates() {
    const out = [];
    let start = 0;
    for (let i = 1; i < this.snapshots.length; i++) {
      const b = this.snapshots[i];
      while (start < i - 1 && this.snapshots[start + 1].at <= b.at - RATE_WINDOW) start++;
      const a = this.snapshots[start];
      let tokens = 0;
      for (const [kind, c] of Object.entries(b.kinds)) tokens += c.tokens - (a.kinds[kind]?.tokens ?? 0);
      out.push({ t: b.at, value: Math.max(0, tokens) / (b.at - a.at) });
    }
    return out;
  }

  /** p50 and p95 (ms) of every job that ended in the LATENCY_WINDOW before each snapshot. */
  latency() {
    const p50 = [], p95 = [];
    let start = 0;
    for (let i = 1; i < this.snapshots.length; i++) {
      const b = this.snapshots[i];
      while (start < i - 1 && this.snapshots[start + 1].at <= b.at - LATENCY_WINDOW) start++;
      const a = this.snapshots[start];
      const counts = bucketDelta(a, b);
      p50.push({ t: b.at, value: percentile(counts, b.buckets_ms, 0.5) });
      p95.push({ t: b.at, value: percentile(counts, b.buckets_ms, 0.95) });
    }
    return { p50, p95 };
  }

  #rates(pick, kind) {
    const out = [];
    for (let i = 1; i < this.snapshots.length; i++) {
      const a = this.snapshots[i - 1], b = this.snapshots[i];
      const before = a.kinds[kind] ? pick(a.kinds[kind]) : 0;
      const after = b.kinds[kind] ? pick(b.kinds[kind]) : 0;
      out.push({ t: b.at, value: Math.max(0, after - before) / (b.at - a.at) });
    }
    return out;
  }
}

function bucketDelta(a, b) {
  const counts = new Array(b.buckets_ms.length + 1).fill(0);
  for (const [kind, c] of Object.entries(b.kinds)) {
    const before = a.kinds[kind]?.latency;
    c.latency.forEach((n, i) => { counts[i] += n - (before ? before[i] : 0); });
  }
  return counts;
}

/** The q-quantile of a histogram (linear inside its bucket); null without samples. */
export function percentile(counts, bounds, q) {
  const total = counts.reduce((s, n) => s + n, 0);
  if (total <= 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    if (counts[i] > 0 && seen + counts[i] >= rank) {
      const lower = i === 0 ? 0 : bounds[i - 1];
      if (i >= bounds.length) return lower;  // above the last bound
      return lower + (bounds[i] - lower) * ((rank - seen) / counts[i]);
    }
    seen += counts[i];
  }
  return bounds[bounds.length - 1];
}

/** Draw `series` ({name: [{t, value}]}) into the SVG `target`, the last HISTORY_SECONDS. */
export function drawChart(target, legend, series, now, unit, { log = false } = {}) {
  const width = 300, height = 120, left = 34, bottom = 14, top = 6;
  const names = Object.keys(series);
  let max = 0;
  for (const name of names) for (const p of series[name]) if (p.value !== null) max = Math.max(max, p.value);
  max = niceMax(max);
  // a log scale (from 1) for latencies: a 30 s generation and a 2 ms search on one chart
  const floor = log ? 1 : 0;
  const scale = (v) => (log ? Math.log10(Math.max(1, v)) / Math.log10(Math.max(10, max)) : v / max);
  if (log) max = Math.max(10, max);
  const x = (t) => left + (width - left - 4) * (1 - (now - t) / HISTORY_SECONDS);
  const y = (v) => top + (height - top - bottom) * (1 - scale(v));
  const parts = [
    svg("line", { x1: left, y1: y(floor), x2: width - 4, y2: y(floor), class: "axis" }),
    svg("line", { x1: left, y1: y(max), x2: width - 4, y2: y(max), class: "grid" }),
    svg("text", { x: left - 3, y: y(max) + 4, class: "tick", "text-anchor": "end" }, fmtNum(max)),
    svg("text", { x: left - 3, y: y(floor), class: "tick", "text-anchor": "end" }, String(floor)),
    svg("text", { x: left, y: height - 2, class: "tick" }, "−5 min"),
    svg("text", { x: width - 4, y: height - 2, class: "tick", "text-anchor": "end" }, "now"),
  ];
  names.forEach((name, i) => {
    const points = series[name].filter((p) => p.value !== null && now - p.t <= HISTORY_SECONDS)
      .map((p) => `${x(p.t).toFixed(1)},${y(p.value).toFixed(1)}`);
    if (points.length) {
      parts.push(svg("polyline", { points: points.join(" "), fill: "none",
        stroke: COLORS[i % COLORS.length], "stroke-width": 1.5 }));
    }
  });
  replace(target, parts);
  replace(legend, names.map((name, i) => {
    const last = series[name].length ? series[name][series[name].length - 1].value : null;
    const swatch = el("i");
    swatch.style.background = COLORS[i % COLORS.length];  // CSSOM: the CSP refuses style=""
    return el("span", { class: "key" }, swatch,
      `${name} ${last === null ? "–" : fmtNum(last)}${unit}`);
  }));
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * step) return m * step;
  return 10 * step;
}

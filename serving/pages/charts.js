// Small SVG charts drawn by hand (no chart library: the pages must work offline and stay small).
// Each function returns an <svg> element sized by its viewBox, so CSS can scale it to its column.

import { finite, fmt, svg } from "./api.js";

const INK = "#1f2933";
const GRID = "#d9e2ec";
const ACCENT = "#1677ff";
const GOOD = "#0f9d58";
const BAD = "#d93025";
const MUTED = "#8a94a6";

/** Up to `count` round tick values covering [lo, hi]. */
function ticks(lo, hi, count = 4) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function frame(width, height, cls, title) {
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, class: `chart ${cls}`, role: "img", "aria-label": title },
    svg("title", {}, title));
}

function empty(node, width, height, message) {
  node.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", fill: MUTED, "font-size": 13 }, message));
  return node;
}

/**
 * A line over time. `points`: [{t: unix seconds, y: number|null}]; null values break the line.
 * Options: title, format (y labels), hourly (x labels with hours), color.
 */
export function lineChart(points, { title = "", format = String, hourly = false, color = ACCENT } = {}) {
  const W = 460, H = 190, L = 56, R = 12, T = 12, B = 28;
  const node = frame(W, H, "line-chart", title);
  const valid = points.filter((p) => finite(p.y));
  if (!valid.length) return empty(node, W, H, "no data in this period");
  const t0 = points[0].t, t1 = points[points.length - 1].t;
  const yMax = Math.max(...valid.map((p) => p.y)) || 1;
  const yTicks = ticks(0, yMax);
  const top = Math.max(yMax, yTicks[yTicks.length - 1]);
  const x = (t) => (t1 > t0 ? L + ((t - t0) / (t1 - t0)) * (W - L - R) : (L + W - R) / 2);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  for (const v of yTicks) {
    node.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: GRID }),
      svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: MUTED }, format(v)));
  }
  for (const p of [points[0], points[points.length - 1]]) {
    node.append(svg("text", { x: x(p.t), y: H - 8, "text-anchor": p === points[0] ? "start" : "end", "font-size": 11, fill: MUTED },
      fmt.date(p.t, hourly)));
  }
  // one path per run of defined values
  let d = "";
  let pen = false;
  for (const p of points) {
    if (!finite(p.y)) { pen = false; continue; }
    d += `${pen ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.y).toFixed(1)}`;
    pen = true;
  }
  node.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": 2, class: "series" }));
  for (const p of valid) {
    node.append(svg("circle", { cx: x(p.t), cy: y(p.y), r: valid.length > 60 ? 1.5 : 3, fill: color, class: "point" },
      svg("title", {}, `${fmt.date(p.t, hourly)}: ${format(p.y)}`)));
  }
  return node;
}

/** Horizontal bars. `bars`: [{label, value, note?}]; the note (e.g. a CTR) is written after the bar. */
export function barChart(bars, { title = "", format = String, color = ACCENT } = {}) {
  const row = 30, L = 96, R = 110, W = 460;
  const H = Math.max(row * bars.length + 16, 60);
  const node = frame(W, H, "bar-chart", title);
  if (!bars.length) return empty(node, W, H, "no data in this period");
  const max = Math.max(...bars.map((b) => (finite(b.value) ? b.value : 0))) || 1;
  bars.forEach((b, i) => {
    const y = 8 + i * row;
    const w = finite(b.value) ? (b.value / max) * (W - L - R) : 0;
    node.append(
      svg("text", { x: L - 8, y: y + 18, "text-anchor": "end", "font-size": 12, fill: INK }, b.label),
      svg("rect", { x: L, y: y + 4, width: Math.max(w, 1), height: row - 10, rx: 3, fill: color, class: "bar" },
        svg("title", {}, `${b.label}: ${format(b.value)}`)),
      svg("text", { x: L + w + 6, y: y + 18, "font-size": 12, fill: INK }, format(b.value) + (b.note ? `  ${b.note}` : "")),
    );
  });
  return node;
}

/**
 * A forest plot: per row a point (the estimate) and a bar (its 95% interval), with a vertical line at
 * zero. `rows`: [{label, value, lo, hi, significant}]; values are relative lifts (0.1 = +10%).
 */
export function intervalChart(rows, { title = "", format = String } = {}) {
  const row = 28, L = 210, R = 70, T = 10, B = 26, W = 640;
  const H = T + B + row * Math.max(rows.length, 1);
  const node = frame(W, H, "interval-chart", title);
  if (!rows.length) return empty(node, W, H, "no lifts yet (needs exposed users in control and variant)");
  const ends = rows.flatMap((r) => [r.lo, r.hi, r.value]).filter(finite);
  let lo = Math.min(0, ...ends), hi = Math.max(0, ...ends);
  const pad = (hi - lo) * 0.08 || 0.05;
  lo -= pad; hi += pad;
  const x = (v) => L + ((v - lo) / (hi - lo)) * (W - L - R);
  for (const v of ticks(lo, hi, 5)) {
    node.append(svg("line", { x1: x(v), x2: x(v), y1: T, y2: H - B, stroke: GRID }),
      svg("text", { x: x(v), y: H - 8, "text-anchor": "middle", "font-size": 11, fill: MUTED }, format(v)));
  }
  node.append(svg("line", { x1: x(0), x2: x(0), y1: T - 4, y2: H - B + 4, stroke: INK, "stroke-width": 1.5, class: "zero-line" }));
  rows.forEach((r, i) => {
    const cy = T + i * row + row / 2;
    const color = !finite(r.value) ? MUTED : r.significant ? (r.value > 0 ? GOOD : BAD) : ACCENT;
    const tip = `${r.label}: ${format(r.value)}` + (finite(r.lo) ? ` [${format(r.lo)}, ${format(r.hi)}]` : "")
      + (r.significant ? " significant" : "");
    node.append(svg("text", { x: L - 10, y: cy + 4, "text-anchor": "end", "font-size": 12, fill: INK }, r.label));
    if (finite(r.lo) && finite(r.hi)) {
      node.append(svg("line", { x1: x(r.lo), x2: x(r.hi), y1: cy, y2: cy, stroke: color, "stroke-width": 3,
        "stroke-linecap": "round", class: "interval" }, svg("title", {}, tip)));
    }
    if (finite(r.value)) {
      node.append(svg("circle", { cx: x(r.value), cy, r: 5, fill: color, class: "estimate" }, svg("title", {}, tip)));
    }
    node.append(svg("text", { x: W - R + 8, y: cy + 4, "font-size": 12, fill: color }, format(r.value)));
  });
  return node;
}

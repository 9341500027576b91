// Charts of GET /api/v1/stats drawn as inline SVG: executions per bucket (succeeded and failed,
// stacked) and latency percentiles (p50, p95) over the window. A series lists only buckets with
// executions; the empty ones are drawn as zero / gaps here.
import {s} from './dom.js';

const W = 640, H = 220, PAD = {l: 48, r: 12, t: 14, b: 28};

function buckets(stats) {
  const step = stats.bucket_ms;
  const from = Math.floor(Date.parse(stats.from) / step) * step;
  const to = Date.parse(stats.to);
  const out = [];
  for (let t = from; t <= to; t += step) out.push(t);
  return out;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function timeLabel(t, step) {
  const d = new Date(t);
  return step >= 6 * 3600e3 ? d.toLocaleDateString(undefined, {month: 'short', day: 'numeric'})
    : d.toLocaleTimeString(undefined, {hour: '2-digit', minute: '2-digit'});
}

function frame(title, ymax, yfmt, xs, step) {
  const g = s('g', {class: 'axes'});
  const ih = H - PAD.t - PAD.b;
  for (let i = 0; i <= 4; i++) {
    const y = PAD.t + ih - (ih * i) / 4;
    g.appendChild(s('line', {x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: 'grid'}));
    g.appendChild(s('text', {x: PAD.l - 6, y: y + 4, 'text-anchor': 'end'}, yfmt((ymax * i) / 4)));
  }
  const n = xs.length;
  [[0, 'start'], [Math.floor(n / 2), 'middle'], [n - 1, 'end']].forEach(([i, anchor]) => {
    if (i < 0 || i >= n) return;
    const x = anchor === 'start' ? PAD.l : anchor === 'end' ? W - PAD.r : PAD.l + ((W - PAD.l - PAD.r) * (i + 0.5)) / n;
    g.appendChild(s('text', {x, y: H - 8, 'text-anchor': anchor}, timeLabel(xs[i], step)));
  });
  return s('svg', {viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title},
    s('title', null, title), g);
}

/** Stacked bars: executions per bucket. */
export function countChart(stats) {
  const xs = buckets(stats);
  const by = new Map((stats.total.series || []).map((b) => [Date.parse(b.start), b]));
  const max = niceMax(Math.max(0, ...[...by.values()].map((b) => b.count)));
  const svg = frame('Executions per interval', max, (v) => String(Math.round(v * 10) / 10), xs, stats.bucket_ms);
  const iw = (W - PAD.l - PAD.r) / xs.length, ih = H - PAD.t - PAD.b;
  const bars = s('g', {class: 'bars'});
  xs.forEach((t, i) => {
    const b = by.get(t);
    if (!b) return;
    const x = PAD.l + i * iw + iw * 0.1, w = Math.max(1, iw * 0.8);
    const hs = (ih * b.succeeded) / max, hf = (ih * b.failed) / max;
    const tip = `${new Date(t).toLocaleString()}: ${b.succeeded} succeeded, ${b.failed} failed`;
    if (b.succeeded) bars.appendChild(s('rect', {x, y: PAD.t + ih - hs, width: w, height: hs, class: 'ok'}, s('title', null, tip)));
    if (b.failed) bars.appendChild(s('rect', {x, y: PAD.t + ih - hs - hf, width: w, height: hf, class: 'bad'}, s('title', null, tip)));
  });
  svg.appendChild(bars);
  return svg;
}

/** Lines: p50 and p95 latency per bucket (gaps where a bucket has no executions). */
export function latencyChart(stats) {
  const xs = buckets(stats);
  const by = new Map((stats.total.series || []).map((b) => [Date.parse(b.start), b]));
  const max = niceMax(Math.max(0, ...[...by.values()].map((b) => b.p95_ms || 0)));
  const fmt = (v) => (max >= 2000 ? `${(v / 1000).toFixed(1)}s` : `${Math.round(v * 10) / 10}ms`);
  const svg = frame('Latency (p50, p95)', max, fmt, xs, stats.bucket_ms);
  const iw = (W - PAD.l - PAD.r) / xs.length, ih = H - PAD.t - PAD.b;
  for (const [key, cls] of [['p95_ms', 'p95'], ['p50_ms', 'p50']]) {
    let d = '', pen = false;
    const dots = s('g', {class: cls});
    xs.forEach((t, i) => {
      const b = by.get(t);
      if (!b || b[key] === null) { pen = false; return; }
      const x = PAD.l + i * iw + iw / 2, y = PAD.t + ih - (ih * b[key]) / max;
      d += `${pen ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`;
      pen = true;
      dots.appendChild(s('circle', {cx: x, cy: y, r: 2.5}, s('title', null, `${key.replace('_ms', '')}: ${b[key]} ms`)));
    });
    svg.appendChild(s('path', {d, class: `line ${cls}`}));
    svg.appendChild(dots);
  }
  return svg;
}

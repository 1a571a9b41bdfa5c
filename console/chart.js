// Small SVG bar charts for the console: no library, no inline style (colours come from
// style.css classes), every value also in a <title> for hover and screen readers.

const NS = 'http://www.w3.org/2000/svg';

function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function short(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(1) + 'G';
  if (n >= 1e6) return (n / 1e6).toFixed(1) + 'M';
  if (n >= 1e4) return (n / 1e3).toFixed(0) + 'k';
  return String(Math.round(n * 10) / 10);
}

// points: [{label, value}], oldest first. Returns an <svg>.
export function barChart(points, { title = '', width = 560, height = 140, unit = '' } = {}) {
  const pad = { l: 44, r: 8, t: 18, b: 20 };
  const svg = el('svg', {
    viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img',
    'aria-label': title,
  });
  svg.appendChild(el('text', { x: pad.l, y: 12, class: 'chart-title' }, title));
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const max = Math.max(1, ...points.map((p) => p.value));
  svg.appendChild(el('line', { x1: pad.l, y1: pad.t + h, x2: pad.l + w, y2: pad.t + h, class: 'axis' }));
  svg.appendChild(el('text', { x: pad.l - 4, y: pad.t + 8, class: 'tick', 'text-anchor': 'end' }, short(max)));
  svg.appendChild(el('text', { x: pad.l - 4, y: pad.t + h, class: 'tick', 'text-anchor': 'end' }, '0'));
  if (points.length === 0) {
    svg.appendChild(el('text', { x: pad.l + w / 2, y: pad.t + h / 2, class: 'tick', 'text-anchor': 'middle' },
      'no data yet'));
    return svg;
  }
  const slot = w / points.length;
  const bw = Math.max(1, Math.min(slot * 0.8, 28));
  points.forEach((p, i) => {
    const bh = (p.value / max) * h;
    const r = el('rect', {
      x: (pad.l + i * slot + (slot - bw) / 2).toFixed(1), y: (pad.t + h - bh).toFixed(1),
      width: bw.toFixed(1), height: Math.max(bh, p.value > 0 ? 1 : 0).toFixed(1), class: 'bar',
    });
    r.appendChild(el('title', {}, `${p.label}: ${p.value}${unit}`));
    svg.appendChild(r);
  });
  const first = points[0].label;
  const last = points[points.length - 1].label;
  svg.appendChild(el('text', { x: pad.l, y: height - 4, class: 'tick' }, first));
  svg.appendChild(el('text', { x: pad.l + w, y: height - 4, class: 'tick', 'text-anchor': 'end' }, last));
  return svg;
}

// The usage chart: an SVG of stacked bars (allowed, denied) per bucket,
// built with createElementNS and sized by attributes (the CSP forbids
// style attributes; colours come from style.css by class).

const NS = 'http://www.w3.org/2000/svg';

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) {
    e.setAttribute(k, String(v));
  }
  if (text !== undefined) {
    e.textContent = text;
  }
  return e;
}

function label(start, granularity) {
  const d = new Date(start);
  if (granularity === 'day') {
    return d.toISOString().slice(5, 10);
  }
  return d.toISOString().slice(11, 16);
}

// usageChart returns the chart of buckets ({start, allowed, denied_401,
// denied_403, denied_429}) and their totals.
export function usageChart(buckets, granularity) {
  const W = 720, H = 220, left = 44, right = 8, top = 10, bottom = 26;
  const pw = W - left - right, ph = H - top - bottom;
  const denied = b => (b.denied_401 || 0) + (b.denied_403 || 0) + (b.denied_429 || 0);
  let max = 1, allowedSum = 0, deniedSum = 0;
  for (const b of buckets) {
    max = Math.max(max, (b.allowed || 0) + denied(b));
    allowedSum += b.allowed || 0;
    deniedSum += denied(b);
  }
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': 'requests per ' + granularity });
  svg.append(el('line', { class: 'axis', x1: left, y1: top + ph, x2: W - right, y2: top + ph }));
  svg.append(el('line', { class: 'axis', x1: left, y1: top, x2: left, y2: top + ph }));
  svg.append(el('text', { x: left - 6, y: top + 10, 'text-anchor': 'end' }, String(max)));
  svg.append(el('text', { x: left - 6, y: top + ph, 'text-anchor': 'end' }, '0'));
  const n = Math.max(buckets.length, 1);
  const bw = pw / n;
  buckets.forEach((b, i) => {
    const x = left + i * bw + bw * 0.1;
    const w = Math.max(bw * 0.8, 1);
    const a = b.allowed || 0, d = denied(b);
    const ah = (a / max) * ph, dh = (d / max) * ph;
    const g = el('g', { class: 'bucket' });
    g.append(el('title', {}, `${label(b.start, granularity)}: ${a} allowed, ${d} denied`));
    if (a > 0) {
      g.append(el('rect', { class: 'allowed', x: x.toFixed(1), y: (top + ph - ah).toFixed(1), width: w.toFixed(1), height: ah.toFixed(1) }));
    }
    if (d > 0) {
      g.append(el('rect', { class: 'denied', x: x.toFixed(1), y: (top + ph - ah - dh).toFixed(1), width: w.toFixed(1), height: dh.toFixed(1) }));
    }
    svg.append(g);
  });
  if (buckets.length > 0) {
    svg.append(el('text', { x: left, y: H - 8 }, label(buckets[0].start, granularity)));
    svg.append(el('text', { x: W - right, y: H - 8, 'text-anchor': 'end' }, label(buckets[buckets.length - 1].start, granularity) + ' UTC'));
  }
  return { svg, allowed: allowedSum, denied: deniedSum };
}

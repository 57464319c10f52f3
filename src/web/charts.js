// charts: the page's own drawing — the tooltip every figure and bar shows
// its exact values in, and the stacked bar chart of spend over time (SVG,
// built here; no library). Colours come from the stylesheet's classes
// s0..s7, so both colour schemes apply, and every bar's figures are also in
// its tooltip as text.

import { exact, h, morph, morphChildren, rounded, s, short, toNumber } from './fmt.js';

// ---- the tooltip: any element with data-tip shows it on hover, on
// keyboard focus, or on a tap.
let tip = null;
let anchor = null;

function place(x, y) {
  const r = tip.getBoundingClientRect();
  const vw = document.documentElement.clientWidth, vh = document.documentElement.clientHeight;
  let left = x + 14, top = y + 16;
  if (left + r.width > vw - 6) left = Math.max(6, x - r.width - 14);
  if (top + r.height > vh - 6) top = Math.max(6, y - r.height - 12);
  tip.style.setProperty('left', left + 'px');
  tip.style.setProperty('top', top + 'px');
}

function show(el, x, y) {
  anchor = el;
  tip.textContent = el.getAttribute('data-tip');
  tip.hidden = false;
  if (x === undefined) {
    const r = el.getBoundingClientRect();
    x = r.left + r.width / 2;
    y = r.bottom;
  }
  place(x, y);
}

export function hideTip() {
  anchor = null;
  if (tip) tip.hidden = true;
}

const tipOf = (t) => (t && t.closest ? t.closest('[data-tip]') : null);

export function initTips() {
  tip = document.getElementById('tip');
  document.addEventListener('pointerover', (e) => {
    if (e.pointerType === 'touch') return;
    const t = tipOf(e.target);
    if (t) show(t, e.clientX, e.clientY);
    else if (anchor) hideTip();
  });
  document.addEventListener('pointermove', (e) => {
    if (anchor && e.pointerType !== 'touch') place(e.clientX, e.clientY);
  });
  document.addEventListener('pointerout', (e) => {
    if (anchor && e.pointerType !== 'touch' && !tipOf(e.relatedTarget)) hideTip();
  });
  // a tap (or a click) pins the tooltip until the next one elsewhere
  document.addEventListener('click', (e) => {
    const t = tipOf(e.target);
    if (t && !t.closest('tr[data-id]')) show(t, e.clientX, e.clientY);
    else if (anchor) hideTip();
  });
  document.addEventListener('focusin', (e) => {
    const t = tipOf(e.target);
    if (t) show(t);
  });
  document.addEventListener('focusout', () => hideTip());
  window.addEventListener('scroll', hideTip, { passive: true });
}

// After a refresh: the tooltip follows its element's new figures, or
// goes when the element did.
export function refreshTip() {
  if (!anchor) return;
  if (!anchor.isConnected) hideTip();
  else tip.textContent = anchor.getAttribute('data-tip');
}

// ---- the stacked bar chart

// A round step for about `want` gridlines up to max.
function niceStep(max, want) {
  const raw = max / want;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

// One line of a bucket's tooltip.
function tipLine(name, n) {
  return name + ': ' + rounded(n) + ' (' + exact(n) + ')';
}

/* Draws into box (morphing what is there):
 *   buckets: [{key, axis: label under the bar or '', title, parts: Map(series name -> BigInt
 *             nanos), future: no figures yet}], oldest first
 *   series:  [{name, cls}], bottom of the stack first
 *   empty:   the text shown when every bucket is zero */
export function stacked(box, buckets, series, empty) {
  const W = Math.max(280, box.clientWidth || 600);
  const H = W < 560 ? 190 : 250;
  const m = { l: W < 560 ? 40 : 56, r: 6, t: 10, b: 24 };
  const pw = W - m.l - m.r, ph = H - m.t - m.b;
  const totals = buckets.map((b) => {
    let t = 0n;
    for (const v of b.parts.values()) t += v;
    return t;
  });
  const maxN = totals.reduce((a, b) => (b > a ? b : a), 0n);
  const max = toNumber(maxN);
  const step = max > 0 ? niceStep(max, H < 200 ? 3 : 4) : 1;
  const top = max > 0 ? Math.ceil(max / step) * step : 4;
  const y = (v) => m.t + ph - (v / top) * ph;

  const grid = s('g', { class: 'grid' });
  const axis = s('g', { class: 'axis' });
  for (let v = 0; v <= top + step / 2; v += step) {
    grid.appendChild(s('line', { x1: m.l, x2: W - m.r, y1: y(v).toFixed(1), y2: y(v).toFixed(1) }));
    axis.appendChild(s('text', { x: m.l - 6, y: (y(v) + 4).toFixed(1), 'text-anchor': 'end' },
                       max > 0 ? short(v) : ''));
  }

  const n = buckets.length || 1;
  const band = pw / n;
  const bw = Math.max(1, band * (band > 8 ? 0.74 : 0.86));
  const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(pw / (W < 560 ? 48 : 64)))));
  const bars = s('g', { class: 'bars' });
  buckets.forEach((b, i) => {
    const x0 = m.l + i * band;
    const lines = [b.title];
    const g = s('g', { class: 'bucket', 'data-key': b.key });
    g.appendChild(s('rect', { class: 'hit', x: x0.toFixed(2), y: m.t, width: band.toFixed(2), height: ph }));
    let acc = 0;
    for (const se of series) {
      const v = b.parts.get(se.name);
      if (!v) continue;
      lines.push(tipLine(se.name, v));
      const hgt = (toNumber(v) / top) * ph;
      if (hgt <= 0) continue;
      g.appendChild(s('rect', {
        class: 'seg ' + se.cls, x: (x0 + (band - bw) / 2).toFixed(2), width: bw.toFixed(2),
        y: (m.t + ph - acc - hgt).toFixed(2), height: Math.max(0.5, hgt).toFixed(2),
      }));
      acc += hgt;
    }
    if (b.future) lines.push('(not yet)');
    else if (totals[i] === 0n) lines.push('no spend');
    else if (lines.length > 2) lines.push(tipLine('Total', totals[i]));
    g.setAttribute('data-tip', lines.join('\n'));
    bars.appendChild(g);
    if (b.axis && i % every === 0)
      axis.appendChild(s('text', { x: (x0 + band / 2).toFixed(1), y: H - 6, 'text-anchor': 'middle' }, b.axis));
  });

  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
                         'aria-label': 'Spend over time, stacked by model' },
                grid, bars, axis);
  if (maxN === 0n)
    svg.appendChild(s('text', { class: 'nodata', x: m.l + pw / 2, y: m.t + ph / 2, 'text-anchor': 'middle' },
                      empty));
  if (box.firstElementChild && box.firstElementChild.nodeName === 'svg') morph(box.firstElementChild, svg);
  else box.replaceChildren(svg);
}

// The chart's legend: a swatch, the series' name and its total.
export function legend(ul, series, totals) {
  const tmp = h('ul');
  for (const se of series) {
    const t = totals.get(se.name) || 0n;
    tmp.appendChild(h('li', { 'data-key': se.name },
      h('i', { class: se.cls }), h('span', { class: 'm' }, se.name),
      h('span', { class: 't cr', 'data-tip': exact(t) + ' credits' }, rounded(t))));
  }
  morphChildren(ul, tmp);
}

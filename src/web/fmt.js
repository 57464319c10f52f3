// fmt: figures and the DOM they are shown in. Credits arrive from the APIs
// as 9-decimal text and are kept exact as BigInt nano-credits; they are
// shown rounded (decimals chosen by size) with the exact value in a
// tooltip. Times are shown in UTC. The builders below set text and
// attributes only: nothing read from an API is ever parsed as HTML, and no
// style attribute is written (the CSP forbids them; widths go through
// CSSOM). morph() brings a live subtree in line with a freshly built one,
// so a refresh does not disturb what the pointer or the keyboard is on.

export const NANO = 1000000000n;

// A credits figure ("12.345678901", a number, or null) as BigInt nanos.
export function nanos(v) {
  if (v === null || v === undefined || v === '') return null;
  if (typeof v === 'bigint') return v;
  const s = String(v).trim();
  const m = /^(-)?(\d+)(?:\.(\d*))?$/.exec(s);
  if (!m) {
    const f = Number(s);                     // an exponent form: only without source text
    return Number.isFinite(f) ? BigInt(Math.round(f * 1e9)) : null;
  }
  const frac = ((m[3] || '') + '000000000').slice(0, 9);
  const n = BigInt(m[2]) * NANO + BigInt(frac);
  return m[1] ? -n : n;
}

// Nanos as the exact 9-decimal text.
export function exact(n) {
  const neg = n < 0n, a = neg ? -n : n;
  return (neg ? '-' : '') + (a / NANO).toString() + '.' + (a % NANO).toString().padStart(9, '0');
}

// How many decimals a figure of this size is shown with.
export function decimalsFor(n) {
  const a = n < 0n ? -n : n;
  if (a === 0n || a >= NANO) return 2;       // 0.00, 12.35, 1,204.50
  if (a >= 10000000n) return 4;              // 0.0123
  if (a >= 100000n) return 6;                // 0.000123
  return 9;
}

function group(intText) {
  return intText.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

// Nanos rounded half away from zero to d decimals, with thousands separators.
export function rounded(n, d = decimalsFor(n)) {
  const neg = n < 0n, a = neg ? -n : n;
  const q = 10n ** BigInt(9 - d);
  const r = (a + q / 2n) / q;                 // in units of 10^-d
  const unit = 10n ** BigInt(d);
  const ip = group((r / unit).toString());
  // trailing zeros past the second decimal go: 0.2900 reads 0.29 (the same value)
  const fp = d > 0 ? '.' + (r % unit).toString().padStart(d, '0').replace(/(\d\d)0+$/, '$1') : '';
  return (neg && r !== 0n ? '-' : '') + ip + fp;
}

// A short axis label for a credit amount given as a Number.
export function short(x) {
  const a = Math.abs(x);
  if (a >= 1e6) return (x / 1e6).toFixed(a >= 1e7 ? 0 : 1) + 'M';
  if (a >= 1e4) return (x / 1e3).toFixed(a >= 1e5 ? 0 : 1) + 'k';
  if (a >= 100) return x.toFixed(0);
  if (a >= 1) return x.toFixed(a >= 10 ? 1 : 2).replace(/\.?0+$/, '') || '0';
  if (a === 0) return '0';
  return x.toPrecision(2).replace(/0+$/, '');
}

export function toNumber(n) {
  return Number(n) / 1e9;
}

// A credits figure as a <span class="cr"> showing the rounded value, the
// exact one in its tooltip; "—" for null. field names it for the tests.
export function credits(v, field, extra) {
  const n = nanos(v);
  if (n === null) return h('span', { class: 'dim', 'data-field': field }, '—');
  return h('span', { class: 'cr', 'data-field': field, 'data-exact': exact(n),
                     'data-tip': exact(n) + ' credits' + (extra ? '\n' + extra : '') }, rounded(n));
}

export function int(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US');
}

// A token count, short: 9,999 / 12.3k / 1.69M (the exact count is in title).
export function compact(n) {
  if (n === null || n === undefined) return '—';
  const a = Math.abs(n);
  if (a < 10000) return Number(n).toLocaleString('en-US');
  if (a < 1e6) return (n / 1e3).toFixed(a < 1e5 ? 1 : 0) + 'k';
  return (n / 1e6).toFixed(a < 1e7 ? 2 : 1) + 'M';
}

export function pct(f) {
  if (!Number.isFinite(f)) return '—';
  const p = f * 100;
  return (p < 10 && p > 0 ? p.toFixed(1) : Math.round(p).toString()) + ' %';
}

// ---- time (UTC)
const MON = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const p2 = (x) => String(x).padStart(2, '0');

export function ms(t) {
  if (t === null || t === undefined) return null;
  return typeof t === 'number' ? t : Date.parse(t);
}
// RFC 3339 UTC without milliseconds, the form the APIs take.
export function iso(t) {
  return new Date(t).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
export function utcDay(t) {
  return new Date(t).toISOString().slice(0, 10);
}
export function utcTime(t, secs = true) {
  const d = new Date(t);
  return p2(d.getUTCHours()) + ':' + p2(d.getUTCMinutes()) + (secs ? ':' + p2(d.getUTCSeconds()) : '');
}
export function utcFull(t) {
  if (t === null || t === undefined || Number.isNaN(ms(t))) return '—';
  return utcDay(ms(t)) + ' ' + utcTime(ms(t)) + ' UTC';
}
export function dayLabel(t, withMonth = true) {
  const d = new Date(t);
  return withMonth ? MON[d.getUTCMonth()] + ' ' + d.getUTCDate() : String(d.getUTCDate());
}
export function ago(t, now) {
  const s = Math.max(0, Math.round((now - ms(t)) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  if (s < 86400) return Math.floor(s / 3600) + ' h ago';
  return Math.floor(s / 86400) + ' d ago';
}
export function until(t, now) {
  const s = Math.round((ms(t) - now) / 1000);
  if (s <= 0) return 'ending now';
  if (s < 3600) return 'ends in ' + Math.ceil(s / 60) + ' min';
  if (s < 172800) return 'ends in ' + Math.round(s / 3600) + ' h';
  return 'ends ' + dayLabel(ms(t));
}
export const HOUR = 3600000;
export const DAY = 86400000;
export function floorHour(t) {
  return Math.floor(t / HOUR) * HOUR;
}

// ---- DOM
const SVGNS = 'http://www.w3.org/2000/svg';

function build(el, props, kids) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'style') for (const [p, x] of Object.entries(v)) el.style.setProperty(p, x);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  const add = (c) => {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) c.forEach(add);
    else el.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  };
  kids.forEach(add);
  return el;
}

// An HTML element: h('td', {class: 'num'}, 'text', child, [children]).
export function h(tag, props, ...kids) {
  return build(document.createElement(tag), props, kids);
}
// An SVG element.
export function s(tag, props, ...kids) {
  return build(document.createElementNS(SVGNS, tag), props, kids);
}

function syncAttrs(a, b) {
  for (const at of [...a.attributes])
    if (at.name !== 'style' && !b.hasAttribute(at.name)) a.removeAttribute(at.name);
  for (const at of b.attributes)
    if (at.name !== 'style' && a.getAttribute(at.name) !== at.value) a.setAttribute(at.name, at.value);
  if (!a.style || !b.style) return;
  for (let i = a.style.length - 1; i >= 0; i--) {
    const p = a.style[i];
    if (!b.style.getPropertyValue(p)) a.style.removeProperty(p);
  }
  for (let i = 0; i < b.style.length; i++) {
    const p = b.style[i], v = b.style.getPropertyValue(p);
    if (a.style.getPropertyValue(p) !== v) a.style.setProperty(p, v);
  }
}

const keyOf = (n) => (n.nodeType === 1 ? n.getAttribute('data-key') : null);

// Makes live node `from` look like `to` (a node not in the document),
// keeping the nodes that did not change; children with a data-key are
// matched by it. Returns the node now in the document.
export function morph(from, to) {
  if (from.nodeType !== to.nodeType || from.nodeName !== to.nodeName) {
    from.replaceWith(to);
    return to;
  }
  if (from.nodeType === 3) {
    if (from.data !== to.data) from.data = to.data;
    return from;
  }
  if (from.nodeType !== 1) return from;
  syncAttrs(from, to);
  morphChildren(from, to);
  return from;
}

// morph() for the children only: parent's children become to's.
export function morphChildren(parent, to) {
  const keyed = new Map();
  for (const c of parent.childNodes) if (keyOf(c) !== null) keyed.set(keyOf(c), c);
  let cur = parent.firstChild;
  for (const n of [...to.childNodes]) {
    const k = keyOf(n);
    let match = null;
    if (k !== null) {
      match = keyed.get(k) || null;
      keyed.delete(k);
    } else if (cur && keyOf(cur) === null) {
      match = cur;
    }
    if (match) {
      if (match !== cur) parent.insertBefore(match, cur);
      cur = match.nextSibling;
      morph(match, n);
    } else {
      parent.insertBefore(n, cur);
    }
  }
  while (cur) {
    const next = cur.nextSibling;
    parent.removeChild(cur);
    cur = next;
  }
}

// Replaces the children of the element with id by kids, morphing.
export function fill(id, ...kids) {
  const el = typeof id === 'string' ? document.getElementById(id) : id;
  const tmp = el.cloneNode(false);
  build(tmp, null, kids);
  morphChildren(el, tmp);
  return el;
}

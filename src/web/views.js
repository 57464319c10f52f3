// views: the page's sections, each built afresh from the APIs' answers and
// morphed into place — the tiles at a glance, the teams with their bars and
// projections, where the money went, the recent requests and one request's
// fields, and the alerts fired. They only display: the figures come from
// the proxy, computed here are only the shares, sums and the projection.

import {
  HOUR, ago, compact, credits, exact, fill, floorHour, h, int, ms, nanos, pct, rounded,
  toNumber, until, utcFull, utcTime,
} from './fmt.js';

const PERIOD = { day: 'daily cap', week: 'weekly cap', month: 'monthly cap', none: 'no period' };

// ---- teams: the figures of a row

/* What the page says about team t: its shares of the cap, and the spend
 * projected at the end of the period at the current burn rate — what it
 * spent over the last 24 h of the period (or since the period began),
 * per second, times what is left of the period. burn: team name ->
 * nanos spent since winStart (from the hourly usage). */
export function figures(t, burn, now) {
  const cap = nanos(t.cap), spent = nanos(t.spent) || 0n, loaned = nanos(t.loaned) || 0n;
  const f = { cap, spent, loaned, available: nanos(t.available), used: NaN, held: 0, proj: null,
              over: false, rate: null };
  if (cap !== null && cap > 0n) {
    f.used = toNumber(spent) / toNumber(cap);
    f.held = toNumber(loaned) / toNumber(cap);
  } else if (cap === 0n) {
    f.used = spent > 0n ? Infinity : 0;
  }
  const start = ms(t.period_start), end = ms(t.period_end);
  if (start && end && end > now) {
    const winStart = Math.max(start, floorHour(now) - 23 * HOUR);
    const spentIn = (burn && burn.get(t.name)) || 0n;
    const secs = Math.max(now - winStart, HOUR) / 1000;
    f.rate = toNumber(spentIn) / secs;                 // credits a second
    f.proj = spent + BigInt(Math.round(f.rate * ((end - now) / 1000) * 1e9));
    f.over = cap !== null && f.proj > cap;
  }
  return f;
}

// The order of the rows: by share of the cap spent, most first; uncapped last, by spend.
export function sortTeams(list, fig) {
  return [...list].sort((a, b) => {
    const fa = fig.get(a.name), fb = fig.get(b.name);
    const ca = fa.cap !== null, cb = fb.cap !== null;
    if (ca !== cb) return ca ? -1 : 1;
    if (ca && fa.used !== fb.used) return fb.used - fa.used;
    if (fa.spent !== fb.spent) return fb.spent > fa.spent ? 1 : -1;
    return a.name < b.name ? -1 : 1;
  });
}

function bar(f, t) {
  if (f.cap === null) return h('div', { class: 'uncapped' }, 'no cap · spend only');
  const c = toNumber(f.cap) || 1e-9;
  const sw = Math.min(1, toNumber(f.spent) / c);
  const lw = Math.min(1 - sw, toNumber(f.loaned) / c);
  const lines = ['Spent ' + rounded(f.spent) + ' of ' + rounded(f.cap) + ' (' + pct(f.used) + ')',
                 'Loaned ' + rounded(f.loaned) + ' to ' + t.inflight + ' request' +
                 (t.inflight === 1 ? '' : 's') + ' in flight'];
  if (f.available !== null) lines.push('Available ' + rounded(f.available));
  if (f.proj !== null) lines.push('Projected at period end ' + rounded(f.proj) + (f.over ? ' — over the cap' : ''));
  return h('div', { class: 'bar', 'data-tip': lines.join('\n'), role: 'img',
                    'aria-label': lines.join('; ') },
    h('span', { class: 'spent', style: { width: (sw * 100).toFixed(2) + '%' } }),
    lw > 0 ? h('span', { class: 'loaned', style: { left: (sw * 100).toFixed(2) + '%', width: (lw * 100).toFixed(2) + '%' } }) : null,
    f.proj !== null ? h('span', { class: 'projm', style: { left: (Math.min(1, toNumber(f.proj) / c) * 100).toFixed(2) + '%' } }) : null);
}

function projCell(f) {
  if (f.proj === null) return h('div', { class: 'num proj' }, h('span', { class: 'lbl' }, 'Projected'), h('span', { class: 'dim' }, '—'));
  const rate = f.rate !== null ? 'burn ' + rounded(nanos((f.rate * 86400).toFixed(9))) + ' credits a day (last 24 h)' : '';
  const kids = [h('span', { class: 'lbl' }, 'Projected'), h('span', null, credits(exact(f.proj), 'projected', rate))];
  if (f.over) kids[1].appendChild(h('span', { class: 'why' }, '⚠ over cap by ' + rounded(f.proj - f.cap)));
  return h('div', { class: 'num proj' + (f.over ? ' flag' : '') }, ...kids);
}

export function teams(list, burn, now) {
  const el = document.getElementById('teams');
  if (!list.length) return fill(el, h('p', { class: 'empty' }, 'No team to show.'));
  const fig = new Map(list.map((t) => [t.name, figures(t, burn, now)]));
  const head = h('div', { class: 'team head', 'data-key': ' head', 'aria-hidden': 'true' },
    h('div', null, 'Team'), h('div', null, 'Spent and loaned against the cap'), h('div', { class: 'num' }, 'Used'),
    h('div', { class: 'num' }, 'Spent'), h('div', { class: 'num' }, 'Available'), h('div', { class: 'num' }, 'In flight'),
    h('div', { class: 'num' }, 'Projected'));
  const rows = sortTeams(list, fig).map((t) => {
    const f = fig.get(t.name);
    const level = f.cap === null ? '' : f.used >= 1 ? ' over' : f.used >= 0.8 || f.over ? ' warn' : '';
    const when = t.period === 'none' || !t.period_end ? PERIOD.none : PERIOD[t.period] + ' · ' + until(t.period_end, now);
    return h('div', { class: 'team' + level, 'data-key': t.name, 'data-team': t.name },
      h('div', { class: 'name', title: t.name }, t.name, h('small', null, f.cap === null ? 'uncapped' : when)),
      bar(f, t),
      h('div', { class: 'pct' }, f.cap === null ? '' : pct(f.used) + (f.used >= 1 ? ' ⚠' : '')),
      h('div', { class: 'num' }, h('span', { class: 'lbl' }, 'Spent'), credits(t.spent, 'spent')),
      h('div', { class: 'num' }, h('span', { class: 'lbl' }, 'Available'),
        f.cap === null ? h('span', { class: 'dim', 'data-field': 'available' }, 'no cap') : credits(t.available, 'available')),
      h('div', { class: 'num' }, h('span', { class: 'lbl' }, 'In flight'), h('span', { 'data-field': 'inflight' }, int(t.inflight))),
      projCell(f));
  });
  return fill(el, head, ...rows);
}

// ---- tiles

function tile(key, label, value, note, cls) {
  return h('div', { class: 'tile' + (cls ? ' ' + cls : ''), 'data-key': key },
    h('div', { class: 'k' }, label), h('div', { class: 'v' }, value), note ? h('div', { class: 'n' }, note) : null);
}

export function tiles(data, burn, now) {
  let spent = 0n, loaned = 0n, inflight = 0, top = null;
  for (const t of data.teams) {
    spent += nanos(t.spent) || 0n;
    loaned += nanos(t.loaned) || 0n;
    inflight += t.inflight || 0;
    const f = figures(t, burn, now);
    if (f.cap !== null && (!top || f.used > top.f.used)) top = { t, f };
  }
  const kids = [
    tile('spent', 'Spent, current periods', credits(exact(spent), 'total-spent'),
         data.teams.length + ' team' + (data.teams.length === 1 ? '' : 's')),
    tile('inflight', 'In flight now', int(inflight), h('span', null, 'holding ', credits(exact(loaned), 'total-loaned'))),
    top ? tile('nearest', 'Nearest its cap', top.t.name,
               h('span', null, pct(top.f.used) + ' used · ', credits(top.t.available, 'nearest-available'), ' left'),
               top.f.used >= 1 ? 'low' : '') : null,
  ];
  const a = data.account;
  if (a) {
    const proj = nanos(a.projected_available);
    kids.push(tile('acct', 'Pinata account, projected', credits(a.projected_available, 'account-projected'),
                   'available after what was charged and is held since the last sync',
                   'acct' + (proj !== null && proj <= 0n ? ' low' : '')));
    kids.push(tile('synced', 'Last synced balance', credits(a.synced_available, 'account-synced'),
                   h('span', { title: utcFull(a.last_sync_at) }, 'of ', credits(a.synced_total, 'account-total'),
                     a.last_sync_at ? ' · synced ' + ago(a.last_sync_at, now) : ' · not synced yet'), 'acct'));
  }
  fill('tiles', ...kids);
}

// ---- where it went

function tok(n, cls) {
  return h('td', { class: cls, title: int(n) + ' tokens' }, compact(n));
}

function usageTable(id, rows, first, key, label) {
  const total = rows.reduce((a, r) => a + (nanos(r.credits) || 0n), 0n);
  const head = h('thead', null, h('tr', null, ...first.map((f) => h('th', null, f.title)),
    h('th', { class: 'num', title: 'requests' }, 'Reqs'), h('th', { class: 'num wide', title: 'prompt tokens' }, 'Prompt'),
    h('th', { class: 'num wide', title: 'completion tokens' }, 'Compl.'),
    h('th', { class: 'num wide', title: 'cached prompt tokens' }, 'Cached'), h('th', { class: 'num' }, 'Credits')));
  const top = [...rows].sort((a, b) => {
    const d = (nanos(b.credits) || 0n) - (nanos(a.credits) || 0n);
    return d > 0n ? 1 : d < 0n ? -1 : key(a) < key(b) ? -1 : 1;
  }).slice(0, 10);
  const body = h('tbody', null, top.length ? top.map((r) => {
    const share = total > 0n ? toNumber(nanos(r.credits) || 0n) / toNumber(total) : 0;
    return h('tr', { 'data-key': key(r) }, ...first.map((f) => h('td', { class: f.cls },
        r[f.field] || '—', f.sub && r[f.sub] ? h('small', null, r[f.sub]) : null)),
      h('td', { class: 'num' }, int(r.requests)), tok(r.prompt_tokens, 'num wide'),
      tok(r.completion_tokens, 'num wide'), tok(r.cached_tokens, 'num wide'),
      h('td', { class: 'num' }, credits(r.credits, 'credits', pct(share) + ' of the range')));
  }) : h('tr', null, h('td', { class: 'dim', colspan: first.length + 5 }, 'No ' + label + ' spent anything in this range.')));
  fill(id, head, body);
}

// /v0/usage gives a model a row per price set it was charged at; the
// table shows one per model.
function perModel(rows) {
  const m = new Map();
  for (const r of rows) {
    const a = m.get(r.model);
    if (!a) {
      m.set(r.model, { ...r });
      continue;
    }
    for (const k of ['requests', 'prompt_tokens', 'completion_tokens', 'cached_tokens']) a[k] = (a[k] || 0) + (r[k] || 0);
    a.credits = exact((nanos(a.credits) || 0n) + (nanos(r.credits) || 0n));
  }
  return [...m.values()];
}

export function where(keyRows, modelRows) {
  usageTable('top-keys', keyRows, [{ title: 'Key · team', field: 'key', sub: 'team', cls: 'clip keycell' }],
             (r) => r.team + '\u0000' + r.key, 'key');
  usageTable('top-models', perModel(modelRows), [{ title: 'Model', field: 'model', cls: 'clip' }], (r) => r.model, 'model');
}

// ---- recent requests

const STATE_TEXT = { inflight: 'in flight' };

export function badge(state) {
  return h('span', { class: 'badge st-' + state }, STATE_TEXT[state] || state || '—');
}

export function recent(rows, fresh) {
  const head = h('thead', null, h('tr', null, h('th', null, 'Time'), h('th', null, 'Id'), h('th', null, 'Team'),
    h('th', { class: 'wide' }, 'Key'), h('th', null, 'Model'), h('th', { class: 'num' }, 'Status'), h('th', null, 'State'),
    h('th', { class: 'num wide' }, 'Tokens p / c / cached'), h('th', { class: 'num' }, 'Credits'), h('th', { class: 'num wide' }, 'Latency')));
  const body = h('tbody', null, rows.length ? rows.map((r) => {
    const inflight = r.state === 'inflight';
    return h('tr', { 'data-key': r.id, 'data-id': r.id, tabindex: '0', class: fresh.has(r.id) ? 'fresh' : null,
                     'aria-label': 'request ' + r.id + ', ' + (STATE_TEXT[r.state] || r.state) },
      h('td', { class: 'c-time dim', title: utcFull(r.started_at) }, utcTime(ms(r.started_at))),
      h('td', { class: 'c-id mono', 'data-field': 'id' }, r.id),
      h('td', { class: 'c-team clip' }, r.team || '—'),
      h('td', { class: 'c-key mono clip wide' }, r.key || '—'),
      h('td', { class: 'c-model clip', title: r.model }, r.model || '—', r.stream ? h('span', { class: 'dim' }, ' · stream') : null),
      h('td', { class: 'c-status num' + (r.status >= 400 ? ' code-bad' : '') }, r.status === null || r.status === undefined ? '—' : String(r.status)),
      h('td', { class: 'c-state' }, badge(r.state)),
      h('td', { class: 'c-tokens num wide dim', title: int(r.prompt_tokens) + ' prompt, ' + int(r.completion_tokens) +
                ' completion, ' + int(r.cached_tokens) + ' cached tokens' },
        compact(r.prompt_tokens) + ' / ' + compact(r.completion_tokens) + ' / ' + compact(r.cached_tokens)),
      h('td', { class: 'c-credits num' }, inflight ? h('span', { class: 'dim' }, 'holds ', credits(r.reserved, 'reserved'))
                                                    : credits(r.charged, 'charged')),
      h('td', { class: 'c-lat num wide dim' }, r.latency_ms === null || r.latency_ms === undefined ? '—' : int(r.latency_ms) + ' ms'));
  }) : h('tr', null, h('td', { class: 'dim', colspan: 10 }, 'No request in the log yet.')));
  fill('recent', head, body);
}

// ---- one request's fields (the dialog)

const FIELDS = ['id', 'started_at', 'ended_at', 'team', 'key', 'model', 'stream', 'status', 'prompt_tokens',
                'completion_tokens', 'cached_tokens', 'reserved', 'charged', 'state', 'upstream_id', 'latency_ms'];
const CREDIT = new Set(['reserved', 'charged']);

function value(k, v) {
  if (v === null || v === undefined || v === '') return h('span', { class: 'dim' }, '—');
  if (CREDIT.has(k)) return exact(nanos(v)) + ' credits';
  if (k === 'state') return badge(v);
  if (k === 'stream') return v ? 'yes (SSE)' : 'no';
  if (k === 'latency_ms') return int(v) + ' ms';
  if (k.endsWith('_tokens')) return int(v);
  return String(v);
}

export function detail(r) {
  const extra = Object.keys(r).filter((k) => !FIELDS.includes(k));
  document.getElementById('detail-h').textContent = 'Request ' + r.id;
  fill('detail-body', ...[...FIELDS, ...extra].map((k) => [
    h('dt', { 'data-key': 'dt-' + k }, k), h('dd', { 'data-key': 'dd-' + k, 'data-field': k }, value(k, r[k]))]));
}

// ---- alerts

function payloadOf(a) {
  if (a.payload && typeof a.payload === 'string') {
    try {
      return JSON.parse(a.payload);
    } catch {
      return {};
    }
  }
  return a.payload || {};
}

function alertText(a) {
  const p = payloadOf(a);
  switch (a.event) {
    case 'budget_threshold':
      return (a.team || p.team) + ' reached ' + pct(Number(p.threshold)) + ' of its cap';
    case 'cap_refused':
      return (a.team || p.team) + ': first request refused at its cap (402)';
    case 'account_low':
      return 'account: projected available below the alert level';
    case 'alert_test':
      return 'test alert (pinmeter alert test)';
    default:
      return a.event + (a.team ? ' · ' + a.team : '');
  }
}

export function alerts(list, now) {
  fill('alerts', list.length ? h('ul', { class: 'alerts' }, list.map((a) =>
    h('li', { 'data-key': a.id },
      h('span', { class: 'when dim', title: utcFull(a.at) }, utcFull(a.at).replace(' UTC', ''), ' · ', ago(a.at, now)),
      h('span', { class: 'what' }, alertText(a)),
      h('span', null, badge(a.state), ' ', h('span', { class: 'dim' }, a.attempts + ' attempt' + (a.attempts === 1 ? '' : 's'))),
      a.last_error && a.state !== 'delivered' ? h('span', { class: 'err' }, 'last error: ' + a.last_error) : null)))
    : h('p', { class: 'empty' }, 'No alert has fired.'));
}


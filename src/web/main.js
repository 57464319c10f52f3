// main: the page's state and its refresh. Asks for a token (kept in
// sessionStorage by api.js), then every 2 s reads /v0/teams, /v0/usage (the
// chart's range, the top keys and models), /v0/usage/requests and, for the
// admin, /v0/alerts, and redraws what changed. A refused token sends the
// user back to the sign-in form with the reason; any other failed read
// leaves the last figures up under a banner that names it.

import * as api from './api.js';
import { stacked, legend, initTips, refreshTip, hideTip } from './charts.js';
import { DAY, HOUR, dayLabel, floorHour, iso, ms, nanos, utcDay, utcFull, utcTime } from './fmt.js';
import * as views from './views.js';

const REFRESH_MS = 2000;
const RECENT = 50;
const $ = (id) => document.getElementById(id);

const state = {
  range: 'hourly',      // or 'daily'
  timer: null,
  chain: 0,             // the current refresh chain (see stop)
  busy: false,
  again: false,         // asked to refresh while one was running
  gen: 0,               // bumped at sign-out: late answers of the old token are dropped
  seen: null,           // request ids already shown (null until the first list)
  rows: [],             // the recent list as last shown
  colors: new Map(),    // model -> colour index, stable for the session
  last: null,           // the last answers, to redraw on resize
};

// ---- sign-in and out

function showSignin(message) {
  stop();
  $('dash').hidden = true;
  $('status-area').hidden = true;
  $('signin').hidden = false;
  $('scope').textContent = 'Dashboard';
  const err = $('signin-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('token').value = '';
  $('token').focus();
}

function showDash() {
  $('signin').hidden = true;
  $('dash').hidden = false;
  $('status-area').hidden = false;
}

function signOut(message) {
  api.clearToken();
  state.gen++;
  state.seen = null;
  state.rows = [];
  state.last = null;
  hideTip();
  if ($('detail').open) $('detail').close();
  showSignin(message);
}

async function signIn(tok) {
  $('signin-button').disabled = true;
  try {
    await api.get('/v0/teams', null, tok);
  } catch (e) {
    $('signin-button').disabled = false;
    showSignin(api.describe(e));
    return;
  }
  $('signin-button').disabled = false;
  api.setToken(tok);
  showDash();
  start();
}

// ---- the refresh loop

function stop() {
  clearTimeout(state.timer);
  state.timer = null;
  state.chain++;          // a tick of the old chain does not schedule another
}

function start() {
  stop();
  tick(state.chain);
}

async function tick(chain) {
  const t0 = performance.now();
  await refresh();
  if (chain === state.chain && !$('dash').hidden && !document.hidden)
    state.timer = setTimeout(() => tick(chain), Math.max(250, REFRESH_MS - (performance.now() - t0)));
}

/* The ranges the page reads: the last 48 whole hours (the current one
 * included), and the current period of the teams shown when they share one
 * (else the current UTC month). */
function ranges(data, now) {
  const hEnd = floorHour(now) + HOUR;
  const r = { hourly: { since: hEnd - 48 * HOUR, until: hEnd, what: 'the last 48 hours' } };
  const withPeriod = data.teams.filter((t) => t.period && t.period !== 'none' && t.period_start && t.period_end);
  const kinds = new Set(withPeriod.map((t) => t.period));
  if (withPeriod.length && kinds.size === 1) {
    const t = withPeriod[0];
    const what = { day: 'today', week: 'this week', month: 'this month' }[t.period];
    r.daily = { since: ms(t.period_start), until: ms(t.period_end), what };
  } else {
    const d = new Date(now);
    r.daily = { since: Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1),
                until: Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1), what: 'this month' };
  }
  return r;
}

// Each read of a refresh; a failure is kept as the error, not thrown.
const settle = (p) => (p ? p.then((v) => ({ v }), (e) => ({ e })) : Promise.resolve({ v: null }));

async function refresh() {
  if (state.busy) {
    state.again = true;
    return;
  }
  state.busy = true;
  const gen = state.gen;
  try {
    let data;
    try {
      data = await api.get('/v0/teams');
    } catch (e) {
      if (gen !== state.gen) return;
      if (e.status === 401) return signOut(api.describe(e));
      return stale([api.describe(e)]);
    }
    const now = Date.now();
    const admin = data.scope ? data.scope === 'admin' : data.account !== undefined && data.teams.length > 1;
    const rg = ranges(data, now);
    const sel = rg[state.range];
    const span = { since: iso(sel.since), until: iso(sel.until) };
    const [hourly, daily, keys, models, reqs, alerts] = await Promise.all([
      settle(api.get('/v0/usage', { by: 'team,model,hour', since: iso(rg.hourly.since), until: iso(rg.hourly.until) })),
      settle(state.range === 'daily' ? api.get('/v0/usage', { by: 'model,day', ...span }) : null),
      settle(api.get('/v0/usage', { by: 'team,key', ...span })),
      settle(api.get('/v0/usage', { by: 'model', ...span })),
      settle(api.get('/v0/usage/requests', { limit: RECENT })),
      settle(admin ? api.get('/v0/alerts', { limit: 20 }) : null),
    ]);
    if (gen !== state.gen) return;
    const answers = [hourly, daily, keys, models, reqs, alerts];
    if (answers.some((a) => a.e && a.e.status === 401)) return signOut(api.describe(answers.find((a) => a.e).e));
    state.last = { data, now, admin, rg, hourly, daily, keys, models, reqs, alerts };
    draw();
    const failed = answers.filter((a) => a.e).map((a) => a.e);
    if (failed.length === 1) stale([api.describe(failed[0])]);
    else if (failed.length)
      stale(['Could not read ' + failed.map((e) => e.path + ' (' + (e.status || 'unreachable') + ')').join(', ') +
             ': what they show is missing or old.']);
    else fresh(now);
  } catch (e) {
    stale([api.describe(e)]);
  } finally {
    state.busy = false;
    if (state.again) {
      state.again = false;
      refresh();
    }
  }
}

function fresh(now) {
  $('banner').hidden = true;
  $('live').classList.remove('stale');
  $('live').textContent = 'live · ' + utcTime(now) + ' UTC';
  $('live').title = 'refreshed every 2 s; last at ' + utcFull(now);
}

function stale(errors) {
  const b = $('banner');
  b.textContent = errors.join(' ');
  b.hidden = false;
  $('live').classList.add('stale');
  $('live').textContent = 'not updating';
}

// ---- drawing

// The burn each team had over the projection's window (see views.figures).
function burnOf(data, rows, now) {
  const burn = new Map();
  const start = new Map(data.teams.map((t) => [t.name, Math.max(ms(t.period_start) || 0, floorHour(now) - 23 * HOUR)]));
  for (const r of rows || []) {
    const s = start.get(r.team);
    if (s === undefined || ms(r.hour) < s) continue;
    burn.set(r.team, (burn.get(r.team) || 0n) + (nanos(r.credits) || 0n));
  }
  return burn;
}

function colorOf(model) {
  if (!state.colors.has(model)) state.colors.set(model, state.colors.size % 7);
  return 's' + state.colors.get(model);
}

// The chart's buckets and series from usage rows with a time field.
function chartData(rows, field, since, until, step, now) {
  const totals = new Map();
  for (const r of rows) totals.set(r.model || '(unpriced)', (totals.get(r.model || '(unpriced)') || 0n) + (nanos(r.credits) || 0n));
  const order = [...totals.keys()].sort((a, b) => (totals.get(b) > totals.get(a) ? 1 : totals.get(b) < totals.get(a) ? -1 : a < b ? -1 : 1));
  order.forEach(colorOf);
  const named = new Set(order.slice(0, 7));
  const nameOf = (m) => (named.has(m) ? m : 'other models');
  const series = order.slice(0, 7).map((name) => ({ name, cls: colorOf(name) }));
  const legendTotals = new Map();
  for (const [m, v] of totals) legendTotals.set(nameOf(m), (legendTotals.get(nameOf(m)) || 0n) + v);
  if (order.length > 7) series.push({ name: 'other models', cls: 's7' });
  const byKey = new Map();
  for (const r of rows) {
    const k = field === 'hour' ? iso(ms(r.hour)) : r.day;
    if (!byKey.has(k)) byKey.set(k, new Map());
    const parts = byKey.get(k), n = nameOf(r.model || '(unpriced)');
    parts.set(n, (parts.get(n) || 0n) + (nanos(r.credits) || 0n));
  }
  const buckets = [];
  for (let t = since; t < until; t += step) {
    const key = field === 'hour' ? iso(t) : utcDay(t);
    const d = new Date(t);
    const axis = field === 'hour'
      ? (d.getUTCHours() === 0 ? dayLabel(t) : utcTime(t, false))
      : dayLabel(t, d.getUTCDate() === 1 || t === since);
    const title = field === 'hour' ? utcDay(t) + ' ' + utcTime(t, false) + '–' + utcTime(t + HOUR, false) + ' UTC'
                                   : utcDay(t) + ' (UTC day)';
    buckets.push({ key, axis, title, parts: byKey.get(key) || new Map(), future: t > now });
  }
  return { buckets, series, legendTotals };
}

function draw() {
  const L = state.last;
  if (!L) return;
  const { data, now, admin, rg } = L;
  const scope = admin ? 'Admin · every team' : data.teams.length === 1 ? 'Team ' + data.teams[0].name : 'Teams';
  $('scope').textContent = scope;
  const burn = burnOf(data, L.hourly.v && L.hourly.v.rows, now);
  views.tiles(data, burn, now);
  views.teams(data.teams, burn, now);

  const sel = rg[state.range];
  const label = 'From ' + utcFull(sel.since) + ' to ' + utcFull(sel.until) + ' (' + sel.what + ')';
  $('range-label').textContent = (state.range === 'hourly' ? 'Hourly' : 'Daily') + ', stacked by model · ' + label;
  $('where-range').textContent = sel.what;
  const src = state.range === 'hourly' ? L.hourly : L.daily;
  if (src.v) {
    const cd = state.range === 'hourly'
      ? chartData(src.v.rows, 'hour', sel.since, sel.until, HOUR, now)
      : chartData(src.v.rows, 'day', sel.since, sel.until, DAY, now);
    stacked($('chart'), cd.buckets, cd.series, 'No spend in ' + sel.what + '.');
    legend($('chart-legend'), cd.series, cd.legendTotals);
  }
  if (L.keys.v && L.models.v) views.where(L.keys.v.rows, L.models.v.rows);
  if (L.reqs.v) {
    const rows = L.reqs.v.requests;
    const isNew = new Set();
    if (state.seen) for (const r of rows) if (!state.seen.has(r.id)) isNew.add(r.id);
    state.seen = new Set(rows.map((r) => r.id));
    state.rows = rows;
    views.recent(rows, isNew);
  }
  $('alerts-card').hidden = !admin;
  if (admin && L.alerts.v) views.alerts(L.alerts.v.alerts, now);
  refreshTip();
}

// ---- one request's fields

async function openDetail(id) {
  const row = state.rows.find((r) => r.id === id);
  if (row) views.detail(row);
  const dlg = $('detail');
  dlg.dataset.id = id;
  if (!dlg.open) dlg.showModal();
  try {
    const full = await api.get('/v0/usage/requests/' + encodeURIComponent(id));
    if (dlg.open && dlg.dataset.id === id) views.detail(full.request || full);
  } catch (e) {
    if (!row) views.detail({ id, error: api.describe(e) });
  }
}

// ---- wiring

function init() {
  initTips();
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const tok = $('token').value.trim();
    if (tok) signIn(tok);
  });
  $('signout').addEventListener('click', () => signOut(''));
  for (const b of document.querySelectorAll('.switch button')) {
    b.addEventListener('click', () => {
      state.range = b.dataset.range;
      for (const o of document.querySelectorAll('.switch button'))
        o.setAttribute('aria-pressed', String(o === b));
      start();
    });
  }
  const recent = $('recent');
  recent.addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-id]');
    if (tr) openDetail(tr.dataset.id);
  });
  recent.addEventListener('keydown', (e) => {
    const tr = e.target.closest('tr[data-id]');
    if (tr && (e.key === 'Enter' || e.key === ' ')) {
      e.preventDefault();
      openDetail(tr.dataset.id);
    }
  });
  $('detail-close').addEventListener('click', () => $('detail').close());
  $('detail').addEventListener('click', (e) => {
    if (e.target === $('detail')) $('detail').close();       // the backdrop
  });
  let resize = null;
  window.addEventListener('resize', () => {
    clearTimeout(resize);
    resize = setTimeout(draw, 120);
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !$('dash').hidden) start();
  });
  if (api.token()) {
    showDash();
    start();
  } else {
    showSignin('');
  }
}

init();

// The dashboard in a real browser: Debian's chromium, headless, driven by
// puppeteer-core (no browser download). Run by tests/e2e/test_dashboard.py,
// which starts the mock Pinata and a pinmeter with three teams, sends
// traffic, writes the HTML and JSON reports, and passes (environment):
//   PINMETER_URL   http://127.0.0.1:PORT        ADMIN_TOKEN, TEAM_KEY, TEAM_NAME
//   CHAT_MODEL     the model of the request made during the test (with TEAM_KEY)
//   REPORT_HTML, REPORT_JSON   pinmeter report --format html / json, same flags
//   SCREENSHOTS    the directory for the PNGs
// Checks what issue 14 lists; prints one line per check, then a JSON summary
// as the last line; exits 1 on any failed check. Everything it starts (the
// browser, its profile directory) it stops and removes; it gives up after
// DEADLINE_MS whatever happens.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const DEADLINE_MS = 150000;
const env = (k) => {
  if (!process.env[k]) throw new Error('missing environment variable ' + k);
  return process.env[k];
};
const BASE = env('PINMETER_URL');
const ORIGIN = new URL(BASE).origin;
const ADMIN = env('ADMIN_TOKEN');
const TEAM_KEY = env('TEAM_KEY');
const TEAM_NAME = env('TEAM_NAME');
const SHOTS = env('SCREENSHOTS');
const failures = [];
const summary = {};

function check(ok, what, detail) {
  console.log((ok ? 'ok   ' : 'FAIL ') + what + (ok || detail === undefined ? '' : ': ' + detail));
  if (!ok) failures.push(what);
  return ok;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function api(p, tok = ADMIN) {
  const r = await fetch(BASE + p, { headers: { Authorization: 'Bearer ' + tok } });
  const text = await r.text();
  if (!r.ok) throw new Error(p + ': ' + r.status + ' ' + text);
  return exactJSON(text);
}

// JSON with every decimal number kept as its text (credits, exactly as the
// proxy wrote them; Node 20's JSON.parse has no source text access).
function exactJSON(text) {
  return JSON.parse(text.replace(/("(?:[^"\\]|\\.)*")|(-?\d+\.\d+(?:[eE][-+]?\d+)?)/g,
                                 (m, str, num) => (str !== undefined ? str : '"' + num + '"')));
}

// The page's rounding (src/web/fmt.js), restated: exact 9-decimal text to d
// decimals, half away from zero, with thousands separators.
function round(text, d) {
  const neg = text.startsWith('-');
  const [i, f = ''] = text.replace('-', '').split('.');
  const n = BigInt(i) * 1000000000n + BigInt((f + '000000000').slice(0, 9));
  const q = 10n ** BigInt(9 - d);
  const r = (n + q / 2n) / q, unit = 10n ** BigInt(d);
  const ip = (r / unit).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return (neg && r !== 0n ? '-' : '') + ip + (d ? '.' + (r % unit).toString().padStart(d, '0') : '');
}
const decimalsOf = (shown) => (shown.includes('.') ? shown.split('.')[1].length : 0);

// A page that records every request it makes and everything its console says.
async function open(browser, { width, scheme, name }) {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  const log = { requests: [], console: [], errors: [], navigations: 0, name };
  page.on('request', (r) => log.requests.push(r.url()));
  page.on('console', (m) => log.console.push({ type: m.type(), text: m.text() }));
  page.on('pageerror', (e) => log.errors.push(e.message));
  page.on('requestfailed', (r) => log.errors.push('request failed: ' + r.url() + ' ' + (r.failure() || {}).errorText));
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) log.navigations++; });
  await page.setViewport({ width, height: 900, deviceScaleFactor: 1 });
  await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: scheme }]);
  return { page, log };
}

async function signIn(page, token) {
  await page.goto(BASE + '/dashboard', { waitUntil: 'load' });
  await page.waitForSelector('#token', { visible: true });
  await page.type('#token', token);
  await page.click('#signin-button');
}

// Waits until the page shows the recent requests (its last section to fill).
async function waitLoaded(page) {
  await page.waitForSelector('#teams .team[data-team]', { visible: true });
  await page.waitForSelector('#recent tbody tr[data-id]', { visible: true });
  await page.waitForFunction(() => document.querySelector('#live').textContent.startsWith('live'));
}

function consoleErrors(log, allowed = () => false) {
  return log.console.filter((m) => m.type === 'error' && !allowed(m.text)).map((m) => m.text).concat(log.errors);
}

async function shoot(page, file) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.mouse.move(0, 0);
  await sleep(150);
  await page.screenshot({ path: path.join(SHOTS, file), fullPage: true });
  summary.screenshots = (summary.screenshots || []).concat(file);
}

// ---- the checks

async function adminView(browser) {
  const { page, log } = await open(browser, { width: 1280, scheme: 'light', name: 'admin' });
  await signIn(page, ADMIN);
  await waitLoaded(page);
  const want = await api('/v0/teams');
  const rows = await page.$$eval('#teams .team[data-team]', (els) => els.map((e) => e.dataset.team));
  check(rows.length === want.teams.length && want.teams.every((t) => rows.includes(t.name)),
        'admin sees every team', JSON.stringify(rows));
  for (const t of want.teams) {
    for (const field of ['spent', 'available']) {
      const sel = `#teams .team[data-team="${t.name}"] [data-field="${field}"]`;
      const shown = (await page.$eval(sel, (e) => e.textContent)).trim();
      if (t[field] === null) {
        check(shown === 'no cap', `${t.name}: ${field} of an uncapped team shows "no cap"`, shown);
        continue;
      }
      const exact = String(t[field]);
      check(shown === round(exact, decimalsOf(shown)), `${t.name}: ${field} shown ${shown} = ${exact} at that precision`);
      await page.hover(sel);
      await page.waitForSelector('#tip:not([hidden])', { visible: true });
      const tip = await page.$eval('#tip', (e) => e.textContent);
      check(tip.startsWith(exact + ' credits'), `${t.name}: ${field} hover shows the exact ${exact}`, tip);
    }
  }
  // sorted by share of the cap spent
  const shares = want.teams.filter((t) => t.cap !== null).map((t) => [t.name, Number(t.spent) / Number(t.cap)])
    .sort((a, b) => b[1] - a[1]).map((x) => x[0]);
  check(JSON.stringify(rows.slice(0, shares.length)) === JSON.stringify(shares), 'teams sorted by share of cap used',
        JSON.stringify(rows));
  // the chart: a bar's tooltip carries exact figures
  const bars = await page.$$('#chart g.bucket rect.seg');
  check(bars.length > 0, 'the spend chart draws bars');
  if (bars.length) {
    const g = await page.$eval('#chart g.bucket:has(rect.seg)', (e) => e.getAttribute('data-key'));
    await page.hover(`#chart g.bucket[data-key="${g}"] rect.seg`);
    const tip = await page.$eval('#tip', (e) => e.textContent);
    check(/\(\d+\.\d{9}\)/.test(tip), 'hovering a bar shows its exact figures', tip);
  }
  await shoot(page, 'dashboard-1280-light.png');

  // a request made now appears within 3 s, with its id
  const t0 = Date.now();
  const r = await fetch(BASE + '/v0/llm/chat/completions', {
    method: 'POST', headers: { Authorization: 'Bearer ' + TEAM_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: env('CHAT_MODEL'), max_tokens: 50, messages: [{ role: 'user', content: 'dashboard test' }] }),
  });
  await r.text();
  const id = r.headers.get('x-pinmeter-request-id');
  summary.request_id = id;
  check(r.status === 200 && !!id, 'the test request was answered with an id', r.status);
  let seen = -1;
  try {
    await page.waitForSelector(`#recent tr[data-id="${id}"]`, { timeout: 3000 - (Date.now() - t0) });
    seen = Date.now() - t0;
  } catch { /* not within 3 s */ }
  summary.appeared_ms = seen;
  check(seen >= 0 && seen <= 3000, 'the new request appears in the recent list within 3 s', seen);
  if (seen >= 0) {
    const text = await page.$eval(`#recent tr[data-id="${id}"] [data-field="id"]`, (e) => e.textContent);
    check(text === id, 'its row shows its id', text);
    await page.click(`#recent tr[data-id="${id}"]`);
    await page.waitForSelector('#detail[open]', { visible: true });
    const one = await api('/v0/usage/requests/' + encodeURIComponent(id));
    const rec = one.request || one;
    await page.waitForFunction((rid) => {
      const dd = document.querySelector('#detail dd[data-field="state"]');
      return document.querySelector('#detail dd[data-field="id"]').textContent === rid && dd && dd.textContent !== 'in flight';
    }, {}, id).catch(() => {});
    const fields = await page.$$eval('#detail dd[data-field]', (els) => Object.fromEntries(els.map((e) => [e.dataset.field, e.textContent])));
    const missing = Object.keys(rec).filter((k) => !(k in fields));
    check(missing.length === 0, 'clicking it shows all its fields', missing.join(','));
    check(fields.charged === String(rec.charged) + ' credits', 'its charge is exact in the detail', fields.charged);
    await page.click('#detail-close');
  }

  // the alerts fired, as /v0/alerts lists them
  const fired = (await api('/v0/alerts')).alerts;
  const shownAlerts = await page.$$eval('#alerts li[data-key]', (els) => els.map((e) => e.dataset.key));
  check(fired.length > 0 && JSON.stringify(shownAlerts) === JSON.stringify(fired.map((a) => a.id)),
        'the alerts fired are listed, newest first', JSON.stringify(shownAlerts));

  // refreshes without a reload; token only in sessionStorage
  await sleep(2500);
  check(log.navigations === 1, 'refreshing never reloads the page', log.navigations);
  const store = await page.evaluate(() => ({ s: Object.keys(sessionStorage).map((k) => sessionStorage.getItem(k)),
                                             l: localStorage.length, c: document.cookie }));
  check(store.s.includes(ADMIN) && store.l === 0 && store.c === '', 'the token is in sessionStorage only');
  const outside = log.requests.filter((u) => !u.startsWith(ORIGIN + '/') && !u.startsWith('data:'));
  check(outside.length === 0, 'no request outside the proxy\'s origin', outside.join(' '));
  check(!log.requests.some((u) => u.endsWith('/favicon.ico')), 'the declared icon spares a /favicon.ico');
  const errs = consoleErrors(log);
  check(errs.length === 0, 'no console error', errs.join(' | '));
  summary.requests_made = log.requests.length;
  await page.close();
}

async function screenshots(browser) {
  for (const [width, scheme] of [[1280, 'dark'], [390, 'light'], [390, 'dark']]) {
    const { page, log } = await open(browser, { width, scheme, name: width + scheme });
    await signIn(page, ADMIN);
    await waitLoaded(page);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    check(overflow <= 0, `${width} px ${scheme}: the page fits its width`, overflow);
    await shoot(page, `dashboard-${width}-${scheme}.png`);
    const errs = consoleErrors(log);
    check(errs.length === 0, `${width} px ${scheme}: no console error`, errs.join(' | '));
    await page.close();
  }
}

async function teamView(browser) {
  const { page, log } = await open(browser, { width: 1280, scheme: 'light', name: 'team' });
  await signIn(page, TEAM_KEY);
  await waitLoaded(page);
  const rows = await page.$$eval('#teams .team[data-team]', (els) => els.map((e) => e.dataset.team));
  check(rows.length === 1 && rows[0] === TEAM_NAME, 'a team key sees only its own team', JSON.stringify(rows));
  const teams = await page.$$eval('#recent tbody tr[data-id] td:nth-child(3)', (els) => [...new Set(els.map((e) => e.textContent))]);
  check(teams.length === 1 && teams[0] === TEAM_NAME, 'and only its own requests', JSON.stringify(teams));
  check(await page.$eval('#alerts-card', (e) => e.hidden), 'and no alerts (admin only)');
  check(!log.requests.some((u) => u.includes('/v0/alerts')), 'the team view never asks for the alerts');
  await shoot(page, 'dashboard-team-1280-light.png');
  const errs = consoleErrors(log);
  check(errs.length === 0, 'team view: no console error', errs.join(' | '));
  await page.close();
}

async function wrongToken(browser) {
  const { page, log } = await open(browser, { width: 390, scheme: 'light', name: 'wrong' });
  await signIn(page, 'pm-not-a-key-' + Date.now());
  await page.waitForSelector('#signin-error:not([hidden])', { visible: true });
  const msg = await page.$eval('#signin-error', (e) => e.textContent);
  check(/not accepted/.test(msg) && /401/.test(msg), 'a wrong token sees the error message', msg);
  check(await page.$eval('#dash', (e) => e.hidden), 'and no dashboard');
  await shoot(page, 'dashboard-wrong-token-390-light.png');
  // the refused /v0/teams is the only error the browser logs
  const errs = consoleErrors(log, (t) => /status of 401/.test(t));
  check(errs.length === 0, 'wrong token: no other console error', errs.join(' | '));
  await page.close();
}

async function htmlReport(browser) {
  const file = 'file://' + path.resolve(env('REPORT_HTML'));
  const want = exactJSON(fs.readFileSync(env('REPORT_JSON'), 'utf8'));
  const { page, log } = await open(browser, { width: 1280, scheme: 'light', name: 'report' });
  await page.goto(file, { waitUntil: 'load' });
  const got = await page.$$eval('[data-total]', (els) => Object.fromEntries(els.map((e) => [e.dataset.total, e.textContent.trim()])));
  for (const k of ['requests', 'prompt_tokens', 'completion_tokens', 'cached_tokens', 'credits'])
    check(got[k] !== undefined && got[k].replace(/,/g, '') === String(want.total[k]),
          `the HTML report's total ${k} = report --format json's`, got[k] + ' vs ' + want.total[k]);
  check(await page.$$eval('svg', (e) => e.length) >= 2, 'the HTML report draws its charts');
  const outside = log.requests.filter((u) => u !== file && !u.startsWith('data:'));
  check(outside.length === 0, 'the HTML report loads nothing', outside.join(' '));
  const errs = consoleErrors(log);
  check(errs.length === 0, 'the HTML report: no console error', errs.join(' | '));
  await shoot(page, 'report-1280-light.png');
  await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'dark' }]);
  await shoot(page, 'report-1280-dark.png');
  await page.close();
}

async function main() {
  fs.mkdirSync(SHOTS, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'pinmeter-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    userDataDir: profile,
    protocolTimeout: 30000,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run', '--no-default-browser-check',
           '--disable-extensions', '--mute-audio', '--hide-scrollbars'],
  });
  const timer = setTimeout(() => {
    console.log('FAIL the browser test took longer than ' + DEADLINE_MS + ' ms');
    browser.process() && browser.process().kill('SIGKILL');
    process.exit(1);
  }, DEADLINE_MS);
  try {
    const only = (process.env.ONLY || '').split(',').filter(Boolean);
    for (const [name, fn] of [['admin', adminView], ['shots', screenshots], ['team', teamView],
                              ['wrong', wrongToken], ['report', htmlReport]]) {
      if (only.length && !only.includes(name)) continue;
      try {
        await fn(browser);
      } catch (e) {
        check(false, name + ' ran to its end', e.stack || e.message);
      }
    }
  } finally {
    clearTimeout(timer);
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  summary.failures = failures;
  console.log(JSON.stringify(summary));
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  console.log('FAIL ' + (e.stack || e.message));
  process.exit(1);
});

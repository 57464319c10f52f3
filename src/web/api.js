// api: the token and the JSON APIs read with it. The token lives in this
// tab's sessionStorage only (never localStorage, a cookie or a URL) and is
// sent to this page's own origin alone, as a bearer token. Credit figures
// are kept as the exact text the proxy wrote (JSON.parse's source text),
// never rounded through a float.

const STORE = 'pinmeter.token';

// JSON fields that carry credits (9 decimals): kept as text.
const CREDIT_FIELDS = new Set([
  'cap', 'spent', 'loaned', 'available', 'credits', 'reserved', 'charged',
  'synced_total', 'synced_available', 'projected_available', 'total', 'required',
  'price_input', 'price_output', 'price_cache_read',
]);

export function token() {
  try {
    return sessionStorage.getItem(STORE) || '';
  } catch {
    return '';
  }
}
export function setToken(t) {
  sessionStorage.setItem(STORE, t);
}
export function clearToken() {
  try {
    sessionStorage.removeItem(STORE);
  } catch {
    /* storage off: nothing was kept */
  }
}

export class ApiError extends Error {
  constructor(status, message, path) {
    super(message);
    this.status = status;
    this.path = path;
  }
}

export function parse(text) {
  return JSON.parse(text, function (key, value, ctx) {
    if (typeof value === 'number' && CREDIT_FIELDS.has(key))
      return ctx && typeof ctx.source === 'string' ? ctx.source : String(value);
    return value;
  });
}

// GET path?params with the token; the parsed JSON, or an ApiError
// (status 0 when the proxy could not be reached).
export async function get(path, params, tok = token()) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {}))
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const qs = q.toString();
  const url = path + (qs ? '?' + qs : '');
  let r;
  try {
    r = await fetch(url, {
      headers: { Authorization: 'Bearer ' + tok, Accept: 'application/json' },
      cache: 'no-store', credentials: 'omit', redirect: 'error', referrerPolicy: 'no-referrer',
    });
  } catch (e) {
    throw new ApiError(0, 'the proxy could not be reached', path);
  }
  const text = await r.text();
  if (!r.ok) {
    let msg = r.statusText || 'error';
    try {
      const j = JSON.parse(text);
      if (j && j.error && j.error.message) msg = j.error.message;
    } catch {
      /* not JSON: keep the status text */
    }
    throw new ApiError(r.status, msg, path);
  }
  try {
    return parse(text);
  } catch {
    throw new ApiError(r.status, 'the answer is not JSON', path);
  }
}

// What to tell the user about an error (a sentence, no token in it).
export function describe(e) {
  if (!(e instanceof ApiError)) return 'Something went wrong: ' + (e && e.message ? e.message : e);
  if (e.status === 0) return 'The proxy could not be reached. Is pinmeter still running?';
  if (e.status === 401)
    return 'This token was not accepted (401: ' + e.message + '). Paste the admin token ' +
      '(PINMETER_ADMIN_TOKEN) or a team key issued by pinmeter keygen.';
  if (e.status === 403) return 'This token may not read ' + e.path + ' (403: ' + e.message + ').';
  if (e.status === 404) return e.path + ' is not served by this pinmeter (404). Is it an older build?';
  return e.path + ' answered ' + e.status + ': ' + e.message;
}

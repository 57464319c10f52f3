"""The one invariant checker the fault tests share (issue 3).

    from invariants import check_invariants
    summary = check_invariants(self, [self.pm], self.mock)

Given running (or stopped) harness Proxy objects, the mock's record of what it
served (GET /__mock/requests: per request the id it served, the usage it sent
or null, and whether it completed) and the ledger(s), it asserts:

  (a) once the proxy is idle no ledger row is in state 'inflight';
  (b) every team's loaned is 0 (GET /v0/credits/balance with a team key);
  (c) every request the mock served WITH usage that the client received
      completely has its ledger row (matched by upstream_id = the mock's id)
      'settled' and charged exactly the cost formula; rows with no usage are
      'failed' and charged 0, or 'estimated' and charged the estimate from the
      tokens they record (README "Metering rules"); usage the proxy must not
      trust (negative, > 10M tokens, cached > prompt) is never 'settled';
      an upstream error status without usage is 'failed', charged 0;
      'interrupted' rows (only when allow_interrupted) are charged their
      reservation; every request the mock served has a row: either the one
      with its upstream_id or, when the proxy never learnt that id (killed,
      timed out or cut before the upstream's headers), one of the rows without
      an upstream_id;
  (d) no duplicate ids nor upstream_ids in the ledger (an id the upstream
      reused is stored as "<id>#dup-<pinmeter id>" and paired with its repeat);
  (e) each capped team's spent (total - available - loaned from the balance)
      equals the ledger's sum of charged for the team in the current period,
      and the daily spend table agrees with the requests table;
  (f) no secret (team keys, upstream key, admin token, JWT) appears in any
      pinmeter log, in any response body the tests received (harness.collect),
      and no team key or admin secret ever reached the upstream;
  and that each proxy still running still answers /healthz.

A request the test may have abandoned on purpose is "lenient": its row may be
'estimated' instead of 'settled' (never anything else). Mark it with
"client_may_abort": true in the body's "mock" object (the mock ignores it but
records the body), or pass its pinmeter or upstream id in lenient_ids.
"""
import calendar
import collections
import os
import sqlite3
import json
import time

import harness
from harness import http_request, received_bodies

USAGE_MAX_TOKENS = 10_000_000      # include/usage.h: above this a count is absurd


# ---------------------------------------------------------------- helpers
def period_start_ms(period, now=None):
    """Start of the current UTC calendar period in unix ms."""
    t = time.gmtime(now if now is not None else time.time())
    if period == "none":
        return 0
    if period == "day":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    elif period == "week":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)) - t.tm_wday * 86400
    else:  # month
        start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
    return start * 1000


def usage_numbers(u):
    """(prompt, completion, cached) of a usage object as the mock sent it."""
    d = u.get("prompt_tokens_details") or {}
    return u.get("prompt_tokens"), u.get("completion_tokens"), d.get("cached_tokens", 0)


def usage_valid(u):
    """True when the proxy must trust this usage (integers in [0, 10M],
    cached <= prompt); False for numbers it must refuse."""
    nums = usage_numbers(u)
    for n in nums:
        if isinstance(n, bool) or not isinstance(n, int):
            return False
        if n < 0 or n > USAGE_MAX_TOKENS:
            return False
    return nums[2] <= nums[0]


def cost_with(rates, model, prompt, completion, cached=0, row=None):
    """The cost formula with rates: None (the harness rate table), a map
    {model: (in, out, cache_read) nanos per 1M}, or a callable (model, row) ->
    that triple (for rates that changed during a test)."""
    if rates is None:
        return harness.cost(model, prompt, completion, cached)
    i, o, c = rates(model, row) if callable(rates) else rates[model]
    return harness.ceil_div((prompt - cached) * i + cached * c + completion * o, harness.ONE_M)


def _ledger_rows(path):
    if not os.path.exists(path):
        return []
    con = sqlite3.connect(path, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM requests ORDER BY started_ms, id")]
    finally:
        con.close()


def _daily_sums(path):
    if not os.path.exists(path):
        return {}
    con = sqlite3.connect(path, timeout=5)
    try:
        return {t: n for t, n in con.execute("SELECT team, SUM(nanos) FROM spend_daily GROUP BY team")}
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()


def _team_keys(proxy):
    return [(t, t.key) for t in proxy.teams if t.keys]


# ---------------------------------------------------------------- the checker
def check_invariants(test, proxies, mock, *, allow_interrupted=False, lenient_ids=(),
                     idle_timeout=10.0, fresh_ledger=False, rates=None, bodies=None,
                     clear_bodies=True, mock_records=None, fleet=False):
    """Asserts (a)-(f) above with test's assertion methods; returns a summary
    dict {rows, matched, unmatched_served, states}.

    proxies: harness.Proxy objects sharing this mock (their ledgers are
        unioned for matching). Stopped proxies are checked on their ledger only.
    allow_interrupted: the proxy was SIGKILLed during the test, so rows may be
        'interrupted' (charged at their reservation) and served requests may be
        covered by rows without an upstream_id.
    fresh_ledger: the ledgers hold only this test's requests, so every row
        must be accounted for by a mock record or be a request that never
        reached the upstream (no upstream_id).
    rates: {model: (in, out, cache_read) nanos per 1M} when not the harness's.
    bodies: extra response bodies (bytes/str) to grep for secrets, on top of
        everything harness.collect() gathered.
    fleet: the proxies share one budget store (Redis), so each one's balance
        is the fleet's: compared with the sum over all their ledgers.
    """
    if not isinstance(proxies, (list, tuple)):
        proxies = [proxies]
    lenient_ids = set(lenient_ids)
    where = lambda p: "[%s] " % p.name

    # (a)+(b): wait for idleness, then assert it.
    deadline = time.time() + idle_timeout
    for p in proxies:
        if p.alive() and p.teams:
            for team, key in _team_keys(p):
                b = p.wait_balance(key, lambda b: b["loaned"] == 0,
                                   timeout=max(0.1, deadline - time.time()))
                test.assertEqual(b["loaned"], 0, where(p) + "(b) team %s still has loaned %d "
                                 "when idle" % (team.name, b["loaned"]))
        if p.alive():
            # Settling is immediate in the budget; the ledger row follows
            # through the writer's queue: wait for it to drain (/healthz).
            p.wait_ledger_drained(max(0.1, deadline - time.time()))
        rows = p.wait_rows(lambda rs: all(r["state"] != "inflight" for r in rs),
                           timeout=max(0.1, deadline - time.time()))
        inflight = [r for r in rows if r["state"] == "inflight"]
        test.assertEqual(inflight, [], where(p) + "(a) rows still inflight when idle")

    # Ledgers (distinct files).
    rows, seen_paths = [], set()
    for p in proxies:
        if p.ledger in seen_paths:
            continue
        seen_paths.add(p.ledger)
        for r in _ledger_rows(p.ledger):
            r["_proxy"] = p.name
            rows.append(r)

    # (d) unique keys.
    ids = collections.Counter(r["id"] for r in rows)
    dup_ids = sorted(i for i, n in ids.items() if n > 1)
    test.assertEqual(dup_ids, [], "(d) duplicate pinmeter ids in the ledger")
    ups = collections.Counter(r["upstream_id"] for r in rows if r["upstream_id"])
    dup_ups = sorted(u for u, n in ups.items() if n > 1)
    test.assertEqual(dup_ups, [], "(d) duplicate upstream_ids in the ledger: %r" %
                     [r for r in rows if r["upstream_id"] in dup_ups][:6])
    for r in rows:
        test.assertIn(r["state"], ("settled", "estimated", "failed", "interrupted"),
                      "(a) unexpected state: %r" % r)
        test.assertGreaterEqual(r["charged_nanos"], 0, "negative charge: %r" % r)
        if r["state"] == "interrupted":
            test.assertTrue(allow_interrupted, "(c) 'interrupted' row though the proxy was not "
                            "killed in this test: %r" % r)
            test.assertEqual(r["charged_nanos"], r["reserved_nanos"],
                             "(c) interrupted row not charged at its reservation: %r" % r)
        elif r["state"] == "failed":
            test.assertEqual(r["charged_nanos"], 0, "(c) failed row charged: %r" % r)
        elif r["state"] == "estimated":
            est = cost_with(rates, r["model"], r["prompt_tokens"], r["completion_tokens"],
                            r["cached_tokens"], row=r)
            test.assertIn(r["charged_nanos"], (est, r["reserved_nanos"]),
                          "(c) estimated row charged neither the estimate of the tokens it "
                          "records (%d) nor its reservation: %r" % (est, r))
        elif r["state"] == "settled":
            exact = cost_with(rates, r["model"], r["prompt_tokens"], r["completion_tokens"],
                              r["cached_tokens"], row=r)
            test.assertEqual(r["charged_nanos"], exact,
                             "(c) settled row charged other than the cost of its tokens: %r" % r)

    # (c) the mock's record against the ledger.
    records = mock_records if mock_records is not None else mock.requests()
    served = [m for m in records if m.get("id")]
    # An upstream that reuses an id gets its repeats stored as "<id>#dup-<pinmeter id>"
    # (the spend is real): pair records and rows per base id, in order.
    rows_by_base = collections.defaultdict(list)
    for r in sorted((r for r in rows if r["upstream_id"]), key=lambda r: (r["started_ms"], r["id"])):
        rows_by_base[r["upstream_id"].split("#dup-")[0]].append(r)
    no_up = [r for r in rows if not r["upstream_id"]]
    taken = collections.Counter()
    matched, unmatched = 0, []
    for m in sorted(served, key=lambda m: m.get("seq", 0)):
        cands = rows_by_base.get(m["id"], [])
        row = cands[taken[m["id"]]] if taken[m["id"]] < len(cands) else None
        taken[m["id"]] += 1
        mk = ((m.get("body") or {}).get("mock") or {}) if isinstance(m.get("body"), dict) else {}
        lenient = bool(mk.get("client_may_abort")) or m["id"] in lenient_ids or \
            (row is not None and row["id"] in lenient_ids)
        usage = m.get("usage") if m.get("usage_sent") else None
        if row is None:
            unmatched.append(m)
            if usage is not None and m.get("completed") and not lenient and not allow_interrupted:
                test.fail("(c) the mock served %s with usage %r completely, but no ledger row "
                          "has that upstream_id" % (m["id"], usage))
            continue
        matched += 1
        ctx = "upstream %s (fault %s, mock status %s, usage %r): row %r" % (
            m["id"], m.get("fault"), m.get("status"), usage, {k: v for k, v in row.items()
                                                               if k != "_proxy"})
        st = row["state"]
        if st == "interrupted":
            continue                                    # checked above
        if usage is not None and usage_valid(usage):
            p_, c_, k_ = usage_numbers(usage)
            exact = cost_with(rates, row["model"], p_, c_, k_, row=row)
            if m.get("completed") and not lenient:
                test.assertEqual(st, "settled", "(c) served with usage, completely: " + ctx)
            else:
                test.assertIn(st, ("settled", "estimated"), "(c) " + ctx)
            if st == "settled":
                test.assertEqual((row["prompt_tokens"], row["completion_tokens"],
                                  row["cached_tokens"]), (p_, c_, k_), "(c) tokens: " + ctx)
                test.assertEqual(row["charged_nanos"], exact, "(c) charge != cost: " + ctx)
        elif usage is not None:
            test.assertEqual(st, "estimated", "(c) untrustworthy usage must be 'estimated' "
                             "(never settled at those numbers): " + ctx)
        else:
            if m.get("status") is not None and m["status"] >= 400:
                test.assertEqual(st, "failed", "(c) upstream error without usage: " + ctx)
                test.assertEqual(row["charged_nanos"], 0, "(c) " + ctx)
                test.assertEqual(row["status"], m["status"], "(c) status: " + ctx)
            else:
                test.assertIn(st, ("failed", "estimated"), "(c) no usage: " + ctx)
    # Served requests the proxy never learnt the id of must each be covered
    # by a row without one (timed out / cut before headers / killed).
    coverable = [r for r in no_up if r["state"] in ("interrupted", "estimated", "failed")]
    test.assertLessEqual(len(unmatched), len(coverable),
                         "(c) %d request(s) the mock served have no ledger row: %r" %
                         (len(unmatched) - len(coverable), [u["id"] for u in unmatched][:10]))
    if fresh_ledger:
        served_ids = {m["id"] for m in served}
        strays = [r for r in rows if r["upstream_id"] and
                  r["upstream_id"].split("#dup-")[0] not in served_ids]
        test.assertEqual(strays, [], "(c) ledger rows for upstream ids the mock never served")

    # (e) spend = ledger sum, per capped team; daily table agrees.
    for p in proxies:
        mine = [r for r in rows if r["_proxy"] == p.name] if len(seen_paths) > 1 else rows
        daily = _daily_sums(p.ledger)
        if daily is not None:
            for team in {r["team"] for r in mine}:
                total = sum(r["charged_nanos"] for r in mine if r["team"] == team)
                test.assertEqual(daily.get(team, 0), total,
                                 where(p) + "(e) spend_daily disagrees with requests for "
                                 "team %s" % team)
        if not p.alive():
            continue
        for team, key in _team_keys(p):
            b = p.balance(key)
            if team.cap is None:
                continue
            spent = b["total"] - b["available"] - b["loaned"]
            since = period_start_ms(team.period)
            ledger_sum = sum(r["charged_nanos"] for r in (rows if fleet else mine)
                             if r["team"] == team.name and r["started_ms"] >= since)
            test.assertEqual(spent, ledger_sum, where(p) + "(e) team %s: balance says spent %d, "
                             "ledger sums to %d" % (team.name, spent, ledger_sum))

    # (f) secrets.
    secrets, team_secrets = set(), set()
    for p in proxies:
        secrets.update(s for s in p.secrets() if s)
        team_secrets.update(k for t in p.teams for k in t.keys.values())
        for var in ("PINMETER_ADMIN_TOKEN", "PINATA_JWT"):
            if p.env.get(var):
                team_secrets.add(p.env[var])
    secrets_b = [s.encode() for s in secrets]
    for p in proxies:
        logs = p.logs_text()
        for s in secrets:
            test.assertNotIn(s, logs, where(p) + "(f) a secret appeared in pinmeter's log")
    got = received_bodies(clear=clear_bodies) + [b.encode() if isinstance(b, str) else b
                                                 for b in (bodies or [])]
    for body in got:
        for s in secrets_b:
            if s in body:
                test.fail("(f) a secret appeared in a response body: %r" % body[:200])
    for m in records:
        blob = repr((m.get("headers"), m.get("raw_body"), m.get("key")))
        for s in team_secrets:
            test.assertNotIn(s, blob, "(f) a team key or admin secret reached the upstream")

    # The proxy keeps serving.
    for p in proxies:
        if p.alive():
            r = http_request(p.port, "GET", "/healthz", timeout=5)
            test.assertEqual(r.status, 200, where(p) + "not serving after the fault: %r" % r)

    states = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    return {"rows": len(rows), "matched": matched, "unmatched_served": len(unmatched),
            "states": states}


# ---------------------------------------------------------------- test base
class FaultTest(harness.E2ETest):
    """E2ETest plus the checker and small helpers the fault tests share."""

    def check(self, proxies=None, **kw):
        return check_invariants(self, proxies or list(self.proxies), self.mock, **kw)

    def assertJSONError(self, resp, status, etype=None, code=None):
        e = self.assertError(resp, status, etype)
        if code is not None:
            self.assertEqual(e.get("code"), code, resp)
        ct = (resp.header("content-type") or "").lower()
        self.assertTrue(ct.startswith("application/json"), "error Content-Type %r" % ct)
        return e

    def only_record(self):
        """The single request the mock served in this test."""
        recs = [m for m in self.mock.requests() if m.get("id")]
        self.assertEqual(len(recs), 1, "expected exactly one upstream request: %r" %
                         [(m.get("id"), m.get("fault")) for m in recs])
        return recs[0]

    def wait_record(self, pred=lambda m: m.get("completed") or m.get("client_gone"), timeout=5.0):
        """Waits until the only mock record satisfies pred (the mock thread may
        still be writing when the proxy already answered)."""
        deadline = time.time() + timeout
        while True:
            recs = [m for m in self.mock.requests() if m.get("id")]
            if len(recs) == 1 and pred(recs[0]):
                return recs[0]
            if time.time() > deadline:
                return recs[0] if len(recs) == 1 else None
            time.sleep(0.03)

    def row_of(self, proxy, resp=None, upstream_id=None, timeout=5.0):
        """The finished ledger row of a response (X-Pinmeter-Request-Id) or of
        an upstream id; fails when there is none."""
        rid = None
        if resp is not None:
            h = resp.headers if hasattr(resp, "headers") else {}
            rid = h.get("x-pinmeter-request-id")
        row = proxy.row(req_id=rid, timeout=timeout) if rid else \
            proxy.row(upstream_id=upstream_id, timeout=timeout)
        self.assertIsNotNone(row, "no finished ledger row (request id %r, upstream id %r)"
                             % (rid, upstream_id))
        return row


def est_prompt_tokens(body):
    """The proxy's prompt estimate for a client body: ceil(bytes / 3)."""
    return harness.ceil_div(harness.body_len(body) if not isinstance(body, (bytes, str))
                            else len(body if isinstance(body, bytes) else body.encode()), 3)


def est_completion_tokens(content_bytes, content_deltas):
    """README: max(content chunks, ceil(content bytes / 3))."""
    return max(content_deltas, harness.ceil_div(content_bytes, 3) if content_bytes > 0 else 0)

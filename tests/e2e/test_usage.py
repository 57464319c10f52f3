"""The usage API (issue 13): GET /v0/usage equals `pinmeter report` row for
row in JSON and CSV, and a GROUP BY over the ledger, for groupings, ranges
(dates, instants off the hour, the default month) and filters; who sees what
(a team key its own team only, another team= is 403, the admin every team);
400 naming the parameter; GET /v0/usage/requests (fields, order, filters,
pages) and /{id}; a walk by cursor during a 200-request load visits each row
exactly once.

The ledger starts with 2,400 historical rows over 60 days written straight
into the requests table with its usage_hourly dropped, as a ledger from
before the rollup (and from before prices were recorded: their prices are
NULL): pinmeter builds the rollup at start, then live traffic adds settled,
estimated and failed rows on top, each with the prices it was charged at, so
a grouping by model has a row for each model's unrecorded prices and one
for its price set."""
import calendar
import collections
import json
import random
import re
import sqlite3
import threading
import time
import urllib.parse
from decimal import Decimal

from harness import (E2ETest, Team, SONNET, HAIKU, GPT4O, ADMIN_TOKEN, chat_body, body_len,
                     cost, rate_nanos, reservation, fmt_credits, parse_report_json, to_nanos)
from invariants import check_invariants

HOUR = 3600 * 1000
DAY = 24 * HOUR
ODD_MODEL = 'test/"odd",model'          # CSV quoting
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def price_model(model):
    """The rates a historical row was charged at (the odd model is priced as Sonnet)."""
    return SONNET if model == ODD_MODEL else model


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def month_start_ms(ms):
    t = time.gmtime(ms // 1000)
    return calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)) * 1000


def next_month_ms(ms):
    t = time.gmtime(ms // 1000)
    y, m = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return calendar.timegm((y, m, 1, 0, 0, 0)) * 1000


def day_ms(s):
    return calendar.timegm(time.strptime(s, "%Y-%m-%d")) * 1000


class UsageTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.research = Team("research", 1e6, key_ids=["alice", "bob"])
        cls.ops = Team("ops", 1e6, key_ids=["carol"])
        cls.pm = cls.add_proxy([cls.research, cls.ops], name="usage", start=False,
                               env={"PINMETER_ADMIN_TOKEN": ADMIN_TOKEN})
        cls.pm.start()                      # creates the schema
        cls.pm.stop()
        cls.now_ms = int(time.time() * 1000)
        cls.write_history()
        cls.pm.start()                      # builds the rollup for the rows already there
        cls.live = []                       # (response, key, model, usage)
        calls = [(cls.research.keys["alice"], SONNET, (1000, 500, 200), {}),
                 (cls.research.keys["bob"], SONNET, (100, 50, 0), {}),
                 (cls.research.keys["bob"], HAIKU, (40, 10, 0), {"stream": True}),
                 (cls.ops.keys["carol"], GPT4O, (12, 7, 0), {}),
                 (cls.ops.keys["carol"], GPT4O, None, {"no_usage": True}),
                 (cls.research.keys["alice"], HAIKU, None, {"status": 500})]
        for key, model, u, extra in calls:
            mock = dict(extra)
            stream = mock.pop("stream", None)
            if u:
                mock["usage"] = {"prompt_tokens": u[0], "completion_tokens": u[1],
                                 "cached_tokens": u[2]}
            body = chat_body(model, mock=mock, stream=stream)
            if stream:
                s = cls.pm.stream(body, key=key)
                s.read_all()
                s.close()
                rid = s.headers.get("x-pinmeter-request-id")
            else:
                r = cls.pm.chat(body, key=key)
                rid = r.header("x-pinmeter-request-id")
            cls.live.append((rid, key, model, u, body))
        rows = cls.pm.wait_rows(lambda rs: len(rs) == 2400 + 6 and
                                all(x["state"] != "inflight" for x in rs), timeout=10)
        assert len(rows) == 2406, len(rows)

    @classmethod
    def write_history(cls):
        """2,400 rows over the last 60 days (some today, some on exact hour
        boundaries, some sharing a millisecond), every state; the team spend
        table to match; usage_hourly dropped (a ledger from before it)."""
        rnd = random.Random(13)
        who = [("research", "alice"), ("research", "bob"), ("ops", "carol")]
        models = [SONNET, HAIKU, GPT4O, ODD_MODEL]
        rows = []
        for i in range(2400):
            team, key = who[i % 3]
            model = models[rnd.randrange(4)]
            if i % 40 == 0:
                started = (cls.now_ms - rnd.randrange(60) * DAY) // HOUR * HOUR   # on the hour
            elif i % 40 == 1:
                started = rows[-1][1]                                             # a tie
            elif i % 5 == 0:
                started = cls.now_ms - rnd.randrange(1, 6 * HOUR)                 # the last hours
            else:
                started = cls.now_ms - rnd.randrange(60 * DAY)
            started = min(started, cls.now_ms - 60000)
            p, c = rnd.randrange(1, 5000), rnd.randrange(1, 900)
            k = rnd.randrange(0, p)
            reserved = 10 ** 7 + rnd.randrange(10 ** 7)
            kind = rnd.randrange(10)
            priced = price_model(model)
            if kind < 7:
                st, charged, status, up, lat = "settled", cost(priced, p, c, k), 200, "hist-up-%d" % i, 900
            elif kind == 7:
                k = 0
                st, charged, status, up, lat = "estimated", cost(priced, p, c), 200, None, 1200
            elif kind == 8:
                st, charged, status, up, lat, p, c, k = "failed", 0, 502, None, 30, 0, 0, 0
            else:
                st, charged, status, up, lat, p, c, k = "interrupted", reserved, None, None, None, 0, 0, 0
            ended = started + 900 if status is not None else cls.now_ms - 1000
            rows.append(("hist-%05d" % i, started, ended, team, key, model, i % 7 == 0, status,
                         p, c, k, reserved, charged, st, up, lat))
        con = sqlite3.connect(cls.pm.ledger)
        with con:
            con.executemany("INSERT INTO requests(id, started_ms, ended_ms, team, key_id, model,"
                            " stream, status, prompt_tokens, completion_tokens, cached_tokens,"
                            " reserved_nanos, charged_nanos, state, upstream_id, latency_ms)"
                            " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            con.execute("INSERT INTO spend_daily(team, day, nanos) SELECT team,"
                        " started_ms / 86400000, SUM(charged_nanos) FROM requests"
                        " GROUP BY 1, 2 ON CONFLICT(team, day) DO UPDATE SET"
                        " nanos = nanos + excluded.nanos")
            con.execute("DROP TABLE usage_hourly")
        con.close()

    # ------------------------------------------------------------ helpers
    def get(self, path, params=None, key=ADMIN_TOKEN):
        if params:
            path += "?" + urllib.parse.urlencode(params)
        return self.pm.request("GET", path, key=key)

    def ledger(self):
        con = sqlite3.connect(self.pm.ledger, timeout=5)
        con.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in con.execute("SELECT * FROM requests")]
        finally:
            con.close()

    def reference(self, since, until, by, team=None, key=None, model=None):
        """The report's rows computed here from the ledger's requests (a
        grouping by model is by its price set too)."""
        fields = [f for f in ("team", "key", "model", "day", "hour") if f in by]
        prices = ["price_input", "price_output", "price_cache_read"] if "model" in by else []
        groups = collections.OrderedDict()
        for r in self.ledger():
            if not since <= r["started_ms"] < until:
                continue
            if (team and r["team"] != team) or (key and r["key_id"] != key) or \
                    (model and r["model"] != model):
                continue
            t = time.gmtime(r["started_ms"] // 1000)
            vals = {"team": r["team"], "key": r["key_id"], "model": r["model"],
                    "day": time.strftime("%Y-%m-%d", t), "hour": time.strftime("%Y-%m-%dT%H:00:00Z", t)}
            for f in prices:                    # -1: not recorded (sorts first)
                v = r[f + "_nanos"]
                vals[f] = -1 if v is None else v
            g = groups.setdefault(tuple(vals[f] for f in fields + prices), [0, 0, 0, 0, 0])
            for i, v in enumerate((1, r["prompt_tokens"], r["completion_tokens"],
                                   r["cached_tokens"], r["charged_nanos"])):
                g[i] += v
        out = []
        for gk in sorted(groups):
            n = groups[gk]
            row = dict(zip(fields, gk))
            for f, v in zip(prices, gk[len(fields):]):
                row[f] = None if v < 0 else Decimal(fmt_credits(v))
            row.update({"requests": n[0], "prompt_tokens": n[1], "completion_tokens": n[2],
                        "cached_tokens": n[3], "credits": Decimal(fmt_credits(n[4]))})
            out.append(row)
        return out

    def compare(self, params, cli_range=None, key=ADMIN_TOKEN, want_since=None, want_until=None):
        """/v0/usage with params equals `pinmeter report` (JSON and CSV) and
        the reference; returns the JSON answer."""
        r = self.get("/v0/usage", params, key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("content-type"), "application/json")
        j = r.json()
        self.assertEqual(set(j), {"rows", "total", "since", "until"})
        if want_since is not None:
            self.assertEqual(j["since"], iso(want_since))
            self.assertEqual(j["until"], iso(want_until))
        # pinmeter report over the same range (the echoed instants, unless the
        # test gives the CLI the same dates), grouping and filters
        args = list(cli_range) if cli_range else ["--since", j["since"], "--until", j["until"]]
        by = params.get("by", "team,model")
        args += ["--by", by]
        scoped_team = params.get("team")
        if key != ADMIN_TOKEN:                  # a team key: its own team
            scoped_team = next(t.name for t in (self.research, self.ops) if key in t.keys.values())
        if scoped_team:
            args += ["--team", scoped_team]
        for f in ("key", "model"):
            if f in params:
                args += ["--" + f, params[f]]
        rep = parse_report_json(self.pm.report(*args).stdout)
        self.assertEqual(j["rows"], rep["rows"], params)
        self.assertEqual(j["total"], rep["total"], params)
        since = calendar.timegm(time.strptime(j["since"][:19], "%Y-%m-%dT%H:%M:%S")) * 1000 + \
            int(j["since"][20:23])
        until = calendar.timegm(time.strptime(j["until"][:19], "%Y-%m-%dT%H:%M:%S")) * 1000 + \
            int(j["until"][20:23])
        ref = self.reference(since, until, by.split(","), scoped_team, params.get("key"),
                             params.get("model"))
        self.assertEqual(j["rows"], ref, params)
        self.assertEqual(j["total"]["requests"], sum(x["requests"] for x in ref))
        self.assertEqual(to_nanos(j["total"]["credits"]), sum(to_nanos(x["credits"]) for x in ref))
        csv_params = dict(params, format="csv")
        c = self.get("/v0/usage", csv_params, key)
        self.assertEqual(c.status, 200, c)
        self.assertEqual(c.header("content-type"), "text/csv; charset=utf-8")
        self.assertEqual(c.body.decode(), self.pm.report(*args, fmt="csv").stdout, params)
        return j

    # ------------------------------------------------------------ /v0/usage
    def test_default_range_is_this_month(self):
        j = self.compare({}, want_since=month_start_ms(self.now_ms),
                         want_until=next_month_ms(self.now_ms))
        self.assertTrue(j["rows"])
        self.assertEqual(set(j["rows"][0]), {"team", "model", "price_input", "price_output",
                                             "price_cache_read", "requests", "prompt_tokens",
                                             "completion_tokens", "cached_tokens", "credits"})
        j = self.compare({"format": "json", "by": "team"})
        self.assertEqual({x["team"] for x in j["rows"]}, {"research", "ops"})

    def test_groupings_over_all_time(self):
        rng = {"since": "2000-01-01", "until": "2099-12-31"}
        cli = ["--since", "2000-01-01", "--until", "2099-12-31"]
        for by in ("team", "key", "model", "day", "hour", "team,model", "team,key,model,day",
                   "team,model,day,hour", "model,key", ""):
            j = self.compare(dict(rng, by=by), cli_range=cli,
                             want_since=day_ms("2000-01-01"), want_until=day_ms("2100-01-01"))
            self.assertEqual(j["total"]["requests"], 2406, by)
        self.assertIn(ODD_MODEL, self.get("/v0/usage", dict(rng, by="model", format="csv")).body
                      .decode().replace('""', '"'))

    def test_date_ranges(self):
        d0 = time.strftime("%Y-%m-%d", time.gmtime(self.now_ms / 1000 - 30 * 86400))
        d1 = time.strftime("%Y-%m-%d", time.gmtime(self.now_ms / 1000 - 2 * 86400))
        # until is a whole day: [d0 00:00, d1 + 1 day)
        j = self.compare({"since": d0, "until": d1, "by": "team,model,day"},
                         cli_range=["--since", d0, "--until", d1],
                         want_since=day_ms(d0), want_until=day_ms(d1) + DAY)
        self.assertEqual(j["rows"][-1]["day"], d1)
        self.assertEqual(j["rows"][0]["day"], d0)
        # the same day as since and until: that one whole day
        self.compare({"since": d1, "until": d1, "by": "hour"}, want_since=day_ms(d1),
                     want_until=day_ms(d1) + DAY)
        # since alone runs to the end of this month; until alone starts at its month's start
        self.compare({"since": d0, "by": "day"}, want_since=day_ms(d0),
                     want_until=next_month_ms(self.now_ms))
        self.compare({"until": d1, "by": "key"}, want_since=month_start_ms(day_ms(d1)),
                     want_until=day_ms(d1) + DAY)

    def test_instant_ranges_off_the_hour(self):
        a = self.now_ms - 20 * DAY - 17 * 60000 - 1234
        b = self.now_ms - 3 * HOUR - 59 * 1000 - 1
        for since, until in ((a, b), (a, a + 40 * 60000), (b - HOUR, b), (a, self.now_ms + HOUR)):
            for by in ("team,model", "key,hour", "day"):
                self.compare({"since": iso(since), "until": iso(until), "by": by},
                             want_since=since, want_until=until)
        # fractions finer than a millisecond round up, and "Z" may be "+00:00"
        j = self.compare({"since": iso(a)[:-1] + "0001Z", "until": iso(b)[:-5] + "+00:00"},
                         want_since=a + 1, want_until=b // 1000 * 1000)
        self.assertTrue(j["rows"])

    def test_filters(self):
        rng = {"since": "2000-01-01", "until": "2099-12-31"}
        for f in ({"team": "ops"}, {"key": "bob"}, {"model": HAIKU}, {"model": ODD_MODEL},
                  {"team": "research", "key": "alice", "model": SONNET}, {"team": "nobody"}):
            j = self.compare(dict(rng, by="team,key,model", **f))
            for row in j["rows"]:
                for k, v in f.items():
                    self.assertEqual(row[k], v, f)
        self.assertEqual(self.compare(dict(rng, team="nobody"))["rows"], [])

    def test_team_key_sees_only_its_team(self):
        alice, carol = self.research.keys["alice"], self.ops.keys["carol"]
        rng = {"since": "2000-01-01", "until": "2099-12-31", "by": "team,key"}
        j = self.compare(rng, key=alice)
        self.assertEqual({x["team"] for x in j["rows"]}, {"research"})
        self.assertEqual({x["key"] for x in j["rows"]}, {"alice", "bob"})
        everyone = self.compare(rng)
        self.assertEqual({x["team"] for x in everyone["rows"]}, {"research", "ops"})
        self.assertEqual(j["rows"], [x for x in everyone["rows"] if x["team"] == "research"])
        self.compare(dict(rng, team="research", key="bob"), key=alice)     # its own team: fine
        j = self.compare(rng, key=carol)
        self.assertEqual({x["team"] for x in j["rows"]}, {"ops"})
        for path in ("/v0/usage", "/v0/usage/requests"):
            for who, other in ((alice, "ops"), (carol, "research")):
                e = self.assertError(self.get(path, {"team": other}, key=who), 403,
                                     "permission_error")
                self.assertEqual(e["code"], "team_not_allowed")
        # the request log: only its team's rows, every one of them
        r = self.get("/v0/usage/requests", {"limit": 1000}, key=carol)
        self.assertEqual(r.status, 200, r)
        got = r.json()["requests"]
        self.assertEqual({x["team"] for x in got}, {"ops"})
        want = sorted((x for x in self.ledger() if x["team"] == "ops"),
                      key=lambda x: (x["started_ms"], x["id"]), reverse=True)[:1000]
        self.assertEqual([x["id"] for x in got], [x["id"] for x in want])
        # another team's request by id is not found; its own and the admin's are
        ops_id = self.live[3][0]
        self.assertError(self.get("/v0/usage/requests/" + ops_id, key=alice), 404)
        self.assertEqual(self.get("/v0/usage/requests/" + ops_id, key=carol).status, 200)
        self.assertEqual(self.get("/v0/usage/requests/" + ops_id).status, 200)
        # no key, a wrong key
        self.assertError(self.get("/v0/usage", key=None), 401)
        self.assertError(self.get("/v0/usage/requests", key="pm-test-nope"), 401)
        self.assertError(self.get("/v0/usage/requests/" + ops_id, key="pm-test-nope"), 401)

    def test_bad_parameters_name_themselves(self):
        cases = [("/v0/usage", {"since": "yesterday"}, "since"),
                 ("/v0/usage", {"since": "2026-02-30"}, "since"),
                 ("/v0/usage", {"until": "2026-12-01T10:00:00+01:00"}, "until"),
                 ("/v0/usage", {"until": "2026-12-01T10:00"}, "until"),
                 ("/v0/usage", {"since": "2026-12-02", "until": "2026-12-01"}, "until"),
                 ("/v0/usage", {"by": "team,colour"}, "by"),
                 ("/v0/usage", {"by": "Team"}, "by"),
                 ("/v0/usage", {"format": "table"}, "format"),
                 ("/v0/usage", {"team": ""}, "team"),
                 ("/v0/usage", {"limit": "5"}, "limit"),          # not one of its parameters
                 ("/v0/usage", {"sinse": "2026-12-01"}, "sinse"),
                 ("/v0/usage/requests", {"limit": "0"}, "limit"),
                 ("/v0/usage/requests", {"limit": "1001"}, "limit"),
                 ("/v0/usage/requests", {"limit": "ten"}, "limit"),
                 ("/v0/usage/requests", {"limit": "-1"}, "limit"),
                 ("/v0/usage/requests", {"limit": "99999999999999999999"}, "limit"),
                 ("/v0/usage/requests", {"cursor": "not-a-cursor!"}, "cursor"),
                 ("/v0/usage/requests", {"cursor": "bm9wZQ"}, "cursor"),   # base64 of "nope"
                 ("/v0/usage/requests", {"cursor": ""}, "cursor"),
                 ("/v0/usage/requests", {"state": "done"}, "state"),
                 ("/v0/usage/requests", {"since": "12/01/2026"}, "since"),
                 ("/v0/usage/requests", {"format": "csv"}, "format"),
                 ("/v0/usage/requests/" + self.live[0][0], {"limit": "3"}, "limit")]
        for path, params, name in cases:
            r = self.get(path, params)
            e = self.assertError(r, 400, "invalid_request_error")
            self.assertEqual(e.get("param"), name, (path, params, r))
            self.assertTrue(e["message"].startswith(name + ":"), e)
        # 405 and 404 from the route table
        self.assertError(self.pm.request("POST", "/v0/usage", body={}, key=ADMIN_TOKEN), 405)
        self.assertError(self.get("/v0/usage/requests/"), 404)
        self.assertError(self.get("/v0/usage/requests/a/b"), 404)

    # ------------------------------------------------------------ the request log
    def test_request_by_id(self):
        rid, key, model, (p, c, k), body = self.live[0]
        r = self.get("/v0/usage/requests/" + rid, key=key)
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(set(j), {"id", "started_at", "ended_at", "team", "key", "model",
                                  "stream", "status", "prompt_tokens", "completion_tokens",
                                  "cached_tokens", "reserved", "charged", "state",
                                  "upstream_id", "latency_ms", "price_input", "price_output",
                                  "price_cache_read"})
        self.assertEqual(tuple(to_nanos(j[f]) for f in ("price_input", "price_output",
                                                        "price_cache_read")), rate_nanos(SONNET))
        self.assertRegex(r.body.decode(), r'"price_output":15\.000000000[,}]')
        row = self.pm.row(req_id=rid)
        self.assertEqual((j["id"], j["team"], j["key"], j["model"]), (rid, "research", "alice", SONNET))
        self.assertEqual((j["prompt_tokens"], j["completion_tokens"], j["cached_tokens"]), (p, c, k))
        self.assertEqual(to_nanos(j["charged"]), cost(SONNET, p, c, k))
        self.assertEqual(to_nanos(j["reserved"]), reservation(SONNET, body_len(body), 100))
        self.assertRegex(r.body.decode(), r'"charged":0\.009960000[,}]')
        self.assertEqual((j["state"], j["status"], j["stream"]), ("settled", 200, False))
        self.assertEqual(j["started_at"], iso(row["started_ms"]))
        self.assertEqual(j["ended_at"], iso(row["ended_ms"]))
        self.assertRegex(j["started_at"], TIME_RE)
        self.assertEqual(j["upstream_id"], row["upstream_id"])
        self.assertEqual(j["latency_ms"], row["latency_ms"])
        # the stream, the estimate (no usage) and the failure (upstream 500)
        j = self.get("/v0/usage/requests/" + self.live[2][0]).json()
        self.assertEqual((j["stream"], j["state"], j["model"]), (True, "settled", HAIKU))
        j = self.get("/v0/usage/requests/" + self.live[4][0]).json()
        self.assertEqual(j["state"], "estimated")
        self.assertGreater(to_nanos(j["charged"]), 0)
        j = self.get("/v0/usage/requests/" + self.live[5][0]).json()
        self.assertEqual((j["state"], j["status"], to_nanos(j["charged"])), ("failed", 500, 0))
        # an interrupted historical row: no status, upstream id or latency
        h = next(x for x in self.ledger() if x["state"] == "interrupted")
        j = self.get("/v0/usage/requests/" + h["id"]).json()
        self.assertEqual((j["status"], j["upstream_id"], j["latency_ms"]), (None, None, None))
        self.assertEqual((j["price_input"], j["price_output"], j["price_cache_read"]),
                         (None, None, None))         # from before prices were recorded
        self.assertEqual(to_nanos(j["charged"]), h["reserved_nanos"])
        self.assertError(self.get("/v0/usage/requests/" + rid + "x"), 404)
        self.assertError(self.get("/v0/usage/requests/nope"), 404)

    def test_request_log_order_filters_pages(self):
        rows = sorted(self.ledger(), key=lambda x: (x["started_ms"], x["id"]), reverse=True)
        r = self.get("/v0/usage/requests")
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(set(j), {"requests", "next_cursor"})
        self.assertEqual([x["id"] for x in j["requests"]], [x["id"] for x in rows[:100]])
        self.assertIsInstance(j["next_cursor"], str)
        # a page's next one continues exactly where it stopped
        j2 = self.get("/v0/usage/requests", {"cursor": j["next_cursor"], "limit": 50}).json()
        self.assertEqual([x["id"] for x in j2["requests"]], [x["id"] for x in rows[100:150]])
        # filters with a range: state, model, key, since/until (37 rows a page)
        a, b = self.now_ms - 40 * DAY, self.now_ms - 10 * DAY
        a_day = time.strftime("%Y-%m-%d", time.gmtime(a / 1000))
        cases = [({"state": "estimated"}, lambda x: x["state"] == "estimated"),
                 ({"state": "interrupted", "key": "carol"},
                  lambda x: x["state"] == "interrupted" and x["key_id"] == "carol"),
                 ({"model": ODD_MODEL, "since": iso(a), "until": iso(b)},
                  lambda x: x["model"] == ODD_MODEL and a <= x["started_ms"] < b),
                 ({"team": "research", "since": a_day},
                  lambda x: x["team"] == "research" and x["started_ms"] >= day_ms(a_day))]
        for f, keep in cases:
            want = [x["id"] for x in rows if keep(x)]
            got, cur, pages = [], None, 0
            while True:
                q = dict(f, limit=37)
                if cur:
                    q["cursor"] = cur
                j = self.get("/v0/usage/requests", q).json()
                got += [x["id"] for x in j["requests"]]
                cur, pages = j["next_cursor"], pages + 1
                if cur is None:
                    break
            self.assertTrue(want, f)
            self.assertEqual(got, want, f)
            self.assertEqual(pages, -(-len(want) // 37), f)
        # the last page says so
        j = self.get("/v0/usage/requests", {"limit": 1000, "key": "carol", "state": "failed"}).json()
        self.assertIsNone(j["next_cursor"])

    def test_zz_cursor_walk_during_load(self):
        """Runs last (zz): 200 requests from 8 threads while a walk by cursor
        (7 rows a page) goes through the whole log."""
        keys = [self.research.keys["alice"], self.research.keys["bob"], self.ops.keys["carol"]]
        statuses, errors = [], []

        def load(t):
            for i in range(25):
                try:
                    r = self.pm.chat(chat_body(SONNET if i % 2 else HAIKU,
                                               mock={"delay_ms": 15}), key=keys[(t + i) % 3])
                    statuses.append(r.status)
                except OSError as e:
                    errors.append(e)

        before = len(self.ledger())
        threads = [threading.Thread(target=load, args=(t,), daemon=True) for t in range(8)]
        for t in threads:
            t.start()
        deadline = time.time() + 10
        while len(self.ledger()) < before + 20 and time.time() < deadline:
            time.sleep(0.01)
        present = {x["id"] for x in self.ledger()}      # committed before the walk's first page
        during = len(present) - before
        seen, cur, pages = [], None, 0
        while pages < 2000:
            q = {"limit": 7}
            if cur:
                q["cursor"] = cur
            r = self.get("/v0/usage/requests", q)
            self.assertEqual(r.status, 200, r)
            j = r.json()
            seen += [x["id"] for x in j["requests"]]
            cur, pages = j["next_cursor"], pages + 1
            if cur is None:
                break
        for t in threads:
            t.join(timeout=60)
        self.assertEqual(errors, [])
        self.assertEqual(statuses, [200] * 200)
        self.assertLess(during, 200, "the load had finished before the walk began")
        self.assertTrue(during >= 20)
        dups = [i for i, n in collections.Counter(seen).items() if n > 1]
        self.assertEqual(dups, [], "rows visited twice")
        self.assertEqual(present - set(seen), set(), "rows present at the start not visited")
        self.assertGreater(pages, 2400 // 7)
        rows = self.pm.wait_rows(lambda rs: len(rs) == before + 200 and
                                 all(x["state"] != "inflight" for x in rs), timeout=10)
        self.assertEqual(len(rows), before + 200)
        # the rollup, kept by the writer through all of it, is the GROUP BY
        con = sqlite3.connect(self.pm.ledger)
        try:
            diff = con.execute(
                "SELECT COUNT(*) FROM (SELECT hour, team, key_id, model, price_input_nanos,"
                " price_output_nanos, price_cache_read_nanos, requests, prompt_tokens,"
                " completion_tokens, cached_tokens, charged_nanos FROM usage_hourly EXCEPT"
                " SELECT started_ms / 3600000, team, key_id, model, COALESCE(price_input_nanos, -1),"
                " COALESCE(price_output_nanos, -1), COALESCE(price_cache_read_nanos, -1), COUNT(*),"
                " SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens),"
                " SUM(charged_nanos) FROM requests GROUP BY 1, 2, 3, 4, 5, 6, 7)").fetchone()[0]
            n = con.execute("SELECT SUM(requests) FROM usage_hourly").fetchone()[0]
        finally:
            con.close()
        self.assertEqual(diff, 0)
        self.assertEqual(n, len(rows))
        self.compare({"since": "2000-01-01", "until": "2099-12-31", "by": "team,key,model,hour"})
        # every charge follows the rates; historical rows include interrupted ones
        check_invariants(self, [self.pm], self.mock, allow_interrupted=True,
                         rates=lambda model, row: rate_nanos(price_model(model)))


class PassthroughUsageTest(E2ETest):
    """In passthrough mode every bearer key is a caller of team "default":
    the usage endpoints answer the admin token only."""

    @classmethod
    def setup_proxies(cls):
        cls.pm = cls.add_proxy([], name="ptusage", upstream_key=None,
                               env={"PINMETER_ADMIN_TOKEN": ADMIN_TOKEN})

    def test_admin_only(self):
        r = self.pm.chat(chat_body(SONNET), key="sk-client-own-key")
        self.assertEqual(r.status, 200, r)
        rid = r.header("x-pinmeter-request-id")
        self.pm.row(req_id=rid)
        for path in ("/v0/usage", "/v0/usage/requests", "/v0/usage/requests/" + rid):
            self.assertError(self.pm.request("GET", path, key="sk-client-own-key"), 401)
            self.assertEqual(self.pm.request("GET", path, key=ADMIN_TOKEN).status, 200, path)
        j = self.pm.request("GET", "/v0/usage?by=team", key=ADMIN_TOKEN).json()
        self.assertEqual([x["team"] for x in j["rows"]], ["default"])
        self.assertEqual(j["total"]["requests"], 1)

"""Pinata's live rates (issue 16): `pinmeter rates sync` writes exactly the
list the mock serves and prints the diff, leaves the file byte for byte as it
was on any bad answer, and changes nothing with --dry-run; `serve` with
rates_sync_s charges requests admitted after a price change at the new
prices and one in flight across it at the old ones, every ledger row carries
the prices it was charged at, the changes are in rate_changes, a model that
left the list is refused, the report gives a model one row per price set,
SIGHUP and the sync take turns, and a failing sync is logged once and keeps
serving."""
import json
import os
import signal
import sqlite3
import threading
import time
from decimal import Decimal

from harness import (E2ETest, Team, RATES, SONNET, HAIKU, GPT4O, NANO, ONE_M, ceil_div,
                     chat_body, closed_port, http_request, parse_report_json, rate_nanos,
                     run_bin, to_nanos, ADMIN_TOKEN)


def models_with(changes=None, drop=(), add=()):
    """RATES with some models' prices replaced, some dropped, some added."""
    out = []
    for r in RATES:
        if r["model_id"] in drop:
            continue
        r = dict(r)
        r.update((changes or {}).get(r["model_id"], {}))
        out.append(r)
    return out + list(add)


def price(i, o, c):
    return {"input_usd_per_1m_tokens": i, "output_usd_per_1m_tokens": o,
            "cache_read_usd_per_1m_tokens": c}


def nanos3(i, o, c):
    return tuple(int(Decimal(str(x)) * NANO) for x in (i, o, c))


def cost_at(rate, prompt, completion, cached=0):
    i, o, c = rate
    return ceil_div((prompt - cached) * i + cached * c + completion * o, ONE_M)


def set_models(mock, models=None, raw=None, status=None):
    body = {}
    if models is not None:
        body["models"] = models
    if raw is not None:
        body["raw"] = raw
    if status is not None:
        body["status"] = status
    r = http_request(mock.port, "POST", "/__mock/models", body=body)
    assert r.status == 200, r


def served(mock):
    """The exact bytes the mock's /v0/llm/models answers now."""
    return http_request(mock.port, "GET", "/v0/llm/models").body


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def sql(path, query, args=()):
    con = sqlite3.connect(path, timeout=5)
    try:
        return con.execute(query, args).fetchall()
    finally:
        con.close()


NEW_SONNET = price(6.0, 30.0, 0.6)
NEW_MODEL = dict({"model_id": "test/new"}, **price(0.5, 1.5, 0.05))


class RatesSyncCLITest(E2ETest):
    """`pinmeter rates sync` against the mock, a fresh rates file each test."""

    n = 0

    def setUp(self):
        super().setUp()
        set_models(self.mock)                       # the --rates list again
        RatesSyncCLITest.n += 1
        self.dir = os.path.join(self.tmp, "cli%d" % self.n)
        os.makedirs(self.dir)
        self.rates = os.path.join(self.dir, "rates.json")
        with open(self.rates, "w") as f:
            json.dump(RATES, f, indent=1)
        self.cfg = os.path.join(self.dir, "pinmeter.json")
        self.write_cfg(self.mock.url)

    def write_cfg(self, base_url):
        with open(self.cfg, "w") as f:
            json.dump({"upstream": {"base_url": base_url}, "rates_file": self.rates,
                       "ledger": os.path.join(self.dir, "l.db")}, f)

    def sync(self, *args):
        return run_bin(["rates", "sync", "-c", self.cfg] + list(args))

    def listing(self):
        return sorted(os.listdir(self.dir))

    def test_sync_writes_exactly_the_new_prices_and_prints_the_diff(self):
        old = read_bytes(self.rates)
        new = models_with({SONNET: NEW_SONNET}, drop=[HAIKU], add=[NEW_MODEL])
        set_models(self.mock, new)
        p = self.sync()
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        self.assertIn("changed  %-27s  3.000000000 / 15.000000000 / 0.300000000 -> "
                      "6.000000000 / 30.000000000 / 0.600000000" % SONNET, out)
        self.assertIn("removed  %-27s  0.750000000 / 3.750000000 / 0.075000000" % HAIKU, out)
        self.assertIn("added    %-27s  0.500000000 / 1.500000000 / 0.050000000" % "test/new", out)
        self.assertIn("1 added, 1 removed, 1 changed", out)
        self.assertNotIn(GPT4O, out)                # unchanged models are not listed
        # the file is Pinata's answer, byte for byte; the old one is .prev
        self.assertEqual(read_bytes(self.rates), served(self.mock))
        self.assertEqual(json.loads(read_bytes(self.rates)), new)
        self.assertEqual(read_bytes(self.rates + ".prev"), old)
        self.assertEqual(self.listing(), ["pinmeter.json", "rates.json", "rates.json.prev"])
        # the new file is a valid rates file with exactly those prices
        c = run_bin(["check-config", "-c", self.cfg])
        self.assertEqual(c.returncode, 0, c.stderr)
        self.assertIn("4 priced model(s)", c.stdout)
        # again: current, nothing rewritten
        before = os.stat(self.rates).st_mtime_ns
        p = self.sync()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("no change", p.stdout)
        self.assertEqual(os.stat(self.rates).st_mtime_ns, before)
        self.assertEqual(read_bytes(self.rates + ".prev"), old)

    def test_bad_answers_exit_1_and_leave_the_file_byte_identical(self):
        one = dict({"model_id": "a/b"}, **price(1, 2, 0.1))
        bad = [
            ("not JSON", {"raw": "<html>upstream error</html>"}, "invalid JSON"),
            ("truncated", {"raw": json.dumps(RATES)[:-20]}, "invalid JSON"),
            ("negative price", {"models": models_with({SONNET: price(3.0, -15.0, 0.3)})},
             "output_usd_per_1m_tokens: must be a finite number >= 0"),
            ("duplicate ids", {"models": RATES + [dict(RATES[0])]}, "duplicate"),
            ("HTTP 500", {"status": 500}, "HTTP 500"),
            ("an empty list", {"models": []}, "no models"),
            ("a missing field", {"models": [{"model_id": "a/b", "input_usd_per_1m_tokens": 1,
                                             "output_usd_per_1m_tokens": 2}]},
             "cache_read_usd_per_1m_tokens: missing"),
            ("an empty id", {"models": [dict(one, model_id="")]}, "non-empty string"),
            ("not a list", {"raw": json.dumps({"data": RATES})}, "must be a JSON array"),
        ]
        before = read_bytes(self.rates)
        for name, body, why in bad:
            with self.subTest(name):
                set_models(self.mock, models=body.get("models"), raw=body.get("raw"),
                           status=body.get("status"))
                for extra in ([], ["--dry-run"]):
                    p = self.sync(*extra)
                    self.assertEqual(p.returncode, 1, (name, p.stdout, p.stderr))
                    self.assertIn(why, p.stderr)
                    self.assertIn("left as it was", p.stderr)
                    self.assertEqual(read_bytes(self.rates), before)
                    self.assertEqual(self.listing(), ["pinmeter.json", "rates.json"])

    def test_unreachable_exits_1(self):
        self.write_cfg("http://127.0.0.1:%d" % closed_port())
        before = read_bytes(self.rates)
        p = self.sync()
        self.assertEqual(p.returncode, 1)
        self.assertIn("left as it was", p.stderr)
        self.assertEqual(read_bytes(self.rates), before)
        self.assertEqual(self.listing(), ["pinmeter.json", "rates.json"])

    def test_dry_run_prints_the_diff_and_changes_nothing(self):
        before = read_bytes(self.rates)
        set_models(self.mock, models_with({SONNET: NEW_SONNET}))
        p = self.sync("--dry-run")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("changed  %s" % SONNET, p.stdout)
        self.assertIn("dry run", p.stdout)
        self.assertEqual(read_bytes(self.rates), before)
        self.assertEqual(self.listing(), ["pinmeter.json", "rates.json"])

    def test_from_overrides_the_url_and_never_prints_its_password(self):
        self.write_cfg("http://127.0.0.1:%d" % closed_port())     # not used with --from
        new = models_with({GPT4O: price(2.0, 8.0, 1.0)})
        set_models(self.mock, new)
        url = "http://someone:s3cret-pw@127.0.0.1:%d/v0/llm/models" % self.mock.port
        p = self.sync("--from", url)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("changed  %s" % GPT4O, p.stdout)
        self.assertNotIn("s3cret-pw", p.stdout + p.stderr)
        self.assertEqual(json.loads(read_bytes(self.rates)), new)
        p = run_bin(["rates", "sync", "-c", self.cfg, "--from", "ftp://127.0.0.1/x"])
        self.assertEqual(p.returncode, 1)
        p = run_bin(["rates", "nope"])
        self.assertEqual(p.returncode, 2)


class RatesServeTest(E2ETest):
    """serve with rates_sync_s: 1 against the mock."""

    @classmethod
    def setup_proxies(cls):
        cls.team = Team("t", 1000.0)
        cls.rates = os.path.join(cls.tmp, "served-rates.json")
        with open(cls.rates, "w") as f:
            json.dump(RATES, f, indent=1)
        cls.pm = cls.add_proxy([cls.team], name="rs", rates_file=cls.rates,
                               overrides={"rates_sync_s": 1},
                               env={"PINMETER_ADMIN_TOKEN": ADMIN_TOKEN})

    def setUp(self):
        super().setUp()
        set_models(self.mock)
        self.wait_table(RATES)

    def changes(self):
        return sql(self.pm.ledger, "SELECT at_ms, model, source, old_input_nanos, old_output_nanos,"
                   " old_cache_read_nanos, new_input_nanos, new_output_nanos,"
                   " new_cache_read_nanos FROM rate_changes ORDER BY rowid")

    def wait_table(self, models, timeout=6.0):
        """Waits until the file is models, and then a moment for the swap and
        the rate_changes rows that follow its rename."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if json.loads(read_bytes(self.rates)) == models:
                    time.sleep(0.3)
                    return
            except ValueError:
                pass
            time.sleep(0.05)
        self.fail("the rate table never became %r" % models)

    def wait_changes(self, n, timeout=6.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            rows = self.changes()
            if len(rows) >= n:
                return rows
            time.sleep(0.05)
        self.fail("rate_changes has %d rows, want %d" % (len(self.changes()), n))

    def charge(self, model, usage, **mock):
        m = {"usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                       "cached_tokens": usage[2]}}
        m.update(mock)
        return self.pm.chat(chat_body(model, mock=m), key=self.team.key, timeout=20)

    def test_admitted_after_a_change_pay_the_new_prices_in_flight_the_old(self):
        old = rate_nanos(SONNET)
        new = nanos3(6.0, 30.0, 0.6)
        usage = (1000, 500, 200)
        n0 = len(self.changes())
        # A: admitted at the old prices, held upstream across the change
        out = {}
        a = threading.Thread(target=lambda: out.setdefault("a", self.charge(SONNET, usage,
                                                                          delay_ms=5000)))
        a.start()
        deadline = time.time() + 3
        while self.mock.stats()["chat_active"] == 0 and time.time() < deadline:
            time.sleep(0.01)
        self.assertEqual(self.mock.stats()["chat_active"], 1, "A is upstream")
        listed = models_with({SONNET: NEW_SONNET}, drop=[HAIKU], add=[NEW_MODEL])
        set_models(self.mock, listed)
        rows = self.wait_changes(n0 + 3)[n0:]
        # B: admitted after it, while A is still upstream
        b = self.charge(SONNET, usage)
        self.assertEqual(b.status, 200, b)
        rb = self.pm.row_for(b)
        self.assertEqual(rb["charged_nanos"], cost_at(new, *usage))
        self.assertEqual((rb["price_input_nanos"], rb["price_output_nanos"],
                          rb["price_cache_read_nanos"]), new)
        ra = self.pm.ledger_rows("state = 'inflight'")
        self.assertEqual(len(ra), 1, "A is still in flight when B settles")
        self.assertEqual((ra[0]["price_input_nanos"], ra[0]["price_output_nanos"],
                          ra[0]["price_cache_read_nanos"]), old)
        a.join(15)
        self.assertEqual(out["a"].status, 200, out["a"])
        row_a = self.pm.row_for(out["a"])
        self.assertEqual(row_a["state"], "settled")
        self.assertEqual(row_a["charged_nanos"], cost_at(old, *usage))
        self.assertEqual((row_a["price_input_nanos"], row_a["price_output_nanos"],
                          row_a["price_cache_read_nanos"]), old)
        self.assertNotEqual(cost_at(old, *usage), cost_at(new, *usage))
        # the change, model by model (NULL for added and removed)
        by = {r[1]: r for r in rows}
        self.assertEqual(set(by), {SONNET, HAIKU, "test/new"})
        self.assertEqual({r[2] for r in rows}, {"sync"})
        self.assertEqual(by[SONNET][3:], old + new)
        self.assertEqual(by[HAIKU][3:], rate_nanos(HAIKU) + (None, None, None))
        self.assertEqual(by["test/new"][3:], (None, None, None) + nanos3(0.5, 1.5, 0.05))
        # the file is what Pinata served; the old one is kept
        self.assertEqual(read_bytes(self.rates), served(self.mock))
        self.assertEqual(json.loads(read_bytes(self.rates + ".prev")), RATES)
        logs = self.pm.logs_text()
        self.assertIn("rates sync: 1 added, 1 removed, 1 changed", logs)
        self.assertIn("changed  %s  3.000000000 / 15.000000000 / 0.300000000 -> "
                      "6.000000000 / 30.000000000 / 0.600000000" % SONNET, logs)
        # a model Pinata no longer lists is unpriced: refused, never forwarded
        before = self.mock.chat_count()
        r = self.charge(HAIKU, (10, 5, 0))
        self.assertError(r, 400, "model_not_priced")
        self.assertEqual(self.mock.chat_count(), before)
        # and one it added is priced
        r = self.charge("test/new", (100, 10, 0))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.pm.row_for(r)["charged_nanos"],
                         cost_at(nanos3(0.5, 1.5, 0.05), 100, 10))
        # the request log shows each row's prices, in credits per 1M tokens
        for resp, want in ((out["a"], ("3.000000000", "15.000000000", "0.300000000")),
                           (b, ("6.000000000", "30.000000000", "0.600000000"))):
            rid = resp.header("x-pinmeter-request-id")
            j = self.pm.request("GET", "/v0/usage/requests/" + rid, key=self.team.key)
            self.assertEqual(j.status, 200, j)
            raw = j.body.decode()
            for field, v in zip(("price_input", "price_output", "price_cache_read"), want):
                self.assertIn('"%s":%s' % (field, v), raw.replace(" ", "").replace("\t", ""))
        # the report by model: a row per price set sonnet was charged at
        rep = parse_report_json(self.pm.report("--by", "model", "--model", SONNET).stdout)
        got = sorted((to_nanos(x["price_input"]), to_nanos(x["price_output"]),
                      to_nanos(x["price_cache_read"]), x["requests"], to_nanos(x["credits"]))
                     for x in rep["rows"])
        self.assertEqual(got, sorted([old + (1, cost_at(old, *usage)),
                                      new + (1, cost_at(new, *usage))]))
        # ...and GET /v0/usage, the same code, agrees to the nano-credit
        u = self.pm.request("GET", "/v0/usage?by=model&model=%s&since=2000-01-01"
                            % SONNET.replace("/", "%2F"), key=ADMIN_TOKEN)
        self.assertEqual(u.status, 200, u)
        self.assertEqual(u.json()["rows"], rep["rows"])

    def test_sighup_and_the_sync_take_turns(self):
        """A hand edit applied by SIGHUP is recorded as a reload; the sync then
        puts Pinata's prices back; many SIGHUPs during syncs of changing prices
        leave the table, the file and Pinata's list the same."""
        n0 = len(self.changes())
        edited = models_with({GPT4O: price(9.0, 9.0, 9.0)})
        set_models(self.mock, status=503)          # pause the sync (failing)
        time.sleep(1.2)
        with open(self.rates, "w") as f:
            json.dump(edited, f)
        self.pm.send_signal(signal.SIGHUP)
        rows = self.wait_changes(n0 + 1)[n0:]
        self.assertEqual([(r[1], r[2]) for r in rows], [(GPT4O, "reload")])
        self.assertEqual(rows[0][6:], nanos3(9.0, 9.0, 9.0))
        set_models(self.mock)                      # Pinata still lists the old prices
        rows = self.wait_changes(n0 + 2)[n0:]
        self.assertEqual([(r[1], r[2]) for r in rows], [(GPT4O, "reload"), (GPT4O, "sync")])
        self.assertEqual(rows[1][6:], rate_nanos(GPT4O))
        # storm: reloads every 30 ms while the list changes every 0.4 s
        final = None
        for k in range(6):
            final = models_with({SONNET: price(3.0 + k, 15.0, 0.3)})
            set_models(self.mock, final)
            for _ in range(13):
                self.pm.send_signal(signal.SIGHUP)
                time.sleep(0.03)
        self.wait_table(final)
        time.sleep(1.5)                            # one more round: nothing left to change
        n = len(self.changes())
        time.sleep(1.2)
        self.assertEqual(len(self.changes()), n)
        r = self.charge(SONNET, (1000, 100, 0))
        self.assertEqual(r.status, 200, r)
        row = self.pm.row_for(r)
        self.assertEqual(row["price_input_nanos"], 8 * NANO)
        self.assertEqual(row["charged_nanos"], cost_at(nanos3(8.0, 15.0, 0.3), 1000, 100))
        self.assertTrue(self.pm.alive())
        self.assertNotIn("reload refused", self.pm.logs_text())

    def test_x_failed_sync_is_logged_once_and_keeps_the_table(self):
        logs0 = len(self.pm.logs_text())
        n0 = len(self.changes())
        set_models(self.mock, raw="[]")            # a broken answer: the table stays
        time.sleep(3.5)
        set_models(self.mock, status=500)          # still failing, another reason
        time.sleep(2.2)
        logs = self.pm.logs_text()[logs0:]
        self.assertEqual(logs.count("rates sync failed"), 1, logs)
        self.assertIn("no models", logs)
        self.assertEqual(len(self.changes()), n0)
        self.assertEqual(json.loads(read_bytes(self.rates)), RATES)
        r = self.charge(SONNET, (100, 10, 0))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.pm.row_for(r)["charged_nanos"], cost_at(rate_nanos(SONNET), 100, 10))
        set_models(self.mock)
        self.assertTrue(self.pm.wait_log("Pinata's prices read again", timeout=4, since=logs0))


class RatesUnreachableTest(E2ETest):
    """The shipped config's case (`make run` with no way to Pinata): the sync
    fails, says so once, and pinmeter serves on with the rates file."""

    @classmethod
    def setup_proxies(cls):
        cls.pm = cls.add_proxy([], name="ru", upstream="http://127.0.0.1:%d" % closed_port(),
                               overrides={"rates_sync_s": 1}, upstream_key=None)

    def test_logs_once_and_serves(self):
        time.sleep(2.5)
        logs = self.pm.logs_text()
        self.assertEqual(logs.count("rates sync failed"), 1, logs)
        r = self.pm.request("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(self.pm.alive())

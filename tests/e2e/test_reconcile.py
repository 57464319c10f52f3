"""Issue 16: reconciliation — Pinata's numbers against pinmeter's.

The mock, metered, draws its balance down by exactly what it serves at its
own prices (the same table pinmeter prices with); 1.5 credits of usage go
around pinmeter (POST /__mock/spend), and a top-up adds 10. pinmeter syncs
every second and records each sync. `pinmeter reconcile` then shows every
interval between two syncs — Pinata's spend (the fall in total plus a
top-up's credits), pinmeter's charges settled in it, the drift — and, once
every interval has settled, a total drift of exactly 1.500000000 credits,
with Pinata's spend equal to what the mock served plus 1.5 and pinmeter's
equal to the ledger's charges, in table, CSV and JSON;
GET /v0/account/reconcile answers the same JSON; the gauge
pinmeter_account_drift_credits shows 1.5 (also after a restart) and the
drift alert fires once.
"""
import json
import sqlite3
import threading
import time

import test_alerts
from harness import (E2ETest, Team, SONNET, HAIKU, GPT4O, NANO, JWT, ADMIN_TOKEN, chat_body,
                     to_nanos, parse_csv)
from test_guard import GuardBase, uniq

ENV = {"PINATA_JWT": JWT, "PINMETER_ADMIN_TOKEN": ADMIN_TOKEN}


def usage(p, c, cached=0):
    return {"usage": {"prompt_tokens": p, "completion_tokens": c, "cached_tokens": cached}}


def iso_ms(t):
    ms = int(t * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


class ReconcileTest(test_alerts.WithReceiver, GuardBase):
    @classmethod
    def setup_proxies(cls):
        cls.mock.set_balance(total=100, loaned=0, available=100, metered=True)
        cls.team = Team("recon", 50.0, key_ids=["r1", "r2"])
        cls.pm = cls.add_proxy([cls.team], name="recon", env=ENV, overrides={
            "account": {"sync_s": 1, "drift_alert": 1.0},
            "alerts": {"webhook_url": cls.rx.url}})

    def ledger_charged(self):
        con = sqlite3.connect(self.pm.ledger, timeout=5)
        try:
            return con.execute("SELECT COALESCE(SUM(charged_nanos), 0), COUNT(*) FROM requests"
                               " WHERE state != 'inflight'").fetchone()
        finally:
            con.close()

    def reconcile(self, *args, fmt="json"):
        p = self.pm.cli("reconcile", "-c", self.pm.config_path, "--format", fmt, *args)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout

    def gauge(self):
        r = self.pm.request("GET", "/metrics", key=ADMIN_TOKEN)
        self.assertEqual(r.status, 200, r)
        for line in r.body.decode().splitlines():
            if line.startswith("pinmeter_account_drift_credits "):
                return line.split()[1]
        return None

    def traffic(self):
        """Requests of several models, streamed and not, spread over several
        sync intervals, one of them in flight across a sync."""
        keys = list(self.team.keys.values())
        bodies = [chat_body(SONNET, max_tokens=600, mock=usage(1000, 500, 200)),
                  chat_body(HAIKU, max_tokens=300, mock=usage(321, 123)),
                  chat_body(GPT4O, max_tokens=50, stream=True, mock=usage(77, 33, 7)),
                  chat_body(SONNET, max_tokens=40, mock=dict(usage(5, 40), delay_ms=1300)),
                  chat_body(HAIKU, max_tokens=900, stream=True, mock=usage(2000, 800))]
        out = []

        def one(i, b):
            if b.get("stream"):
                s = self.pm.stream(b, key=keys[i % 2])
                s.read_all()
                out.append(s.status)
                s.close()
            else:
                out.append(self.pm.chat(b, key=keys[i % 2]).status)

        threads = []
        for i, b in enumerate(bodies * 2):
            t = threading.Thread(target=one, args=(i, b))
            t.start()
            threads.append(t)
            time.sleep(0.3)
        for t in threads:
            t.join(15)
        self.assertEqual(out, [200] * len(bodies) * 2)

    def test_total_drift_is_the_outside_usage(self):
        rx, pm, mock = self.rx, self.pm, self.mock
        rx.reset()
        self.wait_syncs()
        self.traffic()
        mock.spend("1.5")                         # usage that did not pass through pinmeter
        self.traffic()
        for key in self.team.keys.values():
            pm.wait_idle(key)
        self.wait_syncs(3)                        # every interval settled
        mock.topup("10")                          # a top-up while idle: its interval drifts 0
        self.wait_syncs(3)
        until = iso_ms(time.time() - 0.5)

        st = mock.stats()
        served, n = st["served_nanos"], self.ledger_charged()[1]
        self.assertEqual(st["outside_nanos"], 1500000000)
        self.assertEqual(n, 20)
        self.assertEqual(self.ledger_charged()[0], served, "pinmeter and the mock price alike")

        j = json.loads(self.reconcile("--until", until))
        tot = j["total"]
        self.assertEqual(to_nanos(tot["drift"]), 1500000000)
        self.assertEqual(tot["drift"], 1.5)
        self.assertEqual(to_nanos(tot["pinata"]), served + 1500000000)
        self.assertEqual(to_nanos(tot["pinmeter"]), served)
        self.assertEqual((tot["topups"], to_nanos(tot["credits_added"])), (1, 10 * NANO))
        lines = j["intervals"]
        self.assertEqual(tot["intervals"], len(lines))
        self.assertGreaterEqual(len(lines), 8)
        self.assertIsNone(j["since"])
        self.assertEqual(j["until"], until)
        for a, b in zip(lines, lines[1:]):
            self.assertEqual(a["to"], b["from"])
            self.assertEqual(a["total_to"], b["total_from"])
        for x in lines:
            self.assertEqual(to_nanos(x["pinata"]), to_nanos(x["total_from"]) -
                             to_nanos(x["total_to"]) + to_nanos(x["credits_added"]))
            self.assertEqual(to_nanos(x["drift"]), to_nanos(x["pinata"]) - to_nanos(x["pinmeter"]))
            self.assertLess(x["to"], until)
        self.assertEqual(sum(to_nanos(x["drift"]) for x in lines), 1500000000)
        self.assertEqual(sum(to_nanos(x["pinmeter"]) for x in lines), served)
        up = [x for x in lines if x["topup"]]
        self.assertEqual(len(up), 1)
        self.assertEqual((to_nanos(up[0]["credits_added"]), to_nanos(up[0]["drift"])),
                         (10 * NANO, 0))
        self.assertTrue(any(to_nanos(x["drift"]) == 1500000000 for x in lines),
                        "the outside spend falls in one interval")

        # the endpoint: the same JSON for the same range
        r = pm.request("GET", "/v0/account/reconcile?until=" + until, key=ADMIN_TOKEN)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(json.loads(r.body), j)
        r = pm.request("GET", "/v0/account/reconcile?until=" + until, key=self.team.key)
        self.assertEqual(r.status, 401, r)

        # CSV and table
        rows = parse_csv(self.reconcile("--until", until, fmt="csv"))
        self.assertEqual(len(rows), len(lines))
        self.assertEqual(sum(to_nanos(x["drift"]) for x in rows), 1500000000)
        self.assertEqual([x["from"] for x in rows], [x["from"] for x in lines])
        table = self.reconcile("--until", until, fmt="table").splitlines()
        self.assertTrue(table[-1].startswith("TOTAL (%d intervals)" % len(lines)), table[-1])
        self.assertEqual(table[-1].split()[-1], "1.500000000")
        self.assertEqual(len(table), len(lines) + 2)

        # the gauge, and the drift alert, once
        self.assertEqual(self.gauge(), "1.500000000")
        self.assertTrue(rx.wait(lambda: len(uniq(rx, "drift")) >= 1), "no drift alert")
        d = uniq(rx, "drift")[0]["json"]
        self.assertEqual((to_nanos(d["drift"]), to_nanos(d["drift_alert"]), d["window_s"]),
                         (1500000000, NANO, 3600))
        self.assertIn(b'"drift":1.500000000', uniq(rx, "drift")[0]["body"])
        # a restart rebuilds the last hour from the recorded syncs
        pm.restart()
        self.assertEqual(self.gauge(), "1.500000000")
        time.sleep(1.5)
        self.assertEqual(len(uniq(rx, "drift")), 1, "the drift alert fired twice")

    def test_ranges_and_bad_input(self):
        tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
        j = json.loads(self.reconcile("--since", tomorrow))
        self.assertEqual((j["intervals"], j["total"]["intervals"], j["total"]["drift"]), ([], 0, 0))
        self.assertEqual(j["since"], tomorrow + "T00:00:00.000Z")
        for args in (("--format", "xml"), ("--since", "yesterday"), ("--until", "2026-13-01"),
                     ("--team", "x")):
            p = self.pm.cli("reconcile", "-c", self.pm.config_path, *args)
            self.assertEqual(p.returncode, 1, (args, p.stdout))
            self.assertEqual(p.stdout, "")
        for q, param in (("since=bad", "since"), ("until=2026-02-30", "until"), ("team=x", "team"),
                         ("since=2026-12-02&until=2026-12-01", "until")):
            r = self.pm.request("GET", "/v0/account/reconcile?" + q, key=ADMIN_TOKEN)
            e = self.assertError(r, 400)
            self.assertEqual((e["code"], e["param"]), ("invalid_parameter", param), q)

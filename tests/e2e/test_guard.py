"""Issue 16: the top-up guard.

The mock's total rises (POST /__mock/topup, a purchase or an auto top-up);
pinmeter, syncing every second, records each rise as a top-up
(account_events, credits added = the rise plus what it charged in between)
and sends topup_detected. With max_topups_per_day 3, the fourth top-up
within a minute trips the guard: new requests get 402 reason topup_limit
and nothing is forwarded, topup_limit is sent once, a restart keeps it
tripped, and POST /v0/credits/topup/guard/reset lifts it (and forgets the
top-ups). A fleet on one Redis shares a trip and a reset.
"""
import sqlite3
import time
import unittest

import test_alerts
from harness import E2ETest, Team, SONNET, NANO, JWT, ADMIN_TOKEN, chat_body, to_nanos
from redis_fixture import Redis, have_redis

ENV = {"PINATA_JWT": JWT, "PINMETER_ADMIN_TOKEN": ADMIN_TOKEN}
RESET = "/v0/credits/topup/guard/reset"


def events(p, kind=None):
    con = sqlite3.connect(p.ledger, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute("SELECT * FROM account_events ORDER BY at_ms, rowid")]
    finally:
        con.close()
    return [r for r in rows if kind is None or r["kind"] == kind]


def uniq(rx, event):
    """The events received, once each (delivery is at least once: an attempt
    cut by a restart is made again; receivers deduplicate by id)."""
    out, seen = [], set()
    for g in rx.accepted(event):
        if g["json"]["id"] not in seen:
            seen.add(g["json"]["id"])
            out.append(g)
    return out


def rfc3339_ms(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


class GuardBase(E2ETest):
    def wait_syncs(self, n=2, timeout=8.0):
        """Waits until the mock has answered n more balance reads (at least
        one whole sync after whatever happened before)."""
        want = self.mock.stats()["balance"] + n
        deadline = time.time() + timeout
        while self.mock.stats()["balance"] < want and time.time() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(self.mock.stats()["balance"], want, "no sync")

    def wait_for(self, pred, timeout=8.0, what="condition"):
        deadline = time.time() + timeout
        while not pred():
            if time.time() > deadline:
                self.fail("timed out waiting for " + what)
            time.sleep(0.05)

    def assert_guard_402(self, r):
        e = self.assertError(r, 402, "topup_limit")
        self.assertEqual(e["code"], "topup_limit")
        self.assertEqual(e["scope"], "account")
        self.assertEqual(e["reason"], "topup_limit")
        self.assertIn("/v0/credits/topup/guard/reset", e["message"])
        self.assertIn("24 hours", e["message"])
        self.assertIsNone(r.header("x-pinmeter-request-id"))
        return e


class GuardTest(test_alerts.WithReceiver, GuardBase):
    @classmethod
    def setup_proxies(cls):
        # metered: the mock's total falls by what it serves, so a rise is the top-up alone
        cls.mock.set_balance(total=100, loaned=0, available=100, metered=True)
        cls.team = Team("guard", 50.0, key_ids=["g1"])
        cls.pm = cls.add_proxy([cls.team], name="guard", env=ENV, overrides={
            "account": {"sync_s": 1, "max_topups_per_day": 3},
            "alerts": {"webhook_url": cls.rx.url}})

    def chat_ok(self):
        r = self.pm.chat(chat_body(SONNET), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        self.pm.wait_idle(self.team.key)
        self.wait_syncs()                 # settled before the next top-up's interval

    def test_guard(self):
        rx, pm, mock = self.rx, self.pm, self.mock
        rx.reset()
        self.chat_ok()
        t0 = time.time()
        for i in range(1, 5):
            mock.topup("10")
            self.assertTrue(rx.wait(lambda: len(uniq(rx, "topup_detected")) >= i, 8),
                            "top-up %d not detected" % i)
            if i < 4:
                self.chat_ok()            # three within a day: still admitted
        self.assertLess(time.time() - t0, 60, "four top-ups within a minute")
        self.assertTrue(rx.wait(lambda: len(uniq(rx, "topup_limit")) >= 1), "no topup_limit")
        n = mock.chat_count()
        e = self.assert_guard_402(pm.chat(chat_body(SONNET), key=self.team.key))
        self.assertEqual((e["topups"], e["max_topups_per_day"], e["team"]), (4, 3, "guard"))
        self.assert_guard_402(pm.chat(chat_body(SONNET, stream=True), key=self.team.key))
        self.assertEqual(mock.chat_count(), n, "a request went upstream past the guard")
        self.assertEqual(pm.balance(self.team.key)["loaned"], 0)

        # the ledger: four top-ups of exactly 10 credits, one trip
        # (every request settled a whole sync before a top-up: the rise is the top-up)
        ups = events(pm, "topup")
        self.assertEqual([u["credits_nanos"] for u in ups], [10 * NANO] * 4)
        self.assertEqual([u["total_nanos"] - u["prev_total_nanos"] for u in ups], [10 * NANO] * 4)
        lim = events(pm, "topup_limit")
        self.assertEqual(len(lim), 1)
        self.assertEqual(lim[0]["at_ms"], ups[3]["at_ms"])
        until = rfc3339_ms(ups[0]["at_ms"] + 86400000)
        self.assertEqual(e["until"], until)

        # the alerts
        det = [g["json"] for g in uniq(rx, "topup_detected")]
        self.assertEqual([d["topups_24h"] for d in det], [1, 2, 3, 4])
        self.assertEqual([to_nanos(d["credits_added"]) for d in det], [10 * NANO] * 4)
        self.assertEqual([to_nanos(d["total"]) for d in det], [u["total_nanos"] for u in ups])
        self.assertTrue(all(d["max_topups_per_day"] == 3 and d["team"] is None for d in det))
        lj = uniq(rx, "topup_limit")[0]["json"]
        self.assertEqual((lj["topups_24h"], lj["max_topups_per_day"], lj["until"]), (4, 3, until))
        self.assertIn(b'"credits_added":10.000000000', uniq(rx, "topup_detected")[0]["body"])

        # a restart keeps it tripped, and sends nothing again
        pm.restart()
        self.assert_guard_402(pm.chat(chat_body(SONNET), key=self.team.key))
        self.assertEqual(mock.chat_count(), n)
        time.sleep(1.5)
        self.assertEqual(len(uniq(rx, "topup_limit")), 1, "topup_limit sent again")

        # only the admin resets it
        r = pm.request("POST", RESET, key=self.team.key)
        self.assertEqual(r.status, 401, r)
        r = pm.request("GET", RESET, key=ADMIN_TOKEN)
        self.assertEqual(r.status, 405, r)
        r = pm.request("POST", RESET, key=ADMIN_TOKEN)
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual((j["reset"], j["topups_forgotten"], j["was_refusing"]), (True, 4, True))
        self.chat_ok()
        self.assertEqual(mock.chat_count(), n + 1)
        self.assertEqual(len(events(pm, "guard_reset")), 1)
        # ... for good: across a restart, and a new top-up counts from zero
        pm.restart()
        self.chat_ok()
        mock.topup("10")
        self.assertTrue(rx.wait(lambda: len(uniq(rx, "topup_detected")) >= 5, 8))
        self.assertEqual(uniq(rx, "topup_detected")[4]["json"]["topups_24h"], 1)
        self.chat_ok()


class GuardOffTest(GuardBase):
    """Without max_topups_per_day top-ups are recorded but never refuse; with
    account sync off the reset has no guard to reset."""

    @classmethod
    def setup_proxies(cls):
        cls.team = Team("noguard", 5.0, key_ids=["o1"])
        cls.pm = cls.add_proxy([cls.team], name="noguard", env=ENV,
                               overrides={"account": {"sync_s": 1}})
        cls.nosync = cls.add_proxy([Team("nosync", 1.0, key_ids=["s1"])], name="nosync",
                                   env={"PINMETER_ADMIN_TOKEN": ADMIN_TOKEN})

    def test_no_limit(self):
        for i in range(1, 6):
            self.mock.topup("1")
            self.wait_for(lambda: len(events(self.pm, "topup")) >= i, what="top-up %d" % i)
        r = self.pm.chat(chat_body(SONNET), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(events(self.pm, "topup_limit"), [])
        r = self.nosync.request("POST", RESET, key=ADMIN_TOKEN)
        e = self.assertError(r, 503)
        self.assertEqual(e["code"], "account_unavailable")


class AutoTopupTest(GuardBase):
    """A real auto top-up: the settings PUT through pinmeter, the mock's
    balance drawn below the threshold by a request pinmeter served, the
    mock buying `amount` credits by itself — and pinmeter detecting it."""

    @classmethod
    def setup_proxies(cls):
        cls.mock.set_balance(total=5.0002, loaned=0, available=5.0002, metered=True)
        cls.team = Team("auto", 5.0, key_ids=["u1"])
        cls.pm = cls.add_proxy([cls.team], name="auto", env=ENV,
                               overrides={"account": {"sync_s": 1}})

    def test_auto_topup_detected(self):
        from harness import cost
        r = self.pm.request("PUT", "/v0/credits/topup/config",
                            body={"threshold": 5, "amount": 10}, key=ADMIN_TOKEN)
        self.assertEqual(r.status, 200, r)
        self.wait_syncs()
        body = chat_body(SONNET, mock={"usage": {"prompt_tokens": 50, "completion_tokens": 10,
                                                 "cached_tokens": 0}})
        r = self.pm.chat(body, key=self.team.key)       # 0.0003 credits: below 5
        self.assertEqual(r.status, 200, r)
        c = cost(SONNET, 50, 10)
        self.assertEqual(c, 300000)
        self.assertEqual(self.mock.stats()["auto_topups"], 1)
        self.wait_for(lambda: len(events(self.pm, "topup")) >= 1, what="the auto top-up")
        up = events(self.pm, "topup")[0]
        # the rise is 10 minus the request's cost; pinmeter adds back what it
        # charged in that interval: exactly 10, unless the request settled just
        # after the sync that saw Pinata's debit (then the rise alone)
        self.assertEqual(up["total_nanos"] - up["prev_total_nanos"], 10 * NANO - c)
        self.assertIn(up["credits_nanos"], (10 * NANO, 10 * NANO - c))


@unittest.skipUnless(have_redis(), "redis-server not installed")
class GuardFleetTest(GuardBase):
    """Two instances on one Redis, syncing the same account: A trips (max 1),
    B (no max of its own) refuses too within a sync; a reset on B lifts A."""

    @classmethod
    def setup_proxies(cls):
        cls.redis = Redis(cls.tmp)
        cls.team = Team("gfleet", 20.0, key_ids=["f1"])
        cls.a = cls.add_proxy([cls.team], name="ga", env=ENV, overrides={
            "budget_store": cls.redis.url, "account": {"sync_s": 1, "max_topups_per_day": 1}})
        cls.b = cls.add_proxy([cls.team], name="gb", env=ENV, overrides={
            "budget_store": cls.redis.url, "account": {"sync_s": 1}})

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            if getattr(cls, "redis", None):
                cls.redis.stop()

    def status(self, p):
        return p.chat(chat_body(SONNET), key=self.team.key)

    def test_shared_trip_and_reset(self):
        for p in (self.a, self.b):
            self.assertEqual(self.status(p).status, 200)
        for i in (1, 2):
            self.mock.topup("5")
            for p in (self.a, self.b):
                self.wait_for(lambda: len(events(p, "topup")) >= i, what="top-up %d" % i)
        self.assert_guard_402(self.status(self.a))
        self.wait_for(lambda: self.status(self.b).status == 402, 5, "the fleet's trip on b")
        n = self.mock.chat_count()
        e = self.assert_guard_402(self.status(self.b))
        self.assertIn("another instance", e["message"])
        self.assertEqual(self.mock.chat_count(), n)
        self.assertNotEqual(self.redis.cli("HGET", "pm:{account}:guard", "until"), "")
        r = self.b.request("POST", RESET, key=ADMIN_TOKEN)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.status(self.b).status, 200)
        self.wait_for(lambda: self.status(self.a).status == 200, 5, "the reset reaching a")
        resets = events(self.a, "guard_reset")
        self.assertEqual(len(resets), 1)
        self.assertIn("another instance", resets[0]["detail"])
        self.assertEqual(self.redis.cli("EXISTS", "pm:{account}:guard"), "0")

"""Issue 5: one cap across several pinmeter instances, on a real Redis.

Every test starts its own redis-server on a loopback port (tests/e2e/
redis_fixture.py) and stops it by PID. The Lua scripts are tested one by one
against that server; the fleet tests run three (or two) pinmeter processes on
one Redis and one mock upstream.
"""
import json
import os
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
import unittest

from harness import (REPO, SONNET, Team, chat_body, body_len, cost, reservation, http_request,
                     run_bin)
from invariants import FaultTest
from redis_fixture import Redis, have_redis

LUA = os.path.join(REPO, "src", "lua")


def lua(name):
    with open(os.path.join(LUA, "prelude.lua")) as f:
        pre = f.read()
    with open(os.path.join(LUA, name + ".lua")) as f:
        return pre + f.read()


@unittest.skipUnless(have_redis(), "redis-server not installed")
class LuaScriptsTest(unittest.TestCase):
    """Each budget script against the real server (EVAL of prelude + script)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="pinmeter-lua-")
        cls.r = Redis(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls.r.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.r.cli("FLUSHALL")
        b = "pm:{t}:m0:"
        self.k = {n: b + n for n in ("spent", "loaned", "holds", "lease", "by", "keys")}
        self.k.update(lim="pm:{t}:lim", limlease="pm:{t}:limlease")

    def ev(self, name, keys, args):
        out = self.r.cli("EVAL", lua(name), len(keys), *keys, *args)
        return out.split("\n") if out else []

    def reserve(self, rid, amount, cap, lease_ms=60000, expat="0"):
        k = self.k
        return self.ev("reserve", [k["spent"], k["loaned"], k["holds"], k["lease"], k["keys"],
                                   k["lim"], k["limlease"]],
                       [rid, amount, cap, lease_ms, expat, "i1", "", -1, 0, "", "", ""])

    def settle(self, rid, charge, inst="i1"):
        k = self.k
        return self.ev("settle", [k["spent"], k["loaned"], k["holds"], k["lease"], k["by"],
                                  "pm:{t}:done:" + rid, k["keys"], k["lim"], k["limlease"]],
                       [rid, charge, inst, "0", 3600, "", 0, ""])

    def view(self):
        k = self.k
        return self.ev("view", [k["spent"], k["loaned"], k["holds"], k["lease"], k["by"],
                                k["keys"]], [])

    def get(self, name):
        return self.r.cli("GET", self.k[name])

    def test_reserve_admits_up_to_the_cap_exactly(self):
        self.assertEqual(self.reserve("a", 600, 1000), ["1", "0", "600", "0", "0"])
        self.assertEqual(self.reserve("b", 400, 1000), ["1", "0", "1000", "0", "0"])
        self.assertEqual(self.reserve("c", 1, 1000), ["0", "0", "1000", "0", "0"], "one nano over the cap")
        self.assertEqual(self.get("loaned"), "1000")
        self.assertEqual(self.r.cli("HGET", self.k["holds"], "c"), "")
        self.assertEqual(self.r.cli("HGET", self.k["holds"], "a"), "600@i1", "held by i1")
        self.assertEqual(self.reserve("d", 5, -1), ["1", "0", "1005", "0", "0"], "no cap admits")

    def test_reserve_is_exact_beyond_2_pow_53(self):
        # Lua numbers are doubles: 2^53+3 and 2^53+4 are the same double.
        self.r.cli("SET", self.k["spent"], 2 ** 53 + 1)
        cap = 2 ** 53 + 3
        self.assertEqual(self.reserve("a", 2, cap)[0], "1", "spent + 2 == cap fits")
        self.assertEqual(self.reserve("b", 1, cap)[0], "0", "one nano over a 2^53 cap")
        self.assertEqual(self.get("spent"), str(2 ** 53 + 1))
        self.settle("a", 2)
        self.assertEqual(self.get("spent"), str(2 ** 53 + 3))
        self.assertEqual(self.get("loaned"), "0")

    def test_reserve_retried_with_the_same_id_holds_once(self):
        self.reserve("a", 300, 1000)
        self.assertEqual(self.reserve("a", 300, 1000)[0], "1")
        self.assertEqual(self.get("loaned"), "300")

    def test_expired_lease_is_reaped_on_view_and_reserve(self):
        self.reserve("a", 300, 1000, lease_ms=50)
        self.reserve("b", 200, 1000, lease_ms=60000)
        time.sleep(0.15)
        self.assertEqual(self.view(), ["0", "200", "0", "0", "0"])
        self.assertEqual(self.r.cli("HKEYS", self.k["holds"]), "b")
        self.assertEqual(self.r.cli("ZRANGE", self.k["lease"], 0, -1), "b")

    def test_settle_counts_once_by_request_id(self):
        self.reserve("a", 500, 1000)
        self.assertEqual(self.settle("a", 321), ["1"])
        self.assertEqual((self.get("spent"), self.get("loaned")), ("321", "0"))
        self.assertEqual(self.r.cli("HGET", self.k["by"], "i1"), "321")
        self.assertEqual(self.settle("a", 321), ["0"], "a retry is a no-op")
        self.assertEqual((self.get("spent"), self.get("loaned")), ("321", "0"))
        self.assertEqual(self.r.cli("HGET", self.k["by"], "i1"), "321")
        self.assertGreater(int(self.r.cli("TTL", "pm:{t}:done:a")), 0, "done mark expires")

    def test_settle_after_the_lease_expired_still_charges_once(self):
        self.reserve("a", 500, 1000, lease_ms=50)
        time.sleep(0.15)
        self.assertEqual(self.view(), ["0", "0", "0", "0", "0"], "reaped")
        self.assertEqual(self.settle("a", 300), ["1"])
        self.assertEqual((self.get("spent"), self.get("loaned")), ("300", "0"))
        self.assertEqual(self.settle("a", 300), ["0"])
        self.assertEqual(self.get("spent"), "300")

    def test_release_frees_once(self):
        k = self.k
        self.reserve("a", 500, 1000)
        self.reserve("b", 100, 1000)
        args = [k["loaned"], k["holds"], k["lease"], k["keys"], k["lim"], k["limlease"]]
        self.assertEqual(self.ev("release", args, ["a"]), ["1"])
        self.assertEqual(self.get("loaned"), "100")
        self.assertEqual(self.ev("release", args, ["a"]), ["0"])
        self.assertEqual(self.get("loaned"), "100")
        self.assertEqual(self.get("spent"), "0")

    def test_renew_extends_live_leases_and_does_not_revive_reaped_ones(self):
        self.reserve("a", 100, 1000, lease_ms=300)
        self.reserve("b", 200, 1000, lease_ms=50)
        time.sleep(0.15)
        self.view()                                     # reaps b
        self.assertEqual(self.ev("renew", [self.k["lease"], self.k["limlease"], self.k["lim"]],
                                 [10000, "a", "b"]), ["1"])
        time.sleep(0.3)                                 # a's first lease is over
        self.assertEqual(self.view(), ["0", "100", "0", "0", "0"], "a renewed, b not revived")

    def test_sync_sets_this_instance_share_exactly_once(self):
        k = self.k
        keys = [k["spent"], k["by"], k["loaned"]]
        self.assertEqual(self.ev("sync", keys, ["A", 100, "0"]), ["0", "0", "100", "0"])
        self.assertEqual(self.ev("sync", keys, ["A", 100, "0"]), ["1", "100", "100", "0"],
                         "a repeat adds nothing")
        self.ev("sync", keys, ["B", 50, "0"])
        self.assertEqual(self.get("spent"), "150")
        self.ev("sync", keys, ["A", 130, "0"])             # A's ledger says 130
        self.assertEqual(self.get("spent"), "180")
        self.r.cli("FLUSHALL")                              # Redis lost its data
        self.assertEqual(self.ev("sync", keys, ["A", 130, "0"])[0], "0")
        self.assertEqual(self.ev("sync", keys, ["B", 50, "0"])[0], "0")
        self.assertEqual(self.ev("sync", keys, ["A", 130, "0"])[0], "1")
        self.assertEqual(self.get("spent"), "180", "rebuilt from both shares, nothing twice")

    def test_period_keys_expire_after_their_period(self):
        expat = int(time.time()) + 3600
        self.reserve("a", 100, 1000, expat=str(expat))
        for name in ("spent", "loaned", "holds", "lease"):
            ttl = int(self.r.cli("TTL", self.k[name]))
            self.assertTrue(3500 < ttl <= 3600, (name, ttl))

    def test_beat_counts_live_instances(self):
        self.assertEqual(self.ev("beat", ["pm:instances"], ["A", 15000]), ["1"])
        self.assertEqual(self.ev("beat", ["pm:instances"], ["B", 15000]), ["2"])
        self.assertEqual(self.ev("beat", ["pm:instances"], ["A", 15000]), ["2"])
        time.sleep(0.1)
        self.assertEqual(self.ev("beat", ["pm:instances"], ["A", 50]), ["1"], "B went stale")


def ledger_sum(proxy, team=None):
    con = sqlite3.connect(proxy.ledger, timeout=5)
    try:
        q = "SELECT COALESCE(SUM(charged_nanos), 0) FROM requests"
        if team:
            return con.execute(q + " WHERE team = ?", (team,)).fetchone()[0]
        return con.execute(q).fetchone()[0]
    finally:
        con.close()


def instance_id(proxy):
    con = sqlite3.connect(proxy.ledger, timeout=5)
    try:
        return con.execute("SELECT v FROM meta WHERE k = 'instance_id'").fetchone()[0]
    finally:
        con.close()


def spent_of(b):
    return b["total"] - b["available"] - b["loaned"]


class FleetBase(FaultTest):
    """A Redis, a mock and N pinmeter instances sharing one team's cap."""
    N = 3
    PERSIST = False
    POLICY = "closed"
    LEASE_S = 5
    CAP = 1.0
    PASSWORD = None

    @classmethod
    def setup_proxies(cls):
        cls.redis = Redis(cls.tmp, persist=cls.PERSIST, password=cls.PASSWORD)
        cls.team = Team("fleet", cls.CAP, period="month", key_ids=["f"])
        over = {"budget_store": cls.redis.url, "budget_lease_s": cls.LEASE_S,
                "on_store_down": cls.POLICY}
        env = {}
        if cls.PASSWORD:
            over["budget_store_password_env"] = "PM_TEST_REDIS_PW"
            env["PM_TEST_REDIS_PW"] = cls.PASSWORD
        cls.fleet = [cls.add_proxy([cls.team], name="inst%d" % i, overrides=over, env=env)
                     for i in range(cls.N)]

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            if getattr(cls, "redis", None):
                cls.redis.stop()

    def wait_store_up(self, p, timeout=10):
        """Waits until p has re-synced with Redis and answers the fleet balance."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            h = http_request(p.port, "GET", "/healthz")
            if json.loads(h.body).get("budget_store") == "redis" and \
                    p.request("GET", "/v0/credits/balance", key=self.team.key).status == 200:
                return
            time.sleep(0.05)
        self.fail("%s did not get back to Redis" % p.name)

    def fleet_spent_redis(self):
        keys = self.redis.keys("pm:{fleet}:m*:spent")
        self.assertEqual(len(keys), 1, keys)
        return self.redis.get_int(keys[0])

    def wait_fleet_idle(self, timeout=10):
        """Nothing loaned fleet-wide, and every instance's rows committed."""
        for p in self.fleet:
            if p.alive():
                b = p.wait_idle(self.team.key, timeout=timeout)
                self.assertEqual(b["loaned"], 0, p.name)
        for p in self.fleet:
            if p.alive():
                self.assertTrue(p.wait_ledger_drained(timeout), p.name + "'s ledger backlog")

    def assert_redis_matches_ledgers(self):
        """Redis spent == the sum over every instance's ledger, and each
        instance's share == its own ledger (after the worker's queue drained)."""
        deadline = time.time() + 5
        while True:                     # the ledger's writer and the store's worker trail
            total = sum(ledger_sum(p) for p in self.fleet)
            if self.fleet_spent_redis() == total or time.time() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(self.fleet_spent_redis(), total, "Redis spent vs the ledgers")
        by_key = self.redis.keys("pm:{fleet}:m*:by")[0]
        for p in self.fleet:
            self.assertEqual(int(self.redis.cli("HGET", by_key, instance_id(p)) or 0),
                             ledger_sum(p), "%s's share vs its ledger" % p.name)
        for p in self.fleet:
            if p.alive():
                self.assertEqual(spent_of(p.balance(self.team.key)), total, p.name)
        return total


class FleetRaceTest(FleetBase):
    N = 3
    CAP = 0.05

    def test_300_requests_race_one_cap_across_3_instances(self):
        # A reservation (max_tokens 40) is ~1.5x the charge: the cap is hit
        # by the sum of charges plus what is loaned at the moment.
        body = chat_body(SONNET, content="race", max_tokens=40,
                         mock={"delay_ms": 30, "usage": {"prompt_tokens": 40,
                                                         "completion_tokens": 30,
                                                         "cached_tokens": 10}})
        res = reservation(SONNET, body_len(body), 40)
        c = cost(SONNET, 40, 30, 10)
        self.assertLess(c, res)
        cap = 5 * 10 ** 7
        threads_n, per = 30, 10
        self.assertGreater(threads_n * per * c, cap, "the race must hit the cap")
        results = []
        lock = threading.Lock()
        barrier = threading.Barrier(threads_n)

        def client(t):
            barrier.wait(10)
            for j in range(per):
                p = self.fleet[(t + j) % 3]
                try:
                    r = p.chat(body, key=self.team.key, timeout=30)
                    out = (p.name, r.status, r.json() if r.status != 200 else None)
                except Exception as e:  # noqa: BLE001 - asserted below
                    out = (p.name, e, None)
                with lock:
                    results.append(out)

        ts = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(threads_n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        self.assertEqual(len(results), 300)
        statuses = [s for _, s, _ in results]
        bad = [s for s in statuses if s not in (200, 402)]
        self.assertEqual(bad, [], "only 200 and 402 expected")
        admitted = statuses.count(200)
        refused = statuses.count(402)
        for _, s, j in results:
            if s == 402:
                self.assertEqual(j["error"]["scope"], "team")
        per_instance = {p.name: sum(1 for n, s, _ in results if n == p.name and s == 200)
                        for p in self.fleet}
        self.assertTrue(all(v > 0 for v in per_instance.values()), per_instance)
        self.assertGreater(refused, 0)
        # Every 402 was answered without an upstream call.
        self.assertEqual(self.mock.chat_count(), admitted, "a 402 reached the upstream")
        self.wait_fleet_idle()
        total = self.assert_redis_matches_ledgers()
        self.assertEqual(total, admitted * c, "every admitted request charged exactly once")
        self.assertLessEqual(total, cap, "spend ran past the cap")
        # The cap was used, not refused early: a refusal means the cap had
        # less than a reservation left over spent plus loaned.
        self.assertGreaterEqual(admitted, cap // res)
        self.check(fleet=True, fresh_ledger=True)


class FleetKillTest(FleetBase):
    N = 3
    LEASE_S = 2

    def test_sigkill_holder_its_leases_expire_and_the_ledger_agrees_after_restart(self):
        a, b, cinst = self.fleet
        ok = chat_body(SONNET, max_tokens=50, mock={"usage": {"prompt_tokens": 12,
                                                              "completion_tokens": 7}})
        for p in self.fleet:
            self.assertEqual(p.chat(ok, key=self.team.key).status, 200)
        # b's answered request settled in its ledger before the kill (the
        # writer gathers for 10 ms; one killed inside that is 'interrupted')
        rows = b.wait_rows(lambda rs: [r["state"] for r in rs] == ["settled"])
        self.assertEqual([r["state"] for r in rows], ["settled"])
        slow = chat_body(SONNET, max_tokens=300, mock={"delay_ms": 6000})
        res = reservation(SONNET, body_len(slow), 300)
        errs = []

        def hold():
            try:
                b.chat(slow, key=self.team.key, timeout=20)
            except Exception as e:  # noqa: BLE001 - the instance is killed under it
                errs.append(e)

        ts = [threading.Thread(target=hold, daemon=True) for _ in range(3)]
        for t in ts:
            t.start()
        seen = a.wait_balance(self.team.key, lambda x: x["loaned"] == 3 * res, timeout=5)
        self.assertEqual(seen["loaned"], 3 * res, "the other instances see b's holds")
        deadline = time.time() + 5             # journaled, then sent: all 3 at the upstream
        while self.mock.chat_count() < 6 and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.mock.chat_count(), 6)
        b.kill9()
        t0 = time.time()
        after = a.wait_balance(self.team.key, lambda x: x["loaned"] == 0, timeout=10)
        waited = time.time() - t0
        self.assertEqual(after["loaned"], 0, "b's holds must expire, not pin the budget")
        self.assertLess(waited, self.LEASE_S + 3, "reaped within the lease (+ a renewal)")
        self.assertEqual(cinst.balance(self.team.key)["loaned"], 0)
        self.assertEqual(a.chat(ok, key=self.team.key).status, 200, "the budget is usable")
        for t in ts:
            t.join(25)
        # b comes back: its ledger turns the 3 requests into 'interrupted',
        # charged at their reservation, and Redis gets exactly that share.
        b.start()
        rows = [r for r in b.ledger_rows() if r["state"] == "interrupted"]
        self.assertEqual(len(rows), 3, b.ledger_rows())
        self.assertTrue(all(r["charged_nanos"] == res for r in rows))
        self.wait_fleet_idle()
        self.assert_redis_matches_ledgers()
        self.check(fleet=True, allow_interrupted=True)


def take_redis_down(test):
    """Stops Redis the class's way: "stop" (SIGTERM, a clean restart) or "kill" (SIGKILL)."""
    if test.HOW == "kill":
        test.redis.kill9()
    else:
        test.redis.stop()


class StoreDownClosedTest(FleetBase):
    N = 2
    POLICY = "closed"
    HOW = "stop"

    def test_redis_down_without_data_mid_load(self):
        a, b = self.fleet
        ok = chat_body(SONNET, max_tokens=50, mock={"usage": {"prompt_tokens": 20,
                                                              "completion_tokens": 9}})
        for i in range(6):
            self.assertEqual(self.fleet[i % 2].chat(ok, key=self.team.key).status, 200)
        before = self.assert_redis_matches_ledgers()
        slow = chat_body(SONNET, max_tokens=50, mock={"delay_ms": 1500, "usage": {
            "prompt_tokens": 20, "completion_tokens": 9}})
        got = []

        def inflight(p):
            got.append(p.chat(slow, key=self.team.key, timeout=20).status)

        ts = [threading.Thread(target=inflight, args=(self.fleet[i % 2],), daemon=True)
              for i in range(4)]
        for t in ts:
            t.start()
        served_before = 6 + 4
        deadline = time.time() + 5
        while self.mock.chat_count() < served_before and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.mock.chat_count(), served_before, "all 4 are at the upstream")
        take_redis_down(self)
        marks = [len(p.logs_text()) for p in self.fleet]
        # closed: new requests get a clear 503 and never reach the upstream
        for p in self.fleet:
            r = p.chat(ok, key=self.team.key)
            e = self.assertJSONError(r, 503, code="budget_store_unavailable")
            self.assertIn("Redis", e["message"])
            h = http_request(p.port, "GET", "/healthz")
            self.assertEqual(h.status, 503)
            self.assertEqual(json.loads(h.body)["budget_store"], "redis-down")
            r = p.request("GET", "/v0/credits/balance", key=self.team.key)
            self.assertEqual(r.status, 503)
        for p in self.fleet:
            for _ in range(5):
                self.assertEqual(p.chat(ok, key=self.team.key).status, 503)
        for t in ts:
            t.join(20)
        self.assertEqual(sorted(got), [200] * 4, "requests admitted before the outage finish")
        self.assertEqual(self.mock.chat_count(), served_before, "a 503 reached the upstream")
        self.redis.start()                  # empty: no persistence
        for p in self.fleet:
            self.wait_store_up(p)
        self.wait_fleet_idle()
        total = self.assert_redis_matches_ledgers()
        self.assertEqual(total, before + 4 * cost(SONNET, 20, 9), "nothing lost, nothing twice")
        for p, m in zip(self.fleet, marks):
            log = p.logs_text()[m - 400 if m > 400 else 0:]
            self.assertEqual(log.count("is unreachable"), 1, "logged once per outage:\n" + log)
            self.assertIn("re-added", log)
            self.assertIn("incomplete", log)
        self.assertEqual(a.chat(ok, key=self.team.key).status, 200)
        self.check(fleet=True)


class StoreKilledClosedTest(StoreDownClosedTest):
    HOW = "kill"


class StoreRedialTest(FleetBase):
    """Redis dies just after a reconnect, before any request has used the
    connection the reconnect asked to be dialed anew: the first reserve's dial
    fails. That request must get the outage's answer (503 under "closed"),
    not be judged by a script that never ran (a 402 quoting zeros)."""
    N = 1
    POLICY = "closed"

    def test_reserve_whose_dial_fails_gets_503_not_402(self):
        p = self.fleet[0]
        ok = chat_body(SONNET, max_tokens=50, mock={"usage": {"prompt_tokens": 20,
                                                              "completion_tokens": 9}})
        self.assertEqual(p.chat(ok, key=self.team.key).status, 200)
        mark = len(p.logs_text())
        self.redis.restart()            # empty: no persistence
        deadline = time.time() + 10
        while "Redis is back" not in p.logs_text()[mark:] and time.time() < deadline:
            time.sleep(0.02)
        self.assertIn("Redis is back", p.logs_text()[mark:], "the worker reconnected")
        served = self.mock.chat_count()
        self.redis.kill9()
        r = p.chat(ok, key=self.team.key)
        self.assertJSONError(r, 503, code="budget_store_unavailable")
        self.assertEqual(self.mock.chat_count(), served, "a refused request reached the upstream")
        self.redis.start()
        self.wait_store_up(p)
        self.assertEqual(p.chat(ok, key=self.team.key).status, 200)
        self.wait_fleet_idle()
        self.assert_redis_matches_ledgers()
        self.check(fleet=True)


class StoreStallTest(FleetBase):
    N = 2
    POLICY = "closed"
    LEASE_S = 30

    def test_redis_stalls_a_reserve_that_times_out_leaves_no_hold(self):
        a, b = self.fleet
        ok = chat_body(SONNET, max_tokens=50, mock={"usage": {"prompt_tokens": 20,
                                                              "completion_tokens": 9}})
        self.assertEqual(a.chat(ok, key=self.team.key).status, 200)
        self.wait_fleet_idle()
        os.kill(self.redis.proc.pid, signal.SIGSTOP)       # Redis hangs, sockets stay open
        try:
            t0 = time.time()
            r = a.chat(ok, key=self.team.key)
            self.assertJSONError(r, 503, code="budget_store_unavailable")
            self.assertLess(time.time() - t0, 2.0, "a stalled Redis delays admission boundedly")
        finally:
            os.kill(self.redis.proc.pid, signal.SIGCONT)
        # Redis now runs the reserve it had queued: the hold appears, and the
        # instance releases it (long before its 30 s lease would end).
        for p in self.fleet:
            self.wait_store_up(p)
        t0 = time.time()
        b_ = b.wait_balance(self.team.key, lambda x: x["loaned"] == 0, timeout=5)
        self.assertEqual(b_["loaned"], 0, "the timed-out reserve's hold was released")
        self.assertLess(time.time() - t0, 5)
        self.assertEqual(self.mock.chat_count(), 1, "the refused request never went upstream")
        self.assertEqual(a.chat(ok, key=self.team.key).status, 200)
        self.wait_fleet_idle()
        self.assert_redis_matches_ledgers()
        self.check(fleet=True)


class StoreRestartPersistentTest(FleetBase):
    N = 2
    PERSIST = True

    def test_redis_restart_with_its_data_counts_nothing_twice(self):
        ok = chat_body(SONNET, max_tokens=50, mock={"usage": {"prompt_tokens": 30,
                                                              "completion_tokens": 11}})
        for i in range(6):
            self.assertEqual(self.fleet[i % 2].chat(ok, key=self.team.key).status, 200)
        before = self.assert_redis_matches_ledgers()
        self.redis.restart()
        for p in self.fleet:
            self.wait_store_up(p)
        self.assertEqual(self.assert_redis_matches_ledgers(), before)
        for p in self.fleet:                  # restarts of the instances add nothing either
            p.restart()
            self.wait_store_up(p)
        self.assertEqual(self.assert_redis_matches_ledgers(), before)
        for i in range(4):
            self.assertEqual(self.fleet[i % 2].chat(ok, key=self.team.key).status, 200)
        self.wait_fleet_idle()
        self.assertEqual(self.assert_redis_matches_ledgers(), before + 4 * cost(SONNET, 30, 11))
        self.check(fleet=True)


class StoreDownLocalTest(FleetBase):
    N = 2
    POLICY = "local"
    CAP = 0.02
    HOW = "kill"

    def test_redis_down_local_share_then_reconciled(self):
        a, b = self.fleet
        ok = chat_body(SONNET, max_tokens=60, mock={"usage": {"prompt_tokens": 50,
                                                              "completion_tokens": 40}})
        res = reservation(SONNET, body_len(ok), 60)
        c = cost(SONNET, 50, 40)
        cap = 2 * 10 ** 7
        for i in range(4):
            self.assertEqual(self.fleet[i % 2].chat(ok, key=self.team.key).status, 200)
        self.wait_fleet_idle()
        before = self.assert_redis_matches_ledgers()
        time.sleep(1.2)                     # a beat: both instances counted
        take_redis_down(self)
        share = (cap - before) // 2
        during = {}
        for p in self.fleet:
            n = 0
            for _ in range(40):
                r = p.chat(ok, key=self.team.key)
                self.assertIn(r.status, (200, 402), r)
                if r.status == 402:
                    break
                n += 1
            during[p.name] = n
            # admitted against the local share: charges + one reservation fit it
            self.assertGreater(n, 0)
            self.assertLessEqual(n * c, share)
            self.assertGreater(n * c + res, share - c, "the share was used")
        for p in self.fleet:
            self.assertEqual(p.logs_text().count("on_store_down=local"), 1)
            h = http_request(p.port, "GET", "/healthz")
            self.assertEqual((h.status, json.loads(h.body)["budget_store"]), (200, "redis-down"))
        self.redis.start()                  # empty
        for p in self.fleet:
            self.wait_store_up(p)
        self.wait_fleet_idle()
        total = self.assert_redis_matches_ledgers()
        self.assertEqual(total, before + sum(during.values()) * c)
        self.assertLessEqual(total, cap)
        self.check(fleet=True)


class StorePasswordTest(FleetBase):
    N = 2
    PASSWORD = "redis-pw-" + os.urandom(8).hex()

    def test_password_from_the_environment_and_never_logged(self):
        ok = chat_body(SONNET, max_tokens=50, mock={"usage": {"prompt_tokens": 5,
                                                              "completion_tokens": 5}})
        for p in self.fleet:
            self.assertEqual(p.chat(ok, key=self.team.key).status, 200)
        self.wait_fleet_idle()
        self.assertEqual(self.assert_redis_matches_ledgers(), 2 * cost(SONNET, 5, 5))
        for p in self.fleet:
            self.assertNotIn(self.PASSWORD, p.logs_text())
        # a wrong password: the store stays down and says so, closed policy -> 503
        bad = self.add_proxy([self.team], name="badpw", start=False,
                             overrides={"budget_store": self.redis.url,
                                        "budget_store_password_env": "PM_TEST_REDIS_PW"},
                             env={"PM_TEST_REDIS_PW": "wrong-" + self.PASSWORD})
        bad.start(wait=False)
        self.assertTrue(bad.wait_log("is not reachable yet", timeout=10), bad.logs_text())
        r = bad.chat(ok, key=self.team.key)
        self.assertJSONError(r, 503, code="budget_store_unavailable")
        self.assertNotIn(self.PASSWORD, bad.logs_text())
        bad.stop()


class StoreStoppedLocalTest(StoreDownLocalTest):
    HOW = "stop"


class StoreConfigTest(unittest.TestCase):
    def check_config(self, extra):
        tmp = tempfile.mkdtemp(prefix="pinmeter-cfg-")
        try:
            path = os.path.join(tmp, "c.json")
            cfg = {"rates_file": os.path.join(REPO, "conf", "rates.json")}
            cfg.update(extra)
            with open(path, "w") as f:
                json.dump(cfg, f)
            return run_bin(["check-config", "-c", path])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_store_settings_are_checked(self):
        for value, why in (("redis://", "needs a host"), ("http://x:1", "redis://"),
                           ("redis://h:0/0", "port"), ("redis://h:1/x", "database"),
                           ("redis://u:pw@h:1/0", "credentials"), ("rediss://h:1/0", "TLS")):
            p = self.check_config({"budget_store": value})
            self.assertNotEqual(p.returncode, 0, value)
            self.assertIn("budget_store", p.stderr)
            self.assertIn(why, p.stderr, value)
        p = self.check_config({"on_store_down": "open"})
        self.assertIn("on_store_down", p.stderr)
        self.assertNotEqual(p.returncode, 0)
        p = self.check_config({"budget_store": "redis://[::1]:6380/2", "on_store_down": "local",
                               "budget_lease_s": 30, "budget_store_password_env": "RPW"})
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_missing_password_variable_is_an_error_at_start(self):
        tmp = tempfile.mkdtemp(prefix="pinmeter-cfg-")
        try:
            path = os.path.join(tmp, "c.json")
            with open(path, "w") as f:
                json.dump({"rates_file": os.path.join(REPO, "conf", "rates.json"),
                           "ledger": os.path.join(tmp, "l.db"), "listen": "127.0.0.1:1",
                           "budget_store": "redis://127.0.0.1:1/0",
                           "budget_store_password_env": "PM_TEST_NO_SUCH_VAR"}, f)
            p = run_bin(["serve", "-c", path], timeout=10)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("PM_TEST_NO_SUCH_VAR", p.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()

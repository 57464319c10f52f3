"""Issue 15, fleet-wide: key caps, rate limits, in-flight counts and the
runaway guard's spend windows shared through the Redis budget store, and the
30 s default lease.

Every test starts its own redis-server on a loopback port (redis_fixture.py)
and stops it by PID. LuaLimitsTest runs the budget scripts one by one against
it (EVAL of prelude + script, as LuaScriptsTest does); the fleet tests run two
or three pinmeter processes on one Redis and one mock upstream and check exact
counts against the ledgers, Redis and what the mock received.
"""
import json
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import unittest

from harness import SONNET, Team, body_len, chat_body, cost, reservation, to_nanos
from redis_fixture import Redis, have_redis
from test_redis_store import FleetBase, instance_id, ledger_sum, lua

P53 = 2 ** 53


def ints(out):
    """A script's reply lines, numbers as ints."""
    return [int(x) if re.fullmatch(r"-?\d+", x) else x for x in out]


@unittest.skipUnless(have_redis(), "redis-server not installed")
class LuaLimitsTest(unittest.TestCase):
    """The key caps and the rate-limit windows in the scripts, against the
    real server."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="pinmeter-lualim-")
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
        out = self.r.cli("EVAL", lua(name), len(keys), *[self.k[k] for k in keys], *args)
        return ints(out.split("\n")) if out else []

    def reserve(self, rid, amount, cap=-1, key="", kcap=-1, tokens=0, tlim="", klim="",
                lease_ms=60000, mode=""):
        return self.ev("reserve", ["spent", "loaned", "holds", "lease", "keys", "lim", "limlease"],
                       [rid, amount, cap, lease_ms, "0", "i1", key, kcap, tokens, tlim, klim, mode])

    def settle(self, rid, charge, key="", tokens=0, track="", inst="i1"):
        keys = ["spent", "loaned", "holds", "lease", "by"]
        out = self.r.cli("EVAL", lua("settle"), 9, *[self.k[k] for k in keys],
                         "pm:{t}:done:" + rid, self.k["keys"], self.k["lim"], self.k["limlease"],
                         rid, charge, inst, "0", 3600, key, tokens, track)
        return ints(out.split("\n"))

    def release(self, rid):
        return self.ev("release", ["loaned", "holds", "lease", "keys", "lim", "limlease"], [rid])

    def view(self, key=""):
        return self.ev("view", ["spent", "loaned", "holds", "lease", "by", "keys"],
                       [key] if key else [])

    def keyf(self, field):
        v = self.r.cli("HGET", self.k["keys"], field)
        return int(v) if v else None

    def limf(self, field):
        """A field of the lim hash: a subject's figure ("T|i": team T's in
        flight; q n m o the window sums, l loaned), or the raw value."""
        if "|" in field:
            subj, what = field.split("|")
            v = self.r.cli("HGET", self.k["lim"], subj)
            if not v:
                return None
            return int(dict(zip("HhqnmoiL".replace("L", "l"), v.split()))[what])
        v = self.r.cli("HGET", self.k["lim"], field)
        return v or None

    # ---- key caps ----

    def test_key_cap_admits_up_to_the_key_cap_exactly(self):
        self.assertEqual(self.reserve("a", 600, 10000, "alice", 1000), [1, 0, 600, 0, 600])
        self.assertEqual(self.reserve("b", 400, 10000, "alice", 1000), [1, 0, 1000, 0, 1000])
        self.assertEqual(self.reserve("c", 1, 10000, "alice", 1000), [2, 0, 1000, 0, 1000],
                         "one nano over the key's cap: code 2, nothing taken")
        self.assertEqual(self.r.cli("HGET", self.k["holds"], "c"), "")
        self.assertEqual(self.r.cli("HGET", self.k["holds"], "a"), "600:alice@i1")
        self.assertEqual(self.reserve("d", 1, 10000, "bob", 1000)[0], 1, "another key")
        self.assertEqual(self.reserve("e", 9000, 10000, "alice", 1000)[0], 0,
                         "the team's cap is checked first")
        self.assertEqual(self.reserve("f", 5, 10000, "carol", -1), [1, 0, 1006, 0, 0])
        self.assertEqual(self.r.cli("HGET", self.k["holds"], "f"), "5@i1",
                         "an uncapped key's figures are not kept")
        self.assertIsNone(self.keyf("l:carol"))
        self.assertEqual(self.settle("a", 500, "alice", track="c"), [1])
        self.assertEqual((self.keyf("s:alice"), self.keyf("l:alice"), self.keyf("b:alice:i1")),
                         (500, 400, 500))
        self.assertEqual(self.settle("a", 500, "alice", track="c"), [0], "once by request id")
        self.assertEqual(self.keyf("s:alice"), 500)
        self.assertEqual(self.release("b"), [1])
        self.assertEqual(self.keyf("l:alice"), 0)
        self.assertEqual(self.view("alice"), [500, 6, 1, 500, 0])

    def test_key_cap_is_exact_beyond_2_pow_53(self):
        self.r.cli("HSET", self.k["keys"], "s:alice", P53 + 1)
        cap = P53 + 3
        self.assertEqual(self.reserve("a", 2, -1, "alice", cap)[0], 1, "spent + 2 == cap fits")
        self.assertEqual(self.reserve("b", 1, -1, "alice", cap)[0], 2, "one nano over")
        self.settle("a", 2, "alice", track="c")
        self.assertEqual(self.r.cli("HGET", self.k["keys"], "s:alice"), str(P53 + 3))

    def test_an_expired_keyed_hold_leaves_the_key_loaned(self):
        self.reserve("a", 300, -1, "alice", 1000, lease_ms=50)
        self.reserve("b", 200, -1, "alice", 1000)
        time.sleep(0.15)
        self.assertEqual(self.view("alice"), [0, 200, 0, 0, 200])
        self.assertEqual(self.settle("a", 100, "alice", track="c"), [1],
                         "a reaped hold is still charged once")
        self.assertEqual((self.keyf("s:alice"), self.keyf("l:alice")), (100, 200))

    def test_ksync_sets_this_instance_share_of_a_key_exactly_once(self):
        def ks(inst, mine):
            return self.ev("ksync", ["keys"], ["alice", inst, mine, "0"])
        self.assertEqual(ks("A", 100), [0, 0, 100, 0])
        self.assertEqual(ks("A", 100), [1, 100, 100, 0], "a repeat adds nothing")
        ks("B", 50)
        ks("A", 130)
        self.assertEqual(self.keyf("s:alice"), 180)
        self.r.cli("FLUSHALL")                     # Redis lost its data
        self.assertEqual(ks("A", 130)[0], 0)
        self.assertEqual(ks("B", 50)[0], 0)
        self.assertEqual(ks("A", 130), [1, 130, 180, 0], "rebuilt from both shares, once")

    # ---- rate limits ----

    def test_rpm_admits_exactly_the_limit_and_counts_the_headers_down(self):
        got = [self.reserve("r%d" % i, 10, tokens=5, tlim="3 0 0 0 0") for i in range(3)]
        self.assertEqual([g[0] for g in got], [1, 1, 1])
        self.assertEqual([(g[10], g[11]) for g in got], [(3, 2), (3, 1), (3, 0)],
                         "limit and remaining (this request counted as taken)")
        self.assertEqual(got[0][12], 0, "room for one more now")
        self.assertTrue(59000 <= got[2][12] <= 60000, got[2])
        r = self.reserve("r3", 10, tokens=5, tlim="3 0 0 0 0")
        self.assertEqual(r[:8][0], 3)
        self.assertEqual((r[5], r[6]), (1, 1), "rpm, team")
        self.assertTrue(59 <= r[7] <= 60, r)
        self.assertEqual((self.limf("T|q"), self.limf("T|i"), self.limf("T|l")), (3, 3, 30))
        self.assertEqual(self.r.cli("HGET", self.k["holds"], "r3"), "", "a 429 holds nothing")

    def test_windows_slide_by_the_second_and_retry_after_is_when_room_comes(self):
        lim = "2 0 0 0 0"
        self.reserve("a", 10, tokens=5, tlim=lim)
        a_s = int(self.limf("h:a").split()[2]) // 1000     # a's second, on Redis's clock
        while int(time.time()) < a_s + 2:                   # two seconds on: buckets between left
            time.sleep(0.05)
        self.assertEqual(self.reserve("b", 10, tokens=5, tlim=lim)[:1], [1])
        self.settle("a", 3, tokens=1, track="t")            # corrected in a's second
        self.assertEqual((self.limf("T|q"), self.limf("T|n"), self.limf("T|m"),
                          self.limf("T|o")), (2, 6, 3, 3))
        t0 = time.time()
        r = self.reserve("c", 10, tlim=lim)
        t1 = time.time()
        # room when a's second leaves the window: (a_s + 60) s, rounded up
        lo, hi = (-(-((a_s + 60) * 1000 - int(t * 1000)) // 1000) for t in (t1, t0))
        self.assertEqual((r[0], r[5]), (3, 1))
        self.assertTrue(lo - 1 <= r[7] <= hi + 1 and r[7] < 60, (r[7], lo, hi))

    def test_tokens_are_corrected_when_the_request_settles(self):
        lim = "0 250 0 0 0"
        self.assertEqual(self.reserve("a", 1, tokens=100, tlim=lim)[13:16], [250, 150, 0])
        self.assertEqual(self.reserve("b", 1, tokens=100, tlim=lim)[:1], [1])
        r = self.reserve("c", 1, tokens=100, tlim=lim)
        self.assertEqual((r[0], r[5]), (3, 2), "tpm")
        self.settle("a", 1, tokens=10, track="t")                  # it used 10, not 100
        r = self.reserve("c", 1, tokens=100, tlim=lim)
        self.assertEqual(r[0], 1)
        self.assertEqual(r[14], 250 - 110 - 100)
        r = self.reserve("d", 1, tokens=251, tlim=lim)
        self.assertEqual((r[0], r[5], r[7]), (3, 2, 60), "larger than the limit: the window")

    def test_inflight_counts_live_holds_and_a_reaped_lease_leaves(self):
        lim = "0 0 2 0 0"
        self.assertEqual(self.reserve("a", 10, tlim=lim)[0], 1)
        self.assertEqual(self.reserve("b", 10, tlim=lim, lease_ms=50)[0], 1)
        r = self.reserve("c", 10, tlim=lim)
        self.assertEqual((r[0], r[5], r[6], r[7]), (3, 3, 1, 1), "inflight, Retry-After 1")
        time.sleep(0.15)                             # b's instance stopped renewing
        self.assertEqual(self.reserve("c", 10, tlim=lim)[0], 1, "b's lease ran out")
        self.assertEqual(self.limf("T|i"), 2)
        self.assertIsNone(self.limf("h:b"))
        self.release("a")
        self.assertEqual((self.limf("T|i"), self.limf("T|l")), (1, 10))
        self.assertEqual(self.reserve("d", 10, tlim=lim)[0], 1)

    def test_release_undoes_the_request_and_token_windows(self):
        lim = "2 0 0 0 0"
        self.reserve("a", 10, tokens=7, tlim=lim)
        self.reserve("b", 10, tokens=7, tlim=lim)
        self.assertEqual(self.reserve("c", 10, tlim=lim)[0], 3)
        self.assertEqual(self.release("b"), [1])
        self.assertEqual((self.limf("T|q"), self.limf("T|n")), (1, 7))
        self.assertEqual(self.reserve("c", 10, tlim=lim)[0], 1)

    def test_spend_window_is_charged_plus_loaned(self):
        lim = "0 0 0 1000 0"
        self.assertEqual(self.reserve("a", 600, tlim=lim)[0], 1)
        r = self.reserve("b", 500, tlim=lim)
        self.assertEqual(r[:10], [3, 0, 600, 0, 0, 4, 1, 60, 600, 1000],
                         "spend per minute: 600 loaned + 500 > 1000, no room yet: 60 s")
        self.settle("a", 300, track="t")
        self.assertEqual(self.reserve("b", 500, tlim=lim)[0], 1, "300 charged + 500 fits")
        r = self.reserve("c", 300, tlim=lim)
        self.assertEqual((r[0], r[5], r[8], r[9]), (3, 4, 800, 1000))
        self.assertTrue(59 <= r[7] <= 60, "a's charge leaves the window: %r" % r)
        lim = "0 0 0 0 1000"
        self.assertEqual(self.reserve("d", 300, tlim=lim)[5], 5, "per hour: 300 + 500 + 300")
        self.assertEqual(self.reserve("e", 1000, tlim=lim)[7], 3600)

    def test_spend_window_is_exact_beyond_2_pow_53(self):
        lim = "0 0 0 %d 0" % (P53 + 3)
        self.reserve("a", 0, tlim=lim)
        self.settle("a", P53 + 1, track="t")
        self.assertEqual(self.r.cli("HGET", self.k["lim"], "T").split()[4], str(P53 + 1))
        self.assertEqual(self.reserve("b", 2, tlim=lim)[0], 1, "charged + 2 == limit fits")
        r = self.reserve("c", 1, tlim=lim)
        self.assertEqual((r[0], r[5], r[8]), (3, 4, P53 + 3))

    def test_a_settle_after_the_reap_still_counts_its_charge(self):
        lim = "0 0 0 1000 0"
        self.reserve("a", 600, tlim=lim, lease_ms=50)
        time.sleep(0.15)
        self.assertEqual(self.reserve("b", 100, tlim=lim)[0], 1)
        self.assertEqual(self.limf("T|l"), 100, "a reaped: only b loaned")
        self.settle("a", 700, track="t")
        self.assertEqual((self.limf("T|l"), self.limf("T|i"), self.limf("T|m")), (100, 1, 700))
        r = self.reserve("c", 300, tlim=lim)
        self.assertEqual((r[0], r[5], r[8]), (3, 4, 800))

    def test_key_limits_apply_besides_the_team_and_say_whose(self):
        self.assertEqual(self.reserve("a", 1, key="alice", tlim="0 0 3 0 0",
                                      klim="0 0 1 0 0")[0], 1)
        r = self.reserve("b", 1, key="alice", tlim="0 0 3 0 0", klim="0 0 1 0 0")
        self.assertEqual((r[0], r[5], r[6]), (3, 3, 2), "the key's in-flight limit")
        self.assertEqual(self.reserve("c", 1, key="bob", tlim="0 0 3 0 0",
                                      klim="0 0 1 0 0")[0], 1, "bob's own count")
        self.assertEqual(self.reserve("d", 1, key="carol", tlim="0 0 3 0 0")[0], 1)
        r = self.reserve("e", 1, key="dave", tlim="0 0 3 0 0", klim="0 0 1 0 0")
        self.assertEqual((r[0], r[5], r[6]), (3, 3, 1), "the team's is checked first")
        self.assertEqual((self.limf("T|i"), self.limf("K:alice|i"), self.limf("K:bob|i")),
                         (3, 1, 1))
        self.assertIsNone(self.limf("K:carol|i"), "a key without limits is not counted")
        self.settle("a", 5, key="alice", tokens=1, track="tk")
        self.assertEqual((self.limf("T|i"), self.limf("K:alice|i"), self.limf("K:alice|m")),
                         (2, 0, 5))

    def test_headers_are_the_tighter_of_key_and_team(self):
        r = self.reserve("a", 1, key="alice", tokens=10, tlim="100 1000 0 0 0",
                         klim="5 5000 0 0 0")
        self.assertEqual(r[10:16], [5, 4, 0, 1000, 990, 0], "requests: the key; tokens: the team")

    def test_adopted_hold_counts_in_flight_not_in_the_windows(self):
        lim = "1 0 1 0 0"
        self.assertEqual(self.reserve("a", 10, tokens=50, tlim=lim, mode="a")[0], 1)
        self.assertEqual((self.limf("T|i"), self.limf("T|q")), (1, 0))
        self.assertEqual(self.reserve("b", 10, tlim=lim)[5], 3, "in flight: the adopted one")
        self.release("a")
        self.assertEqual(self.reserve("b", 10, tlim=lim)[0], 1, "its request was not counted")

    def test_renew_keeps_a_live_request_in_flight(self):
        lim = "0 0 1 0 0"
        self.reserve("a", 10, tlim=lim, lease_ms=200)
        self.assertEqual(self.ev("renew", ["lease", "limlease", "lim"], [10000, "a"]), [1])
        time.sleep(0.3)
        self.assertEqual(self.reserve("b", 10, tlim=lim)[5], 3, "a is still in flight")


# ---------------------------------------------------------------- the fleet

class LTeam(Team):
    """A Team with the team's limits and each key's settings (cap, limits)."""

    def __init__(self, name, cap, limits=None, keys=None, **kw):
        keys = keys or {"f": {}}
        super().__init__(name, cap, key_ids=list(keys), **kw)
        self.limits = dict(limits or {})
        self.key_conf = keys

    def conf(self):
        t = super().conf()
        t.update(self.limits)
        for k in t["keys"]:
            k.update(self.key_conf.get(k["id"], {}))
        return t


class LimFleet(FleetBase):
    """N instances on one Redis sharing team "fleet" with LIMITS and KEYS."""
    N = 2
    CAP = 1000.0
    POLICY = "closed"
    LIMITS = {}
    KEYS = {"f": {}}
    LEASE_S = 5                      # None: the default lease

    @classmethod
    def setup_proxies(cls):
        cls.redis = Redis(cls.tmp)
        cls.team = LTeam("fleet", cls.CAP, limits=cls.LIMITS, keys=cls.KEYS)
        over = {"budget_store": cls.redis.url, "on_store_down": cls.POLICY}
        if cls.LEASE_S:
            over["budget_lease_s"] = cls.LEASE_S
        cls.fleet = [cls.add_proxy([cls.team], name="inst%d" % i, overrides=over)
                     for i in range(cls.N)]

    def key(self, kid):
        return self.team.keys[kid]

    def race(self, calls, timeout=60):
        """Sends calls [(proxy, body, key)] at once (one thread each, released
        together); returns [(proxy, response or exception)] in call order."""
        out = [None] * len(calls)
        barrier = threading.Barrier(len(calls))

        def one(i, p, body, key):
            try:
                barrier.wait(20)
                out[i] = (p, p.chat(body, key=key, timeout=timeout))
            except Exception as e:  # noqa: BLE001 - asserted by the callers
                out[i] = (p, e)

        ts = [threading.Thread(target=one, args=(i,) + c, daemon=True) for i, c in enumerate(calls)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout + 30)
        bad = [r for _, r in out if not hasattr(r, "status")]
        self.assertEqual(bad, [], "every request answered")
        return out

    def lim_field(self, field):
        """A subject's figure in the lim hash ("T|i": the team's in flight)."""
        subj, what = field.split("|")
        v = self.redis.cli("HGET", "pm:{fleet}:lim", subj)
        return int(dict(zip("Hhqnmoil", v.split()))[what]) if v else 0

    def key_ledger_sum(self, p, kid, col="charged_nanos"):
        con = sqlite3.connect(p.ledger, timeout=5)
        try:
            return con.execute("SELECT COALESCE(SUM(%s), 0) FROM requests WHERE key_id = ?" % col,
                               (kid,)).fetchone()[0]
        finally:
            con.close()


def nanos_to_credits(n):
    return n / 1e9


class KeyCapFleetRaceTest(LimFleet):
    """A key's cap under a 100-request race across three instances."""
    N = 3
    BODY = chat_body(SONNET, content="key race", max_tokens=40,
                     mock={"delay_ms": 4000, "usage": {"prompt_tokens": 40,
                                                       "completion_tokens": 30}})
    RES = reservation(SONNET, body_len(BODY), 40)
    KCAP = 10 * RES + RES // 2            # room for exactly 10 reservations at once
    KEYS = {"a": {"cap": nanos_to_credits(KCAP)}, "b": {}}

    def test_100_requests_race_one_key_cap_across_3_instances(self):
        a = self.key("a")
        c = cost(SONNET, 40, 30)
        calls = [(self.fleet[i % 3], self.BODY, a) for i in range(100)]
        out = self.race(calls)
        ok = [(p, r) for p, r in out if r.status == 200]
        refused = [(p, r) for p, r in out if r.status == 402]
        self.assertEqual(len(ok) + len(refused), 100, [r for _, r in out][:3])
        e = refused[0][1].json()["error"]
        cap = to_nanos(e["cap"])
        self.assertEqual(cap, self.KCAP, "the key's cap as configured")
        for _, r in refused:
            e = r.json()["error"]
            self.assertEqual((e["scope"], e["key"], e["team"]), ("key", "a", "fleet"), e)
        # The admitted ones were all in flight together (each waits 4 s
        # upstream), so none had freed its reservation: the fleet admitted
        # exactly what the key's available allowed.
        self.assertEqual(self.mock.stats()["chat_max_active"], len(ok),
                         "the race did not overlap (a loaded machine?)")
        self.assertEqual(len(ok), cap // self.RES, "admitted vs the key's cap")
        self.assertGreater(len({p.name for p, _ in ok}), 1, "admitted on several instances")
        self.assertEqual(self.mock.chat_count(), len(ok), "a 402 reached the upstream")
        self.wait_fleet_idle(timeout=15)
        reserved = sum(self.key_ledger_sum(p, "a", "reserved_nanos") for p in self.fleet)
        charged = sum(self.key_ledger_sum(p, "a") for p in self.fleet)
        self.assertLessEqual(reserved, cap, "the sum of reservations passed the key's cap")
        self.assertEqual(reserved, len(ok) * self.RES)
        self.assertEqual(charged, len(ok) * c)
        keys = self.redis.keys("pm:{fleet}:m*:keys")
        self.assertEqual(len(keys), 1, keys)
        deadline = time.time() + 5           # the settles trail the answers
        while self.redis.cli("HGET", keys[0], "s:a") != str(charged) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.redis.cli("HGET", keys[0], "s:a"), str(charged), "Redis vs ledgers")
        self.assertEqual(self.redis.cli("HGET", keys[0], "l:a"), "0")
        for p in self.fleet:
            self.assertEqual(int(self.redis.cli("HGET", keys[0], "b:a:" + instance_id(p)) or 0),
                             self.key_ledger_sum(p, "a"), "%s's share of the key" % p.name)
            j = p.request("GET", "/v0/credits/balance", key=a).json()
            self.assertEqual([to_nanos(j["key"][f]) for f in ("total", "loaned", "available")],
                             [cap, 0, cap - charged], j)
        # the other key of the team is not held to a's cap
        self.assertEqual(self.fleet[1].chat(self.BODY, key=self.key("b")).status, 200)
        self.assertNotIn("key", self.fleet[1].request("GET", "/v0/credits/balance",
                                                      key=self.key("b")).json())
        self.wait_fleet_idle(timeout=15)
        self.assert_redis_matches_ledgers()
        self.check(fleet=True, fresh_ledger=True)


class RpmFleetTest(LimFleet):
    N = 2
    LIMITS = {"rpm": 30}

    def test_rpm_admits_exactly_the_limit_across_two_instances(self):
        body = chat_body(SONNET, max_tokens=20, mock={"usage": {"prompt_tokens": 9,
                                                                "completion_tokens": 4}})
        key = self.team.key
        out = self.race([(self.fleet[i % 2], body, key) for i in range(50)])
        ok = [r for _, r in out if r.status == 200]
        limited = [r for _, r in out if r.status == 429]
        self.assertEqual((len(ok), len(limited)), (30, 20), [r.status for _, r in out])
        self.assertEqual({p.name for p, r in out if r.status == 200}, {"inst0", "inst1"})
        for r in limited:
            e = self.assertJSONError(r, 429, "rate_limit_exceeded", "rpm")
            self.assertEqual(e["scope"], "team")
            ra = int(r.header("retry-after"))
            self.assertTrue(1 <= ra <= 60, ra)
            self.assertEqual(r.header("x-ratelimit-remaining-requests"), "0")
        self.assertEqual(sorted(int(r.header("x-ratelimit-remaining-requests")) for r in ok),
                         list(range(30)), "one fleet-wide window counts each request once")
        self.assertTrue(all(r.header("x-ratelimit-limit-requests") == "30" for r in ok))
        self.assertEqual(self.mock.chat_count(), 30, "a 429 reached the upstream")
        self.wait_fleet_idle()
        self.assertEqual(self.lim_field("T|q"), 30)
        self.assertEqual((self.lim_field("T|i"), self.lim_field("T|l")), (0, 0))
        self.assert_redis_matches_ledgers()
        self.check(fleet=True, fresh_ledger=True)


class InflightFleetTest(LimFleet):
    N = 2
    LIMITS = {"max_inflight": 4}

    def test_max_inflight_holds_across_two_instances_at_the_upstream(self):
        body = chat_body(SONNET, max_tokens=20, mock={"delay_ms": 400, "usage": {
            "prompt_tokens": 9, "completion_tokens": 4}})
        out = self.race([(self.fleet[i % 2], body, self.team.key) for i in range(100)])
        ok = [r for _, r in out if r.status == 200]
        limited = [r for _, r in out if r.status == 429]
        self.assertEqual(len(ok) + len(limited), 100, [r.status for _, r in out])
        for r in limited:
            self.assertJSONError(r, 429, "rate_limit_exceeded", "inflight")
            self.assertEqual(r.header("retry-after"), "1")
        st = self.mock.stats()
        self.assertLessEqual(st["chat_max_active"], 4, "more than max_inflight at the upstream")
        self.assertEqual(st["chat_max_active"], 4, "the limit was used, fleet-wide")
        self.assertEqual(self.mock.chat_count(), len(ok))
        self.wait_fleet_idle()
        self.assertEqual((self.lim_field("T|i"), self.lim_field("T|l")), (0, 0),
                         "nothing left in flight")
        self.assertEqual(self.fleet[0].chat(body, key=self.team.key).status, 200)
        self.wait_fleet_idle()
        self.assert_redis_matches_ledgers()
        self.check(fleet=True, fresh_ledger=True)


class SpendWindowFleetTest(LimFleet):
    N = 2
    BODY = chat_body(SONNET, max_tokens=100, mock={"usage": {"prompt_tokens": 50,
                                                             "completion_tokens": 60}})
    C = cost(SONNET, 50, 60)
    RES = reservation(SONNET, body_len(BODY), 100)
    LIMIT = 5 * C + RES - 1              # the 6th request does not fit after 5 charges
    LIMITS = {"max_spend_per_minute": nanos_to_credits(LIMIT)}

    def test_the_runaway_guard_sums_the_fleet_spend_in_its_window(self):
        key = self.team.key
        got = []
        for i in range(8):
            p = self.fleet[i % 2]
            got.append(p.chat(self.BODY, key=key))
            self.wait_fleet_idle()           # each charge in Redis before the next reserve
        self.assertEqual([r.status for r in got], [200] * 5 + [429] * 3)
        e = self.assertJSONError(got[5], 429, "spend_rate_exceeded", "max_spend_per_minute")
        self.assertEqual(to_nanos(e["limit"]), self.LIMIT)
        self.assertEqual(to_nanos(e["spent_in_window"]), 5 * self.C,
                         "both instances' charges in the window")
        ra = int(got[5].header("retry-after"))
        self.assertTrue(1 <= ra <= 60, ra)
        self.assertEqual(self.mock.chat_count(), 5)
        self.assertEqual(self.lim_field("T|m"), 5 * self.C)
        self.assert_redis_matches_ledgers()
        self.check(fleet=True, fresh_ledger=True)


class ReloadLimitsFleetTest(LimFleet):
    N = 2
    LIMITS = {"rpm": 5}

    def test_reload_applies_new_limits_and_the_window_carries_over(self):
        body = chat_body(SONNET, max_tokens=20)
        key = self.team.key
        got = [self.fleet[i % 2].chat(body, key=key).status for i in range(6)]
        self.assertEqual(got, [200] * 5 + [429])
        self.team.limits["rpm"] = 8
        for p in self.fleet:
            mark = len(p.logs_text())
            p.set_teams([self.team])
            p.send_signal(__import__("signal").SIGHUP)
            self.assertTrue(p.wait_log("reloaded", since=mark), p.logs_text()[-500:])
        got = [self.fleet[i % 2].chat(body, key=key).status for i in range(4)]
        self.assertEqual(got, [200] * 3 + [429], "5 of the 8 were already in the window")
        self.wait_fleet_idle()
        self.assert_redis_matches_ledgers()


class LocalOutageLimitsTest(LimFleet):
    """Redis down with on_store_down "local": rate limits per instance,
    against each instance's own windows (which hold its traffic from before
    the outage); a capped key's spend re-added after Redis lost its data."""
    N = 2
    POLICY = "local"
    LIMITS = {"rpm": 6}
    BODY = chat_body(SONNET, max_tokens=60, mock={"usage": {"prompt_tokens": 50,
                                                            "completion_tokens": 40}})
    RES = reservation(SONNET, body_len(BODY), 60)
    C = cost(SONNET, 50, 40)
    KCAP = 20 * RES
    KEYS = {"f": {}, "g": {"cap": nanos_to_credits(KCAP)}}

    def test_outage_limits_apply_per_instance_on_their_own_windows(self):
        a, b = self.fleet
        f, g = self.key("f"), self.key("g")
        self.assertEqual(a.chat(self.BODY, key=f).status, 200)
        self.assertEqual(a.chat(self.BODY, key=g).status, 200)
        self.assertEqual(b.chat(self.BODY, key=f).status, 200)
        self.wait_fleet_idle()
        time.sleep(2.5)                     # a beat and a key sync: both instances counted
        self.redis.kill9()
        # a served 2 of the team's requests this minute, b 1: per instance, rpm 6 leaves 4 and 5
        for p, room in ((a, 4), (b, 5)):
            got = [p.chat(self.BODY, key=f).status for _ in range(room + 1)]
            self.assertEqual(got, [200] * room + [429], p.name)
        self.assertEqual(self.mock.chat_count(), 3 + 9)
        self.assertEqual(a.chat(self.BODY, key=g).status, 429, "rpm before the key's share")
        self.redis.start()                  # empty: no persistence
        for p in self.fleet:
            self.wait_store_up(p)
        self.wait_fleet_idle()
        total = self.assert_redis_matches_ledgers()
        self.assertEqual(total, 12 * self.C)
        keys = self.redis.keys("pm:{fleet}:m*:keys")
        deadline = time.time() + 5          # the key's share is re-added by the next sync
        while self.redis.cli("HGET", keys[0], "s:g") != str(self.C) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.redis.cli("HGET", keys[0], "s:g"), str(self.C),
                         "the key's spend re-added from the ledger after Redis lost it")
        self.check(fleet=True)


class LocalKeyShareTest(LimFleet):
    """The key's local share during an outage: what it had left over the
    live instances."""
    N = 2
    POLICY = "local"
    BODY = LocalOutageLimitsTest.BODY
    RES, C = LocalOutageLimitsTest.RES, LocalOutageLimitsTest.C
    KCAP = 6 * RES
    KEYS = {"g": {"cap": nanos_to_credits(KCAP)}}

    def test_key_cap_against_a_local_share(self):
        a, b = self.fleet
        g = self.team.key
        self.assertEqual(a.chat(self.BODY, key=g).status, 200)
        self.wait_fleet_idle()
        time.sleep(2.5)
        self.redis.kill9()
        share = (self.KCAP - self.C) // 2
        for p in self.fleet:
            n = 0
            while n < 10:
                r = p.chat(self.BODY, key=g)
                if r.status != 200:
                    break
                n += 1
            e = self.assertJSONError(r, 402)
            self.assertEqual((e["scope"], e["key"]), ("key", "g"))
            self.assertEqual(to_nanos(e["cap"]), share, "the key's local share")
            self.assertEqual(n, (share - self.RES) // self.C + 1, p.name)
        self.redis.start()
        for p in self.fleet:
            self.wait_store_up(p)
        self.wait_fleet_idle()
        self.assertLessEqual(self.assert_redis_matches_ledgers(), self.KCAP)
        self.check(fleet=True)


class LeaseKillFleetTest(LimFleet):
    """The default lease (30 s): a SIGKILLed instance's holds, and its
    requests in flight, leave the fleet within about 30 s."""
    N = 2
    LEASE_S = None
    LIMITS = {"max_inflight": 3}

    def test_killed_instance_holds_leave_loaned_within_35_s(self):
        a, b = self.fleet
        self.assertIn("lease 30000 ms", a.logs_text())
        key = self.team.key
        slow = chat_body(SONNET, max_tokens=300, mock={"delay_ms": 18000, "client_may_abort": True})
        res = reservation(SONNET, body_len(slow), 300)
        ts = [threading.Thread(target=lambda: self._quiet(b.chat, slow, key), daemon=True)
              for _ in range(3)]
        for t in ts:
            t.start()
        seen = a.wait_balance(key, lambda x: x["loaned"] == 3 * res, timeout=10)
        self.assertEqual(seen["loaned"], 3 * res, "a sees b's holds")
        ok = chat_body(SONNET, max_tokens=20)
        self.assertJSONError(a.chat(ok, key=key), 429, "rate_limit_exceeded", "inflight")
        b.kill9()
        t0 = time.time()
        after = a.wait_balance(key, lambda x: x["loaned"] == 0, timeout=40)
        waited = time.time() - t0
        self.assertEqual(after["loaned"], 0, "b's holds must leave loaned")
        self.assertLess(waited, 35, "within the default lease")
        self.assertEqual(a.chat(ok, key=key).status, 200, "b's requests left the in-flight count")
        self.assertEqual(self.lim_field("T|i"), 0)
        for t in ts:
            t.join(30)

    @staticmethod
    def _quiet(fn, *args):
        try:
            fn(*args, timeout=40)
        except Exception:  # noqa: BLE001 - the instance is killed under it
            pass


if __name__ == "__main__":
    unittest.main()

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

from harness import SONNET, Team, body_len, chat_body, cost, reservation
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
        v = self.r.cli("HGET", self.k["lim"], field)
        return int(v) if v else None

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
        self.assertEqual((self.limf("T|q|s"), self.limf("T|i"), self.limf("T|l")), (3, 3, 30))
        self.assertEqual(self.r.cli("HGET", self.k["holds"], "r3"), "", "a 429 holds nothing")

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
        self.assertEqual((self.limf("T|q|s"), self.limf("T|n|s")), (1, 7))
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
        self.assertEqual(self.r.cli("HGET", self.k["lim"], "T|m|s"), str(P53 + 1))
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
        self.assertEqual((self.limf("T|l"), self.limf("T|i"), self.limf("T|m|s")), (100, 1, 700))
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
        self.assertEqual((self.limf("T|i"), self.limf("K:alice|i"), self.limf("K:alice|m|s")),
                         (2, 0, 5))

    def test_headers_are_the_tighter_of_key_and_team(self):
        r = self.reserve("a", 1, key="alice", tokens=10, tlim="100 1000 0 0 0",
                         klim="5 5000 0 0 0")
        self.assertEqual(r[10:16], [5, 4, 0, 1000, 990, 0], "requests: the key; tokens: the team")

    def test_adopted_hold_counts_in_flight_not_in_the_windows(self):
        lim = "1 0 1 0 0"
        self.assertEqual(self.reserve("a", 10, tokens=50, tlim=lim, mode="a")[0], 1)
        self.assertEqual((self.limf("T|i"), self.limf("T|q|s")), (1, None))
        self.assertEqual(self.reserve("b", 10, tlim=lim)[5], 3, "in flight: the adopted one")
        self.release("a")
        self.assertEqual(self.reserve("b", 10, tlim=lim)[0], 1, "its request was not counted")

    def test_renew_keeps_a_live_request_in_flight(self):
        lim = "0 0 1 0 0"
        self.reserve("a", 10, tlim=lim, lease_ms=200)
        self.assertEqual(self.ev("renew", ["lease", "limlease", "lim"], [10000, "a"]), [1])
        time.sleep(0.3)
        self.assertEqual(self.reserve("b", 10, tlim=lim)[5], 3, "a is still in flight")


if __name__ == "__main__":
    unittest.main()

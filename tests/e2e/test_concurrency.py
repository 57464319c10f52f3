"""50 concurrent requests against a cap that fits only some of them."""
import json
import os
import threading

from harness import (E2ETest, Team, SONNET, TEST_BIN, WRAPPER, chat_body, body_len, reservation,
                     cost)

N = 50
K = 7   # the cap fits exactly K reservations at once


class ConcurrencyTest(E2ETest):
    BODY = chat_body(SONNET, content="concurrent please", max_tokens=500,
                     mock={"delay_ms": 1500, "usage": {"prompt_tokens": 40, "completion_tokens": 30,
                                                       "cached_tokens": 10}})

    @classmethod
    def setup_proxies(cls):
        cls.res = reservation(SONNET, body_len(cls.BODY), 500)
        cls.cap_nanos = K * cls.res + cls.res // 2
        cls.team = Team("conc", cls.cap_nanos / 1e9, period="none", key_ids=["c"])
        cls.pm = cls.add_proxy([cls.team], name="conc")

    def test_50_concurrent_cap_enforced(self):
        b = self.pm.balance(self.team.key)
        self.assertEqual(b["total"], self.cap_nanos)
        results = [None] * N
        barrier = threading.Barrier(N)

        def worker(i):
            try:
                barrier.wait(5)
                results[i] = self.pm.chat(self.BODY, key=self.team.key, timeout=20)
            except Exception as e:  # noqa: BLE001 - recorded and asserted below
                results[i] = e

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(N)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        errors = [r for r in results if not hasattr(r, "status")]
        self.assertEqual(errors, [], "requests failed at the transport level")
        statuses = sorted(r.status for r in results)
        admitted = statuses.count(200)
        rejected = statuses.count(402)
        self.assertEqual(admitted + rejected, N, "unexpected statuses: %s" % statuses)
        self.assertLessEqual(admitted, self.cap_nanos // self.res, "more admitted than the cap allows")
        self.assertEqual(admitted, K, "with all in flight exactly %d fit" % K)
        for r in results:
            if r.status == 402:
                e = r.json()["error"]
                self.assertEqual(e.get("scope"), "team")
        self.assertEqual(self.mock.chat_count(), admitted, "a 402 reached the upstream")
        b = self.pm.wait_idle(self.team.key)
        self.assertEqual(b["loaned"], 0)
        spent = self.cap_nanos - b["available"]
        self.assertEqual(spent, admitted * cost(SONNET, 40, 30, 10))
        rows = self.pm.wait_rows(lambda rs: len([x for x in rs if x["state"] == "settled"]) >= admitted)
        settled = [x for x in rows if x["state"] == "settled"]
        self.assertEqual(len(settled), admitted)
        self.assertEqual(sum(x["charged_nanos"] for x in rows), spent)

    def test_threads_named_and_ledger_writer_yields(self):
        """Threads carry names (top -H, perf), and the ledger writer runs at
        nice 5 so a commit does not hold the core a request needs."""
        if WRAPPER:
            self.skipTest("under a wrapper the tool owns thread scheduling")
        threads = {}
        for tid in os.listdir("/proc/%d/task" % self.pm.pid):
            with open("/proc/%d/task/%s/comm" % (self.pm.pid, tid)) as f:
                comm = f.read().strip()
            with open("/proc/%d/task/%s/stat" % (self.pm.pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            threads[comm] = int(fields[16])      # stat field 19: nice
        self.assertEqual(threads.get("pm-ledger"), 5, threads)
        self.assertEqual(threads.get("pm-loop"), 0, threads)
        # and the writer still keeps up: a new request's row settles
        settled = lambda rs: sum(1 for x in rs if x["state"] == "settled")
        before = settled(self.pm.wait_rows(lambda rs: all(x["state"] != "inflight" for x in rs)))
        r = self.pm.chat(chat_body(SONNET, content="after", max_tokens=5,
                                   mock={"usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
                         key=self.team.keys["c"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(settled(self.pm.wait_rows(lambda rs: settled(rs) == before + 1)),
                         before + 1)


class ConcurrentStreamsTest(E2ETest):
    CHUNK_DELAY_MS = 50
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("streams", 100.0, key_ids=["s"])
        cls.pm = cls.add_proxy([cls.team], name="streams")

    def test_30_concurrent_streams(self):
        self.run_streams(30)

    def run_streams(self, n):
        out = [None] * n

        def worker(i):
            try:
                body = chat_body(SONNET, stream=True, max_tokens=100,
                                 stream_options={"include_usage": i % 2 == 0},
                                 mock={"chunks": 10, "chunk_delay_ms": self.CHUNK_DELAY_MS, "content": "stream-%02d " % i * 5,
                                       "usage": {"prompt_tokens": 10 + i, "completion_tokens": 5 + i,
                                                 "cached_tokens": i % 3}})
                s = self.pm.stream(body, key=self.team.key, timeout=20)
                ev = s.read_all()
                s.close()
                out[i] = (s.status, ev)
            except Exception as e:  # noqa: BLE001
                out[i] = e

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        expected = 0
        for i, o in enumerate(out):
            self.assertIsInstance(o, tuple, "stream %d: %r" % (i, o))
            status, ev = o
            self.assertEqual(status, 200)
            self.assertEqual(ev[-1], "[DONE]")
            chunks = [json.loads(e) for e in ev[:-1]]
            text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
            self.assertEqual(text, "stream-%02d " % i * 5)
            self.assertEqual(len([c for c in chunks if not c["choices"]]), 1 if i % 2 == 0 else 0)
            expected += cost(SONNET, 10 + i, 5 + i, i % 3)
        b = self.pm.wait_idle(self.team.key)
        self.assertEqual(b["available"], 100 * 10 ** 9 - expected)
        rows = self.pm.wait_rows(lambda rs: len(rs) == n and all(x["state"] == "settled" for x in rs))
        self.assertEqual(sum(x["charged_nanos"] for x in rows), expected)


class StreamsRelayDeferredTest(ConcurrentStreamsTest):
    """The same 30 streams with relaying's share of a loop turn at 0 (a test
    build's PINMETER_TEST_RELAY_TURN_US): a turn relays one stream's event and
    leaves the others' to the next turns. Every chunk must still arrive, in
    order, and every stream be metered exactly. Chunks 2 ms apart, so that
    many streams' events meet in one turn."""
    CHUNK_DELAY_MS = 2

    @classmethod
    def setup_proxies(cls):
        if not os.path.exists(TEST_BIN):
            import unittest
            raise unittest.SkipTest("no test build at %s (make build-test/pinmeter)" % TEST_BIN)
        cls.team = Team("streams-deferred", 100.0, key_ids=["d"])
        cls.pm = cls.add_proxy([cls.team], name="streamsdeferred", bin=TEST_BIN,
                               env={"PINMETER_TEST_RELAY_TURN_US": "0"})


class AccountConcurrencyTest(E2ETest):
    """The account projection is enforced as strictly as a team cap."""
    BODY = chat_body(SONNET, content="account race", max_tokens=300,
                     mock={"delay_ms": 1200})
    K = 5

    @classmethod
    def setup_proxies(cls):
        from harness import JWT
        cls.res = reservation(SONNET, body_len(cls.BODY), 300)
        cls.avail = cls.K * cls.res + cls.res // 3
        cls.mock.set_balance(total=100.0, loaned=0.0, available=cls.avail / 1e9)
        cls.team = Team("acc-conc", 100.0, key_ids=["a"])
        cls.pm = cls.add_proxy([cls.team], name="accconc", env={"PINATA_JWT": JWT})

    def test_20_concurrent_account_cap(self):
        n = 20
        results = [None] * n
        barrier = threading.Barrier(n)

        def worker(i):
            try:
                barrier.wait(5)
                results[i] = self.pm.chat(self.BODY, key=self.team.key, timeout=20)
            except Exception as e:  # noqa: BLE001
                results[i] = e

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        statuses = [getattr(r, "status", r) for r in results]
        admitted = statuses.count(200)
        self.assertEqual(admitted + statuses.count(402), n, statuses)
        self.assertEqual(admitted, self.K)
        for r in results:
            if r.status == 402:
                self.assertEqual(r.json()["error"]["scope"], "account")
        self.assertEqual(self.mock.chat_count(), admitted)
        b = self.pm.wait_idle(self.team.key)
        self.assertEqual(b["available"], 100 * 10 ** 9 - admitted * cost(SONNET, 12, 7))

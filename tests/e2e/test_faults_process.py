"""Process faults (issue 3): SIGTERM drains; SIGKILL at random moments under
load loses no ledger row; SIGHUP reloads config and rates atomically (a broken
config is refused, requests in flight keep their rates); a ledger that cannot
be written fails closed (503) and loses nothing. Each test ends with the
shared invariant checker."""
import json
import os
import random
import signal
import socket
import threading
import time

from harness import (Team, Proxy, SONNET, HAIKU, GPT4O, NANO, RATES, TEST_BIN, chat_body, body_len,
                     cost, rate_nanos, http_request, write_rates)
from invariants import FaultTest


def run_bg(fn, *args):
    """Runs fn(*args) on a daemon thread; .result / .error after join."""
    t = threading.Thread(target=lambda: _run(t, fn, args), daemon=True)
    t.result = t.error = None
    t.start()
    return t


def _run(t, fn, args):
    try:
        t.result = fn(*args)
    except Exception as e:  # noqa: BLE001 - inspected by the test
        t.error = e


def wait_for(pred, timeout=5.0, step=0.02):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


def refused_or_503(port):
    """True when a new connection is refused, closed unanswered, or answered 503."""
    try:
        r = http_request(port, "GET", "/healthz", timeout=2)
    except (ConnectionRefusedError, ConnectionResetError, socket.timeout):
        return True
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - http.client.RemoteDisconnected and kin
        return True
    return r.status == 503


# ====================================================================== SIGTERM
class DrainTest(FaultTest):
    DRAIN_S = 5

    @classmethod
    def setup_proxies(cls):
        cls.team = Team("drain", 50.0, key_ids=["d1"])
        cls.pm = cls.add_proxy([cls.team], name="drain", overrides={"drain_s": cls.DRAIN_S})

    def setUp(self):
        super().setUp()
        if not self.pm.alive():
            self.pm.start()

    def test_sigterm_drains_in_flight(self):
        usages = [{"prompt_tokens": 30 + i, "completion_tokens": 10 + i, "cached_tokens": i}
                  for i in range(3)]
        b0 = chat_body(SONNET, max_tokens=100, mock={"delay_ms": 1500, "usage": usages[0]})
        b1 = chat_body(HAIKU, max_tokens=100, mock={"delay_ms": 1200, "usage": usages[1]})
        b2 = chat_body(SONNET, stream=True, max_tokens=100, stream_options={"include_usage": True},
                       mock={"chunks": 10, "chunk_delay_ms": 150, "usage": usages[2]})

        def stream_all():
            s = self.pm.stream(b2, key=self.team.key, timeout=15)
            ev = s.read_all()
            s.close()
            return s, ev
        ts = [run_bg(self.pm.chat, b0, self.team.key, "/v0/llm/chat/completions", None, 15),
              run_bg(self.pm.chat, b1, self.team.key, "/v0/llm/chat/completions", None, 15),
              run_bg(stream_all)]
        self.assertTrue(wait_for(lambda: self.mock.chat_count() == 3, 5), "3 requests not upstream")
        time.sleep(0.1)
        t0 = time.time()
        self.pm.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        self.assertTrue(refused_or_503(self.pm.port), "a new connection was served while draining")
        for t in ts:
            t.join(15)
        self.pm.proc.wait(timeout=self.DRAIN_S + 5)
        took = time.time() - t0
        self.assertEqual(self.pm.proc.returncode, 0, "exit status after a drain")
        self.assertLess(took, self.DRAIN_S + 1, "did not exit within drain_s")
        for t in ts:
            self.assertIsNone(t.error, "request in flight failed during the drain: %r" % t.error)
        r0, r1, (s2, ev2) = ts[0].result, ts[1].result, ts[2].result
        self.assertEqual((r0.status, r1.status, s2.status), (200, 200, 200))
        self.assertEqual(ev2[-1], "[DONE]", "stream cut by the drain")
        expect = {r0.header("x-pinmeter-request-id"): cost(SONNET, 30, 10, 0),
                  r1.header("x-pinmeter-request-id"): cost(HAIKU, 31, 11, 1),
                  s2.headers.get("x-pinmeter-request-id"): cost(SONNET, 32, 12, 2)}
        rows = {r["id"]: r for r in self.pm.ledger_rows()}
        for rid, c in expect.items():
            self.assertEqual((rows[rid]["state"], rows[rid]["charged_nanos"]), ("settled", c),
                             rows[rid])
        self.assertIn("stopped", self.pm.stderr_text())
        self.pm.start()
        self.check()

    def test_sigterm_drain_deadline(self):
        """A request slower than drain_s is cut at the deadline and settled by
        the proxy itself (not left inflight for the next start)."""
        pm = Proxy(self.tmp, self.mock.url, teams=[self.team], name="drain1",
                   overrides={"drain_s": 1})
        self.proxies.append(pm)
        pm.start()
        body = chat_body(SONNET, max_tokens=100, mock={"delay_ms": 4000})
        t = run_bg(pm.chat, body, self.team.key, "/v0/llm/chat/completions", None, 10)
        self.assertTrue(wait_for(lambda: self.mock.chat_count() == 1, 5))
        t0 = time.time()
        pm.send_signal(signal.SIGTERM)
        pm.proc.wait(timeout=8)
        self.assertLess(time.time() - t0, 3.0, "exit took longer than drain_s")
        self.assertEqual(pm.proc.returncode, 0)
        t.join(10)
        rows = pm.ledger_rows()
        self.assertEqual(len(rows), 1)
        self.assertIn(rows[0]["state"], ("estimated", "failed"),
                      "a request cut by the drain deadline was not settled: %r" % rows[0])
        self.assertLessEqual(rows[0]["charged_nanos"], rows[0]["reserved_nanos"])
        pm.start()
        self.assertEqual(pm.ledger_rows()[0]["state"], rows[0]["state"])
        self.check([pm])
        pm.stop()
        self.proxies.remove(pm)


# ====================================================================== SIGKILL
class KillLoopTest(FaultTest):
    CYCLES = 5
    CONCURRENCY = 20

    @classmethod
    def setup_proxies(cls):
        cls.team = Team("kl", 500.0, key_ids=["k1", "k2"])
        cls.pm = cls.add_proxy([cls.team], name="killloop", start=False)

    def _request(self, i, rng, out):
        key = list(self.team.keys.values())[i % 2]
        kind = rng.choice(["plain", "plain", "stream", "stream_usage", "error"])
        usage = {"prompt_tokens": rng.randint(1, 40), "completion_tokens": rng.randint(1, 90),
                 "cached_tokens": 0}
        mock = {"usage": usage, "delay_ms": rng.randint(0, 700)}
        try:
            if kind == "plain":
                r = self.pm.chat(chat_body(rng.choice([SONNET, HAIKU, GPT4O]), max_tokens=100,
                                           mock=mock), key=key, timeout=8)
                out.append((kind, r.status, r.header("x-pinmeter-request-id"), r.status == 200))
            elif kind == "error":
                mock["status"] = rng.choice([429, 500, 503])
                r = self.pm.chat(chat_body(SONNET, max_tokens=100, mock=mock), key=key, timeout=8)
                out.append((kind, r.status, r.header("x-pinmeter-request-id"), False))
            else:
                body = chat_body(SONNET, stream=True, max_tokens=100,
                                 mock=dict(mock, chunks=8, chunk_delay_ms=rng.randint(10, 80)))
                if kind == "stream_usage":
                    body["stream_options"] = {"include_usage": True}
                s = self.pm.stream(body, key=key, timeout=8)
                ev = s.read_all()
                s.close()
                out.append((kind, s.status, s.headers.get("x-pinmeter-request-id"),
                            bool(ev) and ev[-1] == "[DONE]" and s.error is None))
        except Exception as e:  # noqa: BLE001 - killed under it
            out.append((kind, type(e).__name__, None, False))

    def test_sigkill_loop_loses_no_row(self):
        seed = int(os.environ.get("PINMETER_TEST_SEED") or time.time())
        rng = random.Random(seed)
        results = []
        interrupted_logged = 0
        for cycle in range(self.CYCLES):
            self.pm.start()
            out = []
            threads = [run_bg(self._request, cycle * 100 + i, random.Random(rng.random()), out)
                       for i in range(self.CONCURRENCY)]
            time.sleep(rng.uniform(0.1, 1.0))
            self.pm.kill9()
            for t in threads:
                t.join(12)
            self.assertFalse(any(t.is_alive() for t in threads), "client threads hung")
            results += out
        self.pm.start()
        log = self.pm.stderr_text()
        interrupted_logged = sum(int(line.split(" request(s) were in flight")[0].split()[-1])
                                 for line in log.splitlines() if "were in flight" in line)
        # let the mock's handler threads finish writing to dead sockets
        wait_for(lambda: all(m.get("completed") or m.get("client_gone") or m.get("status")
                             for m in self.mock.requests()), 5)
        summary = self.check(allow_interrupted=True, fresh_ledger=True)
        rows = {r["id"]: r for r in self.pm.ledger_rows()}
        states = summary["states"]
        self.assertEqual(states.get("interrupted", 0), interrupted_logged,
                         "interrupted rows != what the restarts reported (seed %d)" % seed)
        # Every response a client received completely has its row, charged
        # exactly, or (killed before the completion was committed) interrupted
        # at its reservation: never less.
        complete = [x for x in results if x[3]]
        for kind, status, rid, _ in complete:
            self.assertIn(rid, rows, "a completed %s request has no ledger row (seed %d)"
                          % (kind, seed))
            self.assertIn(rows[rid]["state"], ("settled", "interrupted"), rows[rid])
        served = [m for m in self.mock.requests() if m.get("id")]
        self.assertGreaterEqual(len(rows), len(served), "fewer rows than upstream requests")
        print("\n    [sigkill loop] seed %d: %d requests, %d completed, %d upstream, rows %s"
              % (seed, len(results), len(complete), len(served), states))


# ====================================================================== SIGHUP
class ReloadTest(FaultTest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("hup", 5.0, key_ids=["h1"])
        cls.other = Team("hup2", 2.0, key_ids=["o1"])
        rates = os.path.join(cls.tmp, "reload-rates.json")
        write_rates(rates)
        cls.pm = cls.add_proxy([cls.team, cls.other], name="reload", rates_file=rates)
        cls.orig_cfg = json.loads(json.dumps(cls.pm.cfg))
        cls.orig_keys = {t.name: dict(t.keys) for t in (cls.team, cls.other)}

    def setUp(self):
        super().setUp()
        # back to the original config, rates and keys
        for t in (self.team, self.other):
            t.keys = dict(self.orig_keys[t.name])
        self.team.cap, self.other.cap = 5.0, 2.0
        self.pm.teams = [self.team, self.other]
        self.pm.stop()
        cfg = json.loads(json.dumps(self.orig_cfg))
        # a fresh ledger per test: a test that killed the process (no SIGHUP
        # handler) must not leave interrupted rows to the next one
        cfg["ledger"] = self.pm.ledger = os.path.join(self.tmp, "reload-%s.db" % self._testMethodName)
        self.pm.write_config(cfg)
        self.cfg0 = json.loads(json.dumps(cfg))
        write_rates(self.pm.rates_file)
        self.pm.start()

    def hup(self, needle, required=True, timeout=3.0):
        """SIGHUP and wait for needle in the log (after this signal)."""
        since = len(self.pm.logs_text())
        self.pm.send_signal(signal.SIGHUP)
        seen = wait_for(lambda: needle in self.pm.logs_text()[since:] or not self.pm.alive(),
                        timeout) and needle in self.pm.logs_text()[since:]
        if required:
            self.assertTrue(self.pm.alive(), "pinmeter died on SIGHUP (exit %s): no reload "
                            "handler?" % (self.pm.proc.returncode,))
            self.assertTrue(seen, "no log line containing %r after SIGHUP; log tail:\n%s"
                            % (needle, self.pm.logs_text()[since:][-1500:]))
        return seen

    def test_reload_raises_cap_and_adds_key(self):
        pid = self.pm.pid
        self.assertEqual(self.pm.balance(self.team.key)["total"], 5 * NANO)
        newkey_id = "h2"
        self.team.keys[newkey_id] = "pm-test-new-" + os.urandom(8).hex()
        self.team.cap = 7.5
        newteam = Team("hup3", 1.25, key_ids=["n1"])
        self.pm.set_teams([self.team, self.other, newteam])
        r = self.pm.chat(chat_body(SONNET), key=self.team.keys[newkey_id])
        self.assertEqual(r.status, 401, "new key valid before the reload")
        self.hup("reloaded")
        self.assertEqual(self.pm.balance(newteam.key)["total"], 1_250_000_000, "new team")
        r = self.pm.chat(chat_body(SONNET), key=newteam.key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.pm.pid, pid, "reload restarted the process")
        self.assertEqual(self.pm.balance(self.team.key)["total"], 7_500_000_000)
        r = self.pm.chat(chat_body(SONNET), key=self.team.keys[newkey_id])
        self.assertEqual(r.status, 200, r)
        row = self.row_of(self.pm, r)
        self.assertEqual(row["key_id"], newkey_id)
        r = self.pm.chat(chat_body(SONNET), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        self.check()

    def test_reload_refuses_broken_config(self):
        before = self.pm.balance(self.team.key)
        for broken in ("{not json", None):
            with self.subTest(config="invalid json" if broken else "cap -1"):
                if broken:
                    self.pm.write_config(text=broken)
                else:
                    cfg = json.loads(json.dumps(self.cfg0))
                    cfg["teams"][0]["cap"] = -1
                    self.pm.write_config(cfg)
                self.hup("reload refused")
                self.assertEqual(self.pm.balance(self.team.key), before, "old config not kept")
                r = self.pm.chat(chat_body(SONNET), key=self.team.key)
                self.assertEqual(r.status, 200, r)
                before = self.pm.wait_idle(self.team.key)
        self.pm.write_config(json.loads(json.dumps(self.cfg0)))
        self.check()

    def test_reload_rates_in_flight_keep_old(self):
        usage = {"prompt_tokens": 100, "completion_tokens": 50, "cached_tokens": 20}
        old = rate_nanos(SONNET)
        slow = chat_body(SONNET, max_tokens=100, mock={"delay_ms": 1500, "usage": usage})
        t = run_bg(self.pm.chat, slow, self.team.key, "/v0/llm/chat/completions", None, 10)
        self.assertTrue(wait_for(lambda: self.mock.chat_count() == 1, 5))
        new_rates = json.loads(json.dumps(RATES))
        for r in new_rates:
            if r["model_id"] == SONNET:
                r["input_usd_per_1m_tokens"] = 6.0
                r["output_usd_per_1m_tokens"] = 45.0
                r["cache_read_usd_per_1m_tokens"] = 0.9
        with open(self.pm.rates_file, "w") as f:
            json.dump(new_rates, f)
        reload_ms = int(time.time() * 1000)
        self.hup("reloaded")
        new = (6 * NANO, 45 * NANO, 900_000_000)
        fast = chat_body(SONNET, max_tokens=100, mock={"usage": usage})
        r2 = self.pm.chat(fast, key=self.team.key)
        self.assertEqual(r2.status, 200, r2)
        t.join(10)
        self.assertIsNone(t.error)
        r1 = t.result
        self.assertEqual(r1.status, 200, r1)

        def c(rates):
            i, o, k = rates
            return -(-((100 - 20) * i + 20 * k + 50 * o) // 10 ** 6)
        row1, row2 = self.row_of(self.pm, r1), self.row_of(self.pm, r2)
        self.assertEqual(row1["charged_nanos"], c(old), "admitted before the reload: old rates")
        self.assertEqual(row2["charged_nanos"], c(new), "admitted after the reload: new rates")
        self.assertEqual(row2["reserved_nanos"],
                         -(-(-(-body_len(fast) // 3) * new[0] + 100 * new[1]) // 10 ** 6))
        self.check(rates=lambda model, row: (new if model == SONNET and row and
                                             row["started_ms"] >= reload_ms else rate_nanos(model)))


# ====================================================================== ledger
class LedgerFaultTest(FaultTest):
    """Needs the test build (make build-test/pinmeter): while the file named by
    PINMETER_TEST_LEDGER_FAULT exists, every ledger write fails like a full disk."""

    @classmethod
    def setup_proxies(cls):
        if not os.path.exists(TEST_BIN):
            import unittest
            raise unittest.SkipTest("no test build at %s (make build-test/pinmeter): the ledger "
                                    "fault hook PINMETER_TEST_LEDGER_FAULT lives only there"
                                    % TEST_BIN)
        cls.fault = os.path.join(cls.tmp, "ledger-fault")
        cls.team = Team("lf", 20.0, key_ids=["f1"])
        cls.pm = cls.add_proxy([cls.team], name="ledgerfault", bin=TEST_BIN,
                               env={"PINMETER_TEST_LEDGER_FAULT": cls.fault})

    def tearDown(self):
        if os.path.exists(self.fault):
            os.unlink(self.fault)
        super().tearDown()

    def test_ledger_unwritable_fails_closed_and_loses_nothing(self):
        for _ in range(2):
            r = self.pm.chat(chat_body(SONNET), key=self.team.key)
            self.assertEqual(r.status, 200, r)
        before = self.pm.wait_rows(lambda rs: len(rs) == 2 and all(x["state"] == "settled" for x in rs))
        self.assertEqual(len(before), 2)
        usage = {"prompt_tokens": 64, "completion_tokens": 32, "cached_tokens": 8}
        slow = chat_body(SONNET, max_tokens=100, mock={"delay_ms": 1500, "usage": usage})
        t = run_bg(self.pm.chat, slow, self.team.key, "/v0/llm/chat/completions", None, 10)
        self.assertTrue(wait_for(lambda: self.mock.chat_count() == 3, 5), "slow request not upstream")
        # Its begin is durable in the journal before it goes upstream; the
        # writer makes it a row a moment later. Fail the disk only after that,
        # so the row below must stay exactly 'inflight' while it fails.
        self.assertTrue(wait_for(lambda: [x["state"] for x in self.pm.ledger_rows()
                                          if x["state"] != "settled"] == ["inflight"], 5),
                        "the slow request's begin never became a row")
        open(self.fault, "w").close()                       # the disk is now "full"
        upstream_before = self.mock.chat_count()
        refused = [self.pm.chat(chat_body(SONNET), key=self.team.key),
                   self.pm.chat(chat_body(HAIKU, max_tokens=10), key=self.team.key)]
        s = self.pm.stream(chat_body(SONNET, stream=True), key=self.team.key)
        sbody = s.resp.read()
        s.close()
        for r in refused:
            self.assertJSONError(r, 503, code="ledger_unavailable")
        h = http_request(self.pm.port, "GET", "/healthz")
        self.assertEqual(h.status, 503, "/healthz must say the ledger is failing: %r" % h)
        self.assertEqual(s.status, 503, sbody)
        self.assertEqual(json.loads(sbody)["error"]["code"], "ledger_unavailable")
        self.assertEqual(self.mock.chat_count(), upstream_before,
                         "a request went upstream while the ledger could not record it")
        t.join(10)
        self.assertIsNone(t.error)
        self.assertEqual(t.result.status, 200, t.result)
        rid = t.result.header("x-pinmeter-request-id")
        time.sleep(0.3)
        row = [x for x in self.pm.ledger_rows() if x["id"] == rid]
        self.assertEqual([x["state"] for x in row], ["inflight"],
                         "the completion was recorded while the ledger was failing?")
        os.unlink(self.fault)                               # space again
        row = self.pm.row(req_id=rid, timeout=8)
        self.assertIsNotNone(row)
        self.assertEqual(row["state"], "settled", "admitted request not settled once writable")
        self.assertEqual(row["charged_nanos"], cost(SONNET, 64, 32, 8))
        after = {x["id"]: x for x in self.pm.ledger_rows()}
        for x in before:
            self.assertEqual(after.get(x["id"]), x, "a row recorded before the fault changed")
        r = self.pm.chat(chat_body(SONNET), key=self.team.key)
        self.assertEqual(r.status, 200, "not serving again after the ledger recovered: %r" % r)
        self.check()

"""Durability: SIGKILL mid-stream loses no record; a restart keeps the spend."""
import time

from harness import E2ETest, Team, SONNET, GPT4O, NANO, chat_body, body_len, reservation, cost


class KillTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("kill", 10.0, key_ids=["k1"])
        cls.pm = cls.add_proxy([cls.team], name="kill")

    def test_sigkill_mid_stream(self):
        r = self.pm.chat(chat_body(SONNET, max_tokens=100), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        c1 = cost(SONNET, 12, 7)
        self.pm.wait_idle(self.team.key)
        self.pm.wait_rows(lambda rs: len(rs) == 1 and rs[0]["state"] == "settled")
        body = chat_body(SONNET, stream=True, max_tokens=800,
                         mock={"chunks": 60, "chunk_delay_ms": 100})
        res = reservation(SONNET, body_len(body), 800)
        s = self.pm.stream(body, key=self.team.key)
        self.assertEqual(s.status, 200)
        self.assertIsNotNone(s.next_event())
        self.assertIsNotNone(s.next_event())
        self.pm.kill9()
        s.close()
        ups = self.mock.requests()
        self.assertEqual(len(ups), 2)
        self.pm.start()
        rows = self.pm.wait_rows(lambda rs: len(rs) == 2 and all(x["state"] != "inflight" for x in rs))
        self.assertEqual(len(rows), len(ups), "ledger rows != requests the upstream saw: %r" % rows)
        states = sorted(x["state"] for x in rows)
        self.assertEqual(states, ["interrupted", "settled"], rows)
        killed = [x for x in rows if x["state"] == "interrupted"][0]
        self.assertEqual(killed["reserved_nanos"], res)
        self.assertEqual(killed["charged_nanos"], res, "interrupted not charged at its reservation")
        self.assertEqual(killed["stream"], 1)
        self.assertEqual(killed["team"], "kill")
        b = self.pm.balance(self.team.key)
        self.assertEqual(b, {"total": 10 * NANO, "loaned": 0, "available": 10 * NANO - c1 - res})


class RestartTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("rst", 3.0, key_ids=["r1"])
        cls.pm = cls.add_proxy([cls.team], name="rst")

    def test_restart_keeps_spend(self):
        total = 0
        for i, (p, c, k) in enumerate([(100, 50, 0), (2000, 300, 1000), (7, 1, 0)]):
            body = chat_body(GPT4O if i % 2 else SONNET, max_tokens=400,
                             mock={"usage": {"prompt_tokens": p, "completion_tokens": c,
                                             "cached_tokens": k}})
            r = self.pm.chat(body, key=self.team.key)
            self.assertEqual(r.status, 200, r)
            total += cost(body["model"], p, c, k)
        s = self.pm.stream(chat_body(SONNET, stream=True), key=self.team.key)
        s.read_all()
        s.close()
        total += cost(SONNET, 12, 7)
        b = self.pm.wait_idle(self.team.key)
        self.assertEqual(b["available"], 3 * NANO - total)
        self.pm.wait_rows(lambda rs: len(rs) == 4 and all(x["state"] == "settled" for x in rs))
        t0 = time.time()
        self.pm.stop()
        self.assertLess(time.time() - t0, 4.5, "SIGTERM shutdown too slow")
        self.assertEqual(self.pm.proc.returncode, 0, "pinmeter exited non-zero on SIGTERM")
        self.pm.start()
        b = self.pm.balance(self.team.key)
        self.assertEqual(b, {"total": 3 * NANO, "loaned": 0, "available": 3 * NANO - total})
        rows = self.pm.ledger_rows()
        self.assertEqual(len(rows), 4)
        self.assertEqual(sum(x["charged_nanos"] for x in rows), total)


class DurableBeforeUpstreamTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("dur", 10.0, key_ids=["d1"])
        cls.pm = cls.add_proxy([cls.team], name="dur")

    def test_inflight_row_written_before_upstream(self):
        import threading
        body = chat_body(SONNET, max_tokens=300, mock={"delay_ms": 1200})
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", self.pm.chat(body, key=self.team.key)))
        t.start()
        deadline = time.time() + 3
        while self.mock.chat_count() == 0 and time.time() < deadline:
            time.sleep(0.01)
        self.assertEqual(self.mock.chat_count(), 1)
        # The upstream has the request: it must be recorded durably by now,
        # as its inflight row or as its line in the begin journal beside the
        # ledger (written before the request goes upstream; the row follows).
        rows = self.pm.ledger_rows()
        journal = []
        for seg in (0, 1):
            try:
                with open("%s-begins.%d" % (self.pm.ledger, seg)) as f:
                    journal += [ln.split("\t") for ln in f if ln.startswith("B\t")]
            except OSError:
                pass
        self.pm.kill9()
        t.join(10)
        if rows:
            self.assertEqual(len(rows), 1)
            self.assertEqual(rows[0]["state"], "inflight")
            self.assertEqual(rows[0]["reserved_nanos"], reservation(SONNET, body_len(body), 300))
        else:
            self.assertEqual(len(journal), 1, "no durable record while the request was upstream")
            self.assertEqual(int(journal[0][7]), reservation(SONNET, body_len(body), 300))
        self.pm.start()
        rows = self.pm.ledger_rows()
        self.assertEqual([x["state"] for x in rows], ["interrupted"])
        self.assertEqual(rows[0]["charged_nanos"], rows[0]["reserved_nanos"])
        b = self.pm.balance(self.team.key)
        self.assertEqual(b["available"], 10 * NANO - rows[0]["reserved_nanos"])

"""Every error status of the proxy, what reached the upstream, and that a
failed request holds nothing and is charged nothing afterwards."""
import json
import threading
import time

from harness import (E2ETest, Team, SONNET, HAIKU, GPT4O, NANO, chat_body, body_len,
                     reservation, cost, closed_port, to_nanos)


class ErrorsTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.err = Team("err", 5.0, key_ids=["e1"])
        cls.limited = Team("limited", 5.0, models=["anthropic/*"], key_ids=["l1"])
        cls.tiny = Team("tiny", 0.001, key_ids=["t1"])
        cls.hold = Team("hold", 0.02, key_ids=["h1"])
        cls.pm = cls.add_proxy([cls.err, cls.limited, cls.tiny, cls.hold])

    def assertClean(self, team, expect_upstream=None):
        """loaned back to 0, no failed request charged, upstream count."""
        b = self.pm.wait_idle(team.key)
        self.assertEqual(b["loaned"], 0, "loaned not released")
        rows = self.pm.wait_rows(lambda rs: all(r["state"] != "inflight" for r in rs),
                                 where="team = ?", args=(team.name,))
        for r in rows:
            if r["state"] != "settled":
                self.assertEqual(r["charged_nanos"], 0, "failed request charged: %r" % r)
        if expect_upstream is not None:
            self.assertEqual(self.mock.chat_count(), expect_upstream)
        return b

    def test_400_bad_json(self):
        r = self.pm.chat("{not json", key=self.err.key)
        self.assertError(r, 400)
        self.assertClean(self.err, expect_upstream=0)

    def test_400_missing_model(self):
        r = self.pm.chat({"messages": [{"role": "user", "content": "hi"}]}, key=self.err.key)
        self.assertError(r, 400)
        self.assertClean(self.err, expect_upstream=0)

    def test_400_model_not_priced(self):
        r = self.pm.chat(chat_body("nobody/unpriced-model"), key=self.err.key)
        self.assertError(r, 400, "model_not_priced")
        self.assertClean(self.err, expect_upstream=0)

    def test_401_missing_key(self):
        r = self.pm.chat(chat_body(SONNET))
        self.assertError(r, 401)
        self.assertEqual(self.mock.chat_count(), 0)

    def test_401_unknown_key(self):
        r = self.pm.chat(chat_body(SONNET), key="pm-not-a-real-key")
        self.assertError(r, 401)
        r = self.pm.chat(chat_body(SONNET), headers={"Authorization": "Basic Zm9vOmJhcg=="})
        self.assertError(r, 401)
        self.assertEqual(self.mock.chat_count(), 0)

    def test_403_model_not_allowed(self):
        r = self.pm.chat(chat_body(GPT4O), key=self.limited.key)
        self.assertError(r, 403)
        self.assertClean(self.limited, expect_upstream=0)
        r = self.pm.chat(chat_body(HAIKU), key=self.limited.key)
        self.assertEqual(r.status, 200, r)

    def test_402_insufficient_credits(self):
        body = chat_body(SONNET, max_tokens=1000)
        r = self.pm.chat(body, key=self.tiny.key)
        e = self.assertError(r, 402)
        req = reservation(SONNET, body_len(body), 1000)
        self.assertEqual(e.get("scope"), "team", e)
        self.assertEqual(e.get("team"), "tiny")
        self.assertEqual(to_nanos(e["cap"]), 1000000)
        self.assertEqual(to_nanos(e["spent"]), 0)
        self.assertEqual(to_nanos(e["loaned"]), 0)
        self.assertEqual(to_nanos(e["available"]), 1000000)
        self.assertEqual(to_nanos(e["required"]), req)
        self.assertIn("max_tokens", e["message"])
        self.assertIsNone(r.header("retry-after"), "Retry-After though no hold could free enough")
        self.assertClean(self.tiny, expect_upstream=0)
        # without max_tokens the reservation uses default_max_tokens (4096)
        body = chat_body(SONNET, max_tokens=None)
        r = self.pm.chat(body, key=self.tiny.key)
        e = self.assertError(r, 402)
        self.assertEqual(to_nanos(e["required"]), reservation(SONNET, body_len(body), 4096))
        self.assertEqual(self.mock.chat_count(), 0)
        b = self.pm.balance(self.tiny.key)
        self.assertEqual(b, {"total": 1000000, "loaned": 0, "available": 1000000})

    def test_402_retry_after_when_holds_would_free(self):
        cap = 20000000
        slow = chat_body(SONNET, max_tokens=1000, mock={"delay_ms": 1500})
        r_slow = reservation(SONNET, body_len(slow), 1000)
        second = chat_body(SONNET, max_tokens=400)
        r_second = reservation(SONNET, body_len(second), 400)
        self.assertTrue(cap - r_slow < r_second <= cap, (cap, r_slow, r_second))
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", self.pm.chat(slow, key=self.hold.key)))
        t.start()
        try:
            deadline = time.time() + 3
            while self.pm.balance(self.hold.key)["loaned"] == 0 and time.time() < deadline:
                time.sleep(0.02)
            b = self.pm.balance(self.hold.key)
            self.assertEqual(b["loaned"], r_slow)
            self.assertEqual(b["available"], cap - r_slow)
            r = self.pm.chat(second, key=self.hold.key)
            e = self.assertError(r, 402)
            self.assertEqual(e.get("scope"), "team")
            self.assertEqual(to_nanos(e["loaned"]), r_slow)
            self.assertEqual(to_nanos(e["required"]), r_second)
            ra = r.header("retry-after")
            self.assertIsNotNone(ra, "no Retry-After though the hold in flight would free enough")
            self.assertTrue(ra.strip().isdigit() and int(ra) >= 0, ra)
            # a request bigger than the whole cap gets no Retry-After
            big = chat_body(SONNET, max_tokens=5000)
            r = self.pm.chat(big, key=self.hold.key)
            self.assertError(r, 402)
            self.assertIsNone(r.header("retry-after"))
        finally:
            t.join(10)
        self.assertEqual(out["r"].status, 200)
        self.assertEqual(self.mock.chat_count(), 1)
        b = self.pm.wait_idle(self.hold.key)
        self.assertEqual(b["available"], cap - cost(SONNET, 12, 7))

    def test_404_unknown_path(self):
        r = self.pm.request("GET", "/v0/nothing/here", key=self.err.key)
        self.assertError(r, 404)
        r = self.pm.chat(chat_body(SONNET), key=self.err.key, path="/v0/llm/chat/completion")
        self.assertError(r, 404)
        self.assertEqual(self.mock.chat_count(), 0)

    def test_405_wrong_method(self):
        r = self.pm.request("GET", "/v0/llm/chat/completions", key=self.err.key)
        self.assertError(r, 405)
        r = self.pm.request("DELETE", "/v1/chat/completions", key=self.err.key)
        self.assertError(r, 405)
        self.assertEqual(self.mock.chat_count(), 0)

    def test_502_upstream_malformed(self):
        r = self.pm.chat(chat_body(SONNET, mock={"raw_body": "not json"}), key=self.err.key)
        self.assertError(r, 502)
        self.assertNotIn(b"not json", r.body)
        self.assertClean(self.err, expect_upstream=1)
        row = self.pm.row_for(r, upstream_id="")
        if row:
            self.assertEqual(row["charged_nanos"], 0)
            self.assertEqual(row["status"], 502)

    def _passthrough(self, status, error_body=None):
        mock = {"status": status}
        if error_body is not None:
            mock["error_body"] = error_body
        r = self.pm.chat(chat_body(SONNET, mock=mock), key=self.err.key)
        self.assertEqual(r.status, status, r)
        up = self.mock.requests()[-1]
        self.assertEqual(r.body.decode(), up["response_body"], "upstream error body altered")
        self.assertClean(self.err)
        row = self.pm.row_for(r, upstream_id=up["id"])
        if row is not None:
            self.assertEqual(row["status"], status)
            self.assertEqual(row["charged_nanos"], 0)
            self.assertNotEqual(row["state"], "settled")
        return r

    def test_upstream_500_passed_through(self):
        self._passthrough(500)
        self._passthrough(500, "upstream exploded (plain text)")

    def test_upstream_429_passed_through(self):
        self._passthrough(429, json.dumps({"error": {"message": "slow down", "type": "rate_limit",
                                                     "code": "rate_limited"}}))

    def test_upstream_400_passed_through(self):
        self._passthrough(400)

    def test_upstream_402_passed_through_charged_nothing(self):
        before = self.pm.balance(self.err.key)
        self._passthrough(402, json.dumps({"error": {"message": "out of credits",
                                                     "type": "insufficient_quota", "code": 402}}))
        b = self.pm.balance(self.err.key)
        self.assertEqual(b["available"], before["available"])
        # without account sync an upstream 402 marks nothing
        r = self.pm.chat(chat_body(SONNET), key=self.err.key)
        self.assertEqual(r.status, 200, r)
        self.pm.wait_idle(self.err.key)


class LimitsTest(E2ETest):
    """413 with a small max_body_bytes, 504 with timeout_s 1."""

    @classmethod
    def setup_proxies(cls):
        cls.team = Team("lim", 5.0, key_ids=["x1"])
        cls.pm = cls.add_proxy([cls.team], overrides={"max_body_bytes": 1024,
                                                       "upstream": {"timeout_s": 1}})

    def test_413_body_too_large(self):
        body = chat_body(SONNET, content="x" * 2000)
        self.assertGreater(body_len(body), 1024)
        r = self.pm.chat(body, key=self.team.key)
        self.assertError(r, 413)
        self.assertEqual(self.mock.chat_count(), 0)
        r = self.pm.chat(chat_body(SONNET, content="y" * 100), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.pm.wait_idle(self.team.key)["loaned"], 0)

    def test_504_upstream_timeout(self):
        before = self.pm.balance(self.team.key)
        t0 = time.time()
        r = self.pm.chat(chat_body(SONNET, mock={"delay_ms": 2500}), key=self.team.key)
        self.assertError(r, 504)
        self.assertLess(time.time() - t0, 2.4, "504 came later than the upstream's reply")
        b = self.pm.wait_idle(self.team.key)
        self.assertEqual(b, {**before, "loaned": 0})
        self.assertEqual(self.mock.chat_count(), 1)
        row = self.pm.row_for(r, upstream_id=self.mock.requests()[0]["id"])
        if row is not None:
            self.assertEqual(row["charged_nanos"], 0)
            self.assertEqual(row["status"], 504)
            self.assertEqual(row["state"], "failed")


class UnreachableTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("unr", 5.0, key_ids=["u1"])
        cls.pm = cls.add_proxy([cls.team], upstream="http://127.0.0.1:%d" % closed_port(),
                               overrides={"upstream": {"timeout_s": 3}})

    def test_502_upstream_unreachable(self):
        r = self.pm.chat(chat_body(SONNET), key=self.team.key)
        self.assertError(r, 502)
        s = self.pm.stream(chat_body(SONNET, stream=True), key=self.team.key)
        self.assertEqual(s.status, 502)
        s.close()
        b = self.pm.wait_idle(self.team.key)
        self.assertEqual(b, {"total": 5 * NANO, "loaned": 0, "available": 5 * NANO})
        rows = self.pm.wait_rows(lambda rs: len(rs) >= 2 and all(x["state"] != "inflight" for x in rs))
        for row in rows:
            self.assertEqual(row["charged_nanos"], 0)
            self.assertEqual(row["state"], "failed")
            self.assertEqual(row["status"], 502)


class MoreErrorsTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("more", 5.0, key_ids=["m1"])
        cls.pm = cls.add_proxy([cls.team], name="more", overrides={"upstream": {"timeout_s": 1}})

    def test_upstream_error_on_stream_passed_through(self):
        eb = json.dumps({"error": {"message": "overloaded", "type": "overloaded", "code": 529}})
        before = self.pm.balance(self.team.key)
        s = self.pm.stream(chat_body(SONNET, stream=True, mock={"status": 503, "error_body": eb}),
                           key=self.team.key)
        self.assertEqual(s.status, 503)
        data = s.resp.read()
        s.close()
        self.assertEqual(data.decode(), eb)
        b = self.pm.wait_idle(self.team.key)
        self.assertEqual(b, before)

    def test_stream_stall_past_timeout(self):
        before = self.pm.balance(self.team.key)
        t0 = time.time()
        s = self.pm.stream(chat_body(SONNET, stream=True, mock={
            "chunks": 5, "stall_after_chunks": 2, "stall_ms": 4000}), key=self.team.key)
        status = s.status
        events = s.read_all() if status == 200 else []
        s.close()
        self.assertLess(time.time() - t0, 3.9, "stalled stream not cut at timeout_s")
        self.assertIn(status, (200, 504))
        self.assertNotIn("[DONE]", events)
        up = self.mock.requests()[0]
        row = self.pm.row_for(s, upstream_id=up["id"])
        self.assertIsNotNone(row)
        self.assertIn(row["state"], ("estimated", "failed"), row)
        self.assertLessEqual(row["charged_nanos"], row["reserved_nanos"])
        b = self.pm.wait_idle(self.team.key)
        self.assertEqual(b["loaned"], 0)
        self.assertEqual(b["available"], before["available"] - row["charged_nanos"])

    def test_balance_unknown_key(self):
        r = self.pm.request("GET", "/v0/credits/balance", key="pm-unknown")
        self.assertError(r, 401)
        r = self.pm.request("GET", "/v0/credits/balance")
        self.assertError(r, 401)
        r = self.pm.request("POST", "/v0/credits/balance", key=self.team.key, body={})
        self.assertError(r, 405)

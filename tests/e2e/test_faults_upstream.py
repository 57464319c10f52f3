"""Upstream faults (issue 3): connection refused, resets, stalls, replies that
are not JSON or truncated, usage missing or impossible, SSE split at every
byte and over the line cap, gzip and chunked bodies, error statuses with and
without bodies. Each test asserts what the client gets and the ledger row's
state and charge, then runs the shared invariant checker."""
import json
import os
import time

from harness import (Team, SONNET, HAIKU, chat_body, body_len, reservation, cost,
                     closed_port, stream_raw, sse_data)
from invariants import FaultTest, est_prompt_tokens, est_completion_tokens

ERROR_STATUSES = (400, 401, 402, 429, 500, 503)


class UpstreamFaultsTest(FaultTest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("upf", 100.0, key_ids=["u1"])
        cls.pm = cls.add_proxy([cls.team], name="upf", overrides={"upstream": {"timeout_s": 10}})
        cls.rteam = Team("refused", 5.0, key_ids=["r1"])
        cls.refused = cls.add_proxy([cls.rteam], name="refused",
                                    upstream="http://127.0.0.1:%d" % closed_port(),
                                    overrides={"upstream": {"timeout_s": 3}})

    def check(self, proxies=None, **kw):
        return super().check(proxies or [self.pm], **kw)

    def estimate(self, model, body, content_bytes, deltas):
        return cost(model, est_prompt_tokens(body), est_completion_tokens(content_bytes, deltas))

    # ---------------------------------------------------------- unreachable
    def test_connection_refused(self):
        before = self.refused.balance(self.rteam.key)
        r = self.refused.chat(chat_body(SONNET), key=self.rteam.key)
        self.assertJSONError(r, 502, "upstream_unreachable")
        s = self.refused.stream(chat_body(SONNET, stream=True), key=self.rteam.key)
        self.assertEqual(s.status, 502)
        sbody = s.resp.read()
        s.close()
        self.assertEqual(json.loads(sbody)["error"]["type"], "upstream_unreachable")
        for resp in (r, s):
            row = self.row_of(self.refused, resp)
            self.assertEqual((row["state"], row["charged_nanos"], row["status"]), ("failed", 0, 502))
        b = self.refused.wait_idle(self.rteam.key)
        self.assertEqual(b, before, "a refused connection changed the balance")
        self.assertEqual(self.mock.chat_count(), 0)
        self.check([self.refused])

    # ---------------------------------------------------------- resets
    def test_reset_after_headers(self):
        r = self.pm.chat(chat_body(SONNET, mock={"reset_after_headers": True}), key=self.team.key)
        self.assertJSONError(r, 502, "upstream_error")
        up = self.only_record()
        row = self.row_of(self.pm, r)
        self.assertEqual((row["state"], row["charged_nanos"], row["status"]), ("failed", 0, 502))
        self.assertEqual(row["upstream_id"], up["id"])
        self.check()

    def test_reset_after_headers_stream(self):
        """SSE headers then RST, before any event: nothing was relayed, so the
        client must get a clear error (502 JSON) — or, if the proxy already
        committed its 200, a cut stream with no event and no [DONE]."""
        body = chat_body(SONNET, stream=True, mock={"reset_after_headers": True})
        status, hdrs, payload, ended = stream_raw(self.pm.port, body, self.team.key)
        row = self.row_of(self.pm, upstream_id=self.only_record()["id"])
        if status == 200:
            self.assertEqual(sse_data(payload), [], "events from a stream that sent none")
            self.assertFalse(ended, "the cut stream ended cleanly (terminating chunk sent)")
            self.assertEqual(row["state"], "estimated", row)
            self.assertEqual(row["charged_nanos"], self.estimate(SONNET, body, 0, 0))
        else:
            self.assertEqual(status, 502, payload)
            self.assertIn("error", json.loads(payload))
            self.assertEqual((row["state"], row["charged_nanos"]), ("failed", 0), row)
        self.check()

    def test_reset_mid_json_body(self):
        r = self.pm.chat(chat_body(SONNET, mock={"reset_mid_body": True}), key=self.team.key)
        self.assertJSONError(r, 502)
        self.assertNotIn(b"chatcmpl-", r.body, "part of the broken reply was relayed")
        row = self.row_of(self.pm, r)
        self.assertEqual((row["state"], row["charged_nanos"], row["status"]), ("failed", 0, 502))
        self.check()

    def test_reset_mid_stream(self):
        body = chat_body(SONNET, stream=True, max_tokens=200, stream_options={"include_usage": True},
                         mock={"chunks": 6, "reset_after_chunks": 2})
        status, hdrs, payload, ended = stream_raw(self.pm.port, body, self.team.key)
        self.assertEqual(status, 200)
        events = sse_data(payload)
        self.assertNotIn("[DONE]", events, "a cut stream must not end with [DONE]")
        self.assertFalse(ended, "a cut stream must not end cleanly (clients would take it as "
                         "complete)")
        self.assertEqual(len(events), 2, events)
        up = self.wait_record()
        self.assertEqual(up["content_deltas"], 2)
        self.assertEqual(events, up["events"])
        row = self.row_of(self.pm, upstream_id=up["id"])
        self.assertEqual(row["state"], "estimated", row)
        self.assertEqual(row["upstream_id"], up["id"])
        self.assertEqual(row["prompt_tokens"], est_prompt_tokens(body))
        self.assertEqual(row["completion_tokens"],
                         est_completion_tokens(up["content_bytes"], up["content_deltas"]))
        self.assertEqual(row["charged_nanos"],
                         self.estimate(SONNET, body, up["content_bytes"], up["content_deltas"]))
        self.check()

    # ---------------------------------------------------------- bad replies
    def test_reply_not_json(self):
        r = self.pm.chat(chat_body(SONNET, mock={"raw_body": "<html>502 Bad Gateway</html>"}),
                         key=self.team.key)
        self.assertJSONError(r, 502, "upstream_malformed")
        self.assertNotIn(b"<html>", r.body)
        row = self.row_of(self.pm, r)
        self.assertEqual((row["state"], row["charged_nanos"], row["status"]), ("failed", 0, 502))
        self.check()

    def test_truncated_json(self):
        r = self.pm.chat(chat_body(SONNET, mock={"truncate_body": True}), key=self.team.key)
        self.assertJSONError(r, 502, "upstream_malformed")
        row = self.row_of(self.pm, r)
        self.assertEqual((row["state"], row["charged_nanos"], row["status"]), ("failed", 0, 502))
        self.check()

    def test_json_without_usage(self):
        body = chat_body(HAIKU, max_tokens=300, mock={"no_usage": True, "content": "abcdefghij" * 4})
        r = self.pm.chat(body, key=self.team.key)
        self.assertEqual(r.status, 200, r)
        up = self.only_record()
        self.assertEqual(r.body.decode(), up["response_body"], "reply altered")
        row = self.row_of(self.pm, r)
        self.assertEqual(row["state"], "estimated", row)
        self.assertEqual((row["prompt_tokens"], row["completion_tokens"]),
                         (est_prompt_tokens(body), 14))       # ceil(40 / 3)
        self.assertEqual(row["charged_nanos"], self.estimate(HAIKU, body, 40, 0))
        self.assertLessEqual(row["charged_nanos"], reservation(HAIKU, body_len(body), 300))
        self.check()

    def _bad_usage(self, usage, stream=False):
        body = chat_body(SONNET, max_tokens=300, mock={"usage": usage})
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        res = reservation(SONNET, body_len(body), 300)
        before = self.pm.balance(self.team.key)
        if stream:
            s = self.pm.stream(body, key=self.team.key)
            self.assertEqual(s.status, 200)
            s.read_all()
            s.close()
            resp = s
        else:
            resp = self.pm.chat(body, key=self.team.key)
            self.assertJSONError(resp, 502, "upstream_malformed")
        row = self.row_of(self.pm, resp)
        self.assertEqual(row["state"], "estimated", "impossible usage %r: %r" % (usage, row))
        if stream:
            up = self.wait_record()
            self.assertIn(row["charged_nanos"],
                          (res, self.estimate(SONNET, body, up["content_bytes"], up["content_deltas"])))
        else:
            # README: impossible usage -> 502, charged at the reservation
            self.assertEqual(row["charged_nanos"], res, row)
        b = self.pm.wait_idle(self.team.key)
        self.assertEqual(b["available"], before["available"] - row["charged_nanos"])
        self.check()

    def test_negative_usage(self):
        self._bad_usage({"prompt_tokens": -50, "completion_tokens": 7, "cached_tokens": 0})

    def test_negative_completion_usage(self):
        self._bad_usage({"prompt_tokens": 10, "completion_tokens": -7, "cached_tokens": 0})

    def test_absurd_usage(self):
        self._bad_usage({"prompt_tokens": 12, "completion_tokens": 50_000_000, "cached_tokens": 0})

    def test_absurd_prompt_usage(self):
        self._bad_usage({"prompt_tokens": 10_000_001, "completion_tokens": 3, "cached_tokens": 0})

    def test_cached_above_prompt_usage(self):
        self._bad_usage({"prompt_tokens": 10, "completion_tokens": 3, "cached_tokens": 11})

    def test_fractional_usage(self):
        self._bad_usage({"prompt_tokens": 12.5, "completion_tokens": 7, "cached_tokens": 0})

    def test_absurd_usage_stream(self):
        self._bad_usage({"prompt_tokens": 12, "completion_tokens": 99_000_000, "cached_tokens": 0},
                        stream=True)

    def test_negative_usage_stream(self):
        self._bad_usage({"prompt_tokens": -1, "completion_tokens": 5, "cached_tokens": 0},
                        stream=True)

    # ---------------------------------------------------------- SSE framing
    def _byte_stream(self, include_usage):
        usage = {"prompt_tokens": 41, "completion_tokens": 23, "cached_tokens": 9}
        body = chat_body(SONNET, stream=True, max_tokens=300,
                         mock={"byte_per_send": True, "byte_delay_ms": 0.2, "chunks": 4,
                               "content": "split\r\nat every byte: \u00e9\u4e2d\U0001F600", "usage": usage})
        if include_usage:
            body["stream_options"] = {"include_usage": True}
        s = self.pm.stream(body, key=self.team.key, timeout=30)
        self.assertEqual(s.status, 200)
        events = s.read_all()
        s.close()
        up = self.wait_record()
        self.assertTrue(up["completed"])
        expect = up["events"] if include_usage else \
            [e for e in up["events"] if '"choices": []' not in e]
        self.assertEqual(events, expect, "events differ from the upstream's when split per byte")
        self.assertEqual(events[-1], "[DONE]")
        row = self.row_of(self.pm, s)
        self.assertEqual(row["state"], "settled", row)
        self.assertEqual(row["charged_nanos"], cost(SONNET, 41, 23, 9))
        self.check()

    def test_sse_one_byte_per_send_with_usage(self):
        self._byte_stream(True)

    def test_sse_one_byte_per_send_usage_stripped(self):
        self._byte_stream(False)

    def test_sse_line_over_cap(self):
        body = chat_body(SONNET, stream=True, max_tokens=200, stream_options={"include_usage": True},
                         mock={"chunks": 3, "long_line_bytes": 1024 * 1024 + 64})
        status, hdrs, payload, ended = stream_raw(self.pm.port, body, self.team.key, timeout=20)
        self.assertEqual(status, 200)
        events = sse_data(payload)
        self.assertFalse(ended, "a stream over the line cap must be cut, not ended cleanly")
        self.assertNotIn("[DONE]", events, "a stream over the line cap must be cut")
        self.assertTrue(all(len(e) < 1024 * 1024 for e in events), "the over-long line was relayed")
        self.assertEqual(len(events), 1, "only the event before the long line: %r" %
                         [e[:80] for e in events])
        up = self.wait_record()
        row = self.row_of(self.pm, upstream_id=up["id"])
        self.assertEqual(row["state"], "estimated", row)
        first = json.loads(up["events"][0])["choices"][0]["delta"]["content"]
        self.assertEqual(row["charged_nanos"], self.estimate(SONNET, body, len(first.encode()), 1))
        # still serving, memory not held
        r = self.pm.chat(chat_body(SONNET), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        # the mock may have written its whole stream (usage included) into
        # socket buffers before the proxy cut it: that usage was never read
        self.check(lenient_ids=[up["id"]])

    def test_upstream_repeats_request_id(self):
        """An upstream that serves two requests under one id: both rows are
        kept and charged (the spend is real); the upstream id stays unique in
        the ledger (the repeat is marked)."""
        rid = "chatcmpl-repeat-" + os.urandom(6).hex()
        usage = {"prompt_tokens": 20, "completion_tokens": 9, "cached_tokens": 0}
        before = self.pm.balance(self.team.key)
        rs = [self.pm.chat(chat_body(SONNET, mock={"id": rid, "usage": usage}), key=self.team.key)
              for _ in range(2)]
        self.assertEqual([r.status for r in rs], [200, 200])
        rows = [self.row_of(self.pm, r) for r in rs]
        self.assertEqual([x["state"] for x in rows], ["settled", "settled"])
        self.assertEqual([x["charged_nanos"] for x in rows], [cost(SONNET, 20, 9)] * 2)
        ups = sorted(x["upstream_id"] for x in rows)
        self.assertEqual(ups[0], rid)
        self.assertTrue(ups[1].startswith(rid) and ups[1] != rid, ups)
        b = self.pm.wait_idle(self.team.key)
        self.assertEqual(b["available"], before["available"] - 2 * cost(SONNET, 20, 9))
        self.check()

    # ---------------------------------------------------------- encodings
    def test_gzip_body(self):
        usage = {"prompt_tokens": 30, "completion_tokens": 11, "cached_tokens": 4}
        r = self.pm.chat(chat_body(SONNET, mock={"gzip": True, "usage": usage}), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        up = self.only_record()
        self.assertNotEqual((r.header("content-encoding") or "").lower(), "gzip",
                            "relayed a decoded body labelled gzip")
        self.assertEqual(json.loads(r.body), json.loads(up["response_body"]),
                         "client did not get the (decoded) reply")
        row = self.row_of(self.pm, r)
        self.assertEqual(row["state"], "settled", row)
        self.assertEqual(row["charged_nanos"], cost(SONNET, 30, 11, 4))
        self.check()

    def test_chunked_nonstream_body(self):
        usage = {"prompt_tokens": 33, "completion_tokens": 12, "cached_tokens": 0}
        r = self.pm.chat(chat_body(HAIKU, mock={"chunked": True, "chunk_bytes": 5, "usage": usage}),
                         key=self.team.key)
        self.assertEqual(r.status, 200, r)
        up = self.only_record()
        self.assertEqual(r.body.decode(), up["response_body"])
        row = self.row_of(self.pm, r)
        self.assertEqual((row["state"], row["charged_nanos"]), ("settled", cost(HAIKU, 33, 12)))
        self.check()

    # ---------------------------------------------------------- statuses
    def test_error_statuses_with_body(self):
        for st in ERROR_STATUSES:
            with self.subTest(status=st):
                self.mock.reset()
                eb = json.dumps({"error": {"message": "upstream says %d" % st, "type": "x",
                                           "code": st}})
                before = self.pm.balance(self.team.key)
                r = self.pm.chat(chat_body(SONNET, mock={"status": st, "error_body": eb}),
                                 key=self.team.key)
                self.assertEqual(r.status, st, r)
                self.assertEqual(r.body.decode(), eb, "upstream error body altered")
                row = self.row_of(self.pm, r)
                self.assertEqual((row["state"], row["charged_nanos"], row["status"]),
                                 ("failed", 0, st))
                self.assertEqual(self.pm.wait_idle(self.team.key), before)
                self.check()

    def test_error_statuses_without_body(self):
        """An upstream error with an empty body still gives the client its
        status and a JSON error it can parse."""
        for st in ERROR_STATUSES:
            with self.subTest(status=st):
                self.mock.reset()
                before = self.pm.balance(self.team.key)
                r = self.pm.chat(chat_body(SONNET, mock={"status": st, "empty_body": True}),
                                 key=self.team.key)
                self.assertEqual(r.status, st, r)
                self.assertJSONError(r, st)
                row = self.row_of(self.pm, r)
                self.assertEqual((row["state"], row["charged_nanos"]), ("failed", 0))
                self.assertEqual(self.pm.wait_idle(self.team.key), before)
                self.check()

    def test_error_status_non_json_body_passed_through(self):
        r = self.pm.chat(chat_body(SONNET, mock={"status": 503, "error_body": "<h1>down</h1>",
                                                 "error_ctype": "text/html"}), key=self.team.key)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.body, b"<h1>down</h1>")
        row = self.row_of(self.pm, r)
        self.assertEqual((row["state"], row["charged_nanos"]), ("failed", 0))
        self.check()

    def test_error_statuses_on_streams(self):
        for st in (402, 429, 500):
            with self.subTest(status=st):
                self.mock.reset()
                s = self.pm.stream(chat_body(SONNET, stream=True, mock={"status": st}),
                                   key=self.team.key)
                data = s.resp.read()
                s.close()
                self.assertEqual(s.status, st)
                self.assertIn("error", json.loads(data))
                row = self.row_of(self.pm, s)
                self.assertEqual((row["state"], row["charged_nanos"]), ("failed", 0))
                self.check()

    def test_upstream_402_passed_through_charged_nothing(self):
        before = self.pm.balance(self.team.key)
        eb = json.dumps({"error": {"message": "out of credits", "type": "insufficient_quota",
                                   "code": 402}})
        r = self.pm.chat(chat_body(SONNET, mock={"status": 402, "error_body": eb}), key=self.team.key)
        self.assertEqual(r.status, 402)
        self.assertEqual(r.body.decode(), eb)
        self.assertEqual(self.pm.wait_idle(self.team.key), before)
        r = self.pm.chat(chat_body(SONNET), key=self.team.key)   # no account sync: nothing marked
        self.assertEqual(r.status, 200, r)
        b = self.pm.wait_idle(self.team.key)
        self.assertEqual(b["available"], before["available"] - cost(SONNET, 12, 7))
        self.check()


class UpstreamStallTest(FaultTest):
    """Stalls against a proxy with upstream.timeout_s = 1."""
    TIMEOUT = 1

    @classmethod
    def setup_proxies(cls):
        cls.team = Team("stall", 20.0, key_ids=["s1"])
        cls.pm = cls.add_proxy([cls.team], name="stall",
                               overrides={"upstream": {"timeout_s": cls.TIMEOUT}})

    def _timed(self, fn):
        t0 = time.time()
        out = fn()
        took = time.time() - t0
        self.assertGreater(took, self.TIMEOUT - 0.2, "cut before timeout_s")
        self.assertLess(took, self.TIMEOUT + 1.5, "not cut at timeout_s (%.1fs)" % took)
        return out

    def _nonstream_504(self, mock):
        r = self._timed(lambda: self.pm.chat(chat_body(SONNET, mock=mock), key=self.team.key))
        self.assertJSONError(r, 504, "upstream_timeout")
        row = self.row_of(self.pm, r)
        self.assertEqual((row["state"], row["charged_nanos"], row["status"]), ("failed", 0, 504))
        self.check()
        return row

    def test_stall_before_headers(self):
        row = self._nonstream_504({"delay_ms": 5000})
        self.assertFalse(row["upstream_id"], "no header came, so no upstream id is known")

    def test_stall_after_headers(self):
        self._nonstream_504({"stall_after_headers_ms": 5000})

    def test_stall_mid_json_body(self):
        self._nonstream_504({"stall_mid_body_ms": 5000})

    def test_stall_before_headers_stream(self):
        s = self._timed(lambda: self.pm.stream(chat_body(SONNET, stream=True,
                                                         mock={"delay_ms": 5000}),
                                               key=self.team.key))
        data = s.resp.read()
        s.close()
        self.assertEqual(s.status, 504, data)
        self.assertEqual(json.loads(data)["error"]["type"], "upstream_timeout")
        row = self.row_of(self.pm, s)
        self.assertEqual((row["state"], row["charged_nanos"]), ("failed", 0))
        self.check()

    def test_stall_mid_stream(self):
        body = chat_body(SONNET, stream=True, max_tokens=100,
                         mock={"chunks": 4, "stall_after_chunks": 1, "stall_ms": 5000})

        status, hdrs, payload, ended = self._timed(
            lambda: stream_raw(self.pm.port, body, self.team.key))
        events = sse_data(payload)
        self.assertEqual(status, 200)
        self.assertEqual(len(events), 1)
        self.assertNotIn("[DONE]", events)
        self.assertFalse(ended, "a stream cut at the timeout must not end cleanly")
        up = self.mock.requests()[0]
        row = self.row_of(self.pm, upstream_id=up["id"])
        self.assertEqual(row["state"], "estimated")
        self.assertEqual(row["charged_nanos"],
                         cost(SONNET, est_prompt_tokens(body),
                              est_completion_tokens(up["content_bytes"], up["content_deltas"])))
        self.check()

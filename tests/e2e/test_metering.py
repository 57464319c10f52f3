"""Metered proxying: exact costs in the ledger, balance and report; keys;
streaming with and without include_usage; cached tokens; aliases."""
import json
import time

from harness import (E2ETest, Team, SONNET, HAIKU, GPT4O, FRACTIONAL, UPSTREAM_KEY, RATES,
                     chat_body, body_len, cost, reservation, fmt_credits, ceil_div,
                     parse_report_json, to_nanos, NANO)


class MeteringTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.solo = Team("solo", 1.0, models=["anthropic/*"], key_ids=["alice"])
        cls.streamer = Team("streamer", 2.0, models=["anthropic/*"], key_ids=["s1"])
        cls.streamer2 = Team("streamer2", 2.0, key_ids=["s2"])
        cls.cache = Team("cache", 3.0, key_ids=["c1"])
        cls.misc = Team("misc", 50.0, key_ids=["m1", "m2"])
        cls.pm = cls.add_proxy([cls.solo, cls.streamer, cls.streamer2, cls.cache, cls.misc])

    def test_nonstream_metered_exact(self):
        body = chat_body(SONNET, max_tokens=700,
                         mock={"usage": {"prompt_tokens": 1000, "completion_tokens": 500,
                                         "cached_tokens": 200}})
        r = self.pm.chat(body, key=self.solo.key)
        self.assertEqual(r.status, 200, r)
        reqs = self.mock.requests()
        self.assertEqual(len(reqs), 1)
        up = reqs[0]
        self.assertEqual(r.body.decode(), up["response_body"], "body differs from upstream's")
        self.assertTrue(r.header("x-pinmeter-request-id"), "no X-Pinmeter-Request-Id header")
        expected = cost(SONNET, 1000, 500, 200)
        self.assertEqual(expected, 9960000)
        row = self.pm.row_for(r)
        self.assertIsNotNone(row, "no ledger row for the request")
        self.assertEqual(row["state"], "settled", row)
        self.assertEqual((row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]),
                         (1000, 500, 200))
        self.assertEqual(row["charged_nanos"], expected)
        self.assertEqual(row["reserved_nanos"], reservation(SONNET, body_len(body), 700))
        self.assertEqual(row["status"], 200)
        self.assertEqual(row["team"], "solo")
        self.assertEqual(row["key_id"], "alice")
        self.assertEqual(row["model"], SONNET)
        self.assertEqual(row["stream"], 0)
        self.assertEqual(row["upstream_id"], up["id"])
        self.assertGreaterEqual(row["ended_ms"], row["started_ms"])
        self.assertGreaterEqual(row["latency_ms"], 0)
        b = self.pm.wait_idle(self.solo.key)
        self.assertEqual(b, {"total": NANO, "loaned": 0, "available": NANO - expected})
        # report
        p = self.pm.report("--by", "team")
        self.assertIn("0.009960000", p.stdout, "report lacks the 9-decimal figure")
        rep = parse_report_json(p.stdout)
        rows = [x for x in rep["rows"] if x.get("team") == "solo"]
        self.assertEqual(len(rows), 1, rep)
        self.assertEqual(rows[0]["requests"], 1)
        self.assertEqual((rows[0]["prompt_tokens"], rows[0]["completion_tokens"],
                          rows[0]["cached_tokens"]), (1000, 500, 200))
        self.assertEqual(to_nanos(rows[0]["credits"]), expected)
        self.assertIn("total", rep)
        self.assertGreaterEqual(to_nanos(rep["total"]["credits"]), expected)

    def test_upstream_connection_reused(self):
        """Sequential requests ride one kept-alive upstream connection: pinmeter
        skips curl's cache search only when it knows no connection is idle."""
        for i in range(8):
            r = self.pm.chat(chat_body(SONNET, max_tokens=10), key=self.misc.key)
            self.assertEqual(r.status, 200, r)
        ports = [q["peer_port"] for q in self.mock.requests()]
        self.assertEqual(len(ports), 8)
        # the first may find an older idle connection dead and open a new one;
        # each event loop has its own connections (the kernel spreads the
        # client's connections over the loops)
        self.assertLessEqual(len(set(ports[1:])), self.pm.workers(), ports)

    def test_upstream_closes_idle_connection(self):
        """The upstream closes a kept-alive connection while it sits idle (its
        keep-alive timeout), or answers "Connection: close": pinmeter keeps an
        idle connection's socket watched between requests, and the next
        request must still get a new connection and succeed."""
        for mock in ({"close_idle_ms": 100}, {"connection_close": True}):
            self.mock.reset()
            for i in range(4):
                r = self.pm.chat(chat_body(SONNET, max_tokens=10, mock=mock), key=self.misc.key)
                self.assertEqual(r.status, 200, (mock, i, r))
                time.sleep(0.3)     # the idle connection is closed meanwhile
            ports = [q["peer_port"] for q in self.mock.requests()]
            self.assertEqual(len(ports), 4)
            self.assertEqual(len(set(ports)), 4, (mock, ports))

    def test_team_key_never_upstream(self):
        r = self.pm.chat(chat_body(GPT4O), key=self.misc.keys["m1"])
        self.assertEqual(r.status, 200, r)
        s = self.pm.stream(chat_body(GPT4O, stream=True), key=self.misc.keys["m2"])
        self.assertEqual(s.status, 200)
        s.read_all()
        s.close()
        reqs = self.mock.requests()
        self.assertEqual(len(reqs), 2)
        for up in reqs:
            self.assertEqual(up["headers"].get("Authorization"), "Bearer " + UPSTREAM_KEY)
            blob = json.dumps(up)
            for k in self.misc.keys.values():
                self.assertNotIn(k, blob, "team key reached the upstream")
        for text in (r.body.decode(), json.dumps(r.headers), s.raw.decode(), json.dumps(s.headers)):
            self.assertNotIn(UPSTREAM_KEY, text, "upstream key reached the client")

    def _stream(self, team, include_usage):
        usage = {"prompt_tokens": 30, "completion_tokens": 20, "cached_tokens": 0}
        extra = {"stream_options": {"include_usage": True}} if include_usage else {}
        body = chat_body(SONNET, stream=True, max_tokens=300,
                         mock={"chunks": 4, "chunk_delay_ms": 20, "usage": usage,
                               "content": "one two three four"}, **extra)
        before = self.pm.balance(team.key)
        s = self.pm.stream(body, key=team.key)
        self.assertEqual(s.status, 200)
        self.assertIn("text/event-stream", s.headers.get("content-type", ""))
        events = s.read_all()
        s.close()
        reqs = self.mock.requests()
        self.assertEqual(len(reqs), 1)
        up = reqs[0]
        self.assertIs(up["body"]["stream_options"]["include_usage"], True,
                      "upstream request lacked stream_options.include_usage")
        self.assertTrue(up["usage_sent"])
        self.assertEqual(events[-1], "[DONE]")
        chunks = [json.loads(e) for e in events[:-1]]
        content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        self.assertEqual(content, "one two three four")
        self.assertTrue(all(c["id"] == up["id"] for c in chunks))
        usage_chunks = [c for c in chunks if c["choices"] == []]
        if include_usage:
            self.assertEqual(events, up["events"], "client events differ from upstream's")
            self.assertEqual(len(usage_chunks), 1)
            self.assertEqual(usage_chunks[0]["usage"]["completion_tokens"], 20)
        else:
            self.assertEqual(usage_chunks, [], "usage-only chunk passed to a client that did not ask")
            self.assertEqual(events, [e for e in up["events"] if '"choices": []' not in e])
        self.assertEqual(len([c for c in chunks if c["choices"] and
                              c["choices"][0]["delta"].get("content")]), 4)
        row = self.pm.row_for(s, upstream_id=up["id"])
        self.assertIsNotNone(row)
        expected = cost(SONNET, 30, 20)
        self.assertEqual(row["state"], "settled", row)
        self.assertEqual(row["stream"], 1)
        self.assertEqual((row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]),
                         (30, 20, 0))
        self.assertEqual(row["charged_nanos"], expected)
        self.assertEqual(row["upstream_id"], up["id"])
        b = self.pm.wait_idle(team.key)
        self.assertEqual(b["loaned"], 0)
        self.assertEqual(b["available"], before["available"] - expected)

    def test_stream_without_include_usage(self):
        self._stream(self.streamer, False)

    def test_stream_with_include_usage(self):
        self._stream(self.streamer2, True)

    def test_cached_tokens_priced_at_cache_read(self):
        before = self.pm.balance(self.cache.key)
        body = chat_body(HAIKU, max_tokens=200, mock={
            "usage": {"prompt_tokens": 2000, "completion_tokens": 100, "cached_tokens": 1500}})
        r = self.pm.chat(body, key=self.cache.key)
        self.assertEqual(r.status, 200, r)
        expected = cost(HAIKU, 2000, 100, 1500)
        self.assertEqual(expected, 862500)
        self.assertNotEqual(expected, cost(HAIKU, 2000, 100, 0))
        row = self.pm.row_for(r, upstream_id=json.loads(r.body)["id"])
        self.assertEqual(row["cached_tokens"], 1500)
        self.assertEqual(row["charged_nanos"], expected)
        # fractional nanos per token: the cost rounds up once, at the end
        body = chat_body(FRACTIONAL, max_tokens=10, mock={
            "usage": {"prompt_tokens": 13, "completion_tokens": 3, "cached_tokens": 1}})
        r2 = self.pm.chat(body, key=self.cache.key)
        self.assertEqual(r2.status, 200, r2)
        row2 = self.pm.row_for(r2, upstream_id=json.loads(r2.body)["id"])
        self.assertEqual(cost(FRACTIONAL, 13, 3, 1), 32)   # 31.8 rounded up
        self.assertEqual(row2["charged_nanos"], 32)
        b = self.pm.wait_idle(self.cache.key)
        self.assertEqual(b["available"], before["available"] - expected - 32)

    def test_max_completion_tokens_and_default_in_reservation(self):
        body = chat_body(GPT4O, max_tokens=None, max_completion_tokens=321)
        r = self.pm.chat(body, key=self.misc.key)
        self.assertEqual(r.status, 200, r)
        row = self.pm.row_for(r, upstream_id=json.loads(r.body)["id"])
        self.assertEqual(row["reserved_nanos"], reservation(GPT4O, body_len(body), 321))
        body = chat_body(GPT4O, max_tokens=None)
        r = self.pm.chat(body, key=self.misc.key)
        self.assertEqual(r.status, 200, r)
        row = self.pm.row_for(r, upstream_id=json.loads(r.body)["id"])
        self.assertEqual(row["reserved_nanos"], reservation(GPT4O, body_len(body), 4096))
        self.assertEqual(row["charged_nanos"], cost(GPT4O, 12, 7))

    def test_v1_alias(self):
        before = self.pm.balance(self.misc.key)
        r = self.pm.chat(chat_body(GPT4O), key=self.misc.key, path="/v1/chat/completions")
        self.assertEqual(r.status, 200, r)
        reqs = self.mock.requests()
        self.assertEqual(len(reqs), 1)
        self.assertEqual(reqs[0]["path"], "/v0/llm/chat/completions")
        self.assertEqual(r.body.decode(), reqs[0]["response_body"])
        b = self.pm.wait_idle(self.misc.key)
        self.assertEqual(b["available"], before["available"] - cost(GPT4O, 12, 7))

    def test_models_passthrough(self):
        r = self.pm.request("GET", "/v0/llm/models")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(json.loads(r.body), RATES)
        self.assertEqual(self.mock.stats()["models"], 1)

    def test_healthz(self):
        r = self.pm.request("GET", "/healthz")
        self.assertEqual(r.status, 200, r)

    def test_no_usage_is_estimated(self):
        body = chat_body(SONNET, max_tokens=300, mock={"no_usage": True, "content": "abcdefghi"})
        r = self.pm.chat(body, key=self.misc.key)
        self.assertEqual(r.status, 200, r)
        row = self.pm.row_for(r, upstream_id=json.loads(r.body)["id"])
        self.assertEqual(row["state"], "estimated", row)
        est_prompt = ceil_div(body_len(body), 3)
        self.assertGreaterEqual(row["charged_nanos"], cost(SONNET, est_prompt, 1))
        self.assertLessEqual(row["charged_nanos"], row["reserved_nanos"])
        self.pm.wait_idle(self.misc.key)

    def test_stream_cut_is_estimated(self):
        body = chat_body(SONNET, stream=True, max_tokens=300,
                         mock={"chunks": 6, "close_after_chunks": 2, "content": "aaabbbcccdddeeefff"})
        s = self.pm.stream(body, key=self.misc.key)
        self.assertEqual(s.status, 200)
        try:
            events = s.read_all()
        except OSError:
            events = []
        s.close()
        self.assertNotIn("[DONE]", events)
        up = self.mock.requests()[0]
        row = self.pm.row_for(s, upstream_id=up["id"])
        self.assertIsNotNone(row)
        self.assertEqual(row["state"], "estimated", row)
        # prompt estimate + completion counted from the 2 deltas seen ("aaabbb": 6 bytes)
        est_prompt = ceil_div(body_len(body), 3)
        self.assertEqual(row["charged_nanos"], cost(SONNET, est_prompt, max(2, ceil_div(6, 3))),
                         "estimate != ceil(bytes/3) prompt + max(deltas, ceil(bytes/3)) completion")
        b = self.pm.wait_idle(self.misc.key)
        self.assertEqual(b["loaned"], 0)

    def test_client_gone_mid_stream_is_estimated(self):
        body = chat_body(SONNET, stream=True, max_tokens=300,
                         mock={"chunks": 30, "chunk_delay_ms": 100})
        s = self.pm.stream(body, key=self.misc.key)
        self.assertEqual(s.status, 200)
        s.next_event()
        s.next_event()
        s.close()
        up = self.mock.requests()[0]
        row = self.pm.row_for(s, upstream_id=up["id"], timeout=8)
        self.assertIsNotNone(row, "no settled row after the client went away")
        self.assertEqual(row["state"], "estimated", row)
        self.assertGreater(row["charged_nanos"], 0)
        self.assertLessEqual(row["charged_nanos"], row["reserved_nanos"])
        b = self.pm.wait_idle(self.misc.key)
        self.assertEqual(b["loaned"], 0)


class PassthroughTest(E2ETest):
    CLIENT_KEY = "pinata-client-key-0123456789abcdef"

    @classmethod
    def setup_proxies(cls):
        cls.pm = cls.add_proxy([], name="pt")

    def tearDown(self):
        super().tearDown()
        self.assertNotIn(self.CLIENT_KEY, self.pm.logs_text(), "client key in the log")

    def test_passthrough_forwards_client_key(self):
        from harness import passthrough_key_id
        body = chat_body(GPT4O, mock={"usage": {"prompt_tokens": 40, "completion_tokens": 10,
                                                "cached_tokens": 0}})
        r = self.pm.chat(body, key=self.CLIENT_KEY)
        self.assertEqual(r.status, 200, r)
        s = self.pm.stream(chat_body(GPT4O, stream=True), key=self.CLIENT_KEY)
        self.assertEqual(s.status, 200)
        ev = s.read_all()
        s.close()
        self.assertEqual(ev[-1], "[DONE]")
        reqs = self.mock.requests()
        self.assertEqual(len(reqs), 2)
        for up in reqs:
            self.assertEqual(up["headers"].get("Authorization"), "Bearer " + self.CLIENT_KEY)
        row = self.pm.row_for(r, upstream_id=reqs[0]["id"])
        self.assertIsNotNone(row)
        self.assertEqual(row["team"], "default")
        self.assertEqual(row["key_id"], passthrough_key_id(self.CLIENT_KEY))
        self.assertEqual(row["charged_nanos"], cost(GPT4O, 40, 10))
        row2 = self.pm.row_for(s, upstream_id=reqs[1]["id"])
        self.assertEqual(row2["state"], "settled")
        self.assertEqual(row2["key_id"], passthrough_key_id(self.CLIENT_KEY))
        for rw in self.pm.ledger_rows():
            self.assertNotIn(self.CLIENT_KEY, json.dumps(rw))

    def test_passthrough_missing_key(self):
        r = self.pm.chat(chat_body(GPT4O))
        self.assertError(r, 401)
        self.assertEqual(self.mock.chat_count(), 0)


class PricingOptionsTest(E2ETest):
    """credits_per_usd scales every price; unknown_model as fallback prices."""

    @classmethod
    def setup_proxies(cls):
        cls.team = Team("fx", 5.0, key_ids=["f1"])
        cls.pm = cls.add_proxy([cls.team], name="fx", overrides={
            "credits_per_usd": 2.0,
            "unknown_model": {"input_usd_per_1m_tokens": 1.0, "output_usd_per_1m_tokens": 2.0,
                              "cache_read_usd_per_1m_tokens": 0.5}})

    def test_credits_per_usd_and_unknown_model_fallback(self):
        body = chat_body(SONNET, mock={"usage": {"prompt_tokens": 1000, "completion_tokens": 500,
                                                 "cached_tokens": 200}})
        r = self.pm.chat(body, key=self.team.key)
        self.assertEqual(r.status, 200, r)
        row = self.pm.row_for(r, upstream_id=json.loads(r.body)["id"])
        self.assertEqual(row["charged_nanos"], 2 * 9960000)
        body = chat_body("someone/unpriced", max_tokens=50, mock={
            "usage": {"prompt_tokens": 100, "completion_tokens": 40, "cached_tokens": 20}})
        r = self.pm.chat(body, key=self.team.key)
        self.assertEqual(r.status, 200, r)
        row = self.pm.row_for(r, upstream_id=json.loads(r.body)["id"])
        # (80*1 + 20*0.5 + 40*2) USD/1M * 2 credits/USD = 340 micro-credits
        self.assertEqual(row["charged_nanos"], 340000)
        # reservation at the fallback price too: ceil(len/3)*1*2 + 50*2*2 per 1M
        self.assertEqual(row["reserved_nanos"],
                         ceil_div(ceil_div(body_len(body), 3) * 2000000000 + 50 * 4000000000,
                                  1000000))
        b = self.pm.wait_idle(self.team.key)
        self.assertEqual(b["available"], 5 * NANO - 2 * 9960000 - 340000)


class RelayTest(E2ETest):
    """How bytes flow: SSE relayed as it arrives, long streams intact,
    client keep-alive, chunked uploads, drain on SIGTERM."""

    @classmethod
    def setup_proxies(cls):
        cls.team = Team("relay", 50.0, key_ids=["r1"])
        cls.pm = cls.add_proxy([cls.team], name="relay", overrides={"max_body_bytes": 65536})

    def test_stream_relayed_as_it_arrives(self):
        import time
        body = chat_body(SONNET, stream=True, mock={"chunks": 8, "chunk_delay_ms": 250})
        t0 = time.time()
        s = self.pm.stream(body, key=self.team.key)
        self.assertEqual(s.status, 200)
        first = s.next_event()
        t_first = time.time() - t0
        rest = s.read_all()
        t_all = time.time() - t0
        s.close()
        self.assertIsNotNone(first)
        self.assertEqual(rest[-1], "[DONE]")
        self.assertGreater(t_all, 1.6)
        self.assertLess(t_first, 1.0, "first event only after %.2fs: stream buffered" % t_first)
        self.pm.wait_idle(self.team.key)

    def test_long_stream_intact(self):
        content = "".join("word%04d " % i for i in range(2500))   # 22.5 KB
        body = chat_body(SONNET, stream=True, max_tokens=9000,
                         mock={"chunks": 400, "content": content,
                               "usage": {"prompt_tokens": 50, "completion_tokens": 7500,
                                         "cached_tokens": 0}})
        s = self.pm.stream(body, key=self.team.key)
        self.assertEqual(s.status, 200)
        events = s.read_all()
        s.close()
        up = self.mock.requests()[0]
        self.assertEqual(events, [e for e in up["events"] if '"choices": []' not in e])
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                       for e in events[:-1] if json.loads(e)["choices"])
        self.assertEqual(text, content)
        row = self.pm.row_for(s, upstream_id=up["id"])
        self.assertEqual(row["charged_nanos"], cost(SONNET, 50, 7500))

    def test_client_keepalive(self):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.pm.port, timeout=10)
        hdr = {"Authorization": "Bearer " + self.team.key, "Content-Type": "application/json"}
        try:
            for body in (chat_body(GPT4O), chat_body(GPT4O, stream=True), chat_body(GPT4O)):
                conn.request("POST", "/v0/llm/chat/completions", body=json.dumps(body), headers=hdr)
                r = conn.getresponse()
                data = r.read()
                self.assertEqual(r.status, 200, data)
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
        finally:
            conn.close()
        self.assertEqual(self.mock.chat_count(), 3)
        self.pm.wait_idle(self.team.key)

    def test_chunked_upload_over_limit(self):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.pm.port, timeout=10)
        hdr = {"Authorization": "Bearer " + self.team.key, "Content-Type": "application/json"}
        big = json.dumps(chat_body(SONNET, content="z" * 70000)).encode()
        try:
            conn.request("POST", "/v0/llm/chat/completions", body=iter([big[:30000], big[30000:]]),
                         headers=hdr, encode_chunked=True)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        self.assertEqual(r.status, 413, data)
        small = json.dumps(chat_body(SONNET, content="ok")).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.pm.port, timeout=10)
        try:
            conn.request("POST", "/v0/llm/chat/completions", body=iter([small[:10], small[10:]]),
                         headers=hdr, encode_chunked=True)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        self.assertEqual(r.status, 200, data)
        self.assertEqual(self.mock.chat_count(), 1)

    def test_nonstream_client_gone(self):
        import socket as so
        body = json.dumps(chat_body(SONNET, max_tokens=200, mock={"delay_ms": 600})).encode()
        c = so.create_connection(("127.0.0.1", self.pm.port), timeout=5)
        c.sendall(b"POST /v0/llm/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + self.team.key.encode() + b"\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        import time
        time.sleep(0.2)
        c.close()
        time.sleep(0.1)
        up = self.mock.requests()
        self.assertEqual(len(up), 1)
        b = self.pm.wait_idle(self.team.key, timeout=5)
        self.assertEqual(b["loaned"], 0)
        rows = self.pm.wait_rows(lambda rs: any(x["upstream_id"] == up[0]["id"] or
                                                x["state"] != "inflight" for x in rs[-1:]))
        row = rows[-1]
        self.assertIn(row["state"], ("settled", "estimated"), row)
        self.assertLessEqual(row["charged_nanos"], row["reserved_nanos"])
        self.assertGreater(row["charged_nanos"], 0)


class DrainTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("drain", 5.0, key_ids=["d1"])
        cls.pm = cls.add_proxy([cls.team], name="drain")

    def test_sigterm_drains_in_flight(self):
        import threading
        import time
        out = {}
        body = chat_body(SONNET, mock={"delay_ms": 800})
        t = threading.Thread(target=lambda: out.setdefault("r", self.pm.chat(body, key=self.team.key)))
        t.start()
        deadline = time.time() + 3
        while self.mock.chat_count() == 0 and time.time() < deadline:
            time.sleep(0.02)
        self.pm.proc.terminate()
        t.join(10)
        self.assertEqual(self.pm.proc.wait(timeout=5), 0)
        self.assertIn("r", out, "request in flight lost on SIGTERM")
        self.assertEqual(out["r"].status, 200, out["r"])
        rows = self.pm.ledger_rows()
        self.assertEqual([x["state"] for x in rows], ["settled"])
        self.assertEqual(rows[0]["charged_nanos"], cost(SONNET, 12, 7))
        self.pm.start()
        b = self.pm.balance(self.team.key)
        self.assertEqual(b["available"], 5 * NANO - cost(SONNET, 12, 7))


class ByteFlowTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("bytes", 50.0, key_ids=["b1", "b2"])
        cls.pm = cls.add_proxy([cls.team], name="bytes")

    def test_slow_client_big_stream(self):
        import time
        body = chat_body(SONNET, stream=True, max_tokens=4000,
                         mock={"chunks": 300, "content": "0123456789abcdef", "content_repeat": 40000})
        s = self.pm.stream(body, key=self.team.keys["b1"], timeout=30)
        self.assertEqual(s.status, 200)
        first = s.next_event()
        time.sleep(1.5)   # the client stalls; the proxy must hold back, not drop
        events = [first] + s.read_all()
        s.close()
        self.assertEqual(events[-1], "[DONE]")
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                       for e in events[:-1] if json.loads(e)["choices"])
        self.assertEqual(len(text), 16 * 40000)
        self.assertEqual(text, "0123456789abcdef" * 40000)
        up = self.mock.requests()[0]
        self.assertTrue(up["completed"])
        row = self.pm.row_for(s, upstream_id=up["id"])
        self.assertEqual(row["state"], "settled")

    def test_big_nonstream_reply(self):
        body = chat_body(SONNET, mock={"content": "xyz", "content_repeat": 300000})
        r = self.pm.chat(body, key=self.team.keys["b2"], timeout=30)
        self.assertEqual(r.status, 200)
        up = self.mock.requests()[0]
        self.assertEqual(r.body.decode(), up["response_body"])

    def test_utf8_body_counted_in_bytes(self):
        raw = json.dumps(chat_body(SONNET, content="é€😀" * 50, max_tokens=10),
                         ensure_ascii=False).encode()
        r = self.pm.chat(raw, key=self.team.key, headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        up = self.mock.requests()[0]
        self.assertEqual(up["body"]["messages"][0]["content"], "é€😀" * 50)
        row = self.pm.row_for(r, upstream_id=up["id"])
        self.assertEqual(row["reserved_nanos"], reservation(SONNET, len(raw), 10))

    def test_keys_share_team_cap(self):
        r = self.pm.chat(chat_body(SONNET), key=self.team.keys["b2"])
        self.assertEqual(r.status, 200, r)
        self.pm.wait_idle(self.team.key)
        b1 = self.pm.balance(self.team.keys["b1"])
        b2 = self.pm.balance(self.team.keys["b2"])
        self.assertEqual(b1, b2)
        self.assertLess(b1["available"], 50 * NANO)

"""Client faults (issue 3): disconnects before the answer, mid-stream and
after the last event; a slow reader (memory stays bounded: backpressure);
slowloris; more connections than max_connections; oversized headers; a body
over the limit; invalid UTF-8; deep nesting; a lying Content-Length; a
non-JSON content type. Each test ends with the shared invariant checker."""
import json
import os
import socket
import time

from harness import (Team, SONNET, HAIKU, chat_body, body_len, reservation, cost, collect,
                     raw_socket, raw_request, read_response, wait_peer_close, dechunk)
from invariants import FaultTest, est_prompt_tokens

CHAT = "/v0/llm/chat/completions"


def hdrs(key, ctype="application/json", **extra):
    h = {"Authorization": "Bearer " + key}
    if ctype is not None:
        h["Content-Type"] = ctype
    h.update(extra)
    return h


class ClientFaultsTest(FaultTest):
    CLIENT_TIMEOUT = 1
    MAX_CONNECTIONS = 4
    MAX_BODY = 64 * 1024

    @classmethod
    def setup_proxies(cls):
        cls.team = Team("cli", 100.0, key_ids=["c1"])
        cls.pm = cls.add_proxy([cls.team], name="cli")
        cls.lteam = Team("lim", 100.0, key_ids=["l1"])
        cls.lim = cls.add_proxy([cls.lteam], name="lim", overrides={
            "client_timeout_s": cls.CLIENT_TIMEOUT, "max_connections": cls.MAX_CONNECTIONS,
            "max_body_bytes": cls.MAX_BODY})

    def nothing_happened(self, proxy, team, rows_before):
        """No upstream request, no new ledger row, nothing loaned."""
        self.assertEqual(self.mock.chat_count(), 0, "the request reached the upstream")
        self.assertEqual(len(proxy.ledger_rows()), rows_before, "a ledger row appeared")
        self.assertEqual(proxy.balance(team.key)["loaned"], 0)

    # ---------------------------------------------------------- disconnects
    def test_disconnect_before_answer_nonstream(self):
        """A non-stream request whose client hangs up is still read to its end
        upstream and charged exactly (state settled)."""
        usage = {"prompt_tokens": 77, "completion_tokens": 31, "cached_tokens": 5}
        body = chat_body(SONNET, max_tokens=200, mock={"delay_ms": 700, "usage": usage})
        s = raw_socket(self.pm.port)
        s.sendall(raw_request("POST", CHAT, body, hdrs(self.team.key)))
        deadline = time.time() + 3
        while self.mock.chat_count() == 0 and time.time() < deadline:
            time.sleep(0.02)
        s.close()                                    # gone before the upstream answered
        up = self.wait_record(timeout=5)
        self.assertTrue(up["completed"], "the upstream reply was not read to its end")
        row = self.row_of(self.pm, upstream_id=up["id"])
        self.assertEqual(row["state"], "settled", row)
        self.assertEqual(row["charged_nanos"], cost(SONNET, 77, 31, 5))
        self.check()

    def test_disconnect_before_answer_stream(self):
        body = chat_body(SONNET, stream=True, max_tokens=200,
                         mock={"delay_ms": 700, "chunks": 20, "chunk_delay_ms": 20,
                               "client_may_abort": True})
        before = len(self.pm.ledger_rows())
        s = raw_socket(self.pm.port)
        s.sendall(raw_request("POST", CHAT, body, hdrs(self.team.key)))
        deadline = time.time() + 3
        while self.mock.chat_count() == 0 and time.time() < deadline:
            time.sleep(0.02)
        s.close()
        # its row (the begin may still be on its way from the journal)
        rows = self.pm.wait_rows(lambda rs: len(rs) > before and rs[-1]["state"] != "inflight")
        row = rows[-1]
        self.assertEqual(row["state"], "estimated", row)
        up = self.wait_record(timeout=5)
        self.assertFalse(up["completed"], "the upstream stream was not cut")
        # The proxy may notice the departed client only once the upstream
        # starts answering (a suspended connection is not polled): then it
        # has seen at most a few events of content.
        self.assertLessEqual(row["completion_tokens"], up["content_deltas"], row)
        self.assertEqual(row["charged_nanos"],
                         cost(SONNET, est_prompt_tokens(body), row["completion_tokens"]))
        self.check()

    def test_disconnect_mid_stream(self):
        body = chat_body(SONNET, stream=True, max_tokens=300, stream_options={"include_usage": True},
                         mock={"chunks": 60, "chunk_delay_ms": 25, "client_may_abort": True})
        res = reservation(SONNET, body_len(body), 300)
        s = self.pm.stream(body, key=self.team.key)
        self.assertEqual(s.status, 200)
        got = [s.next_event() for _ in range(3)]
        self.assertTrue(all(got), got)
        s.close()
        t0 = time.time()
        up = self.wait_record(lambda m: m["client_gone"] or m["completed"], timeout=5)
        self.assertTrue(up["client_gone"] and not up["completed"],
                        "the upstream transfer was not cut when the client left")
        self.assertLess(time.time() - t0, 1.0)
        row = self.row_of(self.pm, s)
        self.assertEqual(row["state"], "estimated", row)
        self.assertGreaterEqual(row["completion_tokens"], 3)
        self.assertLess(row["completion_tokens"], 60)
        self.assertEqual(row["charged_nanos"],
                         cost(SONNET, est_prompt_tokens(body), row["completion_tokens"]))
        self.assertGreaterEqual(row["charged_nanos"], cost(SONNET, est_prompt_tokens(body), 3))
        self.assertLessEqual(row["charged_nanos"], res)
        self.check()

    def test_disconnect_right_after_last_event(self):
        usage = {"prompt_tokens": 50, "completion_tokens": 20, "cached_tokens": 10}
        for include in (True, False):
            with self.subTest(include_usage=include):
                self.mock.reset()
                body = chat_body(SONNET, stream=True, max_tokens=200,
                                 stream_options={"include_usage": include},
                                 mock={"chunks": 5, "usage": usage})
                s = self.pm.stream(body, key=self.team.key)
                while True:
                    ev = s.next_event()
                    if ev is None or ev == "[DONE]":
                        break
                s.close()                    # right after [DONE], before the body's end
                self.assertEqual(ev, "[DONE]")
                row = self.row_of(self.pm, s)
                self.assertEqual(row["state"], "settled", row)
                self.assertEqual(row["charged_nanos"], cost(SONNET, 50, 20, 10))
                self.check()

    # ---------------------------------------------------------- slow reader
    def test_slow_reader_memory_bounded(self):
        """A 40 MiB stream read at 16 KiB per 50 ms for 3 s: the proxy's RSS
        must not grow by 32 MiB (it would if it buffered what the upstream
        sends as fast as it can: the stream is larger than the bound on
        purpose), and the upstream must be held back (not finished) while the
        client is slow. Then the rest is read fast; the charge is exact."""
        piece = "0123456789abcdef" * 4096            # 64 KiB per content chunk
        n = 640                                      # 40 MiB of content
        usage = {"prompt_tokens": 100, "completion_tokens": 90, "cached_tokens": 0}
        body = chat_body(SONNET, stream=True, max_tokens=100, stream_options={"include_usage": True},
                         mock={"content": piece, "content_repeat": n, "chunks": n, "usage": usage})
        warm = self.pm.chat(chat_body(SONNET, content="warm up " * 200), key=self.team.key)
        self.assertEqual(warm.status, 200)
        self.mock.reset()
        base = self.pm.rss_kb()
        sock = raw_socket(self.pm.port, timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(raw_request("POST", CHAT, body, hdrs(self.team.key)))
        raw = bytearray()
        peak = base
        t_end = time.time() + 3.0
        while time.time() < t_end:
            d = sock.recv(16 * 1024)
            self.assertTrue(d, "stream ended early")
            raw += d
            peak = max(peak, self.pm.rss_kb())
            time.sleep(0.05)
        up = self.mock.requests()[0]
        self.assertFalse(up["completed"], "the upstream was not paused: it sent all 40 MiB while "
                         "the client had read %d bytes" % len(raw))
        slow_read = len(raw)
        slow_peak = peak
        # the rest, fast
        sock.settimeout(20)
        deadline = time.time() + 30
        i = 0
        while time.time() < deadline:
            d = sock.recv(1 << 20)
            if not d:
                break
            raw += d
            if raw.endswith(b"\r\n0\r\n\r\n"):
                break
            i += 1
            if i % 16 == 0:
                peak = max(peak, self.pm.rss_kb())   # informative only (allocator, ASan quarantine)
        sock.close()
        collect(bytes(raw[:65536]))
        collect(bytes(raw[-65536:]))
        # The bound applies while the client is slow: that is when a proxy
        # without backpressure would have buffered the whole 40 MiB.
        growth_kb = slow_peak - base
        if os.environ.get("PINMETER_E2E_VERBOSE"):
            print("\n    [slow reader] RSS %d KiB -> %d KiB while slow (%d KiB after the fast "
                  "read); read %d bytes slowly" % (base, slow_peak, peak, slow_read))
        self.assertLess(growth_kb, 32 * 1024, "RSS grew by %d KiB with a slow reader "
                        "(read %d bytes slowly)" % (growth_kb, slow_read))
        self.assertGreater(len(raw), 40 * 1024 * 1024)
        head, _, rest = bytes(raw).partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:100])
        payload, ended = dechunk(rest)
        self.assertTrue(ended, "stream did not end cleanly")
        self.assertTrue(payload.endswith(b"data: [DONE]\n\n"))
        up = self.wait_record(lambda m: m["completed"])
        row = self.row_of(self.pm, upstream_id=up["id"])
        self.assertEqual(row["state"], "settled", row)
        self.assertEqual(row["charged_nanos"], cost(SONNET, 100, 90))
        self.check()

    # ---------------------------------------------------------- slowloris
    def test_slowloris_headers_cut_off(self):
        rows_before = len(self.lim.ledger_rows())
        req = raw_request("POST", CHAT, chat_body(SONNET), hdrs(self.lteam.key))
        s = raw_socket(self.lim.port)
        t0 = time.time()
        closed = False
        sent = 0
        try:
            for b in req[:40]:                         # a byte at a time, pausing > timeout
                try:
                    s.sendall(bytes([b]))
                except OSError:
                    closed = True
                    break
                sent += 1
                closed, _ = wait_peer_close(s, self.CLIENT_TIMEOUT + 0.6)
                if closed:
                    break
        finally:
            s.close()
        self.assertTrue(closed, "a slowloris client was not cut off (%d bytes over %.1fs)"
                        % (sent, time.time() - t0))
        self.assertLessEqual(sent, 2, "cut off only after %d bytes" % sent)
        self.nothing_happened(self.lim, self.lteam, rows_before)
        self.check([self.lim])

    def test_slowloris_trickle_under_idle_timeout(self):
        """The classic slowloris sends a header byte just before each idle
        timeout would fire. An idle timeout alone never cuts it, so one
        client can hold a connection (and max_connections of them the whole
        proxy) forever. Expect it cut off within 5 x client_timeout_s."""
        rows_before = len(self.lim.ledger_rows())
        req = raw_request("POST", CHAT, chat_body(SONNET), hdrs(self.lteam.key))
        limit = 5 * self.CLIENT_TIMEOUT + 1
        s = raw_socket(self.lim.port)
        t0 = time.time()
        closed, sent = False, 0
        try:
            while time.time() - t0 < limit + 0.2 and sent < len(req) - 4:
                try:
                    s.sendall(req[sent:sent + 1])
                except OSError:
                    closed = True
                    break
                sent += 1
                closed, _ = wait_peer_close(s, 0.6 * self.CLIENT_TIMEOUT)
                if closed:
                    break
        finally:
            s.close()
        took = time.time() - t0
        self.assertTrue(closed and took <= limit,
                        "a client trickling header bytes every %.1fs held its connection for "
                        "%.1fs (%d bytes): no deadline for a request's headers"
                        % (0.6 * self.CLIENT_TIMEOUT, took, sent))
        self.nothing_happened(self.lim, self.lteam, rows_before)
        self.check([self.lim])

    def test_slow_body_holds_no_reservation(self):
        """Full headers with a valid key, then the body a byte at a time with
        pauses over client_timeout_s: cut off, and it never held a reservation."""
        rows_before = len(self.lim.ledger_rows())
        body = json.dumps(chat_body(SONNET, max_tokens=100)).encode()
        s = raw_socket(self.lim.port)
        try:
            s.sendall(raw_request("POST", CHAT, b"", hdrs(self.lteam.key),
                                  content_length=len(body)))
            s.sendall(body[:1])
            self.assertEqual(self.lim.balance(self.lteam.key)["loaned"], 0)
            closed, data = wait_peer_close(s, self.CLIENT_TIMEOUT + 1.5)
        finally:
            s.close()
        self.assertTrue(closed, "connection with a stalled body not closed")
        self.assertFalse(data.startswith(b"HTTP/1.1 200"), data[:100])
        self.nothing_happened(self.lim, self.lteam, rows_before)
        self.check([self.lim])

    # ---------------------------------------------------------- connection limit
    def test_max_connections(self):
        idle = []
        try:
            for _ in range(self.MAX_CONNECTIONS):
                idle.append(raw_socket(self.lim.port))
            time.sleep(0.1)
            t0 = time.time()
            r = self.lim.chat(chat_body(SONNET), key=self.lteam.key, timeout=5)
            self.assertLess(time.time() - t0, 2, "the extra connection hung")
            self.assertJSONError(r, 503, code="too_many_connections")
            self.assertEqual((r.header("connection") or "").lower(), "close")
            self.assertEqual(r.header("retry-after"), "1")
            self.assertEqual(self.mock.chat_count(), 0, "a refused request reached the upstream")
        finally:
            for s in idle:
                s.close()
        # once they are gone, requests are served again
        deadline = time.time() + 3
        while True:
            r = self.lim.chat(chat_body(SONNET), key=self.lteam.key, timeout=5)
            if r.status != 503 or time.time() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(r.status, 200, r)
        self.check([self.lim])

    # ---------------------------------------------------------- bad input
    def test_oversized_headers(self):
        rows_before = len(self.pm.ledger_rows())
        s = raw_socket(self.pm.port)
        try:
            s.sendall(raw_request("POST", CHAT, chat_body(SONNET),
                                  hdrs(self.team.key, **{"X-Big": "a" * 65536})))
            try:
                r = read_response(s)
                status = r.status
            except (OSError, Exception) as e:   # noqa: BLE001 - reported below
                status = repr(e)
        finally:
            s.close()
        self.assertIn(status, (400, 413, 414, 431), "64 KiB header: %r" % (status,))
        self.nothing_happened(self.pm, self.team, rows_before)
        self.check([self.pm])

    def test_8_kib_of_headers_are_accepted(self):
        # The per-connection pool (12 KiB) holds the request's headers: 8 KiB
        # of them (a long JWT, tracing headers) must still be served.
        r = self.pm.chat(chat_body(SONNET, max_tokens=5), key=self.team.key,
                         headers={"X-Trace": "t" * 4096, "X-Other": "o" * 4096})
        self.assertEqual(r.status, 200, r)
        self.check([self.pm])

    def test_body_over_limit(self):
        rows_before = len(self.lim.ledger_rows())
        big = chat_body(SONNET, content="x" * (self.MAX_BODY + 100))
        r = self.lim.chat(big, key=self.lteam.key)
        self.assertJSONError(r, 413, code="body_too_large")
        # the same without Content-Length (chunked upload)
        s = raw_socket(self.lim.port)
        try:
            data = json.dumps(big).encode()
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 8192]), data[i:i + 8192])
                              for i in range(0, len(data), 8192)) + b"0\r\n\r\n"
            s.sendall(raw_request("POST", CHAT, chunks, hdrs(self.lteam.key,
                                                             **{"Transfer-Encoding": "chunked"}),
                                  content_length=None))
            r2 = read_response(s)
        finally:
            s.close()
        self.assertJSONError(r2, 413, code="body_too_large")
        self.nothing_happened(self.lim, self.lteam, rows_before)
        self.check([self.lim])

    def test_invalid_utf8(self):
        rows_before = len(self.pm.ledger_rows())
        good = json.dumps(chat_body(SONNET, content="MARK")).encode()
        # invalid UTF-8 (bad bytes, truncated, surrogate, overlong), and raw
        # control characters inside a JSON string (JSON requires them escaped)
        for bad in (b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\xc0\xaf",
                    b"\x01", b"\x1f", b"\n"):
            with self.subTest(bytes=bad):
                r = self.pm.chat(good.replace(b"MARK", b"ok " + bad + b" ok"), key=self.team.key,
                                 headers={"Content-Type": "application/json"})
                self.assertJSONError(r, 400, code="invalid_request")
        self.nothing_happened(self.pm, self.team, rows_before)
        self.check([self.pm])

    def test_deeply_nested_json(self):
        """10,000 levels are refused fast (400) without hurting the process;
        so are 200 levels, which cJSON itself would accept (its own limit is
        1000): the proxy's depth limit (README: 64) is what refuses them."""
        rows_before = len(self.pm.ledger_rows())
        head = json.dumps(chat_body(SONNET))[:-1]
        for depth in (10000, 200):
            for nest in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
                with self.subTest(depth=depth, kind=nest[0]):
                    t0 = time.time()
                    r = self.pm.chat(head + ', "x": ' + nest + "}", key=self.team.key,
                                     headers={"Content-Type": "application/json"})
                    self.assertLess(time.time() - t0, 1.0, "deep nesting not refused fast")
                    self.assertJSONError(r, 400, code="invalid_request")
        # nested inside a message too
        body = '{"model": "%s", "messages": [{"role": "user", "content": %s}]}' % (
            SONNET, "[" * 10000 + "]" * 10000)
        r = self.pm.chat(body, key=self.team.key, headers={"Content-Type": "application/json"})
        self.assertJSONError(r, 400)
        self.nothing_happened(self.pm, self.team, rows_before)
        # moderate nesting stays accepted
        r = self.pm.chat(head + ', "x": ' + "[" * 8 + "]" * 8 + "}", key=self.team.key,
                         headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        self.check([self.pm])

    def test_content_length_declares_more(self):
        rows_before = len(self.lim.ledger_rows())
        body = json.dumps(chat_body(SONNET)).encode()
        s = raw_socket(self.lim.port)
        t0 = time.time()
        try:
            s.sendall(raw_request("POST", CHAT, body, hdrs(self.lteam.key),
                                  content_length=len(body) + 100))
            closed, data = wait_peer_close(s, self.CLIENT_TIMEOUT + 2)
        finally:
            s.close()
        self.assertTrue(closed, "a body shorter than its Content-Length held the connection")
        self.assertLess(time.time() - t0, self.CLIENT_TIMEOUT + 1.5)
        self.assertFalse(data.startswith(b"HTTP/1.1 200"), data[:100])
        self.nothing_happened(self.lim, self.lteam, rows_before)
        self.check([self.lim])

    def test_content_length_declares_less(self):
        usage = {"prompt_tokens": 21, "completion_tokens": 8, "cached_tokens": 0}
        declared = json.dumps(chat_body(HAIKU, max_tokens=50, mock={"usage": usage})).encode()
        junk = b', "max_tokens": 999999, "model": "nobody/unpriced"}'
        s = raw_socket(self.pm.port)
        try:
            s.sendall(raw_request("POST", CHAT, declared + junk, hdrs(self.team.key),
                                  content_length=len(declared)))
            r = read_response(s)
        finally:
            s.close()
        self.assertEqual(r.status, 200, r)
        up = self.wait_record()
        self.assertEqual(up["body"]["model"], HAIKU)
        self.assertNotIn("999999", up["raw_body"], "bytes past Content-Length were parsed")
        row = self.row_of(self.pm, r)
        self.assertEqual(row["reserved_nanos"], reservation(HAIKU, len(declared), 50))
        self.assertEqual((row["state"], row["charged_nanos"]), ("settled", cost(HAIKU, 21, 8)))
        self.check([self.pm])

    def test_non_json_content_type(self):
        rows_before = len(self.pm.ledger_rows())
        for ct in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"):
            with self.subTest(content_type=ct):
                r = self.pm.chat(json.dumps(chat_body(SONNET)), key=self.team.key,
                                 headers={"Content-Type": ct})
                self.assertJSONError(r, 415, "invalid_request_error", "unsupported_media_type")
        self.nothing_happened(self.pm, self.team, rows_before)
        # no Content-Type at all, and JSON with parameters, stay accepted
        r = self.pm.chat(json.dumps(chat_body(SONNET)).encode(), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        r = self.pm.chat(json.dumps(chat_body(SONNET)), key=self.team.key,
                         headers={"Content-Type": "application/json; charset=utf-8"})
        self.assertEqual(r.status, 200, r)
        self.check([self.pm])

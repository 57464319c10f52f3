#!/usr/bin/env python3
"""Mock Pinata upstream for pinmeter's end-to-end tests (Python 3.11 stdlib).

    python3 tests/mock_pinata.py --port 0 [--rates FILE] [--jwt TOKEN]

Prints "READY <port>" (flushed) once listening. Endpoints:

  POST /v0/llm/chat/completions   OpenAI-style chat completion (plain or SSE).
  GET  /v0/llm/models             the rates array from --rates.
  GET  /v0/credits/balance        {"total","loaned","available"} (Bearer --jwt).
  GET  /__mock/requests           recorded chat requests (JSON list).
  POST /__mock/reset              clears the record.
  POST /__mock/balance            {"total","loaned","available"} or {"status": N}.
  GET  /__mock/stats              counters; "inflight" / "peak_inflight": chat
                                  requests being handled now / at most at once
                                  since the start or the last reset.

A chat request's behaviour is driven by an optional "mock" object in its body:
  usage {prompt_tokens, completion_tokens, cached_tokens}  (default 12/7/0)
  status, error_body      reply with this status and body (no usage)
  delay_ms                sleep before sending headers
  raw_body                reply 200 with this exact text
  no_usage                omit usage
  content                 assistant text (default "Hello from mock")
  content_repeat          the content is repeated this many times (big replies)
  chunks, chunk_delay_ms  stream: number of content chunks (default 3), pacing
  stall_after_chunks, stall_ms   stream: send N chunks, hang stall_ms, close
  close_after_chunks      stream: send N chunks, then drop the connection
  close_idle_ms           non-stream: after the reply, keep the connection idle
                          this long, then close it (an upstream keep-alive timeout)
  connection_close        non-stream: the reply says "Connection: close"
Misbehaviours (fault injection):
  reset_after_headers     send the status line and headers (full Content-Length,
                          or SSE headers when streaming), then RST (SO_LINGER 0)
  reset_mid_body          non-stream: headers with Content-Length N, N/2 body
                          bytes, then RST
  reset_after_chunks      stream: send N content events, then RST
  stall_after_headers_ms  send headers, then send nothing for this long, then close
  stall_mid_body_ms       non-stream: headers + half the body, then stall, close
  truncate_body           non-stream: the JSON reply cut in half, with a
                          Content-Length matching the cut body
  gzip                    non-stream: body gzip-encoded, Content-Encoding: gzip
  chunked                 non-stream: body sent with Transfer-Encoding: chunked
                          in small pieces (chunk_bytes, default 7)
  byte_per_send           stream: every byte of the body in its own chunk and
                          its own send() (TCP_NODELAY; byte_delay_ms, default 0.3)
  long_line_bytes         stream: after the first event, one event whose data
                          line is this many bytes long (then the rest)
  id                      serve this id (x-request-id and "id") instead of a fresh one
  empty_body              with status: reply with an empty body
  error_ctype             with status: Content-Type of the error body
  (usage may carry any numbers, e.g. negative or absurd: sent as given)
Each record has: id served (also the x-request-id header), status, usage
(the usage object sent, or null), usage_sent, completed (everything was
written), client_gone (a write failed), fault (the misbehaviour, if any),
content_bytes / content_deltas (generated text sent), events (SSE data,
kept only while small).
When "chunks" exceeds the content length, the content is repeated until it
has at least that many characters (each chunk carries at least one).
"""
import argparse
import gzip
import json
import os
import socket
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_CONTENT = "Hello from mock"
DEFAULT_USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "cached_tokens": 0}
MAX_BODY = 64 * 1024 * 1024


class State:
    def __init__(self, rates_text, jwt):
        self.lock = threading.Lock()
        self.rates_text = rates_text
        self.jwt = jwt
        self.requests = []
        self.balance = {"total": 100.0, "loaned": 0.0, "available": 100.0}
        self.balance_status = 200
        self.stats = {"chat": 0, "models": 0, "balance": 0, "balance_denied": 0,
                      "inflight": 0, "peak_inflight": 0}
        self.seq = 0

    def record(self, rec):
        with self.lock:
            self.seq += 1
            rec["seq"] = self.seq
            self.requests.append(rec)
            self.stats["chat"] += 1

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.requests))


def split_content(content, n):
    if n <= 0:
        return []
    if not content:
        content = DEFAULT_CONTENT
    while len(content) < n:
        content = content + content
    size = len(content)
    return [content[i * size // n:(i + 1) * size // n] for i in range(n)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MockPinata/1.0"
    sys_version = ""

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):  # quiet
        pass

    @property
    def st(self):
        return self.server.state

    # ---- helpers -------------------------------------------------------
    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                out += self.rfile.read(size)
                self.rfile.readline(3)
                if len(out) > MAX_BODY:
                    break
            return bytes(out)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(min(n, MAX_BODY)) if n > 0 else b""

    def send_bytes(self, status, body, ctype="application/json", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def send_json(self, status, obj, extra=None):
        self.send_bytes(status, json.dumps(obj).encode(), extra=extra)

    def bearer(self):
        auth = self.headers.get("Authorization") or ""
        if auth[:7].lower() == "bearer " and auth[7:].strip():
            return auth[7:].strip()
        return None

    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
        self.wfile.flush()

    def drop_connection(self):
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ---- routes --------------------------------------------------------
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/v0/llm/models":
            with self.st.lock:
                self.st.stats["models"] += 1
            self.send_bytes(200, self.st.rates_text.encode())
        elif path == "/v0/credits/balance":
            with self.st.lock:
                self.st.stats["balance"] += 1
                ok = self.bearer() == self.st.jwt
                status = self.st.balance_status
                bal = dict(self.st.balance)
                if not ok:
                    self.st.stats["balance_denied"] += 1
            if not ok:
                self.send_json(401, {"error": {"message": "invalid jwt", "type": "unauthorized", "code": 401}})
            elif status != 200:
                self.send_json(status, {"error": {"message": "balance unavailable", "type": "server_error", "code": status}})
            else:
                self.send_json(200, bal)
        elif path == "/__mock/requests":
            self.send_json(200, self.st.snapshot())
        elif path == "/__mock/stats":
            with self.st.lock:
                s = dict(self.st.stats)
                s["balance_state"] = dict(self.st.balance)
                s["balance_status"] = self.st.balance_status
            self.send_json(200, s)
        else:
            self.send_json(404, {"error": {"message": "not found", "type": "not_found", "code": 404}})

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        raw = self.read_body()
        if path == "/v0/llm/chat/completions":
            st = self.st.stats
            with self.st.lock:
                st["inflight"] += 1
                st["peak_inflight"] = max(st["peak_inflight"], st["inflight"])
            try:
                self.chat(raw)
            finally:
                with self.st.lock:
                    st["inflight"] -= 1
        elif path == "/__mock/reset":
            with self.st.lock:
                self.st.requests.clear()
                self.st.stats.update({"chat": 0, "models": 0, "balance": 0, "balance_denied": 0,
                                      "peak_inflight": self.st.stats["inflight"]})
            self.send_json(200, {"ok": True})
        elif path == "/__mock/balance":
            obj = json.loads(raw or b"{}")
            with self.st.lock:
                if "status" in obj:
                    self.st.balance_status = int(obj["status"])
                else:
                    self.st.balance_status = 200
                for k in ("total", "loaned", "available"):
                    if k in obj:
                        self.st.balance[k] = obj[k]
            self.send_json(200, {"ok": True})
        else:
            self.send_json(404, {"error": {"message": "not found", "type": "not_found", "code": 404}})

    # ---- faults ---------------------------------------------------------
    def reset_connection(self):
        """Aborts the TCP connection with an RST (SO_LINGER 0, then close).
        The socket is detached first so that later writes fail cleanly and
        nothing closes a reused descriptor."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            fd = self.connection.detach()
            if fd >= 0:
                os.close(fd)
        except OSError:
            pass

    def nodelay(self):
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def raw_write(self, data):
        self.wfile.write(data)
        self.wfile.flush()

    # ---- chat completions ---------------------------------------------
    def chat(self, raw):
        rec = {
            "peer_port": self.client_address[1],   # which upstream connection carried it
            "path": self.path,
            "method": "POST",
            "headers": {k: v for k, v in self.headers.items()},
            "raw_body": raw.decode("utf-8", "replace"),
            "body": None,
            "time": time.time(),
            "key": self.bearer(),
            "id": None,
            "usage_sent": False,
            "usage": None,
            "status": None,
            "events": [],
            "events_truncated": False,
            "content_bytes": 0,
            "content_deltas": 0,
            "response_body": None,
            "completed": False,
            "client_gone": False,
            "fault": None,
        }
        self.st.record(rec)
        if rec["key"] is None:
            rec["status"] = 401
            self.send_json(401, {"error": {"message": "missing or invalid API key", "type": "unauthorized", "code": 401}})
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            rec["status"] = 400
            self.send_json(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error", "code": 400}})
            return
        rec["body"] = body
        mock = body.get("mock") or {}
        model = body.get("model", "unknown")
        rid = str(mock.get("id") or "chatcmpl-" + uuid.uuid4().hex)
        rec["id"] = rid
        for f in FAULTS:
            if f in mock:
                rec["fault"] = f
                break
        try:
            if mock.get("delay_ms"):
                time.sleep(mock["delay_ms"] / 1000.0)
            if "status" in mock:
                self.error_reply(rec, mock, rid)
                return
            if "raw_body" in mock:
                rb = mock["raw_body"].encode()
                rec["status"] = 200
                rec["response_body"] = mock["raw_body"]
                self.send_bytes(200, rb, extra={"x-request-id": rid})
                rec["completed"] = True
                return
            u = dict(DEFAULT_USAGE)
            u.update(mock.get("usage") or {})
            usage = {
                "prompt_tokens": u["prompt_tokens"],
                "completion_tokens": u["completion_tokens"],
                "prompt_tokens_details": {"cached_tokens": u["cached_tokens"]},
            }
            try:
                usage["total_tokens"] = u["prompt_tokens"] + u["completion_tokens"]
            except TypeError:
                usage["total_tokens"] = None
            content = mock.get("content", DEFAULT_CONTENT) * int(mock.get("content_repeat", 1))
            if body.get("stream") is True:
                self.stream(rec, body, mock, model, rid, content, usage)
            else:
                self.plain(rec, mock, model, rid, content, usage)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout, OSError):
            rec["client_gone"] = True
            self.close_connection = True

    def error_reply(self, rec, mock, rid):
        status = int(mock["status"])
        rec["status"] = status
        if mock.get("empty_body"):
            eb = b""
        elif "error_body" in mock:
            eb = mock["error_body"].encode()
        else:
            eb = json.dumps({"error": {"message": "mock upstream error %d" % status,
                                       "type": "upstream_error", "code": status}}).encode()
        rec["response_body"] = eb.decode()
        self.send_bytes(status, eb, ctype=mock.get("error_ctype", "application/json"),
                        extra={"x-request-id": rid})
        rec["completed"] = True

    def plain(self, rec, mock, model, rid, content, usage):
        reply = {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
        }
        if not mock.get("no_usage"):
            reply["usage"] = usage
        out = json.dumps(reply).encode()
        rec["status"] = 200
        rec["content_bytes"] = len(content.encode())

        def headers(length, extra=()):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.send_header("x-request-id", rid)
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.flush()

        def mark_usage():
            # the usage left this process (whether or not anyone could read it)
            if "usage" in reply:
                rec["usage_sent"] = True
                rec["usage"] = usage

        if mock.get("reset_after_headers"):
            headers(len(out))
            self.reset_connection()
            return
        if mock.get("reset_mid_body"):
            headers(len(out))
            self.raw_write(out[:len(out) // 2])
            time.sleep(0.05)
            self.reset_connection()
            return
        if mock.get("stall_after_headers_ms") is not None:
            headers(len(out))
            time.sleep(mock["stall_after_headers_ms"] / 1000.0)
            self.drop_connection()
            return
        if mock.get("stall_mid_body_ms") is not None:
            headers(len(out))
            self.raw_write(out[:len(out) // 2])
            time.sleep(mock["stall_mid_body_ms"] / 1000.0)
            self.drop_connection()
            return
        if mock.get("truncate_body"):
            cut = out[:len(out) // 2]
            rec["response_body"] = cut.decode("utf-8", "replace")
            headers(len(cut))
            self.raw_write(cut)
            rec["completed"] = True
            return
        if mock.get("gzip"):
            gz = gzip.compress(out)
            rec["response_body"] = out.decode()
            headers(len(gz), [("Content-Encoding", "gzip")])
            self.raw_write(gz)
            mark_usage()
            rec["completed"] = True
            return
        if mock.get("chunked"):
            n = max(1, int(mock.get("chunk_bytes", 7)))
            rec["response_body"] = out.decode()
            headers(None, [("Transfer-Encoding", "chunked")])
            self.nodelay()
            for i in range(0, len(out), n):
                self.write_chunk(out[i:i + n])
            self.write_chunk(b"")
            mark_usage()
            rec["completed"] = True
            return
        rec["response_body"] = out.decode()
        headers(len(out), [("Connection", "close")] if mock.get("connection_close") else ())
        self.raw_write(out)
        mark_usage()
        rec["completed"] = True
        if mock.get("close_idle_ms") is not None:
            # an upstream whose keep-alive timeout closes the idle connection
            time.sleep(mock["close_idle_ms"] / 1000.0)
            self.drop_connection()

    def stream(self, rec, body, mock, model, rid, content, usage):
        n = int(mock.get("chunks", 3))
        pieces = split_content(content, n)
        delay = mock.get("chunk_delay_ms", 0) / 1000.0
        created = int(time.time())
        byte_mode = bool(mock.get("byte_per_send"))
        byte_delay = float(mock.get("byte_delay_ms", 0.3)) / 1000.0
        rec["status"] = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", rid)
        self.end_headers()
        self.wfile.flush()
        if byte_mode:
            self.nodelay()
        if mock.get("reset_after_headers"):
            self.reset_connection()
            return
        if mock.get("stall_after_headers_ms") is not None:
            time.sleep(mock["stall_after_headers_ms"] / 1000.0)
            self.drop_connection()
            return

        def chunk(choices, extra=None):
            c = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": choices}
            if extra:
                c.update(extra)
            return json.dumps(c)

        stored = [0]

        def send_event(data):
            if stored[0] + len(data) <= EVENTS_KEEP:
                rec["events"].append(data)
                stored[0] += len(data)
            else:
                rec["events_truncated"] = True
            payload = ("data: " + data + "\n\n").encode()
            if byte_mode:
                for i in range(len(payload)):
                    self.write_chunk(payload[i:i + 1])
                    if byte_delay:
                        time.sleep(byte_delay)
            else:
                self.write_chunk(payload)

        def send_content(i, p):
            delta = {"content": p}
            if i == 0:
                delta = {"role": "assistant", "content": p}
            send_event(chunk([{"index": 0, "delta": delta, "finish_reason": None}]))
            rec["content_bytes"] += len(p.encode())
            if p:
                rec["content_deltas"] += 1

        stall = mock.get("stall_after_chunks")
        close = mock.get("close_after_chunks")
        reset = mock.get("reset_after_chunks")
        long_line = mock.get("long_line_bytes")
        for i, p in enumerate(pieces):
            if stall is not None and i == stall:
                time.sleep(mock.get("stall_ms", 0) / 1000.0)
                self.drop_connection()
                return
            if close is not None and i == close:
                self.drop_connection()
                return
            if reset is not None and i == reset:
                time.sleep(0.05)
                self.reset_connection()
                return
            if i > 0 and delay:
                time.sleep(delay)
            send_content(i, p)
            if i == 0 and long_line:
                send_content(1, "L" * int(long_line))
        if stall is not None and stall >= len(pieces):
            time.sleep(mock.get("stall_ms", 0) / 1000.0)
            self.drop_connection()
            return
        if close is not None and close >= len(pieces):
            self.drop_connection()
            return
        if reset is not None and reset >= len(pieces):
            time.sleep(0.05)
            self.reset_connection()
            return
        send_event(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        so = body.get("stream_options")
        if isinstance(so, dict) and so.get("include_usage") is True and not mock.get("no_usage"):
            send_event(chunk([], {"usage": usage}))
            rec["usage_sent"] = True
            rec["usage"] = usage
        send_event("[DONE]")
        self.write_chunk(b"")  # zero-length chunk ends the body
        rec["completed"] = True


FAULTS = ("reset_after_headers", "reset_mid_body", "reset_after_chunks", "stall_after_headers_ms",
          "stall_mid_body_ms", "truncate_body", "gzip", "chunked", "byte_per_send",
          "long_line_bytes", "empty_body", "raw_body", "no_usage", "close_after_chunks",
          "stall_after_chunks", "status")
EVENTS_KEEP = 1024 * 1024   # SSE data kept per record (bigger streams: counts only)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main():
    ap = argparse.ArgumentParser(description="mock Pinata upstream")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--rates", default=os.path.join(here, "..", "conf", "rates.json"))
    ap.add_argument("--jwt", default="test-jwt")
    a = ap.parse_args()
    try:
        with open(a.rates) as f:
            rates_text = f.read()
    except OSError:
        rates_text = "[]"
    srv = Server((a.host, a.port), Handler)
    srv.state = State(rates_text, a.jwt)
    print("READY %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

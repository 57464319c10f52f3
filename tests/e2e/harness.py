"""Harness for pinmeter's end-to-end tests (stdlib only).

Starts the mock Pinata upstream (tests/mock_pinata.py) and real build/pinmeter
processes on loopback ports with generated configs in a temp dir, and offers
helpers for HTTP requests, SSE, the ledger, `pinmeter report` and the cost
arithmetic. Only processes started here are ever stopped, by their PID.
"""
import csv
import hashlib
import http.client
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
MOCK = os.path.join(REPO, "tests", "mock_pinata.py")
BIN = os.path.abspath(os.environ.get("PINMETER_BIN") or os.path.join(REPO, "build", "pinmeter"))
# The test build (PINMETER_TEST_HOOKS: fault and tuning hooks read from the environment).
TEST_BIN = os.path.abspath(os.environ.get("PINMETER_TEST_BIN") or
                           os.path.join(REPO, "build-test", "pinmeter"))
# PINMETER_E2E_WRAPPER runs pinmeter under a tool, e.g. valgrind (make valgrind);
# a non-zero exit at stop then fails the test.
WRAPPER = os.environ.get("PINMETER_E2E_WRAPPER", "").split()

NANO = 10 ** 9
ONE_M = 10 ** 6

# Test price table (USD per 1M tokens); every price is exact in nanos.
RATES = [
    {"model_id": "anthropic/claude-sonnet-4-6", "input_usd_per_1m_tokens": 3.0,
     "output_usd_per_1m_tokens": 15.0, "cache_read_usd_per_1m_tokens": 0.3},
    {"model_id": "anthropic/claude-haiku-4-5", "input_usd_per_1m_tokens": 0.75,
     "output_usd_per_1m_tokens": 3.75, "cache_read_usd_per_1m_tokens": 0.075},
    {"model_id": "openai/gpt-4o", "input_usd_per_1m_tokens": 2.5,
     "output_usd_per_1m_tokens": 10.0, "cache_read_usd_per_1m_tokens": 1.25},
    # fractions of a nano per token: exercises rounding up
    {"model_id": "test/fractional", "input_usd_per_1m_tokens": 0.0015,
     "output_usd_per_1m_tokens": 0.0045, "cache_read_usd_per_1m_tokens": 0.0003},
]
SONNET = "anthropic/claude-sonnet-4-6"
HAIKU = "anthropic/claude-haiku-4-5"
GPT4O = "openai/gpt-4o"
FRACTIONAL = "test/fractional"

UPSTREAM_KEY = "sk-upstream-" + secrets.token_hex(12)
ADMIN_TOKEN = "admin-" + secrets.token_hex(12)
JWT = "jwt-" + secrets.token_hex(12)

CLEAN_ENV_DROP = ("PINATA_LLM_KEY", "PINMETER_ADMIN_TOKEN", "PINATA_JWT")


# ---------------------------------------------------------------- arithmetic
def rate_nanos(model, credits_per_usd=1):
    for r in RATES:
        if r["model_id"] == model:
            f = lambda k: int(Decimal(str(r[k])) * NANO * Decimal(str(credits_per_usd)))
            return (f("input_usd_per_1m_tokens"), f("output_usd_per_1m_tokens"),
                    f("cache_read_usd_per_1m_tokens"))
    raise KeyError(model)


def ceil_div(a, b):
    return -(-a // b)


def cost(model, prompt, completion, cached=0):
    i, o, c = rate_nanos(model)
    return ceil_div((prompt - cached) * i + cached * c + completion * o, ONE_M)


def reservation(model, body_len, max_tokens):
    i, o, _ = rate_nanos(model)
    return ceil_div(ceil_div(body_len, 3) * i + max_tokens * o, ONE_M)


def fmt_credits(nanos):
    """Nanos as the 9-decimal credit text ('0.009960000')."""
    sign = "-" if nanos < 0 else ""
    n = abs(nanos)
    return "%s%d.%09d" % (sign, n // NANO, n % NANO)


def to_nanos(value):
    """A JSON credit figure (parsed as Decimal or str) to integer nanos,
    rounded to the nearest nano (tolerates float printing noise only)."""
    d = Decimal(str(value)) * NANO
    return int(d.to_integral_value(rounding="ROUND_HALF_EVEN"))


# ---------------------------------------------------------------- keys, ports
def new_key():
    return "pm-test-" + secrets.token_hex(16)


def sha256_hex(s):
    return hashlib.sha256(s.encode()).hexdigest()


def passthrough_key_id(key):
    return "pt-" + sha256_hex(key)[:12]


_PORT_BASE = int(os.environ.get("PINMETER_E2E_PORT_BASE", "0"))
_PORT_SPAN = 2500
_port_next = [0]


def free_port():
    """A loopback port free now. Under run.py -j, each job takes its ports in
    turn from a range of its own below the ephemeral range
    (PINMETER_E2E_PORT_BASE), so parallel jobs and outgoing connections never
    pick one another's ports."""
    if _PORT_BASE:
        for _ in range(_PORT_SPAN):
            p = _PORT_BASE + _port_next[0] % _PORT_SPAN
            _port_next[0] += 1
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue
            finally:
                s.close()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def at_once(fn, n, join_s=60):
    """fn() called from n threads started together; their results, in no
    particular order (each thread joined for at most join_s)."""
    out, lock = [], threading.Lock()

    def one():
        r = fn()
        with lock:
            out.append(r)
    ts = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(join_s)
    return out


def closed_port():
    """A loopback port nothing listens on (bound then released)."""
    return free_port()


def today_utc():
    return time.strftime("%Y-%m-%d", time.gmtime())


def day_offset_utc(days):
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() + days * 86400))


# ---------------------------------------------------------------- received bodies
# Every response body (and SSE byte) a test receives from pinmeter through
# these helpers is kept here, so that the invariant checker can grep them all
# for secrets. Tests that read sockets themselves call collect().
_RECEIVED_LOCK = threading.Lock()
_RECEIVED = []
_RECEIVED_CAP = 64 * 1024 * 1024     # bytes kept (beyond: the newest are dropped)
_received_bytes = [0]
_NOT_PINMETER_PORTS = set()          # the mocks' ports: their replies are not collected


def collect(data):
    """Remembers bytes received from pinmeter (for the secrets check)."""
    if not data:
        return
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    with _RECEIVED_LOCK:
        if _received_bytes[0] + len(data) <= _RECEIVED_CAP:
            _RECEIVED.append(bytes(data))
            _received_bytes[0] += len(data)


def received_bodies(clear=False):
    """The bytes collected so far (optionally forgetting them)."""
    with _RECEIVED_LOCK:
        out = list(_RECEIVED)
        if clear:
            _RECEIVED.clear()
            _received_bytes[0] = 0
        return out


# ---------------------------------------------------------------- HTTP
class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # lower-cased names
        self.body = body                # bytes

    def json(self):
        return json.loads(self.body, parse_float=Decimal)

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return "Resp(%d, %r)" % (self.status, self.body[:300])


def http_request(port, method, path, body=None, headers=None, timeout=15):
    h = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if port not in _NOT_PINMETER_PORTS:
            collect(data)
            collect("".join("%s: %s\n" % kv for kv in r.getheaders()))
        return Resp(r.status, hdrs, data)
    finally:
        conn.close()


# ---------------------------------------------------------------- raw sockets
def raw_socket(port, timeout=5.0):
    """A plain TCP connection to 127.0.0.1:port (timeouts on every call)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def raw_request(method, path, body=b"", headers=None, content_length="auto"):
    """The bytes of an HTTP/1.1 request. content_length: "auto" (the body's
    length), None (no header) or a number (may lie)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    if content_length == "auto":
        lines.append("Content-Length: %d" % len(body))
    elif content_length is not None:
        lines.append("Content-Length: %s" % content_length)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_response(sock, method="POST"):
    """Reads one HTTP response from a raw socket (collected for the secrets check)."""
    r = http.client.HTTPResponse(sock, method=method)
    r.begin()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    collect(data)
    return Resp(r.status, hdrs, data)


def wait_peer_close(sock, timeout):
    """Reads until the peer closes (EOF or reset) or timeout. Returns
    (closed, bytes received); the bytes are collected for the secrets check."""
    deadline = time.time() + timeout
    got = bytearray()
    closed = False
    while True:
        left = deadline - time.time()
        if left <= 0:
            break
        sock.settimeout(min(left, 0.5))
        try:
            d = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:                  # reset, broken pipe
            closed = True
            break
        if not d:
            closed = True
            break
        got += d
    collect(bytes(got))
    return closed, bytes(got)


def dechunk(raw):
    """Decodes a chunked body. Returns (payload, ended): ended is True only
    when the terminating zero-length chunk arrived (a clean end of stream)."""
    out, i = bytearray(), 0
    while True:
        j = raw.find(b"\r\n", i)
        if j < 0:
            return bytes(out), False
        try:
            n = int(raw[i:j].split(b";")[0], 16)
        except ValueError:
            return bytes(out), False
        if n == 0:
            return bytes(out), True
        if len(raw) < j + 2 + n:
            out += raw[j + 2:]
            return bytes(out), False
        out += raw[j + 2:j + 2 + n]
        i = j + 2 + n + 2


def stream_raw(port, body, key, timeout=15.0):
    """POSTs a streaming chat request on a raw socket and reads to EOF.
    Returns (status, headers, sse_payload_bytes, ended_cleanly)."""
    sock = raw_socket(port, timeout)
    try:
        sock.sendall(raw_request("POST", "/v0/llm/chat/completions", body,
                                 {"Authorization": "Bearer " + key,
                                  "Content-Type": "application/json", "Connection": "close"}))
        _, data = wait_peer_close(sock, timeout)
    finally:
        sock.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        payload, ended = dechunk(rest)
    else:
        n = int(hdrs.get("content-length", len(rest)))
        payload, ended = rest[:n], len(rest) >= n
    return status, hdrs, payload, ended


def sse_data(payload):
    """The data strings of the complete SSE events in payload."""
    out = []
    text = payload.decode("utf-8", "replace").replace("\r\n", "\n")
    for block in text.split("\n\n")[:-1] if not text.endswith("\n\n") else text.split("\n\n"):
        data = [ln[5:].lstrip(" ") if ln.startswith("data:") else None for ln in block.split("\n")]
        data = [d for d in data if d is not None]
        if data:
            out.append("\n".join(data))
    return out


def auth(key):
    return {"Authorization": "Bearer " + key} if key is not None else {}


class SSEStream:
    """Incremental reader of an SSE response (event data strings)."""

    def __init__(self, port, path, body, headers, timeout=15):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        h = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        h.update(headers or {})
        self.conn.request("POST", path, body=data, headers=h)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.raw = bytearray()
        self.error = None

    def next_event(self):
        """The next event's data (lines joined by newline), or None at EOF."""
        data = []
        seen = False
        while True:
            try:
                line = self.resp.readline()
            except (http.client.HTTPException, OSError) as e:
                self.error = e          # cut mid-body (e.g. IncompleteRead)
                line = b""
            if not line:
                return "\n".join(data) if seen else None
            collect(line)
            self.raw += line
            s = line.decode("utf-8").rstrip("\r\n")
            if s == "":
                if seen:
                    return "\n".join(data)
                continue
            if s.startswith(":"):
                continue
            if s.startswith("data:"):
                v = s[5:]
                if v.startswith(" "):
                    v = v[1:]
                data.append(v)
                seen = True

    def read_all(self):
        out = []
        while True:
            ev = self.next_event()
            if ev is None:
                return out
            out.append(ev)

    def close(self):
        try:
            self.conn.close()
        except OSError:
            pass


# ---------------------------------------------------------------- processes
def _stop_pid(proc, timeout=5.0):
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _kill_pid(proc):
    """SIGKILL for our own child process, by PID, then reap it."""
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


class Mock:
    """The mock Pinata upstream as a subprocess."""

    def __init__(self, rates_file, jwt=JWT):
        self.proc = subprocess.Popen(
            [sys.executable, MOCK, "--port", "0", "--rates", rates_file, "--jwt", jwt],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        deadline = time.time() + 10
        line = ""
        import select
        while time.time() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                line = self.proc.stdout.readline()
                break
            if self.proc.poll() is not None:
                break
        if not line.startswith("READY "):
            _stop_pid(self.proc)
            raise RuntimeError("mock did not start: %r" % line)
        self.port = int(line.split()[1])
        _NOT_PINMETER_PORTS.add(self.port)
        self.url = "http://127.0.0.1:%d" % self.port

    def requests(self):
        return json.loads(http_request(self.port, "GET", "/__mock/requests").body)

    def chat_count(self):
        return len(self.requests())

    def reset(self):
        http_request(self.port, "POST", "/__mock/reset", body={})

    def set_balance(self, **kw):
        http_request(self.port, "POST", "/__mock/balance", body=kw)

    def stats(self):
        return json.loads(http_request(self.port, "GET", "/__mock/stats").body)

    def spend(self, credits):
        """Usage outside pinmeter: the balance falls by credits (a str or Decimal)."""
        http_request(self.port, "POST", "/__mock/spend", body='{"credits": %s}' % credits)

    def topup(self, credits):
        """A purchase: the balance rises by credits."""
        http_request(self.port, "POST", "/__mock/topup", body='{"credits": %s}' % credits)

    def topup_requests(self):
        """What the top-up settings endpoints received (method, authorization, body, status)."""
        return json.loads(http_request(self.port, "GET", "/__mock/topup/requests").body)

    def stop(self):
        _stop_pid(self.proc)


def write_rates(path):
    with open(path, "w") as f:
        json.dump(RATES, f, indent=1)


class Team:
    def __init__(self, name, cap, period="month", models=None, nkeys=1, key_ids=None,
                 extra=None, key_extra=None):
        self.name = name
        self.cap = cap                   # credits (float) or None for no cap
        self.period = period
        self.models = models
        ids = key_ids or ["%s-k%d" % (name, i) for i in range(nkeys)]
        self.keys = {kid: new_key() for kid in ids}
        self.extra = extra or {}         # more team keys of the config (limits, clamp ...)
        self.key_extra = key_extra or {} # key id -> more keys of that key (cap, limits ...)

    @property
    def key(self):
        return next(iter(self.keys.values()))

    def key_id(self, key):
        for kid, k in self.keys.items():
            if k == key:
                return kid
        raise KeyError(key)

    def conf(self):
        t = {"name": self.name, "period": self.period,
             "keys": [dict({"id": kid, "sha256": sha256_hex(k)}, **self.key_extra.get(kid, {}))
                      for kid, k in self.keys.items()]}
        t.update(self.extra)
        if self.cap is not None:
            t["cap"] = self.cap
        if self.models is not None:
            t["models"] = self.models
        return t


class Proxy:
    """One build/pinmeter serve process with a generated config."""

    def __init__(self, tmpdir, upstream_url, teams=None, name="pm", overrides=None,
                 env=None, upstream_key=UPSTREAM_KEY, ledger=None, rates_file=None,
                 extra_args=(), bin=None):
        self.bin = os.path.abspath(bin) if bin else None
        self.tmp = tmpdir
        self.extra_args = list(extra_args)
        self.name = name
        self.teams = list(teams or [])
        self.port = free_port()
        self.ledger = ledger or os.path.join(tmpdir, name + ".db")
        self.rates_file = rates_file or os.path.join(tmpdir, "rates.json")
        if not os.path.exists(self.rates_file):
            write_rates(self.rates_file)
        self.cfg = {
            "listen": "127.0.0.1:%d" % self.port,
            "upstream": {"base_url": upstream_url, "llm_key_env": "PINATA_LLM_KEY", "timeout_s": 20},
            "ledger": self.ledger,
            "rates_file": self.rates_file,
            "credits_per_usd": 1.0,
            "default_max_tokens": 4096,
            "unknown_model": "reject",
            "admin_token_env": "PINMETER_ADMIN_TOKEN",
            "account": {"jwt_env": "PINATA_JWT", "sync_s": 30},
            "drain_s": 2,
            "teams": [t.conf() for t in self.teams],
        }
        # PINMETER_E2E_WORKERS runs the suite with that many event loops
        # (unset: pinmeter's default, one per core)
        if os.environ.get("PINMETER_E2E_WORKERS"):
            self.cfg["workers"] = int(os.environ["PINMETER_E2E_WORKERS"])
        for k, v in (overrides or {}).items():
            if isinstance(v, dict) and isinstance(self.cfg.get(k), dict):
                self.cfg[k].update(v)
            else:
                self.cfg[k] = v
        self.config_path = os.path.join(tmpdir, name + ".json")
        self.write_config()
        self.env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV_DROP}
        if upstream_key is not None:
            self.env["PINATA_LLM_KEY"] = upstream_key
        self.env.update(env or {})
        self.upstream_key = upstream_key
        self.stderr_path = os.path.join(tmpdir, name + ".stderr")
        self.stdout_path = os.path.join(tmpdir, name + ".stdout")
        self.proc = None
        self.starts = 0

    def write_config(self, cfg=None, text=None):
        """(Re)writes the config file atomically: self.cfg (or cfg), or raw text."""
        if cfg is not None:
            self.cfg = cfg
        if text is None:
            text = json.dumps(self.cfg, indent=1)
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    def set_teams(self, teams):
        """Replaces the teams (in self.teams and the config file)."""
        self.teams = list(teams)
        self.cfg["teams"] = [t.conf() for t in self.teams]
        self.write_config()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        """Signals this proxy (our child, by PID)."""
        if self.alive():
            os.kill(self.proc.pid, sig)

    def rss_kb(self):
        """VmRSS of the running process in KiB (from /proc/<pid>/status)."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def wait_log(self, needle, timeout=5.0, since=0):
        """Waits for needle in the logs (from byte offset since); True if seen."""
        deadline = time.time() + timeout
        while True:
            if needle in self.logs_text()[since:]:
                return True
            if time.time() > deadline:
                return False
            time.sleep(0.05)

    # lifecycle
    def start(self, wait=True):
        binary = self.bin or BIN
        if not os.path.exists(binary):
            raise unittest.SkipTest("no binary at %s (run make)" % binary)
        self.starts += 1
        errf = open(self.stderr_path, "ab")
        outf = open(self.stdout_path, "ab")
        try:
            self.proc = subprocess.Popen(WRAPPER + [binary, "serve", "-c", self.config_path]
                                         + self.extra_args,
                                         cwd=REPO,
                                         env=self.env, stdout=outf, stderr=errf,
                                         stdin=subprocess.DEVNULL)
        finally:
            errf.close()
            outf.close()
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout=5.0):
        deadline = time.time() + timeout * (8 if WRAPPER else 1)
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("pinmeter exited with %s at start; stderr:\n%s"
                                     % (self.proc.returncode, self.stderr_text()[-2000:]))
            try:
                r = http_request(self.port, "GET", "/healthz", timeout=1)
                if r.status == 200:
                    return
                last = r
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("pinmeter not healthy within %.0fs (%r); stderr:\n%s"
                             % (timeout, last, self.stderr_text()[-2000:]))

    def stop(self):
        _stop_pid(self.proc, timeout=60.0 if WRAPPER else 5.0)
        if WRAPPER and self.proc is not None and self.proc.returncode not in (0, None):
            raise AssertionError("pinmeter under %s exited %s (memory errors or leaks); "
                                 "stderr:\n%s" % (WRAPPER[0], self.proc.returncode,
                                                   self.stderr_text()[-4000:]))

    def kill9(self):
        _kill_pid(self.proc)

    def restart(self):
        self.stop()
        return self.start()

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def logs_text(self):
        out = self.stderr_text()
        try:
            with open(self.stdout_path, "rb") as f:
                out += f.read().decode("utf-8", "replace")
        except OSError:
            pass
        return out

    def workers(self):
        """How many event loops the running proxy has (from its start line)."""
        m = re.findall(r"mode, (\d+) worker\(s\)", self.logs_text())
        return int(m[-1]) if m else 1

    def secrets(self):
        s = [k for t in self.teams for k in t.keys.values()]
        if self.upstream_key:
            s.append(self.upstream_key)
        for var in ("PINMETER_ADMIN_TOKEN", "PINATA_JWT"):
            if self.env.get(var):
                s.append(self.env[var])
        return s

    # HTTP
    def request(self, method, path, body=None, key=None, headers=None, timeout=15):
        h = auth(key)
        h.update(headers or {})
        return http_request(self.port, method, path, body=body, headers=h, timeout=timeout)

    def chat(self, body, key=None, path="/v0/llm/chat/completions", headers=None, timeout=15):
        return self.request("POST", path, body=body, key=key, headers=headers, timeout=timeout)

    def stream(self, body, key=None, path="/v0/llm/chat/completions", timeout=15):
        return SSEStream(self.port, path, body, auth(key), timeout=timeout)

    def balance(self, key):
        r = self.request("GET", "/v0/credits/balance", key=key)
        if r.status != 200:
            raise AssertionError("balance: %r" % r)
        j = r.json()
        out = {k: to_nanos(j[k]) for k in ("total", "loaned", "available")}
        if "key" in j:                   # a key with a cap of its own
            out["key"] = {k: to_nanos(j["key"][k]) for k in ("total", "loaned", "available")}
        return out

    def wait_balance(self, key, pred, timeout=5.0):
        """Polls the balance until pred(b) (settling may trail the response)."""
        deadline = time.time() + timeout
        while True:
            b = self.balance(key)
            if pred(b) or time.time() > deadline:
                return b
            time.sleep(0.05)

    def wait_idle(self, key, timeout=5.0):
        """The balance once nothing is loaned and the ledger has every row."""
        b = self.wait_balance(key, lambda b: b["loaned"] == 0, timeout)
        if b["loaned"] == 0:
            self.wait_ledger_drained(timeout)
        return b

    def wait_ledger_drained(self, timeout=5.0):
        """Waits until the ledger writer's backlog (/healthz) is 0: every
        settled request's row is committed (the writer gathers for 10 ms, so
        a balance back to idle, fleet-wide from Redis, can come first)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                h = json.loads(http_request(self.port, "GET", "/healthz", timeout=2).body)
                if h.get("ledger_backlog", 0) == 0:
                    return True
            except (OSError, ValueError):
                return False
            time.sleep(0.01)
        return False

    # ledger
    def ledger_rows(self, where="1=1", args=()):
        if not os.path.exists(self.ledger):
            return []
        con = sqlite3.connect(self.ledger, timeout=5)
        try:
            con.row_factory = sqlite3.Row
            cur = con.execute("SELECT * FROM requests WHERE %s ORDER BY started_ms, id" % where, args)
            return [dict(r) for r in cur.fetchall()]
        finally:
            con.close()

    def wait_rows(self, pred, timeout=5.0, where="1=1", args=()):
        """Polls the ledger until pred(rows) holds; returns the last rows."""
        deadline = time.time() + timeout
        while True:
            try:
                rows = self.ledger_rows(where, args)
            except sqlite3.OperationalError:
                rows = None
            if rows is not None and pred(rows):
                return rows
            if time.time() > deadline:
                return rows or []
            time.sleep(0.05)

    def row(self, req_id=None, upstream_id=None, timeout=5.0):
        """The settled (non-inflight) row for a request, found by pinmeter's
        id or by the upstream's id; None if it never appears."""
        if req_id:
            where, args = "id = ?", (req_id,)
        else:
            where, args = "upstream_id = ?", (upstream_id,)
        rows = self.wait_rows(lambda rs: rs and rs[0]["state"] != "inflight", timeout, where, args)
        return rows[0] if rows else None

    def row_for(self, resp, upstream_id=None, timeout=5.0):
        rid = resp.header("x-pinmeter-request-id") if isinstance(resp, Resp) else \
            resp.headers.get("x-pinmeter-request-id")
        if rid:
            return self.row(req_id=rid, timeout=timeout)
        if upstream_id:
            return self.row(upstream_id=upstream_id, timeout=timeout)
        return None

    # CLI
    def cli(self, *args, timeout=15):
        return run_bin(list(args), env=self.env, timeout=timeout)

    def report(self, *args, fmt="json", use_config=True):
        a = ["report"]
        a += ["-c", self.config_path] if use_config else ["--ledger", self.ledger]
        a += list(args) + ["--format", fmt]
        p = self.cli(*a)
        if p.returncode != 0:
            raise AssertionError("report %s exited %d: %s" % (a, p.returncode, p.stderr))
        return p


def run_bin(args, env=None, timeout=15, cwd=REPO):
    if not os.path.exists(BIN):
        raise unittest.SkipTest("no binary at %s (run make)" % BIN)
    e = env if env is not None else {k: v for k, v in os.environ.items() if k not in CLEAN_ENV_DROP}
    p = subprocess.run([BIN] + args, cwd=cwd, env=e, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    reports = sanitizer_reports(p.stderr, "pinmeter " + " ".join(args[:1]))
    if reports:
        raise AssertionError("\n".join(reports))
    return p


def parse_report_json(text):
    return json.loads(text, parse_float=Decimal)


def parse_csv(text):
    return list(csv.DictReader(io.StringIO(text)))


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer")


def sanitizer_reports(log, name):
    """Excerpts of ASan/UBSan/LSan/TSan reports in a process's log."""
    out = []
    for m in SANITIZER_MARKS:
        i = log.find(m)
        if i >= 0:
            out.append("%s: %s" % (name, log[max(0, i - 200):i + 1500]))
    return out


# ---------------------------------------------------------------- test base
def chat_body(model=SONNET, content="Say hello", max_tokens=100, mock=None, stream=None, **kw):
    b = {"model": model, "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        b["max_tokens"] = max_tokens
    if stream is not None:
        b["stream"] = stream
    if mock is not None:
        b["mock"] = mock
    b.update(kw)
    return b


def body_len(body):
    return len(json.dumps(body).encode())


class E2ETest(unittest.TestCase):
    """Base: a temp dir, one mock, and the proxies a class starts. Subclasses
    set up proxies in setUpClass via cls.add_proxy(...)."""

    proxies = ()

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(BIN):
            raise unittest.SkipTest("no binary at %s (run make)" % BIN)
        cls.tmp = tempfile.mkdtemp(prefix="pinmeter-e2e-")
        cls.rates_file = os.path.join(cls.tmp, "rates.json")
        write_rates(cls.rates_file)
        cls.proxies = []
        cls.mock = None
        try:
            cls.mock = Mock(cls.rates_file)
            cls.setup_proxies()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def setup_proxies(cls):
        pass

    @classmethod
    def add_proxy(cls, teams=None, start=True, **kw):
        kw.setdefault("name", "pm%d" % len(cls.proxies))
        upstream = kw.pop("upstream", None) or cls.mock.url
        p = Proxy(cls.tmp, upstream, teams=teams, **kw)
        cls.proxies.append(p)
        if start:
            p.start()
        return p

    @classmethod
    def tearDownClass(cls):
        reports = []
        for p in getattr(cls, "proxies", []) or []:
            try:
                p.stop()
            except Exception:
                pass
            reports += sanitizer_reports(p.logs_text(), p.name)
        if getattr(cls, "mock", None):
            cls.mock.stop()
        if getattr(cls, "tmp", None) and not os.environ.get("PINMETER_E2E_KEEP"):
            shutil.rmtree(cls.tmp, ignore_errors=True)
        if reports:
            raise AssertionError("sanitizer report(s) from pinmeter:\n" + "\n".join(reports))

    def setUp(self):
        if self.mock:
            self.mock.reset()

    def tearDown(self):
        # No secret (upstream key, team keys, admin token, JWT) ever in a log.
        for p in self.proxies:
            logs = p.logs_text()
            for s in p.secrets():
                self.assertNotIn(s, logs, "a secret appeared in %s's log" % p.name)

    # assertions
    def assertError(self, resp, status, etype=None):
        self.assertEqual(resp.status, status, resp)
        try:
            j = resp.json()
        except ValueError:
            self.fail("error body is not JSON: %r" % resp.body[:300])
        self.assertIsInstance(j.get("error"), dict, resp)
        for f in ("message", "type", "code"):
            self.assertIn(f, j["error"], "error object lacks %r: %r" % (f, resp.body[:300]))
        self.assertTrue(j["error"]["message"], resp)
        if etype is not None:
            self.assertEqual(j["error"]["type"], etype, resp)
        return j["error"]

#!/usr/bin/env python3
"""make demo: pinmeter and its dashboard on a machine with no Pinata account.

    python3 scripts/demo.py [--bin build/pinmeter] [--port N] [--no-seed]

Starts the mock Pinata of the tests (tests/mock_pinata.py) and pinmeter with
three example teams on loopback, sends a steady trickle of agent-like
traffic (streams and not, a few 402s, now and then a stream cut short or an
upstream error), and prints the dashboard's URL and the admin token to paste
into it. Before the first start it writes two days of made-up history into
the demo's fresh ledger (build/demo/), so the charts have something to show;
--no-seed starts empty. Ctrl-C stops everything it started, by PID.

Everything here is throwaway: the keys and tokens are random for this run,
and nothing leaves 127.0.0.1.
"""
import argparse
import hashlib
import http.client
import json
import math
import os
import random
import secrets
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MOCK = os.path.join(REPO, "tests", "mock_pinata.py")
RATES = os.path.join(REPO, "conf", "rates.json")
NANO = 10 ** 9

# The example fleet: (name, cap or None, period, models, key ids). The second
# team is kept near its daily cap by the seeded history.
TEAMS = [
    ("research", 250.0, "month", ["anthropic/*", "google/*"], ["alice", "bob", "eval-runner"]),
    ("support-bots", 6.0, "day", ["anthropic/claude-haiku-4-5", "openai/gpt-5-mini"], ["triage", "replies"]),
    ("platform", None, "month", None, ["ci", "batch"]),
]
# What each team's agents ask for: (model, weight).
MODELS = {
    "research": [("anthropic/claude-sonnet-4-6", 6), ("anthropic/claude-opus-4-1", 1),
                 ("google/gemini-2.5-pro", 2), ("google/gemini-2.5-flash", 2)],
    "support-bots": [("anthropic/claude-haiku-4-5", 3), ("openai/gpt-5-mini", 2)],
    "platform": [("openai/gpt-5", 2), ("openai/gpt-5-nano", 3), ("anthropic/claude-haiku-4-5", 2)],
}
NEAR_CAP = 0.88          # support-bots' share of its cap spent today, seeded

STOP = threading.Event()


def log(*a):
    print(*a, flush=True)


def free_port(start):
    for p in range(start, start + 200):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise SystemExit("no free port from %d" % start)


def prices():
    with open(RATES) as f:
        out = {}
        for r in json.load(f):
            n = lambda k: round(r.get(k, 0) * NANO)
            out[r["model_id"]] = (n("input_usd_per_1m_tokens"), n("output_usd_per_1m_tokens"),
                                  n("cache_read_usd_per_1m_tokens"))
        return out


def cost(price, prompt, completion, cached):
    i, o, c = price
    return -(-((prompt - cached) * i + cached * c + completion * o) // 10 ** 6)


def pick(rng, weighted):
    total = sum(w for _, w in weighted)
    x = rng.uniform(0, total)
    for v, w in weighted:
        x -= w
        if x <= 0:
            return v
    return weighted[-1][0]


# ---------------------------------------------------------------- history
def seed(ledger, rng, now_ms):
    """Two days of settled requests, hour by hour, in the ledger's tables
    (pinmeter made them at its first start and rebuilds its figures from
    them at the next): spend per team and day, and the requests."""
    pr = prices()
    con = sqlite3.connect(ledger)
    rows, daily = [], {}
    hour0 = now_ms // 3600000 * 3600000
    day0 = now_ms // 86400000 * 86400000
    n = 0

    def add(team, key, model, started, prompt, completion, cached, stream, scale=1.0):
        nonlocal n
        c = int(cost(pr[model], prompt, completion, cached) * scale)
        n += 1
        lat = rng.randint(400, 9000)
        rows.append(("seed-%06d" % n, started, started + lat, team, key, model, int(stream), 200,
                     prompt, completion, cached, c + rng.randint(0, c // 2 + 1), c, "settled", None, lat)
                    + (tuple(pr[model]) if scale == 1.0 else (None, None, None)))   # scaled: not re-derivable
        d = started // 86400000
        daily[(team, d)] = daily.get((team, d), 0) + c

    for h in range(49, -1, -1):
        start = hour0 - h * 3600000
        tod = ((start // 3600000) % 24)
        busy = 0.35 + 0.65 * max(0.0, math.sin((tod - 6) / 24 * 2 * math.pi)) ** 0.7
        for name, _, _, _, keys in TEAMS:
            if name == "support-bots":
                continue
            for _ in range(int(busy * (9 if name == "research" else 6)) + rng.randint(0, 3)):
                t = start + rng.randint(0, 3599999)
                if t >= now_ms - 60000:
                    continue
                model = pick(rng, MODELS[name])
                prompt = rng.randint(2000, 30000)
                add(name, rng.choice(keys), model, t, prompt, rng.randint(150, 2500),
                    rng.randint(0, prompt // 2), rng.random() < 0.6)
    # support-bots: an ordinary yesterday, and today spent up to NEAR_CAP of its cap
    cap = int(TEAMS[1][1] * NANO)
    for day_start, target in ((day0 - 86400000, int(cap * 0.71)), (day0, int(cap * NEAR_CAP))):
        end = min(day_start + 86400000, now_ms - 60000)
        if end <= day_start:
            day_start, end = now_ms - 600000, now_ms - 60000
        batch = []
        for _ in range(60):
            model = pick(rng, MODELS["support-bots"])
            prompt = rng.randint(3000, 12000)
            batch.append((model, rng.randint(day_start, end - 1), prompt, rng.randint(100, 900),
                          rng.randint(0, prompt // 3), rng.random() < 0.7))
        raw = sum(cost(pr[m], p, c, k) for m, _, p, c, k, _ in batch)
        for m, t, p, c, k, s in batch:
            add("support-bots", rng.choice(TEAMS[1][4]), m, t, p, c, k, s, scale=target / raw)
    con.executemany("INSERT INTO requests(id, started_ms, ended_ms, team, key_id, model, stream, status,"
                    " prompt_tokens, completion_tokens, cached_tokens, reserved_nanos, charged_nanos,"
                    " state, upstream_id, latency_ms, price_input_nanos, price_output_nanos,"
                    " price_cache_read_nanos) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    for (team, d), v in daily.items():
        con.execute("INSERT INTO spend_daily(team, day, nanos) VALUES (?,?,?) ON CONFLICT(team, day)"
                    " DO UPDATE SET nanos = nanos + excluded.nanos", (team, d, v))
    # a rollup made from the rows at the first start is made again at the next
    con.execute("DROP TABLE IF EXISTS usage_hourly")
    con.commit()
    con.close()
    return len(rows)


# ---------------------------------------------------------------- processes
class Child:
    def __init__(self, name, argv, env=None, stdout=None, stderr=None):
        self.name = name
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=stdout, stderr=stderr,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def stop(self, timeout=8):
        p = self.proc
        if p.poll() is not None:
            return
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=5)


def start_mock(jwt):
    m = Child("mock", [sys.executable, MOCK, "--port", "0", "--rates", RATES, "--jwt", jwt],
              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    r, _, _ = select.select([m.proc.stdout], [], [], 10)
    line = m.proc.stdout.readline().decode() if r else ""
    if not line.startswith("READY "):
        m.stop()
        raise SystemExit("the mock Pinata did not start")
    m.port = int(line.split()[1])
    return m


def call(port, method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        h = {"Content-Type": "application/json"} if data else {}
        h.update(headers or {})
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def start_pinmeter(binary, cfg_path, env, logf):
    p = Child("pinmeter", [binary, "serve", "-c", cfg_path], env=env, stdout=logf, stderr=logf)
    port = json.load(open(cfg_path))["listen"].rsplit(":", 1)[1]
    deadline = time.time() + 10
    while time.time() < deadline:
        if p.proc.poll() is not None:
            raise SystemExit("pinmeter exited at start (see %s)" % logf.name)
        try:
            if call(int(port), "GET", "/healthz", timeout=1)[0] == 200:
                return p
        except OSError:
            pass
        time.sleep(0.1)
    p.stop()
    raise SystemExit("pinmeter did not become healthy (see %s)" % logf.name)


# ---------------------------------------------------------------- traffic
WORDS = ("the agent reads the ticket summarises the thread drafts a reply checks the policy "
         "calls a tool plans the next step compares two options cites the source").split()


def agent(port, team, key, rng, stats):
    """One agent: a conversation whose context grows turn by turn, restarted now and then."""
    history = rng.randint(800, 4000)
    while not STOP.is_set():
        model = pick(rng, MODELS[team])
        stream = rng.random() < (0.7 if team != "platform" else 0.3)
        history += rng.randint(200, 2500)
        if history > 60000 or rng.random() < 0.08:
            history = rng.randint(800, 4000)
        text = " ".join(rng.choice(WORDS) for _ in range(history // 6))
        completion = rng.randint(60, 1200)
        prompt = max(1, len(text) // 4 + 12)
        mock = {"usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "cached_tokens": rng.randint(0, prompt * 2 // 3)}}
        max_tokens = rng.choice([1024, 2048, 4096])
        roll = rng.random()
        if team == "support-bots" and roll < 0.12:
            max_tokens = 200000                 # more than it has left: a 402
        elif roll < 0.03:
            mock = {"status": 503, "error_body": {"error": {"message": "upstream overloaded"}}}
        elif stream and roll < 0.07:
            mock["close_after_chunks"] = 3      # cut mid-stream: charged an estimate
        if stream:
            mock.update(chunks=rng.randint(6, 30), chunk_delay_ms=rng.randint(80, 400))
        else:
            mock["delay_ms"] = rng.randint(200, 2500)
        body = {"model": model, "max_tokens": max_tokens, "stream": stream, "mock": mock,
                "messages": [{"role": "system", "content": "You are a %s agent." % team},
                             {"role": "user", "content": text}]}
        try:
            status, _, _ = call(port, "POST", "/v0/llm/chat/completions", body,
                                {"Authorization": "Bearer " + key})
            stats[status] = stats.get(status, 0) + 1
        except (OSError, http.client.HTTPException):   # a stream cut on purpose, or stopping
            stats["error"] = stats.get("error", 0) + 1
        STOP.wait(rng.uniform(0.8, 6.0) * (2.5 if team == "support-bots" else 1))


def account_drift(mock_port, admin_port, admin, start_available):
    """Lowers the mock's Pinata balance by what pinmeter charged, so the
    synced balance moves as it would against the real account."""
    while not STOP.wait(5):
        try:
            st, _, b = call(admin_port, "GET", "/v0/usage", headers={"Authorization": "Bearer " + admin})
            if st != 200:
                continue
            spent = float(json.loads(b)["total"]["credits"])
            avail = round(start_available - spent, 6)
            call(mock_port, "POST", "/__mock/balance", {"total": 500.0, "loaned": 0.0, "available": avail})
        except (OSError, ValueError, KeyError):
            pass


class Receiver(BaseHTTPRequestHandler):
    """The alert webhook's receiver: takes every event, answers 204."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "pinmeter"))
    ap.add_argument("--port", type=int, default=0, help="listen port (default: the first free from 8790)")
    ap.add_argument("--dir", default=os.path.join(REPO, "build", "demo"))
    ap.add_argument("--no-seed", action="store_true", help="start with an empty ledger")
    ap.add_argument("--seconds", type=float, default=0, help="stop by itself after this long (0: at Ctrl-C)")
    a = ap.parse_args()
    if not os.path.exists(a.bin):
        raise SystemExit("no binary at %s: run make first" % a.bin)
    os.makedirs(a.dir, exist_ok=True)
    ledger = os.path.join(a.dir, "pinmeter.db")
    for suffix in ("", "-wal", "-shm", "-begins.0", "-begins.1"):
        if os.path.exists(ledger + suffix):
            os.remove(ledger + suffix)
    rng = random.Random()
    port = a.port or free_port(8790)
    admin = "demo-admin-" + secrets.token_hex(12)
    jwt = "demo-jwt-" + secrets.token_hex(12)
    keys = {}
    teams = []
    for name, cap, period, models, ids in TEAMS:
        t = {"name": name, "period": period, "keys": []}
        if cap is not None:
            t["cap"] = cap
        if models is not None:
            t["models"] = models
        for kid in ids:
            k = "pm-demo-" + secrets.token_hex(16)
            keys[(name, kid)] = k
            t["keys"].append({"id": kid, "sha256": hashlib.sha256(k.encode()).hexdigest()})
        teams.append(t)

    children = []
    threads = []

    def stop_all(*_):
        STOP.set()
        for c in reversed(children):
            c.stop()

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        mock = start_mock(jwt)
        children.append(mock)
        call(mock.port, "POST", "/__mock/balance", {"total": 500.0, "loaned": 0.0, "available": 312.5})
        hooks = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        hooks.daemon_threads = True
        threading.Thread(target=hooks.serve_forever, daemon=True).start()
        cfg = {
            "_comment": "written by scripts/demo.py (make demo): three example teams on the mock Pinata",
            "listen": "127.0.0.1:%d" % port,
            "upstream": {"base_url": "http://127.0.0.1:%d" % mock.port, "llm_key_env": "PINATA_LLM_KEY",
                         "timeout_s": 60},
            "ledger": ledger, "rates_file": RATES,
            "admin_token_env": "PINMETER_ADMIN_TOKEN",
            "account": {"jwt_env": "PINATA_JWT", "sync_s": 10},
            "drain_s": 3,
            "alerts": {"webhook_url": "http://127.0.0.1:%d/pinmeter" % hooks.server_address[1],
                       "thresholds": [0.5, 0.8, 1.0], "account_below": 20.0},
            "teams": teams,
        }
        cfg_path = os.path.join(a.dir, "pinmeter.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=1)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PINATA_", "PINMETER_"))}
        env.update(PINATA_LLM_KEY="demo-upstream-" + secrets.token_hex(8), PINMETER_ADMIN_TOKEN=admin,
                   PINATA_JWT=jwt)
        logf = open(os.path.join(a.dir, "pinmeter.log"), "ab")
        pm = start_pinmeter(a.bin, cfg_path, env, logf)
        children.append(pm)
        if not a.no_seed:
            pm.stop()
            children.remove(pm)
            n = seed(ledger, rng, int(time.time() * 1000))
            pm = start_pinmeter(a.bin, cfg_path, env, logf)
            children.append(pm)
            log("seeded %d made-up requests of the last two days into %s" % (n, os.path.relpath(ledger, REPO)))
        stats = {}
        for (team, kid), k in keys.items():
            th = threading.Thread(target=agent, args=(port, team, k, random.Random(rng.random()), stats),
                                  daemon=True)
            th.start()
            threads.append(th)
        threading.Thread(target=account_drift, args=(mock.port, port, admin, 312.5), daemon=True).start()
        log("")
        log("pinmeter demo is running (mock Pinata on :%d, pinmeter on :%d)" % (mock.port, port))
        log("")
        log("  dashboard:    http://127.0.0.1:%d/dashboard" % port)
        log("  admin token:  %s" % admin)
        log("  a team key:   %s   (research/alice: that team's own view)" % keys[("research", "alice")])
        log("")
        log("  the ledger:   build/pinmeter report --ledger %s --format html > report.html"
            % os.path.relpath(ledger, REPO))
        log("  its log:      %s" % os.path.relpath(logf.name, REPO))
        log("")
        log("Ctrl-C stops it.")
        t0 = time.time()
        while not STOP.is_set():
            time.sleep(0.5)
            if pm.proc.poll() is not None:
                log("pinmeter exited (%s); see %s" % (pm.proc.returncode, logf.name))
                break
            if a.seconds and time.time() - t0 > a.seconds:
                break
    except KeyboardInterrupt:
        pass
    finally:
        log("\nstopping the demo ...")
        stop_all()
        for th in threads:
            th.join(timeout=5)
        log("stopped.")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""pinmeter's benchmark (issue 4): `make bench`, or python3 tests/bench/bench.py.

Three targets serve the same load, interleaved A/B/C in every round:
  A direct    the load generator talks to the mock upstream itself
  B nginx     a do-nothing nginx proxy_pass in front of the mock (if installed)
  C pinmeter  build/pinmeter in team mode in front of the mock
The metrics scenario runs c=64 on pinmeter with a scraper reading GET /metrics
10 times a second in every other 1 s window, and compares adjacent windows;
the scrape scenario times scrapes of a proxy with 100 teams x 50 models,
every pair touched.
The redis scenario compares pinmeter with its in-process book (the default)
against pinmeter with "budget_store" on a redis-server of its own (loopback,
on the load CPU, stopped by its PID), interleaved the same way.
The mock (build-bench/mockup) and the load generator (wrk, build-bench/streamload)
run on the first CPU, the proxy under test on the second (taskset), so the
proxy's own CPU cost shows. Each proxy run starts a fresh proxy (fresh ledger),
so CPU and peak RSS belong to that run alone. Medians over the rounds; added
figures are proxy minus direct within the same round. Prints one table.

Environment (all optional):
  BENCH_ONLY=c1,c64,...   scenarios: c1 c64 ledger stream64 stream1k stream10k
                          startup usage instr redis metrics scrape (default: all)
  BENCH_SECONDS=10        length of one timed run (1..10)
  BENCH_ROUNDS=3          rounds of A/B/C (the issue asks for >= 3)
  BENCH_SLOW_STREAMS=10000  streams in stream10k (reduced to what the fd hard
                          limit allows unless BENCH_SLOW_STRICT=1)
  BENCH_SLOW_SECONDS=20   length of a slow stream (one chunk a second);
                          default 2 x BENCH_SECONDS when that is under 10
  BENCH_SLOW_RAMP=2500    new connections per second when opening them
  BENCH_LEDGER_ROWS=10000000  rows in the start-up and usage ledger (cached in build-bench/)
  BENCH_INSTR_REQUESTS=2000   requests counted under callgrind
  BENCH_NO_BUILD=1        do not run make first
  BENCH_KEEP=1            keep the per-run directories under build-bench/run/
Loopback only; every process it starts is stopped by its PID; every run is
bounded in time.
"""
import calendar
import decimal
import hashlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time

import bench_tls

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH_DIR = os.path.join(ROOT, "tests", "bench")
OUT = os.path.join(ROOT, "build-bench")
RUN = os.path.join(OUT, "run")
PINMETER = os.environ.get("BENCH_PINMETER", os.path.join(ROOT, "build", "pinmeter"))
MOCKUP = os.path.join(OUT, "mockup")
STREAMLOAD = os.path.join(OUT, "streamload")
POST_LUA = os.path.join(BENCH_DIR, "post.lua")
NGINX_TEMPLATE = os.path.join(BENCH_DIR, "nginx.conf.in")

KEY = "pm-bench-7d1f3c0a9e5b4d2c8a6f1e0b3c5d7a9f"
UPSTREAM_KEY = "bench-upstream-key"
MODEL = "anthropic/claude-haiku-4-5"
RATES = [
    {"model_id": "anthropic/claude-haiku-4-5", "input_usd_per_1m_tokens": 1.0,
     "output_usd_per_1m_tokens": 5.0, "cache_read_usd_per_1m_tokens": 0.1},
    {"model_id": "anthropic/claude-sonnet-4-6", "input_usd_per_1m_tokens": 3.0,
     "output_usd_per_1m_tokens": 15.0, "cache_read_usd_per_1m_tokens": 0.3},
]
ALL_SCENARIOS = ["c1", "c64", "ledger", "stream64", "stream1k", "stream10k", "startup", "usage",
                 "instr", "redis", "metrics", "scrape", "tls64", "tlsstream64", "h2", "workers2"]
CHAT_BODY = json.dumps({"model": MODEL, "messages": [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say hello in five words."}],
    "max_tokens": 64, "temperature": 0.2}, separators=(",", ":")).encode()


def env_int(name, default, lo, hi):
    try:
        v = int(os.environ.get(name, default))
    except ValueError:
        sys.exit(f"bench: {name} must be an integer")
    if not lo <= v <= hi:
        sys.exit(f"bench: {name}={v} is out of range {lo}..{hi}")
    return v


SECONDS = env_int("BENCH_SECONDS", 10, 1, 10)
ROUNDS = env_int("BENCH_ROUNDS", 3, 1, 20)
SLOW_STREAMS = env_int("BENCH_SLOW_STREAMS", 10000, 1, 200000)
SLOW_SECONDS = env_int("BENCH_SLOW_SECONDS", 20 if SECONDS >= 10 else max(3, 2 * SECONDS), 2, 120)
SLOW_RAMP = env_int("BENCH_SLOW_RAMP", 2500, 0, 1000000)
LEDGER_ROWS = env_int("BENCH_LEDGER_ROWS", 10_000_000, 1000, 100_000_000)
INSTR_REQUESTS = env_int("BENCH_INSTR_REQUESTS", 2000, 100, 1_000_000)
KEEP = os.environ.get("BENCH_KEEP") == "1"
ONLY = [s.strip() for s in os.environ.get("BENCH_ONLY", ",".join(ALL_SCENARIOS)).split(",") if s.strip()]
for s in ONLY:
    if s not in ALL_SCENARIOS:
        sys.exit(f"bench: unknown scenario {s!r} in BENCH_ONLY (known: {', '.join(ALL_SCENARIOS)})")

CPUS = sorted(os.sched_getaffinity(0))
LOAD_CPU = CPUS[0]
PROXY_CPU = CPUS[1] if len(CPUS) > 1 else CPUS[0]
ALL_CPUS = ",".join(str(c) for c in CPUS)     # "no pinning": any CPU this run may use
CLK_TCK = os.sysconf("SC_CLK_TCK")

NOTES = []          # things noticed, printed under the table
ROWS = []           # the table
RAW = {}            # every per-run figure, written to results.json
STARTED = []        # every process we started (Popen), stopped at exit


def note(msg):
    NOTES.append(msg)
    print(f"  note: {msg}", flush=True)


def log(msg):
    print(msg, flush=True)


# ---- processes ---------------------------------------------------------------

def start(argv, cpu, out_path, env=None, stdout=None):
    """Starts argv pinned to cpu (a CPU number or a taskset list: ALL_CPUS
    leaves it unpinned); stderr (and stdout unless given) to out_path."""
    f = open(out_path, "ab")
    p = subprocess.Popen(["taskset", "-c", str(cpu)] + argv, stdin=subprocess.DEVNULL,
                         stdout=stdout if stdout is not None else f, stderr=f,
                         env=env if env is not None else os.environ.copy())
    p._bench_log = f
    STARTED.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=15):
    """Stops a process we started, by its PID; SIGKILL if it does not exit."""
    if p is None:
        return None
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            note(f"pid {p.pid} ({os.path.basename(p.args[3])}) ignored signal {sig}; killed")
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
    if p in STARTED:
        STARTED.remove(p)
    p._bench_log.close()
    return p.returncode


def stop_all():
    for p in list(STARTED):
        try:
            stop(p, timeout=5)
        except Exception:
            pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(port, path, timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def mock_wait(mock):
    """The mock's request-wait figures since the last call (GET /__wait), {} if none."""
    try:
        st, body = http_get(mock.port, "/__wait")
        return json.loads(body) if st == 200 else {}
    except (OSError, ValueError):
        return {}


def wait_http(port, path, timeout, proc=None, poll_s=0.002):
    """Polls until GET path answers 200; returns seconds waited or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            return None
        try:
            st, _ = http_get(port, path, timeout=1.0)
            if st == 200:
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(poll_s)
    return None


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])       # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def hwm_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def fd_hard_limit():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ---- the mock upstream -----------------------------------------------------------

class Mock:
    def __init__(self, lifetime_s):
        self.dir = os.path.join(RUN, "mock")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = start([MOCKUP, "--port", "0", "--seconds", str(int(lifetime_s)),
                           "--model", MODEL], LOAD_CPU, os.path.join(self.dir, "mock.log"),
                          stdout=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        m = re.match(r"READY (\d+)", line)
        if not m:
            stop(self.proc)
            raise RuntimeError("mockup did not start: " + line)
        self.port = int(m.group(1))

    def stop(self):
        stop(self.proc)


# ---- targets ------------------------------------------------------------------

class Direct:
    name = "direct"

    def __init__(self, mock):
        self.mock = mock
        self.port = mock.port
        self.pids = []
        self.proc = None

    def start(self, max_conns=1024):
        return True

    def alive(self):
        return True

    def stop(self):
        pass


class Nginx:
    name = "nginx"

    def __init__(self, mock, master_process=True, workers=1, cpu=None):
        self.mock = mock
        self.master_process = master_process
        self.workers = workers          # worker_processes
        self.cpu = PROXY_CPU if cpu is None else cpu
        self.proc = None

    @staticmethod
    def available():
        return shutil.which("nginx") is not None

    def write_conf(self, d, max_conns):
        hard = fd_hard_limit()
        subst = {
            "@USER_LINE@": "user root;" if os.geteuid() == 0 else "",
            "@NOFILE@": str(hard),
            "@WORKER_CONNECTIONS@": str(max(1024, min(hard, 2 * max_conns + 1300))),
            "@MASTER_PROCESS@": "on" if self.master_process else "off",
            "@UPSTREAM_PORT@": str(self.mock.port),
            "@WORKERS@": str(self.workers),
            # an upstream over TLS (bench_tls.TlsFront): verified, sessions reused
            "@SCHEME@": getattr(self.mock, "scheme", "http"),
            "@PROXY_SSL@": getattr(self.mock, "nginx_ssl", ""),
            "@PORT@": str(self.port),
            "@DIR@": d,
        }
        with open(NGINX_TEMPLATE) as f:
            text = f.read()
        for k, v in subst.items():
            text = text.replace(k, v)
        for sub in ("client_body", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def argv(self, conf):
        return [shutil.which("nginx"), "-p", self.dir, "-c", conf, "-e",
                os.path.join(self.dir, "nginx-error.log")]

    def start(self, max_conns=1024, tag="run"):
        self.dir = os.path.join(RUN, f"nginx-{tag}")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.port = free_port()
        conf = self.write_conf(self.dir, max_conns)
        self.proc = start(self.argv(conf), self.cpu, os.path.join(self.dir, "stderr.log"))
        if wait_http(self.port, "/healthz", 10, self.proc) is None:
            note(f"nginx did not start: {self.tail()}")
            stop(self.proc)
            return False
        self.pids = [self.proc.pid] + children(self.proc.pid)
        return True

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def tail(self):
        try:
            with open(os.path.join(self.dir, "nginx-error.log")) as f:
                return " | ".join(f.read().splitlines()[-3:])
        except OSError:
            return "(no log)"

    def stop(self):
        stop(self.proc)
        errs = []
        try:
            with open(os.path.join(self.dir, "nginx-error.log")) as f:
                errs = [l for l in f if "[error]" in l or "[crit]" in l or "[alert]" in l
                        or "[emerg]" in l]
        except OSError:
            pass
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)
        return errs


REQ_LINE = re.compile(r" stream=(\d) status=(\d+) state=(\w+) ")
BORING = ("listening on", "account sync off", "stopping: draining", "pinmeter: stopped")
# with "budget_store": the start-up lines of a healthy store
BORING_RE = re.compile(r"budget store: Redis at \S+ db \d+, instance \S+, lease \d+ ms"
                       r"|budget store: Redis at \S+ reachable; serving")


class Pinmeter:
    name = "pinmeter"

    def __init__(self, mock, cpu=None):
        self.mock = mock
        self.cpu = PROXY_CPU if cpu is None else cpu
        self.proc = None
        self.extra = {}               # config keys added to (or replacing) the defaults

    def write_conf(self, d, max_conns, ledger=None, listen_port=None):
        with open(os.path.join(d, "rates.json"), "w") as f:
            json.dump(RATES, f)
        cfg = {
            "listen": f"127.0.0.1:{listen_port}",
            "upstream": {"base_url": f"{getattr(self.mock, 'scheme', 'http')}://127.0.0.1:"
                                     f"{self.mock.port}",
                         "llm_key_env": "PINMETER_BENCH_UPSTREAM_KEY", "timeout_s": 300},
            "ledger": ledger or os.path.join(d, "ledger.db"),
            "rates_file": os.path.join(d, "rates.json"),
            "credits_per_usd": 1.0,
            "default_max_tokens": 4096,
            "unknown_model": "reject",
            "admin_token_env": "",
            "account": {"jwt_env": "PINMETER_BENCH_NO_JWT", "sync_s": 30},
            "max_connections": max(1024, max_conns + 512),
            "client_timeout_s": 300,
            "drain_s": 2,
            # the pinned scenarios compare one loop with nginx's one worker
            "workers": 1,
            "teams": [{"name": "bench", "cap": 1000000000, "period": "month",
                       "keys": [{"id": "bench", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}]}],
        }
        if getattr(self.mock, "ca_file", None):
            cfg["upstream"]["ca_file"] = self.mock.ca_file
        cfg.update(self.extra)
        path = os.path.join(d, "pinmeter.json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)
        return path

    @staticmethod
    def env():
        e = {k: v for k, v in os.environ.items()
             if k not in ("PINATA_JWT", "PINMETER_ADMIN_TOKEN", "PINATA_LLM_KEY")}
        e["PINMETER_BENCH_UPSTREAM_KEY"] = UPSTREAM_KEY
        return e

    def start(self, max_conns=1024, tag="run", ledger=None, wrapper=None, ready_timeout=15):
        self.dir = os.path.join(RUN, f"pinmeter-{tag}")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.port = free_port()
        conf = self.write_conf(self.dir, max_conns, ledger, self.port)
        self.ledger = ledger or os.path.join(self.dir, "ledger.db")
        self.log_path = os.path.join(self.dir, "pinmeter.log")
        argv = (wrapper or []) + [PINMETER, "serve", "-c", conf]
        self.t_exec = time.monotonic()
        self.proc = start(argv, self.cpu, self.log_path, env=self.env())
        self.ready_s = wait_http(self.port, "/healthz", ready_timeout, self.proc)
        if self.ready_s is None:
            note(f"pinmeter did not become ready: {self.tail()}")
            stop(self.proc)
            return False
        self.pids = [self.proc.pid]
        return True

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n=3):
        try:
            with open(self.log_path, errors="replace") as f:
                return " | ".join(l.strip() for l in f.read().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def backlog(self):
        try:
            st, body = http_get(self.port, "/healthz")
            return json.loads(body).get("ledger_backlog")
        except (OSError, ValueError):
            return None

    def stop(self):
        """Stops it; returns a summary of its log: request statuses/states
        and any line that is neither a request record nor start/stop."""
        rc = stop(self.proc)
        statuses, others = {}, []
        try:
            with open(self.log_path, errors="replace") as f:
                for line in f:
                    m = REQ_LINE.search(line)
                    if m:
                        k = f"{'stream' if m.group(1) == '1' else 'plain'} {m.group(2)} {m.group(3)}"
                        statuses[k] = statuses.get(k, 0) + 1
                    elif not any(b in line for b in BORING) and not BORING_RE.search(line):
                        others.append(line.strip())
        except OSError:
            pass
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)
        return {"rc": rc, "statuses": statuses, "others": others}


# ---- load generators ------------------------------------------------------------

def wrk(port, conns, seconds, cpu=None, threads=1):
    env = os.environ.copy()
    env["BENCH_KEY"] = KEY
    env["BENCH_MODEL"] = MODEL
    argv = ["taskset", "-c", str(LOAD_CPU if cpu is None else cpu), "wrk", f"-t{threads}",
            f"-c{conns}", f"-d{seconds}s",
            "--latency", "-s", POST_LUA, f"http://127.0.0.1:{port}/"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, env=env)
    m = re.search(r"^WRK (.*)$", r.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk failed: {r.stdout[-300:]} {r.stderr[-300:]}")
    out = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    out["errors"] = sum(out[k] for k in out if k.startswith("err_"))
    return out


def streamload(port, conns, chunks, interval_ms, duration, seconds, ramp=0):
    argv = ["taskset", "-c", str(LOAD_CPU), STREAMLOAD, "--port", str(port), "--key", KEY,
            "--model", MODEL, "--conns", str(conns), "--chunks", str(chunks),
            "--interval-ms", str(interval_ms), "--duration", str(duration),
            "--seconds", str(seconds), "--ramp", str(ramp), "--quiet"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^STREAMLOAD (.*)$", r.stdout, re.M)
    if not m:
        raise RuntimeError(f"streamload failed: {r.stdout[-300:]} {r.stderr[-300:]}")
    return {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


# ---- figures and the table ---------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def added(runs, target, key):
    """Per-round target[key] - direct[key], medianed."""
    out = []
    for d, t in zip(runs["direct"], runs.get(target, [])):
        if d and t and d.get(key) is not None and t.get(key) is not None and d[key] >= 0 and t[key] >= 0:
            out.append(t[key] - d[key])
    return med(out)


def fig(runs, target, key):
    return med([r.get(key) for r in runs.get(target, []) if r])


def ratio(pm, ng):
    if pm is None or ng is None or ng == 0:
        return None
    return pm / ng


def row(scenario, figure, unit, direct, nginx, pinmeter, target, ok, rat="auto", fmt="{:.3f}"):
    if rat == "auto":
        rat = ratio(pinmeter, nginx)
    ROWS.append({"scenario": scenario, "figure": figure, "unit": unit, "direct": direct,
                 "nginx": nginx, "pinmeter": pinmeter, "ratio": rat, "target": target,
                 "result": "n/a" if ok is None else ("PASS" if ok else "MISS"), "fmt": fmt})


def fmtv(v, f):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return f.format(v)


def print_table():
    head = ["scenario", "figure", "direct", "nginx", "pinmeter", "pm/nginx", "target", "result"]
    lines = []
    for r in ROWS:
        lines.append([r["scenario"], f"{r['figure']} ({r['unit']})" if r["unit"] else r["figure"],
                      fmtv(r["direct"], r["fmt"]), fmtv(r["nginx"], r["fmt"]),
                      fmtv(r["pinmeter"], r["fmt"]),
                      fmtv(r["ratio"], "{:.2f}×") if r["ratio"] is not None else "–",
                      r["target"], r["result"]])
    widths = [max(len(head[i]), *(len(l[i]) for l in lines)) if lines else len(head[i])
              for i in range(len(head))]
    def fmt_line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [fmt_line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt_line(l) for l in lines]
    return "\n".join(out)


# ---- scenarios ----------------------------------------------------------------

def targets_for(mock, with_direct=True, with_nginx=True):
    ts = [Direct(mock)] if with_direct else []
    if with_nginx and Nginx.available():
        ts.append(Nginx(mock))
    ts.append(Pinmeter(mock))
    return ts


def check_after(t, scen, rnd, summary):
    """Notes a crash or unexpected log lines of a proxy run."""
    if summary is None:
        return
    if isinstance(t, Pinmeter):
        rc = summary.get("rc")
        if rc not in (0, None):
            note(f"{scen} round {rnd}: pinmeter exited with status {rc}")
        bad = {k: v for k, v in summary["statuses"].items() if " 200 settled" not in k}
        if bad:
            note(f"{scen} round {rnd}: pinmeter records other than 200/settled: {bad}")
        if summary["others"]:
            note(f"{scen} round {rnd}: pinmeter logged {len(summary['others'])} other line(s), "
                 f"e.g. {summary['others'][:3]}")
    elif isinstance(t, Nginx) and summary:
        note(f"{scen} round {rnd}: nginx logged {len(summary)} error line(s), e.g. "
             f"{[s.strip()[:160] for s in summary[:2]]}")


def run_rounds(scen, mock, targets, one_run, max_conns=1024, alternate=False):
    """one_run(target) -> dict of figures, called with the target started.
    alternate: every other round runs the targets in reverse order (for an A/B
    pair whose ratio should not carry the order's bias)."""
    runs = {t.name: [] for t in targets}
    for rnd in range(1, ROUNDS + 1):
        order = targets[::-1] if alternate and rnd % 2 == 0 else targets
        for t in order:
            tag = f"{scen}-{rnd}"
            if not (t.start(max_conns=max_conns, tag=tag) if not isinstance(t, Direct) else True):
                runs[t.name].append(None)
                continue
            res = None
            try:
                res = one_run(t)
            except Exception as e:       # a failed run is a figure too
                note(f"{scen} round {rnd} {t.name}: run failed: {e}")
            if res is not None and not t.alive():
                note(f"{scen} round {rnd}: {t.name} died during the run "
                     f"(exit {t.proc.returncode}); last log: "
                     f"{t.tail() if hasattr(t, 'tail') else ''}")
                res["died"] = 1
            summary = t.stop()
            check_after(t, scen, rnd, summary)
            runs[t.name].append(res)
            log(f"  {scen} round {rnd} {t.name:8s} " +
                (" ".join(f"{k}={v:.6g}" for k, v in res.items() if isinstance(v, (int, float)))
                 if res else "FAILED"))
    RAW[scen] = runs
    return runs


def measure(t, fn):
    """Runs fn() while counting the proxy's CPU; adds cpu_s and hwm_kib."""
    pids = t.pids if not isinstance(t, Direct) else []
    if isinstance(t, Nginx):
        pids = [t.proc.pid] + children(t.proc.pid)
    c0 = cpu_ticks(pids)
    t0 = time.monotonic()
    res = fn()
    res["wall_s"] = time.monotonic() - t0
    if pids:
        res["cpu_s"] = (cpu_ticks(pids) - c0) / CLK_TCK
        res["hwm_kib"] = hwm_kib(pids)
    return res


def scen_c1(mock):
    log(f"== non-streaming, concurrency 1 ({ROUNDS} rounds x {SECONDS} s)")

    def one(t):
        wrk(t.port, 1, 1)                              # warm-up
        return measure(t, lambda: wrk(t.port, 1, SECONDS))
    runs = run_rounds("c1", mock, targets_for(mock), one)
    for key, label in (("p50_us", "added latency p50"), ("p99_us", "added latency p99")):
        d = fig(runs, "direct", key)
        ng, pm = added(runs, "nginx", key), added(runs, "pinmeter", key)
        to_ms = lambda v: None if v is None else v / 1000
        rat = ratio(pm, ng)
        row("non-stream c=1", label, "ms", to_ms(d), to_ms(ng), to_ms(pm),
            "≤ 1.5× nginx", None if rat is None else rat <= 1.5)
    check_errors("c1", runs, "errors")


def check_errors(scen, runs, key):
    for name, rs in runs.items():
        errs = sum(r.get(key, 0) for r in rs if r)
        if errs:
            note(f"{scen}: {name} had {int(errs)} error(s) over {len(rs)} run(s)")


def ledger_settled(path):
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("SELECT count(*) FROM requests WHERE state = 'settled'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as e:
        note(f"ledger count failed: {e}")
        return None


def wait_backlog(t, limit_s):
    """Waits until pinmeter's ledger backlog (from /healthz) is 0; seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s and (t.backlog() or 0) > 0:
        time.sleep(0.01)
    return time.monotonic() - t0


def scen_c64(mock, do_c64, do_ledger):
    log(f"== non-streaming, concurrency 64 ({ROUNDS} rounds x {SECONDS} s)"
        + ("" if do_c64 else " (pinmeter only, for the ledger figure)"))

    def one(t):
        wrk(t.port, 64, 1)                             # warm-up
        before = None
        if isinstance(t, Pinmeter) and do_ledger:
            wait_backlog(t, 10)                        # warm-up rows settled first
            before = ledger_settled(t.ledger)
        res = measure(t, lambda: wrk(t.port, 64, SECONDS))
        if res["requests"] > 0 and "cpu_s" in res:
            res["cpu_us_per_req"] = res["cpu_s"] * 1e6 / res["requests"]
        if before is not None:
            after = ledger_settled(t.ledger)
            if after is not None:
                res["ledger_rows"] = after - before
                res["ledger_rows_per_s"] = (after - before) / (res["duration_us"] / 1e6)
                # wrk does not count replies in flight when it stops, so the
                # rows can outnumber its requests by up to 64
                res["ledger_lag_rows"] = max(0, res["requests"] - (after - before))
                res["ledger_drain_s"] = wait_backlog(t, 20)
        return res
    targets = targets_for(mock, with_direct=do_c64, with_nginx=do_c64)
    runs = run_rounds("c64", mock, targets, one)
    if do_c64:
        d_rps, ng_rps, pm_rps = (fig(runs, n, "rps") for n in ("direct", "nginx", "pinmeter"))
        rat = ratio(pm_rps, ng_rps)
        row("non-stream c=64", "throughput", "req/s", d_rps, ng_rps, pm_rps, "≥ 0.8× nginx",
            None if rat is None else rat >= 0.8, fmt="{:,.0f}")
        ng, pm = added(runs, "nginx", "p99_us"), added(runs, "pinmeter", "p99_us")
        d = fig(runs, "direct", "p99_us")
        rat = ratio(pm, ng)
        row("non-stream c=64", "added latency p99", "ms", d and d / 1000, ng and ng / 1000,
            pm and pm / 1000, "≤ 1.5× nginx", None if rat is None else rat <= 1.5)
        ng, pm = fig(runs, "nginx", "cpu_us_per_req"), fig(runs, "pinmeter", "cpu_us_per_req")
        rat = ratio(pm, ng)
        row("non-stream c=64", "proxy CPU per request", "µs", None, ng, pm, "≤ 2× nginx",
            None if rat is None else rat <= 2.0,
            fmt="{:.1f}")
        check_errors("c64", runs, "errors")
    if do_ledger:
        lr = fig(runs, "pinmeter", "ledger_rows_per_s")
        lag = fig(runs, "pinmeter", "ledger_lag_rows")
        drain = fig(runs, "pinmeter", "ledger_drain_s")
        micro = ledger_micro_bench()
        if micro is not None:
            row("ledger", "settled rows/s, writer thread (make ledger-bench)", "rows/s", None,
                None, micro, "≥ 200,000/s", micro >= 200000, rat=None, fmt="{:,.0f}")
        row("ledger", "settled rows/s end to end during c=64", "rows/s", None, None, lr,
            "≥ 20,000/s" if micro is None else "(capped by c=64 req/s)",
            (None if lr is None else lr >= 20000) if micro is None else None,
            rat=None, fmt="{:,.0f}")
        sync = ledger_sync_policy()
        note(f"ledger: WAL, {sync} (no fsync per commit). End to end: rows settled per second "
             f"while c=64 ran; at the end of a run a median of {fmt0(lag)} requests were "
             f"answered but not yet settled, and the writer's backlog drained in {fmt3(drain)} s; "
             f"this figure cannot exceed pinmeter's own c=64 request rate."
             + ("" if micro is None else " The writer thread alone: `make ledger-bench` "
                "(200,000 settled records from 4 threads, median of the rounds)."))


def ledger_micro_bench():
    """The lead's writer-thread micro-benchmark (`make ledger-bench`), on the
    proxy's core, median of the rounds; None when the target does not exist."""
    probe = subprocess.run(["make", "-C", ROOT, "-n", "ledger-bench"], capture_output=True,
                           text=True, timeout=60)
    if probe.returncode != 0:
        return None
    vals = []
    for rnd in range(ROUNDS):
        r = subprocess.run(["taskset", "-c", str(PROXY_CPU), "make", "--no-print-directory",
                            "-s", "-C", ROOT, "ledger-bench"], capture_output=True, text=True,
                           timeout=600)
        m = re.search(r"settled_per_s=([\d.]+)", r.stdout)
        if r.returncode != 0 or not m:
            note(f"ledger: make ledger-bench failed: {(r.stdout + r.stderr)[-200:]}")
            return None
        vals.append(float(m.group(1)))
        log(f"  ledger-bench round {rnd + 1}: {r.stdout.strip().splitlines()[-1]}")
    RAW["ledger_bench"] = vals
    return med(vals)


def fmt0(v):
    return "–" if v is None else f"{v:,.0f}"


def fmt3(v):
    return "–" if v is None else f"{v:.3f}"


def ledger_sync_policy():
    try:
        with open(os.path.join(ROOT, "src", "ledger.c")) as f:
            m = re.search(r"synchronous\s*=\s*(\w+)", f.read())
        return f"synchronous={m.group(1)} as src/ledger.c sets it" if m else "synchronous=?"
    except OSError:
        return "synchronous=?"


def scen_stream64(mock):
    log(f"== streaming, 64 concurrent x 50 chunks 2 ms apart ({ROUNDS} rounds x {SECONDS} s)")

    def one(t):
        streamload(t.port, 64, 2, 1, 0, 20)           # warm-up: connections, caches
        return measure(t, lambda: streamload(t.port, 64, 50, 2, SECONDS, SECONDS + 20))
    runs = run_rounds("stream64", mock, targets_for(mock), one)
    d = fig(runs, "direct", "ttfb_p50_us")
    ng, pm = added(runs, "nginx", "ttfb_p50_us"), added(runs, "pinmeter", "ttfb_p50_us")
    row("stream 64×50×2ms", "added TTFB p50", "ms", d and d / 1000, ng and ng / 1000,
        pm and pm / 1000, "≤ 0.3 ms and ≤ 2× nginx",
        None if pm is None or ng is None else pm <= 300 and pm <= 2 * max(ng, 0))
    # total time relative to direct, per round
    def rel(name):
        return med([t["total_p50_us"] / dd["total_p50_us"] - 1 for dd, t in
                    zip(runs["direct"], runs.get(name, [])) if dd and t and dd["total_p50_us"] > 0
                    and t["total_p50_us"] >= 0])
    d_tot = fig(runs, "direct", "total_p50_us")
    ng_rel, pm_rel = rel("nginx"), rel("pinmeter")
    row("stream 64×50×2ms", "total time p50 vs direct", "%", d_tot and d_tot / 1000,
        None if ng_rel is None else f"{100 * ng_rel:+.2f}%",
        None if pm_rel is None else f"{100 * pm_rel:+.2f}%",
        "within 2 % (direct in ms)", None if pm_rel is None else abs(pm_rel) <= 0.02, rat=None)
    dc, ngc, pmc = (fig(runs, n, "coalesced_pct") for n in ("direct", "nginx", "pinmeter"))
    row("stream 64×50×2ms", "chunk gaps < ½ms (coalesced)", "%", dc, ngc, pmc,
        "≤ direct + 1 pt", None if pmc is None or dc is None else pmc <= dc + 1.0, rat=None,
        fmt="{:.2f}")
    dg, ngg, pmg = (fig(runs, n, "gap_p50_us") for n in ("direct", "nginx", "pinmeter"))
    row("stream 64×50×2ms", "chunk gap p50 (interval 2 ms)", "ms", dg and dg / 1000,
        ngg and ngg / 1000, pmg and pmg / 1000, "(reported)", None, rat=None)
    stream_errors("stream64", runs)


def stream_errors(scen, runs):
    for name, rs in runs.items():
        errs = sum(r.get("errors", 0) for r in rs if r)
        if errs:
            kinds = {}
            for r in rs:
                if r:
                    for k in ("e_connect", "e_status", "e_closed", "e_short", "e_unfinished", "e_proto"):
                        kinds[k] = kinds.get(k, 0) + int(r.get(k, 0))
            st = [int(r.get("first_status", 0)) for r in rs if r and r.get("first_status")]
            note(f"{scen}: {name} had {int(errs)} failed stream(s): "
                 f"{ {k: v for k, v in kinds.items() if v} }" + (f", status {st[0]}" if st else ""))


def scen_stream1k(mock):
    log(f"== streaming, 1,000 concurrent x 50 chunks 2 ms apart ({ROUNDS} rounds x {SECONDS} s)")

    def one(t):
        streamload(t.port, 1000, 2, 1, 0, 30)         # warm-up
        mock_wait(mock)                                # clears the mock's wait figures
        res = measure(t, lambda: streamload(t.port, 1000, 50, 2, SECONDS, SECONDS + 30))
        if res.get("ok", 0) > 0 and "cpu_s" in res:
            res["cpu_us_per_stream"] = res["cpu_s"] * 1e6 / res["ok"]
        w = mock_wait(mock)
        if w.get("n"):
            res["mock_wait_p50_us"] = w["p50_us"]
        return res
    runs = run_rounds("stream1k", mock, targets_for(mock), one, max_conns=1000)
    d = fig(runs, "direct", "ttfb_p50_us")
    ng, pm = added(runs, "nginx", "ttfb_p50_us"), added(runs, "pinmeter", "ttfb_p50_us")
    row("stream 1000×50×2ms", "added TTFB p50", "ms", d and d / 1000, ng and ng / 1000,
        pm and pm / 1000, "≤ nginx", None if pm is None or ng is None else pm <= ng)
    ng, pm = fig(runs, "nginx", "cpu_us_per_stream"), fig(runs, "pinmeter", "cpu_us_per_stream")
    row("stream 1000×50×2ms", "proxy CPU per stream", "µs", None, ng, pm, "≤ 1.25× nginx",
        None if pm is None or ng is None else pm <= 1.25 * ng, fmt="{:,.0f}")
    dt, ngt, pmt = (fig(runs, n, "total_p50_us") for n in ("direct", "nginx", "pinmeter"))
    row("stream 1000×50×2ms", "total time p50 (ideal 98 ms)", "ms", dt and dt / 1000,
        ngt and ngt / 1000, pmt and pmt / 1000, "(reported)", None)
    ds, ngs, pms = (fig(runs, n, "ok") for n in ("direct", "nginx", "pinmeter"))
    row("stream 1000×50×2ms", "streams completed per run", "", ds, ngs, pms, "(reported)", None,
        fmt="{:,.0f}")
    dw, ngw, pmw = (fig(runs, n, "mock_wait_p50_us") for n in ("direct", "nginx", "pinmeter"))
    row("stream 1000×50×2ms", "mock: a request's wait to be read, p50", "ms", dw and dw / 1000,
        ngw and ngw / 1000, pmw and pmw / 1000, "(reported)", None)
    if ngw is not None and pmw is not None:
        note(f"stream1k: the mock on CPU {LOAD_CPU} reads a request {ngw / 1000:.1f} ms after it "
             f"arrives behind nginx and {pmw / 1000:.1f} ms behind pinmeter (p50, SO_TIMESTAMPNS); "
             f"that wait is part of each TTFB, and it grows with the streams a proxy completes")
    if dt and dt > 150000:
        note(f"stream1k: direct streams take {dt / 1000:.0f} ms for 98 ms of chunks: the mock and "
             f"load generator saturate CPU {LOAD_CPU} at 1,000 × 500 chunks/s, so this scenario "
             f"compares proxies at the rate that core can drive, not at the nominal 500k chunks/s")
    stream_errors("stream1k", runs)


def scen_stream10k(mock):
    n = SLOW_STREAMS
    hard = fd_hard_limit()
    spare = 1300              # nginx's idle upstream keep-alive pool (1,024) and the rest
    need = 2 * n + spare
    label = f"{n:,}"
    if hard < need and os.environ.get("BENCH_SLOW_STRICT") != "1":
        n = (hard - spare) // 2
        label = f"{n:,} (fd limit)"
        note(f"stream10k: RLIMIT_NOFILE hard limit is {hard}; a proxy needs a client and an "
             f"upstream socket per stream plus spare (2 × {SLOW_STREAMS} + {spare}), so {n} "
             f"streams were run. "
             f"Raise the hard limit (e.g. `ulimit -Hn 65536` as root, or LimitNOFILE=) to run "
             f"{SLOW_STREAMS}; BENCH_SLOW_STRICT=1 runs {SLOW_STREAMS} anyway.")
    # every connection is open before the first stream ends: all n at once
    ramp = max(SLOW_RAMP, int(2 * n / SLOW_SECONDS) + 1) if SLOW_RAMP else 0
    ramp_s = n / ramp if ramp else 0
    limit = int(SLOW_SECONDS + ramp_s + 30)
    log(f"== streaming, {n} concurrent slow streams, a chunk a second for {SLOW_SECONDS} s "
        f"({ROUNDS} rounds, up to {limit} s each)")

    def one(t):
        res = measure(t, lambda: streamload(t.port, n, SLOW_SECONDS, 1000, 0, limit, ramp))
        if "cpu_s" in res:
            res["cpu_cores"] = res["cpu_s"] / res["wall_s"]
            res["hwm_mib"] = res["hwm_kib"] / 1024
            res["kib_per_stream"] = res["hwm_kib"] / n
        return res
    runs = run_rounds("stream10k", mock, targets_for(mock), one, max_conns=n)
    sc = f"stream {label} slow"
    de, nge, pme = (fig(runs, x, "errors") for x in ("direct", "nginx", "pinmeter"))
    row(sc, "failed streams", "", de, nge, pme, "0", None if pme is None else pme == 0,
        rat=None, fmt="{:,.0f}")
    dp, ngp, pmp = (fig(runs, x, "peak") for x in ("direct", "nginx", "pinmeter"))
    row(sc, "peak concurrent streams", "", dp, ngp, pmp, f"{n:,}", None if pmp is None else pmp >= n,
        rat=None, fmt="{:,.0f}")
    ng, pm = fig(runs, "nginx", "hwm_mib"), fig(runs, "pinmeter", "hwm_mib")
    row(sc, "proxy peak RSS (VmHWM)", "MiB", None, ng, pm, "< 400 MiB",
        None if pm is None else pm < 400, fmt="{:.1f}")
    ng, pm = fig(runs, "nginx", "kib_per_stream"), fig(runs, "pinmeter", "kib_per_stream")
    row(sc, "proxy RSS per stream", "KiB", None, ng, pm, "< 40 KiB",
        None if pm is None else pm < 40, fmt="{:.1f}")
    d, ng, pm = (fig(runs, x, "ttfb_p50_us") for x in ("direct", "nginx", "pinmeter"))
    row(sc, "TTFB p50", "ms", d and d / 1000, ng and ng / 1000, pm and pm / 1000, "(reported)", None)
    d, ng, pm = (fig(runs, x, "total_p50_us") for x in ("direct", "nginx", "pinmeter"))
    row(sc, f"stream duration p50 (nominal {SLOW_SECONDS - 1} s)", "s", d and d / 1e6,
        ng and ng / 1e6, pm and pm / 1e6, "(reported)", None)
    ng, pm = fig(runs, "nginx", "cpu_cores"), fig(runs, "pinmeter", "cpu_cores")
    row(sc, "proxy CPU, mean over the run", "cores", None, ng, pm, "well under 1 (< 0.25)",
        None if pm is None else pm < 0.25, fmt="{:.3f}")
    stream_errors("stream10k", runs)


# ---- start-up with a big ledger ------------------------------------------------------

def make_big_ledger(mock):
    """Creates (once) a LEDGER_ROWS-row ledger with pinmeter's own schema and
    returns its path, or None with a note."""
    pm = Pinmeter(mock)
    if not pm.start(tag="schema"):
        return None
    empty = pm.ledger
    stop(pm.proc)
    con = sqlite3.connect(empty)
    schema = "\n".join(r[0] for r in con.execute(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"))
    con.close()
    h = hashlib.sha256(schema.encode()).hexdigest()[:12]
    path = os.path.join(OUT, f"ledger-{LEDGER_ROWS}-{h}.db")
    if os.path.exists(path):
        shutil.rmtree(pm.dir, ignore_errors=True)
        return path
    log(f"  generating a {LEDGER_ROWS:,}-row ledger once (cached as {os.path.relpath(path, ROOT)})")
    tmp = path + ".tmp"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(tmp + suffix):
            os.remove(tmp + suffix)
    con = sqlite3.connect(empty)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    shutil.copy(empty, tmp)
    shutil.rmtree(pm.dir, ignore_errors=True)
    t0 = time.monotonic()
    now_ms = int(time.time() * 1000)
    span_ms = 90 * 86400 * 1000            # rows spread over the last 90 days
    try:
        con = sqlite3.connect(tmp, isolation_level=None)
        con.execute("PRAGMA synchronous=OFF")
        con.execute("PRAGMA cache_size=-262144")
        # The rows go in without the requests' secondary indexes, which are
        # built once afterwards (sorted: much faster than row by row).
        indexes = [r for r in con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'requests'"
            " AND sql IS NOT NULL")]
        for name, _ in indexes:
            con.execute(f'DROP INDEX "{name}"')
        con.execute("BEGIN")
        con.execute(f"""
            WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {LEDGER_ROWS})
            INSERT INTO requests(id, started_ms, ended_ms, team, key_id, model, stream, status,
                                 prompt_tokens, completion_tokens, cached_tokens, reserved_nanos,
                                 charged_nanos, state, upstream_id, latency_ms)
            SELECT printf('bench-%012d', i),
                   {now_ms - span_ms} + i * {span_ms // LEDGER_ROWS},
                   {now_ms - span_ms} + i * {span_ms // LEDGER_ROWS} + 900,
                   CASE i % 4 WHEN 0 THEN 'bench' WHEN 1 THEN 'research' WHEN 2 THEN 'support'
                              ELSE 'ops' END,
                   'k' || (i % 16), '{MODEL}', i % 3 = 0, 200, 1200, 300, 100, 20000000,
                   1800000, 'settled', 'chatcmpl-bench-' || i, 900
            FROM seq""")
        con.execute("""
            INSERT INTO spend_daily(team, day, nanos)
            SELECT team, started_ms / 86400000, SUM(charged_nanos) FROM requests
            GROUP BY team, started_ms / 86400000
            ON CONFLICT(team, day) DO UPDATE SET nanos = nanos + excluded.nanos""")
        # pinmeter's hourly usage rollup, as its writer would have kept it
        # (else the first start builds it, and the start-up figure is that)
        if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'usage_hourly'").fetchone():
            con.execute("""
                INSERT INTO usage_hourly(hour, team, key_id, model, requests, prompt_tokens,
                                         completion_tokens, cached_tokens, charged_nanos)
                SELECT started_ms / 3600000, team, key_id, model, COUNT(*), SUM(prompt_tokens),
                       SUM(completion_tokens), SUM(cached_tokens), SUM(charged_nanos)
                FROM requests GROUP BY 1, 2, 3, 4""")
        for _, sql in indexes:
            con.execute(sql)
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
    except sqlite3.Error as e:
        note(f"startup: could not fill the ledger with pinmeter's schema ({e}); skipped")
        return None
    os.replace(tmp, path)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(tmp + suffix):
            os.remove(tmp + suffix)
    log(f"  ledger generated in {time.monotonic() - t0:.0f} s "
        f"({os.path.getsize(path) / 2**20:,.0f} MiB)")
    return path


def scen_startup(mock):
    log(f"== start-up: time from exec to /healthz 200, {ROUNDS} rounds")
    big = make_big_ledger(mock)
    res = {"empty": [], "big": []}
    for rnd in range(1, ROUNDS + 1):
        for kind in ("empty", "big"):
            if kind == "big" and not big:
                continue
            pm = Pinmeter(mock)
            ok = pm.start(tag=f"startup-{kind}-{rnd}", ledger=big if kind == "big" else None,
                          ready_timeout=60)
            res[kind].append(pm.ready_s if ok else None)
            if ok:
                check_after(pm, "startup", rnd, pm.stop())
            log(f"  startup round {rnd} {kind:5s} ready_s={pm.ready_s}")
    RAW["startup"] = res
    e, b = med(res["empty"]), med(res["big"])
    row("start-up", f"time to ready, {LEDGER_ROWS:,}-row ledger", "ms", None, None,
        b and b * 1000, "< 1000 ms", None if b is None else b < 1.0, rat=None, fmt="{:.1f}")
    row("start-up", "time to ready, empty ledger", "ms", None, None, e and e * 1000,
        "(reported)", None, rat=None, fmt="{:.1f}")


# ---- the usage API over the big ledger -----------------------------------------------

USAGE_ADMIN = "bench-admin-" + hashlib.sha256(b"usage").hexdigest()[:16]


class UsagePinmeter(Pinmeter):
    """pinmeter with an admin token (the usage endpoints' view of every team)."""

    def __init__(self, mock):
        super().__init__(mock)
        self.extra = {"admin_token_env": "PINMETER_BENCH_ADMIN_TOKEN"}

    def env(self):
        e = Pinmeter.env()
        e["PINMETER_BENCH_ADMIN_TOKEN"] = USAGE_ADMIN
        return e


def iso_ms(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def timed_gets(port, path, seconds, max_n=200):
    """GETs path on one kept-alive connection (the admin token) for about
    seconds (at least 5 times, at most max_n) after one warm-up; returns
    (latencies in ms, last status, last body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    hdrs = {"Authorization": "Bearer " + USAGE_ADMIN}
    lat, status, body = [], None, b""
    try:
        t_end = None
        for i in range(max_n + 1):
            t0 = time.perf_counter()
            c.request("GET", path, headers=hdrs)
            r = c.getresponse()
            body = r.read()
            status = r.status
            dt = (time.perf_counter() - t0) * 1000
            if i == 0:                       # the warm-up (page cache, statements)
                t_end = time.monotonic() + seconds
                continue
            lat.append(dt)
            if len(lat) >= 5 and time.monotonic() > t_end:
                break
    finally:
        c.close()
    return lat, status, body


def scen_usage(mock):
    log("== usage API: GET /v0/usage and the request log over HTTP, "
        f"{LEDGER_ROWS:,}-row ledger (90 days)")
    big = make_big_ledger(mock)
    if not big:
        return
    pm = UsagePinmeter(mock)
    if not pm.start(tag="usage", ledger=big, ready_timeout=120):
        return
    res = {}
    try:
        now = int(time.time() * 1000)
        t = time.gmtime(now / 1000)
        # the last whole calendar month (inside the 90 days): whole hours
        y, m = (t.tm_year - 1, 12) if t.tm_mon == 1 else (t.tm_year, t.tm_mon - 1)
        first = f"{y:04d}-{m:02d}-01"
        last = time.strftime("%Y-%m-%d", time.gmtime(
            calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)) - 86400))
        off_since, off_until = iso_ms(now - 30 * 86400000 - 1234567), iso_ms(now - 7654321)
        # a cursor 45 days back: the last row of a one-row page ending there
        st, body = timed_gets(pm.port, "/v0/usage/requests?limit=1&until=" +
                              iso_ms(now - 45 * 86400000), 0, 1)[1:]
        deep = json.loads(body).get("next_cursor") if st == 200 else None
        queries = [
            ("usage", "by=team,model,day, last calendar month", 1000,
             f"/v0/usage?by=team,model,day&since={first}&until={last}"),
            ("usage", "by=team,model,day, 30 days off the hour", 1000,
             f"/v0/usage?by=team,model,day&since={off_since}&until={off_until}"),
            ("usage", "by=team,model,day, 30 days off the hour, CSV", 1000,
             f"/v0/usage?by=team,model,day&since={off_since}&until={off_until}&format=csv"),
            ("request log", "first page (100 rows)", 50, "/v0/usage/requests"),
            ("request log", "filtered page (team=research, 100 rows)", 50,
             "/v0/usage/requests?team=research"),
            ("request log", "filtered page (key=k5, since 60 days ago)", 50,
             "/v0/usage/requests?key=k5&since=" + iso_ms(now - 60 * 86400000)),
            ("request log", "filters matching nothing (team=ops, key=k5: at most "
             "5,000 rows read)", 50, "/v0/usage/requests?team=ops&key=k5"),
            ("request log", "deep cursor page (45 days back, 100 rows)", 50,
             "/v0/usage/requests?cursor=" + (deep or "")),
        ]
        per = max(1.0, SECONDS / 2)
        for scen, what, target, path in queries:
            if "cursor=" in path and not deep:
                note("usage: no cursor 45 days back; deep page skipped")
                continue
            lat, st, body = timed_gets(pm.port, path, per)
            ok = st == 200
            if ok and path.startswith("/v0/usage/requests"):
                j = json.loads(body)
                ok = len(j["requests"]) == (0 if "team=ops&key=k5" in path else 100) and \
                    j["next_cursor"] is not None
            if not ok:
                note(f"usage: {path} answered {st}: {body[:200]!r}")
            p50, worst = statistics.median(lat), max(lat)
            res[what] = {"path": path, "status": st, "ms": lat}
            log(f"  {what}: p50 {p50:.2f} ms, max {worst:.2f} ms over {len(lat)}")
            row(scen, f"{what}, p50", "ms", None, None, p50, f"< {target} ms",
                ok and p50 < target, rat=None, fmt="{:.2f}")
            row(scen, f"{what}, max of {len(lat)}", "ms", None, None, worst, f"< {target} ms",
                ok and worst < target, rat=None, fmt="{:.2f}")
        # the month's answer against the requests themselves (a full scan, once)
        st, body = timed_gets(pm.port, queries[0][3], 0, 1)[1:]
        if st == 200:
            total = json.loads(body, parse_float=decimal.Decimal)["total"]
            con = sqlite3.connect(f"file:{big}?mode=ro", uri=True, timeout=30)
            try:
                since_ms = calendar.timegm(time.strptime(first, "%Y-%m-%d")) * 1000
                until_ms = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)) * 1000
                n, nanos = con.execute(
                    "SELECT COUNT(*), SUM(charged_nanos) FROM requests WHERE started_ms >= ?"
                    " AND started_ms < ?", (since_ms, until_ms)).fetchone()
            finally:
                con.close()
            if total["requests"] != n or int(total["credits"] * 10 ** 9) != nanos:
                note(f"usage: the month's total {total} differs from the requests ({n}, {nanos})")
            else:
                log(f"  the month's total matches the requests: {n:,} rows")
    finally:
        check_after(pm, "usage", 1, pm.stop())
    RAW["usage"] = res


# ---- instructions per request ----------------------------------------------------------

def post_n(port, n, timeout=120):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    hdr = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    bad = 0
    try:
        for _ in range(n):
            c.request("POST", "/v0/llm/chat/completions", CHAT_BODY, hdr)
            r = c.getresponse()
            r.read()
            bad += r.status != 200
    finally:
        c.close()
    return bad


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    return None


def callgrind_instr(t, n, pid_of):
    """Zeroes callgrind's counters, sends n requests, dumps; Ir per request."""
    post_n(t.port, 100)                                   # warm-up
    pid = pid_of()
    r = subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise RuntimeError("callgrind_control -z failed: " + r.stdout + r.stderr)
    bad = post_n(t.port, n)
    before = set(os.listdir(t.dir))
    r = subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise RuntimeError("callgrind_control -d failed: " + r.stdout + r.stderr)
    dumps = sorted(f for f in set(os.listdir(t.dir)) - before if f.startswith("callgrind.out"))
    if not dumps:
        raise RuntimeError("no callgrind dump appeared")
    total = callgrind_total(os.path.join(t.dir, dumps[-1]))
    return total / n if total else None, bad, os.path.join(t.dir, dumps[-1])


def perf_works():
    if not shutil.which("perf"):
        return False
    r = subprocess.run(["perf", "stat", "-x,", "-e", "instructions", "true"],
                       capture_output=True, text=True, timeout=30)
    return r.returncode == 0 and re.search(r"^\d+,", r.stderr, re.M) is not None


def perf_instr(t, n):
    post_n(t.port, 100)
    out = os.path.join(t.dir, "perf.txt")
    p = subprocess.Popen(["perf", "stat", "-x,", "-e", "instructions", "-o", out, "-p",
                          ",".join(str(x) for x in t.pids)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    post_n(t.port, n)
    os.kill(p.pid, signal.SIGINT)
    p.wait(timeout=30)
    with open(out) as f:
        m = re.search(r"^(\d+),", f.read(), re.M)
    return int(m.group(1)) / n if m else None


def scen_instr(mock):
    log(f"== instructions per request: callgrind over {INSTR_REQUESTS} non-streaming requests")
    results = {}
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        note("instr: valgrind is not installed (apt-get install valgrind); skipped")
    else:
        d = os.path.join(RUN, "pinmeter-instr-cg")
        pm = Pinmeter(mock)
        ok = pm.start(tag="instr-cg", ready_timeout=120,
                      wrapper=["valgrind", "--tool=callgrind", "-q",
                               f"--callgrind-out-file={d}/callgrind.out"])
        if ok:
            try:
                ir, bad, dump = callgrind_instr(pm, INSTR_REQUESTS, lambda: pm.proc.pid)
                results["pinmeter"] = ir
                keep = os.path.join(OUT, "callgrind.pinmeter.out")
                shutil.copy(dump, keep)
                if bad:
                    note(f"instr: {bad} of {INSTR_REQUESTS} pinmeter replies were not 200")
            except Exception as e:
                note(f"instr: pinmeter under callgrind failed: {e}")
            pm.stop()
        if Nginx.available():
            ng = Nginx(mock, master_process=False)
            ng.dir = os.path.join(RUN, "nginx-instr-cg")
            shutil.rmtree(ng.dir, ignore_errors=True)
            os.makedirs(ng.dir)
            ng.port = free_port()
            conf = ng.write_conf(ng.dir, 1024)
            ng.proc = start(["valgrind", "--tool=callgrind", "-q",
                             f"--callgrind-out-file={ng.dir}/callgrind.out"] + ng.argv(conf),
                            PROXY_CPU, os.path.join(ng.dir, "stderr.log"))
            if wait_http(ng.port, "/healthz", 120, ng.proc) is not None:
                try:
                    ir, bad, dump = callgrind_instr(ng, INSTR_REQUESTS, lambda: ng.proc.pid)
                    results["nginx"] = ir
                    shutil.copy(dump, os.path.join(OUT, "callgrind.nginx.out"))
                except Exception as e:
                    note(f"instr: nginx under callgrind failed: {e}")
            else:
                note("instr: nginx did not start under valgrind")
            ng.stop()
        row("instructions", "per non-stream request (callgrind)", "instr", None,
            results.get("nginx"), results.get("pinmeter"), "< 250,806 (issue 17's start)",
            None if results.get("pinmeter") is None else results["pinmeter"] < 250806,
            fmt="{:,.0f}")
        if "pinmeter" in results:
            note("instr: callgrind profile of pinmeter kept in build-bench/callgrind.pinmeter.out "
                 "(callgrind_annotate --inclusive=yes build-bench/callgrind.pinmeter.out)")
    if perf_works():
        pres = {}
        for t in (Nginx(mock) if Nginx.available() else None, Pinmeter(mock)):
            if t is None or not t.start(tag="instr-perf"):
                continue
            try:
                pres[t.name] = perf_instr(t, INSTR_REQUESTS * 5)
            except Exception as e:
                note(f"instr: perf stat on {t.name} failed: {e}")
            t.stop()
        row("instructions", "per non-stream request (perf stat)", "instr", None,
            pres.get("nginx"), pres.get("pinmeter"), "(reported)", None, fmt="{:,.0f}")
    else:
        note("instr: `perf stat -e instructions` does not count here (no PMU access), "
             "so only callgrind's count is shown")
    RAW["instr"] = results


# ---- the shared budget store on Redis ----------------------------------------------

class Resp:
    """A minimal RESP2 client (standard library only) for the bench's own redis-server."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise OSError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError("redis: " + rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2].decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise OSError(f"redis: unexpected reply {line[:40]!r}")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


class RedisServer:
    """A redis-server of the bench's own: loopback, a free port, no persistence,
    pinned to the load CPU (with the mock and wrk, not the proxy's CPU); stopped
    by its PID (taskset execs it, so Popen's pid is redis-server's)."""

    def __init__(self):
        self.dir = os.path.join(RUN, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.conn = None
        self.proc = start(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no", "--daemonize", "no",
                           "--protected-mode", "yes", "--dir", self.dir, "--loglevel", "warning"],
                          LOAD_CPU, os.path.join(self.dir, "redis.log"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                self.conn = Resp(self.port)
                if self.conn.cmd("PING") == "PONG":
                    break
            except (OSError, RuntimeError):
                if self.conn:
                    self.conn.close()
                self.conn = None
            time.sleep(0.05)
        if self.conn is None:
            stop(self.proc)
            raise RuntimeError(f"redis-server did not answer PING on port {self.port}")
        self.version = self.conn.cmd("INFO", "server")
        m = re.search(r"redis_version:(\S+)", self.version or "")
        self.version = m.group(1) if m else "?"

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def cmd(self, *args):
        return self.conn.cmd(*args)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.conn:
            self.conn.close()
        rc = stop(self.proc)
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)
        return rc


class StorePinmeter(Pinmeter):
    """pinmeter with its in-process book (redis None, the default) or with
    "budget_store" on the bench's redis-server, flushed before every start so
    that each run's Redis figures are that run's alone."""

    def __init__(self, mock, name, redis=None):
        super().__init__(mock)
        self.name = name
        self.redis = redis
        if redis:
            self.extra = {"budget_store": redis.url}

    def start(self, max_conns=1024, tag="run", **kw):
        if self.redis:
            self.redis.cmd("FLUSHALL")
        if not super().start(max_conns=max_conns, tag=f"{self.name}-{tag}", **kw):
            return False
        if self.redis:
            try:
                st = json.loads(http_get(self.port, "/healthz")[1]).get("budget_store")
            except (OSError, ValueError):
                st = None
            if st != "redis":
                note(f"redis: pinmeter with budget_store reports budget_store={st!r}, not 'redis'")
                self.stop()
                return False
        return True

    def ledger_team(self):
        """(settled rows, SUM(charged_nanos)) of the bench team in the ledger."""
        try:
            con = sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True, timeout=10)
            try:
                return con.execute("SELECT count(*), COALESCE(SUM(charged_nanos), 0) FROM requests "
                                   "WHERE team = 'bench' AND state = 'settled'").fetchone()
            finally:
                con.close()
        except sqlite3.Error as e:
            note(f"redis: ledger read failed: {e}")
            return None, None

    def redis_team(self):
        """(spent, loaned) of the bench team's current period in Redis."""
        keys = self.redis.cmd("KEYS", "pm:{bench}:*:spent")
        if len(keys or []) != 1:
            return None, None
        base = keys[0][:-len("spent")]
        return int(self.redis.cmd("GET", base + "spent") or 0), \
            int(self.redis.cmd("GET", base + "loaned") or 0)

    def settled(self, limit_s):
        """Waits until the ledger's backlog is 0 and, with Redis, until nothing is
        loaned and Redis spent equals the ledger's charged sum (the store's worker
        has had every settle acknowledged). Returns (ok, seconds, figures)."""
        t0 = time.monotonic()
        while True:
            backlog = self.backlog()
            rows, lsum = self.ledger_team()
            spent = loaned = None
            if self.redis:
                spent, loaned = self.redis_team()
            ok = backlog == 0 and lsum is not None and (
                not self.redis or (loaned == 0 and spent == lsum))
            if ok or time.monotonic() - t0 > limit_s:
                return ok, time.monotonic() - t0, {"ledger_rows": rows, "ledger_nanos": lsum,
                                                   "redis_spent": spent, "redis_loaned": loaned,
                                                   "backlog": backlog}
            time.sleep(0.02)


def thread_ticks(pid, prefix):
    """utime + stime of pid's threads whose name starts with prefix."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                st = f.read()
            if st[st.index("(") + 1:st.rindex(")")].startswith(prefix):
                v = st.rsplit(")", 1)[1].split()
                total += int(v[11]) + int(v[12])
        except (OSError, ValueError, IndexError):
            pass
    return total


def cpu_jiffies():
    """{cpu number: (total, idle + iowait)} from /proc/stat."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    v = line.split()
                    out[int(v[0][3:])] = (sum(int(x) for x in v[1:8]), int(v[4]) + int(v[5]))
    except (OSError, ValueError):
        pass
    return out


def cpu_busy_pct(j0, j1, cpu):
    if cpu not in j0 or cpu not in j1 or j1[cpu][0] <= j0[cpu][0]:
        return None
    return 100.0 * (1 - (j1[cpu][1] - j0[cpu][1]) / (j1[cpu][0] - j0[cpu][0]))


def redis_evalsha_stats(redis):
    """(EVALSHA calls, µs inside Redis per call) since the last CONFIG RESETSTAT."""
    m = re.search(r"^cmdstat_evalsha:calls=(\d+),usec=\d+,usec_per_call=([\d.]+)",
                  redis.cmd("INFO", "commandstats") or "", re.M)
    return (int(m.group(1)), float(m.group(2))) if m else (None, None)


def scen_redis(mock):
    if not shutil.which("redis-server"):
        note("redis: redis-server is not installed (apt-get install redis-server); skipped")
        return
    try:
        redis = RedisServer()
    except Exception as e:
        note(f"redis: {e}; skipped")
        return
    log(f"== Redis budget store: pinmeter with its in-process book vs budget_store = "
        f"redis-server {redis.version} on 127.0.0.1:{redis.port} (CPU {LOAD_CPU}); c=1 and c=64, "
        f"{ROUNDS} rounds x {SECONDS} s each")
    checks = []

    def one(t):
        wrk(t.port, 1, 1)                              # warm-up
        c1 = measure(t, lambda: wrk(t.port, 1, SECONDS))
        res = {"c1_p50_us": c1["p50_us"], "c1_p99_us": c1["p99_us"], "c1_errors": c1["errors"]}
        if isinstance(t, Direct):
            return res
        wrk(t.port, 64, 1)                             # warm-up
        t.settled(20)                                  # start from nothing pending
        lrows0 = t.ledger_team()[0]
        rpid = [redis.proc.pid]
        redis.cmd("CONFIG", "RESETSTAT")
        r0, p0, j0 = cpu_ticks(rpid), cpu_ticks(t.pids), cpu_jiffies()
        l0 = thread_ticks(t.proc.pid, "MHD")           # libmicrohttpd's listener thread
        c64 = measure(t, lambda: wrk(t.port, 64, SECONDS))
        r1, j1 = cpu_ticks(rpid), cpu_jiffies()
        l1 = thread_ticks(t.proc.pid, "MHD")
        ok, drain_s, f = t.settled(30)
        calls, usec = redis_evalsha_stats(redis)
        r2, p2 = cpu_ticks(rpid), cpu_ticks(t.pids)
        n = c64["requests"]
        res.update({"c64_rps": c64["rps"], "c64_p99_us": c64["p99_us"], "c64_requests": n,
                    "c64_errors": c64["errors"], "drain_s": drain_s,
                    "load_cpu_busy_pct": cpu_busy_pct(j0, j1, LOAD_CPU),
                    "proxy_cpu_busy_pct": cpu_busy_pct(j0, j1, PROXY_CPU)})
        rows = (f["ledger_rows"] - lrows0) if f["ledger_rows"] is not None and lrows0 is not None \
            else None
        if n > 0:
            # during wrk only (as the c64 scenario counts it)
            res["cpu_us_per_req"] = c64["cpu_s"] * 1e6 / n
            res["redis_cpu_us_per_req"] = (r1 - r0) / CLK_TCK * 1e6 / n
            if l0 is not None and l1 is not None:
                res["listener_cpu_us_per_req"] = (l1 - l0) / CLK_TCK * 1e6 / n
            res["listener_wall_us_per_req"] = 1e6 / c64["rps"] if c64["rps"] > 0 else None
        if rows:
            # from the start of wrk until every request is settled everywhere, per settled row
            res["settled_rows"] = rows
            res["cpu_us_per_row_drained"] = (p2 - p0) / CLK_TCK * 1e6 / rows
            res["redis_cpu_us_per_row_drained"] = (r2 - r0) / CLK_TCK * 1e6 / rows
            if calls is not None:
                res["evalsha_per_row"] = calls / rows
                res["evalsha_us_in_redis"] = usec
        if t.redis:
            checks.append({"ok": ok, "drain_s": drain_s, **f})
            res["redis_ok"] = 1 if ok else 0
        return res

    ts = [Direct(mock), StorePinmeter(mock, "book"), StorePinmeter(mock, "redis", redis)]
    try:
        runs = run_rounds("redis", mock, ts, one)
    finally:
        alive = redis.alive()
        rc = redis.stop()
        if not alive:
            note(f"redis: redis-server died during the scenario (exit {rc})")
    sc = "redis store"
    tgt = "measured (no target)"
    for key, label in (("c1_p50_us", "c=1 added latency p50"), ("c1_p99_us", "c=1 added latency p99")):
        d = fig(runs, "direct", key)
        b, r = added(runs, "book", key), added(runs, "redis", key)
        row_store(sc, label, "ms", d and d / 1000, b and b / 1000, r and r / 1000, tgt)
    row_store(sc, "c=64 throughput", "req/s", None, fig(runs, "book", "c64_rps"),
              fig(runs, "redis", "c64_rps"), tgt, fmt="{:,.0f}")
    row_store(sc, "c=64 latency p99 (not added)", "ms", None,
              *(v and v / 1000 for v in (fig(runs, n, "c64_p99_us") for n in ("book", "redis"))), tgt)
    row_store(sc, "c=64 CPU per request, proxy", "µs", None, fig(runs, "book", "cpu_us_per_req"),
              fig(runs, "redis", "cpu_us_per_req"), tgt, fmt="{:.1f}")
    row_store(sc, "c=64 CPU per request, redis-server", "µs", None,
              fig(runs, "book", "redis_cpu_us_per_req"), fig(runs, "redis", "redis_cpu_us_per_req"),
              tgt, fmt="{:.1f}", rat=None)      # the book does not use it: idle redis-server
    tot = {n: med([r["cpu_us_per_req"] + r["redis_cpu_us_per_req"] for r in runs.get(n, [])
                   if r and "cpu_us_per_req" in r]) for n in ("book", "redis")}
    row_store(sc, "c=64 CPU per request, proxy + redis-server", "µs", None, tot["book"],
              tot["redis"], tgt, fmt="{:.1f}")
    check_errors("redis", {n: [{"errors": r.get("c1_errors", 0) + r.get("c64_errors", 0)}
                               for r in rs if r] for n, rs in runs.items()}, "errors")
    dr = {n: (fig(runs, n, "cpu_us_per_row_drained"), fig(runs, n, "redis_cpu_us_per_row_drained"),
              fig(runs, n, "drain_s")) for n in ("book", "redis")}
    note("redis store rows: the nginx column is pinmeter with its in-process book (the default), "
         f"the pinmeter column pinmeter with budget_store = a redis-server {redis.version} of the "
         f"bench's own on CPU {LOAD_CPU} (with the mock and wrk), the ratio redis/book; the same "
         "binary, team and key, one fresh proxy and ledger per run (Redis flushed before each), "
         "c=1 then c=64 on the same start. CPU per request is counted while wrk runs, as in c=64; "
         "counted instead from the start of wrk until every request was settled (ledger and "
         f"Redis), per settled row: proxy {fmt1(dr['book'][0])} vs {fmt1(dr['redis'][0])} µs, "
         f"redis-server {fmt1(dr['book'][1])} vs {fmt1(dr['redis'][1])} µs; the settles trailed "
         f"wrk by a median {fmt3(dr['book'][2])} s (book) and {fmt3(dr['redis'][2])} s (redis)")
    busy = {n: (fig(runs, n, "load_cpu_busy_pct"), fig(runs, n, "proxy_cpu_busy_pct"))
            for n in ("book", "redis")}
    note(f"redis: during c=64, CPU {LOAD_CPU} (mock, wrk, redis-server) was busy "
         f"{fmt0(busy['book'][0])} % (book) vs {fmt0(busy['redis'][0])} % (redis), CPU {PROXY_CPU} "
         f"(the proxy) {fmt0(busy['book'][1])} % vs {fmt0(busy['redis'][1])} %; Redis ran "
         f"{fmt3(fig(runs, 'redis', 'evalsha_per_row'))} EVALSHA per settled request, "
         f"{fmt1(fig(runs, 'redis', 'evalsha_us_in_redis'))} µs each inside Redis (INFO commandstats)")
    lc = {n: fig(runs, n, "listener_cpu_us_per_req") for n in ("book", "redis")}
    lw = {n: fig(runs, n, "listener_wall_us_per_req") for n in ("book", "redis")}
    c1d = {n: added(runs, n, "c1_p50_us") for n in ("book", "redis")}
    if all(v is not None for v in (*lc.values(), *lw.values(), *c1d.values())):
        note(f"redis: at c=64 libmicrohttpd's listener thread used {lc['book']:.1f} µs of CPU "
             f"per request (book) vs {lc['redis']:.1f} µs (redis), out of the {lw['book']:.1f} vs "
             f"{lw['redis']:.1f} µs per request that the rate leaves it. With the Redis store the "
             f"listener does not wait for Redis: it suspends the connection and the store's "
             f"reserver thread pipelines every waiting reserve in one round trip (settles are "
             f"pipelined the same way by the store's worker); at c=1 the round trip is still "
             f"paid once per request ({c1d['redis'] - c1d['book']:.0f} µs p50 added)")
    if checks:
        good = [c for c in checks if c["ok"]]
        detail = "; ".join(f"{fmt0(c['ledger_rows'])} rows, ledger {fmt0(c['ledger_nanos'])} nanos, "
                           f"Redis spent {fmt0(c['redis_spent'])}, loaned {fmt0(c['redis_loaned'])}"
                           for c in checks)
        if len(good) == len(checks):
            note(f"redis: metering check PASS: after each of the {len(checks)} Redis runs the team's "
                 f"fleet spent in Redis (pm:{{bench}}:m<start>:spent) equalled the ledger's "
                 f"SUM(charged_nanos) and nothing stayed loaned ({detail})")
        else:
            note(f"redis: metering check FAILED in {len(checks) - len(good)} of {len(checks)} "
                 f"Redis runs: Redis spent vs the ledger's charged sum: {detail}")


# ---- metrics: the cost of being scraped, and a big scrape ------------------------

ADMIN_ENV = "PINMETER_BENCH_ADMIN_TOKEN"
ADMIN_TOKEN = "bench-admin-" + hashlib.sha256(b"pinmeter bench admin").hexdigest()[:24]
SCRAPE_TEAMS, SCRAPE_MODELS = 100, 50


def team_key(i):
    return f"pm-bench-t{i:03d}-" + hashlib.sha256(f"team {i}".encode()).hexdigest()[:24]


class MetricsPinmeter(Pinmeter):
    """pinmeter with an admin token to scrape /metrics with. teams, models: a
    config of that many teams (a key each, no cap) and a rate table of that
    many models, for the scrape scenario."""

    def __init__(self, mock, name, teams=0, models=0):
        super().__init__(mock)
        self.name = name
        self.n_teams, self.n_models = teams, models
        self.extra = {"admin_token_env": ADMIN_ENV}

    def env(self):
        e = Pinmeter.env()
        e[ADMIN_ENV] = ADMIN_TOKEN
        return e

    def models(self):
        return [f"bench/model-{j:02d}" for j in range(self.n_models)]

    def write_conf(self, d, max_conns, ledger=None, listen_port=None):
        if self.n_teams:
            rates = os.path.join(d, "rates-big.json")
            with open(rates, "w") as f:
                json.dump(RATES + [{"model_id": m, "input_usd_per_1m_tokens": 1.0 + j / 10,
                                    "output_usd_per_1m_tokens": 5.0,
                                    "cache_read_usd_per_1m_tokens": 0.1}
                                   for j, m in enumerate(self.models())], f)
            self.extra["rates_file"] = rates
            self.extra["teams"] = [
                {"name": f"team{i:03d}", "period": "month",
                 "keys": [{"id": "k", "sha256": hashlib.sha256(team_key(i).encode()).hexdigest()}]}
                for i in range(self.n_teams)]
        return super().write_conf(d, max_conns, ledger, listen_port)

    def start(self, max_conns=1024, tag="run", **kw):
        return super().start(max_conns=max_conns, tag=f"{self.name}-{tag}", **kw)


def scrape_once(port, conn=None):
    """(seconds, body) of one GET /metrics with the admin token."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t0 = time.perf_counter()
    c.request("GET", "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    r = c.getresponse()
    body = r.read()
    dt = time.perf_counter() - t0
    if conn is None:
        c.close()
    if r.status != 200:
        raise RuntimeError(f"/metrics answered {r.status}: {body[:200]!r}")
    return dt, body


def scrape_cpu(t, n):
    """The proxy's CPU per scrape (µs) over n back-to-back scrapes on one
    connection, with the rate they ran at; None when it cannot tell."""
    c = http.client.HTTPConnection("127.0.0.1", t.port, timeout=30)
    try:
        scrape_once(t.port, c)
        c0, t0 = cpu_ticks(t.pids), time.monotonic()
        for _ in range(n):
            scrape_once(t.port, c)
        wall = time.monotonic() - t0
        return (cpu_ticks(t.pids) - c0) / CLK_TCK * 1e6 / n, n / wall
    finally:
        c.close()


def requests_total(text):
    """The sum of pinmeter_requests_total in a scrape."""
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
               if ln.startswith("pinmeter_requests_total{"))


WINDOW_S = 0.5
# A cycle of windows: what the scraper reads 10 times a second in each. The
# scraper runs on the load CPU beside wrk and the mock, so its own work
# costs the load side too: a window scraping the mock (same rate, same
# connection handling) is the control that cancels that cost out.
CYCLE = ("mock", "pinmeter", "mock", None)


class ScrapeWindows(threading.Thread):
    """Drives WINDOW_S windows during a c=64 run, in cycles of CYCLE: in each
    window it reads pinmeter's /metrics, the mock's /healthz, or nothing, 10
    times a second; at every window's end it reads pinmeter_requests_total
    (one scrape, in every window alike). Pinned to the load CPU.
    windows: [(what, requests, seconds)]."""

    def __init__(self, port, mock_port, n_windows, rate=10.0):
        super().__init__(daemon=True)
        self.port, self.mock_port, self.n, self.rate = port, mock_port, n_windows, rate
        self.windows, self.times, self.errors = [], [], 0
        self.failure = None

    def run(self):
        try:
            os.sched_setaffinity(0, {LOAD_CPU})        # this thread only
        except OSError:
            pass
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        mc = http.client.HTTPConnection("127.0.0.1", self.mock_port, timeout=10)
        try:
            last_n, last_t = requests_total(scrape_once(self.port, c)[1].decode()), time.monotonic()
            start = nxt = last_t
            for w in range(self.n):
                what = CYCLE[w % len(CYCLE)]
                end = start + (w + 1) * WINDOW_S
                while what:
                    nxt = max(nxt + 1.0 / self.rate, time.monotonic())
                    if nxt >= end - 0.02:
                        break
                    time.sleep(max(0.0, nxt - time.monotonic()))
                    try:
                        if what == "pinmeter":
                            self.times.append(scrape_once(self.port, c)[0] * 1000)
                        else:
                            mc.request("GET", "/healthz")
                            mc.getresponse().read()
                    except (OSError, RuntimeError, http.client.HTTPException):
                        self.errors += 1
                        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                        mc = http.client.HTTPConnection("127.0.0.1", self.mock_port, timeout=10)
                time.sleep(max(0.0, end - time.monotonic()))
                n, t = requests_total(scrape_once(self.port, c)[1].decode()), time.monotonic()
                self.windows.append((what, n - last_n, t - last_t))
                last_n, last_t = n, t
        except Exception as e:                          # noted by the scenario
            self.failure = e
        finally:
            c.close()
            mc.close()

    def ratios(self):
        """Per cycle (the first, warming, left out): pinmeter scraped over its
        two mock-scraped neighbours, and nothing scraped over its two
        mock-scraped neighbours (what the scraper itself costs the load)."""
        rate = [n / s if s > 0 else 0 for _, n, s in self.windows]
        k = len(CYCLE)
        pin, none = [], []
        for i in range(k, len(rate) - k, k):
            m0, p, m1, z, m2 = rate[i:i + 5]
            if m0 > 0 and m1 > 0 and m2 > 0:
                pin.append(p / ((m0 + m1) / 2))
                none.append(z / ((m1 + m2) / 2))
        return pin, none


def scen_metrics(mock):
    n_windows = int(4 * SECONDS / WINDOW_S)
    dur = 4 * SECONDS + 2
    log(f"== c=64 with /metrics scraped 10 times a second in some {WINDOW_S} s windows "
        f"({ROUNDS} rounds x {dur} s)")

    def one(t):
        wrk(t.port, 64, 1)                             # warm-up
        sw = ScrapeWindows(t.port, mock.port, n_windows)

        def timed():
            sw.start()
            return wrk(t.port, 64, dur)
        j0 = cpu_jiffies()
        res = measure(t, timed)
        j1 = cpu_jiffies()
        sw.join(30)
        if sw.failure:
            raise RuntimeError(f"scrape windows failed: {sw.failure}")
        res["load_cpu_busy_pct"] = cpu_busy_pct(j0, j1, LOAD_CPU)
        res["proxy_cpu_busy_pct"] = cpu_busy_pct(j0, j1, PROXY_CPU)
        pin, none = sw.ratios()
        by = {}
        for what, n, secs in sw.windows[len(CYCLE):]:
            a = by.setdefault(what, [0, 0.0])
            a[0] += n
            a[1] += secs
        res.update({"rps_" + str(k): v[0] / v[1] for k, v in by.items() if v[1] > 0})
        res.update({"pin_ratios": pin, "none_ratios": none,
                    "scrapes": len(sw.times), "scrape_errors": sw.errors,
                    "scrape_p50_ms": med(sw.times),
                    "scrape_max_ms": max(sw.times) if sw.times else None})
        if res["requests"] > 0 and "cpu_s" in res:
            res["cpu_us_per_req"] = res["cpu_s"] * 1e6 / res["requests"]
        # what one scrape of this registry costs the proxy, load-free
        res["scrape_cpu_us"], _ = scrape_cpu(t, 1000)
        return res
    runs = run_rounds("metrics", mock, [MetricsPinmeter(mock, "pinmeter")], one)
    rs = [r for r in runs["pinmeter"] if r]
    pin = [p for r in rs for p in r["pin_ratios"]]
    none = [p for r in rs for p in r["none_ratios"]]
    rat, zrat = med(pin), med(none)
    quart = lambda xs: "–" if not xs else \
        f"{sorted(xs)[len(xs) // 4]:.3f}–{sorted(xs)[3 * len(xs) // 4]:.3f}"
    on, ctl = fig(runs, "pinmeter", "rps_pinmeter"), fig(runs, "pinmeter", "rps_mock")
    row("metrics", "c=64 with /metrics scraped 10/s: throughput", "req/s", None,
        None if ctl is None else "not " + fmtv(ctl, "{:,.0f}"),
        None if on is None else "scraped " + fmtv(on, "{:,.0f}"),
        "drop < 3 %", None if rat is None else rat > 0.97,
        rat=None if rat is None else f"{rat:.3f}× s/n", fmt="{:,.0f}")
    ROWS[-1].update({"not_scraped": ctl, "scraped": on, "scraped_over_not": rat,
                     "pin_ratios": pin, "none_ratios": none, "none_median": zrat})
    row("metrics", "the scraper's own cost: nothing read vs the mock read 10/s", "ratio", None,
        None, None if zrat is None else f"{zrat:.3f}× (quartiles {quart(none)})", "(control)",
        None, rat=None)
    wr = fig(runs, "pinmeter", "rps")
    row("metrics", "c=64 throughput over the whole run (wrk)", "req/s", None, None, wr,
        "(reported)", None, rat=None, fmt="{:,.0f}")
    p50, mx = fig(runs, "pinmeter", "scrape_p50_ms"), fig(runs, "pinmeter", "scrape_max_ms")
    row("metrics", "a scrape during c=64 (client wall time)", "ms", None, None,
        None if p50 is None else f"p50 {p50:.2f}, max {mx:.2f}", "(reported)", None, rat=None)
    cpu = fig(runs, "pinmeter", "scrape_cpu_us")
    row("metrics", "proxy CPU per scrape after the run (10/s = share of a core)", "µs", None,
        None, None if cpu is None else f"{cpu:.1f} ({cpu * 10 / 1e4:.3f} %)", "(reported)", None,
        rat=None)
    check_errors("metrics", runs, "errors")
    check_errors("metrics", runs, "scrape_errors")
    note(f"metrics: one c=64 wrk run of {dur} s per round on a fresh pinmeter, cut into "
         f"{WINDOW_S} s windows in cycles of four; a scraper (a thread of the bench on CPU "
         f"{LOAD_CPU}, beside wrk and the mock; one kept-alive connection each) reads, 10 times "
         f"a second: the mock's /healthz, pinmeter's /metrics (admin token), the mock's /healthz, "
         f"nothing. Every window ends with one more read of /metrics, in all four alike, which "
         f"gives the window's req/s from pinmeter_requests_total. Ratio = the /metrics window's "
         f"req/s over the mean of its two mock-read neighbours, median of {len(pin)} cycles over "
         f"{len(rs)} rounds (quartiles {quart(pin)}): the scraper's work on the load CPU is the "
         f"same on both sides and cancels, what is left is what serving the scrapes costs "
         f"pinmeter. The control row is that work alone (the window reading nothing over its "
         f"mock-read neighbours), with CPU {LOAD_CPU} busy "
         f"{fmt0(fig(runs, 'pinmeter', 'load_cpu_busy_pct'))} % and CPU {PROXY_CPU} (pinmeter) "
         f"{fmt0(fig(runs, 'pinmeter', 'proxy_cpu_busy_pct'))} % during the runs. CPU "
         f"per scrape: after the run, 1,000 scrapes back to back on the idle proxy (its "
         f"utime+stime over them / 1,000); at 10 scrapes/s that is the share of a core shown")


def scen_scrape(mock):
    log(f"== scrape time with {SCRAPE_TEAMS} teams x {SCRAPE_MODELS} models, every pair touched "
        f"({ROUNDS} rounds)")
    res_all = []
    for rnd in range(1, ROUNDS + 1):
        pm = MetricsPinmeter(mock, "scrape", teams=SCRAPE_TEAMS, models=SCRAPE_MODELS)
        if not pm.start(tag=f"scrape-{rnd}"):
            res_all.append(None)
            continue
        res = {}
        try:
            c = http.client.HTTPConnection("127.0.0.1", pm.port, timeout=30)
            bad = 0
            t0 = time.monotonic()
            for i in range(SCRAPE_TEAMS):
                hdr = {"Authorization": f"Bearer {team_key(i)}", "Content-Type": "application/json"}
                for m in pm.models():
                    body = CHAT_BODY.replace(MODEL.encode(), m.encode())
                    c.request("POST", "/v0/llm/chat/completions", body, hdr)
                    r = c.getresponse()
                    r.read()
                    bad += r.status != 200
            res["traffic_s"] = time.monotonic() - t0
            res["traffic_errors"] = bad
            wait_backlog(pm, 20)
            sc = http.client.HTTPConnection("127.0.0.1", pm.port, timeout=30)
            times = []
            for _ in range(5):
                scrape_once(pm.port, sc)                # warm-up
            for _ in range(50):
                dt, body = scrape_once(pm.port, sc)
                times.append(dt * 1000)
            sc.close()
            c.close()
            res["cpu_us_per_scrape"], _ = scrape_cpu(pm, 100)
            text = body.decode()
            res["series"] = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
            res["bytes"] = len(body)
            res["credit_series"] = text.count("\npinmeter_credits_charged_total{")
            res["p50_ms"] = statistics.median(times)
            res["max_ms"] = max(times)
        except Exception as e:
            note(f"scrape round {rnd}: failed: {e}")
            res = None
        check_after(pm, "scrape", rnd, pm.stop())
        res_all.append(res)
        log(f"  scrape round {rnd} " + (" ".join(f"{k}={v:.6g}" for k, v in res.items())
                                        if res else "FAILED"))
    RAW["scrape"] = res_all
    ok = [r for r in res_all if r]
    p50, mx = med([r["p50_ms"] for r in ok]), med([r["max_ms"] for r in ok])
    series, size = med([r["series"] for r in ok]), med([r["bytes"] for r in ok])
    label = f"{SCRAPE_TEAMS} teams × {SCRAPE_MODELS} models"
    row("scrape", f"GET /metrics, {label}, p50 (client wall time)", "ms", None, None, p50,
        "< 10 ms", None if p50 is None else p50 < 10, rat=None)
    row("scrape", f"GET /metrics, {label}, max of 50", "ms", None, None, mx, "(reported)", None,
        rat=None)
    cpu = med([r["cpu_us_per_scrape"] for r in ok])
    row("scrape", f"proxy CPU per scrape, {label}", "µs", None, None, cpu, "(reported)", None,
        rat=None, fmt="{:,.0f}")
    row("scrape", "series in the scrape / its size", "", None, None,
        None if series is None else f"{series:,.0f} / {size / 2**20:.2f} MiB", "(reported)",
        None, rat=None)
    bad = [r for r in ok if r["traffic_errors"] or r["credit_series"] != SCRAPE_TEAMS * SCRAPE_MODELS]
    if bad:
        note(f"scrape: {len(bad)} round(s) had failed requests or missing series: {bad}")
    note(f"scrape: {SCRAPE_TEAMS} teams (a key each) x {SCRAPE_MODELS} priced models, one request "
         f"for every (team, model) pair ({SCRAPE_TEAMS * SCRAPE_MODELS:,} requests, so "
         f"{SCRAPE_TEAMS * SCRAPE_MODELS:,} label sets in each counter family), then 50 scrapes "
         f"on one kept-alive connection timed by the client (request sent to the last byte read), "
         f"after 5 warm-up scrapes; idle proxy on CPU {PROXY_CPU}")


def row_store(scenario, figure, unit, direct, book, redis, target, fmt="{:.3f}", rat="auto"):
    """A row of the redis scenario in the common table: the nginx column holds the
    in-process book's figure, the pinmeter column the Redis store's, each labelled,
    and the ratio is redis/book. results.json also gets the plain numbers."""
    if rat == "auto":
        rat = ratio(redis, book)
    row(scenario, figure, unit, direct, None if book is None else "book " + fmtv(book, fmt),
        None if redis is None else "redis " + fmtv(redis, fmt), target, None,
        rat=None if rat is None else f"{rat:.2f}× r/b", fmt=fmt)
    ROWS[-1].update({"book": book, "redis": redis, "redis_over_book": rat})


def fmt1(v):
    return "–" if v is None else f"{v:.1f}"


# ---- main ---------------------------------------------------------------------

REVISION = "?"


def git_revision():
    """The commit measured, with "-dirty" when src/ or include/ has changes."""
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src",
                                "include", "Makefile"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return (rev or "?") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def build():
    if os.environ.get("BENCH_NO_BUILD") == "1":
        return
    r = subprocess.run(["make", "--no-print-directory", "-s", "-C", ROOT, "all", "bench-tools"],
                       timeout=600)
    if r.returncode != 0:
        sys.exit("bench: make failed")


def snapshot_binary():
    """Runs a private copy of build/pinmeter, so that a rebuild while the
    benchmark runs cannot mix two binaries in one table."""
    global PINMETER
    copy = os.path.join(RUN, "pinmeter.bin")
    shutil.copy2(PINMETER, copy)
    PINMETER = copy


def preflight():
    missing = [x for x in ("taskset", "wrk") if not shutil.which(x)]
    for f in (PINMETER, MOCKUP, STREAMLOAD):
        if not os.access(f, os.X_OK):
            missing.append(f)
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)} (see tests/bench/README.md)")
    if len(CPUS) < 2:
        note(f"only one CPU available ({CPUS}): the proxy shares it with the load generator")
    if not Nginx.available():
        note("nginx is not installed (apt-get install nginx-light): no baseline, ratios are n/a")


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    hard = raise_nofile()
    global REVISION
    REVISION = git_revision()          # before the build: what is measured
    build()
    preflight()
    shutil.rmtree(RUN, ignore_errors=True)
    os.makedirs(RUN)
    snapshot_binary()
    log(f"bench: load+mock on CPU {LOAD_CPU}, proxy on CPU {PROXY_CPU}; {ROUNDS} rounds of "
        f"A direct / B nginx / C pinmeter; runs of {SECONDS} s; fd limit {hard}; "
        f"scenarios {','.join(ONLY)}")
    t_start = time.monotonic()
    mock = Mock(lifetime_s=4 * 3600)
    try:
        if "c1" in ONLY:
            scen_c1(mock)
        if "c64" in ONLY or "ledger" in ONLY:
            scen_c64(mock, "c64" in ONLY, "ledger" in ONLY)
        if "stream64" in ONLY:
            scen_stream64(mock)
        if "stream1k" in ONLY:
            scen_stream1k(mock)
        if "stream10k" in ONLY:
            scen_stream10k(mock)
        if "startup" in ONLY:
            scen_startup(mock)
        if "usage" in ONLY:
            scen_usage(mock)
        if "instr" in ONLY:
            scen_instr(mock)
        if "redis" in ONLY:
            scen_redis(mock)
        if "metrics" in ONLY:
            scen_metrics(mock)
        if "scrape" in ONLY:
            scen_scrape(mock)
        bench_tls.run(sys.modules[__name__], mock, ONLY)
    except KeyboardInterrupt:
        note("interrupted")
    finally:
        mock.stop()
        stop_all()
    table = print_table()
    cmd = " ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ) if k.startswith("BENCH_")
                   and k != "BENCH_NO_BUILD")
    head = (f"pinmeter bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"source {REVISION}, {os.cpu_count()} CPUs, {ROUNDS} rounds × {SECONDS} s, medians"
            + (f" ({cmd})" if cmd else ""))
    print()
    print(head)
    print()
    print(table)
    if NOTES:
        print()
        for n in NOTES:
            print(f"- {n}")
    print(f"\n(total {time.monotonic() - t_start:.0f} s; per-run figures in build-bench/results.json)")
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"header": head, "rows": ROWS, "notes": NOTES, "runs": RAW}, f, indent=1,
                  default=str)
    with open(os.path.join(OUT, "bench-table.md"), "w") as f:
        f.write(head + "\n\n" + table + "\n" + "".join(f"\n- {n}" for n in NOTES) + "\n")
    if not KEEP:
        shutil.rmtree(RUN, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The scenarios of issue 17 that `make bench` runs beside the others:

  tls64        c=64 non-streaming with the upstream behind TLS (as Pinata's is):
               proxy CPU per request and req/s (no direct run), pinmeter (workers 1) against
               nginx `proxy_pass https://` with upstream keep-alive and a
               verified certificate, both pinned to the proxy's CPU
  tlsstream64  64 streams x 50 chunks 2 ms apart over the same TLS upstream:
               added time to first event
  h2           1,000 concurrent streams over the TLS upstream, which offers
               h2: how many connections each proxy opens to it (sampled with
               ss while the streams run)
  workers2     c=64 non-streaming, nothing pinned: pinmeter with "workers": 2
               against nginx with 2 worker processes, a mock with 2 threads
               and wrk with 2 threads sharing the machine's CPUs

The TLS upstream (TlsFront) is an nginx from Debian terminating TLS in front of
the bench mock, on the load CPU, with a self-signed certificate made at bench
time (openssl, ECDSA P-256, valid for a day, SAN 127.0.0.1 and localhost) that
pinmeter trusts through upstream.ca_file and nginx through
proxy_ssl_trusted_certificate. It also listens in plain HTTP: "direct" is the
same hop to the mock without TLS, so an "added" figure is the proxy plus its
TLS to the upstream.

bench.py calls run(module, mock, only); B is bench.py itself (its helpers,
targets, table).
"""
import os
import shutil
import ssl
import subprocess
import threading
import time
import http.client
from types import SimpleNamespace

B = None
SCENARIOS = ("tls64", "tlsstream64", "h2", "workers2")
# tls64 and workers2 run 5 s (c=64 gives tens of thousands of requests in that),
# h2 3 s: they keep the whole of `make bench` near 20 minutes
SHORT_S = 5
FRONT_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "nginx-tls-front.conf.in")


class TlsFront:
    """The mock behind TLS: .port (TLS, h2 offered), .plain_port, .scheme,
    .ca_file, .nginx_ssl (the nginx baseline's proxy_ssl lines)."""
    scheme = "https"

    def __init__(self, mock, max_conns):
        self.dir = os.path.join(B.RUN, "tls-front")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.ca_file = os.path.join(self.dir, "cert.pem")
        key = os.path.join(self.dir, "key.pem")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                            "-subj", "/CN=localhost", "-addext",
                            "subjectAltName=IP:127.0.0.1,DNS:localhost",
                            "-keyout", key, "-out", self.ca_file],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"openssl req failed: {r.stderr[-300:]}")
        self.port, self.plain_port = B.free_port(), B.free_port()
        hard = B.fd_hard_limit()
        subst = {"@USER_LINE@": "user root;" if os.geteuid() == 0 else "",
                 "@NOFILE@": str(hard),
                 "@WORKER_CONNECTIONS@": str(max(1024, min(hard, 3 * max_conns + 1300))),
                 "@MOCK_PORT@": str(mock.port), "@TLS_PORT@": str(self.port),
                 "@PLAIN_PORT@": str(self.plain_port), "@DIR@": self.dir,
                 "@ACCESS_LOG@": "access_log off;", "@CERT@": self.ca_file, "@KEY@": key}
        with open(FRONT_TEMPLATE) as f:
            text = f.read()
        for k, v in subst.items():
            text = text.replace(k, v)
        for sub in ("client_body", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        conf = os.path.join(self.dir, "front.conf")
        with open(conf, "w") as f:
            f.write(text)
        self.proc = B.start([shutil.which("nginx"), "-p", self.dir, "-c", conf, "-e",
                             os.path.join(self.dir, "front-error.log")], B.LOAD_CPU,
                            os.path.join(self.dir, "stderr.log"))
        if B.wait_http(self.plain_port, "/healthz", 10, self.proc) is None or not self.tls_ok():
            self.stop()
            raise RuntimeError("the TLS front (nginx) did not start")
        self.nginx_ssl = "\n".join(
            "            " + l for l in (
                "proxy_ssl_verify on;",
                f"proxy_ssl_trusted_certificate {self.ca_file};",
                "proxy_ssl_name localhost;",
                "proxy_ssl_session_reuse on;"))

    def tls_ok(self):
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        for _ in range(50):
            try:
                c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=2, context=ctx)
                c.connect()
                proto = c.sock.selected_alpn_protocol()
                c.close()
                self.alpn = proto
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def stop(self):
        B.stop(self.proc)


def upstream_conns(port):
    """Established TCP connections whose peer is 127.0.0.1:port."""
    r = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
                       capture_output=True, text=True, timeout=10)
    return sum(1 for l in r.stdout.splitlines() if l.strip())


class ConnSampler:
    """Samples upstream_conns(port) every 100 ms in a thread; .peak."""
    def __init__(self, port):
        self.port, self.peak, self.samples = port, 0, 0
        self.done = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.done.wait(0.1):
            try:
                self.peak = max(self.peak, upstream_conns(self.port))
                self.samples += 1
            except (OSError, subprocess.SubprocessError):
                pass

    def stop(self):
        self.done.set()
        self.t.join(timeout=15)
        return self.peak


def tls_targets(front, direct=True):
    ts = [B.Direct(SimpleNamespace(port=front.plain_port))] if direct else []
    if B.Nginx.available():
        ts.append(B.Nginx(front))
    ts.append(B.Pinmeter(front))
    return ts


def scen_tls64(front):
    secs = min(B.SECONDS, SHORT_S)
    B.log(f"== TLS upstream, non-streaming, concurrency 64 ({B.ROUNDS} rounds x {secs} s)")

    def one(t):
        B.wrk(t.port, 64, 1)                           # warm-up: connections, TLS sessions
        res = B.measure(t, lambda: B.wrk(t.port, 64, secs))
        if res["requests"] > 0 and "cpu_s" in res:
            res["cpu_us_per_req"] = res["cpu_s"] * 1e6 / res["requests"]
        return res
    runs = B.run_rounds("tls64", front, tls_targets(front, direct=False), one)
    ng, pm = B.fig(runs, "nginx", "cpu_us_per_req"), B.fig(runs, "pinmeter", "cpu_us_per_req")
    rat = B.ratio(pm, ng)
    B.row("TLS upstream c=64", "proxy CPU per request", "µs", None, ng, pm, "≤ 1.5× nginx",
          None if rat is None else rat <= 1.5, fmt="{:.1f}")
    ng, pm = (B.fig(runs, n, "rps") for n in ("nginx", "pinmeter"))
    B.row("TLS upstream c=64", "throughput", "req/s", None, ng, pm,
          "(reported)", None, fmt="{:,.0f}")
    B.check_errors("tls64", runs, "errors")


def scen_tlsstream64(front):
    B.log(f"== TLS upstream, streaming, 64 concurrent x 50 chunks 2 ms apart "
          f"({B.ROUNDS} rounds x {B.SECONDS} s)")

    def one(t):
        B.streamload(t.port, 64, 2, 1, 0, 20)         # warm-up
        return B.measure(t, lambda: B.streamload(t.port, 64, 50, 2, B.SECONDS, B.SECONDS + 20))
    runs = B.run_rounds("tlsstream64", front, tls_targets(front), one)
    d = B.fig(runs, "direct", "ttfb_p50_us")
    ng, pm = B.added(runs, "nginx", "ttfb_p50_us"), B.added(runs, "pinmeter", "ttfb_p50_us")
    rat = B.ratio(pm, ng)
    B.row("TLS stream 64×50×2ms", "added TTFB p50", "ms", d and d / 1000, ng and ng / 1000,
          pm and pm / 1000, "≤ 1.5× nginx", None if rat is None else rat <= 1.5)
    B.stream_errors("tlsstream64", runs)


def scen_h2(front):
    n, secs = 1000, min(B.SECONDS, 3)     # the peak comes in the first second
    B.log(f"== TLS upstream offering h2, {n:,} concurrent streams x 50 chunks 2 ms apart "
          f"({B.ROUNDS} rounds x {secs} s): upstream connections")

    def one(t):
        s = ConnSampler(front.port) if not isinstance(t, B.Direct) else None
        try:
            res = B.measure(t, lambda: B.streamload(t.port, n, 50, 2, secs, secs + 30))
        finally:
            peak = s.stop() if s else None
        if s:
            res["upstream_conns_peak"] = peak
            res["conn_samples"] = s.samples
        return res
    runs = B.run_rounds("h2", front, tls_targets(front, direct=False), one, max_conns=n)
    ng, pm = (B.fig(runs, x, "upstream_conns_peak") for x in ("nginx", "pinmeter"))
    B.row(f"h2 upstream {n:,} streams", "upstream connections (peak)", "", None, ng, pm, "≤ 10",
          None if pm is None else pm <= 10, fmt="{:,.0f}")
    ng, pm = (B.fig(runs, x, "ok") for x in ("nginx", "pinmeter"))
    B.row(f"h2 upstream {n:,} streams", "streams completed per run", "", None, ng, pm,
          "(reported)", None, fmt="{:,.0f}")
    B.note(f"h2: the TLS front offers {getattr(front, 'alpn', None) or '?'} by ALPN with 128 "
           f"streams a connection (nginx's default), so {n:,} streams need at least "
           f"{-(-n // 128)} connections; nginx's proxy_pass speaks HTTP/1.1 upstream, one "
           f"connection a stream")
    B.stream_errors("h2", runs)


def scen_workers2():
    secs = min(B.SECONDS, SHORT_S)
    B.log(f"== every core: c=64 non-streaming, nothing pinned, pinmeter workers 2 vs nginx 2 "
          f"workers ({B.ROUNDS} rounds x {secs} s)")
    cpus = B.ALL_CPUS
    mdir = os.path.join(B.RUN, "mock-workers2")
    os.makedirs(mdir, exist_ok=True)
    proc = B.start([B.MOCKUP, "--port", "0", "--seconds", "3600", "--threads", "2",
                    "--model", B.MODEL], cpus, os.path.join(mdir, "mock.log"),
                   stdout=subprocess.PIPE)
    line = proc.stdout.readline().decode()
    if not line.startswith("READY "):
        B.stop(proc)
        B.note(f"workers2: the mock did not start: {line!r}")
        return
    mock = SimpleNamespace(port=int(line.split()[1]))
    try:
        ng = B.Nginx(mock, workers=2, cpu=cpus) if B.Nginx.available() else None
        pm = B.Pinmeter(mock, cpu=cpus)
        pm.extra = {"workers": 2}
        targets = ([ng] if ng else []) + [pm]

        def one(t):
            B.wrk(t.port, 64, 1, cpu=cpus, threads=2)
            res = B.measure(t, lambda: B.wrk(t.port, 64, secs, cpu=cpus, threads=2))
            if res["requests"] > 0 and "cpu_s" in res:
                res["cpu_us_per_req"] = res["cpu_s"] * 1e6 / res["requests"]
            return res
        runs = B.run_rounds("workers2", mock, targets, one, alternate=True)
    finally:
        B.stop(proc)
    n_, p = (B.fig(runs, x, "rps") for x in ("nginx", "pinmeter"))
    rat = B.ratio(p, n_)
    B.row("every core c=64, unpinned", "throughput (workers 2 / nginx 2 workers)", "req/s", None,
          n_, p, "≥ 0.8× nginx", None if rat is None else rat >= 0.8, fmt="{:,.0f}")
    n_, p = (B.fig(runs, x, "cpu_us_per_req") for x in ("nginx", "pinmeter"))
    B.row("every core c=64, unpinned", "proxy CPU per request", "µs", None, n_, p,
          "(reported)", None, fmt="{:.1f}")
    B.check_errors("workers2", runs, "errors")


def run(bench, mock, only):
    global B
    B = bench
    tls = [s for s in ("tls64", "tlsstream64", "h2") if s in only]
    if tls:
        if not (shutil.which("nginx") and shutil.which("openssl")):
            B.note("TLS scenarios skipped: they need nginx (with ssl and http2) and openssl")
        else:
            front = None
            try:
                front = TlsFront(mock, 1000)
                if "tls64" in only:
                    scen_tls64(front)
                if "tlsstream64" in only:
                    scen_tlsstream64(front)
                if "h2" in only:
                    scen_h2(front)
            except RuntimeError as e:
                B.note(f"TLS scenarios: {e}")
            finally:
                if front:
                    front.stop()
    if "workers2" in only:
        scen_workers2()

#!/usr/bin/env python3
"""What budget alerts cost a loaded proxy: c=64 (wrk, bench.py's machinery:
mock and load on CPU 0, the proxy on CPU 1) against pinmeter without and
with "alerts" (thresholds set; the team is far from its cap, so no event
fires: what is measured is the hooks on the request path and the alert
thread's paced checks). Alternates the two for BENCH_ROUNDS rounds of
BENCH_SECONDS (default 3 x 3 s) and prints, per variant, req/s, the proxy's
CPU per request, the loop thread's CPU per request and the alert thread's
CPU (from /proc/<pid>/task/<tid>/schedstat, nanoseconds). With --instr,
instead: instructions per request of each variant under callgrind (every
thread, the alert thread's rounds included), over BENCH_INSTR_REQUESTS
sequential requests (default 2000) — the figure a busy machine does not move.

    make bench-tools && BENCH_PINMETER=build/pinmeter python3 tests/bench/alerts_cost.py [--instr]
"""
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("BENCH_SECONDS", "3")
os.environ.setdefault("BENCH_ROUNDS", "3")
import bench  # noqa: E402


class Variant(bench.Pinmeter):
    def __init__(self, mock, name, extra):
        super().__init__(mock)
        self.name = name
        self.extra = extra

    def start(self, max_conns=1024, tag="run", **kw):
        return super().start(max_conns=max_conns, tag=f"{self.name}-{tag}", **kw)


def thread_ns(pid, prefix):
    """CPU time of pid's threads whose name starts with prefix, in ns."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                st = f.read()
            if st[st.index("(") + 1:st.rindex(")")].startswith(prefix):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
        except (OSError, ValueError):
            pass
    return total


def one(t):
    bench.wrk(t.port, 64, 1)                            # warm-up
    pid = t.pids[0]
    a0, l0 = thread_ns(pid, "pm-alerts"), thread_ns(pid, "pm-loop")
    res = bench.measure(t, lambda: bench.wrk(t.port, 64, bench.SECONDS))
    a1, l1 = thread_ns(pid, "pm-alerts"), thread_ns(pid, "pm-loop")
    n = max(1, res["requests"])
    res["cpu_us_per_req"] = res["cpu_s"] * 1e6 / n
    res["loop_us_per_req"] = (l1 - l0) / 1e3 / n
    res["alert_thread_ms"] = (a1 - a0) / 1e6
    return res


ALERTS = {"alerts": {"webhook_url": "http://127.0.0.1:1/hook", "thresholds": [0.5, 0.8, 1.0]}}


def inclusive(dump, names):
    """Inclusive instruction counts of the named functions in a callgrind dump."""
    import subprocess
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                         capture_output=True, text=True, timeout=120).stdout
    found = {}
    for line in out.splitlines():
        for nm in names:
            if nm not in found and (" %s [" % nm) in line and "=>" not in line:
                found[nm] = int(line.split()[0].replace(",", ""))
    return {nm: found.get(nm, 0) for nm in names}


def instr(mock):
    for name, extra in (("off", {}), ("on", ALERTS)):
        t = Variant(mock, name, extra)
        d = os.path.join(bench.RUN, f"pinmeter-{name}-instr")
        if not t.start(tag="instr", ready_timeout=120,
                       wrapper=["valgrind", "--tool=callgrind", "-q",
                                f"--callgrind-out-file={d}/callgrind.out"]):
            print(name, "did not start under callgrind")
            continue
        try:
            n = bench.INSTR_REQUESTS
            ir, bad, dump = bench.callgrind_instr(t, n, lambda: t.proc.pid)
            print("%-4s %8.0f instructions per request (callgrind, %d requests, %d not 200)"
                  % (name, ir, n, bad))
            fns = inclusive(dump, ("src/events.c:events_settled", "src/alertq.c:alertq_settled",
                                   "src/alerts.c:alerts_main"))
            for fn, v in fns.items():
                print("       %-30s %8.0f per request (inclusive)" % (fn, v / n))
        finally:
            t.stop()


def main():
    missing = [p for p in (bench.MOCKUP, bench.PINMETER) if not os.path.exists(p)]
    if missing:
        print("missing %s (make && make bench-tools)" % ", ".join(missing))
        return 1
    os.makedirs(bench.RUN, exist_ok=True)
    mock = bench.Mock(lifetime_s=1800)
    try:
        if "--instr" in sys.argv:
            instr(mock)
            return 0
        runs = bench.run_rounds("alerts", mock, [Variant(mock, "off", {}),
                                                 Variant(mock, "on", ALERTS)], one)
    finally:
        mock.stop()
        bench.stop_all()
    for name, rs in runs.items():
        rs = [r for r in rs if r]
        if not rs:
            print(name, "no successful run")
            continue
        m = lambda k: statistics.median(r[k] for r in rs)
        print("%-4s req/s %8.0f  proxy CPU/req %6.1f us  loop CPU/req %6.1f us  "
              "alert thread %6.2f ms per %d s run  (rounds: %s)"
              % (name, m("rps"), m("cpu_us_per_req"), m("loop_us_per_req"),
                 m("alert_thread_ms"), bench.SECONDS, ", ".join("%.0f" % r["rps"] for r in rs)))
    for n in bench.NOTES:
        print("-", n)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Runs pinmeter's end-to-end tests.

    python3 tests/e2e/run.py --bin build/pinmeter [-k pattern] [-v] [-j N]

Discovers tests/e2e/test_*.py, prints failures, and ends with one line
"e2e: N passed, M failed[, S skipped]". Exit status 1 on any failure.

-j N (or PINMETER_E2E_JOBS) runs the test files in N processes at once (the
tests mostly wait: on the upstream's delays, leases, windows), the longest
first as the last run timed them (build/e2e-times.json), each job with ports
of its own (PINMETER_E2E_PORT_BASE); a failed file's whole output is printed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


class Result(unittest.TextTestResult):
    def startTest(self, test):
        self._t0 = time.time()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        if self.showAll:
            self.stream.writeln("    (%.2fs)" % (time.time() - self._t0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "..", "build", "pinmeter"))
    ap.add_argument("-k", action="append", default=[], metavar="PATTERN",
                    help="only tests whose name contains PATTERN (repeatable)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("-j", "--jobs", type=int,
                    default=int(os.environ.get("PINMETER_E2E_JOBS", "1")),
                    help="test files run in this many processes at once")
    ap.add_argument("--file", help=argparse.SUPPRESS)     # one job's file (-j)
    a = ap.parse_args()
    os.environ["PINMETER_BIN"] = os.path.abspath(a.bin)
    sys.path.insert(0, HERE)
    if a.jobs > 1 and not a.file:
        return run_parallel(a)

    loader = unittest.TestLoader()
    if a.k:
        loader.testNamePatterns = ["*%s*" % p if "*" not in p else p for p in a.k]
    suite = loader.discover(HERE, pattern=a.file or "test_*.py", top_level_dir=HERE)
    t0 = time.time()
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2 if a.verbose else 1,
                                     resultclass=Result)
    res = runner.run(suite)
    holder = unittest.suite._ErrorHolder   # class/module set-up failures
    bad = res.failures + res.errors
    real_failed = sum(1 for t, _ in bad if not isinstance(t, holder))
    failed = len(bad) + len(res.unexpectedSuccesses)
    skipped = len(res.skipped)
    real_skipped = sum(1 for t, _ in res.skipped if not isinstance(t, holder))
    passed = res.testsRun - real_failed - real_skipped - len(res.expectedFailures) \
        - len(res.unexpectedSuccesses)
    line = "e2e: %d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    sys.stderr.flush()
    print("(%.1fs)" % (time.time() - t0), file=sys.stderr)
    print(line, flush=True)
    return 1 if failed else 0


TIMES = os.path.join(HERE, "..", "..", "build", "e2e-times.json")
PORT_BASE, PORT_SPAN = 20000, 2500     # below the ephemeral ports (32768 up)


def run_parallel(a):
    """The test files in a.jobs processes, longest first; one summary line."""
    try:
        with open(TIMES) as f:
            times = json.load(f)
    except (OSError, ValueError):
        times = {}
    files = sorted(f for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))
    # unknown files first by size (a proxy for their length), then the longest known
    files.sort(key=lambda f: (f in times, -times.get(f, os.path.getsize(os.path.join(HERE, f)))))
    jobs = min(a.jobs, (32768 - PORT_BASE) // PORT_SPAN)
    free = list(range(jobs))
    running, totals, t0, bad = [], [0, 0, 0], time.time(), []
    while files or running:
        while files and free:
            f, slot = files.pop(0), free.pop(0)
            out = tempfile.TemporaryFile()
            env = dict(os.environ, PINMETER_E2E_PORT_BASE=str(PORT_BASE + slot * PORT_SPAN))
            argv = [sys.executable, os.path.abspath(__file__), "--bin", a.bin, "--file", f]
            argv += sum((["-k", k] for k in a.k), []) + (["-v"] if a.verbose else [])
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
            running.append((p, f, slot, out, time.time()))
        time.sleep(0.05)
        for item in list(running):
            p, f, slot, out, started = item
            if p.poll() is None:
                continue
            running.remove(item)
            free.append(slot)
            took = time.time() - started
            if not a.k:
                times[f] = round(took, 1)
            out.seek(0)
            text = out.read().decode(errors="replace")
            out.close()
            last = [l for l in text.splitlines() if l.startswith("e2e: ")]
            nums = [0, 0, 0]
            if last:
                parts = last[-1][5:].split(", ")
                for i, word in enumerate(("passed", "failed", "skipped")):
                    for part in parts:
                        if part.endswith(" " + word):
                            nums[i] = int(part.split()[0])
            if p.returncode != 0 and nums[1] == 0:
                nums[1] = 1           # died before its summary
            totals = [x + y for x, y in zip(totals, nums)]
            print(f"  {f}: {nums[0]} passed, {nums[1]} failed ({took:.1f}s)", file=sys.stderr,
                  flush=True)
            if p.returncode != 0 or a.verbose:
                bad.append(f) if p.returncode != 0 else None
                sys.stderr.write(text)
                sys.stderr.flush()
    try:
        os.makedirs(os.path.dirname(TIMES), exist_ok=True)
        with open(TIMES, "w") as fh:
            json.dump(times, fh, indent=1, sort_keys=True)
    except OSError:
        pass
    line = "e2e: %d passed, %d failed" % (totals[0], totals[1])
    if totals[2]:
        line += ", %d skipped" % totals[2]
    print("(%.1fs, %d jobs%s)" % (time.time() - t0, jobs,
                                  ", failed in " + " ".join(bad) if bad else ""), file=sys.stderr)
    print(line, flush=True)
    return 1 if totals[1] else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Runs pinmeter's end-to-end tests.

    python3 tests/e2e/run.py --bin build/pinmeter [-k pattern] [-v]

Discovers tests/e2e/test_*.py, prints failures, and ends with one line
"e2e: N passed, M failed[, S skipped]". Exit status 1 on any failure.
"""
import argparse
import os
import sys
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
    a = ap.parse_args()
    os.environ["PINMETER_BIN"] = os.path.abspath(a.bin)
    sys.path.insert(0, HERE)

    loader = unittest.TestLoader()
    if a.k:
        loader.testNamePatterns = ["*%s*" % p if "*" not in p else p for p in a.k]
    suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
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


if __name__ == "__main__":
    sys.exit(main())

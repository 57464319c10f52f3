"""Self-test of the shared invariant checker (tests/e2e/invariants.py): fed a
hand-made ledger and mock record, it passes a consistent one and fails on
each kind of violation. No pinmeter process is needed."""
import os
import shutil
import sqlite3
import tempfile
import time
import unittest

from harness import Proxy, SONNET, UPSTREAM_KEY, cost, reservation
from invariants import check_invariants

SCHEMA = """
CREATE TABLE requests(id TEXT PRIMARY KEY, started_ms INTEGER NOT NULL, ended_ms INTEGER,
 team TEXT NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL, stream INTEGER NOT NULL DEFAULT 0,
 status INTEGER, prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL
 DEFAULT 0, cached_tokens INTEGER NOT NULL DEFAULT 0, reserved_nanos INTEGER NOT NULL DEFAULT 0,
 charged_nanos INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL, upstream_id TEXT, latency_ms INTEGER);
CREATE TABLE spend_daily(team TEXT NOT NULL, day INTEGER NOT NULL, nanos INTEGER NOT NULL,
 PRIMARY KEY(team, day)) WITHOUT ROWID;
"""


def usage(p, c, k=0):
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": k}}


class CheckerSelfTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pinmeter-checker-")
        self.px = Proxy(self.tmp, "http://127.0.0.1:9", teams=[], name="fake")
        self.now = int(time.time() * 1000)
        self.res = reservation(SONNET, 120, 100)
        # a consistent picture: settled, failed (upstream 500), estimated (no usage)
        self.rows = [
            self.row("r1", "up-1", "settled", 40, 10, 5, cost(SONNET, 40, 10, 5)),
            self.row("r2", "up-2", "failed", 0, 0, 0, 0, status=500),
            self.row("r3", "up-3", "estimated", 40, 3, 0, cost(SONNET, 40, 3)),
            self.row("r4", None, "failed", 0, 0, 0, 0, status=504),
        ]
        self.records = [
            self.rec("up-1", usage(40, 10, 5)),
            self.rec("up-2", None, status=500),
            self.rec("up-3", None),
            self.rec("up-4", None, completed=False),    # timed out before headers: row r4
        ]

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def row(self, rid, up, state, p, c, k, charged, status=200, model=SONNET):
        return {"id": rid, "started_ms": self.now, "ended_ms": self.now + 5, "team": "t",
                "key_id": "k", "model": model, "stream": 0, "status": status,
                "prompt_tokens": p, "completion_tokens": c, "cached_tokens": k,
                "reserved_nanos": self.res, "charged_nanos": charged, "state": state,
                "upstream_id": up, "latency_ms": 5}

    def rec(self, rid, u, status=200, completed=True, mock=None):
        return {"id": rid, "usage_sent": u is not None, "usage": u, "status": status,
                "completed": completed, "client_gone": False, "fault": None,
                "body": {"model": SONNET, "mock": mock or {}}, "headers": {},
                "raw_body": "", "key": UPSTREAM_KEY}

    def write(self, rows, daily_delta=0):
        if os.path.exists(self.px.ledger):
            os.unlink(self.px.ledger)
        con = sqlite3.connect(self.px.ledger)
        con.executescript(SCHEMA)
        for r in rows:
            con.execute("INSERT INTO requests VALUES (%s)" % ",".join("?" * 16), tuple(r.values()))
        total = sum(r["charged_nanos"] for r in rows)
        con.execute("INSERT INTO spend_daily VALUES ('t', ?, ?)", (self.now // 86400000,
                                                                   total + daily_delta))
        con.commit()
        con.close()

    def run_check(self, rows=None, records=None, **kw):
        self.write(self.rows if rows is None else rows, kw.pop("daily_delta", 0))
        return check_invariants(self, [self.px], None, idle_timeout=0.2, clear_bodies=False,
                                mock_records=self.records if records is None else records, **kw)

    def assertCaught(self, rows=None, records=None, **kw):
        with self.assertRaises(AssertionError):
            self.run_check(rows, records, **kw)

    def test_consistent_ledger_passes(self):
        s = self.run_check()
        self.assertEqual(s["matched"], 3)
        self.assertEqual(s["unmatched_served"], 1)

    def test_catches_inflight_row(self):
        rows = self.rows + [self.row("r9", None, "inflight", 0, 0, 0, 0, status=None)]
        self.assertCaught(rows)

    def test_catches_wrong_charge(self):
        rows = [dict(self.rows[0], charged_nanos=self.rows[0]["charged_nanos"] - 1)] + self.rows[1:]
        self.assertCaught(rows)

    def test_catches_estimated_instead_of_settled(self):
        rows = [dict(self.rows[0], state="estimated", prompt_tokens=40, completion_tokens=0,
                     cached_tokens=0, charged_nanos=cost(SONNET, 40, 0))] + self.rows[1:]
        self.assertCaught(rows)
        # unless the client may have abandoned it on purpose
        recs = [dict(self.records[0], body={"model": SONNET, "mock": {"client_may_abort": True}})] \
            + self.records[1:]
        self.run_check(rows, recs)

    def test_catches_charged_failure(self):
        rows = self.rows[:1] + [dict(self.rows[1], charged_nanos=7)] + self.rows[2:]
        self.assertCaught(rows)

    def test_catches_upstream_error_not_failed(self):
        rows = self.rows[:1] + [dict(self.rows[1], state="estimated", prompt_tokens=40,
                                     charged_nanos=cost(SONNET, 40, 0))] + self.rows[2:]
        self.assertCaught(rows)

    def test_catches_duplicate_upstream_id(self):
        rows = self.rows + [dict(self.rows[0], id="r1-again")]
        self.assertCaught(rows)

    def test_catches_missing_row(self):
        self.assertCaught(self.rows[1:])                  # up-1 served with usage, no row
        self.assertCaught(self.rows[:3])                  # up-4 served, no row covers it

    def test_catches_interrupted_unless_allowed(self):
        rows = self.rows + [self.row("r5", None, "interrupted", 0, 0, 0, self.res, status=None)]
        self.assertCaught(rows)
        self.run_check(rows, allow_interrupted=True)
        rows[-1] = dict(rows[-1], charged_nanos=self.res - 1)
        self.assertCaught(rows, allow_interrupted=True)   # below its reservation

    def test_catches_settled_absurd_usage(self):
        big = usage(12, 50_000_000)
        recs = [self.rec("up-1", big)] + self.records[1:]
        rows = [self.row("r1", "up-1", "settled", 12, 50_000_000, 0, cost(SONNET, 12, 50_000_000))] \
            + self.rows[1:]
        self.assertCaught(rows, recs)
        rows[0] = self.row("r1", "up-1", "estimated", 40, 0, 0, self.res)
        self.run_check(rows, recs)

    def test_catches_daily_table_mismatch(self):
        self.assertCaught(daily_delta=1)

    def test_catches_stray_rows_in_fresh_ledger(self):
        rows = self.rows + [self.row("r6", "up-unknown", "settled", 1, 1, 0, cost(SONNET, 1, 1))]
        self.run_check(rows)
        self.assertCaught(rows, fresh_ledger=True)

    def test_catches_secret_in_body(self):
        self.assertCaught(bodies=[b'{"error": "key ' + UPSTREAM_KEY.encode() + b'"}'])

    def test_catches_team_key_sent_upstream(self):
        from harness import Team
        t = Team("t", None)
        self.px.teams = [t]
        recs = [dict(self.records[0], headers={"Authorization": "Bearer " + t.key})] \
            + self.records[1:]
        self.assertCaught(records=recs)

"""Issue 13: the metering headers on every metered answer (X-Pinmeter-Reserved,
X-Pinmeter-Team-Available, X-Pinmeter-Cost) and the JSON log format."""
import json

from harness import (E2ETest, Team, SONNET, chat_body, body_len, cost, reservation,
                     fmt_credits, NANO)


class MeteringHeadersTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.capped = Team("capped", 1.0, key_ids=["c1"])
        cls.free = Team("free", None, key_ids=["f1"])
        cls.tiny = Team("tiny", 0.000001, key_ids=["t1"])
        cls.pm = cls.add_proxy([cls.capped, cls.free, cls.tiny])

    def test_nonstream_reserved_available_and_cost(self):
        body = chat_body(SONNET, max_tokens=300, mock={"usage": {"prompt_tokens": 40,
                                                                 "completion_tokens": 7}})
        held = reservation(SONNET, body_len(body), 300)
        spent_before = NANO - self.pm.wait_idle(self.capped.key)["available"]
        r = self.pm.chat(body, key=self.capped.key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-pinmeter-reserved"), fmt_credits(held))
        self.assertEqual(r.header("x-pinmeter-team-available"),
                         fmt_credits(NANO - spent_before - held))
        self.assertEqual(r.header("x-pinmeter-cost"), fmt_credits(cost(SONNET, 40, 7)))
        row = self.pm.row_for(r)
        self.assertEqual(fmt_credits(row["charged_nanos"]), r.header("x-pinmeter-cost"))

    def test_upstream_error_costs_zero(self):
        r = self.pm.chat(chat_body(SONNET, max_tokens=10, mock={"status": 500}),
                         key=self.capped.key)
        self.assertEqual(r.status, 500, r)
        self.assertEqual(r.header("x-pinmeter-cost"), "0.000000000")
        self.assertTrue(r.header("x-pinmeter-reserved"))

    def test_stream_carries_reserved_not_cost(self):
        body = chat_body(SONNET, max_tokens=50, stream=True)
        s = self.pm.stream(body, key=self.capped.key)
        self.assertEqual(s.status, 200)
        s.read_all()
        s.close()
        self.assertEqual(s.headers.get("x-pinmeter-reserved"),
                         fmt_credits(reservation(SONNET, body_len(body), 50)))
        self.assertIn("x-pinmeter-team-available", s.headers)
        self.assertNotIn("x-pinmeter-cost", s.headers)

    def test_uncapped_team_has_no_available(self):
        r = self.pm.chat(chat_body(SONNET, max_tokens=10), key=self.free.key)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("x-pinmeter-reserved"))
        self.assertIsNone(r.header("x-pinmeter-team-available"))

    def test_refused_request_has_none(self):
        r = self.pm.chat(chat_body(SONNET, max_tokens=1000), key=self.tiny.key)
        self.assertEqual(r.status, 402, r)
        for h in ("x-pinmeter-reserved", "x-pinmeter-team-available", "x-pinmeter-cost",
                  "x-pinmeter-request-id"):
            self.assertIsNone(r.header(h), h)


class JsonLogTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("jlog", 5.0, key_ids=["j1"])
        cls.pm = cls.add_proxy([cls.team], overrides={"log_format": "json",
                                                      "log_requests": True})

    def lines(self):
        return [l for l in self.pm.stderr_text().splitlines() if l.strip()]

    def test_every_line_is_json_and_requests_carry_their_fields(self):
        ok = self.pm.chat(chat_body(SONNET, max_tokens=20, mock={"usage": {
            "prompt_tokens": 12, "completion_tokens": 3}}), key=self.team.key)
        self.assertEqual(ok.status, 200, ok)
        bad = self.pm.chat(chat_body(SONNET, max_tokens=20, mock={"status": 503}),
                           key=self.team.key)
        self.assertEqual(bad.status, 503, bad)
        row = self.pm.row_for(ok)
        rid = ok.header("x-pinmeter-request-id")
        self.pm.wait_log(rid)
        objs = []
        for l in self.lines():
            o = json.loads(l)          # every line, start-up lines included
            self.assertEqual(set(o) >= {"ts", "level", "msg"}, True, o)
            self.assertRegex(o["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIn(o["level"], ("info", "warn", "error"))
            objs.append(o)
        mine = [o for o in objs if o.get("id") == rid]
        self.assertEqual(len(mine), 1, objs)
        o = mine[0]
        self.assertEqual((o["team"], o["key"], o["model"], o["stream"], o["status"],
                          o["state"]), ("jlog", "j1", SONNET, False, 200, "settled"))
        self.assertEqual((o["prompt_tokens"], o["completion_tokens"], o["cached_tokens"]),
                         (12, 3, 0))
        self.assertEqual(o["charged"], float(fmt_credits(row["charged_nanos"])))
        self.assertEqual(fmt_credits(row["reserved_nanos"]), "%.9f" % o["reserved"])
        self.assertEqual(o["latency_ms"], row["latency_ms"])
        self.assertEqual(o["upstream_id"], row["upstream_id"])
        self.assertTrue(o["started_at"].endswith("Z") and o["ended_at"].endswith("Z"))
        failed = [x for x in objs if x.get("status") == 503]
        self.assertEqual(len(failed), 1, objs)
        self.assertEqual(failed[0]["level"], "warn")
        self.assertEqual(failed[0]["state"], "failed")
        text = self.pm.stderr_text()
        for s in self.pm.secrets():
            self.assertNotIn(s, text, "a secret in the log")

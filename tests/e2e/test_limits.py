"""Issue 15 with the in-process book: rate limits (rpm, tpm, in flight) with
Retry-After, key caps under a race, clamping instead of refusing, the runaway
guard and its alert, and OpenAI's rate-limit headers."""
import json
import time
from decimal import Decimal

from harness import (E2ETest, at_once, Team, SONNET, chat_body, body_len, cost, reservation, rate_nanos,
                     fmt_credits, ceil_div, NANO)
from test_alerts import WithReceiver, SECRET_ENV, SECRET


def burst(pm, body, key, n):
    """n requests at once; their responses, in no particular order."""
    return at_once(lambda: pm.chat(body, key=key, timeout=30), n)


class InflightTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("fl", 100.0, key_ids=["f1"], extra={"max_inflight": 4})
        cls.pm = cls.add_proxy([cls.team])

    def test_100_at_once_never_more_than_4_upstream(self):
        self.mock.reset()
        body = chat_body(SONNET, max_tokens=20, mock={"delay_ms": 300})
        rs = burst(self.pm, body, self.team.key, 100)
        codes = sorted(r.status for r in rs)
        ok = [r for r in rs if r.status == 200]
        limited = [r for r in rs if r.status == 429]
        self.assertEqual(len(ok) + len(limited), 100, codes)
        self.assertEqual(self.mock.stats()["chat_max_active"], 4, "in flight at the upstream")
        self.assertGreaterEqual(len(ok), 4)
        for r in limited:
            e = r.json()["error"]
            self.assertEqual((e["type"], e["code"], e["scope"]),
                             ("rate_limit_exceeded", "inflight", "team"), e)
            self.assertEqual(r.header("retry-after"), "1")
        self.assertEqual(self.mock.chat_count(), len(ok), "a 429 reached the upstream")
        self.pm.wait_idle(self.team.key)
        self.assertEqual(len(self.pm.ledger_rows("team = 'fl'")), len(ok))


class RpmTest(E2ETest):
    """rpm: 30 on a key admits exactly 30 in the sliding minute; the rest get
    429 with a Retry-After after which a retry succeeds."""

    @classmethod
    def setup_proxies(cls):
        cls.team = Team("rp", 100.0, key_ids=["r1", "r2"], key_extra={"r1": {"rpm": 30}},
                        extra={"tpm": 10000000})
        cls.pm = cls.add_proxy([cls.team])

    def test_exactly_30_then_429_then_retry_after(self):
        k1, k2 = self.team.keys["r1"], self.team.keys["r2"]
        body = chat_body(SONNET, max_tokens=10)
        got = []
        for i in range(36):
            r = self.pm.chat(body, key=k1)
            got.append(r)
        self.assertEqual([r.status for r in got], [200] * 30 + [429] * 6)
        for i, r in enumerate(got[:30]):
            self.assertEqual(r.header("x-ratelimit-limit-requests"), "30")
            self.assertEqual(r.header("x-ratelimit-remaining-requests"), str(29 - i))
            self.assertRegex(r.header("x-ratelimit-reset-requests"), r"^\d+s$|^\d+m\d+s$")
            self.assertEqual(r.header("x-ratelimit-limit-tokens"), "10000000")
        e = got[30].json()["error"]
        self.assertEqual((e["type"], e["code"], e["scope"], e["key"]),
                         ("rate_limit_exceeded", "rpm", "key", "r1"), e)
        wait = int(got[-1].header("retry-after"))
        self.assertTrue(1 <= wait <= 60, wait)
        self.assertLessEqual(int(got[-1].header("retry-after-ms")), wait * 1000)
        # the other key of the team is not limited by r1's rpm
        self.assertEqual(self.pm.chat(body, key=k2).status, 200)
        time.sleep(wait)
        r = self.pm.chat(body, key=k1)
        self.assertEqual(r.status, 200, r)


class TpmTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("tp", 100.0, key_ids=["t1"], extra={"tpm": 2000})
        cls.pm = cls.add_proxy([cls.team])

    def test_tokens_reserved_then_corrected(self):
        body = chat_body(SONNET, max_tokens=900, mock={"usage": {"prompt_tokens": 10,
                                                                 "completion_tokens": 5}})
        taken = ceil_div(body_len(body), 3) + 900
        r1 = self.pm.chat(body, key=self.team.key)
        self.assertEqual(r1.status, 200, r1)
        self.assertEqual(r1.header("x-ratelimit-remaining-tokens"), str(2000 - taken))
        # settled with 15 tokens: the window holds 15, so two more fit
        self.pm.wait_idle(self.team.key)
        r2 = self.pm.chat(body, key=self.team.key)
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.header("x-ratelimit-remaining-tokens"), str(2000 - 15 - taken))
        self.pm.wait_idle(self.team.key)
        big = chat_body(SONNET, max_tokens=1990)
        r3 = self.pm.chat(big, key=self.team.key)
        self.assertEqual(r3.status, 429, r3)
        self.assertEqual(r3.json()["error"]["code"], "tpm")


class KeyCapTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        body = cls.body = chat_body(SONNET, max_tokens=200, mock={"delay_ms": 400})
        cls.res = reservation(SONNET, body_len(body), 200)
        cls.kcap = Decimal(cls.res * 7 + cls.res // 2) / NANO     # room for 7 holds
        cls.team = Team("kc", 50.0, key_ids=["capped", "free"],
                        key_extra={"capped": {"cap": float(cls.kcap)}})
        cls.pm = cls.add_proxy([cls.team])

    def test_race_admits_what_the_key_cap_allows(self):
        capped = self.team.keys["capped"]
        rs = burst(self.pm, self.body, capped, 100)
        ok = [r for r in rs if r.status == 200]
        refused = [r for r in rs if r.status == 402]
        self.assertEqual(len(ok) + len(refused), 100, sorted(r.status for r in rs))
        self.assertLessEqual(len(ok) * self.res, int(self.kcap * NANO))
        self.assertGreaterEqual(len(ok), 1)
        e = refused[0].json()["error"]
        self.assertEqual((e["scope"], e["team"], e["key"]), ("key", "kc", "capped"), e)
        self.assertEqual(e["cap"], Decimal(fmt_credits(int(self.kcap * NANO))))
        self.assertEqual(self.mock.chat_count(), len(ok))
        b = self.pm.wait_idle(capped)
        # the ledger's writer may trail the budget by its gather window
        rows = self.pm.wait_rows(lambda rs: len(rs) == len(ok) and
                                 all(x["state"] != "inflight" for x in rs),
                                 where="key_id = 'capped'")
        spent = sum(r["charged_nanos"] for r in rows)
        self.assertIn("key", b)
        self.assertEqual(b["key"]["total"], int(self.kcap * NANO))
        self.assertEqual(b["key"]["loaned"], 0)
        self.assertEqual(b["key"]["available"], int(self.kcap * NANO) - spent)
        # the team's other key has no cap of its own
        self.assertEqual(self.pm.chat(chat_body(SONNET, max_tokens=10),
                                      key=self.team.keys["free"]).status, 200)
        self.assertNotIn("key", self.pm.balance(self.team.keys["free"]))


class ClampTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("cl", 0.05, key_ids=["c1"],
                        extra={"on_insufficient": "clamp", "clamp_min_tokens": 256})
        cls.strict = Team("st", 0.05, key_ids=["s1"])
        cls.pm = cls.add_proxy([cls.team, cls.strict])

    def expect_clamp(self, available, raw):
        """The largest completion limit whose reservation fits available."""
        inp, out, _ = rate_nanos(SONNET)
        est = ceil_div(len(raw), 3)
        return (available * 1000000 - est * inp) // out

    def test_clamped_to_the_largest_that_fits(self):
        raw = ('{"model":"%s","messages":[{"role":"user","content":"long answer please"}],'
               ' "max_tokens": 100000, "temperature":0.25}' % SONNET)
        avail = self.pm.wait_idle(self.team.key)["available"]
        want = self.expect_clamp(avail, raw)
        self.assertGreater(want, 256)
        self.assertLess(want, 100000)
        self.mock.reset()
        r = self.pm.chat(raw.encode(), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-pinmeter-clamped"), str(want))
        up = self.mock.requests()[0]
        self.assertEqual(up["raw_body"], raw.replace('"max_tokens": 100000',
                                                     '"max_tokens": %d' % want),
                         "only the limit's digits may change")
        row = self.pm.row_for(r)
        self.assertEqual(row["reserved_nanos"], reservation(SONNET, len(raw), want))
        self.assertLessEqual(row["reserved_nanos"], avail)
        usage = up["usage"] or {}
        self.assertEqual(row["charged_nanos"], cost(SONNET, usage.get("prompt_tokens", 0),
                                                    usage.get("completion_tokens", 0),
                                                    usage.get("cached_tokens", 0)))
        # the same request to a team that rejects: 402, nothing forwarded
        self.mock.reset()
        r2 = self.pm.chat(raw.encode(), key=self.strict.key)
        self.assertEqual(r2.status, 402, r2)
        self.assertEqual(self.mock.chat_count(), 0)

    def test_max_completion_tokens_lowered_and_floor(self):
        raw = ('{"max_completion_tokens":90000,"model":"%s","messages":[]}' % SONNET)
        avail = self.pm.wait_idle(self.team.key)["available"]
        want = self.expect_clamp(avail, raw)
        self.mock.reset()
        r = self.pm.chat(raw.encode(), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.mock.requests()[0]["raw_body"],
                         raw.replace("90000", str(want)))
        # when not even clamp_min_tokens fit: refused as usual
        self.pm.wait_idle(self.team.key)
        self.mock.reset()
        left = self.pm.balance(self.team.key)["available"]
        huge = "x" * (3 * (left * 1000000 // rate_nanos(SONNET)[0]))
        r = self.pm.chat(chat_body(SONNET, content=huge, max_tokens=5000), key=self.team.key)
        self.assertEqual(r.status, 402, r)
        self.assertEqual(self.mock.chat_count(), 0)


class RunawayTest(WithReceiver, E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("ru", 100.0, key_ids=["agent"], extra={"max_spend_per_minute": 0.05})
        cls.pm = cls.add_proxy([cls.team], env={SECRET_ENV: SECRET},
                               overrides={"alerts": {"webhook_url": cls.rx.url,
                                                     "secret_env": SECRET_ENV,
                                                     "thresholds": []}})

    def test_trips_within_the_window_and_alerts_once(self):
        big = chat_body(SONNET, max_tokens=2000,
                        mock={"usage": {"prompt_tokens": 1000, "completion_tokens": 2000}})
        each = cost(SONNET, 1000, 2000)
        statuses = []
        for _ in range(40):               # a tight loop of large completions
            r = self.pm.chat(big, key=self.team.key)
            statuses.append(r.status)
            if r.status == 429:
                e = r.json()["error"]
                self.assertEqual((e["type"], e["code"]),
                                 ("spend_rate_exceeded", "max_spend_per_minute"), e)
                self.assertTrue(int(r.header("retry-after")) >= 1)
        first = statuses.index(429)
        admitted = statuses[:first]
        self.assertTrue(all(s == 200 for s in admitted))
        # no admission took the window past the limit
        self.assertLessEqual(len(admitted) * each, int(0.05 * NANO) +
                             reservation(SONNET, body_len(big), 2000))
        self.assertTrue(self.rx.wait(lambda: len(self.rx.accepted("runaway")) >= 1))
        time.sleep(1.0)
        got = self.rx.accepted("runaway")
        self.assertEqual(len(got), 1, [g["json"] for g in got])
        j = got[0]["json"]
        self.assertEqual((j["team"], j["key"], j["window"]), ("ru", None, "minute"))
        self.assertEqual(j["limit"], Decimal("0.050000000"))
        self.assertGreater(j["spent_in_window"] + 0, 0)

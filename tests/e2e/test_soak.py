"""Bounded soak (issue 3): many concurrent clients against three teams with
tight caps, mixing normal, streaming, failing (upstream 5xx/429), cut
(upstream drops the stream) and client-aborted requests, with three
SIGKILL/restart cycles during the run. At the end: the shared invariant
checker, no team's settled spend above its cap, loaned 0, no row missing or
duplicated, every request the upstream served with usage charged exactly.

Duration: env PINMETER_SOAK_S, else 60 s when CI is set (CI=true), else 20 s.
"""
import collections
import os
import random
import socket
import threading
import time

from harness import (Team, SONNET, HAIKU, NANO, chat_body, raw_socket, raw_request)
from invariants import FaultTest, period_start_ms


def soak_seconds():
    v = os.environ.get("PINMETER_SOAK_S")
    if v:
        return float(v)
    ci = os.environ.get("CI", "").strip().lower()
    return 60.0 if ci and ci not in ("0", "false", "no") else 20.0


THREADS = 32
KILLS = 3

# The cap bound is 0: a request is admitted only when its reservation
# (ceil(body bytes / 3) prompt tokens x input + max_tokens x output) fits the
# team's available, atomically with holding it; the settled charge replaces
# the hold and is never above it here, because every usage the mock reports
# stays within the reservation (prompt <= ceil(bytes / 3), completion <=
# max_tokens), every estimate (prompt estimate + completion counted from at
# most 8 short deltas) is below it, and an interrupted row is charged exactly
# its reservation. So settled spend can never pass the cap (README, "Metering
# rules": it could only by an upstream reporting more than was reserved).
CAP_BOUND_NANOS = 0


class SoakTest(FaultTest):
    @classmethod
    def setup_proxies(cls):
        # a and b run out early; c's cap scales with the duration so that it
        # binds only towards the end and real traffic flows through the kills
        cls.teams = [Team("soak-a", 0.05, period="month", key_ids=["a1", "a2"]),
                     Team("soak-b", 0.4, period="day", key_ids=["b1", "b2"]),
                     Team("soak-c", round(0.25 * soak_seconds(), 3), period="none",
                          key_ids=["c1", "c2"])]
        cls.pm = cls.add_proxy(cls.teams, name="soak", overrides={
            "upstream": {"timeout_s": 10}, "drain_s": 1})

    # ------------------------------------------------------------ one client
    def one(self, rng, stats):
        team = rng.choice(self.teams)
        key = rng.choice(list(team.keys.values()))
        model = rng.choice([SONNET, SONNET, HAIKU])
        max_tokens = rng.randint(20, 300)
        usage = {"prompt_tokens": rng.randint(1, 50), "completion_tokens": rng.randint(0, max_tokens),
                 "cached_tokens": 0}
        usage["cached_tokens"] = rng.randint(0, usage["prompt_tokens"])
        mock = {"usage": usage, "delay_ms": rng.choice([0, 0, 10, 50, 200])}
        kind = rng.choices(["normal", "stream", "failing", "cut", "abort"],
                           weights=[35, 25, 12, 13, 15])[0]
        port = self.pm.port
        try:
            if kind == "normal":
                r = self.pm.chat(chat_body(model, max_tokens=max_tokens, mock=mock), key=key,
                                 timeout=10)
                stats[("normal", r.status)] += 1
            elif kind == "failing":
                mock["status"] = rng.choice([500, 503, 429])
                r = self.pm.chat(chat_body(model, max_tokens=max_tokens, mock=mock), key=key,
                                 timeout=10)
                stats[("failing", r.status)] += 1
            elif kind in ("stream", "cut"):
                mock.update(chunks=rng.randint(1, 8), chunk_delay_ms=rng.choice([0, 5, 20]))
                if kind == "cut":
                    mock["close_after_chunks"] = rng.randint(0, mock["chunks"])
                body = chat_body(model, stream=True, max_tokens=max_tokens, mock=mock)
                if rng.random() < 0.7:
                    body["stream_options"] = {"include_usage": True}
                s = self.pm.stream(body, key=key, timeout=10)
                if s.status == 200:
                    ev = s.read_all()
                    done = bool(ev) and ev[-1] == "[DONE]"
                    stats[(kind, "done" if done else "cut")] += 1
                else:
                    s.resp.read()
                    stats[(kind, s.status)] += 1
                s.close()
            else:  # client abort, before the answer or mid-stream
                mock["client_may_abort"] = True
                stream = rng.random() < 0.5
                if stream:
                    mock.update(chunks=8, chunk_delay_ms=20)
                body = chat_body(model, stream=True if stream else None, max_tokens=max_tokens,
                                 mock=mock)
                if stream and rng.random() < 0.5:
                    s = self.pm.stream(body, key=key, timeout=10)
                    if s.status == 200:
                        s.next_event()
                    s.close()
                else:
                    mock["delay_ms"] = rng.randint(50, 300)
                    sock = raw_socket(port, timeout=5)
                    try:
                        sock.sendall(raw_request("POST", "/v0/llm/chat/completions", body,
                                                 {"Authorization": "Bearer " + key,
                                                  "Content-Type": "application/json"}))
                        time.sleep(rng.uniform(0.0, 0.1))
                    finally:
                        sock.close()
                stats[("abort", "stream" if stream else "plain")] += 1
        except (OSError, socket.timeout) as e:
            stats[(kind, "conn:" + type(e).__name__)] += 1
            time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 - http.client errors while killed
            stats[(kind, "err:" + type(e).__name__)] += 1
            time.sleep(0.05)

    # ------------------------------------------------------------ the soak
    def test_soak(self):
        duration = soak_seconds()
        seed = int(os.environ.get("PINMETER_TEST_SEED") or time.time())
        master = random.Random(seed)
        stats = collections.Counter()
        lock = threading.Lock()
        t_start = time.time()
        stop_at = t_start + duration
        errors = []

        seeds = [master.random() for _ in range(THREADS)]

        def client(i):
            rng = random.Random(seeds[i])
            local = collections.Counter()
            try:
                while time.time() < stop_at:
                    self.one(rng, local)
            except BaseException as e:  # noqa: BLE001 - surfaced below
                errors.append(e)
            with lock:
                stats.update(local)

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(THREADS)]
        for t in threads:
            t.start()
        kills = 0
        for k in range(1, KILLS + 1):
            at = t_start + duration * k / (KILLS + 1) + master.uniform(-0.1, 0.1) * duration / 4
            time.sleep(max(0, at - time.time()))
            self.pm.kill9()
            kills += 1
            self.pm.start()
        for t in threads:
            t.join(duration + 30)
        self.assertFalse(any(t.is_alive() for t in threads), "soak clients hung")
        self.assertEqual(errors, [])
        # let the mock's handlers finish
        deadline = time.time() + 5
        while time.time() < deadline and not all(
                m.get("completed") or m.get("client_gone") or m.get("status")
                for m in self.mock.requests()):
            time.sleep(0.1)

        summary = self.check(allow_interrupted=True, fresh_ledger=True, idle_timeout=15)
        rows = self.pm.ledger_rows()
        # no team's settled spend above its cap (bound 0, see CAP_BOUND_NANOS)
        spends = []
        for team in self.teams:
            since = period_start_ms(team.period)
            spent = sum(r["charged_nanos"] for r in rows
                        if r["team"] == team.name and r["started_ms"] >= since)
            cap = round(team.cap * NANO)
            spends.append("%s %.3f/%.3f" % (team.name, spent / NANO, team.cap))
            self.assertLessEqual(spent, cap + CAP_BOUND_NANOS,
                                 "team %s spent %d over its cap %d (seed %d)"
                                 % (team.name, spent - cap, cap, seed))
            b = self.pm.balance(team.key)
            self.assertEqual(b["loaned"], 0)
            self.assertGreaterEqual(b["available"], -CAP_BOUND_NANOS)
        total = sum(stats.values())
        by = collections.Counter()
        for (kind, outcome), n in stats.items():
            by["%s:%s" % (kind, outcome)] += n
        served = len([m for m in self.mock.requests() if m.get("id")])
        print("\nsoak: %.0fs seed %d, %d requests (%s), %d kills, %d upstream, ledger %s, "
              "spent %s" % (time.time() - t_start, seed, total,
                            ", ".join("%s=%d" % kv for kv in sorted(by.items())), kills, served,
                            summary["states"], ", ".join(spends)), flush=True)
        self.assertGreater(stats[("normal", 200)], 0, "no request succeeded")
        self.assertGreater(sum(n for (k, o), n in stats.items() if o == 402), 0,
                           "the caps never refused anything: not tight")

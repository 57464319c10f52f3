"""GET /metrics (issue 13): a real Prometheus server (Debian's `prometheus`)
scrapes the proxy with the admin token while traffic runs from the mock; its
HTTP API must give exactly the ledger's charges per team and the balance
endpoint's spend. The scrape itself: exact counters against the ledger,
`promtool check metrics` clean, who may read it ("metrics_auth"), the key
label, interrupted charges after a SIGKILL, a reload, passthrough mode, the
Redis store's cached figures, and alert deliveries against what a webhook
receiver (test_alerts.Receiver) answered.

Prometheus and redis-server are started here on loopback ports with their
own config and data in the test's temp dir, and stopped by their PIDs; the
tests skip (saying so) when a binary is missing."""
import json
import os
import re
import shutil
import signal
import subprocess
import time
import unittest
import urllib.parse
from decimal import Decimal

import harness
from harness import (E2ETest, Team, SONNET, HAIKU, GPT4O, ADMIN_TOKEN, JWT, NANO, chat_body,
                     body_len, reservation, free_port, http_request, _stop_pid, to_nanos)
from test_alerts import WithReceiver

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
CTYPE = "text/plain; version=0.0.4; charset=utf-8"
ADMIN_ENV = {"PINMETER_ADMIN_TOKEN": ADMIN_TOKEN}


# ---------------------------------------------------------------- the text format
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def _unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse_exposition(text):
    """[(name, {label: value}, value_text)] of every sample line."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError("not a sample line: %r" % line)
        labels = {}
        rest = m.group(2) or ""
        pos = 0
        while pos < len(rest):
            lm = _LABEL.match(rest, pos)
            if not lm:
                raise AssertionError("bad labels in %r" % line)
            labels[lm.group(1)] = _unescape(lm.group(2))
            pos = lm.end()
        out.append((m.group(1), labels, m.group(3)))
    return out


def samples(text, name, **want):
    """{frozenset(labels): value_text} of the samples of name whose labels
    include want."""
    return {frozenset(l.items()): v for n, l, v in parse_exposition(text)
            if n == name and all(l.get(k) == w for k, w in want.items())}


def one(text, name, **labels):
    """The value text of the one sample of name with exactly these labels."""
    got = [v for n, l, v in parse_exposition(text) if n == name and l == labels]
    if len(got) != 1:
        raise AssertionError("%d samples of %s%r in:\n%s" % (len(got), name, labels, text[:3000]))
    return got[0]


def nanos(v):
    """A 9-decimal credits sample as integer nanos (exact: Decimal)."""
    return int(Decimal(v) * NANO)


def promtool_check(text):
    """(returncode, output) of `promtool check metrics` on text."""
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).strip()


# ---------------------------------------------------------------- Prometheus
class Prometheus:
    """A prometheus server scraping one target every second, with its own
    config and TSDB under tmpdir, on a free loopback port."""

    def __init__(self, tmpdir, target_port, token):
        self.dir = os.path.join(tmpdir, "prometheus")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        token_file = os.path.join(self.dir, "token")
        with open(token_file, "w") as f:
            f.write(token)
        os.chmod(token_file, 0o600)
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: pinmeter\n    metrics_path: /metrics\n"
                    "    authorization:\n      type: Bearer\n"
                    "      credentials_file: %s\n"
                    "    static_configs:\n      - targets: ['127.0.0.1:%d']\n"
                    % (token_file, target_port))
        self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + cfg, "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        harness._NOT_PINMETER_PORTS.add(self.port)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("prometheus exited at start: %s" % self.log_text()[-1500:])
            try:
                if http_request(self.port, "GET", "/-/ready", timeout=1).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("prometheus not ready within 30 s")

    def log_text(self):
        try:
            with open(os.path.join(self.dir, "prometheus.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def query(self, q):
        r = http_request(self.port, "GET", "/api/v1/query?query=" + urllib.parse.quote(q),
                         timeout=5)
        j = json.loads(r.body)
        if j.get("status") != "success":
            raise AssertionError("prometheus query %r: %r" % (q, j))
        return j["data"]["result"]

    def by(self, q, label):
        """{label value: float} of a vector query."""
        return {x["metric"].get(label, ""): float(x["value"][1]) for x in self.query(q)}

    def stop(self):
        _stop_pid(self.proc, timeout=15)
        self.log.close()


def need(path, what):
    if not os.path.exists(path):
        raise unittest.SkipTest("%s is not installed (%s; apt-get install -y prometheus)"
                                % (path, what))


def wait_until(pred, timeout, step=0.2):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


class MetricsBase(E2ETest):
    def scrape(self, pm, key=ADMIN_TOKEN):
        r = pm.request("GET", "/metrics", key=key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("content-type"), CTYPE)
        return r.body.decode("utf-8")

    def ledger_by(self, pm, cols, where="state != 'inflight'"):
        """{(cols...): (rows, prompt, completion, cached, charged)} from the ledger."""
        out = {}
        for x in pm.ledger_rows(where):
            k = tuple(x[c] for c in cols)
            a = out.setdefault(k, [0, 0, 0, 0, 0])
            for i, f in enumerate((None, "prompt_tokens", "completion_tokens", "cached_tokens",
                                   "charged_nanos")):
                a[i] += 1 if f is None else x[f]
        return {k: tuple(v) for k, v in out.items()}

    def wait_settled(self, pm, teams, n_rows):
        for t in teams:
            if t.cap is not None:
                pm.wait_idle(t.key)
        rows = pm.wait_rows(lambda rs: len(rs) == n_rows and all(x["state"] != "inflight"
                                                                 for x in rs), timeout=10)
        self.assertEqual(len(rows), n_rows, rows)
        return rows


# ====================================================================== Prometheus
class PrometheusScrapeTest(MetricsBase):
    """The issue's "done when": Prometheus's figures equal the ledger's."""

    @classmethod
    def setup_proxies(cls):
        need(PROMETHEUS, "the end-to-end metrics test runs a real Prometheus server")
        need(PROMTOOL, "promtool checks the scrape")
        cls.alpha = Team("alpha", 5.0, key_ids=["a1", "a2"])
        cls.beta = Team("beta", None, period="none", key_ids=["b1"])
        cls.gamma = Team("gamma", 0.0001, period="day", models=["anthropic/*"], key_ids=["g1"])
        cls.pm = cls.add_proxy([cls.alpha, cls.beta, cls.gamma], name="prom",
                               env=dict(ADMIN_ENV, PINATA_JWT=JWT))
        cls.prom = Prometheus(cls.tmp, cls.pm.port, ADMIN_TOKEN)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "prom", None):
            cls.prom.stop()
        super().tearDownClass()

    def test_prometheus_equals_ledger_and_balance(self):
        a1, a2 = self.alpha.keys["a1"], self.alpha.keys["a2"]
        ok = []
        for model, key, usage in ((SONNET, a1, (1000, 500, 200)), (HAIKU, a2, (300, 40, 0)),
                                  (GPT4O, a1, (77, 3, 10)), (HAIKU, self.beta.key, (5, 5, 5)),
                                  (SONNET, self.beta.key, (1234, 567, 89))):
            mock = {"usage": dict(zip(("prompt_tokens", "completion_tokens", "cached_tokens"),
                                      usage))}
            ok.append(self.pm.chat(chat_body(model, max_tokens=600, mock=mock), key=key))
        for key in (a1, self.beta.key):
            s = self.pm.stream(chat_body(SONNET, stream=True, mock={"chunks": 4}), key=key)
            self.assertEqual(s.status, 200)
            s.read_all()
            s.close()
        ok.append(self.pm.chat(chat_body(HAIKU, mock={"no_usage": True}), key=a2))  # estimated
        ok.append(self.pm.chat(chat_body(SONNET, mock={"status": 500}), key=a1))   # failed
        for r in ok[:-1]:
            self.assertEqual(r.status, 200, r)
        self.assertEqual(ok[-1].status, 500, ok[-1])
        # refused before forwarding
        self.assertEqual(self.pm.chat(chat_body(SONNET), key=self.gamma.key).status, 402)
        self.assertEqual(self.pm.chat(chat_body(GPT4O), key=self.gamma.key).status, 403)
        self.assertEqual(self.pm.chat(chat_body("nobody/prices-this"), key=a1).status, 400)
        self.assertEqual(self.pm.chat("{not json", key=a1,
                                      headers={"Content-Type": "application/json"}).status, 400)
        self.assertEqual(self.pm.chat(chat_body(SONNET), key="pm-wrong").status, 401)
        self.assertEqual(self.pm.chat(chat_body(SONNET)).status, 401)
        upstream_calls = self.mock.chat_count()
        self.assertEqual(upstream_calls, 9, "a refused request went upstream")
        rows = self.wait_settled(self.pm, [self.alpha, self.gamma], 9)

        want = {}
        for x in rows:
            want[x["team"]] = want.get(x["team"], 0) + x["charged_nanos"]
        self.assertEqual(set(want), {"alpha", "beta"})
        self.assertEqual(sorted(x["state"] for x in rows).count("estimated"), 1)

        # Prometheus's view, once a scrape after the traffic is in
        q = "sum by (team) (pinmeter_credits_charged_total)"
        got = wait_until(lambda: (lambda g: g if set(g) == set(want) and all(
            abs(g[t] - want[t] / NANO) <= 1e-9 for t in want) else None)(self.prom.by(q, "team")),
            20)
        self.assertTrue(got, "Prometheus's %s never matched the ledger %r: %r; its log: %s"
                        % (q, want, self.prom.by(q, "team"), self.prom.log_text()[-1500:]))
        up = self.prom.query('up{job="pinmeter"}')
        self.assertEqual([x["value"][1] for x in up], ["1"], up)

        bal = {t.name: self.pm.balance(t.key) for t in (self.alpha, self.gamma)}
        spent_bal = {n: b["total"] - b["available"] - b["loaned"] for n, b in bal.items()}
        self.assertEqual(spent_bal["alpha"], want["alpha"])
        self.assertEqual(spent_bal["gamma"], 0)
        got = wait_until(lambda: (lambda g: g if all(
            abs(g.get(n, -1) - v / NANO) <= 1e-9 for n, v in spent_bal.items()) else None)(
            self.prom.by("pinmeter_team_spent_credits", "team")), 10)
        self.assertTrue(got, "pinmeter_team_spent_credits %r != the balance's %r"
                        % (self.prom.by("pinmeter_team_spent_credits", "team"), spent_bal))
        # the uncapped team's spent is the ledger's; it has no cap/available sample
        self.assertAlmostEqual(got["beta"], want["beta"] / NANO, delta=1e-9)
        self.assertNotIn("beta", self.prom.by("pinmeter_team_cap_credits", "team"))
        self.assertNotIn("beta", self.prom.by("pinmeter_team_available_credits", "team"))

        # the scrape itself, exactly
        text = self.scrape(self.pm)
        rc, out = promtool_check(text)
        self.assertEqual((rc, out), (0, ""), "promtool check metrics on a scrape")
        self.assertNotIn("key=", text, "a key label without metrics_key_label")
        for n, b in bal.items():
            self.assertEqual(nanos(one(text, "pinmeter_team_spent_credits", team=n)),
                             b["total"] - b["available"] - b["loaned"])
            self.assertEqual(nanos(one(text, "pinmeter_team_loaned_credits", team=n)), 0)
            self.assertEqual(nanos(one(text, "pinmeter_team_cap_credits", team=n)), b["total"])
            self.assertEqual(nanos(one(text, "pinmeter_team_available_credits", team=n)),
                             b["available"])
        tomorrow = (int(time.time()) // 86400 + 1) * 86400
        self.assertEqual(one(text, "pinmeter_team_period_end_timestamp_seconds", team="gamma"),
                         str(tomorrow))
        self.assertEqual(samples(text, "pinmeter_team_period_end_timestamp_seconds", team="beta"),
                         {})
        for n in ("alpha", "beta", "gamma"):
            self.assertEqual(one(text, "pinmeter_inflight_requests", team=n), "0")
        # credits and tokens by team, model and state: the ledger's, exactly
        led = self.ledger_by(self.pm, ("team", "model", "state"))
        for (team, model, state), (n, p, c, k, ch) in led.items():
            if state == "failed":
                continue
            self.assertEqual(nanos(one(text, "pinmeter_credits_charged_total", team=team,
                                       model=model, state=state)), ch, (team, model, state))
        for (team, model), (n, p, c, k, ch) in self.ledger_by(self.pm, ("team", "model")).items():
            for kind, v in (("prompt", p), ("completion", c), ("cached", k)):
                self.assertEqual(int(one(text, "pinmeter_tokens_total", team=team, model=model,
                                         kind=kind)), v, (team, model, kind))
            self.assertEqual(int(one(text, "pinmeter_upstream_duration_seconds_count",
                                     model=model)),
                             sum(v[0] for (t, m), v in self.ledger_by(self.pm, ("team", "model"))
                                 .items() if m == model))
        self.assertEqual(sum(nanos(v) for v in samples(text, "pinmeter_credits_charged_total")
                             .values()), sum(want.values()))
        # requests by the status the client got; rejections by reason
        req = lambda team, model, code: int(one(text, "pinmeter_requests_total", team=team,
                                                model=model, code=code))
        self.assertEqual(req("alpha", SONNET, "200"), 2)
        self.assertEqual(req("alpha", SONNET, "500"), 1)
        self.assertEqual(req("alpha", HAIKU, "200"), 2)
        self.assertEqual(req("beta", SONNET, "200"), 2)
        self.assertEqual(req("gamma", SONNET, "402"), 1)
        self.assertEqual(req("gamma", GPT4O, "403"), 1)
        self.assertEqual(req("alpha", "", "400"), 2)        # unpriced model, bad JSON
        self.assertEqual(req("", "", "401"), 2)
        self.assertEqual(sum(int(v) for v in samples(text, "pinmeter_requests_total").values()),
                         15)
        rej = lambda team, reason: int(one(text, "pinmeter_rejections_total", team=team,
                                           reason=reason))
        self.assertEqual(rej("gamma", "team_cap"), 1)
        self.assertEqual(rej("gamma", "model_not_allowed"), 1)
        self.assertEqual(rej("alpha", "model_not_priced"), 1)
        self.assertEqual(rej("alpha", "invalid_request"), 1)
        self.assertEqual(rej("", "unauthorized"), 2)
        self.assertEqual(len(samples(text, "pinmeter_rejections_total")), 5)
        # histograms: one admission per request that went upstream, a first
        # token per stream
        self.assertEqual(one(text, "pinmeter_admission_duration_seconds_count"), "9")
        self.assertEqual(one(text, "pinmeter_admission_duration_seconds_bucket", le="+Inf"), "9")
        self.assertEqual(one(text, "pinmeter_stream_first_token_seconds_count", model=SONNET), "2")
        # the rest
        self.assertEqual(one(text, "pinmeter_ledger_backlog_records"), "0")
        self.assertEqual(one(text, "pinmeter_ledger_write_errors_total"), "0")
        self.assertEqual(samples(text, "pinmeter_budget_store_up"), {})
        version = self.pm.cli("--version").stdout.split()[-1]
        self.assertEqual(one(text, "pinmeter_build_info", version=version), "1")
        admin = self.pm.request("GET", "/v0/credits/balance", key=ADMIN_TOKEN).json()
        self.assertEqual(nanos(one(text, "pinmeter_account_projected_available_credits")),
                         to_nanos(admin["available"]))
        self.assertEqual(nanos(one(text, "pinmeter_account_synced_available_credits")),
                         100 * NANO)                       # the mock's balance at start
        synced_at = float(one(text, "pinmeter_account_last_sync_timestamp_seconds"))
        self.assertLess(abs(synced_at - time.time()), 120)

    def test_who_may_scrape(self):
        self.assertEqual(self.pm.request("GET", "/metrics").status, 401)
        self.assertEqual(self.pm.request("GET", "/metrics", key=self.alpha.key).status, 401)
        self.assertEqual(self.pm.request("GET", "/metrics", key="wrong").status, 401)
        self.assertEqual(self.pm.request("POST", "/metrics", key=ADMIN_TOKEN, body={}).status, 405)
        self.assertEqual(self.pm.request("GET", "/metrics", key=ADMIN_TOKEN).status, 200)
        self.assertEqual(self.pm.request("HEAD", "/metrics", key=ADMIN_TOKEN).status, 200)


# ====================================================================== no Prometheus needed
class OpenMetricsTest(MetricsBase):
    """"metrics_auth": "none", the key label, a reload, SIGKILL's interrupted
    charges, and ledger rows against the scrape without Prometheus."""

    @classmethod
    def setup_proxies(cls):
        cls.team = Team("open", 10.0, key_ids=["k1", "k2"])
        cls.pm = cls.add_proxy([cls.team], name="open",
                               overrides={"metrics_auth": "none", "metrics_key_label": True})

    def test_open_and_key_label(self):
        r = self.pm.request("GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        k1, k2 = self.team.keys["k1"], self.team.keys["k2"]
        for key, usage in ((k1, (100, 10, 0)), (k2, (200, 20, 20)), (k2, (1, 1, 0))):
            mock = {"usage": dict(zip(("prompt_tokens", "completion_tokens", "cached_tokens"),
                                      usage))}
            self.assertEqual(self.pm.chat(chat_body(SONNET, mock=mock), key=key).status, 200)
        self.wait_settled(self.pm, [self.team], 3)
        text = self.scrape(self.pm, key=None)
        rc, out = promtool_check(text)
        self.assertEqual((rc, out), (0, ""))
        led = self.ledger_by(self.pm, ("key_id",))
        for kid in ("k1", "k2"):
            n, p, c, k, ch = led[(kid,)]
            self.assertEqual(int(one(text, "pinmeter_requests_total", team="open", model=SONNET,
                                     key=kid, code="200")), n)
            self.assertEqual(int(one(text, "pinmeter_tokens_total", team="open", model=SONNET,
                                     key=kid, kind="prompt")), p)
            self.assertEqual(nanos(one(text, "pinmeter_credits_charged_total", team="open",
                                       model=SONNET, key=kid, state="settled")), ch)
        # histograms and gauges carry no key
        self.assertEqual(one(text, "pinmeter_upstream_duration_seconds_count", model=SONNET), "3")
        self.assertEqual(one(text, "pinmeter_inflight_requests", team="open"), "0")

    def test_reload_new_team_and_interrupted_after_kill(self):
        # a reload adds a team: its gauges and counters appear
        delta = Team("delta", 1.0, period="week", key_ids=["d1"])
        self.pm.set_teams([self.team, delta])
        mark = len(self.pm.logs_text())
        self.pm.send_signal(signal.SIGHUP)
        self.assertTrue(self.pm.wait_log("reloaded", since=mark), self.pm.logs_text()[-500:])
        self.assertEqual(self.pm.chat(chat_body(HAIKU), key=delta.key).status, 200)
        self.pm.wait_idle(delta.key)
        # its completion in the file before the kill below (the writer gathers)
        self.pm.wait_rows(lambda rs: rs and all(x["state"] == "settled" for x in rs),
                          where="team = 'delta'")
        text = self.scrape(self.pm, key=None)
        self.assertEqual(nanos(one(text, "pinmeter_team_cap_credits", team="delta")), NANO)
        self.assertEqual(int(one(text, "pinmeter_requests_total", team="delta", model=HAIKU,
                                 key="d1", code="200")), 1)
        # SIGKILL mid-stream: the restart counts the interrupted charge
        body = chat_body(GPT4O, stream=True, max_tokens=900,
                         mock={"chunks": 60, "chunk_delay_ms": 100})
        res = reservation(GPT4O, body_len(body), 900)
        s = self.pm.stream(body, key=self.team.keys["k1"])
        self.assertEqual(s.status, 200)
        self.assertIsNotNone(s.next_event())
        text = self.scrape(self.pm, key=None)
        self.assertEqual(one(text, "pinmeter_inflight_requests", team="open"), "1")
        self.pm.kill9()
        s.close()
        self.pm.start()
        rows = self.pm.wait_rows(lambda rs: any(x["state"] == "interrupted" for x in rs))
        killed = [x for x in rows if x["state"] == "interrupted"]
        self.assertEqual(len(killed), 1, rows)
        self.assertEqual(killed[0]["charged_nanos"], res)
        text = self.scrape(self.pm, key=None)
        self.assertEqual(nanos(one(text, "pinmeter_credits_charged_total", team="open",
                                   model=GPT4O, key="k1", state="interrupted")), res)
        # counters start at 0 with the process: only the interrupted charge
        self.assertEqual(sum(nanos(v) for v in samples(text, "pinmeter_credits_charged_total")
                             .values()), res)
        self.assertEqual(samples(text, "pinmeter_requests_total"), {})
        self.assertEqual(one(text, "pinmeter_inflight_requests", team="open"), "0")


class PassthroughMetricsTest(MetricsBase):
    """Passthrough mode: everything is team "default"; the admin token still
    guards the scrape."""

    @classmethod
    def setup_proxies(cls):
        cls.pm = cls.add_proxy([], name="ptm", upstream_key=None, env=ADMIN_ENV)

    def test_passthrough_default_team(self):
        self.assertEqual(self.pm.request("GET", "/metrics").status, 401)
        client_key = "sk-client-" + "ab" * 8
        r = self.pm.chat(chat_body(SONNET, mock={"usage": {"prompt_tokens": 40,
                                                           "completion_tokens": 2}}),
                         key=client_key)
        self.assertEqual(r.status, 200, r)
        self.pm.wait_rows(lambda rs: len(rs) == 1 and rs[0]["state"] == "settled")
        text = self.scrape(self.pm)
        want = self.pm.ledger_rows()[0]["charged_nanos"]
        self.assertEqual(nanos(one(text, "pinmeter_credits_charged_total", team="default",
                                   model=SONNET, state="settled")), want)
        self.assertEqual(nanos(one(text, "pinmeter_team_spent_credits", team="default")), want)
        self.assertEqual(samples(text, "pinmeter_team_cap_credits"), {})
        self.assertEqual(one(text, "pinmeter_inflight_requests", team="default"), "0")
        self.assertNotIn(client_key, text)


class AlertMetricsTest(WithReceiver, MetricsBase):
    """pinmeter_alerts_total counts delivery attempts by their result: the
    receiver answers 500 to the first attempt of one event, 200 to the rest."""

    @classmethod
    def setup_proxies(cls):
        cls.team = Team("alerted", 1.0, key_ids=["al1"])
        cls.pm = cls.add_proxy([cls.team], name="alertm", env=ADMIN_ENV,
                               overrides={"alerts": {"webhook_url": cls.rx.url,
                                                     "thresholds": [0.5, 0.8]}})

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.rx.stop()

    def test_alert_deliveries_counted(self):
        from test_alerts import alert_id, month_bounds, spend
        start, _ = month_bounds()
        self.rx.fail_first[alert_id("budget_threshold", "alerted", start, 800000)] = 1
        for tokens in (40000, 15000):                  # 0.6 credits, then 0.825
            self.assertEqual(self.pm.chat(spend(tokens), key=self.team.key).status, 200)
            self.pm.wait_idle(self.team.key)
        # 0.5 delivered at once; 0.8 refused once, delivered on the retry 1 s later
        self.assertTrue(self.rx.wait(lambda: len(self.rx.accepted()) == 2, timeout=10),
                        self.rx.all())
        got = self.rx.all()
        self.assertEqual(sorted(g["status"] for g in got), [200, 200, 500], got)
        text = wait_until(lambda: (lambda t: t if samples(
            t, "pinmeter_alerts_total", result="sent") and int(one(
                t, "pinmeter_alerts_total", event="budget_threshold", result="sent")) == 2
            else None)(self.scrape(self.pm)), 5)
        self.assertTrue(text, "alerts_total never showed both deliveries")
        self.assertEqual(one(text, "pinmeter_alerts_total", event="budget_threshold",
                             result="failed"), "1")
        self.assertEqual(len(samples(text, "pinmeter_alerts_total")), 2)


class RedisMetricsTest(MetricsBase):
    """With the Redis store the team gauges are the fleet's figures as Redis
    last answered them (no Redis call in a scrape); budget_store_up follows
    the store."""

    @classmethod
    def setup_proxies(cls):
        from redis_fixture import Redis
        cls.redis = Redis(cls.tmp)
        cls.team = Team("shared", 4.0, key_ids=["s1"])
        cls.pm = cls.add_proxy([cls.team], name="redism", env=ADMIN_ENV,
                               overrides={"budget_store": cls.redis.url})

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if getattr(cls, "redis", None):
            cls.redis.stop()

    def test_fleet_figures_and_store_up(self):
        for p, c in ((500, 50), (20, 2000)):
            body = chat_body(SONNET, max_tokens=2100,
                             mock={"usage": {"prompt_tokens": p, "completion_tokens": c}})
            self.assertEqual(self.pm.chat(body, key=self.team.key).status, 200)
        self.wait_settled(self.pm, [self.team], 2)
        charged = sum(x["charged_nanos"] for x in self.pm.ledger_rows())
        # the once-a-second sync brings Redis's figures after the settles
        def spent():
            text = self.scrape(self.pm)
            v = samples(text, "pinmeter_team_spent_credits", team="shared")
            return text if v and nanos(list(v.values())[0]) == charged else None
        text = wait_until(spent, 10)
        self.assertTrue(text, "spent gauge never reached the ledger's %d" % charged)
        b = self.pm.balance(self.team.key)
        self.assertEqual(nanos(one(text, "pinmeter_team_spent_credits", team="shared")),
                         b["total"] - b["available"] - b["loaned"])
        self.assertEqual(nanos(one(text, "pinmeter_team_available_credits", team="shared")),
                         b["available"])
        self.assertEqual(one(text, "pinmeter_budget_store_up"), "1")
        self.assertEqual(promtool_check(text) if os.path.exists(PROMTOOL) else (0, ""), (0, ""))
        self.redis.stop()
        self.assertTrue(wait_until(lambda: one(self.scrape(self.pm), "pinmeter_budget_store_up")
                                   == "0", 10), "budget_store_up stayed 1 with Redis gone")
        # the scrape still answers, from cached figures, while Redis is down
        text = self.scrape(self.pm)
        self.assertEqual(nanos(one(text, "pinmeter_team_spent_credits", team="shared")), charged)
        self.redis.start()


if __name__ == "__main__":
    unittest.main()

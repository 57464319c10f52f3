"""The dashboard (/dashboard) in a real browser, and the HTML report.

The serving checks (headers, the compiled-in files, no data without a token)
run here with plain HTTP. The browser checks are tests/browser/dashboard_test.mjs:
Debian's chromium, headless, driven by puppeteer-core, against a proxy with
three teams and traffic from the mock; its screenshots go to build/screenshots/.
"""
import json
import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import (ADMIN_TOKEN, E2ETest, GPT4O, HAIKU, JWT, NANO, REPO, SONNET, Team,
                     chat_body, to_nanos)

BROWSER_DIR = os.path.join(REPO, "tests", "browser")
SHOTS = os.path.join(REPO, "build", "screenshots")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CSP_MUST = ("default-src 'self'", "img-src 'self' data:", "style-src 'self'")
PAGE_FILES = ("app.css", "main.js", "api.js", "fmt.js", "charts.js", "views.js", "icon.svg")


class Hooks(BaseHTTPRequestHandler):
    """The alert webhook's receiver: keeps each event's body, answers 204."""
    got = []

    def do_POST(self):
        Hooks.got.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


class DashboardTest(E2ETest):
    @classmethod
    def setUpClass(cls):
        cls.hooks = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
        threading.Thread(target=cls.hooks.serve_forever, daemon=True).start()
        try:
            super().setUpClass()
        except BaseException:
            cls.hooks.shutdown()
            cls.hooks.server_close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.hooks.shutdown()
            cls.hooks.server_close()

    @classmethod
    def setup_proxies(cls):
        cls.alpha = Team("alpha", 10.0, key_ids=["alpha-ci", "alpha-dev"])
        cls.beta = Team("beta", 0.05, period="day", key_ids=["beta-bot"])      # near its cap
        cls.gamma = Team("gamma", None, key_ids=["gamma-batch"])              # uncapped
        hook = "http://127.0.0.1:%d/hook" % cls.hooks.server_address[1]
        cls.pm = cls.add_proxy([cls.alpha, cls.beta, cls.gamma], name="dash",
                               env={"PINMETER_ADMIN_TOKEN": ADMIN_TOKEN, "PINATA_JWT": JWT},
                               overrides={"alerts": {"webhook_url": hook, "thresholds": [0.25, 0.5]}})
        cls.traffic()

    @classmethod
    def traffic(cls):
        """Streams and not, three models, a 402 on the team near its cap."""
        pm = cls.pm
        for i in range(4):
            pm.chat(chat_body(SONNET, max_tokens=200, mock={"usage": {"prompt_tokens": 1200 + i,
                    "completion_tokens": 300, "cached_tokens": 400}}), key=cls.alpha.keys["alpha-ci"])
            s = pm.stream(chat_body(GPT4O, max_tokens=300, stream=True,
                                    mock={"usage": {"prompt_tokens": 800, "completion_tokens": 150 + i}}),
                          key=cls.alpha.keys["alpha-dev"])
            s.read_all()
            s.close()
        for i in range(3):
            pm.chat(chat_body(HAIKU, max_tokens=1000, mock={"usage": {"prompt_tokens": 3000,
                    "completion_tokens": 900}}), key=cls.beta.key)
        refused = pm.chat(chat_body(HAIKU, max_tokens=100000), key=cls.beta.key)
        assert refused.status == 402, refused
        for i in range(2):
            pm.chat(chat_body(GPT4O, max_tokens=100, mock={"usage": {"prompt_tokens": 50000,
                    "completion_tokens": 2000}}), key=cls.gamma.key)
        deadline = time.time() + 5
        while time.time() < deadline:
            teams = pm.request("GET", "/v0/teams", key=ADMIN_TOKEN).json()["teams"]
            if all(to_nanos(t["loaned"]) == 0 for t in teams):
                break
            time.sleep(0.05)
        # beta crossed 25 % of its cap: that alert is delivered before the browser looks
        deadline = time.time() + 10
        while time.time() < deadline and not any(h.get("event") == "budget_threshold" for h in Hooks.got):
            time.sleep(0.05)

    # ---- serving, without a browser
    def test_page_headers(self):
        for path in ["/dashboard"] + ["/dashboard/" + f for f in PAGE_FILES]:
            r = self.pm.request("GET", path)
            self.assertEqual(r.status, 200, path)
            csp = r.header("content-security-policy") or ""
            for part in CSP_MUST:
                self.assertIn(part, csp, path)
            self.assertNotIn("unsafe-inline", csp)
            self.assertEqual(r.header("x-content-type-options"), "nosniff", path)
            self.assertTrue(r.header("etag"), path)
        self.assertTrue(self.pm.request("GET", "/dashboard").header("content-type").startswith("text/html"))
        self.assertTrue(self.pm.request("GET", "/dashboard/main.js").header("content-type")
                        .startswith("text/javascript"))

    def test_page_files_are_the_sources(self):
        """What is served is byte for byte src/web/, and holds no data."""
        for name in ("index.html",) + PAGE_FILES:
            with open(os.path.join(REPO, "src", "web", name), "rb") as f:
                src = f.read()
            r = self.pm.request("GET", "/dashboard" + ("" if name == "index.html" else "/" + name))
            self.assertEqual(r.body, src, name)
            for t in (self.alpha, self.beta, self.gamma):
                self.assertNotIn(t.name.encode(), r.body, name)
        page = self.pm.request("GET", "/dashboard").body.decode()
        self.assertNotIn("<script>", page)                     # no inline script
        self.assertNotIn("style=", page)                       # no inline style
        self.assertIn('rel="icon"', page)
        for ext in ("http://", "https://", "//fonts", "cdn"):
            self.assertNotIn(ext, page.replace("http://www.w3.org/2000/svg", ""))

    def test_conditional_and_unknown(self):
        r = self.pm.request("GET", "/dashboard/app.css")
        again = self.pm.request("GET", "/dashboard/app.css", headers={"If-None-Match": r.header("etag")})
        self.assertEqual(again.status, 304)
        self.assertEqual(again.body, b"")
        for bad in ("/dashboard/nope.js", "/dashboard/../conf/pinmeter.json", "/dashboard/index.html/x"):
            self.assertEqual(self.pm.request("GET", bad).status, 404, bad)
        self.assertEqual(self.pm.request("POST", "/dashboard", body="x").status, 405)

    # ---- /v0/teams
    def test_teams_endpoint(self):
        r = self.pm.request("GET", "/v0/teams", key=ADMIN_TOKEN)
        self.assertEqual(r.status, 200, r)
        j = r.json()
        by = {t["name"]: t for t in j["teams"]}
        self.assertEqual(set(by), {"alpha", "beta", "gamma"})
        for t in (self.alpha, self.beta, self.gamma):
            got = by[t.name]
            if t.cap is None:
                b = self.pm.request("GET", "/v0/credits/balance", key=t.key).json()
                self.assertEqual(to_nanos(got["loaned"]), to_nanos(b["loaned"]))
                self.assertIsNone(got["cap"])
                self.assertIsNone(got["available"])
                self.assertGreater(to_nanos(got["spent"]), 0)
            else:
                b = self.pm.balance(t.key)
                self.assertEqual(to_nanos(got["loaned"]), b["loaned"])
                self.assertEqual(to_nanos(got["cap"]), int(t.cap * NANO))
                self.assertEqual(to_nanos(got["available"]), b["available"])
                self.assertEqual(to_nanos(got["spent"]), b["total"] - b["available"] - b["loaned"])
            self.assertEqual(got["inflight"], 0)
            self.assertEqual([k["id"] for k in got["keys"]], list(t.keys))
            self.assertEqual(got["period"], t.period)
        text = r.body.decode()
        for t in (self.alpha, self.beta, self.gamma):
            for k in t.conf()["keys"]:
                self.assertNotIn(k["sha256"], text)
        self.assertEqual(by["beta"]["period_start"], time.strftime("%Y-%m-%dT00:00:00.000Z", time.gmtime()))
        self.assertIsNotNone(j["account"])
        # a team key: its own team only, no account
        mine = self.pm.request("GET", "/v0/teams", key=self.beta.key).json()
        self.assertEqual([t["name"] for t in mine["teams"]], ["beta"])
        self.assertIsNone(mine["account"])
        # a request in flight: counted, and its hold loaned, while it runs
        s = self.pm.stream(chat_body(SONNET, max_tokens=100, stream=True,
                                     mock={"chunks": 4, "chunk_delay_ms": 400}), key=self.alpha.key)
        self.assertIsNotNone(s.next_event())
        now = {t["name"]: t for t in self.pm.request("GET", "/v0/teams", key=ADMIN_TOKEN).json()["teams"]}
        s.read_all()
        s.close()
        self.assertEqual(now["alpha"]["inflight"], 1)
        self.assertEqual(now["beta"]["inflight"], 0)
        self.assertGreater(to_nanos(now["alpha"]["loaned"]), 0)
        self.assertEqual(self.pm.request("GET", "/v0/teams", key="pm-wrong").status, 401)
        self.assertEqual(self.pm.request("GET", "/v0/teams").status, 401)

    # ---- the HTML report, without a browser
    def test_report_html(self):
        import re
        html = self.pm.report(fmt="html").stdout
        total = self.pm.report(fmt="json").stdout
        want = json.loads(total)["total"]
        got = dict(re.findall(r'data-total="(\w+)">([^<]*)<', html))
        self.assertEqual(got["credits"], re.search(r'"credits":\s*([0-9.]+)\s*}\s*}', total).group(1))
        for k in ("requests", "prompt_tokens", "completion_tokens", "cached_tokens"):
            self.assertEqual(int(got[k]), want[k], k)
        self.assertTrue(html.startswith("<!doctype html>"))
        self.assertNotIn("<script", html)
        self.assertEqual(re.findall(r'(?:src|href)="(?!data:)[^"]*"', html), [])
        self.assertEqual(html.count("<svg"), 2)
        for t in ("alpha", "beta", "gamma"):
            self.assertIn(">%s<" % t, html)
        # the same flags as the other formats: a filter narrows it
        only = self.pm.report("--team", "beta", fmt="html").stdout
        self.assertNotIn(">gamma<", only)
        bad = self.pm.cli("report", "-c", self.pm.config_path, "--format", "pdf")
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("html", bad.stderr)

    # ---- the browser
    def test_browser(self):
        node = shutil.which("node")
        if not node:
            self.skipTest("node is not installed")
        if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "puppeteer-core")):
            self.skipTest("tests/browser/node_modules missing: run `npm ci` in tests/browser")
        if not os.path.exists(CHROMIUM):
            self.skipTest("no chromium at %s (apt-get install chromium)" % CHROMIUM)
        html = os.path.join(self.tmp, "report.html")
        js = os.path.join(self.tmp, "report.json")
        with open(html, "w") as f:
            f.write(self.pm.report(fmt="html").stdout)
        with open(js, "w") as f:
            f.write(self.pm.report(fmt="json").stdout)
        env = dict(os.environ, PINMETER_URL="http://127.0.0.1:%d" % self.pm.port, ADMIN_TOKEN=ADMIN_TOKEN,
                   TEAM_KEY=self.alpha.keys["alpha-ci"], TEAM_NAME="alpha", CHAT_MODEL=SONNET,
                   REPORT_HTML=html, REPORT_JSON=js, SCREENSHOTS=SHOTS, CHROMIUM=CHROMIUM)
        p = subprocess.run([node, "dashboard_test.mjs"], cwd=BROWSER_DIR, env=env, capture_output=True,
                           text=True, timeout=200, stdin=subprocess.DEVNULL)
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out)
        summary = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(summary["failures"], [], out)
        # the request the browser test made is in the ledger, with the id it saw
        row = self.pm.row(req_id=summary["request_id"])
        self.assertIsNotNone(row)
        self.assertEqual(row["team"], "alpha")
        for shot in ("dashboard-1280-light.png", "dashboard-1280-dark.png", "dashboard-390-light.png",
                     "dashboard-390-dark.png"):
            self.assertGreater(os.path.getsize(os.path.join(SHOTS, shot)), 10000, shot)


class TeamsFleetTest(E2ETest):
    """/v0/teams with the Redis store: a team's spend made on another
    instance shows on this one (fleet-wide), read without a call on the loop."""

    @classmethod
    def setup_proxies(cls):
        from redis_fixture import Redis
        cls.redis = Redis(cls.tmp)
        cls.team = Team("fleet", 5.0, key_ids=["f"])
        over = {"budget_store": cls.redis.url}
        env = {"PINMETER_ADMIN_TOKEN": ADMIN_TOKEN}
        cls.a = cls.add_proxy([cls.team], name="fa", overrides=over, env=env)
        cls.b = cls.add_proxy([cls.team], name="fb", overrides=over, env=env)

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            if getattr(cls, "redis", None):
                cls.redis.stop()

    def test_fleet_wide(self):
        r = self.a.chat(chat_body(SONNET, max_tokens=100, mock={"usage": {"prompt_tokens": 1000,
                        "completion_tokens": 100}}), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        charged = to_nanos(r.header("x-pinmeter-cost"))
        self.assertGreater(charged, 0)
        deadline = time.time() + 5         # b sees it at its store's next sync (once a second)
        while True:
            t = self.b.request("GET", "/v0/teams", key=ADMIN_TOKEN).json()["teams"][0]
            if to_nanos(t["spent"]) == charged or time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(to_nanos(t["spent"]), charged)
        self.assertEqual(to_nanos(t["available"]), 5 * NANO - charged)
        self.assertEqual(to_nanos(t["loaned"]), 0)

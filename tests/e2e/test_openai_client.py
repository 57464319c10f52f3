"""The real openai npm SDK pointed at pinmeter (tests/client/openai_test.mjs)."""
import json
import os
import shutil
import subprocess

from harness import E2ETest, Team, SONNET, REPO, NANO, cost

CLIENT_DIR = os.path.join(REPO, "tests", "client")


class OpenAIClientTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("sdk", 2.0, models=["anthropic/*"], key_ids=["sdk1"])
        cls.pm = cls.add_proxy([cls.team], name="sdk")

    def test_openai_sdk(self):
        node = shutil.which("node")
        if not node:
            self.skipTest("node is not installed")
        if not os.path.isdir(os.path.join(CLIENT_DIR, "node_modules", "openai")):
            self.skipTest("tests/client/node_modules missing: run `npm install` in tests/client")
        env = dict(os.environ, PINMETER_URL="http://127.0.0.1:%d/v0/llm" % self.pm.port,
                   PINMETER_KEY=self.team.key, MODEL=SONNET)
        env.pop("OPENAI_API_KEY", None)
        env.pop("OPENAI_BASE_URL", None)
        p = subprocess.run([node, "openai_test.mjs"], cwd=CLIENT_DIR, env=env, capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        got = json.loads(p.stdout.strip().splitlines()[-1])
        ups = self.mock.requests()
        self.assertEqual(len(ups), 3, "the 402 must not reach the upstream")
        ns, st, su = ups
        # non-streaming: same answer as the upstream's
        upbody = json.loads(ns["response_body"])
        self.assertEqual(got["nonstream"]["id"], upbody["id"])
        self.assertEqual(got["nonstream"]["content"], "Plain answer from mock")
        self.assertEqual(got["nonstream"]["usage"], upbody["usage"])
        self.assertEqual(ns["headers"].get("Authorization"), "Bearer " + self.pm.upstream_key)
        # streaming without usage: all content, one id, no empty-choices chunk
        self.assertEqual(got["stream"]["content"], "Streamed answer from mock")
        self.assertEqual(got["stream"]["ids"], [st["id"]])
        self.assertEqual(got["stream"]["empty_choices"], 0)
        self.assertIsNone(got["stream"]["usage"])
        self.assertEqual(got["stream"]["finish_reason"], "stop")
        self.assertIs(st["body"]["stream_options"]["include_usage"], True)
        # streaming with usage
        self.assertEqual(got["stream_usage"]["content"], "Usage stream")
        self.assertEqual(got["stream_usage"]["usage"]["prompt_tokens"], 8)
        self.assertEqual(got["too_big"]["status"], 402)
        # ledger and balance show exactly the cost from the upstream's usage
        costs = [cost(SONNET, 21, 9, 5), cost(SONNET, 33, 11), cost(SONNET, 8, 4)]
        rows = {}
        for up, c in zip(ups, costs):
            row = self.pm.row(upstream_id=up["id"])
            self.assertIsNotNone(row, "no ledger row for %s" % up["id"])
            self.assertEqual(row["state"], "settled")
            self.assertEqual(row["charged_nanos"], c)
            rows[up["id"]] = row
        self.assertEqual(rows[ns["id"]]["id"], got["nonstream"]["request_id"])
        b = self.pm.wait_idle(self.team.key)
        self.assertEqual(b, {"total": 2 * NANO, "loaned": 0, "available": 2 * NANO - sum(costs)})


class OpenAIRateLimitTest(E2ETest):
    """Issue 15: an agent looping at twice its limit slows down, it does not
    fail: the SDK's default retries honour pinmeter's Retry-After."""

    @classmethod
    def setup_proxies(cls):
        cls.team = Team("sdkrl", 5.0, key_ids=["agent"], key_extra={"agent": {"rpm": 30}})
        cls.pm = cls.add_proxy([cls.team], name="sdkrl")

    def test_60_requests_against_rpm_30_all_succeed(self):
        node = shutil.which("node")
        if not node:
            self.skipTest("node is not installed")
        if not os.path.isdir(os.path.join(CLIENT_DIR, "node_modules", "openai")):
            self.skipTest("tests/client/node_modules missing: run `npm install` in tests/client")
        env = dict(os.environ, PINMETER_URL="http://127.0.0.1:%d/v0/llm" % self.pm.port,
                   PINMETER_KEY=self.team.key, MODEL=SONNET, N="60")
        env.pop("OPENAI_API_KEY", None)
        env.pop("OPENAI_BASE_URL", None)
        p = subprocess.run([node, "openai_rpm.mjs"], cwd=CLIENT_DIR, env=env, capture_output=True,
                           text=True, timeout=150, stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        got = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(got["errors"], [])
        self.assertEqual(got["ok"], 60)
        self.assertEqual(self.mock.chat_count(), 60, "each request reached the upstream once")
        # the limit held: 30 in the first minute, the rest after the window slid
        self.assertGreater(got["seconds"], 30)
        rows = self.pm.ledger_rows("team = 'sdkrl'")
        self.assertEqual(len(rows), 60)

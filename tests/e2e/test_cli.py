"""The command line: report (by, since/until, formats), keygen, check-config,
--help and --version."""
import json
import os
import re

from harness import (E2ETest, Team, SONNET, GPT4O, FRACTIONAL, chat_body, cost, fmt_credits,
                     parse_report_json, parse_csv, to_nanos, today_utc, day_offset_utc, run_bin,
                     sha256_hex, write_rates)


class ReportTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.research = Team("research", 25.0, models=["anthropic/*"], key_ids=["alice", "bob"])
        cls.ops = Team("ops", 10.0, key_ids=["carol"])
        cls.pm = cls.add_proxy([cls.research, cls.ops], name="rep")
        # alice: 0.009960000, bob: 0.001050000, carol: gpt-4o 12/7 and 32 nanos fractional
        cls.calls = [
            (cls.research.keys["alice"], SONNET, (1000, 500, 200)),
            (cls.research.keys["bob"], SONNET, (100, 50, 0)),
            (cls.ops.keys["carol"], GPT4O, (12, 7, 0)),
            (cls.ops.keys["carol"], FRACTIONAL, (13, 3, 1)),
        ]
        for key, model, (p, c, k) in cls.calls:
            r = cls.pm.chat(chat_body(model, mock={"usage": {"prompt_tokens": p, "completion_tokens": c,
                                                             "cached_tokens": k}}), key=key)
            assert r.status == 200, r
        rows = cls.pm.wait_rows(lambda rs: len(rs) == 4 and all(x["state"] == "settled" for x in rs))
        assert len(rows) == 4, rows
        cls.c_alice = cost(SONNET, 1000, 500, 200)
        cls.c_bob = cost(SONNET, 100, 50)
        cls.c_carol = cost(GPT4O, 12, 7) + cost(FRACTIONAL, 13, 3, 1)
        cls.total = cls.c_alice + cls.c_bob + cls.c_carol

    def check_total(self, rep):
        t = rep["total"]
        self.assertEqual(t["requests"], 4)
        self.assertEqual(t["prompt_tokens"], 1000 + 100 + 12 + 13)
        self.assertEqual(t["completion_tokens"], 500 + 50 + 7 + 3)
        self.assertEqual(t["cached_tokens"], 201)
        self.assertEqual(to_nanos(t["credits"]), self.total)

    def test_report_by_team_json(self):
        p = self.pm.report("--by", "team")
        rep = parse_report_json(p.stdout)
        by = {r["team"]: r for r in rep["rows"]}
        self.assertEqual(set(by), {"research", "ops"})
        self.assertEqual(to_nanos(by["research"]["credits"]), self.c_alice + self.c_bob)
        self.assertEqual(by["research"]["requests"], 2)
        self.assertEqual(to_nanos(by["ops"]["credits"]), self.c_carol)
        self.assertIn(fmt_credits(self.c_alice + self.c_bob), p.stdout)   # 0.011010000
        self.assertIn(fmt_credits(self.c_carol), p.stdout)
        self.assertIn(fmt_credits(self.total), p.stdout)
        self.check_total(rep)
        # --ledger instead of -c gives the same
        p2 = self.pm.report("--by", "team", use_config=False)
        self.assertEqual(parse_report_json(p2.stdout), rep)

    def test_report_by_key_model_day(self):
        rep = parse_report_json(self.pm.report("--by", "key").stdout)
        by = {r["key"]: to_nanos(r["credits"]) for r in rep["rows"]}
        self.assertEqual(by, {"alice": self.c_alice, "bob": self.c_bob, "carol": self.c_carol})
        rep = parse_report_json(self.pm.report("--by", "model").stdout)
        by = {r["model"]: (r["requests"], to_nanos(r["credits"])) for r in rep["rows"]}
        self.assertEqual(by, {SONNET: (2, self.c_alice + self.c_bob),
                              GPT4O: (1, cost(GPT4O, 12, 7)), FRACTIONAL: (1, 32)})
        p = self.pm.report("--by", "day")
        self.assertIn(fmt_credits(32), self.pm.report("--by", "model").stdout)
        rep = parse_report_json(p.stdout)
        self.assertEqual([r["day"] for r in rep["rows"]], [today_utc()])
        self.assertEqual(to_nanos(rep["rows"][0]["credits"]), self.total)
        rep = parse_report_json(self.pm.report("--by", "team,model,key,day").stdout)
        got = {(r["team"], r["model"], r["key"], r["day"]): to_nanos(r["credits"]) for r in rep["rows"]}
        d = today_utc()
        self.assertEqual(got, {("research", SONNET, "alice", d): self.c_alice,
                               ("research", SONNET, "bob", d): self.c_bob,
                               ("ops", GPT4O, "carol", d): cost(GPT4O, 12, 7),
                               ("ops", FRACTIONAL, "carol", d): 32})
        self.check_total(rep)

    def test_report_since_until(self):
        rep = parse_report_json(self.pm.report("--since", today_utc(), "--by", "team").stdout)
        self.check_total(rep)
        rep = parse_report_json(self.pm.report("--since", day_offset_utc(-1),
                                               "--until", day_offset_utc(1)).stdout)
        self.check_total(rep)
        for args in (["--since", day_offset_utc(1)], ["--until", day_offset_utc(-1)]):
            rep = parse_report_json(self.pm.report(*args, "--by", "team").stdout)
            self.assertEqual(rep["rows"], [], args)
            self.assertEqual(rep["total"]["requests"], 0, args)
            self.assertEqual(to_nanos(rep["total"]["credits"]), 0, args)

    def test_report_csv_and_table(self):
        p = self.pm.report("--by", "team", fmt="csv")
        rows = parse_csv(p.stdout)
        by = {r["team"]: r for r in rows if r.get("team") in ("research", "ops")}
        self.assertEqual(set(by), {"research", "ops"}, p.stdout)
        self.assertEqual(by["research"]["credits"], fmt_credits(self.c_alice + self.c_bob))
        self.assertEqual(by["ops"]["credits"], fmt_credits(self.c_carol))
        self.assertEqual(by["research"]["requests"], "2")
        p = self.pm.report("--by", "team", fmt="table")
        for figure in (fmt_credits(self.c_alice + self.c_bob), fmt_credits(self.c_carol),
                       fmt_credits(self.total)):
            self.assertIn(figure, p.stdout)
        self.assertIn("research", p.stdout)

    def test_report_bad_args(self):
        p = self.pm.cli("report", "-c", self.pm.config_path, "--by", "colour")
        self.assertNotEqual(p.returncode, 0)
        p = self.pm.cli("report", "-c", self.pm.config_path, "--since", "yesterday")
        self.assertNotEqual(p.returncode, 0)


class CliTest(E2ETest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mock.stop()
        cls.mock = None

    def setUp(self):
        pass

    def test_keygen(self):
        p = run_bin(["keygen", "--team", "x"])
        self.assertEqual(p.returncode, 0, p.stderr)
        keys = re.findall(r"\bpm-[A-Za-z0-9_\-]+", p.stdout)
        hexes = set(re.findall(r"\b[0-9a-f]{64}\b", p.stdout))
        self.assertEqual(len(set(keys)), 1, p.stdout)
        self.assertEqual(hexes, {sha256_hex(keys[0])}, p.stdout)
        self.assertGreaterEqual(len(keys[0]), 3 + 32, "key too short to be random enough")
        p2 = run_bin(["keygen", "--team", "x"])
        self.assertNotIn(keys[0], p2.stdout, "keygen repeated a key")
        p3 = run_bin(["keygen"])
        self.assertNotEqual(p3.returncode, 0, "keygen without --team should fail")

    def _config(self, name, teams, **extra):
        rates = os.path.join(self.tmp, "rates.json")
        write_rates(rates)
        cfg = {"listen": "127.0.0.1:8787",
               "upstream": {"base_url": "http://127.0.0.1:9", "llm_key_env": "PINATA_LLM_KEY",
                            "timeout_s": 10},
               "ledger": os.path.join(self.tmp, "cc.db"), "rates_file": rates,
               "teams": teams}
        cfg.update(extra)
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            json.dump(cfg, f)
        return path

    def test_check_config(self):
        good_team = {"name": "t", "cap": 1.5, "period": "month", "models": ["anthropic/*"],
                     "keys": [{"id": "a", "sha256": sha256_hex("pm-x")}]}
        good = self._config("good.json", [good_team])
        p = run_bin(["check-config", "-c", good])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        cases = {
            "bad_period.json": ([dict(good_team, period="fortnight")], {}, "period"),
            "bad_sha.json": ([dict(good_team, keys=[{"id": "a", "sha256": "xyz"}])], {}, "sha256"),
            "bad_cap.json": ([dict(good_team, cap="lots")], {}, "cap"),
            "bad_cpu.json": ([good_team], {"credits_per_usd": -1}, "credits_per_usd"),
        }
        for name, (teams, extra, key) in cases.items():
            path = self._config(name, teams, **extra)
            p = run_bin(["check-config", "-c", path])
            out = p.stdout + p.stderr
            self.assertEqual(p.returncode, 1, "%s: %s" % (name, out))
            self.assertIn(name, out, "message does not name the file")
            self.assertIn(key, out, "message does not name the key %r" % key)
        path = os.path.join(self.tmp, "notjson.json")
        with open(path, "w") as f:
            f.write("{ this is not json")
        p = run_bin(["check-config", "-c", path])
        self.assertEqual(p.returncode, 1)
        self.assertIn("notjson.json", p.stdout + p.stderr)
        p = run_bin(["check-config", "-c", os.path.join(self.tmp, "missing.json")])
        self.assertEqual(p.returncode, 1)

    def test_help_and_version(self):
        for args in (["--help"], ["--version"], ["serve", "--help"], ["report", "--help"],
                     ["keygen", "--help"], ["check-config", "--help"]):
            p = run_bin(args, timeout=5)
            self.assertEqual(p.returncode, 0, "%s: %s" % (args, p.stderr))
            self.assertTrue((p.stdout + p.stderr).strip(), args)
        p = run_bin(["--version"])
        self.assertRegex(p.stdout + p.stderr, r"\d+\.\d+")
        p = run_bin(["no-such-command"])
        self.assertNotEqual(p.returncode, 0)


class ServeOptionsTest(E2ETest):
    def test_flags_override_config(self):
        from harness import Proxy, closed_port, free_port, http_request
        team = Team("flags", 1.0, key_ids=["f"])
        p = Proxy(self.tmp, "http://127.0.0.1:%d" % closed_port(), teams=[team], name="flags",
                  ledger=__import__("os").path.join(self.tmp, "from_config.db"))
        port = free_port()
        other = os.path.join(self.tmp, "from_flag.db")
        p.extra_args = ["--listen", "127.0.0.1:%d" % port, "--upstream", self.mock.url,
                        "--ledger", other]
        p.port = port
        p.ledger = other
        self.proxies.append(p)
        p.start()
        r = p.chat(chat_body(SONNET), key=team.key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.mock.chat_count(), 1)
        self.assertEqual(len(p.wait_rows(lambda rs: len(rs) == 1)), 1)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "from_config.db")))

    def test_missing_upstream_key_refuses_to_start(self):
        from harness import Proxy
        p = Proxy(self.tmp, self.mock.url, teams=[Team("nokey", 1.0)], name="nokey",
                  upstream_key=None)
        self.proxies.append(p)
        p.start(wait=False)
        try:
            rc = p.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            self.fail("pinmeter serves in team mode without the upstream key")
        self.assertNotEqual(rc, 0)
        self.assertIn("PINATA_LLM_KEY", p.stderr_text())

    def test_shipped_default_config_valid(self):
        p = run_bin(["check-config"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        p = run_bin(["check-config", "-c", "conf/pinmeter.example.json"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_loopback_default_and_warning_elsewhere(self):
        """Loopback binds quietly; any other bind address logs a warning at
        start. Only /healthz on 127.0.0.1 is ever sent to, and the proxy is
        stopped at once."""
        from harness import Proxy, free_port, http_request
        quiet = Proxy(self.tmp, self.mock.url, teams=[Team("lo", 1.0)], name="lo")
        self.proxies.append(quiet)
        quiet.start()
        self.assertNotIn("WARNING", quiet.stderr_text())
        quiet.stop()
        port = free_port()
        p = Proxy(self.tmp, self.mock.url, teams=[Team("wide", 1.0)], name="wide")
        p.extra_args = ["--listen", "0.0.0.0:%d" % port]
        p.port = port
        self.proxies.append(p)
        p.start()
        try:
            self.assertEqual(http_request(port, "GET", "/healthz").status, 200)
            self.assertRegex(p.stderr_text(), r"WARNING: listening on 0\.0\.0\.0.*not loopback")
        finally:
            p.stop()

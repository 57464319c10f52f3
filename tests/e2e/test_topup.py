"""Issue 16: Pinata's auto top-up settings through pinmeter.

GET /v0/credits/topup/config passes Pinata's answer through; PUT checks a
body against Pinata's documented rules first — threshold 4, amount 2.5,
amount 0, an extra field, a missing one are answered 400 invalid_request
naming the field and never reach the mock — and forwards a valid one with
the JWT, Pinata's answer passed back and an audit row left in the ledger's
topup_changes. The same checks and the same audit for `pinmeter topup show
|set|disable`, whose JWT comes from the environment and is never printed.
"""
import json
import os
import sqlite3

from harness import E2ETest, Team, ADMIN_TOKEN, JWT, http_request, run_bin

ENV = {"PINATA_JWT": JWT, "PINMETER_ADMIN_TOKEN": ADMIN_TOKEN}
PATH = "/v0/credits/topup/config"


def changes(p):
    con = sqlite3.connect(p.ledger, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM topup_changes ORDER BY rowid")]
    finally:
        con.close()


class TopupTestBase(E2ETest):
    def mock_settings(self):
        """What the mock holds, asked directly with the JWT."""
        r = http_request(self.mock.port, "GET", PATH, headers={"Authorization": "Bearer " + JWT})
        self.assertEqual(r.status, 200, r)
        return json.loads(r.body)

    def mock_set(self, threshold, amount):
        r = http_request(self.mock.port, "PUT", PATH,
                         body={"threshold": threshold, "amount": amount},
                         headers={"Authorization": "Bearer " + JWT})
        self.assertEqual(r.status, 200, r)

    def puts(self):
        return [q for q in self.mock.topup_requests() if q["method"] == "PUT"]


class TopupConfigTest(TopupTestBase):
    @classmethod
    def setup_proxies(cls):
        cls.team = Team("tu", 10.0, key_ids=["t1"])
        cls.pm = cls.add_proxy([cls.team], name="topup", env=ENV)
        cls.nojwt = cls.add_proxy([Team("nj", 1.0, key_ids=["n1"])], name="nojwt",
                                  env={"PINMETER_ADMIN_TOKEN": ADMIN_TOKEN})
        cls.badjwt = cls.add_proxy([Team("bj", 1.0, key_ids=["b1"])], name="badjwt",
                                   env={"PINMETER_ADMIN_TOKEN": ADMIN_TOKEN,
                                        "PINATA_JWT": "jwt-wrong-" + JWT[-6:]})

    def setUp(self):
        super().setUp()
        self.base_requests = len(self.mock.topup_requests())
        self.base_changes = len(changes(self.pm))

    def new_requests(self):
        return self.mock.topup_requests()[self.base_requests:]

    def put(self, body, proxy=None, key=ADMIN_TOKEN):
        return (proxy or self.pm).request("PUT", PATH, body=body, key=key)

    def test_invalid_bodies_are_400_and_never_forwarded(self):
        self.mock_set(20, 50)
        self.base_requests = len(self.mock.topup_requests())
        cases = [
            ({"threshold": 4, "amount": 10}, "threshold"),
            ({"threshold": 10, "amount": 2.5}, "amount"),
            ({"threshold": 10, "amount": 0}, "amount"),
            ({"threshold": 10, "amount": 10, "enabled": True}, "enabled"),
            ({"threshold": "10", "amount": 10}, "threshold"),
            ({"threshold": 10}, "amount"),
            ({"amount": 10}, "threshold"),
            ('{"threshold": 10, "amount": 10, "amount": 11}', "amount"),
        ]
        for body, field in cases:
            r = self.pm.request("PUT", PATH, body=body, key=ADMIN_TOKEN,
                                headers={"Content-Type": "application/json"})
            e = self.assertError(r, 400, "invalid_request_error")
            self.assertEqual(e["code"], "invalid_request", (body, e))
            self.assertEqual(e["param"], field, (body, e))
            self.assertTrue(e["message"].startswith(field + ": "), e)
        for raw in (b"not json", b"[1, 2]", b""):
            r = self.pm.request("PUT", PATH, body=raw, key=ADMIN_TOKEN,
                                headers={"Content-Type": "application/json"})
            e = self.assertError(r, 400, "invalid_request_error")
            self.assertEqual(e["code"], "invalid_request")
            self.assertIsNone(e["param"])
        self.assertEqual(self.new_requests(), [], "a refused body reached Pinata")
        self.assertEqual(self.mock_settings(), {"threshold": 20.0, "amount": 50})
        self.assertEqual(len(changes(self.pm)), self.base_changes, "an audit row for nothing")

    def test_valid_put_is_forwarded_with_the_jwt_and_audited(self):
        self.mock_set(6, 3)
        base = len(self.mock.topup_requests())
        r = self.put({"threshold": 12.5, "amount": 40})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(json.loads(r.body), {"threshold": 12.5, "amount": 40})
        got = self.mock.topup_requests()[base:]
        puts = [q for q in got if q["method"] == "PUT"]
        self.assertEqual(len(puts), 1, got)
        self.assertEqual(puts[0]["authorization"], "Bearer " + JWT)
        self.assertEqual(puts[0]["content_type"], "application/json")
        self.assertEqual(puts[0]["body"], '{"threshold":12.5,"amount":40}')
        self.assertEqual(self.mock_settings(), {"threshold": 12.5, "amount": 40})
        rows = changes(self.pm)[self.base_changes:]
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual(json.loads(rows[0]["old"]), {"threshold": 6.0, "amount": 3})
        self.assertEqual(rows[0]["new"], '{"threshold":12.5,"amount":40}')
        self.assertEqual(rows[0]["via"], "api")
        # both null: auto top-up off
        r = self.put({"threshold": None, "amount": None})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.mock_settings(), {"threshold": None, "amount": None})
        rows = changes(self.pm)[self.base_changes:]
        self.assertEqual([x["new"] for x in rows],
                         ['{"threshold":12.5,"amount":40}', '{"threshold":null,"amount":null}'])

    def test_get_passes_pinatas_answer_through(self):
        self.mock_set(7, 9)
        self.base_requests = len(self.mock.topup_requests())
        direct = http_request(self.mock.port, "GET", PATH, headers={"Authorization": "Bearer " + JWT})
        r = self.pm.request("GET", PATH, key=ADMIN_TOKEN)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, direct.body)
        self.assertEqual(r.header("content-type"), "application/json")
        gets = [q for q in self.new_requests() if q["method"] == "GET"]
        self.assertEqual([q["authorization"] for q in gets], ["Bearer " + JWT] * 2)

    def test_admin_only_and_methods(self):
        for key in (None, self.team.key, "wrong-token"):
            for m, body in (("GET", None), ("PUT", {"threshold": 10, "amount": 10})):
                r = self.pm.request(m, PATH, body=body, key=key)
                self.assertEqual(r.status, 401, (m, key, r))
        r = self.pm.request("DELETE", PATH, key=ADMIN_TOKEN)
        self.assertEqual(r.status, 405, r)
        r = self.pm.request("POST", PATH, body={"threshold": 10, "amount": 10}, key=ADMIN_TOKEN)
        self.assertEqual(r.status, 405, r)
        self.assertEqual(self.new_requests(), [])

    def test_without_the_jwt_503(self):
        for m, body in (("GET", None), ("PUT", {"threshold": 10, "amount": 10})):
            r = self.nojwt.request(m, PATH, body=body, key=ADMIN_TOKEN)
            e = self.assertError(r, 503)
            self.assertEqual(e["code"], "account_unavailable")
            self.assertIn("jwt_env", e["message"])
        self.assertEqual(self.new_requests(), [])

    def test_pinata_refusal_passed_through_not_audited(self):
        before = len(changes(self.badjwt))
        r = self.badjwt.request("PUT", PATH, body={"threshold": 10, "amount": 10}, key=ADMIN_TOKEN)
        self.assertEqual(r.status, 401, r)                 # Pinata's own answer
        self.assertEqual(json.loads(r.body)["error"]["message"], "invalid jwt")
        self.assertEqual(len(changes(self.badjwt)), before)
        got = self.new_requests()
        self.assertTrue(got and all(q["status"] == 401 for q in got), got)


class TopupCliTest(TopupTestBase):
    @classmethod
    def setup_proxies(cls):
        cls.pm = cls.add_proxy([Team("cli", 1.0, key_ids=["c1"])], name="tcli", env=ENV)

    def topup(self, *args, env=None):
        p = run_bin(["topup"] + list(args) + ["-c", self.pm.config_path],
                    env=self.pm.env if env is None else env)
        self.assertNotIn(JWT, p.stdout + p.stderr, "the JWT was printed")
        return p

    def test_show_set_disable(self):
        self.mock_set(8, 2)
        n0 = len(self.mock.topup_requests())
        p = self.topup("show")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout), {"threshold": 8.0, "amount": 2})
        c0 = len(changes(self.pm))
        p = self.topup("set", "--threshold", "15", "--amount", "30")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout), {"threshold": 15.0, "amount": 30})
        puts = [q for q in self.mock.topup_requests()[n0:] if q["method"] == "PUT"]
        self.assertEqual([(q["authorization"], q["body"]) for q in puts],
                         [("Bearer " + JWT, '{"threshold":15,"amount":30}')])
        p = self.topup("disable")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.mock_settings(), {"threshold": None, "amount": None})
        rows = changes(self.pm)[c0:]
        self.assertEqual([(json.loads(r["old"]), r["new"], r["via"]) for r in rows], [
            ({"threshold": 8.0, "amount": 2}, '{"threshold":15,"amount":30}', "cli"),
            ({"threshold": 15.0, "amount": 30}, '{"threshold":null,"amount":null}', "cli")])

    def test_same_checks_nothing_sent(self):
        self.mock_set(9, 9)
        n0 = len(self.mock.topup_requests())
        for args, field in ((("--threshold", "4", "--amount", "10"), "threshold"),
                            (("--threshold", "10", "--amount", "2.5"), "amount"),
                            (("--threshold", "10", "--amount", "0"), "amount"),
                            (("--threshold", "ten", "--amount", "1"), "threshold"),
                            (("--threshold", "10"), "amount")):
            p = self.topup("set", *args)
            self.assertEqual(p.returncode, 1, (args, p.stdout))
            self.assertIn(field, p.stderr)
            self.assertIn("nothing was sent", p.stderr)
        p = self.topup("show", "--amount", "3")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(self.mock.topup_requests()[n0:], [], "a refused setting reached Pinata")
        self.assertEqual(self.mock_settings(), {"threshold": 9.0, "amount": 9})

    def test_without_the_jwt(self):
        env = {k: v for k, v in self.pm.env.items() if k != "PINATA_JWT"}
        n0 = len(self.mock.topup_requests())
        for args in (("show",), ("set", "--threshold", "10", "--amount", "10"), ("disable",)):
            p = self.topup(*args, env=env)
            self.assertEqual(p.returncode, 1)
            self.assertIn("PINATA_JWT", p.stderr)
        self.assertEqual(self.mock.topup_requests()[n0:], [])
        self.assertTrue(os.path.exists(self.pm.ledger))

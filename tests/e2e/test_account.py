"""The account projection (Pinata balance synced with the JWT) and the admin
balance endpoint."""
import time

from harness import (E2ETest, Team, SONNET, NANO, JWT, ADMIN_TOKEN, chat_body, body_len,
                     reservation, cost, to_nanos)


class AccountTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        # The synced balance is small; the team's cap is large.
        cls.mock.set_balance(total=0.05, loaned=0.0, available=0.02)
        cls.team = Team("acct", 10.0, key_ids=["a1"])
        cls.pm = cls.add_proxy([cls.team], name="acct",
                               env={"PINATA_JWT": JWT, "PINMETER_ADMIN_TOKEN": ADMIN_TOKEN})
        cls.noadmin = cls.add_proxy([Team("na", 1.0, key_ids=["n1"])], name="noadmin")

    def admin_balance(self, proxy=None):
        r = (proxy or self.pm).request("GET", "/v0/credits/balance", key=ADMIN_TOKEN)
        return r

    def test_account_projection(self):
        r = self.admin_balance()
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual({k: to_nanos(j[k]) for k in ("total", "loaned", "available")},
                         {"total": 50000000, "loaned": 0, "available": 20000000})
        # reservation 0.03 > projected 0.02 although the team has 10 credits
        body = chat_body(SONNET, max_tokens=2000)
        req = reservation(SONNET, body_len(body), 2000)
        self.assertGreater(req, 20000000)
        r = self.pm.chat(body, key=self.team.key)
        e = self.assertError(r, 402)
        self.assertEqual(e.get("scope"), "account", e)
        self.assertIn("max_tokens", e["message"])
        self.assertEqual(self.mock.chat_count(), 0, "402 request reached the upstream")
        b = self.pm.balance(self.team.key)
        self.assertEqual(b, {"total": 10 * NANO, "loaned": 0, "available": 10 * NANO})
        # a small one fits; the projection then drops by its exact cost
        r = self.pm.chat(chat_body(SONNET, max_tokens=100), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        self.pm.wait_idle(self.team.key)
        c = cost(SONNET, 12, 7)
        r = self.admin_balance()
        j = r.json()
        self.assertEqual(to_nanos(j["loaned"]), 0)
        self.assertEqual(to_nanos(j["available"]), 20000000 - c)

    def test_admin_token_not_accepted_without_config(self):
        r = self.admin_balance(self.noadmin)
        self.assertEqual(r.status, 401, r)
        r = self.noadmin.chat(chat_body(SONNET), key=ADMIN_TOKEN)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(self.mock.chat_count(), 0)


class AccountSyncTest(E2ETest):
    """Upstream 402 marks the account exhausted until a sync shows credits;
    an unreadable balance leaves the team caps in force and is logged once."""

    @classmethod
    def setup_proxies(cls):
        cls.mock.set_balance(total=100.0, loaned=0.0, available=100.0)
        cls.team = Team("sync", 10.0, key_ids=["y1"])
        cls.pm = cls.add_proxy([cls.team], name="sync", env={"PINATA_JWT": JWT},
                               overrides={"account": {"sync_s": 2}})

    def test_upstream_402_marks_account_exhausted(self):
        r = self.pm.chat(chat_body(SONNET, mock={"status": 402}), key=self.team.key)
        self.assertEqual(r.status, 402, r)
        r = self.pm.chat(chat_body(SONNET), key=self.team.key)
        e = self.assertError(r, 402)
        self.assertEqual(e.get("scope"), "account", e)
        self.assertEqual(self.mock.chat_count(), 1, "request reached upstream while exhausted")
        deadline = time.time() + 6
        while time.time() < deadline:
            r = self.pm.chat(chat_body(SONNET), key=self.team.key)
            if r.status == 200:
                break
            time.sleep(0.25)
        self.assertEqual(r.status, 200, "a sync showing credits did not clear the exhaustion")
        self.assertEqual(self.pm.wait_idle(self.team.key)["loaned"], 0)


class AccountUnreadableTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.mock.set_balance(status=500)
        cls.team = Team("unread", 0.001, key_ids=["w1"])
        cls.pm = cls.add_proxy([cls.team], name="unread", env={"PINATA_JWT": JWT},
                               overrides={"account": {"sync_s": 1}})

    def test_unreadable_balance_team_caps_apply(self):
        before = len(self.pm.logs_text().splitlines())
        r = self.pm.chat(chat_body(SONNET, max_tokens=20), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        r = self.pm.chat(chat_body(SONNET, max_tokens=5000), key=self.team.key)
        e = self.assertError(r, 402)
        self.assertEqual(e.get("scope"), "team")
        time.sleep(2.5)  # several failed syncs
        lines = [l for l in self.pm.logs_text().splitlines()
                 if any(w in l.lower() for w in ("balance", "account", "sync"))]
        self.assertGreaterEqual(len(lines), 1, "unreadable balance not logged")
        self.assertLessEqual(len(lines), 2, "unreadable balance logged repeatedly:\n" + "\n".join(lines))
        self.assertGreaterEqual(self.mock.stats()["balance"], 2, "balance not re-synced")
        del before


class AccountLoanedTest(E2ETest):
    @classmethod
    def setup_proxies(cls):
        cls.mock.set_balance(total=3.0, loaned=0.0, available=2.5)
        cls.team = Team("acl", 10.0, key_ids=["q1"])
        cls.pm = cls.add_proxy([cls.team], name="acl",
                               env={"PINATA_JWT": JWT, "PINMETER_ADMIN_TOKEN": ADMIN_TOKEN})

    def admin(self):
        r = self.pm.request("GET", "/v0/credits/balance", key=ADMIN_TOKEN)
        self.assertEqual(r.status, 200, r)
        j = r.json()
        return {k: to_nanos(j[k]) for k in ("total", "loaned", "available")}

    def test_admin_view_counts_loaned(self):
        import threading
        a0 = self.admin()
        self.assertEqual(a0["available"], 2500000000)
        self.assertEqual(a0["loaned"], 0)
        body = chat_body(SONNET, max_tokens=1000, mock={"delay_ms": 1000})
        res = reservation(SONNET, body_len(body), 1000)
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", self.pm.chat(body, key=self.team.key)))
        t.start()
        deadline = time.time() + 3
        while self.mock.chat_count() == 0 and time.time() < deadline:
            time.sleep(0.02)
        mid = self.admin()
        t.join(10)
        self.assertEqual(mid["loaned"], res)
        self.assertEqual(mid["available"], 2500000000 - res)
        self.assertEqual(out["r"].status, 200)
        self.pm.wait_idle(self.team.key)
        end = self.admin()
        self.assertEqual(end["loaned"], 0)
        self.assertEqual(end["available"], 2500000000 - cost(SONNET, 12, 7))

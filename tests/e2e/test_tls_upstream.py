"""Issue 17: the upstream behind TLS and offering HTTP/2, as Pinata's is.

A real nginx (Debian's) terminates TLS in front of the mock, with a
self-signed certificate made here (openssl) that pinmeter trusts through
upstream.ca_file; its access log says which protocol and which connection
carried each request. Metering is exact over h2 (plain and streaming), a
burst of streams shares at most upstream.h2_connections connections (libcurl
multiplexes; nginx's own proxy_pass would open one a stream), and an
upstream whose certificate is not trusted is a 502 that charges nothing and
never reaches the mock.
"""
import os
import shutil
import ssl
import subprocess
import time
import unittest

import harness
from harness import Team, SONNET, at_once, chat_body, cost, free_port, _stop_pid
from invariants import FaultTest

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench",
                        "nginx-tls-front.conf.in")
USAGE = {"prompt_tokens": 1234, "completion_tokens": 567, "cached_tokens": 200}


class TlsFront:
    """nginx with TLS (h2 offered) in front of the mock; .url, .ca_file, .log()."""

    def __init__(self, tmp, mock_port):
        for tool in ("nginx", "openssl"):
            if not shutil.which(tool):
                raise AssertionError(f"{tool} is not installed (make test-deps installs it)")
        self.dir = os.path.join(tmp, "tls-front")
        os.makedirs(self.dir)
        self.ca_file = os.path.join(self.dir, "cert.pem")
        key = os.path.join(self.dir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-keyout", key, "-out", self.ca_file],
                       check=True, capture_output=True, timeout=30)
        self.port = free_port()
        self.access = os.path.join(self.dir, "access.log")
        subst = {"@USER_LINE@": "user root;" if os.geteuid() == 0 else "",
                 "@NOFILE@": "4096", "@WORKER_CONNECTIONS@": "2048",
                 "@MOCK_PORT@": str(mock_port), "@TLS_PORT@": str(self.port),
                 "@PLAIN_PORT@": str(free_port()), "@DIR@": self.dir,
                 "@CERT@": self.ca_file, "@KEY@": key,
                 "@ACCESS_LOG@": "log_format pm '$server_protocol $connection $status "
                                 "$request_uri'; access_log %s pm;" % self.access}
        with open(TEMPLATE) as f:
            text = f.read()
        for k, v in subst.items():
            text = text.replace(k, v)
        for sub in ("client_body", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp"):
            os.makedirs(os.path.join(self.dir, sub))
        conf = os.path.join(self.dir, "front.conf")
        with open(conf, "w") as f:
            f.write(text)
        self.err = open(os.path.join(self.dir, "stderr.log"), "wb")
        self.proc = subprocess.Popen([shutil.which("nginx"), "-p", self.dir, "-c", conf, "-e",
                                      os.path.join(self.dir, "front-error.log")],
                                     stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err)
        self.url = "https://127.0.0.1:%d" % self.port
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        deadline = time.time() + 10
        while True:
            try:
                with ctx.wrap_socket(__import__("socket").create_connection(
                        ("127.0.0.1", self.port), timeout=1), server_hostname="127.0.0.1") as s:
                    self.alpn = s.selected_alpn_protocol()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise AssertionError("the TLS front (nginx) did not start")
                time.sleep(0.05)

    def log(self):
        """[(protocol, connection, status, uri)] of the chat requests, in order."""
        out = []
        if os.path.exists(self.access):
            with open(self.access) as f:
                for line in f:
                    p = line.split()
                    if len(p) == 4 and p[3].startswith("/v0/llm/chat"):
                        out.append((p[0], int(p[1]), int(p[2]), p[3]))
        return out

    def stop(self):
        _stop_pid(self.proc)
        self.err.close()


def stream_once(pm, key, body):
    s = pm.stream(body, key=key, timeout=30)
    try:
        return s.status, s.headers, s.read_all()
    finally:
        s.close()


class TlsUpstreamTest(FaultTest):
    @classmethod
    def setup_proxies(cls):
        cls.front = TlsFront(cls.tmp, cls.mock.port)
        cls.team = Team("tls", 1000.0)
        cls.pm = cls.add_proxy([cls.team], upstream=cls.front.url,
                               overrides={"upstream": {"ca_file": cls.front.ca_file}})
        cls.team2 = Team("tls2", 1000.0)
        cls.pm2 = cls.add_proxy([cls.team2], upstream=cls.front.url,
                                overrides={"upstream": {"ca_file": cls.front.ca_file,
                                                        "h2_connections": 2}})
        cls.team3 = Team("untrusted", 1000.0)
        cls.pm3 = cls.add_proxy([cls.team3], upstream=cls.front.url)   # the system's CAs

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "front", None):
            cls.front.stop()
        super().tearDownClass()

    def test_metered_exactly_over_h2(self):
        self.assertEqual(self.front.alpn, "h2")
        before = len(self.front.log())
        r = self.pm.chat(chat_body(SONNET, mock={"usage": USAGE}), key=self.team.key)
        self.assertEqual(r.status, 200, r)
        want = cost(SONNET, 1234, 567, 200)
        self.assertEqual(harness.to_nanos(r.header("x-pinmeter-cost")), want)
        st, hdrs, events = stream_once(self.pm, self.team.key,
                                       chat_body(SONNET, stream=True, mock={"usage": USAGE,
                                                                            "chunks": 5}))
        self.assertEqual(st, 200)
        self.assertEqual(events[-1], "[DONE]")
        rows = self.pm.wait_rows(lambda rs: len(rs) >= 2 and all(x["state"] == "settled"
                                                                 for x in rs[-2:]),
                                 where="team = 'tls'")
        self.assertEqual([(x["state"], x["charged_nanos"], x["stream"]) for x in rows[-2:]],
                         [("settled", want, 0), ("settled", want, 1)])
        seen = self.front.log()[before:]
        self.assertEqual([(p, s) for p, _, s, _ in seen], [("HTTP/2.0", 200)] * 2, seen)
        self.check([self.pm])

    def test_a_burst_of_streams_shares_at_most_10_connections(self):
        self.mock.reset()
        before = len(self.front.log())
        n = 200
        body = chat_body(SONNET, stream=True, max_tokens=50,
                         mock={"usage": USAGE, "chunks": 4, "chunk_delay_ms": 250})
        rs = at_once(lambda: stream_once(self.pm, self.team.key, body), n)
        self.assertEqual(sorted(st for st, _, _ in rs), [200] * n)
        self.assertTrue(all(ev and ev[-1] == "[DONE]" for _, _, ev in rs))
        self.assertGreaterEqual(self.mock.stats()["chat_max_active"], n // 2,
                                "the streams overlapped at the upstream")
        seen = self.front.log()[before:]
        self.assertEqual(len(seen), n)
        self.assertEqual({p for p, _, _, _ in seen}, {"HTTP/2.0"})
        conns = {c for _, c, _, _ in seen}
        self.assertLessEqual(len(conns), 10, "upstream connections for %d streams" % n)
        rows = self.pm.wait_rows(lambda rs: sum(x["state"] == "settled" for x in rs) >= n + 2,
                                 where="team = 'tls'", timeout=10)
        want = cost(SONNET, 1234, 567, 200)
        self.assertEqual(sorted(x["charged_nanos"] for x in rows[-n:]), [want] * n)
        self.assertEqual(self.pm.wait_idle(self.team.key)["loaned"], 0)

    def test_h2_connections_bounds_the_connections(self):
        before = len(self.front.log())
        body = chat_body(SONNET, max_tokens=50, mock={"usage": USAGE, "delay_ms": 300})
        rs = at_once(lambda: self.pm2.chat(body, key=self.team2.key, timeout=30), 40)
        self.assertEqual(sorted(r.status for r in rs), [200] * 40)
        seen = self.front.log()[before:]
        self.assertEqual(len(seen), 40)
        self.assertLessEqual(len({c for _, c, _, _ in seen}), 2)
        rows = self.pm2.wait_rows(lambda rs: len(rs) == 40 and all(x["state"] == "settled"
                                                                  for x in rs))
        self.assertEqual([x["charged_nanos"] for x in rows], [cost(SONNET, 1234, 567, 200)] * 40)

    def test_an_untrusted_certificate_is_a_502_that_charges_nothing(self):
        before = self.pm3.balance(self.team3.key)
        n_log = len(self.front.log())
        r = self.pm3.chat(chat_body(SONNET, mock={"usage": USAGE}), key=self.team3.key)
        self.assertJSONError(r, 502, "upstream_unreachable")
        row = self.row_of(self.pm3, r)
        self.assertEqual((row["state"], row["charged_nanos"], row["status"]), ("failed", 0, 502))
        self.assertEqual(self.pm3.wait_idle(self.team3.key), before)
        self.assertEqual(len(self.front.log()), n_log, "a request reached the upstream")
        logs = self.pm3.logs_text()
        self.assertIn("TLS failed", logs)
        self.assertNotIn(self.team3.key, logs)


if __name__ == "__main__":
    unittest.main()

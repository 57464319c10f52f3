"""A real redis-server on a loopback port for the shared-budget tests.

Started by the tests (never a system instance), with no persistence unless
asked, stopped by its PID. Tests talk to it with redis-cli (Debian's
redis-tools), so no Python client library is needed.
"""
import os
import shutil
import subprocess
import time
import unittest

from harness import free_port, _stop_pid, _kill_pid


def have_redis():
    return shutil.which("redis-server") and shutil.which("redis-cli")


class Redis:
    def __init__(self, tmpdir, port=None, persist=False, password=None):
        if not have_redis():
            raise unittest.SkipTest("redis-server / redis-cli not installed")
        self.port = port or free_port()
        self.dir = os.path.join(tmpdir, "redis-%d" % self.port)
        os.makedirs(self.dir, exist_ok=True)
        self.persist = persist
        self.password = password
        self.proc = None
        self.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--protected-mode", "yes",
                "--daemonize", "no", "--loglevel", "warning"]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persist \
            else ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if self.cli("PING") == "PONG":
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited at start")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING")

    def stop(self):
        _stop_pid(self.proc)

    def kill9(self):
        _kill_pid(self.proc)

    def restart(self):
        self.stop()
        self.start()

    def cli(self, *args):
        env = dict(os.environ)
        if self.password:
            env["REDISCLI_AUTH"] = self.password
        p = subprocess.run(["redis-cli", "-p", str(self.port), "--raw"]
                           + [str(a) for a in args], capture_output=True, text=True, timeout=10,
                           env=env)
        if p.returncode != 0:
            raise OSError("redis-cli %s: %s" % (args[:1], p.stderr.strip()))
        return p.stdout.rstrip("\n")

    def get_int(self, key):
        v = self.cli("GET", key)
        return int(v) if v else 0

    def keys(self, pattern="*"):
        out = self.cli("KEYS", pattern)
        return sorted(out.split("\n")) if out else []


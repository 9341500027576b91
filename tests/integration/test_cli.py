"""Spec 7: the command line (version, run, check, config, serve's config validation and .env)."""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from .harness import BIN, FIXTURES, FIXTURES_BAD, SLOW, Server, base_env, copy_fixtures, free_port, require_binary


class CliTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_binary()
        cls.tmp = Path(tempfile.mkdtemp(prefix="luagent-cli-"))
        cls.cwd = cls.tmp / "cwd"
        cls.agents = cls.tmp / "agents"
        cls.cwd.mkdir()
        cls.agents.mkdir()
        copy_fixtures(["echo", "hello", "fails", "team.review"], cls.agents)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_cli(self, *args, env=None, timeout=15):
        e = {"LUAGENT_AGENTS_DIR": str(self.agents), "LUAGENT_PROVIDERS_DIR": str(self.tmp / "providers"),
             "LUAGENT_LOG_LEVEL": "warn"}
        e.update(env or {})
        try:
            return subprocess.run([str(BIN), *args], cwd=self.cwd, env=base_env(e), stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout * SLOW)
        except subprocess.TimeoutExpired as ex:
            self.fail(f"`luagent {' '.join(args)}` did not finish in {timeout * SLOW:.0f}s; "
                      f"stderr: {ex.stderr!r}")

    @staticmethod
    def show(p):
        return f"exit {p.returncode}\nstdout: {p.stdout.decode(errors='replace')[-2000:]}\n" \
               f"stderr: {p.stderr.decode(errors='replace')[-2000:]}"

    def test_version(self):
        p = self.run_cli("version")
        self.assertEqual(0, p.returncode, self.show(p))
        out = p.stdout.decode()
        self.assertTrue(any("luagent" in l and re.search(r"\d+\.\d+", l) for l in out.splitlines()),
                        self.show(p))

    def test_run_prints_result(self):
        p = self.run_cli("run", "echo", "--task", '{"a":[1,{}]}')
        self.assertEqual(0, p.returncode, self.show(p))
        out = p.stdout.decode().strip()
        try:
            value = json.loads(out)
        except ValueError:
            self.fail("stdout is not the result JSON alone\n" + self.show(p))
        self.assertEqual({"a": [1, {}]}, value, self.show(p))

    def test_run_subfolder_agent(self):
        p = self.run_cli("run", "team.review", "--task", '{}')
        self.assertEqual(0, p.returncode, self.show(p))
        self.assertEqual({"reviewed": True, "agent": "team.review"}, json.loads(p.stdout.decode()), self.show(p))

    def test_run_unknown_agent_fails(self):
        p = self.run_cli("run", "nosuch", "--task", "{}")
        self.assertNotEqual(0, p.returncode, self.show(p))

    def test_run_agent_error_fails(self):
        p = self.run_cli("run", "fails", "--task", "{}")
        self.assertNotEqual(0, p.returncode, self.show(p))
        self.assertIn("boom", (p.stdout + p.stderr).decode(errors="replace"), self.show(p))

    def test_check_good_dir(self):
        p = self.run_cli("check", str(self.agents))
        self.assertEqual(0, p.returncode, self.show(p))

    def test_check_bad_dir(self):
        bad = self.tmp / "bad"
        shutil.copytree(FIXTURES_BAD, bad)
        p = self.run_cli("check", str(bad))
        self.assertNotEqual(0, p.returncode, self.show(p))
        self.assertIn("broken", (p.stdout + p.stderr).decode(errors="replace"), self.show(p))

    def config_lines(self, env):
        p = self.run_cli("config", env=env)
        self.assertEqual(0, p.returncode, self.show(p))
        out = p.stdout.decode()
        lines = [l for l in out.splitlines() if l.strip() and not l.startswith("#")]
        for l in lines:
            self.assertRegex(l, r"^[A-Z][A-Z0-9_]*=", f"not a NAME=value line: {l!r}")
        return out, dict(l.split("=", 1) for l in lines)

    def test_config_prints_settings(self):
        out, cfg = self.config_lines({"LUAGENT_LISTEN": "127.0.0.1:12345", "LUAGENT_WORKERS": "3"})
        self.assertEqual("127.0.0.1:12345", cfg.get("LUAGENT_LISTEN"), out)
        self.assertEqual("3", cfg.get("LUAGENT_WORKERS"), out)
        self.assertIn("LUAGENT_AGENTS_DIR", cfg, out)

    def test_config_default_listen(self):
        out, cfg = self.config_lines({})
        self.assertIn("LUAGENT_LISTEN", cfg, out)
        self.assertEqual("0.0.0.0:8000", cfg["LUAGENT_LISTEN"], out)

    def test_config_redacts_secrets(self):
        out, cfg = self.config_lines({"OPENAI_API_KEY": "sk-secret-123",
                                      "DATABASE_URL": "postgres://u:hunter2pw@h/db"})
        self.assertEqual("***", cfg.get("OPENAI_API_KEY"), out)
        self.assertEqual("postgres://u:***@h/db", cfg.get("DATABASE_URL"), out)
        self.assertNotIn("sk-secret-123", out)
        self.assertNotIn("hunter2pw", out)

    def test_serve_rejects_bad_workers(self):
        port = free_port()
        t0 = time.monotonic()
        p = self.run_cli("serve", env={"LUAGENT_WORKERS": "abc", "LUAGENT_LISTEN": f"127.0.0.1:{port}",
                                       "LUAGENT_AUTH": "off"}, timeout=5)
        took = time.monotonic() - t0
        self.assertNotEqual(0, p.returncode, self.show(p))
        self.assertIn("LUAGENT_WORKERS", p.stderr.decode(errors="replace"), self.show(p))
        self.assertLess(took, 5 * SLOW)


def can_connect(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class DotenvTests(unittest.TestCase):
    def start(self, **kw):
        srv = Server(fixtures=["echo"], **kw)
        self.addCleanup(srv.cleanup)
        srv.start()
        return srv

    def test_dotenv_is_read(self):
        port = free_port()
        srv = self.start(listen=False, port=port, env={"LUAGENT_WORKERS": None},
                         dotenv=f"# written by the test\nLUAGENT_LISTEN=127.0.0.1:{port}\nLUAGENT_WORKERS=3\n")
        r = srv.request("GET", "/info")
        self.assertEqual(200, r.status, r.describe())
        self.assertEqual(3, r.body.get("workers"), "LUAGENT_WORKERS from .env not used")
        self.assertEqual(0, srv.stop())

    def test_environment_wins_over_dotenv(self):
        dot_port, env_port = free_port(), free_port()
        while env_port == dot_port:
            env_port = free_port()
        srv = self.start(listen=False, port=env_port,
                         env={"LUAGENT_LISTEN": f"127.0.0.1:{env_port}", "LUAGENT_WORKERS": "2"},
                         dotenv=f"LUAGENT_LISTEN=127.0.0.1:{dot_port}\nLUAGENT_WORKERS=4\n")
        self.assertEqual(200, srv.request("GET", "/health").status)
        self.assertFalse(can_connect(dot_port), "server also listens on the .env port")
        self.assertEqual(2, srv.request("GET", "/info").body.get("workers"))
        self.assertEqual(0, srv.stop())

"""Lifecycle: SIGHUP reloads the settings (.env, environment), the JWT keys, the log file and every
script, keeps what only a restart changes, and keeps the old settings when the new ones are bad;
SIGTERM turns /ready 503 (with LUAGENT_DRAIN_DELAY_MS the listeners still accept that long), stops
accepting, lets in-flight executions finish and writes the execution log before exit."""

import os
import signal
import socket
import threading
import time
import unittest

from .harness import REPO, SLOW, Server
from .services import shared_postgres
from .test_auth import hs256

NAP = r'''
return {
  execute = function(task, ctx)
    luagent.log.info("nap-started", {ms = task.ms})
    luagent.sleep(task.ms or 0)
    return "rested"
  end,
}
'''

MODEL = r'''
return {
  execute = function(task, ctx)
    local r = luagent.ai.chat{messages = {{role = "user", content = "hi"}}}
    return {model = r.model, provider = r.provider}
  end,
}
'''

VERSION_A = 'return { execute = function(task, ctx) return "A" end }\n'
VERSION_B = 'return { execute = function(task, ctx) return "B" end }\n'

# the harness sets these in the environment, where they would win over the .env the tests rewrite
FROM_DOTENV = {"LUAGENT_LOG_LEVEL": None, "LUAGENT_AUTH": None}


class ReloadTests(unittest.TestCase):
    def server(self, dotenv, agents=None, env=None):
        srv = Server(agents=agents or {"nap": NAP}, env={**FROM_DOTENV, **(env or {})}, dotenv=dotenv)
        self.addCleanup(srv.cleanup)
        srv.start()
        return srv

    def hup(self, srv, dotenv=None):
        if dotenv is not None:
            (srv.cwd / ".env").write_text(dotenv)
        seen = len(srv.find_logs(lambda l: "SIGHUP" in str(l.get("msg"))))
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5 * SLOW
        while time.monotonic() < deadline:
            if len(srv.find_logs(lambda l: "SIGHUP" in str(l.get("msg")))) > seen:
                time.sleep(0.05)  # the workers take the new settings on their next turn (woken)
                return
            time.sleep(0.02)
        self.fail("no reload logged after SIGHUP\n" + srv.log_tail())

    def info(self, srv):
        r = srv.request("GET", "/info")
        self.assertEqual(200, r.status, r.describe())
        return r.body

    def test_settings_reload_without_restart(self):
        srv = self.server("LUAGENT_AUTH=off\nLUAGENT_LOG_LEVEL=warn\nLUAGENT_EXEC_TIMEOUT_MS=5000\n")
        pid = srv.proc.pid
        r = srv.execute("nap", {"ms": 300})
        self.assertEqual(200, r.status, r.describe())
        self.assertFalse(srv.find_logs(lambda l: l.get("msg") == "nap-started"), "info line at level warn")
        self.assertEqual(0, self.info(srv)["settings_generation"])

        self.hup(srv, "LUAGENT_AUTH=off\nLUAGENT_LOG_LEVEL=debug\nLUAGENT_EXEC_TIMEOUT_MS=100\n")
        r = srv.execute("nap", {"ms": 300})
        self.assertEqual(504, r.status, r.describe())
        self.assertEqual("timeout", r.body["error"]["code"])
        self.assertTrue(srv.find_logs(lambda l: l.get("msg") == "nap-started"), "level debug not applied")
        info = self.info(srv)
        self.assertEqual(1, info["settings_generation"])
        self.assertEqual(pid, info["pid"])

        # auth turned on by a reload: the same request now needs a credential
        self.hup(srv, "LUAGENT_AUTH=required\nLUAGENT_EXEC_TIMEOUT_MS=5000\n")
        r = srv.execute("nap", {"ms": 1})
        self.assertEqual(401, r.status, r.describe())
        self.assertEqual(2, self.info(srv)["settings_generation"])

    def test_default_model_reload_reaches_the_ai_layer(self):
        srv = self.server("LUAGENT_AUTH=off\nLUAGENT_DEFAULT_MODEL=mock/alpha\n", agents={"model": MODEL},
                          env={"LUAGENT_PROVIDERS_DIR": str(REPO / "providers")})
        for _ in range(3):  # every worker has routed (and cached) the old name
            r = srv.execute("model", {})
            self.assertEqual(200, r.status, r.describe())
            self.assertEqual({"model": "alpha", "provider": "mock"}, r.body["result"])
        self.hup(srv, "LUAGENT_AUTH=off\nLUAGENT_DEFAULT_MODEL=mock/beta\n")
        for _ in range(4):
            r = srv.execute("model", {})
            self.assertEqual({"model": "beta", "provider": "mock"}, r.body["result"], r.describe())

    def test_bad_settings_keep_the_old_ones(self):
        srv = self.server("LUAGENT_AUTH=off\nLUAGENT_EXEC_TIMEOUT_MS=5000\n")
        self.hup(srv, "LUAGENT_AUTH=off\nLUAGENT_EXEC_TIMEOUT_MS=soon\n")
        err = srv.find_logs(lambda l: "settings not reloaded" in str(l.get("msg")))
        self.assertTrue(err, srv.log_tail())
        self.assertIn("LUAGENT_EXEC_TIMEOUT_MS", err[-1]["msg"])
        self.assertEqual(0, self.info(srv)["settings_generation"])
        r = srv.execute("nap", {"ms": 300})
        self.assertEqual(200, r.status, r.describe())

    def test_restart_only_settings_keep_their_value(self):
        srv = self.server("LUAGENT_AUTH=off\nLUAGENT_WORKERS=2\n", env={"LUAGENT_WORKERS": None})
        self.hup(srv, "LUAGENT_AUTH=off\nLUAGENT_WORKERS=5\nLUAGENT_HISTORY_SIZE=7\n")
        warn = srv.find_logs(lambda l: "takes a restart" in str(l.get("msg")))
        self.assertTrue(warn, srv.log_tail())
        self.assertIn("LUAGENT_WORKERS", warn[-1]["msg"])
        self.assertIn("LUAGENT_HISTORY_SIZE", warn[-1]["msg"])
        info = self.info(srv)
        self.assertEqual(2, info["workers"])
        self.assertEqual(1, info["settings_generation"])

    def test_scripts_reload_on_sighup_when_not_watched(self):
        srv = self.server("LUAGENT_AUTH=off\nLUAGENT_WATCH=off\n", agents={"ab": VERSION_A})
        self.assertEqual("A", srv.execute("ab", {}).body["result"])
        srv.write_agent("ab", VERSION_B)
        srv.write_agent("fresh", VERSION_B)
        time.sleep(0.5)
        self.assertEqual("A", srv.execute("ab", {}).body["result"], "LUAGENT_WATCH=off still reloaded")
        self.assertEqual(404, srv.execute("fresh", {}).status)
        self.hup(srv)
        self.assertEqual("B", srv.execute("ab", {}).body["result"])
        self.assertEqual("B", srv.execute("fresh", {}).body["result"])
        names = {a["name"] for a in self.info(srv)["agent_versions"]}
        self.assertEqual({"ab", "fresh"}, names)

    def test_jwt_secret_rotates_on_sighup(self):
        old, new = "o" * 40, "n" * 40
        srv = self.server(f"LUAGENT_AUTH=required\nLUAGENT_JWT_SECRET={old}\n")
        claims = {"sub": "u1", "role": "operator", "exp": int(time.time()) + 300}
        tok_old, tok_new = hs256(old, claims), hs256(new, claims)
        auth = lambda t: {"Authorization": f"Bearer {t}"}
        self.assertEqual(200, srv.execute("nap", {"ms": 1}, headers=auth(tok_old)).status)
        self.assertEqual(401, srv.execute("nap", {"ms": 1}, headers=auth(tok_new)).status)
        self.hup(srv, f"LUAGENT_AUTH=required\nLUAGENT_JWT_SECRET={new}\n")
        for _ in range(4):  # each worker's verified-token cache forgets the old key
            self.assertEqual(401, srv.execute("nap", {"ms": 1}, headers=auth(tok_old)).status)
            self.assertEqual(200, srv.execute("nap", {"ms": 1}, headers=auth(tok_new)).status)
        self.assertNotIn(new, srv.log_text())

    def test_log_file_reopened_after_rotation(self):
        srv = Server(agents={"nap": NAP}, env=FROM_DOTENV, dotenv="LUAGENT_AUTH=off\n")
        self.addCleanup(srv.cleanup)
        srv.start()
        # the log file lives in the server's cwd (the harness made it): set it by a reload
        path = srv.cwd / "luagent.log"
        self.hup(srv, f"LUAGENT_AUTH=off\nLUAGENT_LOG_FILE={path}\n")
        srv.execute("nap", {"ms": 1, "mark": "first"})
        self.assertTrue(path.exists())
        self.assertIn("nap-started", path.read_text())
        os.rename(path, str(path) + ".1")  # logrotate
        self.hup(srv)
        r = srv.execute("nap", {"ms": 2})
        self.assertEqual(200, r.status)
        time.sleep(0.1)
        self.assertTrue(path.exists(), "the log file was not reopened")
        fresh, rotated = path.read_text(), (srv.cwd / "luagent.log.1").read_text()
        self.assertIn('"ms":2', fresh)
        self.assertNotIn('"ms":2', rotated)


class DrainTests(unittest.TestCase):
    def test_drain_delay_keeps_accepting_while_unready(self):
        srv = Server(agents={"nap": NAP}, env={"LUAGENT_DRAIN_DELAY_MS": str(int(1500 * SLOW))})
        self.addCleanup(srv.cleanup)
        srv.start()
        self.assertEqual(200, srv.request("GET", "/ready").status)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        srv.wait_log(lambda l: "draining" in str(l.get("msg")), timeout=2 * SLOW)
        r = srv.request("GET", "/ready")
        self.assertEqual(503, r.status, r.describe())
        self.assertEqual("unavailable", r.body["error"]["code"])
        self.assertEqual(200, srv.request("GET", "/health").status)
        r = srv.execute("nap", {"ms": 10})  # still served during the delay
        self.assertEqual(200, r.status, r.describe())
        self.assertLess(time.monotonic() - t0, 1.4 * SLOW, "the checks above took longer than the delay")
        code = srv.proc.wait(timeout=15 * SLOW)
        self.assertEqual(0, code, srv.log_tail())
        self.assertGreaterEqual(time.monotonic() - t0, 1.4, "exited before the drain delay")
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()

    def test_sigterm_writes_the_execution_log(self):
        pg = shared_postgres()
        db = pg.new_database("drain")
        import shutil
        import tempfile
        spill = tempfile.mkdtemp(prefix="luagent-spill-")
        self.addCleanup(shutil.rmtree, spill, ignore_errors=True)
        srv = Server(agents={"nap": NAP}, env={"DATABASE_URL": pg.url(db), "LUAGENT_SPILL_DIR": spill})
        self.addCleanup(srv.cleanup)
        srv.start()
        quick = [srv.execute("nap", {"ms": 0}).body["execution_id"] for _ in range(20)]
        box = {}
        th = threading.Thread(target=lambda: box.setdefault("r", srv.execute("nap", {"ms": 600}, timeout=30 * SLOW)))
        th.start()
        srv.wait_log(lambda l: l.get("msg") == "nap-started" and l.get("ms") == 600, timeout=3 * SLOW)
        srv.proc.send_signal(signal.SIGTERM)
        th.join(30 * SLOW)
        r = box.get("r")
        self.assertIsNotNone(r, srv.log_tail())
        self.assertEqual(200, r.status, r.describe())
        self.assertEqual(0, srv.proc.wait(timeout=15 * SLOW), srv.log_tail())
        ids = quick + [r.body["execution_id"]]
        rows = pg.query("select id::text, status from executions", db=db)
        self.assertEqual({(i, "succeeded") for i in ids}, {(a, b) for a, b in rows})
        self.assertEqual([], [f for f in os.listdir(spill) if f.endswith(".ndjson") and
                              os.path.getsize(os.path.join(spill, f)) > 0], "records spilled, not written")


if __name__ == "__main__":
    unittest.main()

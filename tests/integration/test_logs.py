"""Spec 8: JSON log lines, one access line per request, log level filtering, SIGTERM drain."""

import json
import signal
import threading
import time
import unittest
import uuid

from .harness import SLOW, Server, ServerTestCase


class LogTests(ServerTestCase):
    FIXTURES = ("echo",)

    def access_lines(self, rid, timeout=3.0):
        """Wait for the access line of request `rid`; return every line with that request_id and status."""
        self.server.wait_log(lambda l: l.get("request_id") == rid and "status" in l, timeout=timeout)
        time.sleep(0.05)
        return self.server.find_logs(lambda l: l.get("request_id") == rid and "status" in l)

    def test_every_line_is_json(self):
        self.assertOk(self.server.execute("echo", 1))
        self.server.request("GET", "/api/v1/agents")
        self.server.request("GET", "/nope")
        rid = "every-" + uuid.uuid4().hex
        self.server.execute("echo", 2, headers={"X-Request-Id": rid})
        self.access_lines(rid)
        lines = self.server.log_lines()
        self.assertTrue(lines, "no log output at all")
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                self.fail(f"log line is not JSON: {line!r}")
            self.assertIsInstance(obj, dict, line)
            for k in ("ts", "level", "msg"):
                self.assertIn(k, obj, f"log line lacks {k!r}: {line}")

    def test_one_access_line_per_execution(self):
        rid = "acc-" + uuid.uuid4().hex
        r = self.server.execute("echo", {"x": 1}, headers={"X-Request-Id": rid})
        body = self.assertOk(r)
        lines = self.access_lines(rid)
        self.assertEqual(1, len(lines), f"expected one access line for {rid}, got {lines}")
        line = lines[0]
        self.assertEqual(200, line.get("status"), line)
        d = line.get("duration_ms")
        self.assertTrue(isinstance(d, (int, float)) and not isinstance(d, bool) and d >= 0, line)
        self.assertEqual(body["execution_id"], line.get("execution_id"), line)
        self.assertEqual("echo", line.get("agent"), line)
        self.assertEqual(body["version"], line.get("version"), line)

    def test_access_line_for_other_requests(self):
        for method, path, status in (("GET", "/api/v1/agents", 200), ("GET", "/api/v1/nope", 404)):
            with self.subTest(path=path):
                rid = "other-" + uuid.uuid4().hex
                r = self.server.request(method, path, headers={"X-Request-Id": rid})
                self.assertEqual(status, r.status)
                lines = self.access_lines(rid)
                self.assertEqual(1, len(lines), f"expected one access line, got {lines}")
                self.assertEqual(status, lines[0].get("status"))
                self.assertIn("duration_ms", lines[0])

    def test_failed_execution_logged_with_status(self):
        rid = "fail-" + uuid.uuid4().hex
        r = self.server.execute("no_such_agent", 1, headers={"X-Request-Id": rid})
        self.assertEqual(404, r.status)
        lines = self.access_lines(rid)
        self.assertEqual(1, len(lines), lines)
        self.assertEqual(404, lines[0].get("status"))


class WarnLevelTests(ServerTestCase):
    ENV = {"LUAGENT_LOG_LEVEL": "warn"}
    FIXTURES = ("echo",)
    AGENTS = {"chatty": '''
return {
  execute = function(task, ctx)
    luagent.log.info("info-marker-" .. task.id)
    luagent.log.warn("warn-marker-" .. task.id)
    return "ok"
  end,
}
'''}

    def test_warn_hides_info(self):
        tid = uuid.uuid4().hex
        self.assertOk(self.server.execute("chatty", {"id": tid}), "ok")
        for i in range(3):
            self.assertOk(self.server.execute("echo", i))
        line = self.server.wait_log(lambda l: l.get("msg") == f"warn-marker-{tid}", timeout=3)
        self.assertIsNotNone(line, "warn line missing (logging broken?)\n" + self.server.log_tail())
        self.assertIn(line.get("level"), ("warn", "warning"), line)
        time.sleep(0.1)
        logs = self.server.logs()
        self.assertFalse([l for l in logs if l.get("msg") == f"info-marker-{tid}"], "info line shown at warn level")
        low = [l for l in logs if l.get("level") in ("info", "debug", "trace")]
        self.assertEqual([], low[:5], "info/debug lines at LUAGENT_LOG_LEVEL=warn")


class SigtermDrainTests(unittest.TestCase):
    def test_inflight_completes_and_exit_zero(self):
        srv = Server(agents={"nap": '''
return {
  timeout_ms = 30000,
  execute = function(task, ctx)
    luagent.log.info("nap-started")
    luagent.sleep(1000)
    return "rested"
  end,
}
'''}, workers=2)
        self.addCleanup(srv.cleanup)
        srv.start()
        box = {}

        def call():
            try:
                box["r"] = srv.execute("nap", {}, timeout=30 * SLOW)
            except Exception as e:
                box["e"] = e

        th = threading.Thread(target=call)
        t0 = time.monotonic()
        th.start()
        srv.wait_log(lambda l: l.get("msg") == "nap-started", timeout=0.5)
        time.sleep(max(0.0, 0.2 - (time.monotonic() - t0)))
        self.assertTrue(th.is_alive(), "the execution finished before SIGTERM could be sent")
        srv.proc.send_signal(signal.SIGTERM)
        th.join(30 * SLOW)
        self.assertNotIn("e", box, f"in-flight request failed after SIGTERM: {box.get('e')!r}\n{srv.log_tail()}")
        r = box.get("r")
        self.assertIsNotNone(r, "no reply")
        self.assertEqual(200, r.status, r.describe() + "\n" + srv.log_tail())
        self.assertEqual("rested", r.body["result"])
        try:
            code = srv.proc.wait(timeout=10 * SLOW)
        except Exception:
            self.fail("server did not exit after draining\n" + srv.log_tail())
        self.assertEqual(0, code, srv.log_tail())

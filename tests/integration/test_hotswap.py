"""Spec 3: hot swap. Each test uses its own agent names so tests stay independent on one server."""

import json
import re
import threading
import time

from .harness import SLOW, VERSION_RE, ServerTestCase, measure


def returning(value, sleep_ms=0, log=None):
    """Source of an agent that returns `value` (after logging `log` and, when the task has
    sleep = true, sleeping sleep_ms)."""
    body = ""
    if log:
        body += f"    luagent.log.info({json.dumps(log)})\n"
    if sleep_ms:  # only when asked, so polling calls do not block on the old version
        body += f"    if type(task) == \"table\" and task.sleep then luagent.sleep({int(sleep_ms)}) end\n"
    return ("return {\n  description = \"hot swap probe\",\n  timeout_ms = 30000,\n"
            "  execute = function(task, ctx)\n" + body +
            f"    return {json.dumps(value)}\n  end,\n}}\n")


BROKEN = '''-- a typo saved by mistake
return {
  description = "syntax error on line 6",
  execute = function(task)
    return "broken" +
  end,
}
'''


class HotSwapTests(ServerTestCase):
    WORKERS = 2
    AGENTS = {
        "hs_latency_inplace": returning("v1"),
        "hs_latency_rename": returning("v1"),
        "hs_inflight": returning("v1", sleep_ms=int(500 * SLOW), log="hs_inflight started"),
        "hs_load": returning("v0"),
        "hs_syntax": returning("good1"),
        "hs_delete": returning("here"),
    }

    def current(self, name):
        r = self.server.execute(name, {})
        self.assertEqual(200, r.status, self.ctx_msg(r))
        return r.body["result"], r.body["version"]

    def check_swap_latency(self, name, mode):
        v1_result, v1_version = self.current(name)
        self.assertEqual("v1", v1_result)
        self.server.write_agent(name, returning("v2"), mode=mode)
        t0 = time.monotonic()
        r, took, ok = self.poll(lambda: self.server.execute(name, {}),
                                lambda r: r.status == 200 and r.body.get("result") == "v2", timeout=5.0,
                                interval=0.002)
        measure(f"hot swap ({mode}) visible after", f"{took * 1000:.1f} ms")
        self.assertTrue(ok, self.ctx_msg(r, f"v2 never served after {took:.2f}s"))
        self.assertLess(took, 1.0 * SLOW, f"swap took {took * 1000:.0f} ms")
        v2_version = r.body["version"]
        self.assertRegex(v2_version, VERSION_RE)
        self.assertNotEqual(v1_version, v2_version, "version did not change with the content")
        # Shortly afterwards every worker serves v2 (new connections spread over both workers).
        time.sleep(0.1 * SLOW)
        later = [self.current(name) for _ in range(12)]
        self.assertEqual([("v2", v2_version)] * 12, later)
        return took

    def test_swap_in_place(self):
        self.check_swap_latency("hs_latency_inplace", "inplace")

    def test_swap_by_rename(self):
        self.check_swap_latency("hs_latency_rename", "rename")

    def test_inflight_finishes_on_old_version(self):
        name = "hs_inflight"
        box = {}

        def inflight():
            box["reply"] = self.server.execute(name, {"sleep": True}, timeout=30 * SLOW)

        v1_result, v1_version = self.current(name)
        self.assertEqual("v1", v1_result)
        n_started = len(self.server.find_logs(lambda l: l.get("msg") == "hs_inflight started"))
        th = threading.Thread(target=inflight)
        th.start()
        # Wait until the execution is running (its log line), else give it 150 ms.
        self.poll(lambda: len(self.server.find_logs(lambda l: l.get("msg") == "hs_inflight started")),
                  lambda n: n > n_started, timeout=0.3)
        time.sleep(0.05)
        self.server.write_agent(name, returning("v2"), mode="rename")
        r, took, ok = self.poll(lambda: self.server.execute(name, {}),
                                lambda r: r.status == 200 and r.body.get("result") == "v2", timeout=3.0)
        self.assertTrue(ok, self.ctx_msg(r, "v2 never served"))
        still_running = th.is_alive()
        th.join(30 * SLOW)
        self.assertTrue(still_running, "the in-flight execution ended before v2 was live: cannot tell "
                                       f"(swap took {took:.3f}s, v1 sleeps {0.5 * SLOW:.1f}s)")
        old = box.get("reply")
        self.assertIsNotNone(old, "in-flight request got no reply")
        self.assertEqual(200, old.status, self.ctx_msg(old))
        self.assertEqual("v1", old.body["result"], "in-flight execution did not finish on its version")
        self.assertEqual(v1_version, old.body["version"])
        new_result, new_version = self.current(name)
        self.assertEqual("v2", new_result)
        self.assertNotEqual(v1_version, new_version)

    def test_swaps_under_concurrent_load(self):
        name = "hs_load"
        self.server.write_agent(name, returning("v0"))
        self.poll(lambda: self.server.execute(name, {}),
                  lambda r: r.status == 200 and r.body.get("result") == "v0", timeout=3)
        stop = threading.Event()
        lock = threading.Lock()
        results = []   # (status, result, version) or ("exc", repr, None)

        def client():
            while not stop.is_set():
                try:
                    r = self.server.execute(name, {}, timeout=10 * SLOW)
                    item = (r.status, r.body.get("result") if isinstance(r.body, dict) else r.raw,
                            r.body.get("version") if isinstance(r.body, dict) else None)
                except Exception as e:  # connection refused/reset counts as a failure
                    item = ("exc", repr(e), None)
                with lock:
                    results.append(item)
                time.sleep(0.003)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        written = {"v0"}
        try:
            for i in range(1, 21):
                time.sleep(0.1)
                v = f"v{i}"
                self.server.write_agent(name, returning(v), mode="inplace" if i % 2 else "rename")
                written.add(v)
            time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join(30 * SLOW)
        bad = [x for x in results if x[0] != 200]
        measure("requests during 20 swaps", f"{len(results)} ({len(bad)} not 200)")
        self.assertGreater(len(results), 40, "too few requests completed under load")
        self.assertEqual([], bad[:10], f"{len(bad)} non-200 replies under swap load\n{self.server.log_tail(20)}")
        unknown = {x[1] for x in results if x[1] not in written}
        self.assertEqual(set(), unknown, "results that are none of the versions written")
        seen = {x[1] for x in results}
        self.assertGreater(len(seen), 3, f"swaps were not picked up under load (saw {sorted(seen)})")
        by_result = {}
        for _, res, ver in results:
            by_result.setdefault(res, set()).add(ver)
        mixed = {k: v for k, v in by_result.items() if len(v) != 1}
        self.assertEqual({}, mixed, "one code version reported under several version hashes")
        versions = [next(iter(v)) for v in by_result.values()]
        self.assertEqual(len(versions), len(set(versions)), "two different files reported the same version")
        r, _, ok = self.poll(lambda: self.server.execute(name, {}),
                             lambda r: r.status == 200 and r.body.get("result") == "v20", timeout=2)
        self.assertTrue(ok, self.ctx_msg(r, "last version written is not the one served"))

    def agent_info(self, name):
        r = self.server.request("GET", f"/api/v1/agents/{name}")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        return r.body

    def test_syntax_error_keeps_old_version(self):
        name = "hs_syntax"
        self.server.write_agent(name, returning("good1"))
        self.poll(lambda: self.server.execute(name, {}),
                  lambda r: r.status == 200 and r.body.get("result") == "good1", timeout=3)
        good_result, good_version = self.current(name)
        self.assertEqual("good1", good_result)
        self.server.write_agent(name, BROKEN)
        # (a resync that reads the file between the editor's truncation and its write reports the
        # empty file first: wait for the error about the saved text)
        info, took, ok = self.poll(lambda: self.agent_info(name),
                                   lambda a: re.search(r"(?<!\d)6(?!\d)", a.get("error") or "") is not None,
                                   timeout=3, interval=0.01)
        self.assertTrue(ok, f"no load error reported after saving a syntax error: {info}")
        err = info["error"]
        self.assertIsInstance(err, str)
        self.assertRegex(err, r"(?<!\d)6(?!\d)", f"error does not mention line 6: {err!r}")
        # The old version keeps serving.
        for _ in range(6):
            self.assertEqual(("good1", good_version), self.current(name))
        # The log has an error line naming the agent.
        line = self.server.wait_log(lambda l: l.get("level") == "error" and name in json.dumps(l), timeout=2)
        self.assertIsNotNone(line, f"no level=error log line naming {name}\n{self.server.log_tail(20)}")
        # Fixing the file clears the error and serves the fix.
        self.server.write_agent(name, returning("good2"), mode="rename")
        r, _, ok = self.poll(lambda: self.server.execute(name, {}),
                             lambda r: r.status == 200 and r.body.get("result") == "good2", timeout=3)
        self.assertTrue(ok, self.ctx_msg(r, "fixed file not served"))
        info, _, ok = self.poll(lambda: self.agent_info(name), lambda a: a.get("error") is None, timeout=3)
        self.assertTrue(ok, f"error not cleared after the fix: {info}")
        self.assertIn("error", info)

    def test_delete_unregisters(self):
        name = "hs_delete"
        self.server.write_agent(name, returning("here"))
        r, _, ok = self.poll(lambda: self.server.execute(name, {}),
                             lambda r: r.status == 200 and r.body.get("result") == "here", timeout=3)
        self.assertTrue(ok, self.ctx_msg(r))
        self.server.delete_agent(name)
        r, took, ok = self.poll(lambda: self.server.execute(name, {}), lambda r: r.status == 404, timeout=3)
        self.assertTrue(ok, self.ctx_msg(r, "deleted agent still executes"))
        self.assertError(r, 404, "not_found")
        lst = self.server.request("GET", "/api/v1/agents")
        self.assertEqual(200, lst.status)
        self.assertNotIn(name, [i.get("name") for i in lst.body["items"]])
        self.assertError(self.server.request("GET", f"/api/v1/agents/{name}"), 404, "not_found")
        # and it can come back
        self.server.write_agent(name, returning("back"))
        r, _, ok = self.poll(lambda: self.server.execute(name, {}),
                             lambda r: r.status == 200 and r.body.get("result") == "back", timeout=3)
        self.assertTrue(ok, self.ctx_msg(r, "recreated agent not served"))

    def test_new_file_appears(self):
        name = "hs_created"
        self.assertError(self.server.execute(name, {}), 404, "not_found")
        self.server.write_agent(name, returning("new"))
        r, took, ok = self.poll(lambda: self.server.execute(name, {}), lambda r: r.status == 200, timeout=3)
        self.assertTrue(ok, self.ctx_msg(r, "new agent never appeared"))
        self.assertEqual("new", r.body["result"])
        names = [i.get("name") for i in self.server.request("GET", "/api/v1/agents").body["items"]]
        self.assertIn(name, names)

    def test_new_file_in_new_subfolder(self):
        name = "team.review"
        self.assertFalse(self.server.agent_file(name).parent.exists())
        self.server.write_agent(name, returning("reviewed"))  # creates team/ then team/review.lua
        r, took, ok = self.poll(lambda: self.server.execute(name, {}), lambda r: r.status == 200, timeout=3)
        self.assertTrue(ok, self.ctx_msg(r, "agent in a new subfolder never appeared"))
        self.assertEqual("reviewed", r.body["result"])
        self.assertEqual("team.review", r.body["agent"])
        names = [i.get("name") for i in self.server.request("GET", "/api/v1/agents").body["items"]]
        self.assertIn("team.review", names)
        # a second file in the now-watched folder
        self.server.write_agent("team.second", returning("second"), mode="rename")
        r, _, ok = self.poll(lambda: self.server.execute("team.second", {}), lambda r: r.status == 200,
                             timeout=3)
        self.assertTrue(ok, self.ctx_msg(r))
        self.assertEqual("second", r.body["result"])

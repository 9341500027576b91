"""Spec 9: the `luagent` API and the `ctx` table inside agents."""

import hashlib
import hmac
import json
import re
import threading
import time
import uuid

from .harness import SLOW, UUID4_RE, ServerTestCase, measure

CTX_AGENT = '''
return {
  description = "dumps its ctx",
  timeout_ms = 5000,
  config = {model = "m1", retries = 3, tags = {"a", "b"}, nested = {deep = true}},
  execute = function(task, ctx)
    return {
      execution_id = ctx.execution_id,
      request_id = ctx.request_id,
      agent = ctx.agent,
      version = ctx.version,
      user = ctx.user,
      config = ctx.config,
      deadline_ms = ctx.deadline_ms,
      stream = ctx.stream,
      context = ctx.context,
    }
  end,
}
'''


class LuaApiTests(ServerTestCase):
    WORKERS = 2
    FIXTURES = ("sleepy",)
    AGENTS = {
        "team.ctxdump": CTX_AGENT,
        "logger": '''
return {
  execute = function(task, ctx)
    luagent.log.info(task.marker, {k = "v", n = 7})
    ctx.log.info(task.marker .. "-ctx")
    return "logged"
  end,
}
''',
        "jsonapi": '''
return {
  execute = function(task, ctx)
    local J = luagent.json
    local s = J.encode(task)
    local back = J.decode(s)
    local arr = J.decode("[]")
    local obj = J.decode("{}")
    return {
      s = s,
      back = back,
      reencoded = J.encode(back),
      null_exists = J.null ~= nil,
      decoded_null_is_null = J.decode("[null]")[1] == J.null,
      null_in_object = J.encode({a = J.null}),
      empty_array = J.encode(arr),
      empty_object = J.encode(obj),
      nested = J.encode(J.decode('{"x":[[],{}],"y":null}')),
      bad_decode_raises = not pcall(J.decode, "{bad"),
      function_raises = not pcall(J.encode, {f = function() end}),
    }
  end,
}
''',
        "ids": '''
return {
  execute = function(task, ctx)
    return {a = luagent.uuid(), b = luagent.uuid()}
  end,
}
''',
        "clock": '''
return {
  execute = function(task, ctx)
    local t1 = luagent.now()
    luagent.sleep(50)
    local t2 = luagent.now()
    return {t1 = t1, t2 = t2, kind = type(t1)}
  end,
}
''',
        "hashes": '''
return {
  execute = function(task, ctx)
    local c = luagent.crypto
    return {
      abc = c.sha256("abc"),
      empty = c.sha256(""),
      text = c.sha256(task.text),
      mac = c.hmac("key", "msg"),
      mac_task = c.hmac(task.key, task.text),
    }
  end,
}
''',
    }

    # ---- sleep ------------------------------------------------------------------------------
    def test_sleeps_overlap(self):
        n = 20
        replies = [None] * n

        def call(i):
            replies[i] = self.server.execute("sleepy", {"ms": 500, "id": i}, timeout=60 * SLOW)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60 * SLOW)
        wall = time.monotonic() - t0
        measure(f"{n} concurrent sleep(500) on 2 workers", f"{wall:.2f} s (sequential: {n * 0.5 / 2:.1f} s)")
        for i, r in enumerate(replies):
            self.assertIsNotNone(r, f"request {i} got no reply")
            self.assertOk(r, {"slept": 500, "id": i})
        self.assertGreaterEqual(wall, 0.45, "sleep(500) returned early")
        self.assertLess(wall, 0.5 + 1.0 * SLOW, "sleeps did not overlap")

    def test_sleep_duration(self):
        r = self.server.execute("sleepy", {"ms": 300, "id": 1})
        self.assertOk(r, {"slept": 300, "id": 1})
        self.assertGreaterEqual(r.elapsed, 0.28)
        self.assertGreaterEqual(r.body["duration_ms"], 280)

    # ---- log ----------------------------------------------------------------------------------
    def test_log_info_with_fields(self):
        marker = "marker-" + uuid.uuid4().hex
        r = self.server.execute("logger", {"marker": marker})
        self.assertOk(r, "logged")
        line = self.server.wait_log(lambda l: l.get("msg") == marker, timeout=3)
        self.assertIsNotNone(line, f"no log line with msg {marker}\n{self.server.log_tail(20)}")
        self.assertEqual("v", line.get("k"), line)
        self.assertEqual(7, line.get("n"), line)
        self.assertEqual("info", line.get("level"), line)
        self.assertIn("ts", line)

    def test_ctx_log_carries_execution(self):
        marker = "marker-" + uuid.uuid4().hex
        body = self.assertOk(self.server.execute("logger", {"marker": marker}), "logged")
        line = self.server.wait_log(lambda l: l.get("msg") == marker + "-ctx", timeout=3)
        self.assertIsNotNone(line, f"no ctx.log line\n{self.server.log_tail(20)}")
        self.assertEqual(body["execution_id"], line.get("execution_id"), line)
        self.assertEqual("logger", line.get("agent"), line)
        self.assertEqual("info", line.get("level"), line)

    # ---- json ---------------------------------------------------------------------------------
    def test_json_roundtrip(self):
        task = {"a": [1, 2, {}], "b": {"c": []}, "d": "x/y", "n": None, "big": 9007199254740992,
                "f": 0.1, "u": "é😀"}
        r = self.server.execute("jsonapi", task)
        res = self.assertOk(r)["result"]
        self.assertEqual(task, json.loads(res["s"]), res["s"])
        self.assertIn("9007199254740992", res["s"])
        self.assertNotIn("\\/", res["s"])
        self.assertEqual(task, res["back"])
        self.assertEqual(task, json.loads(res["reencoded"]))
        self.assertIs(True, res["null_exists"])
        self.assertIs(True, res["decoded_null_is_null"])
        self.assertEqual({"a": None}, json.loads(res["null_in_object"]))
        self.assertEqual([], json.loads(res["empty_array"]))
        self.assertEqual({}, json.loads(res["empty_object"]))
        self.assertEqual({"x": [[], {}], "y": None}, json.loads(res["nested"]))
        self.assertIs(True, res["bad_decode_raises"])
        self.assertIs(True, res["function_raises"])

    # ---- uuid / now -----------------------------------------------------------------------------
    def test_uuid_v4(self):
        res = self.assertOk(self.server.execute("ids", {}))["result"]
        for k in ("a", "b"):
            self.assertRegex(res[k], UUID4_RE)
            self.assertIn(res[k][19], "89ab", f"RFC 4122 variant bits wrong in {res[k]}")
        self.assertNotEqual(res["a"], res["b"])
        res2 = self.assertOk(self.server.execute("ids", {}))["result"]
        self.assertFalse({res["a"], res["b"]} & {res2["a"], res2["b"]})

    def test_now(self):
        before = time.time()
        res = self.assertOk(self.server.execute("clock", {}))["result"]
        after = time.time()
        self.assertEqual("number", res["kind"])
        t1, t2 = res["t1"], res["t2"]
        self.assertLess(abs(t1 - before), 5.0, f"now()={t1} vs time.time()={before}")
        self.assertLessEqual(t1, after + 1)
        # sub-second resolution: a 50 ms sleep shows as a fraction of a second
        self.assertGreaterEqual(t2 - t1, 0.04, f"now() not in seconds with a fraction? {t1} -> {t2}")
        self.assertLess(t2 - t1, 1.0 * SLOW, f"now() not in seconds? {t1} -> {t2}")

    # ---- crypto ---------------------------------------------------------------------------------
    def test_crypto(self):
        text = "héllo wörld 😀"
        key = "secret-k€y"
        res = self.assertOk(self.server.execute("hashes", {"text": text, "key": key}))["result"]
        self.assertEqual(hashlib.sha256(b"abc").hexdigest(), res["abc"])
        self.assertEqual(hashlib.sha256(b"").hexdigest(), res["empty"])
        self.assertEqual(hashlib.sha256(text.encode()).hexdigest(), res["text"])
        self.assertEqual(hmac.new(b"key", b"msg", hashlib.sha256).hexdigest(), res["mac"])
        self.assertEqual(hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest(), res["mac_task"])

    # ---- ctx ------------------------------------------------------------------------------------
    CONTEXT = {"session_id": "s-1", "arr": [], "obj": {}, "nested": {"x": [1, {}], "y": [[]]}, "n": None}

    def test_ctx_fields(self):
        rid = "ctx-" + uuid.uuid4().hex
        before_ms = time.time() * 1000
        r = self.server.execute("team.ctxdump", {"t": 1}, context=self.CONTEXT, headers={"X-Request-Id": rid})
        after_ms = time.time() * 1000
        body = self.assertOk(r)
        c = body["result"]
        self.assertEqual(body["execution_id"], c.get("execution_id"))
        self.assertEqual(rid, c.get("request_id"))
        self.assertEqual("team.ctxdump", c.get("agent"))
        self.assertEqual(body["version"], c.get("version"))
        self.assertIsInstance(c.get("user"), dict, c)
        self.assertIn("id", c["user"])
        self.assertIn("role", c["user"])
        self.assertEqual({"model": "m1", "retries": 3, "tags": ["a", "b"], "nested": {"deep": True}}, c.get("config"))
        d = c.get("deadline_ms")
        self.assertIsInstance(d, (int, float))
        self.assertGreater(d, before_ms - 50, "deadline_ms is in the past")
        self.assertLessEqual(d, after_ms + 5000 + 50, "deadline_ms beyond now + timeout_ms")
        self.assertGreater(d, before_ms + 5000 - 1000 * SLOW - 100, "deadline_ms ignores the agent's timeout_ms")
        self.assertIs(False, c.get("stream"))
        self.assertEqual(self.CONTEXT, c.get("context"))

    def test_ctx_context_absent_is_empty_or_nil(self):
        r = self.server.execute("team.ctxdump", 1)
        c = self.assertOk(r)["result"]
        self.assertIn(c.get("context"), (None, {}), c)
        gen = r.headers.get("x-request-id")
        self.assertEqual(gen, c.get("request_id"), "ctx.request_id differs from the generated X-Request-Id")

    def test_ctx_stream_true_when_streaming(self):
        events = self.server.sse("team.ctxdump", {}, context={"k": [1]})
        results = [e[1] for e in events if e[0] == "result"]
        self.assertEqual(1, len(results), events)
        c = results[0]["result"]
        self.assertIs(True, c.get("stream"))
        self.assertEqual({"k": [1]}, c.get("context"))
        self.assertEqual(results[0]["execution_id"], c.get("execution_id"))

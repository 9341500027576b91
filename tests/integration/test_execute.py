"""Spec 1-2: the execute routes, reply shape and headers, JSON fidelity, the agent catalog, /health, /info."""

import json
import re
import socket
import time
import uuid

from .harness import ServerTestCase, UUID_RE, VERSION_RE


class ExecuteTests(ServerTestCase):
    FIXTURES = ("echo", "team.review")
    AGENTS = {
        "other": 'return { execute = function(task) return "other" end }\n',
        "nap": 'return { execute = function(task) luagent.sleep(task.ms) return task.n end }\n',
    }

    def test_pipelined_requests_answered_in_order(self):
        """HTTP/1.1 pipelining: requests that arrive while the first one's execution runs (the
        client watch is reading the connection then) wait for it and are answered in order."""
        def req(n, ms):
            body = json.dumps({"task": {"n": n, "ms": ms}}).encode()
            return (b"POST /api/v1/agents/nap/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as s:
            s.sendall(req(1, 300))
            time.sleep(0.1)  # the first execution is running: the next two come while it waits
            s.sendall(req(2, 0) + req(3, 50))
            f = s.makefile("rb")
            got = []
            for _ in range(3):
                status = f.readline()
                length = 0
                while True:
                    line = f.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                got.append((status.split()[1], json.loads(f.read(length))["result"]))
        self.assertEqual([(b"200", 1), (b"200", 2), (b"200", 3)], got)

    def test_reply_shape(self):
        r = self.server.execute("echo", {"a": 1})
        body = self.assertOk(r, {"a": 1})
        self.assertRegex(body.get("execution_id", ""), UUID_RE, self.ctx_msg(r))
        self.assertEqual("echo", body.get("agent"), self.ctx_msg(r))
        self.assertRegex(body.get("version", ""), VERSION_RE, self.ctx_msg(r))
        self.assertEqual("succeeded", body.get("status"), self.ctx_msg(r))
        d = body.get("duration_ms")
        self.assertTrue(isinstance(d, (int, float)) and not isinstance(d, bool) and d >= 0,
                        self.ctx_msg(r, f"duration_ms = {d!r}"))
        self.assertEqual({}, body.get("usage"), self.ctx_msg(r))

    def test_reply_headers(self):
        r = self.server.execute("echo", 1)
        self.assertOk(r, 1)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), self.ctx_msg(r))
        self.assertEqual("nosniff", r.headers.get("x-content-type-options"), self.ctx_msg(r))
        self.assertTrue(r.headers.get("x-request-id"), self.ctx_msg(r, "no X-Request-Id"))

    def test_request_id_echoed(self):
        rid = "itest-" + uuid.uuid4().hex
        r = self.server.execute("echo", "x", headers={"X-Request-Id": rid})
        self.assertOk(r, "x")
        self.assertEqual(rid, r.headers.get("x-request-id"), self.ctx_msg(r))

    def test_request_id_generated_and_unique(self):
        a = self.server.execute("echo", 1)
        b = self.server.execute("echo", 1)
        self.assertOk(a)
        self.assertOk(b)
        ra, rb = a.headers.get("x-request-id"), b.headers.get("x-request-id")
        self.assertTrue(ra and rb, self.ctx_msg(a, "missing generated X-Request-Id"))
        self.assertNotEqual(ra, rb)

    def test_execution_ids_unique_version_stable(self):
        a = self.assertOk(self.server.execute("echo", 1))
        b = self.assertOk(self.server.execute("echo", 2))
        self.assertNotEqual(a["execution_id"], b["execution_id"])
        self.assertEqual(a["version"], b["version"])
        c = self.assertOk(self.server.execute("other", 1), "other")
        self.assertRegex(c["version"], VERSION_RE)
        self.assertNotEqual(a["version"], c["version"], "different files must have different versions")

    def test_seed_route_with_agent_in_body(self):
        r = self.server.request("POST", "/api/v1/agent/execute", {"agent": "echo", "task": [1, 2]})
        body = self.assertOk(r, [1, 2])
        self.assertEqual("echo", body.get("agent"))
        self.assertRegex(body.get("execution_id", ""), UUID_RE)
        self.assertEqual("succeeded", body.get("status"))
        direct = self.assertOk(self.server.execute("echo", 1))
        self.assertEqual(direct["version"], body.get("version"))

    def test_subfolder_agent_name(self):
        r = self.server.execute("team.review", {})
        body = self.assertOk(r, {"reviewed": True, "agent": "team.review"})
        self.assertEqual("team.review", body["agent"])

    def test_context_and_options_accepted(self):
        r = self.server.execute("echo", "t", context={"session_id": "s1"}, options={})
        self.assertOk(r, "t")

    def test_scalar_tasks(self):
        for task in (True, False, 0, -1, "", "plain", 3.5):
            with self.subTest(task=task):
                r = self.server.execute("echo", task)
                self.assertOk(r)
                got = r.body["result"]
                self.assertEqual(task, got, self.ctx_msg(r))
                self.assertIs(type(task), type(got), self.ctx_msg(r, "JSON type changed"))


class JsonFidelityTests(ServerTestCase):
    """Through `execute = function(task) return task end`, values come back exactly."""

    FIXTURES = ("echo",)

    def echo_raw(self, body_bytes):
        r = self.server.request("POST", "/api/v1/agents/echo/execute", body_bytes)
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertIsInstance(r.body, dict, self.ctx_msg(r))
        return r

    def roundtrip(self, value):
        r = self.echo_raw(json.dumps({"task": value}).encode())
        got = r.body["result"]
        self.assertEqual(value, got, self.ctx_msg(r))
        self.assertEqual(json.dumps(value, sort_keys=True), json.dumps(got, sort_keys=True), self.ctx_msg(r))
        return r

    def test_empty_array_and_object(self):
        for value in ([], {}, [[], {}], {"a": [], "b": {}}, [[[]]], {"x": {"y": {}}}):
            with self.subTest(value=value):
                self.roundtrip(value)

    def test_nulls_preserved(self):
        for value in ([1, None, 3], [None], [None, None], {"a": None}, {"a": None, "b": [None, {}]}):
            with self.subTest(value=value):
                self.roundtrip(value)

    def test_big_integers_keep_every_digit(self):
        for n in (9007199254740992, -9007199254740992, 9007199254740991, 1234567890123456, 4294967296,
                  -2147483649, 0, -1):
            with self.subTest(n=n):
                r = self.echo_raw(('{"task": [%d]}' % n).encode())
                got = r.body["result"]
                self.assertIsInstance(got, list, self.ctx_msg(r))
                self.assertIs(int, type(got[0]), self.ctx_msg(r, "integer came back as a non-integer"))
                self.assertEqual(n, got[0], self.ctx_msg(r))
                self.assertRegex(r.raw.decode(), r"[\[:,]\s*%s\s*[\],}]" % re.escape(str(n)),
                                 self.ctx_msg(r, "integer digits not kept in the raw text"))

    def test_floats_roundtrip(self):
        for x in (0.1, 1e-7, -2.5, 3.141592653589793, 1e300, 2.2250738585072014e-308, 123456.789):
            with self.subTest(x=x):
                r = self.echo_raw(('{"task": %s}' % repr(x)).encode())
                got = r.body["result"]
                self.assertIsInstance(got, float, self.ctx_msg(r))
                self.assertEqual(x, got, self.ctx_msg(r))

    def test_unicode_roundtrip(self):
        values = ["héllo wörld", "日本語のテキスト", "emoji 😀🎉", "mixed \u00e9\u4e2d\U0001F600",
                  "quotes \" and \\ backslash", "ctl \n\t\r\b\f \u0001 \u001f", "nul \u0000 inside"]
        for v in values:
            for ascii_only in (True, False):
                with self.subTest(value=v, escaped=ascii_only):
                    body = json.dumps({"task": {"s": v}}, ensure_ascii=ascii_only).encode("utf-8")
                    r = self.echo_raw(body)
                    self.assertEqual({"s": v}, r.body["result"], self.ctx_msg(r))

    def test_slash_not_escaped(self):
        r = self.echo_raw(b'{"task": "a/b/c"}')
        self.assertEqual("a/b/c", r.body["result"])
        self.assertIn(b"a/b/c", r.raw, self.ctx_msg(r))
        self.assertNotIn(b"\\/", r.raw, self.ctx_msg(r))

    def test_nested_mixed_document(self):
        doc = {"items": [{"id": 1, "tags": [], "meta": {}}, {"id": 2, "tags": ["x"], "meta": {"k": None}}],
               "empty": "", "flag": False, "n": -0.5, "big": 9007199254740992}
        r = self.roundtrip(doc)
        self.assertIn(b"9007199254740992", r.raw)


class CatalogTests(ServerTestCase):
    """GET /api/v1/agents, /api/v1/agents/{name}, /health, /info."""

    FIXTURES = ("echo", "hello", "team.review")
    AGENTS = {"zeta": 'return { execute = function() return 1 end }\n',
              "alpha": 'return { description = "first", execute = function() return 1 end }\n'}
    WORKERS = 2
    KEYS = {"name", "version", "description", "input", "timeout_ms", "error"}

    def test_list_sorted_with_fields(self):
        r = self.server.request("GET", "/api/v1/agents")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertIsInstance(r.body, dict, self.ctx_msg(r))
        items = r.body.get("items")
        self.assertIsInstance(items, list, self.ctx_msg(r))
        names = [i.get("name") for i in items]
        self.assertEqual(["alpha", "echo", "hello", "team.review", "zeta"], names, self.ctx_msg(r))
        for item in items:
            with self.subTest(agent=item.get("name")):
                missing = self.KEYS - set(item)
                self.assertFalse(missing, f"missing keys {missing} in {item}")
                self.assertRegex(item["version"], r"^[0-9a-f]{16}$")
                self.assertIsNone(item["error"])
                t = item["timeout_ms"]
                # the spec does not say what an agent without timeout_ms shows (0 or the default)
                self.assertTrue(isinstance(t, int) and not isinstance(t, bool) and t >= 0, f"timeout_ms={t!r}")

    def test_one_agent(self):
        r = self.server.request("GET", "/api/v1/agents/hello")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        a = r.body
        self.assertEqual("hello", a.get("name"))
        self.assertEqual("Say hello", a.get("description"))
        self.assertEqual({"type": "object", "required": ["name"],
                          "properties": {"name": {"type": "string", "maxLength": 100}}}, a.get("input"))
        self.assertEqual(1234, a.get("timeout_ms"))
        self.assertIsNone(a.get("error", "absent"))

    def test_agent_without_schema_has_null_input(self):
        r = self.server.request("GET", "/api/v1/agents/zeta")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertIn("input", r.body)
        self.assertIsNone(r.body["input"])

    def test_catalog_version_matches_execution(self):
        r = self.server.request("GET", "/api/v1/agents/echo")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        e = self.assertOk(self.server.execute("echo", 1))
        self.assertEqual(e["version"], r.body.get("version"))
        self.assertEqual("Echo the task back", r.body.get("description"))
        self.assertEqual(5000, r.body.get("timeout_ms"))

    def test_subfolder_agent(self):
        r = self.server.request("GET", "/api/v1/agents/team.review")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertEqual("team.review", r.body.get("name"))

    def test_unknown_agent_404(self):
        r = self.server.request("GET", "/api/v1/agents/nosuch")
        self.assertError(r, 404, "not_found")

    def test_health(self):
        r = self.server.request("GET", "/health")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertEqual({"status": "ok"}, r.body, self.ctx_msg(r))

    def test_info(self):
        r = self.server.request("GET", "/info")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertIsInstance(r.body, dict, self.ctx_msg(r))
        self.assertIsInstance(r.body.get("version"), str)
        self.assertRegex(r.body["version"], r"\d+\.\d+")
        self.assertEqual(2, r.body.get("workers"), self.ctx_msg(r))
        self.assertEqual(5, r.body.get("agents"), self.ctx_msg(r))

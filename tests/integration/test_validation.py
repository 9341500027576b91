"""Input validation: an agent's `input` schema is checked against the task before `execute` runs
(422 validation_failed with one detail per failing field), malformed schemas are refused when the
file loads, and the request limits of the same issue (body size, nesting depth, header sizes, the
Content-Type and nosniff headers of every response)."""

import json
import socket
import time
import uuid

from .harness import SLOW, ServerTestCase

ORDER = r'''
return {
  description = "takes an order",
  input = {
    type = "object",
    required = {"customer", "items"},
    additionalProperties = false,
    properties = {
      customer = {type = "string", minLength = 1, maxLength = 3, pattern = "^[A-Z]"},
      note = {type = {"string", "null"}},
      priority = {enum = {"low", "high"}},
      items = {type = "array", minItems = 1, maxItems = 60, items = {
        type = "object", required = {"name", "qty"},
        properties = {name = {type = "string"}, qty = {type = "integer", minimum = 1, exclusiveMaximum = 100}},
      }},
      ["a/b~c"] = {type = "boolean"},
    },
  },
  execute = function(task, ctx)
    luagent.log.info("v_order ran", {marker = task.customer})
    return {customer = task.customer, n = #task.items}
  end,
}
'''

NO_SCHEMA = '''
return {
  execute = function(task, ctx)
    return task
  end,
}
'''


def swap_source(required, result):
    return f'''
return {{
  input = {{type = "object", required = {{"{required}"}}}},
  execute = function(task, ctx) return "{result}" end,
}}
'''


BAD_SCHEMAS = [
    ('{type = "text"}', "/type: unknown type 'text'"),
    ('{type = "string", pattern = "([a-z]"}', "/pattern: not a valid POSIX extended regular expression"),
    ('{properties = {age = {minimum = "18"}}}', "/properties/age/minimum: must be a number"),
    ('{required = {1, 2}}', "/required: must be an array of strings"),
    ('{oneOf = {}}', "unsupported keyword 'oneOf'"),
]


class ValidationTests(ServerTestCase):
    WORKERS = 2
    AGENTS = {
        "v_order": ORDER,
        "v_none": NO_SCHEMA,
        "v_swap": swap_source("a", "wants a"),
        "v_bad": swap_source("a", "v1"),
    }

    GOOD = {"customer": "Ada", "items": [{"name": "tea", "qty": 2}]}

    def post(self, task, name="v_order", **kw):
        return self.server.execute(name, task, **kw)

    def assertInvalid(self, reply, details, count=None, agent="v_order", request_id=None):
        """The exact 422 body."""
        err = self.assertError(reply, 422, "validation_failed")
        self.assertEqual("nosniff", reply.headers.get("x-content-type-options"))
        n = count if count is not None else len(details)
        want = {"error": {"code": "validation_failed",
                          "message": f"the task does not match the input schema of agent '{agent}' "
                                     f"({n} error{'' if n == 1 else 's'})",
                          "request_id": request_id or err["request_id"],
                          "details": details}}
        self.assertEqual(want, reply.body, self.ctx_msg(reply))
        self.assertEqual(list(want["error"]), list(reply.body["error"]), "member order")

    def test_valid_task_runs(self):
        self.assertOk(self.post(self.GOOD), {"customer": "Ada", "n": 1})
        self.assertOk(self.post(dict(self.GOOD, note=None, priority="low", **{"a/b~c": True})))

    def test_422_body_exact(self):
        rid = "val-" + uuid.uuid4().hex
        task = {"customer": "ada", "items": [{"name": "tea", "qty": 1.5}, {"qty": 100}, {"name": 7, "qty": 0}],
                "priority": "urgent", "extra": 1, "a/b~c": "yes", "note": 3}
        r = self.post(task, headers={"X-Request-Id": rid})
        self.assertEqual(rid, r.headers.get("x-request-id"))
        self.assertInvalid(r, [
            {"path": "/a~1b~0c", "message": "must be of type boolean (got string)"},
            {"path": "/customer", "message": "must match the pattern ^[A-Z]"},
            {"path": "/items/0/qty", "message": "must be of type integer (got number)"},
            {"path": "/items/1/name", "message": "is required"},
            {"path": "/items/1/qty", "message": "must be < 100"},
            {"path": "/items/2/name", "message": "must be of type string (got integer)"},
            {"path": "/items/2/qty", "message": "must be >= 1"},
            {"path": "/note", "message": "must be one of the types null or string (got integer)"},
            {"path": "/priority", "message": "must be one of: \"low\", \"high\""},
            {"path": "/extra", "message": "is not an allowed property"},
        ], request_id=rid)

    def test_root_and_required(self):
        self.assertInvalid(self.post([]), [{"path": "", "message": "must be of type object (got array)"}])
        self.assertInvalid(self.post("text"), [{"path": "", "message": "must be of type object (got string)"}])
        self.assertInvalid(self.post({}), [{"path": "/customer", "message": "is required"},
                                           {"path": "/items", "message": "is required"}])
        self.assertInvalid(self.post({"customer": "Bo", "items": {}}),
                           [{"path": "/items", "message": "must be of type array (got object)"}])
        self.assertInvalid(self.post({"customer": "Bo", "items": []}),
                           [{"path": "/items", "message": "must have at least 1 item"}])

    def test_unicode_lengths(self):
        self.assertOk(self.post(dict(self.GOOD, customer="Aéé")))        # 3 code points, 5 bytes
        self.assertOk(self.post(dict(self.GOOD, customer="A\U0001F600\U0001F600")))  # 3 code points, 9 bytes
        self.assertInvalid(self.post(dict(self.GOOD, customer="Aééé")),
                           [{"path": "/customer", "message": "must be at most 3 characters long"}])

    def test_all_errors_capped(self):
        items = [{"name": i, "qty": 1} for i in range(60)]
        r = self.post({"customer": "Cy", "items": items})
        err = self.assertError(r, 422, "validation_failed")
        self.assertEqual(50, len(err["details"]))
        self.assertEqual({"path": "/items/49/name", "message": "must be of type string (got integer)"},
                         err["details"][-1])
        self.assertEqual("the task does not match the input schema of agent 'v_order' "
                         "(more than 50 errors, the first 50 listed)", err["message"])

    def test_agent_did_not_run(self):
        marker = "Z" + uuid.uuid4().hex[:2]
        r = self.post({"customer": marker, "items": [{"name": "x"}]})
        self.assertEqual(422, r.status)
        # a valid request afterwards runs and logs; the refused one logged nothing and left no record
        ok_marker = "Y" + uuid.uuid4().hex[:2]
        self.assertOk(self.post(dict(self.GOOD, customer=ok_marker)))
        self.assertIsNotNone(self.server.wait_log(lambda l: l.get("marker") == ok_marker, timeout=3 * SLOW))
        self.assertEqual([], self.server.find_logs(lambda l: l.get("marker") == marker))
        h = self.server.request("GET", "/api/v1/executions?agent=v_order&limit=100")
        self.assertEqual(200, h.status, h.describe())
        self.assertNotIn(marker, json.dumps(h.body))
        self.assertIn(ok_marker, json.dumps(h.body))
        # the access log has the 422
        self.assertIsNotNone(self.server.wait_log(
            lambda l: l.get("msg") == "request" and l.get("status") == 422, timeout=3 * SLOW))

    def test_other_entry_points(self):
        bad = {"customer": "Al"}
        want = [{"path": "/items", "message": "is required"}]
        # the seed route
        r = self.server.request("POST", "/api/v1/agent/execute", {"agent": "v_order", "task": bad})
        self.assertInvalid(r, want)
        # async: refused now (422), not queued as a job that fails later
        self.assertInvalid(self.post(bad, options={"mode": "async"}), want)
        r = self.post(self.GOOD, options={"mode": "async"})
        self.assertEqual(202, r.status, r.describe())
        # SSE: a 422 JSON reply, no stream opened
        status, headers, events, raw = self.server.sse_request("v_order", bad)
        self.assertEqual(422, status, raw)
        self.assertEqual("application/json", headers.get("content-type"))
        self.assertEqual("validation_failed", json.loads(raw)["error"]["code"])

    def test_idempotency_key_released(self):
        key = uuid.uuid4().hex
        r = self.post({"customer": "Al"}, headers={"Idempotency-Key": key})
        self.assertEqual(422, r.status, r.describe())
        # nothing ran, so the key is free for the corrected request
        self.assertOk(self.post(self.GOOD, headers={"Idempotency-Key": key}))

    def test_agent_without_schema_takes_anything(self):
        for task in ("x", 1, [], {}, {"a": [None]}):
            self.assertOk(self.post(task, name="v_none"), task)

    def agent_info(self, name):
        r = self.server.request("GET", f"/api/v1/agents/{name}")
        self.assertEqual(200, r.status, r.describe())
        return r.body

    def test_schema_visible(self):
        info = self.agent_info("v_order")
        self.assertEqual(["customer", "items"], info["input"]["required"])
        self.assertIsNone(info["error"])

    def test_bad_schema_refused_at_load(self):
        name = "v_bad"
        self.assertOk(self.post({"a": 1}, name=name), "v1")
        for schema, want in BAD_SCHEMAS:
            with self.subTest(schema=schema):
                self.server.write_agent(name, f'return {{input = {schema}, execute = function() return "v2" end}}\n')
                info, _, ok = self.poll(lambda: self.agent_info(name), lambda a: want in (a.get("error") or ""),
                                        timeout=3)
                self.assertTrue(ok, f"no load error containing {want!r}: {info}")
                self.assertIn(f"{name}.lua: field 'input' is not a valid schema: ", info["error"])
                # the previous version keeps serving, with its schema
                self.assertOk(self.post({"a": 1}, name=name), "v1")
                self.assertEqual(422, self.post({"b": 1}, name=name).status)
        self.server.write_agent(name, swap_source("a", "v1"))
        info, _, ok = self.poll(lambda: self.agent_info(name), lambda a: a.get("error") is None, timeout=3)
        self.assertTrue(ok, info)

    def test_hot_swap_schema(self):
        name = "v_swap"
        self.assertOk(self.post({"a": 1}, name=name), "wants a")
        self.assertEqual(422, self.post({"b": 1}, name=name).status)
        self.server.write_agent(name, swap_source("b", "wants b"), mode="rename")
        r, _, ok = self.poll(lambda: self.post({"b": 1}, name=name), lambda r: r.status == 200, timeout=3)
        self.assertTrue(ok, r.describe())
        self.assertEqual("wants b", r.body["result"])
        for _ in range(6):  # every worker has the new schema
            self.assertInvalid(self.post({"a": 1}, name=name), [{"path": "/b", "message": "is required"}],
                               agent=name)
        # a schema can be removed too
        self.server.write_agent(name, NO_SCHEMA)
        r, _, ok = self.poll(lambda: self.post("anything", name=name), lambda r: r.status == 200, timeout=3)
        self.assertTrue(ok, r.describe())


def raw_exchange(port, data, timeout=5.0):
    """Send raw bytes, read until the server closes or a whole response arrived."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    out = b""
    try:
        s.sendall(data)
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= n:
                    break
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return out


class ValidationLimitsTests(ServerTestCase):
    """The other limits of the issue: body size, nesting depth, header sizes, response headers."""
    FIXTURES = ("echo", "stream")
    ENV = {"LUAGENT_MAX_BODY_BYTES": "4096"}
    WORKERS = 1

    def assertHealthy(self):
        r = self.server.request("GET", "/health")
        self.assertEqual(200, r.status)
        self.assertOk(self.server.execute("echo", "still here"), "still here")

    def test_body_size(self):
        r = self.server.request("POST", "/api/v1/agents/echo/execute", '{"task": "%s"}' % ("x" * 5000))
        self.assertError(r, 413, "payload_too_large")
        self.assertHealthy()

    def test_nesting_depth(self):
        ok = '{"task": ' + "[" * 60 + "]" * 60 + "}"
        self.assertEqual(200, self.server.request("POST", "/api/v1/agents/echo/execute", ok).status)
        deep = '{"task": ' + "[" * 100 + "]" * 100 + "}"
        err = self.assertError(self.server.request("POST", "/api/v1/agents/echo/execute", deep), 400,
                               "invalid_request")
        self.assertIn("too deep", err["message"])
        self.assertHealthy()

    def test_huge_header(self):
        # h2o 2.2.5 bounds the request head (H2O_MAX_REQLEN: 417,792 bytes; 100 header lines): past
        # that it answers 400 itself (plain text) and closes the connection; the server keeps serving.
        data = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 600000 + b"\r\n\r\n"
        out = raw_exchange(self.server.port, data)
        self.assertTrue(out.startswith(b"HTTP/1.1 400 "), out[:200])
        self.assertHealthy()

    def test_too_many_headers(self):
        data = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n"
        out = raw_exchange(self.server.port, data)
        self.assertTrue(out.startswith(b"HTTP/1.1 400 "), out[:200])
        self.assertHealthy()

    def test_large_header_within_limits(self):
        r = self.server.request("GET", "/health", headers={"X-Big": "b" * 60000})
        self.assertEqual(200, r.status)

    def test_every_response_has_content_type_and_nosniff(self):
        s = self.server
        cases = [
            ("GET", "/health", None, {}, 200),
            ("GET", "/ready", None, {}, 200),
            ("GET", "/info", None, {}, 200),
            ("GET", "/api/v1/agents", None, {}, 200),
            ("GET", "/api/v1/agents/echo", None, {}, 200),
            ("GET", "/api/v1/agents/nosuch", None, {}, 404),
            ("POST", "/api/v1/agents/echo/execute", {"task": 1}, {}, 200),
            ("POST", "/api/v1/agent/execute", {"agent": "echo", "task": 1}, {}, 200),
            ("POST", "/api/v1/agents/echo/execute", {"task": 1, "options": {"mode": "async"}}, {}, 202),
            ("POST", "/api/v1/agents/echo/execute", "{", {}, 400),
            ("POST", "/api/v1/agents/echo/execute", {"task": "x" * 5000}, {}, 413),
            ("POST", "/api/v1/agents/echo/execute", "x", {"Content-Type": "text/plain"}, 415),
            ("POST", "/api/v1/agents/nosuch/execute", {"task": 1}, {}, 404),
            ("GET", "/api/v1/agents/echo/execute", None, {}, 405),
            ("GET", "/api/v1/executions", None, {}, 200),
            ("GET", "/api/v1/executions/" + str(uuid.uuid4()), None, {}, 404),
            ("GET", "/nowhere", None, {}, 404),
        ]
        for method, path, body, headers, status in cases:
            with self.subTest(method=method, path=path, status=status):
                r = s.request(method, path, body, headers=headers)
                self.assertEqual(status, r.status, r.describe())
                self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r.headers)
                self.assertEqual("nosniff", r.headers.get("x-content-type-options"), r.headers)
        status, headers, events, raw = s.sse_request("stream", {"n": 1})
        self.assertEqual(200, status, raw)
        self.assertTrue(headers.get("content-type", "").startswith("text/event-stream"), headers)
        self.assertEqual("nosniff", headers.get("x-content-type-options"), headers)
        status, headers, events, raw = s.sse_request("nosuch", 1)
        self.assertEqual(404, status, raw)
        self.assertTrue(headers.get("content-type", "").startswith("application/json"), headers)
        self.assertEqual("nosniff", headers.get("x-content-type-options"), headers)

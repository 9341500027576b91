"""Spec 5: every error is JSON {"error": {"code", "message", "request_id"}} with the right status."""

import time
import uuid

from .harness import SLOW, ServerTestCase

EXEC = "/api/v1/agents/echo/execute"


class RequestErrorTests(ServerTestCase):
    FIXTURES = ("echo", "fails")
    AGENTS = {
        "table_error": '''
return {
  execute = function(task, ctx)
    error({status = 422, code = "bad_input", message = "nope"})
  end,
}
''',
        "bad_bytes": '''
return {
  execute = function(task, ctx)
    error("bad \\255 byte in " .. string.char(0xe2, 0x82))
  end,
}
''',
        "slow_timeout": '''
return {
  timeout_ms = 200,
  execute = function(task, ctx)
    luagent.sleep(5000)
    return "should not get here"
  end,
}
''',
    }

    def test_malformed_json(self):
        for raw in (b'{"task": ', b'{"task": 1,}', b"{task: 1}", b"", b'{"task": 1} trailing'):
            with self.subTest(body=raw):
                r = self.server.request("POST", EXEC, raw)
                self.assertError(r, 400, "invalid_json")

    def test_error_request_id_matches_header(self):
        rid = "err-" + uuid.uuid4().hex
        r = self.server.request("POST", EXEC, b"{oops", headers={"X-Request-Id": rid})
        err = self.assertError(r, 400, "invalid_json")
        self.assertEqual(rid, err["request_id"])
        self.assertEqual(rid, r.headers.get("x-request-id"))
        self.assertTrue(err["message"], "empty error message")

    def test_body_not_an_object(self):
        for raw in (b"[1, 2]", b'"task"', b"42", b"null", b"true"):
            with self.subTest(body=raw):
                self.assertError(self.server.request("POST", EXEC, raw), 400, "invalid_request")

    def test_missing_task(self):
        for body in ({}, {"context": {}}, {"tasks": 1}):
            with self.subTest(body=body):
                self.assertError(self.server.request("POST", EXEC, body), 400, "invalid_request")

    def test_null_task(self):
        self.assertError(self.server.request("POST", EXEC, b'{"task": null}'), 400, "invalid_request")

    def test_context_not_an_object(self):
        for ctx in (b"[]", b'"ctx"', b"5", b"true", b"[1]"):
            with self.subTest(context=ctx):
                r = self.server.request("POST", EXEC, b'{"task": 1, "context": ' + ctx + b"}")
                self.assertError(r, 400, "invalid_request")

    def test_invalid_utf8(self):
        for raw in (b'{"task": "\xff\xfe"}', b'{"task": "over\xc0\xaflong"}', b'{"task": "cut \xe2\x82"}',
                    b'{"task": "surrogate \xed\xa0\x80"}', b'{"task": "big \xf4\x90\x80\x80"}'):
            with self.subTest(body=raw):
                r = self.server.request("POST", EXEC, raw)
                self.assertError(r, 400)
                self.assertIn(r.body["error"]["code"], ("invalid_json", "invalid_request"), self.ctx_msg(r))

    def test_unknown_agent(self):
        r = self.server.execute("no_such_agent", 1)
        self.assertError(r, 404, "not_found")
        r = self.server.request("POST", "/api/v1/agent/execute", {"agent": "no_such_agent", "task": 1})
        self.assertError(r, 404, "not_found")

    def test_unknown_route(self):
        for method, path in (("GET", "/api/v1/nope"), ("GET", "/nope"), ("POST", "/api/v1/agents/echo/nope")):
            with self.subTest(path=path):
                r = self.server.request(method, path, {"task": 1} if method == "POST" else None)
                self.assertError(r, 404, "not_found")

    def test_method_not_allowed(self):
        for path in (EXEC, "/api/v1/agent/execute"):
            with self.subTest(path=path):
                r = self.server.request("GET", path)
                self.assertError(r, 405, "method_not_allowed")
                allow = r.headers.get("allow", "")
                self.assertIn("POST", allow.upper(), self.ctx_msg(r, "Allow header must list POST"))

    def test_unsupported_media_type(self):
        for ct in ("text/plain", "application/x-www-form-urlencoded", "text/plain; charset=utf-8"):
            with self.subTest(content_type=ct):
                r = self.server.request("POST", EXEC, b'{"task": 1}', content_type=ct)
                self.assertError(r, 415, "unsupported_media_type")

    def test_missing_content_type_is_json(self):
        r = self.server.request("POST", EXEC, b'{"task": {"k": "v"}}', content_type=None)
        self.assertOk(r, {"k": "v"})

    def test_json_content_type_with_charset(self):
        r = self.server.request("POST", EXEC, b'{"task": 7}', content_type="application/json; charset=utf-8")
        self.assertOk(r, 7)

    def test_agent_error_string(self):
        r = self.server.execute("fails", {})
        err = self.assertError(r, 500, "agent_error")
        msg = err["message"]
        self.assertIn("boom", msg)
        self.assertNotIn("stack traceback", msg)
        self.assertNotIn(str(self.server.agents_dir), msg, "agent file path leaked to the client")
        self.assertNotRegex(msg, r"\.lua:\d+", "file:line position leaked to the client")
        self.assertNotIn("stack traceback", r.raw.decode("utf-8", "replace"))

    def test_invalid_utf8_in_a_message_still_gives_valid_json(self):
        r = self.server.execute("bad_bytes", {})
        r.raw.decode("utf-8")  # strict: raises on invalid UTF-8
        err = self.assertError(r, 500, "agent_error")
        self.assertEqual("bad \ufffd byte in \ufffd\ufffd", err["message"])

    def test_agent_error_table(self):
        r = self.server.execute("table_error", {})
        err = self.assertError(r, 422, "bad_input")
        self.assertEqual("nope", err["message"])

    def test_agent_timeout(self):
        t0 = time.monotonic()
        r = self.server.execute("slow_timeout", {})
        elapsed = time.monotonic() - t0
        self.assertError(r, 504, "timeout")
        self.assertLess(elapsed, 2.0 * SLOW, f"timeout took {elapsed:.3f}s for timeout_ms=200")
        self.assertGreaterEqual(elapsed, 0.15, f"timed out after {elapsed:.3f}s, before the 200 ms deadline")


class BodyLimitTests(ServerTestCase):
    FIXTURES = ("echo",)
    ENV = {"LUAGENT_MAX_BODY_BYTES": "1024"}
    WORKERS = 1

    def test_body_over_limit_is_json_413(self):
        body = ('{"task": "%s"}' % ("x" * 1988)).encode()
        self.assertEqual(2000, len(body))
        r = self.server.request("POST", EXEC, body)
        self.assertError(r, 413, "payload_too_large")

    def test_body_under_limit_ok(self):
        body = ('{"task": "%s"}' % ("y" * 888)).encode()
        self.assertEqual(900, len(body))
        self.assertOk(self.server.request("POST", EXEC, body), "y" * 888)

    def test_server_fine_after_413(self):
        self.server.request("POST", EXEC, b'{"task": "' + b"z" * 5000 + b'"}')
        self.assertOk(self.server.execute("echo", "after"), "after")

"""luagent.ai end to end: REST in, the real provider adapters, HTTP to fake servers that speak each
provider's wire format (tests/fakes/providers.py), JSON or SSE out."""

import json
import socket
import time
import uuid

from .harness import REPO, SLOW, ServerTestCase, WithFakeProviders, measure

CHAT = r'''
return {
  timeout_ms = 30000,
  execute = function(task, ctx)
    local opts = {model = task.model, stream = ctx.stream, retries = task.retries, timeout_ms = task.timeout_ms,
                  fallback = task.fallback, response_format = task.schema and {json_schema = task.schema} or nil,
                  messages = {{role = "user", content = task.prompt or "hello world"}}}
    if task.catch then
      local ok, err = pcall(luagent.ai.chat, opts)
      if ok then return {ok = true} end
      return {caught = err}
    end
    local r = luagent.ai.chat(opts)
    return {content = r.content, provider = r.provider, model = r.model, usage = r.usage,
            finish_reason = r.finish_reason, tool_calls = r.tool_calls, parsed = r.parsed}
  end,
}
'''

TOOLS = r'''
return {
  timeout_ms = 30000,
  execute = function(task, ctx)
    local seen = {}
    local r = luagent.ai.run{
      model = task.model, ctx = ctx,
      messages = {{role = "user", content = task.prompt}},
      tools = {lookup = {description = "Look something up",
                         parameters = {type = "object", properties = {query = {type = "string"}}},
                         handler = function(args, c)
                           seen[#seen + 1] = args.query
                           return "found " .. tostring(args.query) .. " for " .. c.agent
                         end}},
    }
    return {content = r.content, steps = r.steps, seen = seen, provider = r.provider}
  end,
}
'''


def unique(name):
    return f"{name}-t{uuid.uuid4().hex[:8]}"


class AiTests(WithFakeProviders, ServerTestCase):
    WORKERS = 1
    AGENTS = {"chat": CHAT, "tools": TOOLS}
    FAKE_OPTIONS = {"chunk_delay": 0.05}
    FAKE_ALL_PROVIDERS = True

    def chat(self, **task):
        return self.server.execute("chat", task)

    def last_request(self):
        return self.fake.log()[-1] if hasattr(self.fake, "log") else None

    def test_each_provider_answers(self):
        for model, provider in (("gpt-4o-mini", "openai"), ("anthropic/claude-haiku-4-5", "anthropic"),
                                ("google/gemini-2.5-flash", "google"), ("claude-sonnet-4-5", "anthropic"),
                                ("gemini-2.5-pro", "google"), ("mock/mock-1", "mock")):
            with self.subTest(model=model):
                r = self.chat(model=model, prompt="hello there")
                res = self.assertOk(r)["result"]
                self.assertEqual(provider, res["provider"])
                expect = "mock: hello there" if provider == "mock" else "echo: hello there"
                self.assertEqual(expect, res["content"])
                self.assertGreater(res["usage"]["output_tokens"], 0)
                usage = r.body["usage"]
                self.assertEqual(1, usage["calls"])
                self.assertEqual(res["usage"]["input_tokens"], usage["input_tokens"])

    def test_keys_go_in_headers_never_in_replies(self):
        r = self.chat(model="gpt-4o-mini")
        self.assertOk(r)
        entry = self.fake.log()[-1]
        self.assertEqual("Bearer sk-test-openai-secret", entry["headers"].get("authorization"))
        r = self.chat(model="claude-x-fake-401", catch=True)
        self.assertNotIn("secret", json.dumps(r.body))
        r = self.chat(model="claude-x-fake-401")
        self.assertEqual(502, r.status, r.describe())
        self.assertNotIn("secret", json.dumps(r.body))
        self.assertNotIn("secret", self.server.log_text())

    def test_streamed_tokens_arrive_as_they_come(self):
        for model in ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"):
            with self.subTest(model=model):
                status, headers, events, raw = self.server.sse_request(
                    "chat", {"model": model, "prompt": "one two three four five six"})
                self.assertEqual(200, status, raw)
                tokens = [e for e in events if e[0] == "token"]
                result = [e for e in events if e[0] == "result"]
                self.assertEqual(1, len(result), raw)
                text = "".join(t[1]["text"] for t in tokens)
                self.assertEqual("echo: one two three four five six", text)
                self.assertEqual(text, result[0][1]["result"]["content"])
                self.assertGreaterEqual(len(tokens), 4)
                self.assertGreater(tokens[-1][2] - tokens[0][2], 0.1)  # spread over time, not one lump
                self.assertGreater(result[0][1]["usage"]["output_tokens"], 0)  # usage exact when streamed
        sent = [e for e in self.fake.log() if e["provider"] == "openai" and e["stream"]][-1]
        self.assertEqual({"include_usage": True}, sent["body"]["stream_options"])

    def test_tool_loop_in_every_wire_format(self):
        for model in ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash", "mock-1"):
            with self.subTest(model=model):
                r = self.server.execute("tools", {"model": model, "prompt": "weather in Paris"})
                res = self.assertOk(r)["result"]
                self.assertEqual(["weather in Paris"], res["seen"])
                self.assertEqual(2, res["steps"])
                prefix = "mock: " if model == "mock-1" else "final: "
                self.assertEqual(prefix + "found weather in Paris for tools", res["content"])
                self.assertEqual(2, r.body["usage"]["calls"])

    def test_retry_after_429_then_ok(self):
        for model in ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"):
            with self.subTest(model=model):
                t0 = time.monotonic()
                r = self.chat(model=unique(model + "-fake-429-once"))
                took = time.monotonic() - t0
                res = self.assertOk(r)["result"]
                self.assertTrue(res["content"].startswith("echo: "))
                self.assertEqual(1, r.body["usage"]["retries"])
                if model.startswith("gpt"):
                    self.assertLess(took, 0.9 * SLOW)  # retry-after-ms: 50 wins over retry-after: 1
                else:
                    self.assertGreaterEqual(took, 0.9)  # retry-after: 1 s / Gemini retryDelay "1s"

    def test_5xx_retried_then_reported(self):
        r = self.chat(model=unique("gpt-fake-500-x2"))
        self.assertEqual(2, self.assertOk(r)["usage"]["retries"])
        r = self.chat(model=unique("claude-fake-529-x3"))
        self.assertEqual(502, r.status, r.describe())
        self.assertEqual("provider_error", r.body["error"]["code"])
        self.assertIn("anthropic", r.body["error"]["message"])
        self.assertEqual(("anthropic", 529), (r.body["error"]["provider"], r.body["error"]["provider_status"]))
        name = unique("gpt-fake-400")
        r = self.chat(model=name, retries=5)
        self.assertEqual(502, r.status, r.describe())
        self.assertEqual(("openai", 400), (r.body["error"]["provider"], r.body["error"]["provider_status"]))
        self.assertEqual(1, len([e for e in self.fake.log() if e["model"] == name]))  # 400: not retried

    def test_no_retry_for_client_errors(self):
        name = unique("gpt-fake-400")
        self.chat(model=name, catch=True)
        self.assertEqual(1, len([e for e in self.fake.log() if e["model"] == name]))

    def test_fallback_to_next_model(self):
        r = self.chat(model=unique("gpt-fake-400"), fallback=["anthropic/claude-haiku-4-5"])
        res = self.assertOk(r)["result"]
        self.assertEqual("anthropic", res["provider"])
        self.assertEqual(2, r.body["usage"]["calls"])

    def test_malformed_reply_is_a_provider_error(self):
        r = self.chat(model=unique("gpt-fake-malformed"))
        self.assertEqual(502, r.status, r.describe())
        self.assertEqual("provider_error", r.body["error"]["code"])

    def test_error_event_inside_a_200_stream(self):
        for model in ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"):
            with self.subTest(model=model):
                name = unique(model + "-fake-stream-error")
                status, headers, events, raw = self.server.sse_request("chat", {"model": name})
                self.assertEqual(200, status, raw)
                self.assertTrue([e for e in events if e[0] == "token"], raw)
                errors = [e for e in events if e[0] == "error"]
                self.assertEqual(1, len(errors), raw)
                self.assertEqual("provider_error", errors[0][1]["error"]["code"])
                # output had streamed: never retried
                self.assertEqual(1, len([e for e in self.fake.log() if e["model"] == name]))

    def test_reset_mid_stream(self):
        status, headers, events, raw = self.server.sse_request("chat", {"model": unique("claude-fake-reset")})
        self.assertEqual(200, status, raw)
        self.assertEqual("error", events[-1][0], raw)
        self.assertEqual("provider_error", events[-1][1]["error"]["code"])

    def test_hung_provider_times_out(self):
        t0 = time.monotonic()
        r = self.chat(model=unique("gpt-fake-hang"), timeout_ms=500, retries=0)
        took = time.monotonic() - t0
        self.assertEqual(504, r.status, r.describe())
        self.assertEqual("provider_timeout", r.body["error"]["code"])
        self.assertLess(took, 3 * SLOW)
        measure("hung provider, timeout_ms 500 (s)", round(took, 3))

    def test_structured_output(self):
        schema = {"type": "object", "required": ["name", "tags"],
                  "properties": {"name": {"type": "string"}, "tags": {"type": "array"}}}
        r = self.chat(model="mock-1", schema=schema)
        parsed = self.assertOk(r)["result"]["parsed"]
        self.assertIsInstance(parsed["name"], str)
        self.assertEqual([], parsed["tags"])
        r = self.chat(model="gpt-4o-mini", schema=schema)  # the fake answers "echo: ...": not JSON
        self.assertEqual(502, r.status, r.describe())
        self.assertIn("not JSON", r.body["error"]["message"])

    def test_client_disconnect_cancels_the_provider_call(self):
        before = self.fake.stats()["cancelled"]
        body = json.dumps({"task": {"model": unique("gpt-fake-hang"), "timeout_ms": 20000}}).encode()
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=5) as s:
            s.sendall(b"POST /api/v1/agents/chat/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            end = time.monotonic() + 3 * SLOW
            while self.fake.stats()["hanging"] == 0 and time.monotonic() < end:
                time.sleep(0.02)
        end = time.monotonic() + 4 * SLOW
        while self.fake.stats()["cancelled"] <= before and time.monotonic() < end:
            time.sleep(0.05)
        self.assertGreater(self.fake.stats()["cancelled"], before, self.server.log_tail(8))


class MockDefaultTests(ServerTestCase):
    """No key anywhere: the default model is the offline mock (what ./scripts/run serves)."""
    WORKERS = 1
    AGENTS = {"chat": CHAT}
    ENV = {"LUAGENT_PROVIDERS_DIR": str(REPO / "providers")}

    def test_default_is_mock(self):
        r = self.server.execute("chat", {"prompt": "offline please"})
        res = self.assertOk(r)["result"]
        self.assertEqual(("mock", "mock: offline please"), (res["provider"], res["content"]))

    def test_sample_agents(self):
        r = self.server.request("GET", "/api/v1/agents")
        self.assertEqual(200, r.status)


class ProviderSwapTests(ServerTestCase):
    """A provider is a script like an agent: added, changed and removed without a restart."""
    WORKERS = 2
    AGENTS = {"chat": CHAT}

    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.pdir = tempfile.mkdtemp(prefix="luagent-providers-")
        cls.ENV = {"LUAGENT_PROVIDERS_DIR": cls.pdir}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        import shutil
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.pdir, ignore_errors=True)

    def write_provider(self, text):
        import os
        tmp = os.path.join(self.pdir, ".shout.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(self.pdir, "shout.lua"))

    def wait_content(self, model, want, timeout=3.0):
        end, r = time.monotonic() + timeout * SLOW, None
        while time.monotonic() < end:
            r = self.server.execute("chat", {"model": model, "prompt": "hi there"})
            if r.status == 200 and r.body["result"]["content"] == want:
                return r
            time.sleep(0.02)
        self.fail(f"never got {want!r}: {r.describe() if r else None}")

    def test_add_change_remove_a_provider(self):
        src = '''
return {
  name = "shout", default_model = "loud-1", families = {"^loud"},
  local_call = function(req)
    local text = req.messages[#req.messages].content
    return {content = %s, tool_calls = luagent.json.array({}), usage = {input_tokens = 1, output_tokens = 1},
            finish_reason = "stop", model = req.model}
  end,
}
'''
        self.write_provider(src % "text:upper()")
        r = self.wait_content("shout/anything", "HI THERE")
        self.assertEqual("shout", r.body["result"]["provider"])
        self.wait_content("loud-2", "HI THERE")  # a bare name routed by the new provider's family
        self.write_provider(src % "text:reverse()")
        self.wait_content("shout/anything", "ereht ih")
        # a reply_shape that is not a json.shape: the file is refused, the loaded one keeps serving
        self.write_provider(src.replace("name =", "reply_shape = {choices = true}, name =") % "text:lower()")
        line = self.server.wait_log(lambda l: l.get("level") == "error" and "reply_shape" in json.dumps(l),
                                    timeout=3 * SLOW)
        self.assertIsNotNone(line, self.server.log_tail(20))
        self.assertIn("must be a json.shape", json.dumps(line))
        self.assertEqual("ereht ih", self.server.execute("chat", {"model": "shout/x", "prompt": "hi there"})
                         .body["result"]["content"])
        import os
        os.unlink(os.path.join(self.pdir, "shout.lua"))
        end = time.monotonic() + 3 * SLOW
        while time.monotonic() < end:
            r = self.server.execute("chat", {"model": "shout/x", "prompt": "hi"})
            if r.status != 200:
                break
            time.sleep(0.02)
        self.assertEqual(500, r.status, r.describe())  # no provider "shout": an agent error (misuse)


class StreamDisconnectTests(WithFakeProviders, ServerTestCase):
    """A streaming client that leaves mid-answer: the provider stream is cancelled too."""
    WORKERS = 1
    AGENTS = {"chat": CHAT}
    FAKE_OPTIONS = {"chunk_delay": 0.05, "slow_delay": 0.5}

    def test_leaving_mid_stream_cancels_the_provider_stream(self):
        before = self.fake.stats()["cancelled"]
        body = json.dumps({"task": {"model": unique("gpt-fake-slow"),
                                    "prompt": " ".join(["word"] * 40)}}).encode()
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as s:
            s.sendall(b"POST /api/v1/agents/chat/execute HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            got = b""
            while b"event: token" not in got:
                chunk = s.recv(4096)
                self.assertTrue(chunk, "the stream ended before any token")
                got += chunk
        end = time.monotonic() + 4 * SLOW
        while self.fake.stats()["cancelled"] <= before and time.monotonic() < end:
            time.sleep(0.05)
        self.assertGreater(self.fake.stats()["cancelled"], before, self.server.log_tail(8))
        self.assertEqual(200, self.server.request("GET", "/health").status)


class SampleAgentTests(ServerTestCase):
    """The sample agents a new user meets, driven offline by the mock provider."""
    WORKERS = 1
    AGENTS = {n: (REPO / "agents" / f"{n}.lua").read_text() for n in ("ai", "summarize", "research")}

    @classmethod
    def setUpClass(cls):
        import http.server
        import threading

        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"<p>luagent sample page</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        cls.page = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=cls.page.serve_forever, daemon=True).start()
        cls.ENV = {"LUAGENT_PROVIDERS_DIR": str(REPO / "providers")}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.page.shutdown()

    def test_ai(self):
        r = self.server.execute("ai", {"prompt": "hello sample"})
        self.assertEqual("mock: hello sample", self.assertOk(r)["result"])

    def test_summarize_streams_tokens(self):
        status, headers, events, raw = self.server.sse_request("summarize", {"text": "one two three"})
        self.assertEqual(200, status, raw)
        tokens = "".join(e[1]["text"] for e in events if e[0] == "token")
        result = [e for e in events if e[0] == "result"][0][1]["result"]
        self.assertEqual(result["summary"], tokens)
        self.assertIn("one two three", tokens)

    def test_research_runs_its_http_tool(self):
        url = f"http://127.0.0.1:{self.page.server_address[1]}/page"
        r = self.server.execute("research", {"question": url})
        res = self.assertOk(r)["result"]
        self.assertEqual(2, res["steps"])
        self.assertIn("luagent sample page", res["answer"])  # the tool's fetch reached the model
        self.assertIn("200", res["answer"])

"""The OpenAI-compatible face: POST /v1/chat/completions runs the agent named by `model` and answers
a chat.completion (or chat.completion.chunk events with `stream`), GET /v1/models lists agents.
Plain HTTP here; tests/compat drives the same routes with the official `openai` SDK."""

import json
import os
import re

from .harness import REPO, SLOW, UUID_RE, ServerTestCase, class_tmpdir
from .test_auth import keys_cli

# Returns the task it was given as JSON text: what the face hands an agent.
TASK_OF = r'''
return { execute = function(task, ctx) return {content = luagent.json.encode(task)} end }
'''
SHAPED = r'''
return {
  execute = function(task, ctx)
    local last = task.messages[#task.messages].content
    if last == "table" then return {content = "cut short", finish_reason = "length"} end
    if last == "object" then return {answer = 42, list = luagent.json.array({1, 2})} end
    if last == "nothing" then return nil end
    if last == "number" then return 7 end
    if last == "emit" then ctx.emit({step = 1}) return "after emit" end
    if last == "fail" then error("it broke") end
    if last == "refuse" then error({status = 409, code = "busy", message = "come back later"}) end
    if last == "slow-fail" then luagent.sleep(50) error("late failure") end
    return "plain text"
  end,
}
'''
# Streams one model call, then answers more than it streamed / something else.
EXTENDS = r'''
return {
  execute = function(task, ctx)
    local r = luagent.ai.chat{messages = task.messages, stream = ctx.stream}
    if task.messages[1].content == "other" then return "something else" end
    return r.content .. " (checked)"
  end,
}
'''
SLOW_STREAM = r'''
return { execute = function(task, ctx) luagent.sleep(5000) return "too late" end }
'''
STRICT = r'''
return {
  input = {type = "object", required = {"messages", "topic"}},
  execute = function(task, ctx) return "ok" end,
}
'''

CHATCMPL_RE = re.compile(r"^chatcmpl-([0-9a-f-]{36})$")


def user(text):
    return [{"role": "user", "content": text}]


class OpenAICompatTests(ServerTestCase):
    AGENTS = {"task_of": TASK_OF, "shaped": SHAPED, "extends": EXTENDS, "strict": STRICT, "slow_stream": SLOW_STREAM,
              **{n: (REPO / "agents" / f"{n}.lua").read_text() for n in ("ai", "summarize")}}
    WORKERS = 1

    @classmethod
    def setUpClass(cls):
        cls.keys_dir = class_tmpdir(cls, "luagent-keys-")
        cls.keys_file = os.path.join(cls.keys_dir, "api_keys")
        cls.ENV = {"LUAGENT_AUTH": "required", "LUAGENT_API_KEYS_FILE": cls.keys_file,
                   "LUAGENT_PROVIDERS_DIR": str(REPO / "providers")}
        super().setUpClass()
        out = open(cls.server.out_path).read()
        cls.keys = {"admin": re.search(r"^admin API key: (\S+)$", out, re.M).group(1)}
        for name, args in (("viewer", ["--role", "viewer"]), ("operator", ["--role", "operator"]),
                           ("only_ai", ["--role", "operator", "--agents", "ai"])):
            r = keys_cli(cls.keys_file, "create", "--name", f"compat {name}", *args)
            assert r.returncode == 0, r.stderr
            cls.keys[name] = json.loads(r.stdout)["key"]

    def setUp(self):
        # keys made by the CLI reach the server within its reload period (2 s)
        for k in ("viewer", "operator", "only_ai"):
            _, _, ok = self.poll(lambda: self.get("/v1/models", k).status, lambda s: s == 200, timeout=6)
            self.assertTrue(ok, f"the {k} key never worked")

    # ---- helpers ----------------------------------------------------------------------------
    def get(self, path, key="operator"):
        return self.server.request("GET", path, headers={"Authorization": f"Bearer {self.keys[key]}"})

    def chat(self, body, key="operator", headers=None):
        h = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        h.update(headers or {})
        return self.server.request("POST", "/v1/chat/completions", body, headers=h)

    def stream(self, body, key="operator"):
        """(status, content-type, [chunk objects], raw text, saw [DONE]) of a streamed completion."""
        conn = self.server.connection()
        try:
            conn.request("POST", "/v1/chat/completions", body=json.dumps({**body, "stream": True}).encode(),
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.keys[key]}"})
            resp = conn.getresponse()
            raw = resp.read().decode()
            status, ctype = resp.status, resp.getheader("content-type", "")
        finally:
            conn.close()
        chunks, done = [], False
        for block in raw.split("\n\n"):
            for line in block.split("\n"):
                if not line.startswith("data: "):
                    continue
                self.assertFalse(done, f"data after [DONE]: {raw!r}")
                if line == "data: [DONE]":
                    done = True
                else:
                    chunks.append(json.loads(line[6:]))
        return status, ctype, chunks, raw, done

    def assertV1Error(self, r, status, code, etype):
        err = self.assertError(r, status, code)
        self.assertEqual(etype, err.get("type"), self.ctx_msg(r))
        return err

    # ---- chat.completion --------------------------------------------------------------------
    def test_completion_shape_usage_and_record(self):
        r = self.chat({"model": "ai", "messages": [{"role": "system", "content": "be brief"},
                                                   {"role": "user", "content": "hello compat world"}],
                       "temperature": 0.2})
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertTrue(r.headers["content-type"].startswith("application/json"))
        c = r.body
        m = CHATCMPL_RE.match(c["id"])
        self.assertTrue(m, c["id"])
        self.assertEqual("chat.completion", c["object"])
        self.assertIsInstance(c["created"], int)
        self.assertEqual("ai", c["model"])
        self.assertEqual(1, len(c["choices"]))
        ch = c["choices"][0]
        self.assertEqual(0, ch["index"])
        self.assertEqual({"role": "assistant", "content": "mock: hello compat world", "refusal": None}, ch["message"])
        self.assertEqual("stop", ch["finish_reason"])
        # the mock counts words: 2 + 3 in, "mock: hello compat world" 4 out
        self.assertEqual({"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}, c["usage"])
        # recorded like any other execution: the id after chatcmpl- is the execution's
        rec = self.get(f"/api/v1/executions/{m.group(1)}", "viewer")
        self.assertEqual(200, rec.status, self.ctx_msg(rec))
        self.assertRegex(m.group(1), UUID_RE)
        self.assertEqual("ai", rec.body["agent"])
        self.assertEqual("succeeded", rec.body["status"])
        self.assertEqual("mock: hello compat world", rec.body["result"])
        self.assertEqual(c["system_fingerprint"], rec.body["version"])
        self.assertEqual(5, rec.body["usage"]["input_tokens"])
        self.assertEqual({"temperature": 0.2}, rec.body["task"]["params"])
        self.assertEqual("hello compat world", rec.body["task"]["messages"][1]["content"])
        self.assertEqual("operator", rec.body["user"]["role"])
        self.assertTrue(any(e["type"] == "ai_call" for e in rec.body["events"]), rec.body)

    def test_task_the_agent_sees(self):
        body = {"model": "task_of", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "temperature": 0.5, "max_tokens": 12, "user": "u-1", "response_format": {"type": "text"},
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                "stream_options": {"include_usage": True}, "stream": False}
        r = self.chat(body)
        self.assertEqual(200, r.status, self.ctx_msg(r))
        task = json.loads(r.body["choices"][0]["message"]["content"])
        self.assertEqual({"messages", "params"}, set(task))
        self.assertEqual(body["messages"], task["messages"])
        self.assertEqual({"temperature": 0.5, "max_tokens": 12, "user": "u-1", "response_format": {"type": "text"},
                          "tools": body["tools"]}, task["params"])
        r = self.chat({"model": "task_of", "messages": user("x")})
        self.assertEqual({"messages": user("x"), "params": {}},
                         json.loads(r.body["choices"][0]["message"]["content"]))

    def test_result_to_content(self):
        cases = {"plain": ("plain text", "stop"), "table": ("cut short", "length"),
                 "number": ("7", "stop"), "nothing": ("", "stop"), "emit": ("after emit", "stop")}
        for text, (content, finish) in cases.items():
            with self.subTest(text):
                r = self.chat({"model": "shaped", "messages": user(text)})
                self.assertEqual(200, r.status, self.ctx_msg(r))
                self.assertEqual(content, r.body["choices"][0]["message"]["content"])
                self.assertEqual(finish, r.body["choices"][0]["finish_reason"])
                self.assertEqual(0, r.body["usage"]["total_tokens"])
        r = self.chat({"model": "shaped", "messages": user("object")})
        self.assertEqual({"answer": 42, "list": [1, 2]}, json.loads(r.body["choices"][0]["message"]["content"]))

    def test_sample_agents(self):
        r = self.chat({"model": "summarize", "messages": user("the quick brown fox")})
        self.assertEqual(200, r.status, self.ctx_msg(r))
        content = r.body["choices"][0]["message"]["content"]
        self.assertIn("the quick brown fox", content)
        status, _, chunks, raw, done = self.stream({"model": "summarize", "messages": user("the quick brown fox")})
        self.assertEqual(200, status, raw)
        self.assertTrue(done, raw)
        self.assertEqual(content, "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]))
        # the REST route still answers as before
        rest = self.server.execute("summarize", {"text": "one two"}, headers={"Authorization": f"Bearer {self.keys['operator']}"})
        self.assertEqual({"summary", "model", "provider"}, set(self.assertOk(rest)["result"]))
        r = self.server.execute("ai", {"prompt": "one two"}, headers={"Authorization": f"Bearer {self.keys['operator']}"})
        self.assertEqual("mock: one two", self.assertOk(r)["result"])

    # ---- streaming --------------------------------------------------------------------------
    def test_stream_chunks(self):
        text = "alpha beta gamma delta epsilon"
        whole = self.chat({"model": "ai", "messages": user(text)}).body["choices"][0]["message"]["content"]
        status, ctype, chunks, raw, done = self.stream({"model": "ai", "messages": user(text)})
        self.assertEqual(200, status, raw)
        self.assertTrue(ctype.startswith("text/event-stream"), ctype)
        self.assertTrue(done, f"no data: [DONE] at the end: {raw!r}")
        self.assertTrue(raw.rstrip("\n").endswith("data: [DONE]"), raw)
        ids = {c["id"] for c in chunks}
        self.assertEqual(1, len(ids), ids)
        self.assertRegex(ids.pop(), CHATCMPL_RE)
        for c in chunks:
            self.assertEqual("chat.completion.chunk", c["object"])
            self.assertEqual("ai", c["model"])
            self.assertNotIn("usage", c)  # include_usage not asked
        self.assertEqual({"role": "assistant", "content": ""}, chunks[0]["choices"][0]["delta"])
        self.assertIsNone(chunks[0]["choices"][0]["finish_reason"])
        middle = chunks[1:-1]
        self.assertEqual(6, len(middle), raw)  # the mock streams "mock:" and one chunk per word
        for c in middle:
            self.assertEqual({"content"}, set(c["choices"][0]["delta"]))
            self.assertIsNone(c["choices"][0]["finish_reason"])
        self.assertEqual(whole, "".join(c["choices"][0]["delta"]["content"] for c in middle))
        self.assertEqual({}, chunks[-1]["choices"][0]["delta"])
        self.assertEqual("stop", chunks[-1]["choices"][0]["finish_reason"])

    def test_stream_include_usage(self):
        status, _, chunks, raw, done = self.stream({"model": "ai", "messages": user("count these words"),
                                                    "stream_options": {"include_usage": True}})
        self.assertEqual(200, status, raw)
        self.assertTrue(done, raw)
        last = chunks[-1]
        self.assertEqual([], last["choices"])
        self.assertEqual({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}, last["usage"])
        for c in chunks[:-1]:
            self.assertIn("usage", c)
            self.assertIsNone(c["usage"])
        self.assertEqual("stop", chunks[-2]["choices"][0]["finish_reason"])

    def test_stream_without_tokens_and_beyond_them(self):
        # an agent that streams nothing: its whole content is one chunk
        status, _, chunks, raw, done = self.stream({"model": "shaped", "messages": user("table")})
        self.assertEqual(200, status, raw)
        self.assertTrue(done, raw)
        self.assertEqual(["", "cut short"], [c["choices"][0]["delta"].get("content") for c in chunks[:-1]])
        self.assertEqual("length", chunks[-1]["choices"][0]["finish_reason"])
        # content that extends what was streamed: the rest follows as one more chunk
        status, _, chunks, raw, done = self.stream({"model": "extends", "messages": user("one two")})
        self.assertEqual(200, status, raw)
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        self.assertEqual("mock: one two (checked)", text)
        self.assertEqual(" (checked)", chunks[-2]["choices"][0]["delta"]["content"])
        # content that is not what was streamed: the streamed tokens stand, nothing is added
        status, _, chunks, raw, done = self.stream({"model": "extends", "messages": user("other")})
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        self.assertEqual("mock: other", text)
        self.assertTrue(done, raw)

    def test_stream_error_after_start(self):
        status, ctype, chunks, raw, done = self.stream({"model": "shaped", "messages": user("slow-fail")})
        self.assertEqual(200, status, raw)
        self.assertFalse(done, raw)
        err = chunks[-1]["error"]
        self.assertEqual("agent_error", err["code"])
        self.assertEqual("late failure", err["message"])
        self.assertEqual("server_error", err["type"])
        self.assertTrue(err["request_id"])

    def test_client_leaves_the_stream(self):
        conn = self.server.connection()
        conn.request("POST", "/v1/chat/completions",
                     body=json.dumps({"model": "slow_stream", "messages": user("x"), "stream": True}).encode(),
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.keys['operator']}"})
        resp = conn.getresponse()
        self.assertEqual(200, resp.status)
        line = b""
        while not line.startswith(b"data: "):
            line = resp.readline()
        eid = CHATCMPL_RE.match(json.loads(line[6:])["id"]).group(1)
        conn.sock.shutdown(2)
        conn.close()
        rec, _, ok = self.poll(lambda: self.get(f"/api/v1/executions/{eid}", "viewer").body,
                               lambda b: b.get("status") == "failed", timeout=4)
        self.assertTrue(ok, rec)
        self.assertEqual("client_closed", rec["error"]["code"])
        self.assertEqual(200, self.server.request("GET", "/health").status)

    # ---- errors -----------------------------------------------------------------------------
    def test_request_errors(self):
        cases = [
            ({"model": "nope", "messages": user("x")}, 404, "model_not_found"),
            ({"model": "../x", "messages": user("x")}, 404, "model_not_found"),
            ({"messages": user("x")}, 400, "invalid_request"),
            ({"model": 3, "messages": user("x")}, 400, "invalid_request"),
            ({"model": "ai"}, 400, "invalid_request"),
            ({"model": "ai", "messages": None}, 400, "invalid_request"),
            ({"model": "ai", "messages": "hi"}, 400, "invalid_request"),
            ({"model": "ai", "messages": []}, 400, "invalid_request"),
            ({"model": "ai", "messages": [{"content": "no role"}]}, 400, "invalid_request"),
            ({"model": "ai", "messages": ["x"]}, 400, "invalid_request"),
            ({"model": "ai", "messages": user("x"), "stream": "yes"}, 400, "invalid_request"),
            ({"model": "ai", "messages": user("x"), "stream_options": []}, 400, "invalid_request"),
            ({"model": "ai", "messages": user("x"), "n": 2}, 400, "invalid_request"),
            ([1, 2], 400, "invalid_request"),
            ("{not json", 400, "invalid_json"),
        ]
        for body, status, code in cases:
            with self.subTest(body=body):
                err = self.assertV1Error(self.chat(body), status, code, "invalid_request_error")
                if body == {"model": "ai"}:
                    self.assertIn("messages", err["message"])
                if code == "model_not_found":
                    self.assertIn("does not exist", err["message"])
        err = self.assertV1Error(self.chat({"model": "ai", "messages": [{"role": "user"}, {"content": 1}]}), 400,
                                 "invalid_request", "invalid_request_error")
        self.assertEqual("messages[1].role must be a string", err["message"])
        r = self.server.request("POST", "/v1/chat/completions", "x=1", content_type="text/plain",
                                headers={"Authorization": f"Bearer {self.keys['operator']}"})
        self.assertV1Error(r, 415, "unsupported_media_type", "invalid_request_error")
        # nothing ran for a refused request
        self.assertV1Error(self.server.request("GET", "/v1/chat/completions",
                                               headers={"Authorization": f"Bearer {self.keys['operator']}"}),
                           405, "method_not_allowed", "invalid_request_error")
        self.assertV1Error(self.get("/v1/embeddings"), 404, "not_found", "invalid_request_error")
        # the REST API's errors stay as they were (no "type")
        r = self.get("/api/v1/agents/nope")
        self.assertNotIn("type", self.assertError(r, 404, "not_found"))

    def test_agent_errors(self):
        self.assertV1Error(self.chat({"model": "shaped", "messages": user("fail")}), 500, "agent_error", "server_error")
        err = self.assertV1Error(self.chat({"model": "shaped", "messages": user("refuse")}), 409, "busy",
                                 "invalid_request_error")
        self.assertEqual("come back later", err["message"])
        err = self.assertV1Error(self.chat({"model": "strict", "messages": user("x")}), 422, "validation_failed",
                                 "invalid_request_error")
        self.assertEqual([{"path": "/topic", "message": "is required"}], err["details"])

    # ---- auth -------------------------------------------------------------------------------
    def test_auth(self):
        body = {"model": "ai", "messages": user("x")}
        r = self.chat(body, key=None)
        self.assertV1Error(r, 401, "unauthenticated", "authentication_error")
        self.assertIn("Bearer", r.headers.get("www-authenticate", ""))
        self.assertV1Error(self.server.request("GET", "/v1/models"), 401, "unauthenticated", "authentication_error")
        r = self.server.request("POST", "/v1/chat/completions", body, headers={"Authorization": "Bearer lg_" + "x" * 43})
        self.assertV1Error(r, 401, "unauthenticated", "authentication_error")
        self.assertV1Error(self.chat(body, key="viewer"), 403, "forbidden", "permission_error")
        self.assertEqual(200, self.chat(body, key="admin").status)
        r = self.server.request("POST", "/v1/chat/completions", body, headers={"X-API-Key": self.keys["operator"]})
        self.assertEqual(200, r.status, self.ctx_msg(r))
        # a key limited to some agents runs and sees only those
        self.assertEqual(200, self.chat(body, key="only_ai").status)
        self.assertV1Error(self.chat({"model": "summarize", "messages": user("x")}, key="only_ai"), 403, "forbidden",
                           "permission_error")
        self.assertEqual(["ai"], [m["id"] for m in self.get("/v1/models", "only_ai").body["data"]])
        self.assertV1Error(self.get("/v1/models/summarize", "only_ai"), 404, "model_not_found",
                           "invalid_request_error")

    # ---- models -----------------------------------------------------------------------------
    def test_models(self):
        r = self.get("/v1/models", "viewer")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertEqual("list", r.body["object"])
        ids = [m["id"] for m in r.body["data"]]
        self.assertEqual(sorted(self.AGENTS), sorted(ids))
        for m in r.body["data"]:
            self.assertEqual({"id", "object", "created", "owned_by"}, set(m))
            self.assertEqual("model", m["object"])
            self.assertEqual("luagent", m["owned_by"])
            self.assertIsInstance(m["created"], int)
        one = self.get("/v1/models/summarize", "viewer")
        self.assertEqual(200, one.status, self.ctx_msg(one))
        self.assertEqual([m for m in r.body["data"] if m["id"] == "summarize"][0], one.body)
        err = self.assertV1Error(self.get("/v1/models/nope", "viewer"), 404, "model_not_found", "invalid_request_error")
        self.assertIn("nope", err["message"])
        # a new agent file is a new model
        self.server.write_agent("fresh", 'return { execute = function() return "new" end }')
        _, _, ok = self.poll(lambda: [m["id"] for m in self.get("/v1/models", "viewer").body["data"]],
                             lambda v: "fresh" in v, timeout=3)
        self.assertTrue(ok)
        r = self.chat({"model": "fresh", "messages": user("x")})
        self.assertEqual("new", r.body["choices"][0]["message"]["content"])
        self.server.delete_agent("fresh")
        _, _, ok = self.poll(lambda: self.chat({"model": "fresh", "messages": user("x")}).status, lambda s: s == 404,
                             timeout=3)
        self.assertTrue(ok)

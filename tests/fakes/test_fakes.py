#!/usr/bin/env python3
"""Self-test of the fake providers (tests/fakes/providers.py): each wire format, JSON and SSE, tools,
usage, and every misbehaviour, with the standard library only (urllib / http.client).

    python3 tests/fakes/test_fakes.py          (or: python3 -m unittest discover -s tests/fakes)
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from providers import FakeProviders, parse_behaviour  # noqa: E402

OPENAI_H = {"Authorization": "Bearer sk-test-openai"}
ANTHROPIC_H = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
GEMINI_H = {"x-goog-api-key": "AIza-test"}
TOOLS_OAI = [{"type": "function", "function": {"name": "search", "description": "d",
                                               "parameters": {"type": "object", "properties": {}}}},
             {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}]
TOOLS_ANT = [{"name": "search", "description": "d", "input_schema": {"type": "object"}},
             {"name": "other", "input_schema": {"type": "object"}}]
TOOLS_GEM = [{"functionDeclarations": [{"name": "search", "description": "d"}, {"name": "other"}]}]


def gem_path(model, stream=False):
    return f"/v1beta/models/{model}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")


class FakeTest(unittest.TestCase):
    fake = None

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeProviders(chunk_delay=0.005, slow_delay=0.2, hang_max=30).start()

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()

    # --- helpers ---

    def post(self, path, body, headers, timeout=10):
        """(status, headers lowercased, parsed JSON or raw bytes)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.fake.url + path, data=data, method="POST",
                                     headers=dict(headers, **{"Content-Type": "application/json"}))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, hdrs, raw = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, hdrs, raw = e.code, e.headers, e.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        return status, {k.lower(): v for k, v in hdrs.items()}, parsed

    def stream(self, path, body, headers, timeout=10):
        """POST and read an SSE answer: (status, [(event, data_text, t_arrival)], raw_text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=timeout)
        conn.request("POST", path, json.dumps(body), dict(headers, **{"Content-Type": "application/json"}))
        r = conn.getresponse()
        events, raw, ev, data = [], b"", None, []
        while True:
            line = r.readline()
            if not line:
                break
            raw += line
            s = line.decode().rstrip("\r\n")
            if s == "":
                if data or ev:
                    events.append((ev, "\n".join(data), time.monotonic()))
                ev, data = None, []
            elif s.startswith("event:"):
                ev = s[6:].strip()
            elif s.startswith("data:"):
                data.append(s[5:].lstrip(" "))
        conn.close()
        return r.status, events, raw.decode()

    def json_events(self, events):
        return [(e, json.loads(d)) for e, d, _ in events if d != "[DONE]"]

    def get(self, path):
        with urllib.request.urlopen(self.fake.url + path, timeout=5) as r:
            return json.loads(r.read())

    def last_log(self):
        return self.fake.log()[-1]


class TestBehaviourNames(unittest.TestCase):
    def test_parse(self):
        self.assertEqual(parse_behaviour("gpt-4o"), ("normal", None))
        self.assertEqual(parse_behaviour("fake-500"), ("status", (500, None)))
        self.assertEqual(parse_behaviour("claude-fake-500-once-t1"), ("status", (500, 1)))
        self.assertEqual(parse_behaviour("fake-429-then-ok"), ("status", (429, 1)))
        self.assertEqual(parse_behaviour("fake-503-x2-abc"), ("status", (503, 2)))
        self.assertEqual(parse_behaviour("gemini-fake-hang"), ("hang", None))
        self.assertEqual(parse_behaviour("fake-stream-error-7"), ("stream-error", None))
        self.assertEqual(parse_behaviour("fake-stream-error-raw"), ("stream-error-raw", None))
        self.assertEqual(parse_behaviour("fake-slowly"), ("normal", None))
        self.assertEqual(parse_behaviour(None), ("normal", None))


class TestOpenAI(FakeTest):
    P = "/v1/chat/completions"

    def test_json_echo_and_usage(self):
        st, h, b = self.post(self.P, {"model": "gpt-x", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello big world"}]}]}, OPENAI_H)
        self.assertEqual(st, 200)
        self.assertEqual(b["object"], "chat.completion")
        self.assertEqual(b["model"], "gpt-x")
        self.assertTrue(b["id"].startswith("chatcmpl-"))
        self.assertIsInstance(b["created"], int)
        ch = b["choices"][0]
        self.assertEqual((ch["index"], ch["finish_reason"]), (0, "stop"))
        self.assertEqual(ch["message"], {"role": "assistant", "content": "echo: hello big world", "refusal": None,
                                         "annotations": []})
        self.assertEqual({k: b["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
                         {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9})

    def test_tool_call_then_final(self):
        msgs = [{"role": "user", "content": "find cats"}]
        st, _, b = self.post(self.P, {"model": "gpt-x", "messages": msgs, "tools": TOOLS_OAI}, OPENAI_H)
        self.assertEqual(st, 200)
        ch = b["choices"][0]
        self.assertEqual(ch["finish_reason"], "tool_calls")
        self.assertIsNone(ch["message"]["content"])
        call = ch["message"]["tool_calls"][0]
        self.assertEqual(call["type"], "function")
        self.assertEqual(call["function"]["name"], "search")
        self.assertIsInstance(call["function"]["arguments"], str)
        self.assertEqual(json.loads(call["function"]["arguments"]), {"query": "find cats"})
        self.assertEqual(b["usage"]["completion_tokens"], 3)
        msgs += [ch["message"], {"role": "tool", "tool_call_id": call["id"], "content": "three cats"}]
        st, _, b = self.post(self.P, {"model": "gpt-x", "messages": msgs, "tools": TOOLS_OAI}, OPENAI_H)
        self.assertEqual(b["choices"][0]["message"]["content"], "final: three cats")
        self.assertEqual(b["choices"][0]["finish_reason"], "stop")
        self.assertEqual(b["usage"]["prompt_tokens"], 4)
        # tool_choice none, and a forced tool
        st, _, b = self.post(self.P, {"model": "gpt-x", "messages": msgs[:1], "tools": TOOLS_OAI,
                                      "tool_choice": "none"}, OPENAI_H)
        self.assertEqual(b["choices"][0]["message"]["content"], "echo: find cats")
        st, _, b = self.post(self.P, {"model": "gpt-x", "messages": msgs[:1], "tools": TOOLS_OAI, "tool_choice":
                                      {"type": "function", "function": {"name": "other"}}}, OPENAI_H)
        self.assertEqual(b["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "other")

    def test_stream_text_with_usage(self):
        st, ev, raw = self.stream(self.P, {"model": "gpt-x", "stream": True, "stream_options": {"include_usage": True},
                                           "messages": [{"role": "user", "content": "one two three"}]}, OPENAI_H)
        self.assertEqual(st, 200)
        self.assertTrue(raw.rstrip().endswith("data: [DONE]"))
        self.assertNotIn("\r\n", raw)
        js = [d for _, d in self.json_events(ev)]
        self.assertTrue(all(c["object"] == "chat.completion.chunk" for c in js))
        self.assertEqual(js[0]["choices"][0]["delta"]["role"], "assistant")
        deltas = [c["choices"][0]["delta"].get("content") for c in js if c["choices"]]
        self.assertEqual("".join(d for d in deltas if d), "echo: one two three")
        self.assertGreaterEqual(len([d for d in deltas if d]), 4)
        self.assertEqual(js[-2]["choices"][0]["finish_reason"], "stop")
        self.assertEqual(js[-1]["choices"], [])
        self.assertEqual(js[-1]["usage"]["prompt_tokens"], 3)
        self.assertEqual(js[-1]["usage"]["completion_tokens"], 4)
        self.assertTrue(self.last_log()["body"]["stream_options"]["include_usage"])

    def test_stream_without_usage(self):
        st, ev, raw = self.stream(self.P, {"model": "gpt-x", "stream": True,
                                           "messages": [{"role": "user", "content": "hi"}]}, OPENAI_H)
        js = [d for _, d in self.json_events(ev)]
        self.assertTrue(all(c["choices"] for c in js))
        self.assertNotIn("usage", js[0])

    def test_stream_tool_call(self):
        st, ev, raw = self.stream(self.P, {"model": "gpt-x", "stream": True, "tools": TOOLS_OAI,
                                           "messages": [{"role": "user", "content": "look up the weather"}]},
                                  OPENAI_H)
        js = [d for _, d in self.json_events(ev)]
        first = js[0]["choices"][0]["delta"]["tool_calls"][0]
        self.assertEqual((first["index"], first["type"], first["function"]["name"]), (0, "function", "search"))
        self.assertTrue(first["id"])
        later = [c["choices"][0]["delta"]["tool_calls"][0] for c in js[1:] if c["choices"][0]["delta"].get("tool_calls")]
        self.assertGreater(len(later), 1)
        self.assertTrue(all("id" not in t and "name" not in t["function"] for t in later))
        args = "".join(t["function"]["arguments"] for t in later)
        self.assertEqual(json.loads(args), {"query": "look up the weather"})
        self.assertEqual(js[-1]["choices"][0]["finish_reason"], "tool_calls")

    def test_auth(self):
        st, _, b = self.post(self.P, {"model": "gpt-x", "messages": []}, {})
        self.assertEqual(st, 401)
        self.assertEqual(set(b["error"]), {"message", "type", "param", "code"})
        with FakeProviders(api_key="right").start() as f2:
            req = urllib.request.Request(f2.openai_base_url + "/chat/completions", method="POST",
                                         data=b'{"model":"m","messages":[]}', headers={"Authorization": "Bearer wrong"})
            with self.assertRaises(urllib.error.HTTPError) as cm:
                urllib.request.urlopen(req, timeout=5)
            self.assertEqual(cm.exception.code, 401)
            self.assertEqual(json.loads(cm.exception.read())["error"]["code"], "invalid_api_key")

    def test_bad_json_is_400(self):
        st, _, b = self.post(self.P, b"{nope", OPENAI_H)
        self.assertEqual(st, 400)
        self.assertEqual(b["error"]["type"], "invalid_request_error")


class TestAnthropic(FakeTest):
    P = "/v1/messages"

    def body(self, model="claude-x", text="hello world", **kw):
        return dict({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": text}]}, **kw)

    def test_json_echo_and_usage(self):
        st, h, b = self.post(self.P, self.body(system="you are terse"), ANTHROPIC_H)
        self.assertEqual(st, 200)
        self.assertEqual((b["type"], b["role"], b["model"], b["stop_reason"]), ("message", "assistant", "claude-x",
                                                                                "end_turn"))
        self.assertEqual(b["content"], [{"type": "text", "text": "echo: hello world"}])
        self.assertEqual((b["usage"]["input_tokens"], b["usage"]["output_tokens"]), (5, 3))
        self.assertIn("request-id", h)

    def test_headers_required(self):
        st, _, b = self.post(self.P, self.body(), {"x-api-key": "k"})
        self.assertEqual(st, 400)
        self.assertEqual(b["type"], "error")
        self.assertEqual(b["error"]["type"], "invalid_request_error")
        self.assertIn("anthropic-version", b["error"]["message"])
        st, _, b = self.post(self.P, self.body(), {"anthropic-version": "2023-06-01"})
        self.assertEqual((st, b["error"]["type"]), (401, "authentication_error"))
        st, _, b = self.post(self.P, self.body(), {"Authorization": "Bearer k", "anthropic-version": "2023-06-01"})
        self.assertEqual(st, 200)
        self.assertEqual(self.last_log()["headers"]["authorization"], "Bearer k")
        st, _, b = self.post(self.P, {"model": "c", "messages": []}, ANTHROPIC_H)
        self.assertEqual(st, 400)
        self.assertIn("max_tokens", b["error"]["message"])

    def test_tool_use_then_final(self):
        st, _, b = self.post(self.P, self.body(text="find dogs", tools=TOOLS_ANT), ANTHROPIC_H)
        self.assertEqual(b["stop_reason"], "tool_use")
        blk = b["content"][0]
        self.assertEqual((blk["type"], blk["name"], blk["input"]), ("tool_use", "search", {"query": "find dogs"}))
        msgs = [{"role": "user", "content": "find dogs"}, {"role": "assistant", "content": b["content"]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": blk["id"],
                                              "content": [{"type": "text", "text": "two dogs"}]}]}]
        st, _, b = self.post(self.P, {"model": "claude-x", "max_tokens": 9, "messages": msgs, "tools": TOOLS_ANT},
                             ANTHROPIC_H)
        self.assertEqual(b["content"], [{"type": "text", "text": "final: two dogs"}])
        self.assertEqual(b["stop_reason"], "end_turn")

    def test_stream_text(self):
        st, ev, raw = self.stream(self.P, self.body(text="a b c d", stream=True), ANTHROPIC_H)
        self.assertEqual(st, 200)
        names = [e for e, _, _ in ev]
        self.assertEqual(names[0], "message_start")
        self.assertEqual(names[-3:], ["content_block_stop", "message_delta", "message_stop"])
        self.assertIn("ping", names)
        js = self.json_events(ev)
        self.assertTrue(all(e == d["type"] for e, d in js))
        self.assertEqual(js[0][1]["message"]["usage"]["input_tokens"], 4)
        text = "".join(d["delta"]["text"] for e, d in js if e == "content_block_delta")
        self.assertEqual(text, "echo: a b c d")
        md = [d for e, d in js if e == "message_delta"][0]
        self.assertEqual((md["delta"]["stop_reason"], md["usage"]["output_tokens"]), ("end_turn", 5))

    def test_stream_tool(self):
        st, ev, raw = self.stream(self.P, self.body(text="weather in paris", stream=True, tools=TOOLS_ANT),
                                  ANTHROPIC_H)
        js = self.json_events(ev)
        start = [d for e, d in js if e == "content_block_start"][0]["content_block"]
        self.assertEqual((start["type"], start["name"], start["input"]), ("tool_use", "search", {}))
        parts = [d["delta"]["partial_json"] for e, d in js if e == "content_block_delta"]
        self.assertTrue(all(d["delta"]["type"] == "input_json_delta" for e, d in js if e == "content_block_delta"))
        self.assertGreater(len(parts), 2)
        self.assertEqual(json.loads("".join(parts)), {"query": "weather in paris"})
        self.assertEqual([d for e, d in js if e == "message_delta"][0]["delta"]["stop_reason"], "tool_use")


class TestGemini(FakeTest):
    def body(self, text="hello world", **kw):
        return dict({"contents": [{"role": "user", "parts": [{"text": text}]}]}, **kw)

    def test_json_echo(self):
        st, _, b = self.post(gem_path("gemini-x"), self.body(systemInstruction={"parts": [{"text": "be nice"}]}),
                             GEMINI_H)
        self.assertEqual(st, 200)
        c = b["candidates"][0]
        self.assertEqual(c["content"], {"role": "model", "parts": [{"text": "echo: hello world"}]})
        self.assertEqual(c["finishReason"], "STOP")
        u = b["usageMetadata"]
        self.assertEqual((u["promptTokenCount"], u["candidatesTokenCount"], u["totalTokenCount"]), (4, 3, 7))
        # key in the query string works too; no key is 403
        st, _, b = self.post(gem_path("gemini-x") + "?key=abc", self.body(), {})
        self.assertEqual(st, 200)
        st, _, b = self.post(gem_path("gemini-x"), self.body(), {})
        self.assertEqual((st, b["error"]["status"]), (403, "PERMISSION_DENIED"))

    def test_tool_call_signature_roundtrip(self):
        st, _, b = self.post(gem_path("gemini-x"), self.body(text="find owls", tools=TOOLS_GEM), GEMINI_H)
        part = b["candidates"][0]["content"]["parts"][0]
        self.assertEqual(part["functionCall"], {"name": "search", "args": {"query": "find owls"}})
        self.assertRegex(part["thoughtSignature"], r"^sig-\d+$")
        resp = {"role": "user", "parts": [{"functionResponse": {"name": "search", "response": {"result": "one owl"}}}]}
        good = {"contents": [{"role": "user", "parts": [{"text": "find owls"}]}, {"role": "model", "parts": [part]},
                             resp], "tools": TOOLS_GEM}
        st, _, b = self.post(gem_path("gemini-x"), good, GEMINI_H)
        self.assertEqual(st, 200)
        self.assertEqual(b["candidates"][0]["content"]["parts"], [{"text": "final: one owl"}])
        self.assertEqual(self.last_log()["body"]["contents"][1]["parts"][0]["thoughtSignature"],
                         part["thoughtSignature"])
        stripped = json.loads(json.dumps(good))
        del stripped["contents"][1]["parts"][0]["thoughtSignature"]
        st, _, b = self.post(gem_path("gemini-x"), stripped, GEMINI_H)
        self.assertEqual((st, b["error"]["status"]), (400, "INVALID_ARGUMENT"))
        self.assertIn("thought_signature", b["error"]["message"])
        stripped["contents"][1]["parts"][0]["thoughtSignature"] = "sig-forged"
        st, _, b = self.post(gem_path("gemini-x"), stripped, GEMINI_H)
        self.assertEqual(st, 400)

    def test_stream_sse_crlf(self):
        st, ev, raw = self.stream(gem_path("gemini-x", True), self.body(text="w1 w2 w3"), GEMINI_H)
        self.assertEqual(st, 200)
        self.assertIn("\r\n\r\n", raw)
        self.assertNotIn("\n\n", raw.replace("\r\n", ""))
        self.assertTrue(all(line.endswith("\r") or line == "" for line in raw.split("\n")[:-1]))
        js = [d for _, d in self.json_events(ev)]
        self.assertGreaterEqual(len(js), 4)
        text = "".join(p["text"] for c in js for p in c["candidates"][0]["content"]["parts"])
        self.assertEqual(text, "echo: w1 w2 w3")
        self.assertEqual(js[-1]["candidates"][0]["finishReason"], "STOP")
        self.assertTrue(all("finishReason" not in c["candidates"][0] for c in js[:-1]))
        self.assertEqual(js[-1]["usageMetadata"]["candidatesTokenCount"], 4)

    def test_stream_tool(self):
        st, ev, raw = self.stream(gem_path("gemini-x", True), self.body(tools=TOOLS_GEM), GEMINI_H)
        js = [d for _, d in self.json_events(ev)]
        part = js[-1]["candidates"][0]["content"]["parts"][0]
        self.assertEqual(part["functionCall"]["name"], "search")
        self.assertTrue(part["thoughtSignature"].startswith("sig-"))

    def test_stream_without_alt_sse_is_json_array(self):
        st, _, b = self.post("/v1beta/models/gemini-x:streamGenerateContent", self.body(text="q"), GEMINI_H)
        self.assertEqual(st, 200)
        self.assertIsInstance(b, list)
        self.assertEqual("".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in b), "echo: q")


class TestTiming(unittest.TestCase):
    def test_deltas_arrive_over_time(self):
        with FakeProviders() as fake:   # default 20 ms between chunks
            t = FakeTest()
            t.fake = fake
            st, ev, _ = t.stream("/v1/chat/completions", {"model": "m", "stream": True, "messages": [
                {"role": "user", "content": "a b c d e f g h"}]}, OPENAI_H)
            times = [x[2] for x in ev]
            self.assertGreater(times[-1] - times[0], 0.15)   # 10 chunk gaps of 20 ms


class TestMisbehaviour(FakeTest):
    def test_429_then_ok_each_provider(self):
        st, h, b = self.post("/v1/chat/completions", {"model": "fake-429-then-ok", "messages": []}, OPENAI_H)
        self.assertEqual((st, h["retry-after"], h["retry-after-ms"]), (429, "1", "50"))
        self.assertEqual(b["error"]["code"], "rate_limit_exceeded")
        st, h, b = self.post("/v1/chat/completions", {"model": "fake-429-then-ok", "messages": []}, OPENAI_H)
        self.assertEqual(st, 200)
        ant = {"model": "fake-429-then-ok", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        st, h, b = self.post("/v1/messages", ant, ANTHROPIC_H)
        self.assertEqual(st, 200, "the counter is per model name, shared by providers")
        ant["model"] = "claude-fake-429-once"
        st, h, b = self.post("/v1/messages", ant, ANTHROPIC_H)
        self.assertEqual((st, h["retry-after"], b["error"]["type"]), (429, "1", "rate_limit_error"))
        self.assertEqual(self.post("/v1/messages", ant, ANTHROPIC_H)[0], 200)
        gb = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
        st, h, b = self.post(gem_path("gemini-fake-429-then-ok"), gb, GEMINI_H)
        self.assertEqual((st, b["error"]["code"], b["error"]["status"]), (429, 429, "RESOURCE_EXHAUSTED"))
        self.assertNotIn("retry-after", h)
        ri = [d for d in b["error"]["details"] if d["@type"].endswith("google.rpc.RetryInfo")]
        self.assertEqual(ri[0]["retryDelay"], "1s")
        self.assertEqual(self.post(gem_path("gemini-fake-429-then-ok"), gb, GEMINI_H)[0], 200)

    def test_500_always_once_xn_and_reset(self):
        body = {"model": "fake-500", "messages": []}
        for _ in range(3):
            st, _, b = self.post("/v1/chat/completions", body, OPENAI_H)
            self.assertEqual((st, b["error"]["type"]), (500, "server_error"))
        body["model"] = "fake-500-once-r"
        self.assertEqual(self.post("/v1/chat/completions", body, OPENAI_H)[0], 500)
        self.assertEqual(self.post("/v1/chat/completions", body, OPENAI_H)[0], 200)
        body["model"] = "fake-503-x2-r"
        self.assertEqual([self.post("/v1/chat/completions", body, OPENAI_H)[0] for _ in range(3)], [503, 503, 200])
        with urllib.request.urlopen(urllib.request.Request(self.fake.url + "/_reset", data=b"", method="POST")) as r:
            self.assertEqual(r.status, 200)
        self.assertEqual(self.fake.log(), [])
        body["model"] = "fake-500-once-r"
        self.assertEqual(self.post("/v1/chat/completions", body, OPENAI_H)[0], 500)

    def test_529_overloaded(self):
        st, _, b = self.post("/v1/messages", {"model": "fake-529", "max_tokens": 5, "messages": []}, ANTHROPIC_H)
        self.assertEqual(st, 529)
        self.assertEqual(b["type"], "error")
        self.assertEqual(b["error"], {"type": "overloaded_error", "message": "Overloaded"})
        st, _, b = self.post(gem_path("fake-500"), {"contents": [{"parts": [{"text": "x"}]}]}, GEMINI_H)
        self.assertEqual((st, b["error"]["code"], b["error"]["status"]), (500, 500, "INTERNAL"))

    def test_malformed(self):
        st, h, b = self.post("/v1/chat/completions", {"model": "fake-malformed", "messages": []}, OPENAI_H)
        self.assertEqual(st, 200)
        self.assertEqual(h["content-type"], "application/json")
        self.assertIsInstance(b, bytes)    # not JSON
        st, ev, raw = self.stream("/v1/messages", {"model": "fake-malformed", "max_tokens": 5, "stream": True,
                                                   "messages": [{"role": "user", "content": "x"}]}, ANTHROPIC_H)
        self.assertEqual(st, 200)
        with self.assertRaises(ValueError):
            [json.loads(d) for _, d, _ in ev]

    def test_reset_mid_stream(self):
        for path, body, hdr in (
                ("/v1/chat/completions", {"model": "fake-reset", "stream": True,
                                          "messages": [{"role": "user", "content": "a b c d e"}]}, OPENAI_H),
                ("/v1/messages", {"model": "fake-reset", "stream": True, "max_tokens": 9,
                                  "messages": [{"role": "user", "content": "a b c d e"}]}, ANTHROPIC_H),
                (gem_path("fake-reset", True), {"contents": [{"role": "user", "parts": [{"text": "a"}]}]}, GEMINI_H)):
            with self.subTest(path=path):
                conn = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=5)
                conn.request("POST", path, json.dumps(body), hdr)
                r = conn.getresponse()
                self.assertEqual(r.status, 200)
                got = b""
                with self.assertRaises(ConnectionResetError):   # an RST, not a clean FIN
                    while True:
                        line = r.readline()
                        if not line:
                            break
                        got += line
                if path != gem_path("fake-reset", True):
                    self.assertIn(b"echo:", got)
                self.assertNotIn(b"[DONE]", got)
                self.assertNotIn(b"message_stop", got)
                self.assertNotIn(b"finishReason", got)
                conn.close()
        # Non-streaming: half a body, then RST
        conn = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=5)
        conn.request("POST", "/v1/chat/completions", json.dumps({"model": "fake-reset", "messages": []}), OPENAI_H)
        r = conn.getresponse()
        self.assertEqual(r.status, 200)
        with self.assertRaises(ConnectionResetError):
            r.read()
        conn.close()
        self.assertGreaterEqual(self.fake.wait_for(lambda s: s["reset_count"] >= 4)["reset_count"], 4)

    def test_stream_error_events(self):
        st, ev, raw = self.stream("/v1/messages", {"model": "fake-stream-error", "max_tokens": 9, "stream": True,
                                                   "messages": [{"role": "user", "content": "a b c"}]}, ANTHROPIC_H)
        self.assertEqual(st, 200)
        js = self.json_events(ev)
        self.assertEqual(js[-1], ("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                        "message": "Overloaded"}}))
        self.assertIn("content_block_delta", [e for e, _ in js])
        st, ev, raw = self.stream("/v1/chat/completions", {"model": "fake-stream-error", "stream": True,
                                                           "messages": [{"role": "user", "content": "a b c"}]},
                                  OPENAI_H)
        js = [d for _, d in self.json_events(ev)]
        self.assertEqual(set(js[-1]), {"error"})
        self.assertEqual(js[-1]["error"]["type"], "server_error")
        self.assertNotIn("[DONE]", raw)
        st, ev, raw = self.stream(gem_path("fake-stream-error", True),
                                  {"contents": [{"role": "user", "parts": [{"text": "a b c"}]}]}, GEMINI_H)
        js = [d for _, d in self.json_events(ev)]
        self.assertEqual(js[-1]["error"]["status"], "UNAVAILABLE")
        self.assertIn("candidates", js[0])
        st, ev, raw = self.stream(gem_path("fake-stream-error-raw", True),
                                  {"contents": [{"role": "user", "parts": [{"text": "a b c"}]}]}, GEMINI_H)
        self.assertEqual(st, 200)
        tail = raw[raw.rindex("\r\n\r\n") + 4:]
        self.assertTrue(tail.startswith("{\n"))
        self.assertEqual(json.loads(tail)["error"]["code"], 503)

    def test_hang_counts_cancel(self):
        before = self.fake.stats()["cancelled"]
        conn = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=0.5)
        conn.request("POST", "/v1/chat/completions", json.dumps({"model": "fake-hang", "messages": []}), OPENAI_H)
        with self.assertRaises((socket.timeout, TimeoutError)):
            conn.getresponse()
        s = self.fake.stats()
        self.assertEqual((s["hanging"], s["cancelled"]), (1, before))
        self.assertGreaterEqual(self.get("/_stats")["open_connections"], 1)
        conn.close()
        s = self.fake.wait_for(lambda s: s["cancelled"] > before)
        self.assertEqual((s["cancelled"], s["hanging"], s["in_flight"]), (before + 1, 0, 0))
        self.assertEqual(s["cancelled_by_model"]["fake-hang"], 1)
        self.assertEqual(self.fake.log()[-1]["outcome"], "cancelled")
        self.assertEqual(self.fake.wait_for(lambda s: s["open_connections"] == 0)["open_connections"], 0)

    def test_stall_and_slow_cancel(self):
        before = self.fake.stats()["cancelled"]
        conn = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=0.5)
        conn.request("POST", "/v1/messages", json.dumps({"model": "fake-stall", "max_tokens": 5, "stream": True,
                                                         "messages": [{"role": "user", "content": "a b c"}]}),
                     ANTHROPIC_H)
        r = conn.getresponse()
        self.assertEqual(r.status, 200)
        got = b""
        with self.assertRaises((socket.timeout, TimeoutError)):
            while True:
                got += r.readline()
        self.assertIn(b"text_delta", got)
        conn.close()
        self.fake.wait_for(lambda s: s["cancelled"] > before)
        # slow stream: chunks 0.2 s apart; leave after the first delta
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=5)
        conn.request("POST", gem_path("fake-slow", True),
                     json.dumps({"contents": [{"role": "user", "parts": [{"text": "a b c d e f"}]}]}), GEMINI_H)
        r = conn.getresponse()
        lines = [r.readline(), r.readline(), r.readline(), r.readline()]
        self.assertGreater(time.monotonic() - t0, 0.15)
        self.assertIn(b"candidates", b"".join(lines))
        conn.close()
        s = self.fake.wait_for(lambda s: s["cancelled"] >= before + 2)
        self.assertEqual(s["cancelled"], before + 2)

    def test_slow_json(self):
        t0 = time.monotonic()
        st, _, b = self.post("/v1/chat/completions", {"model": "fake-slow", "messages": [
            {"role": "user", "content": "x"}]}, OPENAI_H)
        self.assertEqual((st, b["choices"][0]["message"]["content"]), (200, "echo: x"))
        self.assertGreater(time.monotonic() - t0, 0.9)

    def test_max_tokens(self):
        st, _, b = self.post("/v1/messages", {"model": "fake-max-tokens", "max_tokens": 1,
                                              "messages": [{"role": "user", "content": "a b"}]}, ANTHROPIC_H)
        self.assertEqual((b["stop_reason"], b["content"][0]["text"]), ("max_tokens", "echo:"))
        st, _, b = self.post("/v1/chat/completions", {"model": "fake-max-tokens", "messages": []}, OPENAI_H)
        self.assertEqual(b["choices"][0]["finish_reason"], "length")
        st, _, b = self.post(gem_path("fake-max-tokens"), {"contents": [{"parts": [{"text": "a"}]}]}, GEMINI_H)
        self.assertEqual(b["candidates"][0]["finishReason"], "MAX_TOKENS")


class TestControl(FakeTest):
    def test_log_keepalive_and_chunked_request(self):
        self.fake.reset()
        conn = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=5)
        for i in range(2):   # two requests on one kept-alive connection
            conn.request("POST", "/v1/messages", json.dumps({"model": "claude-x", "max_tokens": 5,
                                                             "messages": [{"role": "user", "content": f"n{i}"}]}),
                         dict(ANTHROPIC_H, **{"X-Custom-Thing": "v"}))
            r = conn.getresponse()
            self.assertEqual(json.loads(r.read())["content"][0]["text"], f"echo: n{i}")
        # a chunked request body
        conn.putrequest("POST", "/v1/chat/completions")
        conn.putheader("Authorization", "Bearer zz")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": "chunky"}]}).encode()
        conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
        r = conn.getresponse()
        self.assertEqual(json.loads(r.read())["choices"][0]["message"]["content"], "echo: chunky")
        conn.close()
        log = self.get("/_log")
        self.assertEqual([e["provider"] for e in log], ["anthropic", "anthropic", "openai"])
        e = log[0]
        self.assertEqual((e["method"], e["path"], e["status"], e["outcome"]), ("POST", "/v1/messages", 200, "ok"))
        self.assertEqual(e["headers"]["x-api-key"], "sk-ant-test")
        self.assertEqual(e["headers"]["anthropic-version"], "2023-06-01")
        self.assertEqual(e["headers"]["x-custom-thing"], "v")
        self.assertEqual(e["body"]["messages"][0]["content"], "n0")
        self.assertEqual(len(self.get(f"/_log?since={log[1]['seq']}")), 1)
        self.assertEqual(self.get("/_stats")["requests"], 3)

    def test_unknown_route(self):
        st, _, b = self.post("/v2/whatever", {}, {})
        self.assertEqual(st, 404)


class TestCLI(unittest.TestCase):
    def test_cli_starts_and_serves(self):
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "providers.py"), "--port", "0"],
                             stdout=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            self.assertRegex(line, r"^fake providers listening on http://127\.0\.0\.1:\d+$")
            url = line.split()[-1]
            with urllib.request.urlopen(url + "/_stats", timeout=5) as r:
                self.assertEqual(json.loads(r.read())["requests"], 0)
        finally:
            p.terminate()
            self.assertEqual(p.wait(5), 0)
            p.stdout.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""Spec 4: SSE streaming as it happens, and the coroutine scheduler under 1000 concurrent sleeps."""

import asyncio
import json
import time

from .harness import SLOW, ServerTestCase, measure, parse_http_response


class StreamingTests(ServerTestCase):
    FIXTURES = ("stream", "echo")
    AGENTS = {
        "stream_fail": '''
return {
  execute = function(task, ctx)
    ctx.emit({step = 1})
    luagent.sleep(50)
    error("stream boom")
  end,
}
''',
        "stream_after_sleep": '''
return {
  execute = function(task, ctx)
    luagent.sleep(20)
    ctx.emit({n = 1})
    ctx.emit({n = 2})
    return "done"
  end,
}
''',
        "stream_values": '''
return {
  execute = function(task, ctx)
    ctx.emit({step = 1, items = {1, 2}, name = "x"})
    ctx.emit(42)
    ctx.emit("text/with slash")
    return {n = 3}
  end,
}
''',
    }

    def test_events_arrive_as_they_happen(self):
        status, headers, events, raw = self.server.sse_request("stream", {})
        self.assertEqual(200, status, raw)
        self.assertTrue(headers.get("content-type", "").startswith("text/event-stream"), headers)
        names = [e[0] for e in events]
        emits = [e for e in events if e[0] == "emit"]
        results = [e for e in events if e[0] == "result"]
        self.assertEqual(["a", "b"], [e[1] for e in emits], raw)
        self.assertEqual(1, len(results), f"expected exactly one result event: {names}\n{raw}")
        self.assertEqual("result", names[-1], f"result must be the last event: {names}")
        self.assertNotIn("error", names)
        first, second, res = emits[0][2], emits[1][2], results[0][2]
        measure("first emit before result", f"{(res - first) * 1000:.0f} ms")
        self.assertGreaterEqual(res - first, 0.3, "first emit was not sent as it happened (buffered?)")
        self.assertGreaterEqual(res - second, 0.2, "second emit was not sent as it happened")
        self.assertGreaterEqual(second - first, 0.2, "emits not spaced by the agent's sleep")

    def test_events_written_together_after_a_wait_arrive_together(self):
        # Emits and the result written in one slice resumed from the loop (after a sleep): the
        # first chunk goes at once and the rest waits for h2o's go-ahead, which comes from the next
        # poll. That poll must not sleep (it did: the rest arrived up to a second late).
        for _ in range(3):
            start = time.monotonic()
            status, _, events, raw = self.server.sse_request("stream_after_sleep", {})
            self.assertEqual(200, status, raw)
            self.assertEqual(["emit", "emit", "result"], [e[0] for e in events], raw)
            late = events[-1][2] - start
            measure("result after a 20 ms sleep", f"{late * 1000:.0f} ms")
            self.assertLess(late, 0.2 * SLOW, f"the stream's end arrived {late * 1000:.0f} ms after the request")

    def test_result_event_is_the_plain_reply(self):
        events = self.server.sse("stream", {"x": 1})
        results = [e[1] for e in events if e[0] == "result"]
        self.assertEqual(1, len(results))
        streamed = results[0]
        plain = self.assertOk(self.server.execute("stream", {"x": 1}))
        self.assertIsInstance(streamed, dict, f"result data is not a JSON object: {streamed!r}")
        self.assertEqual(set(plain), set(streamed), "streamed result has other fields than the plain reply")
        for k in ("agent", "version", "status", "result", "usage"):
            self.assertEqual(plain[k], streamed[k], k)
        self.assertEqual({"done": True}, streamed["result"])
        self.assertNotEqual(plain["execution_id"], streamed["execution_id"])

    def test_emit_values_are_json(self):
        events = self.server.sse("stream_values", {})
        emits = [e[1] for e in events if e[0] == "emit"]
        self.assertEqual([{"step": 1, "items": [1, 2], "name": "x"}, 42, "text/with slash"], emits)
        self.assertEqual([{"n": 3}], [e[1]["result"] for e in events if e[0] == "result"])

    def test_agent_error_while_streaming(self):
        status, headers, events, raw = self.server.sse_request("stream_fail", {})
        self.assertEqual(200, status, raw)
        names = [e[0] for e in events]
        self.assertEqual(["emit", "error"], names, raw)
        data = events[-1][1]
        self.assertIsInstance(data, dict, raw)
        err = data.get("error")
        self.assertIsInstance(err, dict, raw)
        self.assertEqual("agent_error", err.get("code"), raw)
        self.assertIn("stream boom", err.get("message", ""))
        self.assertNotIn("stack traceback", raw)

    def test_non_streaming_client_unaffected(self):
        r = self.server.execute("stream", {})
        self.assertOk(r, {"done": True})
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"))


class SchedulerTests(ServerTestCase):
    """One worker, 1000 concurrent executions that each sleep 100 ms: they must overlap."""

    WORKERS = 1
    FIXTURES = ("sleepy",)
    N = 1000

    async def one(self, i, port):
        body = json.dumps({"task": {"ms": 100, "id": i}}).encode()
        req = (f"POST /api/v1/agents/sleepy/execute HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
               f"Connection: close\r\n\r\n").encode() + body
        for attempt in range(3):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.05)
        try:
            writer.write(req)
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
        status, _, raw = parse_http_response(data)
        return i, status, raw

    async def batch(self, port):
        t0 = time.monotonic()
        replies = await asyncio.wait_for(
            asyncio.gather(*(self.one(i, port) for i in range(self.N)), return_exceptions=True),
            timeout=60 * SLOW)
        return replies, time.monotonic() - t0

    def test_thousand_concurrent_sleeps(self):
        replies, wall = asyncio.run(self.batch(self.server.port))
        measure(f"{self.N} x sleep(100) on 1 worker", f"{wall:.2f} s")
        errors = [r for r in replies if isinstance(r, BaseException)]
        self.assertEqual([], [repr(e) for e in errors[:5]], f"{len(errors)} requests failed at the socket level")
        bad = []
        for i, status, raw in replies:
            if status != 200:
                bad.append((i, status, raw[:200]))
                continue
            body = json.loads(raw)
            if body.get("result") != {"slept": 100, "id": i}:
                bad.append((i, "wrong result", body.get("result")))
        self.assertEqual([], bad[:5], f"{len(bad)} of {self.N} replies wrong")
        self.assertLess(wall, 3.0 * SLOW, f"{self.N} concurrent 100 ms sleeps took {wall:.2f}s on one worker")
        self.assertEqual(200, self.server.request("GET", "/health").status)

"""W3C traceparent end to end: a request's trace context is accepted (or started when absent or
invalid), answered in the reply's traceparent header, carried by the execution's luagent.http call to a
local receiver and its luagent.ai call to a fake provider (same trace id, a new parent id each), and
written as trace_id into every log line of the request and its execution."""

import re
import threading
from http.server import BaseHTTPRequestHandler

from .harness import LocalHTTP, ServerTestCase, WithFakeProviders

TRACED = r'''
return {
  timeout_ms = 20000,
  execute = function(task, ctx)
    ctx.log.info("calling out", {step = 1})
    local r = luagent.http.request{url = task.url, headers = {["x-probe"] = task.probe}}
    local a = luagent.ai.chat{model = "gpt-4o-mini", messages = {{role = "user", content = task.probe}}}
    luagent.log.warn("done calling out")
    return {status = r.status, content = a.content}
  end,
}
'''

TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Receiver(BaseHTTPRequestHandler):
    seen = {}
    lock = threading.Lock()

    def do_GET(self):
        with Receiver.lock:
            Receiver.seen[self.headers.get("x-probe")] = self.headers.get("traceparent")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class TraceTests(WithFakeProviders, ServerTestCase):
    WORKERS = 2
    AGENTS = {"traced": TRACED}
    FAKE_OPTIONS = {"chunk_delay": 0.01}

    @classmethod
    def setUpClass(cls):
        cls.receiver = LocalHTTP(Receiver)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.receiver.stop()

    def run_traced(self, probe, headers=None, options=None):
        r = self.server.execute("traced", {"url": self.receiver.url("/hook"), "probe": probe}, headers=headers,
                                options=options)
        return r

    def provider_traceparent(self, probe):
        hits = [e for e in self.fake.log() if probe in str(e.get("body"))]
        self.assertEqual(1, len(hits), f"the fake provider saw {len(hits)} requests for {probe}")
        return hits[0]["headers"].get("traceparent")

    def check_propagated(self, probe, trace_id, reply_span, request_id, incoming_span=None):
        http_tp = Receiver.seen.get(probe)
        ai_tp = self.provider_traceparent(probe)
        spans = set()
        for who, tp in (("luagent.http", http_tp), ("luagent.ai", ai_tp)):
            m = TP_RE.match(tp or "")
            self.assertTrue(m, f"{who} call carried traceparent {tp!r}")
            self.assertEqual(trace_id, m.group(1), f"{who}: same trace id")
            self.assertNotEqual(reply_span, m.group(2), f"{who}: a parent id of its own")
            if incoming_span is not None:
                self.assertNotEqual(incoming_span, m.group(2))
            spans.add(m.group(2))
        self.assertEqual(2, len(spans), "each outgoing call has its own span id")
        # every log line of the request and of its execution carries the trace id
        lines = self.server.find_logs(lambda l: l.get("request_id") == request_id)
        msgs = {l.get("msg") for l in lines}
        self.assertTrue({"calling out", "done calling out", "request"} <= msgs, msgs)
        for l in lines:
            self.assertEqual(trace_id, l.get("trace_id"), l)

    def test_incoming_traceparent_is_continued(self):
        r = self.run_traced("probe-in", headers={"traceparent": INCOMING, "X-Request-Id": "trace-req-1"})
        self.assertOk(r)
        m = TP_RE.match(r.headers.get("traceparent", ""))
        self.assertTrue(m, r.headers)
        self.assertEqual("4bf92f3577b34da6a3ce929d0e0e4736", m.group(1))
        self.assertNotEqual("00f067aa0ba902b7", m.group(2))
        self.assertEqual("01", m.group(3))
        self.server.wait_log(lambda l: l.get("request_id") == "trace-req-1" and l.get("msg") == "request")
        self.check_propagated("probe-in", m.group(1), m.group(2), "trace-req-1", incoming_span="00f067aa0ba902b7")

    def test_absent_traceparent_starts_a_trace(self):
        r = self.run_traced("probe-new", headers={"X-Request-Id": "trace-req-2"})
        self.assertOk(r)
        m = TP_RE.match(r.headers.get("traceparent", ""))
        self.assertTrue(m, r.headers)
        self.assertNotEqual("0" * 32, m.group(1))
        self.server.wait_log(lambda l: l.get("request_id") == "trace-req-2" and l.get("msg") == "request")
        self.check_propagated("probe-new", m.group(1), m.group(2), "trace-req-2")

    def test_invalid_traceparent_starts_a_new_trace(self):
        bad = ["00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
               "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
               "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # uppercase
               "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
               "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  # 00 with extra
               "garbage"]
        for i, tp in enumerate(bad):
            with self.subTest(tp=tp):
                r = self.server.request("GET", "/health", headers={"traceparent": tp})
                self.assertEqual(200, r.status)
                m = TP_RE.match(r.headers.get("traceparent", ""))
                self.assertTrue(m, r.headers)
                self.assertNotEqual("4bf92f3577b34da6a3ce929d0e0e4736", m.group(1))
                self.assertNotEqual("0" * 32, m.group(1))
        r = self.run_traced("probe-bad", headers={"traceparent": bad[0], "X-Request-Id": "trace-req-3"})
        self.assertOk(r)
        m = TP_RE.match(r.headers["traceparent"])
        self.server.wait_log(lambda l: l.get("request_id") == "trace-req-3" and l.get("msg") == "request")
        self.check_propagated("probe-bad", m.group(1), m.group(2), "trace-req-3")

    def test_async_execution_keeps_the_trace(self):
        r = self.run_traced("probe-async", headers={"traceparent": INCOMING}, options={"mode": "async"})
        self.assertEqual(202, r.status, self.ctx_msg(r))
        status_url = r.body["status_url"]
        rec, _, ok = self.poll(lambda: self.server.request("GET", status_url).body,
                               lambda b: isinstance(b, dict) and b.get("status") in ("succeeded", "failed"),
                               timeout=10)
        self.assertTrue(ok and rec["status"] == "succeeded", rec)
        m = TP_RE.match(Receiver.seen.get("probe-async") or "")
        self.assertTrue(m, Receiver.seen)
        self.assertEqual("4bf92f3577b34da6a3ce929d0e0e4736", m.group(1))
        self.assertNotEqual("00f067aa0ba902b7", m.group(2))
        self.assertTrue(TP_RE.match(self.provider_traceparent("probe-async") or ""))


class TracingOffTests(ServerTestCase):
    WORKERS = 1
    AGENTS = {"echo": 'return {execute = function(task, ctx) ctx.log.info("x") return task end}'}
    ENV = {"LUAGENT_TRACING": "off"}

    def test_no_traceparent_no_trace_id(self):
        r = self.server.execute("echo", {"a": 1}, headers={"traceparent": INCOMING, "X-Request-Id": "off-1"})
        self.assertOk(r)
        self.assertNotIn("traceparent", r.headers)
        self.server.wait_log(lambda l: l.get("request_id") == "off-1" and l.get("msg") == "request")
        for l in self.server.find_logs(lambda l: l.get("request_id") == "off-1"):
            self.assertNotIn("trace_id", l)

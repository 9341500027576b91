"""luagent.http.request: libcurl on the worker's loop, against a local upstream server."""

import http.server
import json
import socket
import threading
import time
import urllib.parse

from .harness import SLOW, LocalHTTP, ServerTestCase, measure


class Upstream:
    """A small HTTP/1.1 server with behaviours chosen by path; counts connections."""

    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0  # accepted
        self.closed_by_client = 0  # a /hang request whose client went away
        self.hanging = 0
        up = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                with up.lock:
                    up.connections += 1

            def reply(self, status, body, ctype="application/json", extra=()):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def route(self):
                url = urllib.parse.urlparse(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                body = self.body()
                if url.path == "/echo":
                    return self.reply(200, {"method": self.command, "body": body.decode(),
                                            "headers": {k.lower(): v for k, v in self.headers.items()}},
                                      extra=[("X-Multi", "a"), ("X-Multi", "b")])
                if url.path.startswith("/status/"):
                    return self.reply(int(url.path[8:]), {"status": int(url.path[8:])})
                if url.path == "/slow":
                    time.sleep(float(q.get("delay", "0.5")))
                    return self.reply(200, {"slept": float(q.get("delay", "0.5"))})
                if url.path == "/big":
                    return self.reply(200, b"x" * int(q["bytes"]), "text/plain")
                if url.path == "/chunks":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(int(q.get("n", "3"))):
                        data = f"chunk{i};".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                        time.sleep(float(q.get("delay", "0.2")))
                    self.wfile.write(b"0\r\n\r\n")
                    return None
                if url.path == "/hang":
                    with up.lock:
                        up.hanging += 1
                    self.connection.settimeout(30)
                    try:
                        if self.connection.recv(1) == b"":  # blocks until the client goes away
                            with up.lock:
                                up.closed_by_client += 1
                    except OSError:
                        with up.lock:
                            up.closed_by_client += 1
                    self.close_connection = True
                    return None
                return self.reply(404, {"error": "no route"})

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = route

        self.server = LocalHTTP(Handler)
        self.port = self.server.port
        self.url = self.server.url("")

    def stop(self):
        self.server.stop()


FETCH = r'''
return {
  timeout_ms = 20000,
  execute = function(task, ctx)
    local req = {url = task.url, method = task.method, headers = task.headers, body = task.body,
                 timeout_ms = task.timeout_ms, max_body_bytes = task.max_body_bytes}
    if task.catch then
      local ok, err = pcall(luagent.http.request, req)
      if ok then return {ok = true} end
      return {caught = err}
    end
    local res = luagent.http.request(req)
    return {status = res.status, headers = res.headers, body = res.body}
  end,
}
'''

STREAM = r'''
return {
  timeout_ms = 20000,
  execute = function(task, ctx)
    local res = luagent.http.request{url = task.url, stream = true}
    local got = {}
    while true do
      local chunk = res.read()
      if not chunk then break end
      got[#got + 1] = chunk
      ctx.emit({chunk = chunk})
    end
    return {status = res.status, body = table.concat(got)}
  end,
}
'''

HANG = r'''
return {
  timeout_ms = 400,
  execute = function(task, ctx)
    ctx.emit("calling")
    return luagent.http.request{url = task.url, timeout_ms = 15000}.status
  end,
}
'''


class HttpTests(ServerTestCase):
    WORKERS = 1
    AGENTS = {"fetch": FETCH, "stream": STREAM, "hang": HANG}

    @classmethod
    def setUpClass(cls):
        cls.up = Upstream()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.up.stop()

    def fetch(self, **task):
        return self.server.execute("fetch", task)

    def test_get_json(self):
        r = self.fetch(url=self.up.url + "/echo")
        res = self.assertOk(r)["result"]
        self.assertEqual(200, res["status"])
        self.assertEqual("application/json", res["headers"]["content-type"])
        self.assertEqual("a, b", res["headers"]["x-multi"])  # repeated headers joined
        self.assertEqual("GET", json.loads(res["body"])["method"])

    def test_post_table_body_is_json(self):
        r = self.fetch(url=self.up.url + "/echo", body={"a": [], "n": 9007199254740992},
                       headers={"X-Test": "yes"})
        sent = json.loads(self.assertOk(r)["result"]["body"])
        self.assertEqual("POST", sent["method"])
        self.assertEqual({"a": [], "n": 9007199254740992}, json.loads(sent["body"]))
        self.assertIn("9007199254740992", sent["body"])
        self.assertEqual("application/json", sent["headers"]["content-type"])
        self.assertEqual("yes", sent["headers"]["x-test"])

    def test_methods_and_string_body(self):
        r = self.fetch(url=self.up.url + "/echo", method="PUT", body="plain text",
                       headers={"Content-Type": "text/plain"})
        sent = json.loads(self.assertOk(r)["result"]["body"])
        self.assertEqual(("PUT", "plain text", "text/plain"),
                         (sent["method"], sent["body"], sent["headers"]["content-type"]))

    def test_error_statuses_are_returned_not_raised(self):
        r = self.fetch(url=self.up.url + "/status/503")
        self.assertEqual(503, self.assertOk(r)["result"]["status"])

    def test_connection_refused_raises_upstream_error(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        r = self.fetch(url=f"http://127.0.0.1:{port}/")
        self.assertEqual(502, r.status, r.describe())
        self.assertEqual("upstream_error", r.body["error"]["code"])
        r = self.fetch(url=f"http://127.0.0.1:{port}/", catch=True)
        self.assertEqual("upstream_error", self.assertOk(r)["result"]["caught"]["code"])

    def test_timeout_raises_upstream_timeout(self):
        t0 = time.monotonic()
        r = self.fetch(url=self.up.url + "/hang", timeout_ms=300, catch=True)
        took = time.monotonic() - t0
        self.assertEqual("upstream_timeout", self.assertOk(r)["result"]["caught"]["code"])
        self.assertLess(took, 3 * SLOW)
        measure("http timeout 300 ms took (s)", round(took, 3))

    def test_body_limit(self):
        r = self.fetch(url=self.up.url + "/big?bytes=5000", max_body_bytes=1000, catch=True)
        caught = self.assertOk(r)["result"]["caught"]
        self.assertIn("larger than 1000", caught["message"])
        r = self.fetch(url=self.up.url + "/big?bytes=5000")
        self.assertEqual(5000, len(self.assertOk(r)["result"]["body"]))

    def test_misuse_is_an_agent_error(self):
        for task in ({"url": "ftp://example.com/"}, {"url": self.up.url, "headers": {"Bad Name": "x"}},
                     {"url": self.up.url, "headers": {"X": "a\r\nInjected: yes"}},
                     {"url": self.up.url, "headers": {"X": "a\u0000\r\nInjected: yes"}},
                     {"url": self.up.url, "method": "get"}):
            r = self.fetch(**task)
            self.assertEqual(500, r.status, r.describe())
            self.assertEqual("agent_error", r.body["error"]["code"])

    def test_calls_overlap_on_one_worker(self):
        n = 20
        results = [None] * n

        def one(i):
            results[i] = self.fetch(url=self.up.url + "/slow?delay=0.5")

        t0 = time.monotonic()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        for r in results:
            self.assertEqual(200, self.assertOk(r)["result"]["status"])
        self.assertLess(took, 4 * SLOW)  # one after another: 10 s
        measure("20 upstream calls of 0.5 s on one worker (s)", round(took, 3))

    def test_connections_are_reused(self):
        self.fetch(url=self.up.url + "/echo")
        before = self.up.connections
        for _ in range(5):
            self.assertOk(self.fetch(url=self.up.url + "/echo"))
        self.assertEqual(before, self.up.connections)

    def test_streamed_body_arrives_in_pieces(self):
        status, headers, events, raw = self.server.sse_request(
            "stream", {"url": self.up.url + "/chunks?n=4&delay=0.3"})
        self.assertEqual(200, status, raw)
        emits = [e for e in events if e[0] == "emit"]
        result = [e for e in events if e[0] == "result"]
        self.assertEqual(1, len(result), raw)
        self.assertEqual("chunk0;chunk1;chunk2;chunk3;", result[0][1]["result"]["body"])
        self.assertGreaterEqual(len(emits), 3)  # pieces, not one body at the end
        self.assertGreater(result[0][2] - emits[0][2], 0.5)  # the first piece came well before the end

    def test_deadline_cancels_the_upstream_call(self):
        before = self.up.closed_by_client
        r = self.server.execute("hang", {"url": self.up.url + "/hang"})
        self.assertEqual(504, r.status, r.describe())
        self.assertEqual("timeout", r.body["error"]["code"])
        self.wait_for(lambda: self.up.closed_by_client > before, 3 * SLOW, "upstream connection closed")

    def test_client_disconnect_cancels_the_upstream_call(self):
        # an SSE client that goes away after the first event
        before_hang, before_closed = self.up.hanging, self.up.closed_by_client
        body = json.dumps({"task": {"url": self.up.url + "/hang"}}).encode()
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=5) as s:
            s.sendall(b"POST /api/v1/agents/fetch/execute HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            self.wait_for(lambda: self.up.hanging > before_hang, 3 * SLOW, "upstream request started")
        self.wait_for(lambda: self.up.closed_by_client > before_closed, 3 * SLOW, "upstream connection closed")
        self.assertEqual(200, self.server.request("GET", "/health").status)

    def wait_for(self, cond, timeout, what):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            time.sleep(0.02)
        self.fail(f"timed out waiting for: {what}\n{self.server.log_tail(10)}")

"""The provider path's HTTP/1.1 client (src/loop/upstream.c), through luagent.ai.chat, against a raw
socket server that frames its answers exactly as each test says: keep-alive reuse, chunked bodies
cut anywhere, bodies that end at close, 100 Continue, a reused connection the server drops, and
malformed answers."""

import json
import os
import socket
import ssl
import threading

from .harness import REPO, SLOW, ServerTestCase, class_tmpdir
from .test_tls import make_cert


def completion(text):
    return json.dumps({"id": "chatcmpl-raw", "object": "chat.completion", "model": "raw-model",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}).encode()


class RawUpstream:
    """Accepts connections; for each request read, calls answer(sock, n) with n the request's number
    (1-based, over all connections). answer writes raw bytes and returns True to keep the connection."""

    def __init__(self, answer, tls=None):
        self.answer = answer
        self.tls = tls  # an ssl.SSLContext (server side): TLS on every connection, on 127.0.0.1 and ::1
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = 0
        self.bodies = []
        if tls is not None and socket.has_dualstack_ipv6():
            self.sock = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True, backlog=64)
        else:
            self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.open = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _handshake(self, c):
        try:
            c.settimeout(10)
            t = self.tls.wrap_socket(c, server_side=True)
            t.settimeout(None)
            return t
        except (OSError, ssl.SSLError):
            c.close()
            return None

    def _read_request(self, c, buf):
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return None, b""
            buf += d
        head, rest = buf.split(b"\r\n\r\n", 1)
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v)
        while len(rest) < n:
            d = c.recv(65536)
            if not d:
                return None, b""
            rest += d
        return head + b"\r\n\r\n" + rest[:n], rest[n:]

    def _serve(self, c):
        if self.tls is not None and (c := self._handshake(c)) is None:
            return
        buf = b""
        try:
            while True:
                req, buf = self._read_request(c, buf)
                if req is None:
                    return
                with self.lock:
                    self.requests += 1
                    n = self.requests
                    self.bodies.append(req)
                if not self.answer(c, n):
                    return
        except OSError:
            return
        finally:
            c.close()

    def close(self):
        self.sock.close()
        with self.lock:
            for c in self.open:
                try:
                    c.close()
                except OSError:
                    pass


def content_length(c, text, extra=b""):
    body = completion(text)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra +
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return True


class UpstreamClientTests(ServerTestCase):
    WORKERS = 1
    ENV = {"LUAGENT_PROVIDERS_DIR": str(REPO / "providers")}
    AGENTS = {"ask": '''
return {execute = function(task)
  local ok, r = pcall(luagent.ai.chat, {model = "openai/gpt-4o-mini", base_url = task.base_url,
                                        prompt = "hi", retries = 0, timeout_ms = 10000})
  if not ok then return {error = r} end
  return {content = r.content, input_tokens = r.usage.input_tokens}
end}'''}

    def ask(self, up):
        r = self.server.execute("ask", {"base_url": f"http://127.0.0.1:{up.port}/v1"}, timeout=30 * SLOW)
        return self.assertOk(r)["result"]

    def serve(self, answer):
        up = RawUpstream(answer)
        self.addCleanup(up.close)
        return up

    def test_keep_alive_reuses_one_connection(self):
        up = self.serve(lambda c, n: content_length(c, f"answer {n}"))
        for i in range(1, 4):
            self.assertEqual({"content": f"answer {i}", "input_tokens": 3}, self.ask(up))
        self.assertEqual((1, 3), (up.connections, up.requests))
        self.assertIn(b"POST /v1/chat/completions HTTP/1.1\r\n", up.bodies[0])

    def test_chunked_body_cut_anywhere(self):
        def answer(c, n):
            body = completion("chunked " * 40)
            wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            for i in range(0, len(body), 37):
                part = body[i:i + 37]
                wire += hex(len(part))[2:].encode() + b"\r\n" + part + b"\r\n"
            wire += b"0\r\n\r\n"
            for i in range(0, len(wire), 13):  # every boundary: size lines, CRLFs, data
                c.sendall(wire[i:i + 13])
            return True
        up = self.serve(answer)
        self.assertEqual("chunked " * 40, self.ask(up)["content"])
        self.assertEqual("chunked " * 40, self.ask(up)["content"])
        self.assertEqual(1, up.connections)  # a complete chunked body keeps the connection

    def test_body_that_ends_at_close(self):
        def answer(c, n):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + completion(f"until close {n}"))
            return False  # close: that is the end of the body
        up = self.serve(answer)
        self.assertEqual("until close 1", self.ask(up)["content"])
        self.assertEqual("until close 2", self.ask(up)["content"])
        self.assertEqual(2, up.connections)

    def test_connection_close_header_is_honoured(self):
        up = self.serve(lambda c, n: content_length(c, "bye", b"Connection: close\r\n"))
        self.assertEqual("bye", self.ask(up)["content"])
        self.assertEqual("bye", self.ask(up)["content"])
        self.assertEqual(2, up.connections)

    def test_100_continue_is_skipped(self):
        def answer(c, n):
            c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            return content_length(c, "after continue")
        up = self.serve(answer)
        self.assertEqual("after continue", self.ask(up)["content"])

    def test_reused_connection_dropped_by_the_server_is_sent_again(self):
        def answer(c, n):
            if n == 2:
                return False  # read the request, close without a byte (an idle timeout racing it)
            return content_length(c, f"answer {n}")
        up = self.serve(answer)
        self.assertEqual("answer 1", self.ask(up)["content"])
        self.assertEqual("answer 3", self.ask(up)["content"])
        self.assertEqual((2, 3), (up.connections, up.requests))

    def test_fresh_connection_closed_without_answer_is_an_error(self):
        up = self.serve(lambda c, n: False)
        err = self.ask(up)["error"]
        self.assertEqual((502, "provider_error"), (err["status"], err["code"]))
        self.assertEqual(1, up.requests)  # not sent twice on a new connection

    def test_malformed_answers_are_errors(self):
        cases = [b"garbage\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n{}",
                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]
        for wire in cases:
            with self.subTest(wire=wire):
                up = self.serve(lambda c, n, w=wire: (c.sendall(w), False)[1])
                err = self.ask(up)["error"]
                self.assertEqual((502, "provider_error"), (err["status"], err["code"]))
        # and the server still answers the next one
        up = self.serve(lambda c, n: content_length(c, "fine"))
        self.assertEqual("fine", self.ask(up)["content"])

    def test_body_cut_short_is_an_error(self):
        def answer(c, n):
            body = completion("short")
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body) + 10).encode() + b"\r\n\r\n" + body)
            return False
        up = self.serve(answer)
        err = self.ask(up)["error"]
        self.assertEqual((502, "provider_error"), (err["status"], err["code"]))
        self.assertIn("closed before the end of the response", err["message"])


class UpstreamTLSTests(ServerTestCase):
    """https upstreams: the certificate is verified against the CA store (here SSL_CERT_FILE, which
    OpenSSL reads for its default paths) and the host name is checked."""
    WORKERS = 1
    AGENTS = UpstreamClientTests.AGENTS

    @classmethod
    def setUpClass(cls):
        cls.certs = class_tmpdir(cls, "lg-upstream-tls-")
        cls.good = make_cert(cls.certs, "good", cn="localhost")
        cls.wrong_name = make_cert(cls.certs, "wrong", cn="other.example")
        cls.untrusted = make_cert(cls.certs, "untrusted", cn="localhost")
        bundle = os.path.join(cls.certs, "trusted.pem")
        with open(bundle, "w") as out:
            for cert in (cls.good[0], cls.wrong_name[0]):
                with open(cert) as f:
                    out.write(f.read())
        cls.ENV = {"LUAGENT_PROVIDERS_DIR": str(REPO / "providers"), "SSL_CERT_FILE": bundle}
        super().setUpClass()

    def serve(self, cert):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        up = RawUpstream(lambda c, n: content_length(c, f"secure {n}"), tls=ctx)
        self.addCleanup(up.close)
        return up

    def ask(self, up):
        r = self.server.execute("ask", {"base_url": f"https://localhost:{up.port}/v1"}, timeout=30 * SLOW)
        return self.assertOk(r)["result"]

    def test_verified_upstream_answers_and_keeps_the_connection(self):
        up = self.serve(self.good)
        self.assertEqual("secure 1", self.ask(up)["content"])
        self.assertEqual("secure 2", self.ask(up)["content"])
        self.assertEqual((1, 2), (up.connections, up.requests))

    def test_certificate_for_another_name_is_refused(self):
        up = self.serve(self.wrong_name)
        err = self.ask(up)["error"]
        self.assertEqual((502, "provider_error"), (err["status"], err["code"]))
        self.assertEqual(0, up.requests)

    def test_untrusted_certificate_is_refused(self):
        up = self.serve(self.untrusted)
        err = self.ask(up)["error"]
        self.assertEqual((502, "provider_error"), (err["status"], err["code"]))
        self.assertEqual(0, up.requests)

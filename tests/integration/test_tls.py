"""HTTPS on the main listener (LUAGENT_TLS_CERT / LUAGENT_TLS_KEY): HTTP/2 by ALPN with an HTTP/1.1
fallback, SSE and JSON errors over h2, TLS >= 1.2 only, start-up errors that name the variable; and
the plain-HTTP health listener (LUAGENT_HEALTH_LISTEN): /health and /ready without credentials, 404
elsewhere, closed with the main listener on SIGTERM.

Needs `openssl`, `curl` (with HTTP/2) and `nghttp` (nghttp2-client) on PATH: scripts/deps.sh
installs them.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import warnings

from .harness import BIN, SLOW, Server, base_env, free_port, measure, parse_sse

SLEEPER = '''
return { timeout_ms = 20000, execute = function(task, ctx) luagent.sleep(task.ms) return {slept = task.ms} end }
'''


def make_cert(directory, name, cn="localhost"):
    """A self-signed P-256 certificate and its key: (cert_path, key_path)."""
    cert, key = os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "2", "-subj", f"/CN={cn}", "-keyout", key, "-out", cert],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return cert, key


def client_context(alpn=("h2", "http/1.1")):
    """A TLS client context that accepts the self-signed certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class TlsServerMixin:
    """Start a Server whose main port speaks TLS: wait for it over HTTPS (the harness's own wait is
    plain HTTP)."""

    @staticmethod
    def start_tls(srv, timeout=10.0):
        srv.start(wait=False)
        deadline = time.monotonic() + timeout * SLOW
        last = None
        while time.monotonic() < deadline:
            if srv.proc.poll() is not None:
                raise AssertionError(f"luagent exited with {srv.proc.returncode}\n{srv.log_tail()}")
            try:
                c = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=2, context=client_context(None))
                c.request("GET", "/health")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return
                last = r.status
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        srv.kill()
        raise AssertionError(f"luagent not healthy over HTTPS after {timeout * SLOW:.0f}s ({last})\n{srv.log_tail()}")


class TlsTests(unittest.TestCase, TlsServerMixin):
    """One TLS server with authentication required and a health listener."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="luagent-tls-")
        cls.cert, cls.key = make_cert(cls.tmp, "server")
        cls.hport = free_port()
        cls.keys_file = os.path.join(cls.tmp, "api_keys")
        cls.server = Server(fixtures=("echo", "stream"), agents={"sleeper": SLEEPER}, workers=2, env={
            "LUAGENT_TLS_CERT": cls.cert, "LUAGENT_TLS_KEY": cls.key,
            "LUAGENT_HEALTH_LISTEN": f"127.0.0.1:{cls.hport}",
            "LUAGENT_AUTH": "required", "LUAGENT_API_KEYS_FILE": cls.keys_file,
            "LUAGENT_MAX_BODY_BYTES": "4096"})
        try:
            cls.start_tls(cls.server)
        except BaseException:
            cls.server.cleanup()
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise
        m = re.search(r"^admin API key: (\S+)$", open(cls.server.out_path).read(), re.M)
        assert m, "no admin key printed on stdout"
        cls.admin = m.group(1)

    @classmethod
    def tearDownClass(cls):
        try:
            code = cls.server.stop()
            assert code == 0, f"exit {code} after SIGTERM\n{cls.server.log_tail()}"
        finally:
            cls.server.cleanup()
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- clients ----
    def https(self, method, path, body=None, headers=None, auth=True):
        """One request over HTTPS/1.1 (http.client). Returns (status, headers, body bytes, TLS version)."""
        h = dict(headers or {})
        if auth:
            h.setdefault("Authorization", f"Bearer {self.admin}")
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        c = http.client.HTTPSConnection("127.0.0.1", self.server.port, timeout=30 * SLOW,
                                        context=client_context(("http/1.1",)))
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            raw = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, raw, c.sock.version()
        finally:
            c.close()

    def curl(self, *args, url_path="/health", port=None, scheme="https", auth=True, timeout=30):
        """curl -sk ... URL; returns CompletedProcess (text)."""
        cmd = ["curl", "-sk", "--max-time", str(int(timeout * SLOW))]
        if auth:
            cmd += ["-H", f"Authorization: Bearer {self.admin}"]
        cmd += list(args) + [f"{scheme}://127.0.0.1:{port or self.server.port}{url_path}"]
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout * SLOW + 10)

    def curl_h2_json(self, *args, url_path):
        """curl --http2 with the status and version appended; returns (status, http_version, body)."""
        p = self.curl("--http2", "-w", "\n%{http_code} %{http_version}", *args, url_path=url_path)
        self.assertEqual(0, p.returncode, p.stderr)
        body, _, tail = p.stdout.rpartition("\n")
        code, version = tail.split()
        return int(code), version, json.loads(body) if body.strip() else None

    # ---- the main port ----
    def test_https_execute(self):
        status, headers, raw, version = self.https("POST", "/api/v1/agents/echo/execute", {"task": {"a": [1, 2]}})
        self.assertEqual(200, status, raw)
        self.assertEqual({"a": [1, 2]}, json.loads(raw)["result"])
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        self.assertTrue(headers.get("x-request-id"))

    def test_credentials_still_required(self):
        status, _, raw, _ = self.https("POST", "/api/v1/agents/echo/execute", {"task": 1}, auth=False)
        self.assertEqual(401, status, raw)
        code, version, body = self.curl_h2_json("-X", "GET", url_path="/api/v1/agents")
        self.assertEqual((200, "2"), (code, version), body)

    def test_curl_negotiates_http2(self):
        code, version, body = self.curl_h2_json(url_path="/health")
        self.assertEqual(200, code)
        self.assertEqual("2", version)
        self.assertEqual({"status": "ok"}, body)
        code, version, body = self.curl_h2_json("-H", "Content-Type: application/json", "-d", '{"task": {"x": 1}}',
                                                url_path="/api/v1/agents/echo/execute")
        self.assertEqual((200, "2"), (code, version), body)
        self.assertEqual({"x": 1}, body["result"])

    def test_http11_fallback(self):
        p = self.curl("--http1.1", "-w", "\n%{http_version}", url_path="/health")
        self.assertEqual(0, p.returncode, p.stderr)
        self.assertEqual("1.1", p.stdout.rsplit("\n", 1)[1])
        ctx = client_context(("http/1.1",))
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10 * SLOW) as s, \
                ctx.wrap_socket(s) as t:
            self.assertEqual("http/1.1", t.selected_alpn_protocol())
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10 * SLOW) as s, \
                client_context(None).wrap_socket(s) as t:  # no ALPN at all: HTTP/1.1
            t.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := t.recv(4096):
                data += chunk
            self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:200])

    def test_nghttp_negotiates_h2(self):
        p = subprocess.run(["nghttp", "-nv", f"https://127.0.0.1:{self.server.port}/health"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30 * SLOW)
        self.assertEqual(0, p.returncode, p.stdout)
        self.assertIn("The negotiated protocol: h2", p.stdout)
        self.assertRegex(p.stdout, r":status: 200")

    def test_sse_streams_over_h2(self):
        cmd = ["curl", "--http2", "-skN", "--max-time", str(int(20 * SLOW)), "-H", f"Authorization: Bearer {self.admin}",
               "-H", "Accept: text/event-stream", "-H", "Content-Type: application/json", "-d", '{"task": {}}',
               "-w", "\nHTTPVERSION %{http_version} %{content_type}\n",
               f"https://127.0.0.1:{self.server.port}/api/v1/agents/stream/execute"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = []
        try:
            for raw in proc.stdout:
                lines.append((raw.decode(), time.monotonic()))
        finally:
            proc.wait(timeout=30 * SLOW)
        self.assertEqual(0, proc.returncode, proc.stderr.read())
        tail = [l for l, _ in lines if l.startswith("HTTPVERSION ")]
        self.assertEqual(1, len(tail), lines)
        _, version, ctype = tail[0].split()
        self.assertEqual("2", version)
        self.assertTrue(ctype.startswith("text/event-stream"), ctype)
        events = list(parse_sse([(l, t) for l, t in lines if not l.startswith("HTTPVERSION ")]))
        names = [e[0] for e in events]
        self.assertEqual(["emit", "emit", "result"], names, lines)
        self.assertEqual(["a", "b"], [e[1] for e in events[:2]])
        self.assertEqual({"done": True}, events[2][1]["result"])
        gap = events[2][2] - events[0][2]
        measure("h2 SSE: first emit before result", f"{gap * 1000:.0f} ms")
        self.assertGreaterEqual(gap, 0.3, "the first emit was not streamed over h2 as it happened")

    def test_json_errors_over_h2(self):
        code, version, body = self.curl_h2_json("-H", "Content-Type: application/json", "--data-binary",
                                                json.dumps({"task": "x" * 10000}),
                                                url_path="/api/v1/agents/echo/execute")
        self.assertEqual((413, "2"), (code, version))
        self.assertEqual("payload_too_large", body["error"]["code"])
        code, version, body = self.curl_h2_json("-H", "Content-Type: text/plain", "-d", '{"task": 1}',
                                                url_path="/api/v1/agents/echo/execute")
        self.assertEqual((415, "2"), (code, version))
        self.assertEqual("unsupported_media_type", body["error"]["code"])
        code, version, body = self.curl_h2_json(url_path="/nope")
        self.assertEqual((404, "2"), (code, version))
        self.assertEqual("not_found", body["error"]["code"])
        code, version, body = self.curl_h2_json("-H", "Content-Type: application/json", "-d", "{nope",
                                                url_path="/api/v1/agents/echo/execute")
        self.assertEqual((400, "2"), (code, version))
        self.assertEqual("invalid_json", body["error"]["code"])

    def test_h2_client_disconnect_cancels_the_execution(self):
        """Over h2 h2o reads the connection all the time: a client that goes away disposes the request
        at once (the client watch is not needed for it)."""
        t0 = time.monotonic()
        p = self.curl("--http2", "--max-time", "0.5", "-H", "Content-Type: application/json", "-d",
                      '{"task": {"ms": 8000}}', url_path="/api/v1/agents/sleeper/execute", timeout=5)
        self.assertEqual(28, p.returncode, p.stderr)  # curl's own timeout
        line = self.server.wait_log(lambda l: "ended after its client went away" in l.get("msg", ""), timeout=3)
        self.assertIsNotNone(line, self.server.log_tail())
        measure("h2 client gone -> execution cancelled after", f"{(time.monotonic() - t0) * 1000:.0f} ms")

    def test_https1_client_disconnect_cancels_the_execution(self):
        """Over HTTP/1.1 the client watch reads the TLS connection while the execution runs: the
        client's going away cancels it (499 client_closed in the access log), long before its end."""
        t0 = time.monotonic()
        p = self.curl("--http1.1", "--max-time", "0.5", "-H", "Content-Type: application/json", "-d",
                      '{"task": {"ms": 8000}}', url_path="/api/v1/agents/sleeper/execute", timeout=5)
        self.assertEqual(28, p.returncode, p.stderr)  # curl's own timeout
        line = self.server.wait_log(lambda l: l.get("msg") == "request" and l.get("status") == 499
                                    and l.get("path") == "/api/v1/agents/sleeper/execute", timeout=4)
        self.assertIsNotNone(line, self.server.log_tail())
        took = time.monotonic() - t0
        measure("https/1.1 client gone -> execution cancelled after", f"{took * 1000:.0f} ms")
        self.assertLess(took, 6, "the execution ran to its end instead of being cancelled")

    def test_many_streams_on_one_h2_connection(self):
        """nghttp sends several requests as concurrent streams of one connection."""
        url = f"https://127.0.0.1:{self.server.port}/api/v1/agents/sleeper/execute"
        body = os.path.join(self.tmp, "sleep.json")
        with open(body, "w") as f:
            json.dump({"task": {"ms": 300}}, f)
        t0 = time.monotonic()
        p = subprocess.run(["nghttp", "-nv", "-m", "8", "-d", body, "-H", f"authorization: Bearer {self.admin}",
                            "-H", "content-type: application/json", url],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60 * SLOW)
        elapsed = time.monotonic() - t0
        self.assertEqual(0, p.returncode, p.stdout[-3000:])
        self.assertEqual(8, len(re.findall(r":status: 200", p.stdout)), p.stdout[-3000:])
        measure("8 concurrent 300 ms executions on one h2 connection", f"{elapsed * 1000:.0f} ms")
        self.assertLess(elapsed, 8 * 0.3, "the streams of one h2 connection did not run concurrently")

    def test_tls11_refused(self):
        p = self.curl("--tlsv1.1", "--tls-max", "1.1", url_path="/health")
        self.assertNotEqual(0, p.returncode, p.stdout)
        # curl may refuse TLS 1.1 on its own side: make sure the server refuses one that is offered
        ctx = client_context(None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.set_ciphers("DEFAULT@SECLEVEL=0")
            ctx.minimum_version = ssl.TLSVersion.TLSv1_1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10 * SLOW) as s:
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                with ctx.wrap_socket(s):
                    pass
        for v in ("1.2", "1.3"):
            p = self.curl(f"--tlsv{v}", "--tls-max", v, "-w", "\n%{http_code}", url_path="/health")
            self.assertEqual(0, p.returncode, (v, p.stderr))
            self.assertTrue(p.stdout.endswith("200"), (v, p.stdout))

    def test_tls12_uses_ecdhe_aead(self):
        ctx = client_context(None)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10 * SLOW) as s, \
                ctx.wrap_socket(s) as t:
            name, version, _ = t.cipher()
            self.assertEqual("TLSv1.2", version)
            self.assertTrue(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name)
        ctx = client_context(None)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("AES128-SHA:AES256-GCM-SHA384")  # RSA key exchange only: refused
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10 * SLOW) as s:
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                with ctx.wrap_socket(s):
                    pass

    def test_plain_http_to_tls_port_fails_cleanly(self):
        c = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10 * SLOW)
        with self.assertRaises((http.client.HTTPException, ConnectionError, OSError)):
            c.request("GET", "/health")
            c.getresponse().read()
        c.close()
        self.assertIsNone(self.server.proc.poll(), "the server died")
        status, _, _, _ = self.https("GET", "/health")
        self.assertEqual(200, status)

    # ---- the health listener ----
    def health(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.hport, timeout=10 * SLOW)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            raw = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, raw
        finally:
            c.close()

    def test_health_listener_needs_no_credentials(self):
        status, headers, raw = self.health("GET", "/health")
        self.assertEqual(200, status, raw)
        self.assertEqual({"status": "ok"}, json.loads(raw))
        self.assertTrue(headers.get("x-request-id"))
        status, _, raw = self.health("GET", "/ready")
        self.assertEqual(200, status, raw)
        self.assertEqual("ready", json.loads(raw).get("status"), raw)
        status, _, raw = self.health("HEAD", "/health")
        self.assertEqual(200, status)

    def test_health_listener_serves_nothing_else(self):
        for method, path in (("GET", "/info"), ("GET", "/api/v1/agents"), ("POST", "/api/v1/agents/echo/execute"),
                             ("GET", "/api/v1/executions"), ("GET", "/"), ("GET", "/api/v1/keys")):
            headers = {"Authorization": f"Bearer {self.admin}", "Content-Type": "application/json"}
            status, _, raw = self.health(method, path, body=b'{"task": 1}' if method == "POST" else None,
                                         headers=headers)
            self.assertEqual(404, status, (method, path, raw))
            self.assertEqual("not_found", json.loads(raw)["error"]["code"], raw)
        status, headers, raw = self.health("POST", "/health", body=b"{}")
        self.assertEqual(405, status, raw)
        self.assertIn("GET", headers.get("allow", ""))

    def test_host_header_does_not_cross_listeners(self):
        """Each listener has its own host list: no Host value reaches the other's handler."""
        for host in ("health", "health:65535", "default"):
            status, _, raw = self.health("GET", "/info", headers={"Host": host})
            self.assertEqual(404, status, (host, raw))
            status, _, raw, _ = self.https("GET", "/api/v1/agents", headers={"Host": host}, auth=False)
            self.assertEqual(401, status, (host, raw))

    def test_health_listener_is_plain_http(self):
        ctx = client_context(None)
        with socket.create_connection(("127.0.0.1", self.hport), timeout=10 * SLOW) as s:
            with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
                with ctx.wrap_socket(s):
                    pass

    def test_listening_line_names_both_urls(self):
        lines = self.server.find_logs(lambda l: l.get("msg") == "listening")
        self.assertEqual(1, len(lines), self.server.log_tail())
        self.assertEqual(f"https://127.0.0.1:{self.server.port}", lines[0].get("url"))
        self.assertEqual(f"http://127.0.0.1:{self.hport}", lines[0].get("health_url"))


class TlsStartupTests(unittest.TestCase):
    """A bad TLS setting stops `luagent serve` before it listens: exit 2, the message names the variable."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="luagent-tls-")
        cls.cert, cls.key = make_cert(cls.tmp, "a")
        cls.cert2, cls.key2 = make_cert(cls.tmp, "b", cn="other")
        cls.junk = os.path.join(cls.tmp, "junk.pem")
        with open(cls.junk, "w") as f:
            f.write("not a PEM file\n")
        cls.agents = os.path.join(cls.tmp, "agents")
        os.mkdir(cls.agents)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def serve(self, env):
        port = free_port()
        e = {"LUAGENT_LISTEN": f"127.0.0.1:{port}", "LUAGENT_AGENTS_DIR": self.agents, "LUAGENT_AUTH": "off",
             "LUAGENT_PROVIDERS_DIR": self.agents, "LUAGENT_WORKERS": "1"}
        e.update(env)
        try:
            return subprocess.run([str(BIN), "serve"], cwd=self.tmp, env=base_env(e), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10 * SLOW)
        except subprocess.TimeoutExpired as ex:
            raise AssertionError(f"luagent serve started with {env}: {ex.stderr!r}")

    def check(self, env, variable, words):
        p = self.serve(env)
        self.assertEqual(2, p.returncode, (env, p.stderr))
        err = [l for l in p.stderr.splitlines() if l.startswith("luagent:")]
        self.assertTrue(err, p.stderr)
        self.assertIn(variable, err[-1])
        self.assertRegex(err[-1], words)
        self.assertNotIn('"msg":"listening"', p.stderr)

    def test_missing_files(self):
        self.check({"LUAGENT_TLS_CERT": os.path.join(self.tmp, "none.crt"), "LUAGENT_TLS_KEY": self.key},
                   "LUAGENT_TLS_CERT", "No such file")
        self.check({"LUAGENT_TLS_CERT": self.cert, "LUAGENT_TLS_KEY": os.path.join(self.tmp, "none.key")},
                   "LUAGENT_TLS_KEY", "No such file")

    def test_unreadable_key(self):
        if os.geteuid() == 0:
            self.skipTest("root reads any file")
        path = os.path.join(self.tmp, "locked.key")
        shutil.copyfile(self.key, path)
        os.chmod(path, 0)
        self.check({"LUAGENT_TLS_CERT": self.cert, "LUAGENT_TLS_KEY": path}, "LUAGENT_TLS_KEY", "Permission denied")

    def test_bad_pem(self):
        self.check({"LUAGENT_TLS_CERT": self.junk, "LUAGENT_TLS_KEY": self.key}, "LUAGENT_TLS_CERT", "certificate")
        self.check({"LUAGENT_TLS_CERT": self.cert, "LUAGENT_TLS_KEY": self.junk}, "LUAGENT_TLS_KEY", "private key")
        self.check({"LUAGENT_TLS_CERT": self.key, "LUAGENT_TLS_KEY": self.key}, "LUAGENT_TLS_CERT", "certificate")
        self.check({"LUAGENT_TLS_CERT": self.cert, "LUAGENT_TLS_KEY": self.cert}, "LUAGENT_TLS_KEY", "private key")

    def test_key_does_not_match(self):
        self.check({"LUAGENT_TLS_CERT": self.cert, "LUAGENT_TLS_KEY": self.key2}, "LUAGENT_TLS_KEY", "does not match")

    def test_only_one_variable(self):
        self.check({"LUAGENT_TLS_CERT": self.cert}, "LUAGENT_TLS_KEY", "LUAGENT_TLS_CERT")
        self.check({"LUAGENT_TLS_KEY": self.key}, "LUAGENT_TLS_CERT", "LUAGENT_TLS_KEY")

    def test_bad_health_listen(self):
        self.check({"LUAGENT_HEALTH_LISTEN": "nope"}, "LUAGENT_HEALTH_LISTEN", "host:port")

    def test_health_port_in_use(self):
        with socket.socket() as s:  # no SO_REUSEPORT: the server cannot bind beside it
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            p = self.serve({"LUAGENT_HEALTH_LISTEN": f"127.0.0.1:{s.getsockname()[1]}"})
        self.assertNotEqual(0, p.returncode, p.stderr)
        self.assertIn("LUAGENT_HEALTH_LISTEN", p.stderr)


class TlsDrainTests(unittest.TestCase, TlsServerMixin):
    """SIGTERM with both listeners: both close at once, the h2 execution in flight finishes, exit 0."""

    def test_sigterm_closes_both_listeners(self):
        tmp = tempfile.mkdtemp(prefix="luagent-tls-")
        cert, key = make_cert(tmp, "server")
        hport = free_port()
        srv = Server(agents={"sleeper": SLEEPER}, workers=2, env={
            "LUAGENT_TLS_CERT": cert, "LUAGENT_TLS_KEY": key, "LUAGENT_HEALTH_LISTEN": f"127.0.0.1:{hport}"})
        try:
            self.start_tls(srv)
            cmd = ["curl", "--http2", "-sk", "--max-time", str(int(20 * SLOW)), "-H", "Content-Type: application/json",
                   "-d", '{"task": {"ms": 1500}}', "-w", "\n%{http_code} %{http_version}",
                   f"https://127.0.0.1:{srv.port}/api/v1/agents/sleeper/execute"]
            inflight = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(0.5 * SLOW)  # the execution is running
            srv.proc.send_signal(signal.SIGTERM)
            self.assertIsNotNone(srv.wait_log(lambda l: "draining" in l.get("msg", ""), timeout=5),
                                 srv.log_tail())
            time.sleep(0.2 * SLOW)
            for port in (srv.port, hport):
                with socket.socket() as s:
                    s.settimeout(2)
                    self.assertNotEqual(0, s.connect_ex(("127.0.0.1", port)),
                                        f"port {port} still accepts connections while draining")
            out, err = inflight.communicate(timeout=30 * SLOW)
            self.assertTrue(out.endswith("200 2"), (out, err))
            self.assertEqual(1500, json.loads(out.rsplit("\n", 1)[0])["result"]["slept"])
            code = srv.proc.wait(timeout=30 * SLOW)
            self.assertEqual(0, code, srv.log_tail())
        finally:
            srv.cleanup()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()

"""Test harness: start `luagent serve` in a sandboxed temp directory and talk to it.

Everything here is Python 3.11 standard library. One `Server` per TestCase class (see `ServerTestCase`),
each with its own temporary working directory (so no `.env` is read), agents directory, providers
directory, free port and log file.

Timing bounds in tests are multiplied by `SLOW` (env LUAGENT_TEST_SLOW, default 1; CI sets 3 for
sanitizer builds).
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "agents"
FIXTURES_BAD = REPO / "tests" / "fixtures" / "agents_bad"
BIN = Path(os.environ.get("LUAGENT_BIN") or (REPO / "build" / "luagent")).absolute()
try:
    SLOW = float(os.environ.get("LUAGENT_TEST_SLOW") or "1")
except ValueError:
    SLOW = 1.0
if SLOW <= 0:
    SLOW = 1.0

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")
VERSION_RE = re.compile(r"^[0-9a-f]{16}$")

# Environment variables the server reads that must not leak in from the developer's shell.
_SCRUB_PREFIXES = ("LUAGENT_", "OPENAI_", "ANTHROPIC_", "GEMINI_")
_SCRUB_NAMES = {"DATABASE_URL", "REDIS_URL", "GOOGLE_API_KEY"}


def _raise_fd_limit():
    """The scheduler test opens ~1000 sockets; the server (a child) inherits this limit too."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


_raise_fd_limit()


def measure(label, value):
    """Print a measured figure so it shows up in the test output."""
    sys.stderr.write(f"\n    [measured] {label}: {value}\n")
    sys.stderr.flush()


def require_binary():
    """Fail (never skip) with a clear message when the server binary is missing."""
    if not BIN.exists():
        raise AssertionError(
            f"luagent binary not found at {BIN}. Build it first (meson setup build && meson compile -C build) "
            f"or point LUAGENT_BIN at it.")
    if not os.access(BIN, os.X_OK):
        raise AssertionError(f"luagent binary at {BIN} is not executable")


class LocalHTTP:
    """A threaded HTTP/1.1 server on 127.0.0.1 (a free port) for `handler` (a
    BaseHTTPRequestHandler subclass): upstreams, callback receivers. .port, .url(path), .stop()."""

    def __init__(self, handler):
        import http.server
        import socketserver
        import threading

        class Srv(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.httpd = Srv(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(overrides=None):
    """os.environ minus anything luagent reads, plus `overrides` (a value of None removes the name)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_SCRUB_PREFIXES) and k not in _SCRUB_NAMES}
    for k, v in (overrides or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def agent_path(agents_dir, name):
    """`team.review` -> <agents_dir>/team/review.lua"""
    return Path(agents_dir) / (name.replace(".", "/") + ".lua")


def write_file(path, text, mode="inplace"):
    """Write like an editor does: `inplace` opens the file for writing (truncate + write), `rename`
    writes a temporary file next to it and renames it over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    if mode == "inplace":
        with open(path, "wb") as f:
            f.write(data)
    elif mode == "rename":
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        raise ValueError(mode)


def copy_fixtures(names, dest, src=FIXTURES):
    """Copy fixture agents (`echo`, `team.review`, ...) into `dest`."""
    for name in names:
        s = agent_path(src, name)
        if not s.exists():
            raise AssertionError(f"fixture agent {name} not found at {s}")
        d = agent_path(dest, name)
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s, d)


class Reply(tuple):
    """(status, headers, body) with extras: .raw (bytes), .elapsed (s), .status, .headers, .body."""

    def __new__(cls, status, headers, body, raw, elapsed):
        self = super().__new__(cls, (status, headers, body))
        self.status, self.headers, self.body, self.raw, self.elapsed = status, headers, body, raw, elapsed
        return self

    def describe(self):
        raw = self.raw if len(self.raw) < 2000 else self.raw[:2000] + b"..."
        return f"HTTP {self.status} {self.headers.get('content-type')!r} body={raw!r}"


def _lower_headers(msg):
    out = {}
    for k, v in msg.items():
        k = k.lower()
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


_DEFAULT = object()


def parse_sse(text_lines):
    """Feed (line, arrival_time) pairs; yield (event, data, time) per dispatched event."""
    event, data = None, []
    for line, t in text_lines:
        line = line.rstrip("\r\n")
        if line == "":
            if data or event is not None:
                payload = "\n".join(data)
                try:
                    value = json.loads(payload)
                except ValueError:
                    value = payload
                yield (event or "message", value, t)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)


class Server:
    """A running `luagent serve`.

    agents: {name: lua source} written into the agents dir; fixtures: fixture agent names to copy;
    env: overrides for the server's environment (None removes a variable); workers: LUAGENT_WORKERS;
    listen: False to leave LUAGENT_LISTEN unset (then give `port`); dotenv: text of a .env file
    written into the working directory.
    """

    def __init__(self, agents=None, fixtures=(), env=None, workers=2, listen=True, port=None,
                 dotenv=None):
        self.agents = dict(agents or {})
        self.fixtures = list(fixtures)
        self.env_overrides = dict(env or {})
        self.workers = workers
        self.listen = listen
        self.port = port
        self.dotenv = dotenv
        self.proc = None
        self.root = None
        self.exit_code = None
        self.died_early = False

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, wait=True):
        require_binary()
        self.root = Path(tempfile.mkdtemp(prefix="luagent-it-"))
        self.cwd = self.root / "cwd"
        self.agents_dir = self.root / "agents"
        self.providers_dir = self.root / "providers"
        for d in (self.cwd, self.agents_dir, self.providers_dir):
            d.mkdir()
        copy_fixtures(self.fixtures, self.agents_dir)
        for name, src in self.agents.items():
            write_file(agent_path(self.agents_dir, name), src)
        if self.dotenv is not None:
            (self.cwd / ".env").write_text(self.dotenv)
        if self.port is None:
            self.port = free_port()
        env = {
            "LUAGENT_AGENTS_DIR": str(self.agents_dir),
            "LUAGENT_PROVIDERS_DIR": str(self.providers_dir),
            "LUAGENT_AUTH": "off",
            "LUAGENT_WORKERS": str(self.workers),
            "LUAGENT_LOG_LEVEL": "debug",
        }
        if self.listen:
            env["LUAGENT_LISTEN"] = f"127.0.0.1:{self.port}"
        env.update(self.env_overrides)
        self.env = base_env(env)
        self.log_path = self.root / "stderr.log"
        self.out_path = self.root / "stdout.log"
        self._log_f = open(self.log_path, "wb")
        self._out_f = open(self.out_path, "wb")
        self.proc = subprocess.Popen([str(BIN), "serve"], cwd=self.cwd, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=self._out_f, stderr=self._log_f)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout=10.0):
        deadline = time.monotonic() + timeout * SLOW
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"luagent serve exited with code {self.proc.returncode} before becoming healthy\n"
                    f"--- log tail ---\n{self.log_tail()}")
            try:
                r = self.request("GET", "/health", timeout=2)
                if r.status == 200:
                    return
                last = r.describe()
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"luagent serve not healthy after {timeout * SLOW:.0f}s (last: {last})\n"
                             f"--- log tail ---\n{self.log_tail()}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM, wait, SIGKILL (and fail) if it does not exit. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            self.died_early = True
            self.exit_code = self.proc.returncode
            self._close_files()
            return self.exit_code
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._close_files()
            raise AssertionError(f"luagent did not exit within {timeout * SLOW:.0f}s of SIGTERM (killed)\n"
                                 f"--- log tail ---\n{self.log_tail()}")
        self._close_files()
        return self.exit_code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_files()

    def _close_files(self):
        for f in (getattr(self, "_log_f", None), getattr(self, "_out_f", None)):
            if f is not None and not f.closed:
                f.close()

    def cleanup(self):
        self.kill()
        if self.root is not None and os.environ.get("LUAGENT_TEST_KEEP") is None:
            shutil.rmtree(self.root, ignore_errors=True)

    # ---- files ----------------------------------------------------------------------------
    def agent_file(self, name):
        return agent_path(self.agents_dir, name)

    def write_agent(self, name, source, mode="inplace"):
        write_file(self.agent_file(name), source, mode)

    def delete_agent(self, name):
        os.unlink(self.agent_file(name))

    # ---- logs -----------------------------------------------------------------------------
    def log_text(self):
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except (OSError, AttributeError):
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    def log_lines(self):
        """Complete stderr lines (a trailing partial line is left out)."""
        text = self.log_text()
        lines = text.split("\n")
        return [l for l in lines[:-1] if l.strip()]

    def logs(self):
        """Every complete stderr line that parses as a JSON object."""
        out = []
        for line in self.log_lines():
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if isinstance(v, dict):
                out.append(v)
        return out

    def find_logs(self, pred):
        return [l for l in self.logs() if pred(l)]

    def wait_log(self, pred, timeout=3.0):
        """First JSON log line matching `pred`, waiting up to timeout*SLOW; None if none."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            hits = self.find_logs(pred)
            if hits:
                return hits[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    # ---- HTTP -----------------------------------------------------------------------------
    def connection(self, timeout=None):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout or 30 * SLOW)

    def request(self, method, path, body=None, headers=None, content_type=_DEFAULT, timeout=None):
        """Send one request on a new connection. body: dict/list -> JSON, str/bytes -> as is.
        content_type: default application/json when there is a body; None sends no Content-Type.
        Returns Reply (status, lowercased headers, parsed JSON or raw bytes)."""
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            if isinstance(body, (dict, list)):
                data = json.dumps(body).encode()
            elif isinstance(body, str):
                data = body.encode()
            else:
                data = bytes(body)
            if content_type is _DEFAULT:
                content_type = "application/json"
            if content_type is not None and not any(k.lower() == "content-type" for k in hdrs):
                hdrs["Content-Type"] = content_type
        conn = self.connection(timeout)
        t0 = time.monotonic()
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            elapsed = time.monotonic() - t0
            headers_l = _lower_headers(resp.msg)
            status = resp.status
        finally:
            conn.close()
        parsed = raw
        if "json" in headers_l.get("content-type", ""):
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw
        return Reply(status, headers_l, parsed, raw, elapsed)

    def execute(self, name, task, context=None, options=None, headers=None, timeout=None):
        body = {"task": task}
        if context is not None:
            body["context"] = context
        if options is not None:
            body["options"] = options
        return self.request("POST", f"/api/v1/agents/{name}/execute", body, headers=headers, timeout=timeout)

    def sse_request(self, name, task, context=None, headers=None, timeout=None):
        """Execute with Accept: text/event-stream. Returns (status, headers, events, raw_text) where
        events is a list of (event, data (JSON-decoded when possible), arrival_monotonic_time)."""
        body = {"task": task}
        if context is not None:
            body["context"] = context
        hdrs = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        hdrs.update(headers or {})
        conn = self.connection(timeout)
        raw_lines = []
        try:
            conn.request("POST", f"/api/v1/agents/{name}/execute", body=json.dumps(body).encode(), headers=hdrs)
            resp = conn.getresponse()
            headers_l = _lower_headers(resp.msg)

            def lines():
                while True:
                    line = resp.readline()
                    if not line:
                        return
                    t = time.monotonic()
                    text = line.decode("utf-8", "replace")
                    raw_lines.append(text)
                    yield text, t

            events = list(parse_sse(lines()))
            status = resp.status
        finally:
            conn.close()
        return status, headers_l, events, "".join(raw_lines)

    def sse(self, name, task, context=None, headers=None, timeout=None):
        """List of (event, data, arrival_time); fails unless the reply is a 200 event stream."""
        status, headers_l, events, raw = self.sse_request(name, task, context, headers, timeout)
        ct = headers_l.get("content-type", "")
        if status != 200 or not ct.startswith("text/event-stream"):
            raise AssertionError(f"expected a 200 text/event-stream reply, got {status} {ct!r}: {raw[:1000]!r}")
        return events


def parse_http_response(data):
    """Parse one HTTP/1.1 response from raw bytes (Content-Length, chunked or read-to-close)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"incomplete response: {data[:200]!r}")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2:]
    elif "content-length" in headers:
        body = rest[:int(headers["content-length"])]
    else:
        body = rest
    return status, headers, body


def keys_cli(keys_file, *args):
    """`luagent keys ARGS...` on the keys file `keys_file` (LUAGENT_API_KEYS_FILE)."""
    return subprocess.run([str(BIN), "keys", *args], env=base_env({"LUAGENT_API_KEYS_FILE": keys_file}),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30 * SLOW)


def class_tmpdir(cls, prefix):
    """A temporary directory of the test class's own, removed after its tests (or a failed set-up)."""
    d = tempfile.mkdtemp(prefix=prefix)
    cls.addClassCleanup(shutil.rmtree, d, ignore_errors=True)
    return d


class WithKeys:
    """Mixin, before ServerTestCase: authentication required, API keys in a file of the class's own
    (cls.keys_file), and for each role in KEY_ROLES a key made with `luagent keys create` before the
    server starts, as cls.<role> (cls.admin, cls.operator, cls.viewer)."""

    KEY_ROLES = ("viewer", "operator")

    @classmethod
    def setUpClass(cls):
        cls.keys_dir = class_tmpdir(cls, "luagent-keys-")
        cls.keys_file = os.path.join(cls.keys_dir, "api_keys")
        for role in cls.KEY_ROLES:
            r = keys_cli(cls.keys_file, "create", "--name", f"test {role}", "--role", role)
            assert r.returncode == 0, r.stderr
            setattr(cls, role, json.loads(r.stdout)["key"])
        cls.ENV = {**cls.ENV, "LUAGENT_AUTH": "required", "LUAGENT_API_KEYS_FILE": cls.keys_file}
        super().setUpClass()


class WithPostgres:
    """Mixin, before ServerTestCase: a new database (named after DB_PREFIX) on the suite's shared
    PostgreSQL (services.py) as cls.pg and cls.db, DATABASE_URL set to db_url() (override it for
    other credentials), and a spill directory of the class's own (cls.spill, removed afterwards)."""

    DB_PREFIX = "t"

    @classmethod
    def db_url(cls):
        return cls.pg.url(cls.db)

    @classmethod
    def setUpClass(cls):
        from .services import shared_postgres
        cls.pg = shared_postgres()
        cls.db = cls.pg.new_database(cls.DB_PREFIX)
        cls.spill = class_tmpdir(cls, "luagent-spill-")
        cls.ENV = {**cls.ENV, "DATABASE_URL": cls.db_url(), "LUAGENT_SPILL_DIR": cls.spill}
        super().setUpClass()


class WithFakeProviders:
    """Mixin, before ServerTestCase: the fake provider servers (tests/fakes/providers.py) started for
    the class as cls.fake with FAKE_OPTIONS, and the repository's providers pointed at them: OpenAI
    always (key sk-test-openai-secret), Anthropic and Gemini too with FAKE_ALL_PROVIDERS."""

    FAKE_OPTIONS = {}
    FAKE_ALL_PROVIDERS = False

    @classmethod
    def setUpClass(cls):
        from tests.fakes.providers import FakeProviders
        cls.fake = FakeProviders(**cls.FAKE_OPTIONS)
        cls.fake.start()
        cls.addClassCleanup(cls.fake.stop)
        env = {"LUAGENT_PROVIDERS_DIR": str(REPO / "providers"),
               "OPENAI_API_KEY": "sk-test-openai-secret", "OPENAI_BASE_URL": cls.fake.openai_base_url}
        if cls.FAKE_ALL_PROVIDERS:
            env.update({"ANTHROPIC_API_KEY": "sk-ant-test-secret", "ANTHROPIC_BASE_URL": cls.fake.anthropic_base_url,
                        "GEMINI_API_KEY": "gm-test-secret", "GEMINI_BASE_URL": cls.fake.gemini_base_url})
        cls.ENV = {**cls.ENV, **env}
        super().setUpClass()


class ServerTestCase(unittest.TestCase):
    """One server per class. Subclasses set AGENTS ({name: source}), FIXTURES, ENV, WORKERS."""

    AGENTS = {}
    FIXTURES = ()
    ENV = {}
    WORKERS = 2
    CHECK_EXIT = True  # tearDownClass fails if the server died during the class or exits non-zero

    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server(agents=cls.AGENTS, fixtures=cls.FIXTURES, env=cls.ENV, workers=cls.WORKERS)
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        srv = cls.server
        if srv is None:
            return
        try:
            code = srv.stop()
            if cls.CHECK_EXIT:
                if srv.died_early:
                    raise AssertionError(f"server exited by itself during {cls.__name__} with code {code}\n"
                                         f"--- log tail ---\n{srv.log_tail()}")
                if code != 0:
                    raise AssertionError(f"server exited with code {code} after SIGTERM in {cls.__name__}\n"
                                         f"--- log tail ---\n{srv.log_tail()}")
        finally:
            srv.cleanup()

    # ---- assertion helpers ------------------------------------------------------------------
    def ctx_msg(self, reply=None, extra=""):
        parts = []
        if extra:
            parts.append(extra)
        if reply is not None:
            parts.append(reply.describe())
        parts.append("--- server log tail ---\n" + self.server.log_tail(12))
        return "\n".join(parts)

    def assertOk(self, reply, result=_DEFAULT):
        self.assertEqual(200, reply.status, self.ctx_msg(reply))
        self.assertIsInstance(reply.body, dict, self.ctx_msg(reply, "reply is not a JSON object"))
        if result is not _DEFAULT:
            self.assertIn("result", reply.body, self.ctx_msg(reply))
            self.assertEqual(result, reply.body["result"], self.ctx_msg(reply))
        return reply.body

    def assertError(self, reply, status, code=None):
        """status and a JSON {"error": {"code", "message", "request_id"}} body."""
        self.assertEqual(status, reply.status, self.ctx_msg(reply))
        ct = reply.headers.get("content-type", "")
        self.assertTrue(ct.startswith("application/json"), self.ctx_msg(reply, f"error content-type {ct!r}"))
        self.assertIsInstance(reply.body, dict, self.ctx_msg(reply, "error body is not a JSON object"))
        err = reply.body.get("error")
        self.assertIsInstance(err, dict, self.ctx_msg(reply, "no error object"))
        for k in ("code", "message", "request_id"):
            self.assertIn(k, err, self.ctx_msg(reply, f"error lacks {k!r}"))
            self.assertIsInstance(err[k], str, self.ctx_msg(reply, f"error.{k} is not a string"))
        self.assertTrue(err["request_id"], self.ctx_msg(reply, "empty request_id"))
        if code is not None:
            self.assertEqual(code, err["code"], self.ctx_msg(reply))
        return err

    def poll(self, fn, until, timeout=2.0, interval=0.005):
        """Call fn() until until(value) is true or timeout*SLOW passes. Returns (value, seconds, ok)."""
        t0 = time.monotonic()
        deadline = t0 + timeout * SLOW
        while True:
            v = fn()
            if until(v):
                return v, time.monotonic() - t0, True
            if time.monotonic() >= deadline:
                return v, time.monotonic() - t0, False
            time.sleep(interval)

"""GET /metrics (Prometheus text format, checked with `promtool check metrics`): traffic goes in over
HTTP (successes, agent errors, 404s, AI calls through the mock provider and the fake provider servers,
the result cache and luagent.cache) and every counter must move by exactly what was sent. Also: the
viewer role on the main listener, the public health listener, LUAGENT_METRICS=off."""

import json
import re
import shutil
import subprocess
import uuid

from .harness import SLOW, ServerTestCase, WithFakeProviders, WithKeys, WithPostgres, free_port

ECHO = 'return {execute = function(task, ctx) return task end}'
FAIL = 'return {execute = function(task, ctx) error("boom") end}'
CHAT = r'''
return {
  timeout_ms = 30000,
  execute = function(task, ctx)
    local ok, r = pcall(luagent.ai.chat, {model = task.model, retries = task.retries,
                                          messages = {{role = "user", content = task.prompt}}})
    if not ok then return {failed = true} end
    return {usage = r.usage, provider = r.provider}
  end,
}
'''
CACHED = 'return {cache_ttl = 60, execute = function(task, ctx) return {n = task.n} end}'
KV = r'''
return {
  execute = function(task, ctx)
    local before = luagent.cache.get(task.key)
    luagent.cache.set(task.key, {v = 1})
    local after = luagent.cache.get(task.key)
    return {before = before ~= nil, after = after ~= nil}
  end,
}
'''

LINE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """{(name, frozenset(labels)): value}; fails on a line that is not a sample or a comment."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE_RE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(LABEL_RE.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def promtool_check(text):
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: install Debian's `prometheus` package (scripts/deps.sh)"
    p = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


class MetricsTests(WithFakeProviders, ServerTestCase):
    WORKERS = 2
    AGENTS = {"echo": ECHO, "fail": FAIL, "chat": CHAT, "cached": CACHED, "kv": KV}
    FAKE_OPTIONS = {"chunk_delay": 0.01}

    @classmethod
    def setUpClass(cls):
        cls.hport = free_port()
        cls.ENV = {"LUAGENT_DEFAULT_MODEL": "mock/mock-1", "LUAGENT_HEALTH_LISTEN": f"127.0.0.1:{cls.hport}"}
        super().setUpClass()

    def scrape(self):
        r = self.server.request("GET", "/metrics")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertEqual("text/plain; version=0.0.4; charset=utf-8", r.headers.get("content-type"))
        text = r.raw.decode() if isinstance(r.raw, bytes) else r.raw
        return text, parse_metrics(text)

    @staticmethod
    def val(m, name, **labels):
        return m.get((name, frozenset(labels.items())), 0.0)

    def expect_deltas(self, before, expected):
        """expected: [(name, labels, delta)]. Counters are bumped right after the reply is written, so
        wait until they reach the expected values, then require them exactly (not more)."""
        def done(m):
            return all(self.val(m, n, **l) - self.val(before, n, **l) >= d for n, l, d in expected)
        m, _, _ = self.poll(lambda: self.scrape()[1], done, timeout=3)
        got = [(n, l, self.val(m, n, **l) - self.val(before, n, **l)) for n, l, _ in expected]
        self.assertEqual([(n, l, float(d)) for n, l, d in expected], got)
        return m

    def test_promtool_accepts_the_exposition(self):
        self.assertOk(self.server.execute("echo", {"a": 1}))
        self.assertOk(self.server.execute("chat", {"model": "mock/mock-1", "prompt": "a b c"}))
        self.server.request("GET", "/nope")
        text, m = self.scrape()
        code, out = promtool_check(text)
        self.assertEqual(0, code, f"promtool check metrics:\n{out}\n---\n{text[:3000]}")
        for name in ("luagent_build_info", "process_start_time_seconds", "luagent_executions_in_flight",
                     "luagent_workers"):
            self.assertTrue(any(k[0] == name for k in m), name)
        self.assertEqual(2.0, self.val(m, "luagent_workers"))
        for w in ("0", "1"):  # a VM with the luagent API is some 80-150 KB, by the GC's timing
            self.assertGreater(self.val(m, "luagent_lua_memory_bytes", worker=w), 50000.0)

    def test_http_and_execution_counters_move_exactly(self):
        route = "/api/v1/agents/{name}/execute"
        version = {n: self.server.request("GET", f"/api/v1/agents/{n}").body["version"] for n in ("echo", "fail")}
        _, m0 = self.scrape()
        for i in range(3):
            self.assertOk(self.server.execute("echo", {"i": i}))
        for _ in range(2):
            self.assertEqual(500, self.server.execute("fail", {}).status)
        self.assertEqual(404, self.server.request("GET", "/no/such/route").status)
        self.assertEqual(404, self.server.execute("nobody", {}).status)
        self.assertEqual(405, self.server.request("GET", "/api/v1/agents/echo/execute").status)
        m1 = self.expect_deltas(m0, [
            ("luagent_http_requests_total", {"route": route, "status": "200"}, 3),
            ("luagent_http_requests_total", {"route": route, "status": "500"}, 2),
            ("luagent_http_requests_total", {"route": route, "status": "404"}, 1),
            ("luagent_http_requests_total", {"route": route, "status": "405"}, 1),
            ("luagent_http_requests_total", {"route": "unmatched", "status": "404"}, 1),
            ("luagent_http_requests_total", {"route": "/metrics", "status": "200"}, 1),
            ("luagent_http_request_duration_seconds_count", {"route": route}, 7),
            ("luagent_http_request_duration_seconds_bucket", {"route": route, "le": "+Inf"}, 7),
            ("luagent_executions_total", {"agent": "echo", "version": version["echo"], "status": "ok"}, 3),
            ("luagent_executions_total", {"agent": "fail", "version": version["fail"], "status": "error"}, 2),
            ("luagent_execution_duration_seconds_count", {"agent": "echo"}, 3),
            ("luagent_execution_duration_seconds_count", {"agent": "fail"}, 2),
        ])
        self.assertEqual(0.0, self.val(m1, "luagent_executions_in_flight"))
        self.assertGreaterEqual(self.val(m1, "luagent_execution_duration_seconds_sum", agent="echo"),
                                self.val(m0, "luagent_execution_duration_seconds_sum", agent="echo"))

    def test_ai_calls_tokens_retries_and_errors(self):
        tag = uuid.uuid4().hex[:8]
        flaky, broken = f"gpt-4o-mini-fake-500-once-t{tag}", f"gpt-4o-mini-fake-400-t{tag}"
        _, m0 = self.scrape()
        mock = self.assertOk(self.server.execute("chat", {"model": "mock/mock-1", "prompt": "one two three"}))
        real = self.assertOk(self.server.execute("chat", {"model": "gpt-4o-mini", "prompt": "four five"}))
        retried = self.assertOk(self.server.execute("chat", {"model": flaky, "prompt": "six", "retries": 2}))
        failed = self.assertOk(self.server.execute("chat", {"model": broken, "prompt": "seven", "retries": 2}))
        self.assertTrue(failed["result"]["failed"])
        self.assertEqual("openai", real["result"]["provider"])
        mu, ru, fu = mock["result"]["usage"], real["result"]["usage"], retried["result"]["usage"]
        self.assertGreater(mu["output_tokens"], 0)
        ai = "luagent_ai_calls_total"
        self.expect_deltas(m0, [
            (ai, {"provider": "mock", "model": "mock-1"}, 1),
            ("luagent_ai_tokens_total", {"provider": "mock", "model": "mock-1", "direction": "input"},
             mu["input_tokens"]),
            ("luagent_ai_tokens_total", {"provider": "mock", "model": "mock-1", "direction": "output"},
             mu["output_tokens"]),
            (ai, {"provider": "openai", "model": "gpt-4o-mini"}, 1),
            ("luagent_ai_tokens_total", {"provider": "openai", "model": "gpt-4o-mini", "direction": "input"},
             ru["input_tokens"]),
            ("luagent_ai_tokens_total", {"provider": "openai", "model": "gpt-4o-mini", "direction": "output"},
             ru["output_tokens"]),
            ("luagent_ai_errors_total", {"provider": "openai", "model": "gpt-4o-mini"}, 0),
            (ai, {"provider": "openai", "model": flaky}, 1),
            ("luagent_ai_retries_total", {"provider": "openai", "model": flaky}, 1),
            ("luagent_ai_errors_total", {"provider": "openai", "model": flaky}, 0),
            ("luagent_ai_tokens_total", {"provider": "openai", "model": flaky, "direction": "output"},
             fu["output_tokens"]),
            (ai, {"provider": "openai", "model": broken}, 1),
            ("luagent_ai_errors_total", {"provider": "openai", "model": broken}, 1),
            ("luagent_ai_retries_total", {"provider": "openai", "model": broken}, 0),  # a 400 is not retried
        ])

    def test_cache_hits_and_misses(self):
        n = uuid.uuid4().int % 1000000
        _, m0 = self.scrape()
        first = self.server.execute("cached", {"n": n})
        second = self.server.execute("cached", {"n": n})
        self.assertEqual(("miss", "hit"), (first.headers.get("x-cache"), second.headers.get("x-cache")))
        kv = self.assertOk(self.server.execute("kv", {"key": f"k{n}"}))["result"]
        self.assertEqual({"before": False, "after": True}, kv)
        c = "luagent_cache_requests_total"
        self.expect_deltas(m0, [
            (c, {"cache": "result", "result": "miss"}, 1), (c, {"cache": "result", "result": "hit"}, 1),
            (c, {"cache": "agent", "result": "miss"}, 1), (c, {"cache": "agent", "result": "hit"}, 1),
        ])

    def test_health_listener_serves_metrics_without_credentials(self):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.hport, timeout=10 * SLOW)
        try:
            c.request("GET", "/metrics")
            r = c.getresponse()
            body = r.read().decode()
            self.assertEqual(200, r.status, body[:500])
            self.assertIn("luagent_http_requests_total", body)
            c.request("GET", "/api/v1/agents")
            r = c.getresponse()
            self.assertEqual(404, r.status)
            self.assertEqual("not_found", json.loads(r.read())["error"]["code"])
        finally:
            c.close()


class MetricsAuthTests(WithKeys, ServerTestCase):
    """On the main listener /metrics needs the viewer role."""
    WORKERS = 1
    AGENTS = {"echo": ECHO}
    KEY_ROLES = ("viewer",)

    def test_viewer_role_needed(self):
        r = self.server.request("GET", "/metrics")
        self.assertEqual(401, r.status, self.ctx_msg(r))
        self.assertEqual("unauthenticated", r.body["error"]["code"])
        r = self.server.request("GET", "/metrics", headers={"Authorization": f"Bearer {self.viewer}"})
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertIn(b"luagent_http_requests_total{route=\"/metrics\",status=\"401\"} 1", r.raw)


class MetricsOffTests(ServerTestCase):
    WORKERS = 1
    AGENTS = {"echo": ECHO}
    ENV = {"LUAGENT_METRICS": "off"}

    def test_route_is_404_and_serving_goes_on(self):
        self.assertOk(self.server.execute("echo", {"a": 1}))
        r = self.server.request("GET", "/metrics")
        self.assertEqual(404, r.status, self.ctx_msg(r))
        self.assertEqual("not_found", r.body["error"]["code"])
        self.assertIn("LUAGENT_METRICS", r.body["error"]["message"])


class MetricsServicesTests(WithPostgres, ServerTestCase):
    """The per-worker gauges of PostgreSQL, Redis and the execution recorder."""
    WORKERS = 2
    AGENTS = {"echo": ECHO, "dbq": 'return {execute = function(task, ctx) '
                                   'return {n = luagent.db.query("select 1 as n")[1].n} end}'}
    DB_PREFIX = "met"

    @classmethod
    def setUpClass(cls):
        from .services import shared_redis
        cls.redis = shared_redis()
        cls.ENV = {"REDIS_URL": cls.redis.url()}
        super().setUpClass()

    def scrape(self):
        r = self.server.request("GET", "/metrics")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        return parse_metrics(r.raw.decode())

    def total(self, m, name):
        return sum(v for (n, _), v in m.items() if n == name)

    def test_pool_redis_and_recorder_gauges(self):
        m0 = self.scrape()
        for i in range(3):
            self.assertOk(self.server.execute("echo", {"i": i}))
        self.assertEqual(1, self.assertOk(self.server.execute("dbq", {}))["result"]["n"])
        # gauges are published by each worker once a second: wait for them
        want = self.total(m0, "luagent_records_written_total") + 4
        # (each worker's redis_up too: a worker that published before its connection was up says 0
        # until its next publication)
        m, _, ok = self.poll(self.scrape, lambda m: self.total(m, "luagent_records_written_total") >= want
                             and self.total(m, "luagent_db_connections_open") >= 1
                             and all(m.get(("luagent_redis_up", frozenset({("worker", w)}))) == 1.0
                                     for w in ("0", "1")), timeout=5)
        self.assertTrue(ok, {k: v for k, v in m.items() if "db_" in k[0] or "record" in k[0]})
        self.assertEqual(want, self.total(m, "luagent_records_written_total"))
        for w in ("0", "1"):
            self.assertEqual(1.0, m.get(("luagent_redis_up", frozenset({("worker", w)}))), m)
            self.assertIn(("luagent_record_queue_length", frozenset({("worker", w)})), m)
            self.assertIn(("luagent_record_spilled_bytes", frozenset({("worker", w)})), m)
        self.assertEqual(0.0, self.total(m, "luagent_record_queue_length"))
        self.assertEqual(0.0, self.total(m, "luagent_db_requests_waiting"))
        code, out = promtool_check(self.server.request("GET", "/metrics").raw.decode())
        self.assertEqual(0, code, out)

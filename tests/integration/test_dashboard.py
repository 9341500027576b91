"""The dashboard's server side: its static files at / (LUAGENT_WEB_DIR through h2o's file handler:
public, content types, ETag/304, edits show at once, no traversal, no listing, JSON 404s, the API
untouched), GET /api/v1/stats (from memory and from Postgres, checked against percentiles computed
here), and the authoring commands `luagent new` / `luagent test` on a scratch directory."""

import http.client
import json
import math
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import uuid
from pathlib import Path

from .harness import BIN, REPO, SLOW, ServerTestCase, WithKeys, WithPostgres, base_env, require_binary
from .test_recording import PASSWORD, pg_url

INDEX = "<!doctype html><title>t</title><script type=module src=app.js></script>\n"
SECRET = "top secret next to the web directory"


def raw_get(port, path, headers=None, method="GET"):
    """A request with `path` sent exactly as written (no client-side normalization)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


class StaticFilesTests(ServerTestCase):
    FIXTURES = ("echo",)

    @classmethod
    def setUpClass(cls):
        cls.root = Path(tempfile.mkdtemp(prefix="luagent-web-"))
        web = cls.root / "web"
        (web / "sub" / "empty").mkdir(parents=True)
        (web / "index.html").write_text(INDEX)
        (web / "app.js").write_text("export const v = 1;\n")
        (web / "style.css").write_text("body { color: red }\n")
        (web / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
        (web / "sub" / "page.txt").write_text("a page\n")
        (cls.root / "secret.txt").write_text(SECRET)
        cls.web = web
        cls.keys_file = str(cls.root / "keys")
        cls.ENV = {"LUAGENT_WEB_DIR": str(web), "LUAGENT_AUTH": "required", "LUAGENT_API_KEYS_FILE": cls.keys_file}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.root, ignore_errors=True)

    def get(self, path, headers=None, method="GET"):
        return raw_get(self.server.port, path, headers, method)

    def test_index_is_public_with_security_and_cache_headers(self):
        status, h, body = self.get("/")
        self.assertEqual(200, status)
        self.assertEqual(INDEX.encode(), body)
        self.assertEqual("text/html; charset=utf-8", h["content-type"])
        self.assertRegex(h["etag"], r'^"[0-9a-f]+-[0-9a-f]+"$')
        self.assertIn("last-modified", h)
        self.assertEqual("no-cache", h["cache-control"])
        self.assertEqual("nosniff", h["x-content-type-options"])
        self.assertIn("script-src 'self'", h["content-security-policy"])
        self.assertIn("frame-ancestors 'none'", h["content-security-policy"])
        self.assertNotIn("unsafe-inline", h["content-security-policy"])
        status, _, body2 = self.get("/index.html")
        self.assertEqual((200, INDEX.encode()), (status, body2))

    def test_head_and_content_types(self):
        status, h, body = self.get("/", method="HEAD")
        self.assertEqual((200, b""), (status, body))
        self.assertEqual(str(len(INDEX)), h["content-length"])
        for path, ctype in (("/app.js", "text/javascript; charset=utf-8"), ("/style.css", "text/css; charset=utf-8"),
                            ("/logo.svg", "image/svg+xml"), ("/sub/page.txt", "text/plain")):
            status, h, _ = self.get(path)
            self.assertEqual(200, status, path)
            self.assertTrue(h["content-type"].startswith(ctype), f"{path}: {h['content-type']}")

    def test_conditional_requests_answer_304(self):
        _, h, _ = self.get("/app.js")
        status, _, body = self.get("/app.js", {"If-None-Match": h["etag"]})
        self.assertEqual((304, b""), (status, body))
        status, _, body = self.get("/app.js", {"If-Modified-Since": h["last-modified"]})
        self.assertEqual(304, status)
        status, _, _ = self.get("/app.js", {"If-None-Match": '"0-0"'})
        self.assertEqual(200, status)

    def served(self, path, until):
        """Files are served from memory, read again when inotify reports a change: poll briefly."""
        got, _, ok = self.poll(lambda: self.get(path), lambda r: until(*r), timeout=3)
        self.assertTrue(ok, f"{path}: {got[0]} {got[2][:80]!r}")
        return got

    def test_an_edited_file_is_served_at_once(self):
        f = self.web / "edit.js"
        f.write_text("export const a = 1;\n")
        _, h1, _ = self.served("/edit.js", lambda s, h, b: b == b"export const a = 1;\n")
        f.write_text("export const a = 22;\n")
        _, h2, _ = self.served("/edit.js", lambda s, h, b: b == b"export const a = 22;\n")
        self.assertNotEqual(h1["etag"], h2["etag"])
        f.unlink()
        self.served("/edit.js", lambda s, h, b: s == 404)

    def test_missing_files_are_json_404s(self):
        for path in ("/nope.js", "/sub/nope", "/a/b/c.css", "/sub/empty/", "/executions/123"):
            status, h, body = self.get(path)
            self.assertEqual(404, status, path)
            self.assertEqual("application/json", h["content-type"], path)
            err = json.loads(body)["error"]
            self.assertEqual("not_found", err["code"], path)
            self.assertTrue(err["request_id"], path)
            self.assertNotIn("content-security-policy", h, path)

    def test_no_directory_listing(self):
        status, h, body = self.get("/sub/")
        self.assertEqual(404, status)
        self.assertNotIn(b"page.txt", body)
        status, h, _ = self.get("/sub")  # h2o redirects a directory to its slash form
        self.assertEqual(301, status)
        self.assertEqual("/sub/", h["location"])

    def test_path_traversal_never_leaves_the_directory(self):
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/sub/../../secret.txt", "/%2E%2E%2Fsecret.txt",
                     "/..%2fsecret.txt", "/sub/%2e%2e/%2e%2e/secret.txt", "//../secret.txt", "/./../secret.txt",
                     "/sub/..%5c..%5csecret.txt", "/%252e%252e/secret.txt"):
            status, _, body = self.get(path)
            self.assertNotIn(SECRET.encode(), body, path)
            self.assertIn(status, (301, 400, 404), path)

    def test_api_routes_are_untouched(self):
        status, h, body = self.get("/api/v1/agents")
        self.assertEqual(401, status)
        self.assertEqual("unauthenticated", json.loads(body)["error"]["code"])
        for path in ("/api/nope", "/api", "/api/v1/nope.js", "/v1/models.html", "/v1"):
            status, h, body = self.get(path)
            self.assertEqual(404, status, path)
            self.assertEqual("no such route", json.loads(body)["error"]["message"], path)
        status, h, body = self.get("/", method="POST")
        self.assertEqual(404, status)
        self.assertEqual("not_found", json.loads(body)["error"]["code"])
        status, _, body = self.get("/health")
        self.assertEqual((200, {"status": "ok"}), (status, json.loads(body)))


class RepositoryDashboardTests(ServerTestCase):
    """The dashboard the repository ships (web/): its page loads its modules, all served."""

    @classmethod
    def setUpClass(cls):
        cls.ENV = {"LUAGENT_WEB_DIR": str(REPO / "web")}
        super().setUpClass()

    def test_page_and_every_module_it_imports_are_served(self):
        status, h, body = raw_get(self.server.port, "/")
        self.assertEqual(200, status)
        html = body.decode()
        self.assertIn('<script type="module" src="app.js">', html)
        self.assertIn('name="viewport"', html)
        self.assertIn('href="style.css"', html)
        seen, todo = set(), ["app.js"]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            status, h, body = raw_get(self.server.port, "/" + name)
            self.assertEqual(200, status, name)
            self.assertEqual("text/javascript; charset=utf-8", h["content-type"], name)
            todo += re.findall(r"from '\./([a-z]+\.js)'", body.decode())
        self.assertEqual({"app.js", "api.js", "charts.js", "dom.js", "form.js"}, seen)
        self.assertEqual(200, raw_get(self.server.port, "/style.css")[0])

    def test_no_script_turns_data_into_markup(self):
        for f in (REPO / "web").glob("*.js"):
            text = f.read_text()
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
                self.assertNotIn(sink, text, f"{f.name} uses {sink}")


class NoWebDirTests(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.ENV = {"LUAGENT_WEB_DIR": "/nonexistent/web"}
        super().setUpClass()

    def test_no_dashboard_but_the_api_serves(self):
        status, h, body = raw_get(self.server.port, "/")
        self.assertEqual(404, status)
        self.assertEqual("not_found", json.loads(body)["error"]["code"])
        self.assertEqual(200, self.server.request("GET", "/api/v1/agents").status)
        self.assertIn("LUAGENT_WEB_DIR '/nonexistent/web' is not a directory", self.server.log_text())


# ---- GET /api/v1/stats ----

QUICK = """
return {execute = function(task, ctx)
  if task.sleep then luagent.sleep(task.sleep) end
  if task.fail then error("asked to fail") end
  return {ok = true}
end}
"""


def percentile_cont(values, p):
    v = sorted(values)
    pos = p * (len(v) - 1)
    lo = math.floor(pos)
    if lo + 1 >= len(v):
        return v[-1]
    return v[lo] + (v[lo + 1] - v[lo]) * (pos - lo)


class StatsHelpers:
    def stats(self, window=None, key=None):
        path = "/api/v1/stats" + (f"?window={window}" if window is not None else "")
        h = {"Authorization": f"Bearer {key}"} if key else {}
        return self.server.request("GET", path, headers=h)

    def run_mix(self, key=None):
        """6 executions of a, 3 of b (one failing): their records' durations by agent."""
        h = {"Authorization": f"Bearer {key}"} if key else {}
        ids = []
        for agent, task in [("a", {"sleep": s}) for s in (0, 5, 10, 20, 30, 40)] + \
                           [("b", {}), ("b", {"sleep": 15}), ("b", {"fail": True})]:
            r = self.server.execute(agent, task, headers=h)
            self.assertIn(r.status, (200, 500), self.ctx_msg(r))
            ids.append(r.body.get("execution_id") or r.body["error"]["execution_id"])
        recs = [self.server.request("GET", f"/api/v1/executions/{i}", headers=h).body for i in ids]
        return recs

    def check_against(self, body, recs):
        by = {}
        for r in recs:
            by.setdefault(r["agent"], []).append(r)
        durations = [r["duration_ms"] for r in recs]
        t = body["total"]
        self.assertEqual((len(recs), 1, len(recs) - 1), (t["count"], t["failed"], t["succeeded"]), body)
        for p in (50, 95, 99):
            self.assertAlmostEqual(percentile_cont(durations, p / 100), t[f"p{p}_ms"], delta=0.002, msg=body)
        self.assertEqual(sorted(by), [a["agent"] for a in body["agents"]])
        for a in body["agents"]:
            d = [r["duration_ms"] for r in by[a["agent"]]]
            self.assertEqual(len(d), a["count"])
            self.assertAlmostEqual(percentile_cont(d, 0.95), a["p95_ms"], delta=0.002)
            self.assertEqual(len(d), sum(b["count"] for b in a["series"]))
        self.assertEqual(len(recs), sum(b["count"] for b in t["series"]))
        step = body["bucket_ms"]
        starts = [b["start"] for b in t["series"]]
        self.assertEqual(sorted(starts), starts)
        for b in t["series"]:
            ms = iso_to_ms(b["start"])
            self.assertEqual(0, ms % step, b)


def iso_to_ms(s):
    import datetime
    d = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return round(d.timestamp() * 1000)


class StatsMemoryTests(StatsHelpers, WithKeys, ServerTestCase):
    AGENTS = {"a": QUICK, "b": QUICK}

    def test_counts_and_percentiles_per_agent_over_time(self):
        r0 = self.stats("15m", self.viewer)
        self.assertEqual(200, r0.status, self.ctx_msg(r0))
        recs = self.run_mix(self.operator)
        r = self.stats("15m", self.viewer)
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertEqual({"window", "bucket_ms", "from", "to", "source", "total", "agents"}, set(r.body))
        self.assertEqual(("15m", 30000, "memory"), (r.body["window"], r.body["bucket_ms"], r.body["source"]))
        self.assertEqual(15 * 60000, iso_to_ms(r.body["to"]) - iso_to_ms(r.body["from"]))
        self.check_against(r.body, recs)
        self.assertEqual({"count", "succeeded", "failed", "p50_ms", "p95_ms", "p99_ms", "start"},
                         set(r.body["total"]["series"][0]))
        d = self.stats(None, self.viewer)  # the default window
        self.assertEqual(("1h", 60000), (d.body["window"], d.body["bucket_ms"]))
        for w, step in (("6h", 600000), ("24h", 1800000), ("7d", 21600000)):
            b = self.stats(w, self.viewer).body
            self.assertEqual((w, step, len(recs)), (b["window"], b["bucket_ms"], b["total"]["count"]))

    def test_bad_windows_are_400(self):
        for w in ("2h", "", "1H", "15", "1h%20", "7d%00", "%zz", "x" * 300, "-1h"):
            r = self.stats(w, self.viewer)
            self.assertEqual(400, r.status, f"{w!r}: {r.describe()}")
            self.assertEqual("invalid_request", r.body["error"]["code"])
            self.assertIn("15m, 1h, 6h, 24h, 7d", r.body["error"]["message"])

    def test_needs_a_viewer_credential(self):
        self.assertEqual(401, self.stats("1h").status)
        self.assertEqual(401, self.stats("1h", "lg_" + "x" * 43).status)
        r = self.server.request("POST", "/api/v1/stats", body={}, headers={"Authorization": f"Bearer {self.viewer}"})
        self.assertEqual(405, r.status)
        r = self.server.request("HEAD", "/api/v1/stats", headers={"Authorization": f"Bearer {self.viewer}"})
        self.assertEqual(200, r.status)


class StatsPostgresTests(StatsHelpers, WithPostgres, ServerTestCase):
    AGENTS = {"a": QUICK, "b": QUICK}
    DB_PREFIX = "stats"

    @classmethod
    def db_url(cls):
        return pg_url(cls.pg, cls.db)

    def test_from_the_executions_table(self):
        recs = self.run_mix()
        body, _, ok = self.poll(lambda: self.stats("15m").body,
                                lambda b: b.get("source") == "database" and b["total"]["count"] == len(recs), timeout=10)
        self.assertTrue(ok, self.ctx_msg(extra=f"stats never showed the {len(recs)} recorded executions: {body}"))
        self.assertNotIn(PASSWORD, json.dumps(body))
        self.check_against(body, recs)

        # rows written straight into the table, at known times: the window and the buckets are the database's
        now = time.time()
        rows = [("old", now - 3 * 3600, 7.0, "succeeded"), ("old", now - 3 * 3600 + 1, 9.0, "failed"),
                ("older", now - 2 * 86400, 100.0, "succeeded"), ("ancient", now - 30 * 86400, 1.0, "succeeded"),
                ("queued", now - 60, None, "queued")]
        values = ",".join(
            f"('{uuid.uuid4()}', '{a}', '{st}', {'NULL' if d is None else d}, to_timestamp({t}))" for a, t, d, st in rows)
        self.pg.psql(f"INSERT INTO executions (id, agent, status, duration_ms, created_at) VALUES {values}", db=self.db)
        day = self.stats("24h").body
        names = [a["agent"] for a in day["agents"]]
        self.assertEqual(["a", "b", "old"], names, day)
        old = day["agents"][2]
        self.assertEqual((2, 1, 8.0, 8.9), (old["count"], old["failed"], old["p50_ms"], old["p95_ms"]))
        self.assertEqual(1, len(old["series"]))
        self.assertEqual(math.floor((now - 3 * 3600) * 1000 / 1800000) * 1800000, iso_to_ms(old["series"][0]["start"]))
        week = self.stats("7d").body
        self.assertEqual(["a", "b", "old", "older"], [a["agent"] for a in week["agents"]])
        self.assertEqual(len(recs) + 3, week["total"]["count"])
        hour = self.stats("1h").body
        self.assertEqual(["a", "b"], [a["agent"] for a in hour["agents"]])


# ---- luagent new / luagent test ----

class AuthoringTests(unittest.TestCase):
    """`luagent new` and `luagent test` on a scratch directory (no server)."""

    @classmethod
    def setUpClass(cls):
        require_binary()

    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix="luagent-new-"))
        (self.dir / "agents").mkdir()
        self.env = base_env({"LUAGENT_PROVIDERS_DIR": str(REPO / "providers")})

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def cli(self, *args):
        return subprocess.run([str(BIN), *args], cwd=self.dir, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=60 * SLOW)

    def test_new_then_test_passes_and_a_broken_agent_fails(self):
        r = self.cli("new", "greeter")
        self.assertEqual(0, r.returncode, r.stderr)
        agent, spec = self.dir / "agents" / "greeter.lua", self.dir / "spec" / "greeter_spec.lua"
        self.assertTrue(agent.is_file() and spec.is_file(), r.stdout)
        self.assertIn("luagent.testing", spec.read_text())
        r = self.cli("test")
        self.assertEqual(0, r.returncode, r.stdout + r.stderr)
        self.assertRegex(r.stdout, r"\b4 successes / 0 failures / 0 errors\b")
        # the same agent in the real runtime: it loads and answers what its spec expects
        self.assertEqual(0, self.cli("check", "agents").returncode)
        r = self.cli("run", "greeter", "--task", '{"topic": "tides"}')
        self.assertEqual(0, r.returncode, r.stderr)
        self.assertEqual("mock: Tell me about tides", json.loads(r.stdout)["answer"])

        agent.write_text(agent.read_text().replace("return {answer = r.content", "return {answer = 'x' .. r.content"))
        r = self.cli("test", "spec", "-o", "TAP")
        self.assertNotEqual(0, r.returncode, r.stdout)
        self.assertRegex(r.stdout, r"not ok \d+ - greeter answers with the model's reply")
        agent.write_text("return {execute = function( end}")
        r = self.cli("test")
        self.assertNotEqual(0, r.returncode, r.stdout)

    def test_fake_http_and_errors_in_a_spec_of_ones_own(self):
        self.assertEqual(0, self.cli("new", "fetcher").returncode)
        (self.dir / "agents" / "fetcher.lua").write_text("""
return {execute = function(task, ctx)
  local res = luagent.http.request{method = "POST", url = "https://api.example.com/v1/items", body = "q"}
  local data = luagent.json.decode(res.body)
  luagent.sleep(1000)
  ctx.emit({n = #data.items})
  return {first = data.items[1], status = res.status, empty = luagent.json.decode("[]"), now = luagent.now()}
end}
""")
        (self.dir / "spec" / "fetcher_spec.lua").write_text("""
local testing = require("luagent.testing")
describe("fetcher", function()
  before_each(testing.reset)
  it("uses the stub", function()
    testing.http.on("POST", "https://api.example.com/v1/items", {status = 201, body = {items = {"x", "y"}}})
    local t0 = testing.clock_ms()
    local r, run = testing.load("fetcher"):run({})
    assert.are.same({"x", 201}, {r.first, r.status})
    assert.are.equal(1000, testing.clock_ms() - t0)
    assert.are.same({{n = 2}}, run.emits)
    assert.are.equal("[]", testing.json.encode(r.empty))
    assert.are.equal("{}", testing.json.encode({}))
    assert.are.equal("q", testing.http.calls[1].body)
  end)
  it("fails like an unreachable upstream without a stub", function()
    local ok, err = pcall(function() return testing.load("fetcher"):run({}) end)
    assert.is_false(ok)
    assert.are.same({502, "upstream_error"}, {err.status, err.code})
  end)
  it("keeps the sandbox", function()
    local a = testing.load("fetcher")
    assert.is_nil(getfenv(a.execute).io)
    assert.is_nil(getfenv(a.execute).require)
    assert.has_error(function() getfenv(a.execute).x = 1 end)
  end)
end)
""")
        r = self.cli("test", "spec", "-o", "TAP")
        self.assertEqual(0, r.returncode, r.stdout + r.stderr)
        self.assertEqual(3, len(re.findall(r"^ok \d+ - fetcher", r.stdout, re.M)), r.stdout)

    def test_refuses_to_overwrite_and_bad_names(self):
        self.assertEqual(0, self.cli("new", "team.review").returncode)
        agent = self.dir / "agents" / "team" / "review.lua"
        self.assertTrue(agent.is_file())
        self.assertTrue((self.dir / "spec" / "team.review_spec.lua").is_file())
        agent.write_text("-- mine")
        r = self.cli("new", "team.review")
        self.assertEqual(1, r.returncode)
        self.assertIn("already exists", r.stderr)
        self.assertEqual("-- mine", agent.read_text())
        (self.dir / "spec" / "solo_spec.lua").write_text("-- a spec of mine")
        r = self.cli("new", "solo")  # the spec exists: neither file is written
        self.assertEqual(1, r.returncode)
        self.assertFalse((self.dir / "agents" / "solo.lua").exists())
        for bad in ("../evil", ".hidden", "a..b", "trailing.", "sp ace", "x/y", "", "a" * 128):
            r = self.cli("new", bad)
            self.assertEqual(2, r.returncode, bad)
            self.assertIn("not an agent name", r.stderr, bad)
        self.assertEqual(2, self.cli("new").returncode)
        self.assertFalse((self.dir.parent / "evil.lua").exists())
        self.assertEqual(2, self.cli("test", "no-such-dir").returncode)

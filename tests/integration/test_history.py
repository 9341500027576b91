"""Execution history: GET /api/v1/executions/{id} (one record with its events) and GET
/api/v1/executions (newest first, filters, paging), process-wide over the workers, bounded by
LUAGENT_HISTORY_SIZE and off when it is 0."""

import datetime
import http.server
import json
import re
import socket
import threading
import time
import urllib.parse
import uuid

from .harness import REPO, UUID_RE, VERSION_RE, LocalHTTP, ServerTestCase, free_port

ISO_MS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
RECORD_KEYS = {"execution_id", "agent", "version", "status", "mode", "task", "context", "result", "error",
               "usage", "duration_ms", "user", "parent_id", "request_id", "created_at", "started_at",
               "finished_at", "events"}


def parse_iso(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)


def iso_ms(t, offset_minutes=0):
    """RFC 3339 text of epoch seconds `t` with millisecond precision, in UTC (Z) or at an offset."""
    tz = datetime.timezone(datetime.timedelta(minutes=offset_minutes))
    d = datetime.datetime.fromtimestamp(t, tz)
    text = d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}"
    if offset_minutes == 0:
        return text + "Z"
    sign = "+" if offset_minutes > 0 else "-"
    m = abs(offset_minutes)
    return text + f"{sign}{m // 60:02d}:{m % 60:02d}"


class Upstream:
    """A local HTTP server answering 200 {"ok": true} to everything; remembers the paths it saw."""

    def __init__(self):
        self.seen = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.seen.append(self.path)
                body = b'{"ok":true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = LocalHTTP(Handler)
        self.port = self.server.port

    def stop(self):
        self.server.stop()


RECORDER = r'''
return {
  execute = function(task, ctx)
    ctx.emit({step = 1})
    ctx.log.info("ctx line", {k = "v"})
    ctx.log.debug("debug line is not recorded")
    luagent.log.debug("module debug line is not recorded")
    luagent.log.warn("warn line", {n = 2})
    luagent.log.error("error line")
    local r = luagent.ai.chat{messages = {{role = "user", content = "hello there"}}}
    local h = luagent.http.request{url = task.url}
    ctx.emit("two")
    return {content = r.content, status = h.status}
  end,
}
'''

BASIC = r'''
return {
  execute = function(task, ctx)
    if task.fail then error("boom " .. tostring(task.fail)) end
    if task.ms then luagent.sleep(task.ms) end
    return {echo = task}
  end,
}
'''

CHATTY = r'''
return {
  execute = function(task, ctx)
    for i = 1, task.n do ctx.emit(i) end
    return task.n
  end,
}
'''

SLOWPOKE = r'''
return {
  timeout_ms = 300,
  execute = function(task, ctx)
    luagent.sleep(task.ms)
    return "late"
  end,
}
'''


class HistoryHelpers:
    """Mixin: fetch records and listings and check their shape."""

    def get_record(self, execution_id):
        r = self.server.request("GET", f"/api/v1/executions/{execution_id}")
        self.assertEqual(200, r.status, self.ctx_msg(r, f"GET execution {execution_id}"))
        self.assertIsInstance(r.body, dict, self.ctx_msg(r))
        return r.body

    def wait_final(self, execution_id, timeout=5.0):
        """The record once it is succeeded or failed (the record may land just after the reply)."""
        def get():
            return self.server.request("GET", f"/api/v1/executions/{execution_id}")
        r, _, ok = self.poll(get, lambda r: r.status == 200 and isinstance(r.body, dict)
                             and r.body.get("status") in ("succeeded", "failed"), timeout=timeout, interval=0.02)
        self.assertTrue(ok, self.ctx_msg(r, f"execution {execution_id} never reached a final record"))
        return r.body

    def list(self, **params):
        q = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        r = self.server.request("GET", "/api/v1/executions" + (f"?{q}" if q else ""))
        self.assertEqual(200, r.status, self.ctx_msg(r, f"listing {params}"))
        self.assertIsInstance(r.body, dict, self.ctx_msg(r))
        self.assertEqual({"items", "next_cursor"}, set(r.body), self.ctx_msg(r))
        self.assertIsInstance(r.body["items"], list, self.ctx_msg(r))
        return r.body

    def list_all(self, **params):
        """Every item, following next_cursor; fails if a page repeats."""
        items, cursor, pages = [], None, 0
        while True:
            page = self.list(cursor=cursor, **params)
            items += page["items"]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                return items, pages
            self.assertLess(pages, 100, "paging never ends")

    def assertRecordShape(self, rec, with_events=True):
        keys = RECORD_KEYS if with_events else RECORD_KEYS - {"events"}
        self.assertEqual(keys, set(rec), rec)
        self.assertRegex(rec["execution_id"], UUID_RE)
        self.assertEqual("7", rec["execution_id"][14], f"not a UUIDv7: {rec['execution_id']}")
        self.assertIn(rec["status"], ("queued", "running", "succeeded", "failed"))
        self.assertIn(rec["mode"], ("sync", "async"))
        for k in ("created_at", "started_at", "finished_at"):
            if rec[k] is not None:
                self.assertRegex(rec[k], ISO_MS_RE, f"{k} in {rec}")


class HistoryTests(HistoryHelpers, ServerTestCase):
    WORKERS = 2
    AGENTS = {"recorder": RECORDER, "basic": BASIC, "chatty": CHATTY, "slowpoke": SLOWPOKE,
              "pager": BASIC, "burst": BASIC, "since": BASIC, "spread": BASIC, "walkaway": BASIC}
    ENV = {"LUAGENT_PROVIDERS_DIR": str(REPO / "providers")}

    @classmethod
    def setUpClass(cls):
        cls.upstream = Upstream()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.upstream.stop()

    # ---- one record ---------------------------------------------------------------------------
    def test_sync_record_fields(self):
        task = {"url": f"http://user:s3cret@127.0.0.1:{self.upstream.port}/data/x?token=abc&q=1"}
        context = {"tenant": "t1", "n": 3}
        t0 = time.time()
        r = self.server.execute("recorder", task, context=context, headers={"X-Request-Id": "req-hist-1"})
        t1 = time.time()
        body = self.assertOk(r)
        self.assertEqual(200, body["result"]["status"])
        self.assertEqual("/data/x?token=abc&q=1", self.upstream.seen[-1])
        rec = self.wait_final(body["execution_id"])
        self.assertRecordShape(rec)
        self.assertEqual(body["execution_id"], rec["execution_id"])
        self.assertEqual("recorder", rec["agent"])
        self.assertRegex(rec["version"], VERSION_RE)
        self.assertEqual("succeeded", rec["status"])
        self.assertEqual("sync", rec["mode"])
        self.assertEqual(task, rec["task"])
        self.assertEqual(context, rec["context"])
        self.assertEqual(body["result"], rec["result"])
        self.assertIsNone(rec["error"])
        self.assertIsInstance(rec["usage"], dict)
        self.assertIsInstance(rec["duration_ms"], (int, float))
        self.assertGreaterEqual(rec["duration_ms"], 0)
        self.assertIsNone(rec["user"], "auth is off: no user")
        self.assertIsNone(rec["parent_id"])
        self.assertEqual("req-hist-1", rec["request_id"])
        created, started, finished = (parse_iso(rec[k]) for k in ("created_at", "started_at", "finished_at"))
        self.assertLessEqual(created, started)
        self.assertLessEqual(started, finished)
        # the clock is UTC: the record falls inside the request (with a little slack for rounding)
        self.assertGreaterEqual(created.timestamp(), t0 - 1)
        self.assertLessEqual(finished.timestamp(), t1 + 1)

    def test_events_in_order(self):
        url = f"http://alice:pw@127.0.0.1:{self.upstream.port}/path/y?secret=1"
        body = self.assertOk(self.server.execute("recorder", {"url": url}))
        events = self.wait_final(body["execution_id"])["events"]
        self.assertEqual(list(range(1, len(events) + 1)), [e["seq"] for e in events], events)
        for e in events:
            self.assertEqual({"seq", "type", "at", "data"}, set(e), e)
            self.assertRegex(e["at"], ISO_MS_RE, e)
        self.assertEqual(["emit", "log", "log", "log", "ai_call", "http_call", "emit"], [e["type"] for e in events],
                         json.dumps(events, indent=1))
        ats = [parse_iso(e["at"]) for e in events]
        self.assertEqual(sorted(ats), ats, "event times go backwards")
        with self.subTest("emit"):
            self.assertEqual({"step": 1}, events[0]["data"])
            self.assertEqual("two", events[6]["data"])
        with self.subTest("log (debug lines left out)"):
            self.assertEqual({"level": "info", "message": "ctx line", "fields": {"k": "v"}}, events[1]["data"])
            self.assertEqual({"level": "warn", "message": "warn line", "fields": {"n": 2}}, events[2]["data"])
            self.assertEqual("error", events[3]["data"]["level"])
            self.assertEqual("error line", events[3]["data"]["message"])
            self.assertNotIn("fields", events[3]["data"])
        with self.subTest("ai_call"):
            d = events[4]["data"]
            self.assertEqual("mock", d["provider"], d)
            self.assertIsInstance(d["model"], str)
            self.assertTrue(d["model"], d)
            self.assertEqual(2, d["input_tokens"], d)  # "hello there"
            self.assertGreater(d["output_tokens"], 0, d)
            self.assertIn("retries", d)
            self.assertGreaterEqual(d["duration_ms"], 0)
            self.assertNotIn("error", d)
        with self.subTest("http_call"):
            d = events[5]["data"]
            self.assertEqual("GET", d["method"], d)
            self.assertEqual(f"http://127.0.0.1:{self.upstream.port}/path/y", d["url"], d)
            self.assertEqual(200, d["status"], d)
            self.assertGreaterEqual(d["duration_ms"], 0)
            text = json.dumps(events)
            for leak in ("secret=1", "alice", ":pw@"):
                self.assertNotIn(leak, text, "the record leaks the query or credentials")

    def test_http_call_failure_has_error(self):
        port = free_port()  # nothing listens there
        src = f'''
return {{
  execute = function(task, ctx)
    local ok = pcall(luagent.http.request, {{url = "http://127.0.0.1:{port}/nothing?x=1", method = "POST", body = "b"}})
    return ok
  end,
}}'''
        self.server.write_agent("refused", src)
        r, _, ok = self.poll(lambda: self.server.execute("refused", {}), lambda r: r.status == 200, timeout=5,
                             interval=0.05)
        body = self.assertOk(r, False)
        events = self.wait_final(body["execution_id"])["events"]
        calls = [e for e in events if e["type"] == "http_call"]
        self.assertEqual(1, len(calls), events)
        d = calls[0]["data"]
        self.assertEqual("POST", d["method"])
        self.assertEqual(f"http://127.0.0.1:{port}/nothing", d["url"])
        self.assertIsInstance(d.get("error"), str, d)
        self.assertTrue(d["error"])
        self.assertNotIn("status", d)

    def test_failed_execution_record(self):
        r = self.server.execute("basic", {"fail": "x1"})
        err = self.assertError(r, 500, "agent_error")
        rec = self.wait_final(err["execution_id"])
        self.assertRecordShape(rec)
        self.assertEqual("failed", rec["status"])
        self.assertIsNone(rec["result"])
        self.assertIsInstance(rec["error"], dict, rec)
        self.assertLessEqual({"code", "message", "request_id", "execution_id"}, set(rec["error"]), rec["error"])
        self.assertEqual("agent_error", rec["error"]["code"])
        self.assertIn("boom x1", rec["error"]["message"])
        self.assertEqual(err["request_id"], rec["error"]["request_id"])
        self.assertEqual(rec["execution_id"], rec["error"]["execution_id"])
        self.assertIsNotNone(rec["finished_at"])

    def test_timeout_record(self):
        r = self.server.execute("slowpoke", {"ms": 3000})
        err = self.assertError(r, 504)
        rec = self.wait_final(err["execution_id"])
        self.assertEqual("failed", rec["status"])
        self.assertEqual(err["code"], rec["error"]["code"])
        self.assertEqual(rec["execution_id"], rec["error"]["execution_id"])
        self.assertLess(rec["duration_ms"], 2500, "the record's duration is not the timeout's")

    def test_events_truncated_after_256(self):
        body = self.assertOk(self.server.execute("chatty", {"n": 300}), 300)
        events = self.wait_final(body["execution_id"])["events"]
        self.assertEqual(257, len(events))
        self.assertEqual(list(range(1, 257)), [e["data"] for e in events[:256]])
        self.assertEqual("truncated", events[-1]["type"])
        self.assertEqual({"dropped": 44}, events[-1]["data"])
        self.assertEqual(257, events[-1]["seq"])
        with self.subTest("exactly 256: no truncated marker"):
            body = self.assertOk(self.server.execute("chatty", {"n": 256}), 256)
            events = self.wait_final(body["execution_id"])["events"]
            self.assertEqual(256, len(events))
            self.assertNotIn("truncated", [e["type"] for e in events])

    def test_unknown_and_malformed_ids(self):
        for bad in (str(uuid.uuid4()), "0190b5c4-0000-7000-8000-000000000000", "not-an-id", "x" * 300, "%00"):
            with self.subTest(id=bad):
                r = self.server.request("GET", f"/api/v1/executions/{bad}")
                self.assertError(r, 404, "not_found")

    # ---- process-wide -------------------------------------------------------------------------
    def test_any_worker_answers(self):
        """Each execute and each GET on a new connection: with 2 workers some land on the other one."""
        ids = []
        for i in range(30):
            ids.append(self.assertOk(self.server.execute("spread", {"i": i}), {"echo": {"i": i}})["execution_id"])
        for i, eid in enumerate(ids):
            for attempt in range(3):
                rec = self.get_record(eid)
                self.assertEqual({"i": i}, rec["task"])
                self.assertEqual("succeeded", rec["status"])

    # ---- listing ------------------------------------------------------------------------------
    def test_paging_returns_each_once(self):
        ids = [self.assertOk(self.server.execute("pager", {"i": i}))["execution_id"] for i in range(25)]
        for eid in ids:
            self.wait_final(eid)
        pages = [self.list(agent="pager", limit=10)]
        while pages[-1]["next_cursor"] is not None:
            self.assertLess(len(pages), 10)
            pages.append(self.list(agent="pager", limit=10, cursor=pages[-1]["next_cursor"]))
        self.assertEqual([10, 10, 5], [len(p["items"]) for p in pages])
        got = [it["execution_id"] for p in pages for it in p["items"]]
        self.assertEqual(len(got), len(set(got)), "an execution shows up twice")
        self.assertEqual(set(ids), set(got), "not every execution is listed")
        self.assertEqual(sorted(got, reverse=True), got, "pages are not in descending id order")
        created = [parse_iso(it["created_at"]) for p in pages for it in p["items"]]
        self.assertEqual(sorted(created, reverse=True), created, "not newest first")
        self.assertEqual(pages[0]["items"][-1]["execution_id"], pages[0]["next_cursor"])
        for p in pages:
            for it in p["items"]:
                self.assertRecordShape(it, with_events=False)
                self.assertEqual("pager", it["agent"])
        with self.subTest("default limit is 50"):
            for i in range(30):
                self.assertOk(self.server.execute("pager", {"j": i}))
            page = self.list(agent="pager")
            self.assertEqual(50, len(page["items"]))
            self.assertIsNotNone(page["next_cursor"])
            rest = self.list(agent="pager", cursor=page["next_cursor"])
            self.assertEqual(5, len(rest["items"]))
            self.assertIsNone(rest["next_cursor"])
        with self.subTest("limit 500 accepted"):
            self.assertEqual(55, len(self.list(agent="pager", limit=500)["items"]))

    def test_newest_first_within_a_millisecond(self):
        """Executions run one after the other are listed in exactly the reverse order, even when
        several start in the same millisecond (ids are UUIDv7: they must sort by creation)."""
        ids = [self.assertOk(self.server.execute("burst", {"i": i}))["execution_id"] for i in range(40)]
        for eid in ids:
            self.wait_final(eid)
        items, _ = self.list_all(agent="burst", limit=500)
        got = [it["execution_id"] for it in items]
        self.assertEqual(set(ids), set(got))
        same_ms = sum(1 for a, b in zip(ids, ids[1:]) if a[:13] == b[:13])
        misordered = [(i, a, b) for i, (a, b) in enumerate(zip(ids, ids[1:])) if a > b]
        self.assertEqual([], misordered,
                         f"ids of later executions sort before earlier ones ({same_ms} of {len(ids) - 1} "
                         f"consecutive pairs share a millisecond)")
        self.assertEqual(list(reversed(ids)), got, "the listing is not newest first")

    def test_filter_by_agent_and_status(self):
        ok = self.assertOk(self.server.execute("basic", {"tag": "ok"}))["execution_id"]
        bad = self.assertError(self.server.execute("basic", {"fail": "f"}), 500)["execution_id"]
        for eid in (ok, bad):
            self.wait_final(eid)
        items, _ = self.list_all(agent="basic", limit=500)
        self.assertTrue(all(it["agent"] == "basic" for it in items))
        self.assertIn(ok, [it["execution_id"] for it in items])
        succeeded, _ = self.list_all(agent="basic", status="succeeded")
        failed, _ = self.list_all(agent="basic", status="failed")
        self.assertTrue(all(it["status"] == "succeeded" for it in succeeded), succeeded)
        self.assertTrue(all(it["status"] == "failed" for it in failed), failed)
        self.assertIn(ok, [it["execution_id"] for it in succeeded])
        self.assertNotIn(ok, [it["execution_id"] for it in failed])
        self.assertIn(bad, [it["execution_id"] for it in failed])
        self.assertEqual([], self.list(agent="no-such-agent")["items"])
        self.assertEqual([], self.list(agent="basic", status="queued")["items"])

    def test_since_forms(self):
        before = [self.assertOk(self.server.execute("since", {"b": i}))["execution_id"] for i in range(3)]
        for eid in before:
            self.wait_final(eid)
        time.sleep(0.05)
        cut = time.time()
        time.sleep(0.05)
        after = [self.assertOk(self.server.execute("since", {"a": i}))["execution_id"] for i in range(3)]
        for eid in after:
            self.wait_final(eid)
        newest_first = list(reversed(after))
        everything = list(reversed(before + after))
        cases = {
            "RFC 3339 Z": (iso_ms(cut), newest_first),
            "RFC 3339 +05:30": (iso_ms(cut, 330), newest_first),
            "RFC 3339 -02:00": (iso_ms(cut, -120), newest_first),
            "epoch ms": (str(int(cut * 1000)), newest_first),
            "old date": ("2000-01-01", everything),
            "future date": ("2999-12-31", []),
            "future time": (iso_ms(cut + 3600), []),
        }
        for label, (since, want) in cases.items():
            with self.subTest(label, since=since):
                got = [it["execution_id"] for it in self.list(agent="since", since=since)["items"]]
                self.assertEqual(sorted(want), sorted(got))  # the order is checked elsewhere

    def test_bad_parameters(self):
        bad = {"limit": ["0", "501", "abc", "-1", "1.5", ""], "status": ["done", "SUCCEEDED", ""],
               "since": ["yesterday", "2026-13-45", "12:00", "2026-01-01T25:00:00Z"],
               "cursor": ["nope", "1234"]}
        for name, values in bad.items():
            for v in values:
                with self.subTest(param=name, value=v):
                    q = urllib.parse.urlencode({name: v})
                    r = self.server.request("GET", f"/api/v1/executions?{q}")
                    self.assertError(r, 400, "invalid_request")

    # ---- client disconnect --------------------------------------------------------------------
    def test_client_disconnect_is_recorded(self):
        marker = uuid.uuid4().hex
        body = json.dumps({"task": {"ms": 5000, "marker": marker}}).encode()
        s = socket.create_connection(("127.0.0.1", self.server.port))
        s.sendall(b"POST /api/v1/agents/walkaway/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.3)
        s.close()

        def find():
            for it in self.list(agent="walkaway", limit=500)["items"]:
                if (it.get("task") or {}).get("marker") == marker:
                    return it
            return None
        it, took, ok = self.poll(find, lambda it: it is not None and it["status"] == "failed", timeout=4,
                                 interval=0.05)
        self.assertTrue(ok, f"no failed record for the abandoned execution (last: {it})\n{self.server.log_tail(15)}")
        self.assertEqual("client_closed", it["error"]["code"], it)
        self.assertLess(took, 4.0, "the execution ran to its end instead of being cancelled")


class HistoryAiErrorTests(HistoryHelpers, ServerTestCase):
    """A failed AI call is an ai_call event with an error."""
    WORKERS = 1
    AGENTS = {"aifail": r'''
return {
  execute = function(task, ctx)
    local ok, err = pcall(luagent.ai.chat, {provider = "openai", model = "gpt-test", retries = 1,
                                             messages = {{role = "user", content = "hi"}}})
    return ok
  end,
}
'''}

    @classmethod
    def setUpClass(cls):
        cls.ENV = {"LUAGENT_PROVIDERS_DIR": str(REPO / "providers"), "OPENAI_API_KEY": "sk-test",
                   "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"}
        super().setUpClass()

    def test_failed_ai_call_event(self):
        body = self.assertOk(self.server.execute("aifail", {}), False)
        events = self.wait_final(body["execution_id"])["events"]
        calls = [e for e in events if e["type"] == "ai_call"]
        self.assertEqual(1, len(calls), events)
        d = calls[0]["data"]
        self.assertEqual("openai", d["provider"])
        self.assertEqual("gpt-test", d["model"])
        self.assertIsInstance(d.get("error"), str, d)
        self.assertTrue(d["error"])
        self.assertEqual(0, d["input_tokens"])
        self.assertEqual(0, d["output_tokens"])
        self.assertNotIn("sk-test", json.dumps(events))
        self.assertEqual([], [e for e in events if e["type"] == "http_call"],
                         "a provider call is recorded as ai_call, not http_call")


class HistorySizeTests(HistoryHelpers, ServerTestCase):
    """LUAGENT_HISTORY_SIZE=5: the oldest records are dropped."""
    WORKERS = 2
    AGENTS = {"basic": BASIC}
    ENV = {"LUAGENT_HISTORY_SIZE": "5"}

    def test_oldest_dropped(self):
        ids = []
        for i in range(12):
            eid = self.assertOk(self.server.execute("basic", {"i": i}))["execution_id"]
            self.wait_final(eid)
            ids.append(eid)
        for eid in ids[:7]:
            self.assertError(self.server.request("GET", f"/api/v1/executions/{eid}"), 404, "not_found")
        for eid in ids[7:]:
            self.assertEqual("succeeded", self.get_record(eid)["status"])
        page = self.list(limit=500)
        self.assertEqual(list(reversed(ids[7:])), [it["execution_id"] for it in page["items"]])
        self.assertIsNone(page["next_cursor"])


class HistoryOffTests(ServerTestCase):
    """LUAGENT_HISTORY_SIZE=0: executions still run, nothing is kept."""
    WORKERS = 2
    AGENTS = {"basic": BASIC}
    ENV = {"LUAGENT_HISTORY_SIZE": "0"}

    def test_nothing_kept(self):
        ids = [self.assertOk(self.server.execute("basic", {"i": i}), {"echo": {"i": i}})["execution_id"]
               for i in range(5)]
        time.sleep(0.1)
        for eid in ids:
            self.assertError(self.server.request("GET", f"/api/v1/executions/{eid}"), 404, "not_found")
        r = self.server.request("GET", "/api/v1/executions")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertEqual({"items": [], "next_cursor": None}, r.body)

"""Execution records in Postgres (DATABASE_URL): every execution (sync, async, failed, SSE) is one
row in `executions` with its events in `execution_events`; the history API answers from SQL (and
from a second server on the same database), falls back to memory when Postgres is away; no record
is lost across Postgres restarts and outages (memory queue, spill files, replay by a new server);
/ready reports the database; the DATABASE_URL password never shows. Real PostgreSQL (services.py):
rows are checked with SQL, answers over HTTP."""

import glob
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.parse
import uuid

from .harness import SLOW, UUID_RE, Server, ServerTestCase, WithPostgres, measure
from .services import Postgres

PASSWORD = "rec-pw-k33p-0ut-of-l0gs"
RECORD_KEYS = {"execution_id", "agent", "version", "status", "mode", "task", "context", "result", "error",
               "usage", "duration_ms", "user", "parent_id", "request_id", "created_at", "started_at",
               "finished_at"}

STEPS = r'''
return {
  execute = function(task, ctx)
    ctx.emit({step = 1})
    ctx.log.info("half way", {k = "v"})
    ctx.emit("two")
    if task.fail then error("boom " .. tostring(task.fail)) end
    if task.ms then luagent.sleep(task.ms) end
    return {echo = task}
  end,
}
'''

STREAM = r'''
return {
  execute = function(task, ctx)
    ctx.emit({part = 1})
    luagent.sleep(30)
    ctx.emit({part = 2})
    return {streamed = true}
  end,
}
'''

ONE = r'''
return {
  execute = function(task, ctx)
    ctx.emit(task.i)
    return task.i
  end,
}
'''


def pg_url(pg, db):
    return f"postgresql://{pg.USER}:{PASSWORD}@127.0.0.1:{pg.port}/{db}"


def sql_json(pg, db, sql):
    """Rows of `sql` as a list of dicts (json_agg of the rows)."""
    out = pg.psql(f"select coalesce(json_agg(t), '[]'::json) from ({sql}) t", db=db).stdout
    return json.loads(out)


def sql_ids(pg, db, where="true"):
    return [r[0] for r in pg.query(f"select id from executions where {where}", db=db)]


def spill_files(d):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(d, "*.ndjson")))


class RecordingHelpers:
    pg = None
    db = None

    def row(self, eid, final=True, events=None, timeout=5.0, server=None):
        """The executions row of `eid` (with its events, ordered by seq) once it is final (and has
        `events` events)."""
        def get():
            rows = sql_json(self.pg, self.db, f"select * from executions where id = '{eid}'")
            if not rows:
                return None
            rec = rows[0]
            rec["events"] = sql_json(self.pg, self.db, f"select seq, type, at, data from execution_events "
                                                       f"where execution_id = '{eid}' order by seq")
            return rec

        def done(rec):
            return rec is not None and (not final or rec["status"] in ("succeeded", "failed")) and \
                (events is None or len(rec["events"]) >= events)
        rec, took, ok = self.poll(get, done, timeout=timeout, interval=0.05)
        srv = server or self.server
        self.assertTrue(ok, f"no final row for {eid} after {took:.1f} s: {rec}\n{srv.log_tail(15)}")
        return rec

    def get(self, path, server=None):
        r = (server or self.server).request("GET", path)
        self.assertNotIn(PASSWORD, r.raw.decode("utf-8", "replace"))
        return r

    def listing(self, server=None, **params):
        q = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        r = self.get("/api/v1/executions" + (f"?{q}" if q else ""), server)
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertEqual({"items", "next_cursor"}, set(r.body), self.ctx_msg(r))
        return r


class RecordingTests(RecordingHelpers, WithPostgres, ServerTestCase):
    WORKERS = 2
    AGENTS = {"steps": STEPS, "stream": STREAM, "pager": ONE, "nul": ONE, "fails": STEPS}
    DB_PREFIX = "rec"

    @classmethod
    def db_url(cls):
        return pg_url(cls.pg, cls.db)  # with the password the tests look for in replies and logs

    def ok(self, agent, task, **kw):
        r = self.server.execute(agent, task, **kw)
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertNotIn(PASSWORD, r.raw.decode("utf-8", "replace"))
        return r.body

    def assertSteps(self, events):
        self.assertEqual([1, 2, 3], [e["seq"] for e in events], events)
        self.assertEqual(["emit", "log", "emit"], [e["type"] for e in events], events)
        self.assertEqual({"step": 1}, events[0]["data"])
        self.assertEqual({"level": "info", "message": "half way", "fields": {"k": "v"}}, events[1]["data"])
        self.assertEqual("two", events[2]["data"])
        ats = [e["at"] for e in events]
        self.assertTrue(all(ats), events)

    # ---- one row per execution -------------------------------------------------------------------
    def test_sync_execution_row(self):
        task, context = {"q": "sync", "n": [1, 2]}, {"tenant": "t1"}
        t0 = time.monotonic()
        body = self.ok("steps", task, context=context, headers={"X-Request-Id": "req-rec-sync"})
        rec = self.row(body["execution_id"], events=3)
        measure("sync execution: row and 3 events in Postgres after the reply", f"{(time.monotonic() - t0) * 1000:.0f} ms")
        self.assertEqual(body["execution_id"], rec["id"])
        self.assertEqual("steps", rec["agent"])
        self.assertEqual(body["version"], rec["version"])
        self.assertEqual("succeeded", rec["status"])
        self.assertEqual("sync", rec["mode"])
        self.assertEqual(task, rec["task"])
        self.assertEqual(context, rec["context"])
        self.assertEqual(body["result"], rec["result"])
        self.assertIsNone(rec["error"])
        self.assertEqual(body["usage"], rec["usage"])
        self.assertIsInstance(rec["duration_ms"], (int, float))
        self.assertGreaterEqual(rec["duration_ms"], 0)
        self.assertEqual("req-rec-sync", rec["request_id"])
        self.assertIsNone(rec["user"])
        self.assertIsNone(rec["parent_id"])
        checks = self.pg.query(f"select created_at <= started_at, started_at <= finished_at, "
                               f"finished_at <= recorded_at + interval '1 second', "
                               f"abs(extract(epoch from now() - created_at)) < 60 "
                               f"from executions where id = '{rec['id']}'", db=self.db)
        self.assertEqual([["t", "t", "t", "t"]], checks)
        self.assertSteps(rec["events"])
        self.assertEqual(1, len(sql_ids(self.pg, self.db, f"id = '{rec['id']}'")))

    def test_failed_execution_row(self):
        r = self.server.execute("fails", {"fail": "f1"})
        self.assertEqual(500, r.status, self.ctx_msg(r))
        err = r.body["error"]
        rec = self.row(err["execution_id"], events=3)
        self.assertEqual("failed", rec["status"])
        self.assertEqual("fails", rec["agent"])
        self.assertIsNone(rec["result"])
        self.assertIsInstance(rec["error"], dict, rec)
        self.assertEqual("agent_error", rec["error"]["code"])
        self.assertIn("boom f1", rec["error"]["message"])
        self.assertEqual(err["request_id"], rec["request_id"])
        self.assertIsNotNone(rec["finished_at"])
        self.assertSteps(rec["events"])  # events up to the failure are kept

    def test_async_execution_row(self):
        r = self.server.execute("steps", {"q": "async", "ms": 800}, options={"mode": "async"})
        self.assertEqual(202, r.status, self.ctx_msg(r))
        eid = r.body["execution_id"]
        seen = set()

        def status():
            rows = self.pg.query(f"select status from executions where id = '{eid}'", db=self.db)
            if rows:
                seen.add(rows[0][0])
            return rows[0][0] if rows else None
        st, took, ok = self.poll(status, lambda s: s == "succeeded", timeout=5, interval=0.02)
        self.assertTrue(ok, f"async row status {st} after {took:.1f} s")
        measure("async execution (800 ms sleep): statuses seen in SQL", sorted(seen))
        self.assertTrue(seen & {"queued", "running"}, f"the row was only seen final: {seen}")
        rec = self.row(eid, events=3)
        self.assertEqual("async", rec["mode"])
        self.assertEqual({"echo": {"q": "async", "ms": 800}}, rec["result"])
        self.assertGreaterEqual(rec["duration_ms"], 750)
        self.assertSteps(rec["events"])

    def test_sse_execution_row(self):
        events = self.server.sse("stream", {"q": "sse"})
        results = [e[1] for e in events if e[0] == "result"]
        self.assertEqual(1, len(results), events)
        eid = results[0]["execution_id"]
        self.assertRegex(eid, UUID_RE)
        rec = self.row(eid, events=2)
        self.assertEqual("stream", rec["agent"])
        self.assertEqual("succeeded", rec["status"])
        self.assertEqual({"q": "sse"}, rec["task"])
        self.assertEqual({"streamed": True}, rec["result"])
        self.assertEqual([("emit", {"part": 1}), ("emit", {"part": 2})],
                         [(e["type"], e["data"]) for e in rec["events"]])

    def test_nul_in_task_is_recorded(self):
        raw = json.dumps({"task": {"i": "a\u0000b", "deep": ["\u0000"], "lit": "\\u0000"}})
        r = self.server.request("POST", "/api/v1/agents/nul/execute", raw)
        self.assertEqual(200, r.status, self.ctx_msg(r))
        rec = self.row(r.body["execution_id"], events=1)
        self.assertEqual("succeeded", rec["status"])
        self.assertEqual({"i": "a\ufffdb", "deep": ["\ufffd"], "lit": "\\u0000"}, rec["task"], rec)
        self.assertEqual("a\ufffdb", rec["result"])
        self.assertEqual("a\ufffdb", rec["events"][0]["data"])
        self.assertEqual([], [f for f in os.listdir(self.spill) if f.startswith("rejected")],
                         "a record was rejected by Postgres")

    # ---- history from SQL -----------------------------------------------------------------------
    def test_listing_pages_from_sql(self):
        ids = [self.ok("pager", {"i": i})["execution_id"] for i in range(7)]
        self.poll(lambda: sql_ids(self.pg, self.db, "agent = 'pager' and status = 'succeeded'"),
                  lambda got: len(got) >= 7, timeout=5, interval=0.05)
        want = [r[0] for r in self.pg.query("select id from executions where agent = 'pager' order by id desc",
                                            db=self.db)]
        self.assertEqual(sorted(ids, reverse=True), want)
        pages, cursor = [], None
        while True:
            page = self.listing(agent="pager", limit=3, cursor=cursor).body
            pages.append(page)
            cursor = page["next_cursor"]
            if cursor is None or len(pages) > 5:
                break
        self.assertEqual([3, 3, 1], [len(p["items"]) for p in pages])
        got = [it["execution_id"] for p in pages for it in p["items"]]
        self.assertEqual(want, got, "the listing is not the SQL rows newest first")
        for it in pages[0]["items"]:
            self.assertEqual(RECORD_KEYS, set(it), it)
            self.assertEqual("pager", it["agent"])
        with self.subTest("status filter"):
            r = self.server.execute("fails", {"fail": "listed"})
            self.assertEqual(500, r.status)
            fid = r.body["error"]["execution_id"]
            self.row(fid)
            failed = self.listing(agent="fails", status="failed", limit=500).body["items"]
            self.assertIn(fid, [it["execution_id"] for it in failed])
            self.assertTrue(all(it["status"] == "failed" for it in failed))
            self.assertEqual([], self.listing(agent="pager", status="failed").body["items"])
        with self.subTest("since"):
            self.assertEqual([], self.listing(agent="pager", since="2999-01-01").body["items"])
            self.assertEqual(7, len(self.listing(agent="pager", since="2000-01-01", limit=500).body["items"]))

    def test_rows_written_by_sql_are_served(self):
        """A row put in the table by hand (never run by this server) is listed and served with its
        events: the history comes from Postgres, not from memory."""
        eid = "01a00000-0000-7000-8000-" + uuid.uuid4().hex[:12]
        self.pg.psql(f"insert into executions (id, agent, version, status, mode, task, result, created_at, "
                     f"started_at, finished_at, request_id) values ('{eid}', 'ghost', 'v0', 'succeeded', 'sync', "
                     f"'{{\"planted\": true}}', '42', now(), now(), now(), 'req-ghost')", db=self.db)
        self.pg.psql(f"insert into execution_events (execution_id, seq, type, at, data) values "
                     f"('{eid}', 1, 'emit', now(), '\"hi\"'), ('{eid}', 2, 'log', now(), '{{\"level\":\"info\"}}')",
                     db=self.db)
        items = self.listing(agent="ghost").body["items"]
        self.assertEqual([eid], [it["execution_id"] for it in items])
        self.assertEqual({"planted": True}, items[0]["task"])
        self.assertEqual(42, items[0]["result"])
        r = self.get(f"/api/v1/executions/{eid}")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertEqual("req-ghost", r.body["request_id"])
        self.assertEqual([(1, "emit", "hi"), (2, "log", {"level": "info"})],
                         [(e["seq"], e["type"], e["data"]) for e in r.body["events"]])
        r = self.get(f"/api/v1/executions/01a00000-0000-7000-8000-{uuid.uuid4().hex[:12]}")
        self.assertEqual(404, r.status, self.ctx_msg(r))
        self.assertEqual("not_found", r.body["error"]["code"])

    def test_second_server_sees_the_first_ones_executions(self):
        ids = [self.ok("steps", {"q": "two-servers", "i": i})["execution_id"] for i in range(4)]
        for eid in ids:
            self.row(eid, events=3)
        spill_b = tempfile.mkdtemp(prefix="luagent-spill-")
        b = Server(agents=self.AGENTS, workers=1,
                   env={"DATABASE_URL": pg_url(self.pg, self.db), "LUAGENT_SPILL_DIR": spill_b})
        try:
            b.start()
            for eid in ids:
                ra, rb = self.get(f"/api/v1/executions/{eid}"), self.get(f"/api/v1/executions/{eid}", b)
                self.assertEqual(200, rb.status, rb.describe() + b.log_tail(10))
                self.assertEqual(ra.body, rb.body, "server B's record differs from server A's")
                self.assertEqual(RECORD_KEYS | {"events"}, set(rb.body))
                self.assertEqual(["emit", "log", "emit"], [e["type"] for e in rb.body["events"]])
            # page 1 on A, page 2 on B with A's cursor
            p1 = self.listing(agent="steps", limit=2).body
            p2 = self.listing(b, agent="steps", limit=2, cursor=p1["next_cursor"]).body
            whole = self.listing(b, agent="steps", limit=4).body["items"]
            self.assertEqual([it["execution_id"] for it in whole],
                             [it["execution_id"] for it in p1["items"] + p2["items"]])
            self.assertEqual(sorted(ids, reverse=True)[:2], [it["execution_id"] for it in p1["items"]])
            self.assertEqual(sorted(ids, reverse=True)[2:4], [it["execution_id"] for it in p2["items"]])
            # and B's own executions are seen by A
            eb = b.execute("steps", {"q": "from-b"})
            self.assertEqual(200, eb.status)
            self.row(eb.body["execution_id"], events=3, server=b)
            ra = self.get(f"/api/v1/executions/{eb.body['execution_id']}")
            self.assertEqual(200, ra.status, self.ctx_msg(ra))
            self.assertEqual({"q": "from-b"}, ra.body["task"])
            self.assertEqual(0, b.stop(), b.log_tail())
            self.assertNotIn(PASSWORD, b.log_text())
        finally:
            b.cleanup()
            shutil.rmtree(spill_b, ignore_errors=True)

    def test_spill_dir_shared_second_server_exits_2(self):
        b = Server(agents=self.AGENTS, workers=1,
                   env={"DATABASE_URL": pg_url(self.pg, self.db), "LUAGENT_SPILL_DIR": self.spill})
        try:
            b.start(wait=False)
            try:
                code = b.proc.wait(timeout=10 * SLOW)
            except Exception:  # noqa: BLE001
                self.fail("a second server on the same LUAGENT_SPILL_DIR keeps running\n" + b.log_tail())
            b._close_files()
            self.assertEqual(2, code, b.log_tail())
            self.assertIn("LUAGENT_SPILL_DIR", b.log_text())
            self.assertIn(self.spill, b.log_text())
            self.assertNotIn(PASSWORD, b.log_text())
        finally:
            b.cleanup()
        self.assertEqual(200, self.server.request("GET", "/health").status, "the first server suffered")

    def test_ready_reports_the_database(self):
        for _ in range(4):  # each worker answers for itself
            r = self.get("/ready")
            self.assertEqual(200, r.status, self.ctx_msg(r))
            self.assertEqual({"status", "checks"}, set(r.body))
            self.assertEqual("ready", r.body["status"], r.body)
            checks = r.body["checks"]
            self.assertEqual({"agents": "ok", "database": "ok"}, {k: checks[k] for k in ("agents", "database")})
            self.assertEqual({"agents", "database", "records_waiting"}, set(checks))
            self.assertIsInstance(checks["records_waiting"], int)
            self.assertGreaterEqual(checks["records_waiting"], 0)

    def test_zz_password_not_in_log(self):
        self.ok("steps", {"q": "last"})
        self.assertNotIn(PASSWORD, self.server.log_text())


class RecordOutageTests(RecordingHelpers, ServerTestCase):
    """Its own Postgres, restarted and stopped under load; LUAGENT_RECORD_QUEUE=10 so records go to
    spill files early. Every test leaves Postgres running."""
    WORKERS = 2
    AGENTS = {"one": ONE}

    @classmethod
    def setUpClass(cls):
        cls.pg = Postgres()
        cls.db = cls.pg.new_database("outage")
        cls.spill = tempfile.mkdtemp(prefix="luagent-spill-")
        cls.ENV = {"DATABASE_URL": pg_url(cls.pg, cls.db), "LUAGENT_SPILL_DIR": cls.spill,
                   "LUAGENT_RECORD_QUEUE": "10"}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.pg.destroy()
            shutil.rmtree(cls.spill, ignore_errors=True)

    def setUp(self):
        if self.pg.proc is None or self.pg.proc.poll() is not None:
            self.pg.start()

    def tearDown(self):
        if self.pg.proc is None or self.pg.proc.poll() is not None:
            self.pg.start()

    def run_many(self, n, threads=4, server=None, tag="x"):
        """n executions of `one` over `threads` threads; returns (ids answered 200, other answers)."""
        server = server or self.server
        ids, others, lock = [], [], threading.Lock()

        def worker(k):
            for i in range(k, n, threads):
                try:
                    r = server.execute("one", {"i": f"{tag}-{i}"}, timeout=30 * SLOW)
                    with lock:
                        (ids.append(r.body["execution_id"]) if r.status == 200 else others.append(r.describe()))
                except Exception as e:  # noqa: BLE001
                    with lock:
                        others.append(repr(e))
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return ids, others

    def wait_rows(self, ids, tag, timeout=15.0):
        """Poll until every id has a succeeded row (rows of this tag's tasks)."""
        want = set(ids)

        def have():
            return sql_ids(self.pg, self.db, f"task->>'i' like '{tag}-%' and status = 'succeeded'")
        got, took, ok = self.poll(have, lambda g: set(g) >= want, timeout=timeout, interval=0.1)
        self.assertTrue(ok, f"{len(set(got) & want)} of {len(want)} rows after {took:.1f} s; missing e.g. "
                            f"{sorted(want - set(got))[:3]}\n{self.server.log_tail(20)}")
        return took

    def assertExactlyOnce(self, ids, tag):
        """The table holds exactly `ids` for this tag's tasks: one row each, one event each."""
        rows = self.pg.query(f"select id, count(*) over (partition by id) from executions "
                             f"where task->>'i' like '{tag}-%'", db=self.db)
        got = [r[0] for r in rows]
        self.assertEqual(len(got), len(set(got)), "an execution has two rows")
        self.assertEqual(sorted(ids), sorted(got), f"rows differ from the 200 answers: "
                         f"missing {sorted(set(ids) - set(got))[:3]}, extra {sorted(set(got) - set(ids))[:3]}")
        ev = self.pg.query(f"select count(*), count(distinct execution_id) from execution_events e join executions x "
                           f"on x.id = e.execution_id where x.task->>'i' like '{tag}-%'", db=self.db)
        self.assertEqual([[str(len(ids)), str(len(ids))]], ev, "events lost or written twice")

    def ready(self, server=None, want=None, timeout=5.0):
        server = server or self.server
        def get():
            r = server.request("GET", "/ready")
            return r.body if r.status == 200 and isinstance(r.body, dict) else {"reply": r.describe()}
        body, _, ok = self.poll(get, (lambda b: want(b)) if want else (lambda b: True), timeout=timeout, interval=0.05)
        return body, ok

    # ---- (1) restarts under load ------------------------------------------------------------------
    def test_1_postgres_restarts_under_load(self):
        stop = threading.Event()
        ids, others, lock = [], [], threading.Lock()

        def worker(k):
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = self.server.execute("one", {"i": f"load-{k}-{i}"}, timeout=30 * SLOW)
                    with lock:
                        (ids.append(r.body["execution_id"]) if r.status == 200 else others.append(r.describe()))
                except Exception as e:  # noqa: BLE001
                    with lock:
                        others.append(repr(e))
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        time.sleep(0.5)
        self.pg.restart()
        time.sleep(0.5)
        self.pg.stop()
        time.sleep(1.0)
        self.pg.start()
        while time.monotonic() - t0 < 3.5:
            time.sleep(0.05)
        stop.set()
        for t in ts:
            t.join()
        sent = time.monotonic() - t0
        took = self.wait_rows(ids, "load", timeout=15)
        measure("Postgres restart + stop/start under 4 threads of requests",
                f"{len(ids)} answered 200 in {sent:.1f} s, {len(others)} other answers; "
                f"all {len(ids)} rows in Postgres {took:.2f} s after the load ended")
        self.assertEqual([], others[:5], "requests failed while Postgres restarted")
        self.assertGreater(len(ids), 50)
        self.assertExactlyOnce(ids, "load")
        self.assertEqual([], [f for f in os.listdir(self.spill) if f.startswith("rejected")])

    # ---- (2) queue full: spill files, memory fallback, /ready away --------------------------------
    def test_2_spill_while_postgres_is_stopped(self):
        self.pg.stop()
        t0 = time.monotonic()
        ids, others = self.run_many(200, tag="spill")
        measure("200 requests with Postgres stopped (LUAGENT_RECORD_QUEUE=10)",
                f"{len(ids)} answered 200 in {time.monotonic() - t0:.2f} s")
        self.assertEqual([], others[:5])
        self.assertEqual(200, len(ids))
        pid = self.server.proc.pid
        files, _, ok = self.poll(lambda: spill_files(self.spill),
                                 lambda f: any(x.startswith(f"spill-{pid}-") for x in f), timeout=5, interval=0.05)
        measure("spill files with Postgres stopped", files)
        self.assertTrue(ok, f"no spill-{pid}-<worker>.ndjson in {self.spill}: {files}\n{self.server.log_tail(10)}")
        for f in files:  # a worker may already have claimed its spill file for replay (replay-<pid>-<w>-<n>)
            self.assertRegex(f, rf"^(spill-{pid}-[0-9]+|replay-{pid}-[0-9]+-[0-9]+)\.ndjson$")
        spilled = set()
        for f in files:
            for line in open(os.path.join(self.spill, f), encoding="utf-8"):
                if line.strip():
                    spilled.add(json.loads(line)["execution_id"])
        self.assertLessEqual(spilled, set(ids), "a spill file holds records of no request")
        self.assertGreaterEqual(len(spilled), 200 - 2 * 10 - 2, "most records should be spilled past the queue of 10")

        with self.subTest("/ready: degraded, database away"):
            body, _ = self.ready()
            measure("/ready with Postgres stopped, 200 records waiting (most of them in spill files)", body)
            for _ in range(4):
                body, ok = self.ready()
                self.assertEqual("degraded", body.get("status"), body)
                self.assertEqual("away", body["checks"]["database"], body)
                self.assertLessEqual(body["checks"]["records_waiting"], 11, body)
        with self.subTest("history from memory"):
            r = self.listing(agent="one", limit=500)
            self.assertEqual("memory", r.headers.get("x-history-source"), self.ctx_msg(r))
            listed = {it["execution_id"] for it in r.body["items"]}
            self.assertLessEqual(set(ids), listed)
            r = self.get(f"/api/v1/executions/{ids[-1]}")
            self.assertEqual(200, r.status, self.ctx_msg(r))
            self.assertEqual(ids[-1], r.body["execution_id"])
            self.assertEqual("succeeded", r.body["status"])
            r = self.get("/api/v1/executions/01a00000-0000-7000-8000-000000000001")
            self.assertEqual(503, r.status, self.ctx_msg(r))
            self.assertEqual("unavailable", r.body["error"]["code"])

        self.pg.start()
        t1 = time.monotonic()
        took = self.wait_rows(ids, "spill", timeout=15)
        measure("after Postgres started: 200 records written (from memory and spill files) in", f"{took:.2f} s")
        self.assertExactlyOnce(ids, "spill")
        left, _, ok = self.poll(lambda: spill_files(self.spill), lambda f: f == [], timeout=5, interval=0.05)
        self.assertTrue(ok, f"spill files left after the records were written: {left}")
        body, ok = self.ready(want=lambda b: b.get("status") == "ready", timeout=5)
        self.assertTrue(ok, body)
        for _ in range(4):
            body, _ = self.ready()
            self.assertEqual({"status": "ready", "checks": {"agents": "ok", "database": "ok", "records_waiting": 0}},
                             body)
        r = self.listing(agent="one", limit=5)
        self.assertNotIn("x-history-source", r.headers, "still answering from memory with Postgres up")
        measure("from Postgres start to /ready ready", f"{time.monotonic() - t1:.2f} s")

    # ---- (3) server stopped while Postgres is down; a new server replays ----------------------------
    def test_3_new_server_replays_spill_files(self):
        spill = tempfile.mkdtemp(prefix="luagent-spill-")
        env = {"DATABASE_URL": pg_url(self.pg, self.db), "LUAGENT_SPILL_DIR": spill}
        a = Server(agents=self.AGENTS, workers=2, env=env)
        b = Server(agents=self.AGENTS, workers=2, env=env)
        try:
            a.start()
            self.pg.stop()
            ids, others = self.run_many(40, server=a, tag="replay")
            self.assertEqual([], others[:5])
            self.assertEqual(40, len(ids))
            self.assertEqual(0, a.stop(), a.log_tail())
            files = spill_files(spill)
            measure("spill files left by a server stopped while Postgres was down", files)
            spilled = {}
            for f in files:
                for line in open(os.path.join(spill, f), encoding="utf-8"):
                    if line.strip():
                        rec = json.loads(line)
                        spilled.setdefault(rec["execution_id"], []).append(rec["status"])
            self.assertEqual(set(ids), set(spilled), "the stopped server did not keep every record")
            self.assertNotIn(PASSWORD, a.log_text())

            self.pg.start()
            b.start()
            t0 = time.monotonic()
            took = self.wait_rows(ids, "replay", timeout=15)
            measure("a new server on the same LUAGENT_SPILL_DIR replayed 40 records in", f"{took:.2f} s")
            self.assertExactlyOnce(ids, "replay")
            left, _, ok = self.poll(lambda: spill_files(spill), lambda f: f == [], timeout=5, interval=0.05)
            self.assertTrue(ok, f"spill files left after the replay: {left}")
            for eid in ids[:3]:
                r = self.get(f"/api/v1/executions/{eid}", b)
                self.assertEqual(200, r.status, r.describe())
                self.assertEqual(1, len(r.body["events"]))
            self.assertEqual(0, b.stop(), b.log_tail())
            self.assertNotIn(PASSWORD, b.log_text())
        finally:
            a.cleanup()
            b.cleanup()
            shutil.rmtree(spill, ignore_errors=True)

    def test_zz_password_not_in_log(self):
        self.assertNotIn(PASSWORD, self.server.log_text())

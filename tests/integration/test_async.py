"""Async executions (options.mode = "async"): 202 with a status_url, the job queue, signed
callbacks with retries, Idempotency-Key, and with REDIS_URL the Redis stream shared by replicas
(work spread over two servers, and jobs of a killed server reclaimed by the other)."""

import hashlib
import hmac
import http.server
import json
import threading
import time
import uuid

from .harness import SLOW, UUID_RE, LocalHTTP, Server, ServerTestCase, measure
from .services import shared_redis

SECRET = "cb-s3cret-ключ"

SLEEPER = r'''
return {
  timeout_ms = 30000,
  execute = function(task, ctx)
    if task.ms then luagent.sleep(task.ms) end
    if task.fail then error("failed on purpose: " .. tostring(task.fail)) end
    return {done = task.id or true, slept = task.ms}
  end,
}
'''

# Counts its runs per task.key in luagent.cache (process-wide store); {peek = true} reads the count.
COUNTER = r'''
return {
  timeout_ms = 30000,
  execute = function(task, ctx)
    local k = "runs:" .. tostring(task.key)
    if task.peek then return luagent.cache.get(k) or 0 end
    local n = (luagent.cache.get(k) or 0) + 1
    luagent.cache.set(k, n)
    if task.ms then luagent.sleep(task.ms) end
    return {runs = n}
  end,
}
'''

class Receiver:
    """Callback receiver: records every POST (path, headers, raw body, time). A path containing
    `fail-once` answers 500 to its first delivery."""

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    earlier = [c for c in outer.calls if c["path"] == self.path]
                    outer.calls.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "raw": raw, "t": time.monotonic()})
                status = 500 if "fail-once" in self.path and not earlier else 200
                body = b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = LocalHTTP(Handler)
        self.port = self.server.port

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def deliveries(self, path):
        with self.lock:
            return [c for c in self.calls if c["path"] == path]

    def stop(self):
        self.server.stop()


def submit(server, agent, task, headers=None, **options):
    return server.execute(agent, task, options={"mode": "async", **options}, headers=headers)


def get_record(server, execution_id):
    return server.request("GET", f"/api/v1/executions/{execution_id}")


class AsyncHelpers:
    def assertAccepted(self, r, agent):
        self.assertEqual(202, r.status, self.ctx_msg(r))
        body = r.body
        self.assertEqual({"execution_id", "agent", "status", "status_url"}, set(body), self.ctx_msg(r))
        self.assertRegex(body["execution_id"], UUID_RE)
        self.assertEqual(agent, body["agent"])
        self.assertEqual("queued", body["status"])
        self.assertEqual(f"/api/v1/executions/{body['execution_id']}", body["status_url"])
        self.assertEqual(body["status_url"], r.headers.get("location"), self.ctx_msg(r, "Location header"))
        return body

    def wait_status(self, execution_id, statuses=("succeeded", "failed"), timeout=10.0, server=None):
        server = server or self.server
        r, took, ok = self.poll(lambda: get_record(server, execution_id),
                                lambda r: r.status == 200 and r.body.get("status") in statuses,
                                timeout=timeout, interval=0.02)
        self.assertTrue(ok, self.ctx_msg(r, f"{execution_id} not {statuses} after {took:.1f} s"))
        return r.body

    def wait_deliveries(self, path, n, timeout=10.0):
        calls, took, ok = self.poll(lambda: self.receiver.deliveries(path), lambda c: len(c) >= n,
                                    timeout=timeout, interval=0.02)
        self.assertTrue(ok, f"{len(calls)} callback deliveries to {path} after {took:.1f} s, wanted {n}\n"
                            f"{self.server.log_tail(15)}")
        return calls


class AsyncTests(AsyncHelpers, ServerTestCase):
    WORKERS = 2
    AGENTS = {"sleeper": SLEEPER, "counter": COUNTER}
    ENV = {"LUAGENT_JOB_CONCURRENCY": "4", "LUAGENT_CALLBACK_SECRET": SECRET}

    @classmethod
    def setUpClass(cls):
        cls.receiver = Receiver()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.receiver.stop()

    # ---- 202 and status_url ------------------------------------------------------------------
    def test_accepted_at_once_then_running_then_succeeded(self):
        ms = int(1000 * SLOW)
        r = submit(self.server, "sleeper", {"ms": ms, "id": "a1"}, headers={"X-Request-Id": "req-async-1"})
        body = self.assertAccepted(r, "sleeper")
        measure("202 for a 1 s async job", f"{r.elapsed * 1000:.1f} ms")
        self.assertLess(r.elapsed, 0.4 * SLOW, "the 202 waited for the agent")
        seen = []

        def status():
            rr = self.server.request("GET", body["status_url"])
            self.assertEqual(200, rr.status, self.ctx_msg(rr))
            if not seen or seen[-1] != rr.body["status"]:
                seen.append(rr.body["status"])
            return rr.body
        rec, took, ok = self.poll(status, lambda b: b["status"] in ("succeeded", "failed"), timeout=10, interval=0.02)
        self.assertTrue(ok, f"still {rec['status']} after {took:.1f} s")
        self.assertIn("running", seen, f"statuses seen: {seen}")
        self.assertEqual(["succeeded"], seen[-1:])
        self.assertLess(seen.index("running"), seen.index("succeeded"))
        self.assertNotIn("queued", seen[seen.index("running"):], "status went backwards")
        self.assertEqual({"done": "a1", "slept": ms}, rec["result"])
        self.assertEqual("async", rec["mode"])
        self.assertEqual("sleeper", rec["agent"])
        self.assertEqual({"ms": ms, "id": "a1"}, rec["task"])
        self.assertEqual("req-async-1", rec["request_id"])
        self.assertIsNone(rec["error"])
        self.assertGreaterEqual(rec["duration_ms"], ms * 0.9)

    def test_rejections(self):
        cases = [
            ("unknown agent", lambda: submit(self.server, "no-such-agent", {}), 404, "not_found"),
            ("mode stream", lambda: self.server.execute("sleeper", {}, options={"mode": "stream"}), 400,
             "invalid_request"),
            ("mode empty", lambda: self.server.execute("sleeper", {}, options={"mode": ""}), 400, "invalid_request"),
            ("mode number", lambda: self.server.execute("sleeper", {}, options={"mode": 1}), 400, "invalid_request"),
            ("callback without async",
             lambda: self.server.execute("sleeper", {}, options={"callback_url": self.receiver.url("/x")}), 400,
             "invalid_request"),
            ("callback sync", lambda: self.server.execute("sleeper", {}, options={
                "mode": "sync", "callback_url": self.receiver.url("/x")}), 400, "invalid_request"),
        ]
        for bad in ("ftp://example.com/cb", "not a url", "/relative", "http//x", 42, ""):
            cases.append((f"callback_url {bad!r}", lambda bad=bad: submit(self.server, "sleeper", {}, callback_url=bad),
                          400, "invalid_request"))
        for label, call, status, code in cases:
            with self.subTest(label):
                self.assertError(call(), status, code)
        with self.subTest("sync still works with mode sync"):
            self.assertOk(self.server.execute("sleeper", {"id": 1}, options={"mode": "sync"}), {"done": 1})

    def test_failing_agent(self):
        path = f"/cb/fail/{uuid.uuid4().hex}"
        body = self.assertAccepted(submit(self.server, "sleeper", {"fail": "zz"}, callback_url=self.receiver.url(path)),
                                   "sleeper")
        rec = self.wait_status(body["execution_id"])
        self.assertEqual("failed", rec["status"])
        self.assertIsNone(rec["result"])
        self.assertEqual("agent_error", rec["error"]["code"])
        self.assertIn("failed on purpose: zz", rec["error"]["message"])
        self.assertEqual(body["execution_id"], rec["error"]["execution_id"])
        call = self.wait_deliveries(path, 1)[0]
        sent = json.loads(call["raw"])
        self.assertEqual("failed", sent["status"])
        self.assertEqual(rec["error"], sent["error"])

    # ---- callbacks ---------------------------------------------------------------------------
    def test_signed_callback_carries_the_record(self):
        path = f"/cb/ok/{uuid.uuid4().hex}"
        body = self.assertAccepted(
            submit(self.server, "sleeper", {"ms": 100, "id": "cb"}, callback_url=self.receiver.url(path) + "?q=1"),
            "sleeper")
        rec = self.wait_status(body["execution_id"])
        call = self.wait_deliveries(path + "?q=1", 1)[0]
        sent = json.loads(call["raw"])
        self.assertEqual(rec, sent, "the callback body is not the record GET returns")
        self.assertEqual("succeeded", sent["status"])
        self.assertEqual({"done": "cb", "slept": 100}, sent["result"])
        self.assertEqual(body["execution_id"], call["headers"].get("x-luagent-execution-id"))
        self.assertTrue(call["headers"].get("content-type", "").startswith("application/json"), call["headers"])
        want = "sha256=" + hmac.new(SECRET.encode(), call["raw"], hashlib.sha256).hexdigest()
        self.assertEqual(want, call["headers"].get("x-luagent-signature"))
        wrong = "sha256=" + hmac.new(b"other", call["raw"], hashlib.sha256).hexdigest()
        self.assertNotEqual(wrong, call["headers"].get("x-luagent-signature"))
        time.sleep(0.3)
        self.assertEqual(1, len(self.receiver.deliveries(path + "?q=1")), "a delivered callback was sent again")

    def test_callback_retried_after_500(self):
        path = f"/cb/fail-once/{uuid.uuid4().hex}"
        body = self.assertAccepted(submit(self.server, "sleeper", {"id": "retry"}, callback_url=self.receiver.url(path)),
                                   "sleeper")
        calls = self.wait_deliveries(path, 2, timeout=10)
        gap = calls[1]["t"] - calls[0]["t"]
        measure("callback retry delay", f"{gap:.2f} s")
        self.assertGreaterEqual(gap, 0.7, "retried without waiting")
        self.assertLess(gap, 3.0 * SLOW, "the retry came much later than about 1 s")
        for c in calls:
            self.assertEqual(body["execution_id"], c["headers"].get("x-luagent-execution-id"))
            self.assertEqual("succeeded", json.loads(c["raw"])["status"])
            self.assertEqual("sha256=" + hmac.new(SECRET.encode(), c["raw"], hashlib.sha256).hexdigest(),
                             c["headers"].get("x-luagent-signature"))
        time.sleep(1.5)
        self.assertEqual(2, len(self.receiver.deliveries(path)), "delivered again after a 200")

    # ---- many jobs ---------------------------------------------------------------------------
    def test_many_jobs_all_succeed(self):
        t0 = time.monotonic()
        ids = [self.assertAccepted(submit(self.server, "sleeper", {"ms": 300, "id": i}), "sleeper")["execution_id"]
               for i in range(40)]
        submitted = time.monotonic() - t0
        self.assertEqual(40, len(set(ids)))
        for i, eid in enumerate(ids):
            rec = self.wait_status(eid, timeout=20)
            self.assertEqual("succeeded", rec["status"], rec)
            self.assertEqual({"done": i, "slept": 300}, rec["result"])
        wall = time.monotonic() - t0
        measure("40 async jobs of 300 ms, 2 workers x 4", f"submitted in {submitted:.2f} s, all done in {wall:.2f} s")
        self.assertLess(submitted, 2.0 * SLOW, "submitting waited for the jobs")
        self.assertLess(wall, 40 * 0.3, "the jobs did not run concurrently")

    # ---- Idempotency-Key ---------------------------------------------------------------------
    def runs(self, key):
        return self.assertOk(self.server.execute("counter", {"key": key, "peek": True}))["result"]

    def test_idempotent_sync_replay(self):
        key, ikey = uuid.uuid4().hex, "idem-" + uuid.uuid4().hex
        first = self.server.execute("counter", {"key": key}, headers={"Idempotency-Key": ikey})
        self.assertOk(first, {"runs": 1})
        self.assertNotIn("idempotent-replayed", first.headers)
        for i in range(5):  # new connections: both workers
            r = self.server.execute("counter", {"key": key}, headers={"Idempotency-Key": ikey})
            self.assertOk(r, {"runs": 1})
            self.assertEqual(first.body["execution_id"], r.body["execution_id"])
            self.assertEqual("true", r.headers.get("idempotent-replayed"), r.describe())
        self.assertEqual(1, self.runs(key), "the agent ran again for a replayed request")
        with self.subTest("no key: runs again"):
            self.assertOk(self.server.execute("counter", {"key": key}), {"runs": 2})
        with self.subTest("same key, different body: 409"):
            r = self.server.execute("counter", {"key": key, "other": 1}, headers={"Idempotency-Key": ikey})
            self.assertError(r, 409, "conflict")
            self.assertEqual(2, self.runs(key))

    def test_idempotent_failed_reply_replayed(self):
        ikey = "idem-" + uuid.uuid4().hex
        first = self.server.execute("sleeper", {"fail": "once"}, headers={"Idempotency-Key": ikey})
        err = self.assertError(first, 500, "agent_error")
        again = self.server.execute("sleeper", {"fail": "once"}, headers={"Idempotency-Key": ikey})
        self.assertEqual(err, self.assertError(again, 500, "agent_error"))
        self.assertEqual("true", again.headers.get("idempotent-replayed"))

    def test_idempotent_while_running_is_409(self):
        key, ikey = uuid.uuid4().hex, "idem-" + uuid.uuid4().hex
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", self.server.execute(
            "counter", {"key": key, "ms": 1500}, headers={"Idempotency-Key": ikey})))
        t.start()
        try:
            self.poll(lambda: self.runs(key), lambda n: n >= 1, timeout=5, interval=0.02)
            r = self.server.execute("counter", {"key": key, "ms": 1500}, headers={"Idempotency-Key": ikey})
            self.assertError(r, 409, "conflict")
        finally:
            t.join(30 * SLOW)
        self.assertOk(out["r"], {"runs": 1})
        self.assertEqual(1, self.runs(key))
        r = self.server.execute("counter", {"key": key, "ms": 1500}, headers={"Idempotency-Key": ikey})
        self.assertOk(r, {"runs": 1})
        self.assertEqual(out["r"].body["execution_id"], r.body["execution_id"])

    def test_idempotent_async_retry(self):
        key, ikey = uuid.uuid4().hex, "idem-" + uuid.uuid4().hex
        first = self.assertAccepted(submit(self.server, "counter", {"key": key, "ms": 300},
                                           headers={"Idempotency-Key": ikey}), "counter")
        for _ in range(3):
            r = submit(self.server, "counter", {"key": key, "ms": 300}, headers={"Idempotency-Key": ikey})
            self.assertEqual(first["execution_id"], self.assertAccepted(r, "counter")["execution_id"])
        rec = self.wait_status(first["execution_id"])
        self.assertEqual({"runs": 1}, rec["result"])
        r = submit(self.server, "counter", {"key": key, "ms": 300}, headers={"Idempotency-Key": ikey})
        self.assertEqual(202, r.status, self.ctx_msg(r, "retry after the job finished"))
        self.assertEqual(first["execution_id"], r.body["execution_id"])
        time.sleep(0.5)
        self.assertEqual(1, self.runs(key), "an async retry ran the job again")
        with self.subTest("different body: 409"):
            r = submit(self.server, "counter", {"key": key, "ms": 1}, headers={"Idempotency-Key": ikey})
            self.assertError(r, 409, "conflict")

    def test_malformed_idempotency_key(self):
        for label, value in (("empty", ""), ("256 chars", "k" * 256), ("space", "a b"), ("tab", "a\tb"),
                             ("non-ascii", "clé")):
            with self.subTest(label):
                hdr = value.encode("utf-8").decode("latin-1")
                r = self.server.execute("sleeper", {"id": 1}, headers={"Idempotency-Key": hdr})
                self.assertError(r, 400, "invalid_request")
        with self.subTest("255 chars is fine"):
            self.assertOk(self.server.execute("sleeper", {"id": 2}, headers={"Idempotency-Key": "k" * 255}),
                          {"done": 2})


class AsyncNoSecretTests(AsyncHelpers, ServerTestCase):
    """Without LUAGENT_CALLBACK_SECRET the callback is not signed."""
    WORKERS = 1
    AGENTS = {"sleeper": SLEEPER}

    @classmethod
    def setUpClass(cls):
        cls.receiver = Receiver()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.receiver.stop()

    def test_unsigned_callback(self):
        path = f"/cb/{uuid.uuid4().hex}"
        body = self.assertAccepted(submit(self.server, "sleeper", {"id": "u"}, callback_url=self.receiver.url(path)),
                                   "sleeper")
        call = self.wait_deliveries(path, 1)[0]
        self.assertEqual(body["execution_id"], call["headers"].get("x-luagent-execution-id"))
        self.assertNotIn("x-luagent-signature", call["headers"])
        self.assertEqual(self.wait_status(body["execution_id"]), json.loads(call["raw"]))


# ---- Redis stream ---------------------------------------------------------------------------------

def xpending(redis, db):
    """[(entry id, consumer, idle ms, deliveries)] of the group luagent on luagent:jobs."""
    out = redis.cli("XPENDING", "luagent:jobs", "luagent", "-", "+", "100", db=db).split("\n")
    out = [l for l in out if l != ""]
    return [(out[i], out[i + 1], int(out[i + 2]), int(out[i + 3])) for i in range(0, len(out) - 3, 4)]


class RedisStreamCase(AsyncHelpers, ServerTestCase):
    """Two servers on one Redis db (no server of the base class: each test starts its own)."""
    DB = 0

    @classmethod
    def setUpClass(cls):
        cls.redis = shared_redis()
        cls.redis.cli("FLUSHDB", db=cls.DB)
        cls.servers = []

    @classmethod
    def tearDownClass(cls):
        for s in cls.servers:
            s.cleanup()

    def start_server(self, **env):
        s = Server(agents={"sleeper": SLEEPER}, workers=1,
                   env={"REDIS_URL": self.redis.url(self.DB), **{k: str(v) for k, v in env.items()}})
        self.servers.append(s)
        s.start()
        return s

    def ctx_msg(self, reply=None, extra=""):
        parts = [extra] if extra else []
        if reply is not None:
            parts.append(reply.describe())
        for i, s in enumerate(self.servers):
            parts.append(f"--- server {i} log tail ---\n{s.log_tail(12)}")
        return "\n".join(parts)

    def final_somewhere(self, servers, eid, timeout):
        """(server index, record) of the server whose history shows eid finished."""
        def look():
            for i, s in enumerate(servers):
                r = get_record(s, eid)
                if r.status == 200 and r.body.get("status") in ("succeeded", "failed"):
                    return i, r.body
            return None
        v, took, ok = self.poll(look, lambda v: v is not None, timeout=timeout, interval=0.05)
        self.assertTrue(ok, self.ctx_msg(extra=f"{eid} not finished on any server after {took:.1f} s"))
        return v


class AsyncRedisSharedTests(RedisStreamCase):
    DB = 13

    def test_two_servers_share_the_work(self):
        a = self.start_server(LUAGENT_JOB_CONCURRENCY=2)
        b = self.start_server(LUAGENT_JOB_CONCURRENCY=2)
        ids = [self.assertAccepted(submit(a, "sleeper", {"ms": 300, "id": i}), "sleeper")["execution_id"]
               for i in range(16)]
        ran_on = [0, 0]
        for i, eid in enumerate(ids):
            where, rec = self.final_somewhere([a, b], eid, timeout=20)
            self.assertEqual("succeeded", rec["status"], rec)
            self.assertEqual({"done": i, "slept": 300}, rec["result"])
            self.assertEqual("async", rec["mode"])
            ran_on[where] += 1
        measure("16 jobs submitted to A ran on", f"A: {ran_on[0]}, B: {ran_on[1]}")
        self.assertGreater(ran_on[0], 0, "server A ran nothing")
        self.assertGreater(ran_on[1], 0, "server B picked up no work from the stream")
        _, _, ok = self.poll(lambda: xpending(self.redis, self.DB), lambda p: p == [], timeout=5, interval=0.05)
        left = [(entry, consumer, self.redis.cli("XRANGE", "luagent:jobs", entry, entry, db=self.DB))
                for entry, consumer, _, _ in xpending(self.redis, self.DB)]
        self.assertTrue(ok, f"finished jobs' entries left pending (A is pid {a.proc.pid}, B is pid {b.proc.pid}): {left}")
        self.assertEqual("0", self.redis.cli("XLEN", "luagent:jobs", db=self.DB), "finished entries not deleted")
        groups = self.redis.cli("XINFO", "GROUPS", "luagent:jobs", db=self.DB)
        self.assertIn("luagent", groups.split("\n"))


class AsyncRedisReclaimTests(RedisStreamCase):
    DB = 14

    def test_jobs_of_a_killed_server_are_reclaimed(self):
        a = self.start_server(LUAGENT_JOB_CLAIM_MS=1000)
        ids = [self.assertAccepted(submit(a, "sleeper", {"ms": 3000, "id": f"r{i}"}), "sleeper")["execution_id"]
               for i in range(2)]
        prefix = f"-{a.proc.pid}-"
        pend, took, ok = self.poll(lambda: xpending(self.redis, self.DB),
                                   lambda p: len(p) == 2 and all(prefix in c for _, c, _, _ in p), timeout=5,
                                   interval=0.02)
        self.assertTrue(ok, f"A's consumer (pid {a.proc.pid}) does not own both entries: {pend}")
        for eid in ids:  # A is running them
            self.wait_status(eid, ("running",), timeout=5, server=a)
        b = self.start_server(LUAGENT_JOB_CLAIM_MS=1000)
        a.kill()
        t_kill = time.monotonic()
        for i, eid in enumerate(ids):
            rec = self.wait_status(eid, ("succeeded", "failed"), timeout=15, server=b)
            self.assertEqual("succeeded", rec["status"], rec)
            self.assertEqual({"done": f"r{i}", "slept": 3000}, rec["result"])
        took = time.monotonic() - t_kill
        measure("reclaimed jobs finished on B after A was killed", f"{took:.2f} s")
        self.assertGreaterEqual(took, 3.0, "B's result came before it could have rerun the 3 s job")
        line = b.wait_log(lambda l: "reclaimed" in str(l.get("msg", "")), timeout=3)
        self.assertIsNotNone(line, f"B's log does not mention reclaimed\n{b.log_tail(20)}")
        _, _, ok = self.poll(lambda: xpending(self.redis, self.DB), lambda p: p == [], timeout=5, interval=0.05)
        self.assertTrue(ok, f"entries left pending: {xpending(self.redis, self.DB)}")
        self.assertTrue(all(prefix not in c for _, c, _, _ in xpending(self.redis, self.DB)))


class AsyncRedisFinishedJobTests(RedisStreamCase):
    """A finished job is acknowledged (XACK + XDEL) and never run again, also on a replica that
    only consumes (its first Redis command is the acknowledgement)."""
    DB = 15

    def test_finished_jobs_are_acked_and_not_rerun(self):
        a = self.start_server(LUAGENT_JOB_CLAIM_MS=1000, LUAGENT_JOB_CONCURRENCY=1)
        b = self.start_server(LUAGENT_JOB_CLAIM_MS=1000, LUAGENT_JOB_CONCURRENCY=1)
        ids = [self.assertAccepted(submit(a, "sleeper", {"ms": 150, "id": i}), "sleeper")["execution_id"]
               for i in range(4)]
        ran_on = [0, 0]
        for eid in ids:
            where, rec = self.final_somewhere([a, b], eid, timeout=10)
            self.assertEqual("succeeded", rec["status"])
            ran_on[where] += 1
        self.assertGreater(ran_on[1], 0, "B took no job: nothing checked on the consumer-only replica")
        # past LUAGENT_JOB_CLAIM_MS: an entry still pending now gets reclaimed and run a second time
        time.sleep(2.5 * SLOW)
        runs = {eid: sum(1 for s in (a, b) for l in s.logs()
                         if eid in str(l.get("msg", "")) and "succeeded" in str(l.get("msg", ""))) for eid in ids}
        reclaimed = [l for s in (a, b) for l in s.logs() if "reclaimed" in str(l.get("msg", ""))]
        self.assertEqual({eid: 1 for eid in ids}, runs, "a finished async job ran again")
        self.assertEqual([], reclaimed, "finished jobs were reclaimed")
        self.assertEqual([], xpending(self.redis, self.DB), "finished jobs' entries still pending (no XACK)")

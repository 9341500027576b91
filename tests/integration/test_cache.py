"""luagent.cache, ctx.session and the result cache of agents with cache_ttl: in the process-wide
in-memory store (no REDIS_URL) and on a real Redis (services.py), including a Redis outage."""

import json
import time
import uuid

from .harness import SLOW, ServerTestCase
from .services import Redis, shared_redis

# One cache operation per request: {op = "get"|"set"|"delete", key, value, ttl}.
KV = r'''
return {
  execute = function(task, ctx)
    local c = luagent.cache
    if task.op == "set" then return {ret = c.set(task.key, task.value, task.ttl)} end
    if task.op == "delete" then return {ret = c.delete(task.key)} end
    local v = c.get(task.key)
    return {found = v ~= nil, value = v}
  end,
}
'''

# The same through ctx.session, with method (colon) or function (dot) calls.
SESSION = r'''
return {
  execute = function(task, ctx)
    local s = ctx.session
    local colon = task.style == "colon"
    if task.op == "set" then
      if colon then return {ret = s:set(task.key, task.value)} end
      return {ret = s.set(task.key, task.value)}
    end
    if task.op == "delete" then
      if colon then return {ret = s:delete(task.key)} end
      return {ret = s.delete(task.key)}
    end
    local v
    if colon then v = s:get(task.key) else v = s.get(task.key) end
    return {found = v ~= nil, value = v}
  end,
}
'''

# The result cache: counts the runs of its body in luagent.cache ("runs"); {peek = nonce} reads the
# count without counting (a fresh nonce is always a miss), {fail = true} raises.
CACHED = r'''
return {
  cache_ttl = 1,
  execute = function(task, ctx)
    local runs = luagent.cache.get("runs") or 0
    if task.peek then return {runs = runs} end
    luagent.cache.set("runs", runs + 1)
    if task.fail then error("no answer for " .. tostring(task.fail)) end
    return {answer = task, run = runs + 1, v = 1}
  end,
}
'''


def uniq(prefix="k"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class CacheCases:
    """The tests, shared by the in-memory and the Redis classes."""

    WORKERS = 2
    AGENTS = {"kv": KV, "kv2": KV, "sess": SESSION, "cached": CACHED}

    # ---- helpers ----------------------------------------------------------------------------
    def kv(self, op, key, value=None, ttl=None, agent="kv"):
        task = {"op": op, "key": key}
        if value is not None:
            task["value"] = value
        if ttl is not None:
            task["ttl"] = ttl
        return self.assertOk(self.server.execute(agent, task))["result"]

    def sess(self, op, sid, key, value=None, style="dot"):
        task = {"op": op, "key": key, "style": style}
        if value is not None:
            task["value"] = value
        return self.assertOk(self.server.execute("sess", task, context={"session_id": sid}))["result"]

    def cached(self, task, headers=None):
        r = self.server.execute("cached", task, headers=headers)
        return r

    def runs(self):
        return self.assertOk(self.server.execute("cached", {"peek": uuid.uuid4().hex}))["result"]["runs"]

    def x_cache(self, r):
        return r.headers.get("x-cache")

    # ---- luagent.cache ----------------------------------------------------------------------
    def test_values_round_trip(self):
        values = {
            "string": "héllo", "int": 42, "float": 1.5, "true": True, "false": False,
            "empty array": [], "empty object": {}, "array": [1, "two", [3, []], {"four": 4}],
            "object": {"a": {"b": [1, 2, {}]}, "c": None, "d": "x"},
        }
        for label, value in values.items():
            with self.subTest(label):
                key = uniq()
                self.assertEqual({"ret": True}, self.kv("set", key, value))
                # many requests on new connections: both workers see the entry
                for _ in range(6):
                    self.assertEqual({"found": True, "value": value}, self.kv("get", key))

    def test_missing_key_is_nil(self):
        self.assertEqual({"found": False}, self.kv("get", uniq()))

    def test_overwrite_and_delete(self):
        key = uniq()
        self.assertEqual({"ret": True}, self.kv("set", key, 1))
        self.assertEqual({"ret": True}, self.kv("set", key, {"n": 2}))
        self.assertEqual({"found": True, "value": {"n": 2}}, self.kv("get", key))
        self.assertEqual({"ret": True}, self.kv("delete", key))
        self.assertEqual({"found": False}, self.kv("get", key))
        self.assertEqual({"ret": False}, self.kv("delete", key), "delete of a missing key must return false")

    def test_keys_are_per_agent(self):
        key = uniq("x")
        self.kv("set", key, "from kv")
        self.assertEqual({"found": False}, self.kv("get", key, agent="kv2"))
        self.kv("set", key, "from kv2", agent="kv2")
        self.assertEqual({"found": True, "value": "from kv"}, self.kv("get", key))
        self.assertEqual({"found": True, "value": "from kv2"}, self.kv("get", key, agent="kv2"))
        self.assertEqual({"ret": True}, self.kv("delete", key, agent="kv2"))
        self.assertEqual({"found": True, "value": "from kv"}, self.kv("get", key), "kv2's delete removed kv's key")

    def test_ttl_expires(self):
        key = uniq()
        t0 = time.monotonic()
        self.assertEqual({"ret": True}, self.kv("set", key, "short", ttl=0.3))
        got = self.kv("get", key)
        if time.monotonic() - t0 < 0.25:
            self.assertEqual({"found": True, "value": "short"}, got, "gone before its ttl")
        v, took, ok = self.poll(lambda: self.kv("get", key), lambda v: v == {"found": False}, timeout=3, interval=0.05)
        self.assertTrue(ok, f"a 0.3 s entry still there after {took:.1f} s: {v}")
        self.assertGreaterEqual(time.monotonic() - t0, 0.25, "expired before its ttl")

    def test_no_ttl_means_no_expiry(self):
        k_nil, k_zero = uniq(), uniq()
        self.kv("set", k_nil, "forever")
        self.kv("set", k_zero, "forever too", ttl=0)
        time.sleep(0.6)
        self.assertEqual({"found": True, "value": "forever"}, self.kv("get", k_nil))
        self.assertEqual({"found": True, "value": "forever too"}, self.kv("get", k_zero))

    # ---- ctx.session ------------------------------------------------------------------------
    def test_session_get_set_delete_both_styles(self):
        for style in ("dot", "colon"):
            with self.subTest(style):
                sid, key = uniq("sid"), uniq()
                self.assertEqual({"found": False}, self.sess("get", sid, key, style=style))
                self.assertEqual({"ret": True}, self.sess("set", sid, key, {"cart": [1, 2]}, style=style))
                for other in ("dot", "colon"):
                    self.assertEqual({"found": True, "value": {"cart": [1, 2]}}, self.sess("get", sid, key, style=other))
                self.assertEqual({"ret": True}, self.sess("delete", sid, key, style=style))
                self.assertEqual({"found": False}, self.sess("get", sid, key, style=style))

    def test_sessions_are_separate(self):
        a, b, key = uniq("sid"), uniq("sid"), "shared-name"
        self.sess("set", a, key, "A")
        self.assertEqual({"found": False}, self.sess("get", b, key))
        self.sess("set", b, key, "B")
        self.assertEqual({"found": True, "value": "A"}, self.sess("get", a, key))
        self.assertEqual({"found": True, "value": "B"}, self.sess("get", b, key))
        # a session key is not an agent cache key
        self.assertEqual({"found": False}, self.kv("get", key))

    def test_session_without_id_is_an_error(self):
        for context in (None, {}, {"other": 1}):
            with self.subTest(context=context):
                r = self.server.execute("sess", {"op": "get", "key": "k"}, context=context)
                err = self.assertError(r, 500, "agent_error")
                self.assertIn("session_id", err["message"])

    # ---- result cache -----------------------------------------------------------------------
    def test_result_cache_hit_does_not_run(self):
        task = {"q": uniq("q"), "n": [1, 2, {"z": None}]}
        before = self.runs()
        first = self.cached(task)
        self.assertOk(first)
        self.assertEqual("miss", self.x_cache(first), first.describe())
        self.assertEqual(task, first.body["result"]["answer"])
        self.assertEqual(before + 1, self.runs())
        for i in range(10):  # new connections: both workers hit
            r = self.cached(task)
            self.assertOk(r, first.body["result"])
            self.assertEqual("hit", self.x_cache(r), f"request {i}: {r.describe()}")
        self.assertEqual(before + 1, self.runs(), "the agent ran on a cache hit")

    def test_result_cache_key_order_irrelevant(self):
        q = uniq("q")
        first = self.cached({"a": 1, "b": 2, "q": q, "o": {"x": 1, "y": [1, {"m": 1, "n": 2}]}})
        self.assertEqual("miss", self.x_cache(first), first.describe())
        r = self.cached({"o": {"y": [1, {"n": 2, "m": 1}], "x": 1}, "q": q, "b": 2, "a": 1})
        self.assertOk(r, first.body["result"])
        self.assertEqual("hit", self.x_cache(r), r.describe())

    def test_result_cache_different_task_misses(self):
        q = uniq("q")
        self.assertEqual("miss", self.x_cache(self.cached({"q": q, "n": 1})))
        before = self.runs()
        for variant in ({"q": q, "n": 2}, {"q": q, "n": "1"}, {"q": q, "n": 1, "extra": None}, {"q": q},
                        {"q": q, "n": [1]}):
            with self.subTest(task=variant):
                r = self.cached(variant)
                self.assertOk(r)
                self.assertEqual("miss", self.x_cache(r), r.describe())
                self.assertEqual(variant, r.body["result"]["answer"])
        self.assertEqual(before + 5, self.runs())

    def test_result_cache_expires(self):
        task = {"q": uniq("q")}
        t0 = time.monotonic()
        first = self.cached(task)
        self.assertEqual("miss", self.x_cache(first))
        r = self.cached(task)
        if time.monotonic() - t0 < 0.8:
            self.assertEqual("hit", self.x_cache(r), r.describe())
        r, took, ok = self.poll(lambda: self.cached(task), lambda r: self.x_cache(r) == "miss", timeout=5,
                                interval=0.05)
        self.assertTrue(ok, f"cache_ttl = 1 entry still served after {took:.1f} s")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9, "expired before cache_ttl")
        self.assertNotEqual(first.body["result"]["run"], r.body["result"]["run"], "a miss must run the agent")

    def test_errors_are_not_cached(self):
        task = {"fail": uniq("f")}
        before = self.runs()
        for i in range(3):
            r = self.cached(task)
            self.assertError(r, 500, "agent_error")
            self.assertNotEqual("hit", self.x_cache(r))
        self.assertEqual(before + 3, self.runs(), "a failed execution was answered from the cache")

    def test_new_version_never_serves_old_answer(self):
        src_v1 = CACHED.replace("cache_ttl = 1,", "cache_ttl = 60,").replace("v = 1", "v = 'one'")
        src_v2 = src_v1.replace("v = 'one'", "v = 'two'")
        name = "versioned"
        self.server.write_agent(name, src_v1)
        task = {"q": uniq("q")}
        r, _, ok = self.poll(lambda: self.server.execute(name, task),
                             lambda r: r.status == 200 and r.body["result"]["v"] == "one", timeout=5, interval=0.05)
        self.assertTrue(ok, self.ctx_msg(r, "v1 never served"))
        v1 = r.body["version"]
        self.assertEqual("hit", self.x_cache(self.server.execute(name, task)))
        self.server.write_agent(name, src_v2)
        seen_v2 = 0
        deadline = time.monotonic() + 8 * SLOW
        while seen_v2 < 6 and time.monotonic() < deadline:
            r = self.server.execute(name, task)
            self.assertOk(r)
            if r.body["version"] == v1:
                self.assertEqual("one", r.body["result"]["v"])
                time.sleep(0.02)
                continue
            seen_v2 += 1
            self.assertEqual("two", r.body["result"]["v"], f"version {r.body['version']} served v1's cached answer")
            if seen_v2 == 1:
                self.assertEqual("miss", self.x_cache(r), "the first v2 answer came from the cache")
            else:
                self.assertEqual("hit", self.x_cache(r), "v2 did not cache its own answer")
        self.assertEqual(6, seen_v2, "the new version never served")


class CacheMemoryTests(CacheCases, ServerTestCase):
    """No REDIS_URL: the in-process store, shared by both workers."""


class CacheRedisTests(CacheCases, ServerTestCase):
    """REDIS_URL set: the same behaviour, and the keys are where they should be in Redis."""
    DB = 11

    @classmethod
    def setUpClass(cls):
        cls.redis = shared_redis()
        cls.redis.cli("FLUSHDB", db=cls.DB)
        cls.ENV = {"REDIS_URL": cls.redis.url(cls.DB), "LUAGENT_SESSION_TTL_S": "600"}
        super().setUpClass()

    def rcli(self, *args):
        return self.redis.cli(*args, db=self.DB)

    def test_redis_cache_key(self):
        key = uniq()
        self.kv("set", key, {"a": [1, 2]})
        self.assertEqual("1", self.rcli("EXISTS", f"luagent:c:kv:{key}"))
        self.assertEqual({"a": [1, 2]}, json.loads(self.rcli("GET", f"luagent:c:kv:{key}")))
        self.assertEqual("-1", self.rcli("TTL", f"luagent:c:kv:{key}"), "no ttl given: no expiry")
        self.kv("set", key, "x", ttl=30)
        ttl = int(self.rcli("TTL", f"luagent:c:kv:{key}"))
        self.assertTrue(0 < ttl <= 30, ttl)
        self.assertEqual({"ret": True}, self.kv("delete", key))
        self.assertEqual("0", self.rcli("EXISTS", f"luagent:c:kv:{key}"))
        # written behind the server's back: the agent reads it
        self.rcli("SET", f"luagent:c:kv2:{key}", '{"from":"redis"}')
        self.assertEqual({"found": True, "value": {"from": "redis"}}, self.kv("get", key, agent="kv2"))

    def test_redis_session_key_has_ttl(self):
        sid, key = uniq("sid"), uniq()
        self.sess("set", sid, key, [1])
        rkey = f"luagent:s:{sid}:{key}"
        self.assertEqual("[1]", self.rcli("GET", rkey))
        ttl = int(self.rcli("TTL", rkey))
        self.assertTrue(0 < ttl <= 600, f"session key TTL {ttl}, LUAGENT_SESSION_TTL_S=600")
        self.assertGreater(ttl, 590)

    def test_redis_result_key(self):
        task = {"q": uniq("q")}
        r = self.cached(task)
        self.assertEqual("miss", self.x_cache(r))
        version = r.body["version"]
        keys = self.rcli("KEYS", f"luagent:r:cached:{version}:*").split()
        self.assertTrue(keys, "no result key in Redis")
        for k in keys:
            self.assertRegex(k, rf"^luagent:r:cached:{version}:[0-9a-f]{{64}}$")
        # find the one this task made: its value is the answer
        mine = [k for k in keys if task["q"] in self.rcli("GET", k)]
        self.assertEqual(1, len(mine), keys)
        ttl = int(self.rcli("PTTL", mine[0]))
        self.assertTrue(0 < ttl <= 1000, f"result key PTTL {ttl} with cache_ttl = 1")


class CacheRedisOutageTests(ServerTestCase):
    """Redis killed: cache reads miss, writes return false, agents still answer; back after restart."""
    WORKERS = 2
    AGENTS = {"kv": KV, "sess": SESSION, "cached": CACHED}
    DB = 12

    @classmethod
    def setUpClass(cls):
        cls.redis = Redis()
        cls.ENV = {"REDIS_URL": cls.redis.url(cls.DB)}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.redis.destroy()

    def kv(self, task, agent="kv", context=None):
        return self.assertOk(self.server.execute(agent, task, context=context))["result"]

    def test_outage_and_recovery(self):
        key = uniq()
        self.assertEqual({"ret": True}, self.kv({"op": "set", "key": key, "value": "up"}))
        self.assertEqual({"found": True, "value": "up"}, self.kv({"op": "get", "key": key}))
        self.redis.stop()
        try:
            for i in range(6):  # both workers
                with self.subTest("down", i=i):
                    t0 = time.monotonic()
                    self.assertEqual({"found": False}, self.kv({"op": "get", "key": key}))
                    self.assertEqual({"ret": False}, self.kv({"op": "set", "key": key, "value": "down"}))
                    self.assertEqual({"found": False}, self.kv({"op": "get", "key": "k", "style": "dot"}, "sess",
                                                               {"session_id": "s1"}))
                    r = self.server.execute("cached", {"q": "outage"})
                    self.assertOk(r)
                    self.assertNotEqual("hit", r.headers.get("x-cache"))
                    self.assertLess(time.monotonic() - t0, 5 * SLOW, "a Redis outage makes requests hang")
        finally:
            self.redis.start()

        def works():
            set_ok = self.kv({"op": "set", "key": key, "value": "again"}) == {"ret": True}
            return set_ok and self.kv({"op": "get", "key": key}) == {"found": True, "value": "again"}
        _, took, ok = self.poll(works, bool, timeout=15, interval=0.2)
        self.assertTrue(ok, f"the cache did not come back after Redis restarted\n{self.server.log_tail(20)}")
        # both workers reconnected
        for _ in range(8):
            self.assertEqual({"found": True, "value": "again"}, self.kv({"op": "get", "key": key}))
        first = self.server.execute("cached", {"q": "after"})
        self.assertEqual("miss", first.headers.get("x-cache"))
        _, _, ok = self.poll(lambda: self.server.execute("cached", {"q": "after"}),
                             lambda r: r.headers.get("x-cache") == "hit", timeout=1, interval=0.05)
        self.assertTrue(ok, "the result cache does not hit again after the restart")


class SessionTtlTests(ServerTestCase):
    """LUAGENT_SESSION_TTL_S=1: session values expire."""
    WORKERS = 2
    AGENTS = {"sess": SESSION}
    ENV = {"LUAGENT_SESSION_TTL_S": "1"}

    def test_session_expires(self):
        sid = uniq("sid")
        t0 = time.monotonic()
        ok = self.server.execute("sess", {"op": "set", "key": "k", "value": 1}, context={"session_id": sid})
        self.assertOk(ok, {"ret": True})

        def get():
            return self.assertOk(self.server.execute("sess", {"op": "get", "key": "k"},
                                                     context={"session_id": sid}))["result"]
        v = get()
        if time.monotonic() - t0 < 0.8:
            self.assertEqual({"found": True, "value": 1}, v)
        v, took, done = self.poll(get, lambda v: v == {"found": False}, timeout=5, interval=0.1)
        self.assertTrue(done, f"session value still there {took:.1f} s after a 1 s TTL")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9, "expired before LUAGENT_SESSION_TTL_S")

"""luagent.redis.call against a real redis-server (services.py): reply mapping, binary safety, SELECT
and AUTH from REDIS_URL, pipelining under concurrency, outage and reconnect, refused commands."""

import subprocess
import threading
import time
import uuid

from .harness import SLOW, ServerTestCase, measure
from .services import Redis, shared_redis

CALL = '''
local unpack = unpack or table.unpack
return {
  execute = function(task, ctx)
    local v = luagent.redis.call(unpack(task.args))
    if v == nil then return {type = "nil"} end
    return {type = type(v), value = v}
  end,
}
'''

PCALL = '''
local unpack = unpack or table.unpack
return {
  execute = function(task, ctx)
    local ok, err = pcall(luagent.redis.call, unpack(task.args))
    if ok then return {ok = true} end
    if type(err) == "table" then
      return {ok = false, kind = "table", status = err.status, code = err.code, message = err.message}
    end
    return {ok = false, kind = type(err), message = tostring(err)}
  end,
}
'''

REPLIES = '''
local R = luagent.redis
local J = luagent.json
return {
  execute = function(task, ctx)
    local k = task.prefix
    local out = {}
    out.set = R.call("SET", k .. ":s", "hello")
    out.get = R.call("GET", k .. ":s")
    out.missing_is_nil = R.call("GET", k .. ":nope") == nil
    out.incr = R.call("INCR", k .. ":n")
    out.incr_type = type(out.incr)
    out.incrby = R.call("INCRBY", k .. ":n", 41)
    out.del = R.call("DEL", k .. ":s", k .. ":n", k .. ":nope")
    out.after_del_nil = R.call("GET", k .. ":s") == nil
    R.call("RPUSH", k .. ":l", "a", "b", "c")
    out.lrange = R.call("LRANGE", k .. ":l", 0, -1)
    local empty = R.call("LRANGE", k .. ":empty", 0, -1)
    out.empty_json = J.encode(empty)
    out.empty_is_array = J.is_array(empty)
    R.call("SET", k .. ":a", "1")
    local m = R.call("MGET", k .. ":a", k .. ":missing", k .. ":a")
    out.mget_null = m[2] == J.null
    out.mget_json = J.encode(m)
    out.nested_json = J.encode(R.call("EVAL",
      "return {1, 'two', {3, {}}, {}, redis.status_reply('FINE')}", 0))
    out.ping = R.call("PING")
    out.numbers = {}
    for i, n in ipairs({42, -7, 1e15, 1.5, 0.1, 2^53}) do
      R.call("SET", k .. ":num", n)
      out.numbers[i] = R.call("GET", k .. ":num")
    end
    R.call("DEL", k .. ":l", k .. ":a", k .. ":num")
    return out
  end,
}
'''

BINARY = '''
local R = luagent.redis
return {
  execute = function(task, ctx)
    local v = "a\\0b\\255\\254\\0" .. string.rep("\\192", 3) .. "z"
    R.call("SET", task.key, v)
    local back = R.call("GET", task.key)
    local key2 = task.key .. "\\0\\255"
    R.call("SET", key2, "x")
    local back2 = R.call("GET", key2)
    R.call("DEL", key2)
    local hex = back:gsub(".", function(c) return string.format("%02x", c:byte()) end)
    return {len = #v, same = back == v, hex = hex, binary_key = back2 == "x"}
  end,
}
'''

WORK = '''
local R = luagent.redis
return {
  execute = function(task, ctx)
    local k = task.prefix .. ":" .. task.i
    R.call("SET", k, task.i)
    local got = R.call("GET", k)
    R.call("INCR", task.prefix .. ":counter")
    R.call("HSET", task.prefix .. ":h", tostring(task.i), got)
    local n = R.call("DEL", k)
    return {got = got, del = n}
  end,
}
'''

SLOWCALL = '''
return {
  timeout_ms = 300,
  execute = function(task, ctx)
    return {v = luagent.redis.call("GET", task.key)}
  end,
}
'''


class RedisTests(ServerTestCase):
    WORKERS = 2
    AGENTS = {"call": CALL, "pc": PCALL, "replies": REPLIES, "binary": BINARY, "work": WORK,
              "slowcall": SLOWCALL}

    @classmethod
    def setUpClass(cls):
        cls.redis = shared_redis()
        cls.ENV = {"REDIS_URL": cls.redis.url(0)}
        super().setUpClass()

    def call(self, *args):
        return self.server.execute("call", {"args": list(args)})

    def test_set_get_incr_del_round_trip(self):
        key = f"rt:{uuid.uuid4()}"
        self.assertOk(self.call("SET", key, "v1"), {"type": "string", "value": "OK"})
        self.assertEqual("v1", self.redis.cli("GET", key))
        self.assertOk(self.call("GET", key), {"type": "string", "value": "v1"})
        self.assertOk(self.call("DEL", key), {"type": "number", "value": 1})
        self.assertOk(self.call("INCR", key), {"type": "number", "value": 1})
        self.assertOk(self.call("INCRBY", key, 9), {"type": "number", "value": 10})
        self.assertEqual("10", self.redis.cli("GET", key))
        self.assertOk(self.call("DEL", key), {"type": "number", "value": 1})
        self.assertOk(self.call("GET", key), {"type": "nil"})

    def test_reply_types(self):
        body = self.assertOk(self.server.execute("replies", {"prefix": f"ty:{uuid.uuid4()}"}))
        r = body["result"]
        self.assertEqual("OK", r["set"])
        self.assertEqual("hello", r["get"])
        self.assertTrue(r["missing_is_nil"])
        self.assertEqual(1, r["incr"])
        self.assertEqual("number", r["incr_type"])
        self.assertEqual(42, r["incrby"])
        self.assertEqual(2, r["del"])
        self.assertTrue(r["after_del_nil"])
        self.assertEqual(["a", "b", "c"], r["lrange"])
        self.assertEqual("[]", r["empty_json"])
        self.assertTrue(r["empty_is_array"])
        self.assertTrue(r["mget_null"])
        self.assertEqual('["1",null,"1"]', r["mget_json"])
        self.assertEqual('[1,"two",[3,[]],[],"FINE"]', r["nested_json"])
        self.assertEqual("PONG", r["ping"])
        self.assertEqual(["42", "-7", "1000000000000000", "1.5", "0.1", "9007199254740992"], r["numbers"])

    def test_error_reply_is_catchable_table(self):
        key = f"err:{uuid.uuid4()}"
        self.redis.cli("SET", key, "abc")
        body = self.assertOk(self.server.execute("pc", {"args": ["INCR", key]}))
        r = body["result"]
        self.assertEqual("table", r["kind"], r)
        self.assertEqual(500, r["status"])
        self.assertEqual("redis_error", r["code"])
        self.assertIn("not an integer", r["message"])
        r = self.assertOk(self.server.execute("pc", {"args": ["NOSUCHCOMMAND", "x"]}))["result"]
        self.assertEqual("redis_error", r["code"])
        self.assertIn("unknown command", r["message"].lower())
        # a nested error (a script returning one inside an array) raises the same way
        r = self.assertOk(self.server.execute("pc", {"args": ["EVAL", "return {1, redis.error_reply('BAD inner')}", 0]}))
        self.assertEqual(("redis_error", "BAD inner"), (r["result"]["code"], r["result"]["message"]))

    def test_uncaught_error_reply_is_500_redis_error(self):
        key = f"err:{uuid.uuid4()}"
        self.redis.cli("RPUSH", key, "x")
        reply = self.call("GET", key)
        err = self.assertError(reply, 500, "redis_error")
        self.assertIn("WRONGTYPE", err["message"])

    def test_binary_safe_values(self):
        key = f"bin:{uuid.uuid4()}"
        r = self.assertOk(self.server.execute("binary", {"key": key}))["result"]
        self.assertTrue(r["same"], r)
        self.assertTrue(r["binary_key"], r)
        self.assertEqual(r["len"], int(self.redis.cli("STRLEN", key)))
        self.assertEqual("610062fffe00c0c0c07a", r["hex"])
        raw = subprocess.run(["redis-cli", "-p", str(self.redis.port), "--raw", "GET", key],
                             stdout=subprocess.PIPE, check=True).stdout
        self.assertEqual(b"a\x00b\xff\xfe\x00\xc0\xc0\xc0z\n", raw)

    def test_bad_arguments_raise(self):
        for args, needle in ((["SET", "k", True], "boolean"), (["SET", "k", {"a": 1}], "table"),
                             ([42], "command name")):
            with self.subTest(args=args):
                r = self.assertOk(self.server.execute("pc", {"args": args}))["result"]
                self.assertEqual("string", r["kind"], r)
                self.assertIn(needle, r["message"])

    def test_blocking_and_stateful_commands_refused(self):
        cases = [["BLPOP", "q", 0], ["BRPOP", "q", 1], ["BLMOVE", "a", "b", "LEFT", "LEFT", 0],
                 ["BZPOPMIN", "z", 0], ["XREAD", "BLOCK", 0, "STREAMS", "s", "$"],
                 ["xreadgroup", "GROUP", "g", "c", "block", 10, "STREAMS", "s", ">"],
                 ["SUBSCRIBE", "ch"], ["PSUBSCRIBE", "c*"], ["MONITOR"], ["MULTI"], ["EXEC"], ["WATCH", "k"],
                 ["SELECT", 2], ["AUTH", "x"], ["QUIT"], ["WAIT", 1, 0], ["CLIENT", "REPLY", "OFF"]]
        for args in cases:
            with self.subTest(cmd=args[0]):
                t0 = time.monotonic()
                r = self.assertOk(self.server.execute("pc", {"args": args}))["result"]
                self.assertLess(time.monotonic() - t0, 1.0 * SLOW)
                self.assertEqual("string", r["kind"], r)
                self.assertIn("is not allowed", r["message"])
        # XREAD without BLOCK is fine (a stream named BLOCK too)
        self.assertOk(self.call("XREAD", "COUNT", 1, "STREAMS", "BLOCK", "0"), {"type": "nil"})
        # the connection still works afterwards
        self.assertOk(self.call("PING"), {"type": "string", "value": "PONG"})

    def test_concurrent_requests_pipelined(self):
        prefix = f"cc:{uuid.uuid4()}"
        n = 200
        results = [None] * n

        def one(i):
            try:
                results[i] = self.server.execute("work", {"prefix": prefix, "i": i}, timeout=30 * SLOW)
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = e

        t0 = time.monotonic()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        bad = [(i, r) for i, r in enumerate(results) if isinstance(r, Exception) or r.status != 200]
        self.assertEqual([], bad[:3], f"{len(bad)} of {n} failed")
        for i, r in enumerate(results):
            self.assertEqual({"got": str(i), "del": 1}, r.body["result"])
        self.assertEqual(str(n), self.redis.cli("GET", prefix + ":counter"))
        self.assertEqual(str(n), self.redis.cli("HLEN", prefix + ":h"))
        # one command connection per worker, whatever the concurrency (redis-cli itself is one more;
        # each worker's async-job reader, blocked in XREADGROUP, is another)
        clients = [ln for ln in self.redis.cli("CLIENT", "LIST").splitlines()
                   if "cmd=client" not in ln and "cmd=xreadgroup" not in ln and "cmd=xgroup" not in ln]
        self.assertLessEqual(len(clients), self.WORKERS, clients)
        measure(f"{n} concurrent executions x 5 redis commands", f"{elapsed * 1000:.0f} ms")

    def test_execution_deadline_while_waiting(self):
        key = f"dl:{uuid.uuid4()}"
        self.redis.cli("SET", key, "late")
        # make the server hold every client's commands (ours) for a while
        self.redis.cli("CLIENT", "PAUSE", int(1000 * SLOW), "ALL")
        t0 = time.monotonic()
        reply = self.server.execute("slowcall", {"key": key})
        self.assertError(reply, 504, "timeout")
        self.assertLess(time.monotonic() - t0, 0.9 * SLOW)
        self.redis.cli("CLIENT", "UNPAUSE")
        # the abandoned reply is dropped and the connection keeps serving, in order
        for _ in range(5):
            self.assertOk(self.server.execute("slowcall", {"key": key}), {"v": "late"})

    def test_select_db_from_url_is_honoured(self):
        # this class's server uses db 0; the db test lives in RedisDbTests
        key = f"db0:{uuid.uuid4()}"
        self.assertOk(self.call("SET", key, "zero"))
        self.assertEqual("zero", self.redis.cli("GET", key, db=0))
        self.assertEqual("", self.redis.cli("GET", key, db=5))


class RedisDbTests(ServerTestCase):
    WORKERS = 2
    AGENTS = {"call": CALL}

    @classmethod
    def setUpClass(cls):
        cls.redis = shared_redis()
        cls.ENV = {"REDIS_URL": cls.redis.url(5)}
        super().setUpClass()

    def test_select_db_from_url(self):
        key = f"db5:{uuid.uuid4()}"
        for _ in range(4):  # both workers' connections
            self.assertOk(self.server.execute("call", {"args": ["SET", key, "five"]}))
        self.assertEqual("five", self.redis.cli("GET", key, db=5))
        self.assertEqual("", self.redis.cli("GET", key, db=0))
        self.redis.cli("SET", key, "from-cli", db=5)
        self.assertOk(self.server.execute("call", {"args": ["GET", key]}), {"type": "string", "value": "from-cli"})


class PasswordRedis(Redis):
    """A redis-server that requires a password for the default user, and has an ACL user too."""

    PASSWORD = "s3cret-Pa55word!"
    USER, USER_PASSWORD = "agentuser", "an0ther-s3cret"

    def start(self):
        logf = open(self.root / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "-::1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--requirepass", self.PASSWORD,
             "--user", self.USER, "on", f">{self.USER_PASSWORD}", "~*", "&*", "+@all"],
            stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        from .services import _wait_port
        _wait_port(self.port, 10, self.proc, "redis-server", self.log)

    def cli(self, *args, db=0):
        out = subprocess.run(["redis-cli", "-p", str(self.port), "-n", str(db), "--raw", "--no-auth-warning",
                              "-a", self.PASSWORD, *map(str, args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10 * SLOW)
        if out.returncode != 0:
            raise AssertionError(f"redis-cli {args} failed: {out.stderr}")
        return out.stdout.rstrip("\n")


_password_redis = []


def password_redis():
    if not _password_redis:
        _password_redis.append(PasswordRedis())
    return _password_redis[0]


class RedisPasswordTests(ServerTestCase):
    WORKERS = 2
    AGENTS = {"call": CALL}

    @classmethod
    def setUpClass(cls):
        cls.redis = password_redis()
        # %-encoding in the URL: the '!' is sent as %21
        cls.ENV = {"REDIS_URL": f"redis://:{cls.redis.PASSWORD.replace('!', '%21')}@127.0.0.1:{cls.redis.port}/2"}
        super().setUpClass()

    def test_password_from_url(self):
        key = f"pw:{uuid.uuid4()}"
        self.assertOk(self.server.execute("call", {"args": ["SET", key, "authed"]}))
        self.assertEqual("authed", self.redis.cli("GET", key, db=2))

    def test_log_never_contains_password(self):
        self.assertOk(self.server.execute("call", {"args": ["PING"]}))
        self.server.wait_log(lambda l: l.get("msg") == "redis connection up", timeout=3 * SLOW)
        text = self.server.log_text()
        self.assertNotIn(self.redis.PASSWORD, text)
        self.assertNotIn(self.redis.PASSWORD.replace("!", "%21"), text)


class RedisAclUserTests(ServerTestCase):
    WORKERS = 1
    AGENTS = {"call": CALL}

    @classmethod
    def setUpClass(cls):
        cls.redis = password_redis()
        cls.ENV = {"REDIS_URL": f"redis://{cls.redis.USER}:{cls.redis.USER_PASSWORD}@127.0.0.1:{cls.redis.port}"}
        super().setUpClass()

    def test_user_and_password_from_url(self):
        self.assertOk(self.server.execute("call", {"args": ["ACL", "WHOAMI"]}),
                      {"type": "string", "value": self.redis.USER})
        self.assertNotIn(self.redis.USER_PASSWORD, self.server.log_text())


class RedisWrongPasswordTests(ServerTestCase):
    WORKERS = 1
    AGENTS = {"call": CALL}
    WRONG = "not-the-Password-123"

    @classmethod
    def setUpClass(cls):
        cls.redis = password_redis()
        cls.ENV = {"REDIS_URL": f"redis://:{cls.WRONG}@127.0.0.1:{cls.redis.port}"}
        super().setUpClass()

    def test_wrong_password_is_unavailable_and_logged_without_secret(self):
        reply = self.server.execute("call", {"args": ["PING"]})
        self.assertError(reply, 503, "unavailable")
        line = self.server.wait_log(lambda l: l.get("msg") == "redis connection down", timeout=3 * SLOW)
        self.assertIn("AUTH refused", line.get("reason", ""), line)
        reply = self.server.execute("call", {"args": ["PING"]})
        self.assertError(reply, 503, "unavailable")
        text = self.server.log_text()
        self.assertNotIn(self.WRONG, text)
        self.assertNotIn(self.redis.PASSWORD, text)
        downs = [l for l in self.server.logs() if l.get("msg") == "redis connection down" and l.get("redis") == "redis"]
        self.assertEqual(1, len(downs), "the down transition of the command connection is logged once")


class RedisOutageTests(ServerTestCase):
    WORKERS = 2
    AGENTS = {"call": CALL}

    @classmethod
    def setUpClass(cls):
        cls.redis = Redis()
        cls.ENV = {"REDIS_URL": cls.redis.url(0)}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.redis.destroy()

    def call(self, *args):
        return self.server.execute("call", {"args": list(args)})

    def test_down_fails_fast_then_reconnects(self):
        for _ in range(4):
            self.assertOk(self.call("SET", "k", "before"))
        self.redis.stop()
        worst = 0.0
        for _ in range(10):
            t0 = time.monotonic()
            reply = self.call("GET", "k")
            worst = max(worst, time.monotonic() - t0)
            err = self.assertError(reply, 503, "unavailable")
            self.assertEqual("redis unavailable", err["message"])
        self.assertLess(worst, 0.5 * SLOW)
        measure("worst call latency while redis is down", f"{worst * 1000:.1f} ms")
        time.sleep(0.5)  # a few reconnect attempts fail meanwhile
        self.redis.start()
        t0 = time.monotonic()

        def both_ok():  # both workers must be back: several calls in a row succeed
            return all(self.call("SET", "k", "after").status == 200 for _ in range(6))

        _, secs, ok = self.poll(both_ok, lambda v: v, timeout=8.0, interval=0.05)
        self.assertTrue(ok, self.ctx_msg(extra="redis did not come back"))
        measure("reconnect after redis restart", f"{(time.monotonic() - t0) * 1000:.0f} ms")
        self.assertEqual("after", self.redis.cli("GET", "k"))
        logs = self.server.logs()
        downs = [l for l in logs if l.get("msg") == "redis connection down" and l.get("redis") == "redis"]
        ups = [l for l in logs if l.get("msg") == "redis connection up" and l.get("redis") == "redis"]
        self.assertLessEqual(len(downs), self.WORKERS, downs)  # once per worker, not per attempt
        self.assertGreaterEqual(len(ups), 2)


class RedisUnsetTests(ServerTestCase):
    WORKERS = 1
    AGENTS = {"pc": PCALL, "call": CALL}

    def test_unset_url_is_a_clear_error(self):
        r = self.assertOk(self.server.execute("pc", {"args": ["PING"]}))["result"]
        self.assertEqual("string", r["kind"])
        self.assertIn("luagent.redis: REDIS_URL is not set", r["message"])
        err = self.assertError(self.server.execute("call", {"args": ["PING"]}), 500, "agent_error")
        self.assertIn("REDIS_URL is not set", err["message"])


class RedisHostnameTests(ServerTestCase):
    """A host name is resolved off the loop (h2o's resolver threads), then connected by address."""
    WORKERS = 2
    AGENTS = {"call": CALL}

    @classmethod
    def setUpClass(cls):
        cls.redis = shared_redis()
        cls.ENV = {"REDIS_URL": f"redis://localhost:{cls.redis.port}/1"}
        super().setUpClass()

    def test_hostname_url(self):
        key = f"host:{uuid.uuid4()}"
        for _ in range(4):
            self.assertOk(self.server.execute("call", {"args": ["SET", key, "named"]}))
        self.assertEqual("named", self.redis.cli("GET", key, db=1))


class RedisNeverUpTests(ServerTestCase):
    """Nothing listens at REDIS_URL from the start: the first attempt fails at once, and so do calls."""
    WORKERS = 1
    AGENTS = {"call": CALL}

    @classmethod
    def setUpClass(cls):
        from .harness import free_port
        cls.ENV = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
        super().setUpClass()

    def test_calls_fail_fast(self):
        for _ in range(3):
            t0 = time.monotonic()
            self.assertError(self.server.execute("call", {"args": ["PING"]}), 503, "unavailable")
            self.assertLess(time.monotonic() - t0, 0.5 * SLOW)
        line = self.server.wait_log(lambda l: l.get("msg") == "redis connection down", timeout=2 * SLOW)
        self.assertIsNotNone(line)


class RedisTlsUrlTests(ServerTestCase):
    """rediss:// passes configuration but hiredis 0.14 has no TLS: calls are unavailable, the log says why."""
    WORKERS = 1
    AGENTS = {"call": CALL}
    ENV = {"REDIS_URL": "rediss://:hunter2-secret@127.0.0.1:6380/0"}

    def test_rediss_refused_clearly(self):
        self.assertError(self.server.execute("call", {"args": ["PING"]}), 503, "unavailable")
        line = self.server.wait_log(lambda l: "rediss://" in l.get("msg", ""), timeout=2 * SLOW)
        self.assertIsNotNone(line, self.ctx_msg())
        self.assertNotIn("hunter2-secret", self.server.log_text())

"""luagent.db: parameterized queries and transactions against a real PostgreSQL (services.py)."""

import threading
import time

from .harness import SLOW, ServerTestCase, measure
from .services import shared_postgres

PASSWORD = "s3cr3t-pw-do-not-leak"

QUERY_AGENT = '''
return {
  timeout_ms = 10000,
  execute = function(task, ctx)
    local args = task.args or {}
    for i = 1, (task.nargs or 0) do
      if args[i] == nil then args[i] = luagent.json.null end
    end
    local rows, info = luagent.db.query(task.sql, unpack(args, 1, task.nargs or #args))
    return {rows = rows, info = info}
  end,
}
'''

TYPES_AGENT = '''
return {
  execute = function(task, ctx)
    local rows = luagent.db.query([[
      select 42::int4 as i4, 7::int2 as i2, 9007199254740993::int8 as big, 9007199254740992::int8 as edge,
             -12345678901::int8 as neg, 1.5::float8 as f8, 0.25::float4 as f4, 'NaN'::float8 as nan,
             123.450::numeric as num, 0.1::numeric as tenth,
             12345678901234567890.5::numeric as hugenum, true as t, false as f, 'héllo'::text as txt,
             '{"a":[1,2,{"b":null}],"e":[]}'::json as j, '{"k":"v","n":[]}'::jsonb as jb,
             '\\x00ff41'::bytea as raw, null::text as nothing, 26::oid as o, 'x'::varchar as vc,
             '2024-01-02'::date as d]])
    local r = rows[1]
    return {
      row = r,
      raw_len = #r.raw, raw_bytes = {r.raw:byte(1, -1)},
      nothing_is_null = r.nothing == luagent.json.null,
      types = {i4 = type(r.i4), big = type(r.big), edge = type(r.edge), num = type(r.num),
               hugenum = type(r.hugenum), t = type(r.t), j = type(r.j), nan = type(r.nan)},
      empty = luagent.db.query("select 1 as x where false"),
    }
  end,
}
'''

PARAMS_AGENT = '''
return {
  execute = function(task, ctx)
    local rows = luagent.db.query(
      "select $1::text as s, $2::int8 as i, $3::float8 as f, $4::boolean as b, $5::jsonb as j, $6::text as n," ..
      " $7::text as jn, $8::numeric as big, $9::bytea as bin, $10::text as inj",
      "it's", 9007199254740992, 0.1, true, {list = {1, 2}, obj = {x = "y"}}, nil, luagent.json.null, 1e20,
      "a\\0b", "$1")
    return rows[1]
  end,
}
'''

ERRORS_AGENT = '''
return {
  execute = function(task, ctx)
    if task.mode == "caught" then
      local ok, err = pcall(luagent.db.query, "select * from no_such_table")
      return {ok = ok, err = err}
    elseif task.mode == "uncaught" then
      luagent.db.query("selec 1")
    elseif task.mode == "param" then
      local ok, err = pcall(luagent.db.query, "select $1::int", "not a number")
      return {ok = ok, err = err}
    elseif task.mode == "badparam" then
      local ok, err = pcall(luagent.db.query, "select $1::text", function() end)
      return {ok = ok, err = tostring(err)}
    elseif task.mode == "multi" then
      local ok, err = pcall(luagent.db.query, "select 1; select 2")
      return {ok = ok, err = err}
    elseif task.mode == "after" then
      return (luagent.db.query("select 5 as five"))[1]
    end
  end,
}
'''

TX_AGENT = '''
return {
  timeout_ms = 10000,
  execute = function(task, ctx)
    local db = luagent.db
    if task.mode == "commit" then
      local a, b = db.tx(function()
        db.query("insert into items(name) values ($1)", task.name)
        db.query("insert into items(name) values ($1)", task.name .. "-2")
        local rows = db.query("select count(*)::int as n from items where name like $1", task.name .. "%")
        return rows[1].n, "second"
      end)
      return {a = a, b = b}
    elseif task.mode == "rollback" then
      local ok, err = pcall(db.tx, function()
        db.query("insert into items(name) values ($1)", task.name)
        error({status = 409, code = "conflict", message = "changed my mind"})
      end)
      return {ok = ok, err = err}
    elseif task.mode == "rollback_uncaught" then
      db.tx(function()
        db.query("insert into items(name) values ($1)", task.name)
        error("boom inside tx")
      end)
    elseif task.mode == "sqlerror" then
      local ok, err = pcall(db.tx, function()
        db.query("insert into items(name) values ($1)", task.name)
        db.query("insert into items(id, name) values (1, 'dup'), (1, 'dup')")
      end)
      return {ok = ok, err = err}
    elseif task.mode == "swallowed" then
      -- a failed statement caught inside the tx: COMMIT turns into ROLLBACK, reported as an error
      local ok, err = pcall(db.tx, function()
        db.query("insert into items(name) values ($1)", task.name)
        pcall(db.query, "select * from nope")
      end)
      return {ok = ok, err = err}
    elseif task.mode == "nested" then
      local ok, err = pcall(db.tx, function() return db.tx(function() end) end)
      return {ok = ok, err = tostring(err)}
    end
  end,
}
'''

TXHANG_AGENT = '''
return {
  timeout_ms = 300,
  execute = function(task, ctx)
    -- the deadline passes inside the transaction: its connection is rolled back before reuse
    luagent.db.tx(function()
      luagent.db.query("insert into items(name) values ($1)", task.name)
      luagent.db.query("select pg_sleep(1.5)")
    end)
  end,
}
'''

SLEEP_AGENT = '''
return {
  timeout_ms = 30000,
  execute = function(task, ctx)
    local rows = luagent.db.query("select pg_sleep($1::float8) as s, $2::int as n", task.s, task.n)
    return rows[1].n
  end,
}
'''

DEADLINE_AGENT = '''
return {
  timeout_ms = 300,
  execute = function(task, ctx)
    luagent.db.query("select pg_sleep(3)")
    return "not reached"
  end,
}
'''

TOPLEVEL_AGENT = '''
local ok, err = pcall(luagent.db.query, "select 1")
local msg = tostring(err)
return {
  execute = function(task, ctx) return {ok = ok, err = msg} end,
}
'''


def _errmsg(reply):
    return reply.body["error"]["message"] if isinstance(reply.body, dict) and "error" in reply.body else None


class DbTests(ServerTestCase):
    WORKERS = 2
    AGENTS = {"q": QUERY_AGENT, "types": TYPES_AGENT, "params": PARAMS_AGENT, "errs": ERRORS_AGENT,
              "tx": TX_AGENT, "txhang": TXHANG_AGENT, "sleep": SLEEP_AGENT, "deadline": DEADLINE_AGENT, "toplevel": TOPLEVEL_AGENT}

    @classmethod
    def setUpClass(cls):
        cls.pg = shared_postgres()
        cls.db = cls.pg.new_database("db")
        cls.pg.psql("create table items (id serial primary key, name text not null)", db=cls.db)
        # trust auth accepts any password: it must never show up in a reply or the log
        url = f"postgresql://{cls.pg.USER}:{PASSWORD}@127.0.0.1:{cls.pg.port}/{cls.db}"
        cls.ENV = {"DATABASE_URL": url, "LUAGENT_DB_POOL_SIZE": "8"}
        super().setUpClass()

    def ok(self, agent, task, timeout=None):
        r = self.server.execute(agent, task, timeout=timeout)
        self.assertEqual(r.status, 200, r.describe())
        self.assertNotIn(PASSWORD, r.raw.decode("utf-8", "replace"))
        return r.body["result"]

    def test_type_mapping(self):
        res = self.ok("types", {})
        row = res["row"]
        self.assertEqual(row["i4"], 42)
        self.assertEqual(row["i2"], 7)
        self.assertEqual(row["big"], "9007199254740993")  # past 2^53: a string, every digit kept
        self.assertEqual(row["edge"], 9007199254740992)
        self.assertEqual(row["neg"], -12345678901)
        self.assertEqual(row["f8"], 1.5)
        self.assertEqual(row["f4"], 0.25)
        self.assertEqual(row["nan"], "NaN")
        self.assertEqual(row["num"], 123.45)
        self.assertEqual(row["tenth"], 0.1)
        self.assertEqual(row["hugenum"], "12345678901234567890.5")
        self.assertIs(row["t"], True)
        self.assertIs(row["f"], False)
        self.assertEqual(row["txt"], "héllo")
        self.assertEqual(row["j"], {"a": [1, 2, {"b": None}], "e": []})
        self.assertEqual(row["jb"], {"k": "v", "n": []})
        self.assertEqual(res["raw_len"], 3)
        self.assertEqual(res["raw_bytes"], [0, 255, 65])
        self.assertIn("nothing", row)
        self.assertIsNone(row["nothing"])
        self.assertTrue(res["nothing_is_null"])
        self.assertEqual(row["o"], 26)
        self.assertEqual(row["vc"], "x")
        self.assertEqual(row["d"], "2024-01-02")
        self.assertEqual(res["types"], {"i4": "number", "big": "string", "edge": "number", "num": "number",
                                        "hugenum": "string", "t": "boolean", "j": "table", "nan": "string"})
        self.assertEqual(res["empty"], [])  # an empty result is still an array
        self.assertIn('"empty":[]', self.server.execute("types", {}).raw.decode())

    def test_parameters(self):
        row = self.ok("params", {})
        self.assertEqual(row["s"], "it's")
        self.assertEqual(row["i"], 9007199254740992)
        self.assertEqual(row["f"], 0.1)
        self.assertIs(row["b"], True)
        self.assertEqual(row["j"], {"list": [1, 2], "obj": {"x": "y"}})
        self.assertIsNone(row["n"])
        self.assertIsNone(row["jn"])
        self.assertEqual(row["big"], 100000000000000000000)
        self.assertEqual(row["bin"], "a\u0000b")  # a string with a NUL goes as raw bytes
        self.assertEqual(row["inj"], "$1")

    def test_insert_update_rows_affected(self):
        name = f"ins-{time.monotonic_ns()}"
        res = self.ok("q", {"sql": "insert into items(name) values ($1), ($2) returning id, name",
                            "args": [name, name]})
        self.assertEqual(res["info"]["command"], "INSERT 0 2")
        self.assertEqual(res["info"]["rows_affected"], 2)
        self.assertEqual([r["name"] for r in res["rows"]], [name, name])
        self.assertTrue(all(isinstance(r["id"], int) for r in res["rows"]))
        res = self.ok("q", {"sql": "update items set name = $1 where name = $2", "args": [name + "-u", name]})
        self.assertEqual(res["info"], {"command": "UPDATE 2", "rows_affected": 2})
        self.assertEqual(res["rows"], [])
        res = self.ok("q", {"sql": "delete from items where name = $1", "args": [name + "-u"]})
        self.assertEqual(res["info"]["rows_affected"], 2)
        res = self.ok("q", {"sql": "select $1::int as a, $2::text as b", "args": [None, "x"], "nargs": 2})
        self.assertEqual(res["rows"], [{"a": None, "b": "x"}])
        self.assertEqual(res["info"], {"command": "SELECT 1", "rows_affected": 1})

    def test_injection_is_stored_literally(self):
        evil = ["'; drop table items; --", "$1", "Robert'); DROP TABLE items;--", "\\x00 \\' \"q\""]
        for s in evil:
            self.ok("q", {"sql": "insert into items(name) values ($1)", "args": [s]})
        for s in evil:
            got = self.ok("q", {"sql": "select name from items where name = $1", "args": [s]})
            self.assertEqual(got["rows"], [{"name": s}])
        self.assertEqual(self.pg.query("select count(*) from pg_tables where tablename = 'items'", db=self.db),
                         [["1"]])

    def test_sql_errors(self):
        res = self.ok("errs", {"mode": "caught"})
        self.assertFalse(res["ok"])
        err = res["err"]
        self.assertEqual(err["status"], 500)
        self.assertEqual(err["code"], "db_error")
        self.assertEqual(err["sqlstate"], "42P01")
        self.assertEqual(err["message"], 'relation "no_such_table" does not exist (SQLSTATE 42P01)')
        res = self.ok("errs", {"mode": "param"})
        self.assertEqual(res["err"]["sqlstate"], "22P02")
        res = self.ok("errs", {"mode": "multi"})  # the extended protocol refuses stacked statements
        self.assertFalse(res["ok"])
        self.assertEqual(res["err"]["sqlstate"], "42601")
        res = self.ok("errs", {"mode": "badparam"})
        self.assertIn("parameter $1: cannot send a function", res["err"])

        r = self.server.execute("errs", {"mode": "uncaught"})
        self.assertEqual(r.status, 500, r.describe())
        self.assertEqual(r.body["error"]["code"], "db_error")
        self.assertIn("syntax error", r.body["error"]["message"])
        self.assertIn("(SQLSTATE 42601)", r.body["error"]["message"])
        # the connection that carried the error is fine for the next query
        self.assertEqual(self.ok("errs", {"mode": "after"}), {"five": 5})

    def test_tx_commit(self):
        name = f"txc-{time.monotonic_ns()}"
        res = self.ok("tx", {"mode": "commit", "name": name})
        self.assertEqual(res, {"a": 2, "b": "second"})
        self.assertEqual(self.pg.query(f"select count(*) from items where name like '{name}%'", db=self.db), [["2"]])

    def test_tx_rollback(self):
        name = f"txr-{time.monotonic_ns()}"
        res = self.ok("tx", {"mode": "rollback", "name": name})
        self.assertFalse(res["ok"])
        self.assertEqual(res["err"], {"status": 409, "code": "conflict", "message": "changed my mind"})
        r = self.server.execute("tx", {"mode": "rollback_uncaught", "name": name})
        self.assertEqual(r.status, 500)
        self.assertEqual(r.body["error"]["code"], "agent_error")
        self.assertEqual(r.body["error"]["message"], "boom inside tx")
        res = self.ok("tx", {"mode": "sqlerror", "name": name})
        self.assertFalse(res["ok"])
        self.assertEqual(res["err"]["sqlstate"], "23505")
        res = self.ok("tx", {"mode": "swallowed", "name": name})
        self.assertFalse(res["ok"])
        self.assertEqual(res["err"]["sqlstate"], "25P02")
        self.assertEqual(self.pg.query(f"select count(*) from items where name = '{name}'", db=self.db), [["0"]])
        res = self.ok("tx", {"mode": "nested"})
        self.assertFalse(res["ok"])
        self.assertIn("nested transactions are not supported", res["err"])

    def test_tx_deadline_rolls_back(self):
        name = f"txd-{time.monotonic_ns()}"
        r = self.server.execute("txhang", {"name": name})
        self.assertEqual(r.status, 504, r.describe())
        self.assertEqual(self.pg.query(f"select count(*) from items where name = '{name}'", db=self.db), [["0"]])
        time.sleep(1.6)  # the abandoned pg_sleep ends; the pool's ROLLBACK follows it on that connection
        for _ in range(20):
            self.assertEqual(self.ok("errs", {"mode": "after"}), {"five": 5})
        self.assertEqual(self.pg.query(f"select count(*) from items where name = '{name}'", db=self.db), [["0"]])
        # no session is left idle in a transaction
        rows = self.pg.query("select count(*) from pg_stat_activity where datname = current_database() "
                             "and state like 'idle in transaction%'", db=self.db)
        self.assertEqual(rows, [["0"]])

    def test_concurrent_queries_overlap(self):
        n, delay = 50, 0.2
        results, errors = [None] * n, []

        def one(i):
            try:
                r = self.server.execute("sleep", {"s": delay, "n": i}, timeout=60 * SLOW)
                results[i] = r.body["result"] if r.status == 200 else r.describe()
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        t0 = time.monotonic()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        measure(f"{n} requests each running pg_sleep({delay}) (2 workers x 8 connections)", f"{elapsed:.2f} s")
        self.assertEqual(errors, [])
        self.assertEqual(results, list(range(n)))
        self.assertLess(elapsed, n * delay / 2.5)  # serial would be 10 s

    def test_deadline_during_query(self):
        t0 = time.monotonic()
        r = self.server.execute("deadline", {})
        self.assertEqual(r.status, 504, r.describe())
        self.assertEqual(r.body["error"]["code"], "timeout")
        self.assertLess(time.monotonic() - t0, 2 * SLOW)
        # the pool serves at once (other connections), and again after the abandoned query ended
        for _ in range(10):
            self.assertEqual(self.ok("errs", {"mode": "after"}), {"five": 5})
        self.assertEqual(self.server.request("GET", "/health").status, 200)

    def test_toplevel_call_raises(self):
        res = self.ok("toplevel", {})
        self.assertFalse(res["ok"])
        self.assertIn("luagent.db.query can only be called inside execute()", res["err"])

    def test_zz_no_secret_in_log(self):
        self.ok("errs", {"mode": "after"})
        self.assertNotIn(PASSWORD, self.server.log_text())


OUTAGE_AGENT = '''
return {
  timeout_ms = 20000,
  execute = function(task, ctx)
    local ok, rows = pcall(luagent.db.query, "select 1 as one")
    if ok then return {ok = true, one = rows[1].one} end
    return {ok = false, err = rows}
  end,
}
'''


class DbOutageTests(ServerTestCase):
    """Postgres restarted and stopped under a running server (its own database; runs last in this file)."""
    WORKERS = 1
    AGENTS = {"one": OUTAGE_AGENT}

    @classmethod
    def setUpClass(cls):
        cls.pg = shared_postgres()
        cls.db = cls.pg.new_database("outage")
        cls.ENV = {"DATABASE_URL": f"postgresql://{cls.pg.USER}:{PASSWORD}@127.0.0.1:{cls.pg.port}/{cls.db}"}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.pg.proc is None or cls.pg.proc.poll() is not None:
                cls.pg.start()
        finally:
            super().tearDownClass()

    def one(self):
        r = self.server.execute("one", {}, timeout=30 * SLOW)
        self.assertEqual(r.status, 200, r.describe())
        self.assertNotIn(PASSWORD, r.raw.decode("utf-8", "replace"))
        return r.body["result"]

    def wait_ok(self, within):
        deadline = time.monotonic() + within * SLOW
        last = None
        while time.monotonic() < deadline:
            last = self.one()
            if last["ok"]:
                return time.monotonic()
            time.sleep(0.05)
        self.fail(f"no successful query within {within * SLOW:.0f}s; last: {last}")

    def test_restart_and_stop(self):
        self.assertEqual(self.one(), {"ok": True, "one": 1})
        self.pg.restart()
        t0 = time.monotonic()
        t_ok = self.wait_ok(10)
        measure("first successful query after a Postgres restart", f"{t_ok - t0:.2f} s")

        self.pg.stop()
        t0 = time.monotonic()
        res = self.one()
        elapsed = time.monotonic() - t0
        measure("a query with Postgres stopped fails in", f"{elapsed * 1000:.0f} ms")
        self.assertFalse(res["ok"])
        self.assertLess(elapsed, 2 * SLOW)
        err = res["err"]
        self.assertEqual(err["status"], 503)
        self.assertEqual(err["code"], "db_unavailable")
        self.assertTrue(err["message"].startswith("database "), err)
        self.assertNotIn("sqlstate", err)
        for _ in range(5):  # DOWN: fails at once, no hang
            t1 = time.monotonic()
            self.assertFalse(self.one()["ok"])
            self.assertLess(time.monotonic() - t1, 1 * SLOW)
        self.pg.start()
        self.wait_ok(10)
        self.assertEqual(self.server.request("GET", "/health").status, 200)
        self.assertNotIn(PASSWORD, self.server.log_text())


class DbUnsetTests(ServerTestCase):
    WORKERS = 1
    AGENTS = {
        "nodb": '''
return {
  execute = function(task, ctx)
    if task.uncaught then luagent.db.query("select 1") end
    local ok, err = pcall(luagent.db.query, "select 1")
    local ok2, err2 = pcall(luagent.db.tx, function() end)
    return {ok = ok, err = err, ok2 = ok2, err2 = err2}
  end,
}
''',
    }

    def test_no_database_url(self):
        r = self.server.execute("nodb", {})
        self.assertEqual(r.status, 200, r.describe())
        res = r.body["result"]
        self.assertFalse(res["ok"])
        self.assertEqual(res["err"]["message"], "luagent.db: DATABASE_URL is not set")
        self.assertEqual(res["err"]["code"], "db_error")
        self.assertFalse(res["ok2"])
        self.assertEqual(res["err2"]["message"], "luagent.db: DATABASE_URL is not set")
        r = self.server.execute("nodb", {"uncaught": True})
        self.assertEqual(r.status, 500)
        self.assertEqual(r.body["error"]["code"], "db_error")
        self.assertEqual(r.body["error"]["message"], "luagent.db: DATABASE_URL is not set")

"""Spec 6: runaway CPU, runaway memory and sandbox escapes fail their own execution only."""

import threading
import time

from .harness import SLOW, ServerTestCase, measure


class RunawayTests(ServerTestCase):
    WORKERS = 1
    FIXTURES = ("echo",)
    AGENTS = {
        "spin": '''
return {
  timeout_ms = 300,
  execute = function(task, ctx)
    while true do end
  end,
}
''',
        "spin_math": '''
return {
  timeout_ms = 300,
  execute = function(task, ctx)
    local x = 0
    while true do x = (x + 1) % 7 end
  end,
}
''',
    }

    def test_infinite_loop_times_out_and_worker_keeps_serving(self):
        box = {}

        def runaway():
            t0 = time.monotonic()
            box["spin"] = self.server.execute("spin", {}, timeout=30 * SLOW)
            box["spin_s"] = time.monotonic() - t0

        th = threading.Thread(target=runaway)
        th.start()
        time.sleep(0.05)
        echo = self.server.execute("echo", "still here", timeout=30 * SLOW)
        th.join(60 * SLOW)
        self.assertIn("spin", box, "runaway request got no reply")
        measure("runaway stopped after", f"{box['spin_s'] * 1000:.0f} ms (timeout_ms=300)")
        self.assertError(box["spin"], 504, "timeout")
        self.assertLess(box["spin_s"], 3.0 * SLOW)
        self.assertOk(echo, "still here")
        self.assertEqual(200, self.server.request("GET", "/health").status)
        self.assertOk(self.server.execute("echo", "after"), "after")

    def test_runaway_twice_in_a_row(self):
        for name in ("spin_math", "spin"):
            with self.subTest(agent=name):
                t0 = time.monotonic()
                r = self.server.execute(name, {}, timeout=30 * SLOW)
                took = time.monotonic() - t0
                self.assertError(r, 504, "timeout")
                self.assertLess(took, 3.0 * SLOW)
                self.assertOk(self.server.execute("echo", name), name)


class MemoryLimitTests(ServerTestCase):
    WORKERS = 1
    ENV = {"LUAGENT_MEMORY_LIMIT_MB": "32"}
    FIXTURES = ("echo",)
    AGENTS = {
        "hog": '''
return {
  timeout_ms = 60000,
  execute = function(task, ctx)
    local t = {}
    local i = 0
    while true do
      i = i + 1
      t[#t + 1] = string.rep("x", 1e6) .. i
    end
  end,
}
''',
        "modest": '''
return {
  execute = function(task, ctx)
    local t = {}
    for i = 1, 10 do t[i] = string.rep("y", 1e6) .. i end   -- ~10 MB: under the 32 MB cap
    return #t
  end,
}
''',
    }

    def test_memory_limit(self):
        t0 = time.monotonic()
        r = self.server.execute("hog", {}, timeout=60 * SLOW)
        measure("memory hog stopped after", f"{(time.monotonic() - t0) * 1000:.0f} ms")
        self.assertError(r, 500, "memory_limit")
        self.assertOk(self.server.execute("echo", "ok after hog"), "ok after hog")
        # the cap is per execution, not cumulative
        self.assertError(self.server.execute("hog", {}, timeout=60 * SLOW), 500, "memory_limit")
        self.assertOk(self.server.execute("modest", {}), 10)
        self.assertEqual(200, self.server.request("GET", "/health").status)


# A real LuaJIT 2.1 (GC64/FR2, stripped) bytecode chunk for `return 7`, made with the same LuaJIT:
# luajit -e 'io.write(string.dump(loadstring("return 7"), true))'. Unsandboxed, load(BC)() == 7.
BYTECODE = r"\27LJ\2\10\15\2\0\1\0\0\0\2\41\0\7\0\76\0\2\0\0"

PROBE = r'''
local BC = "%BC%"
return {
  execute = function(task, ctx)
    -- true when `fn(src, ...)` compiles `src` into a function that runs
    local function runs(fn, ...)
      if type(fn) ~= "function" then return false end
      local ok, f = pcall(fn, ...)
      if not ok or type(f) ~= "function" then return false end
      return (pcall(f))
    end
    local r = {}
    r.ffi = type(ffi)
    r.require_ffi = type(require) == "function" and (pcall(require, "ffi")) or false
    r.io = type(io)
    r.os = type(os)
    r.os_execute = type(os and os.execute)
    r.os_time = type(os and os.time)
    r.os_clock = type(os and os.clock)
    r.os_date = type(os and os.date)
    r.debug = type(debug)
    r.package_loadlib = type(package) == "table" and type(package.loadlib) or "nil"
    r.getfenv = type(getfenv)
    r.setfenv = type(setfenv)
    r.dofile = type(dofile)
    r.loadfile = type(loadfile)
    -- bytecode: string.dump absent, or load refuses what it makes
    local dump_loads = false
    if type(string.dump) == "function" then
      local ok, bc = pcall(string.dump, function() return 1 end)
      if ok and type(bc) == "string" then
        dump_loads = runs(load, bc) or runs(load, bc, "d", "b") or runs(load, bc, "d", "bt")
      end
    end
    r.dump_loads = dump_loads
    r.bytecode_loads = runs(load, BC) or runs(load, BC, "bc", "b") or runs(load, BC, "bc", "bt")
    r.loadstring_bytecode = runs(loadstring, BC)
    local ok, f = pcall(load, "return 1+1")
    r.load_text = ok and type(f) == "function" and f() or "load failed"
    return r
  end,
}
'''.replace("%BC%", BYTECODE)

DIRECT = r'''
local T = {}
local cases = {
  require_ffi = function() return type(require("ffi")) end,
  ffi_cdef = function() ffi.cdef("int getpid(void);") return "cdef" end,
  io_open = function() local f = io.open(T.marker, "w") f:write("x") f:close() return "opened" end,
  os_execute = function() return tostring(os.execute("touch " .. T.marker)) end,
  debug_getinfo = function() return debug.getinfo(1).currentline end,
  package_loadlib = function() return type(package.loadlib("libc.so.6", "*")) end,
  dofile = function() return dofile(T.marker) end,
  loadfile = function() return assert(loadfile(T.marker))() end,
  setfenv = function() setfenv(1, {}) return "set" end,
  getfenv = function() return type(getfenv(0)) end,
  bytecode = function() return assert(load("%BC%"))() end,
  global_write = function() newglobal_x = 1 return "wrote" end,
}
return {
  execute = function(task, ctx)
    T.marker = task.marker or "/nonexistent/marker"
    return cases[task.case]()
  end,
}
'''.replace("%BC%", BYTECODE)


class SandboxTests(ServerTestCase):
    WORKERS = 1  # vandal and victim share one VM: isolation must hold inside it
    AGENTS = {
        "probe": PROBE,
        "direct": DIRECT,
        "globwrite": '''
return {
  execute = function(task, ctx)
    x = 1
    return "wrote a global"
  end,
}
''',
        "toplevel": '''
local function helper(a) return a * 2 end
function shout(s) return string.upper(s) .. "!" end
local counter = 0
return {
  execute = function(task, ctx)
    counter = counter + 1
    return {h = helper(21), s = shout("hi"), counted = counter > 0}
  end,
}
''',
        "vandal": '''
return {
  execute = function(task, ctx)
    pcall(function() string.upper = nil end)
    pcall(function() luagent.sleep = nil end)
    pcall(function() table.insert = nil end)
    pcall(function() rawset(string, "lower", nil) end)
    return {upper = type(string.upper)}
  end,
}
''',
        "vandal_top": '''
string.upper = nil
luagent.sleep = nil
return {
  execute = function(task, ctx) return "vandal_top" end,
}
''',
        "victim": '''
return {
  execute = function(task, ctx)
    luagent.sleep(1)
    local mt = getmetatable("")
    local evil_mt = type(mt) == "table" and type(rawget(mt, "__evil")) or "nil"
    local t = {}
    table.insert(t, "ok")
    return {
      upper = string.upper("abc"),
      method = ("def"):upper(),
      lower = string.lower("GHI"),
      t = t[1],
      evil = type(("x").evil_fn),
      evil_mt = evil_mt,
    }
  end,
}
''',
        "string_mt": '''
return {
  execute = function(task, ctx)
    local mt = getmetatable("")
    if type(mt) ~= "table" then return {reachable = false} end
    local set_mt = pcall(function() mt.__evil = true end) and rawget(mt, "__evil") == true
    local set_index = false
    local idx = rawget(mt, "__index")
    if type(idx) == "table" then
      set_index = pcall(function() idx.evil_fn = function() return "pwned" end end)
                  and type(("x").evil_fn) == "function"
    end
    local replace_index = pcall(function() mt.__index = {} end) and rawget(mt, "__index") ~= idx
    return {reachable = true, set_mt = set_mt, set_index = set_index, replace_index = replace_index}
  end,
}
''',
    }

    def probe(self):
        r = self.server.execute("probe", {})
        return self.assertOk(r)["result"]

    def test_ffi_unavailable(self):
        p = self.probe()
        self.assertEqual("nil", p["ffi"])
        self.assertIs(False, p["require_ffi"], "require('ffi') succeeded")
        self.assertError(self.server.execute("direct", {"case": "require_ffi"}), 500, "agent_error")
        self.assertError(self.server.execute("direct", {"case": "ffi_cdef"}), 500, "agent_error")

    def test_io_unavailable(self):
        self.assertEqual("nil", self.probe()["io"])
        marker = self.server.root / "io_marker"
        self.assertError(self.server.execute("direct", {"case": "io_open", "marker": str(marker)}), 500,
                         "agent_error")
        self.assertFalse(marker.exists(), "io.open created a file")

    def test_os_execute_unavailable_but_time_works(self):
        p = self.probe()
        self.assertEqual("table", p["os"])
        self.assertEqual("nil", p["os_execute"])
        self.assertEqual(("function",) * 3, (p["os_time"], p["os_clock"], p["os_date"]))
        marker = self.server.root / "exec_marker"
        self.assertError(self.server.execute("direct", {"case": "os_execute", "marker": str(marker)}), 500,
                         "agent_error")
        self.assertFalse(marker.exists(), "os.execute ran a command")

    def test_debug_unavailable(self):
        self.assertEqual("nil", self.probe()["debug"])
        self.assertError(self.server.execute("direct", {"case": "debug_getinfo"}), 500, "agent_error")

    def test_package_loadlib_unavailable(self):
        self.assertEqual("nil", self.probe()["package_loadlib"])
        self.assertError(self.server.execute("direct", {"case": "package_loadlib"}), 500, "agent_error")

    def test_bytecode_refused_text_allowed(self):
        p = self.probe()
        self.assertIs(False, p["dump_loads"], "load() accepted string.dump bytecode")
        self.assertIs(False, p["bytecode_loads"], "load() accepted a bytecode chunk")
        self.assertIs(False, p["loadstring_bytecode"], "loadstring() accepted a bytecode chunk")
        self.assertEqual(2, p["load_text"], "load('return 1+1')() must work")
        self.assertError(self.server.execute("direct", {"case": "bytecode"}), 500, "agent_error")

    def test_fenv_functions_unavailable(self):
        p = self.probe()
        self.assertEqual(("nil", "nil"), (p["getfenv"], p["setfenv"]))
        for case in ("getfenv", "setfenv"):
            with self.subTest(case=case):
                self.assertError(self.server.execute("direct", {"case": case}), 500, "agent_error")

    def test_file_loading_unavailable(self):
        p = self.probe()
        self.assertEqual(("nil", "nil"), (p["dofile"], p["loadfile"]))
        script = self.server.root / "leak.lua"
        script.write_text('return "leaked"\n')
        for case in ("dofile", "loadfile"):
            with self.subTest(case=case):
                r = self.server.execute("direct", {"case": case, "marker": str(script)})
                self.assertError(r, 500, "agent_error")

    def test_global_write_in_execute_raises(self):
        self.assertError(self.server.execute("globwrite", {}), 500, "agent_error")
        self.assertError(self.server.execute("direct", {"case": "global_write"}), 500, "agent_error")

    def test_top_level_locals_and_global_function_work(self):
        self.assertOk(self.server.execute("toplevel", {}), {"h": 42, "s": "HI!", "counted": True})

    def check_victim(self):
        r = self.server.execute("victim", {})
        self.assertOk(r, {"upper": "ABC", "method": "DEF", "lower": "ghi", "t": "ok", "evil": "nil",
                          "evil_mt": "nil"})

    def test_vandal_does_not_affect_other_agents(self):
        self.check_victim()
        for _ in range(2):
            r = self.server.execute("vandal", {})
            self.assertIn(r.status, (200, 500), self.ctx_msg(r))
        self.server.execute("vandal_top", {})
        self.check_victim()
        self.assertEqual(200, self.server.request("GET", "/health").status)

    def test_string_metatable_protected(self):
        r = self.server.execute("string_mt", {})
        self.assertIn(r.status, (200, 500), self.ctx_msg(r))
        if r.status == 200:
            res = r.body["result"]
            if res.get("reachable"):
                self.assertIs(False, res.get("set_mt"), f"string metatable modified: {res}")
                self.assertIs(False, res.get("set_index"), f"string metatable __index modified: {res}")
                self.assertIs(False, res.get("replace_index"), f"string metatable __index replaced: {res}")
        else:
            self.assertError(r, 500, "agent_error")
        self.check_victim()

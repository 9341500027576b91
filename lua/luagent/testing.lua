-- luagent.testing: run agents inside busted specs without a server, API keys or network
-- (`luagent test` puts this module on the specs' path; docs/authoring.md).
--
--   local testing = require("luagent.testing")
--   local agent = testing.load("hello")            -- agents/hello.lua (LUAGENT_AGENTS_DIR), or a path
--   local result, run = agent:run({name = "Ada"}, {stream = true, context = {session_id = "s1"}})
--   -- run.tokens, run.text (the tokens joined), run.emits, run.logs, run.ai_calls, run.http_calls
--   testing.http.on("GET", "https://api.example.com/x", {status = 200, body = {ok = true}})
--
-- The agent file runs in a fresh environment with the server's allow-list of globals and a
-- `luagent` table of the same shape. luagent.ai is the server's own ai.lua with every provider
-- answered by the mock adapter (LUAGENT_PROVIDERS_DIR/mock.lua): deterministic, offline.
-- luagent.http.request is answered by the stubs a spec declares (testing.http.on); a request
-- with no stub fails as an unreachable upstream does (502 upstream_error). luagent.sleep advances
-- a virtual clock (luagent.now) instead of waiting. The cache and ctx.session live in memory for
-- the test run (testing.reset() empties them). luagent.db, luagent.redis and luagent.crypto are
-- not available here: calling them raises an error that says so.
local dkjson = require("dkjson")

local testing = {}
local HERE = (debug.getinfo(1, "S").source:match("^@(.*)/luagent/testing%.lua$")) or "."

-- ---- luagent.json: faithful enough for specs (null, arrays apart from objects) ----

local array_mt = {__jsontype = "array"}
local object_mt = {__jsontype = "object"}
local json = {}
json.null = dkjson.null
json.array_mt = array_mt
json.empty_array = setmetatable({}, array_mt)
function json.array(t) return setmetatable(t or {}, array_mt) end
-- As the server's codec: an empty table without a marker is an object, not an array.
local function tagged(v, depth)
  if type(v) ~= "table" or v == json.null then return v end
  if depth > 64 then error("luagent.json.encode: nesting too deep", 0) end
  local mt = getmetatable(v)
  local copy = {}
  for k, x in pairs(v) do copy[k] = tagged(x, depth + 1) end
  if mt == array_mt or (mt == nil and next(v) ~= nil) then return setmetatable(copy, mt) end
  return setmetatable(copy, mt == nil and object_mt or mt)
end

function json.encode(v)
  local ok, s = pcall(function() return dkjson.encode(tagged(v, 0)) end)
  if not ok or s == nil then error("luagent.json.encode: " .. tostring(s), 2) end
  return s
end
function json.decode(s)
  if type(s) ~= "string" then error("luagent.json.decode: expects a string", 2) end
  local v, _, err = dkjson.decode(s, 1, json.null, object_mt, array_mt)
  if err then error("luagent.json.decode: " .. err, 2) end
  return v
end

-- ---- the world a test run sees: a virtual clock, stubs, in-memory stores ----

local clock_ms = 1.7e12
local stubs = {}
local cache, sessions = {}, {}
local current -- the run in progress: records tokens, emits, logs, calls

testing.http = {calls = {}}

--- Answer `method url` (exact URL, query included; method "*" for any) with `response`: a table
--- {status = 200, headers = {...}, body = "text" or a table (sent as JSON)} or a function(req)
--- returning one. Later stubs for the same request win.
function testing.http.on(method, url, response)
  assert(type(method) == "string" and type(url) == "string", "testing.http.on(method, url, response)")
  assert(type(response) == "table" or type(response) == "function", "response: a table or a function(req)")
  table.insert(stubs, 1, {method = method:upper(), url = url, response = response})
end

function testing.http.reset()
  stubs = {}
  testing.http.calls = {}
end

function testing.reset()
  testing.http.reset()
  cache, sessions = {}, {}
end

local function fail(status, code, message) error({status = status, code = code, message = message}, 0) end

local function http_request(req)
  if type(req) ~= "table" or type(req.url) ~= "string" then error("luagent.http.request: expects {method, url, ...}", 2) end
  local method = (req.method or "GET"):upper()
  local call = {method = method, url = req.url, headers = req.headers or {}, body = req.body}
  table.insert(testing.http.calls, call)
  if current then table.insert(current.http_calls, call) end
  for _, s in ipairs(stubs) do
    if (s.method == "*" or s.method == method) and s.url == req.url then
      local r = s.response
      if type(r) == "function" then r = r(call) end
      if type(r) ~= "table" then fail(502, "upstream_error", "http: the stub for " .. method .. " " .. req.url .. " returned no response") end
      local body = r.body or ""
      local headers = r.headers or {}
      if type(body) == "table" then
        body = json.encode(body)
        headers["content-type"] = headers["content-type"] or "application/json"
      end
      local res = {status = r.status or 200, headers = headers}
      call.status = res.status
      if req.stream then
        local pending = body
        res.read = function()
          local piece = pending
          pending = nil
          if piece == "" then return nil end
          return piece
        end
      else
        res.body = body
        if req.lean and (headers["content-type"] or ""):find("json") then
          local ok, v = pcall(json.decode, body)
          if ok then res.json = v end
        end
      end
      return res
    end
  end
  fail(502, "upstream_error", "http: no stub for " .. method .. " " .. req.url .. " (declare one with testing.http.on)")
end

-- ---- the mock provider and luagent.ai ----

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

local function sandbox(luagent_table)
  local env = {}
  for _, k in ipairs({"assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select", "tonumber",
                      "tostring", "type", "unpack", "rawequal", "rawget", "rawset", "setmetatable",
                      "getmetatable", "_VERSION"}) do
    env[k] = _G[k]
  end
  for _, lib in ipairs({"table", "math", "bit", "coroutine"}) do
    local copy = {}
    for k, v in pairs(_G[lib] or {}) do copy[k] = v end
    env[lib] = copy
  end
  env.os = {time = os.time, clock = os.clock, date = os.date, difftime = os.difftime}
  env.string = {}
  for _, k in ipairs({"byte", "char", "find", "format", "gmatch", "gsub", "len", "lower", "match", "rep",
                      "reverse", "sub", "upper"}) do
    env.string[k] = string[k]
  end
  env.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    if current then table.insert(current.logs, {level = "info", message = table.concat(parts, "\t")}) end
  end
  env.luagent = luagent_table
  return env
end

local function load_chunk(path, env)
  local src, err = read_file(path)
  if not src then error("luagent.testing: cannot read " .. path .. ": " .. tostring(err), 3) end
  local chunk, cerr = loadstring(src, "@" .. path)
  if not chunk then error("luagent.testing: " .. cerr, 3) end
  setfenv(chunk, env)
  return chunk
end

local providers_dir = os.getenv("LUAGENT_PROVIDERS_DIR")
if providers_dir == nil or providers_dir == "" then providers_dir = "providers" end
local mock -- loaded on first use

local function mock_adapter()
  if not mock then
    local ok, a = pcall(function() return load_chunk(providers_dir .. "/mock.lua", sandbox({json = json}))() end)
    if not ok then error("luagent.testing: the mock provider could not be loaded from " .. providers_dir ..
                         "/mock.lua (LUAGENT_PROVIDERS_DIR): " .. tostring(a), 0) end
    mock = a
  end
  return mock
end

local function unavailable(what)
  return setmetatable({}, {__index = function(_, k)
    return function() error("luagent." .. what .. "." .. tostring(k) .. " is not available under `luagent test`", 2) end
  end})
end

local function log_fn(level)
  return function(msg, fields)
    if current then table.insert(current.logs, {level = level, message = tostring(msg), fields = fields}) end
  end
end

local luagent = {
  json = json,
  now = function() return clock_ms / 1000 end,
  sleep = function(ms)
    if type(ms) ~= "number" or ms < 0 then error("luagent.sleep: expects milliseconds >= 0", 2) end
    clock_ms = clock_ms + ms
  end,
  uuid = function()
    return (string.gsub("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", "[xy]", function(c)
      local v = c == "x" and math.random(0, 15) or math.random(8, 11)
      return string.format("%x", v)
    end))
  end,
  log = {debug = log_fn("debug"), info = log_fn("info"), warn = log_fn("warn"), error = log_fn("error")},
  http = {request = http_request},
  db = unavailable("db"),
  redis = unavailable("redis"),
  crypto = unavailable("crypto"),
}

luagent.cache = {
  get = function(key)
    local e = cache[key]
    if e and (e.until_ms == nil or e.until_ms > clock_ms) then return e.value end
    cache[key] = nil
  end,
  set = function(key, value, ttl_s)
    cache[key] = {value = value, until_ms = (ttl_s and ttl_s > 0) and clock_ms + ttl_s * 1000 or nil}
    return true
  end,
  delete = function(key) cache[key] = nil end,
}

local host = {
  provider = function(name) return mock_adapter() end, -- every provider answers with the mock
  providers = function() return {mock = mock_adapter()} end,
  providers_gen = function() return 1 end,
  setting = function(name) return nil end,
  emit_token = function(text)
    if current then table.insert(current.tokens, text) end
  end,
  usage_add = function(provider, model, input_tokens, output_tokens, retries, ms, err)
    if current then
      table.insert(current.ai_calls, {provider = provider, model = model, input_tokens = input_tokens,
                                      output_tokens = output_tokens, retries = retries, error = err})
    end
  end,
  deadline_ms = function() return current and current.deadline_ms or clock_ms + 60000 end,
  request = http_request,
}

do
  local src = assert(read_file(HERE .. "/luagent/ai_source.lua"))
  local chunk = assert(loadstring(src, "=luagent/ai.lua"))
  luagent.ai = chunk(luagent, host)
end

-- ---- agents ----

local agents_dir = os.getenv("LUAGENT_AGENTS_DIR")
if agents_dir == nil or agents_dir == "" then agents_dir = "agents" end

local Agent = {}
Agent.__index = Agent

local function session_of(ctx_context)
  local id = type(ctx_context) == "table" and ctx_context.session_id or nil
  local function need()
    if type(id) ~= "string" then error("ctx.session: the request has no context.session_id", 3) end
    sessions[id] = sessions[id] or {}
    return sessions[id]
  end
  return {
    get = function(_, k) return need()[k] end,
    set = function(_, k, v) need()[k] = v end,
    delete = function(_, k) need()[k] = nil end,
  }
end

--- Run execute(task, ctx) once. opts: stream (bool), context (table), config (overrides the file's),
--- user ({id, role}). Returns the result and the run's record; raises what the agent raised.
function Agent:run(task, opts)
  opts = opts or {}
  local run = {tokens = {}, emits = {}, logs = {}, ai_calls = {}, http_calls = {}}
  run.deadline_ms = clock_ms + (self.timeout_ms or 60000)
  local ctx = {
    execution_id = luagent.uuid(), request_id = luagent.uuid(), agent = self.name, version = "test",
    user = opts.user or {id = "test", role = "operator"}, config = opts.config or self.config or {},
    context = opts.context or {}, stream = opts.stream == true, deadline_ms = run.deadline_ms,
    log = luagent.log,
    emit = function(v) table.insert(run.emits, v) end,
  }
  ctx.session = session_of(ctx.context)
  local previous = current
  current = run
  local ok, result = pcall(self.execute, task, ctx)
  current = previous
  run.text = table.concat(run.tokens)
  if not ok then error(result, 0) end
  return result, run
end

--- Load an agent: a name ("hello", "team.review": under LUAGENT_AGENTS_DIR) or a path to a .lua file.
function testing.load(name_or_path)
  local path = name_or_path
  if not path:find("%.lua$") then path = agents_dir .. "/" .. path:gsub("%.", "/") .. ".lua" end
  local env = sandbox(luagent)
  local def = load_chunk(path, env)()
  setmetatable(env, {__newindex = function(_, k) error("assignment to undeclared global '" .. tostring(k) .. "'", 2) end})
  if type(def) ~= "table" or type(def.execute) ~= "function" then
    error("luagent.testing: " .. path .. " must return a table with an execute function", 2)
  end
  local a = setmetatable({}, Agent)
  for k, v in pairs(def) do a[k] = v end
  a.name = name_or_path:find("%.lua$") and (path:match("([^/]+)%.lua$")) or name_or_path
  return a
end

testing.json = json
testing.luagent = luagent
--- The virtual clock, in epoch milliseconds (luagent.now() * 1000).
function testing.clock_ms() return clock_ms end

return testing

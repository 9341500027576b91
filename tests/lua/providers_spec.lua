-- The AI provider adapters (providers/*.lua): pure request/response translation, checked against
-- recorded-format fixtures in tests/fixtures/providers/<provider>/ (docs/providers.md has the contract).
-- Run from the repository root: busted --lua=luajit tests/lua/providers_spec.lua
--
-- Each adapter is loaded the way the host loads it: loadfile + an environment holding only the
-- sandbox's globals and `luagent.json`. Here `luagent.json` is a test double with the host codec's
-- semantics (arrays carry json.array_mt, [] and {} stay apart, null is json.null).

---------------------------------------------------------------------------------------------------
-- luagent.json test double
---------------------------------------------------------------------------------------------------
local JSON = {}
do
  local has_cjson, cjson = pcall(require, "cjson")
  -- json.null is a lightuserdata in the host; cjson.null is one too (a plain sentinel otherwise)
  local null = has_cjson and cjson.null or newproxy(false)
  local array_mt = {__name = "json.array"}
  JSON.null, JSON.array_mt = null, array_mt
  JSON.empty_array = setmetatable({}, {__index = {}, __newindex = function() error("read-only") end,
                                       __metatable = array_mt})

  function JSON.array(t)
    t = t or {}
    if getmetatable(t) == array_mt then return t end
    assert(getmetatable(t) == nil, "json.array: the table already has a metatable")
    return setmetatable(t, array_mt)
  end

  local function plain_array_len(t)
    local n, max = 0, 0
    for k in pairs(t) do
      if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then return 0 end
      n = n + 1
      if k > max then max = k end
    end
    return n == max and n or 0
  end

  function JSON.is_array(v)
    return type(v) == "table" and (getmetatable(v) == array_mt or plain_array_len(v) > 0)
  end

  local ESC = {['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
               ["\r"] = "\\r", ["\t"] = "\\t"}
  local function enc_string(s)
    return '"' .. s:gsub('[%c"\\]', function(c)
      return ESC[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
  end

  local function enc(v, out, depth)
    if depth > 128 then error("json.encode: too deep", 0) end
    local t = type(v)
    if v == nil or v == null then
      out[#out + 1] = "null"
    elseif t == "boolean" then
      out[#out + 1] = tostring(v)
    elseif t == "number" then
      if v ~= v or v == math.huge or v == -math.huge then error("json.encode: cannot encode " .. tostring(v), 0) end
      if v % 1 == 0 and math.abs(v) < 2 ^ 53 then
        out[#out + 1] = string.format("%d", v)
      else
        out[#out + 1] = string.format("%.17g", v)
      end
    elseif t == "string" then
      out[#out + 1] = enc_string(v)
    elseif t == "table" then
      local n = getmetatable(v) == array_mt and #v or plain_array_len(v)
      if getmetatable(v) == array_mt or n > 0 then
        out[#out + 1] = "["
        for i = 1, n do
          if i > 1 then out[#out + 1] = "," end
          enc(v[i], out, depth + 1)
        end
        out[#out + 1] = "]"
      else
        local keys = {}
        for k in pairs(v) do
          if type(k) ~= "string" and type(k) ~= "number" then
            error("json.encode: cannot encode a " .. type(k) .. " key", 0)
          end
          keys[#keys + 1] = k
        end
        table.sort(keys, function(a, b) return tostring(a) < tostring(b) end) -- deterministic output
        out[#out + 1] = "{"
        for i, k in ipairs(keys) do
          if i > 1 then out[#out + 1] = "," end
          out[#out + 1] = enc_string(tostring(k))
          out[#out + 1] = ":"
          enc(v[k], out, depth + 1)
        end
        out[#out + 1] = "}"
      end
    else
      error("json.encode: cannot encode a " .. t, 0)
    end
  end

  function JSON.encode(v)
    local out = {}
    enc(v, out, 0)
    return table.concat(out)
  end

  local function utf8(cp)
    if cp < 0x80 then return string.char(cp) end
    if cp < 0x800 then return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
    if cp < 0x10000 then
      return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
    end
    return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
                       0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end

  local function fail(s, i, what) error(string.format("json.decode: %s at byte %d", what, i), 0) end
  local function ws(s, i) return s:find("[^ \t\r\n]", i) or #s + 1 end

  local dec
  local function dec_string(s, i) -- s:sub(i, i) == '"'
    local out, j = {}, i + 1
    while true do
      local c = s:sub(j, j)
      if c == "" then fail(s, j, "unterminated string") end
      if c == '"' then return table.concat(out), j + 1 end
      if c == "\\" then
        local e = s:sub(j + 1, j + 1)
        local simple = ({['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t"})[e]
        if simple then
          out[#out + 1] = simple
          j = j + 2
        elseif e == "u" then
          local cp = tonumber(s:sub(j + 2, j + 5), 16) or fail(s, j, "bad \\u escape")
          j = j + 6
          if cp >= 0xD800 and cp <= 0xDBFF and s:sub(j, j + 1) == "\\u" then
            local lo = tonumber(s:sub(j + 2, j + 5), 16)
            if lo and lo >= 0xDC00 and lo <= 0xDFFF then
              cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
              j = j + 6
            end
          end
          out[#out + 1] = utf8(cp)
        else
          fail(s, j, "bad escape")
        end
      elseif c:byte() < 0x20 then
        fail(s, j, "control character in string")
      else
        local k = s:find('["\\%c]', j) or #s + 1
        out[#out + 1] = s:sub(j, k - 1)
        j = k
      end
    end
  end

  function dec(s, i, depth)
    if depth > 128 then fail(s, i, "too deep") end
    i = ws(s, i)
    local c = s:sub(i, i)
    if c == "{" then
      local obj = {}
      i = ws(s, i + 1)
      if s:sub(i, i) == "}" then return obj, i + 1 end
      while true do
        if s:sub(i, i) ~= '"' then fail(s, i, "expected a key") end
        local k
        k, i = dec_string(s, i)
        i = ws(s, i)
        if s:sub(i, i) ~= ":" then fail(s, i, "expected ':'") end
        obj[k], i = dec(s, i + 1, depth + 1)
        i = ws(s, i)
        local d = s:sub(i, i)
        if d == "}" then return obj, i + 1 end
        if d ~= "," then fail(s, i, "expected ',' or '}'") end
        i = ws(s, i + 1)
      end
    elseif c == "[" then
      local arr = setmetatable({}, array_mt)
      i = ws(s, i + 1)
      if s:sub(i, i) == "]" then return arr, i + 1 end
      while true do
        arr[#arr + 1], i = dec(s, i, depth + 1)
        i = ws(s, i)
        local d = s:sub(i, i)
        if d == "]" then return arr, i + 1 end
        if d ~= "," then fail(s, i, "expected ',' or ']'") end
        i = i + 1
      end
    elseif c == '"' then
      return dec_string(s, i)
    elseif s:sub(i, i + 3) == "true" then
      return true, i + 4
    elseif s:sub(i, i + 4) == "false" then
      return false, i + 5
    elseif s:sub(i, i + 3) == "null" then
      return null, i + 4
    else
      local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
      if not num or not s:match("^-?%d", i) then fail(s, i, "unexpected character") end
      local v = tonumber(num)
      if v == nil then fail(s, i, "bad number") end
      return v, i + #num
    end
  end

  -- json.shape{...} and decode(s, shape) as the host has them (include/luagent/json.h): only the
  -- members a shape names are kept, a shape applies to each element of an array
  local shape_mt = {__name = "json.shape"}
  function JSON.shape(t)
    assert(type(t) == "table", "json.shape: a table expected")
    return setmetatable({t = t}, shape_mt)
  end
  local function prune(v, s)
    if type(v) ~= "table" or s == true then return v end
    if getmetatable(v) == array_mt then
      for i = 1, #v do v[i] = prune(v[i], s) end
      return v
    end
    local out = {}
    for k, sub in pairs(s) do
      if v[k] ~= nil then out[k] = prune(v[k], sub) end
    end
    return out
  end

  function JSON.decode(s, shape)
    assert(type(s) == "string", "json.decode: expected a string")
    assert(shape == nil or getmetatable(shape) == shape_mt, "json.decode: a json.shape expected")
    local v, i = dec(s, 1, 0)
    if ws(s, i) <= #s then fail(s, i, "trailing characters") end
    return shape and prune(v, shape.t) or v
  end
end
local null = JSON.null

---------------------------------------------------------------------------------------------------
-- loading adapters in a sandbox-like environment
---------------------------------------------------------------------------------------------------
local function copy(t, names)
  local out = {}
  if names then
    for _, n in ipairs(names) do out[n] = t[n] end
  else
    for k, v in pairs(t) do out[k] = v end
  end
  return out
end

-- the globals src/lrt/vm.c gives a script; reading or writing any other global fails loudly
local function sandbox_env()
  local env = copy(_G, {"assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select",
                        "tonumber", "tostring", "type", "unpack", "rawequal", "rawget", "rawset",
                        "setmetatable", "getmetatable", "_VERSION"})
  env.table, env.math, env.bit, env.coroutine = copy(table), copy(math), copy(bit), copy(coroutine)
  env.os = copy(os, {"time", "clock", "date", "difftime"})
  env.string = copy(string, {"byte", "char", "find", "format", "gmatch", "gsub", "len", "lower",
                             "match", "rep", "reverse", "sub", "upper"})
  env.luagent = {json = JSON, http = dofile("lua/luagent/httputil.lua")}
  return setmetatable(env, {
    __index = function(_, k) error("adapter read an undefined global: " .. tostring(k), 2) end,
    __newindex = function(_, k) error("adapter set a global: " .. tostring(k), 2) end,
  })
end

local function load_provider(name)
  local chunk = assert(loadfile("providers/" .. name .. ".lua"))
  setfenv(chunk, sandbox_env())
  local p = chunk()
  assert(type(p) == "table", name .. ".lua must return a table")
  return p
end

local FIX = "tests/fixtures/providers/"

local function read(path)
  local f = assert(io.open(FIX .. path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function fixture(path) return JSON.decode(read(path)) end
-- a 2xx reply as the host hands it to parse_response: decoded with the adapter's reply_shape
local function reply(p, path) return JSON.decode(read(path), p.reply_shape) end

-- Server-sent events as the host hands them over: event name (or nil) and the data lines joined
-- with "\n", "data:" and one following space removed; CRLF, CR and LF all end a line.
local function sse_events(text)
  local events, name, data = {}, nil, nil
  text = text:gsub("\r\n", "\n"):gsub("\r", "\n")
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line == "" then
      if data then events[#events + 1] = {event = name, data = table.concat(data, "\n")} end
      name, data = nil, nil
    elseif line:sub(1, 1) ~= ":" then
      local field, value = line:match("^([^:]*):(.*)$")
      if not field then field, value = line, "" end
      if value:sub(1, 1) == " " then value = value:sub(2) end
      if field == "event" then
        name = value
      elseif field == "data" then
        data = data or {}
        data[#data + 1] = value
      end
    end
  end
  if data then events[#events + 1] = {event = name, data = table.concat(data, "\n")} end
  return events
end

-- Feeds a .sse fixture to an adapter; returns the final result (or nil and the error raised),
-- and the text deltas in order.
local function replay(p, req, path)
  local state = p.stream_init(req)
  local deltas = {}
  for _, e in ipairs(sse_events(read(path))) do
    local ok, d = pcall(p.stream_event, state, e.event, e.data)
    if not ok then return nil, deltas, d end
    if d ~= nil then
      assert(type(d) == "string", "a delta must be a string")
      deltas[#deltas + 1] = d
    end
  end
  return p.stream_finish(state), deltas
end

-- an error fixture: {status, headers, body (JSON) | body_text (raw)}
local function classify(p, path)
  local f = fixture(path)
  local text = f.body_text or JSON.encode(f.body)
  return p.classify_error(f.status, f.headers, text)
end

-- JSON round trip: what the host would put on the wire, read back
local function wire(body) return JSON.decode(JSON.encode(body)) end

local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

-- checks shared by every normalized result
local function assert_result_shape(r)
  assert.are.equal("string", type(r.content))
  assert.are.equal(JSON.array_mt, getmetatable(r.tool_calls))
  assert.are.equal("number", type(r.usage.input_tokens))
  assert.are.equal("number", type(r.usage.output_tokens))
  assert.are.equal("string", type(r.finish_reason))
  assert.are.equal("string", type(r.model))
  for _, tc in ipairs(r.tool_calls) do
    assert.are.equal("string", type(tc.id))
    assert.are.equal("string", type(tc.name))
    assert.are.equal("table", type(tc.arguments))
  end
  JSON.encode(r) -- always encodable
end

local openai = load_provider("openai")
local anthropic = load_provider("anthropic")
local google = load_provider("google")
local mock = load_provider("mock")

local WEATHER_TOOL = {name = "get_weather", description = "Weather for a place",
                      parameters = {type = "object", required = {"location"},
                                    properties = {location = {type = "string"}, unit = {type = "string", enum = {"celsius", "fahrenheit"}}}}}
local TIME_TOOL = {name = "get_time", description = "Current time", parameters = {type = "object", properties = {}}}

---------------------------------------------------------------------------------------------------
describe("provider adapters", function()
  it("run on LuaJIT", function()
    assert.is_not_nil(jit)
  end)

  describe("the test double for luagent.json", function()
    it("keeps [] and {} apart and null as json.null", function()
      local v = JSON.decode('{"a":[],"b":{},"c":null,"d":[1,null,"x"],"e":"\\u00e9\\ud83d\\ude00"}')
      assert.are.equal(JSON.array_mt, getmetatable(v.a))
      assert.is_nil(getmetatable(v.b))
      assert.are.equal(null, v.c)
      assert.are.equal(null, v.d[2])
      assert.are.equal("é😀", v.e)
      assert.are.equal('{"a":[],"b":{},"c":null,"d":[1,null,"x"],"e":"é😀"}', JSON.encode(v))
      assert.are.equal("[]", JSON.encode(JSON.array()))
      assert.are.equal("{}", JSON.encode({}))
      assert.are.equal("[]", JSON.encode(JSON.empty_array))
    end)

    it("refuses malformed text", function()
      for _, s in ipairs {"", "{", '{"a" 1}', "[1,]x", "tru", '"\\x"'} do
        assert.is_false((pcall(JSON.decode, s)), s)
      end
    end)
  end)

  describe("the SSE splitter used by these specs", function()
    it("handles event/data fields, multi-line data, comments and CRLF", function()
      local ev = sse_events(": hi\r\nevent: a\r\ndata: 1\r\ndata:2\r\n\r\ndata: x\n\n\ndata: tail")
      assert.are.same({{event = "a", data = "1\n2"}, {data = "x"}, {data = "tail"}}, ev)
    end)
  end)

  describe("loading", function()
    local all = {openai = openai, anthropic = anthropic, google = google, mock = mock}

    it("every adapter loads in the sandbox and declares its identity", function()
      for file, p in pairs(all) do
        assert.are.equal(file, p.name)
        assert.are.equal("string", type(p.default_model))
        assert.are.equal("table", type(p.families))
        assert.are.equal("table", type(p.key_env))
      end
    end)

    it("the HTTP adapters have the whole contract", function()
      for _, p in ipairs {openai, anthropic, google} do
        for _, fn in ipairs {"build_request", "parse_response", "stream_init", "stream_event",
                             "stream_finish", "classify_error"} do
          assert.are.equal("function", type(p[fn]), p.name .. "." .. fn)
        end
        assert.matches("^https://", p.default_base_url)
        assert.is_nil(p.default_base_url:find("/$"))
        assert.are.equal("string", type(p.base_url_env))
      end
      assert.are.equal("function", type(mock.local_call))
    end)

    it("decodes no less of a reply or a stream than the adapter reads (its shapes)", function()
      local function files(dir, ext)
        local out = {}
        for name in io.popen("ls " .. FIX .. dir):lines() do
          if name:sub(-#ext) == ext and not name:find("^error_") then out[#out + 1] = dir .. "/" .. name end
        end
        assert.is_true(#out >= 2, dir)
        return out
      end
      local function both(f)
        local shaped = {pcall(f)}
        local decode = JSON.decode
        JSON.decode = function(text) return decode(text) end -- every member, whatever the shape
        local full = {pcall(f)}
        JSON.decode = decode
        assert.are.same(full, shaped)
      end
      for _, p in ipairs {openai, anthropic, google} do
        assert.are.equal("json.shape", getmetatable(p.reply_shape).__name, p.name)
        for _, path in ipairs(files(p.name, ".json")) do
          local text = read(path)
          assert.are.same(p.parse_response(200, {}, JSON.decode(text)),
                          p.parse_response(200, {}, JSON.decode(text, p.reply_shape)), path)
        end
        for _, path in ipairs(files(p.name, ".sse")) do
          both(function() return replay(p, {model = "m"}, path) end)
        end
      end
    end)

    it("declares the key and base-URL variables of each official SDK", function()
      assert.are.same({"OPENAI_API_KEY"}, openai.key_env)
      assert.are.same({"ANTHROPIC_API_KEY"}, anthropic.key_env)
      assert.are.same({"GEMINI_API_KEY", "GOOGLE_API_KEY"}, google.key_env)
      assert.are.equal("OPENAI_BASE_URL", openai.base_url_env)
      assert.are.equal("ANTHROPIC_BASE_URL", anthropic.base_url_env)
      assert.are.equal("GEMINI_BASE_URL", google.base_url_env)
      assert.are.equal("https://api.openai.com/v1", openai.default_base_url)
      assert.are.equal("https://api.anthropic.com", anthropic.default_base_url)
      assert.are.equal("https://generativelanguage.googleapis.com", google.default_base_url)
    end)

    it("routes bare model names by family", function()
      local function owner(model)
        local found = {}
        for _, p in ipairs {openai, anthropic, google, mock} do
          for _, pat in ipairs(p.families) do
            if model:find(pat) then found[#found + 1] = p.name break end
          end
        end
        return table.concat(found, ",")
      end
      assert.are.equal("openai", owner("gpt-4o-mini"))
      assert.are.equal("openai", owner("o3-mini"))
      assert.are.equal("openai", owner("o1"))
      assert.are.equal("openai", owner("chatgpt-4o-latest"))
      assert.are.equal("anthropic", owner("claude-sonnet-5"))
      assert.are.equal("google", owner("gemini-2.5-flash"))
      assert.are.equal("mock", owner("mock-1"))
      assert.are.equal("", owner("llama-3.1-8b")) -- the host sends unknown names to openai
      assert.are.equal("", owner("omni-moderation"))
    end)
  end)

  -------------------------------------------------------------------------------------------------
  describe("openai", function()
    local cfg = {api_key = "sk-test-123", base_url = "https://api.openai.com/v1"}

    describe("build_request", function()
      it("builds a plain chat completion", function()
        local r = openai.build_request({model = "gpt-4o-mini", messages = {
          {role = "system", content = "Be brief."}, {role = "user", content = "Hi"}},
          temperature = 0.2, max_tokens = 50}, cfg)
        assert.are.equal("POST", r.method)
        assert.are.equal("https://api.openai.com/v1/chat/completions", r.url)
        assert.are.equal("Bearer sk-test-123", r.headers.authorization)
        assert.are.equal("application/json", r.headers["content-type"])
        local b = wire(r.body)
        assert.are.equal("gpt-4o-mini", b.model)
        assert.are.same({{role = "system", content = "Be brief."}, {role = "user", content = "Hi"}}, b.messages)
        assert.are.equal(0.2, b.temperature)
        assert.are.equal(50, b.max_completion_tokens)
        assert.is_nil(b.max_tokens)
        assert.is_nil(b.stream)
        assert.is_nil(b.stream_options)
        assert.is_nil(b.tools)
        assert.is_nil(b.tool_choice)
        assert.is_nil(b.response_format)
        for name in pairs(r.headers) do assert.are.equal(name:lower(), name) end
      end)

      it("sends max_tokens to compatible servers and no auth header without a key", function()
        local r = openai.build_request({model = "llama3", messages = {{role = "user", content = "x"}},
                                        max_tokens = 7}, {base_url = "http://127.0.0.1:11434/v1"})
        assert.are.equal("http://127.0.0.1:11434/v1/chat/completions", r.url)
        assert.is_nil(r.headers.authorization)
        assert.are.equal(7, r.body.max_tokens)
        assert.is_nil(r.body.max_completion_tokens)
      end)

      it("asks for usage in streams", function()
        local b = wire(openai.build_request({model = "gpt-4o", messages = {{role = "user", content = "x"}},
                                             stream = true}, cfg).body)
        assert.is_true(b.stream)
        assert.are.same({include_usage = true}, b.stream_options)
      end)

      it("declares tools and every tool_choice form", function()
        local req = {model = "gpt-4o", messages = {{role = "user", content = "weather?"}},
                     tools = {WEATHER_TOOL, TIME_TOOL}}
        local b = wire(openai.build_request(req, cfg).body)
        assert.are.same({type = "function", ["function"] = {name = "get_weather", description = "Weather for a place",
                          parameters = WEATHER_TOOL.parameters}}, b.tools[1])
        assert.are.equal('{"properties":{},"type":"object"}', JSON.encode(b.tools[2]["function"].parameters))
        assert.is_nil(b.tool_choice)
        for choice, want in pairs {auto = "auto", none = "none", required = "required"} do
          req.tool_choice = choice
          assert.are.equal(want, openai.build_request(req, cfg).body.tool_choice)
        end
        req.tool_choice = {name = "get_time"}
        assert.are.same({type = "function", ["function"] = {name = "get_time"}},
                        openai.build_request(req, cfg).body.tool_choice)
        -- a tool_choice without tools is an API error: it is left out
        local b2 = openai.build_request({model = "gpt-4o", messages = {}, tool_choice = "auto"}, cfg).body
        assert.is_nil(b2.tool_choice)
      end)

      it("replays assistant tool calls and tool results", function()
        local b = wire(openai.build_request({model = "gpt-4o", tools = {WEATHER_TOOL, TIME_TOOL}, messages = {
          {role = "user", content = "weather and time in Paris?"},
          {role = "assistant", content = nil, tool_calls = {
            {id = "call_1", name = "get_weather", arguments = {location = "Paris"}},
            {id = "call_2", name = "get_time", arguments = {}}}},
          {role = "tool", tool_call_id = "call_1", content = "18C"},
          {role = "tool", tool_call_id = "call_2", content = {hour = 9}},
        }}, cfg).body)
        local a = b.messages[2]
        assert.are.equal("assistant", a.role)
        assert.are.equal(null, a.content)
        assert.are.equal("call_1", a.tool_calls[1].id)
        assert.are.equal("function", a.tool_calls[1].type)
        assert.are.equal("get_weather", a.tool_calls[1]["function"].name)
        assert.are.equal('{"location":"Paris"}', a.tool_calls[1]["function"].arguments)
        assert.are.equal("{}", a.tool_calls[2]["function"].arguments)
        assert.are.same({role = "tool", tool_call_id = "call_1", content = "18C"}, b.messages[3])
        assert.are.same({role = "tool", tool_call_id = "call_2", content = '{"hour":9}'}, b.messages[4])
      end)

      it("asks for structured output with a strict json_schema", function()
        local schema = {type = "object", required = {"summary"}, properties = {summary = {type = "string"}},
                        additionalProperties = false}
        local b = wire(openai.build_request({model = "gpt-4o", messages = {{role = "user", content = "x"}},
                                             response_format = {json_schema = schema, name = "sum mary"}}, cfg).body)
        assert.are.same({type = "json_schema", json_schema = {name = "sum_mary", schema = schema, strict = true}},
                        b.response_format)
        b = openai.build_request({model = "gpt-4o", messages = {}, response_format = {json_schema = schema}}, cfg).body
        assert.are.equal("response", b.response_format.json_schema.name)
      end)
    end)

    describe("parse_response", function()
      it("reads a text reply", function()
        local r = openai.parse_response(200, {}, reply(openai, "openai/chat.json"))
        assert_result_shape(r)
        assert.are.equal("Hello! How can I assist you today?", r.content)
        assert.are.equal(0, #r.tool_calls)
        assert.are.equal("[]", JSON.encode(r.tool_calls))
        assert.are.same({input_tokens = 19, output_tokens = 10}, r.usage)
        assert.are.equal("stop", r.finish_reason)
        assert.are.equal("gpt-4o-mini-2024-07-18", r.model)
      end)

      it("reads parallel tool calls with decoded arguments", function()
        local r = openai.parse_response(200, {}, reply(openai, "openai/tool_calls.json"))
        assert_result_shape(r)
        assert.are.equal("", r.content)
        assert.are.equal("tool_calls", r.finish_reason)
        assert.are.equal(2, #r.tool_calls)
        assert.are.same({id = "call_a1B2c3D4e5F6g7H8i9J0kLmN", name = "get_weather",
                         arguments = {location = "Paris, France", unit = "celsius"}}, r.tool_calls[1])
        assert.are.equal("get_time", r.tool_calls[2].name)
        assert.are.equal("{}", JSON.encode(r.tool_calls[2].arguments))
        assert.are.same({input_tokens = 82, output_tokens = 48}, r.usage)
      end)

      it("returns structured output as JSON text and reports length", function()
        local r = openai.parse_response(200, {}, reply(openai, "openai/json_schema.json"))
        assert.are.equal('{"summary":"Cats sleep a lot.","tags":[]}', r.content)
        assert.are.equal("length", openai.parse_response(200, {}, reply(openai, "openai/length.json")).finish_reason)
      end)

      it("keeps undecodable arguments as raw_arguments and replays them unchanged", function()
        local body = fixture("openai/tool_calls.json")
        body.choices[1].message.tool_calls[1]["function"].arguments = '{"location": "Par'
        local r = openai.parse_response(200, {}, body)
        assert.are.same({}, r.tool_calls[1].arguments)
        assert.are.equal('{"location": "Par', r.tool_calls[1].raw_arguments)
        local b = openai.build_request({model = "m", messages = {{role = "assistant", tool_calls = r.tool_calls}}}, cfg).body
        assert.are.equal('{"location": "Par', b.messages[1].tool_calls[1]["function"].arguments)
      end)

      it("joins content given as an array of text parts (some compatible servers)", function()
        local body = fixture("openai/chat.json")
        body.choices[1].message.content = JSON.array({{type = "text", text = "a"}, {type = "text", text = "b"}})
        assert.are.equal("ab", openai.parse_response(200, {}, body).content)
      end)

      it("says tool_calls when a compatible server says stop with tool calls", function()
        local body = fixture("openai/tool_calls.json")
        body.choices[1].finish_reason = "stop"
        assert.are.equal("tool_calls", openai.parse_response(200, {}, body).finish_reason)
      end)

      it("raises provider_error for an error object or a reply without choices", function()
        local e = raised(openai.parse_response, 200, {}, {error = {message = "boom", type = "server_error"}})
        assert.are.same({code = "provider_error", status = 500, message = "boom", type = "server_error"}, e)
        e = raised(openai.parse_response, 200, {}, {object = "chat.completion", choices = JSON.array()})
        assert.are.equal("provider_error", e.code)
        assert.are.equal(502, e.status)
      end)
    end)

    describe("streaming", function()
      it("replays a text stream with usage from the final chunk", function()
        local r, deltas = replay(openai, {model = "gpt-4o-mini", stream = true}, "openai/stream_text.sse")
        assert.are.same({"Hello", "!", " How can I", " help?"}, deltas)
        assert_result_shape(r)
        assert.are.equal("Hello! How can I help?", r.content)
        assert.are.same({input_tokens = 19, output_tokens = 6}, r.usage)
        assert.are.equal("stop", r.finish_reason)
        assert.are.equal("gpt-4o-mini-2024-07-18", r.model)
        assert.are.equal(0, #r.tool_calls)
      end)

      it("assembles tool calls by index from fragments", function()
        local r, deltas = replay(openai, {model = "gpt-4o-mini", stream = true}, "openai/stream_tool_calls.sse")
        assert.are.same({}, deltas)
        assert_result_shape(r)
        assert.are.equal("tool_calls", r.finish_reason)
        assert.are.same({
          {id = "call_DdmO9pD3xa9XTPNJ32zg2hcA", name = "get_weather", arguments = {location = "Paris"}},
          {id = "call_w2Bq1yZ5bL3mV8rN0tK4xJ7c", name = "get_time", arguments = {tz = "Europe/Paris", h24 = true}},
        }, r.tool_calls)
        assert.are.same({input_tokens = 95, output_tokens = 41}, r.usage)
      end)

      it("orders calls by index even when fragments interleave", function()
        local st = openai.stream_init({model = "m"})
        local function chunk(tc) return JSON.encode({choices = {{index = 0, delta = {tool_calls = {tc}}}}}) end
        openai.stream_event(st, nil, chunk({index = 1, id = "b", ["function"] = {name = "second", arguments = "{\"x\":"}}))
        openai.stream_event(st, nil, chunk({index = 0, id = "a", ["function"] = {name = "first", arguments = ""}}))
        openai.stream_event(st, nil, chunk({index = 1, ["function"] = {arguments = "1}"}}))
        openai.stream_event(st, nil, "[DONE]")
        local r = openai.stream_finish(st)
        assert.are.same({{id = "a", name = "first", arguments = {}}, {id = "b", name = "second", arguments = {x = 1}}},
                        r.tool_calls)
        assert.are.equal("tool_calls", r.finish_reason)
        assert.are.equal("m", r.model)
      end)

      it("raises provider_error on an error chunk after output", function()
        local r, deltas, err = replay(openai, {model = "gpt-4o-mini", stream = true}, "openai/stream_error.sse")
        assert.is_nil(r)
        assert.are.same({"Partial"}, deltas)
        assert.are.equal("provider_error", err.code)
        assert.are.equal(500, err.status)
        assert.matches("server had an error", err.message)
      end)

      it("raises on a malformed chunk", function()
        local e = raised(openai.stream_event, openai.stream_init({}), nil, "{not json")
        assert.are.equal("provider_error", e.code)
        assert.are.equal(502, e.status)
      end)
    end)

    describe("classify_error", function()
      it("retries a 429, preferring retry-after-ms", function()
        local c = classify(openai, "openai/error_429.json")
        assert.is_true(c.retryable)
        assert.are.equal(1200, c.retry_after_ms)
        assert.matches("^Rate limit reached", c.message)
        assert.are.equal("requests", c.type)
      end)

      it("does not retry an exhausted quota", function()
        local c = classify(openai, "openai/error_429_quota.json")
        assert.is_false(c.retryable)
        assert.are.equal("insufficient_quota", c.type)
      end)

      it("does not retry a bad key and reports the provider's message", function()
        local c = classify(openai, "openai/error_401.json")
        assert.is_false(c.retryable)
        assert.matches("^Incorrect API key provided", c.message)
        assert.is_nil(c.retry_after_ms)
      end)

      it("ignores an HTTP-date retry-after", function()
        local c = classify(openai, "openai/error_503_retry_after_date.json")
        assert.is_true(c.retryable)
        assert.is_nil(c.retry_after_ms)
      end)

      it("gives a plain message for an HTML body", function()
        local c = classify(openai, "openai/error_502_html.json")
        assert.is_true(c.retryable)
        assert.are.equal("openai: HTTP 502", c.message)
      end)

      it("reads retry-after in seconds", function()
        assert.are.equal(2000, openai.classify_error(429, {["retry-after"] = "2"}, "").retry_after_ms)
        assert.are.equal(500, openai.classify_error(429, {["retry-after"] = "0.5"}, "").retry_after_ms)
      end)
    end)
  end)

  -------------------------------------------------------------------------------------------------
  describe("anthropic", function()
    local cfg = {api_key = "sk-ant-test", base_url = "https://api.anthropic.com", anthropic_version = "2023-06-01"}

    describe("build_request", function()
      it("builds a messages request with the system prompt on top", function()
        local r = anthropic.build_request({model = "claude-haiku-4-5", messages = {
          {role = "system", content = "Be brief."}, {role = "user", content = "Hi"},
          {role = "system", content = "Answer in French."}}, temperature = 0.5}, cfg)
        assert.are.equal("POST", r.method)
        assert.are.equal("https://api.anthropic.com/v1/messages", r.url)
        assert.are.equal("sk-ant-test", r.headers["x-api-key"])
        assert.are.equal("2023-06-01", r.headers["anthropic-version"])
        assert.are.equal("application/json", r.headers["content-type"])
        assert.is_nil(r.headers.authorization)
        local b = wire(r.body)
        assert.are.equal("claude-haiku-4-5", b.model)
        assert.are.equal("Be brief.\n\nAnswer in French.", b.system)
        assert.are.same({{role = "user", content = "Hi"}}, b.messages)
        assert.are.equal(1024, b.max_tokens)
        assert.are.equal(0.5, b.temperature)
        assert.is_nil(b.stream)
        assert.is_nil(b.tools)
      end)

      it("uses the configured version, max_tokens and stream flag", function()
        local r = anthropic.build_request({model = "c", messages = {{role = "user", content = "x"}},
                                           max_tokens = 99, stream = true},
                                          {base_url = "http://127.0.0.1:9999", anthropic_version = "2024-01-01"})
        assert.are.equal("http://127.0.0.1:9999/v1/messages", r.url)
        assert.are.equal("2024-01-01", r.headers["anthropic-version"])
        assert.is_nil(r.headers["x-api-key"])
        assert.are.equal(99, r.body.max_tokens)
        assert.is_true(r.body.stream)
        assert.is_nil(r.body.system)
      end)

      it("declares tools with input_schema and maps tool_choice", function()
        local req = {model = "c", messages = {{role = "user", content = "x"}}, tools = {WEATHER_TOOL, {name = "noargs"}}}
        local b = wire(anthropic.build_request(req, cfg).body)
        assert.are.same({name = "get_weather", description = "Weather for a place", input_schema = WEATHER_TOOL.parameters},
                        b.tools[1])
        assert.are.equal('{"name":"noargs","input_schema":{"properties":{},"type":"object"}}',
                         '{"name":"noargs","input_schema":' .. JSON.encode(b.tools[2].input_schema) .. "}")
        assert.is_nil(b.tool_choice)
        local want = {auto = {type = "auto"}, required = {type = "any"}, none = {type = "none"}}
        for choice, w in pairs(want) do
          req.tool_choice = choice
          assert.are.same(w, anthropic.build_request(req, cfg).body.tool_choice)
        end
        req.tool_choice = {name = "get_weather"}
        assert.are.same({type = "tool", name = "get_weather"}, anthropic.build_request(req, cfg).body.tool_choice)
      end)

      it("turns tool calls into tool_use blocks and merges consecutive tool results", function()
        local b = wire(anthropic.build_request({model = "c", tools = {WEATHER_TOOL, TIME_TOOL}, messages = {
          {role = "user", content = "weather and time?"},
          {role = "assistant", content = "Checking.", tool_calls = {
            {id = "toolu_1", name = "get_weather", arguments = {location = "Paris"}},
            {id = "toolu_2", name = "get_time", arguments = {}}}},
          {role = "tool", tool_call_id = "toolu_1", content = "18C"},
          {role = "tool", tool_call_id = "toolu_2", content = "failed", is_error = true},
          {role = "user", content = "And tomorrow?"},
          {role = "assistant", content = "Sunny."},
        }}, cfg).body)
        assert.are.equal(4, #b.messages)
        assert.are.same({role = "assistant", content = {
          {type = "text", text = "Checking."},
          {type = "tool_use", id = "toolu_1", name = "get_weather", input = {location = "Paris"}},
          {type = "tool_use", id = "toolu_2", name = "get_time", input = {}}}}, b.messages[2])
        assert.is_nil(getmetatable(b.messages[2].content[3].input)) -- {} on the wire, not []
        assert.are.same({role = "user", content = {
          {type = "tool_result", tool_use_id = "toolu_1", content = "18C"},
          {type = "tool_result", tool_use_id = "toolu_2", content = "failed", is_error = true},
          {type = "text", text = "And tomorrow?"}}}, b.messages[3])
        assert.are.same({role = "assistant", content = "Sunny."}, b.messages[4])
      end)

      it("starts a new user turn for tool results after an assistant turn", function()
        local b = anthropic.build_request({model = "c", messages = {
          {role = "user", content = "q"},
          {role = "assistant", tool_calls = {{id = "t1", name = "f", arguments = {}}}},
          {role = "tool", tool_call_id = "t1", content = "r1"},
          {role = "assistant", tool_calls = {{id = "t2", name = "f", arguments = {}}}},
          {role = "tool", tool_call_id = "t2", content = "r2"},
        }}, cfg).body
        assert.are.equal(5, #b.messages)
        assert.are.equal(1, #b.messages[3].content)
        assert.are.equal("t2", b.messages[5].content[1].tool_use_id)
        assert.are.equal("tool_use", b.messages[2].content[1].type) -- no empty text block
      end)

      it("asks for structured output with a forced tool named after the schema", function()
        local schema = {type = "object", required = {"summary"}, properties = {summary = {type = "string"}}}
        local b = wire(anthropic.build_request({model = "c", messages = {{role = "user", content = "x"}},
                                                response_format = {json_schema = schema, name = "summary"}}, cfg).body)
        assert.are.equal(1, #b.tools)
        assert.are.equal("summary", b.tools[1].name)
        assert.are.same(schema, b.tools[1].input_schema)
        assert.are.same({type = "tool", name = "summary"}, b.tool_choice)
        -- with the caller's tools too: any tool may be called; the schema tool ends the turn
        b = anthropic.build_request({model = "c", messages = {}, tools = {WEATHER_TOOL},
                                     response_format = {json_schema = schema}}, cfg).body
        assert.are.equal(2, #b.tools)
        assert.are.equal("structured_output", b.tools[2].name)
        assert.are.same({type = "any"}, b.tool_choice)
        -- a non-object schema is wrapped in {value = ...}
        b = anthropic.build_request({model = "c", messages = {},
                                     response_format = {json_schema = {type = "array", items = {type = "string"}}}}, cfg).body
        assert.are.same({type = "object", properties = {value = {type = "array", items = {type = "string"}}},
                         required = {"value"}}, b.tools[1].input_schema)
      end)
    end)

    describe("parse_response", function()
      it("joins text blocks and counts cached input tokens", function()
        local r = anthropic.parse_response(200, {}, reply(anthropic, "anthropic/message.json"))
        assert_result_shape(r)
        assert.are.equal("Hello! How can I help you today?", r.content)
        assert.are.same({input_tokens = 312, output_tokens = 9}, r.usage)
        assert.are.equal("stop", r.finish_reason)
        assert.are.equal("claude-haiku-4-5-20251001", r.model)
        assert.are.equal("[]", JSON.encode(r.tool_calls))
      end)

      it("reads tool_use blocks", function()
        local r = anthropic.parse_response(200, {}, reply(anthropic, "anthropic/tool_use.json"))
        assert_result_shape(r)
        assert.are.equal("I'll check the weather and the time in Paris.", r.content)
        assert.are.equal("tool_calls", r.finish_reason)
        assert.are.same({{id = "toolu_01A09q90qw90lq917835lq9", name = "get_weather",
                          arguments = {location = "Paris, France", unit = "celsius"}},
                         {id = "toolu_01B7Xz2mKq4Lp8Rt3Vn6Ws1Y", name = "get_time", arguments = {}}}, r.tool_calls)
        assert.are.equal("{}", JSON.encode(r.tool_calls[2].arguments))
      end)

      it("maps max_tokens to length", function()
        assert.are.equal("length", anthropic.parse_response(200, {}, reply(anthropic, "anthropic/max_tokens.json")).finish_reason)
      end)

      it("returns the forced tool's input as the content when given the request", function()
        local req = {model = "c", response_format = {json_schema = {type = "object"}, name = "summary"}}
        local r = anthropic.parse_response(200, {}, reply(anthropic, "anthropic/structured.json"), req)
        assert_result_shape(r)
        assert.are.same({summary = "Cats sleep a lot.", tags = {}}, JSON.decode(r.content))
        assert.are.equal(JSON.array_mt, getmetatable(JSON.decode(r.content).tags))
        assert.are.equal(0, #r.tool_calls)
        assert.are.equal("stop", r.finish_reason)
        -- without the request it is an ordinary tool call
        r = anthropic.parse_response(200, {}, reply(anthropic, "anthropic/structured.json"))
        assert.are.equal("summary", r.tool_calls[1].name)
        assert.are.equal("", r.content)
      end)

      it("unwraps a wrapped non-object answer", function()
        local req = {response_format = {json_schema = {type = "array"}, name = "tags"}}
        local body = {type = "message", model = "c", stop_reason = "tool_use", usage = {input_tokens = 1, output_tokens = 2},
                      content = JSON.array({{type = "tool_use", id = "t", name = "tags",
                                             input = {value = JSON.array({"a", "b"})}}})}
        assert.are.equal('["a","b"]', anthropic.parse_response(200, {}, body, req).content)
      end)

      it("raises provider_error for an error body", function()
        local e = raised(anthropic.parse_response, 200, {}, {type = "error", error = {type = "overloaded_error", message = "Overloaded"}})
        assert.are.same({code = "provider_error", status = 529, message = "Overloaded", type = "overloaded_error"}, e)
      end)
    end)

    describe("streaming", function()
      it("replays a text stream", function()
        local r, deltas = replay(anthropic, {model = "claude-haiku-4-5", stream = true}, "anthropic/stream_text.sse")
        assert.are.same({"Hello", "! How", " can I help?"}, deltas)
        assert_result_shape(r)
        assert.are.equal("Hello! How can I help?", r.content)
        assert.are.same({input_tokens = 25, output_tokens = 15}, r.usage)
        assert.are.equal("stop", r.finish_reason)
        assert.are.equal("claude-haiku-4-5-20251001", r.model)
      end)

      it("assembles tool input from input_json_delta per block", function()
        local r, deltas = replay(anthropic, {model = "c", stream = true}, "anthropic/stream_tool_use.sse")
        assert.are.same({"Okay, let me check", " the weather."}, deltas)
        assert_result_shape(r)
        assert.are.equal("Okay, let me check the weather.", r.content)
        assert.are.same({{id = "toolu_01T1x1fJ34qAmk2tNTrN7Up6", name = "get_weather",
                          arguments = {location = "San Francisco, CA", unit = "fahrenheit"}},
                         {id = "toolu_01Vb2Nm3Qw4Er5Ty6Ui7Op8A", name = "get_time", arguments = {}}}, r.tool_calls)
        assert.are.equal("tool_calls", r.finish_reason)
        assert.are.same({input_tokens = 472, output_tokens = 89}, r.usage)
      end)

      it("streams structured output as text and returns it as content", function()
        local req = {model = "c", stream = true, response_format = {json_schema = {type = "object"}, name = "summary"}}
        local r, deltas = replay(anthropic, req, "anthropic/stream_structured.sse")
        assert.are.same({'{"summary": "Cats sle', 'ep a lot.", "tags": []}'}, deltas)
        assert.are.equal(table.concat(deltas), r.content)
        assert.are.same({summary = "Cats sleep a lot.", tags = {}}, JSON.decode(r.content))
        assert.are.equal(0, #r.tool_calls)
        assert.are.equal("stop", r.finish_reason)
      end)

      it("keeps a structured answer cut off by max_tokens as the partial text", function()
        local st = anthropic.stream_init({response_format = {json_schema = {type = "object"}, name = "s"}})
        anthropic.stream_event(st, "content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"s","input":{}}}')
        anthropic.stream_event(st, "content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\\"a\\": \\"b"}}')
        anthropic.stream_event(st, "message_delta", '{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":5}}')
        local r = anthropic.stream_finish(st)
        assert.are.equal('{"a": "b', r.content)
        assert.are.equal("length", r.finish_reason)
        assert.are.equal(0, #r.tool_calls)
      end)

      it("raises provider_error on an error event after 200", function()
        local r, deltas, err = replay(anthropic, {model = "c", stream = true}, "anthropic/stream_error.sse")
        assert.is_nil(r)
        assert.are.same({"Partial"}, deltas)
        assert.are.same({code = "provider_error", status = 529, message = "Overloaded", type = "overloaded_error"}, err)
      end)

      it("uses the data's type when the event name is missing", function()
        local st = anthropic.stream_init({model = "c"})
        assert.are.equal("hi", anthropic.stream_event(st, nil,
          '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}'))
        local e = raised(anthropic.stream_event, st, nil, '{"type":"error","error":{"type":"api_error","message":"x"}}')
        assert.are.equal(500, e.status)
      end)
    end)

    describe("classify_error", function()
      it("retries 529 overloaded", function()
        local c = classify(anthropic, "anthropic/error_529.json")
        assert.is_true(c.retryable)
        assert.are.equal("Overloaded", c.message)
        assert.are.equal("overloaded_error", c.type)
      end)

      it("retries 429 after retry-after seconds", function()
        local c = classify(anthropic, "anthropic/error_429.json")
        assert.is_true(c.retryable)
        assert.are.equal(17000, c.retry_after_ms)
        assert.are.equal("rate_limit_error", c.type)
        assert.matches("rate limit", c.message)
      end)

      it("does not retry client errors", function()
        local c = classify(anthropic, "anthropic/error_400.json")
        assert.is_false(c.retryable)
        assert.matches("tool_use", c.message)
        assert.is_false(classify(anthropic, "anthropic/error_401.json").retryable)
        assert.are.equal("invalid x-api-key", classify(anthropic, "anthropic/error_401.json").message)
      end)

      it("honours x-should-retry", function()
        assert.is_false(anthropic.classify_error(500, {["x-should-retry"] = "false"}, "").retryable)
        assert.is_true(anthropic.classify_error(400, {["x-should-retry"] = "true"}, "").retryable)
      end)
    end)
  end)

  -------------------------------------------------------------------------------------------------
  describe("google", function()
    local cfg = {api_key = "AIza-test", base_url = "https://generativelanguage.googleapis.com"}

    describe("build_request", function()
      it("builds generateContent with systemInstruction and user/model roles", function()
        local r = google.build_request({model = "gemini-2.5-flash", messages = {
          {role = "system", content = "Be brief."}, {role = "user", content = "Hi"},
          {role = "assistant", content = "Hello."}, {role = "user", content = "Bye"}},
          temperature = 0.1, max_tokens = 64}, cfg)
        assert.are.equal("POST", r.method)
        assert.are.equal("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent", r.url)
        assert.are.equal("AIza-test", r.headers["x-goog-api-key"])
        assert.are.equal("application/json", r.headers["content-type"])
        local b = wire(r.body)
        assert.are.same({parts = {{text = "Be brief."}}}, b.systemInstruction)
        assert.are.same({{role = "user", parts = {{text = "Hi"}}}, {role = "model", parts = {{text = "Hello."}}},
                         {role = "user", parts = {{text = "Bye"}}}}, b.contents)
        assert.are.same({temperature = 0.1, maxOutputTokens = 64}, b.generationConfig)
        assert.is_nil(b.tools)
      end)

      it("streams with streamGenerateContent?alt=sse and strips a models/ prefix", function()
        local r = google.build_request({model = "models/gemini-3-pro-preview", messages = {{role = "user", content = "x"}},
                                        stream = true}, {base_url = "http://127.0.0.1:8089"})
        assert.are.equal("http://127.0.0.1:8089/v1beta/models/gemini-3-pro-preview:streamGenerateContent?alt=sse", r.url)
        assert.is_nil(r.headers["x-goog-api-key"])
        assert.is_nil(r.body.generationConfig)
        assert.is_nil(r.body.systemInstruction)
      end)

      it("declares functions and maps tool_choice to functionCallingConfig", function()
        local rich = {name = "strict", parameters = {type = "object", properties = {a = {type = "string"}},
                                                      additionalProperties = false}}
        local req = {model = "g", messages = {{role = "user", content = "x"}}, tools = {WEATHER_TOOL, rich, {name = "bare"}}}
        local b = wire(google.build_request(req, cfg).body)
        local decls = b.tools[1].functionDeclarations
        assert.are.same({name = "get_weather", description = "Weather for a place", parameters = WEATHER_TOOL.parameters}, decls[1])
        assert.is_nil(decls[2].parameters)  -- outside Gemini's OpenAPI subset
        assert.are.same(rich.parameters, decls[2].parametersJsonSchema)
        assert.are.same({name = "bare"}, decls[3])
        assert.is_nil(b.toolConfig)
        for choice, mode in pairs {auto = "AUTO", none = "NONE", required = "ANY"} do
          req.tool_choice = choice
          assert.are.same({functionCallingConfig = {mode = mode}}, google.build_request(req, cfg).body.toolConfig)
        end
        req.tool_choice = {name = "get_weather"}
        assert.are.same({functionCallingConfig = {mode = "ANY", allowedFunctionNames = {"get_weather"}}},
                        google.build_request(req, cfg).body.toolConfig)
      end)

      it("asks for JSON with a response schema", function()
        local simple = {type = "object", required = {"n"}, properties = {n = {type = "integer"}}}
        local gc = google.build_request({model = "g", messages = {}, response_format = {json_schema = simple}}, cfg).body.generationConfig
        assert.are.equal("application/json", gc.responseMimeType)
        assert.are.same(simple, gc.responseSchema)
        local rich = {type = "object", properties = {n = {type = {"integer", "null"}}}, ["$schema"] = "x"}
        gc = google.build_request({model = "g", messages = {}, response_format = {json_schema = rich}}, cfg).body.generationConfig
        assert.is_nil(gc.responseSchema)
        assert.are.same(rich, gc.responseJsonSchema)
      end)

      it("replays thoughtSignature exactly and names function responses from the calls", function()
        local first = google.parse_response(200, {}, reply(google, "google/function_call.json"))
        local sig = fixture("google/function_call.json").candidates[1].content.parts[1].thoughtSignature
        assert.are.equal(sig, first.tool_calls[1].thought_signature)
        assert.is_nil(first.tool_calls[2].thought_signature)
        local b = wire(google.build_request({model = "gemini-3-pro-preview", messages = {
          {role = "user", content = "weather and time in Paris?"},
          {role = "assistant", content = first.content, tool_calls = first.tool_calls},
          {role = "tool", tool_call_id = first.tool_calls[1].id, content = "18C"},
          {role = "tool", tool_call_id = first.tool_calls[2].id, content = {hour = 9}},
        }}, cfg).body)
        assert.are.equal(3, #b.contents)
        assert.are.same({role = "model", parts = {
          {functionCall = {name = "get_weather", args = {location = "Paris", unit = "celsius"}}, thoughtSignature = sig},
          {functionCall = {name = "get_time", args = {}}}}}, b.contents[2])
        assert.is_nil(getmetatable(b.contents[2].parts[2].functionCall.args)) -- {} not []
        assert.are.same({role = "user", parts = {
          {functionResponse = {name = "get_weather", response = {content = "18C"}}},
          {functionResponse = {name = "get_time", response = {content = {hour = 9}}}}}}, b.contents[3])
      end)

      it("resolves repeated generated ids to the latest call", function()
        local b = google.build_request({model = "g", messages = {
          {role = "assistant", tool_calls = {{id = "call_1", name = "a", arguments = {}}}},
          {role = "tool", tool_call_id = "call_1", content = "ra"},
          {role = "assistant", tool_calls = {{id = "call_1", name = "b", arguments = {}}}},
          {role = "tool", tool_call_id = "call_1", content = "rb"},
        }}, cfg).body
        assert.are.equal("a", b.contents[2].parts[1].functionResponse.name)
        assert.are.equal("b", b.contents[4].parts[1].functionResponse.name)
      end)
    end)

    describe("parse_response", function()
      it("joins text parts and counts thinking tokens as output", function()
        local r = google.parse_response(200, {}, reply(google, "google/generate.json"))
        assert_result_shape(r)
        assert.are.equal("Hello! How can I help you today?", r.content)
        assert.are.same({input_tokens = 8, output_tokens = 34}, r.usage)
        assert.are.equal("stop", r.finish_reason)
        assert.are.equal("gemini-2.5-flash", r.model)
        assert.are.equal("[]", JSON.encode(r.tool_calls))
      end)

      it("turns functionCall parts into tool calls with generated ids", function()
        local r = google.parse_response(200, {}, reply(google, "google/function_call.json"))
        assert_result_shape(r)
        assert.are.equal("tool_calls", r.finish_reason)
        assert.are.equal("call_1", r.tool_calls[1].id)
        assert.are.equal("call_2", r.tool_calls[2].id)
        assert.are.same({location = "Paris", unit = "celsius"}, r.tool_calls[1].arguments)
        assert.are.equal("{}", JSON.encode(r.tool_calls[2].arguments))
        assert.are.same({input_tokens = 120, output_tokens = 90}, r.usage)
        assert.are.equal("gemini-3-pro-preview", r.model)
      end)

      it("maps MAX_TOKENS, SAFETY and a blocked prompt", function()
        assert.are.equal("length", google.parse_response(200, {}, reply(google, "google/max_tokens.json")).finish_reason)
        local s = google.parse_response(200, {}, reply(google, "google/safety.json"))
        assert.are.equal("content_filter", s.finish_reason)
        assert.are.equal("", s.content)
        local b = google.parse_response(200, {}, reply(google, "google/blocked.json"))
        assert_result_shape(b)
        assert.are.equal("content_filter", b.finish_reason)
        assert.are.equal("", b.content)
        assert.are.equal(14, b.usage.input_tokens)
      end)

      it("lowercases other finish reasons", function()
        local body = fixture("google/max_tokens.json")
        body.candidates[1].finishReason = "MALFORMED_FUNCTION_CALL"
        assert.are.equal("malformed_function_call", google.parse_response(200, {}, body).finish_reason)
      end)
    end)

    describe("streaming", function()
      it("replays a CRLF text stream, skipping thought parts", function()
        local r, deltas = replay(google, {model = "gemini-2.5-flash", stream = true}, "google/stream_text.sse")
        assert.are.same({"Hello", "! How can I", " help?"}, deltas)
        assert_result_shape(r)
        assert.are.equal("Hello! How can I help?", r.content)
        assert.are.same({input_tokens = 8, output_tokens = 29}, r.usage)
        assert.are.equal("stop", r.finish_reason)
        assert.are.equal("gemini-2.5-flash", r.model)
      end)

      it("collects function calls with their signatures", function()
        local r, deltas = replay(google, {model = "gemini-3-pro-preview", stream = true}, "google/stream_function_call.sse")
        assert.are.same({"Let me look that up."}, deltas)
        assert_result_shape(r)
        assert.are.equal("Let me look that up.", r.content)
        assert.are.equal("tool_calls", r.finish_reason)
        assert.are.same({{id = "call_1", name = "get_weather", arguments = {location = "Paris"},
                          thought_signature = "CiQBcsjafAbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/AbCdEfGh=="},
                         {id = "call_2", name = "get_time", arguments = {tz = "Europe/Paris"}}}, r.tool_calls)
        assert.are.same({input_tokens = 120, output_tokens = 90}, r.usage)
      end)

      it("raises provider_error with the error's code", function()
        local r, deltas, err = replay(google, {model = "g", stream = true}, "google/stream_error.sse")
        assert.is_nil(r)
        assert.are.same({"Partial"}, deltas)
        assert.are.same({code = "provider_error", status = 503, type = "UNAVAILABLE",
                         message = "The model is overloaded. Please try again later."}, err)
      end)
    end)

    describe("classify_error", function()
      it("takes the retry delay from RetryInfo details", function()
        local c = classify(google, "google/error_429.json")
        assert.is_true(c.retryable)
        assert.are.equal(1500, c.retry_after_ms)
        assert.are.equal("RESOURCE_EXHAUSTED", c.type)
        assert.matches("^You exceeded your current quota", c.message)
      end)

      it("prefers the retry-after header", function()
        local c = classify(google, "google/error_503.json")
        assert.is_true(c.retryable)
        assert.are.equal(3000, c.retry_after_ms)
        assert.are.equal("The model is overloaded. Please try again later.", c.message)
      end)

      it("does not retry a bad request", function()
        local c = classify(google, "google/error_400.json")
        assert.is_false(c.retryable)
        assert.are.equal("INVALID_ARGUMENT", c.type)
        assert.matches("thought_signature", c.message)
      end)

      it("reads an error wrapped in an array", function()
        local c = classify(google, "google/error_stream_array.json")
        assert.is_true(c.retryable)
        assert.are.equal("INTERNAL", c.type)
        assert.matches("^An internal error", c.message)
      end)
    end)
  end)

  -------------------------------------------------------------------------------------------------
  describe("classify_error (every HTTP adapter)", function()
    local adapters = {openai, anthropic, google}

    it("retries 408, 409, 429, 5xx and 529 and nothing else", function()
      for _, p in ipairs(adapters) do
        for _, s in ipairs {408, 409, 429, 500, 502, 503, 504, 529, 599} do
          assert.is_true(p.classify_error(s, {}, "").retryable, p.name .. " " .. s)
        end
        for _, s in ipairs {400, 401, 402, 403, 404, 413, 422, 451} do
          assert.is_false(p.classify_error(s, {}, "").retryable, p.name .. " " .. s)
        end
      end
    end)

    it("prefers retry-after-ms, then retry-after seconds, ignores an HTTP date", function()
      for _, p in ipairs(adapters) do
        assert.are.equal(250, p.classify_error(429, {["retry-after-ms"] = "250", ["retry-after"] = "9"}, "").retry_after_ms)
        assert.are.equal(9000, p.classify_error(429, {["retry-after"] = "9"}, "").retry_after_ms)
        assert.is_nil(p.classify_error(429, {["retry-after"] = "Fri, 31 Dec 2027 23:59:59 GMT"}, "").retry_after_ms)
        assert.is_nil(p.classify_error(429, {["retry-after"] = "-1"}, "").retry_after_ms)
        assert.is_nil(p.classify_error(429, nil, nil).retry_after_ms)
      end
    end)

    it("never puts header values into the message", function()
      local headers = {authorization = "Bearer sk-SECRET", ["x-api-key"] = "sk-ant-SECRET",
                       ["x-goog-api-key"] = "AIza-SECRET", ["set-cookie"] = "s=SECRET"}
      for _, p in ipairs(adapters) do
        for _, body in ipairs {"", "not json", '{"error":{"message":"bad"}}', "[1,2]", "<html>x</html>"} do
          local c = p.classify_error(500, headers, body)
          assert.are.equal("string", type(c.message))
          assert.is_nil(c.message:find("SECRET"), p.name)
        end
      end
    end)
  end)

  -------------------------------------------------------------------------------------------------
  -- The same scenarios in a real luagent VM (src/lrt/vm.c's sandbox, src/bind/json.c's codec), via
  -- tests/lua/luagent_test.so; the outputs must match the test double's, byte for byte once
  -- canonicalized (so [] vs {} and null are checked too).
  describe("in a real luagent VM", function()
    package.cpath = (os.getenv("LUAGENT_BUILD") or "build") .. "/?.so;" .. package.cpath
    local has_lt, lt = pcall(require, "luagent_test")

    local DRIVER = [==[
return {execute = function(task)
  local p = assert(load(task.src, "=" .. task.file))()
  local json = luagent.json
  local function run()
    if task.mode == "build" then
      local r = p.build_request(task.req, task.cfg)
      return {method = r.method, url = r.url, headers = r.headers, body_json = json.encode(r.body)}
    elseif task.mode == "parse" then
      return {result = p.parse_response(200, {}, json.decode(task.text), task.req)}
    elseif task.mode == "stream" then
      local st = p.stream_init(task.req)
      local deltas = json.array()
      for _, e in ipairs(task.events) do
        local d = p.stream_event(st, e.event, e.data)
        if d ~= nil then deltas[#deltas + 1] = d end
      end
      return {result = p.stream_finish(st), deltas = deltas}
    elseif task.mode == "classify" then
      return {result = p.classify_error(task.status, task.headers, task.text)}
    elseif task.mode == "local" then
      local r, chunks = p.local_call(task.req)
      return {result = r, chunks = json.array(chunks)}
    end
  end
  local ok, v = pcall(run)
  if ok then return v end
  return {error = v}
end}
]==]

    -- JSON text inside the outputs (request bodies, structured content) is compared as values:
    -- the host encoder writes object keys in table order, the double sorts them
    local function canonical(v)
      local function json_text(s)
        if type(s) == "string" and s:find("^[%[{]") then return JSON.encode(JSON.decode(s)) end
        return s
      end
      if type(v) == "table" and v.body_json then
        v.body = JSON.decode(v.body_json)
        v.body_json = nil
      end
      if type(v) == "table" and type(v.result) == "table" then
        v.result.content = json_text(v.result.content)
        if v.chunks then v.chunks = json_text(table.concat(v.chunks)) end
      end
      return JSON.encode(v)
    end

    local function run_double(task)
      local env = sandbox_env()
      rawset(env, "load", function(src, name)
        local f, err = loadstring(src, name)
        if f then setfenv(f, env) end
        return f, err
      end)
      local chunk = assert(loadstring(DRIVER, "=driver"))
      setfenv(chunk, env)
      return chunk().execute(JSON.decode(JSON.encode(task)), {})
    end

    local function run_vm(task)
      local ok, out = lt.run(DRIVER, JSON.encode(task), 5000)
      assert(ok, out)
      return JSON.decode(out)
    end

    local sources = {}
    local function task_for(provider, t)
      if not sources[provider] then
        local f = assert(io.open("providers/" .. provider .. ".lua", "rb"))
        sources[provider] = f:read("*a")
        f:close()
      end
      t.src, t.file = sources[provider], provider .. ".lua"
      return t
    end

    local function fixture_tasks(provider)
      local tasks = {}
      local p = io.popen("ls " .. FIX .. provider)
      for name in p:lines() do
        local req = {model = "fixture-model"}
        if name:find("structured") then
          req.response_format = {json_schema = {type = "object"}, name = "summary"}
        end
        if name:match("%.sse$") then
          tasks[#tasks + 1] = {name = name, mode = "stream", req = req, events = sse_events(read(provider .. "/" .. name))}
        elseif name:match("^error_") then
          local f = fixture(provider .. "/" .. name)
          tasks[#tasks + 1] = {name = name, mode = "classify", status = f.status, headers = f.headers,
                               text = f.body_text or JSON.encode(f.body)}
        elseif name:match("%.json$") then
          tasks[#tasks + 1] = {name = name, mode = "parse", req = req, text = read(provider .. "/" .. name)}
        end
      end
      p:close()
      return tasks
    end

    local CONVERSATION = {
      {role = "system", content = "Be brief."},
      {role = "user", content = "weather and time in Paris?"},
      {role = "assistant", content = "Checking.", tool_calls = {
        {id = "call_1", name = "get_weather", arguments = {location = "Paris"}, thought_signature = "c2ln"},
        {id = "call_2", name = "get_time", arguments = {}}}},
      {role = "tool", tool_call_id = "call_1", content = "18C"},
      {role = "tool", tool_call_id = "call_2", content = "09:00"},
      {role = "user", content = "thanks"},
    }
    local BUILD_REQS = {
      {model = "m", messages = {{role = "user", content = "hi"}}},
      {model = "m", messages = CONVERSATION, tools = {WEATHER_TOOL, TIME_TOOL}, tool_choice = "auto",
       temperature = 0.3, max_tokens = 100, stream = true},
      {model = "m", messages = {{role = "user", content = "x"}}, tool_choice = {name = "get_time"},
       tools = {TIME_TOOL}},
      {model = "m", messages = {{role = "user", content = "x"}},
       response_format = {json_schema = {type = "object", required = {"a"}, properties = {a = {type = "array"}}}, name = "out"}},
    }

    for _, provider in ipairs {"openai", "anthropic", "google"} do
      it(provider .. ": every fixture and request gives the same result as with the test double", function()
        if not has_lt then pending("build/luagent_test.so is not built") return end
        local tasks = fixture_tasks(provider)
        for i, req in ipairs(BUILD_REQS) do
          tasks[#tasks + 1] = {name = "build " .. i, mode = "build", req = req,
                               cfg = {api_key = "k", base_url = "https://example.test", anthropic_version = "2023-06-01"}}
        end
        assert.is_true(#tasks >= 10)
        for _, t in ipairs(tasks) do
          task_for(provider, t)
          local want = run_double(t)
          local got = run_vm(t)
          if not t.name:find("error") then assert.is_nil(got.error, provider .. " " .. t.name) end
          assert.are.equal(canonical(want), canonical(got), provider .. " " .. t.name)
        end
      end)
    end

    it("mock: the same answers as with the test double", function()
      if not has_lt then pending("build/luagent_test.so is not built") return end
      local reqs = {
        {messages = {{role = "user", content = "hello world"}}},
        {model = "mock-2", messages = {{role = "user", content = "q"}}, tools = {WEATHER_TOOL}},
        {messages = CONVERSATION, tools = {WEATHER_TOOL}},
        {messages = {{role = "user", content = "x"}}, response_format = {json_schema = {type = "object",
          required = {"a", "b"}, properties = {a = {type = "array"}, b = {type = "object"}}}}},
      }
      for i, req in ipairs(reqs) do
        local t = task_for("mock", {mode = "local", req = req})
        assert.are.equal(canonical(run_double(t)), canonical(run_vm(t)), "mock " .. i)
      end
    end)
  end)

  -------------------------------------------------------------------------------------------------
  describe("mock", function()
    it("echoes the last user message, streaming it in pieces", function()
      local r, chunks = mock.local_call({messages = {{role = "system", content = "be nice"},
        {role = "user", content = "first"}, {role = "assistant", content = "ok"},
        {role = "user", content = "hello there  world"}}})
      assert_result_shape(r)
      assert.are.equal("mock: hello there  world", r.content)
      assert.are.equal(r.content, table.concat(chunks))
      assert.is_true(#chunks > 1)
      assert.are.equal("mock-1", r.model)
      assert.are.equal("stop", r.finish_reason)
      assert.are.same({input_tokens = 7, output_tokens = 4}, r.usage)
      assert.are.equal("[]", JSON.encode(r.tool_calls))
    end)

    it("reports the requested model and is deterministic", function()
      local req = {model = "mock-large", messages = {{role = "user", content = "same"}}}
      local a, ca = mock.local_call(req)
      local b, cb = mock.local_call(req)
      assert.are.equal("mock-large", a.model)
      assert.are.same(a, b)
      assert.are.same(ca, cb)
    end)

    it("calls the first tool with the last user text until a tool result exists", function()
      local req = {messages = {{role = "user", content = "weather in Paris"}}, tools = {WEATHER_TOOL, TIME_TOOL}}
      local r, chunks = mock.local_call(req)
      assert_result_shape(r)
      assert.are.equal("tool_calls", r.finish_reason)
      assert.are.equal("", r.content)
      assert.are.same({}, chunks)
      assert.are.equal(1, #r.tool_calls)
      assert.are.equal("get_weather", r.tool_calls[1].name)
      assert.are.same({query = "weather in Paris"}, r.tool_calls[1].arguments)
      -- the tool loop's second round
      req.messages[2] = {role = "assistant", tool_calls = r.tool_calls}
      req.messages[3] = {role = "tool", tool_call_id = r.tool_calls[1].id, content = "sunny, 18C"}
      local r2, chunks2 = mock.local_call(req)
      assert.are.equal("mock: sunny, 18C", r2.content)
      assert.are.equal("stop", r2.finish_reason)
      assert.are.equal(0, #r2.tool_calls)
      assert.are.equal(r2.content, table.concat(chunks2))
    end)

    it("answers a JSON schema with a minimal valid value", function()
      local schema = {type = "object", required = {"name", "count", "ok", "tags", "inner", "kind", "maybe"},
        properties = {
          name = {type = "string"}, count = {type = "integer", minimum = 3}, ok = {type = "boolean"},
          tags = {type = "array", items = {type = "string"}},
          inner = {type = "object", required = {"x"}, properties = {x = {type = "number"}, y = {type = "string"}}},
          kind = {type = "string", enum = {"a", "b"}}, maybe = {type = {"null", "string"}},
          optional = {type = "string"},
        }}
      local r, chunks = mock.local_call({messages = {{role = "user", content = "x"}},
                                         response_format = {json_schema = schema}})
      assert_result_shape(r)
      local v = JSON.decode(r.content)
      assert.are.same({name = "mock", count = 3, ok = false, tags = {}, inner = {x = 0}, kind = "a", maybe = "mock"}, v)
      assert.are.equal(JSON.array_mt, getmetatable(v.tags))
      assert.is_nil(v.optional)
      assert.are.equal(r.content, table.concat(chunks))
      assert.are.equal("{}", mock.local_call({messages = {}, response_format = {json_schema = {type = "object"}}}).content)
      assert.are.equal("[]", mock.local_call({messages = {}, response_format = {json_schema = {type = "array"}}}).content)
    end)

    it("handles an empty conversation", function()
      local r, chunks = mock.local_call({})
      assert.are.equal("mock:", r.content:match("^%S+"))
      assert.are.equal(r.content, table.concat(chunks))
      assert.are.same({input_tokens = 0, output_tokens = 1}, r.usage)
    end)
  end)
end)

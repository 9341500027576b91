-- luagent.ai: one call shape for every provider (DESIGN §4; adapters: docs/providers.md).
--
--   luagent.ai.chat{model=, provider=, messages= | prompt= [, system=], tools=, tool_choice=,
--                   temperature=, max_tokens=, response_format=, stream=, timeout_ms=, retries=,
--                   base_url=, fallback={model, ...}}
--     -> {content, tool_calls, usage = {input_tokens, output_tokens}, finish_reason, model, provider
--         [, parsed]}
--   luagent.ai.run{..., tools = {name = {description=, parameters=, handler=function(args, ctx)}},
--                  max_steps=, ctx=} -> the last chat result, plus steps and messages
--
-- This file is compiled into the binary and runs with the host's privileges; agents only get the
-- two functions. `host` gives it the provider registry, settings (API keys), and the running
-- execution (token events, usage, deadline).
local luagent, host = ...
local json = luagent.json

local DEFAULT_RETRIES = 2
local DEFAULT_TIMEOUT_MS = 60000
local MAX_RETRY_DELAY_MS = 60000
local ANTHROPIC_VERSION = "2023-06-01"
local KEYED_PROVIDERS = {"openai", "anthropic", "google"} -- the default model's provider, in order

local function fail(status, code, message, extra)
  local e = {status = status, code = code, message = message}
  for k, v in pairs(extra or {}) do e[k] = v end
  error(e, 0)
end

local function misuse(fmt, ...) error("luagent.ai: " .. string.format(fmt, ...), 3) end

-- ---- providers and models ----

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local function find_provider(name)
  local a = host.provider(name)
  if a then return a, name end
  local all = host.providers()
  for _, pname in ipairs(sorted_keys(all)) do
    for _, alias in ipairs(type(all[pname].aliases) == "table" and all[pname].aliases or {}) do
      if alias == name then return all[pname], pname end
    end
  end
end

local function api_key(a)
  for _, env in ipairs(type(a.key_env) == "table" and a.key_env or {}) do
    local v = host.setting(env)
    if v then return v end
  end
end

-- -> adapter, provider name, model name (prefix stripped)
local function resolve(model, provider)
  if provider then
    local a, pname = find_provider(provider)
    if not a then misuse("no provider named '%s' (see the providers directory)", provider) end
    return a, pname, model or a.default_model
  end
  model = model or host.setting("LUAGENT_DEFAULT_MODEL")
  if model == nil then
    for _, pname in ipairs(KEYED_PROVIDERS) do
      local a = host.provider(pname)
      if a and api_key(a) then return a, pname, a.default_model end
    end
    local a = host.provider("mock")
    if not a then misuse("no model given, no API key set, and no mock provider") end
    return a, "mock", a.default_model
  end
  local prefix, rest = model:match("^([%w_%-]+)/(.+)$")
  if prefix then
    local a, pname = find_provider(prefix)
    if a then return a, pname, rest end
  end
  local all = host.providers()
  for _, pname in ipairs(sorted_keys(all)) do
    for _, pattern in ipairs(type(all[pname].families) == "table" and all[pname].families or {}) do
      if model:find(pattern) then return all[pname], pname, model end
    end
  end
  local a = host.provider("openai")
  if not a then misuse("no provider for model '%s'", model) end
  return a, "openai", model
end

-- Routing a name is the same until a provider file or the settings change: remember the answers
-- per worker, as routes[provider or ""][model or ""] = {adapter, provider name, model name}.
local routes, routes_gen = {}, nil

local function route(model, provider)
  local gen = host.providers_gen()
  if gen ~= routes_gen then routes, routes_gen = {}, gen end
  local byp = routes[provider or ""]
  if not byp then byp = {}; routes[provider or ""] = byp end
  local hit = byp[model or ""]
  if hit then return hit[1], hit[2], hit[3] end
  local a, pname, name = resolve(model, provider)
  byp[model or ""] = {a, pname, name}
  return a, pname, name
end

-- ---- one HTTP attempt ----

-- split an SSE block into its event name and data (lines joined with "\n")
local function sse_block(block)
  local event, data
  for line in (block .. "\n"):gmatch("([^\n]*)\n") do
    local field, value = line:match("^([^:]*):? ?(.*)$")
    if field == "event" then
      event = value
    elseif field == "data" then
      data = data and (data .. "\n" .. value) or value
    end
  end
  return event, data
end

local function read_all(res)
  local parts = {}
  while true do
    local chunk = res.read()
    if not chunk then break end
    parts[#parts + 1] = chunk
  end
  return table.concat(parts)
end

local function default_classify(status)
  return {retryable = status == 408 or status == 409 or status == 429 or status >= 500,
          message = "HTTP " .. status}
end

-- -> result, or nil + failure {retryable, retry_after_ms, status, message, timeout}
local function attempt(a, pname, req, cfg, timeout_ms, progress)
  if a.local_call then
    local result, chunks = a.local_call(req)
    if req.stream and type(chunks) == "table" then
      for _, text in ipairs(chunks) do
        progress.streamed = true
        host.emit_token(text)
      end
    end
    return result
  end
  local r = a.build_request(req, cfg)
  local headers = r.headers or {} -- the adapter's own fresh table
  headers["content-type"] = headers["content-type"] or "application/json"
  if req.stream then headers["accept"] = "text/event-stream" end
  local body, method, url = r.body, r.method or "POST", r.url
  if type(body) == "table" then body = json.encode(body) end
  r = nil -- the request's tables are garbage while the reply is awaited (thousands may be in flight)
  local res = host.request(method, url, headers, body, timeout_ms, req.stream, a.reply_shape) -- lean
  if res.status < 200 or res.status > 299 then
    local text = res.body or read_all(res)
    local c = a.classify_error and a.classify_error(res.status, res.headers, text) or default_classify(res.status)
    return nil, {retryable = c.retryable, retry_after_ms = c.retry_after_ms, status = res.status,
                 message = pname .. ": " .. tostring(c.message or ("HTTP " .. res.status)), type = c.type}
  end
  if not req.stream then
    if res.json == nil then
      return nil, {retryable = false, status = res.status, message = pname .. ": the reply is not valid JSON"}
    end
    return a.parse_response(res.status, res.headers, res.json, req)
  end
  local state, buf = a.stream_init(req), ""
  local function feed(block)
    local event, data = sse_block(block)
    if data == nil then return end
    local delta = a.stream_event(state, event, data)
    if type(delta) == "string" and delta ~= "" then
      progress.streamed = true
      host.emit_token(delta)
    end
  end
  while true do
    local chunk = res.read()
    if not chunk then break end
    buf = (buf .. chunk):gsub("\r\n", "\n")
    while true do
      local s, e = buf:find("\n\n", 1, true)
      if not s then break end
      feed(buf:sub(1, s - 1))
      buf = buf:sub(e + 1)
    end
  end
  if buf:find("%S") then feed(buf) end
  return a.stream_finish(state)
end

local function backoff_ms(n) -- as the official SDKs: 0.5 s doubling, at most 8 s, minus up to 25% jitter
  return math.min(500 * 2 ^ (n - 1), 8000) * (1 - 0.25 * math.random())
end

-- -> result, or nil + failure
-- an adapter's settings (key, base URL) only change with the adapter, the settings (SIGHUP) or
-- the call's base_url
local cfgs, cfgs_gen = nil, nil
local NOT_STREAMING = {streamed = false} -- the progress of every non-streamed call: never set

local function config_for(a, base_url)
  local gen = host.providers_gen()
  if gen ~= cfgs_gen then cfgs, cfgs_gen = setmetatable({}, {__mode = "k"}), gen end
  local byurl = cfgs[a]
  if not byurl then byurl = {}; cfgs[a] = byurl end
  local key = base_url or ""
  local cfg = byurl[key]
  if not cfg then
    local base = base_url or (a.base_url_env and host.setting(a.base_url_env)) or a.default_base_url or ""
    cfg = {api_key = api_key(a), base_url = (base:gsub("/+$", "")), anthropic_version = ANTHROPIC_VERSION}
    byurl[key] = cfg
  end
  return cfg
end

local function call_model(a, pname, model, opts)
  local req = {model = model, messages = opts.messages, tools = opts.tools, tool_choice = opts.tool_choice,
               temperature = opts.temperature, max_tokens = opts.max_tokens,
               response_format = opts.response_format, stream = opts.stream == true}
  local cfg = config_for(a, opts.base_url)
  local retries = tonumber(opts.retries) or DEFAULT_RETRIES
  local timeout_ms = tonumber(opts.timeout_ms) or DEFAULT_TIMEOUT_MS
  local tries = 0
  local progress = req.stream and {streamed = false} or NOT_STREAMING
  local t0 = luagent.now()
  while true do
    progress.streamed = false
    local ok, result, failure = pcall(attempt, a, pname, req, cfg, timeout_ms, progress)
    if ok and result then
      local usage = type(result.usage) == "table" and result.usage or {}
      host.usage_add(pname, model, tonumber(usage.input_tokens) or 0, tonumber(usage.output_tokens) or 0, tries,
                     (luagent.now() - t0) * 1000)
      result.provider = pname
      return result
    end
    if not ok then
      local err = result
      if type(err) ~= "table" then error(err, 0) end -- a bug in an adapter: the agent sees it
      if err.code == "upstream_error" or err.code == "upstream_timeout" then
        failure = {retryable = true, timeout = err.code == "upstream_timeout",
                   message = pname .. ": " .. tostring(err.message):gsub("^http: ", "")}
      elseif err.code == "provider_error" then
        local s = tonumber(err.status) or 502
        failure = {retryable = s == 408 or s == 409 or s == 429 or s >= 500, status = s,
                   message = pname .. ": " .. tostring(err.message), type = err.type}
      else
        error(err, 0)
      end
    end
    if progress.streamed then failure.retryable = false; failure.streamed = true end
    local delay = failure.retry_after_ms or backoff_ms(tries + 1)
    local left = host.deadline_ms() - luagent.now() * 1000
    if not failure.retryable or tries >= retries or delay > MAX_RETRY_DELAY_MS or delay >= left then
      host.usage_add(pname, model, 0, 0, tries, (luagent.now() - t0) * 1000, failure.message)
      failure.attempts = tries + 1
      return nil, failure
    end
    tries = tries + 1
    luagent.sleep(delay)
  end
end

-- ---- structured output ----

local function json_type(v)
  if v == json.null then return "null" end
  local t = type(v)
  if t == "table" then return json.is_array(v) and "array" or (getmetatable(v) == json.array_mt and "array" or "object") end
  if t == "number" then return v == math.floor(v) and "integer" or "number" end
  return t
end

local function validate(schema, v, path, errs)
  if type(schema) ~= "table" then return end
  local t = json_type(v)
  local want = schema.type
  if type(want) == "string" and not (want == t or (want == "number" and t == "integer")
      or (want == "object" and t == "array" and next(v) == nil)) then
    errs[#errs + 1] = (path == "" and "/" or path) .. ": expected " .. want .. ", got " .. t
    return
  end
  if type(schema.enum) == "table" then
    local found = false
    for _, e in ipairs(schema.enum) do if e == v then found = true end end
    if not found then errs[#errs + 1] = (path == "" and "/" or path) .. ": not one of the allowed values" end
  end
  if t == "object" then
    for _, name in ipairs(type(schema.required) == "table" and schema.required or {}) do
      if v[name] == nil then errs[#errs + 1] = path .. "/" .. name .. ": required" end
    end
    for name, sub in pairs(type(schema.properties) == "table" and schema.properties or {}) do
      if v[name] ~= nil then validate(sub, v[name], path .. "/" .. name, errs) end
    end
  elseif t == "array" and type(schema.items) == "table" then
    for i, item in ipairs(v) do validate(schema.items, item, path .. "/" .. (i - 1), errs) end
  end
end

local function parse_structured(result, schema)
  local ok, value = pcall(json.decode, result.content or "")
  if not ok then
    fail(502, "provider_error", result.provider .. ": the model's answer is not JSON", {provider = result.provider})
  end
  local errs = {}
  validate(schema, value, "", errs)
  if #errs > 0 then
    fail(502, "provider_error", result.provider .. ": the model's answer does not match the schema: " ..
         table.concat(errs, "; "), {provider = result.provider})
  end
  return value
end

-- ---- the API ----

local ai = {}

local function normalize(opts)
  if type(opts) ~= "table" then misuse("chat takes a table of options") end
  if opts.messages == nil and type(opts.prompt) == "string" then
    local messages = {}
    if type(opts.system) == "string" then messages[1] = {role = "system", content = opts.system} end
    messages[#messages + 1] = {role = "user", content = opts.prompt}
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    copy.messages = messages
    opts = copy
  end
  if type(opts.messages) ~= "table" or #opts.messages == 0 then misuse("messages (a list) or prompt is required") end
  if opts.fallback ~= nil then
    if type(opts.fallback) ~= "table" then misuse("fallback must be a list of models") end
    for _, m in ipairs(opts.fallback) do
      if type(m) ~= "string" then misuse("fallback must be a list of model names") end
    end
  end
  return opts
end

local NO_FALLBACK = {} -- read only

function ai.chat(opts)
  opts = normalize(opts)
  local fallback = opts.fallback or NO_FALLBACK
  local last
  for i = 0, #fallback do
    local a, pname, model
    if i == 0 then
      a, pname, model = route(opts.model, opts.provider)
    else
      a, pname, model = route(fallback[i])
    end
    local result, failure = call_model(a, pname, model, opts)
    if result then
      local rf = opts.response_format
      if type(rf) == "table" and type(rf.json_schema) == "table" then
        result.parsed = parse_structured(result, rf.json_schema)
      end
      return result
    end
    failure.provider = pname
    last = failure
    if failure.streamed then break end -- the client has seen output: no second answer
  end
  local extra = {provider = last.provider, provider_status = last.status, attempts = last.attempts}
  if last.timeout then fail(504, "provider_timeout", last.message, extra) end
  fail(502, "provider_error", last.message, extra)
end

function ai.run(opts)
  opts = normalize(opts)
  if type(opts.tools) ~= "table" then misuse("run needs tools = {name = {description=, parameters=, handler=}}") end
  local handlers, list = {}, {}
  for _, name in ipairs(sorted_keys(opts.tools)) do
    local t = opts.tools[name]
    if type(name) ~= "string" or type(t) ~= "table" or type(t.handler) ~= "function" then
      misuse("tool '%s' needs a handler function", tostring(name))
    end
    handlers[name] = t.handler
    list[#list + 1] = {name = name, description = t.description, parameters = t.parameters or {type = "object"}}
  end
  local messages = {}
  for i, m in ipairs(opts.messages) do messages[i] = m end
  local step_opts = {}
  for k, v in pairs(opts) do step_opts[k] = v end
  step_opts.tools, step_opts.messages = list, messages
  local max_steps = tonumber(opts.max_steps) or 8
  for step = 1, max_steps do
    local result = ai.chat(step_opts)
    if #result.tool_calls == 0 then
      result.steps, result.messages = step, messages
      return result
    end
    messages[#messages + 1] = {role = "assistant", content = result.content, tool_calls = result.tool_calls}
    for _, call in ipairs(result.tool_calls) do
      local handler, content = handlers[call.name], nil
      if not handler then
        content = "error: no tool named " .. tostring(call.name)
      else
        local ok, out = pcall(handler, call.arguments, opts.ctx)
        if not ok then
          content = "error: " .. (type(out) == "table" and tostring(out.message) or tostring(out))
        elseif type(out) == "string" then
          content = out
        else
          content = json.encode(out == nil and json.null or out)
        end
      end
      messages[#messages + 1] = {role = "tool", tool_call_id = call.id, name = call.name, content = content}
    end
  end
  fail(502, "provider_error", "the model was still calling tools after " .. max_steps .. " steps")
end

return ai

-- OpenAI chat completions adapter (also any OpenAI-compatible server: set OPENAI_BASE_URL).
-- Pure functions only: the host (lua/luagent/ai.lua) does the HTTP, retries and SSE framing.
-- Contract: docs/providers.md.
local json = luagent.json
local NULL = json.null

local function str(v) if type(v) == "string" then return v end end
local function tbl(v) if type(v) == "table" then return v end end
local function num(v) if type(v) == "number" then return v end end

-- message content as text: tables (e.g. a tool's structured result) become their JSON text
local function text_of(c)
  if type(c) == "string" then return c end
  if c == nil or c == NULL then return "" end
  if type(c) == "table" then return json.encode(c) end
  return tostring(c)
end

-- a reply's message content: a string, or (some compatible servers) an array of parts
local function reply_text(c)
  if type(c) == "string" then return c end
  if type(c) ~= "table" then return "" end
  local out = {}
  for _, part in ipairs(c) do
    if type(part) == "table" and str(part.text) then out[#out + 1] = part.text end
  end
  return table.concat(out)
end

local function provider_error(status, message, etype)
  error({code = "provider_error", status = status or 502, message = message, type = etype})
end

-- tool-call arguments: a JSON object text -> table. Returns the table, or nil when the text
-- is not JSON (the caller keeps the text as raw_arguments).
local function decode_args(s)
  if type(s) == "table" then return s end
  if type(s) ~= "string" or not s:find("%S") then return {} end
  local ok, v = pcall(json.decode, s)
  if ok and type(v) == "table" then return v end
  return nil
end

local function lower_finish(v)
  if type(v) ~= "string" or v == "" then return nil end
  return v:lower()
end

local function usage_of(u)
  u = tbl(u) or {}
  return {input_tokens = num(u.prompt_tokens) or 0, output_tokens = num(u.completion_tokens) or 0}
end

-- a json_schema name must match ^[a-zA-Z0-9_-]{1,64}$
local function schema_name(rf)
  local n = str(rf.name) or (tbl(rf.json_schema) and str(rf.json_schema.title)) or "response"
  n = n:gsub("[^%w_%-]", "_"):sub(1, 64)
  if n == "" then n = "response" end
  return n
end

local function encode_tool_call(tc)
  local args = tc.arguments
  if type(args) ~= "string" then
    if str(tc.raw_arguments) and (args == nil or next(args) == nil) then
      args = tc.raw_arguments
    else
      args = json.encode(args or {})
    end
  end
  local out = {id = tc.id, type = "function", ["function"] = {name = tc.name, arguments = args}}
  if str(tc.thought_signature) then -- Gemini's OpenAI-compatible endpoint: replay its signature
    out.extra_content = {google = {thought_signature = tc.thought_signature}}
  end
  return out
end

local function convert_messages(messages)
  local out = json.array()
  for _, m in ipairs(messages or {}) do
    local role = m.role
    if role == "tool" then
      out[#out + 1] = {role = "tool", tool_call_id = m.tool_call_id, content = text_of(m.content)}
    elseif role == "assistant" then
      local msg = {role = "assistant"}
      local calls = tbl(m.tool_calls)
      if calls and #calls > 0 then
        local tcs = json.array()
        for i, tc in ipairs(calls) do tcs[i] = encode_tool_call(tc) end
        msg.tool_calls = tcs
        local c = text_of(m.content)
        msg.content = c ~= "" and c or NULL
      else
        msg.content = text_of(m.content)
      end
      if str(m.name) then msg.name = m.name end
      out[#out + 1] = msg
    else -- system, user (and any other role the caller uses) pass through
      local msg = {role = role, content = text_of(m.content)}
      if str(m.name) then msg.name = m.name end
      out[#out + 1] = msg
    end
  end
  return out
end

local function convert_tools(tools)
  local out = json.array()
  for _, t in ipairs(tools) do
    local fn = {name = t.name, description = t.description}
    if t.parameters ~= nil then fn.parameters = t.parameters end
    out[#out + 1] = {type = "function", ["function"] = fn}
  end
  return out
end

local function convert_tool_choice(tc)
  if type(tc) == "string" then return tc end
  if type(tc) == "table" and str(tc.name) then
    return {type = "function", ["function"] = {name = tc.name}}
  end
  return nil
end

local function build_request(req, cfg)
  cfg = cfg or {}
  local base = cfg.base_url or "https://api.openai.com/v1"
  local body = {model = req.model, messages = convert_messages(req.messages)}
  if tbl(req.tools) and #req.tools > 0 then
    body.tools = convert_tools(req.tools)
  end
  local choice = convert_tool_choice(req.tool_choice)
  if choice ~= nil and body.tools then body.tool_choice = choice end
  if num(req.temperature) then body.temperature = req.temperature end
  if num(req.max_tokens) then
    -- api.openai.com deprecated max_tokens (reasoning models refuse it); compatible servers
    -- (vLLM, Ollama, llama.cpp, LiteLLM, ...) all understand max_tokens.
    if base:find("^https://api%.openai%.com") then
      body.max_completion_tokens = req.max_tokens
    else
      body.max_tokens = req.max_tokens
    end
  end
  local rf = tbl(req.response_format)
  if rf and tbl(rf.json_schema) then
    body.response_format = {type = "json_schema", json_schema = {
      name = schema_name(rf), schema = rf.json_schema, strict = rf.strict ~= false}}
  end
  if req.stream then
    body.stream = true
    body.stream_options = {include_usage = true}
  end
  local headers = {["content-type"] = "application/json", accept = req.stream and "text/event-stream" or "application/json"}
  if str(cfg.api_key) and cfg.api_key ~= "" then
    headers.authorization = "Bearer " .. cfg.api_key
  end
  return {method = "POST", url = base .. "/chat/completions", headers = headers, body = body}
end

local function error_status(err)
  local code = err.code
  if type(code) == "number" and code >= 400 and code <= 599 then return code end
  local s = num(err.status)
  if s and s >= 400 and s <= 599 then return s end
  local t = str(err.type) or str(code) or ""
  if t:find("rate_limit") or t == "insufficient_quota" or t == "tokens" or t == "requests" then return 429 end
  if t == "server_error" or t == "internal_error" or t == "api_error" then return 500 end
  if t:find("overload") or t == "service_unavailable" then return 503 end
  return 502
end

local function raise_body_error(err)
  if type(err) == "string" then provider_error(502, "openai: " .. err) end
  err = tbl(err) or {}
  provider_error(error_status(err), str(err.message) or "openai: error in reply",
                 str(err.type) or str(err.code))
end

local function finish_calls(calls)
  local out = json.array()
  for i, c in ipairs(calls) do
    local args = decode_args(c.args)
    local tc = {id = c.id, name = c.name or "", arguments = args or {}}
    if args == nil then tc.raw_arguments = c.args end
    if c.thought_signature then tc.thought_signature = c.thought_signature end
    out[i] = tc
  end
  return out
end

local function signature_of(tc)
  local ec = tbl(tc.extra_content)
  local g = ec and tbl(ec.google)
  return g and str(g.thought_signature)
end

local function normalize_finish(finish, ncalls)
  if finish == nil then return ncalls > 0 and "tool_calls" or "stop" end
  if finish == "function_call" then return "tool_calls" end
  if ncalls > 0 and finish == "stop" then return "tool_calls" end -- some compatible servers say stop
  return finish
end

-- What parse_response and stream_event read of a reply or a chunk: the host decodes only this.
local USAGE = {prompt_tokens = true, completion_tokens = true}
local REPLY_SHAPE = json.shape{error = true, model = true, usage = USAGE,
  choices = {finish_reason = true, message = {content = true, tool_calls = true, refusal = true}}}
local CHUNK_SHAPE = json.shape{error = true, model = true, usage = USAGE,
  choices = {finish_reason = true, delta = {content = true, tool_calls = true, refusal = true}}}

local function parse_response(status, headers, body, req)
  if type(body) ~= "table" then provider_error(502, "openai: reply is not a JSON object") end
  if body.error ~= nil and body.error ~= NULL then raise_body_error(body.error) end
  local choices = tbl(body.choices)
  local choice = choices and tbl(choices[1])
  if not choice then provider_error(502, "openai: reply has no choices") end
  local msg = tbl(choice.message) or {}
  local tool_calls, tcs = nil, tbl(msg.tool_calls)
  if tcs then
    local calls = {}
    for i, tc in ipairs(tcs) do
      local fn = tbl(tc["function"]) or {}
      calls[#calls + 1] = {id = str(tc.id) or ("call_" .. i), name = str(fn.name),
                           args = fn.arguments, thought_signature = signature_of(tc)}
    end
    tool_calls = finish_calls(calls)
  else
    tool_calls = json.array()
  end
  local result = {
    content = reply_text(msg.content),
    tool_calls = tool_calls,
    usage = usage_of(body.usage),
    finish_reason = normalize_finish(lower_finish(choice.finish_reason), #tool_calls),
    model = str(body.model) or (req and req.model) or "",
  }
  if str(msg.refusal) then result.refusal = msg.refusal end
  return result
end

local function stream_init(req)
  return {parts = {}, calls = {}, order = {}, refusal = {}, req_model = req and req.model}
end

local function stream_event(state, event, data)
  if type(data) ~= "string" then return nil end
  local d = data:match("^%s*(.-)%s*$")
  if d == "" then return nil end
  if d == "[DONE]" then state.done = true return nil end
  local ok, obj = pcall(json.decode, d, event ~= "error" and CHUNK_SHAPE or nil)
  if not ok or type(obj) ~= "table" then
    if event == "error" then provider_error(502, "openai: " .. d:sub(1, 200)) end
    provider_error(502, "openai: malformed stream chunk")
  end
  if obj.error ~= nil and obj.error ~= NULL then raise_body_error(obj.error) end
  if event == "error" then raise_body_error(obj) end
  if str(obj.model) then state.model = obj.model end
  if tbl(obj.usage) then state.usage = usage_of(obj.usage) end
  local choices = tbl(obj.choices)
  local choice = choices and tbl(choices[1])
  if not choice then return nil end
  local fr = lower_finish(choice.finish_reason)
  if fr then state.finish = fr end
  local delta = tbl(choice.delta)
  if not delta then return nil end
  for _, tc in ipairs(tbl(delta.tool_calls) or {}) do
    local idx = num(tc.index)
    if idx == nil then -- servers that omit index: a fragment with a new id opens a new call
      local last = state.order[#state.order]
      if last == nil or (str(tc.id) and state.calls[last].id and state.calls[last].id ~= tc.id) then
        idx = (last or -1) + 1
      else
        idx = last
      end
    end
    local slot = state.calls[idx]
    if not slot then
      slot = {args = {}}
      state.calls[idx] = slot
      state.order[#state.order + 1] = idx
    end
    if str(tc.id) and tc.id ~= "" and not slot.id then slot.id = tc.id end
    local fn = tbl(tc["function"])
    if fn then
      if str(fn.name) and fn.name ~= "" and not slot.name then slot.name = fn.name end
      if str(fn.arguments) then slot.args[#slot.args + 1] = fn.arguments end
    end
    local sig = signature_of(tc)
    if sig then slot.thought_signature = sig end
  end
  if str(delta.refusal) then state.refusal[#state.refusal + 1] = delta.refusal end
  local text = str(delta.content)
  if text and text ~= "" then
    state.parts[#state.parts + 1] = text
    return text
  end
  return nil
end

local function stream_finish(state)
  table.sort(state.order)
  local calls = {}
  for i, idx in ipairs(state.order) do
    local s = state.calls[idx]
    calls[i] = {id = s.id or ("call_" .. i), name = s.name, args = table.concat(s.args),
                thought_signature = s.thought_signature}
  end
  local tool_calls = finish_calls(calls)
  local result = {
    content = table.concat(state.parts),
    tool_calls = tool_calls,
    usage = state.usage or {input_tokens = 0, output_tokens = 0},
    finish_reason = normalize_finish(state.finish, #tool_calls),
    model = state.model or state.req_model or "",
  }
  if #state.refusal > 0 then result.refusal = table.concat(state.refusal) end
  return result
end

-- errors ----------------------------------------------------------------------------------------

local header, retry_after_ms, retryable_status = -- shared: lua/luagent/httputil.lua
  luagent.http.header, luagent.http.retry_after_ms, luagent.http.retryable_status

local function classify_error(status, headers, body_text)
  status = tonumber(status) or 0
  local r = {retryable = retryable_status(status), retry_after_ms = retry_after_ms(headers)}
  local obj
  if type(body_text) == "string" and body_text:find("%S") then
    local ok, v = pcall(json.decode, body_text)
    if ok then obj = v end
  end
  local err = tbl(obj) and obj.error
  if type(err) == "table" then
    r.message = str(err.message)
    r.type = str(err.type) or str(err.code)
    -- a 429 for an exhausted quota or billing limit does not get better by retrying
    if err.type == "insufficient_quota" or err.code == "insufficient_quota" then r.retryable = false end
  elseif type(err) == "string" then
    r.message = err
  elseif tbl(obj) and str(obj.message) then
    r.message = obj.message
  end
  local should = header(headers, "x-should-retry")
  if should == "true" then r.retryable = true elseif should == "false" then r.retryable = false end
  if not r.message or r.message == "" then
    r.message = luagent.http.status_message("openai", status, obj == nil and body_text or nil)
  end
  return r
end

return {
  name = "openai",
  default_model = "gpt-4o-mini",
  default_base_url = "https://api.openai.com/v1",
  key_env = {"OPENAI_API_KEY"},
  base_url_env = "OPENAI_BASE_URL",
  families = {"^gpt", "^o%d", "^chatgpt"},
  build_request = build_request,
  reply_shape = REPLY_SHAPE,
  parse_response = parse_response,
  stream_init = stream_init,
  stream_event = stream_event,
  stream_finish = stream_finish,
  classify_error = classify_error,
}

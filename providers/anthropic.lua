-- Anthropic Messages API adapter. Pure functions only: the host (lua/luagent/ai.lua) does the
-- HTTP, retries and SSE framing. Contract: docs/providers.md.
local json = luagent.json
local NULL = json.null

local function str(v) if type(v) == "string" then return v end end
local function tbl(v) if type(v) == "table" then return v end end
local function num(v) if type(v) == "number" then return v end end

local function text_of(c)
  if type(c) == "string" then return c end
  if c == nil or c == NULL then return "" end
  if type(c) == "table" then return json.encode(c) end
  return tostring(c)
end

local function provider_error(status, message, etype)
  error({code = "provider_error", status = status or 502, message = message, type = etype})
end

-- Anthropic error types -> the HTTP status the same error has outside a stream
local ERROR_STATUS = {
  invalid_request_error = 400, authentication_error = 401, billing_error = 402,
  permission_error = 403, not_found_error = 404, request_too_large = 413,
  rate_limit_error = 429, api_error = 500, timeout_error = 504, overloaded_error = 529,
}

local STOP = {end_turn = "stop", stop_sequence = "stop", tool_use = "tool_calls",
              max_tokens = "length", refusal = "content_filter"}

local function finish_of(stop_reason)
  if type(stop_reason) ~= "string" or stop_reason == "" then return nil end
  return STOP[stop_reason] or stop_reason:lower()
end

-- Structured output: Anthropic has no JSON-schema mode, so the schema becomes a tool the model
-- is made to call; its input is the answer. Tool input must be an object: any other schema is
-- wrapped as {value = <schema>} and unwrapped again on the way back.
local function structured(req)
  local rf = req and tbl(req.response_format)
  local schema = rf and tbl(rf.json_schema)
  if not schema then return nil end
  local name = str(rf.name) or str(schema.title) or "structured_output"
  name = name:gsub("[^%w_%-]", "_"):sub(1, 64)
  if name == "" then name = "structured_output" end
  local wrapped = schema.type ~= "object"
  local input_schema = schema
  if wrapped then
    input_schema = {type = "object", properties = {value = schema}, required = json.array({"value"})}
  end
  return {name = name, schema = input_schema, wrapped = wrapped}
end

local function convert_messages(messages)
  local out, system = json.array(), {}
  local last_kind -- "tool": the last message is a user message of tool_result blocks (+ text)
  for _, m in ipairs(messages or {}) do
    local role = m.role
    if role == "system" then
      system[#system + 1] = text_of(m.content)
      -- a system message is not a turn: tool results around it still merge
    elseif role == "tool" then
      local block = {type = "tool_result", tool_use_id = m.tool_call_id}
      local c = text_of(m.content)
      if c ~= "" then block.content = c end
      if m.is_error then block.is_error = true end
      local last = out[#out]
      if last_kind == "tool" then
        last.content[#last.content + 1] = block
      else
        out[#out + 1] = {role = "user", content = json.array({block})}
        last_kind = "tool"
      end
    elseif role == "assistant" then
      local blocks = json.array()
      local text = text_of(m.content)
      if text ~= "" then blocks[#blocks + 1] = {type = "text", text = text} end
      for _, tc in ipairs(tbl(m.tool_calls) or {}) do
        local input = tc.arguments
        if type(input) ~= "table" then input = {} end
        blocks[#blocks + 1] = {type = "tool_use", id = tc.id, name = tc.name, input = input}
      end
      if #blocks == 1 and blocks[1].type == "text" then
        out[#out + 1] = {role = "assistant", content = text}
      elseif #blocks > 0 then
        out[#out + 1] = {role = "assistant", content = blocks}
      end -- an empty assistant turn is dropped: the API refuses empty content
      last_kind = "assistant"
    else -- user
      local text = text_of(m.content)
      if last_kind == "tool" then
        -- text after tool results joins their user turn (tool_result blocks first, as required)
        local last = out[#out]
        last.content[#last.content + 1] = {type = "text", text = text}
        last_kind = "user"
      else
        out[#out + 1] = {role = "user", content = text}
        last_kind = "user"
      end
    end
  end
  return out, system
end

local function convert_tools(tools)
  local out = json.array()
  for _, t in ipairs(tools or {}) do
    local schema = tbl(t.parameters) or {type = "object", properties = {}}
    local tool = {name = t.name, input_schema = schema}
    if str(t.description) then tool.description = t.description end
    out[#out + 1] = tool
  end
  return out
end

local function convert_tool_choice(tc)
  if tc == "auto" then return {type = "auto"} end
  if tc == "required" then return {type = "any"} end
  if tc == "none" then return {type = "none"} end
  if type(tc) == "table" and str(tc.name) then return {type = "tool", name = tc.name} end
  return nil
end

local function build_request(req, cfg)
  cfg = cfg or {}
  local messages, system = convert_messages(req.messages)
  local body = {model = req.model, max_tokens = num(req.max_tokens) or 1024, messages = messages}
  if #system > 0 then body.system = table.concat(system, "\n\n") end
  local tools = tbl(req.tools) and #req.tools > 0 and convert_tools(req.tools) or nil
  local choice = convert_tool_choice(req.tool_choice)
  local so = structured(req)
  if so then
    tools = tools or json.array()
    tools[#tools + 1] = {name = so.name, input_schema = so.schema,
                         description = "Respond by calling this tool: its input is your answer, " ..
                                       "a JSON value matching the schema."}
    if #tools == 1 or req.tool_choice == "none" then
      choice = {type = "tool", name = so.name}
    elseif choice == nil or choice.type == "auto" then
      choice = {type = "any"} -- may call the caller's tools first; the schema tool ends the turn
    end
  end
  if tools then
    body.tools = tools
    if choice then body.tool_choice = choice end
  end
  if num(req.temperature) then body.temperature = req.temperature end
  if req.stream then body.stream = true end
  local headers = {
    ["content-type"] = "application/json",
    ["anthropic-version"] = cfg.anthropic_version or "2023-06-01",
    accept = req.stream and "text/event-stream" or "application/json",
  }
  if str(cfg.api_key) and cfg.api_key ~= "" then headers["x-api-key"] = cfg.api_key end
  local base = cfg.base_url or "https://api.anthropic.com"
  return {method = "POST", url = base .. "/v1/messages", headers = headers, body = body}
end

local function usage_of(u, into)
  into = into or {input_tokens = 0, output_tokens = 0}
  u = tbl(u)
  if not u then return into end
  -- input_tokens excludes cache reads and writes: the total prompt is their sum
  local input = num(u.input_tokens)
  if input then
    into.input_tokens = input + (num(u.cache_creation_input_tokens) or 0) + (num(u.cache_read_input_tokens) or 0)
  end
  if num(u.output_tokens) then into.output_tokens = u.output_tokens end
  return into
end

local function raise_error_object(err, fallback_status)
  err = tbl(err) or {}
  local t = str(err.type)
  provider_error((t and ERROR_STATUS[t]) or fallback_status or 502,
                 str(err.message) or ("anthropic: " .. (t or "error")), t)
end

-- Turns tool calls + the structured-output call into the result's content/tool_calls/finish.
local function assemble(texts, calls, so, finish, raw_structured)
  local tool_calls, answer = json.array(), nil
  for _, c in ipairs(calls) do
    if so and c.name == so.name then
      answer = c
    else
      tool_calls[#tool_calls + 1] = c
    end
  end
  local content = table.concat(texts)
  if answer and #tool_calls == 0 then
    local v = answer.arguments
    if so.wrapped then
      content = json.encode(v.value == nil and NULL or v.value)
    else
      content = raw_structured or json.encode(v)
    end
    finish = (finish == nil or finish == "tool_calls") and "stop" or finish
  elseif #tool_calls > 0 and (finish == nil or finish == "stop") then
    finish = "tool_calls"
  end
  return content, tool_calls, finish or "stop"
end

-- What parse_response reads of a reply: the host decodes only this.
local REPLY_SHAPE = json.shape{type = true, error = true, model = true, stop_reason = true, usage = true,
  content = {type = true, text = true, id = true, name = true, input = true}}

local function parse_response(status, headers, body, req)
  if type(body) ~= "table" then provider_error(502, "anthropic: reply is not a JSON object") end
  if body.type == "error" then raise_error_object(body.error) end
  local texts, calls = {}, {}
  for _, b in ipairs(tbl(body.content) or {}) do
    if b.type == "text" and str(b.text) then
      texts[#texts + 1] = b.text
    elseif b.type == "tool_use" then
      calls[#calls + 1] = {id = str(b.id) or ("call_" .. (#calls + 1)), name = str(b.name) or "",
                           arguments = tbl(b.input) or {}}
    end
  end
  local content, tool_calls, finish = assemble(texts, calls, structured(req), finish_of(body.stop_reason))
  return {content = content, tool_calls = tool_calls, usage = usage_of(body.usage),
          finish_reason = finish, model = str(body.model) or (req and req.model) or ""}
end

local function stream_init(req)
  return {texts = {}, blocks = {}, order = {}, usage = {input_tokens = 0, output_tokens = 0},
          so = structured(req), req_model = req and req.model}
end

local function stream_event(state, event, data)
  if type(data) ~= "string" or not data:find("%S") then return nil end
  local ok, obj = pcall(json.decode, data)
  if not ok or type(obj) ~= "table" then provider_error(502, "anthropic: malformed stream event") end
  local kind = str(event) or str(obj.type)
  if kind == "error" or obj.type == "error" then
    raise_error_object(obj.error)
  elseif kind == "message_start" then
    local m = tbl(obj.message) or {}
    if str(m.model) then state.model = m.model end
    usage_of(m.usage, state.usage)
  elseif kind == "content_block_start" then
    local cb = tbl(obj.content_block) or {}
    local idx = num(obj.index) or #state.order
    local block = {type = cb.type, id = str(cb.id), name = str(cb.name), json = {}, input = tbl(cb.input)}
    if not state.blocks[idx] then state.order[#state.order + 1] = idx end
    state.blocks[idx] = block
    if cb.type == "text" and str(cb.text) and cb.text ~= "" then
      state.texts[#state.texts + 1] = cb.text
      return cb.text
    end
  elseif kind == "content_block_delta" then
    local d = tbl(obj.delta) or {}
    local idx = num(obj.index) or -1
    local block = state.blocks[idx]
    if d.type == "text_delta" and str(d.text) then
      if d.text == "" then return nil end
      state.texts[#state.texts + 1] = d.text
      return d.text
    elseif d.type == "input_json_delta" and str(d.partial_json) then
      if not block then
        block = {type = "tool_use", json = {}}
        state.blocks[idx] = block
        state.order[#state.order + 1] = idx
      end
      block.json[#block.json + 1] = d.partial_json
      -- the structured-output tool's input is the answer: stream it like text
      if state.so and block.name == state.so.name and not state.so.wrapped and d.partial_json ~= "" then
        return d.partial_json
      end
    end
  elseif kind == "message_delta" then
    local d = tbl(obj.delta) or {}
    local f = finish_of(d.stop_reason)
    if f then state.finish = f end
    usage_of(obj.usage, state.usage)
  elseif kind == "message_stop" then
    state.done = true
  end -- ping, content_block_stop and unknown events carry nothing we need
  return nil
end

local function stream_finish(state)
  table.sort(state.order)
  local calls, raw_structured = {}, nil
  for _, idx in ipairs(state.order) do
    local b = state.blocks[idx]
    if b.type == "tool_use" then
      local raw = table.concat(b.json)
      local args, bad
      if raw:find("%S") then
        local ok, v = pcall(json.decode, raw)
        if ok and type(v) == "table" then args = v else bad = true end
      end
      local c = {id = b.id or ("call_" .. (#calls + 1)), name = b.name or "", arguments = args or b.input or {}}
      if bad then c.raw_arguments = raw end
      -- the answer's text as streamed (cut short by max_tokens, it stays invalid JSON on purpose)
      if state.so and b.name == state.so.name and not state.so.wrapped and raw:find("%S") then
        raw_structured = raw
      end
      calls[#calls + 1] = c
    end
  end
  local content, tool_calls, finish = assemble(state.texts, calls, state.so, state.finish, raw_structured)
  return {content = content, tool_calls = tool_calls, usage = state.usage, finish_reason = finish,
          model = state.model or state.req_model or ""}
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
    r.type = str(err.type)
  elseif tbl(obj) and str(obj.message) then
    r.message = obj.message
  end
  local should = header(headers, "x-should-retry")
  if should == "true" then r.retryable = true elseif should == "false" then r.retryable = false end
  if not r.message or r.message == "" then
    r.message = luagent.http.status_message("anthropic", status, obj == nil and body_text or nil)
  end
  return r
end

return {
  name = "anthropic",
  default_model = "claude-haiku-4-5",
  default_base_url = "https://api.anthropic.com",
  key_env = {"ANTHROPIC_API_KEY"},
  base_url_env = "ANTHROPIC_BASE_URL",
  families = {"^claude"},
  build_request = build_request,
  reply_shape = REPLY_SHAPE,
  parse_response = parse_response,
  stream_init = stream_init,
  stream_event = stream_event,
  stream_finish = stream_finish,
  classify_error = classify_error,
}

-- Google Gemini API adapter (generateContent / streamGenerateContent?alt=sse). Pure functions
-- only: the host (lua/luagent/ai.lua) does the HTTP, retries and SSE framing.
-- Contract: docs/providers.md.
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

-- Gemini's `parameters` / `responseSchema` take an OpenAPI 3.0 subset and refuse other keywords
-- ("Unknown name additionalProperties"); `parametersJsonSchema` / `responseJsonSchema` take JSON
-- Schema. A schema that stays inside the subset goes in the classic field, any other in the
-- JSON-Schema one.
local SUBSET = {
  type = true, format = true, title = true, description = true, nullable = true, enum = true,
  maxItems = true, minItems = true, properties = true, required = true, minProperties = true,
  maxProperties = true, minLength = true, maxLength = true, pattern = true, example = true,
  anyOf = true, propertyOrdering = true, default = true, items = true, minimum = true, maximum = true,
}

local function in_subset(s, depth)
  if type(s) ~= "table" then return false end
  if depth > 64 then return false end
  for k, v in pairs(s) do
    if not SUBSET[k] then return false end
    if k == "type" and type(v) ~= "string" then return false end
    if k == "properties" then
      if type(v) ~= "table" then return false end
      for _, p in pairs(v) do
        if not in_subset(p, depth + 1) then return false end
      end
    elseif k == "items" then
      if not in_subset(v, depth + 1) then return false end
    elseif k == "anyOf" then
      if type(v) ~= "table" then return false end
      for _, p in ipairs(v) do
        if not in_subset(p, depth + 1) then return false end
      end
    end
  end
  return true
end

local function convert_contents(messages)
  local contents, system = json.array(), {}
  local names = {}       -- tool call id -> function name, from the assistant turns seen so far
  local last_responses   -- the user content holding the latest run of functionResponse parts
  for _, m in ipairs(messages or {}) do
    local role = m.role
    if role == "system" then
      system[#system + 1] = text_of(m.content)
    elseif role == "tool" then
      local c = m.content
      if type(c) ~= "table" then c = text_of(c) end
      local part = {functionResponse = {
        name = names[m.tool_call_id or ""] or str(m.name) or "tool",
        response = {content = c},
      }}
      if last_responses then
        last_responses.parts[#last_responses.parts + 1] = part
      else
        last_responses = {role = "user", parts = json.array({part})}
        contents[#contents + 1] = last_responses
      end
    elseif role == "assistant" then
      last_responses = nil
      local parts = json.array()
      local text = text_of(m.content)
      if text ~= "" then parts[#parts + 1] = {text = text} end
      for _, tc in ipairs(tbl(m.tool_calls) or {}) do
        local args = tc.arguments
        if type(args) ~= "table" then args = {} end
        local part = {functionCall = {name = tc.name, args = args}}
        if str(tc.thought_signature) then part.thoughtSignature = tc.thought_signature end
        parts[#parts + 1] = part
        if str(tc.id) then names[tc.id] = tc.name end
      end
      if #parts > 0 then contents[#contents + 1] = {role = "model", parts = parts} end
    else -- user
      last_responses = nil
      contents[#contents + 1] = {role = "user", parts = json.array({{text = text_of(m.content)}})}
    end
  end
  return contents, system
end

local function convert_tools(tools)
  local decls = json.array()
  for _, t in ipairs(tools) do
    local d = {name = t.name}
    if str(t.description) then d.description = t.description end
    local p = tbl(t.parameters)
    if p then
      if in_subset(p, 0) then d.parameters = p else d.parametersJsonSchema = p end
    end
    decls[#decls + 1] = d
  end
  return json.array({{functionDeclarations = decls}})
end

local function convert_tool_choice(tc)
  if tc == "auto" then return {functionCallingConfig = {mode = "AUTO"}} end
  if tc == "none" then return {functionCallingConfig = {mode = "NONE"}} end
  if tc == "required" then return {functionCallingConfig = {mode = "ANY"}} end
  if type(tc) == "table" and str(tc.name) then
    return {functionCallingConfig = {mode = "ANY", allowedFunctionNames = json.array({tc.name})}}
  end
  return nil
end

local function build_request(req, cfg)
  cfg = cfg or {}
  local contents, system = convert_contents(req.messages)
  local body = {contents = contents}
  if #system > 0 then
    body.systemInstruction = {parts = json.array({{text = table.concat(system, "\n\n")}})}
  end
  if tbl(req.tools) and #req.tools > 0 then
    body.tools = convert_tools(req.tools)
    local choice = convert_tool_choice(req.tool_choice)
    if choice then body.toolConfig = choice end
  end
  local gc, any = {}, false
  if num(req.temperature) then gc.temperature = req.temperature any = true end
  if num(req.max_tokens) then gc.maxOutputTokens = req.max_tokens any = true end
  local rf = tbl(req.response_format)
  if rf and tbl(rf.json_schema) then
    gc.responseMimeType = "application/json"
    if in_subset(rf.json_schema, 0) then
      gc.responseSchema = rf.json_schema
    else
      gc.responseJsonSchema = rf.json_schema
    end
    any = true
  end
  if any then body.generationConfig = gc end
  local model = (req.model or ""):gsub("^models/", "")
  local base = cfg.base_url or "https://generativelanguage.googleapis.com"
  local url = base .. "/v1beta/models/" .. model ..
              (req.stream and ":streamGenerateContent?alt=sse" or ":generateContent")
  local headers = {["content-type"] = "application/json",
                   accept = req.stream and "text/event-stream" or "application/json"}
  if str(cfg.api_key) and cfg.api_key ~= "" then headers["x-goog-api-key"] = cfg.api_key end
  return {method = "POST", url = url, headers = headers, body = body}
end

local FILTERED = {SAFETY = true, BLOCKLIST = true, PROHIBITED_CONTENT = true, SPII = true,
                  IMAGE_SAFETY = true}

local function finish_of(reason)
  if type(reason) ~= "string" or reason == "" or reason == "FINISH_REASON_UNSPECIFIED" then return nil end
  if reason == "STOP" then return "stop" end
  if reason == "MAX_TOKENS" then return "length" end
  if FILTERED[reason] then return "content_filter" end
  return reason:lower()
end

local function usage_of(u)
  u = tbl(u) or {}
  -- thinking tokens are billed as output (OpenAI's completion_tokens includes reasoning too)
  return {input_tokens = num(u.promptTokenCount) or 0,
          output_tokens = (num(u.candidatesTokenCount) or 0) + (num(u.thoughtsTokenCount) or 0)}
end

local function raise_error_object(err)
  err = tbl(err) or {}
  local code = num(err.code)
  provider_error((code and code >= 400 and code <= 599) and code or 502,
                 str(err.message) or "gemini: error in reply", str(err.status))
end

-- What absorb reads of a reply or a stream chunk: the host decodes only this (a chunk may be
-- [{"error": ...}]: a shape applies to each element of an array).
local SHAPE = json.shape{error = true, modelVersion = true, promptFeedback = {blockReason = true},
  usageMetadata = {promptTokenCount = true, candidatesTokenCount = true, thoughtsTokenCount = true},
  candidates = {finishReason = true, content = {parts = true}}}

-- Reads one response object's first candidate into acc: text pieces (returned joined), function
-- calls (ids "call_N" counted over the whole reply unless Gemini gives one), finish reason.
local function absorb(acc, obj)
  if obj.error ~= nil and obj.error ~= NULL then raise_error_object(obj.error) end
  if str(obj.modelVersion) then acc.model = obj.modelVersion end
  if tbl(obj.usageMetadata) then acc.usage = usage_of(obj.usageMetadata) end
  local pf = tbl(obj.promptFeedback)
  if pf and str(pf.blockReason) then acc.blocked = true end
  local cands = tbl(obj.candidates)
  local cand = cands and tbl(cands[1])
  if not cand then return nil end
  local f = finish_of(cand.finishReason)
  if f then acc.finish = f end
  local content = tbl(cand.content)
  local pieces = {}
  for _, p in ipairs(content and tbl(content.parts) or {}) do
    if type(p) == "table" and p.thought ~= true then
      local fc = tbl(p.functionCall)
      if fc then
        acc.ncalls = acc.ncalls + 1
        local call = {id = str(fc.id) or ("call_" .. acc.ncalls), name = str(fc.name) or "",
                      arguments = tbl(fc.args) or {}}
        local sig = str(p.thoughtSignature) or str(fc.thoughtSignature)
        if sig then call.thought_signature = sig end
        acc.calls[#acc.calls + 1] = call
      elseif str(p.text) and p.text ~= "" then
        pieces[#pieces + 1] = p.text
        acc.texts[#acc.texts + 1] = p.text
      end
    end
  end
  if #pieces > 0 then return table.concat(pieces) end
  return nil
end

local function new_acc(req)
  return {texts = {}, calls = json.array(), ncalls = 0, req_model = req and req.model}
end

local function result_of(acc)
  local finish = acc.finish
  if #acc.calls > 0 and (finish == nil or finish == "stop") then finish = "tool_calls" end
  if finish == nil then finish = acc.blocked and "content_filter" or "stop" end
  return {content = table.concat(acc.texts), tool_calls = acc.calls,
          usage = acc.usage or {input_tokens = 0, output_tokens = 0}, finish_reason = finish,
          model = acc.model or acc.req_model or ""}
end

local function parse_response(status, headers, body, req)
  if type(body) ~= "table" then provider_error(502, "gemini: reply is not a JSON object") end
  local acc = new_acc(req)
  absorb(acc, body)
  return result_of(acc)
end

local function stream_init(req)
  return new_acc(req)
end

local function stream_event(state, event, data)
  if type(data) ~= "string" or not data:find("%S") then return nil end
  local ok, obj = pcall(json.decode, data, SHAPE)
  if not ok or type(obj) ~= "table" then provider_error(502, "gemini: malformed stream chunk") end
  if obj[1] ~= nil and obj.candidates == nil then obj = tbl(obj[1]) or {} end -- [{"error": ...}]
  return absorb(state, obj)
end

local function stream_finish(state)
  return result_of(state)
end

-- errors ----------------------------------------------------------------------------------------

local header, retry_after_ms, retryable_status = -- shared: lua/luagent/httputil.lua
  luagent.http.header, luagent.http.retry_after_ms, luagent.http.retryable_status

-- google.rpc.RetryInfo: {"@type": "...RetryInfo", "retryDelay": "1.5s"} (a Duration: seconds
-- with an "s" suffix)
local function retry_delay_ms(details)
  for _, d in ipairs(tbl(details) or {}) do
    local rd = type(d) == "table" and str(d.retryDelay)
    local n = rd and tonumber(rd:match("^%s*(%d+%.?%d*)s%s*$"))
    if n then return math.floor(n * 1000 + 0.5) end
  end
  return nil
end

local function classify_error(status, headers, body_text)
  status = tonumber(status) or 0
  local r = {retryable = retryable_status(status), retry_after_ms = retry_after_ms(headers)}
  local obj
  if type(body_text) == "string" and body_text:find("%S") then
    local ok, v = pcall(json.decode, body_text)
    if ok then obj = v end
  end
  if tbl(obj) and obj.error == nil and tbl(obj[1]) then obj = obj[1] end -- [{"error": ...}]
  local err = tbl(obj) and obj.error
  if type(err) == "table" then
    r.message = str(err.message)
    r.type = str(err.status)
    if r.retry_after_ms == nil then r.retry_after_ms = retry_delay_ms(err.details) end
  elseif tbl(obj) and str(obj.message) then
    r.message = obj.message
  end
  if not r.message or r.message == "" then
    r.message = luagent.http.status_message("gemini", status, obj == nil and body_text or nil)
  end
  return r
end

return {
  name = "google",
  aliases = {"gemini"},
  default_model = "gemini-flash-latest",
  default_base_url = "https://generativelanguage.googleapis.com",
  key_env = {"GEMINI_API_KEY", "GOOGLE_API_KEY"},
  base_url_env = "GEMINI_BASE_URL",
  families = {"^gemini"},
  build_request = build_request,
  reply_shape = SHAPE,
  parse_response = parse_response,
  stream_init = stream_init,
  stream_event = stream_event,
  stream_finish = stream_finish,
  classify_error = classify_error,
}

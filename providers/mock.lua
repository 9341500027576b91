-- The offline provider: deterministic answers with no network, so everything runs without keys.
-- The host calls local_call(req) instead of build_request + HTTP and streams `chunks` as tokens.
-- Contract and behaviour: docs/providers.md.
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

local function words(s)
  local n = 0
  for _ in s:gmatch("%S+") do n = n + 1 end
  return n
end

-- Pieces to stream: each word with the whitespace before it; the pieces join back to `s`.
local function split(s)
  local chunks, pos = {}, 1
  while pos <= #s do
    local _, e = s:find("^%s*%S+", pos)
    if not e then
      if #chunks > 0 then chunks[#chunks] = chunks[#chunks] .. s:sub(pos) else chunks[1] = s:sub(pos) end
      break
    end
    chunks[#chunks + 1] = s:sub(pos, e)
    pos = e + 1
  end
  return chunks
end

local FORMATS = {
  ["date-time"] = "1970-01-01T00:00:00Z", date = "1970-01-01", time = "00:00:00Z",
  email = "mock@example.com", uri = "https://example.com/", url = "https://example.com/",
  uuid = "00000000-0000-4000-8000-000000000000", hostname = "example.com", ipv4 = "127.0.0.1",
  ipv6 = "::1",
}

-- A minimal value satisfying `s` (the JSON Schema subset agents use): required properties only,
-- "mock" for strings, 0 for numbers (moved into [minimum, maximum]), false, [] (or minItems items).
local function minimal(s, depth)
  depth = depth or 0
  if type(s) ~= "table" then return "mock" end -- no schema: anything goes
  if depth > 32 then return NULL end
  if s.const ~= nil then return s.const end
  if tbl(s.enum) and s.enum[1] ~= nil then return s.enum[1] end
  local alt = tbl(s.anyOf) or tbl(s.oneOf) or tbl(s.allOf)
  if alt and alt[1] ~= nil and s.type == nil and s.properties == nil then
    return minimal(alt[1], depth + 1)
  end
  local t = s.type
  if type(t) == "table" then -- ["string", "null"]: the first non-null type
    local pick = "null"
    for _, v in ipairs(t) do if v ~= "null" then pick = v break end end
    t = pick
  end
  if t == nil then
    if s.properties ~= nil or s.required ~= nil then t = "object"
    elseif s.items ~= nil then t = "array"
    else return "mock" end
  end
  if t == "object" then
    local obj, props = {}, tbl(s.properties) or {}
    for _, k in ipairs(tbl(s.required) or {}) do
      if type(k) == "string" then obj[k] = minimal(props[k], depth + 1) end
    end
    return obj
  elseif t == "array" then
    local arr = json.array()
    for i = 1, math.max(0, math.floor(num(s.minItems) or 0)) do arr[i] = minimal(s.items, depth + 1) end
    return arr
  elseif t == "string" then
    local v = FORMATS[s.format] or "mock"
    local lo, hi = num(s.minLength), num(s.maxLength)
    if lo and #v < lo then v = v .. string.rep("m", lo - #v) end
    if hi and #v > hi then v = v:sub(1, hi) end
    return v
  elseif t == "integer" or t == "number" then
    local v = 0
    local lo, xlo = num(s.minimum), num(s.exclusiveMinimum)
    local hi, xhi = num(s.maximum), num(s.exclusiveMaximum)
    if lo and v < lo then v = lo end
    if xlo and v <= xlo then v = xlo + 1 end
    if hi and v > hi then v = hi end
    if xhi and v >= xhi then v = xhi - 1 end
    if t == "integer" then v = math.ceil(v) end
    return v
  elseif t == "boolean" then
    return false
  elseif t == "null" then
    return NULL
  end
  return "mock"
end

local function local_call(req)
  local messages = tbl(req.messages) or {}
  local last_user, last_tool, has_tool, input_words = "", nil, false, 0
  for _, m in ipairs(messages) do
    local c = text_of(m.content)
    input_words = input_words + words(c)
    if m.role == "user" then last_user = c end
    if m.role == "tool" then has_tool, last_tool = true, c end
  end
  local model = str(req.model) and req.model ~= "" and req.model or "mock-1"
  local tools = tbl(req.tools)
  if tools and #tools > 0 and not has_tool and req.tool_choice ~= "none" then
    local name = tools[1].name
    if type(req.tool_choice) == "table" and str(req.tool_choice.name) then name = req.tool_choice.name end
    return {
      content = "",
      tool_calls = json.array({{id = "call_1", name = name, arguments = {query = last_user}}}),
      usage = {input_tokens = input_words, output_tokens = 0},
      finish_reason = "tool_calls",
      model = model,
    }, {}
  end
  local content = "mock: " .. (has_tool and last_tool or last_user)
  local rf = tbl(req.response_format)
  if rf and tbl(rf.json_schema) then content = json.encode(minimal(rf.json_schema)) end
  return {
    content = content,
    tool_calls = json.array(),
    usage = {input_tokens = input_words, output_tokens = words(content)},
    finish_reason = "stop",
    model = model,
  }, split(content)
end

local function classify_error(status, headers, body_text)
  return {retryable = false, message = "mock: HTTP " .. tostring(status)}
end

return {
  name = "mock",
  default_model = "mock-1",
  key_env = {},
  families = {"^mock"},
  local_call = local_call,
  classify_error = classify_error,
}

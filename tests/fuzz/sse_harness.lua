-- Loaded by fuzz_sse.c: the host's streaming path of luagent.ai (lua/luagent/ai.lua: SSE framing and
-- sse_block, then each adapter's stream_init / stream_event / stream_finish) fed a hostile upstream
-- stream through a fake host.request. Returns a function (provider, chunks) -> nil when the outcome
-- is one ai.lua promises, else a string saying what went wrong.
local root, json = ...
local luagent = {json = json, now = function() return os.clock() end}
function luagent.sleep() error("luagent.sleep called with retries = 0") end
luagent.http = assert(loadfile(root .. "/lua/luagent/httputil.lua"))()

local adapters = {}
for _, name in ipairs({"openai", "anthropic", "google"}) do
  local f = assert(loadfile(root .. "/providers/" .. name .. ".lua"))
  setfenv(f, setmetatable({luagent = luagent}, {__index = _G}))
  adapters[name] = f()
end

local chunks, emitted
local host = {
  provider = function(n) return adapters[n] end,
  providers = function() return adapters end,
  providers_gen = function() return 1 end,
  setting = function(n) if n:find("KEY", 1, true) then return "fuzz-key" end end,
  emit_token = function(t)
    if type(t) ~= "string" or t == "" then error("emit_token got " .. type(t), 0) end
    emitted[#emitted + 1] = t
  end,
  usage_add = function() end,
  deadline_ms = function() return 1e15 end,
  request = function(r)
    local i = 0
    return {status = 200, headers = {["content-type"] = "text/event-stream"},
            read = function() i = i + 1; return chunks[i] end}
  end,
}
local ai = assert(loadfile(root .. "/lua/luagent/ai.lua"))(luagent, host)

return function(provider, input)
  chunks, emitted = input, {}
  local ok, res = pcall(ai.chat, {provider = provider, prompt = "hi", stream = true, retries = 0})
  if not ok then
    if type(res) ~= "table" then return "a non-table error (the agent would get a 500): " .. tostring(res) end
    if (res.status ~= 502 and res.status ~= 504) or type(res.code) ~= "string" or type(res.message) ~= "string" then
      return "an error outside the contract: " .. tostring(res.status) .. " " .. tostring(res.code)
    end
    return nil
  end
  if type(res) ~= "table" or type(res.content) ~= "string" or type(res.tool_calls) ~= "table"
     or type(res.finish_reason) ~= "string" or type(res.usage) ~= "table" or type(res.model) ~= "string" then
    return "a result outside the contract"
  end
  for _, tc in ipairs(res.tool_calls) do
    if type(tc) ~= "table" or type(tc.id) ~= "string" or type(tc.name) ~= "string" then
      return "a malformed tool call"
    end
  end
  local enc_ok, e = pcall(json.encode, res) -- an agent returns it as it is
  if not enc_ok then return "the result does not encode: " .. tostring(e) end
  return nil
end

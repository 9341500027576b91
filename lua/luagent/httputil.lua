-- Small HTTP helpers shared by every provider adapter (and any agent): luagent.http.header,
-- luagent.http.retry_after_ms, luagent.http.retryable_status, luagent.http.status_message. Pure functions; compiled into the
-- binary and merged into luagent.http. tests/lua/providers_spec.lua loads this same file.
local M = {}

-- a response header by lowercase name, as a string (a repeated header may arrive as a list)
function M.header(headers, name)
  if type(headers) ~= "table" then return nil end
  local v = headers[name]
  if type(v) == "table" then v = v[1] end
  if type(v) == "number" then return tostring(v) end
  if type(v) == "string" then return v end
  return nil
end

-- how long the server asks us to wait: retry-after-ms (ms), else retry-after when it is a number
-- of seconds (an HTTP date is ignored); nil when neither
function M.retry_after_ms(headers)
  local v = M.header(headers, "retry-after-ms")
  local n = v and tonumber(v:match("^%s*(%d+%.?%d*)%s*$"))
  if n then return math.floor(n + 0.5) end
  v = M.header(headers, "retry-after")
  n = v and tonumber(v:match("^%s*(%d+%.?%d*)%s*$"))
  if n then return math.floor(n * 1000 + 0.5) end
  return nil
end

-- the statuses the official SDKs retry: 408, 409, 429 and 5xx (529 included)
function M.retryable_status(s)
  return s == 408 or s == 409 or s == 429 or (s >= 500 and s <= 599)
end

-- an error message when the body gave none: "<name>: HTTP <status>", plus up to 200 characters of
-- a plain-text body (pass nil when the body was JSON; an HTML body is left out)
function M.status_message(name, status, plain_body)
  local msg = name .. ": HTTP " .. tostring(status)
  if type(plain_body) == "string" then
    local snippet = plain_body:match("^%s*(.-)%s*$"):sub(1, 200)
    if snippet ~= "" and not snippet:find("^<") then msg = msg .. ": " .. snippet end
  end
  return msg
end

return M

-- Nested folders name agents with dots: this file is the agent "team.review".
local function words(s)
  local n = 0
  for _ in tostring(s):gmatch("%S+") do n = n + 1 end
  return n
end

return {
  description = "Review a text: word count, a checksum, and whether it is short enough",
  input = {type = "object", required = {"text"}, properties = {text = {type = "string"}}},
  config = {max_words = 200},
  execute = function(task, ctx)
    if type(task.text) ~= "string" then
      error({status = 422, code = "invalid_task", message = "task.text must be a string"})
    end
    local n = words(task.text)
    return {
      words = n,
      ok = n <= ctx.config.max_words,
      sha256 = luagent.crypto.sha256(task.text),
      reviewed_at = luagent.now(),
    }
  end,
}

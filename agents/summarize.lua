-- Streams: with Accept: text/event-stream (or "stream": true through the OpenAI-compatible face)
-- each text delta reaches the client as a `token` event.
-- Through POST /v1/chat/completions with "model": "summarize" the text is the last user message
-- and the reply's content is the summary itself.
local function last_user_text(messages)
  for i = #messages, 1, -1 do
    local m = messages[i]
    if type(m) == "table" and m.role == "user" then
      if type(m.content) == "string" then return m.content end
      if type(m.content) == "table" then -- content parts: the text ones
        local parts = {}
        for _, p in ipairs(m.content) do
          if type(p) == "table" and p.type == "text" and type(p.text) == "string" then parts[#parts + 1] = p.text end
        end
        return table.concat(parts, "\n")
      end
    end
  end
end

return {
  description = "Summarize a text in one paragraph: task.text (or the last user message of task.messages)",
  input = {type = "object", properties = {text = {type = "string", maxLength = 20000}, model = {type = "string"},
           messages = {type = "array", minItems = 1}}},
  timeout_ms = 120000,
  execute = function(task, ctx)
    local text = task.text or (task.messages and last_user_text(task.messages))
    if text == nil then
      error({status = 400, code = "invalid_request", message = "the task needs \"text\" (or \"messages\" with a user message)"})
    end
    local r = luagent.ai.chat{
      model = task.model,
      system = "You summarize texts in one short paragraph.",
      prompt = "Summarize:\n" .. text,
      stream = ctx.stream,
    }
    if task.text == nil then return {content = r.content, finish_reason = r.finish_reason} end
    return {summary = r.content, model = r.model, provider = r.provider}
  end,
}

-- agents/{{FILE}}: the agent `{{NAME}}`, made by `luagent new {{NAME}}`. Save it and the server serves the
-- new version; its specs are in {{SPEC}} (`luagent test` runs them offline).
return {
  description = "Tell something about a topic, optionally from a source document",
  input = {
    type = "object",
    required = {"topic"},
    properties = {
      topic = {type = "string", minLength = 1, maxLength = 200},
      source_url = {type = "string", maxLength = 2000, description = "a text to base the answer on"},
    },
  },
  timeout_ms = 30000,
  execute = function(task, ctx)
    ctx.log.info("{{NAME}}: answering", {topic = task.topic})
    local prompt = "Tell me about " .. task.topic
    if task.source_url then
      local res = luagent.http.request{method = "GET", url = task.source_url, timeout_ms = 5000}
      if res.status ~= 200 then
        error({status = 502, code = "source_unavailable",
               message = "the source answered HTTP " .. tostring(res.status)})
      end
      prompt = prompt .. "\n\nSource:\n" .. res.body
    end
    local r = luagent.ai.chat{
      system = "You answer in one short paragraph.",
      prompt = prompt,
      stream = ctx.stream, -- with Accept: text/event-stream the client sees the reply as it comes
    }
    return {answer = r.content, model = r.model}
  end,
}

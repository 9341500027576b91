-- Streams: with Accept: text/event-stream each text delta reaches the client as a `token` event.
return {
  description = "Summarize a text in one paragraph",
  input = {type = "object", required = {"text"}, properties = {text = {type = "string", maxLength = 20000},
           model = {type = "string"}}},
  timeout_ms = 120000,
  execute = function(task, ctx)
    local r = luagent.ai.chat{
      model = task.model,
      system = "You summarize texts in one short paragraph.",
      prompt = "Summarize:\n" .. task.text,
      stream = ctx.stream,
    }
    return {summary = r.content, model = r.model, provider = r.provider}
  end,
}

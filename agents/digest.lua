-- A batch job that takes a while: summarizes texts one at a time, pausing between them (a stand-in
-- for a rate-limited upstream). Run it async and let luagent call back when it is done: the
-- Windmill flow f/luagent/long_digest (windmill/, docs/windmill.md) waits for it that way.
return {
  description = "Summarize each of task.texts in turn, task.pause_ms apart; reports progress as events",
  input = {
    type = "object",
    required = {"texts"},
    properties = {
      texts = {type = "array", minItems = 1, maxItems = 50, items = {type = "string", maxLength = 20000}},
      pause_ms = {type = "integer", minimum = 0, maximum = 60000},
      model = {type = "string"},
    },
  },
  timeout_ms = 600000,
  execute = function(task, ctx)
    local started = luagent.now()
    local summaries = {}
    for i, text in ipairs(task.texts) do
      if i > 1 then luagent.sleep(task.pause_ms or 1000) end   -- yields: the worker serves others
      local r = luagent.ai.chat{
        model = task.model,
        system = "You summarize texts in one short sentence.",
        prompt = "Summarize:\n" .. text,
      }
      summaries[i] = r.content
      ctx.emit({done = i, of = #task.texts})
    end
    return {count = #summaries, summaries = summaries, took_s = luagent.now() - started}
  end,
}

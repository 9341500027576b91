-- Streams: each ctx.emit reaches a client that asked for text/event-stream as it happens.
return {
  description = "Count down from task.from (at most 10), one event every task.interval_ms",
  input = {
    type = "object",
    properties = {from = {type = "integer", minimum = 1, maximum = 10},
                  interval_ms = {type = "integer", minimum = 0, maximum = 2000}},
  },
  timeout_ms = 30000,
  execute = function(task, ctx)
    local from = math.min(tonumber(task.from) or 3, 10)
    for i = from, 1, -1 do
      ctx.emit({remaining = i})
      luagent.sleep(tonumber(task.interval_ms) or 200)   -- yields: the worker serves others meanwhile
    end
    return {done = true, counted = from}
  end,
}

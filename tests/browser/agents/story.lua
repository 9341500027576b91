-- Streams its reply in three parts 150 ms apart (three streamed mock calls), so a client sees the
-- output grow step by step; logs and emits along the way.
return {
  description = "Tell a three-part story, streamed",
  input = {type = "object", properties = {topic = {type = "string", maxLength = 100}}},
  execute = function(task, ctx)
    local parts = {}
    for i = 1, 3 do
      ctx.log.info("part", {n = i})
      local r = luagent.ai.chat{prompt = "part " .. i .. " of a story about " .. (task.topic or "a lighthouse"),
                                stream = ctx.stream}
      parts[i] = r.content
      ctx.emit({part = i})
      if i < 3 then luagent.sleep(150) end
    end
    return {story = table.concat(parts)}
  end,
}

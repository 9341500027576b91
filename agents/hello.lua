-- A first agent: greets whoever the task names.
return {
  description = "Greet someone by name",
  input = {
    type = "object",
    properties = {name = {type = "string", maxLength = 100}},
  },
  config = {greeting = "Hello"},
  execute = function(task, ctx)
    local name = task.name or "world"
    ctx.log.info("greeting", {name = name})
    return {message = ctx.config.greeting .. ", " .. name .. "!"}
  end,
}

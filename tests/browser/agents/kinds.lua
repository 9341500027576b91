-- Echoes a task with one field of every kind the dashboard's form generates.
return {
  description = "Echo a task of every field kind",
  input = {
    type = "object",
    required = {"title", "count"},
    properties = {
      title = {type = "string", maxLength = 50},
      count = {type = "integer", minimum = 1},
      ratio = {type = "number"},
      urgent = {type = "boolean"},
      color = {enum = {"red", "green", "blue"}},
      tags = {type = "array", items = {type = "string"}},
      meta = {type = "object"},
    },
  },
  execute = function(task, ctx) return {echo = task} end,
}

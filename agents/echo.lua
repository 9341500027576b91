-- The bench agent: returns its task unchanged.
return {
  description = "Return the task unchanged",
  execute = function(task, ctx)
    return task
  end,
}

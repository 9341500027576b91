-- Runs other agents as children (luagent.agents): team.review and summarize at the same time, then
-- one more call if the text is long. Each child has its own record (GET /api/v1/executions?parent_id=<this
-- execution's id>); their token events reach this agent's SSE client; their AI usage adds up in this one's.
return {
  description = "Review and summarize a text at once, with the team.review and summarize agents",
  input = {type = "object", required = {"text"}, properties = {text = {type = "string", maxLength = 20000},
           model = {type = "string"}}},
  timeout_ms = 120000,
  execute = function(task, ctx)
    -- both children start now and run side by side; results come back in this order
    local review, summary = unpack(luagent.agents.parallel{
      {"team.review", {text = task.text}},
      {"summarize", {text = task.text, model = task.model}, ctx},   -- ctx: pass this request's context on
    })
    if not review.ok then
      error(review.error)                  -- {status, code, message, execution_id}: fail like the child did
    end
    local out = {review = review.result, summary = summary.ok and summary.result.summary or nil}
    if not summary.ok then
      out.summary_error = summary.error.message
    elseif not review.result.ok then
      -- too long for a reviewer: ask for a shorter summary of the summary (call raises on failure)
      out.short = luagent.agents.call("summarize", {text = summary.result.summary, model = task.model}).summary
    end
    return out
  end,
}

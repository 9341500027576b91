-- One chat call; returns the model's text. The bench's W2 agent: with OPENAI_BASE_URL pointing at
-- any OpenAI-compatible server it answers from there; with no API key it uses the offline mock.
-- Through the OpenAI-compatible face (POST /v1/chat/completions with "model": "ai") the task is
-- {messages = [...], params = {...}}: the conversation goes to the model as it is, with the
-- request's temperature and max_tokens, and streams when the client asked for a stream.
local function number(v) if type(v) == "number" then return v end end
local NO_PARAMS = {} -- read only

return {
  description = "Ask a model one question: task.prompt (or a whole conversation: task.messages)",
  input = {type = "object", properties = {prompt = {type = "string"}, model = {type = "string"},
           messages = {type = "array", minItems = 1}, params = {type = "object"}}},
  execute = function(task, ctx)
    if task.prompt == nil and task.messages == nil then
      error({status = 400, code = "invalid_request", message = "the task needs \"prompt\" (or \"messages\")"})
    end
    local params = task.params or NO_PARAMS
    return luagent.ai.chat{
      model = task.model,
      messages = task.messages or {{role = "user", content = task.prompt}},
      temperature = number(params.temperature),
      max_tokens = number(params.max_tokens) or number(params.max_completion_tokens),
      stream = ctx.stream,
    }.content
  end,
}

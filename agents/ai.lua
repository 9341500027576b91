-- One chat call; returns the model's text. The bench's W2 agent: with OPENAI_BASE_URL pointing at
-- any OpenAI-compatible server it answers from there; with no API key it uses the offline mock.
return {
  description = "Ask a model one question: task.prompt",
  input = {type = "object", required = {"prompt"}, properties = {prompt = {type = "string"},
           model = {type = "string"}}},
  execute = function(task, ctx)
    return luagent.ai.chat{model = task.model, messages = {{role = "user", content = task.prompt}}}.content
  end,
}

-- Specs of the agent `{{NAME}}` (agents/{{FILE}}), made by `luagent new {{NAME}}`. `luagent test` runs them
-- with busted: luagent.ai answers with the mock provider and luagent.http with the stubs declared
-- here (testing.http.on), so they need no API key and no network.
local testing = require("luagent.testing")

describe("{{NAME}}", function()
  local agent

  before_each(function()
    testing.reset()
    agent = testing.load("{{NAME}}")
  end)

  it("answers with the model's reply about the topic", function()
    local result, run = agent:run({topic = "tides"})
    assert.are.equal("mock: Tell me about tides", result.answer)
    assert.are.equal(1, #run.ai_calls)
  end)

  it("streams the reply as tokens when the client asks for SSE", function()
    local result, run = agent:run({topic = "the tides of the sea"}, {stream = true})
    assert.is_true(#run.tokens > 1)
    assert.are.equal(result.answer, run.text)
  end)

  it("reads its source over HTTP", function()
    testing.http.on("GET", "https://example.com/tides.txt", {status = 200, body = "The moon pulls the sea."})
    local result, run = agent:run({topic = "tides", source_url = "https://example.com/tides.txt"})
    assert.truthy(result.answer:find("The moon pulls the sea.", 1, true))
    assert.are.equal(1, #run.http_calls)
  end)

  it("fails with source_unavailable when the source answers an error", function()
    testing.http.on("GET", "https://example.com/gone", {status = 404, body = "not here"})
    local ok, err = pcall(agent.run, agent, {topic = "tides", source_url = "https://example.com/gone"})
    assert.is_false(ok)
    assert.are.equal("source_unavailable", err.code)
    assert.are.equal(502, err.status)
  end)
end)

-- A tool loop: the model may call `fetch_url` (a real HTTP GET) until it has what it needs.
return {
  description = "Answer a question, fetching web pages when the model asks for them",
  input = {type = "object", required = {"question"}, properties = {question = {type = "string"},
           model = {type = "string"}}},
  timeout_ms = 120000,
  execute = function(task, ctx)
    local r = luagent.ai.run{
      model = task.model,
      ctx = ctx,
      max_steps = 5,
      messages = {
        {role = "system", content = "Answer the question. Use fetch_url to read pages when needed."},
        {role = "user", content = task.question},
      },
      tools = {
        fetch_url = {
          description = "Fetch a web page (http or https) and return its first 4000 characters",
          parameters = {type = "object", required = {"url"}, properties = {url = {type = "string"}}},
          handler = function(args)
            local url = args.url or args.query
            if type(url) ~= "string" or not url:match("^https?://") then
              return "error: pass an http(s) URL as `url`"
            end
            local res = luagent.http.request{url = url, timeout_ms = 10000}
            ctx.log.info("fetched", {url = url, status = res.status})
            return {status = res.status, body = res.body:sub(1, 4000)}
          end,
        },
      },
    }
    return {answer = r.content, steps = r.steps, provider = r.provider}
  end,
}

-- Returns, emits and streams markup: the dashboard must show it as text.
local PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script><b>bold</b>'
return {
  description = 'Markup in every output <img src=x onerror="window.__xss=3">',
  execute = function(task, ctx)
    ctx.emit({html = PAYLOAD})
    local r = luagent.ai.chat{prompt = PAYLOAD, stream = ctx.stream}
    return {html = PAYLOAD, echoed = r.content}
  end,
}

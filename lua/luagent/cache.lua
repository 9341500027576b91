-- The result cache around the execute of an agent with cache_ttl > 0 (src/bind/cache.c has the
-- host functions and the key scheme). A hit answers without running the agent; a miss runs it and
-- stores the result for ttl seconds. Errors are never cached.
local host = ...

return function(execute, ttl)
  return function(task, ctx)
    local key = host.result_key(task)
    if key ~= nil then
      local hit = host.get(key)
      if hit ~= nil then
        host.mark(true)
        return hit
      end
      host.mark(false)
    end
    local result = execute(task, ctx)
    if key ~= nil then host.set(key, result, ttl) end
    return result
  end
end

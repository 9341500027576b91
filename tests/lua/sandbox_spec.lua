-- The agent sandbox, tried escape by escape in a real luagent VM (tests/lua/luagent_test.c).
package.cpath = (os.getenv("LUAGENT_BUILD") or "build") .. "/?.so;" .. package.cpath
local lt = require "luagent_test"

-- run `body` as the body of execute(task, ctx); returns ok, result-or-error
local function exec(body, task)
  return lt.run("return {execute = function(task, ctx)\n" .. body .. "\nend}", task or "{}")
end

local function value(body)
  local ok, res = exec(body)
  assert(ok, res)
  return res
end

describe("sandbox", function()
  it("runs on LuaJIT", function()
    assert.is_not_nil(jit)
  end)

  for _, name in ipairs {"io", "debug", "ffi", "jit", "package", "require", "dofile", "loadfile",
                         "getfenv", "setfenv", "module", "newproxy", "collectgarbage", "gcinfo"} do
    it("has no " .. name, function()
      assert.are.equal('"nil"', value("return type(" .. name .. ")"))
    end)
  end

  it("keeps only safe os functions", function()
    assert.are.equal('["nil","nil","nil","nil","nil","number","number"]',
      value([[return {type(os.execute), type(os.exit), type(os.getenv), type(os.remove),
                      type(os.tmpname), type(os.time()), type(os.clock())}]]))
  end)

  it("has no string.dump, so no bytecode can be produced", function()
    assert.are.equal('"nil"', value("return type(string.dump)"))
  end)

  it("refuses to load bytecode and accepts text", function()
    assert.are.equal('[true,2]', value([[
      local f, err = load("\27LJ\2\0", "x")
      return {f == nil and err:find("binary") ~= nil, load("return 1+1")()}]]))
    assert.are.equal('true', value([[return loadstring("\27Lua") == nil]]))
    assert.are.equal('true', value([[return select(2, load("return 1", "x", "b")) ~= nil]]))
  end)

  it("gives loaded chunks the agent's environment, not the VM's globals", function()
    assert.are.equal('"nil"', value([[return load("return type(io)")()]]))
  end)

  it("refuses new globals inside execute", function()
    local ok, err = exec("x = 1 return x")
    assert.is_false(ok)
    assert.matches("attempt to set global 'x'", err)
  end)

  it("allows globals defined by the top-level chunk", function()
    local ok, res = lt.run("function helper() return 41 end\nreturn {execute = function() return helper() + 1 end}", "{}")
    assert.is_true(ok)
    assert.are.equal("42", res)
  end)

  it("hides the string metatable", function()
    assert.are.equal('"string"', value([[return getmetatable("")]]))
    local ok = exec([[setmetatable("", {})]])
    assert.is_false(ok)
  end)

  it("keeps one agent's changes to libraries away from another", function()
    assert.is_true((exec([[string.upper = nil; luagent.sleep = nil; table.insert = nil; return 1]])))
    assert.are.equal('["X","function","function"]',
      value([[return {string.upper("x"), type(luagent.sleep), type(table.insert)}]]))
  end)

  it("protects the environment's metatable", function()
    local ok = exec([[setmetatable(_G, nil)]])
    assert.is_false(ok)
  end)

  it("stops a runaway loop at its deadline", function()
    local ok, err = lt.run("return {execute = function() while true do end end}", "{}", 100)
    assert.is_false(ok)
    assert.are.equal("timeout", err)
  end)

  it("stops a runaway loop that catches errors", function()
    local ok, err = lt.run([[return {execute = function()
      while true do pcall(function() while true do end end) end end}]], "{}", 100)
    assert.is_false(ok)
    assert.are.equal("timeout", err)
  end)

  it("refuses allocation past the memory limit", function()
    local ok, err = exec([[local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 1e6) .. i end]])
    assert.is_false(ok)
    assert.matches("memory", err)
  end)
end)

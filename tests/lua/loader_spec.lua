-- The agent loader's contract: what a file must return, and the errors users see.
package.cpath = (os.getenv("LUAGENT_BUILD") or "build") .. "/?.so;" .. package.cpath
local lt = require "luagent_test"

describe("agent loader", function()
  it("accepts a table with execute and reads its metadata", function()
    local ok, info = lt.load([[return {description = "d", timeout_ms = 500, input = {type = "object"},
                                        execute = function() end}]])
    assert.is_true(ok)
    assert.are.equal("d", info.description)
    assert.are.equal(500, info.timeout_ms)
    assert.is_true(info.has_input)
  end)

  it("reports syntax errors with file and line", function()
    local ok, err = lt.load("return {\n execute = function( end }", "hello.lua")
    assert.is_false(ok)
    assert.matches("^hello.lua:2:", err)
  end)

  it("requires execute", function()
    local ok, err = lt.load("return {description = 'x'}", "a.lua")
    assert.is_false(ok)
    assert.matches("'execute'", err)
  end)

  it("requires a table", function()
    local ok, err = lt.load("return 42", "a.lua")
    assert.is_false(ok)
    assert.matches("must return a table", err)
  end)

  it("checks field types", function()
    assert.is_false((lt.load("return {execute = function() end, description = 1}")))
    assert.is_false((lt.load("return {execute = function() end, timeout_ms = -5}")))
    assert.is_false((lt.load("return {execute = function() end, input = 'x'}")))
    assert.is_false((lt.load("return {execute = function() end, config = 3}")))
  end)

  it("refuses bytecode files", function()
    local ok, err = lt.load("\27LJ\2\0\0", "b.lua")
    assert.is_false(ok)
    assert.matches("binary", err)
  end)

  it("bounds top-level code", function()
    local ok, err = lt.load("while true do end", "spin.lua")
    assert.is_false(ok)
    assert.matches("longer than", err)
  end)

  it("reports runtime errors of the top level", function()
    local ok, err = lt.load("error('nope')", "e.lua")
    assert.is_false(ok)
    assert.matches("e.lua:1: nope", err)
  end)
end)

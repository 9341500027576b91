-- Build step: embed a file into a C header as bytes (luajit scripts/embed_file.lua OUT NAME IN).
-- Defines NAME (unsigned char[], NUL-terminated) and NAME_LEN (its length without the NUL).
local out_path, name, in_path = arg[1], arg[2], arg[3]
assert(out_path and name and in_path and name:match("^[%a_][%w_]*$"), "usage: embed_file.lua OUT NAME IN")
local f = assert(io.open(in_path, "rb"))
local data = f:read("*a")
f:close()
local out = assert(io.open(out_path, "wb"))
out:write(string.format("/* generated from %s by scripts/embed_file.lua */\n", in_path:match("[^/]*/?[^/]+$")))
out:write(string.format("static const unsigned char %s[] = {\n", name))
local line = {}
for i = 1, #data do
  line[#line + 1] = tostring(data:byte(i))
  if #line == 24 then
    out:write("  ", table.concat(line, ","), ",\n")
    line = {}
  end
end
line[#line + 1] = "0"
out:write("  ", table.concat(line, ","), "};\n")
out:write(string.format("#define %s_LEN ((size_t)%d)\n", name, #data))
out:close()

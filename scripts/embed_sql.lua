-- Build step: embed migrations/NNNN_name.sql files into a C header (luajit scripts/embed_sql.lua OUT IN...).
local out = assert(io.open(arg[1], "w"))
out:write("/* generated from migrations/NNNN_name.sql by scripts/embed_sql.lua */\n")
out:write("static const struct { int version; const char *name; const char *sql; } LG_MIGRATIONS[] = {\n")
local files = {}
for i = 2, #arg do files[#files + 1] = arg[i] end
table.sort(files)
for _, path in ipairs(files) do
  local base = path:match("([^/]+)%.sql$")
  local version, name = base:match("^(%d+)_(.+)$")
  assert(version, "migration file names are NNNN_name.sql: " .. path)
  local f = assert(io.open(path, "rb"))
  local sql = f:read("*a")
  f:close()
  out:write(string.format("    {%d, %q,\n     ", tonumber(version), name))
  -- %q escapes quotes, backslashes and newlines the way C accepts once "\<newline>" is made "\n"
  out:write((string.format("%q", sql):gsub("\\\n", "\\n\"\n     \"")))
  out:write("},\n")
end
out:write("};\n")
out:close()

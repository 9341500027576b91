/* fuzz_sse: the provider stream parser. It is Lua (lua/luagent/ai.lua frames the SSE stream and
 * splits blocks, providers/{openai,anthropic,google}.lua turn events into tokens and a result), so
 * this target runs it in a LuaJIT state with the host's JSON codec (json.c) through
 * tests/fuzz/sse_harness.lua, loading the .lua sources from the tree (the binary embeds the same
 * files as bytecode). Input: byte 0 picks the provider, byte 1 the chunking of the rest (the stream
 * arrives in pieces as from the network). Aborts when ai.chat ends outside its contract (see the
 * harness): any error but a 502/504 table, or a result that is malformed or does not encode.
 * libFuzzer sees the C code's coverage only (json.c, not the Lua lines, and LuaJIT is not
 * instrumented): a line hook feeds "previous line -> line" pairs of the Lua code into libFuzzer's
 * extra counters, so the Lua parser's branches guide the search too (the hook keeps the JIT off). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "luagent/json.h"

#include "fuzz_lua.h"

#ifndef LG_SOURCE_ROOT
#error "build with -DLG_SOURCE_ROOT=\"<repository>\""
#endif

static lua_State *L;
static int run_ref;

#define LUA_COV 8192
__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t lua_cov[LUA_COV];

static void line_hook(lua_State *l, lua_Debug *ar)
{
    static uintptr_t prev;
    if (!lua_getinfo(l, "S", ar))
        return;
    uintptr_t here = ((uintptr_t)ar->source * 31u) ^ ((uintptr_t)ar->currentline * 2654435761u);
    uint8_t *c = &lua_cov[(here ^ (prev >> 1)) % LUA_COV];
    if (*c < 255)
        (*c)++;
    prev = here;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    L = fuzz_lua_new();
    if (luaL_loadfile(L, LG_SOURCE_ROOT "/tests/fuzz/sse_harness.lua") != 0) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        abort();
    }
    lua_pushstring(L, LG_SOURCE_ROOT);
    luaopen_luagent_json(L);
    if (lua_pcall(L, 2, 1, 0) != 0) {
        fprintf(stderr, "sse_harness.lua: %s\n", lua_tostring(L, -1));
        abort();
    }
    run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_sethook(L, line_hook, LUA_MASKLINE, 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const providers[] = {"openai", "anthropic", "google"};
    if (size < 2)
        return 0;
    const char *provider = providers[data[0] % 3];
    unsigned seed = data[1];
    const char *s = (const char *)data + 2;
    size_t n = size - 2;
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, run_ref);
    lua_pushstring(L, provider);
    lua_newtable(L);
    int i = 0;
    for (size_t off = 0; off < n; i++) { /* seed 0: one piece; else pieces of 1..seed bytes */
        size_t len = seed == 0 ? n : 1 + (size_t)((seed * 31u + (unsigned)i * 17u) % seed);
        if (len > n - off)
            len = n - off;
        lua_pushlstring(L, s + off, len);
        lua_rawseti(L, -2, i + 1);
        off += len;
    }
    if (lua_pcall(L, 2, 1, 0) != 0) {
        fprintf(stderr, "harness error: %s\n", lua_tostring(L, -1));
        abort();
    }
    if (lua_isstring(L, -1)) {
        fprintf(stderr, "%s stream: %s\n", provider, lua_tostring(L, -1));
        abort();
    }
    fuzz_lua_done(L, 0);
    return 0;
}

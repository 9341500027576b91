/* fuzz_lua.h - the Lua state of a fuzz target: allocated with malloc (lua_newstate with our own
 * allocator, as the server's VMs are), so ASan sees overruns of Lua strings by C code and
 * LeakSanitizer scans the Lua heap (with LuaJIT's own mmap allocator it cannot, and a buffer owned
 * by a Lua userdata looks leaked); closed at exit so every __gc runs before the final leak check. */
#ifndef FUZZ_LUA_H
#define FUZZ_LUA_H

#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static lua_State *fuzz_L;

/* Not inlined and no tail call, so it shows in allocation stacks: tests/fuzz/lsan.supp names it.
 * LeakSanitizer cannot follow LuaJIT's tagged pointers (GC64 keeps a type in a TValue's top bits),
 * so blocks LuaJIT allocates for itself can look leaked; blocks our C code allocates are still
 * checked, found through the Lua heap this allocator puts where LeakSanitizer scans. */
__attribute__((noinline)) static void *fuzz_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud, (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    void *volatile p = realloc(ptr, nsize);
    return p;
}

static void fuzz_lua_close(void)
{
    if (fuzz_L != NULL)
        lua_close(fuzz_L);
    fuzz_L = NULL;
}

static lua_State *fuzz_lua_new(void)
{
    fuzz_L = lua_newstate(fuzz_lua_alloc, NULL);
    if (fuzz_L == NULL) {
        fprintf(stderr, "lua_newstate failed\n");
        abort();
    }
    luaL_openlibs(fuzz_L);
    atexit(fuzz_lua_close);
    return fuzz_L;
}

/* End of an input: a full collection frees this input's garbage now, so libFuzzer sees as many
 * frees as mallocs and does not run a leak scan after every input (that cost 10x). */
static void fuzz_lua_done(lua_State *L, int top)
{
    lua_settop(L, top);
    lua_gc(L, LUA_GCCOLLECT, 0);
}

#endif

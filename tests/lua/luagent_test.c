/* A Lua module for the busted specs: runs agent sources in a real luagent VM (the same allocator,
 * hook, sandbox and loader the server uses) and hands back plain values.
 *   ok, info_or_err = luagent_test.load(source [, chunkname])
 *   ok, json_or_err = luagent_test.run(source, task_json [, timeout_ms])   -- execute(task, {}) once
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr, RTLD_NODELETE */
#endif
#include <dlfcn.h>
#include <lauxlib.h>
#include <string.h>

#include "luagent/ids.h"
#include "luagent/json.h"
#include "luagent/vm.h"

static lg_vm_t vm;
static int vm_ready;

static lg_vm_t *get_vm(lua_State *L)
{
    if (!vm_ready && lg_vm_open(&vm, NULL) != 0)
        luaL_error(L, "cannot open a luagent VM");
    vm_ready = 1;
    return &vm;
}

static int load_into_vm(lua_State *L, lg_vm_t *v)
{
    size_t len;
    const char *src = luaL_checklstring(L, 1, &len);
    char chunkname[256], err[1024];
    snprintf(chunkname, sizeof(chunkname), "=%s", luaL_optstring(L, 2, "spec.lua"));
    if (lg_vm_load_script(v, LG_SCRIPT_AGENT, chunkname, src, len, 64u << 20, err, sizeof(err), NULL) != 0) {
        lua_pushboolean(L, 0);
        lua_pushstring(L, err);
        return -1;
    }
    return 0;
}

static int t_load(lua_State *L)
{
    lg_vm_t *v = get_vm(L);
    if (load_into_vm(L, v) != 0)
        return 2;
    lua_State *A = v->L;
    lua_pushboolean(L, 1);
    lua_newtable(L);
    lua_getfield(A, -1, "description");
    if (lua_isstring(A, -1)) {
        lua_pushstring(L, lua_tostring(A, -1));
        lua_setfield(L, -2, "description");
    }
    lua_getfield(A, -2, "timeout_ms");
    lua_pushnumber(L, lua_tonumber(A, -1));
    lua_setfield(L, -2, "timeout_ms");
    lua_getfield(A, -3, "input");
    lua_pushboolean(L, lua_istable(A, -1));
    lua_setfield(L, -2, "has_input");
    lua_pop(A, 4);
    return 2;
}

static int t_run(lua_State *L)
{
    lg_vm_t *v = get_vm(L);
    size_t tlen;
    const char *task = luaL_checklstring(L, 2, &tlen);
    lua_Number timeout = luaL_optnumber(L, 3, 1000);
    if (load_into_vm(L, v) != 0)
        return 2;
    lua_State *A = v->L;
    int top = lua_gettop(A) - 1;
    lua_getfield(A, -1, "execute");
    lg_json_error_t jerr;
    if (lg_json_decode(A, task, tlen, 64, &jerr) != LG_JSON_OK) {
        lua_settop(A, top);
        return luaL_error(L, "task: %s", jerr.msg);
    }
    lua_newtable(A);
    lg_budget_t budget = {.mem_limit = 64u << 20, .deadline_ms = lg_now_mono_ms() + (uint64_t)timeout};
    lg_vm_charge(v, &budget);
    int rc = lua_pcall(A, 2, 1, 0);
    lg_vm_charge(v, NULL);
    lg_buf_t b = {0};
    if (rc == 0 && lg_json_encode(A, -1, &b, 64, &jerr) == LG_JSON_OK) {
        lua_pushboolean(L, 1);
        lua_pushlstring(L, b.data, b.len);
    } else {
        lua_pushboolean(L, 0);
        lua_pushstring(L, budget.timed_out ? "timeout" : rc == 0 ? jerr.msg : lua_tostring(A, -1));
    }
    lg_buf_free(&b);
    lua_settop(A, top);
    return 2;
}

int luaopen_luagent_test(lua_State *L)
{
    /* The VM's watchdog thread (vm.c) runs this module's code until the process exits: keep it
     * mapped when Lua unloads its C modules at close (busted then exited on a segfault). */
    Dl_info self;
    if (dladdr((void *)luaopen_luagent_test, &self) && self.dli_fname != NULL)
        dlopen(self.dli_fname, RTLD_NOW | RTLD_NODELETE);
    static const luaL_Reg fns[] = {{"load", t_load}, {"run", t_run}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}

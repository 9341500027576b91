/* luagent.ai: the host half. The logic (provider choice, retries, streaming, tool loop) is Lua in
 * lua/luagent/ai.lua, compiled into the binary (meson: luajit -b); this file gives it what only
 * the host has: the provider registry, the configured keys, the running execution (token events,
 * usage). Agents never see these helpers: they get ai.chat and ai.run only. */
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/agents.h"
#include "luagent/bind.h"
#include "luagent/json.h"
#include "luagent/metrics.h"
#include "luagent/registry.h"
#include "luagent/sched.h"
#include "luagent/store.h"

#include "ai_bc.h" /* generated from lua/luagent/ai.lua: luaJIT_BC_ai, luaJIT_BC_ai_SIZE */

static lg_rt_t *rt_of(lua_State *L)
{
    lg_rt_t *rt = lg_vm_of(L)->rt;
    if (rt == NULL)
        luaL_error(L, "luagent.ai can only be used inside execute()");
    return rt;
}

/* provider(name) -> adapter table | nil */
static int h_provider(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    if (!lg_scripts_push(rt_of(L), LG_SCRIPT_PROVIDER, L, name, len))
        return 0;
    lua_rawgeti(L, -1, LG_REC_MODULE);
    return 1;
}

/* providers() -> {name = adapter} (a fresh table) */
static int h_providers(lua_State *L)
{
    lg_rt_t *rt = rt_of(L);
    lg_agents_sync(rt);
    lua_newtable(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->scripts_ref[LG_SCRIPT_PROVIDER]);
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        lua_rawgeti(L, -1, LG_REC_MODULE);
        lua_pushvalue(L, -3);
        lua_insert(L, -2);
        lua_rawset(L, -6);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 1;
}

/* providers_gen() -> a number that changes whenever a provider file or the settings change */
static int h_providers_gen(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)(lg_registry_gen(LG_SCRIPT_PROVIDER) + rt_of(L)->cfg->generation));
    return 1;
}

/* setting(NAME) -> the configured value of a provider setting (from the environment or .env) */
static int h_setting(lua_State *L)
{
    const lg_config_t *c = rt_of(L)->cfg;
    const char *name = luaL_checkstring(L, 1), *v = NULL;
    if (strcmp(name, "OPENAI_API_KEY") == 0) v = c->openai_api_key;
    else if (strcmp(name, "OPENAI_BASE_URL") == 0) v = c->openai_base_url;
    else if (strcmp(name, "ANTHROPIC_API_KEY") == 0) v = c->anthropic_api_key;
    else if (strcmp(name, "ANTHROPIC_BASE_URL") == 0) v = c->anthropic_base_url;
    else if (strcmp(name, "GEMINI_API_KEY") == 0 || strcmp(name, "GOOGLE_API_KEY") == 0) v = c->gemini_api_key;
    else if (strcmp(name, "GEMINI_BASE_URL") == 0) v = c->gemini_base_url;
    else if (strcmp(name, "LUAGENT_DEFAULT_MODEL") == 0) v = c->default_model;
    else v = getenv(name); /* a provider added by a user names its own variables */
    if (v == NULL || *v == '\0')
        return 0;
    lua_pushstring(L, v);
    return 1;
}

/* emit_token(text): a `token` event to a streaming client */
static int h_emit_token(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    lg_exec_t *e = lg_sched_current(L);
    if (e == NULL || !e->stream || e->ops->on_emit == NULL)
        return 0;
    lg_buf_t b = {0};
    lg_buf_lit(&b, "{\"text\":");
    lg_buf_json_str(&b, text, len);
    lg_buf_putc(&b, '}');
    e->ops->on_emit(e, "token", b.data, b.len);
    lg_buf_free(&b);
    return 0;
}

/* deadline_ms() -> the running execution's deadline, Unix epoch ms (math.huge outside one) */
static int h_deadline_ms(lua_State *L)
{
    lg_exec_t *e = lg_sched_current(L);
    lua_pushnumber(L, e != NULL ? (lua_Number)e->deadline_epoch_ms : HUGE_VAL);
    return 1;
}

static void add_field(lua_State *L, int t, const char *k, lua_Number v)
{
    lua_getfield(L, t, k);
    lua_Number old = lua_tonumber(L, -1);
    lua_pop(L, 1);
    lua_pushnumber(L, old + v);
    lua_setfield(L, t, k);
}

/* The ai_call event of a recorded execution's task history. */
static void record_call(lg_exec_t *e, const char *provider, const char *model, lua_Number in, lua_Number out,
                        lua_Number retries, lua_Number ms, const char *err)
{
    lg_buf_t b = {0};
    lg_buf_lit(&b, "{\"provider\":");
    lg_buf_json_str(&b, provider, strlen(provider));
    lg_buf_lit(&b, ",\"model\":");
    lg_buf_json_str(&b, model, strlen(model));
    lg_buf_printf(&b, ",\"input_tokens\":%.0f,\"output_tokens\":%.0f,\"retries\":%.0f,\"duration_ms\":", in, out,
                  retries);
    lg_buf_fixed3(&b, ms > 0 ? ms : 0);
    if (err != NULL) {
        lg_buf_lit(&b, ",\"error\":");
        lg_buf_json_str(&b, err, strlen(err));
    }
    lg_buf_putc(&b, '}');
    lg_record_event(e, "ai_call", b.data, b.len);
    lg_buf_free(&b);
}

/* usage_add(provider, model, input_tokens, output_tokens, retries, duration_ms, error): count one
 * AI call (error: its message when it failed) */
static int h_usage_add(lua_State *L)
{
    const char *provider = luaL_checkstring(L, 1), *model = luaL_checkstring(L, 2);
    lua_Number in = luaL_optnumber(L, 3, 0), out = luaL_optnumber(L, 4, 0), retries = luaL_optnumber(L, 5, 0);
    lg_exec_t *e = lg_sched_current(L);
    if (e == NULL)
        return 0;
    lg_metrics_ai(e->rt->metrics, provider, model, in > 0 ? (uint64_t)in : 0, out > 0 ? (uint64_t)out : 0,
                  retries > 0 ? (uint64_t)retries : 0, !lua_isnoneornil(L, 7));
    if (e->recording)
        record_call(e, provider, model, in, out, retries, luaL_optnumber(L, 6, 0), luaL_optstring(L, 7, NULL));
    if (e->usage_ref == LUA_NOREF) {
        lua_newtable(L);
        lua_newtable(L);
        lua_setfield(L, -2, "by_model");
        e->usage_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->usage_ref);
    int u = lua_gettop(L);
    add_field(L, u, "input_tokens", in);
    add_field(L, u, "output_tokens", out);
    add_field(L, u, "calls", 1);
    add_field(L, u, "retries", retries);
    lua_getfield(L, u, "by_model");
    lua_pushfstring(L, "%s/%s", provider, model);
    lua_rawget(L, -2);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushfstring(L, "%s/%s", provider, model);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
    }
    int m = lua_gettop(L);
    add_field(L, m, "input_tokens", in);
    add_field(L, m, "output_tokens", out);
    add_field(L, m, "calls", 1);
    add_field(L, m, "retries", retries);
    lua_settop(L, u - 1);
    return 0;
}

void lg_exec_usage_json(lg_exec_t *e, lg_buf_t *out)
{
    lg_json_error_t err;
    if (e->usage_ref == LUA_NOREF) {
        lg_buf_lit(out, "{}");
        return;
    }
    lua_State *L = e->rt->vm.L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->usage_ref);
    size_t mark = out->len;
    if (lg_json_encode(L, -1, out, 8, &err) != LG_JSON_OK) {
        out->len = mark;
        lg_buf_lit(out, "{}");
    }
    lua_pop(L, 1);
}

void lg_bind_open_ai(lua_State *L, int luagent)
{
    static const luaL_Reg host[] = {
        {"provider", h_provider},       {"providers", h_providers},       {"providers_gen", h_providers_gen},       {"setting", h_setting},
        {"emit_token", h_emit_token},   {"usage_add", h_usage_add},
        {"deadline_ms", h_deadline_ms},
        {NULL, NULL}};
    if (luaL_loadbuffer(L, (const char *)luaJIT_BC_ai, luaJIT_BC_ai_SIZE, "=luagent/ai.lua") != 0)
        lua_error(L);
    lua_pushvalue(L, luagent);
    lua_newtable(L);
    luaL_register(L, NULL, host);
    lg_bind_push_upstream_request(L);
    lua_setfield(L, -2, "request");
    lua_call(L, 2, 1);
}

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

#include "lua_text.h" /* LG_TEXT_ai: lua/luagent/ai.lua (scripts/embed_text.lua) */

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

/* a token or retry count from Lua: a non-negative whole number (anything else counts 0) */
static uint64_t count_of(lua_Number v)
{
    return v > 0 && v < 1e18 ? (uint64_t)v : 0;
}

/* the entry of "provider/model", made on first use */
static lg_usage_model_t *usage_model(lg_usage_t *u, const char *provider, size_t plen, const char *model,
                                     size_t mlen)
{
    size_t klen = plen + 1 + mlen;
    lg_usage_model_t *m;
    for (m = u->by_model; m != NULL; m = m->next)
        if (m->klen == klen && m->plen == plen && memcmp(m->key, provider, plen) == 0 &&
            memcmp(m->key + plen + 1, model, mlen) == 0)
            return m;
    if ((m = calloc(1, sizeof(*m) + klen + 1)) == NULL)
        abort();
    memcpy(m->key, provider, plen);
    m->key[plen] = '/';
    memcpy(m->key + plen + 1, model, mlen);
    m->klen = klen;
    m->plen = plen;
    if (u->by_model == NULL)
        u->tail = &u->by_model;
    *u->tail = m;
    u->tail = &m->next;
    return m;
}

static void usage_count(lg_usage_t *u, lg_usage_model_t *m, uint64_t in, uint64_t out, uint64_t calls,
                        uint64_t retries)
{
    u->input_tokens += in, m->input_tokens += in;
    u->output_tokens += out, m->output_tokens += out;
    u->calls += calls, m->calls += calls;
    u->retries += retries, m->retries += retries;
}

void lg_usage_merge(lg_usage_t *into, const lg_usage_t *from)
{
    for (const lg_usage_model_t *f = from->by_model; f != NULL; f = f->next)
        usage_count(into, usage_model(into, f->key, f->plen, f->key + f->plen + 1, f->klen - f->plen - 1),
                    f->input_tokens, f->output_tokens, f->calls, f->retries);
}

void lg_usage_free(lg_usage_t *u)
{
    while (u->by_model != NULL) {
        lg_usage_model_t *next = u->by_model->next;
        free(u->by_model);
        u->by_model = next;
    }
    memset(u, 0, sizeof(*u));
}

/* usage_add(provider, model, input_tokens, output_tokens, retries, duration_ms, error): count one
 * AI call (error: its message when it failed) */
static int h_usage_add(lua_State *L)
{
    size_t plen, mlen;
    const char *provider = luaL_checklstring(L, 1, &plen), *model = luaL_checklstring(L, 2, &mlen);
    uint64_t in = count_of(luaL_optnumber(L, 3, 0)), out = count_of(luaL_optnumber(L, 4, 0));
    uint64_t retries = count_of(luaL_optnumber(L, 5, 0));
    lg_exec_t *e = lg_sched_current(L);
    if (e == NULL)
        return 0;
    lg_metrics_ai(e->rt->metrics, provider, model, in, out, retries, !lua_isnoneornil(L, 7));
    if (e->recording)
        record_call(e, provider, model, (lua_Number)in, (lua_Number)out, (lua_Number)retries,
                    luaL_optnumber(L, 6, 0), luaL_optstring(L, 7, NULL));
    lg_usage_model_t *m = usage_model(&e->usage, provider, plen, model, mlen);
    usage_count(&e->usage, m, in, out, 1, retries);
    return 0;
}

static void usage_counts_json(lg_buf_t *out, uint64_t in, uint64_t outt, uint64_t calls, uint64_t retries)
{
    lg_buf_lit(out, "\"input_tokens\":");
    lg_buf_u64(out, in);
    lg_buf_lit(out, ",\"output_tokens\":");
    lg_buf_u64(out, outt);
    lg_buf_lit(out, ",\"calls\":");
    lg_buf_u64(out, calls);
    lg_buf_lit(out, ",\"retries\":");
    lg_buf_u64(out, retries);
}

void lg_exec_usage_json(lg_exec_t *e, lg_buf_t *out)
{
    const lg_usage_t *u = &e->usage;
    if (u->by_model == NULL) {
        lg_buf_lit(out, "{}");
        return;
    }
    lg_buf_putc(out, '{');
    usage_counts_json(out, u->input_tokens, u->output_tokens, u->calls, u->retries);
    lg_buf_lit(out, ",\"by_model\":{");
    for (const lg_usage_model_t *m = u->by_model; m != NULL; m = m->next) {
        lg_buf_json_str(out, m->key, m->klen);
        lg_buf_lit(out, ":{");
        usage_counts_json(out, m->input_tokens, m->output_tokens, m->calls, m->retries);
        lg_buf_putc(out, '}');
        if (m->next != NULL)
            lg_buf_putc(out, ',');
    }
    lg_buf_lit(out, "}}");
}

void lg_bind_open_ai(lua_State *L, int luagent)
{
    static const luaL_Reg host[] = {
        {"provider", h_provider},       {"providers", h_providers},       {"providers_gen", h_providers_gen},       {"setting", h_setting},
        {"emit_token", h_emit_token},   {"usage_add", h_usage_add},
        {"deadline_ms", h_deadline_ms},
        {NULL, NULL}};
    if (luaL_loadbuffer(L, LG_TEXT_ai, sizeof(LG_TEXT_ai) - 1, "=luagent/ai.lua") != 0)
        lua_error(L);
    lua_pushvalue(L, luagent);
    lua_newtable(L);
    luaL_register(L, NULL, host);
    lg_bind_push_upstream_request(L);
    lua_setfield(L, -2, "request");
    lua_call(L, 2, 1);
}

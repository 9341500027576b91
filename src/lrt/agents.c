#include "luagent/agents.h"
#include "luagent/bind.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/log.h"
#include "luagent/registry.h"
#include "luagent/schema.h"

typedef struct pending {
    char *name, *relpath, *source;
    size_t len;
    char version[17];
    uint64_t gen;
    struct pending *next;
} pending_t;

typedef struct sync_ctx {
    lg_script_kind_t kind;
    lua_State *L;
    int agents;       /* stack index of the agents table */
    double stamp;
    pending_t *todo;
} sync_ctx_t;

/* Under the registry lock: note which agents are current, copy the sources of changed ones. */
static void collect(void *ud, const lg_agent_entry_t *e)
{
    sync_ctx_t *s = ud;
    if (e->source == NULL)
        return;
    lua_State *L = s->L;
    lua_getfield(L, s->agents, e->name);
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, LG_AGENT_GEN);
        uint64_t gen = (uint64_t)lua_tonumber(L, -1);
        lua_pop(L, 1);
        if (gen == e->gen) {
            lua_pushnumber(L, s->stamp);
            lua_rawseti(L, -2, LG_AGENT_STAMP);
            lua_pop(L, 1);
            return;
        }
    }
    lua_pop(L, 1);
    pending_t *p = calloc(1, sizeof(*p));
    p->name = strdup(e->name);
    p->relpath = strdup(e->relpath);
    p->source = malloc(e->source_len + 1);
    memcpy(p->source, e->source, e->source_len + 1);
    p->len = e->source_len;
    memcpy(p->version, e->version, sizeof(p->version));
    p->gen = e->gen;
    p->next = s->todo;
    s->todo = p;
}

static void install(lg_rt_t *rt, sync_ctx_t *s, pending_t *p)
{
    lua_State *L = s->L;
    char chunkname[512], err[1024];
    lg_schema_t *input = NULL;
    snprintf(chunkname, sizeof(chunkname), "=%s", p->relpath);
    if (lg_vm_load_script(&rt->vm, s->kind, chunkname, p->source, p->len, (size_t)rt->cfg->memory_limit_mb << 20, err,
                          sizeof(err), &input) != 0) {
        /* it loaded in the validator: this is rare (non-deterministic top level); keep the old one */
        lg_log(LG_LOG_ERROR, "%s %s version %s failed to load in a worker: %s",
               s->kind == LG_SCRIPT_AGENT ? "agent" : "provider", p->name, p->version, err);
        lua_getfield(L, s->agents, p->name);
        if (lua_istable(L, -1)) {
            lua_pushnumber(L, s->stamp);
            lua_rawseti(L, -2, LG_AGENT_STAMP);
        }
        lua_pop(L, 1);
        return;
    }
    int mod = lua_gettop(L);
    lua_createtable(L, LG_AGENT_INPUT, 0);
    if (input != NULL) {
        lg_schema_push(L, input);
        lua_rawseti(L, -2, LG_AGENT_INPUT);
    }
    lua_pushvalue(L, mod);
    lua_rawseti(L, -2, LG_REC_MODULE);
    lua_getfield(L, mod, "execute");
    lua_getfield(L, mod, "cache_ttl");
    if (lua_isnumber(L, -1) && lua_tonumber(L, -1) > 0) { /* the result cache wraps execute */
        lua_getfield(L, LUA_REGISTRYINDEX, LG_CACHE_WRAP_KEY);
        lua_insert(L, -3);
        lua_call(L, 2, 1);
    } else {
        lua_pop(L, 1);
    }
    lua_rawseti(L, -2, LG_AGENT_EXECUTE);
    lua_pushstring(L, p->version);
    lua_rawseti(L, -2, LG_AGENT_VERSION);
    lua_getfield(L, mod, "config");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    lua_rawseti(L, -2, LG_AGENT_CONFIG);
    lua_getfield(L, mod, "timeout_ms");
    lua_pushinteger(L, lua_isnumber(L, -1) ? (lua_Integer)lua_tonumber(L, -1) : 0);
    lua_replace(L, -2);
    lua_rawseti(L, -2, LG_AGENT_TIMEOUT);
    lua_pushnumber(L, (lua_Number)p->gen);
    lua_rawseti(L, -2, LG_AGENT_GEN);
    lua_pushnumber(L, s->stamp);
    lua_rawseti(L, -2, LG_AGENT_STAMP);
    lua_setfield(L, s->agents, p->name);
    lua_settop(L, mod - 1);
}

static void sync_kind(lg_rt_t *rt, lg_script_kind_t kind)
{
    uint64_t gen = lg_registry_gen(kind);
    if (gen == rt->scripts_gen[kind])
        return;
    lua_State *L = rt->vm.L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->scripts_ref[kind]);
    sync_ctx_t s = {.kind = kind, .L = L, .agents = lua_gettop(L), .stamp = (double)gen};
    lg_registry_each(kind, collect, &s);
    while (s.todo != NULL) {
        pending_t *p = s.todo;
        s.todo = p->next;
        install(rt, &s, p);
        free(p->name);
        free(p->relpath);
        free(p->source);
        free(p);
    }
    /* drop agents the registry no longer has */
    lua_pushnil(L);
    while (lua_next(L, s.agents) != 0) {
        lua_rawgeti(L, -1, LG_AGENT_STAMP);
        int stale = lua_tonumber(L, -1) != s.stamp;
        lua_pop(L, 2);
        if (stale) {
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, s.agents); /* clearing an existing field during lua_next is allowed */
        }
    }
    lua_settop(L, top);
    rt->scripts_gen[kind] = gen;
}

void lg_agents_sync(lg_rt_t *rt)
{
    sync_kind(rt, LG_SCRIPT_AGENT);
    sync_kind(rt, LG_SCRIPT_PROVIDER);
}

int lg_scripts_push(lg_rt_t *rt, lg_script_kind_t kind, lua_State *L, const char *name, size_t len)
{
    sync_kind(rt, kind);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->scripts_ref[kind]);
    lua_pushlstring(L, name, len);
    lua_rawget(L, -2);
    lua_remove(L, -2);
    if (lua_istable(L, -1))
        return 1;
    lua_pop(L, 1);
    return 0;
}

size_t lg_agent_check_input(lua_State *L, int rec, int task, lg_schema_report_t *report)
{
    lua_rawgeti(L, rec, LG_AGENT_INPUT);
    /* only install() writes this field, always with lg_schema_push's userdata: no metatable check */
    lg_schema_t **box = lua_type(L, -1) == LUA_TUSERDATA ? lua_touserdata(L, -1) : NULL;
    lua_pop(L, 1); /* the record keeps the userdata alive */
    lg_schema_t *schema = box != NULL ? *box : NULL;
    if (schema == NULL)
        return 0;
    return lg_schema_check(schema, L, task, report);
}

/* luagent.agents: call(name, task, ctx) and parallel{{name, task[, ctx]}, ...}.
 *
 * Each child is an execution of its own on this worker (sched.h): its own coroutine, deadline
 * timer, memory budget and record (parent_id = the caller's id). The caller yields on one pending
 * operation (a spawn) until every child it started has ended; children run interleaved with each
 * other and with everything else on the worker, so parallel children overlap.
 *
 *   spawn(list, what) -> {{ok = true, result = v} | {ok = false, error = {status, code, message,
 *                         request_id, execution_id?, details?}}, ...}   (input order; yields)
 *
 * The task and the context are copied (JSON, as if sent over HTTP), the result and the error come
 * back the same way, so parent and child never share a table. A child is held to everything an HTTP
 * request for it would be: the agent must exist (404 not_found), the caller's API key must allow it
 * (403 forbidden), the task must pass its input schema (422 validation_failed); those refusals
 * start nothing and are not recorded, like the HTTP ones. Its deadline is its own timeout but never
 * past the parent's. When the parent ends first (deadline, client gone, drain) its cleanup cancels
 * the children still running; each is recorded as failed with code "cancelled".
 * The children's AI usage is added to the caller's; their emit and token events go to the caller's
 * stream (a child's own record keeps its emits). */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/auth.h"
#include "luagent/bind.h"
#include "luagent/json.h"
#include "luagent/router.h"
#include "luagent/sched.h"
#include "luagent/schema.h"
#include "luagent/server.h"
#include "luagent/store.h"

#define MAX_CHILDREN 256 /* per parallel{} call */

typedef struct spawn spawn_t;

typedef struct slot {
    spawn_t *op;
    lg_exec_t *child; /* NULL once it ended */
    int index;        /* its place in the results list (1-based) */
} slot_t;

struct spawn {
    lg_exec_t *parent;
    int results_ref; /* registry: the results list being filled */
    int pending;     /* children still running */
    int n;
    slot_t slots[];
};

static void child_done(lg_exec_t *e);
static void child_emit(lg_exec_t *e, const char *event, const char *json, size_t len);
static const lg_exec_ops_t child_ops = {.on_done = child_done, .on_emit = child_emit};

/* ---- results ---- */

/* Push {ok = false, error = <the object inside {"error":{...}}>, with status} for the text in b. */
static void push_failure(lua_State *L, int status, const lg_buf_t *b)
{
    lua_createtable(L, 0, 2);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "ok");
    int top = lua_gettop(L);
    if (b->len < 10 || lg_json_decode(L, b->data + 9, b->len - 10, LG_JSON_DEFAULT_MAX_DEPTH, NULL) != LG_JSON_OK ||
        !lua_istable(L, -1)) { /* cannot happen: the text is lg_error_json's */
        lua_settop(L, top);
        lua_createtable(L, 0, 2);
        lua_pushliteral(L, "internal_error");
        lua_setfield(L, -2, "code");
    }
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    lua_setfield(L, -2, "error");
}

/* Push {ok = true, result = v} for the result's JSON text (a top-level null: no result field). */
static void push_success(lua_State *L, const char *json, size_t len)
{
    lua_createtable(L, 0, 2);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "ok");
    if (!(len == 4 && memcmp(json, "null", 4) == 0) &&
        lg_json_decode(L, json, len, LG_JSON_DEFAULT_MAX_DEPTH, NULL) == LG_JSON_OK)
        lua_setfield(L, -2, "result");
}

/* A child ended: record it, and give its outcome to the waiting parent (the last one wakes it). */
static void child_done(lg_exec_t *e)
{
    slot_t *s = e->owner;
    lg_buf_t b = {0};
    int is_err;
    size_t roff = 0, rlen = 0;
    int status = lg_outcome_json(e, 0, &b, e->request_id, &is_err, &roff, &rlen);
    if (s == NULL && e->end == LG_END_CANCELLED) { /* its parent ended first */
        static const char m[] = "the parent execution ended before this child execution finished";
        lg_buf_reset(&b);
        lg_error_json(&b, "cancelled", m, sizeof(m) - 1, e->request_id, e->id);
        is_err = 1;
    }
    lg_outcome_record(e, &b, is_err, roff, rlen);
    if (s != NULL) {
        spawn_t *op = s->op;
        lg_exec_t *p = op->parent;
        lua_State *L = p->co;
        s->child = NULL;
        lg_usage_merge(&p->usage, &e->usage);
        lua_checkstack(L, LG_JSON_DEFAULT_MAX_DEPTH + 8);
        lua_rawgeti(L, LUA_REGISTRYINDEX, op->results_ref);
        if (is_err)
            push_failure(L, status, &b);
        else
            push_success(L, b.data + roff, rlen);
        lua_rawseti(L, -2, s->index);
        if (--op->pending == 0) { /* the list stays on the parent's stack: spawn's return value */
            luaL_unref(L, LUA_REGISTRYINDEX, op->results_ref);
            free(op);
            lg_sched_wake(p, 1);
        } else {
            lua_pop(L, 1);
        }
    }
    lg_buf_free(&b);
}

static void child_emit(lg_exec_t *e, const char *event, const char *json, size_t len)
{
    slot_t *s = e->owner;
    if (s == NULL)
        return;
    lg_exec_t *p = s->op->parent;
    if (p->ops->on_emit != NULL)
        p->ops->on_emit(p, event, json, len);
}

/* The parent ended while waiting: its children end with it. */
static void spawn_cleanup(lg_exec_t *p, void *data)
{
    spawn_t *op = data;
    for (int i = 0; i < op->n; i++) {
        lg_exec_t *c = op->slots[i].child;
        if (c != NULL) {
            op->slots[i].child = NULL;
            c->owner = NULL;
            lg_exec_cancel(c);
        }
    }
    luaL_unref(p->co, LUA_REGISTRYINDEX, op->results_ref);
    free(op);
}

/* ---- spawn ---- */

/* The chain of agents from the outermost execution down to e: "a > b > a". */
static void agent_chain(lg_exec_t *e, lg_buf_t *out)
{
    const char *names[64];
    int n = 0;
    for (lg_exec_t *x = e; x != NULL && n < 64;) {
        names[n++] = x->agent;
        slot_t *s = x->ops == &child_ops ? x->owner : NULL;
        x = s != NULL ? s->op->parent : NULL;
    }
    for (int i = n - 1; i >= 0 && out->len < 400; i--) {
        if (i < n - 1)
            lg_buf_lit(out, " > ");
        lg_buf_append(out, names[i], strlen(names[i]));
    }
}

static int depth_exceeded(lua_State *L, lg_exec_t *p, int max)
{
    lg_buf_t chain = {0};
    agent_chain(p, &chain);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, 500);
    lua_setfield(L, -2, "status");
    lua_pushliteral(L, "agent_depth_exceeded");
    lua_setfield(L, -2, "code");
    lua_pushfstring(L,
                    "luagent.agents: agent calls may nest %d deep (LUAGENT_MAX_AGENT_DEPTH); this call would "
                    "go deeper: %s > ...",
                    max, chain.data != NULL ? chain.data : "");
    lg_buf_free(&chain);
    lua_setfield(L, -2, "message");
    return lua_error(L);
}

/* Copy the value at idx as JSON (a deep copy without functions or cycles) onto the top of L.
 * 0, or -1 with why filled. `object`: it must be a JSON object. */
static int copy_json(lua_State *L, int idx, lg_buf_t *b, int object, char *why, size_t whylen)
{
    lg_json_error_t err;
    lg_buf_reset(b);
    if (lg_json_encode(L, idx, b, LG_JSON_DEFAULT_MAX_DEPTH, &err) != LG_JSON_OK) {
        snprintf(why, whylen, "%s", err.msg);
        return -1;
    }
    if (object && (b->len == 0 || b->data[0] != '{')) {
        snprintf(why, whylen, "must be an object (a table with string keys)");
        return -1;
    }
    if (!object && b->len == 4 && memcmp(b->data, "null", 4) == 0) {
        snprintf(why, whylen, "must be a JSON value other than null");
        return -1;
    }
    if (lg_json_decode(L, b->data, b->len, LG_JSON_DEFAULT_MAX_DEPTH, &err) != LG_JSON_OK) {
        snprintf(why, whylen, "%s", err.msg);
        return -1;
    }
    return 0;
}

/* Start one child for entry i (stack: task at ti, context at ti + 1). Returns the execution, or
 * NULL after pushing the refusal's result entry. Never raises short of the VM running out of
 * memory (the caller's budget is not being charged). */
static lg_exec_t *start_child(lua_State *L, lg_exec_t *p, const char *name, size_t len, int ti, lg_buf_t *b)
{
    lg_rt_t *rt = p->rt;
    char msg[LG_AGENT_NAME_MAX + 64];
    lg_buf_reset(b);
    if (!lg_agent_name_valid(name, len)) {
        snprintf(msg, sizeof(msg), "no agent named '%.*s'", (int)(len > LG_AGENT_NAME_MAX ? LG_AGENT_NAME_MAX : len),
                 name);
        lg_error_json(b, "not_found", msg, strlen(msg), p->request_id, NULL);
        push_failure(L, 404, b);
        return NULL;
    }
    if (!lg_agents_allowed(p->agents_allow, name, len)) {
        snprintf(msg, sizeof(msg), "this credential may not run the agent '%.*s'", (int)len, name);
        lg_error_json(b, "forbidden", msg, strlen(msg), p->request_id, NULL);
        push_failure(L, 403, b);
        return NULL;
    }
    lg_exec_t *c = lg_exec_new(rt, &child_ops, NULL);
    lua_pushvalue(L, ti);
    lua_pushvalue(L, ti + 1);
    lua_xmove(L, c->co, 2); /* [task, context]: a fresh coroutine has room, nothing allocates */
    memcpy(c->parent_id, p->id, sizeof(c->parent_id));
    memcpy(c->request_id, p->request_id, sizeof(c->request_id));
    memcpy(c->trace, p->trace, sizeof(c->trace)); /* the child's log lines and calls join the parent's trace */
    memcpy(c->user_id, p->user_id, sizeof(c->user_id));
    memcpy(c->agents_allow, p->agents_allow, sizeof(c->agents_allow));
    c->user_role = p->user_role;
    c->stream = p->stream;
    c->depth = p->depth + 1;
    c->deadline_cap_ms = p->budget.deadline_ms;
    lg_schema_report_t invalid = {0};
    lg_launch_status_t ls = lg_exec_launch(c, name, len, 0, &invalid);
    if (ls == LG_LAUNCH_OK) {
        if (c->deadline_inherited) /* the same instant, to the ms, as the parent's ctx says */
            c->deadline_epoch_ms = p->deadline_epoch_ms;
        return c;
    }
    if (ls == LG_LAUNCH_INVALID) {
        lg_error_json_invalid(b, name, len, &invalid, p->request_id, NULL);
        push_failure(L, 422, b);
    } else {
        snprintf(msg, sizeof(msg), "no agent named '%.*s'", (int)len, name);
        lg_error_json(b, "not_found", msg, strlen(msg), p->request_id, NULL);
        push_failure(L, 404, b);
    }
    lg_buf_free(&invalid.details);
    lua_settop(c->co, 0);
    lg_exec_discard(c);
    return NULL;
}

/* spawn(list, what): see the top of the file. `what` names the public function in messages. */
static int l_spawn(lua_State *L)
{
    const char *what = luaL_optstring(L, 2, "luagent.agents.parallel");
    int single = strcmp(what, "luagent.agents.call") == 0;
    lg_exec_t *p = lg_sched_check(L, what);
    if (!lua_istable(L, 1))
        return luaL_error(L, "%s: expected a list of {name, task[, ctx]} entries, got a %s", what, luaL_typename(L, 1));
    int n = (int)lua_objlen(L, 1);
    if (n > MAX_CHILDREN)
        return luaL_error(L, "%s: at most %d agents at once, got %d", what, MAX_CHILDREN, n);
    lua_settop(L, 2);
    lua_createtable(L, n, 0); /* 3: the results */
    lg_json_push_array_mt(L);
    lua_setmetatable(L, 3);
    if (n == 0)
        return 1;
    int max = p->rt->cfg->max_agent_depth;
    if (p->depth >= max)
        return depth_exceeded(L, p, max);

    /* 1: check every entry and copy its task and context (4 + 3i .. 6 + 3i: name, task, context);
     *    anything wrong raises here, before a single child has started */
    luaL_checkstack(L, 3 * n + LG_JSON_DEFAULT_MAX_DEPTH + 16, "too many agents");
    lg_buf_t b = {0};
    char why[192];
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        int ent = lua_gettop(L), ti = ent + 1, ci = ent + 2;
        const char *part = NULL;
        char where[32] = "";
        if (!single)
            snprintf(where, sizeof(where), " (entry %d)", i);
        if (!lua_istable(L, ent)) {
            lg_buf_free(&b);
            return luaL_error(L, "%s%s: expected a table {name, task[, ctx]}, got a %s", what, where,
                              luaL_typename(L, ent));
        }
        lua_rawgeti(L, ent, 1);
        lua_rawgeti(L, ent, 2);
        lua_rawgeti(L, ent, 3);
        lua_remove(L, ent); /* name task ctx */
        if (lua_type(L, ent) != LUA_TSTRING) {
            lg_buf_free(&b);
            return luaL_error(L, "%s%s: the agent name must be a string, got a %s", what, where, luaL_typename(L, ent));
        }
        if (lua_isnil(L, ti))
            part = "task", snprintf(why, sizeof(why), "is nil (send any JSON value but null)");
        else if (copy_json(L, ti, &b, 0, why, sizeof(why)) != 0)
            part = "task";
        else
            lua_replace(L, ti);
        if (part == NULL && !lua_isnil(L, ci)) {
            int from = ci;
            if (lua_istable(L, ci) && lua_topointer(L, ci) == p->ctx_ptr) { /* the caller's own ctx: its context */
                lua_getfield(L, ci, "context");
                from = lua_gettop(L);
            }
            if (!lua_istable(L, from))
                part = "context", snprintf(why, sizeof(why), "must be a table, got a %s", luaL_typename(L, from));
            else if (copy_json(L, from, &b, 1, why, sizeof(why)) != 0)
                part = "context";
            else
                lua_replace(L, ci);
            lua_settop(L, ci);
        }
        if (part != NULL) {
            lg_buf_free(&b);
            return luaL_error(L, "%s%s: the %s %s", what, where, part, why);
        }
    }

    /* 2: start them; nothing below raises, and the caller's memory budget pays for nothing here */
    lg_vm_t *vm = &p->rt->vm;
    lg_budget_t *saved = vm->current;
    lg_vm_charge(vm, NULL);
    spawn_t *op = calloc(1, sizeof(*op) + (size_t)n * sizeof(slot_t));
    if (op == NULL)
        abort();
    op->parent = p;
    op->n = n;
    for (int i = 1; i <= n; i++) {
        int ni = 4 + 3 * (i - 1);
        size_t len;
        const char *name = lua_tolstring(L, ni, &len);
        lg_exec_t *c = start_child(L, p, name, len, ni + 1, &b);
        if (c == NULL) {
            lua_rawseti(L, 3, i);
            continue;
        }
        slot_t *s = &op->slots[op->pending++];
        s->op = op;
        s->child = c;
        s->index = i;
        c->owner = s;
    }
    lg_buf_free(&b);
    lg_vm_charge(vm, saved);
    if (op->pending == 0) { /* every one was refused: nothing to wait for */
        free(op);
        lua_settop(L, 3);
        return 1;
    }
    op->n = op->pending;
    lua_pushvalue(L, 3);
    op->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return lg_sched_yield(L, spawn_cleanup, op);
}

/* The public functions: call raises the child's error (a yielding C function cannot run code after
 * it resumes, hence a Lua wrapper). */
static const char wrapper[] =
    "local spawn = ...\n"
    "local error, type = error, type\n"
    "local agents = {}\n"
    "function agents.call(name, task, ctx)\n"
    "  local r = spawn({{name, task, ctx}}, 'luagent.agents.call')[1]\n"
    "  if r.ok then return r.result end\n"
    "  error(r.error, 0)\n"
    "end\n"
    "function agents.parallel(list)\n"
    "  return spawn(list, 'luagent.agents.parallel')\n"
    "end\n"
    "return agents\n";

void lg_bind_open_agents(lua_State *L)
{
    if (luaL_loadbuffer(L, wrapper, sizeof(wrapper) - 1, "=luagent.agents") != 0)
        lua_error(L);
    lua_pushcfunction(L, l_spawn);
    lua_call(L, 1, 1);
}

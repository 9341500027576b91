#include "luagent/sched.h"

#include <lauxlib.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/agents.h"
#include "luagent/bind.h"
#include "luagent/curlm.h"
#include "luagent/redis.h"
#include "luagent/pg.h"
#include "luagent/upstream.h"
#include "luagent/json.h"
#include "luagent/log.h"
#include "luagent/metrics.h"
#include "luagent/store.h"

#define POOL_MAX 4096
#define CTX_MT_KEY "luagent.ctx_mt"

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

static void exec_free(lg_exec_t *e);

/* ---- ready queue ---- */

static void ready_push(lg_rt_t *rt, lg_exec_t *e)
{
    e->state = LG_EXEC_READY;
    e->next = NULL;
    e->prev = rt->ready_tail;
    if (rt->ready_tail)
        rt->ready_tail->next = e;
    else
        rt->ready_head = e;
    rt->ready_tail = e;
}

static void ready_unlink(lg_rt_t *rt, lg_exec_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        rt->ready_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        rt->ready_tail = e->prev;
    e->prev = e->next = NULL;
}

/* ---- ctx ---- */

static int ctx_emit(lua_State *L)
{
    lg_exec_t *e = lg_sched_current(L);
    if (e == NULL)
        return luaL_error(L, "ctx.emit can only be called inside execute()");
    lg_buf_t b = {0};
    lg_json_error_t err;
    lua_settop(L, 1);
    if (lg_json_encode(L, 1, &b, LG_JSON_DEFAULT_MAX_DEPTH, &err) != LG_JSON_OK) {
        lg_buf_free(&b);
        return luaL_error(L, "ctx.emit: %s", err.msg);
    }
    lg_record_event(e, "emit", b.data, b.len);
    if (e->ops->on_emit != NULL)
        e->ops->on_emit(e, "emit", b.data, b.len);
    lg_buf_free(&b);
    return 0;
}

static int readonly_newindex(lua_State *L) { return luaL_error(L, "this table is read-only"); }

/* ctx fields that would cost an allocation per execution (strings, the user table) are made on
 * first use: __index checks that the table is the running execution's own ctx and caches the
 * value with rawset. emit and log come from the shared methods table (upvalue 1). */
static int ctx_index(lua_State *L)
{
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1))
        return 1;
    lg_exec_t *e = lg_sched_current(L);
    const char *k = lua_tostring(L, 2);
    if (e == NULL || k == NULL || e->ctx_ptr != lua_topointer(L, 1))
        return 0;
    if (strcmp(k, "execution_id") == 0)
        lua_pushstring(L, e->id);
    else if (strcmp(k, "request_id") == 0)
        lua_pushstring(L, e->request_id);
    else if (strcmp(k, "agent") == 0)
        lua_pushstring(L, e->agent);
    else if (strcmp(k, "version") == 0)
        lua_pushstring(L, e->version);
    else if (strcmp(k, "deadline_ms") == 0)
        lua_pushnumber(L, (lua_Number)e->deadline_epoch_ms);
    else if (strcmp(k, "user") == 0) {
        static const char *const roles[] = {"admin", "viewer", "operator", "admin"}; /* 0: auth off */
        lua_createtable(L, 0, 2);
        lua_pushstring(L, e->user_role ? e->user_id : "anonymous");
        lua_setfield(L, -2, "id");
        lua_pushstring(L, roles[e->user_role & 3]);
        lua_setfield(L, -2, "role");    } else if (strcmp(k, "session") == 0)
        lg_bind_push_session(L, 1);
    else
        return 0;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

/* ctx's metatable: __index = ctx_index with {emit, log}, log being a read-only view of luagent.log */
static void make_ctx_mt(lua_State *L)
{
    lua_newtable(L); /* mt */
    lua_newtable(L); /* methods */
    lua_pushcfunction(L, ctx_emit);
    lua_setfield(L, -2, "emit");
    lua_newtable(L); /* log proxy */
    lua_newtable(L);
    lg_bind_open_log(L);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "log");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "log");
    lua_pushcclosure(L, ctx_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "ctx");
    lua_setfield(L, -2, "__metatable");
    lua_setfield(L, LUA_REGISTRYINDEX, CTX_MT_KEY);
}

/* stack: [record task context] -> [execute task ctx] */
static void push_ctx(lg_exec_t *e)
{
    lua_State *co = e->co;
    lua_createtable(co, 0, 4);
    lua_rawgeti(co, 1, LG_AGENT_CONFIG);
    lua_setfield(co, -2, "config");
    lua_pushboolean(co, e->stream);
    lua_setfield(co, -2, "stream");
    if (lua_isnil(co, 3)) {
        lua_newtable(co);
        lua_replace(co, 3);
    }
    lua_pushvalue(co, 3);
    lua_setfield(co, -2, "context");
    lua_getfield(co, LUA_REGISTRYINDEX, CTX_MT_KEY);
    lua_setmetatable(co, -2);
    e->ctx_ptr = lua_topointer(co, -1);
    lua_replace(co, 3);
    lua_rawgeti(co, 1, LG_AGENT_EXECUTE);
    lua_replace(co, 1);
}

/* ---- runtime ---- */

int lg_rt_init(lg_rt_t *rt, const lg_config_t *cfg, h2o_loop_t *loop)
{
    memset(rt, 0, sizeof(*rt));
    rt->cfg = cfg;
    rt->record = lg_history_enabled() || cfg->database_url != NULL;
    rt->loop = loop;
    if (lg_vm_open(&rt->vm, rt) != 0)
        return -1;
    lua_State *L = rt->vm.L;
    for (int k = 0; k < LG_SCRIPT_KINDS; k++) {
        lua_newtable(L);
        rt->scripts_ref[k] = luaL_ref(L, LUA_REGISTRYINDEX);
        rt->scripts_gen[k] = (uint64_t)-1;
    }
    make_ctx_mt(L);
    /* rt->curl and rt->upstream are made on first use (lg_rt_curl, lg_rt_upstream): libcurl's global
     * init alone touches ~5 MiB of its libraries' pages, which an echo-only worker never needs */
    return 0;
}

void lg_rt_dispose(lg_rt_t *rt)
{
    lg_rt_cancel_all(rt); /* every execution ends: pending operations and owned resources released */
    while (rt->ready_head != NULL)
        lg_exec_cancel(rt->ready_head);
    lg_curlm_free(rt->curl);
    rt->curl = NULL;
    lg_upstream_free(rt->upstream);
    rt->upstream = NULL;
    lg_redis_free(rt->redis);
    rt->redis = NULL;
    lg_pg_free(rt->pg);
    rt->pg = NULL;
    lg_timers_free(&rt->timers);
    lg_vm_close(&rt->vm);
    while (rt->free_execs != NULL) {
        lg_exec_t *e = rt->free_execs;
        rt->free_execs = e->next;
        exec_free(e);
    }
    free(rt->pool);
    rt->pool = NULL;
}

static void resume(lg_exec_t *e);

void lg_rt_run_ready(lg_rt_t *rt)
{
    lg_exec_t *e;
    while ((e = rt->ready_head) != NULL) {
        ready_unlink(rt, e);
        resume(e);
    }
}

/* A write that completes at once queues its socket's callback (h2o's own: the generator's proceed
 * that lets the next SSE chunk go, the end of an HTTP/1 response). Queued callbacks run after the
 * next poll, whose timeout h2o 2.2.5 takes from its timers alone. Executions resumed from the
 * ready queue write after h2o_evloop_run returned: the loop must not sleep on what they queued. */
static int h2o_has_pending(h2o_loop_t *loop)
{
    return loop->_pending_as_client != NULL || loop->_pending_as_server != NULL;
}

void lg_rt_run_once(lg_rt_t *rt, int32_t max_wait_ms)
{
    int32_t wait = max_wait_ms;
    if (rt->ready_head != NULL || h2o_has_pending(rt->loop)) {
        wait = 0;
    } else {
        int64_t t = lg_timers_wait_ms(&rt->timers, lg_now_mono_ms());
        if (t >= 0 && t < wait)
            wait = (int32_t)t;
    }
    h2o_evloop_run(rt->loop, wait);
    if (rt->timers.n > 0)
        lg_timers_run(&rt->timers, lg_now_mono_ms());
    lg_rt_run_ready(rt);
    lg_log_flush();
}

/* ---- executions ---- */

static void exec_free(lg_exec_t *e)
{
    lg_buf_free(&e->rec);
    lg_buf_free(&e->events);
    free(e);
}

static void on_deadline(lg_timer_t *t);

lg_exec_t *lg_exec_new(lg_rt_t *rt, const lg_exec_ops_t *ops, void *owner)
{
    lg_exec_t *e = rt->free_execs;
    if (e != NULL) {
        rt->free_execs = e->next;
        rt->nfree_execs--;
        memset(e, 0, offsetof(lg_exec_t, id));
        e->id[0] = e->version[0] = e->agent[0] = e->request_id[0] = e->parent_id[0] = e->user_id[0] = e->trace[0] = '\0';
        e->agents_allow[0] = '\0';
        lg_buf_reset(&e->rec);
        lg_buf_reset(&e->events);
    } else if ((e = calloc(1, sizeof(*e))) == NULL) {
        abort();
    }
    lua_State *L = rt->vm.L;
    e->rt = rt;
    e->ops = ops;
    e->owner = owner;
    e->recording = rt->record;
    lg_timer_init(&e->deadline_timer, on_deadline);
    lg_timer_init(&e->op_timer, NULL);
    if (rt->npool > 0) {
        e->co_ref = rt->pool[--rt->npool];
        lua_rawgeti(L, LUA_REGISTRYINDEX, e->co_ref);
        e->co = lua_tothread(L, -1);
        lua_pop(L, 1);
    } else {
        e->co = lua_newthread(L);
        e->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return e;
}

static void release(lg_exec_t *e, int reusable)
{
    lg_rt_t *rt = e->rt;
    lg_usage_free(&e->usage);
    if (reusable && lua_status(e->co) == 0 && rt->npool < POOL_MAX) {
        lua_settop(e->co, 0);
        if (rt->npool == rt->cappool) {
            rt->cappool = rt->cappool ? rt->cappool * 2 : 64;
            rt->pool = realloc(rt->pool, rt->cappool * sizeof(int));
        }
        rt->pool[rt->npool++] = e->co_ref;
    } else {
        luaL_unref(rt->vm.L, LUA_REGISTRYINDEX, e->co_ref);
    }
    if (rt->nfree_execs < 1024) {
        e->next = rt->free_execs;
        rt->free_execs = e;
        rt->nfree_execs++;
    } else {
        exec_free(e);
    }
}

void lg_exec_discard(lg_exec_t *e) { release(e, 1); }

lg_launch_status_t lg_exec_launch(lg_exec_t *e, const char *name, size_t namelen, int timeout_ms,
                                  lg_schema_report_t *invalid)
{
    lg_rt_t *rt = e->rt;
    lua_State *co = e->co;
    if (!lg_agents_push(rt, co, name, namelen))
        return LG_LAUNCH_NO_AGENT;
    lua_insert(co, 1); /* [record task context] */
    lua_settop(co, 3);
    size_t n = namelen < sizeof(e->agent) - 1 ? namelen : sizeof(e->agent) - 1;
    memcpy(e->agent, name, n);
    e->agent[n] = '\0';
    lua_rawgeti(co, 1, LG_AGENT_VERSION);
    strncpy(e->version, lua_tostring(co, -1), LG_VERSION_LEN);
    lua_rawgeti(co, 1, LG_AGENT_TIMEOUT);
    int agent_timeout = (int)lua_tointeger(co, -1);
    /* the input schema: nil or lg_schema_push's userdata (only agents.c writes the field), read
     * here with the other fields so an agent without one pays a rawgeti and nothing else */
    lua_rawgeti(co, 1, LG_AGENT_INPUT);
    lg_schema_t **input = lua_touserdata(co, -1);
    lua_pop(co, 3);
    if (input != NULL && lg_schema_check(*input, co, 2, invalid) != 0) {
        lua_remove(co, 1); /* [task context], as the caller gave it */
        return LG_LAUNCH_INVALID;
    }
    if (timeout_ms <= 0)
        timeout_ms = agent_timeout > 0 ? agent_timeout : rt->cfg->exec_timeout_ms;
    if (e->id[0] == '\0')
        lg_uuid7(e->id);
    e->start_ns = lg_now_mono_ns();
    uint64_t now_ms = e->start_ns / 1000000u;
    if (e->deadline_cap_ms != 0 && e->deadline_cap_ms < now_ms + (uint64_t)timeout_ms) {
        timeout_ms = e->deadline_cap_ms > now_ms ? (int)(e->deadline_cap_ms - now_ms) : 0;
        e->deadline_inherited = 1;
    }
    e->timeout_ms = timeout_ms;
    e->budget.deadline_ms = now_ms + (uint64_t)timeout_ms;
    e->budget.mem_limit = (size_t)rt->cfg->memory_limit_mb << 20;
    e->started_ms = lg_now_epoch_ms();
    if (e->created_ms == 0)
        e->created_ms = e->started_ms;
    e->deadline_epoch_ms = e->started_ms + (uint64_t)timeout_ms;
    if (e->recording)
        lg_record_begin(e, 2);
    push_ctx(e);
    e->nres = 2;
    lg_timers_add(&rt->timers, &e->deadline_timer, e->budget.deadline_ms);
    rt->inflight++;
    lg_metrics_exec_start(rt->metrics);
    ready_push(rt, e);
    return LG_LAUNCH_OK;
}

static void finish(lg_exec_t *e, lg_exec_end_t end)
{
    lg_rt_t *rt = e->rt;
    if (e->state == LG_EXEC_DONE)
        return;
    if (e->state == LG_EXEC_READY)
        ready_unlink(rt, e);
    lg_timers_del(&rt->timers, &e->deadline_timer);
    if (e->cleanup != NULL) {
        lg_cleanup_fn fn = e->cleanup;
        e->cleanup = NULL;
        fn(e, e->cleanup_data);
    }
    while (e->resources != NULL) {
        lg_resource_t *r = e->resources;
        lg_exec_disown(e, r);
        r->release(r);
    }
    e->state = LG_EXEC_DONE;
    e->end = end;
    uint64_t took_ns = lg_now_mono_ns() - e->start_ns;
    e->duration_ms = (double)took_ns / 1e6;
    rt->inflight--;
    lg_metrics_exec_end(rt->metrics, e->agent, e->version, (int)end, took_ns);
    e->ops->on_done(e);
    release(e, end == LG_END_OK);
}

static void on_deadline(lg_timer_t *t)
{
    lg_exec_t *e = container_of(t, lg_exec_t, deadline_timer);
    e->budget.timed_out = 1;
    finish(e, LG_END_TIMEOUT);
}

void lg_exec_cancel(lg_exec_t *e)
{
    if (e->state == LG_EXEC_RUNNING)
        e->cancel_requested = 1;
    else
        finish(e, LG_END_CANCELLED);
}

static void log_agent_error(lg_exec_t *e)
{
    if (!lg_log_enabled(LG_LOG_WARN))
        return;
    lua_State *L = e->rt->vm.L;
    const char *msg = lua_isstring(e->co, -1) ? lua_tostring(e->co, -1) : "(error object is a table)";
    luaL_traceback(L, e->co, msg, 0);
    lg_buf_t b = {0};
    lg_log_begin(&b, LG_LOG_WARN, LG_STRLIT("agent raised an error"));
    lg_log_kv_cstr(&b, "execution_id", e->id);
    lg_log_kv_cstr(&b, "request_id", e->request_id);
    lg_log_kv_cstr(&b, "agent", e->agent);
    lg_log_kv_cstr(&b, "version", e->version);
    if (e->trace[0] != '\0')
        lg_log_kv_str(&b, "trace_id", e->trace + 3, 32);
    lg_log_kv_cstr(&b, "traceback", lua_tostring(L, -1));
    lg_log_end(&b);
    lg_buf_free(&b);
    lua_pop(L, 1);
}

static void resume(lg_exec_t *e)
{
    lg_vm_t *vm = &e->rt->vm;
    int nres = e->nres;
    e->nres = 0;
    e->yielding = 0;
    e->state = LG_EXEC_RUNNING;
    lg_vm_charge(vm, &e->budget);
    e->rt->running = e;
    int rc = lua_resume(e->co, nres);
    e->rt->running = NULL;
    lg_vm_charge(vm, NULL);
    if (e->cancel_requested) {
        finish(e, LG_END_CANCELLED);
        return;
    }
    if (rc == LUA_YIELD) {
        if (!e->yielding) {
            lua_pushliteral(e->co, "coroutine.yield called outside a coroutine created by the agent");
            finish(e, LG_END_ERROR);
        } else if (e->state == LG_EXEC_RUNNING) {
            e->state = LG_EXEC_WAITING;
        }
        return;
    }
    if (rc == 0) {
        finish(e, e->budget.mem_exceeded ? LG_END_MEMORY : LG_END_OK);
    } else if (e->budget.timed_out) {
        finish(e, LG_END_TIMEOUT);
    } else if (e->budget.mem_exceeded || rc == LUA_ERRMEM) {
        finish(e, LG_END_MEMORY);
    } else {
        log_agent_error(e);
        finish(e, LG_END_ERROR);
    }
}

void lg_exec_own(lg_exec_t *e, lg_resource_t *r)
{
    r->prev = NULL;
    r->next = e->resources;
    if (e->resources != NULL)
        e->resources->prev = r;
    e->resources = r;
}

void lg_exec_disown(lg_exec_t *e, lg_resource_t *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else if (e->resources == r)
        e->resources = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

struct lg_curlm *lg_rt_curl(lg_rt_t *rt)
{
    if (rt->curl == NULL)
        rt->curl = lg_curlm_new(rt->loop, &rt->timers);
    return rt->curl;
}

struct lg_upstream *lg_rt_upstream(lg_rt_t *rt)
{
    if (rt->upstream == NULL)
        rt->upstream = lg_upstream_new(rt->loop);
    return rt->upstream;
}

struct lg_redis *lg_rt_redis(lg_rt_t *rt)
{
    if (rt->redis == NULL && rt->cfg->redis_url != NULL && rt->cfg->redis_url[0] != '\0')
        rt->redis = lg_redis_new(rt->loop, &rt->timers, rt->cfg->redis_url, "redis");
    return rt->redis;
}

struct lg_pg *lg_rt_pg(lg_rt_t *rt)
{
    if (rt->pg == NULL && rt->cfg->database_url != NULL)
        rt->pg = lg_pg_new(rt->loop, &rt->timers, rt->cfg->database_url, rt->cfg->db_pool_size);
    return rt->pg;
}

void lg_exec_run(lg_exec_t *e)
{
    if (e->state != LG_EXEC_READY)
        return;
    ready_unlink(e->rt, e);
    resume(e);
}

lg_exec_t *lg_sched_current(lua_State *L)
{
    lg_vm_t *vm = lg_vm_of(L);
    lg_rt_t *rt = vm->rt;
    /* vm->current is also set while an agent file's top level runs (a budget that is no execution's) */
    if (rt == NULL || rt->running == NULL || vm->current != &rt->running->budget)
        return NULL;
    return rt->running;
}

lg_exec_t *lg_sched_check(lua_State *L, const char *what)
{
    lg_exec_t *e = lg_sched_current(L);
    if (e == NULL)
        luaL_error(L, "%s can only be called inside execute()", what);
    else if (e->co != L)
        luaL_error(L, "%s cannot be called inside a coroutine created by the agent", what);
    return e;
}

int lg_sched_yield(lua_State *L, lg_cleanup_fn cleanup, void *data)
{
    lg_exec_t *e = lg_sched_current(L);
    e->cleanup = cleanup;
    e->cleanup_data = data;
    e->yielding = 1;
    return lua_yield(L, 0);
}

void lg_sched_wake(lg_exec_t *e, int nres)
{
    if (e->state != LG_EXEC_WAITING && e->state != LG_EXEC_RUNNING)
        return;
    e->cleanup = NULL;
    e->cleanup_data = NULL;
    e->nres = nres;
    ready_push(e->rt, e);
}

void lg_rt_cancel_all(lg_rt_t *rt)
{
    /* every live execution has its deadline timer armed: that is the list of them */
    for (size_t i = 0; i < rt->timers.n;) {
        lg_timer_t *t = rt->timers.v[i].t;
        if (t->cb == on_deadline) {
            lg_exec_cancel(container_of(t, lg_exec_t, deadline_timer));
            i = 0; /* the heap changed */
        } else {
            i++;
        }
    }
}

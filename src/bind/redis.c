/* luagent.redis: Redis commands from agents, on the worker's one shared connection (redis.h).
 *
 *   v = luagent.redis.call(cmd, ...)          yields until the reply
 *
 * Arguments: strings go as they are (binary-safe), numbers as decimal text (integral values
 * without exponent or fraction: 42, -7, 1e15 -> "1000000000000000"; others the shortest form that
 * reads back as the same double; inf -> "inf"). Anything else (nil, booleans, tables, functions)
 * is refused: Redis has no such types, and a boolean stored as "0" would read back truthy.
 * Replies: status -> string ("OK"), integer -> number, bulk -> string, nil -> nil (json.null inside
 * an array), array -> array table (JSON array marker: an empty one encodes as []).
 * Errors are raised as tables (catchable with pcall; uncaught they become the reply's status):
 *   error reply            {status = 500, code = "redis_error", message = <Redis's text>}
 *   not connected / lost   {status = 503, code = "unavailable", message = "redis unavailable"}
 * Misuse (REDIS_URL unset, a bad argument, a refused command) raises a string.
 *
 * The connection is shared by every execution of the worker and pipelined, so commands that
 * block it or change its state for everyone are refused (see refused[] and docs/redis.md).
 *
 * Three parts: start (redis_call sends, yields with cleanup = cancel), resume (on_reply pushes
 * the result on the coroutine and wakes it), cleanup (the execution ended first: the request is
 * cancelled, its reply will be read and dropped). */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "luagent/bind.h"
#include "luagent/json.h"
#include "luagent/redis.h"
#include "luagent/sched.h"

#define FN "luagent.redis.call"

/* Commands refused on the shared connection, and why. */
static const struct {
    const char *name;
    const char *why;
} refused[] = {
    {"BLPOP", "blocks the shared connection"},
    {"BRPOP", "blocks the shared connection"},
    {"BRPOPLPUSH", "blocks the shared connection"},
    {"BLMOVE", "blocks the shared connection"},
    {"BLMPOP", "blocks the shared connection"},
    {"BZPOPMIN", "blocks the shared connection"},
    {"BZPOPMAX", "blocks the shared connection"},
    {"BZMPOP", "blocks the shared connection"},
    {"WAIT", "blocks the shared connection"},
    {"WAITAOF", "blocks the shared connection"},
    {"SUBSCRIBE", "turns the shared connection into a subscriber"},
    {"PSUBSCRIBE", "turns the shared connection into a subscriber"},
    {"SSUBSCRIBE", "turns the shared connection into a subscriber"},
    {"UNSUBSCRIBE", "is for subscribers"},
    {"PUNSUBSCRIBE", "is for subscribers"},
    {"SUNSUBSCRIBE", "is for subscribers"},
    {"MONITOR", "takes over the shared connection"},
    {"SYNC", "takes over the shared connection"},
    {"PSYNC", "takes over the shared connection"},
    {"MULTI", "would capture other executions' commands (use EVAL for atomic work)"},
    {"EXEC", "needs MULTI, which is refused (use EVAL for atomic work)"},
    {"DISCARD", "needs MULTI, which is refused (use EVAL for atomic work)"},
    {"WATCH", "is connection state shared by every execution (use EVAL for atomic work)"},
    {"UNWATCH", "is connection state shared by every execution (use EVAL for atomic work)"},
    {"SELECT", "changes the database for every execution (put the db in REDIS_URL)"},
    {"AUTH", "is done by the connection from REDIS_URL"},
    {"HELLO", "changes the protocol of the shared connection"},
    {"RESET", "resets the shared connection"},
    {"QUIT", "closes the shared connection"},
};

/* NULL when cmd (with its arguments at stack indices 2..n) may run on the shared connection,
 * else why not. XREAD/XREADGROUP are refused only with BLOCK (an option before STREAMS);
 * CLIENT only for REPLY (which would desynchronise replies from their callers). */
static const char *refusal(lua_State *L, const char *cmd, int n)
{
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (strcasecmp(cmd, refused[i].name) == 0)
            return refused[i].why;
    if (strcasecmp(cmd, "XREAD") == 0 || strcasecmp(cmd, "XREADGROUP") == 0) {
        for (int i = 2; i <= n; i++) {
            const char *a = lua_tostring(L, i);
            if (strcasecmp(a, "STREAMS") == 0)
                break;
            if (strcasecmp(a, "BLOCK") == 0)
                return "with BLOCK blocks the shared connection (leave BLOCK out and poll)";
        }
    }
    if (strcasecmp(cmd, "CLIENT") == 0 && n >= 2 && strcasecmp(lua_tostring(L, 2), "REPLY") == 0)
        return "REPLY would desynchronise the shared connection";
    return NULL;
}

/* Replace the number at idx by its text. */
static void number_to_text(lua_State *L, int idx)
{
    lua_Number v = lua_tonumber(L, idx);
    char buf[40];
    if (isnan(v))
        luaL_error(L, FN ": argument %d is NaN", idx);
    if (v == floor(v) && fabs(v) < 9.2e18) {
        snprintf(buf, sizeof(buf), "%lld", (long long)v);
    } else if (isinf(v)) {
        snprintf(buf, sizeof(buf), "%s", v > 0 ? "inf" : "-inf");
    } else {
        for (int prec = 15; prec <= 17; prec++) { /* the shortest text that reads back as v */
            snprintf(buf, sizeof(buf), "%.*g", prec, v);
            if (strtod(buf, NULL) == v)
                break;
        }
    }
    lua_pushstring(L, buf);
    lua_replace(L, idx);
}

/* ---- results pushed on the waiting coroutine ---- */

static void push_error(lua_State *co, int status, const char *code, const char *msg, size_t len)
{
    lua_pushboolean(co, 0);
    lua_createtable(co, 0, 3);
    lua_pushinteger(co, status);
    lua_setfield(co, -2, "status");
    lua_pushstring(co, code);
    lua_setfield(co, -2, "code");
    lua_pushlstring(co, msg, len);
    lua_setfield(co, -2, "message");
}

static void push_unavailable(lua_State *co) { push_error(co, 503, "unavailable", "redis unavailable", 17); }

/* the first error reply inside an array (EVAL can return one), or NULL */
static const redisReply *nested_error(const redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR)
        return r;
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *e = nested_error(r->element[i]);
            if (e != NULL)
                return e;
        }
    return NULL;
}

static void push_value(lua_State *co, const redisReply *r, int top)
{
    luaL_checkstack(co, 4, "redis reply nested too deeply");
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(co, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushnumber(co, (lua_Number)r->integer);
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(co, r->elements > 0x7fffffff ? 0 : (int)r->elements, 0);
        lg_json_push_array_mt(co);
        lua_setmetatable(co, -2);
        for (size_t i = 0; i < r->elements; i++) {
            push_value(co, r->element[i], 0);
            lua_rawseti(co, -2, (int)(i + 1));
        }
        break;
    case REDIS_REPLY_NIL:
    default:
        if (top)
            lua_pushnil(co);
        else
            lg_json_push_null(co);
        break;
    }
}

static void on_reply(void *data, redisReply *reply, const char *err)
{
    lg_exec_t *e = data;
    lua_State *co = e->co;
    lua_checkstack(co, 8);
    const redisReply *bad;
    if (reply == NULL) {
        push_unavailable(co);
    } else if ((bad = nested_error(reply)) != NULL) {
        push_error(co, 500, "redis_error", bad->str, bad->len);
    } else {
        lua_pushboolean(co, 1);
        push_value(co, reply, 1);
    }
    lg_sched_wake(e, 2);
}

/* the execution ended while waiting: the reply will be read and dropped */
static void call_cleanup(lg_exec_t *e, void *data) { lg_redis_cancel(data); }

/* raw(cmd, ...) -> true, value | false, err   (yields) */
static int redis_raw_call(lua_State *L)
{
    int n = lua_gettop(L);
    lg_exec_t *e = lg_sched_check(L, FN);
    if (n < 1 || lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, FN ": the first argument must be a command name (a string)");
    for (int i = 2; i <= n; i++) {
        int t = lua_type(L, i);
        if (t == LUA_TNUMBER)
            number_to_text(L, i);
        else if (t != LUA_TSTRING)
            return luaL_error(L, FN ": argument %d is a %s (only strings and numbers can be sent%s)", i,
                              luaL_typename(L, i), t == LUA_TBOOLEAN ? "; send 1/0 or a string" : "");
    }
    const char *cmd = lua_tostring(L, 1);
    const char *why = refusal(L, cmd, n);
    if (why != NULL)
        return luaL_error(L, FN ": %s is not allowed: it %s", cmd, why);
    lg_redis_t *r = lg_rt_redis(e->rt);
    if (r == NULL)
        return luaL_error(L, "luagent.redis: REDIS_URL is not set");

    /* no Lua call below may raise until the command is handed over: argv is malloc'ed */
    const char *argv_small[16];
    size_t len_small[16];
    const char **argv = argv_small;
    size_t *lens = len_small;
    if (n > 16) {
        argv = malloc((size_t)n * sizeof(*argv));
        lens = malloc((size_t)n * sizeof(*lens));
        if (argv == NULL || lens == NULL) {
            free(argv);
            free(lens);
            return luaL_error(L, FN ": out of memory");
        }
    }
    for (int i = 1; i <= n; i++)
        argv[i - 1] = lua_tolstring(L, i, &lens[i - 1]);
    lg_redis_req_t *q = lg_redis_command(r, n, argv, lens, on_reply, e);
    if (argv != argv_small) {
        free(argv);
        free(lens);
    }
    if (q == NULL) { /* not connected: fail at once, never queue behind an outage */
        push_unavailable(L);
        return 2;
    }
    return lg_sched_yield(L, call_cleanup, q);
}

/* The public function raises instead of returning (false, err): a Lua wrapper, because a yielding
 * C function cannot run code after it resumes. */
static const char wrapper[] =
    "local raw = ...\n"
    "return function(...)\n"
    "  local ok, v = raw(...)\n"
    "  if not ok then error(v, 2) end\n"
    "  return v\n"
    "end\n";

void lg_bind_open_redis(lua_State *L)
{
    lua_createtable(L, 0, 1);
    if (luaL_loadbuffer(L, wrapper, sizeof(wrapper) - 1, "=luagent.redis") != 0)
        lua_error(L);
    lua_pushcfunction(L, redis_raw_call);
    lua_call(L, 1, 1);
    lua_setfield(L, -2, "call");
}

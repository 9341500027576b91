/* luagent.cache, ctx.session and the agents' result cache: one key-value layer with two backends,
 * Redis when REDIS_URL is set (the calls yield) and the process-wide in-memory store otherwise
 * (kv.h). Values are stored as JSON text.
 *
 * Keys: luagent.cache.get/set(key) in agent A use "c:A:key" (agents do not see each other's
 * entries), ctx.session uses "s:<context.session_id>:key", the result cache uses
 * "r:<agent>:<version>:<sha256 of the canonical task>", so a new version never serves an old
 * answer. In Redis every key is prefixed with "luagent:". */
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/bind.h"
#include "luagent/json.h"
#include "luagent/kv.h"
#include "luagent/metrics.h"
#include "luagent/redis.h"
#include "luagent/sched.h"

#include "lua_text.h" /* LG_TEXT_cache: lua/luagent/cache.lua (scripts/embed_text.lua) */

#define KEY_MAX 1024
#define KV_MAX_BYTES (64u << 20)

/* ---- the two backends ----
 * Each pushes its answer on L and returns the count, or yields (Redis) and the reply callback pushes
 * it. Redis down or unreachable is a miss / "not stored" (false), never an error: the cache is an
 * optimisation and the server keeps serving without it. */

#define REDIS_PREFIX "luagent:"

static void redis_cancel(lg_exec_t *e, void *q) { lg_redis_cancel(q); }

/* GET: the decoded value or nil; 1 when it is a value */
static int push_got(lua_State *co, redisReply *reply)
{
    if (reply == NULL || reply->type != REDIS_REPLY_STRING ||
        lg_json_decode(co, reply->str, reply->len, LG_JSON_DEFAULT_MAX_DEPTH, NULL) != LG_JSON_OK) {
        lua_pushnil(co);
        return 0;
    }
    return 1;
}

static void on_get(void *data, redisReply *reply, const char *err)
{
    lg_exec_t *e = data;
    push_got(e->co, reply);
    lg_sched_wake(e, 1);
}

/* luagent.cache.get's GET: the same, counted as a hit or a miss */
static void on_get_counted(void *data, redisReply *reply, const char *err)
{
    lg_exec_t *e = data;
    lg_metrics_cache(e->rt->metrics, LG_METRICS_CACHE_AGENT, push_got(e->co, reply));
    lg_sched_wake(e, 1);
}

/* SET / DEL: true when it was stored (OK) or removed (1) */
static void on_done(void *data, redisReply *reply, const char *err)
{
    lg_exec_t *e = data;
    lua_pushboolean(e->co, reply != NULL && ((reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0) ||
                                             (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)));
    lg_sched_wake(e, 1);
}

/* Send argv (argv[1] is the key, prefixed here) and yield; push `dflt` at once when Redis is down. */
static int redis_call(lua_State *L, lg_exec_t *e, lg_redis_t *r, int argc, const char **argv, size_t *lens,
                      lg_redis_cb cb, int dflt_nil)
{
    char key[sizeof(REDIS_PREFIX) + KEY_MAX];
    memcpy(key, REDIS_PREFIX, sizeof(REDIS_PREFIX) - 1);
    memcpy(key + sizeof(REDIS_PREFIX) - 1, argv[1], lens[1]);
    argv[1] = key;
    lens[1] += sizeof(REDIS_PREFIX) - 1;
    lg_redis_req_t *q = lg_redis_command(r, argc, argv, lens, cb, e);
    if (q == NULL) {
        if (dflt_nil)
            lua_pushnil(L);
        else
            lua_pushboolean(L, 0);
        return 1;
    }
    return lg_sched_yield(L, redis_cancel, q);
}

/* Push the decoded value of `key`, or nil. counted: a luagent.cache.get lookup (metrics.h). */
static int store_get(lua_State *L, lg_exec_t *e, const char *key, size_t klen, int counted)
{
    lg_redis_t *r = lg_rt_redis(e->rt);
    if (r != NULL) {
        const char *argv[] = {"GET", key};
        size_t lens[] = {3, klen};
        if (counted && !lg_redis_up(r))
            lg_metrics_cache(e->rt->metrics, LG_METRICS_CACHE_AGENT, 0); /* redis_call answers nil at once */
        return redis_call(L, e, r, 2, argv, lens, counted ? on_get_counted : on_get, 1);
    }
    lg_buf_t b = {0};
    lg_json_status_t st = LG_JSON_OK;
    int found = lg_kv_get(key, klen, &b);
    if (found)
        st = lg_json_decode(L, b.data, b.len, LG_JSON_DEFAULT_MAX_DEPTH, NULL);
    lg_buf_free(&b);
    if (!found || st != LG_JSON_OK)
        lua_pushnil(L);
    if (counted)
        lg_metrics_cache(e->rt->metrics, LG_METRICS_CACHE_AGENT, found && st == LG_JSON_OK);
    return 1;
}

/* Store JSON text under `key` (ttl_ms 0: none); pushes whether it was stored. */
static int store_set(lua_State *L, lg_exec_t *e, const char *key, size_t klen, const char *json, size_t jlen,
                     uint64_t ttl_ms)
{
    lg_redis_t *r = lg_rt_redis(e->rt);
    if (r != NULL) {
        char ttl[24];
        const char *argv[] = {"SET", key, json, "PX", ttl};
        size_t lens[] = {3, klen, jlen, 2, (size_t)snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)ttl_ms)};
        return redis_call(L, e, r, ttl_ms > 0 ? 5 : 3, argv, lens, on_done, 0);
    }
    lg_kv_set(key, klen, json, jlen, ttl_ms);
    lua_pushboolean(L, 1);
    return 1;
}

/* Pushes whether a key was removed. */
static int store_del(lua_State *L, lg_exec_t *e, const char *key, size_t klen)
{
    lg_redis_t *r = lg_rt_redis(e->rt);
    if (r != NULL) {
        const char *argv[] = {"DEL", key};
        size_t lens[] = {3, klen};
        return redis_call(L, e, r, 2, argv, lens, on_done, 0);
    }
    lua_pushboolean(L, lg_kv_del(key, klen));
    return 1;
}

/* ---- keys ---- */

/* prefix + the string argument at `arg`, into out[KEY_MAX] */
static size_t make_key(lua_State *L, const char *what, char *out, const char *prefix, int arg)
{
    size_t n, plen = strlen(prefix);
    const char *k = lua_type(L, arg) == LUA_TSTRING || lua_type(L, arg) == LUA_TNUMBER ? lua_tolstring(L, arg, &n) : NULL;
    if (k == NULL || n == 0)
        luaL_error(L, "%s: the key must be a non-empty string", what);
    if (plen + n > KEY_MAX)
        luaL_error(L, "%s: the key is longer than %d bytes", what, KEY_MAX - (int)plen);
    memcpy(out, prefix, plen);
    memcpy(out + plen, k, n);
    return plen + n;
}

static uint64_t ttl_arg(lua_State *L, const char *what, int arg, uint64_t def_ms)
{
    if (lua_isnoneornil(L, arg))
        return def_ms;
    lua_Number s = lua_tonumber(L, arg);
    if (!lua_isnumber(L, arg) || !(s >= 0) || s > 31536000.0 * 10)
        luaL_error(L, "%s: ttl must be a number of seconds (0: no expiry)", what);
    return (uint64_t)ceil(s * 1000.0);
}

static void encode_arg(lua_State *L, const char *what, int arg, lg_buf_t *b)
{
    lg_json_error_t err;
    if (lg_json_encode(L, arg, b, LG_JSON_DEFAULT_MAX_DEPTH, &err) != LG_JSON_OK) {
        lg_buf_free(b);
        luaL_error(L, "%s: the value is not JSON: %s", what, err.msg);
    }
}

/* ---- luagent.cache and ctx.session: one body for get/set/delete ---- */

typedef enum { OP_GET, OP_SET, OP_DEL } op_t;

/* key = prefix + the argument at `arg`; set takes the value at arg + 1 and the ttl (seconds) at
 * arg + 2, def_ttl_ms when absent */
static int kv_call(lua_State *L, lg_exec_t *e, const char *what, const char *prefix, int arg, op_t op,
                   uint64_t def_ttl_ms, int counted)
{
    char key[KEY_MAX];
    size_t klen = make_key(L, what, key, prefix, arg);
    if (op == OP_GET)
        return store_get(L, e, key, klen, counted);
    if (op == OP_DEL)
        return store_del(L, e, key, klen);
    uint64_t ttl = ttl_arg(L, what, arg + 2, def_ttl_ms);
    lg_buf_t b = {0};
    encode_arg(L, what, arg + 1, &b);
    int n = store_set(L, e, key, klen, b.data, b.len, ttl);
    lg_buf_free(&b);
    return n;
}

static int cache_op(lua_State *L, op_t op, const char *what)
{
    lg_exec_t *e = lg_sched_check(L, what);
    char prefix[160];
    snprintf(prefix, sizeof(prefix), "c:%s:", e->agent);
    return kv_call(L, e, what, prefix, 1, op, 0, 1);
}

static int cache_get(lua_State *L) { return cache_op(L, OP_GET, "luagent.cache.get"); }
static int cache_set(lua_State *L) { return cache_op(L, OP_SET, "luagent.cache.set"); }
static int cache_delete(lua_State *L) { return cache_op(L, OP_DEL, "luagent.cache.delete"); }

void lg_bind_open_cache(lua_State *L)
{
    static const luaL_Reg fns[] = {{"get", cache_get}, {"set", cache_set}, {"delete", cache_delete}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, fns);
}

/* ctx.session: a table {get, set, delete} whose functions carry the session id as upvalue 1. They
 * accept being called with a colon too (ctx.session:get("k")). */
static int session_op(lua_State *L, op_t op, const char *what)
{
    lg_exec_t *e = lg_sched_check(L, what);
    size_t sidlen;
    const char *sid = lua_tolstring(L, lua_upvalueindex(1), &sidlen);
    char prefix[KEY_MAX];
    if (sidlen + 3 > KEY_MAX / 2)
        return luaL_error(L, "%s: context.session_id is too long", what);
    snprintf(prefix, sizeof(prefix), "s:%s:", sid);
    return kv_call(L, e, what, prefix, lua_istable(L, 1) ? 2 : 1, op, (uint64_t)e->rt->cfg->session_ttl_s * 1000, 0);
}

static int session_get(lua_State *L) { return session_op(L, OP_GET, "ctx.session.get"); }
static int session_set(lua_State *L) { return session_op(L, OP_SET, "ctx.session.set"); }
static int session_delete(lua_State *L) { return session_op(L, OP_DEL, "ctx.session.delete"); }

static int session_missing(lua_State *L)
{
    return luaL_error(L, "ctx.session needs a session id: send \"context\": {\"session_id\": \"...\"}");
}

void lg_bind_push_session(lua_State *L, int ctx_idx)
{
    lua_getfield(L, ctx_idx, "context");
    int has = 0;
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "session_id");
        has = (lua_type(L, -1) == LUA_TSTRING && lua_objlen(L, -1) > 0) || lua_type(L, -1) == LUA_TNUMBER;
        if (has)
            lua_tostring(L, -1);
        lua_remove(L, -2);
    }
    /* stack: session_id (or something that is not one) */
    lua_createtable(L, 0, 3);
    static const struct { const char *name; lua_CFunction fn; } m[] = {
        {"get", session_get}, {"set", session_set}, {"delete", session_delete}};
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        if (has) {
            lua_pushvalue(L, -2);
            lua_pushcclosure(L, m[i].fn, 1);
        } else {
            lua_pushcfunction(L, session_missing);
        }
        lua_setfield(L, -2, m[i].name);
    }
    lua_remove(L, -2);
}

/* ---- the result cache of agents with cache_ttl > 0 ----
 * lua/luagent/cache.lua wraps such an agent's execute: look the task up, run on a miss, store. The
 * key hashes the task's canonical JSON (object keys sorted), so key order in the request does not
 * matter. */

static int canonical(lua_State *L, int idx, lg_buf_t *b, int depth);

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static int canonical_object(lua_State *L, int idx, lg_buf_t *b, int depth)
{
    size_t n = 0, cap = 16;
    const char **keys = malloc(cap * sizeof(*keys));
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) { /* not an object lg_json_encode would write the same way */
            lua_pop(L, 1);
            free(keys);
            return -1;
        }
        if (n == cap)
            keys = realloc(keys, (cap *= 2) * sizeof(*keys));
        keys[n++] = lua_tostring(L, -1); /* the table keeps the string alive */
    }
    qsort(keys, n, sizeof(*keys), cmp_str);
    lg_buf_putc(b, '{');
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i > 0)
            lg_buf_putc(b, ',');
        lg_buf_json_str(b, keys[i], strlen(keys[i]));
        lg_buf_putc(b, ':');
        lua_getfield(L, idx, keys[i]);
        rc = canonical(L, lua_gettop(L), b, depth + 1);
        lua_pop(L, 1);
    }
    lg_buf_putc(b, '}');
    free(keys);
    return rc;
}

static int canonical(lua_State *L, int idx, lg_buf_t *b, int depth)
{
    if (depth > LG_JSON_DEFAULT_MAX_DEPTH || !lua_checkstack(L, 4))
        return -1;
    if (!lua_istable(L, idx) || lg_json_is_array_marked(L, idx) || lua_objlen(L, idx) > 0) {
        if (lua_istable(L, idx)) { /* an array: its elements canonically */
            size_t n = lua_objlen(L, idx);
            lg_buf_putc(b, '[');
            for (size_t i = 1; i <= n; i++) {
                if (i > 1)
                    lg_buf_putc(b, ',');
                lua_rawgeti(L, idx, (int)i);
                int rc = canonical(L, lua_gettop(L), b, depth + 1);
                lua_pop(L, 1);
                if (rc != 0)
                    return rc;
            }
            lg_buf_putc(b, ']');
            return 0;
        }
        return lg_json_encode(L, idx, b, 1, NULL) == LG_JSON_OK ? 0 : -1;
    }
    return canonical_object(L, idx, b, depth);
}

/* result_key(task) -> key, or nil when the task has no canonical form */
static int h_result_key(lua_State *L)
{
    lg_exec_t *e = lg_sched_current(L);
    if (e == NULL)
        return 0;
    lg_buf_t b = {0};
    lua_settop(L, 1);
    int rc = canonical(L, 1, &b, 0);
    if (rc == 0) {
        char hex[65];
        lg_sha256_hex(b.data, b.len, hex);
        lua_pushfstring(L, "r:%s:%s:%s", e->agent, e->version, hex);
    }
    lg_buf_free(&b);
    return rc == 0 ? 1 : 0;
}

static int h_get(lua_State *L)
{
    size_t n;
    const char *k = luaL_checklstring(L, 1, &n);
    return store_get(L, lg_sched_check(L, "result cache"), k, n, 0);
}

/* set(key, value, ttl_seconds) */
static int h_set(lua_State *L)
{
    size_t n;
    const char *k = luaL_checklstring(L, 1, &n);
    lg_exec_t *e = lg_sched_check(L, "result cache");
    lg_buf_t b = {0};
    lg_json_error_t err;
    if (lg_json_encode(L, 2, &b, LG_JSON_DEFAULT_MAX_DEPTH, &err) != LG_JSON_OK) {
        lg_buf_free(&b);
        return 0; /* not JSON: the reply will say so; nothing to cache */
    }
    int r = store_set(L, e, k, n, b.data, b.len, (uint64_t)(luaL_checknumber(L, 3) * 1000.0));
    lg_buf_free(&b);
    return r;
}

/* mark(hit): the reply's X-Cache header */
static int h_mark(lua_State *L)
{
    lg_exec_t *e = lg_sched_current(L);
    if (e != NULL) {
        e->cache = lua_toboolean(L, 1) ? LG_CACHE_HIT : LG_CACHE_MISS;
        lg_metrics_cache(e->rt->metrics, LG_METRICS_CACHE_RESULT, e->cache == LG_CACHE_HIT);
    }
    return 0;
}

void lg_bind_push_cache_wrap(lua_State *L)
{
    static const luaL_Reg host[] = {
        {"result_key", h_result_key}, {"get", h_get}, {"set", h_set}, {"mark", h_mark}, {NULL, NULL}};
    if (luaL_loadbuffer(L, LG_TEXT_cache, sizeof(LG_TEXT_cache) - 1, "=luagent/cache.lua") != 0)
        lua_error(L);
    lua_newtable(L);
    luaL_register(L, NULL, host);
    lua_call(L, 1, 1); /* -> wrap(execute, ttl_seconds) */
}

void lg_cache_init(void) { lg_kv_init(KV_MAX_BYTES); }

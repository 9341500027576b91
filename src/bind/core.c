/* luagent.sleep / now / uuid / log, and print() for agents. */
#include <lauxlib.h>
#include <string.h>

#include "luagent/bind.h"
#include "luagent/ids.h"
#include "luagent/json.h"
#include "luagent/log.h"
#include "luagent/sched.h"
#include "luagent/store.h"

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

/* ---- sleep: start (arm op_timer), resume (timer fires -> wake), cleanup (disarm) ---- */

static void sleep_fired(lg_timer_t *t) { lg_sched_wake(container_of(t, lg_exec_t, op_timer), 0); }

static void sleep_cleanup(lg_exec_t *e, void *data) { lg_timers_del(&e->rt->timers, &e->op_timer); }

static int l_sleep(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    lg_exec_t *e = lg_sched_check(L, "luagent.sleep");
    if (!(ms >= 0))
        ms = 0;
    if (ms > 86400000)
        ms = 86400000;
    e->op_timer.cb = sleep_fired;
    lg_timers_add(&e->rt->timers, &e->op_timer, lg_now_mono_ms() + (uint64_t)ms);
    return lg_sched_yield(L, sleep_cleanup, NULL);
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, lg_now_epoch());
    return 1;
}

static int l_uuid(lua_State *L)
{
    char id[LG_UUID_LEN + 1];
    lg_uuid4(id);
    lua_pushlstring(L, id, LG_UUID_LEN);
    return 1;
}

/* ---- log ---- */

static void add_exec_fields(lua_State *L, lg_buf_t *b)
{
    lg_exec_t *e = lg_sched_current(L);
    if (e == NULL)
        return;
    lg_log_kv_cstr(b, "execution_id", e->id);
    lg_log_kv_cstr(b, "request_id", e->request_id);
    lg_log_kv_cstr(b, "agent", e->agent);
    lg_log_kv_cstr(b, "version", e->version);
    if (e->trace[0] != '\0')
        lg_log_kv_str(b, "trace_id", e->trace + 3, 32);
}

/* One agent log line: to the log (when its level is on) and, for a recorded execution, to its task
 * history as a `log` event (info and above). */
static void log_line(lua_State *L, lg_log_level_t level, const char *msg, size_t len, int fields)
{
    lg_exec_t *e = lg_sched_current(L);
    int to_log = lg_log_enabled(level), to_record = e != NULL && e->recording && level >= LG_LOG_INFO;
    if (!to_log && !to_record)
        return;
    lg_buf_t b = {0}, f = {0}, v = {0};
    if (to_log) {
        lg_log_begin(&b, level, msg, len);
        add_exec_fields(L, &b);
    }
    if (fields != 0 && lua_istable(L, fields)) {
        lua_pushnil(L);
        while (lua_next(L, fields) != 0) {
            if (lua_type(L, -2) == LUA_TSTRING) {
                lg_json_error_t err;
                lg_buf_reset(&v);
                const char *key = lua_tostring(L, -2);
                if (strcmp(key, "ts") && strcmp(key, "level") && strcmp(key, "msg") &&
                    lg_json_encode(L, -1, &v, 16, &err) == LG_JSON_OK) {
                    if (to_log)
                        lg_log_kv_json(&b, key, v.data, v.len);
                    lg_buf_putc(&f, f.len ? ',' : '{');
                    lg_buf_json_str(&f, key, strlen(key));
                    lg_buf_putc(&f, ':');
                    lg_buf_append(&f, v.data, v.len);
                }
            }
            lua_pop(L, 1);
        }
    }
    if (to_log)
        lg_log_end(&b);
    if (to_record) {
        lg_buf_reset(&b);
        lg_buf_lit(&b, "{\"level\":\"");
        lg_buf_append(&b, lg_log_level_name(level), strlen(lg_log_level_name(level)));
        lg_buf_lit(&b, "\",\"message\":");
        lg_buf_json_str(&b, msg, len);
        if (f.len > 0) {
            lg_buf_lit(&b, ",\"fields\":");
            lg_buf_append(&b, f.data, f.len);
            lg_buf_putc(&b, '}');
        }
        lg_buf_putc(&b, '}');
        lg_record_event(e, "log", b.data, b.len);
    }
    lg_buf_free(&b);
    lg_buf_free(&f);
    lg_buf_free(&v);
}

static int log_at(lua_State *L, lg_log_level_t level)
{
    size_t len;
    const char *msg = lua_tolstring(L, 1, &len);
    if (msg == NULL) {
        msg = luaL_typename(L, 1);
        len = strlen(msg);
    }
    log_line(L, level, msg, len, lua_gettop(L) >= 2 ? 2 : 0);
    return 0;
}

static int l_debug(lua_State *L) { return log_at(L, LG_LOG_DEBUG); }
static int l_info(lua_State *L) { return log_at(L, LG_LOG_INFO); }
static int l_warn(lua_State *L) { return log_at(L, LG_LOG_WARN); }
static int l_error(lua_State *L) { return log_at(L, LG_LOG_ERROR); }

int lg_bind_print(lua_State *L)
{
    if (!lg_log_enabled(LG_LOG_INFO))
        return 0;
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        lua_getglobal(L, "tostring");
        lua_pushvalue(L, i);
        lua_call(L, 1, 1);
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    log_line(L, LG_LOG_INFO, msg, len, 0);
    return 0;
}

void lg_bind_open_log(lua_State *L)
{
    static const luaL_Reg fns[] = {{"debug", l_debug}, {"info", l_info}, {"warn", l_warn}, {"error", l_error}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, fns);
}

void lg_bind_open(lua_State *L)
{
    static const luaL_Reg fns[] = {{"sleep", l_sleep}, {"now", l_now}, {"uuid", l_uuid}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    lg_bind_open_log(L);
    lua_setfield(L, -2, "log");
    luaopen_luagent_json(L);
    lua_setfield(L, -2, "json");
    lg_bind_open_crypto(L);
    lua_setfield(L, -2, "crypto");
    lg_bind_open_http(L);
    lua_setfield(L, -2, "http");
    lg_bind_open_cache(L);
    lua_setfield(L, -2, "cache");
    lg_bind_open_db(L);
    lua_setfield(L, -2, "db");
    lg_bind_open_ai(L, lua_gettop(L));
    lua_setfield(L, -2, "ai");
    lg_bind_open_redis(L);
    lua_setfield(L, -2, "redis");
    lg_bind_open_agents(L);
    lua_setfield(L, -2, "agents");
    lg_bind_push_cache_wrap(L); /* kept for agents with cache_ttl (agents.c) */
    lua_setfield(L, LUA_REGISTRYINDEX, LG_CACHE_WRAP_KEY);
}

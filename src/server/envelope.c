/* The execute request's envelope (envelope.h): moved out of handlers.c so the fuzzer runs it. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "luagent/envelope.h"

static int is_object(lua_State *L, int idx) { return lua_istable(L, idx) && !lg_json_is_array_marked(L, idx); }

static const char *parse_options(lua_State *co, int idx, lg_envelope_opts_t *o)
{
    lua_getfield(co, idx, "mode");
    size_t n;
    const char *mode = lua_type(co, -1) == LUA_TSTRING ? lua_tolstring(co, -1, &n) : NULL;
    if (!lua_isnil(co, -1) && (mode == NULL || (strcmp(mode, "sync") != 0 && strcmp(mode, "async") != 0)))
        return "\"options.mode\" must be \"sync\" or \"async\"";
    o->async = mode != NULL && strcmp(mode, "async") == 0;
    lua_getfield(co, idx, "callback_url");
    const char *url = lua_type(co, -1) == LUA_TSTRING ? lua_tolstring(co, -1, &n) : NULL;
    if (!lua_isnil(co, -1)) {
        if (url == NULL || n >= sizeof(o->callback_url) ||
            (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) || strpbrk(url, " \r\n") != NULL)
            return "\"options.callback_url\" must be an http:// or https:// URL";
        if (!o->async)
            return "\"options.callback_url\" needs \"options.mode\": \"async\"";
        memcpy(o->callback_url, url, n + 1);
    }
    lua_pop(co, 2);
    return NULL;
}

const char *lg_envelope_parse(lua_State *co, const char *body, size_t len, int seed_route, char *name,
                              size_t *namelen, lg_envelope_opts_t *opts, lg_json_span_t *spans, int *status,
                              const char **code, char *msg, size_t msglen)
{
    static const char *const members[] = {"task", "context"};
    *status = 400;
    *code = "invalid_request";
    lg_json_error_t jerr;
    lg_json_status_t js = lg_json_decode_spans(co, body ? body : "", len, LG_BODY_MAX_DEPTH, &jerr, members, 2, spans);
    if (js != LG_JSON_OK) {
        if (js == LG_JSON_ESYNTAX)
            *code = "invalid_json";
        snprintf(msg, msglen, "%s%s", len == 0 ? "the request has no body; " : "", jerr.msg);
        return msg;
    }
    if (!is_object(co, 1))
        return "the body must be a JSON object with a \"task\"";
    if (seed_route) {
        lua_getfield(co, 1, "agent");
        size_t n;
        const char *s = lua_type(co, -1) == LUA_TSTRING ? lua_tolstring(co, -1, &n) : NULL;
        if (s == NULL)
            return "\"agent\" (a string naming the agent) is required";
        if (n > LG_AGENT_NAME_MAX) {
            *status = 404, *code = "not_found";
            return "no such agent";
        }
        memcpy(name, s, n);
        name[n] = '\0';
        *namelen = n;
        lua_pop(co, 1);
    }
    lua_getfield(co, 1, "task");
    if (lua_isnil(co, -1))
        return "\"task\" is required";
    if (lg_json_is_null(co, -1))
        return "\"task\" must not be null";
    lua_getfield(co, 1, "context");
    if (lg_json_is_null(co, -1)) {
        lua_pop(co, 1);
        lua_pushnil(co);
    } else if (!lua_isnil(co, -1) && !is_object(co, -1)) {
        return "\"context\" must be an object";
    }
    lua_getfield(co, 1, "options");
    if (!lua_isnil(co, -1) && !lg_json_is_null(co, -1) && !is_object(co, -1))
        return "\"options\" must be an object";
    const char *bad = is_object(co, -1) ? parse_options(co, lua_gettop(co), opts) : NULL;
    if (bad != NULL)
        return bad;
    lua_pop(co, 1);
    lua_remove(co, 1);
    return NULL;
}

/* The outcome of an execution, for every way one is started (HTTP request, async job): the reply
 * object or error object, and its record. */
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "luagent/json.h"
#include "luagent/sched.h"
#include "luagent/server.h"
#include "luagent/store.h"

/* error("x") in an agent reads "team/review.lua:12: x": the position is for the log (which has the
 * whole traceback), the client gets the message. */
static void skip_position(const char **msg, size_t *len)
{
    const char *s = *msg, *end = s + *len, *p = s;
    while (p < end && *p != ':' && *p != ' ' && *p != '\n')
        p++;
    if (p - s < 5 || memcmp(p - 4, ".lua", 4) != 0 || p == end || *p != ':')
        return;
    const char *d = ++p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    if (p == d || end - p < 2 || p[0] != ':' || p[1] != ' ')
        return;
    *msg = p + 2;
    *len = (size_t)(end - p - 2);
}

/* The agent's error value (top of co) -> status, code, message; for provider errors raised by
 * luagent.ai also the provider and its HTTP status (appended to the error object). The strings
 * stay valid while the values sit on co's stack, until the execution is released. */
typedef struct agent_err {
    int status;
    const char *code, *msg, *provider;
    size_t mlen;
    int provider_status;
    int details; /* stack index of a `details` list (a child's validation_failed), 0 when none */
} agent_err_t;

static void agent_error(lua_State *co, agent_err_t *a)
{
    memset(a, 0, sizeof(*a));
    a->status = 500;
    a->code = "agent_error";
    int err = lua_gettop(co);
    if (lua_istable(co, err)) {
        lua_getfield(co, err, "status");
        if (lua_isnumber(co, -1) && lua_tonumber(co, -1) >= 400 && lua_tonumber(co, -1) <= 599)
            a->status = (int)lua_tonumber(co, -1);
        lua_getfield(co, err, "code");
        if (lua_type(co, -1) == LUA_TSTRING)
            a->code = lua_tostring(co, -1);
        lua_getfield(co, err, "message");
        if (lua_type(co, -1) == LUA_TSTRING || lua_type(co, -1) == LUA_TNUMBER)
            a->msg = lua_tolstring(co, -1, &a->mlen);
        lua_getfield(co, err, "provider");
        if (lua_type(co, -1) == LUA_TSTRING)
            a->provider = lua_tostring(co, -1);
        lua_getfield(co, err, "provider_status");
        a->provider_status = lua_isnumber(co, -1) ? (int)lua_tonumber(co, -1) : 0;
        lua_getfield(co, err, "details");
        a->details = lua_istable(co, -1) ? lua_gettop(co) : 0;
    } else if (lua_type(co, err) == LUA_TSTRING || lua_type(co, err) == LUA_TNUMBER) {
        a->msg = lua_tolstring(co, err, &a->mlen);
    }
    if (a->msg == NULL) {
        a->msg = "the agent raised an error without a message";
        a->mlen = strlen(a->msg);
    }
    skip_position(&a->msg, &a->mlen);
}

/* Write the execution's outcome into b: the reply object, or {"error":{...}}; returns the HTTP
 * status and whether it is an error (*is_err). For the record, *result (the result's JSON inside
 * b) is set on success. */
int lg_outcome_json(lg_exec_t *e, int client_gone, lg_buf_t *b, const char *request_id, int *is_err,
                        size_t *result_off, size_t *result_len)
{
    int status = 200;
    char msg[160];
    const char *code = NULL, *m = NULL;
    size_t mlen = 0;
    agent_err_t aerr = {0};
    switch (e->end) {
    case LG_END_OK: {
        lg_buf_lit(b, "{\"execution_id\":\"");
        lg_buf_append(b, e->id, LG_UUID_LEN);
        lg_buf_lit(b, "\",\"agent\":");
        lg_buf_json_str(b, e->agent, strlen(e->agent));
        lg_buf_lit(b, ",\"version\":\"");
        lg_buf_append(b, e->version, strlen(e->version));
        lg_buf_lit(b, "\",\"status\":\"succeeded\",\"result\":");
        lg_json_error_t jerr;
        *result_off = b->len;
        if (lua_gettop(e->co) == 0) {
            lg_buf_lit(b, "null");
        } else if (lg_json_encode(e->co, 1, b, LG_JSON_DEFAULT_MAX_DEPTH, &jerr) != LG_JSON_OK) {
            status = 500, code = "agent_error";
            snprintf(msg, sizeof(msg), "the agent's result is not JSON: %s", jerr.msg);
            m = msg, mlen = strlen(msg);
            break;
        }
        *result_len = b->len - *result_off;
        lg_buf_lit(b, ",\"duration_ms\":");
        lg_buf_fixed3(b, e->duration_ms);
        lg_buf_lit(b, ",\"usage\":");
        lg_exec_usage_json(e, b);
        lg_buf_putc(b, '}');
        break;
    }
    case LG_END_ERROR:
        agent_error(e->co, &aerr);
        status = aerr.status, code = aerr.code, m = aerr.msg, mlen = aerr.mlen;
        break;
    case LG_END_TIMEOUT:
        status = 504, code = "timeout";
        if (e->deadline_inherited)
            snprintf(msg, sizeof(msg), "the execution reached its parent execution's deadline (%d ms after it started)",
                     e->timeout_ms);
        else
            snprintf(msg, sizeof(msg), "the execution exceeded its deadline of %d ms", e->timeout_ms);
        m = msg, mlen = strlen(msg);
        break;
    case LG_END_MEMORY:
        status = 500, code = "memory_limit";
        snprintf(msg, sizeof(msg), "the execution exceeded the memory limit of %d MiB", e->rt->cfg->memory_limit_mb);
        m = msg, mlen = strlen(msg);
        break;
    case LG_END_CANCELLED:
        if (client_gone)
            status = 499, code = "client_closed", m = "the client closed the connection";
        else
            status = 503, code = "unavailable", m = "the execution was cancelled: the server is shutting down";
        mlen = strlen(m);
        break;
    }
    *is_err = code != NULL;
    if (code != NULL) {
        lg_buf_reset(b);
        lg_error_json(b, code, m, mlen, request_id, e->id);
        if (aerr.provider != NULL) { /* {"error":{...}} -> {"error":{..., "provider":...}} */
            b->len -= 2;
            lg_buf_lit(b, ",\"provider\":");
            lg_buf_json_str(b, aerr.provider, strlen(aerr.provider));
            if (aerr.provider_status)
                lg_buf_printf(b, ",\"provider_status\":%d", aerr.provider_status);
            lg_buf_lit(b, "}}");
        }
        if (aerr.details != 0) { /* ... "details": [...] kept (422 from luagent.agents.call) */
            size_t mark = b->len - 2;
            lg_json_error_t jerr;
            b->len = mark;
            lg_buf_lit(b, ",\"details\":");
            if (lg_json_encode(e->co, aerr.details, b, 8, &jerr) != LG_JSON_OK)
                b->len = mark;
            lg_buf_lit(b, "}}");
        }
    }
    return status;
}

lg_rec_t *lg_outcome_rec(lg_exec_t *e, const lg_buf_t *b, int is_err, size_t roff, size_t rlen)
{
    if (is_err) /* the inner object of {"error":{...}} */
        return lg_record_build(e, LG_REC_FAILED, NULL, 0, b->data + 9, b->len - 10);
    return lg_record_build(e, LG_REC_SUCCEEDED, b->data + roff, rlen, NULL, 0);
}

void lg_outcome_record(lg_exec_t *e, const lg_buf_t *b, int is_err, size_t roff, size_t rlen)
{
    if (e->recording)
        lg_record_commit(e->rt, lg_outcome_rec(e, b, is_err, roff, rlen));
}

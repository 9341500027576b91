/* The OpenAI-compatible face (docs/architecture.md, "OpenAI-compatible face"): agents as models.
 *
 *   POST /v1/chat/completions  {"model": "<agent>", "messages": [...], "stream": bool, ...}
 *   GET  /v1/models, GET /v1/models/{id}
 *
 * A chat completion is an execution like any other (the execute path's link, SSE writer and end:
 * execlink.h; recorded in the history with its usage). What differs is the reading and the writing:
 * the agent's task is {"messages": [...], "params": {every other member of the request but model,
 * stream and stream_options}}, its result becomes the assistant message's content (a string as it
 * is; a table's string `content`, with its string `finish_reason` if any; anything else as JSON
 * text), and the answer is a chat.completion, or chat.completion.chunk events when `stream` is true. */
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "luagent/auth.h"
#include "luagent/envelope.h"
#include "luagent/execlink.h"
#include "luagent/ids.h"
#include "luagent/json.h"
#include "luagent/registry.h"
#include "luagent/router.h"
#include "luagent/sched.h"
#include "luagent/schema.h"
#include "luagent/server.h"
#include "luagent/worker.h"

#define FINISH_MAX 32

/* The face's own state of one request (its pool; the buffer is freed by its dispose). */
typedef struct oai {
    int include_usage; /* stream_options.include_usage */
    lg_buf_t streamed; /* the content streamed so far, JSON-escaped (no quotes) */
} oai_t;

static void oai_dispose(void *p) { lg_buf_free(&((oai_t *)p)->streamed); }

/* ---- errors ---- */

static int on_v1(h2o_req_t *req)
{
    h2o_iovec_t p = req->path_normalized;
    return p.len >= 3 && memcmp(p.base, "/v1", 3) == 0 && (p.len == 3 || p.base[3] == '/');
}

static const char *error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

void lg_openai_error_type(h2o_req_t *req, int status, lg_buf_t *b)
{
    if (!on_v1(req) || b->len < 2 || memcmp(b->data + b->len - 2, "}}", 2) != 0)
        return;
    b->len -= 2;
    lg_buf_printf(b, ",\"type\":\"%s\"}}", error_type(status));
}

/* ---- GET /v1/models, /v1/models/{id} ---- */

typedef struct models {
    lg_buf_t *b;
    const lg_principal_t *who;
    const char *only; /* one model's id, or NULL for all */
    size_t only_len;
    size_t n;
} models_t;

static void model_each(void *ud, const lg_agent_entry_t *a)
{
    models_t *m = ud;
    size_t n = strlen(a->name);
    if (a->source == NULL || !lg_principal_may_run(m->who, a->name, n)) /* never loaded, or not this caller's */
        return;
    if (m->only != NULL && (n != m->only_len || memcmp(a->name, m->only, n) != 0))
        return;
    if (m->n++ > 0)
        lg_buf_putc(m->b, ',');
    lg_buf_lit(m->b, "{\"id\":");
    lg_buf_json_str(m->b, a->name, n);
    lg_buf_printf(m->b, ",\"object\":\"model\",\"created\":%llu,\"owned_by\":\"luagent\"}",
                  (unsigned long long)(a->updated_at_ms / 1000));
}

static void reply_model_not_found(h2o_req_t *req, const char *name, size_t len, const char *request_id)
{
    char m[LG_AGENT_NAME_MAX + 96];
    if (len > LG_AGENT_NAME_MAX)
        len = LG_AGENT_NAME_MAX;
    snprintf(m, sizeof(m), "The model '%.*s' does not exist: no agent has that name", (int)len, name);
    lg_reply_error(req, 404, "model_not_found", m, request_id);
}

int lg_openai_models_route(h2o_req_t *req, const lg_route_t *route, const lg_principal_t *who, const char *request_id,
                           lg_buf_t *b)
{
    models_t m = {.b = b, .who = who};
    if (route->id == LG_ROUTE_OAI_MODEL) {
        m.only = route->name, m.only_len = route->name_len;
        lg_registry_each(LG_SCRIPT_AGENT, model_each, &m);
        if (m.n == 0) {
            reply_model_not_found(req, route->name, route->name_len, request_id);
            return 404;
        }
    } else {
        lg_buf_lit(b, "{\"object\":\"list\",\"data\":[");
        lg_registry_each(LG_SCRIPT_AGENT, model_each, &m);
        lg_buf_lit(b, "]}");
    }
    lg_reply_json(req, 200, request_id, b->data, b->len);
    return 200;
}

/* ---- the answer ---- */

/* `{"id","object","created","model","system_fingerprint","choices":[{"index":0,` of a completion or a chunk */
static void completion_head(lg_buf_t *b, lg_exec_t *e, const char *object)
{
    lg_buf_lit(b, "{\"id\":\"chatcmpl-");
    lg_buf_append(b, e->id, strlen(e->id));
    lg_buf_printf(b, "\",\"object\":\"%s\",\"created\":%llu,\"model\":", object,
                  (unsigned long long)(e->started_ms / 1000));
    lg_buf_json_str(b, e->agent, strlen(e->agent));
    lg_buf_lit(b, ",\"system_fingerprint\":");
    lg_buf_json_str(b, e->version, strlen(e->version));
    lg_buf_lit(b, ",\"choices\":[{\"index\":0,");
}

/* `data: {"id",…,"choices":[{"index":0,"delta":` — a chunk up to its delta. */
static void chunk_open(lg_buf_t *b, lg_exec_t *e)
{
    lg_buf_lit(b, "data: ");
    completion_head(b, e, "chat.completion.chunk");
    lg_buf_lit(b, "\"delta\":");
}

/* ... and the rest of it: the finish reason (JSON text) and, with include_usage, "usage":null. */
static void chunk_close(lg_buf_t *b, const oai_t *o, const char *finish, size_t flen)
{
    lg_buf_lit(b, ",\"logprobs\":null,\"finish_reason\":");
    lg_buf_append(b, finish, flen);
    lg_buf_lit(b, "}]");
    if (o->include_usage)
        lg_buf_lit(b, ",\"usage\":null");
    lg_buf_lit(b, "}\n\n");
}

static void usage_json(lg_exec_t *e, lg_buf_t *b)
{
    const lg_usage_t *u = &e->usage;
    lg_buf_lit(b, "{\"prompt_tokens\":");
    lg_buf_u64(b, u->input_tokens);
    lg_buf_lit(b, ",\"completion_tokens\":");
    lg_buf_u64(b, u->output_tokens);
    lg_buf_lit(b, ",\"total_tokens\":");
    lg_buf_u64(b, u->input_tokens + u->output_tokens);
    lg_buf_putc(b, '}');
}

/* The agent's result (first value on e->co; its JSON text is b[roff, roff + rlen)) as the message's
 * content, a JSON string appended to c; its finish reason (a JSON string) into finish. */
static void content_of(lg_exec_t *e, const lg_buf_t *b, size_t roff, size_t rlen, lg_buf_t *c, lg_buf_t *finish)
{
    lua_State *co = e->co;
    int top = lua_gettop(co), t = lua_type(co, 1);
    size_t n;
    const char *s;
    if (top == 0 || t == LUA_TNIL || lg_json_is_null(co, 1)) {
        lg_buf_lit(c, "\"\"");
    } else if (t == LUA_TSTRING) {
        lg_buf_append(c, b->data + roff, rlen); /* already a JSON string */
    } else if (t == LUA_TTABLE && !lg_json_is_array_marked(co, 1) &&
               (lua_getfield(co, 1, "content"), lua_type(co, -1) == LUA_TSTRING)) {
        s = lua_tolstring(co, -1, &n);
        lg_buf_json_str(c, s, n);
        lua_getfield(co, 1, "finish_reason");
        if (lua_type(co, -1) == LUA_TSTRING && (s = lua_tolstring(co, -1, &n), n > 0 && n <= FINISH_MAX)) {
            lg_buf_reset(finish);
            lg_buf_json_str(finish, s, n);
        }
    } else {
        lg_buf_json_str(c, b->data + roff, rlen);
    }
    lua_settop(co, top);
}

static void write_completion(lg_exec_t *e, const lg_buf_t *c, const lg_buf_t *finish, lg_buf_t *out)
{
    completion_head(out, e, "chat.completion");
    lg_buf_lit(out, "\"message\":{\"role\":\"assistant\",\"content\":");
    lg_buf_append(out, c->data, c->len);
    lg_buf_lit(out, ",\"refusal\":null},\"logprobs\":null,\"finish_reason\":");
    lg_buf_append(out, finish->data, finish->len);
    lg_buf_lit(out, "}],\"usage\":");
    usage_json(e, out);
    lg_buf_putc(out, '}');
}

/* The end of a stream: what of the content the tokens did not say, the finish reason, the usage
 * (include_usage), [DONE]. When the content does not begin with what was streamed (an agent that
 * streamed one model call and answered something else), the tokens stand: nothing is added. */
static void write_stream_end(lg_exec_t *e, oai_t *o, const lg_buf_t *c, const lg_buf_t *finish, lg_buf_t *out)
{
    const char *s = c->data + 1; /* c is "…": the escaped text is what streamed tokens are compared with */
    size_t n = c->len - 2, k = o->streamed.len;
    if (n > k && (k == 0 || memcmp(s, o->streamed.data, k) == 0)) {
        chunk_open(out, e);
        lg_buf_lit(out, "{\"content\":\"");
        lg_buf_append(out, s + k, n - k);
        lg_buf_lit(out, "\"}");
        chunk_close(out, o, "null", 4);
    }
    chunk_open(out, e);
    lg_buf_lit(out, "{}");
    chunk_close(out, o, finish->data, finish->len);
    if (o->include_usage) {
        lg_buf_lit(out, "data: {\"id\":\"chatcmpl-");
        lg_buf_append(out, e->id, strlen(e->id));
        lg_buf_printf(out, "\",\"object\":\"chat.completion.chunk\",\"created\":%llu,\"model\":",
                      (unsigned long long)(e->started_ms / 1000));
        lg_buf_json_str(out, e->agent, strlen(e->agent));
        lg_buf_lit(out, ",\"system_fingerprint\":");
        lg_buf_json_str(out, e->version, strlen(e->version));
        lg_buf_lit(out, ",\"choices\":[],\"usage\":");
        usage_json(e, out);
        lg_buf_lit(out, "}\n\n");
    }
    lg_buf_lit(out, "data: [DONE]\n\n");
}

static void oai_on_done(lg_exec_t *e)
{
    lg_link_t *l = e->owner;
    oai_t *o = l->face;
    lg_buf_t *b = &l->worker->scratch;
    int status, is_err;
    size_t roff, rlen;
    h2o_req_t *req = lg_link_end(e, b, &status, &is_err, &roff, &rlen);
    if (req == NULL)
        return;
    if (is_err) {
        lg_openai_error_type(req, status, b);
        if (l->streaming) { /* after a 200: an error event, as OpenAI sends one (the SDKs throw it) */
            lg_buf_lit(&l->pending, "data: ");
            lg_buf_append(&l->pending, b->data, b->len);
            lg_buf_lit(&l->pending, "\n\n");
            lg_sse_send(l, 1);
        } else {
            lg_reply_json(req, status, l->request_id, b->data, b->len);
        }
    } else {
        lg_buf_t c = {0}, finish = {0};
        lg_buf_lit(&finish, "\"stop\"");
        content_of(e, b, roff, rlen, &c, &finish);
        if (l->streaming) {
            write_stream_end(e, o, &c, &finish, &l->pending);
            lg_sse_send(l, 1);
        } else {
            lg_buf_reset(b); /* the outcome is no longer needed: b holds the answer now */
            write_completion(e, &c, &finish, b);
            lg_reply_json(req, 200, l->request_id, b->data, b->len);
        }
        lg_buf_free(&c);
        lg_buf_free(&finish);
    }
    lg_access_log(req, l->streaming ? 200 : status, l->request_id, l->start_ns, e->id, e->agent, e->version);
}

/* A model's text delta (ai.c's emit_token: data is {"text":"…"}): one chunk. ctx.emit events have
 * no place in OpenAI's stream; they are in the execution's history. */
static void oai_on_emit(lg_exec_t *e, const char *event, const char *json, size_t len)
{
    lg_link_t *l = e->owner;
    oai_t *o = l->face;
    if (!l->streaming || l->req == NULL || strcmp(event, "token") != 0)
        return;
    if (len < 11 || memcmp(json, "{\"text\":\"", 9) != 0 || json[len - 1] != '}' || json[len - 2] != '"')
        return;
    const char *s = json + 9; /* the escaped text, between the quotes */
    size_t n = len - 11;
    if (n == 0)
        return;
    chunk_open(&l->pending, e);
    lg_buf_lit(&l->pending, "{\"content\":\"");
    lg_buf_append(&l->pending, s, n);
    lg_buf_lit(&l->pending, "\"}");
    chunk_close(&l->pending, o, "null", 4);
    lg_buf_append(&o->streamed, s, n);
    lg_sse_send(l, 0);
}

static const lg_exec_ops_t oai_ops = {.on_done = oai_on_done, .on_emit = oai_on_emit};

/* ---- POST /v1/chat/completions ---- */

static int is_object(lua_State *L, int idx) { return lua_istable(L, idx) && !lg_json_is_array_marked(L, idx); }
static int absent(lua_State *L, int idx) { return lua_isnil(L, idx) || lg_json_is_null(L, idx); }

/* Check the request decoded at index 1 of co and turn it into [task, nil]. NULL, or the message of a
 * 400 (into msg when it needs formatting). *stream, *include_usage, name/namelen: from the request. */
static const char *read_request(lua_State *co, int *stream, int *include_usage, const char **name, size_t *namelen,
                                char *msg, size_t msglen)
{
    if (!is_object(co, 1))
        return "the body must be a JSON object with \"model\" and \"messages\"";
    lua_getfield(co, 1, "model");
    if (lua_type(co, -1) != LUA_TSTRING)
        return absent(co, -1) ? "\"model\" (the name of an agent) is required" : "\"model\" must be a string";
    *name = lua_tolstring(co, -1, namelen); /* stays on co's stack (index 2) until the task is built */
    lua_getfield(co, 1, "messages");
    if (absent(co, -1))
        return "\"messages\" is required";
    if (!lua_istable(co, -1) || !lg_json_is_array_marked(co, -1))
        return "\"messages\" must be an array of message objects";
    size_t n = lua_objlen(co, -1);
    if (n == 0)
        return "\"messages\" must not be empty";
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(co, 3, (int)i);
        if (!is_object(co, -1)) {
            snprintf(msg, msglen, "messages[%zu] must be an object", i - 1);
            return msg;
        }
        lua_getfield(co, -1, "role");
        if (lua_type(co, -1) != LUA_TSTRING) {
            snprintf(msg, msglen, "messages[%zu].role must be a string", i - 1);
            return msg;
        }
        lua_pop(co, 2);
    }
    lua_getfield(co, 1, "stream");
    if (!absent(co, -1) && !lua_isboolean(co, -1))
        return "\"stream\" must be a boolean";
    *stream = lua_toboolean(co, -1);
    lua_getfield(co, 1, "stream_options");
    if (!absent(co, -1)) {
        if (!is_object(co, -1))
            return "\"stream_options\" must be an object";
        lua_getfield(co, -1, "include_usage");
        if (!absent(co, -1) && !lua_isboolean(co, -1))
            return "\"stream_options.include_usage\" must be a boolean";
        *include_usage = lua_toboolean(co, -1);
        lua_pop(co, 1);
    }
    lua_getfield(co, 1, "n");
    if (!absent(co, -1) && !(lua_type(co, -1) == LUA_TNUMBER && lua_tonumber(co, -1) == 1))
        return "\"n\" must be 1: an agent gives one answer";
    lua_settop(co, 3); /* [body model messages] */
    /* the task: {messages = ..., params = the body without model, messages, stream, stream_options} */
    lua_createtable(co, 0, 2);
    lua_insert(co, 3);
    lua_setfield(co, 3, "messages");
    static const char *const drop[] = {"model", "messages", "stream", "stream_options"};
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++) {
        lua_pushnil(co);
        lua_setfield(co, 1, drop[i]);
    }
    lua_pushvalue(co, 1);
    lua_setfield(co, 3, "params");
    lua_replace(co, 1); /* [task model]: the name stays anchored while it is used */
    return NULL;
}

int lg_openai_chat_route(h2o_req_t *req, const char *request_id, uint64_t start_ns, const lg_principal_t *who)
{
    lg_worker_t *w = lg_worker_of(req);
    int status;
    if ((status = lg_execute_precheck(req, request_id)) != 0)
        return status;
    lg_exec_t *e = lg_exec_new(&w->rt, &oai_ops, NULL);
    lua_State *co = e->co;
    char msg[256];
    const char *err = NULL, *code = "invalid_request", *name = NULL;
    size_t namelen = 0;
    int stream = 0, include_usage = 0;
    lg_json_error_t jerr;
    lg_json_status_t js = lg_json_decode(co, req->entity.base ? req->entity.base : "", req->entity.len,
                                         LG_BODY_MAX_DEPTH, &jerr);
    status = 400;
    if (js != LG_JSON_OK) {
        code = js == LG_JSON_ESYNTAX ? "invalid_json" : "invalid_request";
        snprintf(msg, sizeof(msg), "%s%s", req->entity.len == 0 ? "the request has no body; " : "", jerr.msg);
        err = msg;
    } else if ((err = read_request(co, &stream, &include_usage, &name, &namelen, msg, sizeof(msg))) == NULL) {
        if (!lg_agent_name_valid(name, namelen)) {
            reply_model_not_found(req, name, namelen, request_id);
            lua_settop(co, 0);
            lg_exec_discard(e);
            return 404;
        }
        if (!lg_principal_may_run(who, name, namelen)) {
            snprintf(msg, sizeof(msg), "this credential may not run the agent '%.*s'", (int)namelen, name);
            status = 403, code = "forbidden", err = msg;
        }
    }
    if (err != NULL) {
        lua_settop(co, 0);
        lg_exec_discard(e);
        lg_reply_error(req, status, code, err, request_id);
        return status;
    }
    char agent[LG_AGENT_NAME_MAX + 1];
    memcpy(agent, name, namelen);
    agent[namelen] = '\0';
    lua_pop(co, 1);
    lua_pushnil(co); /* [task context]: no context */
    memcpy(e->request_id, request_id, strlen(request_id) + 1);
    if (who->role != LG_ROLE_NONE) {
        e->user_role = (int)who->role;
        memcpy(e->user_id, who->id, sizeof(e->user_id));
    }
    e->stream = stream;
    lg_schema_report_t invalid = {0};
    lg_launch_status_t ls = lg_exec_launch(e, agent, namelen, 0, &invalid);
    if (ls != LG_LAUNCH_OK) {
        lua_settop(co, 0);
        lg_exec_discard(e);
        if (ls == LG_LAUNCH_INVALID) {
            lg_reply_invalid(req, agent, namelen, &invalid, request_id);
            lg_buf_free(&invalid.details);
            return 422;
        }
        reply_model_not_found(req, agent, namelen, request_id);
        return 404;
    }
    oai_t *o = h2o_mem_alloc_shared(&req->pool, sizeof(*o), oai_dispose);
    memset(o, 0, sizeof(*o));
    o->include_usage = stream && include_usage;
    lg_link_t *l = lg_link_attach(req, e, start_ns, request_id);
    l->face = o;
    if (stream) {
        lg_sse_start(l);
        chunk_open(&l->pending, e);
        lg_buf_lit(&l->pending, "{\"role\":\"assistant\",\"content\":\"\"}");
        chunk_close(&l->pending, o, "null", 4);
        lg_sse_send(l, 0);
    }
    lg_exec_run(e);
    return 0; /* logged when it ends */
}

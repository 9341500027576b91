/* Route handlers: health/info, agent listing, and executions (JSON or SSE). */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <sys/socket.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "luagent/ids.h"
#include "luagent/json.h"
#include "luagent/log.h"
#include "luagent/registry.h"
#include "luagent/router.h"
#include "luagent/sched.h"
#include "luagent/server.h"
#include "luagent/store.h"
#include "luagent/worker.h"

#define BODY_MAX_DEPTH 64

/* One HTTP execution: lives in the request's pool; its dispose callback is how we learn that the
 * request is gone (client disconnect, or after the reply). */
typedef struct lg_link {
    h2o_generator_t gen; /* SSE: first member, h2o hands it back to proceed/stop */
    h2o_req_t *req;      /* NULL once the request is gone */
    lg_exec_t *exec;     /* NULL once the execution ended */
    struct lg_link *prev, *next; /* the worker's executions in flight (client watch) */
    int streaming, sending, final_queued, final_sent, client_gone;
    lg_buf_t pending, inflight;
    lg_worker_t *worker;
    uint64_t start_ns;
    char request_id[72];
} lg_link_t;

/* ---- in-flight list and the client watch ----
 * h2o 2.2 does not read from an HTTP/1 connection while its request is being handled, so it only
 * learns that a client went away when a write fails. Once a second, the worker peeks at the
 * sockets of executions older than CLIENT_WATCH_MS; at EOF or a reset the execution is cancelled
 * (its upstream calls with it) and a 499 is written, which makes h2o close the connection. */

#define CLIENT_WATCH_MS 500

static void watch_fired(lg_timer_t *t);

static void link_track(lg_worker_t *w, lg_link_t *l)
{
    l->prev = NULL;
    l->next = w->links;
    if (w->links != NULL)
        w->links->prev = l;
    w->links = l;
    if (!lg_timer_active(&w->client_watch)) {
        w->client_watch.cb = watch_fired;
        lg_timers_add(&w->rt.timers, &w->client_watch, lg_now_mono_ms() + 1000);
    }
}

static void link_untrack(lg_worker_t *w, lg_link_t *l)
{
    if (l->prev != NULL)
        l->prev->next = l->next;
    else if (w->links == l)
        w->links = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
    l->prev = l->next = NULL;
}

static int client_gone(h2o_req_t *req)
{
    h2o_socket_t *sock = req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    int fd = sock != NULL ? h2o_socket_get_fd(sock) : -1;
    if (fd < 0 || sock->ssl != NULL)
        return 0;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void watch_fired(lg_timer_t *t)
{
    lg_worker_t *w = (lg_worker_t *)((char *)t - offsetof(lg_worker_t, client_watch));
    uint64_t now_ns = lg_now_mono_ns();
    for (lg_link_t *l = w->links, *next; l != NULL; l = next) {
        next = l->next;
        if (l->exec != NULL && l->req != NULL && now_ns - l->start_ns > CLIENT_WATCH_MS * 1000000ull &&
            client_gone(l->req)) {
            l->client_gone = 1;
            lg_exec_cancel(l->exec);
        }
    }
    if (w->links != NULL)
        lg_timers_add(&w->rt.timers, &w->client_watch, lg_now_mono_ms() + 1000);
}

/* ---- SSE ---- */

static void sse_flush(lg_link_t *l)
{
    if (l->sending || l->req == NULL || l->final_sent || (l->pending.len == 0 && !l->final_queued))
        return;
    lg_buf_t t = l->inflight;
    l->inflight = l->pending;
    l->pending = t;
    lg_buf_reset(&l->pending);
    l->sending = 1;
    h2o_iovec_t v = h2o_iovec_init(l->inflight.data, l->inflight.len);
    if (l->final_queued)
        l->final_sent = 1;
    h2o_send(l->req, &v, 1, l->final_sent ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void sse_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    lg_link_t *l = (lg_link_t *)gen;
    l->sending = 0;
    sse_flush(l);
}

static void link_abandon(lg_link_t *l)
{
    l->req = NULL;
    if (l->exec != NULL)
        lg_exec_cancel(l->exec); /* on_done sees req == NULL and only logs */
}

static void sse_stop(h2o_generator_t *gen, h2o_req_t *req) { link_abandon((lg_link_t *)gen); }

static void sse_event(lg_link_t *l, const char *event, const char *data, size_t len)
{
    lg_buf_printf(&l->pending, "event: %s\ndata: ", event);
    lg_buf_append(&l->pending, data, len); /* compact JSON: never contains a raw newline */
    lg_buf_lit(&l->pending, "\n\n");
}

static void sse_start(lg_link_t *l)
{
    h2o_req_t *req = l->req;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL,
                          H2O_STRLIT("nosniff"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, l->request_id,
                          strlen(l->request_id));
    l->gen.proceed = sse_proceed;
    l->gen.stop = sse_stop;
    l->streaming = 1;
    h2o_start_response(req, &l->gen);
    lg_buf_lit(&l->pending, ": stream open\n\n"); /* headers go out now; the client sees the stream begin */
    sse_flush(l);
}

static void link_dispose(void *p)
{
    lg_link_t *l = p;
    link_abandon(l);
    link_untrack(l->worker, l);
    lg_buf_free(&l->pending);
    lg_buf_free(&l->inflight);
}

/* ---- execution results ---- */

static void on_emit(lg_exec_t *e, const char *event, const char *json, size_t len)
{
    lg_link_t *l = e->owner;
    if (!l->streaming || l->req == NULL)
        return;
    sse_event(l, event, json, len);
    sse_flush(l);
}

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
static int outcome_json(lg_exec_t *e, int client_gone, lg_buf_t *b, const char *request_id, int *is_err,
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
    }
    return status;
}

/* Record the outcome that `b` holds (outcome_json). */
static void record_outcome(lg_exec_t *e, const lg_buf_t *b, int is_err, size_t result_off, size_t result_len)
{
    if (!e->recording)
        return;
    lg_rec_t *r;
    if (is_err) /* the inner object of {"error":{...}} */
        r = lg_record_build(e, LG_REC_FAILED, NULL, 0, b->data + 9, b->len - 10);
    else
        r = lg_record_build(e, LG_REC_SUCCEEDED, b->data + result_off, result_len, NULL, 0);
    lg_record_commit(e->rt, r);
}

static void on_done(lg_exec_t *e)
{
    lg_link_t *l = e->owner;
    h2o_req_t *req = l->req;
    l->exec = NULL;
    link_untrack(l->worker, l);
    lg_buf_t *b = &l->worker->scratch;
    lg_buf_reset(b);
    int is_err;
    size_t roff = 0, rlen = 0;
    int status = outcome_json(e, l->client_gone || req == NULL, b, l->request_id, &is_err, &roff, &rlen);
    record_outcome(e, b, is_err, roff, rlen);
    if (req == NULL) {
        lg_log(LG_LOG_INFO, "execution %s of %s ended after its client went away", e->id, e->agent);
        return;
    }
    if (e->cache != LG_CACHE_NONE && !l->streaming)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-cache"), 0, NULL,
                              e->cache == LG_CACHE_HIT ? "hit" : "miss", e->cache == LG_CACHE_HIT ? 3 : 4);
    if (l->streaming) {
        sse_event(l, is_err ? "error" : "result", b->data, b->len);
        l->final_queued = 1;
        sse_flush(l);
    } else {
        lg_reply_json(req, status, l->request_id, b->data, b->len);
    }
    lg_access_log(req, l->streaming ? 200 : status, l->request_id, l->start_ns, e->id, e->agent, e->version);
}

static const lg_exec_ops_t http_exec_ops = {.on_done = on_done, .on_emit = on_emit};

/* ---- request parsing ---- */

static int content_type_ok(h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (i < 0)
        return 1;
    h2o_iovec_t v = req->headers.entries[i].value;
    size_t n = 0;
    while (n < v.len && v.base[n] != ';' && v.base[n] != ' ')
        n++;
    if (n == 16 && h2o_lcstris(v.base, n, H2O_STRLIT("application/json")))
        return 1;
    return n > 5 && h2o_lcstris(v.base + n - 5, 5, H2O_STRLIT("+json"));
}

static int wants_sse(h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_ACCEPT, -1);
    return i >= 0 && h2o_strstr(req->headers.entries[i].value.base, req->headers.entries[i].value.len,
                                H2O_STRLIT("text/event-stream")) != SIZE_MAX;
}

static int is_object(lua_State *L, int idx) { return lua_istable(L, idx) && !lg_json_is_array_marked(L, idx); }

/* Decode and check the envelope onto e->co, leaving [task, context]. NULL, or an error message
 * with *status and *code set. For the seed route, *name receives the body's "agent". */
static const char *parse_envelope(h2o_req_t *req, lua_State *co, int seed_route, char *name, size_t *namelen,
                                  int *status, const char **code, char *msg, size_t msglen)
{
    *status = 400;
    *code = "invalid_request";
    lg_json_error_t jerr;
    lg_json_status_t js = lg_json_decode(co, req->entity.base ? req->entity.base : "", req->entity.len,
                                         BODY_MAX_DEPTH, &jerr);
    if (js != LG_JSON_OK) {
        if (js == LG_JSON_ESYNTAX)
            *code = "invalid_json";
        snprintf(msg, msglen, "%s%s", req->entity.len == 0 ? "the request has no body; " : "", jerr.msg);
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
    lua_pop(co, 1);
    lua_remove(co, 1);
    return NULL;
}

static int on_execute(h2o_req_t *req, const lg_route_t *route, const char *request_id, uint64_t start_ns)
{
    lg_worker_t *w = lg_worker_of(req);
    const lg_config_t *cfg = w->server->cfg;
    if (atomic_load(&w->server->draining)) {
        lg_reply_error(req, 503, "unavailable", "the server is shutting down", request_id);
        return 503;
    }
    if (req->entity.len > cfg->max_body_bytes) {
        char m[96];
        snprintf(m, sizeof(m), "the body is larger than %zu bytes", cfg->max_body_bytes);
        lg_reply_error(req, 413, "payload_too_large", m, request_id);
        return 413;
    }
    if (!content_type_ok(req)) {
        lg_reply_error(req, 415, "unsupported_media_type", "send the body as application/json", request_id);
        return 415;
    }
    lg_exec_t *e = lg_exec_new(&w->rt, &http_exec_ops, NULL);
    char name[LG_AGENT_NAME_MAX + 1], msg[256];
    size_t namelen = 0;
    int status;
    const char *code;
    const char *err = parse_envelope(req, e->co, route->id == LG_ROUTE_EXECUTE, name, &namelen, &status, &code, msg,
                                     sizeof(msg));
    if (err == NULL && route->id == LG_ROUTE_AGENT_EXECUTE) {
        memcpy(name, route->name, route->name_len);
        namelen = route->name_len;
    }
    if (err == NULL && !lg_agent_name_valid(name, namelen))
        status = 404, code = "not_found", err = "no such agent";
    if (err == NULL) {
        e->stream = wants_sse(req);
        memcpy(e->request_id, request_id, strlen(request_id) + 1);
        if (lg_exec_launch(e, name, namelen, 0) != LG_LAUNCH_OK)
            status = 404, code = "not_found", err = "no such agent";
    }
    if (err != NULL) {
        lua_settop(e->co, 0);
        lg_exec_discard(e);
        if (strcmp(err, "no such agent") == 0) {
            snprintf(msg, sizeof(msg), "no agent named '%.*s'", (int)namelen, name);
            err = msg;
        }
        lg_reply_error(req, status, code, err, request_id);
        return status;
    }
    lg_link_t *l = h2o_mem_alloc_shared(&req->pool, sizeof(*l), link_dispose);
    memset(l, 0, sizeof(*l));
    l->req = req;
    l->exec = e;
    l->worker = w;
    link_track(w, l);
    l->start_ns = start_ns;
    memcpy(l->request_id, request_id, strlen(request_id) + 1);
    e->owner = l;
    if (e->stream)
        sse_start(l);
    lg_exec_run(e);
    return 0; /* logged when it ends */
}

static void reply_buf(h2o_req_t *req, const char *request_id, lg_buf_t *b) { lg_reply_json(req, 200, request_id, b->data, b->len); }

/* ---- execution history ---- */

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The query parameter `name`, percent-decoded into out (NUL-terminated): its length, -1 when absent,
 * -2 when too long or badly encoded. */
static int query_param(h2o_req_t *req, const char *name, char *out, size_t cap)
{
    if (req->query_at == SIZE_MAX)
        return -1;
    const char *p = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    size_t nlen = strlen(name);
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *kend = eq ? eq : stop;
        if ((size_t)(kend - p) == nlen && memcmp(p, name, nlen) == 0) {
            size_t n = 0;
            for (const char *v = eq ? eq + 1 : stop; v < stop; v++) {
                int c = (unsigned char)*v;
                if (c == '+') {
                    c = ' ';
                } else if (c == '%') {
                    if (stop - v < 3 || hexval(v[1]) < 0 || hexval(v[2]) < 0)
                        return -2;
                    c = hexval(v[1]) * 16 + hexval(v[2]);
                    v += 2;
                }
                if (n + 1 >= cap || c == 0)
                    return -2;
                out[n++] = (char)c;
            }
            out[n] = '\0';
            return (int)n;
        }
        p = stop + 1;
    }
    return -1;
}

/* `since`: an RFC 3339 time (2026-11-26T01:02:03.456Z, or with an offset), a date, or epoch ms. */
static int parse_since(const char *s, uint64_t *ms)
{
    char *end;
    if (*s >= '0' && *s <= '9' && strlen(s) >= 10 && strspn(s, "0123456789") == strlen(s)) {
        *ms = strtoull(s, &end, 10);
        return 0;
    }
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%d", &tm);
    if (p == NULL)
        return -1;
    unsigned frac = 0;
    long off = 0;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        if ((p = strptime(p + 1, "%H:%M:%S", &tm)) == NULL)
            return -1;
        if (*p == '.') {
            int digits = 0;
            for (p++; *p >= '0' && *p <= '9'; p++, digits++)
                if (digits < 3)
                    frac = frac * 10 + (unsigned)(*p - '0');
            for (; digits < 3; digits++)
                frac *= 10;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
            off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600 + ((p[4] - '0') * 10 + (p[5] - '0')) * 60;
            if (*p == '-')
                off = -off;
            p += 6;
        } else {
            return -1;
        }
    }
    if (*p != '\0')
        return -1;
    time_t t = timegm(&tm);
    if (t < 0)
        return -1;
    *ms = (uint64_t)(t - off) * 1000 + frac;
    return 0;
}

static int uuid_like(const char *s, size_t n)
{
    if (n != LG_UUID_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : hexval((unsigned char)s[i]) < 0)
            return 0;
    }
    return 1;
}

/* GET /api/v1/executions: 0, or the error status (already answered). */
static int on_executions(h2o_req_t *req, const char *request_id, lg_buf_t *b)
{
    char agent[LG_AGENT_NAME_MAX + 2], status[16], since[64], limit[16], cursor[48];
    lg_history_query_t q = {.status = -1, .limit = 50};
    const char *bad = NULL;
    int n;
    if ((n = query_param(req, "agent", agent, sizeof(agent))) >= 0) {
        if (!lg_agent_name_valid(agent, (size_t)n))
            bad = "agent: not an agent name";
        q.agent = agent, q.agent_len = (size_t)n;
    } else if (n == -2) {
        bad = "agent: not an agent name";
    }
    if ((n = query_param(req, "status", status, sizeof(status))) != -1 &&
        (n < 0 || (q.status = lg_rec_status_parse(status, (size_t)n)) < 0))
        bad = "status: one of queued, running, succeeded, failed";
    if ((n = query_param(req, "since", since, sizeof(since))) != -1 && (n < 0 || parse_since(since, &q.since_ms) != 0))
        bad = "since: an RFC 3339 time like 2026-01-31T12:00:00Z, a date, or epoch milliseconds";
    if ((n = query_param(req, "limit", limit, sizeof(limit))) != -1) {
        char *end;
        long v = n > 0 ? strtol(limit, &end, 10) : 0;
        if (n <= 0 || *end != '\0' || v < 1 || v > 500)
            bad = "limit: an integer from 1 to 500";
        q.limit = (int)v;
    }
    if ((n = query_param(req, "cursor", cursor, sizeof(cursor))) != -1) {
        if (n < 0 || !uuid_like(cursor, (size_t)n))
            bad = "cursor: the next_cursor of a previous page";
        q.cursor = cursor;
    }
    if (bad != NULL) {
        lg_reply_error(req, 400, "invalid_request", bad, request_id);
        return 400;
    }
    lg_history_list(&q, b);
    reply_buf(req, request_id, b);
    return 0;
}

static int on_execution(h2o_req_t *req, const lg_route_t *route, const char *request_id, lg_buf_t *b)
{
    if (!uuid_like(route->name, route->name_len) || !lg_history_get(route->name, route->name_len, b)) {
        lg_reply_error(req, 404, "not_found", "no such execution", request_id);
        return 404;
    }
    reply_buf(req, request_id, b);
    return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    uint64_t start_ns = lg_now_mono_ns();
    lg_worker_t *w = lg_worker_of(req);
    char request_id[72];
    lg_request_id(req, request_id);
    lg_route_t route;
    lg_route_match(req->method.base, req->method.len, req->path_normalized.base, req->path_normalized.len, &route);
    int status = 200;
    lg_buf_t *b = &w->scratch;
    lg_buf_reset(b);
    if (route.id == LG_ROUTE_NOT_FOUND) {
        status = 404;
        lg_reply_error(req, 404, "not_found", route.name ? "no such agent" : "no such route", request_id);
    } else if (!route.method_allowed) {
        status = 405;
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, route.allow, strlen(route.allow));
        char m[96];
        snprintf(m, sizeof(m), "this route accepts %s", route.allow);
        lg_reply_error(req, 405, "method_not_allowed", m, request_id);
    } else {
        switch (route.id) {
        case LG_ROUTE_HEALTH:
            lg_buf_lit(b, "{\"status\":\"ok\"}");
            reply_buf(req, request_id, b);
            break;
        case LG_ROUTE_READY:
            if (atomic_load(&w->server->draining)) {
                status = 503;
                lg_reply_error(req, 503, "unavailable", "the server is shutting down", request_id);
            } else {
                lg_buf_lit(b, "{\"status\":\"ready\",\"checks\":{\"agents\":\"ok\"}}");
                reply_buf(req, request_id, b);
            }
            break;
        case LG_ROUTE_INFO:
            lg_buf_printf(b,
                          "{\"name\":\"luagent\",\"version\":\"%s\",\"build\":{\"date\":\"%s\",\"compiler\":\"%s\"},"
                          "\"workers\":%d,\"agents\":%zu,\"pid\":%d,\"uptime_s\":%.3f}",
                          LUAGENT_VERSION, __DATE__, __VERSION__, w->server->nworkers, lg_registry_count(LG_SCRIPT_AGENT), (int)getpid(),
                          (double)(lg_now_epoch_ms() - w->server->started_ms) / 1000.0);
            reply_buf(req, request_id, b);
            break;
        case LG_ROUTE_AGENTS:
            lg_registry_json_all(LG_SCRIPT_AGENT, b);
            reply_buf(req, request_id, b);
            break;
        case LG_ROUTE_AGENT:
            if (lg_registry_json_one(LG_SCRIPT_AGENT, b, route.name, route.name_len) == 0) {
                reply_buf(req, request_id, b);
            } else {
                status = 404;
                lg_reply_error(req, 404, "not_found", "no such agent", request_id);
            }
            break;
        case LG_ROUTE_EXECUTIONS:
            status = on_executions(req, request_id, b);
            status = status ? status : 200;
            break;
        case LG_ROUTE_EXECUTION:
            status = on_execution(req, &route, request_id, b);
            status = status ? status : 200;
            break;
        case LG_ROUTE_AGENT_EXECUTE:
        case LG_ROUTE_EXECUTE:
            status = on_execute(req, &route, request_id, start_ns);
            if (status == 0)
                return 0;
            break;
        default:
            break;
        }
    }
    lg_access_log(req, status, request_id, start_ns, NULL, NULL, NULL);
    return 0;
}

void lg_handlers_register(h2o_hostconf_t *hostconf)
{
    h2o_pathconf_t *pathconf = h2o_config_register_path(hostconf, "/", 0);
    h2o_handler_t *h = h2o_create_handler(pathconf, sizeof(*h));
    h->on_req = on_req;
}

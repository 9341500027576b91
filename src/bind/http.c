/* luagent.http: HTTP requests on the worker's loop.
 *
 *   res = luagent.http.request{method=, url=, headers=, body=, timeout_ms=, max_body_bytes=, stream=}
 *   -> {status, headers = {lowercase name = value}, body}
 *   with stream = true, request returns once the headers are in, and res.read() yields the next
 *   chunk of the body (nil at the end).
 * Failures raise {status = 502, code = "upstream_error"} or {status = 504, code = "upstream_timeout"}
 * (the agent may pcall). Each request is owned by its execution: when the execution ends for any
 * reason (client gone, deadline, error) the transfer is cancelled and its memory freed.
 *
 * Two transports share everything above the wire: libcurl (the public luagent.http.request: HTTP/2,
 * proxies, every feature) and H2O's own HTTP/1.1 client (src/loop/upstream.c), which luagent.ai
 * uses for provider calls because it costs far less per request (DESIGN §8). */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "luagent/trace.h"
#include "luagent/bind.h"
#include "luagent/curlm.h"
#include "luagent/json.h"
#include "luagent/sched.h"
#include "luagent/store.h"
#include "luagent/upstream.h"

#include "lua_text.h" /* LG_TEXT_httputil: lua/luagent/httputil.lua (scripts/embed_text.lua) */

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_MAX_BODY (16u << 20)
#define STREAM_HIGH_WATER (256u << 10) /* pause the transfer when this much is buffered unread */
#define HANDLE_MT "luagent.http.stream"

enum { WAIT_NONE, WAIT_HEAD, WAIT_BODY };

typedef struct http_req http_req_t;

typedef struct http_handle {
    http_req_t *req; /* NULL once the request is released */
} http_handle_t;

typedef enum { T_CURL, T_H2O } transport_t;

struct http_req {
    lg_resource_t res; /* first member: the execution owns the request through it */
    lg_exec_t *e;
    transport_t transport;
    /* libcurl */
    lg_curlm_t *m;
    CURL *easy;
    struct curl_slist *hdrs;
    /* h2o */
    lg_upstream_req_t *client; /* NULL once the client is done */
    h2o_iovec_t reqvec;        /* the whole request, alive until the client is done */
    lg_timer_t deadline;
    /* common */
    lg_buf_t body, hdr;
    size_t max_body;
    long status;
    int stream, headers_done, done, paused, too_large, waiting, failed, timed_out;
    int lean; /* the provider path: for a 2xx, no headers table and the body decoded as `json` */
    lg_json_shape_t *shape; /* held: what of that body to decode (NULL: all) */
    http_handle_t *handle;
    char *event;       /* luagent.http on a recorded execution: {"method","url" of its http_call event */
    uint64_t start_ns;
    char errbuf[CURL_ERROR_SIZE];
};

static void req_free(http_req_t *r)
{
    if (r->handle != NULL)
        r->handle->req = NULL;
    if (r->transport == T_CURL) {
        if (r->easy != NULL)
            lg_curlm_release(r->m, r->easy); /* cancels the transfer if it is still running */
        if (r->hdrs != NULL)
            curl_slist_free_all(r->hdrs);
    } else {
        if (r->client != NULL)
            lg_upstream_cancel(r->client);
        lg_timers_del(&r->e->rt->timers, &r->deadline);
        free(r->reqvec.base);
    }
    lg_buf_free(&r->body);
    lg_buf_free(&r->hdr);
    lg_json_shape_drop(r->shape);
    free(r->event);
    free(r);
}

static void req_release(lg_resource_t *res) { req_free((http_req_t *)res); }

static void req_finish(http_req_t *r)
{
    lg_exec_disown(r->e, &r->res);
    req_free(r);
}

/* ---- results pushed on the waiting coroutine ---- */

static void push_error(lua_State *co, http_req_t *r)
{
    int timeout = r->timed_out;
    lua_pushboolean(co, 0);
    lua_createtable(co, 0, 3);
    lua_pushinteger(co, timeout ? 504 : 502);
    lua_setfield(co, -2, "status");
    lua_pushstring(co, timeout ? "upstream_timeout" : "upstream_error");
    lua_setfield(co, -2, "code");
    if (r->too_large)
        lua_pushfstring(co, "http: the response body is larger than %d bytes", (int)r->max_body);
    else
        lua_pushfstring(co, "http: %s", r->errbuf[0] ? r->errbuf : "the transfer failed");
    lua_setfield(co, -2, "message");
}

static int http_read(lua_State *L);

/* {status, headers, body | read} */
static void push_response(lua_State *co, http_req_t *r)
{
    lua_pushboolean(co, 1);
    lua_createtable(co, 0, 4);
    lua_pushinteger(co, r->status);
    lua_setfield(co, -2, "status");
    int want_headers = !r->lean || r->status < 200 || r->status > 299;
    lua_createtable(co, 0, want_headers ? 8 : 0);
    for (const char *p = r->hdr.data, *end = r->hdr.data + r->hdr.len; want_headers && p != NULL && p < end;) {
        const char *name = p, *value = name + strlen(name) + 1;
        p = value + strlen(value) + 1;
        lua_getfield(co, -1, name);
        if (lua_isstring(co, -1)) { /* repeated header: join as HTTP allows */
            lua_pushliteral(co, ", ");
            lua_pushstring(co, value);
            lua_concat(co, 3);
        } else {
            lua_pop(co, 1);
            lua_pushstring(co, value);
        }
        lua_setfield(co, -2, name);
    }
    lua_setfield(co, -2, "headers");
    if (r->stream) {
        http_handle_t *h = lua_newuserdata(co, sizeof(*h));
        h->req = r;
        r->handle = h;
        luaL_getmetatable(co, HANDLE_MT);
        lua_setmetatable(co, -2);
        lua_pushcclosure(co, http_read, 1);
        lua_setfield(co, -2, "read");
    } else if (r->lean && r->status >= 200 && r->status <= 299) {
        /* the decoded body straight from the buffer, no string in between; raw text if not JSON */
        lg_json_error_t jerr;
        if (lg_json_decode_shaped(co, r->body.data ? r->body.data : "", r->body.len, LG_JSON_DEFAULT_MAX_DEPTH, &jerr,
                                  r->shape) == LG_JSON_OK)
            lua_setfield(co, -2, "json");
        else {
            lua_pushlstring(co, r->body.data ? r->body.data : "", r->body.len);
            lua_setfield(co, -2, "body");
        }
    } else {
        lua_pushlstring(co, r->body.data ? r->body.data : "", r->body.len);
        lua_setfield(co, -2, "body");
    }
}

static void resume_transfer(http_req_t *r)
{
    if (r->paused) {
        r->paused = 0;
        curl_easy_pause(r->easy, CURLPAUSE_CONT);
    }
}

static void wake(http_req_t *r, int nres)
{
    r->waiting = WAIT_NONE;
    lg_sched_wake(r->e, nres);
}

/* the stream reader is waiting: hand it what is buffered, or the end (then the request is done
 * and freed) */
static void deliver_chunk(http_req_t *r)
{
    lua_State *co = r->e->co;
    if (r->body.len > 0) {
        lua_pushboolean(co, 1);
        lua_pushlstring(co, r->body.data, r->body.len);
        lg_buf_reset(&r->body);
        resume_transfer(r);
        wake(r, 2);
    } else if (r->done) {
        if (r->failed) {
            push_error(co, r);
        } else {
            lua_pushboolean(co, 1);
            lua_pushnil(co);
        }
        wake(r, 2);
        req_finish(r);
    }
}

/* ---- events, whatever the transport ---- */

static void got_head(http_req_t *r)
{
    r->headers_done = 1;
    if (r->stream && r->waiting == WAIT_HEAD) {
        push_response(r->e->co, r);
        wake(r, 2);
    }
}

static void add_header(http_req_t *r, const char *name, size_t nlen, const char *v, size_t vlen)
{
    char *dst = lg_buf_reserve(&r->hdr, nlen + vlen + 2);
    for (size_t i = 0; i < nlen; i++)
        dst[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    dst[nlen] = '\0';
    memcpy(dst + nlen + 1, v, vlen);
    dst[nlen + 1 + vlen] = '\0';
    r->hdr.len += nlen + vlen + 2;
}

/* 0: keep going; 1: pause (curl only); -1: abort (the body is too large) */
static int got_body(http_req_t *r, const char *p, size_t len)
{
    if (r->stream) {
        if (r->transport == T_CURL && r->body.len >= STREAM_HIGH_WATER && r->waiting != WAIT_BODY)
            return 1;
    } else if (r->body.len + len > r->max_body) {
        r->too_large = 1;
        return -1;
    }
    lg_buf_append(&r->body, p, len);
    if (r->waiting == WAIT_BODY)
        deliver_chunk(r);
    return 0;
}

/* The http_call event of the execution's task history: method, the URL without its query (it
 * may carry credentials), status or error, duration. */
static void record_call(http_req_t *r)
{
    if (r->event == NULL)
        return;
    lg_buf_t b = {0};
    lg_buf_append(&b, r->event, strlen(r->event));
    if (r->failed) {
        const char *why = r->timed_out ? "timeout" : r->errbuf[0] ? r->errbuf : "the transfer failed";
        lg_buf_lit(&b, ",\"error\":");
        lg_buf_json_str(&b, why, strlen(why));
    } else {
        lg_buf_printf(&b, ",\"status\":%ld", r->status);
    }
    lg_buf_lit(&b, ",\"duration_ms\":");
    lg_buf_fixed3(&b, (double)(lg_now_mono_ns() - r->start_ns) / 1e6);
    lg_buf_putc(&b, '}');
    lg_record_event(r->e, "http_call", b.data, b.len);
    lg_buf_free(&b);
    free(r->event);
    r->event = NULL;
}

static void got_done(http_req_t *r)
{
    r->done = 1;
    record_call(r);
    if (r->waiting == WAIT_HEAD) {
        lua_State *co = r->e->co;
        if (!r->failed)
            push_response(co, r);
        else
            push_error(co, r);
        wake(r, 2);
        if (!r->stream || r->failed)
            req_finish(r);
    } else if (r->waiting == WAIT_BODY) {
        deliver_chunk(r);
    }
}

/* ---- libcurl transport ---- */

static size_t curl_on_header(char *p, size_t size, size_t n, void *data)
{
    http_req_t *r = data;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) { /* a new block (after 100 Continue, say) */
        lg_buf_reset(&r->hdr);
        return len;
    }
    if (len <= 2 && (len == 0 || p[0] == '\r' || p[0] == '\n')) {
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
        if (r->status >= 200)
            got_head(r);
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (colon == NULL)
        return len;
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    add_header(r, p, (size_t)(colon - p), v, (size_t)(end - v));
    return len;
}

static size_t curl_on_body(char *p, size_t size, size_t n, void *data)
{
    http_req_t *r = data;
    switch (got_body(r, p, size * n)) {
    case 1:
        r->paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    case -1:
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    default:
        return size * n;
    }
}

static void curl_on_done(CURL *easy, CURLcode rc, void *data)
{
    http_req_t *r = data;
    r->failed = rc != CURLE_OK;
    r->timed_out = rc == CURLE_OPERATION_TIMEDOUT;
    if (r->failed && r->errbuf[0] == '\0')
        snprintf(r->errbuf, sizeof(r->errbuf), "%s", curl_easy_strerror(rc));
    got_done(r);
}

/* ---- h2o transport ---- */

static void h2o_finish(http_req_t *r, const char *err, int timed_out)
{
    r->client = NULL; /* the client is done with it (it keeps or closes the connection) */
    lg_timers_del(&r->e->rt->timers, &r->deadline);
    if (err != NULL) {
        r->failed = 1;
        r->timed_out = timed_out;
        snprintf(r->errbuf, sizeof(r->errbuf), "%s", err);
    }
    got_done(r);
}

static void h2o_on_head(void *data, int status, const lg_upstream_header_t *headers, size_t n)
{
    http_req_t *r = data;
    r->status = status;
    if (!r->lean || status < 200 || status > 299) /* a lean 2xx reply goes without its headers */
        for (size_t i = 0; i < n; i++)
            if (headers[i].name != NULL)
                add_header(r, headers[i].name, headers[i].name_len, headers[i].value, headers[i].value_len);
    got_head(r);
}

static int h2o_on_body(void *data, const char *p, size_t len)
{
    http_req_t *r = data;
    if (got_body(r, p, len) < 0) {
        h2o_finish(r, "the response body is too large", 0);
        return -1;
    }
    return 0;
}

static void h2o_on_done(void *data, const char *err) { h2o_finish(data, err, 0); }

static const lg_upstream_cbs_t h2o_cbs = {h2o_on_head, h2o_on_body, h2o_on_done};

static void h2o_on_deadline(lg_timer_t *t)
{
    http_req_t *r = (http_req_t *)((char *)t - offsetof(http_req_t, deadline));
    if (r->client != NULL) {
        lg_upstream_cancel(r->client);
        h2o_finish(r, "operation timed out", 1);
    }
}

/* ---- Lua functions ---- */

static int valid_header_name(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s) != NULL))
            return 0;
    return 1;
}

static int start_curl(lua_State *L, http_req_t *r, const char *url, const char *method, const char *body, size_t blen,
                      long timeout_ms)
{
    if ((r->m = lg_rt_curl(r->e->rt)) == NULL)
        return -1; /* no libcurl on this machine (logged once) */
    CURL *c = r->easy = lg_curlm_easy(r->m);
    if (c == NULL)
        return -1;
    r->hdrs = curl_slist_append(r->hdrs, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 10000 ? timeout_ms : 10000L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, curl_on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, curl_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)blen);
        curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, body);
    }
    return lg_curlm_add(r->m, c, curl_on_done, r);
}

/* the request goes out as one buffer: request line, Host, Content-Length, the caller's headers;
 * timeout_ms 0: no deadline of its own (the execution's bounds it) */
static int start_h2o(lua_State *L, http_req_t *r, const char *url, const char *method, const char *body, size_t blen,
                     long timeout_ms, lg_buf_t *headers)
{
    h2o_url_t u;
    if (h2o_url_parse(url, strlen(url), &u) != 0 || method[0] == '\0' || strcmp(method, "HEAD") == 0)
        return -1;
    lg_buf_t b = {0}; /* appends, not printf: this runs for every provider call */
    lg_buf_reserve(&b, 128 + u.path.len + u.authority.len + headers->len + blen);
    lg_buf_append(&b, method, strlen(method));
    lg_buf_putc(&b, ' ');
    lg_buf_append(&b, u.path.base, u.path.len);
    lg_buf_lit(&b, " HTTP/1.1\r\nHost: ");
    lg_buf_append(&b, u.authority.base, u.authority.len);
    lg_buf_lit(&b, "\r\n");
    if (body != NULL || strcmp(method, "GET") != 0) {
        lg_buf_lit(&b, "Content-Length: ");
        lg_buf_u64(&b, body != NULL ? blen : 0);
        lg_buf_lit(&b, "\r\n");
    }
    lg_buf_append(&b, headers->data, headers->len);
    lg_buf_lit(&b, "\r\n");
    if (body != NULL)
        lg_buf_append(&b, body, blen);
    r->reqvec = h2o_iovec_init(b.data, b.len); /* owned by r from here */
    lg_rt_t *rt = r->e->rt;
    if (timeout_ms > 0)
        lg_timers_add(&rt->timers, &r->deadline, lg_now_mono_ms() + (uint64_t)timeout_ms);
    lg_upstream_send(&r->client, lg_rt_upstream(rt), &u, r->reqvec, &h2o_cbs, r);
    return 0;
}

/* The request's arguments, in this order on the Lua stack from index a (see http_raw_request). */
enum { A_URL, A_METHOD, A_BODY, A_HEADERS, A_TIMEOUT, A_MAX_BODY, A_STREAM, A_LEAN, A_SHAPE, A_COUNT };
static const char *const arg_names[A_COUNT] = {"url", "method", "body", "headers", "timeout_ms", "max_body_bytes",
                                               "stream", "lean", "shape"};

static lua_Number arg_number(lua_State *L, int idx, lua_Number def)
{
    return lua_isnumber(L, idx) ? lua_tonumber(L, idx) : def;
}

/* raw_request(opts) -> true, res | false, err   (yields). Upvalue 1: the transport.
 * The provider path (the H2O transport) also takes its arguments in order, without a table:
 * raw_request(method, url, headers, body, timeout_ms, stream, shape), lean. */
static int http_raw_request(lua_State *L)
{
    transport_t transport = (transport_t)lua_tointeger(L, lua_upvalueindex(1));
    int a;
    if (transport == T_H2O && !lua_istable(L, 1)) {
        static const int from[A_COUNT] = {2, 1, 4, 3, 5, 0, 6, 0, 7};
        lua_settop(L, 7);
        a = 8;
        for (int i = 0; i < A_COUNT; i++) {
            if (from[i])
                lua_pushvalue(L, from[i]);
            else if (i == A_LEAN)
                lua_pushboolean(L, 1);
            else
                lua_pushnil(L);
        }
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        a = 2;
        for (int i = 0; i < A_COUNT; i++)
            lua_getfield(L, 1, arg_names[i]);
    }
    lg_exec_t *e = lg_sched_check(L, "luagent.http.request");
    const char *url = lua_tostring(L, a + A_URL);
    if (url == NULL || (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0))
        return luaL_error(L, "luagent.http.request: url must be an http:// or https:// URL");
    const char *method = luaL_optstring(L, a + A_METHOD, NULL);
    lua_pushvalue(L, a + A_BODY);
    size_t blen = 0;
    const char *body = NULL;
    int body_is_json = 0;
    if (lua_istable(L, -1)) {
        lg_buf_t json = {0};
        lg_json_error_t jerr;
        if (lg_json_encode(L, -1, &json, LG_JSON_DEFAULT_MAX_DEPTH, &jerr) != LG_JSON_OK) {
            lg_buf_free(&json);
            return luaL_error(L, "luagent.http.request: body: %s", jerr.msg);
        }
        lua_pushlstring(L, json.data, json.len); /* the Lua stack owns it: no leak if we raise below */
        lg_buf_free(&json);
        body = lua_tolstring(L, -1, &blen);
        body_is_json = 1;
    } else if (!lua_isnil(L, -1)) {
        body = luaL_checklstring(L, -1, &blen);
    }
    if (method == NULL)
        method = body != NULL ? "POST" : "GET";
    for (const char *c = method; *c; c++)
        if (!(*c >= 'A' && *c <= 'Z'))
            return luaL_error(L, "luagent.http.request: bad method '%s'", method);
    lg_json_shape_t *shape = lg_json_toshape(L, a + A_SHAPE);
    if (shape == NULL && !lua_isnil(L, a + A_SHAPE))
        return luaL_error(L, "luagent.http.request: shape must be a json.shape");

    /* headers, checked before anything is allocated */
    lg_buf_t lines = {0};
    int has_ct = 0, has_tp = 0;
    lua_pushvalue(L, a + A_HEADERS);
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            size_t nlen = 0, vlen = 0;
            const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nlen) : NULL;
            const char *value = lua_isstring(L, -1) ? lua_tolstring(L, -1, &vlen) : NULL;
            /* no NUL inside either (the checks below read C strings; the bytes are copied by length) */
            if (name == NULL || value == NULL || strlen(name) != nlen || strlen(value) != vlen ||
                !valid_header_name(name) || strpbrk(value, "\r\n") != NULL) {
                lg_buf_free(&lines);
                return luaL_error(L, "luagent.http.request: bad header %s", name ? name : "(not a string)");
            }
            has_ct |= strcasecmp(name, "content-type") == 0;
            has_tp |= strcasecmp(name, "traceparent") == 0;
            lg_buf_append(&lines, name, nlen);
            lg_buf_lit(&lines, ": ");
            lg_buf_append(&lines, value, vlen);
            lg_buf_lit(&lines, "\r\n");
            lua_pop(L, 1);
        }
    }
    if (body_is_json && !has_ct)
        lg_buf_lit(&lines, "Content-Type: application/json\r\n");
    if (e->trace[0] != '\0' && !has_tp) { /* the execution's trace, a new span for this call (trace.h) */
        char *tp = lg_buf_reserve(&lines, sizeof("traceparent: \r\n") + LG_TRACEPARENT_LEN);
        memcpy(tp, "traceparent: ", 13);
        lg_trace_child(e->trace, tp + 13);
        memcpy(tp + 13 + LG_TRACEPARENT_LEN, "\r\n", 3);
        lines.len += 13 + LG_TRACEPARENT_LEN + 2;
    }

    /* the deadline: the request's own, never past the execution's */
    uint64_t now = lg_now_mono_ms();
    lua_Number timeout = arg_number(L, a + A_TIMEOUT, DEFAULT_TIMEOUT_MS);
    uint64_t left = e->budget.deadline_ms > now ? e->budget.deadline_ms - now : 1;
    int own_deadline = timeout > 0 && timeout < (lua_Number)left; /* else the execution's bounds it */
    long timeout_ms = own_deadline ? (long)timeout : (long)left;

    http_req_t *r = calloc(1, sizeof(*r));
    r->res.release = req_release;
    r->e = e;
    r->transport = transport;
    lg_timer_init(&r->deadline, h2o_on_deadline); /* idle until start_h2o arms it */
    r->max_body = (size_t)arg_number(L, a + A_MAX_BODY, DEFAULT_MAX_BODY);
    r->stream = lua_toboolean(L, a + A_STREAM);
    r->lean = lua_toboolean(L, a + A_LEAN);
    r->shape = lg_json_shape_hold(shape);
    lg_exec_own(e, &r->res); /* from here on, every path frees it with the execution */
    if (e->recording && transport == T_CURL) { /* provider calls are recorded as ai_call by luagent.ai */
        lg_buf_t ev = {0};
        lg_buf_lit(&ev, "{\"method\":");
        lg_buf_json_str(&ev, method, strlen(method));
        lg_buf_lit(&ev, ",\"url\":\"");
        const char *auth = strstr(url, "://") + 3, *end = url + strcspn(url, "?#");
        const char *at = memchr(auth, '@', strcspn(auth, "/?#")); /* user:password@ never reaches the record */
        lg_buf_append(&ev, url, (size_t)(auth - url));
        lg_buf_t rest = {0};
        lg_buf_json_str(&rest, at ? at + 1 : auth, (size_t)(end - (at ? at + 1 : auth)));
        lg_buf_append(&ev, rest.data + 1, rest.len - 1);
        lg_buf_free(&rest);
        r->event = ev.data;
        r->start_ns = lg_now_mono_ns();
    }
    int rc = -1;
    if (transport == T_CURL && lg_rt_curl(e->rt) == NULL) {
        lg_buf_free(&lines);
        req_finish(r);
        return luaL_error(L, "luagent.http.request: libcurl is not available on this machine");
    } else if (transport == T_CURL) {
        for (char *line = lines.data, *nl; line != NULL && (nl = strstr(line, "\r\n")) != NULL; line = nl + 2) {
            *nl = '\0';
            r->hdrs = curl_slist_append(r->hdrs, line);
        }
        rc = start_curl(L, r, url, method, body, blen, timeout_ms);
    } else {
        /* A request whose deadline is the execution's needs no timer of its own: the execution's
         * fires first and releases it (one heap insert and delete less per provider call). */
        rc = start_h2o(L, r, url, method, body, blen, own_deadline ? timeout_ms : 0, &lines);
    }
    lg_buf_free(&lines);
    if (rc != 0) {
        req_finish(r);
        return luaL_error(L, "luagent.http.request: cannot start the request");
    }
    if (r->done) { /* finished synchronously (h2o reports some connect errors at once) */
        if (r->failed)
            push_error(L, r);
        else
            push_response(L, r);
        if (!r->stream || r->failed)
            req_finish(r);
        return 2;
    }
    r->waiting = WAIT_HEAD;
    return lg_sched_yield(L, NULL, NULL);
}

/* read() -> true, chunk | true, nil (end) | false, err   (may yield) */
static int http_read(lua_State *L)
{
    http_handle_t *h = luaL_checkudata(L, lua_upvalueindex(1), HANDLE_MT);
    http_req_t *r = h->req;
    if (r == NULL) {
        lua_pushboolean(L, 1);
        lua_pushnil(L);
        return 2;
    }
    lg_exec_t *e = lg_sched_check(L, "read");
    if (e != r->e)
        return luaL_error(L, "this response belongs to another execution");
    if (r->body.len > 0) {
        lua_pushboolean(L, 1);
        lua_pushlstring(L, r->body.data, r->body.len);
        lg_buf_reset(&r->body);
        resume_transfer(r);
        return 2;
    }
    if (r->done) {
        if (r->failed) {
            push_error(L, r);
        } else {
            lua_pushboolean(L, 1);
            lua_pushnil(L);
        }
        req_finish(r);
        return 2;
    }
    r->waiting = WAIT_BODY;
    return lg_sched_yield(L, NULL, NULL);
}

static int handle_gc(lua_State *L)
{
    http_handle_t *h = luaL_checkudata(L, 1, HANDLE_MT);
    if (h->req != NULL)
        req_finish(h->req);
    return 0;
}

/* The public functions raise instead of returning (false, err): a Lua wrapper, because a yielding
 * C function cannot run code after it resumes. */
static const char wrapper[] =
    "local raw = ...\n"
    "local function check(ok, v, lvl) if not ok then error(v, lvl) end return v end\n"
    "return function(...)\n"
    "  local ok, res = raw(...)\n"
    "  check(ok, res, 3)\n"
    "  if res.read then\n"
    "    local read = res.read\n"
    "    res.read = function() local ok, chunk = read() return check(ok, chunk, 3) end\n"
    "  end\n"
    "  return res\n"
    "end\n";

static void push_request_function(lua_State *L, transport_t transport)
{
    if (luaL_newmetatable(L, HANDLE_MT)) {
        lua_pushcfunction(L, handle_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "http.response");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    if (luaL_loadbuffer(L, wrapper, sizeof(wrapper) - 1, "=luagent.http") != 0)
        lua_error(L);
    lua_pushinteger(L, transport);
    lua_pushcclosure(L, http_raw_request, 1);
    lua_call(L, 1, 1);
}

void lg_bind_open_http(lua_State *L)
{
    /* the pure helpers (header, retry_after_ms, retryable_status) are Lua: lua/luagent/httputil.lua */
    if (luaL_loadbuffer(L, LG_TEXT_httputil, sizeof(LG_TEXT_httputil) - 1, "=luagent/httputil.lua") != 0)
        lua_error(L);
    lua_call(L, 0, 1);
    push_request_function(L, T_CURL);
    lua_setfield(L, -2, "request");
}

void lg_bind_push_upstream_request(lua_State *L) { push_request_function(L, T_H2O); }

/* luagent.http: HTTP requests through the worker's libcurl multi (src/loop/curlm.c).
 *
 *   res = luagent.http.request{method=, url=, headers=, body=, timeout_ms=, max_body_bytes=, stream=}
 *   -> {status, headers = {lowercase name = value}, body}
 *   with stream = true, request returns once the headers are in, and res.read() yields the next
 *   chunk of the body (nil at the end).
 * Failures raise {status = 502, code = "upstream_error"} or {status = 504, code = "upstream_timeout"}
 * (the agent may pcall). Each request is owned by its execution: when the execution ends for any
 * reason (client gone, deadline, error) the transfer is cancelled and its memory freed. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "luagent/bind.h"
#include "luagent/curlm.h"
#include "luagent/json.h"
#include "luagent/sched.h"

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_MAX_BODY (16u << 20)
#define STREAM_HIGH_WATER (256u << 10) /* pause the transfer when this much is buffered unread */
#define HANDLE_MT "luagent.http.stream"

enum { WAIT_NONE, WAIT_HEAD, WAIT_BODY };

typedef struct http_req http_req_t;

typedef struct http_handle {
    http_req_t *req; /* NULL once the request is released */
} http_handle_t;

struct http_req {
    lg_resource_t res; /* first member: the execution owns the request through it */
    lg_exec_t *e;
    lg_curlm_t *m;
    CURL *easy;
    struct curl_slist *hdrs;
    lg_buf_t body, hdr;
    size_t max_body;
    long status;
    int stream, headers_done, done, paused, too_large, waiting;
    CURLcode rc;
    http_handle_t *handle;
    char errbuf[CURL_ERROR_SIZE];
};

static void req_free(http_req_t *r)
{
    if (r->handle != NULL)
        r->handle->req = NULL;
    lg_curlm_release(r->m, r->easy); /* cancels the transfer if it is still running */
    curl_slist_free_all(r->hdrs);
    lg_buf_free(&r->body);
    lg_buf_free(&r->hdr);
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
    int timeout = r->rc == CURLE_OPERATION_TIMEDOUT;
    lua_pushboolean(co, 0);
    lua_createtable(co, 0, 3);
    lua_pushinteger(co, timeout ? 504 : 502);
    lua_setfield(co, -2, "status");
    lua_pushstring(co, timeout ? "upstream_timeout" : "upstream_error");
    lua_setfield(co, -2, "code");
    if (r->too_large)
        lua_pushfstring(co, "http: the response body is larger than %d bytes", (int)r->max_body);
    else
        lua_pushfstring(co, "http: %s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->rc));
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
    lua_newtable(co);
    for (const char *p = r->hdr.data, *end = r->hdr.data + r->hdr.len; p != NULL && p < end;) {
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
    } else {
        lua_pushlstring(co, r->body.data ? r->body.data : "", r->body.len);
        lua_setfield(co, -2, "body");
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
        if (r->paused) {
            r->paused = 0;
            curl_easy_pause(r->easy, CURLPAUSE_CONT);
        }
        wake(r, 2);
    } else if (r->done) {
        if (r->rc != CURLE_OK) {
            push_error(co, r);
        } else {
            lua_pushboolean(co, 1);
            lua_pushnil(co);
        }
        wake(r, 2);
        req_finish(r);
    }
}

/* ---- curl callbacks ---- */

static size_t on_header(char *p, size_t size, size_t n, void *data)
{
    http_req_t *r = data;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) { /* a new block (after 100 Continue, say) */
        lg_buf_reset(&r->hdr);
        return len;
    }
    if (len <= 2 && (len == 0 || p[0] == '\r' || p[0] == '\n')) {
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
        if (r->status >= 200) {
            r->headers_done = 1;
            if (r->stream && r->waiting == WAIT_HEAD) {
                push_response(r->e->co, r);
                wake(r, 2);
            }
        }
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (colon == NULL)
        return len;
    size_t nlen = (size_t)(colon - p);
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    char *dst = lg_buf_reserve(&r->hdr, nlen + (size_t)(end - v) + 2);
    for (size_t i = 0; i < nlen; i++)
        dst[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
    dst[nlen] = '\0';
    memcpy(dst + nlen + 1, v, (size_t)(end - v));
    dst[nlen + 1 + (end - v)] = '\0';
    r->hdr.len += nlen + (size_t)(end - v) + 2;
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *data)
{
    http_req_t *r = data;
    size_t len = size * n;
    if (r->stream) {
        if (r->body.len >= STREAM_HIGH_WATER && r->waiting != WAIT_BODY) {
            r->paused = 1;
            return CURL_WRITEFUNC_PAUSE;
        }
    } else if (r->body.len + len > r->max_body) {
        r->too_large = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    lg_buf_append(&r->body, p, len);
    if (r->waiting == WAIT_BODY)
        deliver_chunk(r);
    return len;
}

static void on_done(CURL *easy, CURLcode rc, void *data)
{
    http_req_t *r = data;
    r->done = 1;
    r->rc = rc;
    if (r->waiting == WAIT_HEAD) {
        lua_State *co = r->e->co;
        if (rc == CURLE_OK)
            push_response(co, r);
        else
            push_error(co, r);
        wake(r, 2);
        if (!r->stream || rc != CURLE_OK)
            req_finish(r);
    } else if (r->waiting == WAIT_BODY) {
        deliver_chunk(r);
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

static lua_Number opt_number(lua_State *L, const char *field, lua_Number def)
{
    lua_getfield(L, 1, field);
    lua_Number v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : def;
    lua_pop(L, 1);
    return v;
}

/* raw_request(opts) -> true, res | false, err   (yields) */
static int http_raw_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lg_exec_t *e = lg_sched_check(L, "luagent.http.request");
    lua_getfield(L, 1, "url");
    const char *url = lua_tostring(L, -1);
    if (url == NULL || (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0))
        return luaL_error(L, "luagent.http.request: url must be an http:// or https:// URL");
    lua_getfield(L, 1, "method");
    const char *method = luaL_optstring(L, -1, NULL);
    lua_getfield(L, 1, "body");
    size_t blen = 0;
    const char *body = NULL;
    lg_buf_t json = {0};
    int body_is_json = 0;
    if (lua_istable(L, -1)) {
        lg_json_error_t jerr;
        if (lg_json_encode(L, -1, &json, LG_JSON_DEFAULT_MAX_DEPTH, &jerr) != LG_JSON_OK) {
            lg_buf_free(&json);
            return luaL_error(L, "luagent.http.request: body: %s", jerr.msg);
        }
        body = json.data, blen = json.len, body_is_json = 1;
    } else if (!lua_isnil(L, -1)) {
        body = luaL_checklstring(L, -1, &blen);
    }
    if (method == NULL)
        method = body != NULL ? "POST" : "GET";
    for (const char *c = method; *c; c++)
        if (!(*c >= 'A' && *c <= 'Z')) {
            lg_buf_free(&json);
            return luaL_error(L, "luagent.http.request: bad method '%s'", method);
        }

    http_req_t *r = calloc(1, sizeof(*r));
    r->res.release = req_release;
    r->e = e;
    r->m = e->rt->curl;
    r->easy = lg_curlm_easy(r->m);
    r->max_body = (size_t)opt_number(L, "max_body_bytes", DEFAULT_MAX_BODY);
    lua_getfield(L, 1, "stream");
    r->stream = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lg_exec_own(e, &r->res); /* from here on, any error path frees it with the execution */

    /* headers */
    int has_ct = 0;
    lua_getfield(L, 1, "headers");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            const char *value = lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL;
            if (name == NULL || value == NULL || !valid_header_name(name) || strpbrk(value, "\r\n") != NULL) {
                lg_buf_free(&json);
                return luaL_error(L, "luagent.http.request: bad header %s", name ? name : "(not a string)");
            }
            has_ct |= strcasecmp(name, "content-type") == 0;
            lua_pushfstring(L, "%s: %s", name, value);
            r->hdrs = curl_slist_append(r->hdrs, lua_tostring(L, -1));
            lua_pop(L, 2);
        }
    }
    if (body_is_json && !has_ct)
        r->hdrs = curl_slist_append(r->hdrs, "Content-Type: application/json");
    r->hdrs = curl_slist_append(r->hdrs, "Expect:");

    /* the deadline: the request's own, never past the execution's */
    uint64_t now = lg_now_mono_ms();
    lua_Number timeout = opt_number(L, "timeout_ms", DEFAULT_TIMEOUT_MS);
    uint64_t left = e->budget.deadline_ms > now ? e->budget.deadline_ms - now : 1;
    long timeout_ms = timeout > 0 && timeout < (lua_Number)left ? (long)timeout : (long)left;

    CURL *c = r->easy;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 10000 ? timeout_ms : 10000L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)blen);
        curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, body);
    }
    lg_buf_free(&json);
    if (lg_curlm_add(r->m, c, on_done, r) != 0) {
        req_finish(r);
        return luaL_error(L, "luagent.http.request: cannot start the transfer");
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
        if (r->paused) {
            r->paused = 0;
            curl_easy_pause(r->easy, CURLPAUSE_CONT);
        }
        return 2;
    }
    if (r->done) {
        if (r->rc != CURLE_OK) {
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
    "return function(opts)\n"
    "  local ok, res = raw(opts)\n"
    "  check(ok, res, 3)\n"
    "  if res.read then\n"
    "    local read = res.read\n"
    "    res.read = function() local ok, chunk = read() return check(ok, chunk, 3) end\n"
    "  end\n"
    "  return res\n"
    "end\n";

void lg_bind_open_http(lua_State *L)
{
    luaL_newmetatable(L, HANDLE_MT);
    lua_pushcfunction(L, handle_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "http.response");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    lua_newtable(L);
    if (luaL_loadbuffer(L, wrapper, sizeof(wrapper) - 1, "=luagent.http") != 0)
        lua_error(L);
    lua_pushcfunction(L, http_raw_request);
    lua_call(L, 1, 1);
    lua_setfield(L, -2, "request");
}

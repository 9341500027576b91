/* Route handlers: health, readiness and info, agent listing, and executions: sync (JSON or SSE), async
 * (the job queue, jobs.c) and Idempotency-Key; the history routes are in history.c. */
#include <lauxlib.h>
#include <luajit.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "luagent/agents.h"
#include "luagent/auth.h"
#include "luagent/envelope.h"
#include "luagent/execlink.h"
#include "luagent/ids.h"
#include "luagent/jobs.h"
#include "luagent/jwt.h"
#include "luagent/json.h"
#include "luagent/kv.h"
#include "luagent/log.h"
#include "luagent/openapi.h"
#include "luagent/metrics.h"
#include "luagent/pg.h"
#include "luagent/redis.h"
#include "luagent/registry.h"
#include "luagent/router.h"
#include "luagent/sched.h"
#include "luagent/server.h"
#include "luagent/store.h"
#include "luagent/worker.h"

/* ---- the client watch ----
 * h2o 2.2 stops reading an HTTP/1 connection while its request is handled, so it would learn that
 * the client went away only when a write fails. The link reads the connection meanwhile
 * (lg_link_attach): at EOF or a reset the execution is cancelled (its upstream calls with it) and a
 * 499 is written, which makes h2o close the connection; anything the client sends instead (a
 * pipelined request) stops our reading and waits in the socket's buffer, where h2o finds it. When
 * h2o has sent the answer it reads the connection again with its own callback. As the socket never
 * stops being read, the loop does not take it out of epoll and put it back for every request.
 * A watched link is found by its socket's descriptor, in the worker's table. */

static void on_client_read(h2o_socket_t *sock, const char *err)
{
    if (err == NULL) {
        /* a pipelined request: it waits in sock->input, unread by us any further, for h2o. (No new
         * bytes: a partial TLS record, or an alert such as the close_notify before the FIN.) */
        if (sock->bytes_read != 0)
            h2o_socket_read_stop(sock);
        return;
    }
    h2o_socket_read_stop(sock);
    /* sock->data is the connection (checked in lg_link_attach) */
    lg_worker_t *w = (lg_worker_t *)((char *)((h2o_conn_t *)sock->data)->ctx - offsetof(lg_worker_t, ctx));
    int fd = h2o_socket_get_fd(sock);
    lg_link_t *l = fd >= 0 && (size_t)fd < w->nlinks_by_fd ? w->links_by_fd[fd] : NULL;
    if (l != NULL && l->exec != NULL && l->req != NULL) {
        l->client_gone = 1;
        lg_exec_cancel(l->exec);
    }
}

/* Read the request's connection for a vanished client when h2o does not (an HTTP/1 connection,
 * whose socket's data is the connection itself, not being read). */
static void link_watch(lg_link_t *l)
{
    lg_worker_t *w = l->worker;
    h2o_req_t *req = l->req;
    l->watch_fd = -1;
    h2o_socket_t *sock = req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    if (sock == NULL || sock->data != (void *)req->conn || h2o_socket_is_reading(sock))
        return;
    int fd = h2o_socket_get_fd(sock);
    if (fd < 0)
        return;
    if ((size_t)fd >= w->nlinks_by_fd) {
        size_t n = (size_t)fd + 1 > 2 * w->nlinks_by_fd ? (size_t)fd + 1 : 2 * w->nlinks_by_fd;
        lg_link_t **t = realloc(w->links_by_fd, n * sizeof(*t));
        if (t == NULL)
            return;
        memset(t + w->nlinks_by_fd, 0, (n - w->nlinks_by_fd) * sizeof(*t));
        w->links_by_fd = t;
        w->nlinks_by_fd = n;
    }
    w->links_by_fd[fd] = l;
    l->watch_fd = fd;
    h2o_socket_read_start(sock, on_client_read);
}

static void link_unwatch(lg_link_t *l)
{
    lg_worker_t *w = l->worker;
    if (l->watch_fd >= 0 && w->links_by_fd[l->watch_fd] == l)
        w->links_by_fd[l->watch_fd] = NULL;
    l->watch_fd = -1;
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

void lg_sse_start(lg_link_t *l)
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

void lg_sse_send(lg_link_t *l, int final)
{
    if (final)
        l->final_queued = 1;
    sse_flush(l);
}

static void link_dispose(void *p)
{
    lg_link_t *l = p;
    link_abandon(l);
    link_unwatch(l);
    lg_buf_free(&l->pending);
    lg_buf_free(&l->inflight);
    free(l->idem_key);
}

lg_link_t *lg_link_attach(h2o_req_t *req, lg_exec_t *e, uint64_t start_ns, const char *request_id)
{
    lg_link_t *l = h2o_mem_alloc_shared(&req->pool, sizeof(*l), link_dispose);
    memset(l, 0, sizeof(*l));
    l->req = req;
    l->exec = e;
    l->worker = lg_worker_of(req);
    link_watch(l);
    l->start_ns = start_ns;
    memcpy(l->request_id, request_id, strnlen(request_id, sizeof(l->request_id) - 1) + 1);
    e->owner = l;
    return l;
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

static void idem_store(lg_link_t *l, const char *id, int status, const lg_buf_t *b);

h2o_req_t *lg_link_end(lg_exec_t *e, lg_buf_t *b, int *status, int *is_err, size_t *roff, size_t *rlen)
{
    lg_link_t *l = e->owner;
    h2o_req_t *req = l->req;
    l->exec = NULL;
    link_unwatch(l);
    lg_buf_reset(b);
    *roff = *rlen = 0;
    *status = lg_outcome_json(e, l->client_gone || req == NULL, b, l->request_id, is_err, roff, rlen);
    lg_outcome_record(e, b, *is_err, *roff, *rlen);
    if (l->idem_key != NULL)
        idem_store(l, e->id, req == NULL ? 499 : *status, b);
    if (req == NULL)
        lg_log(LG_LOG_INFO, "execution %s of %s ended after its client went away", e->id, e->agent);
    return req;
}

static void on_done(lg_exec_t *e)
{
    lg_link_t *l = e->owner;
    lg_buf_t *b = &l->worker->scratch;
    int status, is_err;
    size_t roff, rlen;
    h2o_req_t *req = lg_link_end(e, b, &status, &is_err, &roff, &rlen);
    if (req == NULL)
        return;
    if (e->cache != LG_CACHE_NONE && !l->streaming)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-cache"), 0, NULL,
                              e->cache == LG_CACHE_HIT ? "hit" : "miss", e->cache == LG_CACHE_HIT ? 3 : 4);
    if (l->streaming) {
        sse_event(l, is_err ? "error" : "result", b->data, b->len);
        lg_sse_send(l, 1);
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

/* ---- async submission and Idempotency-Key ---- */

#define IDEM_KEY_MAX (LG_AGENT_NAME_MAX + 300)
#define IDEM_TTL_MS (24ull * 3600 * 1000)

/* A parsed execute request on its way to running: what the rest of the path needs, copied into the
 * request's pool when it must wait for Redis (the Idempotency-Key claim). */
typedef struct start {
    h2o_req_t *req;       /* the request (its pool owns a copy of this while waiting) */
    lg_exec_t *e;         /* decoded [task, context] on e->co; not launched yet */
    lg_redis_req_t *q;    /* the claim in flight */
    uint64_t start_ns;
    lg_envelope_opts_t opts;
    size_t namelen;
    int idem_len, idem_redis;
    char name[LG_AGENT_NAME_MAX + 1];
    char request_id[72];
    char idem[IDEM_KEY_MAX];
    char hash[17];        /* of the request body */
} start_t;

/* The store key for the request's Idempotency-Key ("luagent:i:<agent>:<key>"): its length, 0 when
 * the header is absent, -1 when it is malformed. */
static int idem_key(h2o_req_t *req, const char *agent, size_t alen, char *out)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("idempotency-key"), -1);
    if (i < 0)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    if (v.len < 1 || v.len > 255)
        return -1;
    for (size_t k = 0; k < v.len; k++)
        if (v.base[k] < 0x21 || v.base[k] > 0x7e)
            return -1;
    return snprintf(out, IDEM_KEY_MAX, "luagent:i:%.*s:%.*s", (int)alen, agent, (int)v.len, v.base);
}

static void reply_accepted(h2o_req_t *req, const char *request_id, const char *id, const char *agent, size_t alen,
                           const char *status)
{
    lg_buf_t *b = &lg_worker_of(req)->scratch;
    lg_buf_reset(b);
    lg_buf_lit(b, "{\"execution_id\":\"");
    lg_buf_append(b, id, LG_UUID_LEN);
    lg_buf_lit(b, "\",\"agent\":");
    lg_buf_json_str(b, agent, alen);
    lg_buf_printf(b, ",\"status\":\"%s\",\"status_url\":\"/api/v1/executions/%.36s\"}", status, id);
    char loc[64];
    int n = snprintf(loc, sizeof(loc), "/api/v1/executions/%.36s", id);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION, NULL, h2o_strdup(&req->pool, loc, (size_t)n).base,
                   (size_t)n);
    lg_reply_json(req, 202, request_id, b->data, b->len);
}

/* The key was claimed first by another request; `old` is its value "<id>\n<body hash>" and, once
 * that request finished, "\n<status>\n<reply>". Answer: its reply (Idempotent-Replayed: true), 202
 * with its id when it is async, 409 while it runs or when the body differs. Returns the status. */
static int idem_answer(start_t *s, const char *old, size_t len)
{
    h2o_req_t *req = s->req;
    if (len < LG_UUID_LEN + 17 || memcmp(old + LG_UUID_LEN + 1, s->hash, 16) != 0) {
        lg_reply_error(req, 409, "conflict", "this Idempotency-Key was used with a different request body", s->request_id);
        return 409;
    }
    if (len > LG_UUID_LEN + 18) { /* finished: replay its reply */
        const char *st = old + LG_UUID_LEN + 18, *end = old + len, *nl = memchr(st, '\n', (size_t)(end - st));
        int status = atoi(st);
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("idempotent-replayed"), 0, NULL, H2O_STRLIT("true"));
        lg_reply_json(req, status, s->request_id, nl ? nl + 1 : "", nl ? (size_t)(end - nl - 1) : 0);
        return status;
    }
    if (s->opts.async) {
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("idempotent-replayed"), 0, NULL, H2O_STRLIT("true"));
        reply_accepted(req, s->request_id, old, s->name, s->namelen, "queued");
        return 202;
    }
    lg_reply_error(req, 409, "conflict", "a request with this Idempotency-Key is still running", s->request_id);
    return 409;
}

/* Set (val) or drop (val NULL) the key's value, in Redis when it was claimed there. */
static void idem_put(lg_rt_t *rt, int in_redis, const char *key, size_t klen, const char *val, size_t vlen)
{
    lg_redis_t *r = in_redis ? lg_rt_redis(rt) : NULL;
    if (r != NULL && val != NULL) {
        const char *argv[] = {"SET", key, val, "PX", "86400000"};
        size_t lens[] = {3, klen, vlen, 2, 8};
        lg_redis_command(r, 5, argv, lens, NULL, NULL);
    } else if (r != NULL) {
        const char *argv[] = {"DEL", key};
        size_t lens[] = {3, klen};
        lg_redis_command(r, 2, argv, lens, NULL, NULL);
    } else if (val != NULL) {
        lg_kv_set(key, klen, val, vlen, IDEM_TTL_MS);
    } else {
        lg_kv_del(key, klen);
    }
}

/* A finished sync request with an Idempotency-Key: keep its reply for retries (not when it never
 * really ran: client gone, shutdown). */
static void idem_store(lg_link_t *l, const char *id, int status, const lg_buf_t *b)
{
    size_t klen = strlen(l->idem_key);
    lg_rt_t *rt = &l->worker->rt;
    if (status == 499 || status == 503) {
        idem_put(rt, l->idem_redis, l->idem_key, klen, NULL, 0);
        return;
    }
    lg_buf_t v = {0};
    lg_buf_printf(&v, "%s\n%s\n%d\n", id, l->idem_hash, status);
    lg_buf_append(&v, b->data, b->len);
    idem_put(rt, l->idem_redis, l->idem_key, klen, v.data, v.len);
    lg_buf_free(&v);
}

/* options.mode = "async": record the execution queued, hand the job to the queue, answer 202.
 * e->co holds [task, context]. */
static void submit_async(h2o_req_t *req, lg_exec_t *e, const char *name, size_t namelen, const char *callback_url)
{
    lg_worker_t *w = lg_worker_of(req);
    if (e->id[0] == '\0')
        lg_uuid7(e->id);
    e->async = 1;
    e->created_ms = lg_now_epoch_ms();
    snprintf(e->agent, sizeof(e->agent), "%.*s", (int)namelen, name);
    lg_record_begin(e, 1);
    if (e->recording)
        lg_record_commit(&w->rt, lg_record_build(e, LG_REC_QUEUED, NULL, 0, NULL, 0));
    lg_buf_t job = {0};
    lg_buf_lit(&job, "{\"id\":\"");
    lg_buf_append(&job, e->id, LG_UUID_LEN);
    lg_buf_lit(&job, "\",\"agent\":");
    lg_buf_json_str(&job, name, namelen);
    lg_buf_lit(&job, ",\"request_id\":");
    lg_buf_json_str(&job, e->request_id, strlen(e->request_id));
    if (e->trace[0] != '\0') {
        lg_buf_lit(&job, ",\"traceparent\":");
        lg_buf_json_str(&job, e->trace, strlen(e->trace));
    }
    lg_buf_printf(&job, ",\"created_ms\":%llu,\"user_role\":%d,\"user_id\":", (unsigned long long)e->created_ms,
                  e->user_role);
    lg_buf_json_str(&job, e->user_id, strlen(e->user_id));
    lg_buf_lit(&job, ",\"agents_allow\":");
    lg_buf_json_str(&job, e->agents_allow, strlen(e->agents_allow));
    lg_buf_lit(&job, ",\"callback_url\":");
    if (callback_url[0] != '\0')
        lg_buf_json_str(&job, callback_url, strlen(callback_url));
    else
        lg_buf_lit(&job, "null");
    lg_buf_putc(&job, ',');
    lg_buf_append(&job, e->rec.data, e->rec.len);
    lg_buf_putc(&job, '}');
    lg_jobs_submit(w, job.data, job.len);
    lg_buf_free(&job);
    reply_accepted(req, e->request_id, e->id, name, namelen, "queued");
}

/* The request may run (its Idempotency-Key, if any, is claimed): submit it (async) or launch it.
 * Takes s->e. Returns 0 when the execution will answer, else the status answered. */
static int execute_claimed(start_t *s)
{
    h2o_req_t *req = s->req;
    lg_worker_t *w = lg_worker_of(req);
    lg_exec_t *e = s->e;
    s->e = NULL;
    lg_launch_status_t ls = LG_LAUNCH_OK;
    lg_schema_report_t invalid = {0};
    if (s->opts.async) { /* the task is checked now, so a bad one is a 422 rather than a failed job */
        if (!lg_agents_push(&w->rt, e->co, s->name, s->namelen))
            ls = LG_LAUNCH_NO_AGENT;
        else if (lg_agent_check_input(e->co, lua_gettop(e->co), 1, &invalid) != 0)
            ls = LG_LAUNCH_INVALID;
        lua_settop(e->co, 2);
        if (ls == LG_LAUNCH_OK)
            submit_async(req, e, s->name, s->namelen, s->opts.callback_url);
    } else {
        e->stream = wants_sse(req);
        ls = lg_exec_launch(e, s->name, s->namelen, 0, &invalid);
    }
    if (s->opts.async || ls != LG_LAUNCH_OK) {
        lua_settop(e->co, 0);
        lg_exec_discard(e);
        if (ls == LG_LAUNCH_OK)
            return 202;
        if (s->idem_len > 0) /* nothing ran: a retry may try again */
            idem_put(&w->rt, s->idem_redis, s->idem, (size_t)s->idem_len, NULL, 0);
        if (ls == LG_LAUNCH_INVALID) { /* refused before it ran: not recorded, like a 404 */
            lg_reply_invalid(req, s->name, s->namelen, &invalid, s->request_id);
            lg_buf_free(&invalid.details);
            return 422;
        }
        char msg[LG_AGENT_NAME_MAX + 32];
        snprintf(msg, sizeof(msg), "no agent named '%.*s'", (int)s->namelen, s->name);
        lg_reply_error(req, 404, "not_found", msg, s->request_id);
        return 404;
    }
    lg_link_t *l = lg_link_attach(req, e, s->start_ns, s->request_id);
    if (s->idem_len > 0) {
        l->idem_key = strndup(s->idem, (size_t)s->idem_len);
        l->idem_redis = s->idem_redis;
        memcpy(l->idem_hash, s->hash, sizeof(l->idem_hash));
    }
    if (e->stream)
        lg_sse_start(l);
    lg_exec_run(e);
    return 0; /* logged when it ends */
}

/* ---- the claim in Redis (SET NX GET: one round trip) while the request waits ---- */

static void start_dispose(void *p)
{
    start_t *s = p;
    if (s->q != NULL)
        lg_redis_cancel(s->q);
    if (s->e != NULL) { /* the request went away before it ran */
        lua_settop(s->e->co, 0);
        lg_exec_discard(s->e);
    }
}

static void on_claim(void *data, redisReply *reply, const char *err)
{
    start_t *s = data;
    s->q = NULL;
    int status;
    if (reply != NULL && reply->type == REDIS_REPLY_STRING) {
        status = idem_answer(s, reply->str, reply->len);
    } else if (reply != NULL && reply->type == REDIS_REPLY_NIL) {
        if ((status = execute_claimed(s)) == 0)
            return;
    } else { /* Redis went away meanwhile: the local store decides */
        lg_buf_t old = {0};
        char val[LG_UUID_LEN + 18];
        int vlen = snprintf(val, sizeof(val), "%s\n%s", s->e->id, s->hash);
        s->idem_redis = 0;
        if (lg_kv_add(s->idem, (size_t)s->idem_len, val, (size_t)vlen, IDEM_TTL_MS, &old))
            status = execute_claimed(s);
        else
            status = idem_answer(s, old.data, old.len);
        lg_buf_free(&old);
        if (status == 0)
            return;
    }
    if (s->e != NULL) {
        lua_settop(s->e->co, 0);
        lg_exec_discard(s->e);
        s->e = NULL;
    }
    lg_access_log(s->req, status, s->request_id, s->start_ns, NULL, NULL, NULL);
}

/* Claim the Idempotency-Key (e->id gets the execution id it will run under). Returns 0 when the
 * request may run now, -1 when the answer comes later (Redis; then s->e has moved to the request's
 * pool), else the status answered. */
static int idem_claim(start_t *s)
{
    lg_uuid7(s->e->id);
    char val[LG_UUID_LEN + 18];
    int vlen = snprintf(val, sizeof(val), "%s\n%s", s->e->id, s->hash);
    lg_redis_t *r = lg_rt_redis(&lg_worker_of(s->req)->rt);
    if (r != NULL && lg_redis_up(r)) {
        start_t *p = h2o_mem_alloc_shared(&s->req->pool, sizeof(*p), start_dispose);
        *p = *s;
        p->idem_redis = 1;
        const char *argv[] = {"SET", p->idem, val, "NX", "GET", "PX", "86400000"};
        size_t lens[] = {3, (size_t)p->idem_len, (size_t)vlen, 2, 3, 2, 8};
        if ((p->q = lg_redis_command(r, 7, argv, lens, on_claim, p)) != NULL) {
            s->e = NULL; /* p owns it now */
            return -1;
        }
        p->e = NULL;
    }
    lg_buf_t old = {0};
    int status = 0;
    if (!lg_kv_add(s->idem, (size_t)s->idem_len, val, (size_t)vlen, IDEM_TTL_MS, &old))
        status = idem_answer(s, old.data, old.len);
    lg_buf_free(&old);
    return status;
}

int lg_execute_precheck(h2o_req_t *req, const char *request_id)
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
    return 0;
}

static int on_execute(h2o_req_t *req, const lg_route_t *route, const char *request_id, uint64_t start_ns,
                      const lg_principal_t *who)
{
    lg_worker_t *w = lg_worker_of(req);
    int status;
    if ((status = lg_execute_precheck(req, request_id)) != 0)
        return status;
    start_t s = {.req = req, .start_ns = start_ns};
    s.e = lg_exec_new(&w->rt, &http_exec_ops, NULL);
    char msg[256];
    const char *code;
    lg_json_span_t spans[2];
    const char *err = lg_envelope_parse(s.e->co, req->entity.base, req->entity.len, route->id == LG_ROUTE_EXECUTE,
                                        s.name, &s.namelen, &s.opts, spans, &status, &code, msg, sizeof(msg));
    if (err == NULL && route->id == LG_ROUTE_AGENT_EXECUTE) {
        memcpy(s.name, route->name, route->name_len);
        s.namelen = route->name_len;
    }
    if (err == NULL && !lg_agent_name_valid(s.name, s.namelen)) {
        snprintf(msg, sizeof(msg), "no agent named '%.*s'", (int)s.namelen, s.name);
        status = 404, code = "not_found", err = msg;
    }
    if (err == NULL && !lg_principal_may_run(who, s.name, s.namelen)) {
        snprintf(msg, sizeof(msg), "this credential may not run the agent '%.*s'", (int)s.namelen, s.name);
        status = 403, code = "forbidden", err = msg;
    }
    memcpy(s.request_id, request_id, strlen(request_id) + 1);
    memcpy(s.e->request_id, request_id, strlen(request_id) + 1);
    const char *tp = lg_trace_of(req);
    if (tp != NULL)
        memcpy(s.e->trace, tp, sizeof(s.e->trace));
    if (who->role != LG_ROLE_NONE) {
        s.e->user_role = (int)who->role;
        memcpy(s.e->user_id, who->id, sizeof(s.e->user_id));
        memcpy(s.e->agents_allow, who->agents, sizeof(s.e->agents_allow)); /* children are held to it */
    }
    if (err == NULL && s.e->recording)
        lg_record_begin_text(s.e, req->entity.base, spans);
    if (err == NULL && (s.idem_len = idem_key(req, s.name, s.namelen, s.idem)) < 0)
        status = 400, code = "invalid_request", err = "Idempotency-Key must be 1 to 255 printable ASCII characters";
    if (err != NULL) {
        lua_settop(s.e->co, 0);
        lg_exec_discard(s.e);
        lg_reply_error(req, status, code, err, request_id);
        return status;
    }
    if (s.idem_len > 0) {
        char hex[65];
        lg_sha256_hex(req->entity.base, req->entity.len, hex);
        memcpy(s.hash, hex, 16);
        if ((status = idem_claim(&s)) != 0) {
            if (s.e != NULL) {
                lua_settop(s.e->co, 0);
                lg_exec_discard(s.e);
            }
            return status < 0 ? 0 : status; /* < 0: on_claim answers and logs */
        }
    }
    return execute_claimed(&s);
}

static void reply_buf(h2o_req_t *req, const char *request_id, lg_buf_t *b) { lg_reply_json(req, 200, request_id, b->data, b->len); }

/* /ready: dependencies as this worker sees them. The server keeps serving while one is away
 * (records wait, the cache misses), so that is "degraded", not a failure. */
static void ready_json(lg_worker_t *w, lg_buf_t *b)
{
    const lg_config_t *cfg = w->server->cfg;
    const char *db = NULL, *redis = NULL;
    if (cfg->database_url != NULL) {
        const char *why;
        lg_pg_t *pg = lg_rt_pg(&w->rt);
        lg_pg_state_t st = pg != NULL ? lg_pg_state(pg, &why) : LG_PG_DOWN;
        if (!atomic_load(&w->server->db_schema_ok))
            db = "migrating";
        else if (st == LG_PG_DOWN || lg_recorder_away(w->rt.recorder))
            db = "away";
        else
            db = "ok";
    }
    if (cfg->redis_url != NULL)
        redis = lg_redis_up(lg_rt_redis(&w->rt)) ? "ok" : "away";
    int degraded = (db != NULL && strcmp(db, "ok") != 0) || (redis != NULL && strcmp(redis, "ok") != 0);
    lg_buf_printf(b, "{\"status\":\"%s\",\"checks\":{\"agents\":\"ok\"", degraded ? "degraded" : "ready");
    if (db != NULL) {
        lg_recorder_stats_t rs = {0};
        if (w->rt.recorder != NULL)
            lg_recorder_stats(w->rt.recorder, &rs);
        lg_buf_printf(b, ",\"database\":\"%s\",\"records_waiting\":%zu", db, rs.queued);
    }
    if (redis != NULL)
        lg_buf_printf(b, ",\"redis\":\"%s\"", redis);
    lg_buf_lit(b, "}}");
}

static void info_agent(void *ud, const lg_agent_entry_t *e)
{
    lg_buf_t *b = ud;
    if (e->version[0] == '\0')
        return; /* never loaded: only an error (GET /api/v1/agents shows it) */
    if (b->data[b->len - 1] != '[')
        lg_buf_putc(b, ',');
    lg_buf_lit(b, "{\"name\":");
    lg_buf_json_str(b, e->name, strlen(e->name));
    lg_buf_printf(b, ",\"version\":\"%s\"}", e->version);
}

/* /info: what runs here (public: nothing secret, only whether a dependency is configured) */
static void info_json(lg_worker_t *w, lg_buf_t *b)
{
    const lg_server_t *S = w->server;
    const lg_config_t *cfg = S->cfg;
    lg_buf_printf(b,
                  "{\"name\":\"luagent\",\"version\":\"%s\",\"build\":{\"date\":\"%s\",\"compiler\":\"%s\","
                  "\"luajit\":\"%s\",\"h2o\":\"%s\"},\"workers\":%d,\"pid\":%d,\"uptime_s\":%.3f,"
                  "\"draining\":%s,\"settings_generation\":%u,",
                  LUAGENT_VERSION, __DATE__, __VERSION__, LUAJIT_VERSION, H2O_VERSION, S->nworkers, (int)getpid(),
                  (double)(lg_now_epoch_ms() - S->started_ms) / 1000.0, atomic_load(&S->stopping) ? "true" : "false",
                  cfg->generation);
    lg_buf_printf(b, "\"features\":{\"auth\":%s,\"jwt\":%s,\"tls\":%s,\"database\":%s,\"redis\":%s,\"watch\":%s},",
                  cfg->auth == LG_AUTH_OFF ? "false" : "true", S->jwt_keys != NULL ? "true" : "false",
                  S->ssl_ctx != NULL ? "true" : "false", cfg->database_url != NULL ? "true" : "false",
                  cfg->redis_url != NULL ? "true" : "false", cfg->watch ? "true" : "false");
    lg_buf_printf(b, "\"agents\":%zu,\"agent_versions\":[", lg_registry_count(LG_SCRIPT_AGENT));
    lg_registry_each(LG_SCRIPT_AGENT, info_agent, b);
    lg_buf_lit(b, "]}");
}

/* ---- authentication and roles ----
 * The route decides the role it needs (README: the route x role matrix); the credential is an API
 * key in `Authorization: Bearer` or `X-API-Key`. Each worker keeps the keys it checked recently in
 * a small direct-mapped cache (compared in constant time), so a request costs no SHA-256 and no
 * lock; an entry lives 10 s and dies at once when the key table changes (a revocation). */

#define AUTH_CACHE 64
#define AUTH_CACHE_MS 10000

typedef struct lg_auth_entry {
    uint64_t h, gen, until_ms;
    char key[LG_KEY_LEN];
    lg_principal_t p;
} lg_auth_entry_t;

static lg_role_t route_role(lg_route_id_t id)
{
    switch (id) {
    case LG_ROUTE_HEALTH:
    case LG_ROUTE_READY:
    case LG_ROUTE_INFO:
    case LG_ROUTE_OPENAPI:
    case LG_ROUTE_DOCS:
    case LG_ROUTE_NOT_FOUND:
        return LG_ROLE_NONE;
    case LG_ROUTE_AGENTS:
    case LG_ROUTE_AGENT:
    case LG_ROUTE_EXECUTIONS:
    case LG_ROUTE_EXECUTION:
    case LG_ROUTE_OAI_MODELS:
    case LG_ROUTE_OAI_MODEL:
    case LG_ROUTE_STATS:
    case LG_ROUTE_METRICS:
        return LG_ROLE_VIEWER;
    case LG_ROUTE_AGENT_EXECUTE:
    case LG_ROUTE_EXECUTE:
    case LG_ROUTE_OAI_CHAT:
        return LG_ROLE_OPERATOR;
    case LG_ROUTE_KEYS:
    case LG_ROUTE_KEY:
        return LG_ROLE_ADMIN;
    }
    return LG_ROLE_ADMIN;
}

lg_role_t lg_route_role(lg_route_id_t id) { return route_role(id); }

static int credential(h2o_req_t *req, const char **s, size_t *n)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (v.len > 7 && h2o_lcstris(v.base, 7, H2O_STRLIT("bearer ")))
            *s = v.base + 7, *n = v.len - 7;
        else
            *s = v.base, *n = 0; /* another scheme: a credential we cannot use */
        return 1;
    }
    if ((i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-api-key"), -1)) >= 0) {
        *s = req->headers.entries[i].value.base;
        *n = req->headers.entries[i].value.len;
        return 1;
    }
    return 0;
}

static int key_valid(lg_worker_t *w, const char *key, size_t n, lg_principal_t *p)
{
    if (n != LG_KEY_LEN)
        return 0;
    uint64_t h = lg_fnv1a(key, n, LG_FNV_OFFSET), gen = lg_keys_generation(), now = lg_now_mono_ms();
    if (w->auth_cache == NULL)
        w->auth_cache = calloc(AUTH_CACHE, sizeof(lg_auth_entry_t));
    lg_auth_entry_t *c = &w->auth_cache[h % AUTH_CACHE];
    if (c->h == h && c->gen == gen && now < c->until_ms && CRYPTO_memcmp(c->key, key, LG_KEY_LEN) == 0) {
        *p = c->p;
        return 1;
    }
    if (!lg_keys_lookup(key, n, p))
        return 0;
    c->h = h, c->gen = gen, c->until_ms = now + AUTH_CACHE_MS, c->p = *p;
    memcpy(c->key, key, LG_KEY_LEN);
    return 1;
}

static void add_int_header(h2o_req_t *req, const char *name, size_t nlen, long v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%ld", v);
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, nlen, 0, NULL, h2o_strdup(&req->pool, num, (size_t)n).base,
                          (size_t)n);
}

/* The limit that applies to a caller: the key's own, else LUAGENT_RATE_LIMIT. 1 when there is one. */
static int rate_of(lg_worker_t *w, const lg_principal_t *p, int *limit, int *window)
{
    const lg_config_t *cfg = w->server->cfg;
    *limit = p->role == LG_ROLE_NONE ? 0 : p->rate_limit > 0 ? p->rate_limit : cfg->rate_limit;
    *window = p->rate_limit > 0 ? p->rate_window_s : cfg->rate_limit_window_s;
    return *limit > 0 && *window > 0;
}

/* RateLimit-* headers on every answer; 429 past the limit. 0, or 429 (answered). */
static int rate_answer(h2o_req_t *req, const lg_rate_t *r, int window, const char *request_id)
{
    add_int_header(req, H2O_STRLIT("ratelimit-limit"), r->limit);
    add_int_header(req, H2O_STRLIT("ratelimit-remaining"), r->remaining);
    add_int_header(req, H2O_STRLIT("ratelimit-reset"), r->allowed ? (long)r->reset_s : (long)r->retry_after_s);
    if (r->allowed)
        return 0;
    add_int_header(req, H2O_STRLIT("retry-after"), r->retry_after_s);
    char m[128];
    snprintf(m, sizeof(m), "rate limit of %d requests per %d s reached: retry in %u s", r->limit, window,
             r->retry_after_s);
    lg_reply_error(req, 429, "rate_limited", m, request_id);
    return 429;
}

static int local_rate(h2o_req_t *req, const lg_principal_t *p, int limit, int window, const char *request_id)
{
    lg_rate_t r;
    lg_rate_check(p->id, limit, window, lg_now_epoch_ms(), &r);
    return rate_answer(req, &r, window, request_id);
}

/* GCRA in Redis, atomic (one script), Redis's own clock: KEYS[1] the key's TAT, ARGV limit and
 * window (ms) -> {allowed, remaining, reset_s, retry_after_s}. The same arithmetic as
 * src/auth/ratelimit.c. */
#define GCRA_LUA                                                                                                      \
    "local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]) "                                                    \
    "local t = window / limit "                                                                                       \
    "local tm = redis.call('TIME') local now = tm[1] * 1000 + tm[2] / 1000 "                                          \
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0') if tat < now then tat = now end "                        \
    "local nxt = tat + t "                                                                                            \
    "if nxt - now <= window + 0.000001 then "                                                                         \
    "  redis.call('SET', KEYS[1], tostring(nxt), 'PX', math.ceil(nxt - now) + 1000) "                                 \
    "  return {1, math.floor((window - (nxt - now)) / t + 1e-9), math.ceil((nxt - now) / 1000), 0} "                  \
    "end "                                                                                                            \
    "local ra = math.ceil((tat + t - window - now) / 1000) if ra < 1 then ra = 1 end "                                \
    "return {0, 0, math.ceil((tat - now) / 1000), ra}"

/* A bearer token that is not an API key, with LUAGENT_JWT_* configured: a JWT. Its `sub` is the
 * caller's id, its `role` claim the role. Verified tokens are cached per worker (jwt.h). */
static int jwt_principal(h2o_req_t *req, lg_worker_t *w, const char *tok, size_t n, lg_role_t need,
                         const char *request_id, lg_principal_t *p)
{
    if (w->jwt_cache == NULL)
        w->jwt_cache = lg_jwt_cache_new(0);
    lg_jwt_claims_t claims;
    char why[96], m[160];
    if (lg_jwt_check(w->jwt_cache, w->server->jwt_keys, tok, n, lg_now_epoch_ms() / 1000, &claims, why,
                     sizeof(why)) != 0) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer error=\"invalid_token\""));
        snprintf(m, sizeof(m), "the bearer token is not valid: %s", why);
        lg_reply_error(req, 401, "unauthenticated", m, request_id);
        return 401;
    }
    p->role = lg_role_parse(claims.role, strlen(claims.role));
    snprintf(p->id, sizeof(p->id), "%.39s", claims.sub[0] ? claims.sub : "jwt");
    snprintf(p->name, sizeof(p->name), "jwt");
    if (p->role < need) {
        snprintf(m, sizeof(m), "this route needs the %s role; the token's role claim is %s", lg_role_name(need),
                 p->role == LG_ROLE_NONE ? "missing or unknown" : lg_role_name(p->role));
        lg_reply_error(req, 403, "forbidden", m, request_id);
        return 403;
    }
    return 0;
}

/* 0 when the request may go on (*p: who it is), else the status answered (401 or 403). */
static int authorize(h2o_req_t *req, lg_worker_t *w, lg_role_t need, const char *request_id, lg_principal_t *p)
{
    memset(p, 0, sizeof(*p));
    if (need == LG_ROLE_NONE || w->server->cfg->auth == LG_AUTH_OFF)
        return 0;
    const char *s;
    size_t n;
    if (credential(req, &s, &n) && w->server->jwt_keys != NULL && n > 0 && !(n >= 3 && memcmp(s, "lg_", 3) == 0))
        return jwt_principal(req, w, s, n, need, request_id, p);
    if (!credential(req, &s, &n) || !key_valid(w, s, n, p)) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Bearer"));
        lg_reply_error(req, 401, "unauthenticated",
                       credential(req, &s, &n) ? "the credential is not a valid API key (unknown, revoked or expired)"
                                               : "this route needs a credential: Authorization: Bearer <API key> or X-API-Key",
                       request_id);
        return 401;
    }
    if (p->role < need) {
        char m[128];
        snprintf(m, sizeof(m), "this route needs the %s role; the credential has %s", lg_role_name(need),
                 lg_role_name(p->role));
        lg_reply_error(req, 403, "forbidden", m, request_id);
        return 403;
    }
    return 0;
}

/* Answer an authorized request. Returns its status, or 0 when the answer comes later (and is
 * logged then). */
static int dispatch(h2o_req_t *req, const lg_route_t *route, const lg_principal_t *who, const char *request_id,
                    uint64_t start_ns)
{
    lg_worker_t *w = lg_worker_of(req);
    lg_buf_t *b = &w->scratch;
    lg_buf_reset(b);
    int status = 200;
    switch (route->id) {
    case LG_ROUTE_HEALTH:
        lg_buf_lit(b, "{\"status\":\"ok\"}");
        reply_buf(req, request_id, b);
        break;
    case LG_ROUTE_READY:
        if (atomic_load(&w->server->stopping)) {
            status = 503;
            lg_reply_error(req, 503, "unavailable", "the server is shutting down", request_id);
        } else {
            ready_json(w, b);
            reply_buf(req, request_id, b);
        }
        break;
    case LG_ROUTE_INFO:
        info_json(w, b);
        reply_buf(req, request_id, b);
        break;
    case LG_ROUTE_AGENTS:
        lg_registry_json_all(LG_SCRIPT_AGENT, b);
        reply_buf(req, request_id, b);
        break;
    case LG_ROUTE_AGENT:
        if (lg_registry_json_one(LG_SCRIPT_AGENT, b, route->name, route->name_len) == 0) {
            reply_buf(req, request_id, b);
        } else {
            status = 404;
            lg_reply_error(req, 404, "not_found", "no such agent", request_id);
        }
        break;
    case LG_ROUTE_EXECUTIONS:
    case LG_ROUTE_EXECUTION:
        status = route->id == LG_ROUTE_EXECUTIONS ? lg_history_list_route(req, request_id, b)
                                                  : lg_history_get_route(req, route, request_id, b);
        status = status < 0 ? 0 : status ? status : 200;
        break;
    case LG_ROUTE_STATS:
        status = lg_stats_route(req, request_id, b);
        status = status < 0 ? 0 : status ? status : 200;
        break;
    case LG_ROUTE_AGENT_EXECUTE:
    case LG_ROUTE_EXECUTE:
        status = on_execute(req, route, request_id, start_ns, who);
        break;
    case LG_ROUTE_KEYS:
    case LG_ROUTE_KEY:
        status = lg_keys_route(req, route, request_id, b);
        status = status < 0 ? 0 : status;
        break;
    case LG_ROUTE_OAI_CHAT:
        status = lg_openai_chat_route(req, request_id, start_ns, who);
        break;
    case LG_ROUTE_OAI_MODELS:
    case LG_ROUTE_OAI_MODEL:
        status = lg_openai_models_route(req, route, who, request_id, b);
        break;
    case LG_ROUTE_OPENAPI:
    case LG_ROUTE_DOCS:
        status = lg_openapi_route(req, route, request_id);
        break;
    case LG_ROUTE_METRICS:
        status = lg_metrics_route(req, request_id, b);
        break;
    default:
        break;
    }
    return status;
}

/* ---- the rate-limit check in Redis, while the request waits ---- */

typedef struct rate_wait {
    h2o_req_t *req;
    lg_redis_req_t *q;
    lg_route_t route;
    lg_principal_t who;
    int limit, window;
    uint64_t start_ns;
    char request_id[72];
} rate_wait_t;

static void rate_wait_dispose(void *p)
{
    rate_wait_t *r = p;
    if (r->q != NULL)
        lg_redis_cancel(r->q);
}

static void on_rate(void *data, redisReply *reply, const char *err)
{
    rate_wait_t *r = data;
    r->q = NULL;
    lg_rate_t rt;
    int status;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 4) {
        rt.limit = r->limit;
        rt.allowed = (int)reply->element[0]->integer;
        rt.remaining = (int)reply->element[1]->integer;
        rt.reset_s = (unsigned)reply->element[2]->integer;
        rt.retry_after_s = (unsigned)reply->element[3]->integer;
    } else { /* Redis went away meanwhile: this process's budget decides */
        lg_rate_check(r->who.id, r->limit, r->window, lg_now_epoch_ms(), &rt);
    }
    if ((status = rate_answer(r->req, &rt, r->window, r->request_id)) == 0 &&
        (status = dispatch(r->req, &r->route, &r->who, r->request_id, r->start_ns)) == 0)
        return;
    lg_access_log(r->req, status, r->request_id, r->start_ns, NULL, NULL, NULL);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    uint64_t start_ns = lg_now_mono_ns();
    lg_worker_t *w = lg_worker_of(req);
    char request_id[72];
    lg_request_id(req, request_id);
    if (w->server->cfg->tracing)
        lg_trace_request(req);
    lg_route_t route;
    lg_route_match(req->method.base, req->method.len, req->path_normalized.base, req->path_normalized.len, &route);
    if (w->rt.metrics != NULL) /* before the static files: their 404 is counted as "unmatched" */
        lg_metrics_route_hint(req, (int)route.id);
    if (route.id == LG_ROUTE_NOT_FOUND && lg_static_claims(req))
        return -1; /* the dashboard's files: the next handlers on "/" (static.c) */
    lg_principal_t who;
    int status, limit, window, limited = 0;
    if (route.id == LG_ROUTE_NOT_FOUND) {
        status = 404;
        lg_reply_error(req, 404, "not_found", route.name ? "no such agent" : "no such route", request_id);
    } else if (!route.method_allowed) {
        status = 405;
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, route.allow, strlen(route.allow));
        char m[96];
        snprintf(m, sizeof(m), "this route accepts %s", route.allow);
        lg_reply_error(req, 405, "method_not_allowed", m, request_id);
    } else if ((status = authorize(req, w, route_role(route.id), request_id, &who)) != 0) {
        /* answered */
    } else if ((limited = rate_of(w, &who, &limit, &window)) && lg_rt_redis(&w->rt) != NULL &&
               lg_redis_up(lg_rt_redis(&w->rt))) {
        /* the budget every replica shares: one atomic script in Redis */
        rate_wait_t *r = h2o_mem_alloc_shared(&req->pool, sizeof(*r), rate_wait_dispose);
        memset(r, 0, sizeof(*r));
        r->req = req, r->route = route, r->who = who, r->limit = limit, r->window = window, r->start_ns = start_ns;
        memcpy(r->request_id, request_id, sizeof(r->request_id));
        char key[80], lim[16], win[16];
        snprintf(key, sizeof(key), "luagent:rl:%s", who.id);
        snprintf(lim, sizeof(lim), "%d", limit);
        snprintf(win, sizeof(win), "%d", window * 1000);
        const char *argv[] = {"EVAL", GCRA_LUA, "1", key, lim, win};
        if ((r->q = lg_redis_command(lg_rt_redis(&w->rt), 6, argv, NULL, on_rate, r)) != NULL)
            return 0;
        status = (status = local_rate(req, &who, limit, window, request_id)) != 0
                     ? status
                     : dispatch(req, &route, &who, request_id, start_ns);
    } else {
        status = limited ? local_rate(req, &who, limit, window, request_id) : 0;
        if (status == 0)
            status = dispatch(req, &route, &who, request_id, start_ns);
    }
    if (status != 0)
        lg_access_log(req, status, request_id, start_ns, NULL, NULL, NULL);
    return 0;
}

h2o_pathconf_t *lg_handlers_register(h2o_hostconf_t *hostconf)
{
    h2o_pathconf_t *pathconf = h2o_config_register_path(hostconf, "/", 0);
    h2o_handler_t *h = h2o_create_handler(pathconf, sizeof(*h));
    h->on_req = on_req;
    return pathconf;
}

/* ---- the health listener (LUAGENT_HEALTH_LISTEN) ----
 * A plain-HTTP port for probes and scrapes from inside the cluster: its routes need no credential
 * (the main port may need TLS and one). Only the routes below exist there. */

static int on_health_req(h2o_handler_t *self, h2o_req_t *req)
{
    uint64_t start_ns = lg_now_mono_ns();
    char request_id[72];
    lg_request_id(req, request_id);
    if (lg_worker_of(req)->server->cfg->tracing)
        lg_trace_request(req);
    lg_route_t route;
    lg_route_match(req->method.base, req->method.len, req->path_normalized.base, req->path_normalized.len, &route);
    if (lg_worker_of(req)->rt.metrics != NULL)
        lg_metrics_route_hint(req, (int)route.id);
    lg_principal_t nobody;
    memset(&nobody, 0, sizeof(nobody));
    int status;
    if (route.id != LG_ROUTE_HEALTH && route.id != LG_ROUTE_READY && route.id != LG_ROUTE_METRICS) {
        status = 404;
        lg_reply_error(req, 404, "not_found", "the health listener serves /health, /ready and /metrics only", request_id);
    } else if (!route.method_allowed) {
        status = 405;
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, route.allow, strlen(route.allow));
        char m[96];
        snprintf(m, sizeof(m), "this route accepts %s", route.allow);
        lg_reply_error(req, 405, "method_not_allowed", m, request_id);
    } else {
        status = dispatch(req, &route, &nobody, request_id, start_ns);
    }
    if (status != 0)
        lg_access_log(req, status, request_id, start_ns, NULL, NULL, NULL);
    return 0;
}

void lg_handlers_register_health(h2o_hostconf_t *hostconf)
{
    h2o_pathconf_t *pathconf = h2o_config_register_path(hostconf, "/", 0);
    h2o_handler_t *h = h2o_create_handler(pathconf, sizeof(*h));
    h->on_req = on_health_req;
}

/* Redis from a worker's event loop (redis.h): one hiredis 0.14 async connection driven by an evloop
 * socket, resolved off the loop, authenticated and SELECTed before it counts as up, re-made with
 * backoff when it is lost.
 *
 * States: WAIT (backoff timer armed, or never usable) -> RESOLVING (h2o's resolver threads) ->
 * CONNECTING (non-blocking connect in flight) -> HANDSHAKE (AUTH / SELECT sent) -> UP. Any failure
 * or loss goes back to WAIT. One timer (`timer`) serves the backoff in WAIT and the connect timeout
 * (resolve + connect + handshake) in the other states; from inside a hiredis callback it is also
 * how the connection is dropped "at once" (hiredis must not be freed re-entrantly from there).
 *
 * hiredis facts this relies on (0.14.1 async.c):
 *   - the adapter's hooks are in ac->ev; setting the connect callback calls addWrite, and the
 *     connect completes on the first write (or read) readiness;
 *   - a failed connect calls onConnect(ac, REDIS_ERR) and then frees ac itself; onDisconnect is
 *     called only for a context that was connected;
 *   - freeing a context (ours or its own on an error) calls every pending reply callback with a
 *     NULL reply, then ev.cleanup, then onDisconnect, then closes the fd: the cleanup hook is where
 *     the evloop socket lets go of the fd;
 *   - redisAsyncFree from inside a reply callback is deferred by hiredis, but from inside
 *     onConnect/onDisconnect it is a double free: we never free from any callback. */
#include "luagent/redis.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/async.h>
#include <netdb.h>
#include <h2o/hostinfo.h>
#include <h2o/multithread.h>

#include "luagent/buf.h"
#include "luagent/ids.h"
#include "luagent/log.h"

#define CONNECT_TIMEOUT_MS 3000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

typedef enum { ST_WAIT, ST_RESOLVING, ST_CONNECTING, ST_HANDSHAKE, ST_UP } state_t;

/* The adapter of one hiredis context (ac->ev.data): its evloop socket. Allocated when the context
 * is attached, freed by hiredis's cleanup hook, after the socket has let go of the fd. */
typedef struct adapter {
    redisAsyncContext *ac;
    h2o_socket_t *sock;
    int want_write;
} adapter_t;

/* The resolver's queue and receiver, apart from lg_redis_t: when a lookup is still running at
 * lg_redis_free it cannot be cancelled (h2o will post its answer to the receiver), so this part is
 * then left allocated rather than freed under the resolver thread. */
typedef struct resolver {
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t receiver;
} resolver_t;

struct lg_redis_req {
    lg_redis_t *r;
    lg_redis_cb cb; /* NULL once cancelled */
    void *data;
    char *cmd;      /* parked during the first attempt: the formatted command, else NULL */
    size_t len;
    lg_redis_req_t *next; /* parked FIFO */
};

struct lg_redis {
    h2o_loop_t *loop;
    lg_timerheap_t *timers;
    char *name;
    /* from the URL */
    char *host;     /* NULL for a unix socket */
    char *path;     /* unix socket path */
    char *user;     /* ACL user, NULL for the default user */
    char *password; /* NULL when none */
    int port, db;
    int usable;     /* 0: the URL cannot be served (logged once); never connects */
    /* connection */
    state_t state;
    redisAsyncContext *ac;
    resolver_t *resolver;
    h2o_hostinfo_getaddr_req_t *getaddr;
    lg_timer_t timer;
    unsigned backoff_ms;
    int handshake_left; /* AUTH / SELECT replies still awaited */
    int auth_pending;   /* the next handshake reply is AUTH's */
    int logged;         /* last transition logged: 1 up, -1 down, 0 none yet */
    int closing;        /* lg_redis_free is running: no callbacks, no reconnect */
    char reason[160];   /* why the connection is being dropped (for the log) */
    int first_attempt;  /* never up yet and no attempt has failed: commands are parked */
    lg_redis_req_t *parked, **parked_tail; /* commands waiting for the first connection, in order */
    void (*on_connect)(void *data);
    void *on_connect_data;
};

static void start_connect(lg_redis_t *r);
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* hiredis's error text for a context (the redisContext's own buffer: ac->errstr is only a copy of
 * its address, made at some points) */
static const char *ctx_error(const redisAsyncContext *ac, const char *dflt)
{
    return ac->c.err && ac->c.errstr[0] ? ac->c.errstr : dflt;
}

/* ---- logging (never the password) ---- */

static void log_transition(lg_redis_t *r, int up, const char *why)
{
    if (r->logged == (up ? 1 : -1))
        return;
    r->logged = up ? 1 : -1;
    lg_log_level_t level = up ? LG_LOG_INFO : LG_LOG_WARN;
    if (!lg_log_enabled(level))
        return;
    lg_buf_t b = {0};
    if (up)
        lg_log_begin(&b, level, LG_STRLIT("redis connection up"));
    else
        lg_log_begin(&b, level, LG_STRLIT("redis connection down"));
    lg_log_kv_cstr(&b, "redis", r->name);
    if (r->host != NULL) {
        lg_log_kv_cstr(&b, "host", r->host);
        lg_log_kv_int(&b, "port", r->port);
    } else {
        lg_log_kv_cstr(&b, "path", r->path);
    }
    lg_log_kv_int(&b, "db", r->db);
    if (why != NULL && why[0]) {
        /* a server's error text could in principle echo what it was sent */
        if (r->password != NULL && r->password[0] && strstr(why, r->password) != NULL)
            why = "the server refused the credentials";
        lg_log_kv_cstr(&b, "reason", why);
    }
    if (!up)
        lg_log_kv_int(&b, "retry_ms", r->closing || !r->usable ? 0 : r->backoff_ms);
    lg_log_end(&b);
    lg_buf_free(&b);
}

/* ---- requests ---- */

static lg_redis_req_t *req_new(lg_redis_t *r, lg_redis_cb cb, void *data)
{
    lg_redis_req_t *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->r = r;
    q->cb = cb;
    q->data = data;
    return q;
}

static void req_free(lg_redis_req_t *q)
{
    redisFreeCommand(q->cmd);
    free(q);
}

/* The first attempt ended: send the parked commands (up) or fail them (err != NULL; callbacks
 * skipped when closing). */
static void parked_flush(lg_redis_t *r, const char *err)
{
    lg_redis_req_t *q = r->parked;
    r->parked = NULL;
    r->parked_tail = &r->parked;
    while (q != NULL) {
        lg_redis_req_t *next = q->next;
        /* sent even without a callback: a fire-and-forget command (XACK, a cache SET) must not be lost */
        if (err == NULL && r->ac != NULL && redisAsyncFormattedCommand(r->ac, on_reply, q, q->cmd, q->len) == REDIS_OK) {
            redisFreeCommand(q->cmd); /* hiredis copied it */
            q->cmd = NULL;
        } else {
            lg_redis_cb cb = r->closing ? NULL : q->cb;
            void *data = q->data;
            req_free(q);
            if (cb != NULL)
                cb(data, NULL, err != NULL ? err : "connection lost");
        }
        q = next;
    }
}

/* hiredis calls this exactly once per command: with the reply, or NULL when the context is freed */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    lg_redis_req_t *q = privdata;
    lg_redis_t *r = q->r;
    lg_redis_cb cb = r->closing ? NULL : q->cb;
    void *data = q->data;
    req_free(q);
    if (reply == NULL && r->state == ST_UP)
        r->state = ST_HANDSHAKE; /* going down: refuse new commands from the callbacks below */
    if (cb != NULL)
        cb(data, reply, reply != NULL ? NULL : ctx_error(ac, "connection lost"));
}

/* ---- the connection's life ---- */

static void timer_arm(lg_redis_t *r, unsigned ms) { lg_timers_add(r->timers, &r->timer, lg_now_mono_ms() + ms); }

/* The context is gone (freed, or being freed by hiredis right after this): back to WAIT. */
static void conn_lost(lg_redis_t *r, const char *why)
{
    int was_up = r->state == ST_UP;
    r->ac = NULL;
    r->state = ST_WAIT;
    r->handshake_left = 0;
    lg_timers_del(r->timers, &r->timer);
    if (r->first_attempt) {
        r->first_attempt = 0;
        parked_flush(r, why);
    }
    if (r->closing)
        return;
    if (was_up)
        r->backoff_ms = BACKOFF_MIN_MS;
    log_transition(r, 0, why);
    timer_arm(r, r->backoff_ms);
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* Drop whatever attempt or connection there is, from the loop's top level (never from a hiredis
 * callback). Requests in flight get reply NULL (their callbacks, unless cancelled). */
static void drop_now(lg_redis_t *r, const char *why)
{
    if (r->getaddr != NULL) {
        h2o_hostinfo_getaddr_cancel(r->getaddr);
        r->getaddr = NULL;
    }
    redisAsyncContext *ac = r->ac;
    if (ac != NULL) {
        redisAsyncFree(ac); /* pending callbacks, cleanup hook, onDisconnect when it was connected */
        if (r->ac == ac)    /* not connected yet: no onDisconnect came */
            conn_lost(r, why);
    } else if (r->state != ST_WAIT) {
        conn_lost(r, why);
    }
}

/* From inside a hiredis callback: drop on the next timer pass. */
static void drop_soon(lg_redis_t *r, const char *why)
{
    snprintf(r->reason, sizeof(r->reason), "%s", why);
    if (r->state == ST_UP)
        r->state = ST_HANDSHAKE; /* not up any more for new commands */
    timer_arm(r, 0);
}

static void on_timer(lg_timer_t *t)
{
    lg_redis_t *r = container_of(t, lg_redis_t, timer);
    if (r->state == ST_WAIT) {
        start_connect(r);
    } else if (r->state != ST_UP) {
        if (r->reason[0] == '\0')
            snprintf(r->reason, sizeof(r->reason), "connect timed out after %d ms", CONNECT_TIMEOUT_MS);
        char why[sizeof(r->reason)];
        memcpy(why, r->reason, sizeof(why));
        drop_now(r, why);
    }
}

static void mark_up(lg_redis_t *r)
{
    r->state = ST_UP;
    r->reason[0] = '\0';
    r->backoff_ms = BACKOFF_MIN_MS;
    lg_timers_del(r->timers, &r->timer);
    log_transition(r, 1, NULL);
    if (r->first_attempt) {
        r->first_attempt = 0;
        parked_flush(r, NULL);
    }
    if (r->on_connect != NULL)
        r->on_connect(r->on_connect_data);
}

/* reply to AUTH or SELECT; data is r */
static void on_handshake_reply(void *data, redisReply *reply, const char *err)
{
    lg_redis_t *r = data;
    if (reply == NULL || r->state != ST_HANDSHAKE)
        return; /* the connection is going away: conn_lost handles it */
    if (reply->type == REDIS_REPLY_ERROR) {
        char why[sizeof(r->reason)];
        snprintf(why, sizeof(why), "%s refused: %.*s", r->auth_pending ? "AUTH" : "SELECT",
                 (int)(reply->len < 120 ? reply->len : 120), reply->str);
        r->handshake_left = -1;
        drop_soon(r, why);
        return;
    }
    r->auth_pending = 0; /* replies come in order: AUTH's (if sent) first */
    if (--r->handshake_left == 0)
        mark_up(r);
}

static int send_internal(lg_redis_t *r, int argc, const char **argv)
{
    lg_redis_req_t *q = req_new(r, on_handshake_reply, r);
    if (q == NULL)
        return -1;
    if (redisAsyncCommandArgv(r->ac, on_reply, q, argc, argv, NULL) != REDIS_OK) {
        req_free(q);
        return -1;
    }
    return 0;
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    lg_redis_t *r = ac->data;
    if (status != REDIS_OK) { /* hiredis frees ac when we return */
        conn_lost(r, ctx_error(ac, "connect failed"));
        return;
    }
    r->state = ST_HANDSHAKE;
    r->handshake_left = 0;
    r->auth_pending = 0;
    if (r->password != NULL) {
        const char *argv[3] = {"AUTH", r->user ? r->user : r->password, r->password};
        if (send_internal(r, r->user ? 3 : 2, argv) != 0)
            return drop_soon(r, "cannot send AUTH");
        r->handshake_left++;
        r->auth_pending = 1;
    }
    if (r->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", r->db);
        const char *argv[2] = {"SELECT", db};
        if (send_internal(r, 2, argv) != 0)
            return drop_soon(r, "cannot send SELECT");
        r->handshake_left++;
    }
    if (r->handshake_left == 0)
        mark_up(r);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    lg_redis_t *r = ac->data;
    if (r->ac != ac)
        return;
    const char *why = ctx_error(ac, r->reason[0] ? r->reason : "connection closed");
    char copy[sizeof(r->reason)];
    snprintf(copy, sizeof(copy), "%s", why);
    conn_lost(r, copy);
}

/* ---- the adapter: hiredis's fd on an evloop socket ---- */

static void on_writable(h2o_socket_t *sock, const char *err);

static void on_readable(h2o_socket_t *sock, const char *err)
{
    adapter_t *a = sock->data;
    redisAsyncHandleRead(a->ac); /* may free ac and a (then the socket is already detached) */
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    adapter_t *a = sock->data;
    if (a->want_write)
        redisAsyncHandleWrite(a->ac); /* re-arms through ev_add_write while it has more to write */
}

static void ev_add_read(void *privdata)
{
    adapter_t *a = privdata;
    if (!h2o_socket_is_reading(a->sock))
        h2o_socket_read_start(a->sock, on_readable);
}

static void ev_del_read(void *privdata)
{
    adapter_t *a = privdata;
    if (h2o_socket_is_reading(a->sock))
        h2o_socket_read_stop(a->sock);
}

/* one-shot in h2o: armed again each time hiredis asks while none is pending */
static void ev_add_write(void *privdata)
{
    adapter_t *a = privdata;
    a->want_write = 1;
    if (a->sock->_cb.write == NULL)
        h2o_socket_notify_write(a->sock, on_writable);
}

/* 2.2.5 cannot cancel a pending notification: it fires once and is ignored */
static void ev_del_write(void *privdata) { ((adapter_t *)privdata)->want_write = 0; }

/* hiredis is about to close the fd: the socket lets go of it (the fd stays open for hiredis) */
static void ev_cleanup(void *privdata)
{
    adapter_t *a = privdata;
    a->sock->_cb.write = NULL; /* h2o_socket_export asserts no write notification is pending */
    if (h2o_socket_is_reading(a->sock))
        h2o_socket_read_stop(a->sock);
    h2o_socket_export_t info;
    if (h2o_socket_export(a->sock, &info) == 0)
        h2o_buffer_dispose(&info.input);
    redisAsyncContext *ac = a->ac;
    ac->ev.data = NULL;
    ac->ev.addRead = ac->ev.delRead = ac->ev.addWrite = ac->ev.delWrite = ac->ev.cleanup = NULL;
    free(a);
}

static void connect_addr(lg_redis_t *r, const char *ip)
{
    redisAsyncContext *ac = r->host != NULL ? redisAsyncConnect(ip, r->port) : redisAsyncConnectUnix(r->path);
    if (ac == NULL) {
        conn_lost(r, "out of memory");
        return;
    }
    if (ac->err) {
        char why[sizeof(r->reason)];
        snprintf(why, sizeof(why), "%s", ctx_error(ac, "cannot connect"));
        redisAsyncFree(ac);
        conn_lost(r, why);
        return;
    }
    adapter_t *a = calloc(1, sizeof(*a));
    a->ac = ac;
    a->sock = h2o_evloop_socket_create(r->loop, ac->c.fd, H2O_SOCKET_FLAG_DONT_READ);
    a->sock->data = a;
    ac->data = r;
    ac->ev.data = a;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    r->ac = ac;
    r->state = ST_CONNECTING;
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisAsyncSetConnectCallback(ac, on_connect); /* arms the first write readiness */
}

static void on_resolved(h2o_hostinfo_getaddr_req_t *req, const char *errstr, struct addrinfo *res, void *data)
{
    lg_redis_t *r = data;
    r->getaddr = NULL;
    if (errstr != NULL || res == NULL) {
        char why[sizeof(r->reason)];
        snprintf(why, sizeof(why), "cannot resolve %s: %s", r->host, errstr ? errstr : "no address");
        conn_lost(r, why);
        return;
    }
    char ip[INET6_ADDRSTRLEN];
    const void *addr = res->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                                                  : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
    if (inet_ntop(res->ai_family, addr, ip, sizeof(ip)) == NULL) {
        conn_lost(r, "cannot resolve: bad address");
        return;
    }
    connect_addr(r, ip);
}

static void start_connect(lg_redis_t *r)
{
    r->reason[0] = '\0';
    timer_arm(r, CONNECT_TIMEOUT_MS); /* the whole attempt: resolve, connect, AUTH, SELECT */
    unsigned char buf[sizeof(struct in6_addr)];
    if (r->host == NULL || inet_pton(AF_INET, r->host, buf) == 1 || inet_pton(AF_INET6, r->host, buf) == 1) {
        connect_addr(r, r->host); /* a numeric address (or a unix socket): hiredis does not look it up */
        return;
    }
    if (r->resolver == NULL) {
        r->resolver = calloc(1, sizeof(*r->resolver));
        r->resolver->queue = h2o_multithread_create_queue(r->loop);
        h2o_multithread_register_receiver(r->resolver->queue, &r->resolver->receiver, h2o_hostinfo_getaddr_receiver);
    }
    char port[8];
    snprintf(port, sizeof(port), "%d", r->port);
    r->state = ST_RESOLVING;
    r->getaddr = h2o_hostinfo_getaddr(&r->resolver->receiver, h2o_iovec_init(r->host, strlen(r->host)),
                                      h2o_iovec_init(port, strlen(port)), AF_UNSPEC, SOCK_STREAM, IPPROTO_TCP,
                                      AI_ADDRCONFIG | AI_NUMERICSERV, on_resolved, r);
}

/* ---- URL ---- */

/* ---- URL ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* %XX-decode [s, s+n) into a new string */
static char *url_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 && (lo = hexval(s[i + 2])) >= 0) {
            *o++ = (char)(hi * 16 + lo);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

static int parse_db(const char *s, size_t n, int *db)
{
    if (n == 0)
        return 0;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > 100000)
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *db = (int)v;
    return 0;
}

/* redis://[[user]:password@]host[:port][/db][?...]  or  unix://[[user]:password@]/path[?db=N].
 * 0, or -1 with *why set (the message never contains the URL: it may hold a password). */
static int parse_url(lg_redis_t *r, const char *url, const char **why)
{
    const char *p;
    int unix_socket = 0;
    if (strncasecmp(url, "redis://", 8) == 0) {
        p = url + 8;
    } else if (strncasecmp(url, "unix://", 7) == 0) {
        p = url + 7;
        unix_socket = 1;
    } else if (strncasecmp(url, "rediss://", 9) == 0) {
        *why = "rediss:// (TLS) is not supported by this build's hiredis 0.14: use redis:// or unix://";
        return -1;
    } else {
        *why = "REDIS_URL must start with redis:// or unix://";
        return -1;
    }
    const char *end = p + strlen(p);
    const char *query = memchr(p, '?', (size_t)(end - p));
    const char *stop = query ? query : end;
    /* userinfo: up to the last '@' before the path (a password may contain '@' only %-encoded,
     * but be lenient) */
    const char *at = NULL;
    for (const char *c = p; c < stop; c++) {
        if (*c == '@')
            at = c;
        else if (*c == '/' && at == NULL && !unix_socket)
            break;
    }
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon != NULL) {
            if (colon > p)
                r->user = url_decode(p, (size_t)(colon - p));
            if (at > colon + 1)
                r->password = url_decode(colon + 1, (size_t)(at - colon - 1));
        } else if (at > p) {
            r->user = url_decode(p, (size_t)(at - p)); /* a user without a password: no AUTH */
        }
        p = at + 1;
    }
    if (r->password == NULL) { /* AUTH user without a password does not exist */
        free(r->user);
        r->user = NULL;
    }
    if (unix_socket) {
        if (p == stop || *p != '/') {
            *why = "unix:// REDIS_URL needs an absolute socket path";
            return -1;
        }
        r->path = url_decode(p, (size_t)(stop - p));
        if (query != NULL) {
            const char *d = strstr(query, "db=");
            if (d != NULL && parse_db(d + 3, strcspn(d + 3, "&"), &r->db) != 0) {
                *why = "REDIS_URL has a bad db number";
                return -1;
            }
        }
        return 0;
    }
    const char *host = p, *host_end;
    if (*p == '[') { /* [IPv6] */
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(stop - host));
        if (host_end == NULL) {
            *why = "REDIS_URL has a bad IPv6 address";
            return -1;
        }
        p = host_end + 1;
    } else {
        host_end = p;
        while (host_end < stop && *host_end != ':' && *host_end != '/')
            host_end++;
        p = host_end;
    }
    if (host_end == host) {
        *why = "REDIS_URL has no host";
        return -1;
    }
    r->host = url_decode(host, (size_t)(host_end - host));
    r->port = 6379;
    if (p < stop && *p == ':') {
        long port = 0;
        const char *d = ++p;
        while (p < stop && *p >= '0' && *p <= '9' && port <= 65535)
            port = port * 10 + (*p++ - '0');
        if (p == d || port < 1 || port > 65535) {
            *why = "REDIS_URL has a bad port";
            return -1;
        }
        r->port = (int)port;
    }
    if (p < stop && *p == '/') {
        p++;
        if (parse_db(p, (size_t)(stop - p), &r->db) != 0) {
            *why = "REDIS_URL has a bad db number (redis://host:port/N)";
            return -1;
        }
        p = stop;
    }
    if (p != stop) {
        *why = "REDIS_URL is not redis://[[user]:password@]host[:port][/db]";
        return -1;
    }
    return 0;
}

/* ---- API ---- */

lg_redis_t *lg_redis_new(h2o_loop_t *loop, lg_timerheap_t *timers, const char *url, const char *name)
{
    lg_redis_t *r = calloc(1, sizeof(*r));
    r->loop = loop;
    r->timers = timers;
    r->name = strdup(name != NULL ? name : "redis");
    r->backoff_ms = BACKOFF_MIN_MS;
    r->parked_tail = &r->parked;
    lg_timer_init(&r->timer, on_timer);
    const char *why = NULL;
    if (parse_url(r, url, &why) != 0) {
        /* kept as a connection that is never up: every command is refused, the log says why */
        lg_log(LG_LOG_ERROR, "%s: %s", r->name, why);
        r->logged = -1;
        return r;
    }
    r->usable = 1;
    r->first_attempt = 1;
    start_connect(r);
    return r;
}

int lg_redis_up(const lg_redis_t *r) { return r != NULL && r->state == ST_UP; }

lg_redis_req_t *lg_redis_command(lg_redis_t *r, int argc, const char **argv, const size_t *argvlen, lg_redis_cb cb,
                                 void *data)
{
    if (argc < 1)
        return NULL;
    if (r->first_attempt) { /* parked until the first connection is up (or has failed) */
        char *cmd = NULL;
        int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
        lg_redis_req_t *q = len >= 0 ? req_new(r, cb, data) : NULL;
        if (q == NULL) {
            redisFreeCommand(cmd);
            return NULL;
        }
        q->cmd = cmd;
        q->len = (size_t)len;
        *r->parked_tail = q;
        r->parked_tail = &q->next;
        return q;
    }
    if (r->state != ST_UP || r->ac == NULL)
        return NULL;
    lg_redis_req_t *q = req_new(r, cb, data);
    if (q == NULL)
        return NULL;
    if (redisAsyncCommandArgv(r->ac, on_reply, q, argc, argv, argvlen) != REDIS_OK) {
        req_free(q);
        return NULL;
    }
    return q;
}

void lg_redis_cancel(lg_redis_req_t *q) { q->cb = NULL; }

void lg_redis_on_connect(lg_redis_t *r, void (*cb)(void *data), void *data)
{
    r->on_connect = cb;
    r->on_connect_data = data;
}

void lg_redis_free(lg_redis_t *r)
{
    if (r == NULL)
        return;
    r->closing = 1;
    lg_timers_del(r->timers, &r->timer);
    int lookup_running = r->getaddr != NULL;
    drop_now(r, "shutting down"); /* every pending request's callback is skipped (closing) */
    parked_flush(r, "shutting down");
    if (r->resolver != NULL && !lookup_running) {
        h2o_multithread_unregister_receiver(r->resolver->queue, &r->resolver->receiver);
        h2o_multithread_destroy_queue(r->resolver->queue);
        free(r->resolver->queue); /* 2.2.5's evloop destroy_queue closes the queue's socket but leaks its struct */
        free(r->resolver);
    }
    if (r->logged == 1 && lg_log_enabled(LG_LOG_INFO))
        lg_log(LG_LOG_INFO, "%s: connection closed", r->name);
    free(r->name);
    free(r->host);
    free(r->path);
    free(r->user);
    free(r->password);
    free(r);
}

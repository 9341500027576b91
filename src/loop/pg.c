#include "luagent/pg.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dlfcn.h>

#include <h2o/hostinfo.h>
#include <h2o/multithread.h>

#include "luagent/ids.h"
#include "luagent/log.h"

#define PIPE_CAP 32          /* queries in flight on one connection at most */
#define CONNECT_TIMEOUT_MS 5000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define MAX_ADDRS 4          /* resolved addresses handed to libpq per attempt */

/*
 * Shape: a pool owns a list of connections and a FIFO of requests waiting for one. A connection
 * goes RESOLVING (h2o's resolver threads) -> CONNECTING (PQconnectPoll steps) -> READY; any failure
 * marks it dead and kicks the pool. All failure handling (callbacks with an error, freeing, the
 * pool going DOWN) happens in one place, the pool's "kick" timer (due at once), so no callback ever
 * runs inside the public call that queued its request.
 *
 * Watching libpq's fd: libpq closes its socket by itself (PQconnectPoll moving to the next address,
 * PQconsumeInput on EOF), before we could detach an evloop watcher from it. So the watcher watches a
 * dup of libpq's fd: readiness is the same (one open file description), and closing our dup with
 * h2o_socket_close never touches libpq's. During the connect phase a fresh dup is watched for each
 * PQconnectPoll step (the fd may change between steps); once connected one watcher serves the
 * connection's whole life.
 */

typedef enum { C_RESOLVING, C_CONNECTING, C_READY } conn_state_t;
typedef enum { R_QUERY, R_ACQUIRE } req_kind_t;

struct lg_pg_req {
    lg_pg_t *p;
    req_kind_t kind;
    lg_pg_req_t *next, *prev; /* pool queue (doubly linked) or a connection's in-flight FIFO (next only) */
    int queued;               /* in the pool's queue (else sent, or being delivered) */
    int sent;                 /* on a connection: cancel only forgets the callback */
    lg_pg_cb cb;
    lg_pg_acquire_cb acb;
    void *data;
    PGresult *res; /* the query's latest result, until its sync point */
    int nparams;
    const char *sql;
    const char **values;
    int *lengths, *formats;
    /* sql, values and lengths live in the same allocation after this struct */
};

struct lg_pg_conn {
    lg_pg_t *p;
    lg_pg_conn_t *next, *prev;
    conn_state_t state;
    PGconn *pg;
    h2o_socket_t *sock; /* watches a dup of PQsocket */
    h2o_hostinfo_getaddr_req_t *dns;
    lg_timer_t timer; /* connect timeout */
    lg_pg_req_t *head, *tail;
    int inflight;
    int borrowed;
    int dead;    /* failed or lost: reaped by the kick */
    int orphan;  /* dead while borrowed: waits for lg_pg_release, not counted in the pool */
    int flushing; /* PQflush said 1: more to write */
    char err[256];
};

struct lg_pg {
    h2o_loop_t *loop;
    lg_timerheap_t *timers;
    char *url;
    int size;
    lg_pg_conn_t *conns;
    int nconns; /* not orphaned */
    lg_pg_req_t *qhead, *qtail;
    size_t nqueued;
    int used, down;
    char why[256];    /* the last attempt's failure (for DOWN) */
    char config_err[128]; /* the URL cannot be used: every request fails with this */
    int backoff_ms;
    uint64_t no_grow_until; /* after a failed attempt while others are up */
    lg_timer_t kick, retry;
    /* from the URL: what libpq needs resolved */
    char *host;      /* a host name to resolve, NULL when libpq may use the URL as it is */
    h2o_multithread_queue_t *getaddr_queue;
    h2o_multithread_receiver_t getaddr_receiver;
};

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* ---- loading libpq ---- */

lg_pq_api_t lg_pq;
static int pq_loaded = -1;

static void load_pq(void)
{
    void *h = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        lg_log(LG_LOG_ERROR, "luagent.db: cannot load libpq.so.5: %s", dlerror());
        pq_loaded = 0;
        return;
    }
    struct { void **slot; const char *name; } syms[] = {
#define SYM(field) {(void **)&lg_pq.field, "PQ" #field}
        SYM(connectStartParams), SYM(connectPoll), SYM(finish), SYM(status), SYM(transactionStatus),
        SYM(socket), SYM(errorMessage), SYM(setnonblocking), SYM(enterPipelineMode), SYM(pipelineSync),
        SYM(sendQueryParams), SYM(flush), SYM(consumeInput), SYM(isBusy), SYM(getResult),
        SYM(setNoticeProcessor), SYM(conninfoParse), SYM(conninfoFree), SYM(resultStatus),
        SYM(resultErrorField), SYM(clear), SYM(ntuples), SYM(nfields), SYM(fname), SYM(ftype),
        SYM(getvalue), SYM(getlength), SYM(getisnull), SYM(cmdStatus), SYM(cmdTuples), SYM(unescapeBytea),
        SYM(freemem), SYM(connectdbParams), SYM(exec), SYM(execParams),
#undef SYM
    };
    for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++)
        if ((*syms[i].slot = dlsym(h, syms[i].name)) == NULL) {
            lg_log(LG_LOG_ERROR, "luagent.db: libpq.so.5 has no %s (libpq 14 or newer is needed)", syms[i].name);
            pq_loaded = 0;
            return;
        }
    pq_loaded = 1;
}

int lg_pg_load(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, load_pq);
    return pq_loaded == 1 ? 0 : -1;
}

/* ---- helpers ---- */

/* libpq's messages end in "\n" and may hold several lines (one per address tried): keep the first */
static void copy_message(char *dst, size_t len, const char *prefix, const char *msg)
{
    if (msg == NULL || *msg == '\0')
        msg = "unknown error";
    size_t n = strcspn(msg, "\n");
    snprintf(dst, len, "%s%.*s", prefix, (int)n, msg);
}

static void kick(lg_pg_t *p)
{
    if (!lg_timer_active(&p->kick))
        lg_timers_add(p->timers, &p->kick, 0); /* due now: runs after this loop iteration's I/O */
}

static void conn_dead(lg_pg_conn_t *c, const char *prefix, const char *msg)
{
    if (c->dead)
        return;
    c->dead = 1;
    copy_message(c->err, sizeof(c->err), prefix, msg);
    if (c->sock != NULL && h2o_socket_is_reading(c->sock))
        h2o_socket_read_stop(c->sock);
    kick(c->p);
}

static void watcher_close(lg_pg_conn_t *c)
{
    if (c->sock == NULL)
        return;
    c->sock->_cb.write = NULL; /* 2.2.5 cannot cancel a pending write notification */
    h2o_socket_close(c->sock); /* closes our dup only */
    c->sock = NULL;
}

static int watcher_open(lg_pg_conn_t *c)
{
    watcher_close(c);
    int fd = PQsocket(c->pg);
    int dup_fd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (dup_fd < 0)
        return -1;
    c->sock = h2o_evloop_socket_create(c->p->loop, dup_fd, H2O_SOCKET_FLAG_DONT_READ);
    c->sock->data = c;
    return 0;
}

static void req_free(lg_pg_req_t *r)
{
    if (r->res != NULL)
        PQclear(r->res);
    free(r);
}

/* ---- the pool's queue ---- */

static void queue_push(lg_pg_t *p, lg_pg_req_t *r)
{
    r->queued = 1;
    r->next = NULL;
    r->prev = p->qtail;
    if (p->qtail)
        p->qtail->next = r;
    else
        p->qhead = r;
    p->qtail = r;
    p->nqueued++;
}

static void queue_unlink(lg_pg_t *p, lg_pg_req_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        p->qhead = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        p->qtail = r->prev;
    r->next = r->prev = NULL;
    r->queued = 0;
    p->nqueued--;
}

/* ---- sending ---- */

static void on_writable(h2o_socket_t *sock, const char *err);

static void conn_flush(lg_pg_conn_t *c)
{
    int rc = PQflush(c->pg);
    if (rc < 0) {
        conn_dead(c, "database connection lost: ", PQerrorMessage(c->pg));
        return;
    }
    c->flushing = rc == 1;
    if (c->flushing && c->sock->_cb.write == NULL)
        h2o_socket_notify_write(c->sock, on_writable);
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    lg_pg_conn_t *c = sock->data;
    if (err != NULL)
        conn_dead(c, "database connection lost: ", err);
    else if (!c->dead)
        conn_flush(c);
}

/* Queue r on c's pipeline: the statement and a sync point. A failure marks c dead (the kick fails
 * r with the others); r is in c's FIFO either way. */
static void conn_send(lg_pg_conn_t *c, lg_pg_req_t *r)
{
    r->sent = 1;
    r->next = NULL;
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->inflight++;
    if (c->dead)
        return;
    if (!PQsendQueryParams(c->pg, r->sql, r->nparams, NULL, r->values, r->lengths, r->formats, 0) ||
        !PQpipelineSync(c->pg)) {
        conn_dead(c, "database connection lost: ", PQerrorMessage(c->pg));
        return;
    }
    conn_flush(c);
}

/* ---- choosing a connection ---- */

static int can_grow(const lg_pg_t *p) { return p->nconns < p->size && lg_now_mono_ms() >= p->no_grow_until; }

/* A connection for r, or NULL (then r waits). Queries prefer an idle connection; when none is idle
 * the pool grows first (and waits for connections being made), and only a pool at its size, all of
 * it up, pipelines onto busy connections. */
static lg_pg_conn_t *pick(lg_pg_t *p, const lg_pg_req_t *r)
{
    lg_pg_conn_t *best = NULL;
    int connecting = 0;
    for (lg_pg_conn_t *c = p->conns; c != NULL; c = c->next) {
        if (c->dead || c->borrowed)
            continue;
        if (c->state != C_READY) {
            connecting = 1;
            continue;
        }
        if (best == NULL || c->inflight < best->inflight)
            best = c;
        if (c->inflight == 0)
            return c;
    }
    if (best == NULL || r->kind == R_ACQUIRE || connecting || can_grow(p) || best->inflight >= PIPE_CAP)
        return NULL;
    return best;
}

static void conn_start(lg_pg_t *p);

static void grow(lg_pg_t *p)
{
    int connecting = 0;
    for (lg_pg_conn_t *c = p->conns; c != NULL; c = c->next)
        connecting += !c->orphan && c->state != C_READY;
    while (can_grow(p) && (size_t)connecting < p->nqueued) {
        conn_start(p);
        connecting++;
    }
}

/* Hand waiting requests to connections, in order; the first that cannot be placed stops the rest
 * (so a waiting transaction is not starved by queries behind it). Loop context only: it calls
 * acquire callbacks. */
static void dispatch(lg_pg_t *p)
{
    lg_pg_req_t *r;
    while ((r = p->qhead) != NULL) {
        lg_pg_conn_t *c = pick(p, r);
        if (c == NULL)
            break;
        queue_unlink(p, r);
        if (r->kind == R_QUERY) {
            conn_send(c, r);
        } else {
            c->borrowed = 1;
            lg_pg_acquire_cb cb = r->acb;
            void *data = r->data;
            req_free(r);
            cb(data, c, NULL);
        }
    }
    if (p->qhead != NULL)
        grow(p);
}

/* ---- results ---- */

static void deliver(lg_pg_req_t *r, PGresult *res, const char *err, const char *sqlstate)
{
    if (r->kind == R_QUERY && r->cb != NULL)
        r->cb(r->data, res, err, sqlstate);
    else if (r->kind == R_ACQUIRE && r->acb != NULL)
        r->acb(r->data, NULL, err);
}

/* The head query reached its sync point: report its last result. */
static void complete_head(lg_pg_conn_t *c)
{
    lg_pg_req_t *r = c->head;
    if (r == NULL)
        return;
    c->head = r->next;
    if (c->head == NULL)
        c->tail = NULL;
    c->inflight--;
    PGresult *res = r->res;
    ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        deliver(r, res, NULL, NULL);
    } else {
        const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (msg == NULL)
            msg = st == PGRES_EMPTY_QUERY ? "empty query" : "the query failed";
        deliver(r, res, msg, state);
    }
    req_free(r);
}

static void read_results(lg_pg_conn_t *c)
{
    while (!c->dead && !PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (res == NULL) {
            if (c->head == NULL || c->head->res == NULL)
                break; /* nothing more for now */
            continue;  /* the end of the head query's results; its sync comes next */
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            complete_head(c);
            continue;
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(res);
            conn_dead(c, "", "COPY is not supported by luagent.db");
            break;
        }
        if (c->head == NULL) { /* not ours (cannot happen in pipeline mode): drop it */
            PQclear(res);
            continue;
        }
        if (c->head->res != NULL)
            PQclear(c->head->res);
        c->head->res = res;
    }
    if (!c->dead && PQstatus(c->pg) == CONNECTION_BAD)
        conn_dead(c, "database connection lost: ", PQerrorMessage(c->pg));
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    lg_pg_conn_t *c = sock->data;
    if (c->dead)
        return;
    if (err != NULL) {
        conn_dead(c, "database connection lost: ", err);
        return;
    }
    if (!PQconsumeInput(c->pg)) {
        conn_dead(c, "database connection lost: ", PQerrorMessage(c->pg));
        return;
    }
    read_results(c);
    if (!c->dead && c->flushing)
        conn_flush(c);
    if (!c->dead && !c->borrowed && c->p->qhead != NULL)
        dispatch(c->p);
}

/* ---- connecting ---- */

static void notice_ignore(void *arg, const char *msg) {}

static void connect_step(lg_pg_conn_t *c, PostgresPollingStatusType st);

static void on_connect_io(h2o_socket_t *sock, const char *err)
{
    lg_pg_conn_t *c = sock->data;
    if (h2o_socket_is_reading(sock))
        h2o_socket_read_stop(sock);
    sock->_cb.write = NULL;
    if (!c->dead)
        connect_step(c, PQconnectPoll(c->pg));
}

static void connected(lg_pg_conn_t *c)
{
    lg_pg_t *p = c->p;
    lg_timers_del(p->timers, &c->timer);
    if (PQsetnonblocking(c->pg, 1) != 0 || !PQenterPipelineMode(c->pg) || watcher_open(c) != 0) {
        conn_dead(c, "cannot set up the database connection: ", PQerrorMessage(c->pg));
        return;
    }
    h2o_socket_read_start(c->sock, on_readable);
    c->state = C_READY;
    p->down = 0;
    p->backoff_ms = BACKOFF_MIN_MS;
    p->no_grow_until = 0;
    dispatch(p);
}

static void connect_step(lg_pg_conn_t *c, PostgresPollingStatusType st)
{
    switch (st) {
    case PGRES_POLLING_OK:
        connected(c);
        return;
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
        if (watcher_open(c) != 0) {
            conn_dead(c, "", PQerrorMessage(c->pg));
            return;
        }
        if (st == PGRES_POLLING_READING)
            h2o_socket_read_start(c->sock, on_connect_io);
        else
            h2o_socket_notify_write(c->sock, on_connect_io);
        return;
    default:
        conn_dead(c, "", PQerrorMessage(c->pg));
        return;
    }
}

/* libpq gets the URL as dbname (expanded) and, when we resolved the host, `hostaddr` with the host
 * name repeated once per address (libpq wants the two lists the same length). */
static void conn_begin(lg_pg_conn_t *c, const char *hostaddrs, const char *hosts)
{
    const char *keys[5], *vals[5];
    int n = 0;
    keys[n] = "dbname", vals[n++] = c->p->url;
    keys[n] = "fallback_application_name", vals[n++] = "luagent";
    if (hostaddrs != NULL) {
        keys[n] = "host", vals[n++] = hosts;
        keys[n] = "hostaddr", vals[n++] = hostaddrs;
    }
    keys[n] = NULL, vals[n] = NULL;
    c->state = C_CONNECTING;
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (c->pg == NULL) {
        conn_dead(c, "", "out of memory");
        return;
    }
    PQsetNoticeProcessor(c->pg, notice_ignore, NULL);
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_dead(c, "", PQerrorMessage(c->pg));
        return;
    }
    connect_step(c, PGRES_POLLING_WRITING);
}

static void on_resolved(h2o_hostinfo_getaddr_req_t *req, const char *errstr, struct addrinfo *res, void *data)
{
    lg_pg_conn_t *c = data;
    c->dns = NULL;
    if (errstr != NULL) {
        char msg[200];
        snprintf(msg, sizeof(msg), "cannot resolve %s: %s", c->p->host, errstr);
        conn_dead(c, "", msg);
        return;
    }
    char addrs[MAX_ADDRS * (INET6_ADDRSTRLEN + 1)] = "", hosts[1024] = "";
    int n = 0;
    for (struct addrinfo *ai = res; ai != NULL && n < MAX_ADDRS; ai = ai->ai_next) {
        char a[INET6_ADDRSTRLEN];
        const void *src = ai->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                          : ai->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                                                      : NULL;
        if (src == NULL || inet_ntop(ai->ai_family, src, a, sizeof(a)) == NULL)
            continue;
        if (strlen(hosts) + strlen(c->p->host) + 2 > sizeof(hosts))
            break;
        snprintf(addrs + strlen(addrs), sizeof(addrs) - strlen(addrs), "%s%s", n ? "," : "", a);
        snprintf(hosts + strlen(hosts), sizeof(hosts) - strlen(hosts), "%s%s", n ? "," : "", c->p->host);
        n++;
    }
    if (n == 0) {
        conn_dead(c, "", "the database host has no address");
        return;
    }
    conn_begin(c, addrs, hosts);
}

static void on_connect_timeout(lg_timer_t *t)
{
    lg_pg_conn_t *c = container_of(t, lg_pg_conn_t, timer);
    conn_dead(c, "", "timeout expired while connecting to the database");
}

static void conn_start(lg_pg_t *p)
{
    lg_pg_conn_t *c = calloc(1, sizeof(*c));
    c->p = p;
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    p->nconns++;
    p->used = 1;
    lg_timer_init(&c->timer, on_connect_timeout);
    lg_timers_add(p->timers, &c->timer, lg_now_mono_ms() + CONNECT_TIMEOUT_MS);
    if (p->config_err[0]) {
        conn_dead(c, "", p->config_err);
    } else if (p->host != NULL) {
        c->state = C_RESOLVING;
        c->dns = h2o_hostinfo_getaddr(&p->getaddr_receiver, h2o_iovec_init(p->host, strlen(p->host)),
                                      h2o_iovec_init(H2O_STRLIT("5432")), AF_UNSPEC, SOCK_STREAM, IPPROTO_TCP,
                                      AI_ADDRCONFIG | AI_NUMERICSERV, on_resolved, c);
    } else {
        conn_begin(c, NULL, NULL);
    }
}

/* ---- failures and the pool's state (the kick) ---- */

static void conn_free(lg_pg_conn_t *c)
{
    lg_pg_t *p = c->p;
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (!c->orphan)
        p->nconns--;
    lg_timers_del(p->timers, &c->timer);
    if (c->dns != NULL)
        h2o_hostinfo_getaddr_cancel(c->dns);
    watcher_close(c);
    if (c->pg != NULL)
        PQfinish(c->pg);
    for (lg_pg_req_t *r = c->head, *next; r != NULL; r = next) {
        next = r->next;
        req_free(r);
    }
    free(c);
}

/* Fail every request on c (their callbacks run) and forget c, unless a borrower holds it. */
static void conn_reap(lg_pg_conn_t *c)
{
    lg_pg_req_t *r = c->head;
    c->head = c->tail = NULL;
    c->inflight = 0;
    while (r != NULL) {
        lg_pg_req_t *next = r->next;
        deliver(r, NULL, c->err, NULL);
        req_free(r);
        r = next;
    }
    if (c->borrowed) {
        if (!c->orphan) {
            c->orphan = 1;
            c->p->nconns--;
        }
        return;
    }
    conn_free(c);
}

static void fail_queue(lg_pg_t *p, const char *err)
{
    lg_pg_req_t *r;
    while ((r = p->qhead) != NULL) {
        queue_unlink(p, r);
        deliver(r, NULL, err, NULL);
        req_free(r);
    }
}

static void on_retry(lg_timer_t *t)
{
    lg_pg_t *p = container_of(t, lg_pg_t, retry);
    p->down = 0; /* CONNECTING: requests wait for this attempt */
    if (p->nconns == 0)
        conn_start(p);
}

static void on_kick(lg_timer_t *t)
{
    lg_pg_t *p = container_of(t, lg_pg_t, kick);
    int attempt_failed = 0, lost = 0;
    char err[256] = "";
    for (lg_pg_conn_t *c = p->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (!c->dead || c->orphan)
            continue;
        if (c->state == C_READY)
            lost = 1;
        else
            attempt_failed = 1;
        snprintf(err, sizeof(err), "%s", c->err);
        if (c->state == C_READY)
            lg_log(LG_LOG_WARN, "luagent.db: %s", c->err);
        conn_reap(c);
    }
    int up = 0, connecting = 0;
    for (lg_pg_conn_t *c = p->conns; c != NULL; c = c->next)
        if (!c->orphan && !c->dead) {
            up += c->state == C_READY;
            connecting += c->state != C_READY;
        }
    if (attempt_failed && up == 0 && connecting == 0) {
        /* DOWN: waiting requests fail now, new ones at once, until an attempt in the background works */
        p->down = 1;
        snprintf(p->why, sizeof(p->why), "%s", err);
        lg_log(LG_LOG_WARN, "luagent.db: cannot connect (retrying in %d ms): %s", p->backoff_ms, err);
        char msg[300];
        snprintf(msg, sizeof(msg), "database unavailable: %s", err);
        fail_queue(p, msg);
        lg_timers_add(p->timers, &p->retry, lg_now_mono_ms() + (uint64_t)p->backoff_ms);
        p->backoff_ms = p->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : p->backoff_ms * 2;
        return;
    }
    if (attempt_failed) /* others are up or coming: do not hammer the server with new attempts */
        p->no_grow_until = lg_now_mono_ms() + (uint64_t)p->backoff_ms;
    if (lost && up == 0 && connecting == 0)
        conn_start(p); /* reconnect in the background; requests wait for it */
    dispatch(p);
}

/* ---- public ---- */

/* What libpq would do with the URL's host, decided once: resolve a name ourselves (libpq's own
 * getaddrinfo blocks), or leave it (numeric address, unix socket, hostaddr given). */
static void parse_url(lg_pg_t *p)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(p->url, &errmsg);
    if (opts == NULL) {
        /* libpq's message may quote parts of the URL (secrets): say only what is wrong in general */
        snprintf(p->config_err, sizeof(p->config_err), "DATABASE_URL is not a valid connection string");
        if (errmsg != NULL)
            PQfreemem(errmsg);
        return;
    }
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
    }
    if (host != NULL && *host != '\0' && (hostaddr == NULL || *hostaddr == '\0') && host[0] != '/' &&
        host[0] != '@') {
        unsigned char buf[sizeof(struct in6_addr)];
        if (strchr(host, ',') != NULL) {
            for (const char *h = host; *h; h++)
                if (!(*h == ',' || *h == '.' || *h == ':' || (*h >= '0' && *h <= '9') || (*h >= 'a' && *h <= 'f') ||
                      (*h >= 'A' && *h <= 'F'))) {
                    snprintf(p->config_err, sizeof(p->config_err),
                             "DATABASE_URL: a list of hosts must use numeric addresses");
                    break;
                }
        } else if (inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1) {
            p->host = strdup(host);
        }
    }
    PQconninfoFree(opts);
}

lg_pg_t *lg_pg_new(h2o_loop_t *loop, lg_timerheap_t *timers, const char *url, int size)
{
    if (lg_pg_load() != 0)
        return NULL;
    lg_pg_t *p = calloc(1, sizeof(*p));
    p->loop = loop;
    p->timers = timers;
    p->url = strdup(url);
    p->size = size > 0 ? size : 1;
    p->backoff_ms = BACKOFF_MIN_MS;
    lg_timer_init(&p->kick, on_kick);
    lg_timer_init(&p->retry, on_retry);
    parse_url(p);
    if (p->host != NULL) {
        p->getaddr_queue = h2o_multithread_create_queue(loop);
        h2o_multithread_register_receiver(p->getaddr_queue, &p->getaddr_receiver, h2o_hostinfo_getaddr_receiver);
    }
    return p;
}

void lg_pg_free(lg_pg_t *p)
{
    if (p == NULL)
        return;
    lg_timers_del(p->timers, &p->kick);
    lg_timers_del(p->timers, &p->retry);
    while (p->conns != NULL)
        conn_free(p->conns);
    lg_pg_req_t *r;
    while ((r = p->qhead) != NULL) {
        queue_unlink(p, r);
        req_free(r);
    }
    if (p->getaddr_queue != NULL) {
        h2o_multithread_unregister_receiver(p->getaddr_queue, &p->getaddr_receiver);
        h2o_multithread_destroy_queue(p->getaddr_queue);
        free(p->getaddr_queue); /* 2.2.5's evloop destroy_queue leaks the struct (see upstream.c) */
    }
    /* wipe: the URL may hold a password */
    memset(p->url, 0, strlen(p->url));
    free(p->url);
    free(p->host);
    free(p);
}

/* borrow: the SQL and the values stay the caller's (alive until the callback or a cancel), only the
 * pointer arrays are made here */
static lg_pg_req_t *req_new(lg_pg_t *p, req_kind_t kind, const char *sql, int nparams, const char *const *values,
                            const int *lengths, const int *formats, int borrow)
{
    if (borrow) {
        lg_pg_req_t *r = calloc(1, sizeof(*r) + (size_t)nparams * sizeof(char *));
        r->p = p;
        r->kind = kind;
        r->nparams = nparams;
        r->sql = sql;
        r->values = (const char **)(r + 1);
        memcpy(r->values, values, (size_t)nparams * sizeof(char *));
        return r;
    }
    size_t sqllen = sql != NULL ? strlen(sql) + 1 : 0, extra = sqllen;
    size_t *lens = nparams > 0 ? calloc((size_t)nparams, sizeof(size_t)) : NULL;
    for (int i = 0; i < nparams; i++)
        if (values[i] != NULL) {
            lens[i] = formats != NULL && formats[i] && lengths != NULL ? (size_t)lengths[i] : strlen(values[i]);
            extra += lens[i] + 1;
        }
    size_t arrays = (size_t)nparams * (sizeof(char *) + 2 * sizeof(int));
    lg_pg_req_t *r = calloc(1, sizeof(*r) + arrays + extra);
    r->p = p;
    r->kind = kind;
    r->nparams = nparams;
    char *mem = (char *)(r + 1);
    r->values = (const char **)mem;
    r->lengths = (int *)(mem + (size_t)nparams * sizeof(char *));
    r->formats = formats != NULL ? r->lengths + nparams : NULL;
    char *s = mem + arrays;
    if (sql != NULL) {
        r->sql = memcpy(s, sql, sqllen);
        s += sqllen;
    }
    for (int i = 0; i < nparams; i++) {
        r->lengths[i] = (int)lens[i];
        if (formats != NULL)
            r->formats[i] = formats[i];
        if (values[i] == NULL)
            continue;
        memcpy(s, values[i], lens[i]);
        s[lens[i]] = '\0';
        r->values[i] = s;
        s += lens[i] + 1;
    }
    free(lens);
    if (nparams == 0)
        r->values = NULL, r->lengths = NULL, r->formats = NULL;
    return r;
}

/* NULL with *err when the pool cannot take a request now */
static const char *refuse(lg_pg_t *p)
{
    if (p->config_err[0])
        return p->config_err;
    if (p->down) {
        static __thread char msg[300];
        snprintf(msg, sizeof(msg), "database unavailable: %s", p->why);
        return msg;
    }
    return NULL;
}

static int bad_params(int nparams, const char **err)
{
    if (nparams < 0 || nparams > 65535) {
        *err = "a statement takes at most 65535 parameters";
        return 1;
    }
    return 0;
}

static lg_pg_req_t *query(lg_pg_t *p, const char *sql, int nparams, const char *const *values, const int *lengths,
                          const int *formats, lg_pg_cb cb, void *data, const char **err, int borrow)
{
    const char *why = refuse(p);
    if (why != NULL || bad_params(nparams, err)) {
        if (why != NULL)
            *err = why;
        return NULL;
    }
    lg_pg_req_t *r = req_new(p, R_QUERY, sql, nparams, values, lengths, formats, borrow);
    r->cb = cb;
    r->data = data;
    lg_pg_conn_t *c = p->qhead == NULL ? pick(p, r) : NULL;
    if (c != NULL) {
        conn_send(c, r);
    } else {
        queue_push(p, r);
        grow(p);
    }
    return r;
}

lg_pg_req_t *lg_pg_query(lg_pg_t *p, const char *sql, int nparams, const char *const *values, const int *lengths,
                         const int *formats, lg_pg_cb cb, void *data, const char **err)
{
    return query(p, sql, nparams, values, lengths, formats, cb, data, err, 0);
}

lg_pg_req_t *lg_pg_query_text(lg_pg_t *p, const char *sql, const char *text, lg_pg_cb cb, void *data, const char **err)
{
    return query(p, sql, 1, &text, NULL, NULL, cb, data, err, 1);
}

lg_pg_req_t *lg_pg_acquire(lg_pg_t *p, lg_pg_acquire_cb cb, void *data, const char **err)
{
    const char *why = refuse(p);
    if (why != NULL) {
        *err = why;
        return NULL;
    }
    lg_pg_req_t *r = req_new(p, R_ACQUIRE, NULL, 0, NULL, NULL, NULL, 0);
    r->acb = cb;
    r->data = data;
    queue_push(p, r);
    grow(p);
    kick(p); /* the callback runs from the loop, never from here */
    return r;
}

lg_pg_req_t *lg_pg_conn_query(lg_pg_conn_t *c, const char *sql, int nparams, const char *const *values,
                              const int *lengths, const int *formats, lg_pg_cb cb, void *data, const char **err)
{
    if (c->dead) {
        *err = c->err;
        return NULL;
    }
    if (bad_params(nparams, err))
        return NULL;
    lg_pg_req_t *r = req_new(c->p, R_QUERY, sql, nparams, values, lengths, formats, 0);
    r->cb = cb;
    r->data = data;
    conn_send(c, r);
    return r;
}

void lg_pg_cancel(lg_pg_req_t *r)
{
    if (r == NULL)
        return;
    if (r->queued) {
        queue_unlink(r->p, r);
        req_free(r);
    } else { /* sent: the server runs it; the result is dropped at its sync point */
        r->cb = NULL;
        r->acb = NULL;
        r->data = NULL;
    }
}

void lg_pg_release(lg_pg_conn_t *c)
{
    if (c == NULL)
        return;
    c->borrowed = 0;
    if (c->orphan) {
        conn_free(c);
        return;
    }
    if (c->dead) { /* reaped by the kick already armed */
        return;
    }
    PGTransactionStatusType ts = PQtransactionStatus(c->pg);
    if (ts == PQTRANS_UNKNOWN) {
        conn_dead(c, "database connection lost: ", PQerrorMessage(c->pg));
        return;
    }
    if (ts != PQTRANS_IDLE || c->inflight > 0) {
        /* pipelined behind whatever is still running: no one else's statement can come before it */
        lg_pg_req_t *r = req_new(c->p, R_QUERY, "ROLLBACK", 0, NULL, NULL, NULL, 0);
        conn_send(c, r);
    }
    if (c->p->qhead != NULL)
        kick(c->p);
}

lg_pg_state_t lg_pg_state(const lg_pg_t *p, const char **why)
{
    if (p->config_err[0] || p->down) {
        if (why != NULL)
            *why = p->config_err[0] ? p->config_err : p->why;
        return LG_PG_DOWN;
    }
    int up = 0, connecting = 0;
    for (const lg_pg_conn_t *c = p->conns; c != NULL; c = c->next)
        if (!c->orphan && !c->dead) {
            up += c->state == C_READY;
            connecting += c->state != C_READY;
        }
    if (up > 0)
        return LG_PG_UP;
    if (connecting > 0 || p->used)
        return LG_PG_CONNECTING;
    return LG_PG_IDLE;
}

void lg_pg_stats(const lg_pg_t *p, int *open, int *busy, size_t *waiting)
{
    int o = 0, b = 0;
    for (const lg_pg_conn_t *c = p->conns; c != NULL; c = c->next)
        if (!c->orphan && !c->dead && c->state == C_READY) {
            o++;
            b += c->borrowed || c->inflight > 0;
        }
    if (open != NULL)
        *open = o;
    if (busy != NULL)
        *busy = b;
    if (waiting != NULL)
        *waiting = p->nqueued;
}

PGconn *lg_pg_connect_blocking(const char *url, const char *app, char *err, size_t errlen)
{
    if (lg_pg_load() != 0) {
        snprintf(err, errlen, "libpq (libpq.so.5) is not installed");
        return NULL;
    }
    /* libpq quotes the part of a URL it cannot parse, password included: check it first and say
     * only that it is invalid */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (opts == NULL) {
        PQfreemem(perr);
        snprintf(err, errlen, "DATABASE_URL is not a valid connection string");
        return NULL;
    }
    PQconninfoFree(opts);
    const char *keys[] = {"dbname", "connect_timeout", "fallback_application_name", NULL};
    const char *vals[] = {url, "5", app, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) { /* libpq's first line: never the password */
        const char *m = c ? PQerrorMessage(c) : "out of memory";
        snprintf(err, errlen, "cannot connect to the database: %.*s", (int)strcspn(m, "\n"), m);
        PQfinish(c);
        return NULL;
    }
    return c;
}

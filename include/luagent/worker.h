/**
 * worker.h - a worker thread: its own h2o context, event loop, listening socket (SO_REUSEPORT),
 * and runtime (VM + scheduler). Workers share nothing on the hot path; the main thread reaches
 * them only through `draining` and the wake eventfd.
 */
#ifndef LUAGENT_WORKER_H
#define LUAGENT_WORKER_H

#include <pthread.h>
#include <stdatomic.h>

#include "luagent/buf.h"
#include "luagent/sched.h"
#include "luagent/server.h"

struct lg_worker {
    int index;
    pthread_t thread;
    lg_server_t *server;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    lg_rt_t rt;
    int listen_fd;
    h2o_socket_t *listener;
    h2o_accept_ctx_t health_accept_ctx; /* LUAGENT_HEALTH_LISTEN: plain HTTP, its own host list */
    int health_fd;                      /* -1 without */
    h2o_socket_t *health_listener;
    int wake_fd;
    h2o_socket_t *wake_sock;
    lg_buf_t scratch; /* reply bodies are built here, then copied into the request by h2o */
    struct lg_link **links_by_fd; /* HTTP executions in flight whose connection they watch, by its
                                     descriptor (handlers.c, the client watch) */
    size_t nlinks_by_fd;
    struct lg_auth_entry *auth_cache; /* API keys checked recently (handlers.c) */
    struct lg_jwt_cache *jwt_cache;   /* JWTs verified recently (jwt.h) */
    size_t jobs_running;     /* async executions running here (jobs.c) */
    struct job *jobs;        /* ... and their list */
    struct lg_redis *jobs_conn;          /* REDIS_URL: this worker's stream reader (jobs.c) */
    struct lg_redis_req *jobs_reading;   /* its XREADGROUP in flight */
    lg_timer_t jobs_claim;               /* renews running jobs, reclaims abandoned ones */
    char consumer[96];                   /* its consumer name in the group */
    struct callback *callbacks; /* callback deliveries in progress (jobs.c) */
    int started;
};

/** Create a listening socket (SO_REUSEPORT, non-blocking) for one worker (main thread, before the
 *  workers start). var names the setting the address came from, for `err`. */
int lg_worker_listen(const char *var, const char *host, int port, char *err, size_t errlen);
/** Start a worker: its accept_ctx serves listen_fd (TLS when server->ssl_ctx is set), its
 *  health_accept_ctx serves health_fd (plain HTTP) when health_fd >= 0. Both listeners close when
 *  the worker drains. */
int lg_worker_start(lg_worker_t *w);
/** Wake a worker's loop (after setting server->draining). Thread-safe. */
void lg_worker_wake(lg_worker_t *w);

static inline lg_worker_t *lg_worker_of(h2o_req_t *req)
{
    return (lg_worker_t *)((char *)req->conn->ctx - offsetof(lg_worker_t, ctx));
}

#endif

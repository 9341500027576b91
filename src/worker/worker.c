#include "luagent/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "luagent/agents.h"
#include "luagent/jobs.h"
#include "luagent/log.h"
#include "luagent/metrics.h"
#include "luagent/store.h"

int lg_worker_listen(const char *var, const char *host, int port, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICHOST}, *ai;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "%s: '%s' is not a numeric address: %s", var, host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) != 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
        listen(fd, 4096) != 0) {
        snprintf(err, errlen, "%s: cannot listen on %s:%d: %s", var, host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* listener->data is the accept_ctx of that listener (the main one or the health one) */
static void on_accept(h2o_socket_t *listener, const char *err)
{
    h2o_accept_ctx_t *actx = listener->data;
    if (err != NULL)
        return;
    for (int i = 0; i < 32; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        h2o_accept(actx, sock);
    }
}

static h2o_socket_t *listen_start(h2o_evloop_t *loop, int fd, h2o_accept_ctx_t *actx)
{
    h2o_socket_t *sock = h2o_evloop_socket_create(loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    sock->data = actx;
    h2o_socket_read_start(sock, on_accept);
    return sock;
}

static void listen_close(h2o_socket_t **sock)
{
    if (*sock == NULL)
        return;
    h2o_socket_read_stop(*sock);
    h2o_socket_close(*sock); /* closes the fd: the kernel sends new connections elsewhere */
    *sock = NULL;
}

static void on_wake(h2o_socket_t *sock, const char *err)
{
    lg_worker_t *w = sock->data;
    uint64_t n;
    while (read(w->wake_fd, &n, sizeof(n)) > 0)
        ;
}

void lg_worker_wake(lg_worker_t *w)
{
    uint64_t one = 1;
    if (write(w->wake_fd, &one, sizeof(one)) < 0) {
        /* the counter is saturated: the worker is awake anyway */
    }
}

static void drain(lg_worker_t *w)
{
    const lg_config_t *cfg = w->server->cfg;
    listen_close(&w->listener);
    listen_close(&w->health_listener);
    h2o_context_request_shutdown(&w->ctx);
    lg_jobs_abandon(w); /* queued async jobs are recorded failed, not lost */
    uint64_t deadline = lg_now_mono_ms() + (uint64_t)cfg->drain_timeout_ms;
    while ((w->rt.inflight > 0 || w->callbacks != NULL ||
            (lg_recorder_pending(w->rt.recorder) > 0 && !lg_recorder_away(w->rt.recorder))) &&
           lg_now_mono_ms() < deadline)
        lg_rt_run_once(&w->rt, 50);
    if (w->rt.inflight > 0) {
        lg_log(LG_LOG_WARN, "worker %d: drain timeout, cancelling %zu executions", w->index, w->rt.inflight);
        lg_rt_cancel_all(&w->rt);
    }
    /* let the last replies reach their sockets */
    uint64_t flush_until = lg_now_mono_ms() + 200;
    while (lg_now_mono_ms() < flush_until &&
           (!h2o_linklist_is_empty(&w->ctx.http1._conns) || !h2o_linklist_is_empty(&w->ctx.http2._conns)))
        lg_rt_run_once(&w->rt, 10);
}

static void *worker_main(void *arg)
{
    lg_worker_t *w = arg;
    lg_log_buffered(1);
    while (!atomic_load(&w->server->draining)) {
        w->rt.cfg = w->server->cfg; /* a SIGHUP reload takes effect here */
        lg_rt_run_once(&w->rt, 1000);
        lg_jobs_poll(w);
    }
    drain(w);
    lg_log_buffered(0);
    return NULL;
}

int lg_worker_start(lg_worker_t *w)
{
    const lg_config_t *cfg = w->server->cfg;
    h2o_evloop_t *loop = h2o_evloop_create();
    h2o_context_init(&w->ctx, loop, &w->server->globalconf);
    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = w->server->main_hosts;
    w->accept_ctx.ssl_ctx = w->server->ssl_ctx;
    w->health_accept_ctx.ctx = &w->ctx;
    w->health_accept_ctx.hosts = w->server->health_hosts;
    if (lg_rt_init(&w->rt, cfg, loop) != 0)
        return -1;
    w->rt.owner = w;
    if (cfg->metrics)
        lg_metrics_attach(&w->rt, w->index);
    if (cfg->database_url != NULL)
        w->rt.recorder = lg_recorder_new(&w->rt, cfg->spill_dir, w->index);
    if (cfg->redis_url != NULL)
        lg_rt_redis(&w->rt); /* connect now: /ready and the first cache lookup find it up */
    lg_timer_init(&w->jobs_claim, NULL);
    w->listener = listen_start(loop, w->listen_fd, &w->accept_ctx);
    if (w->health_fd >= 0)
        w->health_listener = listen_start(loop, w->health_fd, &w->health_accept_ctx);
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->wake_sock = h2o_evloop_socket_create(loop, w->wake_fd, H2O_SOCKET_FLAG_DONT_READ);
    w->wake_sock->data = w;
    h2o_socket_read_start(w->wake_sock, on_wake);
    lg_agents_sync(&w->rt); /* load every agent before the first request */
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return -1;
    w->started = 1;
    return 0;
}

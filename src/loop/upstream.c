#include "luagent/upstream.h"

#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/log.h"

#define POOL_CAPACITY 4096
#define POOL_IDLE_MS 60000
#define IO_TIMEOUT_MS 600000 /* an upper bound only: each request has its own deadline timer */

typedef struct origin {
    int ssl;
    uint16_t port;
    char *host;
    h2o_socketpool_t pool;
} origin_t;

struct lg_upstream {
    h2o_loop_t *loop;
    h2o_http1client_ctx_t ctx;
    h2o_timeout_t io_timeout;
    h2o_multithread_queue_t *getaddr_queue;
    h2o_multithread_receiver_t getaddr_receiver;
    SSL_CTX *ssl_ctx;
    origin_t **origins;
    size_t norigins;
};

lg_upstream_t *lg_upstream_new(h2o_loop_t *loop)
{
    lg_upstream_t *u = calloc(1, sizeof(*u));
    u->loop = loop;
    h2o_timeout_init(loop, &u->io_timeout, IO_TIMEOUT_MS);
    u->getaddr_queue = h2o_multithread_create_queue(loop);
    h2o_multithread_register_receiver(u->getaddr_queue, &u->getaddr_receiver, h2o_hostinfo_getaddr_receiver);
    u->ctx.loop = loop;
    u->ctx.getaddr_receiver = &u->getaddr_receiver;
    u->ctx.io_timeout = &u->io_timeout;
    return u;
}

h2o_http1client_ctx_t *lg_upstream_ctx(lg_upstream_t *u) { return &u->ctx; }

/* Loading the system CA store costs ~50 ms: only runtimes that talk TLS pay it, on first use. */
static void ensure_tls(lg_upstream_t *u)
{
    if (u->ssl_ctx != NULL)
        return;
    u->ssl_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(u->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(u->ssl_ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_default_verify_paths(u->ssl_ctx) != 1)
        lg_log(LG_LOG_WARN, "no system CA certificates: TLS upstreams will fail verification");
    u->ctx.ssl_ctx = u->ssl_ctx;
}

h2o_socketpool_t *lg_upstream_pool(lg_upstream_t *u, const h2o_url_t *url)
{
    int ssl = url->scheme == &H2O_URL_SCHEME_HTTPS;
    if (ssl)
        ensure_tls(u);
    uint16_t port = h2o_url_get_port(url);
    for (size_t i = 0; i < u->norigins; i++) {
        origin_t *o = u->origins[i];
        if (o->ssl == ssl && o->port == port && strlen(o->host) == url->host.len &&
            memcmp(o->host, url->host.base, url->host.len) == 0)
            return &o->pool;
    }
    origin_t *o = calloc(1, sizeof(*o));
    o->ssl = ssl;
    o->port = port;
    o->host = strndup(url->host.base, url->host.len);
    h2o_socketpool_init_by_hostport(&o->pool, h2o_iovec_init(o->host, url->host.len), port, ssl, POOL_CAPACITY);
    h2o_socketpool_set_timeout(&o->pool, u->loop, POOL_IDLE_MS);
    u->origins = realloc(u->origins, (u->norigins + 1) * sizeof(*u->origins));
    u->origins[u->norigins++] = o;
    return &o->pool;
}

void lg_upstream_free(lg_upstream_t *u)
{
    if (u == NULL)
        return;
    for (size_t i = 0; i < u->norigins; i++) {
        h2o_socketpool_dispose(&u->origins[i]->pool);
        free(u->origins[i]->host);
        free(u->origins[i]);
    }
    free(u->origins);
    h2o_multithread_unregister_receiver(u->getaddr_queue, &u->getaddr_receiver);
    h2o_multithread_destroy_queue(u->getaddr_queue);
    free(u->getaddr_queue); /* 2.2.5's evloop destroy_queue closes the queue's socket but leaks its struct */
    h2o_timeout_dispose(u->loop, &u->io_timeout);
    if (u->ssl_ctx != NULL)
        SSL_CTX_free(u->ssl_ctx);
    free(u);
}

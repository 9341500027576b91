/**
 * upstream.h - H2O's own HTTP/1.1 client on a worker's loop: the provider hot path (DESIGN §8:
 * about 35-40 µs less per call than libcurl). One client context per runtime, a keep-alive socket
 * pool per origin (scheme, host, port), host names resolved by h2o's resolver threads (never on
 * the loop), TLS verified against the system CA store with the host name checked.
 * libcurl (curlm.h) stays the general client: HTTP/2, proxies, everything else.
 */
#ifndef LUAGENT_UPSTREAM_H
#define LUAGENT_UPSTREAM_H

#define H2O_USE_LIBUV 0
#include <h2o.h> /* h2o_header_t */
#include <h2o/hostinfo.h>
#include <h2o/http1client.h>
#include <h2o/url.h>

typedef struct lg_upstream lg_upstream_t;

lg_upstream_t *lg_upstream_new(h2o_loop_t *loop);
/** Close the pools. Every request must have been cancelled or finished before. */
void lg_upstream_free(lg_upstream_t *u);
h2o_http1client_ctx_t *lg_upstream_ctx(lg_upstream_t *u);
/** The keep-alive pool for the URL's origin (created on first use). */
h2o_socketpool_t *lg_upstream_pool(lg_upstream_t *u, const h2o_url_t *url);

#endif

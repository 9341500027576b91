/**
 * upstream.h - the provider hot path's HTTP/1.1 client, on H2O's sockets and a worker's loop
 * (DESIGN §8: about 35-40 µs less per call than libcurl).
 *
 * One client per runtime. Connections are kept per origin (scheme, host, port) and stay attached
 * to the loop while idle, read-armed: a server that closes one is seen at once, and taking one
 * costs no system call (H2O 2.2's socket pool detaches and re-attaches a socket on every use: a
 * MSG_PEEK recv, two fcntl and three epoll_ctl per request). A request sent on a reused
 * connection that the server closed before answering a byte is sent again once on a new one.
 * Host names are resolved by H2O's resolver threads (never on the loop); numeric hosts are not
 * resolved. TLS is verified against the system CA store, with the host name checked.
 * libcurl (curlm.h) stays the general client: HTTP/2, proxies, everything else.
 */
#ifndef LUAGENT_UPSTREAM_H
#define LUAGENT_UPSTREAM_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <h2o/url.h>

typedef struct lg_upstream lg_upstream_t;
typedef struct lg_upstream_req lg_upstream_req_t;

/** A response header as parsed: name and value point into the input, valid during on_head only. */
typedef struct lg_upstream_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} lg_upstream_header_t;

/** What a request reports, in this order: on_head once (not for a failure before the head), on_body
 *  for each piece of the body as it arrives, then on_done once (err NULL: the whole response
 *  arrived). When on_body returns non-zero the request ends there, without on_done. After
 *  on_done, or lg_upstream_cancel, the request is gone. No callback runs after a cancel. */
typedef struct lg_upstream_cbs {
    void (*on_head)(void *data, int status, const lg_upstream_header_t *headers, size_t n);
    int (*on_body)(void *data, const char *p, size_t len);
    void (*on_done)(void *data, const char *err);
} lg_upstream_cbs_t;

lg_upstream_t *lg_upstream_new(h2o_loop_t *loop);
/** Close the idle connections. Every request must have been cancelled or finished before. */
void lg_upstream_free(lg_upstream_t *u);

/** Send `req` (the whole HTTP/1.1 request: head and body; the caller keeps it alive until on_done
 *  or cancel) to the URL's origin. *out is set before anything else happens, so an error found at
 *  once (a refused connection to a local port) may already call on_done inside this call. */
void lg_upstream_send(lg_upstream_req_t **out, lg_upstream_t *u, const h2o_url_t *url, h2o_iovec_t req,
                      const lg_upstream_cbs_t *cbs, void *data);
void lg_upstream_cancel(lg_upstream_req_t *r);

#endif

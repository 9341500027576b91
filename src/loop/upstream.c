#include "luagent/upstream.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <h2o/hostinfo.h>

#include "luagent/log.h"

#define IDLE_MS 60000       /* an idle connection older than this is closed */
#define IDLE_MAX 1024       /* idle connections kept per origin */
#define MAX_HEADERS 100
#define MAX_HEAD_BYTES (64u << 10)

/* picohttpparser, as built into libh2o 2.2 (which installs no header for it) */
struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
struct phr_chunked_decoder {
    size_t bytes_left_in_chunk;
    char consume_trailer;
    char _hex_count;
    char _state;
};
int phr_parse_response(const char *buf, size_t len, int *minor_version, int *status, const char **msg, size_t *msg_len,
                       struct phr_header *headers, size_t *num_headers, size_t last_len);
ssize_t phr_decode_chunked(struct phr_chunked_decoder *decoder, char *buf, size_t *bufsz);

typedef struct origin origin_t;
typedef struct conn conn_t;

struct conn {
    h2o_socket_t *sock; /* sock->data is this conn */
    origin_t *o;
    lg_upstream_req_t *req; /* NULL while idle */
    conn_t *prev, *next;    /* the origin's idle list, newest first */
    uint64_t idle_since;
};

struct origin {
    int ssl;
    uint16_t port;
    char *host; /* also the TLS server name */
    char serv[8];
    struct sockaddr_storage addr; /* a numeric host's address (addrlen 0: resolve the name) */
    socklen_t addrlen;
    conn_t *idle, *idle_tail;
    size_t nidle;
};

struct lg_upstream {
    h2o_loop_t *loop;
    h2o_multithread_queue_t *getaddr_queue;
    h2o_multithread_receiver_t getaddr_receiver;
    SSL_CTX *ssl_ctx;
    origin_t **origins;
    size_t norigins;
};

enum { ST_CONNECTING, ST_WRITING, ST_HEAD, ST_BODY };
enum { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE };

struct lg_upstream_req {
    lg_upstream_t *u;
    origin_t *o;
    conn_t *conn;
    h2o_hostinfo_getaddr_req_t *getaddr;
    h2o_iovec_t buf;
    const lg_upstream_cbs_t *cbs;
    void *data;
    int state, framing, keepalive, reused, retried;
    size_t left; /* BODY_LENGTH: bytes still to come */
    struct phr_chunked_decoder chunked;
};

static void start_connect(lg_upstream_req_t *r);

/* ---- connections and the idle lists ---- */

static void idle_unlink(conn_t *c)
{
    origin_t *o = c->o;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        o->idle = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        o->idle_tail = c->prev;
    c->prev = c->next = NULL;
    o->nidle--;
}

static void conn_free(conn_t *c)
{
    h2o_socket_close(c->sock);
    free(c);
}

/* an idle one */
static void conn_close(conn_t *c)
{
    idle_unlink(c);
    conn_free(c);
}

static void idle_put(lg_upstream_t *u, conn_t *c)
{
    origin_t *o = c->o;
    uint64_t now = h2o_now(u->loop);
    c->req = NULL;
    c->idle_since = now;
    c->prev = NULL;
    c->next = o->idle;
    if (o->idle != NULL)
        o->idle->prev = c;
    else
        o->idle_tail = c;
    o->idle = c;
    o->nidle++;
    while (o->idle_tail != NULL && (o->nidle > IDLE_MAX || now - o->idle_tail->idle_since > IDLE_MS))
        conn_close(o->idle_tail);
}

/* the newest idle connection, if it is young enough (else every one is too old: all are closed) */
static conn_t *idle_take(lg_upstream_t *u, origin_t *o)
{
    conn_t *c = o->idle;
    if (c == NULL)
        return NULL;
    if (h2o_now(u->loop) - c->idle_since > IDLE_MS) {
        while (o->idle != NULL)
            conn_close(o->idle);
        return NULL;
    }
    idle_unlink(c);
    return c;
}

/* ---- the end of a request ---- */

static void finish(lg_upstream_req_t *r, const char *err)
{
    conn_t *c = r->conn;
    if (r->getaddr != NULL)
        h2o_hostinfo_getaddr_cancel(r->getaddr);
    if (c != NULL) {
        if (err == NULL && r->keepalive && c->sock->input->size == 0)
            idle_put(r->u, c);
        else
            conn_free(c);
    }
    const lg_upstream_cbs_t *cbs = r->cbs;
    void *data = r->data;
    free(r);
    cbs->on_done(data, err);
}

/* a read or write failed, or the server closed the connection */
static void io_failed(lg_upstream_req_t *r, const char *err)
{
    conn_t *c = r->conn;
    if (r->state == ST_BODY && r->framing == BODY_UNTIL_CLOSE && err == h2o_socket_error_closed) {
        r->keepalive = 0;
        finish(r, NULL);
        return;
    }
    if (r->reused && !r->retried && r->state <= ST_HEAD && c->sock->input->size == 0) {
        /* an idle connection the server closed as we took it: nothing was answered, send again */
        conn_free(c);
        r->conn = NULL;
        r->retried = 1;
        r->reused = 0;
        start_connect(r);
        return;
    }
    if (err == h2o_socket_error_closed)
        err = r->state == ST_BODY ? "connection closed before the end of the response"
                                  : "connection closed before the response";
    finish(r, err);
}

/* ---- the response ---- */

static int header_is(const struct phr_header *h, const char *name, size_t len)
{
    return h->name_len == len && strncasecmp(h->name, name, len) == 0;
}

/* does the comma-separated value list contain `token` (case-insensitive)? */
static int has_token(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i + tl <= n; i++)
        if (strncasecmp(v + i, token, tl) == 0 && (i == 0 || v[i - 1] == ',' || v[i - 1] == ' ') &&
            (i + tl == n || v[i + tl] == ',' || v[i + tl] == ' ' || v[i + tl] == ';'))
            return 1;
    return 0;
}

/* 1: the head is in (r->state is ST_BODY); 0: more bytes needed; -1: r is gone */
static int read_head(lg_upstream_req_t *r)
{
    h2o_socket_t *sock = r->conn->sock;
    for (;;) {
        struct phr_header h[MAX_HEADERS];
        size_t nh = MAX_HEADERS, msglen;
        int minor, status;
        const char *msg;
        int n = phr_parse_response(sock->input->bytes, sock->input->size, &minor, &status, &msg, &msglen, h, &nh, 0);
        if (n == -2) {
            if (sock->input->size <= MAX_HEAD_BYTES)
                return 0;
            finish(r, "the response head is too large");
            return -1;
        }
        if (n < 0) {
            finish(r, "invalid response");
            return -1;
        }
        if (status >= 100 && status < 200 && status != 101) { /* 100 Continue and the like: skip */
            h2o_buffer_consume(&sock->input, (size_t)n);
            continue;
        }
        int chunked = 0, has_length = 0;
        size_t length = 0;
        r->keepalive = minor >= 1;
        for (size_t i = 0; i < nh; i++) {
            if (h[i].name == NULL)
                continue;
            if (header_is(&h[i], "connection", 10)) {
                if (has_token(h[i].value, h[i].value_len, "close"))
                    r->keepalive = 0;
                else if (has_token(h[i].value, h[i].value_len, "keep-alive"))
                    r->keepalive = 1;
            } else if (header_is(&h[i], "transfer-encoding", 17)) {
                chunked = has_token(h[i].value, h[i].value_len, "chunked");
            } else if (header_is(&h[i], "content-length", 14)) {
                size_t v = 0, k = 0;
                for (; k < h[i].value_len && h[i].value[k] >= '0' && h[i].value[k] <= '9' && v < ((size_t)1 << 50); k++)
                    v = v * 10 + (size_t)(h[i].value[k] - '0');
                if (k == 0 || k != h[i].value_len || (has_length && v != length)) {
                    finish(r, "invalid content-length in the response");
                    return -1;
                }
                has_length = 1, length = v;
            }
        }
        if (status == 204 || status == 304)
            r->framing = BODY_NONE;
        else if (chunked)
            r->framing = BODY_CHUNKED, r->chunked.consume_trailer = 1; /* up to the last CRLF */
        else if (has_length)
            r->framing = length > 0 ? BODY_LENGTH : BODY_NONE, r->left = length;
        else
            r->framing = BODY_UNTIL_CLOSE, r->keepalive = 0;
        r->cbs->on_head(r->data, status, (const lg_upstream_header_t *)h, nh);
        h2o_buffer_consume(&sock->input, (size_t)n);
        r->state = ST_BODY;
        if (r->framing == BODY_NONE) {
            if (sock->input->size > 0)
                r->keepalive = 0;
            finish(r, NULL);
            return -1;
        }
        return 1;
    }
}

static void read_body(lg_upstream_req_t *r)
{
    h2o_socket_t *sock = r->conn->sock;
    h2o_buffer_t *in = sock->input;
    size_t n = in->size;
    ssize_t end = -2; /* >= 0: the body is complete, with that many bytes after it */
    switch (r->framing) {
    case BODY_LENGTH:
        if (n >= r->left)
            end = (ssize_t)(n - r->left), n = r->left;
        r->left -= n;
        break;
    case BODY_CHUNKED:
        end = phr_decode_chunked(&r->chunked, in->bytes, &n);
        if (end == -1) {
            finish(r, "invalid chunked encoding in the response");
            return;
        }
        break;
    default:
        break;
    }
    if (n > 0 && r->cbs->on_body(r->data, in->bytes, n) != 0) {
        lg_upstream_cancel(r); /* the caller ended it: no on_done */
        return;
    }
    h2o_buffer_consume(&sock->input, in->size);
    if (end >= 0) {
        if (end > 0)
            r->keepalive = 0; /* bytes after the response: the connection is not trusted again */
        finish(r, NULL);
    }
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->data;
    lg_upstream_req_t *r = c->req;
    if (r == NULL) { /* idle: the server closed it, or sent what nobody asked for */
        conn_close(c);
        return;
    }
    if (err != NULL) {
        io_failed(r, err);
        return;
    }
    if (r->state == ST_WRITING) /* an early answer waits in the buffer until the request is out */
        return;
    if (r->state == ST_HEAD && read_head(r) <= 0)
        return;
    read_body(r);
}

static void on_written(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->data;
    lg_upstream_req_t *r = c->req;
    if (r == NULL)
        return;
    if (err != NULL) {
        io_failed(r, err);
        return;
    }
    r->state = ST_HEAD;
    if (sock->input->size > 0)
        on_read(sock, NULL);
}

static void send_request(lg_upstream_req_t *r)
{
    r->state = ST_WRITING;
    h2o_socket_write(r->conn->sock, &r->buf, 1, on_written);
}

/* ---- connecting ---- */

static void on_handshake(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->data;
    if (err != NULL) {
        finish(c->req, err);
        return;
    }
    h2o_socket_read_start(sock, on_read);
    send_request(c->req);
}

static void on_connect(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->data;
    lg_upstream_req_t *r = c->req;
    if (err != NULL) {
        finish(r, err);
        return;
    }
    if (r->o->ssl) {
        h2o_socket_ssl_handshake(sock, r->u->ssl_ctx, r->o->host, on_handshake);
        return;
    }
    h2o_socket_read_start(sock, on_read);
    send_request(r);
}

static void connect_to(lg_upstream_req_t *r, struct sockaddr *addr, socklen_t len)
{
    h2o_socket_t *sock = h2o_socket_connect(r->u->loop, addr, len, on_connect);
    if (sock == NULL) {
        finish(r, h2o_socket_error_conn_fail);
        return;
    }
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    c->sock = sock;
    c->o = r->o;
    c->req = r;
    sock->data = c;
    r->conn = c;
    r->state = ST_CONNECTING;
}

static void on_getaddr(h2o_hostinfo_getaddr_req_t *req, const char *errstr, struct addrinfo *res, void *data)
{
    (void)req;
    lg_upstream_req_t *r = data;
    r->getaddr = NULL;
    if (errstr != NULL) {
        finish(r, errstr);
        return;
    }
    struct addrinfo *ai = h2o_hostinfo_select_one(res);
    connect_to(r, ai->ai_addr, ai->ai_addrlen);
}

static void start_connect(lg_upstream_req_t *r)
{
    origin_t *o = r->o;
    r->state = ST_CONNECTING;
    if (o->addrlen != 0) {
        connect_to(r, (struct sockaddr *)&o->addr, o->addrlen);
        return;
    }
    r->getaddr = h2o_hostinfo_getaddr(&r->u->getaddr_receiver, h2o_iovec_init(o->host, strlen(o->host)),
                                      h2o_iovec_init(o->serv, strlen(o->serv)), AF_UNSPEC, SOCK_STREAM, IPPROTO_TCP,
                                      AI_ADDRCONFIG | AI_NUMERICSERV, on_getaddr, r);
}

/* ---- origins ---- */

/* The host name check is ours, inside OpenSSL's verification of the peer's certificate, against
 * the name h2o sends as SNI (the origin's host). h2o 2.2.5 checks it only when the handshake ends
 * with nothing left to send, which a TLS 1.3 client never does (its Finished goes out last): with
 * h2o's check alone, any trusted certificate was accepted for any host. */
static int verify_host(int ok, X509_STORE_CTX *store)
{
    if (!ok || X509_STORE_CTX_get_error_depth(store) != 0)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    const char *host = ssl != NULL ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
    X509 *cert = X509_STORE_CTX_get_current_cert(store);
    unsigned char ip[16];
    int match = host != NULL && cert != NULL &&
                ((inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1)
                     ? X509_check_ip_asc(cert, host, 0) == 1
                     : X509_check_host(cert, host, strlen(host), 0, NULL) == 1);
    if (!match)
        X509_STORE_CTX_set_error(store, X509_V_ERR_HOSTNAME_MISMATCH);
    return match;
}

/* Loading the system CA store costs ~50 ms: only runtimes that talk TLS pay it, on first use. */
static void ensure_tls(lg_upstream_t *u)
{
    if (u->ssl_ctx != NULL)
        return;
    u->ssl_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(u->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(u->ssl_ctx, SSL_VERIFY_PEER, verify_host);
    if (SSL_CTX_set_default_verify_paths(u->ssl_ctx) != 1)
        lg_log(LG_LOG_WARN, "no system CA certificates: TLS upstreams will fail verification");
}

static origin_t *origin_of(lg_upstream_t *u, const h2o_url_t *url)
{
    int ssl = url->scheme == &H2O_URL_SCHEME_HTTPS;
    uint16_t port = h2o_url_get_port(url);
    for (size_t i = 0; i < u->norigins; i++) {
        origin_t *o = u->origins[i];
        if (o->ssl == ssl && o->port == port && strlen(o->host) == url->host.len &&
            memcmp(o->host, url->host.base, url->host.len) == 0)
            return o;
    }
    if (ssl)
        ensure_tls(u);
    origin_t *o = calloc(1, sizeof(*o));
    if (o == NULL)
        abort();
    o->ssl = ssl;
    o->port = port;
    o->host = strndup(url->host.base, url->host.len);
    snprintf(o->serv, sizeof(o->serv), "%u", (unsigned)port);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&o->addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&o->addr;
    if (inet_pton(AF_INET, o->host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        o->addrlen = sizeof(*in4);
    } else if (inet_pton(AF_INET6, o->host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        o->addrlen = sizeof(*in6);
    }
    u->origins = realloc(u->origins, (u->norigins + 1) * sizeof(*u->origins));
    u->origins[u->norigins++] = o;
    return o;
}

/* ---- the API ---- */

void lg_upstream_send(lg_upstream_req_t **out, lg_upstream_t *u, const h2o_url_t *url, h2o_iovec_t req,
                      const lg_upstream_cbs_t *cbs, void *data)
{
    lg_upstream_req_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        abort();
    *out = r;
    r->u = u;
    r->o = origin_of(u, url);
    r->buf = req;
    r->cbs = cbs;
    r->data = data;
    conn_t *c = idle_take(u, r->o);
    if (c == NULL) {
        start_connect(r);
        return;
    }
    c->req = r;
    r->conn = c;
    r->reused = 1;
    send_request(r);
}

void lg_upstream_cancel(lg_upstream_req_t *r)
{
    if (r->getaddr != NULL)
        h2o_hostinfo_getaddr_cancel(r->getaddr);
    if (r->conn != NULL)
        conn_free(r->conn);
    free(r);
}

lg_upstream_t *lg_upstream_new(h2o_loop_t *loop)
{
    lg_upstream_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        abort();
    u->loop = loop;
    u->getaddr_queue = h2o_multithread_create_queue(loop);
    h2o_multithread_register_receiver(u->getaddr_queue, &u->getaddr_receiver, h2o_hostinfo_getaddr_receiver);
    return u;
}

void lg_upstream_free(lg_upstream_t *u)
{
    if (u == NULL)
        return;
    for (size_t i = 0; i < u->norigins; i++) {
        origin_t *o = u->origins[i];
        while (o->idle != NULL)
            conn_close(o->idle);
        free(o->host);
        free(o);
    }
    free(u->origins);
    h2o_multithread_unregister_receiver(u->getaddr_queue, &u->getaddr_receiver);
    h2o_multithread_destroy_queue(u->getaddr_queue);
    free(u->getaddr_queue); /* 2.2.5's evloop destroy_queue closes the queue's socket but leaks its struct */
    if (u->ssl_ctx != NULL)
        SSL_CTX_free(u->ssl_ctx);
    free(u);
}

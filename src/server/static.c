/* The dashboard's static files (LUAGENT_WEB_DIR, served at /), from memory.
 *
 * The main thread reads the whole directory into a snapshot (at start, when inotify reports a
 * change under it, on SIGHUP); workers answer from the snapshot, so no worker thread ever touches
 * the disk. The "/" path holds two handlers: the API handler (handlers.c), which answers every
 * route it knows and every path under /api/ and /v1/ and passes on (returns -1) only GET and HEAD
 * requests for other paths (lg_static_claims), then on_static() below: a file of the snapshot
 * (Content-Type by extension, ETag, Last-Modified, 304; index.html for a directory's "/"; a
 * directory without its slash is a 301; never a listing), else the usual 404 JSON. A URL can only
 * name a file the walk found, so no path leaves the directory. The dashboard routes in the URL
 * fragment (#/executions/...), so every missing file is a plain 404.
 *
 * Workers copy a file into the request's pool under a mutex (the dashboard's files are small and
 * fetched once per page load, with 304s after that); the main thread swaps a new snapshot in under
 * the same mutex and frees the old one. */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "luagent/ids.h"
#include "luagent/log.h"
#include "luagent/server.h"

/* What the dashboard may load: its own files and its own API, nothing inline, nothing framed. */
#define CSP                                                                                                           \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "           \
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

#define MAX_FILES 4096
#define MAX_BYTES (64u << 20) /* the whole snapshot */
#define MAX_DEPTH 8

typedef struct {
    char *path; /* URL path: "/sub/page.txt"; a directory: "/sub/" */
    char *data; /* NULL for a directory */
    size_t len;
    const char *type;
    char etag[48];
    char last_modified[H2O_TIMESTR_RFC1123_LEN + 1];
    time_t mtime;
} web_file_t;

typedef struct {
    web_file_t *files; /* sorted by path */
    size_t n, cap, bytes;
} web_t;

static struct {
    pthread_mutex_t lock;
    web_t *cur;
    char *dir;
} W = {.lock = PTHREAD_MUTEX_INITIALIZER};

static const char *type_of(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {{"html", "text/html; charset=utf-8"},  {"js", "text/javascript; charset=utf-8"},
                 {"mjs", "text/javascript; charset=utf-8"}, {"css", "text/css; charset=utf-8"},
                 {"svg", "image/svg+xml"},             {"json", "application/json"},
                 {"txt", "text/plain; charset=utf-8"}, {"png", "image/png"},
                 {"ico", "image/x-icon"},              {"woff2", "font/woff2"},
                 {"map", "application/json"}};
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (dot != NULL && (slash == NULL || dot > slash))
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            if (strcmp(dot + 1, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

static void web_free(web_t *w)
{
    if (w == NULL)
        return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->files[i].path);
        free(w->files[i].data);
    }
    free(w->files);
    free(w);
}

static web_file_t *add(web_t *w, const char *path)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        web_file_t *f = realloc(w->files, cap * sizeof(*f));
        if (f == NULL)
            return NULL;
        w->files = f, w->cap = cap;
    }
    web_file_t *f = &w->files[w->n];
    memset(f, 0, sizeof(*f));
    if ((f->path = strdup(path)) == NULL)
        return NULL;
    w->n++;
    return f;
}

static int read_file(const char *fs, const struct stat *st, web_file_t *f)
{
    int fd = open(fs, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    f->data = malloc((size_t)st->st_size + 1);
    size_t got = 0;
    ssize_t r = 0;
    while (f->data != NULL && got < (size_t)st->st_size && (r = read(fd, f->data + got, (size_t)st->st_size - got)) > 0)
        got += (size_t)r;
    close(fd);
    if (f->data == NULL || got != (size_t)st->st_size)
        return -1; /* changed while read: the next event reloads it */
    f->len = got;
    f->type = type_of(f->path);
    f->mtime = st->st_mtime;
    snprintf(f->etag, sizeof(f->etag), "\"%016llx-%zx\"", (unsigned long long)lg_fnv1a(f->data, f->len, LG_FNV_OFFSET),
             f->len);
    struct tm gmt;
    gmtime_r(&f->mtime, &gmt);
    h2o_time2str_rfc1123(f->last_modified, &gmt);
    return 0;
}

/* fs: the directory on disk; url: its URL path ("/", "/sub/") */
static void walk(web_t *w, const char *fs, const char *url, int depth)
{
    DIR *d = opendir(fs);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') /* also a Kubernetes ConfigMap's "..data" */
            continue;
        char fpath[4096], upath[4096];
        struct stat st;
        if ((size_t)snprintf(fpath, sizeof(fpath), "%s/%s", fs, de->d_name) >= sizeof(fpath) ||
            (size_t)snprintf(upath, sizeof(upath), "%s%s", url, de->d_name) >= sizeof(upath) - 1 ||
            stat(fpath, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < MAX_DEPTH) {
            strcat(upath, "/");
            if (add(w, upath) != NULL)
                walk(w, fpath, upath, depth + 1);
        } else if (S_ISREG(st.st_mode) && w->n < MAX_FILES && w->bytes + (size_t)st.st_size <= MAX_BYTES) {
            web_file_t *f = add(w, upath);
            if (f != NULL && read_file(fpath, &st, f) == 0)
                w->bytes += f->len;
            else if (f != NULL) { /* unreadable: not served */
                free(f->path);
                free(f->data);
                w->n--;
            }
        }
    }
    closedir(d);
}

static int by_path(const void *a, const void *b) { return strcmp(((const web_file_t *)a)->path, ((const web_file_t *)b)->path); }

void lg_static_reload(void)
{
    if (W.dir == NULL)
        return;
    web_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return;
    walk(w, W.dir, "/", 0);
    qsort(w->files, w->n, sizeof(*w->files), by_path);
    pthread_mutex_lock(&W.lock);
    web_t *old = W.cur;
    W.cur = w;
    pthread_mutex_unlock(&W.lock);
    web_free(old);
}

/* under W.lock */
static const web_file_t *find(const char *path, size_t len)
{
    const web_t *w = W.cur;
    size_t lo = 0, hi = w != NULL ? w->n : 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *p = w->files[mid].path;
        int c = strncmp(p, path, len);
        if (c == 0)
            c = p[len] != '\0';
        if (c == 0)
            return &w->files[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int lg_static_claims(h2o_req_t *req)
{
    h2o_iovec_t m = req->method, p = req->path_normalized;
    if (!h2o_memis(m.base, m.len, H2O_STRLIT("GET")) && !h2o_memis(m.base, m.len, H2O_STRLIT("HEAD")))
        return 0;
    if ((p.len >= 4 && memcmp(p.base, "/api", 4) == 0 && (p.len == 4 || p.base[4] == '/')) ||
        (p.len >= 3 && memcmp(p.base, "/v1", 3) == 0 && (p.len == 3 || p.base[3] == '/')))
        return 0;
    return 1;
}

static int not_found(h2o_req_t *req)
{
    uint64_t start_ns = lg_now_mono_ns();
    char request_id[72];
    lg_request_id(req, request_id);
    memset(&req->res.headers, 0, sizeof(req->res.headers)); /* the reply sets its own */
    lg_reply_error(req, 404, "not_found", "no such route or file", request_id);
    lg_access_log(req, 404, request_id, start_ns, NULL, NULL, NULL);
    return 0;
}

static void add_str(h2o_req_t *req, const h2o_token_t *token, const char *v)
{
    size_t n = strlen(v);
    h2o_add_header(&req->pool, &req->res.headers, token, NULL, h2o_strdup(&req->pool, v, n).base, n);
}

/* If-None-Match (a list, or *) wins over If-Modified-Since (RFC 9110 13.2.2) */
static int not_modified(h2o_req_t *req, const char *etag, time_t mtime)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        return (v.len == 1 && v.base[0] == '*') || h2o_strstr(v.base, v.len, etag, strlen(etag)) != SIZE_MAX;
    }
    struct tm tm;
    if ((i = h2o_find_header(&req->headers, H2O_TOKEN_IF_MODIFIED_SINCE, -1)) >= 0 &&
        h2o_time_parse_rfc1123(req->headers.entries[i].value.base, req->headers.entries[i].value.len, &tm) == 0)
        return mtime <= timegm(&tm);
    return 0;
}

static int on_static(h2o_handler_t *self, h2o_req_t *req)
{
    h2o_iovec_t p = req->path_normalized;
    char path[4096];
    if (p.len == 0 || p.len + sizeof("index.html") > sizeof(path))
        return not_found(req);
    memcpy(path, p.base, p.len);
    size_t n = p.len;
    if (path[n - 1] == '/') {
        memcpy(path + n, "index.html", sizeof("index.html") - 1);
        n += sizeof("index.html") - 1;
    }
    int head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    pthread_mutex_lock(&W.lock);
    const web_file_t *f = find(path, n);
    if (f != NULL && f->data == NULL)
        f = NULL; /* a directory named like a file */
    int redirect = f == NULL && path[n - 1] != '/' && (path[n] = '/', find(path, n + 1) != NULL);
    char etag[48], last_modified[sizeof(f->last_modified)];
    const char *type = NULL, *data = NULL;
    size_t len = 0;
    int fresh = 0;
    time_t mtime = 0;
    if (f != NULL) {
        memcpy(etag, f->etag, sizeof(etag));
        memcpy(last_modified, f->last_modified, sizeof(last_modified));
        type = f->type, len = f->len, mtime = f->mtime;
        fresh = not_modified(req, etag, mtime);
        if (!head && !fresh) {
            char *copy = h2o_mem_alloc_pool(&req->pool, len + 1);
            memcpy(copy, f->data, len);
            data = copy;
        }
    }
    pthread_mutex_unlock(&W.lock);
    if (redirect) {
        char *loc = h2o_mem_alloc_pool(&req->pool, n + 2);
        memcpy(loc, path, n + 1);
        h2o_send_redirect(req, 301, "Moved Permanently", loc, n + 1);
        return 0;
    }
    if (f == NULL)
        return not_found(req);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("content-security-policy"), 0, NULL, H2O_STRLIT(CSP));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL,
                          H2O_STRLIT("nosniff"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("referrer-policy"), 0, NULL, H2O_STRLIT("no-referrer"));
    /* revalidate every time (a 304 by ETag): an edited file shows on the next load */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    add_str(req, H2O_TOKEN_ETAG, etag);
    add_str(req, H2O_TOKEN_LAST_MODIFIED, last_modified);
    static h2o_generator_t generator = {NULL, NULL}; /* everything is sent at once */
    h2o_iovec_t body = h2o_iovec_init(data, len);
    if (fresh) {
        req->res.status = 304;
        req->res.reason = "Not Modified";
    } else {
        req->res.status = 200;
        req->res.reason = "OK";
        req->res.content_length = len;
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type, strlen(type));
    }
    h2o_start_response(req, &generator);
    h2o_send(req, &body, data != NULL ? 1 : 0, H2O_SEND_STATE_FINAL);
    return 0;
}

void lg_static_register(h2o_pathconf_t *pathconf, const char *web_dir)
{
    struct stat st;
    char real[PATH_MAX];
    if (web_dir != NULL && web_dir[0] != '\0' && stat(web_dir, &st) == 0 && S_ISDIR(st.st_mode) &&
        realpath(web_dir, real) != NULL) {
        W.dir = strdup(real);
        lg_static_reload();
    } else {
        lg_log(LG_LOG_INFO, "LUAGENT_WEB_DIR '%s' is not a directory: no dashboard at /", web_dir ? web_dir : "");
    }
    h2o_handler_t *h = h2o_create_handler(pathconf, sizeof(*h));
    h->on_req = on_static;
}

const char *lg_static_dir(void) { return W.dir; }

void lg_static_free(void)
{
    web_free(W.cur);
    W.cur = NULL;
    free(W.dir);
    W.dir = NULL;
}

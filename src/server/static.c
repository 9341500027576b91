/* The dashboard's static files (LUAGENT_WEB_DIR, served at /) with h2o's own file handler.
 *
 * The "/" path holds three handlers, tried in order: the API handler (handlers.c), h2o's file
 * handler on the web directory, and not_found() below. The API handler answers every route it
 * knows and every path under /api/ and /v1/; it passes on (returns -1) only GET and HEAD requests
 * for other paths (lg_static_claims). The file handler serves what exists (Content-Type by
 * extension, ETag, Last-Modified, 304, Range; index.html for "/"; never a listing) and passes on
 * what does not; not_found() answers that with the usual 404 JSON. Paths reach the file handler
 * normalized by h2o ("..", "%2e%2e" and "//" resolved before the join), so they stay inside the
 * directory. The dashboard routes in the URL fragment (#/executions/...), so every missing file is
 * a plain 404. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "luagent/ids.h"
#include "luagent/log.h"
#include "luagent/server.h"

/* What the dashboard may load: its own files and its own API, nothing inline, nothing framed. */
#define CSP                                                                                                           \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "           \
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

int lg_static_claims(h2o_req_t *req)
{
    h2o_iovec_t m = req->method, p = req->path_normalized;
    if (!h2o_memis(m.base, m.len, H2O_STRLIT("GET")) && !h2o_memis(m.base, m.len, H2O_STRLIT("HEAD")))
        return 0;
    if ((p.len >= 4 && memcmp(p.base, "/api", 4) == 0 && (p.len == 4 || p.base[4] == '/')) ||
        (p.len >= 3 && memcmp(p.base, "/v1", 3) == 0 && (p.len == 3 || p.base[3] == '/')))
        return 0;
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("content-security-policy"), 0, NULL,
                          H2O_STRLIT(CSP));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL,
                          H2O_STRLIT("nosniff"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("referrer-policy"), 0, NULL,
                          H2O_STRLIT("no-referrer"));
    /* revalidate every time (a 304 by ETag): an edited file shows on the next load */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    return 1;
}

static int not_found(h2o_handler_t *self, h2o_req_t *req)
{
    uint64_t start_ns = lg_now_mono_ns();
    char request_id[72];
    lg_request_id(req, request_id);
    memset(&req->res.headers, 0, sizeof(req->res.headers)); /* drop the static files' headers; the reply sets its own */
    lg_reply_error(req, 404, "not_found", "no such route or file", request_id);
    lg_access_log(req, 404, request_id, start_ns, NULL, NULL, NULL);
    return 0;
}

void lg_static_register(h2o_pathconf_t *pathconf, const char *web_dir)
{
    struct stat st;
    char real[PATH_MAX];
    if (web_dir != NULL && web_dir[0] != '\0' && stat(web_dir, &st) == 0 && S_ISDIR(st.st_mode) &&
        realpath(web_dir, real) != NULL) {
        /* no file cache: an fd kept open across requests would serve a file's old content after an edit */
        pathconf->global->filecache.capacity = 0;
        h2o_mimemap_t *mm = h2o_mimemap_create();
        h2o_mimemap_define_mimetype(mm, "html", "text/html; charset=utf-8", NULL);
        h2o_mimemap_define_mimetype(mm, "js", "text/javascript; charset=utf-8", NULL);
        h2o_mimemap_define_mimetype(mm, "mjs", "text/javascript; charset=utf-8", NULL);
        h2o_mimemap_define_mimetype(mm, "css", "text/css; charset=utf-8", NULL);
        h2o_mimemap_define_mimetype(mm, "svg", "image/svg+xml", NULL);
        h2o_mimemap_define_mimetype(mm, "json", "application/json", NULL);
        static const char *index_files[] = {"index.html", NULL};
        h2o_file_register(pathconf, real, index_files, mm, 0);
        h2o_mem_release_shared(mm); /* the handler holds its own reference */
    } else {
        lg_log(LG_LOG_INFO, "LUAGENT_WEB_DIR '%s' is not a directory: no dashboard at /", web_dir ? web_dir : "");
    }
    h2o_handler_t *h = h2o_create_handler(pathconf, sizeof(*h));
    h->on_req = not_found;
}

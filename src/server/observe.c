/* Observability on the HTTP side: the /metrics route (metrics.h) and each request's W3C trace
 * context (trace.h), which lives in the reply's `traceparent` header from the start of the request:
 * whoever later needs it (the access log, the execution) reads it back from there. */
#include <string.h>

#include "luagent/metrics.h"
#include "luagent/registry.h"
#include "luagent/server.h"
#include "luagent/trace.h"
#include "luagent/worker.h"

static const char traceparent_name[] = "traceparent";

void lg_trace_request(h2o_req_t *req)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("traceparent"), -1);
    char *tp = h2o_mem_alloc_pool(&req->pool, LG_TRACEPARENT_LEN + 1);
    if (i >= 0)
        lg_trace_start(req->headers.entries[i].value.base, req->headers.entries[i].value.len, tp);
    else
        lg_trace_start(NULL, 0, tp);
    h2o_add_header_by_str(&req->pool, &req->res.headers, traceparent_name, sizeof(traceparent_name) - 1, 0, NULL, tp,
                          LG_TRACEPARENT_LEN);
}

const char *lg_trace_of(h2o_req_t *req)
{
    for (size_t i = 0; i < req->res.headers.size; i++)
        if (h2o_memis(req->res.headers.entries[i].name->base, req->res.headers.entries[i].name->len,
                      traceparent_name, sizeof(traceparent_name) - 1))
            return req->res.headers.entries[i].value.base;
    return NULL;
}

int lg_metrics_route(h2o_req_t *req, const char *request_id, lg_buf_t *b)
{
    lg_worker_t *w = lg_worker_of(req);
    if (w->rt.metrics == NULL) {
        lg_reply_error(req, 404, "not_found", "metrics are off (LUAGENT_METRICS=off)", request_id);
        return 404;
    }
    lg_metrics_publish(w->rt.metrics); /* this worker's gauges as of now; the others' are <= 1 s old */
    lg_metrics_info_t info = {.started_ms = w->server->started_ms,
                              .workers = w->server->nworkers,
                              .agents = lg_registry_count(LG_SCRIPT_AGENT)};
    lg_metrics_render(b, &info);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL,
                          H2O_STRLIT("nosniff"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, request_id,
                          strlen(request_id));
    req->res.content_length = b->len;
    h2o_send_inline(req, b->data, b->len);
    return 200;
}

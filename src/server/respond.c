#include <string.h>

#include "luagent/ids.h"
#include "luagent/log.h"
#include "luagent/metrics.h"
#include "luagent/router.h"
#include "luagent/schema.h"
#include "luagent/server.h"
#include "luagent/worker.h"

const char *lg_status_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

void lg_request_id(h2o_req_t *req, char out[72])
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        int ok = v.len >= 1 && v.len <= 64;
        for (size_t k = 0; ok && k < v.len; k++) {
            char c = v.base[k];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                 c == '.' || c == ':';
        }
        if (ok) {
            memcpy(out, v.base, v.len);
            out[v.len] = '\0';
            return;
        }
    }
    lg_uuid4(out);
}

static void common_headers(h2o_req_t *req, int status, const char *request_id)
{
    req->res.status = status;
    req->res.reason = lg_status_reason(status);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL,
                          H2O_STRLIT("nosniff"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, request_id,
                          strlen(request_id));
}

void lg_reply_json(h2o_req_t *req, int status, const char *request_id, const char *body, size_t len)
{
    common_headers(req, status, request_id);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

void lg_error_json(lg_buf_t *out, const char *code, const char *message, size_t mlen, const char *request_id,
                   const char *execution_id)
{
    lg_buf_lit(out, "{\"error\":{\"code\":");
    lg_buf_json_str(out, code, strlen(code));
    lg_buf_lit(out, ",\"message\":");
    lg_buf_json_str(out, message, mlen);
    lg_buf_lit(out, ",\"request_id\":");
    lg_buf_json_str(out, request_id, strlen(request_id));
    if (execution_id != NULL) {
        lg_buf_lit(out, ",\"execution_id\":");
        lg_buf_json_str(out, execution_id, strlen(execution_id));
    }
    lg_buf_lit(out, "}}");
}

void lg_error_json_invalid(lg_buf_t *out, const char *agent, size_t alen, const lg_schema_report_t *r,
                           const char *request_id, const char *execution_id)
{
    char msg[LG_AGENT_NAME_MAX + 160];
    int n;
    if (r->failures > LG_SCHEMA_MAX_ERRORS)
        n = snprintf(msg, sizeof(msg),
                     "the task does not match the input schema of agent '%.*s' (more than %d errors, the first %d listed)",
                     (int)alen, agent, LG_SCHEMA_MAX_ERRORS, LG_SCHEMA_MAX_ERRORS);
    else
        n = snprintf(msg, sizeof(msg), "the task does not match the input schema of agent '%.*s' (%zu error%s)",
                     (int)alen, agent, r->failures, r->failures == 1 ? "" : "s");
    lg_error_json(out, "validation_failed", msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1, request_id,
                  execution_id);
    out->len -= 2; /* reopen the error object: "}}" */
    lg_buf_lit(out, ",\"details\":");
    if (r->details.len > 0)
        lg_buf_append(out, r->details.data, r->details.len);
    else
        lg_buf_lit(out, "[]");
    lg_buf_lit(out, "}}");
}

void lg_reply_invalid(h2o_req_t *req, const char *agent, size_t alen, const lg_schema_report_t *r,
                      const char *request_id)
{
    lg_buf_t *b = &lg_worker_of(req)->scratch;
    lg_buf_reset(b);
    lg_error_json_invalid(b, agent, alen, r, request_id, NULL);
    lg_openai_error_type(req, 422, b);
    lg_reply_json(req, 422, request_id, b->data, b->len);
}

void lg_reply_error(h2o_req_t *req, int status, const char *code, const char *message, const char *request_id)
{
    lg_buf_t *b = &lg_worker_of(req)->scratch;
    lg_buf_reset(b);
    lg_error_json(b, code, message, strlen(message), request_id, NULL);
    lg_openai_error_type(req, status, b);
    lg_reply_json(req, status, request_id, b->data, b->len);
}

void lg_access_log(h2o_req_t *req, int status, const char *request_id, uint64_t start_ns, const char *execution_id,
                   const char *agent, const char *version)
{
    lg_metrics_t *m = lg_worker_of(req)->rt.metrics;
    uint64_t now_ns = 0;
    if (m != NULL) {
        int id = lg_metrics_route_of(req);
        if (id < 0) {
            lg_route_t route;
            lg_route_match(req->method.base, req->method.len, req->path_normalized.base, req->path_normalized.len,
                           &route);
            id = (int)route.id;
        }
        lg_metrics_http(m, id, status, (now_ns = lg_now_mono_ns()) - start_ns);
    }
    if (!lg_log_enabled(LG_LOG_INFO))
        return;
    lg_buf_t b = {0};
    lg_log_begin(&b, LG_LOG_INFO, LG_STRLIT("request"));
    lg_log_kv_cstr(&b, "request_id", request_id);
    const char *tp = lg_trace_of(req);
    if (tp != NULL)
        lg_log_kv_str(&b, "trace_id", tp + 3, 32);
    lg_log_kv_str(&b, "method", req->method.base, req->method.len);
    lg_log_kv_str(&b, "path", req->path_normalized.base, req->path_normalized.len);
    lg_log_kv_int(&b, "status", status);
    lg_log_kv_num(&b, "duration_ms", (double)((now_ns ? now_ns : lg_now_mono_ns()) - start_ns) / 1e6);
    lg_log_kv_cstr(&b, "execution_id", execution_id);
    lg_log_kv_cstr(&b, "agent", agent);
    lg_log_kv_cstr(&b, "version", version);
    lg_log_end(&b);
    lg_buf_free(&b);
}

/**
 * server.h - the HTTP side: h2o configuration, listeners, request handlers and replies.
 *
 * lg_server_run() is `luagent serve`: it loads the agents, starts the workers (worker.h), watches
 * the agents directory on the main thread, and on SIGTERM/SIGINT drains: /ready answers 503 at once
 * (for LUAGENT_DRAIN_DELAY_MS the listeners still accept, so a load balancer sees it first), then
 * listeners close, keep-alive connections are asked to close, in-flight executions finish (up to
 * LUAGENT_DRAIN_TIMEOUT_MS, then they are cancelled with 503), the execution log is written or
 * spilled, and it returns 0. SIGHUP reloads the settings (.env, environment, stored settings; those
 * only a restart changes keep their value and are named in the log), the JWT keys, the log file and
 * every script.
 */
#ifndef LUAGENT_SERVER_H
#define LUAGENT_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define H2O_USE_LIBUV 0
#include <h2o.h>

#include "luagent/buf.h"
#include "luagent/config.h"

typedef struct lg_worker lg_worker_t;

typedef struct lg_server {
    h2o_globalconf_t globalconf;
    /* the settings: replaced (never modified) by a SIGHUP reload; a replaced one stays allocated
     * until exit, so a worker may keep using the pointer it loaded for the rest of a request */
    _Atomic(const lg_config_t *) cfg;
    lg_worker_t *workers;
    int nworkers;
    uint64_t started_ms;
    _Atomic int stopping;  /* SIGTERM received: /ready answers 503 (draining follows) */
    _Atomic int draining;
    _Atomic int db_schema_ok;  /* DATABASE_URL: the migrations are applied */
    _Atomic(struct lg_jwt_keys *) jwt_keys; /* LUAGENT_JWT_*: the verifier (immutable, shared; replaced
                                               on SIGHUP like cfg), NULL without */
    struct lg_retired *retired;               /* replaced settings and keys, freed at exit */
    SSL_CTX *ssl_ctx;             /* LUAGENT_TLS_*: the main listener's TLS context (tls.h), NULL: plain HTTP */
    /* Each listener's accept_ctx gets its own host list, so a Host header can never route a request
     * on the main port to the health listener's handler (or the reverse). */
    h2o_hostconf_t *main_hosts[2];   /* {the API host, NULL} */
    h2o_hostconf_t *health_hosts[2]; /* LUAGENT_HEALTH_LISTEN: {the health host, NULL} */
    char *health_host;               /* ... its address, split from cfg->health_listen */
    int health_port;
    pthread_t migrator;        /* retries the migrations when the database was away at start */
    int migrator_started;
} lg_server_t;

int lg_server_run(const lg_config_t *cfg);

/** Register the request handler on a host configuration (handlers.c): on its "/" path, which it
 *  returns (the dashboard's handlers follow it there, static.c). */
h2o_pathconf_t *lg_handlers_register(h2o_hostconf_t *hostconf);

/* ---- the dashboard's static files (static.c) ---- */

/** Register, after the API handler on `pathconf`, the handler of `web_dir`'s files (read into
 *  memory now; a log line when it is not a directory) which answers 404 not_found in JSON for
 *  anything else. */
void lg_static_register(h2o_pathconf_t *pathconf, const char *web_dir);
/** Main thread: read the web directory again (a change under it, SIGHUP). */
void lg_static_reload(void);
/** The web directory being served (its real path), NULL when none. */
const char *lg_static_dir(void);
void lg_static_free(void);
/** For a request that matched no route: 1 when it is the static files' to answer (GET or HEAD,
 *  outside /api/ and /v1/; their security and cache headers are added), else 0. */
int lg_static_claims(h2o_req_t *req);

/** GET /api/v1/stats?window= (stats.c): executions and latency percentiles per agent over time;
 *  the history routes' return convention. */
int lg_stats_route(h2o_req_t *req, const char *request_id, lg_buf_t *b);
/** Register the health listener's handler (LUAGENT_HEALTH_LISTEN, handlers.c): it answers /health,
 *  /ready and /metrics without authentication, 405 for other methods there, and
 *  404 not_found for every other path. */
void lg_handlers_register_health(h2o_hostconf_t *hostconf);

/* ---- the history routes (history.c) ----
 * Both return 0 when answered (200), the error status when they answered with an error, or -1 when
 * the answer comes later (Postgres) and is logged then. */
struct lg_route;
int lg_history_list_route(h2o_req_t *req, const char *request_id, lg_buf_t *b);
int lg_history_get_route(h2o_req_t *req, const struct lg_route *route, const char *request_id, lg_buf_t *b);
/** The query parameter `name`, percent-decoded into out (NUL-terminated): its length, -1 when absent,
 *  -2 when too long or badly encoded (history.c). */
int lg_query_param(h2o_req_t *req, const char *name, char *out, size_t cap);

/** The admin routes for API keys (admin.c): GET/POST /api/v1/keys, DELETE /api/v1/keys/{id}; same
 *  return convention (the status answered, or -1 when the answer comes later). */
int lg_keys_route(h2o_req_t *req, const struct lg_route *route, const char *request_id, lg_buf_t *b);

/* ---- the OpenAI-compatible face (openai_compat.c): agents as models ----
 * Same return convention as above (the status answered, or 0 when the answer comes later). */
struct lg_principal;
/** POST /v1/chat/completions: runs the agent named by "model" (docs/architecture.md). */
int lg_openai_chat_route(h2o_req_t *req, const char *request_id, uint64_t start_ns, const struct lg_principal *who);
/** GET /v1/models (the agents this caller may run) and GET /v1/models/{id}. */
int lg_openai_models_route(h2o_req_t *req, const struct lg_route *route, const struct lg_principal *who,
                           const char *request_id, lg_buf_t *b);
/** When req is on a /v1 route, add OpenAI's "type" (invalid_request_error, authentication_error,
 *  permission_error, rate_limit_error, server_error: by status) to the error object ending b. */
void lg_openai_error_type(h2o_req_t *req, int status, lg_buf_t *b);

/* ---- observability (observe.c) ---- */

/** GET /metrics: the Prometheus text (metrics.h) of every worker; 404 when LUAGENT_METRICS=off.
 *  Returns the status answered. */
int lg_metrics_route(h2o_req_t *req, const char *request_id, lg_buf_t *b);
/** Start the request's trace context (trace.h) from its traceparent header and add it to the
 *  reply's headers (LUAGENT_TRACING=on). */
void lg_trace_request(h2o_req_t *req);
/** The request's trace context ("00-<trace id>-<span id>-<flags>"), NULL when it has none. */
const char *lg_trace_of(h2o_req_t *req);

/* ---- outcomes of executions (outcome.c) ---- */

struct lg_exec;
/** Write the outcome of a finished execution into b: the 200 reply object
 *  {"execution_id","agent","version","status","result","duration_ms","usage"} or an error object
 *  {"error":{...}} (agent errors keep their status and code; provider errors carry the provider).
 *  Returns the HTTP status; *is_err says which; on success [*roff, *roff + *rlen) of b is the
 *  result's JSON. client_gone: a cancellation is 499 client_closed, not 503. */
int lg_outcome_json(struct lg_exec *e, int client_gone, lg_buf_t *b, const char *request_id, int *is_err,
                    size_t *roff, size_t *rlen);
/** The record of that outcome (store.h); the caller owns it. */
struct lg_rec *lg_outcome_rec(struct lg_exec *e, const lg_buf_t *b, int is_err, size_t roff, size_t rlen);
/** Record that outcome (store.h), when the execution is recorded. */
void lg_outcome_record(struct lg_exec *e, const lg_buf_t *b, int is_err, size_t roff, size_t rlen);

/* ---- replies (respond.c): every reply is JSON with nosniff and X-Request-Id ---- */

/** The request's id: a valid incoming X-Request-Id (1..64 of [A-Za-z0-9._:-]) or a new UUID. */
void lg_request_id(h2o_req_t *req, char out[72]);
void lg_reply_json(h2o_req_t *req, int status, const char *request_id, const char *body, size_t len);
void lg_reply_error(h2o_req_t *req, int status, const char *code, const char *message, const char *request_id);
/** Append {"error":{"code","message","request_id"[,"execution_id"]}} to out. */
void lg_error_json(lg_buf_t *out, const char *code, const char *message, size_t mlen, const char *request_id,
                   const char *execution_id);
struct lg_schema_report;
/** The 422 validation_failed error of a task that fails its agent's `input` schema:
 *  {"error":{"code":"validation_failed","message","request_id"[,"execution_id"],"details":[...]}}.
 *  The message names the agent and counts the failures. */
void lg_error_json_invalid(lg_buf_t *out, const char *agent, size_t alen, const struct lg_schema_report *r,
                           const char *request_id, const char *execution_id);
void lg_reply_invalid(h2o_req_t *req, const char *agent, size_t alen, const struct lg_schema_report *r,
                      const char *request_id);
const char *lg_status_reason(int status);
void lg_access_log(h2o_req_t *req, int status, const char *request_id, uint64_t start_ns, const char *execution_id,
                   const char *agent, const char *version);

#endif

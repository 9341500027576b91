/**
 * metrics.h - Prometheus metrics (GET /metrics, text exposition format 0.0.4).
 *
 * Each worker counts into its own slot (lg_metrics_t), which only that worker writes: fixed series
 * (HTTP requests by route and status, their durations, in-flight executions, cache lookups) are
 * arrays indexed by route id and status; series with dynamic labels (executions by agent, version
 * and status; AI calls by provider and model) live in a per-worker list that the worker extends
 * without a lock (a new series is filled, then published with one release store) and finds again
 * through a private hash index. Writes are relaxed atomic increments, which compile to plain adds.
 * A scrape (any thread) reads every slot with relaxed loads and sums: it never blocks a worker and
 * a worker never waits for it. Slots are cache-line aligned and never freed (a process has at most
 * LUAGENT_WORKERS of them).
 *
 * Gauges a worker knows best (its Lua heap, Postgres pool, Redis connection, record queue) are
 * published into its slot by the worker itself once a second and right before a scrape it serves,
 * so another worker's values are at most a second old.
 *
 * A NULL slot (LUAGENT_METRICS=off, or code running outside a worker: `luagent run`, tests) makes
 * every lg_metrics_* call return at once.
 */
#ifndef LUAGENT_METRICS_H
#define LUAGENT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "luagent/buf.h"

typedef struct lg_metrics lg_metrics_t;
struct lg_rt;

/** The slot of worker `index` (main thread, before the worker runs), attached to its runtime:
 *  rt->metrics is set and a one-second timer on rt's heap publishes its gauges. */
lg_metrics_t *lg_metrics_attach(struct lg_rt *rt, int index);

/** The route of the request being handled on this thread (on_req): lg_metrics_route_of() gives
 *  it back for that request, so the access log does not match the path again. */
void lg_metrics_route_hint(const void *req, int route);
/** The route hinted for `req`, or -1 when the hint is about another request. */
int lg_metrics_route_of(const void *req);
/** An HTTP request was answered: route id (router.h), status, its duration. */
void lg_metrics_http(lg_metrics_t *m, int route, int status, uint64_t duration_ns);
/** An execution started / ended (end: sched.h lg_exec_end_t). */
void lg_metrics_exec_start(lg_metrics_t *m);
void lg_metrics_exec_end(lg_metrics_t *m, const char *agent, const char *version, int end, uint64_t duration_ns);
/** One AI call (luagent.ai): tokens, retries it took, and whether it failed in the end. */
void lg_metrics_ai(lg_metrics_t *m, const char *provider, const char *model, uint64_t input_tokens,
                   uint64_t output_tokens, uint64_t retries, int failed);

typedef enum { LG_METRICS_CACHE_RESULT = 0, LG_METRICS_CACHE_AGENT } lg_metrics_cache_t;
/** A lookup in the agents' result cache or in luagent.cache.get. */
void lg_metrics_cache(lg_metrics_t *m, lg_metrics_cache_t which, int hit);

/** Publish this worker's gauges now (its own thread). */
void lg_metrics_publish(lg_metrics_t *m);

/** Process-wide facts the scrape adds. */
typedef struct lg_metrics_info {
    uint64_t started_ms; /* epoch ms */
    int workers;
    size_t agents;
} lg_metrics_info_t;

/** Append every worker's metrics, summed, in the text exposition format (0.0.4). */
void lg_metrics_render(lg_buf_t *out, const lg_metrics_info_t *info);

#endif

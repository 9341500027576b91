/**
 * stats.h - the dashboard's statistics (GET /api/v1/stats?window=, DESIGN §5): finished executions
 * counted and their latency percentiles, per agent and for all agents, over the whole window and per
 * time bucket. Pure functions (no h2o, no locks), unit-tested on their own; the route (src/server/
 * stats.c) feeds them rows from Postgres or from the in-memory history.
 *
 * The reply:
 *   {"window":"1h","bucket_ms":60000,"from":"<ISO>","to":"<ISO>","source":"memory"|"database",
 *    "total":{"count","succeeded","failed","p50_ms","p95_ms","p99_ms","series":[{"start":"<ISO>",
 *             "count","succeeded","failed","p50_ms","p95_ms","p99_ms"}, ...]},
 *    "agents":[{"agent":"hello", <the same members as total>}, ...]}
 * Buckets are aligned on the Unix epoch (start = floor(created / bucket_ms) * bucket_ms, as
 * Postgres's date_bin with origin 'epoch'); a series lists only buckets that have executions, oldest
 * first; agents are sorted by name. Percentiles interpolate linearly between ranks (Postgres's
 * percentile_cont) over duration_ms; they are null when the count is 0. Only finished executions
 * (succeeded or failed) are counted, by creation time.
 */
#ifndef LUAGENT_STATS_H
#define LUAGENT_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "luagent/buf.h"

typedef struct lg_stats_window {
    const char *name;   /* "15m", "1h", "6h", "24h", "7d" */
    uint64_t window_ms;
    uint64_t bucket_ms; /* 30 s, 1 min, 10 min, 30 min, 6 h: 28 to 60 buckets */
} lg_stats_window_t;

/** The window named `s` (n bytes): 0, or -1 when it is not one of LG_STATS_WINDOWS. */
int lg_stats_window_parse(const char *s, size_t n, lg_stats_window_t *out);
#define LG_STATS_WINDOWS "15m, 1h, 6h, 24h, 7d"

/** One group: an agent (NULL: all agents) in one bucket (bucket_ms < 0: the whole window). */
typedef struct lg_stats_row {
    const char *agent;
    size_t agent_len;
    int64_t bucket_ms;
    long count, succeeded, failed;
    double p50, p95, p99;
} lg_stats_row_t;

/** One finished execution. */
typedef struct lg_stats_sample {
    const char *agent;
    size_t agent_len;
    uint64_t created_ms;
    double duration_ms;
    int failed;
} lg_stats_sample_t;

/** The value at fraction p (0..1) of sorted[0..n) by linear interpolation (percentile_cont); n > 0. */
double lg_stats_percentile(const double *sorted, size_t n, double p);
/** Group samples into rows (every (agent, bucket), every agent, every bucket, and the total): *rows is
 *  malloc'ed (free it), its agents point into the samples. Reorders `samples`. Returns the count. */
size_t lg_stats_group(lg_stats_sample_t *samples, size_t n, uint64_t bucket_ms, lg_stats_row_t **rows);
/** Append the reply above built from rows (any order; reorders them). */
void lg_stats_json(const lg_stats_window_t *w, uint64_t from_ms, uint64_t to_ms, const char *source,
                   lg_stats_row_t *rows, size_t n, lg_buf_t *out);

#endif

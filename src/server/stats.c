/* GET /api/v1/stats?window=: the dashboard's charts (stats.h has the reply). With DATABASE_URL one
 * query groups the executions table (date_bin, percentile_cont, GROUPING SETS) while the request
 * waits; without it, or while Postgres is away, the in-memory history answers (the last
 * LUAGENT_HISTORY_SIZE executions) and the reply says "source":"memory". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/ids.h"
#include "luagent/pg.h"
#include "luagent/server.h"
#include "luagent/stats.h"
#include "luagent/store.h"
#include "luagent/worker.h"

static const char STATS_SQL[] =
    "SELECT agent, (extract(epoch FROM b) * 1000)::bigint, GROUPING(agent), GROUPING(b), count(*),"
    " count(*) FILTER (WHERE status = 'failed'),"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms),"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms),"
    " percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms)"
    " FROM (SELECT agent, status, COALESCE(duration_ms, 0) AS duration_ms,"
    "        date_bin($2::interval, created_at, TIMESTAMPTZ 'epoch') AS b"
    "       FROM executions WHERE created_at >= $1::timestamptz AND status IN ('succeeded', 'failed')) x"
    " GROUP BY GROUPING SETS ((agent, b), (agent), (b), ())";

typedef struct stats_wait {
    h2o_req_t *req;
    lg_pg_req_t *q;
    uint64_t start_ns, from_ms, to_ms;
    lg_stats_window_t w;
    char request_id[72];
} stats_wait_t;

static void stats_wait_dispose(void *p)
{
    stats_wait_t *s = p;
    if (s->q != NULL)
        lg_pg_cancel(s->q);
}

static void from_memory(const lg_stats_window_t *w, uint64_t from_ms, uint64_t to_ms, lg_buf_t *b)
{
    lg_rec_t **recs;
    size_t n, nrows;
    lg_history_finished_since(from_ms, &recs, &n);
    lg_stats_sample_t *samples = malloc((n + 1) * sizeof(*samples));
    if (samples == NULL)
        abort();
    for (size_t i = 0; i < n; i++)
        samples[i] = (lg_stats_sample_t){.agent = recs[i]->agent, .agent_len = strlen(recs[i]->agent),
                                         .created_ms = recs[i]->created_ms, .duration_ms = recs[i]->duration_ms,
                                         .failed = recs[i]->status == LG_REC_FAILED};
    lg_stats_row_t *rows;
    nrows = lg_stats_group(samples, n, w->bucket_ms, &rows);
    lg_stats_json(w, from_ms, to_ms, "memory", rows, nrows, b);
    free(rows);
    free(samples);
    for (size_t i = 0; i < n; i++)
        lg_rec_unref(recs[i]);
    free(recs);
}

static void on_stats(void *data, PGresult *res, const char *err, const char *sqlstate)
{
    stats_wait_t *s = data;
    s->q = NULL;
    lg_buf_t *b = &lg_worker_of(s->req)->scratch;
    lg_buf_reset(b);
    if (err != NULL) {
        from_memory(&s->w, s->from_ms, s->to_ms, b);
    } else {
        int n = PQntuples(res);
        lg_stats_row_t *rows = malloc(((size_t)n + 1) * sizeof(*rows));
        if (rows == NULL)
            abort();
        for (int i = 0; i < n; i++) {
            lg_stats_row_t *r = &rows[i];
            int all_agents = atoi(PQgetvalue(res, i, 2)), whole = atoi(PQgetvalue(res, i, 3));
            r->agent = all_agents ? NULL : PQgetvalue(res, i, 0);
            r->agent_len = all_agents ? 0 : (size_t)PQgetlength(res, i, 0);
            r->bucket_ms = whole ? -1 : strtoll(PQgetvalue(res, i, 1), NULL, 10);
            r->count = atol(PQgetvalue(res, i, 4));
            r->failed = atol(PQgetvalue(res, i, 5));
            r->succeeded = r->count - r->failed;
            r->p50 = strtod(PQgetvalue(res, i, 6), NULL);
            r->p95 = strtod(PQgetvalue(res, i, 7), NULL);
            r->p99 = strtod(PQgetvalue(res, i, 8), NULL);
        }
        lg_stats_json(&s->w, s->from_ms, s->to_ms, "database", rows, (size_t)n, b);
        free(rows);
    }
    lg_reply_json(s->req, 200, s->request_id, b->data, b->len);
    lg_access_log(s->req, 200, s->request_id, s->start_ns, NULL, NULL, NULL);
}

int lg_stats_route(h2o_req_t *req, const char *request_id, lg_buf_t *b)
{
    char name[16];
    lg_stats_window_t w;
    int n = lg_query_param(req, "window", name, sizeof(name));
    if (n == -1) {
        lg_stats_window_parse(LG_STRLIT("1h"), &w);
    } else if (n < 0 || lg_stats_window_parse(name, (size_t)n, &w) != 0) {
        lg_reply_error(req, 400, "invalid_request", "window: one of " LG_STATS_WINDOWS, request_id);
        return 400;
    }
    uint64_t to_ms = lg_now_epoch_ms(), from_ms = to_ms - w.window_ms;
    lg_pg_t *pg = lg_rt_pg(&lg_worker_of(req)->rt);
    if (pg == NULL) {
        from_memory(&w, from_ms, to_ms, b);
        lg_reply_json(req, 200, request_id, b->data, b->len);
        return 0;
    }
    stats_wait_t *s = h2o_mem_alloc_shared(&req->pool, sizeof(*s), stats_wait_dispose);
    memset(s, 0, sizeof(*s));
    s->req = req, s->w = w, s->from_ms = from_ms, s->to_ms = to_ms, s->start_ns = lg_now_mono_ns();
    memcpy(s->request_id, request_id, strlen(request_id) + 1);
    lg_buf_t t = {0};
    lg_buf_iso8601(&t, from_ms);
    char since[40], bucket[40];
    snprintf(since, sizeof(since), "%.*s", (int)t.len - 2, t.data + 1); /* without the quotes */
    lg_buf_free(&t);
    snprintf(bucket, sizeof(bucket), "%llu milliseconds", (unsigned long long)w.bucket_ms);
    const char *params[2] = {since, bucket}, *err;
    if ((s->q = lg_pg_query(pg, STATS_SQL, 2, params, NULL, NULL, on_stats, s, &err)) == NULL)
        on_stats(s, NULL, err, NULL);
    return -1;
}

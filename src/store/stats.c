/* The dashboard's statistics: windows, grouping and percentiles, the reply's JSON (stats.h). */
#include "luagent/stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/store.h"

static const lg_stats_window_t WINDOWS[] = {
    {"15m", 15 * 60000ull, 30000ull},
    {"1h", 3600000ull, 60000ull},
    {"6h", 6 * 3600000ull, 10 * 60000ull},
    {"24h", 24 * 3600000ull, 30 * 60000ull},
    {"7d", 7 * 24 * 3600000ull, 6 * 3600000ull},
};

int lg_stats_window_parse(const char *s, size_t n, lg_stats_window_t *out)
{
    for (size_t i = 0; i < sizeof WINDOWS / sizeof WINDOWS[0]; i++)
        if (strlen(WINDOWS[i].name) == n && memcmp(WINDOWS[i].name, s, n) == 0) {
            *out = WINDOWS[i];
            return 0;
        }
    return -1;
}

double lg_stats_percentile(const double *sorted, size_t n, double p)
{
    double pos = p * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    if (lo + 1 >= n)
        return sorted[n - 1];
    return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * (pos - (double)lo);
}

static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    if (a == NULL || b == NULL)
        return (a != NULL) - (b != NULL); /* all agents (NULL) first */
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c != 0 ? c : (alen > blen) - (alen < blen);
}

/* The grouping keys of one pass: by agent or not, by bucket or not; then by duration. */
typedef struct {
    int by_agent, by_bucket;
    uint64_t bucket_ms;
} pass_t;

static int64_t bucket_of(const lg_stats_sample_t *s, uint64_t bucket_ms)
{
    return (int64_t)(s->created_ms / bucket_ms * bucket_ms);
}

static int same_group(const pass_t *p, const lg_stats_sample_t *a, const lg_stats_sample_t *b)
{
    return (!p->by_agent || name_cmp(a->agent, a->agent_len, b->agent, b->agent_len) == 0) &&
           (!p->by_bucket || bucket_of(a, p->bucket_ms) == bucket_of(b, p->bucket_ms));
}

static int sample_cmp(const void *x, const void *y, void *arg)
{
    const pass_t *p = arg;
    const lg_stats_sample_t *a = x, *b = y;
    int c;
    if (p->by_agent && (c = name_cmp(a->agent, a->agent_len, b->agent, b->agent_len)) != 0)
        return c;
    if (p->by_bucket) {
        int64_t ba = bucket_of(a, p->bucket_ms), bb = bucket_of(b, p->bucket_ms);
        if (ba != bb)
            return ba < bb ? -1 : 1;
    }
    return (a->duration_ms > b->duration_ms) - (a->duration_ms < b->duration_ms);
}

size_t lg_stats_group(lg_stats_sample_t *samples, size_t n, uint64_t bucket_ms, lg_stats_row_t **rows)
{
    *rows = NULL;
    if (n == 0)
        return 0;
    lg_stats_row_t *out = malloc(4 * n * sizeof(*out)); /* at most n groups per pass */
    double *d = malloc(n * sizeof(*d));
    size_t nrows = 0;
    if (out == NULL || d == NULL)
        abort();
    for (int pass = 0; pass < 4; pass++) {
        pass_t p = {.by_agent = pass < 2, .by_bucket = pass % 2 == 0, .bucket_ms = bucket_ms};
        qsort_r(samples, n, sizeof(*samples), sample_cmp, &p);
        for (size_t i = 0, j; i < n; i = j) {
            lg_stats_row_t *r = &out[nrows++];
            memset(r, 0, sizeof(*r));
            for (j = i; j < n && same_group(&p, &samples[i], &samples[j]); j++) {
                d[j - i] = samples[j].duration_ms;
                r->failed += samples[j].failed != 0;
            }
            r->count = (long)(j - i);
            r->succeeded = r->count - r->failed;
            if (p.by_agent)
                r->agent = samples[i].agent, r->agent_len = samples[i].agent_len;
            r->bucket_ms = p.by_bucket ? bucket_of(&samples[i], bucket_ms) : -1;
            r->p50 = lg_stats_percentile(d, j - i, 0.5);
            r->p95 = lg_stats_percentile(d, j - i, 0.95);
            r->p99 = lg_stats_percentile(d, j - i, 0.99);
        }
    }
    free(d);
    *rows = out;
    return nrows;
}

static int row_cmp(const void *x, const void *y)
{
    const lg_stats_row_t *a = x, *b = y;
    int c = name_cmp(a->agent, a->agent_len, b->agent, b->agent_len);
    if (c != 0)
        return c;
    return (a->bucket_ms > b->bucket_ms) - (a->bucket_ms < b->bucket_ms); /* the window's row (-1) first */
}

static void counts(lg_buf_t *out, const lg_stats_row_t *r)
{
    lg_buf_printf(out, "\"count\":%ld,\"succeeded\":%ld,\"failed\":%ld,", r ? r->count : 0, r ? r->succeeded : 0,
                  r ? r->failed : 0);
    if (r == NULL || r->count == 0) {
        lg_buf_lit(out, "\"p50_ms\":null,\"p95_ms\":null,\"p99_ms\":null");
        return;
    }
    lg_buf_lit(out, "\"p50_ms\":");
    lg_buf_fixed3(out, r->p50);
    lg_buf_lit(out, ",\"p95_ms\":");
    lg_buf_fixed3(out, r->p95);
    lg_buf_lit(out, ",\"p99_ms\":");
    lg_buf_fixed3(out, r->p99);
}

/* One group's object body: its window row (if any) and its series, rows[i..j) all of one agent. */
static void group(lg_buf_t *out, const lg_stats_row_t *rows, size_t i, size_t j)
{
    const lg_stats_row_t *whole = i < j && rows[i].bucket_ms < 0 ? &rows[i++] : NULL;
    counts(out, whole);
    lg_buf_lit(out, ",\"series\":[");
    for (size_t k = i; k < j; k++) {
        if (k > i)
            lg_buf_putc(out, ',');
        lg_buf_lit(out, "{\"start\":");
        lg_buf_iso8601(out, (uint64_t)rows[k].bucket_ms);
        lg_buf_putc(out, ',');
        counts(out, &rows[k]);
        lg_buf_putc(out, '}');
    }
    lg_buf_putc(out, ']');
}

void lg_stats_json(const lg_stats_window_t *w, uint64_t from_ms, uint64_t to_ms, const char *source,
                   lg_stats_row_t *rows, size_t n, lg_buf_t *out)
{
    size_t keep = 0;
    for (size_t i = 0; i < n; i++) /* an empty group (Postgres's grand total over no rows) says nothing */
        if (rows[i].count > 0)
            rows[keep++] = rows[i];
    n = keep;
    if (n > 1)
        qsort(rows, n, sizeof(*rows), row_cmp);
    lg_buf_printf(out, "{\"window\":\"%s\",\"bucket_ms\":%llu,\"from\":", w->name, (unsigned long long)w->bucket_ms);
    lg_buf_iso8601(out, from_ms);
    lg_buf_lit(out, ",\"to\":");
    lg_buf_iso8601(out, to_ms);
    lg_buf_printf(out, ",\"source\":\"%s\",\"total\":{", source);
    size_t i = 0, j;
    for (j = i; j < n && rows[j].agent == NULL; j++)
        ;
    group(out, rows, i, j);
    lg_buf_lit(out, "},\"agents\":[");
    for (i = j; i < n; i = j) {
        for (j = i; j < n && name_cmp(rows[i].agent, rows[i].agent_len, rows[j].agent, rows[j].agent_len) == 0; j++)
            ;
        if (out->len > 0 && out->data[out->len - 1] != '[')
            lg_buf_putc(out, ',');
        lg_buf_lit(out, "{\"agent\":");
        lg_buf_json_str(out, rows[i].agent, rows[i].agent_len);
        lg_buf_putc(out, ',');
        group(out, rows, i, j);
        lg_buf_putc(out, '}');
    }
    lg_buf_lit(out, "]}");
}

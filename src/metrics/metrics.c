/* Prometheus metrics: per-worker slots written only by their worker, summed at scrape time
 * (metrics.h has the design). */
#include "luagent/metrics.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "luagent/ids.h"
#include "luagent/pg.h"
#include "luagent/redis.h"
#include "luagent/router.h"
#include "luagent/sched.h"
#include "luagent/store.h"

#define MAX_WORKERS 256  /* LUAGENT_WORKERS' maximum */
#define NROUTES 48       /* route ids past this count as the last one */
#define NBOUNDS 16       /* histogram bucket bounds (+Inf is one more bucket) */
#define MAX_SERIES 4096  /* dynamic series per worker and kind; past it new label sets are dropped */
#define PUBLISH_MS 1000

typedef _Atomic uint64_t counter_t;

#define RELAXED memory_order_relaxed
/* the only writer: a relaxed load and store compile to a plain add, no lock prefix */
#define INC(c, n) atomic_store_explicit(&(c), atomic_load_explicit(&(c), RELAXED) + (n), RELAXED)
#define GET(c) atomic_load_explicit(&(c), RELAXED)
#define SET(c, v) atomic_store_explicit(&(c), (v), RELAXED)

/* upper bounds, seconds and ns: from half a millisecond (an echo) to a minute (a model's answer) */
static const char *const bound_text[NBOUNDS] = {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                                                "0.25",   "0.5",   "1",      "2.5",   "5",    "10",    "30",   "60"};
static const uint64_t bound_ns[NBOUNDS] = {500000ull,    1000000ull,    2500000ull,    5000000ull,
                                           10000000ull,  25000000ull,   50000000ull,   100000000ull,
                                           250000000ull, 500000000ull,  1000000000ull, 2500000000ull,
                                           5000000000ull, 10000000000ull, 30000000000ull, 60000000000ull};

typedef struct hist {
    counter_t bucket[NBOUNDS + 1]; /* not cumulative: the scrape sums them */
    counter_t sum_ns;
} hist_t;

static inline void hist_observe(hist_t *h, uint64_t ns)
{
    int i = 0;
    while (i < NBOUNDS && ns > bound_ns[i])
        i++;
    INC(h->bucket[i], 1);
    INC(h->sum_ns, ns);
}

/* HTTP statuses with their own column; any other counts under its class ("2xx" ...) */
static const int known_status[] = {200, 201, 202, 204, 400, 401, 403, 404, 405, 408, 409,
                                   413, 415, 422, 429, 499, 500, 501, 502, 503, 504};
#define NKNOWN (int)(sizeof(known_status) / sizeof(known_status[0]))
#define NSTATUS (NKNOWN + 5) /* + 1xx..5xx */
static const char *const class_text[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

/* status -> its column: a switch the compiler turns into a table */
static inline unsigned status_col(int s)
{
    switch (s) {
    case 200: return 0;
    case 201: return 1;
    case 202: return 2;
    case 204: return 3;
    case 400: return 4;
    case 401: return 5;
    case 403: return 6;
    case 404: return 7;
    case 405: return 8;
    case 408: return 9;
    case 409: return 10;
    case 413: return 11;
    case 415: return 12;
    case 422: return 13;
    case 429: return 14;
    case 499: return 15;
    case 500: return 16;
    case 501: return 17;
    case 502: return 18;
    case 503: return 19;
    case 504: return 20;
    }
    return s >= 100 && s < 600 ? (unsigned)(NKNOWN + s / 100 - 1) : NKNOWN + 4;
}
_Static_assert(NKNOWN == 21, "status_col() has a case per known status");

typedef enum { S_EXEC = 0, S_AI, S_KINDS } series_kind_t;
static const char *const exec_end_text[] = {"ok", "error", "timeout", "memory_limit", "cancelled"};
#define NEXEC_END 5

/* A series with dynamic labels. Immutable once published but for its counters. */
typedef struct series {
    struct series *next;
    uint64_t hash;
    char *a, *b;   /* agent, version (S_EXEC) / provider, model (S_AI) */
    int c;         /* exec end (S_EXEC) */
    union {
        struct {
            counter_t count;
            hist_t duration;
        } exec;
        struct {
            counter_t calls, input_tokens, output_tokens, errors, retries;
        } ai;
    } v;
} series_t;

/* The worker's private index: open addressing over its own series (never read by a scrape). */
typedef struct index {
    series_t **slot;
    size_t cap, n;
} index_t;

struct lg_metrics {
    _Alignas(64) counter_t http[NROUTES][NSTATUS];
    hist_t http_duration[NROUTES];
    _Atomic int64_t inflight;
    counter_t cache[2][2]; /* [which][hit] */
    counter_t dropped;     /* label sets refused past MAX_SERIES */
    /* gauges, published by the worker */
    counter_t lua_bytes, pg_open, pg_busy, pg_waiting, redis_up, redis_configured, pg_configured;
    counter_t rec_queued, rec_spilled, rec_spill_bytes, rec_written, recorder;
    _Atomic(series_t *) head[S_KINDS];
    /* the worker's own */
    index_t index[S_KINDS];
    lg_rt_t *rt;
    lg_timer_t publish_timer;
    int worker;
};

static _Atomic(lg_metrics_t *) slots[MAX_WORKERS];

/* Every request the access log sees went through on_req on this thread, which set the hint last
 * for its address: a hint for the same address is this request's own. */
static __thread const void *tl_hint_req;
static __thread int tl_hint_route;

void lg_metrics_route_hint(const void *req, int route)
{
    tl_hint_req = req;
    tl_hint_route = route;
}

int lg_metrics_route_of(const void *req) { return req == tl_hint_req ? tl_hint_route : -1; }

/* ---- the hot path ---- */

void lg_metrics_http(lg_metrics_t *m, int route, int status, uint64_t duration_ns)
{
    if (m == NULL)
        return;
    unsigned r = (unsigned)route < NROUTES ? (unsigned)route : NROUTES - 1;
    unsigned s = status_col(status);
    INC(m->http[r][s], 1);
    hist_observe(&m->http_duration[r], duration_ns);
}

void lg_metrics_exec_start(lg_metrics_t *m)
{
    if (m != NULL)
        atomic_store_explicit(&m->inflight, atomic_load_explicit(&m->inflight, RELAXED) + 1, RELAXED);
}

static void publish_series(lg_metrics_t *m, series_kind_t kind, series_t *s)
{
    s->next = atomic_load_explicit(&m->head[kind], RELAXED);
    atomic_store_explicit(&m->head[kind], s, memory_order_release); /* filled before it is seen */
}

/* The index slot for (hash, a, b, c): the series, or the empty slot where it goes. */
static series_t **index_find(index_t *ix, uint64_t h, const char *a, const char *b, int c)
{
    for (size_t i = h & (ix->cap - 1);; i = (i + 1) & (ix->cap - 1)) {
        series_t *s = ix->slot[i];
        if (s == NULL || (s->hash == h && s->c == c && strcmp(s->a, a) == 0 && strcmp(s->b, b) == 0))
            return &ix->slot[i];
    }
}

/* The hash of a label set. An execution's version is already a content hash (16 hex digits): its
 * first 8 bytes and the agent's first and last ones are enough (the index compares whole keys). */
static uint64_t series_hash(series_kind_t kind, const char *a, const char *b, int c)
{
    size_t alen = strlen(a), blen = strlen(b);
    uint64_t h;
    if (kind == S_EXEC && blen >= 8) {
        memcpy(&h, b, 8);
        h ^= ((uint64_t)(unsigned char)a[0] << 8 | (uint64_t)(unsigned char)a[alen ? alen - 1 : 0]) * 0xff51afd7ed558ccdull;
        h ^= alen * 0xc4ceb9fe1a85ec53ull;
    } else {
        h = lg_fnv1a(b, blen, lg_fnv1a(a, alen + 1, LG_FNV_OFFSET));
    }
    h += (uint64_t)c * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 29);
}

static void index_grow(index_t *ix)
{
    size_t cap = ix->cap ? ix->cap * 2 : 64;
    series_t **slot = calloc(cap, sizeof(*slot));
    if (slot == NULL)
        abort();
    for (size_t i = 0; i < ix->cap; i++) {
        series_t *s = ix->slot[i];
        if (s == NULL)
            continue;
        size_t j = s->hash & (cap - 1);
        while (slot[j] != NULL)
            j = (j + 1) & (cap - 1);
        slot[j] = s;
    }
    free(ix->slot);
    ix->slot = slot;
    ix->cap = cap;
}

/* The series of (a, b, c), made and published on first use; NULL past MAX_SERIES. */
static series_t *series_get(lg_metrics_t *m, series_kind_t kind, const char *a, const char *b, int c)
{
    uint64_t h = series_hash(kind, a, b, c);
    index_t *ix = &m->index[kind];
    if (ix->cap == 0)
        index_grow(ix);
    series_t **p = index_find(ix, h, a, b, c);
    if (*p != NULL)
        return *p;
    size_t alen = strlen(a), blen = strlen(b);
    if (ix->n >= MAX_SERIES) {
        INC(m->dropped, 1);
        return NULL;
    }
    series_t *s = calloc(1, sizeof(*s) + alen + blen + 2);
    if (s == NULL)
        return NULL;
    s->hash = h;
    s->c = c;
    s->a = (char *)(s + 1);
    s->b = s->a + alen + 1;
    memcpy(s->a, a, alen + 1);
    memcpy(s->b, b, blen + 1);
    *p = s;
    if (++ix->n * 2 > ix->cap)
        index_grow(ix);
    publish_series(m, kind, s);
    return s;
}

void lg_metrics_exec_end(lg_metrics_t *m, const char *agent, const char *version, int end, uint64_t duration_ns)
{
    if (m == NULL)
        return;
    atomic_store_explicit(&m->inflight, atomic_load_explicit(&m->inflight, RELAXED) - 1, RELAXED);
    series_t *s = series_get(m, S_EXEC, agent, version, (unsigned)end < NEXEC_END ? end : 1);
    if (s == NULL)
        return;
    INC(s->v.exec.count, 1);
    hist_observe(&s->v.exec.duration, duration_ns);
}

void lg_metrics_ai(lg_metrics_t *m, const char *provider, const char *model, uint64_t input_tokens,
                   uint64_t output_tokens, uint64_t retries, int failed)
{
    if (m == NULL)
        return;
    series_t *s = series_get(m, S_AI, provider, model, 0);
    if (s == NULL)
        return;
    INC(s->v.ai.calls, 1);
    INC(s->v.ai.input_tokens, input_tokens);
    INC(s->v.ai.output_tokens, output_tokens);
    INC(s->v.ai.retries, retries);
    if (failed)
        INC(s->v.ai.errors, 1);
}

void lg_metrics_cache(lg_metrics_t *m, lg_metrics_cache_t which, int hit)
{
    if (m != NULL)
        INC(m->cache[which][hit != 0], 1);
}

/* ---- gauges the worker publishes ---- */

void lg_metrics_publish(lg_metrics_t *m)
{
    if (m == NULL)
        return;
    lg_rt_t *rt = m->rt;
    SET(m->lua_bytes, rt->vm.bytes);
    SET(m->pg_configured, rt->cfg->database_url != NULL);
    if (rt->pg != NULL) {
        int open = 0, busy = 0;
        size_t waiting = 0;
        lg_pg_stats(rt->pg, &open, &busy, &waiting);
        SET(m->pg_open, (uint64_t)open);
        SET(m->pg_busy, (uint64_t)busy);
        SET(m->pg_waiting, waiting);
    }
    SET(m->redis_configured, rt->cfg->redis_url != NULL);
    SET(m->redis_up, rt->redis != NULL && lg_redis_up(rt->redis));
    if (rt->recorder != NULL) {
        lg_recorder_stats_t st = {0};
        lg_recorder_stats(rt->recorder, &st);
        SET(m->recorder, 1);
        SET(m->rec_queued, st.queued);
        SET(m->rec_spilled, st.spilled);
        SET(m->rec_spill_bytes, st.spill_bytes);
        SET(m->rec_written, st.written);
    }
}

static void on_publish(lg_timer_t *t)
{
    lg_metrics_t *m = (lg_metrics_t *)((char *)t - offsetof(lg_metrics_t, publish_timer));
    lg_metrics_publish(m);
    lg_timers_add(&m->rt->timers, &m->publish_timer, lg_now_mono_ms() + PUBLISH_MS);
}

lg_metrics_t *lg_metrics_attach(lg_rt_t *rt, int index)
{
    if (index < 0 || index >= MAX_WORKERS)
        return NULL;
    lg_metrics_t *m = atomic_load(&slots[index]);
    if (m == NULL) {
        m = aligned_alloc(64, (sizeof(*m) + 63) & ~(size_t)63);
        if (m == NULL)
            return NULL;
        memset(m, 0, sizeof(*m));
        m->worker = index;
    }
    /* a slot outlives its runtime: a new runtime in the same place (a restart) keeps counting */
    for (int k = 0; k < S_KINDS; k++) {
        free(m->index[k].slot);
        m->index[k] = (index_t){0};
        for (series_t *s = atomic_load(&m->head[k]); s != NULL; s = s->next) {
            if (m->index[k].cap == 0 || (m->index[k].n + 1) * 2 > m->index[k].cap)
                index_grow(&m->index[k]);
            series_t **p = index_find(&m->index[k], s->hash, s->a, s->b, s->c);
            *p = s;
            m->index[k].n++;
        }
    }
    m->rt = rt;
    rt->metrics = m;
    lg_timer_init(&m->publish_timer, on_publish);
    lg_timers_add(&rt->timers, &m->publish_timer, lg_now_mono_ms() + PUBLISH_MS);
    lg_metrics_publish(m);
    atomic_store(&slots[index], m);
    return m;
}

/* ---- the scrape ---- */

static void put_u64(lg_buf_t *b, uint64_t v) { lg_buf_u64(b, v); }

static void put_seconds(lg_buf_t *b, uint64_t ns)
{
    lg_buf_printf(b, "%llu.%09llu", (unsigned long long)(ns / 1000000000ull),
                  (unsigned long long)(ns % 1000000000ull));
}

/* a label value: \ " and newline escaped (text format 0.0.4) */
static void put_label(lg_buf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            lg_buf_putc(b, '\\'), lg_buf_putc(b, *s);
        else if (*s == '\n')
            lg_buf_lit(b, "\\n");
        else
            lg_buf_putc(b, *s);
    }
}

static void head(lg_buf_t *b, const char *name, const char *type, const char *help)
{
    lg_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* one histogram's lines; labels: `k="v",` text (may be empty) */
static void put_hist(lg_buf_t *b, const char *name, const char *labels, const uint64_t *bucket, uint64_t sum_ns)
{
    uint64_t cum = 0;
    for (int i = 0; i <= NBOUNDS; i++) {
        cum += bucket[i];
        lg_buf_printf(b, "%s_bucket{%sle=\"%s\"} ", name, labels, i < NBOUNDS ? bound_text[i] : "+Inf");
        put_u64(b, cum);
        lg_buf_putc(b, '\n');
    }
    size_t ll = strlen(labels);
    lg_buf_printf(b, "%s_sum{%.*s} ", name, (int)(ll ? ll - 1 : 0), labels);
    put_seconds(b, sum_ns);
    lg_buf_printf(b, "\n%s_count{%.*s} ", name, (int)(ll ? ll - 1 : 0), labels);
    put_u64(b, cum);
    lg_buf_putc(b, '\n');
}

static int cmp_series(const void *x, const void *y)
{
    const series_t *a = *(series_t *const *)x, *b = *(series_t *const *)y;
    int r = strcmp(a->a, b->a);
    if (r == 0)
        r = strcmp(a->b, b->b);
    return r != 0 ? r : a->c - b->c;
}

/* every worker's series of one kind, sorted so equal label sets are adjacent; *n their count */
static series_t **collect(lg_metrics_t *const *ms, int nm, series_kind_t kind, size_t *n)
{
    size_t cnt = 0, cap = 64;
    series_t **all = malloc(cap * sizeof(*all));
    for (int w = 0; w < nm && all != NULL; w++)
        for (series_t *s = atomic_load_explicit(&ms[w]->head[kind], memory_order_acquire); s != NULL; s = s->next) {
            if (cnt == cap) {
                series_t **grown = realloc(all, (cap *= 2) * sizeof(*all));
                if (grown == NULL)
                    break;
                all = grown;
            }
            all[cnt++] = s;
        }
    if (all != NULL)
        qsort(all, cnt, sizeof(*all), cmp_series);
    *n = all != NULL ? cnt : 0;
    return all;
}

static void render_exec(lg_buf_t *b, lg_metrics_t *const *ms, int nm)
{
    size_t n;
    series_t **all = collect(ms, nm, S_EXEC, &n);
    head(b, "luagent_executions_total", "counter", "Executions that ended, by agent, version and status.");
    for (size_t i = 0; i < n;) {
        uint64_t count = 0;
        size_t j = i;
        for (; j < n && cmp_series(&all[i], &all[j]) == 0; j++)
            count += GET(all[j]->v.exec.count);
        lg_buf_lit(b, "luagent_executions_total{agent=\"");
        put_label(b, all[i]->a);
        lg_buf_lit(b, "\",version=\"");
        put_label(b, all[i]->b);
        lg_buf_printf(b, "\",status=\"%s\"} ", exec_end_text[all[i]->c]);
        put_u64(b, count);
        lg_buf_putc(b, '\n');
        i = j;
    }
    head(b, "luagent_execution_duration_seconds", "histogram", "Execution durations, by agent.");
    lg_buf_t labels = {0};
    for (size_t i = 0; i < n;) {
        uint64_t bucket[NBOUNDS + 1] = {0}, sum = 0;
        size_t j = i;
        for (; j < n && strcmp(all[i]->a, all[j]->a) == 0; j++) {
            for (int k = 0; k <= NBOUNDS; k++)
                bucket[k] += GET(all[j]->v.exec.duration.bucket[k]);
            sum += GET(all[j]->v.exec.duration.sum_ns);
        }
        lg_buf_reset(&labels);
        lg_buf_lit(&labels, "agent=\"");
        put_label(&labels, all[i]->a);
        lg_buf_lit(&labels, "\",");
        lg_buf_putc(&labels, '\0');
        put_hist(b, "luagent_execution_duration_seconds", labels.data, bucket, sum);
        i = j;
    }
    lg_buf_free(&labels);
    free(all);
}

static void render_ai(lg_buf_t *b, lg_metrics_t *const *ms, int nm)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } fields[] = {
        {"luagent_ai_calls_total", "AI calls (luagent.ai), by provider and model.", offsetof(series_t, v.ai.calls)},
        {"luagent_ai_errors_total", "AI calls that failed after their retries, by provider and model.",
         offsetof(series_t, v.ai.errors)},
        {"luagent_ai_retries_total", "Retried attempts of AI calls, by provider and model.",
         offsetof(series_t, v.ai.retries)},
    };
    size_t n;
    series_t **all = collect(ms, nm, S_AI, &n);
    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]) + 1; f++) {
        int tokens = f == sizeof(fields) / sizeof(fields[0]);
        if (tokens)
            head(b, "luagent_ai_tokens_total", "counter", "Tokens of AI calls, by provider, model and direction.");
        else
            head(b, fields[f].name, "counter", fields[f].help);
        for (size_t i = 0; i < n;) {
            uint64_t v = 0, out = 0;
            size_t j = i;
            for (; j < n && cmp_series(&all[i], &all[j]) == 0; j++) {
                if (tokens) {
                    v += GET(all[j]->v.ai.input_tokens);
                    out += GET(all[j]->v.ai.output_tokens);
                } else {
                    v += GET(*(counter_t *)((char *)all[j] + fields[f].off));
                }
            }
            for (int d = 0; d < (tokens ? 2 : 1); d++) {
                lg_buf_printf(b, "%s{provider=\"", tokens ? "luagent_ai_tokens_total" : fields[f].name);
                put_label(b, all[i]->a);
                lg_buf_lit(b, "\",model=\"");
                put_label(b, all[i]->b);
                if (tokens)
                    lg_buf_printf(b, "\",direction=\"%s", d == 0 ? "input" : "output");
                lg_buf_lit(b, "\"} ");
                put_u64(b, d == 0 ? v : out);
                lg_buf_putc(b, '\n');
            }
            i = j;
        }
    }
    free(all);
}

/* one gauge line per worker: {worker="i"} */
static void per_worker(lg_buf_t *b, const char *name, const char *type, const char *help, lg_metrics_t *const *ms,
                       int nm, size_t off, size_t only_if)
{
    head(b, name, type, help);
    for (int w = 0; w < nm; w++) {
        if (only_if != 0 && GET(*(counter_t *)((char *)ms[w] + only_if)) == 0)
            continue;
        lg_buf_printf(b, "%s{worker=\"%d\"} ", name, ms[w]->worker);
        put_u64(b, GET(*(counter_t *)((char *)ms[w] + off)));
        lg_buf_putc(b, '\n');
    }
}

void lg_metrics_render(lg_buf_t *b, const lg_metrics_info_t *info)
{
    lg_metrics_t *ms[MAX_WORKERS];
    int nm = 0;
    for (int i = 0; i < MAX_WORKERS; i++) {
        lg_metrics_t *m = atomic_load(&slots[i]);
        if (m != NULL)
            ms[nm++] = m;
    }

    head(b, "luagent_build_info", "gauge", "The running build: version and compiler.");
    lg_buf_lit(b, "luagent_build_info{version=\"" LUAGENT_VERSION "\",compiler=\"");
    put_label(b, __VERSION__);
    lg_buf_lit(b, "\"} 1\n");
    head(b, "process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.");
    lg_buf_printf(b, "process_start_time_seconds %llu.%03llu\n", (unsigned long long)(info->started_ms / 1000),
                  (unsigned long long)(info->started_ms % 1000));
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        head(b, "process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
        uint64_t us = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000ull +
                      (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
        lg_buf_lit(b, "process_cpu_seconds_total ");
        put_seconds(b, us * 1000ull);
        lg_buf_putc(b, '\n');
    }
    head(b, "luagent_workers", "gauge", "Worker threads.");
    lg_buf_printf(b, "luagent_workers %d\n", info->workers);
    head(b, "luagent_agents", "gauge", "Agents loaded.");
    lg_buf_printf(b, "luagent_agents %zu\n", info->agents);

    /* HTTP: route x status, and durations by route */
    head(b, "luagent_http_requests_total", "counter", "HTTP requests answered, by route and status.");
    static uint64_t zero_hist[NBOUNDS + 1];
    uint64_t dur[NROUTES][NBOUNDS + 1], dsum[NROUTES];
    memset(dur, 0, sizeof(dur));
    memset(dsum, 0, sizeof(dsum));
    for (int r = 0; r < NROUTES; r++) {
        for (int s = 0; s < NSTATUS; s++) {
            uint64_t v = 0;
            for (int w = 0; w < nm; w++)
                v += GET(ms[w]->http[r][s]);
            if (v == 0)
                continue;
            lg_buf_lit(b, "luagent_http_requests_total{route=\"");
            put_label(b, lg_route_label((lg_route_id_t)r));
            if (s < NKNOWN)
                lg_buf_printf(b, "\",status=\"%d\"} ", known_status[s]);
            else
                lg_buf_printf(b, "\",status=\"%s\"} ", class_text[s - NKNOWN]);
            put_u64(b, v);
            lg_buf_putc(b, '\n');
        }
        for (int w = 0; w < nm; w++) {
            for (int k = 0; k <= NBOUNDS; k++)
                dur[r][k] += GET(ms[w]->http_duration[r].bucket[k]);
            dsum[r] += GET(ms[w]->http_duration[r].sum_ns);
        }
    }
    head(b, "luagent_http_request_duration_seconds", "histogram", "HTTP request durations, by route.");
    for (int r = 0; r < NROUTES; r++) {
        if (memcmp(dur[r], zero_hist, sizeof(zero_hist)) == 0)
            continue;
        char labels[96];
        lg_buf_t lb = {0};
        lg_buf_lit(&lb, "route=\"");
        put_label(&lb, lg_route_label((lg_route_id_t)r));
        lg_buf_lit(&lb, "\",");
        size_t n = lb.len < sizeof(labels) - 1 ? lb.len : sizeof(labels) - 1;
        memcpy(labels, lb.data, n);
        labels[n] = '\0';
        lg_buf_free(&lb);
        put_hist(b, "luagent_http_request_duration_seconds", labels, dur[r], dsum[r]);
    }

    /* executions */
    int64_t inflight = 0;
    for (int w = 0; w < nm; w++)
        inflight += atomic_load_explicit(&ms[w]->inflight, RELAXED);
    head(b, "luagent_executions_in_flight", "gauge", "Executions running now.");
    lg_buf_printf(b, "luagent_executions_in_flight %lld\n", (long long)inflight);
    render_exec(b, ms, nm);

    /* AI */
    render_ai(b, ms, nm);

    /* caches */
    head(b, "luagent_cache_requests_total", "counter",
         "Cache lookups: the agents' result cache and luagent.cache.get, by result.");
    static const char *const cache_name[2] = {"result", "agent"};
    for (int c = 0; c < 2; c++)
        for (int h = 1; h >= 0; h--) {
            uint64_t v = 0;
            for (int w = 0; w < nm; w++)
                v += GET(ms[w]->cache[c][h]);
            lg_buf_printf(b, "luagent_cache_requests_total{cache=\"%s\",result=\"%s\"} ", cache_name[c],
                          h ? "hit" : "miss");
            put_u64(b, v);
            lg_buf_putc(b, '\n');
        }
    uint64_t dropped = 0;
    for (int w = 0; w < nm; w++)
        dropped += GET(ms[w]->dropped);
    head(b, "luagent_metrics_series_dropped_total", "counter",
         "Label sets not counted because a worker already tracks its maximum of series.");
    lg_buf_lit(b, "luagent_metrics_series_dropped_total ");
    put_u64(b, dropped);
    lg_buf_putc(b, '\n');

    /* per worker gauges */
    per_worker(b, "luagent_lua_memory_bytes", "gauge", "Lua heap of each worker's VM, in bytes.", ms, nm,
               offsetof(lg_metrics_t, lua_bytes), 0);
    per_worker(b, "luagent_db_connections_open", "gauge", "Open PostgreSQL connections of each worker's pool.", ms,
               nm, offsetof(lg_metrics_t, pg_open), offsetof(lg_metrics_t, pg_configured));
    per_worker(b, "luagent_db_connections_busy", "gauge", "PostgreSQL connections running a query or lent.", ms, nm,
               offsetof(lg_metrics_t, pg_busy), offsetof(lg_metrics_t, pg_configured));
    per_worker(b, "luagent_db_requests_waiting", "gauge", "Queries waiting for a PostgreSQL connection.", ms, nm,
               offsetof(lg_metrics_t, pg_waiting), offsetof(lg_metrics_t, pg_configured));
    per_worker(b, "luagent_redis_up", "gauge", "1 when the worker's Redis connection is up.", ms, nm,
               offsetof(lg_metrics_t, redis_up), offsetof(lg_metrics_t, redis_configured));
    per_worker(b, "luagent_record_queue_length", "gauge",
               "Execution records waiting in memory to be written to PostgreSQL.", ms, nm,
               offsetof(lg_metrics_t, rec_queued), offsetof(lg_metrics_t, recorder));
    per_worker(b, "luagent_record_spilled_records", "gauge",
               "Execution records this worker wrote to its spill file since start (PostgreSQL away).", ms, nm,
               offsetof(lg_metrics_t, rec_spilled), offsetof(lg_metrics_t, recorder));
    per_worker(b, "luagent_record_spilled_bytes", "gauge", "Bytes this worker wrote to its spill file since start.",
               ms, nm, offsetof(lg_metrics_t, rec_spill_bytes), offsetof(lg_metrics_t, recorder));
    per_worker(b, "luagent_records_written_total", "counter", "Execution records this worker wrote to PostgreSQL.", ms, nm,
               offsetof(lg_metrics_t, rec_written), offsetof(lg_metrics_t, recorder));
}

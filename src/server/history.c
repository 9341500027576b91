/* The execution history routes: GET /api/v1/executions (filters, cursor paging) and
 * GET /api/v1/executions/{id}, from the in-memory history or, with DATABASE_URL, from Postgres. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "luagent/ids.h"
#include "luagent/pg.h"
#include "luagent/router.h"
#include "luagent/server.h"
#include "luagent/store.h"
#include "luagent/worker.h"

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int lg_query_param(h2o_req_t *req, const char *name, char *out, size_t cap)
{
    if (req->query_at == SIZE_MAX)
        return -1;
    const char *p = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    size_t nlen = strlen(name);
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *kend = eq ? eq : stop;
        if ((size_t)(kend - p) == nlen && memcmp(p, name, nlen) == 0) {
            size_t n = 0;
            for (const char *v = eq ? eq + 1 : stop; v < stop; v++) {
                int c = (unsigned char)*v;
                if (c == '+') {
                    c = ' ';
                } else if (c == '%') {
                    if (stop - v < 3 || hexval(v[1]) < 0 || hexval(v[2]) < 0)
                        return -2;
                    c = hexval(v[1]) * 16 + hexval(v[2]);
                    v += 2;
                }
                if (n + 1 >= cap || c == 0)
                    return -2;
                out[n++] = (char)c;
            }
            out[n] = '\0';
            return (int)n;
        }
        p = stop + 1;
    }
    return -1;
}

/* `since`: an RFC 3339 time (2026-11-26T01:02:03.456Z, or with an offset), a date, or epoch ms. */
static int parse_since(const char *s, uint64_t *ms)
{
    char *end;
    if (*s >= '0' && *s <= '9' && strlen(s) >= 10 && strspn(s, "0123456789") == strlen(s)) {
        *ms = strtoull(s, &end, 10);
        return 0;
    }
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%d", &tm);
    if (p == NULL)
        return -1;
    unsigned frac = 0;
    long off = 0;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        if ((p = strptime(p + 1, "%H:%M:%S", &tm)) == NULL)
            return -1;
        if (*p == '.') {
            int digits = 0;
            for (p++; *p >= '0' && *p <= '9'; p++, digits++)
                if (digits < 3)
                    frac = frac * 10 + (unsigned)(*p - '0');
            for (; digits < 3; digits++)
                frac *= 10;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
            off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600 + ((p[4] - '0') * 10 + (p[5] - '0')) * 60;
            if (*p == '-')
                off = -off;
            p += 6;
        } else {
            return -1;
        }
    }
    if (*p != '\0')
        return -1;
    time_t t = timegm(&tm);
    if (t < 0)
        return -1;
    *ms = (uint64_t)(t - off) * 1000 + frac;
    return 0;
}

static int uuid_like(const char *s, size_t n)
{
    if (n != LG_UUID_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : hexval((unsigned char)s[i]) < 0)
            return 0;
    }
    return 1;
}

/* ---- history from Postgres (DATABASE_URL) ----
 * The query runs on the worker's pool while the request waits; a request that goes away first
 * cancels it (its pool object's dispose). The in-memory history still answers for what Postgres
 * does not have yet (records in flight, async jobs queued here) and when Postgres is away. */

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define RECORD_JSON                                                                                                   \
    "json_build_object('execution_id', id, 'agent', agent, 'version', version, 'status', status, 'mode', mode, "     \
    "'task', task, 'context', context, 'result', result, 'error', error, 'usage', usage, 'duration_ms', duration_ms, " \
    "'user', \"user\", 'parent_id', parent_id, 'request_id', request_id, 'created_at', " TS("created_at")            \
    ", 'started_at', " TS("started_at") ", 'finished_at', " TS("finished_at")

static const char LIST_SQL[] = "SELECT " RECORD_JSON ")::text, id FROM executions"
                               " WHERE ($1::text IS NULL OR agent = $1) AND ($2::text IS NULL OR status = $2)"
                               " AND ($3::timestamptz IS NULL OR created_at >= $3) AND ($4::uuid IS NULL OR id < $4)"
                               " AND ($6::uuid IS NULL OR parent_id = $6) ORDER BY id DESC LIMIT $5";
static const char GET_SQL[] =
    "SELECT (" RECORD_JSON ", 'events', COALESCE((SELECT json_agg(json_build_object('seq', seq, 'type', type, 'at', "
    TS("at") ", 'data', data) ORDER BY seq) FROM execution_events WHERE execution_id = x.id), '[]'::json)))::text,"
    " status FROM executions x WHERE id = $1";

typedef struct pg_wait {
    h2o_req_t *req;       /* NULL once the request is gone */
    lg_pg_req_t *q;
    uint64_t start_ns;
    char request_id[72];
    lg_history_query_t hq; /* list: the query, for the memory fallback */
    char agent[LG_AGENT_NAME_MAX + 2], cursor[48], parent[48];
    char id[LG_UUID_LEN + 1]; /* one: the id */
} pg_wait_t;

static void pg_wait_dispose(void *p)
{
    pg_wait_t *w = p;
    if (w->q != NULL)
        lg_pg_cancel(w->q);
}

static pg_wait_t *pg_wait_new(h2o_req_t *req, const char *request_id)
{
    pg_wait_t *w = h2o_mem_alloc_shared(&req->pool, sizeof(*w), pg_wait_dispose);
    memset(w, 0, sizeof(*w));
    w->req = req;
    w->start_ns = lg_now_mono_ns();
    memcpy(w->request_id, request_id, strlen(request_id) + 1);
    return w;
}

static void reply_history(pg_wait_t *w, int status, lg_buf_t *b)
{
    lg_reply_json(w->req, status, w->request_id, b->data, b->len);
    lg_access_log(w->req, status, w->request_id, w->start_ns, NULL, NULL, NULL);
}

static void on_list(void *data, PGresult *res, const char *err, const char *sqlstate)
{
    pg_wait_t *w = data;
    w->q = NULL;
    lg_buf_t *b = &lg_worker_of(w->req)->scratch;
    lg_buf_reset(b);
    if (err != NULL) { /* Postgres away: what this process remembers */
        h2o_add_header_by_str(&w->req->pool, &w->req->res.headers, H2O_STRLIT("x-history-source"), 0, NULL,
                              H2O_STRLIT("memory"));
        lg_history_list(&w->hq, b);
        reply_history(w, 200, b);
        return;
    }
    int n = PQntuples(res), limit = w->hq.limit;
    lg_buf_lit(b, "{\"items\":[");
    for (int i = 0; i < n && i < limit; i++) {
        if (i > 0)
            lg_buf_putc(b, ',');
        lg_buf_append(b, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0));
    }
    lg_buf_lit(b, "],\"next_cursor\":");
    if (n > limit) {
        lg_buf_putc(b, '"');
        lg_buf_append(b, PQgetvalue(res, limit - 1, 1), (size_t)PQgetlength(res, limit - 1, 1));
        lg_buf_putc(b, '"');
    } else {
        lg_buf_lit(b, "null");
    }
    lg_buf_putc(b, '}');
    reply_history(w, 200, b);
}

static int list_from_pg(h2o_req_t *req, lg_pg_t *pg, const lg_history_query_t *q, const char *request_id)
{
    pg_wait_t *w = pg_wait_new(req, request_id);
    w->hq = *q;
    if (q->agent != NULL) {
        memcpy(w->agent, q->agent, q->agent_len + 1);
        w->hq.agent = w->agent;
    }
    if (q->cursor != NULL) {
        memcpy(w->cursor, q->cursor, strlen(q->cursor) + 1);
        w->hq.cursor = w->cursor;
    }
    if (q->parent_id != NULL) {
        memcpy(w->parent, q->parent_id, strlen(q->parent_id) + 1);
        w->hq.parent_id = w->parent;
    }
    char since[40] = "", limit[16];
    if (q->since_ms > 0) {
        lg_buf_t t = {0};
        lg_buf_iso8601(&t, q->since_ms);
        snprintf(since, sizeof(since), "%.*s", (int)t.len - 2, t.data + 1);
        lg_buf_free(&t);
    }
    snprintf(limit, sizeof(limit), "%d", q->limit + 1);
    const char *params[6] = {w->hq.agent, q->status >= 0 ? lg_rec_status_name(q->status) : NULL,
                             since[0] ? since : NULL, w->hq.cursor, limit, w->hq.parent_id};
    const char *err;
    if ((w->q = lg_pg_query(pg, LIST_SQL, 6, params, NULL, NULL, on_list, w, &err)) == NULL)
        on_list(w, NULL, err, NULL);
    return 0;
}

/* The status of a record's JSON text (store.h: its first "status" member is the record's own). */
static int record_status(const char *json)
{
    const char *m = strstr(json, "\"status\":\"");
    return m != NULL ? lg_rec_status_parse(m + 10, strcspn(m + 10, "\"")) : -1;
}

static void on_one(void *data, PGresult *res, const char *err, const char *sqlstate)
{
    pg_wait_t *w = data;
    w->q = NULL;
    lg_buf_t *b = &lg_worker_of(w->req)->scratch;
    lg_buf_reset(b);
    int in_memory = lg_history_get(w->id, LG_UUID_LEN, b);
    if (err == NULL && PQntuples(res) == 1) {
        /* the database's copy unless memory holds a later state (not written yet) */
        int st = lg_rec_status_parse(PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1));
        int mst = in_memory ? record_status(b->data) : -1;
        if (st >= mst) {
            lg_buf_reset(b);
            lg_buf_append(b, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
            in_memory = 1;
        }
    }
    if (in_memory) {
        reply_history(w, 200, b);
    } else if (err != NULL) {
        lg_reply_error(w->req, 503, "unavailable", "the execution history is unavailable: the database is away",
                       w->request_id);
        lg_access_log(w->req, 503, w->request_id, w->start_ns, NULL, NULL, NULL);
    } else {
        lg_reply_error(w->req, 404, "not_found", "no such execution", w->request_id);
        lg_access_log(w->req, 404, w->request_id, w->start_ns, NULL, NULL, NULL);
    }
}

/* GET /api/v1/executions */
int lg_history_list_route(h2o_req_t *req, const char *request_id, lg_buf_t *b)
{
    char agent[LG_AGENT_NAME_MAX + 2], status[16], since[64], limit[16], cursor[48], parent[48];
    lg_history_query_t q = {.status = -1, .limit = 50};
    const char *bad = NULL;
    int n;
    if ((n = lg_query_param(req, "agent", agent, sizeof(agent))) >= 0) {
        if (!lg_agent_name_valid(agent, (size_t)n))
            bad = "agent: not an agent name";
        q.agent = agent, q.agent_len = (size_t)n;
    } else if (n == -2) {
        bad = "agent: not an agent name";
    }
    if ((n = lg_query_param(req, "status", status, sizeof(status))) != -1 &&
        (n < 0 || (q.status = lg_rec_status_parse(status, (size_t)n)) < 0))
        bad = "status: one of queued, running, succeeded, failed";
    if ((n = lg_query_param(req, "since", since, sizeof(since))) != -1 && (n < 0 || parse_since(since, &q.since_ms) != 0))
        bad = "since: an RFC 3339 time like 2026-01-31T12:00:00Z, a date, or epoch milliseconds";
    if ((n = lg_query_param(req, "limit", limit, sizeof(limit))) != -1) {
        char *end;
        long v = n > 0 ? strtol(limit, &end, 10) : 0;
        if (n <= 0 || *end != '\0' || v < 1 || v > 500)
            bad = "limit: an integer from 1 to 500";
        q.limit = (int)v;
    }
    if ((n = lg_query_param(req, "cursor", cursor, sizeof(cursor))) != -1) {
        if (n < 0 || !uuid_like(cursor, (size_t)n))
            bad = "cursor: the next_cursor of a previous page";
        q.cursor = cursor;
    }
    if ((n = lg_query_param(req, "parent_id", parent, sizeof(parent))) != -1) {
        if (n < 0 || !uuid_like(parent, (size_t)n))
            bad = "parent_id: an execution id";
        for (int i = 0; i < n; i++) /* ids are stored in lower case */
            parent[i] = (char)(parent[i] >= 'A' && parent[i] <= 'F' ? parent[i] + 32 : parent[i]);
        q.parent_id = parent;
    }
    if (bad != NULL) {
        lg_reply_error(req, 400, "invalid_request", bad, request_id);
        return 400;
    }
    lg_pg_t *pg = lg_rt_pg(&lg_worker_of(req)->rt);
    if (pg != NULL)
        return list_from_pg(req, pg, &q, request_id) == 0 ? -1 : 500;
    lg_history_list(&q, b);
    lg_reply_json(req, 200, request_id, b->data, b->len);
    return 0;
}

int lg_history_get_route(h2o_req_t *req, const lg_route_t *route, const char *request_id, lg_buf_t *b)
{
    if (!uuid_like(route->name, route->name_len)) {
        lg_reply_error(req, 404, "not_found", "no such execution", request_id);
        return 404;
    }
    lg_pg_t *pg = lg_rt_pg(&lg_worker_of(req)->rt);
    int found = lg_history_get(route->name, route->name_len, b);
    int finished = found && record_status(b->data) >= LG_REC_SUCCEEDED;
    if (pg != NULL && !finished) { /* a finished record never changes: memory is enough */
        pg_wait_t *w = pg_wait_new(req, request_id);
        memcpy(w->id, route->name, LG_UUID_LEN);
        const char *params[1] = {w->id}, *err;
        if ((w->q = lg_pg_query(pg, GET_SQL, 1, params, NULL, NULL, on_one, w, &err)) == NULL)
            on_one(w, NULL, err, NULL);
        return -1;
    }
    if (!found) {
        lg_reply_error(req, 404, "not_found", "no such execution", request_id);
        return 404;
    }
    lg_reply_json(req, 200, request_id, b->data, b->len);
    return 0;
}


/* Execution records: one JSON object per execution state (store.h). */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "luagent/ids.h"
#include "luagent/json.h"
#include "luagent/sched.h"
#include "luagent/store.h"

#define MAX_EVENTS 256
#define MAX_EVENTS_BYTES (256 * 1024)

static const char *const STATUS[] = {"queued", "running", "succeeded", "failed"};

const char *lg_rec_status_name(lg_rec_status_t s) { return STATUS[s]; }

int lg_rec_status_parse(const char *s, size_t len)
{
    for (int i = 0; i < 4; i++)
        if (strlen(STATUS[i]) == len && memcmp(STATUS[i], s, len) == 0)
            return i;
    return -1;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ": the seconds part is formatted once per second and thread (records
 * carry three timestamps; gmtime_r + printf each time cost more than the rest of a record). */
void lg_buf_iso8601(lg_buf_t *b, uint64_t epoch_ms)
{
    static __thread uint64_t cached_s = UINT64_MAX;
    static __thread char cached[64];
    uint64_t sec = epoch_ms / 1000;
    if (sec != cached_s) {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(cached, sizeof(cached), "%04d-%02d-%02dT%02d:%02d:%02d", (tm.tm_year + 1900) % 10000, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        cached_s = sec;
    }
    unsigned ms = (unsigned)(epoch_ms % 1000);
    char *o = lg_buf_reserve(b, 26);
    o[0] = '"';
    memcpy(o + 1, cached, 19);
    o[20] = '.';
    o[21] = (char)('0' + ms / 100);
    o[22] = (char)('0' + ms / 10 % 10);
    o[23] = (char)('0' + ms % 10);
    o[24] = 'Z';
    o[25] = '"';
    b->len += 26;
    b->data[b->len] = '\0';
}

static void put_ts(lg_buf_t *b, const char *key, size_t klen, uint64_t ms)
{
    lg_buf_append(b, key, klen);
    if (ms == 0)
        lg_buf_lit(b, "null");
    else
        lg_buf_iso8601(b, ms);
}

/* ids and versions: characters that need no escaping ([A-Za-z0-9._:-], checked where they are made) */
static void put_id_or_null(lg_buf_t *b, const char *key, size_t klen, const char *s)
{
    lg_buf_append(b, key, klen);
    if (s == NULL || *s == '\0') {
        lg_buf_lit(b, "null");
        return;
    }
    size_t n = strlen(s);
    char *o = lg_buf_reserve(b, n + 2);
    o[0] = '"';
    memcpy(o + 1, s, n);
    o[n + 1] = '"';
    b->len += n + 2;
    b->data[b->len] = '\0';
}

static void put_json_or_null(lg_buf_t *b, const char *key, size_t klen, const char *json, size_t len)
{
    lg_buf_append(b, key, klen);
    if (json == NULL)
        lg_buf_lit(b, "null");
    else
        lg_buf_append(b, json, len);
}

lg_rec_t *lg_rec_ref(lg_rec_t *r)
{
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    return r;
}

void lg_rec_unref(lg_rec_t *r)
{
    if (r != NULL && atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1)
        free(r);
}

void lg_record_begin(lg_exec_t *e, int task_idx)
{
    lg_json_error_t err;
    lg_buf_t *b = &e->rec;
    if (b->len > 0)
        return; /* encoded when it was queued */
    lg_buf_lit(b, "\"task\":");
    if (lg_json_encode(e->co, task_idx, b, LG_JSON_DEFAULT_MAX_DEPTH, &err) != LG_JSON_OK) {
        b->len = 7;
        lg_buf_lit(b, "null");
    }
    lg_buf_lit(b, ",\"context\":");
    size_t mark = b->len;
    if (lua_isnil(e->co, task_idx + 1) ||
        lg_json_encode(e->co, task_idx + 1, b, LG_JSON_DEFAULT_MAX_DEPTH, &err) != LG_JSON_OK) {
        b->len = mark;
        lg_buf_lit(b, "null");
    }
}

int lg_record_begin_text(lg_exec_t *e, const char *body, const lg_json_span_t *sp)
{
    if (sp[0].len == 0)
        return -1; /* lg_record_begin encodes the values instead */
    lg_buf_t *b = &e->rec;
    lg_buf_reset(b);
    lg_buf_lit(b, "\"task\":");
    lg_json_compact(b, body + sp[0].off, sp[0].len);
    lg_buf_lit(b, ",\"context\":");
    if (sp[1].len > 0)
        lg_json_compact(b, body + sp[1].off, sp[1].len);
    else
        lg_buf_lit(b, "null");
    return 0;
}

void lg_record_event(lg_exec_t *e, const char *type, const char *data, size_t len)
{
    if (!e->recording)
        return;
    if (e->nevents >= MAX_EVENTS || e->events.len + len > MAX_EVENTS_BYTES) {
        e->events_dropped++;
        return;
    }
    lg_buf_t *b = &e->events;
    if (e->nevents > 0)
        lg_buf_putc(b, ',');
    lg_buf_printf(b, "{\"seq\":%u,\"type\":", ++e->nevents);
    lg_buf_json_str(b, type, strlen(type));
    lg_buf_lit(b, ",\"at\":");
    lg_buf_iso8601(b, lg_now_epoch_ms());
    lg_buf_lit(b, ",\"data\":");
    lg_buf_append(b, data, len);
    lg_buf_putc(b, '}');
}

lg_rec_t *lg_record_build(lg_exec_t *e, lg_rec_status_t st, const char *result, size_t rlen, const char *error,
                          size_t elen)
{
    /* the record is built in place: its header first, the JSON after it, in one allocation */
    const size_t H = offsetof(lg_rec_t, json);
    lg_buf_t b = {0};
    lg_buf_reserve(&b, H + 512 + e->rec.len + rlen + elen + e->events.len);
    b.len = H;
    int finished = st >= LG_REC_SUCCEEDED;
    lg_buf_lit(&b, "{\"execution_id\":\"");
    lg_buf_append(&b, e->id, strlen(e->id));
    lg_buf_lit(&b, "\",\"agent\":");
    lg_buf_json_str(&b, e->agent, strlen(e->agent));
    put_id_or_null(&b, LG_STRLIT(",\"version\":"), e->version);
    lg_buf_lit(&b, ",\"status\":\"");
    lg_buf_append(&b, STATUS[st], strlen(STATUS[st]));
    if (e->async)
        lg_buf_lit(&b, "\",\"mode\":\"async\",");
    else
        lg_buf_lit(&b, "\",\"mode\":\"sync\",");
    if (e->rec.len > 0)
        lg_buf_append(&b, e->rec.data, e->rec.len);
    else
        lg_buf_lit(&b, "\"task\":null,\"context\":null");
    put_json_or_null(&b, LG_STRLIT(",\"result\":"), result, rlen);
    put_json_or_null(&b, LG_STRLIT(",\"error\":"), error, elen);
    lg_buf_lit(&b, ",\"usage\":");
    if (st >= LG_REC_RUNNING && e->co != NULL)
        lg_exec_usage_json(e, &b);
    else
        lg_buf_lit(&b, "{}");
    lg_buf_lit(&b, ",\"duration_ms\":");
    if (finished)
        lg_buf_fixed3(&b, e->duration_ms);
    else
        lg_buf_lit(&b, "null");
    if (e->user_role) { /* {"id","role"} of the caller (auth.h's role names) */
        static const char *const roles[] = {"none", "viewer", "operator", "admin"};
        lg_buf_lit(&b, ",\"user\":{\"id\":");
        lg_buf_json_str(&b, e->user_id, strlen(e->user_id)); /* a JWT's subject: any text */
        lg_buf_printf(&b, ",\"role\":\"%s\"}", roles[e->user_role & 3]);
    } else {
        lg_buf_lit(&b, ",\"user\":null");
    }
    put_id_or_null(&b, LG_STRLIT(",\"parent_id\":"), e->parent_id);
    put_id_or_null(&b, LG_STRLIT(",\"request_id\":"), e->request_id);
    put_ts(&b, LG_STRLIT(",\"created_at\":"), e->created_ms);
    put_ts(&b, LG_STRLIT(",\"started_at\":"), st >= LG_REC_RUNNING ? e->started_ms : 0);
    put_ts(&b, LG_STRLIT(",\"finished_at\":"), finished ? e->started_ms + (uint64_t)(e->duration_ms + 0.5) : 0);
    size_t head_len = b.len;
    lg_buf_lit(&b, ",\"events\":[");
    lg_buf_append(&b, e->events.data ? e->events.data : "", e->events.len);
    if (e->events_dropped > 0) {
        if (e->nevents > 0)
            lg_buf_putc(&b, ',');
        lg_buf_printf(&b, "{\"seq\":%u,\"type\":\"truncated\",\"at\":", e->nevents + 1);
        lg_buf_iso8601(&b, lg_now_epoch_ms());
        lg_buf_printf(&b, ",\"data\":{\"dropped\":%u}}", e->events_dropped);
    }
    lg_buf_lit(&b, "]}");
    lg_rec_t *r = (lg_rec_t *)b.data; /* realloc'ed memory: aligned for any type */
    r->next = NULL;
    atomic_init(&r->refs, 1);
    memcpy(r->id, e->id, sizeof(r->id));
    memcpy(r->agent, e->agent, sizeof(r->agent));
    r->id_hash = lg_rec_id_hash(r->id, strlen(r->id));
    memcpy(r->parent_id, e->parent_id, sizeof(r->parent_id));
    r->status = st;
    r->created_ms = e->created_ms;
    r->duration_ms = finished ? e->duration_ms : 0;
    r->len = b.len - H;
    r->head_len = head_len - H;
    return r;
}

void lg_record_commit(lg_rt_t *rt, lg_rec_t *r)
{
    if (rt->recorder != NULL)
        lg_recorder_push(rt->recorder, lg_rec_ref(r));
    lg_history_put(r);
}

/* Async executions (jobs.h): the process-wide job queue, the runner each worker polls, and the
 * delivery of final records to callback URLs. */
#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "luagent/trace.h"
#include "luagent/curlm.h"
#include "luagent/jobs.h"
#include "luagent/json.h"
#include "luagent/log.h"
#include "luagent/redis.h"
#include "luagent/router.h"
#include "luagent/schema.h"
#include "luagent/store.h"
#include "luagent/worker.h"

#define CALLBACK_ATTEMPTS 6      /* 1 + 5 retries: 1, 2, 4, 8, 16 s apart (with jitter) */
#define CALLBACK_TIMEOUT_MS 10000

/* ---- the in-memory queue ---- */

typedef struct qjob {
    struct qjob *next;
    size_t len;
    char json[];
} qjob_t;

static struct {
    pthread_mutex_t lock;
    qjob_t *head, *tail;
    _Atomic size_t n;
} Q = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void queue_push(const char *json, size_t len)
{
    qjob_t *j = malloc(sizeof(*j) + len + 1);
    if (j == NULL)
        abort();
    j->next = NULL;
    j->len = len;
    memcpy(j->json, json, len);
    j->json[len] = '\0';
    pthread_mutex_lock(&Q.lock);
    if (Q.tail)
        Q.tail->next = j;
    else
        Q.head = j;
    Q.tail = j;
    atomic_fetch_add(&Q.n, 1);
    pthread_mutex_unlock(&Q.lock);
}

static qjob_t *queue_pop(void)
{
    if (atomic_load(&Q.n) == 0)
        return NULL;
    pthread_mutex_lock(&Q.lock);
    qjob_t *j = Q.head;
    if (j != NULL) {
        Q.head = j->next;
        if (Q.head == NULL)
            Q.tail = NULL;
        atomic_fetch_sub(&Q.n, 1);
    }
    pthread_mutex_unlock(&Q.lock);
    return j;
}

void lg_jobs_free(void)
{
    qjob_t *j;
    while ((j = queue_pop()) != NULL)
        free(j);
}

/* ---- callbacks: POST the final record, retried with backoff ---- */

typedef struct callback {
    struct callback *prev, *next;
    lg_worker_t *w;
    char *url, *body;
    size_t len;
    int attempt;
    CURL *easy;
    struct curl_slist *hdrs;
    lg_timer_t retry;
    char exec_id[LG_UUID_LEN + 1];
} callback_t;

static void callback_free(callback_t *c)
{
    lg_worker_t *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->callbacks = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->easy != NULL)
        lg_curlm_release(lg_rt_curl(&w->rt), c->easy);
    if (c->hdrs != NULL)
        curl_slist_free_all(c->hdrs);
    lg_timers_del(&w->rt.timers, &c->retry);
    free(c->url);
    free(c->body);
    free(c);
}

static size_t discard(char *p, size_t size, size_t n, void *data) { return size * n; }

static void callback_send(callback_t *c);

static void callback_retry(lg_timer_t *t)
{
    callback_send((callback_t *)((char *)t - offsetof(callback_t, retry)));
}

static void callback_done(CURL *easy, CURLcode rc, void *data)
{
    callback_t *c = data;
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    lg_curlm_release(lg_rt_curl(&c->w->rt), easy);
    c->easy = NULL;
    if (rc == CURLE_OK && status >= 200 && status <= 299) {
        lg_log(LG_LOG_INFO, "callback for execution %s delivered (HTTP %ld, attempt %d)", c->exec_id, status, c->attempt);
        callback_free(c);
        return;
    }
    const char *why = rc != CURLE_OK ? curl_easy_strerror(rc) : "a non-2xx answer";
    if (c->attempt >= CALLBACK_ATTEMPTS) {
        lg_log(LG_LOG_WARN, "callback for execution %s failed after %d attempts (last: HTTP %ld, %s)", c->exec_id,
               c->attempt, status, why);
        callback_free(c);
        return;
    }
    uint64_t delay = 1000ull << (c->attempt - 1);
    delay += lg_rand64() % (delay / 4 + 1);
    lg_log(LG_LOG_INFO, "callback for execution %s: HTTP %ld, %s; retrying in %llu ms", c->exec_id, status, why,
           (unsigned long long)delay);
    lg_timers_add(&c->w->rt.timers, &c->retry, lg_now_mono_ms() + delay);
}

static void callback_send(callback_t *c)
{
    lg_curlm_t *m = lg_rt_curl(&c->w->rt);
    c->attempt++;
    if (m == NULL || (c->easy = lg_curlm_easy(m)) == NULL) {
        lg_log(LG_LOG_WARN, "callback for execution %s dropped: libcurl is not available", c->exec_id);
        callback_free(c);
        return;
    }
    curl_easy_setopt(c->easy, CURLOPT_URL, c->url);
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->hdrs);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE, (long)c->len);
    curl_easy_setopt(c->easy, CURLOPT_TIMEOUT_MS, (long)CALLBACK_TIMEOUT_MS);
    curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, discard);
    if (lg_curlm_add(m, c->easy, callback_done, c) != 0)
        callback_done(c->easy, CURLE_FAILED_INIT, c);
}

static void callback_start(lg_worker_t *w, const char *url, const lg_rec_t *r)
{
    if (lg_rt_curl(&w->rt) == NULL) { /* loads libcurl: the curl_* calls below need it */
        lg_log(LG_LOG_WARN, "callback for execution %s dropped: libcurl is not available", r->id);
        return;
    }
    callback_t *c = calloc(1, sizeof(*c));
    c->w = w;
    c->url = strdup(url);
    c->body = malloc(r->len + 1);
    memcpy(c->body, r->json, r->len + 1);
    c->len = r->len;
    memcpy(c->exec_id, r->id, sizeof(c->exec_id));
    lg_timer_init(&c->retry, callback_retry);
    char line[160];
    c->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    c->hdrs = curl_slist_append(c->hdrs, "Expect:");
    snprintf(line, sizeof(line), "X-Luagent-Execution-Id: %s", r->id);
    c->hdrs = curl_slist_append(c->hdrs, line);
    const char *secret = w->server->cfg->callback_secret;
    if (secret != NULL) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)c->body, c->len, md, &mdlen);
        int n = snprintf(line, sizeof(line), "X-Luagent-Signature: sha256=");
        for (unsigned i = 0; i < mdlen; i++)
            n += snprintf(line + n, sizeof(line) - (size_t)n, "%02x", md[i]);
        c->hdrs = curl_slist_append(c->hdrs, line);
    }
    c->next = w->callbacks;
    if (w->callbacks)
        w->callbacks->prev = c;
    w->callbacks = c;
    callback_send(c);
}

void lg_jobs_dispose(lg_worker_t *w)
{
    lg_timers_del(&w->rt.timers, &w->jobs_claim);
    if (w->jobs_conn != NULL)
        lg_redis_free(w->jobs_conn);
    w->jobs_conn = NULL;
    if (w->callbacks != NULL)
        lg_log(LG_LOG_WARN, "worker %d: dropping undelivered callbacks at shutdown", w->index);
    while (w->callbacks != NULL)
        callback_free(w->callbacks);
}

/* ---- the runner ---- */

typedef struct job {
    struct job *prev, *next; /* the worker's running jobs */
    lg_worker_t *w;
    char *callback_url;
    char entry[48]; /* its Redis stream entry id, "" for the in-memory queue */
} job_t;

static void job_link(lg_worker_t *w, job_t *j)
{
    j->prev = NULL;
    j->next = w->jobs;
    if (w->jobs)
        w->jobs->prev = j;
    w->jobs = j;
    w->jobs_running++;
}

static void job_unlink(lg_worker_t *w, job_t *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        w->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    w->jobs_running--;
}

static void stream_ack(lg_worker_t *w, const char *entry);

static void job_done(lg_exec_t *e)
{
    job_t *j = e->owner;
    lg_worker_t *w = j->w;
    job_unlink(w, j);
    lg_buf_t b = {0};
    int is_err;
    size_t roff = 0, rlen = 0;
    lg_outcome_json(e, 0, &b, e->request_id, &is_err, &roff, &rlen);
    lg_rec_t *r = lg_outcome_rec(e, &b, is_err, roff, rlen);
    lg_buf_free(&b);
    if (e->end == LG_END_CANCELLED && j->entry[0] != '\0') {
        /* cancelled by a shutdown: left pending in the stream, another consumer reclaims it */
        lg_log(LG_LOG_WARN, "async execution %s of %s interrupted by shutdown: left for another replica", e->id, e->agent);
        lg_rec_unref(r);
    } else {
        if (j->callback_url != NULL)
            callback_start(w, j->callback_url, r);
        lg_log(is_err ? LG_LOG_WARN : LG_LOG_INFO, "async execution %s of %s %s", e->id, e->agent,
               is_err ? "failed" : "succeeded");
        if (e->recording)
            lg_record_commit(e->rt, r);
        else
            lg_rec_unref(r);
        if (j->entry[0] != '\0')
            stream_ack(w, j->entry);
    }
    free(j->callback_url);
    free(j);
}

static const lg_exec_ops_t job_ops = {.on_done = job_done};

static const char *str_field(lua_State *co, int t, const char *k, size_t *len)
{
    lua_getfield(co, t, k);
    const char *s = lua_type(co, -1) == LUA_TSTRING ? lua_tolstring(co, -1, len) : NULL;
    lua_pop(co, 1); /* the table keeps it alive */
    return s;
}

/* A job that cannot start: record it failed with the error object in b (lg_error_json), which is
 * freed. Stack of co: [task, context]. */
static void job_refused_json(lg_exec_t *e, lg_buf_t b, const char *url)
{
    lg_record_begin(e, 1);
    lg_rec_t *r = lg_record_build(e, LG_REC_FAILED, NULL, 0, b.data + 9, b.len - 10);
    lg_buf_free(&b);
    lg_worker_t *w = e->rt->owner;
    if (url != NULL)
        callback_start(w, url, r);
    lg_record_commit(e->rt, r);
}

/* The same with `code` and `msg`. */
static void job_refused(lg_exec_t *e, const char *code, const char *msg, const char *url)
{
    lg_buf_t b = {0};
    lg_error_json(&b, code, msg, strlen(msg), e->request_id, e->id);
    job_refused_json(e, b, url);
}

/* Decode a job onto a new execution: 0 with co = [task, context] and the ids set, or -1. */
static int job_decode(lg_exec_t *e, const char *json, size_t len, char *name, size_t *namelen, char **url)
{
    lua_State *co = e->co;
    size_t idlen = 0, alen = 0, rlen = 0, ulen = 0, tlen = 0;
    const char *id = NULL, *agent = NULL, *rid = NULL, *u = NULL, *tp = NULL;
    if (lg_json_decode(co, json, len, LG_JSON_DEFAULT_MAX_DEPTH, NULL) == LG_JSON_OK && lua_istable(co, 1)) {
        id = str_field(co, 1, "id", &idlen);
        agent = str_field(co, 1, "agent", &alen);
        rid = str_field(co, 1, "request_id", &rlen);
        u = str_field(co, 1, "callback_url", &ulen);
        tp = str_field(co, 1, "traceparent", &tlen);
    }
    if (id == NULL || idlen != LG_UUID_LEN || agent == NULL || !lg_agent_name_valid(agent, alen)) {
        lg_log(LG_LOG_ERROR, "dropping a malformed job: %.*s", (int)(len < 200 ? len : 200), json);
        lua_settop(co, 0);
        return -1;
    }
    e->async = 1;
    memcpy(e->id, id, LG_UUID_LEN + 1);
    snprintf(e->request_id, sizeof(e->request_id), "%s", rid ? rid : "");
    if (tp != NULL && lg_trace_valid(tp, tlen)) /* the submitting request's trace (observe.c) */
        memcpy(e->trace, tp, LG_TRACEPARENT_LEN + 1);
    snprintf(e->agent, sizeof(e->agent), "%.*s", (int)alen, agent);
    memcpy(name, agent, alen); /* before the job table (which holds these strings) goes */
    *namelen = alen;
    *url = u != NULL ? strndup(u, ulen) : NULL;
    lua_getfield(co, 1, "created_ms");
    e->created_ms = (uint64_t)lua_tonumber(co, -1);
    lua_getfield(co, 1, "user_role"); /* the caller who submitted it */
    e->user_role = (int)lua_tonumber(co, -1) & 3;
    lua_pop(co, 2);
    size_t ulen2;
    const char *uid = str_field(co, 1, "user_id", &ulen2);
    snprintf(e->user_id, sizeof(e->user_id), "%s", uid && ulen2 < sizeof(e->user_id) ? uid : "");
    const char *allow = str_field(co, 1, "agents_allow", &ulen2); /* the submitter's key's allow-list */
    snprintf(e->agents_allow, sizeof(e->agents_allow), "%s", allow && ulen2 < sizeof(e->agents_allow) ? allow : "");
    lua_getfield(co, 1, "task");
    lua_getfield(co, 1, "context");
    if (lg_json_is_null(co, -1)) {
        lua_pop(co, 1);
        lua_pushnil(co);
    }
    lua_remove(co, 1);
    return 0;
}

static void start_job(lg_worker_t *w, const char *json, size_t len, const char *entry)
{
    lg_exec_t *e = lg_exec_new(&w->rt, &job_ops, NULL);
    char name[LG_AGENT_NAME_MAX + 1], *url = NULL;
    size_t namelen = 0;
    if (job_decode(e, json, len, name, &namelen, &url) != 0) {
        lg_exec_discard(e);
        if (entry != NULL)
            stream_ack(w, entry);
        return;
    }
    job_t *j = calloc(1, sizeof(*j));
    j->w = w;
    j->callback_url = url;
    snprintf(j->entry, sizeof(j->entry), "%s", entry ? entry : "");
    e->owner = j;
    lg_schema_report_t invalid = {0};
    lg_launch_status_t ls = lg_exec_launch(e, name, namelen, 0, &invalid);
    if (ls != LG_LAUNCH_OK) {
        lg_buf_t b = {0};
        if (ls == LG_LAUNCH_INVALID) { /* checked at submission; the agent has changed since */
            lg_error_json_invalid(&b, name, namelen, &invalid, e->request_id, e->id);
        } else {
            char msg[LG_AGENT_NAME_MAX + 32];
            int n = snprintf(msg, sizeof(msg), "no agent named '%.*s'", (int)namelen, name);
            lg_error_json(&b, "not_found", msg, (size_t)n, e->request_id, e->id);
        }
        lg_buf_free(&invalid.details);
        job_refused_json(e, b, j->callback_url);
        lua_settop(e->co, 0);
        lg_exec_discard(e);
        if (entry != NULL)
            stream_ack(w, entry);
        free(j->callback_url);
        free(j);
        return;
    }
    job_link(w, j);
    if (e->recording)
        lg_record_commit(&w->rt, lg_record_build(e, LG_REC_RUNNING, NULL, 0, NULL, 0));
}

static size_t room(lg_worker_t *w)
{
    size_t max = (size_t)w->server->cfg->job_concurrency;
    return w->jobs_running < max ? max - w->jobs_running : 0;
}

/* ---- the Redis Streams queue (REDIS_URL set) ----
 * Jobs are entries of the stream luagent:jobs read by the consumer group "luagent": each worker of
 * each replica is a consumer (host-pid-worker) reading with XREADGROUP on a connection of its own
 * (the read blocks on the server). A running job's entry stays pending until it ends (XACK + XDEL);
 * its consumer renews it (XCLAIM ... JUSTID) every LUAGENT_JOB_CLAIM_MS / 3, so an entry idle
 * longer than LUAGENT_JOB_CLAIM_MS belongs to a consumer that died, and any worker with room takes
 * it over (XAUTOCLAIM) and runs it again from the start. */

#define STREAM "luagent:jobs"
#define GROUP "luagent"

static void stream_ack(lg_worker_t *w, const char *entry)
{
    lg_redis_t *r = lg_rt_redis(&w->rt);
    if (r == NULL)
        return;
    const char *ack[] = {"XACK", STREAM, GROUP, entry}, *del[] = {"XDEL", STREAM, entry};
    lg_redis_command(r, 4, ack, NULL, NULL, NULL);
    lg_redis_command(r, 3, del, NULL, NULL, NULL);
}

static void group_create(void *data)
{
    lg_worker_t *w = data;
    const char *argv[] = {"XGROUP", "CREATE", STREAM, GROUP, "0", "MKSTREAM"};
    lg_redis_command(w->jobs_conn, 6, argv, NULL, NULL, NULL); /* BUSYGROUP when it exists: fine */
}

/* entries: [[id, [field, value, ...]], ...] -> start each job */
static void start_entries(lg_worker_t *w, const redisReply *entries)
{
    if (entries == NULL || entries->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *en = entries->element[i];
        if (en->type != REDIS_REPLY_ARRAY || en->elements < 2 || en->element[0]->type != REDIS_REPLY_STRING)
            continue;
        const redisReply *f = en->element[1];
        const char *id = en->element[0]->str;
        if (f->type != REDIS_REPLY_ARRAY || f->elements < 2 || f->element[1]->type != REDIS_REPLY_STRING) {
            stream_ack(w, id); /* deleted meanwhile, or not ours */
            continue;
        }
        if (atomic_load(&w->server->draining))
            continue; /* stays pending: reclaimed elsewhere */
        start_job(w, f->element[1]->str, f->element[1]->len, id);
    }
}

static void on_read(void *data, redisReply *reply, const char *err)
{
    lg_worker_t *w = data;
    w->jobs_reading = NULL;
    /* [[stream, entries]] or nil after the BLOCK timeout */
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
        reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 2)
        start_entries(w, reply->element[0]->element[1]);
    else if (reply != NULL && reply->type == REDIS_REPLY_ERROR && strstr(reply->str, "NOGROUP") != NULL)
        group_create(w);
}

static void stream_read(lg_worker_t *w)
{
    size_t n = room(w);
    if (w->jobs_conn == NULL || w->jobs_reading != NULL || n == 0 || !lg_redis_up(w->jobs_conn))
        return;
    char count[24];
    snprintf(count, sizeof(count), "%zu", n);
    const char *argv[] = {"XREADGROUP", "GROUP", GROUP, w->consumer, "COUNT", count, "BLOCK", "1000", "STREAMS", STREAM, ">"};
    w->jobs_reading = lg_redis_command(w->jobs_conn, 11, argv, NULL, on_read, w);
}

static void on_autoclaim(void *data, redisReply *reply, const char *err)
{
    /* [next-cursor, entries, deleted-ids] */
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2) {
        lg_worker_t *w = data;
        if (reply->element[1]->type == REDIS_REPLY_ARRAY && reply->element[1]->elements > 0)
            lg_log(LG_LOG_WARN, "worker %d: reclaimed %zu async jobs from a consumer that stopped", w->index,
                   reply->element[1]->elements);
        start_entries(w, reply->element[1]);
    }
}

/* Every LUAGENT_JOB_CLAIM_MS / 3: renew our running entries, take over abandoned ones. */
static void on_claim_timer(lg_timer_t *t)
{
    lg_worker_t *w = (lg_worker_t *)((char *)t - offsetof(lg_worker_t, jobs_claim));
    lg_redis_t *r = lg_rt_redis(&w->rt);
    int period = w->server->cfg->job_claim_ms / 3;
    if (r != NULL && lg_redis_up(r) && !atomic_load(&w->server->draining)) {
        for (job_t *j = w->jobs; j != NULL; j = j->next)
            if (j->entry[0] != '\0') {
                const char *argv[] = {"XCLAIM", STREAM, GROUP, w->consumer, "0", j->entry, "JUSTID"};
                lg_redis_command(r, 7, argv, NULL, NULL, NULL);
            }
        size_t n = room(w);
        if (n > 0) {
            char idle[24], count[24];
            snprintf(idle, sizeof(idle), "%d", w->server->cfg->job_claim_ms);
            snprintf(count, sizeof(count), "%zu", n);
            const char *argv[] = {"XAUTOCLAIM", STREAM, GROUP, w->consumer, idle, "0-0", "COUNT", count};
            lg_redis_command(r, 8, argv, NULL, on_autoclaim, w);
        }
    }
    lg_timers_add(&w->rt.timers, &w->jobs_claim, lg_now_mono_ms() + (uint64_t)(period > 0 ? period : 1));
}

static void stream_start(lg_worker_t *w)
{
    const lg_config_t *cfg = w->server->cfg;
    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    snprintf(w->consumer, sizeof(w->consumer), "%s-%d-%d", host, (int)getpid(), w->index);
    w->jobs_conn = lg_redis_new(w->rt.loop, &w->rt.timers, cfg->redis_url, "redis jobs");
    lg_redis_on_connect(w->jobs_conn, group_create, w);
    lg_timer_init(&w->jobs_claim, on_claim_timer);
    lg_timers_add(&w->rt.timers, &w->jobs_claim, lg_now_mono_ms() + (uint64_t)cfg->job_claim_ms / 3 + 1);
}

static void on_xadd(void *data, redisReply *reply, const char *err)
{
    qjob_t *j = data; /* kept until Redis has it: on failure it runs here instead of being lost */
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        lg_log(LG_LOG_WARN, "redis refused an async job (%s): it runs on this replica",
               reply != NULL ? reply->str : err ? err : "connection lost");
        queue_push(j->json, j->len);
    }
    free(j);
}

/* ---- the runner's entry points ---- */

void lg_jobs_poll(lg_worker_t *w)
{
    if (atomic_load(&w->server->draining))
        return;
    if (w->server->cfg->redis_url != NULL) {
        if (w->jobs_conn == NULL)
            stream_start(w);
        stream_read(w);
    }
    if (atomic_load(&Q.n) == 0)
        return;
    qjob_t *j;
    while (room(w) > 0 && (j = queue_pop()) != NULL) {
        start_job(w, j->json, j->len, NULL);
        free(j);
    }
}

void lg_jobs_submit(lg_worker_t *w, const char *json, size_t len)
{
    lg_redis_t *r = lg_rt_redis(&w->rt);
    if (r != NULL) {
        qjob_t *j = malloc(sizeof(*j) + len + 1);
        j->len = len;
        memcpy(j->json, json, len);
        j->json[len] = '\0';
        const char *argv[] = {"XADD", STREAM, "*", "job", j->json};
        size_t lens[] = {4, sizeof(STREAM) - 1, 1, 3, len};
        if (lg_redis_command(r, 5, argv, lens, on_xadd, j) != NULL)
            return;
        free(j);
        lg_log(LG_LOG_WARN, "redis is unavailable: an async job runs on this replica");
    }
    queue_push(json, len);
    if (room(w) == 0) /* someone else has room */
        for (int i = 0; i < w->server->nworkers; i++)
            if (&w->server->workers[i] != w)
                lg_worker_wake(&w->server->workers[i]);
}

void lg_jobs_abandon(lg_worker_t *w)
{
    qjob_t *q;
    while ((q = queue_pop()) != NULL) {
        lg_exec_t *e = lg_exec_new(&w->rt, &job_ops, NULL);
        char name[LG_AGENT_NAME_MAX + 1], *url = NULL;
        size_t namelen;
        if (job_decode(e, q->json, q->len, name, &namelen, &url) == 0)
            job_refused(e, "unavailable", "the server shut down before the job ran", NULL);
        free(url);
        lua_settop(e->co, 0);
        lg_exec_discard(e);
        free(q);
    }
}

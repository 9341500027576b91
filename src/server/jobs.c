/* Async executions (jobs.h): the process-wide job queue, the runner each worker polls, and the
 * delivery of final records to callback URLs. */
#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/curlm.h"
#include "luagent/jobs.h"
#include "luagent/json.h"
#include "luagent/log.h"
#include "luagent/router.h"
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
    if (w->callbacks != NULL)
        lg_log(LG_LOG_WARN, "worker %d: dropping undelivered callbacks at shutdown", w->index);
    while (w->callbacks != NULL)
        callback_free(w->callbacks);
}

/* ---- the runner ---- */

typedef struct job {
    lg_worker_t *w;
    char *callback_url;
} job_t;

static void job_done(lg_exec_t *e)
{
    job_t *j = e->owner;
    lg_worker_t *w = j->w;
    w->jobs_running--;
    lg_buf_t b = {0};
    int is_err;
    size_t roff = 0, rlen = 0;
    lg_outcome_json(e, 0, &b, e->request_id, &is_err, &roff, &rlen);
    lg_rec_t *r = lg_outcome_rec(e, &b, is_err, roff, rlen);
    lg_buf_free(&b);
    if (j->callback_url != NULL)
        callback_start(w, j->callback_url, r);
    lg_log(is_err ? LG_LOG_WARN : LG_LOG_INFO, "async execution %s of %s %s", e->id, e->agent,
           is_err ? "failed" : "succeeded");
    if (e->recording)
        lg_record_commit(e->rt, r);
    else
        free(r);
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

/* A job that cannot start: record it failed with `code` and `msg`. Stack of co: [task, context]. */
static void job_refused(lg_exec_t *e, const char *code, const char *msg, const char *url)
{
    lg_buf_t b = {0};
    lg_error_json(&b, code, msg, strlen(msg), e->request_id, e->id);
    lg_record_begin(e, 1);
    lg_rec_t *r = lg_record_build(e, LG_REC_FAILED, NULL, 0, b.data + 9, b.len - 10);
    lg_buf_free(&b);
    lg_worker_t *w = e->rt->owner;
    if (url != NULL)
        callback_start(w, url, r);
    lg_record_commit(e->rt, r);
}

static void start_job(lg_worker_t *w, const char *json, size_t len)
{
    lg_exec_t *e = lg_exec_new(&w->rt, &job_ops, NULL);
    lua_State *co = e->co;
    size_t idlen = 0, alen = 0, rlen = 0, ulen = 0;
    const char *id = NULL, *agent = NULL, *rid = NULL, *url = NULL;
    if (lg_json_decode(co, json, len, LG_JSON_DEFAULT_MAX_DEPTH, NULL) == LG_JSON_OK && lua_istable(co, 1)) {
        id = str_field(co, 1, "id", &idlen);
        agent = str_field(co, 1, "agent", &alen);
        rid = str_field(co, 1, "request_id", &rlen);
        url = str_field(co, 1, "callback_url", &ulen);
    }
    if (id == NULL || idlen != LG_UUID_LEN || agent == NULL || !lg_agent_name_valid(agent, alen)) {
        lg_log(LG_LOG_ERROR, "dropping a malformed job: %.*s", (int)(len < 200 ? len : 200), json);
        lua_settop(co, 0);
        lg_exec_discard(e);
        return;
    }
    e->async = 1;
    memcpy(e->id, id, LG_UUID_LEN + 1);
    snprintf(e->request_id, sizeof(e->request_id), "%s", rid ? rid : "");
    snprintf(e->agent, sizeof(e->agent), "%.*s", (int)alen, agent);
    lua_getfield(co, 1, "created_ms");
    e->created_ms = (uint64_t)lua_tonumber(co, -1);
    lua_pop(co, 1);
    job_t *j = calloc(1, sizeof(*j));
    j->w = w;
    j->callback_url = url != NULL ? strndup(url, ulen) : NULL;
    char name[LG_AGENT_NAME_MAX + 1];
    memcpy(name, agent, alen); /* before the job table (which holds these strings) goes */
    lua_getfield(co, 1, "task");
    lua_getfield(co, 1, "context");
    if (lg_json_is_null(co, -1)) {
        lua_pop(co, 1);
        lua_pushnil(co);
    }
    lua_remove(co, 1);
    e->owner = j;
    if (lg_exec_launch(e, name, alen, 0) != LG_LAUNCH_OK) {
        char msg[LG_AGENT_NAME_MAX + 32];
        snprintf(msg, sizeof(msg), "no agent named '%.*s'", (int)alen, name);
        job_refused(e, "not_found", msg, j->callback_url);
        lua_settop(co, 0);
        lg_exec_discard(e);
        free(j->callback_url);
        free(j);
        return;
    }
    w->jobs_running++;
    if (e->recording)
        lg_record_commit(&w->rt, lg_record_build(e, LG_REC_RUNNING, NULL, 0, NULL, 0));
}

void lg_jobs_poll(lg_worker_t *w)
{
    if (atomic_load(&Q.n) == 0 || atomic_load(&w->server->draining))
        return;
    qjob_t *j;
    while (w->jobs_running < (size_t)w->server->cfg->job_concurrency && (j = queue_pop()) != NULL) {
        start_job(w, j->json, j->len);
        free(j);
    }
}

void lg_jobs_submit(lg_worker_t *w, const char *json, size_t len)
{
    queue_push(json, len);
    if (w->jobs_running >= (size_t)w->server->cfg->job_concurrency) /* someone else has room */
        for (int i = 0; i < w->server->nworkers; i++)
            if (&w->server->workers[i] != w)
                lg_worker_wake(&w->server->workers[i]);
}

void lg_jobs_abandon(lg_worker_t *w)
{
    qjob_t *q;
    while ((q = queue_pop()) != NULL) {
        lg_exec_t *e = lg_exec_new(&w->rt, &job_ops, NULL);
        lua_State *co = e->co;
        size_t n = 0;
        const char *id = NULL, *agent = NULL, *rid = NULL;
        if (lg_json_decode(co, q->json, q->len, LG_JSON_DEFAULT_MAX_DEPTH, NULL) == LG_JSON_OK && lua_istable(co, 1)) {
            id = str_field(co, 1, "id", &n);
            agent = str_field(co, 1, "agent", &n);
            rid = str_field(co, 1, "request_id", &n);
        }
        if (id != NULL && strlen(id) == LG_UUID_LEN && agent != NULL) {
            e->async = 1;
            memcpy(e->id, id, LG_UUID_LEN + 1);
            snprintf(e->agent, sizeof(e->agent), "%s", agent);
            snprintf(e->request_id, sizeof(e->request_id), "%s", rid ? rid : "");
            lua_getfield(co, 1, "created_ms");
            e->created_ms = (uint64_t)lua_tonumber(co, -1);
            lua_getfield(co, 1, "task");
            lua_getfield(co, 1, "context");
            if (lg_json_is_null(co, -1))
                lua_pushnil(co), lua_replace(co, -2);
            lua_remove(co, 1);
            lua_remove(co, 1);
            job_refused(e, "unavailable", "the server shut down before the job ran", NULL);
        }
        lua_settop(co, 0);
        lg_exec_discard(e);
        free(q);
    }
}

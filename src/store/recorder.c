/* The Postgres recorder of one worker (store.h): records are queued in memory and written in
 * batches, one INSERT ... ON CONFLICT statement per batch, one batch in flight at a time (so
 * batches grow by themselves under load). While Postgres is away, records wait in memory up to
 * LUAGENT_RECORD_QUEUE, then go to this worker's append-only spill file; when Postgres answers
 * again, spill files (this run's and any left by an earlier one) are read back and written. A
 * batch Postgres refuses for its content (not for being away) goes to a `rejected-*.ndjson` file:
 * no record is dropped silently. Spill files are local disk writes on the loop thread, made only
 * while the database is away. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "luagent/log.h"
#include "luagent/pg.h"
#include "luagent/sched.h"
#include "luagent/store.h"

#define BATCH_MAX 500
#define RETRY_MS 1000
#define REPLAY_CHUNK (256u << 10)

/* json_to_recordset parses each record once into typed columns (a `j->>'field'` per column would
 * parse the record's text again for every one of them: most of Postgres's time under load). */
static const char INSERT_SQL[] =
    "WITH recs AS ("
    " SELECT DISTINCT ON (r.execution_id) r.* FROM json_to_recordset($1::json) AS r(execution_id uuid, agent text,"
    "  version text, status text, mode text, task json, context json, result json, error json, usage json,"
    "  duration_ms float8, \"user\" json, parent_id uuid, request_id text, created_at timestamptz,"
    "  started_at timestamptz, finished_at timestamptz, events json)"
    " ORDER BY r.execution_id, CASE r.status WHEN 'queued' THEN 0 WHEN 'running' THEN 1 ELSE 2 END DESC"
    "), ins AS ("
    " INSERT INTO executions AS x (id, agent, version, status, mode, task, context, result, error, usage, duration_ms,"
    "  \"user\", parent_id, request_id, created_at, started_at, finished_at)"
    " SELECT execution_id, agent, version, status, mode, task, context, result, error, usage, duration_ms, \"user\","
    "  parent_id, request_id, created_at, started_at, finished_at FROM recs"
    " ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, status = EXCLUDED.status, task = EXCLUDED.task,"
    "  context = EXCLUDED.context, result = EXCLUDED.result, error = EXCLUDED.error, usage = EXCLUDED.usage,"
    "  duration_ms = EXCLUDED.duration_ms, \"user\" = EXCLUDED.\"user\", started_at = EXCLUDED.started_at,"
    "  finished_at = EXCLUDED.finished_at, recorded_at = now()"
    " WHERE CASE x.status WHEN 'queued' THEN 0 WHEN 'running' THEN 1 ELSE 2 END"
    "  <= CASE EXCLUDED.status WHEN 'queued' THEN 0 WHEN 'running' THEN 1 ELSE 2 END"
    " RETURNING 1"
    "), ev AS ("
    " INSERT INTO execution_events (execution_id, seq, type, at, data)"
    " SELECT recs.execution_id, e.seq, e.type, e.at, e.data FROM recs,"
    "  json_to_recordset(COALESCE(recs.events, '[]'::json)) AS e(seq int, type text, at timestamptz, data json)"
    " ON CONFLICT DO NOTHING RETURNING 1"
    ") SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM ev)";

struct lg_recorder {
    lg_rt_t *rt;
    int index;
    char *dir;
    lg_rec_t *head, *tail; /* waiting */
    size_t n;
    lg_rec_t *batch;       /* in flight (memory records) */
    size_t nbatch;
    lg_pg_req_t *req;
    lg_buf_t text;         /* the batch's JSON array */
    lg_timer_t timer;
    int away;              /* the last attempt found the database away */
    int spill_fd;
    int replay_fd, replay_check;
    off_t replay_off, replay_next;
    char spill_path[512], replay_path[512];
    unsigned replay_seq;
    size_t written, spilled, rejected;
    uint64_t spill_bytes;
    unsigned spill_logged;
};

/* ---- JSON for Postgres ---- */

/* Postgres's json type accepts "\u0000" but cannot extract a string holding it (22P05): such a
 * character is recorded as U+FFFD. Escapes are walked one by one, so "\\u0000" (an escaped
 * backslash) is left alone. */
static void append_pg_json(lg_buf_t *b, const char *s, size_t n)
{
    size_t start = b->len;
    lg_buf_append(b, s, n);
    char *p = b->data + start, *end = b->data + b->len;
    while ((p = memchr(p, '\\', (size_t)(end - p))) != NULL && p + 1 < end) {
        if (p[1] == 'u' && end - p >= 6 && memcmp(p + 2, "0000", 4) == 0)
            memcpy(p + 2, "fffd", 4);
        p += 2;
    }
}

/* ---- spill files ---- */

static int spill_open(lg_recorder_t *rc)
{
    if (rc->spill_fd >= 0)
        return 0;
    rc->spill_fd = open(rc->spill_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (rc->spill_fd < 0) {
        lg_log(LG_LOG_ERROR, "cannot open the spill file %s: %s", rc->spill_path, strerror(errno));
        return -1;
    }
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Append records (a list) as lines to the spill file and free them; 0, or -1 (they are kept). */
static int spill_list(lg_recorder_t *rc, lg_rec_t *list)
{
    if (list == NULL)
        return 0;
    if (spill_open(rc) != 0)
        return -1;
    lg_buf_t b = {0};
    size_t count = 0;
    for (lg_rec_t *r = list; r != NULL; r = r->next, count++) {
        lg_buf_append(&b, r->json, r->len);
        lg_buf_putc(&b, '\n');
    }
    size_t b_len = b.len;
    int rc_w = write_all(rc->spill_fd, b.data, b.len);
    lg_buf_free(&b);
    if (rc_w != 0) {
        lg_log(LG_LOG_ERROR, "cannot write the spill file %s: %s", rc->spill_path, strerror(errno));
        return -1;
    }
    while (list != NULL) {
        lg_rec_t *next = list->next;
        lg_rec_unref(list);
        list = next;
    }
    rc->spilled += count;
    rc->spill_bytes += b_len;
    rc->replay_check = 1;
    return 0;
}

/* Postgres refused these for their content: keep them aside, loudly. */
static void reject(lg_recorder_t *rc, const char *text, size_t len, size_t count, const char *why)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/rejected-%d-%d.json", rc->dir, (int)getpid(), rc->index);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0 || write_all(fd, text, len) != 0 || write_all(fd, "\n", 1) != 0)
        lg_log(LG_LOG_ERROR, "cannot keep %zu rejected execution records in %s: %s", count, path, strerror(errno));
    if (fd >= 0)
        close(fd);
    rc->rejected += count;
    lg_log(LG_LOG_ERROR, "the database refused %zu execution records (%s): kept in %s", count, why, path);
}

/* ---- batches ---- */

static void kick(lg_recorder_t *rc, uint64_t delay_ms)
{
    uint64_t at = lg_now_mono_ms() + delay_ms;
    if (!lg_timer_active(&rc->timer) || rc->timer.at_ms > at)
        lg_timers_add(&rc->rt->timers, &rc->timer, at);
}

static void requeue_batch(lg_recorder_t *rc)
{
    if (rc->batch == NULL)
        return;
    lg_rec_t *last = rc->batch;
    while (last->next != NULL)
        last = last->next;
    last->next = rc->head;
    if (rc->tail == NULL)
        rc->tail = last;
    rc->head = rc->batch;
    rc->n += rc->nbatch;
    rc->batch = NULL;
    rc->nbatch = 0;
}

/* Over the memory bound (the database is away, or slower than the records come): everything
 * waiting goes to the spill file, written back once the database has caught up. */
static void bound(lg_recorder_t *rc)
{
    if (rc->n <= (size_t)rc->rt->cfg->record_queue)
        return;
    size_t n = rc->n;
    if (spill_list(rc, rc->head) == 0) {
        if (!rc->spill_logged++)
            lg_log(LG_LOG_WARN, "the database is %s: %zu execution records spilled to %s (logged once)",
                   rc->away ? "away" : "behind", n, rc->spill_path);
        rc->head = rc->tail = NULL;
        rc->n = 0;
    }
}

/* A failure that goes away by itself (connection, server shutting down, schema not migrated yet,
 * resources) rather than one caused by the records. */
static int transient(PGresult *res, const char *sqlstate)
{
    if (res == NULL || sqlstate == NULL)
        return 1;
    return strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "57", 2) == 0 || strncmp(sqlstate, "53", 2) == 0 ||
           strncmp(sqlstate, "40", 2) == 0 || strcmp(sqlstate, "42P01") == 0 || strncmp(sqlstate, "58", 2) == 0;
}

static void went_away(lg_recorder_t *rc, const char *why)
{
    if (!rc->away)
        lg_log(LG_LOG_WARN, "execution records wait: the database is away (%s)", why);
    rc->away = 1;
    kick(rc, RETRY_MS);
}

static void came_back(lg_recorder_t *rc)
{
    if (rc->away)
        lg_log(LG_LOG_INFO, "the database is back: writing the execution records that waited");
    rc->away = 0;
}

/* The batch in flight is done with (written, or kept aside as rejected): let it go, take the next. */
static void batch_done(lg_recorder_t *rc, int replay)
{
    if (replay)
        rc->replay_off = rc->replay_next;
    while (rc->batch != NULL) {
        lg_rec_t *next = rc->batch->next;
        lg_rec_unref(rc->batch);
        rc->batch = next;
    }
    rc->nbatch = 0;
    kick(rc, 0);
}

static void on_batch(void *data, PGresult *res, const char *err, const char *sqlstate)
{
    lg_recorder_t *rc = data;
    rc->req = NULL;
    int replay = rc->batch == NULL && rc->nbatch > 0;
    if (err == NULL) {
        came_back(rc);
        rc->written += rc->nbatch;
        batch_done(rc, replay);
    } else if (transient(res, sqlstate)) {
        if (!replay)
            requeue_batch(rc);
        rc->nbatch = 0;
        bound(rc);
        went_away(rc, err);
    } else {
        char why[300];
        snprintf(why, sizeof(why), "%s%s%s%s", err, sqlstate ? " (SQLSTATE " : "", sqlstate ? sqlstate : "",
                 sqlstate ? ")" : "");
        reject(rc, rc->text.data, rc->text.len, rc->nbatch, why);
        batch_done(rc, replay);
    }
}

static int send_text(lg_recorder_t *rc)
{
    lg_pg_t *pg = lg_rt_pg(rc->rt);
    const char *err = "libpq is not available";
    if (pg != NULL && (rc->req = lg_pg_query_text(pg, INSERT_SQL, rc->text.data, on_batch, rc, &err)) != NULL)
        return 0;
    went_away(rc, err);
    return -1;
}

static void send_memory(lg_recorder_t *rc)
{
    lg_buf_reset(&rc->text);
    lg_buf_putc(&rc->text, '[');
    lg_rec_t **link = &rc->batch;
    while (rc->head != NULL && rc->nbatch < BATCH_MAX) {
        lg_rec_t *r = rc->head;
        rc->head = r->next;
        r->next = NULL;
        *link = r;
        link = &r->next;
        if (rc->nbatch++ > 0)
            lg_buf_putc(&rc->text, ',');
        append_pg_json(&rc->text, r->json, r->len);
        rc->n--;
    }
    if (rc->head == NULL)
        rc->tail = NULL;
    lg_buf_putc(&rc->text, ']');
    if (send_text(rc) != 0) {
        requeue_batch(rc);
        bound(rc);
    }
}

/* ---- replay of spill files ---- */

/* Claim a spill file to replay: this worker's own (after closing it for appends), any worker's of
 * an earlier run, or a replay an earlier run did not finish. Claiming is a rename, so two workers
 * never take the same file. 0 when one is open. */
static int replay_claim(lg_recorder_t *rc)
{
    DIR *d = opendir(rc->dir);
    if (d == NULL)
        return -1;
    char own[64];
    snprintf(own, sizeof(own), "spill-%d-%d.ndjson", (int)getpid(), rc->index);
    int pid_prefix_len;
    char mine[32];
    pid_prefix_len = snprintf(mine, sizeof(mine), "-%d-", (int)getpid());
    struct dirent *de;
    int found = -1;
    while (found != 0 && (de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        size_t len = strlen(name);
        if (len < 7 || strcmp(name + len - 7, ".ndjson") != 0)
            continue;
        int is_spill = strncmp(name, "spill-", 6) == 0, is_replay = strncmp(name, "replay-", 7) == 0;
        if (!is_spill && !is_replay)
            continue;
        /* this run's files belong to their worker: only our own spill file is ours to take */
        int this_run = strncmp(name + (is_spill ? 5 : 6), mine, (size_t)pid_prefix_len) == 0;
        if (this_run && strcmp(name, own) != 0)
            continue;
        if (strcmp(name, own) == 0 && rc->spill_fd >= 0) {
            close(rc->spill_fd);
            rc->spill_fd = -1;
        }
        char from[600];
        snprintf(from, sizeof(from), "%s/%s", rc->dir, name);
        snprintf(rc->replay_path, sizeof(rc->replay_path), "%s/replay-%d-%d-%u.ndjson", rc->dir, (int)getpid(),
                 rc->index, rc->replay_seq++);
        if (rename(from, rc->replay_path) != 0)
            continue; /* another worker took it */
        if ((rc->replay_fd = open(rc->replay_path, O_RDONLY | O_CLOEXEC)) < 0) {
            lg_log(LG_LOG_ERROR, "cannot read the spill file %s: %s", rc->replay_path, strerror(errno));
            continue;
        }
        rc->replay_off = rc->replay_next = 0;
        lg_log(LG_LOG_INFO, "replaying execution records from %s", name);
        found = 0;
    }
    closedir(d);
    return found;
}

/* Send the next lines of the replay file; 0 when a batch went out, -1 when there is nothing. */
static int send_replay(lg_recorder_t *rc)
{
    if (rc->replay_fd < 0 && (!rc->replay_check || replay_claim(rc) != 0)) {
        rc->replay_check = 0;
        return -1;
    }
    size_t want = REPLAY_CHUNK;
    char *chunk = NULL;
    ssize_t got;
    for (;;) { /* read at least one whole line */
        chunk = realloc(chunk, want);
        got = pread(rc->replay_fd, chunk, want, rc->replay_off);
        if (got <= 0 || memchr(chunk, '\n', (size_t)got) != NULL || (size_t)got < want)
            break;
        want *= 2;
    }
    if (got <= 0) { /* done with this file */
        close(rc->replay_fd);
        rc->replay_fd = -1;
        if (got == 0)
            unlink(rc->replay_path);
        free(chunk);
        kick(rc, 0); /* there may be more files */
        return 0;
    }
    size_t use = (size_t)got;
    char *nl = memrchr(chunk, '\n', use);
    if (nl != NULL)
        use = (size_t)(nl - chunk) + 1; /* a line cut by the chunk's end waits for the next read */
    lg_buf_reset(&rc->text);
    lg_buf_putc(&rc->text, '[');
    size_t count = 0;
    for (char *p = chunk, *end = chunk + use; p < end;) {
        char *e = memchr(p, '\n', (size_t)(end - p));
        if (e == NULL)
            e = end;
        if (e > p) {
            if (count++ > 0)
                lg_buf_putc(&rc->text, ',');
            append_pg_json(&rc->text, p, (size_t)(e - p));
        }
        p = e + 1;
    }
    lg_buf_putc(&rc->text, ']');
    free(chunk);
    rc->replay_next = rc->replay_off + (off_t)use;
    rc->nbatch = count;
    if (count == 0) {
        rc->replay_off = rc->replay_next;
        kick(rc, 0);
        return 0;
    }
    if (send_text(rc) != 0)
        rc->nbatch = 0;
    return 0;
}

static void flush(lg_timer_t *t)
{
    lg_recorder_t *rc = (lg_recorder_t *)((char *)t - offsetof(lg_recorder_t, timer));
    if (rc->req != NULL)
        return; /* one batch at a time: on_batch kicks the next */
    if (rc->head != NULL)
        send_memory(rc);
    else
        send_replay(rc);
}

/* ---- the interface ---- */

lg_recorder_t *lg_recorder_new(lg_rt_t *rt, const char *dir, int index)
{
    lg_recorder_t *rc = calloc(1, sizeof(*rc));
    rc->rt = rt;
    rc->index = index;
    rc->dir = strdup(dir);
    rc->spill_fd = rc->replay_fd = -1;
    rc->replay_check = 1; /* an earlier run may have left records */
    snprintf(rc->spill_path, sizeof(rc->spill_path), "%s/spill-%d-%d.ndjson", dir, (int)getpid(), index);
    lg_timer_init(&rc->timer, flush);
    kick(rc, 100);
    return rc;
}

void lg_recorder_push(lg_recorder_t *rc, lg_rec_t *r)
{
    r->next = NULL;
    if (rc->tail)
        rc->tail->next = r;
    else
        rc->head = r;
    rc->tail = r;
    rc->n++;
    bound(rc);
    if (!rc->away && rc->req == NULL)
        kick(rc, 0);
}

size_t lg_recorder_pending(const lg_recorder_t *rc) { return rc == NULL ? 0 : rc->n + rc->nbatch; }

int lg_recorder_away(const lg_recorder_t *rc) { return rc != NULL && rc->away; }

void lg_recorder_stats(const lg_recorder_t *rc, lg_recorder_stats_t *s)
{
    s->queued = rc->n + rc->nbatch;
    s->written = rc->written;
    s->spilled = rc->spilled;
    s->spill_bytes = rc->spill_bytes;
    s->rejected = rc->rejected;
    s->away = rc->away;
}

void lg_recorder_free(lg_recorder_t *rc)
{
    if (rc == NULL)
        return;
    if (rc->req != NULL) { /* unknown fate: written again from the spill file (upserts are harmless) */
        lg_pg_cancel(rc->req);
        rc->req = NULL;
        requeue_batch(rc);
    }
    size_t n = rc->n;
    if (n > 0 && spill_list(rc, rc->head) == 0)
        lg_log(LG_LOG_WARN, "worker %d: %zu execution records not written yet: kept in %s", rc->index, n,
               rc->spill_path);
    else if (n > 0)
        lg_log(LG_LOG_ERROR, "worker %d: %zu execution records could not be kept", rc->index, n);
    lg_timers_del(&rc->rt->timers, &rc->timer);
    if (rc->spill_fd >= 0)
        close(rc->spill_fd);
    if (rc->replay_fd >= 0)
        close(rc->replay_fd);
    lg_buf_free(&rc->text);
    free(rc->dir);
    free(rc);
}

static int mkdir_p(const char *dir)
{
    char path[512];
    snprintf(path, sizeof(path), "%s", dir);
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(path, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

int lg_spill_dir_lock(const char *dir, char *err, size_t errlen)
{
    if (mkdir_p(dir) != 0) {
        snprintf(err, errlen, "LUAGENT_SPILL_DIR: cannot create '%s': %s", dir, strerror(errno));
        return -1;
    }
    char path[600];
    snprintf(path, sizeof(path), "%s/.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600); /* held (and locked) for the process's life */
    if (fd < 0 || lockf(fd, F_TLOCK, 0) != 0) {
        snprintf(err, errlen, "LUAGENT_SPILL_DIR: '%s' is %s", dir,
                 fd < 0 ? strerror(errno) : "in use by another luagent process (give each its own)");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return 0;
}

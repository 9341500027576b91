/**
 * store.h - execution records (DESIGN §6): how an execution becomes one JSON record, the
 * process-wide in-memory history, and the per-worker Postgres recorder.
 *
 * A record is one JSON object, the same text the API serves at GET /api/v1/executions/{id}:
 *   {"execution_id","agent","version","status","mode","task","context","result","error","usage",
 *    "duration_ms","user","parent_id","request_id","created_at","started_at","finished_at","events"}
 * with "events" last, so the text up to `head_len` plus "}" is the record without its events (the
 * form history pages list). Timestamps are ISO 8601 UTC with milliseconds; result/error are null
 * when absent. Events are the execution's task history in order: {"seq","type","at","data"} with
 * type emit | log | ai_call | http_call (bounded per execution; a last "truncated" event says how
 * many were dropped).
 *
 * Status moves forward only: queued -> running -> succeeded | failed. A sink given a record with
 * the same id keeps whichever is further along, so replays and out-of-order writes are harmless.
 */
#ifndef LUAGENT_STORE_H
#define LUAGENT_STORE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "luagent/buf.h"
#include "luagent/ids.h"

typedef enum { LG_REC_QUEUED = 0, LG_REC_RUNNING, LG_REC_SUCCEEDED, LG_REC_FAILED } lg_rec_status_t;

typedef struct lg_rec {
    struct lg_rec *next; /* the recorder's queue link (the history keeps records in its own slots) */
    _Atomic int refs;    /* owners: the history and the recorder may share one record */
    char id[LG_UUID_LEN + 1];
    char agent[128];
    uint64_t id_hash;    /* lg_rec_id_hash(id): the history's hash key */
    char parent_id[LG_UUID_LEN + 1]; /* "" when it was started by a request or a job */
    lg_rec_status_t status;
    uint64_t created_ms;
    double duration_ms; /* finished records: how long it ran (0 before) */
    size_t head_len; /* json[0..head_len) + '}' is the record without "events" */
    size_t len;
    char json[];
} lg_rec_t;

/** The history's hash of an execution id: its last 12 characters (a UUIDv7's random tail) suffice. */
static inline uint64_t lg_rec_id_hash(const char *id, size_t len)
{
    size_t tail = len > 12 ? 12 : len;
    return lg_fnv1a(id + len - tail, tail, LG_FNV_OFFSET ^ len);
}

const char *lg_rec_status_name(lg_rec_status_t s);
/** -1 when `s` names no status. */
int lg_rec_status_parse(const char *s, size_t len);
/** Another owner for a record / one owner fewer (the last one frees it; NULL is fine). */
lg_rec_t *lg_rec_ref(lg_rec_t *r);
void lg_rec_unref(lg_rec_t *r);
/** Append epoch milliseconds as "YYYY-MM-DDTHH:MM:SS.mmmZ" (quotes included). */
void lg_buf_iso8601(lg_buf_t *b, uint64_t epoch_ms);

/* ---- records of executions (src/store/record.c) ---- */

struct lg_exec;
struct lg_rt;
struct lg_json_span;
/** At launch: encode the task (stack index `task_idx` of e->co) and the context (the next index;
 *  nil is null) into e->rec. */
void lg_record_begin(struct lg_exec *e, int task_idx);
/** The same from the request body's text: sp[0] and sp[1] locate its "task" and "context" values
 *  (lg_json_decode_spans), copied as one line instead of encoded again. 0, or -1 when the task was
 *  not located (then lg_record_begin does it). */
int lg_record_begin_text(struct lg_exec *e, const char *body, const struct lg_json_span *sp);
/** Add an event to the execution's task history (`data` is JSON text). */
void lg_record_event(struct lg_exec *e, const char *type, const char *data, size_t len);
/** The record of `e` in state `st`; result/error are JSON text or NULL. The caller owns it (one
 *  reference). */
lg_rec_t *lg_record_build(struct lg_exec *e, lg_rec_status_t st, const char *result, size_t rlen, const char *error,
                          size_t elen);
/** Hand a record (the caller's reference) to every sink: the in-memory history and the runtime's
 *  Postgres recorder. */
void lg_record_commit(struct lg_rt *rt, lg_rec_t *r);

/* ---- in-memory history: process-wide, bounded (LUAGENT_HISTORY_SIZE), behind a lock ---- */

/** Size 0 turns the history off (puts are dropped, lookups miss). Call once before workers start. */
void lg_history_init(size_t capacity);
void lg_history_free(void);
int lg_history_enabled(void);
/** Keep `r` (takes one reference; replaces an older state of the same execution; the oldest
 *  record goes when full). */
void lg_history_put(lg_rec_t *r);
/** Append the full record `id` to out: 1, or 0 when it is not here. */
int lg_history_get(const char *id, size_t idlen, lg_buf_t *out);

typedef struct lg_history_query {
    const char *agent; /* NULL: any */
    size_t agent_len;
    int status;        /* lg_rec_status_t, or -1: any */
    uint64_t since_ms; /* created at or after (0: any) */
    const char *parent_id; /* children of this execution (luagent.agents) only (NULL: any) */
    const char *cursor; /* exclusive upper bound on execution_id (NULL: from the newest) */
    int limit;         /* 1..500 */
} lg_history_query_t;

/** Append {"items":[...],"next_cursor":...} (newest first, items without events). */
void lg_history_list(const lg_history_query_t *q, lg_buf_t *out);
/** The finished records (succeeded or failed) created at or after since_ms, for the dashboard's
 *  statistics (stats.h): *out is a malloc'ed array of *n references, each released with
 *  lg_rec_unref and the array with free. */
void lg_history_finished_since(uint64_t since_ms, lg_rec_t ***out, size_t *n);

/* ---- the Postgres recorder: one per worker runtime (src/store/recorder.c) ----
 * Records are written in batches (one statement each, one batch in flight), as upserts keyed by
 * execution id that only move a status forward, with their events. While Postgres is away they wait
 * in memory (LUAGENT_RECORD_QUEUE), then in this worker's append-only spill file under
 * LUAGENT_SPILL_DIR; when it is back, spill files (also those an earlier run left) are written. A
 * batch the database refuses for its content is kept in a rejected-*.json file and logged. */

typedef struct lg_recorder lg_recorder_t;
typedef struct lg_recorder_stats {
    size_t queued, written, spilled, rejected;
    uint64_t spill_bytes; /* bytes appended to the spill file since start */
    int away;
} lg_recorder_stats_t;

lg_recorder_t *lg_recorder_new(struct lg_rt *rt, const char *spill_dir, int worker_index);
/** Take a record to write (the caller's reference). */
void lg_recorder_push(lg_recorder_t *rc, lg_rec_t *r);
/** Records not written yet (waiting in memory or in flight). */
size_t lg_recorder_pending(const lg_recorder_t *rc);
/** 1 when the last attempt found the database away. */
int lg_recorder_away(const lg_recorder_t *rc);
void lg_recorder_stats(const lg_recorder_t *rc, lg_recorder_stats_t *s);
/** Stop: what is not written yet goes to the spill file. Before the runtime's pool is freed. */
void lg_recorder_free(lg_recorder_t *rc);
/** Make the spill directory and lock it for this process (main thread, at start): 0, or -1 with err
 *  (another luagent process uses it). */
int lg_spill_dir_lock(const char *dir, char *err, size_t errlen);

/* ---- schema migrations (src/store/migrate.c) ---- */

/** Apply the embedded migrations/NNNN_*.sql not applied yet, in order, each in a transaction, under
 *  an advisory lock (concurrent starts are safe). Blocking: main thread only, before the workers
 *  run. 0 (*applied = how many ran), or -1 with err (never the connection string). */
int lg_migrate(const char *url, int *applied, char *err, size_t errlen);
/** Migrations embedded in this binary (the latest schema version). */
int lg_migrate_count(void);

#endif

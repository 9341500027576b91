/**
 * jobs.h - async executions (options.mode = "async"): the job queue and the workers that run it.
 *
 * A job is one JSON object: {"id","agent","request_id","created_ms","callback_url","task","context"}.
 * Submitting it records the execution as `queued` and answers 202 at once; a worker with room
 * (fewer than LUAGENT_JOB_CONCURRENCY async executions running) takes it, records it `running`,
 * runs it like any execution, records the final state and, with a callback_url, POSTs the final
 * record there (X-Luagent-Signature: sha256=HMAC(LUAGENT_CALLBACK_SECRET, body) when the secret is
 * set; retried with backoff on failure or a non-2xx answer).
 *
 * The queue is process-wide in memory (any worker takes any job); jobs still queued when the server
 * drains are recorded failed (503 unavailable), never silently dropped.
 */
#ifndef LUAGENT_JOBS_H
#define LUAGENT_JOBS_H

#include <stddef.h>

#include "luagent/buf.h"

struct lg_worker;

/** Queue a job (its JSON text is copied) and wake a worker that can take it. */
void lg_jobs_submit(struct lg_worker *w, const char *json, size_t len);
/** Start queued jobs while this worker has room (the worker calls it every loop iteration). */
void lg_jobs_poll(struct lg_worker *w);
/** Draining: record every job still queued as failed (503) and drop it. */
void lg_jobs_abandon(struct lg_worker *w);
/** Free a worker's callback deliveries still pending (after its loop stopped). */
void lg_jobs_dispose(struct lg_worker *w);
/** Free the process-wide queue (after the workers stopped). */
void lg_jobs_free(void);

#endif

/**
 * execlink.h - an HTTP request that runs an execution (handlers.c): the link between the two
 * (either may end first), the event-stream writer, and the common end of an execution answered
 * over HTTP. The execute routes (handlers.c) and the OpenAI-compatible face (openai_compat.c) both
 * run their executions through it; they differ only in how they read the request and write the
 * answer.
 *
 * Life of a link: lg_link_attach() after a successful lg_exec_launch(), optionally lg_sse_start(),
 * then lg_exec_run(). The execution's ops->on_done calls lg_link_end() first: it builds the
 * outcome (outcome.c) and records it, and returns the request to answer, or NULL when the client
 * went away (nothing to write then). The link lives in the request's pool: when the request goes
 * first (disconnect, stream stopped) the execution is cancelled and its on_done sees no request.
 */
#ifndef LUAGENT_EXECLINK_H
#define LUAGENT_EXECLINK_H

#include <stdint.h>

#include "luagent/buf.h"
#include "luagent/sched.h"
#include "luagent/server.h"

typedef struct lg_link {
    h2o_generator_t gen; /* SSE: first member, h2o hands it back to proceed/stop */
    h2o_req_t *req;      /* NULL once the request is gone */
    lg_exec_t *exec;     /* NULL once the execution ended */
    int watch_fd;        /* its connection's descriptor while the link reads it (client watch), else -1 */
    int streaming, sending, final_queued, final_sent, client_gone;
    lg_buf_t pending, inflight; /* event-stream text queued / being written */
    lg_worker_t *worker;
    uint64_t start_ns;
    char request_id[72];
    char *idem_key;      /* store key of the request's Idempotency-Key (the reply is kept under it) */
    int idem_redis;      /* ... in Redis (else in the process's store) */
    char idem_hash[17];  /* of the request body */
    void *face;          /* the answering side's own state (request pool memory), NULL when none */
} lg_link_t;

/** Checks every execute request passes before its body is read: not draining (503), the body
 *  within LUAGENT_MAX_BODY_BYTES (413), a JSON content type or none (415). 0, or the status
 *  answered. */
int lg_execute_precheck(h2o_req_t *req, const char *request_id);
/** Tie a launched execution to its request (e->owner becomes the link, allocated in the request's
 *  pool and watched for a vanished client). */
lg_link_t *lg_link_attach(h2o_req_t *req, lg_exec_t *e, uint64_t start_ns, const char *request_id);
/** Answer 200 text/event-stream at once (headers and a ": stream open" comment go out). */
void lg_sse_start(lg_link_t *l);
/** Write what the caller appended to l->pending (event-stream text) as soon as h2o is ready for
 *  it; `final`: it is the end of the stream. */
void lg_sse_send(lg_link_t *l, int final);
/** The common end, first thing in on_done: build the outcome into `b` (lg_outcome_json), record
 *  it, keep it for the Idempotency-Key, and untie e from the link. Returns the request to answer,
 *  or NULL when the client went away (logged; nothing is to be written). */
h2o_req_t *lg_link_end(lg_exec_t *e, lg_buf_t *b, int *status, int *is_err, size_t *roff, size_t *rlen);

#endif

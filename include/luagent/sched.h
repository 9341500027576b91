/**
 * sched.h - the per-thread runtime: one VM, one event loop, a timer heap, a ready queue, and the
 * coroutine-per-execution scheduler (DESIGN §2).
 *
 * Life of an execution:
 *   lg_exec_new()      takes a coroutine from the pool; the owner decodes the request onto e->co
 *   lg_exec_launch()   finds the agent, pushes execute + task + ctx, arms the deadline, queues it
 *   (ready queue)      lg_rt_run_ready() resumes it from the loop's top level, never recursively
 *   binding yields     lg_sched_yield(L, cleanup, data): one pending operation at a time
 *   I/O completes      the adapter pushes results on e->co and calls lg_sched_wake(e, nresults)
 *   it ends            ops->on_done(e) once, with e->end saying why; then the runtime frees e
 * Every path ends in on_done exactly once: success, agent error, deadline (the pending operation's
 * cleanup runs first), memory limit, or lg_exec_cancel() (client gone, drain). After on_done the
 * owner must forget e.
 *
 * Child executions (luagent.agents, src/bind/agents.c) are executions like any other, started by a
 * running one: their owner is the waiting parent's pending operation, depth = parent's + 1,
 * deadline_cap_ms = the parent's deadline, parent_id = the parent's id. The parent's pending
 * operation cleanup cancels the children still running, so a parent that ends (any way) takes its
 * children with it.
 */
#ifndef LUAGENT_SCHED_H
#define LUAGENT_SCHED_H

#include <stdint.h>

#include <lua.h>

#include "luagent/auth.h"
#include "luagent/buf.h"
#include "luagent/config.h"
#include "luagent/ids.h"
#include "luagent/timers.h"
#include "luagent/vm.h"

#define H2O_USE_LIBUV 0
#include <h2o/socket.h>

typedef struct lg_rt lg_rt_t;
typedef struct lg_exec lg_exec_t;
typedef void (*lg_cleanup_fn)(lg_exec_t *e, void *data);

/** Something an execution owns besides its pending operation (an open HTTP stream, a DB
 *  connection on loan): released when the execution ends, whatever the path, unless its owner
 *  disowned it first. */
typedef struct lg_resource lg_resource_t;
struct lg_resource {
    void (*release)(lg_resource_t *r);
    lg_resource_t *prev, *next;
};

typedef enum { LG_EXEC_NEW, LG_EXEC_READY, LG_EXEC_RUNNING, LG_EXEC_WAITING, LG_EXEC_DONE } lg_exec_state_t;
typedef enum { LG_END_OK, LG_END_ERROR, LG_END_TIMEOUT, LG_END_MEMORY, LG_END_CANCELLED } lg_exec_end_t;

typedef struct lg_exec_ops {
    /** The execution ended. For LG_END_OK the first return value (or nothing) is at the top of
     *  e->co (lua_gettop(e->co) == number of results); for LG_END_ERROR the error value is. */
    void (*on_done)(lg_exec_t *e);
    /** An event for a streaming client: "emit" (ctx.emit(value)) or "token" (a model's text
     *  delta), with its data as JSON text. NULL: events are ignored. */
    void (*on_emit)(lg_exec_t *e, const char *event, const char *json, size_t len);
} lg_exec_ops_t;

/** AI usage of one execution (luagent.ai calls, its children's included): totals, and the same
 *  per "provider/model" in the order first used. Owned by the execution (src/bind/ai.c). */
typedef struct lg_usage_model {
    struct lg_usage_model *next;
    uint64_t input_tokens, output_tokens, calls, retries;
    size_t klen, plen;
    char key[]; /* "provider/model", the provider being key[0..plen) */
} lg_usage_model_t;

typedef struct lg_usage {
    uint64_t input_tokens, output_tokens, calls, retries;
    lg_usage_model_t *by_model, **tail; /* by_model is NULL until the first call */
} lg_usage_t;

struct lg_exec {
    lg_rt_t *rt;
    lua_State *co;
    int co_ref;
    lg_exec_state_t state;
    lg_exec_end_t end;
    lg_budget_t budget;
    lg_timer_t deadline_timer;
    lg_timer_t op_timer;        /* free for the pending operation (luagent.sleep uses it) */
    lg_cleanup_fn cleanup;      /* pending operation's cleanup, NULL when none */
    void *cleanup_data;
    int nres;                   /* values pushed on co for the next resume */
    int yielding;               /* set by lg_sched_yield: the yield was ours */
    int cancel_requested;
    lg_exec_t *prev, *next;     /* ready queue links */
    lg_resource_t *resources;   /* owned, released at the end */
    const lg_exec_ops_t *ops;
    void *owner;
    int stream;                 /* the client asked for SSE */
    lg_usage_t usage;           /* AI usage, its children's included */
    int timeout_ms;
    uint64_t start_ns;
    uint64_t deadline_epoch_ms;
    const void *ctx_ptr;        /* this execution's ctx table (lazy fields check it) */
    double duration_ms;
    uint64_t created_ms;        /* epoch ms when accepted (an async execution: when queued) */
    uint64_t started_ms;        /* epoch ms when launched */
    int recording;              /* a record is kept (store.h): task and events are collected */
    int async;                  /* runs from the job queue (mode "async" in its record) */
    enum { LG_CACHE_NONE = 0, LG_CACHE_MISS, LG_CACHE_HIT } cache; /* the result cache's answer */
    int user_role;              /* the caller's role (auth.h lg_role_t), 0 when auth is off */
    unsigned nevents, events_dropped;
    int depth;                  /* 0: started by a request or a job; a child: its parent's + 1 */
    uint64_t deadline_cap_ms;   /* monotonic ms; non-zero: lg_exec_launch ends the deadline here at the
                                   latest (a child's parent's deadline) */
    int deadline_inherited;     /* the cap was the tighter one: a timeout is the parent's deadline */
    /* --- not cleared when the struct is recycled (lg_exec_new resets what it must) --- */
    char id[LG_UUID_LEN + 1];   /* set by lg_exec_launch unless the owner set it before */
    char version[LG_VERSION_LEN + 1];
    char agent[128];
    char request_id[72];
    char parent_id[LG_UUID_LEN + 1];
    char user_id[40];           /* the caller: an API key's id ("" when auth is off) */
    char agents_allow[LG_KEY_AGENTS_MAX]; /* the caller's agent allow-list (auth.h), "" for every agent:
                                   children (luagent.agents) are held to it too */
    char trace[56];             /* W3C traceparent of the request (trace.h), "" when none */
    lg_buf_t rec;               /* "task":…,"context":… encoded at launch (recording only) */
    lg_buf_t events;            /* the task history so far: event objects joined by commas */
};

struct lg_rt {
    lg_vm_t vm;
    h2o_loop_t *loop;
    lg_timerheap_t timers;
    lg_exec_t *ready_head, *ready_tail;
    const lg_config_t *cfg;
    size_t inflight;
    int *pool;                  /* registry refs of idle coroutines */
    size_t npool, cappool;
    int scripts_ref[LG_SCRIPT_KINDS];     /* registry: name -> record (agents.h), per kind */
    uint64_t scripts_gen[LG_SCRIPT_KINDS]; /* registry generation last synced, per kind */
    void *owner;                /* the worker, when serving */
    struct lg_curlm *curl;      /* libcurl multi driven by this loop */
    struct lg_upstream *upstream; /* h2o's HTTP/1.1 client and its pools (provider calls) */
    struct lg_redis *redis;     /* REDIS_URL's connection (luagent.redis), made on first use */
    struct lg_pg *pg;           /* PostgreSQL pool (luagent.db), made on first use */
    lg_exec_t *running;         /* the execution being resumed, NULL between slices */
    lg_exec_t *free_execs;      /* recycled execution structs */
    size_t nfree_execs;
    int record;                 /* executions are recorded (history or DATABASE_URL) */
    struct lg_recorder *recorder; /* writes records to Postgres (store.h), NULL without DATABASE_URL */
    struct lg_metrics *metrics; /* this worker's metrics slot (metrics.h), NULL: not counted */
};

int lg_rt_init(lg_rt_t *rt, const lg_config_t *cfg, h2o_loop_t *loop);
void lg_rt_dispose(lg_rt_t *rt);
/** One loop iteration: wait for I/O at most max_wait_ms (less if a timer is due or work is ready),
 *  fire due timers, resume every ready execution, flush buffered log lines. */
void lg_rt_run_once(lg_rt_t *rt, int32_t max_wait_ms);

/** The runtime's libcurl multi / h2o client, created on first use (they cost memory and start-up). */
struct lg_curlm *lg_rt_curl(lg_rt_t *rt);
struct lg_upstream *lg_rt_upstream(lg_rt_t *rt);
/** The runtime's Redis connection (REDIS_URL), created on first use; NULL when REDIS_URL is unset.
 *  Freed by lg_rt_dispose after every execution has ended. */
struct lg_redis *lg_rt_redis(lg_rt_t *rt);
/** The runtime's PostgreSQL pool (DATABASE_URL, LUAGENT_DB_POOL_SIZE connections), created on first
 *  use; NULL when DATABASE_URL is unset or libpq cannot be loaded. */
struct lg_pg *lg_rt_pg(lg_rt_t *rt);
/** Cancel every execution of this runtime (drain timeout, shutdown). */
void lg_rt_cancel_all(lg_rt_t *rt);
/** Resume every ready execution (part of lg_rt_run_once). */
void lg_rt_run_ready(lg_rt_t *rt);

lg_exec_t *lg_exec_new(lg_rt_t *rt, const lg_exec_ops_t *ops, void *owner);
/** Free an execution that was never launched (the request was refused before it started). */
void lg_exec_discard(lg_exec_t *e);

struct lg_schema_report;
typedef enum { LG_LAUNCH_OK = 0, LG_LAUNCH_NO_AGENT, LG_LAUNCH_INVALID } lg_launch_status_t;
/** Start the agent `name` on e->co, whose stack holds exactly [task, context-or-nil].
 *  timeout_ms 0: the agent's own, else LUAGENT_EXEC_TIMEOUT_MS; never past e->deadline_cap_ms when set.
 *  LG_LAUNCH_INVALID: the task fails the agent's `input` schema; nothing started, e->co is left as
 *  it was and `invalid` (may be NULL) has the failures (lg_schema_check). On any status but OK
 *  the caller still owns e. */
lg_launch_status_t lg_exec_launch(lg_exec_t *e, const char *name, size_t namelen, int timeout_ms,
                                  struct lg_schema_report *invalid);
/** Give a launched execution its first slice now instead of from the ready queue. The request
 *  handler does this so that an agent that does not yield answers inside h2o's own callback, as
 *  a plain h2o handler would: the reply is written and the connection reads again before h2o
 *  next updates its epoll set (otherwise each request costs two epoll_ctl calls). Later resumes
 *  always come from the ready queue. `e` may be freed when this returns. */
void lg_exec_run(lg_exec_t *e);
/** Stop an execution from outside (client disconnect, drain): runs the pending cleanup and calls
 *  on_done with LG_END_CANCELLED (at once, or when the running slice returns). */
void lg_exec_cancel(lg_exec_t *e);

/** Append the execution's AI usage as JSON ({} when it made no AI call). (src/bind/ai.c) */
void lg_exec_usage_json(lg_exec_t *e, lg_buf_t *out);
/** into += from (a child's usage into its parent's); lg_usage_free releases the per-model list. */
void lg_usage_merge(lg_usage_t *into, const lg_usage_t *from);
void lg_usage_free(lg_usage_t *u);

void lg_exec_own(lg_exec_t *e, lg_resource_t *r);
void lg_exec_disown(lg_exec_t *e, lg_resource_t *r);

/** The execution running on this VM right now, or NULL. */
lg_exec_t *lg_sched_current(lua_State *L);
/** For yielding bindings: the current execution, raising a Lua error if called outside one or on
 *  a coroutine the agent created itself. `what` names the function in the message. */
lg_exec_t *lg_sched_check(lua_State *L, const char *what);
/** Suspend the current execution until lg_sched_wake. `cleanup` undoes the pending operation if
 *  the execution ends first. Use as `return lg_sched_yield(L, cleanup, data);`. */
int lg_sched_yield(lua_State *L, lg_cleanup_fn cleanup, void *data);
/** The pending operation completed: `nres` results are already pushed on e->co. */
void lg_sched_wake(lg_exec_t *e, int nres);

#endif

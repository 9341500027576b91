/**
 * pg.h - PostgreSQL from a worker's event loop: a small non-blocking libpq pool per runtime.
 *
 * libpq is loaded with dlopen on first use (like libcurl, curlm.h): linked, its dependency tree
 * (GSSAPI, LDAP, ...) would cost every worker RSS even when DATABASE_URL is unset.
 *
 * A pool holds up to `size` connections to one database, opened on demand with
 * PQconnectStartParams/PQconnectPoll (never a blocking connect; a host name is resolved off the
 * loop thread by h2o's resolver threads and given to libpq as `hostaddr`). Each connection's fd
 * is watched by an evloop socket for its whole life. Queries are PQsendQueryParams in pipeline
 * mode: several queries from different callers ride one connection, each followed by a sync
 * point so one failing query never aborts another.
 *
 * Ownership: a request (lg_pg_req_t) belongs to the pool until its callback has run or it was
 * cancelled; callbacks run exactly once, from the loop, never from inside the call that queued
 * them. A lost connection fails the requests in flight on it (callback with err) and the pool
 * reconnects in the background with backoff (100 ms doubling to 5 s) until a connection is up
 * again. Requests wait while a connection is being made (CONNECTING); while the pool is DOWN (the
 * last attempt failed, the next one is in backoff) new requests fail at once with "database
 * unavailable: <libpq's reason>" instead of queueing forever.
 *
 * All functions are for the loop thread that owns the pool.
 */
#ifndef LUAGENT_PG_H
#define LUAGENT_PG_H

#include <stddef.h>

#include <libpq-fe.h>

/* libpq is loaded on first use (lg_pg_load); the PQ* names used in luagent resolve to the loaded
 * functions through these macros. Only the functions listed here may be used. */
typedef struct lg_pq_api {
    PGconn *(*connectStartParams)(const char *const *, const char *const *, int);
    PostgresPollingStatusType (*connectPoll)(PGconn *);
    void (*finish)(PGconn *);
    ConnStatusType (*status)(const PGconn *);
    PGTransactionStatusType (*transactionStatus)(const PGconn *);
    int (*socket)(const PGconn *);
    char *(*errorMessage)(const PGconn *);
    int (*setnonblocking)(PGconn *, int);
    int (*enterPipelineMode)(PGconn *);
    int (*pipelineSync)(PGconn *);
    int (*sendQueryParams)(PGconn *, const char *, int, const Oid *, const char *const *, const int *, const int *,
                           int);
    int (*flush)(PGconn *);
    int (*consumeInput)(PGconn *);
    int (*isBusy)(PGconn *);
    PGresult *(*getResult)(PGconn *);
    PQnoticeProcessor (*setNoticeProcessor)(PGconn *, PQnoticeProcessor, void *);
    PQconninfoOption *(*conninfoParse)(const char *, char **);
    void (*conninfoFree)(PQconninfoOption *);
    ExecStatusType (*resultStatus)(const PGresult *);
    char *(*resultErrorField)(const PGresult *, int);
    void (*clear)(PGresult *);
    int (*ntuples)(const PGresult *);
    int (*nfields)(const PGresult *);
    char *(*fname)(const PGresult *, int);
    Oid (*ftype)(const PGresult *, int);
    char *(*getvalue)(const PGresult *, int, int);
    int (*getlength)(const PGresult *, int, int);
    int (*getisnull)(const PGresult *, int, int);
    char *(*cmdStatus)(PGresult *);
    char *(*cmdTuples)(PGresult *);
    unsigned char *(*unescapeBytea)(const unsigned char *, size_t *);
    void (*freemem)(void *);
    /* blocking: only for the main thread before the workers run (migrations, CLI) */
    PGconn *(*connectdbParams)(const char *const *, const char *const *, int);
    PGresult *(*exec)(PGconn *, const char *);
    PGresult *(*execParams)(PGconn *, const char *, int, const Oid *, const char *const *, const int *, const int *,
                            int);
} lg_pq_api_t;

extern lg_pq_api_t lg_pq;

#define PQconnectStartParams lg_pq.connectStartParams
#define PQconnectPoll lg_pq.connectPoll
#define PQfinish lg_pq.finish
#define PQstatus lg_pq.status
#define PQtransactionStatus lg_pq.transactionStatus
#define PQsocket lg_pq.socket
#define PQerrorMessage lg_pq.errorMessage
#define PQsetnonblocking lg_pq.setnonblocking
#define PQenterPipelineMode lg_pq.enterPipelineMode
#define PQpipelineSync lg_pq.pipelineSync
#define PQsendQueryParams lg_pq.sendQueryParams
#define PQflush lg_pq.flush
#define PQconsumeInput lg_pq.consumeInput
#define PQisBusy lg_pq.isBusy
#define PQgetResult lg_pq.getResult
#define PQsetNoticeProcessor lg_pq.setNoticeProcessor
#define PQconninfoParse lg_pq.conninfoParse
#define PQconninfoFree lg_pq.conninfoFree
#define PQresultStatus lg_pq.resultStatus
#define PQresultErrorField lg_pq.resultErrorField
#define PQclear lg_pq.clear
#define PQntuples lg_pq.ntuples
#define PQnfields lg_pq.nfields
#define PQfname lg_pq.fname
#define PQftype lg_pq.ftype
#define PQgetvalue lg_pq.getvalue
#define PQgetlength lg_pq.getlength
#define PQgetisnull lg_pq.getisnull
#define PQcmdStatus lg_pq.cmdStatus
#define PQcmdTuples lg_pq.cmdTuples
#define PQunescapeBytea lg_pq.unescapeBytea
#define PQfreemem lg_pq.freemem
#define PQconnectdbParams lg_pq.connectdbParams
#define PQexec lg_pq.exec
#define PQexecParams lg_pq.execParams

#include "luagent/timers.h"

#define H2O_USE_LIBUV 0
#include <h2o/socket.h>

typedef struct lg_pg lg_pg_t;
typedef struct lg_pg_conn lg_pg_conn_t;
typedef struct lg_pg_req lg_pg_req_t;

/** A query finished. On success `res` is the last PGresult of the query (PGRES_TUPLES_OK or
 *  PGRES_COMMAND_OK; owned by the pool, valid only during the callback) and err is NULL. On
 *  failure `res` may be NULL (connection lost, unavailable) or the error result; err is a message
 *  (Postgres's primary message, or the connection's) and sqlstate the 5-character SQLSTATE or NULL. */
typedef void (*lg_pg_cb)(void *data, PGresult *res, const char *err, const char *sqlstate);
/** A connection was lent (c != NULL) or could not be (err). */
typedef void (*lg_pg_acquire_cb)(void *data, lg_pg_conn_t *c, const char *err);

typedef enum { LG_PG_IDLE = 0, LG_PG_UP, LG_PG_CONNECTING, LG_PG_DOWN } lg_pg_state_t;

/** Load libpq.so.5 once (thread-safe): 0, or -1 when it is not installed. */
int lg_pg_load(void);

/** A pool for `url` (a postgres:// URL or a libpq conninfo string); no connection is made until
 *  the first request. NULL when libpq cannot be loaded. */
lg_pg_t *lg_pg_new(h2o_loop_t *loop, lg_timerheap_t *timers, const char *url, int size);
/** Close every connection. Pending requests are dropped without their callbacks (their owners
 *  have been released first). */
void lg_pg_free(lg_pg_t *p);

/** Run one parameterized statement on any connection (text parameters; values[i] NULL is SQL NULL;
 *  lengths/formats may be NULL for text). NULL only when the pool cannot take it (then `cb` is not
 *  called; *err says why, e.g. database unavailable). */
lg_pg_req_t *lg_pg_query(lg_pg_t *p, const char *sql, int nparams, const char *const *values, const int *lengths,
                         const int *formats, lg_pg_cb cb, void *data, const char **err);
/** lg_pg_query with one text parameter and no copies: `sql` and `text` (NUL-terminated) stay the
 *  caller's and must stay alive until the callback has run or the request is cancelled (for large
 *  values sent often: the execution recorder's batches). */
lg_pg_req_t *lg_pg_query_text(lg_pg_t *p, const char *sql, const char *text, lg_pg_cb cb, void *data, const char **err);
/** Forget a request: its callback will not be called. A query already sent runs to completion on
 *  the server and its result is discarded. */
void lg_pg_cancel(lg_pg_req_t *r);

/** Borrow a connection exclusively (transactions): `cb` once with the connection or an error. The
 *  returned request can be cancelled like a query. NULL (no callback) when unavailable. */
lg_pg_req_t *lg_pg_acquire(lg_pg_t *p, lg_pg_acquire_cb cb, void *data, const char **err);
/** Like lg_pg_query, on a borrowed connection. */
lg_pg_req_t *lg_pg_conn_query(lg_pg_conn_t *c, const char *sql, int nparams, const char *const *values,
                              const int *lengths, const int *formats, lg_pg_cb cb, void *data, const char **err);
/** Give a borrowed connection back. If it is inside a transaction (or a query of it is still
 *  running) it is rolled back before anyone else gets it; a broken connection is closed. */
void lg_pg_release(lg_pg_conn_t *c);

/** The pool's state: UP (a connection is open), CONNECTING, DOWN (last attempt failed; *why set),
 *  IDLE (never used). */
lg_pg_state_t lg_pg_state(const lg_pg_t *p, const char **why);
/** A blocking connection (main thread and CLI only: migrations, keys, stored settings), 5 s
 *  connect timeout. NULL with err, which never quotes the URL. */
PGconn *lg_pg_connect_blocking(const char *url, const char *app, char *err, size_t errlen);

/** Connections open and requests waiting for one (for metrics and /ready). */
void lg_pg_stats(const lg_pg_t *p, int *open, int *busy, size_t *waiting);

#endif

/**
 * redis.h - Redis from a worker's event loop: one hiredis async connection, reconnecting.
 *
 * hiredis 0.14's async API with an adapter of our own (the shape of hiredis/adapters/libev.h): the
 * connection's fd is watched by an evloop socket; reads and writes are driven by readiness.
 * hiredis resolves host names with a blocking getaddrinfo, so a name is first resolved off the
 * loop by h2o's resolver threads and hiredis is given the address. On connect the adapter sends
 * AUTH (password from the URL) and SELECT (the URL's /db) before any queued command.
 *
 * Ownership: a request belongs to the connection until its callback has run or it was cancelled;
 * callbacks run exactly once, from the loop. When the connection is lost, the requests in flight
 * get reply NULL with err, and the connection is re-made in the background with backoff (100 ms
 * doubling to 5 s; an attempt — resolve, connect, AUTH, SELECT — times out after 3 s). While it is
 * not up, lg_redis_command returns NULL at once (callers treat Redis as unavailable: a cache miss,
 * a local fallback) — commands never queue behind an outage. The one exception is the first
 * attempt after lg_redis_new (a connection made on first use): commands given during it wait for
 * it (at most its 3 s timeout), then are sent in order, or get reply NULL with err if it fails.
 * Up and down transitions are logged once each (host, port, db and the reason; never the password).
 *
 * A command that blocks on the server (XREADGROUP BLOCK, BLPOP) holds up every command queued
 * behind it: give such a consumer a connection of its own (another lg_redis_new).
 *
 * All functions are for the loop thread that owns the connection.
 */
#ifndef LUAGENT_REDIS_H
#define LUAGENT_REDIS_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#include "luagent/timers.h"

#define H2O_USE_LIBUV 0
#include <h2o/socket.h>

typedef struct lg_redis lg_redis_t;
typedef struct lg_redis_req lg_redis_req_t;

/** A reply (owned by hiredis, valid only during the callback; a REDIS_REPLY_ERROR reply is a
 *  reply, not err), or reply NULL and err when the connection was lost before it came. */
typedef void (*lg_redis_cb)(void *data, redisReply *reply, const char *err);

/** A connection to `url` (redis://[[user]:password@]host[:port][/db], user and password %-decoded,
 *  or unix://[[user]:password@]/path[?db=N]); it starts connecting at once. `name` names it in log
 *  lines ("redis", "redis jobs"). A URL it cannot serve (rediss://: hiredis 0.14 has no TLS; a bad
 *  port or db) is logged once and gives a connection that is never up. */
lg_redis_t *lg_redis_new(h2o_loop_t *loop, lg_timerheap_t *timers, const char *url, const char *name);
/** Disconnect. Pending requests are dropped without their callbacks. Not from inside one of this
 *  connection's callbacks. */
void lg_redis_free(lg_redis_t *r);

/** 1 when connected (AUTH/SELECT done). */
int lg_redis_up(const lg_redis_t *r);
/** Send one command (binary-safe arguments; argvlen NULL: strlen). NULL when not connected: then
 *  `cb` is not called. Never calls `cb` before it returns. */
lg_redis_req_t *lg_redis_command(lg_redis_t *r, int argc, const char **argv, const size_t *argvlen, lg_redis_cb cb,
                                 void *data);
/** Forget a request: its callback will not be called (the reply is read and dropped). */
void lg_redis_cancel(lg_redis_req_t *q);
/** Called (if set) each time the connection comes up, e.g. to re-create a consumer group. */
void lg_redis_on_connect(lg_redis_t *r, void (*cb)(void *data), void *data);

#endif

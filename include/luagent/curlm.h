/**
 * curlm.h - libcurl's multi interface driven by a worker's h2o event loop (one multi per worker).
 *
 * Sockets: curl's CURLMOPT_SOCKETFUNCTION is answered with one evloop watcher per fd, kept for the
 * socket's whole life (curl says CURL_POLL_REMOVE every time a transfer ends and its connection goes
 * idle; dropping the watcher then would cost epoll_ctl and fcntl churn on every reuse). The watcher
 * is detached (h2o_socket_export) only in CURLOPT_CLOSESOCKETFUNCTION, just before curl closes it.
 * Timers: CURLMOPT_TIMERFUNCTION arms one timer in the runtime's heap.
 * Completion: a finished transfer is removed from the multi and its done callback is called once,
 * from the loop (never from inside curl_multi_socket_action's own callbacks re-entrantly).
 * Easy handles are reused (lg_curlm_easy / lg_curlm_release) with the connection cache kept large.
 */
#ifndef LUAGENT_CURLM_H
#define LUAGENT_CURLM_H

#include <curl/curl.h>

#include "luagent/timers.h"

#define H2O_USE_LIBUV 0
#include <h2o/socket.h>

typedef struct lg_curlm lg_curlm_t;
typedef void (*lg_curl_done_cb)(CURL *easy, CURLcode rc, void *data);

lg_curlm_t *lg_curlm_new(h2o_loop_t *loop, lg_timerheap_t *timers);
/** Abort every transfer (their done callbacks are NOT called: owners are released first). */
void lg_curlm_free(lg_curlm_t *m);
/** A reset easy handle with the defaults every transfer gets (NOSIGNAL, close-socket hook, no
 *  proxy unless one is configured in the environment, TLS verification on). */
CURL *lg_curlm_easy(lg_curlm_t *m);
/** Start the transfer; `done` is called once when it ends (not if it is cancelled). */
int lg_curlm_add(lg_curlm_t *m, CURL *easy, lg_curl_done_cb done, void *data);
/** Cancel (if running) and give the handle back for reuse. */
void lg_curlm_release(lg_curlm_t *m, CURL *easy);
/** Transfers in flight. */
size_t lg_curlm_running(const lg_curlm_t *m);

#endif

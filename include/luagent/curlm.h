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

/* libcurl is loaded on first use (dlopen), not linked: its ~25 dependent libraries and their
 * constructors cost ~4.5 MiB of RSS that a worker serving only agents without HTTP never needs.
 * The curl_* names below resolve to the loaded functions. */
#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>

typedef struct lg_curl_api {
    CURLcode (*global_init)(long);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
    CURLMcode (*multi_socket_action)(CURLM *, curl_socket_t, int, int *);
    CURLMsg *(*multi_info_read)(CURLM *, int *);
    CURLMcode (*multi_add_handle)(CURLM *, CURL *);
    CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
    CURLMcode (*multi_cleanup)(CURLM *);
    CURL *(*easy_init)(void);
    void (*easy_reset)(CURL *);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    void (*easy_cleanup)(CURL *);
    CURLcode (*easy_pause)(CURL *, int);
    const char *(*easy_strerror)(CURLcode);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
} lg_curl_api_t;

extern lg_curl_api_t lg_curl;
/** Load libcurl.so.4 once (thread-safe). 0, or -1 when it is not installed. */
int lg_curl_load(void);

#undef curl_multi_setopt /* curl.h may define these as function-like macros */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#define curl_global_init lg_curl.global_init
#define curl_multi_init lg_curl.multi_init
#define curl_multi_setopt lg_curl.multi_setopt
#define curl_multi_socket_action lg_curl.multi_socket_action
#define curl_multi_info_read lg_curl.multi_info_read
#define curl_multi_add_handle lg_curl.multi_add_handle
#define curl_multi_remove_handle lg_curl.multi_remove_handle
#define curl_multi_cleanup lg_curl.multi_cleanup
#define curl_easy_init lg_curl.easy_init
#define curl_easy_reset lg_curl.easy_reset
#define curl_easy_setopt lg_curl.easy_setopt
#define curl_easy_getinfo lg_curl.easy_getinfo
#define curl_easy_cleanup lg_curl.easy_cleanup
#define curl_easy_pause lg_curl.easy_pause
#define curl_easy_strerror lg_curl.easy_strerror
#define curl_slist_append lg_curl.slist_append
#define curl_slist_free_all lg_curl.slist_free_all

#include "luagent/timers.h"

#define H2O_USE_LIBUV 0
#include <h2o/socket.h>

typedef struct lg_curlm lg_curlm_t;
typedef void (*lg_curl_done_cb)(CURL *easy, CURLcode rc, void *data);

/** NULL when libcurl cannot be loaded. */
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

#include "luagent/curlm.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dlfcn.h>

#include "luagent/ids.h"
#include "luagent/log.h"

typedef struct watcher {
    lg_curlm_t *m;
    h2o_socket_t *sock;
    curl_socket_t fd;
    int what; /* CURL_POLL_* curl wants now */
} watcher_t;

typedef struct transfer {
    lg_curl_done_cb done;
    void *data;
} transfer_t;

struct lg_curlm {
    CURLM *multi;
    h2o_loop_t *loop;
    lg_timerheap_t *timers;
    lg_timer_t timer;
    watcher_t **by_fd;
    size_t nfd;
    CURL **idle;
    size_t nidle, capidle;
    size_t running;
    int no_proxy;
};

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

static void check_done(lg_curlm_t *m)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        transfer_t *t = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
        curl_multi_remove_handle(m->multi, easy);
        m->running--;
        if (t != NULL) {
            curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
            lg_curl_done_cb done = t->done;
            void *data = t->data;
            free(t);
            done(easy, rc, data);
        }
    }
}

static void on_writable(h2o_socket_t *sock, const char *err);

static void arm_write(watcher_t *w)
{
    if ((w->what & CURL_POLL_OUT) && w->sock->_cb.write == NULL)
        h2o_socket_notify_write(w->sock, on_writable);
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    watcher_t *w = sock->data;
    lg_curlm_t *m = w->m;
    int running;
    curl_multi_socket_action(m->multi, w->fd, err ? CURL_CSELECT_ERR : CURL_CSELECT_IN, &running);
    check_done(m);
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    watcher_t *w = sock->data;
    lg_curlm_t *m = w->m;
    curl_socket_t fd = w->fd;
    int running;
    curl_multi_socket_action(m->multi, fd, err ? CURL_CSELECT_ERR : CURL_CSELECT_OUT, &running);
    /* curl may have closed the socket (and we freed w): look it up again, without touching w */
    if ((size_t)fd < m->nfd && m->by_fd[fd] == w)
        arm_write(w);
    check_done(m);
}

static watcher_t *watcher_for(lg_curlm_t *m, curl_socket_t fd)
{
    if ((size_t)fd >= m->nfd) {
        size_t n = m->nfd ? m->nfd : 64;
        while (n <= (size_t)fd)
            n *= 2;
        m->by_fd = realloc(m->by_fd, n * sizeof(*m->by_fd));
        memset(m->by_fd + m->nfd, 0, (n - m->nfd) * sizeof(*m->by_fd));
        m->nfd = n;
    }
    watcher_t *w = m->by_fd[fd];
    if (w == NULL) {
        w = calloc(1, sizeof(*w));
        w->m = m;
        w->fd = fd;
        w->sock = h2o_evloop_socket_create(m->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
        w->sock->data = w;
        m->by_fd[fd] = w;
    }
    return w;
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    lg_curlm_t *m = userp;
    watcher_t *w = watcher_for(m, fd);
    w->what = what == CURL_POLL_REMOVE ? 0 : what;
    if (what & CURL_POLL_IN)
        h2o_socket_read_start(w->sock, on_readable);
    else if (h2o_socket_is_reading(w->sock))
        h2o_socket_read_stop(w->sock);
    arm_write(w); /* a pending write notification that is no longer wanted fires once, harmlessly */
    return 0;
}

static int on_close_socket(void *clientp, curl_socket_t fd)
{
    lg_curlm_t *m = clientp;
    watcher_t *w = (size_t)fd < m->nfd ? m->by_fd[fd] : NULL;
    if (w != NULL) {
        m->by_fd[fd] = NULL;
        /* h2o_socket_export asserts that no write notification is pending and 2.2.5 has no call to
         * cancel one: clear it by hand (read_stop makes the loop drop its interest in the fd) */
        w->sock->_cb.write = NULL;
        h2o_socket_read_stop(w->sock);
        h2o_socket_export_t info;
        if (h2o_socket_export(w->sock, &info) == 0) {
            h2o_buffer_dispose(&info.input);
            fd = info.fd;
        }
        free(w);
    }
    return close(fd);
}

static void on_timer_fired(lg_timer_t *t)
{
    lg_curlm_t *m = container_of(t, lg_curlm_t, timer);
    int running;
    curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(m);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    lg_curlm_t *m = userp;
    if (timeout_ms < 0)
        lg_timers_del(m->timers, &m->timer);
    else
        lg_timers_add(m->timers, &m->timer, lg_now_mono_ms() + (uint64_t)timeout_ms);
    return 0;
}

lg_curl_api_t lg_curl;
static int curl_loaded = -1;

static void load_curl(void)
{
    void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        lg_log(LG_LOG_ERROR, "luagent.http: cannot load libcurl.so.4: %s", dlerror());
        curl_loaded = 0;
        return;
    }
    struct { void **slot; const char *name; } syms[] = {
#define SYM(field, name) {(void **)&lg_curl.field, name}
        SYM(global_init, "curl_global_init"),     SYM(multi_init, "curl_multi_init"),
        SYM(multi_setopt, "curl_multi_setopt"),   SYM(multi_socket_action, "curl_multi_socket_action"),
        SYM(multi_info_read, "curl_multi_info_read"), SYM(multi_add_handle, "curl_multi_add_handle"),
        SYM(multi_remove_handle, "curl_multi_remove_handle"), SYM(multi_cleanup, "curl_multi_cleanup"),
        SYM(easy_init, "curl_easy_init"),         SYM(easy_reset, "curl_easy_reset"),
        SYM(easy_setopt, "curl_easy_setopt"),     SYM(easy_getinfo, "curl_easy_getinfo"),
        SYM(easy_cleanup, "curl_easy_cleanup"),   SYM(easy_pause, "curl_easy_pause"),
        SYM(easy_strerror, "curl_easy_strerror"), SYM(slist_append, "curl_slist_append"),
        SYM(slist_free_all, "curl_slist_free_all"),
#undef SYM
    };
    for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++)
        if ((*syms[i].slot = dlsym(h, syms[i].name)) == NULL) {
            lg_log(LG_LOG_ERROR, "luagent.http: libcurl.so.4 has no %s", syms[i].name);
            curl_loaded = 0;
            return;
        }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    curl_loaded = 1;
}

int lg_curl_load(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, load_curl);
    return curl_loaded == 1 ? 0 : -1;
}

lg_curlm_t *lg_curlm_new(h2o_loop_t *loop, lg_timerheap_t *timers)
{
    if (lg_curl_load() != 0)
        return NULL;
    lg_curlm_t *m = calloc(1, sizeof(*m));
    m->loop = loop;
    m->timers = timers;
    lg_timer_init(&m->timer, on_timer_fired);
    m->multi = curl_multi_init();
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, 4096L); /* above peak concurrency: keep them */
    curl_multi_setopt(m->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    static const char *const proxy_vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", NULL};
    m->no_proxy = 1;
    for (const char *const *v = proxy_vars; *v; v++)
        if (getenv(*v) != NULL && **v)
            m->no_proxy = 0;
    return m;
}

size_t lg_curlm_running(const lg_curlm_t *m) { return m->running; }

CURL *lg_curlm_easy(lg_curlm_t *m)
{
    CURL *easy = m->nidle > 0 ? m->idle[--m->nidle] : curl_easy_init();
    if (easy == NULL)
        return NULL;
    curl_easy_reset(easy);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, m);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, ""); /* every encoding curl was built with */
    if (m->no_proxy)
        curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
    return easy;
}

int lg_curlm_add(lg_curlm_t *m, CURL *easy, lg_curl_done_cb done, void *data)
{
    transfer_t *t = malloc(sizeof(*t));
    t->done = done;
    t->data = data;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
    if (curl_multi_add_handle(m->multi, easy) != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        free(t);
        return -1;
    }
    m->running++;
    return 0;
}

void lg_curlm_release(lg_curlm_t *m, CURL *easy)
{
    transfer_t *t = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
    if (t != NULL) { /* still in the multi: cancel */
        curl_multi_remove_handle(m->multi, easy);
        m->running--;
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        free(t);
    }
    if (m->nidle == m->capidle) {
        m->capidle = m->capidle ? m->capidle * 2 : 16;
        m->idle = realloc(m->idle, m->capidle * sizeof(*m->idle));
    }
    if (m->nidle < 256)
        m->idle[m->nidle++] = easy;
    else
        curl_easy_cleanup(easy);
}

void lg_curlm_free(lg_curlm_t *m)
{
    if (m == NULL)
        return;
    lg_timers_del(m->timers, &m->timer);
    for (size_t i = 0; i < m->nidle; i++)
        curl_easy_cleanup(m->idle[i]);
    curl_multi_cleanup(m->multi); /* closes cached connections through on_close_socket */
    for (size_t i = 0; i < m->nfd; i++)
        if (m->by_fd[i] != NULL) {
            watcher_t *w = m->by_fd[i];
            w->sock->_cb.write = NULL;
            h2o_socket_close(w->sock);
            free(w);
        }
    free(m->by_fd);
    free(m->idle);
    free(m);
}

#include "luagent/server.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "luagent/auth.h"
#include "luagent/bind.h"
#include "luagent/ids.h"
#include "luagent/inotify.h"
#include "luagent/jobs.h"
#include "luagent/jwt.h"
#include "luagent/kv.h"
#include "luagent/log.h"
#include "luagent/registry.h"
#include "luagent/secrets.h"
#include "luagent/store.h"
#include "luagent/tls.h"
#include "luagent/worker.h"

static lg_server_t S;

/* Every in-flight execution may hold a client socket and an upstream socket: allow many fds.
 * Raise the hard limit too when we may (root), else the soft limit up to the hard one. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    struct rlimit want = {.rlim_cur = 262144, .rlim_max = rl.rlim_max > 262144 ? rl.rlim_max : 262144};
    if (setrlimit(RLIMIT_NOFILE, &want) != 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Main thread: read the agents, the providers and the dashboard's files again (watching any
 * directory that appeared). */
static void reload_scripts(int ifd, const lg_config_t *cfg)
{
    if (ifd >= 0) {
        lg_inotify_watch_tree(ifd, cfg->agents_dir);
        lg_inotify_watch_tree(ifd, cfg->providers_dir);
        if (lg_static_dir() != NULL)
            lg_inotify_watch_tree(ifd, lg_static_dir());
    }
    lg_registry_scan(LG_SCRIPT_AGENT);
    lg_registry_scan(LG_SCRIPT_PROVIDER);
    lg_static_reload();
}

/* Main thread: reload whenever inotify says something changed in a watched directory. */
static void on_scripts_changed(int ifd, const lg_config_t *cfg)
{
    int relevant = lg_inotify_drain(ifd);
    /* coalesce a burst (an editor's write + rename, a git checkout) into one scan */
    struct pollfd p = {.fd = ifd, .events = POLLIN};
    while (poll(&p, 1, 5) > 0)
        relevant |= lg_inotify_drain(ifd);
    if (relevant)
        reload_scripts(ifd, cfg);
}

/* Migrations run before the workers start; when the database cannot be reached then, the server
 * starts anyway (records wait, the API serves) and this thread retries until they are applied. */
static void *migrate_later(void *arg)
{
    const lg_config_t *cfg = arg;
    char err[512];
    int applied, logged = 0;
    while (!atomic_load(&S.draining)) {
        if (lg_migrate(cfg->database_url, &applied, err, sizeof(err)) == 0) {
            atomic_store(&S.db_schema_ok, 1);
            lg_log(LG_LOG_INFO, "database migrations applied (%d new)", applied);
            return NULL;
        }
        if (!logged++)
            lg_log(LG_LOG_WARN, "database migrations will be retried: %s", err);
        for (int i = 0; i < 20 && !atomic_load(&S.draining); i++)
            usleep(100000);
    }
    return NULL;
}

static int start_database(const lg_config_t *cfg)
{
    char err[512];
    if (lg_spill_dir_lock(cfg->spill_dir, err, sizeof(err)) != 0) {
        fprintf(stderr, "luagent: %s\n", err);
        return -1;
    }
    int applied;
    if (lg_migrate(cfg->database_url, &applied, err, sizeof(err)) == 0) {
        atomic_store(&S.db_schema_ok, 1);
        if (applied > 0)
            lg_log(LG_LOG_INFO, "database migrations applied (%d new)", applied);
        return 0;
    }
    lg_log(LG_LOG_WARN, "database migrations not applied yet: %s", err);
    S.migrator_started = pthread_create(&S.migrator, NULL, migrate_later, (void *)cfg) == 0;
    return 0;
}

/* "host:port" or "[v6]:port" (as config.c normalises LUAGENT_HEALTH_LISTEN) -> S.health_host, S.health_port */
static int split_health_listen(const char *hp)
{
    const char *colon = strrchr(hp, ':');
    if (colon == NULL)
        return -1;
    const char *h = hp;
    size_t n = (size_t)(colon - hp);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']')
        h++, n -= 2;
    S.health_host = strndup(h, n);
    S.health_port = atoi(colon + 1);
    return S.health_host != NULL && S.health_port > 0 ? 0 : -1;
}

/* "http://127.0.0.1:8000", "https://[::1]:8443" */
static void url_of(char *out, size_t len, const char *scheme, const char *host, int port)
{
    int v6 = strchr(host, ':') != NULL;
    snprintf(out, len, "%s://%s%s%s:%d", scheme, v6 ? "[" : "", host, v6 ? "]" : "", port);
}

/* ---- SIGHUP: reload ----
 * A reload builds a new settings object and publishes it; workers pick the pointer up as they go.
 * The replaced one (and replaced JWT keys) may still be in use by a request, so it is kept, in
 * S.retired, until exit. Reloads are rare (an operator's signal): that costs a few KB each. */

typedef struct lg_retired {
    struct lg_retired *next;
    void *p;
    void (*free_fn)(void *);
} lg_retired_t;

static void retire(void *p, void (*free_fn)(void *))
{
    lg_retired_t *r = malloc(sizeof *r);
    if (r == NULL)
        return; /* leaked rather than freed under a reader */
    *r = (lg_retired_t){.next = S.retired, .p = p, .free_fn = free_fn};
    S.retired = r;
}

static void config_destroy(void *p)
{
    lg_config_free(p);
    free(p);
}

static void jwt_keys_destroy(void *p) { lg_jwt_keys_free(p); }

static void reload(int ifd)
{
    const lg_config_t *old = S.cfg;
    lg_config_t *fresh = calloc(1, sizeof *fresh);
    char err[512], changed[512];
    if (fresh == NULL || lg_config_load(fresh, NULL, err, sizeof(err)) != 0) {
        lg_log(LG_LOG_ERROR, "SIGHUP: settings not reloaded (the old ones stay): %s", fresh ? err : "out of memory");
        free(fresh);
        reload_scripts(ifd, old);
        return;
    }
    int n = lg_config_keep_restart_only(fresh, old, changed, sizeof(changed)), applied;
    if (n < 0) {
        lg_log(LG_LOG_ERROR, "SIGHUP: settings not reloaded: out of memory");
        config_destroy(fresh);
        return;
    }
    if (fresh->database_url != NULL && lg_config_load_stored(fresh, &applied, err, sizeof(err)) != 0)
        lg_log(LG_LOG_WARN, "SIGHUP: settings stored in the database not applied: %s", err);
    fresh->generation = old->generation + 1;

    lg_jwt_keys_t *keys = NULL;
    if (fresh->jwt_secret != NULL || fresh->jwt_public_key != NULL) {
        if ((keys = lg_jwt_keys_load(fresh, err, sizeof(err))) == NULL) {
            lg_log(LG_LOG_ERROR, "SIGHUP: settings not reloaded (the old ones stay): %s", err);
            config_destroy(fresh);
            reload_scripts(ifd, old);
            return;
        }
    }
    lg_jwt_keys_t *old_keys = atomic_exchange(&S.jwt_keys, keys);
    if (old_keys != NULL)
        retire(old_keys, jwt_keys_destroy);
    atomic_store(&S.cfg, fresh);
    if (old->generation > 0)
        retire((void *)old, config_destroy); /* the first one belongs to main() */
    lg_log_reopen(fresh->log_level, fresh->log_file);
    reload_scripts(ifd, fresh);
    for (int i = 0; i < S.nworkers; i++)
        lg_worker_wake(&S.workers[i]); /* each takes the new settings on its next turn */

    lg_buf_t b = {0};
    lg_log_begin(&b, LG_LOG_INFO, LG_STRLIT("reloaded settings and scripts (SIGHUP)"));
    lg_log_kv_int(&b, "generation", fresh->generation);
    lg_log_kv_int(&b, "agents", (int64_t)lg_registry_count(LG_SCRIPT_AGENT));
    lg_log_end(&b);
    lg_buf_free(&b);
    if (n > 0)
        lg_log(LG_LOG_WARN, "SIGHUP: %s changed; that takes a restart (the running values stay)", changed);
}

static void free_retired(void)
{
    while (S.retired != NULL) {
        lg_retired_t *r = S.retired;
        S.retired = r->next;
        r->free_fn(r->p);
        free(r);
    }
    const lg_config_t *cfg = S.cfg;
    if (cfg->generation > 0)
        config_destroy((void *)cfg);
}

/* Serve until SIGTERM/SIGINT: rescan scripts when inotify says so, reload on SIGHUP. Then /ready
 * turns 503 and, for LUAGENT_DRAIN_DELAY_MS (a second signal cuts it short), the listeners still
 * accept, so a load balancer stops sending before they close. */
static void wait_for_signal(int ifd)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    uint64_t stop_at = 0;
    for (;;) {
        int timeout = -1;
        if (stop_at != 0) {
            uint64_t now = lg_now_mono_ms();
            if (now >= stop_at)
                break;
            timeout = (int)(stop_at - now);
        }
        struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = ifd, .events = POLLIN}};
        if (poll(p, ifd >= 0 ? 2 : 1, timeout) < 0 && errno != EINTR)
            break;
        if (p[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) != sizeof(si))
                continue;
            if (si.ssi_signo == SIGHUP) {
                if (stop_at == 0)
                    reload(ifd);
                continue;
            }
            if (stop_at != 0)
                break; /* a second SIGTERM: drain now */
            const lg_config_t *cfg = S.cfg;
            atomic_store(&S.stopping, 1);
            lg_log(LG_LOG_INFO, "received %s: draining (up to %d ms%s)", strsignal((int)si.ssi_signo),
                   cfg->drain_timeout_ms, cfg->drain_delay_ms > 0 ? ", after the drain delay" : "");
            if (cfg->drain_delay_ms <= 0)
                break;
            stop_at = lg_now_mono_ms() + (uint64_t)cfg->drain_delay_ms;
        }
        if (ifd >= 0 && (p[1].revents & POLLIN))
            on_scripts_changed(ifd, S.cfg);
    }
    close(sfd);
}

int lg_server_run(const lg_config_t *cfg)
{
    struct stat st;
    if (stat(cfg->agents_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "luagent: LUAGENT_AGENTS_DIR: '%s' is not a directory\n", cfg->agents_dir);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* the workers inherit this: only the main thread takes signals */

    memset(&S, 0, sizeof(S));
    S.cfg = cfg;
    S.started_ms = lg_now_epoch_ms();
    size_t mem_limit = (size_t)cfg->memory_limit_mb << 20;
    if (lg_registry_init(LG_SCRIPT_AGENT, cfg->agents_dir, mem_limit) != 0 ||
        lg_registry_init(LG_SCRIPT_PROVIDER, cfg->providers_dir, mem_limit) != 0) {
        fprintf(stderr, "luagent: cannot create the Lua VM\n");
        return 1;
    }
    int ifd = cfg->watch ? lg_inotify_open() : -1;
    if (ifd >= 0) {
        lg_inotify_watch_tree(ifd, cfg->agents_dir);
        lg_inotify_watch_tree(ifd, cfg->providers_dir);
    }
    else if (cfg->watch)
        lg_log(LG_LOG_WARN, "inotify is unavailable (%s): scripts are reloaded on SIGHUP only", strerror(errno));
    lg_registry_scan(LG_SCRIPT_AGENT);
    if (stat(cfg->providers_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        lg_log(LG_LOG_WARN, "LUAGENT_PROVIDERS_DIR '%s' is not a directory: luagent.ai has no providers", cfg->providers_dir);
    lg_registry_scan(LG_SCRIPT_PROVIDER);

    char err0[512];
    /* TLS and the health address first: a start that fails here has touched nothing (no key minted) */
    if (cfg->tls_cert != NULL && (S.ssl_ctx = lg_tls_context(cfg->tls_cert, cfg->tls_key, err0, sizeof(err0))) == NULL) {
        fprintf(stderr, "luagent: %s\n", err0);
        return 2;
    }
    if (cfg->health_listen != NULL && split_health_listen(cfg->health_listen) != 0) {
        fprintf(stderr, "luagent: LUAGENT_HEALTH_LISTEN: '%s' is not host:port\n", cfg->health_listen);
        return 2;
    }
    if (cfg->database_url != NULL && start_database(cfg) != 0)
        return 2;
    if (lg_keys_init(cfg, err0, sizeof(err0)) != 0) {
        fprintf(stderr, "luagent: %s\n", err0);
        return 2;
    }
    lg_jwt_keys_t *keys = NULL;
    if ((cfg->jwt_secret != NULL || cfg->jwt_public_key != NULL) &&
        (keys = lg_jwt_keys_load(cfg, err0, sizeof(err0))) == NULL) {
        fprintf(stderr, "luagent: %s\n", err0);
        return 2;
    }
    atomic_store(&S.jwt_keys, keys);
    lg_history_init((size_t)cfg->history_size);
    lg_cache_init();

    h2o_config_init(&S.globalconf);
    S.globalconf.server_name = h2o_iovec_init(H2O_STRLIT("luagent"));
    /* h2o answers bodies past this itself (plain text): keep it above our own JSON 413 limit */
    S.globalconf.max_request_entity_size = cfg->max_body_bytes * 2 + (1 << 20);
    h2o_hostconf_t *host = h2o_config_register_host(&S.globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    lg_static_register(lg_handlers_register(host), cfg->web_dir);
    if (ifd >= 0 && lg_static_dir() != NULL)
        lg_inotify_watch_tree(ifd, lg_static_dir());
    S.main_hosts[0] = host;
    if (S.health_host != NULL) {
        /* in the globalconf so every context initialises it, but only in the health listener's list */
        S.health_hosts[0] = h2o_config_register_host(&S.globalconf, h2o_iovec_init(H2O_STRLIT("health")), 65535);
        lg_handlers_register_health(S.health_hosts[0]);
    }

    S.nworkers = cfg->workers;
    S.workers = calloc((size_t)S.nworkers, sizeof(lg_worker_t));
    char err[256];
    for (int i = 0; i < S.nworkers; i++) {
        lg_worker_t *w = &S.workers[i];
        w->index = i;
        w->server = &S;
        w->health_fd = -1;
        if ((w->listen_fd = lg_worker_listen("LUAGENT_LISTEN", cfg->listen_host, cfg->listen_port, err, sizeof(err))) < 0 ||
            (S.health_host != NULL &&
             (w->health_fd = lg_worker_listen("LUAGENT_HEALTH_LISTEN", S.health_host, S.health_port, err, sizeof(err))) < 0)) {
            fprintf(stderr, "luagent: %s\n", err);
            return 1;
        }
    }
    for (int i = 0; i < S.nworkers; i++) {
        if (lg_worker_start(&S.workers[i]) != 0) {
            fprintf(stderr, "luagent: cannot start worker %d\n", i);
            return 1;
        }
    }
    lg_buf_t b = {0};
    lg_log_begin(&b, LG_LOG_INFO, LG_STRLIT("listening"));
    char url[160];
    url_of(url, sizeof(url), S.ssl_ctx != NULL ? "https" : "http", cfg->listen_host, cfg->listen_port);
    lg_log_kv_cstr(&b, "url", url);
    if (S.health_host != NULL) {
        url_of(url, sizeof(url), "http", S.health_host, S.health_port);
        lg_log_kv_cstr(&b, "health_url", url);
    }
    lg_log_kv_int(&b, "workers", S.nworkers);
    lg_log_kv_int(&b, "agents", (int64_t)lg_registry_count(LG_SCRIPT_AGENT));
    lg_log_kv_cstr(&b, "agents_dir", cfg->agents_dir);
    lg_log_end(&b);
    lg_buf_free(&b);

    wait_for_signal(ifd);

    atomic_store(&S.draining, 1);
    for (int i = 0; i < S.nworkers; i++)
        lg_worker_wake(&S.workers[i]);
    for (int i = 0; i < S.nworkers; i++)
        pthread_join(S.workers[i].thread, NULL);
    if (S.migrator_started)
        pthread_join(S.migrator, NULL);
    for (int i = 0; i < S.nworkers; i++) {
        lg_worker_t *w = &S.workers[i];
        lg_jobs_dispose(w);
        free(w->auth_cache);
        lg_jwt_cache_free(w->jwt_cache);
        lg_recorder_free(w->rt.recorder); /* what is not written yet goes to the spill file */
        w->rt.recorder = NULL;
        lg_rt_dispose(&w->rt);
        lg_buf_free(&w->scratch);
        free(w->links_by_fd);
    }
    if (ifd >= 0)
        close(ifd);
    lg_registry_dispose();
    lg_history_free();
    lg_keys_shutdown();
    lg_jwt_keys_free(S.jwt_keys);
    free_retired();
    lg_static_free();
    lg_rate_free();
    lg_kv_free();
    lg_jobs_free();
    SSL_CTX_free(S.ssl_ctx);
    free(S.health_host);
    lg_log(LG_LOG_INFO, "stopped");
    return 0;
}

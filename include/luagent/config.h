/**
 * config.h - settings from the environment and an optional .env file (DESIGN §7).
 *
 * lg_config_load fills every field from its default, then from the .env file (if present), then
 * from the process environment (which wins). Every value is validated; the first bad one makes
 * lg_config_load return -1 with `err` naming the variable and what is wrong, e.g.
 * "LUAGENT_WORKERS: expected an integer from 1 to 256, got 'abc'". Strings are owned by the config
 * (freed by lg_config_free). Unset optional strings are NULL.
 */
#ifndef LUAGENT_CONFIG_H
#define LUAGENT_CONFIG_H

#include <stddef.h>
#include <stdio.h>

typedef enum { LG_AUTH_REQUIRED = 0, LG_AUTH_OFF } lg_auth_mode_t;
typedef enum { LG_LOG_DEBUG = 0, LG_LOG_INFO, LG_LOG_WARN, LG_LOG_ERROR } lg_log_level_t;
typedef enum { LG_LOG_JSON = 0, LG_LOG_TEXT } lg_log_format_t;

typedef struct lg_config {
    char *listen_host;      /* LUAGENT_LISTEN host part ("0.0.0.0") */
    int listen_port;        /* LUAGENT_LISTEN port part (8000) */
    int workers;            /* LUAGENT_WORKERS (default: online CPUs) */
    char *agents_dir;       /* LUAGENT_AGENTS_DIR ("agents") */
    char *providers_dir;    /* LUAGENT_PROVIDERS_DIR ("providers") */
    char *web_dir;          /* LUAGENT_WEB_DIR ("web"): the dashboard's static files, served at / */
    int exec_timeout_ms;    /* LUAGENT_EXEC_TIMEOUT_MS (60000) */
    size_t max_body_bytes;  /* LUAGENT_MAX_BODY_BYTES (1048576) */
    lg_log_level_t log_level;    /* LUAGENT_LOG_LEVEL (info) */
    lg_log_format_t log_format;  /* LUAGENT_LOG_FORMAT (json) */
    char *log_file;         /* LUAGENT_LOG_FILE */
    char *database_url;     /* DATABASE_URL (secret: contains a password) */
    char *redis_url;        /* REDIS_URL (secret) */
    char *openai_api_key, *openai_base_url;       /* OPENAI_* (key secret) */
    char *anthropic_api_key, *anthropic_base_url; /* ANTHROPIC_* */
    char *gemini_api_key, *gemini_base_url;       /* GEMINI_* (GOOGLE_API_KEY as fallback for the key) */
    char *default_model;    /* LUAGENT_DEFAULT_MODEL (NULL: derived at run time) */
    lg_auth_mode_t auth;    /* LUAGENT_AUTH: required | off */
    char *jwt_secret, *jwt_public_key, *jwt_issuer, *jwt_audience; /* LUAGENT_JWT_* */
    char *tls_cert, *tls_key;        /* LUAGENT_TLS_CERT / _KEY (paths) */
    char *secret_key;                /* LUAGENT_SECRET_KEY (secret) */
    char *api_keys_file;             /* LUAGENT_API_KEYS_FILE */
    int rate_limit;                  /* LUAGENT_RATE_LIMIT requests ... */
    int rate_limit_window_s;         /* ... per this many seconds (0 = no limit); "600/min" -> 600, 60 */
    int memory_limit_mb;             /* LUAGENT_MEMORY_LIMIT_MB (256) */
    int drain_timeout_ms;            /* LUAGENT_DRAIN_TIMEOUT_MS (30000) */
    char *health_listen;             /* LUAGENT_HEALTH_LISTEN (host:port) */
    char *spill_dir;                 /* LUAGENT_SPILL_DIR ("./data/spill") */
    char *callback_secret;           /* LUAGENT_CALLBACK_SECRET (secret) */
    int db_pool_size;                /* LUAGENT_DB_POOL_SIZE: Postgres connections per worker (4) */
    int record_queue;                /* LUAGENT_RECORD_QUEUE: records held in memory per worker while
                                        Postgres is away, before they go to the spill file (10000) */
    int history_size;                /* LUAGENT_HISTORY_SIZE: executions kept by the in-memory history (10000) */
    int session_ttl_s;               /* LUAGENT_SESSION_TTL_S: idle life of a ctx.session (86400) */
    int job_concurrency;             /* LUAGENT_JOB_CONCURRENCY: async executions per worker at once (16) */
    int job_claim_ms;                /* LUAGENT_JOB_CLAIM_MS: a job idle this long on a dead consumer is
                                        reclaimed by another (30000) */
    int watch;                       /* LUAGENT_WATCH: reload scripts when their files change (on); off:
                                        only SIGHUP reloads them */
    int drain_delay_ms;              /* LUAGENT_DRAIN_DELAY_MS: after SIGTERM, /ready answers 503 while
                                        the listeners still accept, this long, before draining (0) */
    unsigned generation;             /* not a variable: how many SIGHUP reloads made this one (0 at start) */
    int max_agent_depth;             /* LUAGENT_MAX_AGENT_DEPTH: how deep luagent.agents calls may nest (8) */
    int metrics;                     /* LUAGENT_METRICS: on (1, default) | off: no counting, /metrics is 404 */
    int tracing;                     /* LUAGENT_TRACING: on (1, default) | off: no W3C traceparent handling */
    unsigned long long env_set;      /* bit i: variable i of the table was set by the environment or .env */
} lg_config_t;

/** Load defaults, then `dotenv_path` (NULL: ".env" in the working directory; a missing file is
 *  fine, an unreadable or malformed one is an error), then the environment. 0 or -1 with `err`. */
int lg_config_load(lg_config_t *cfg, const char *dotenv_path, char *err, size_t errlen);
void lg_config_free(lg_config_t *cfg);

/** A rate like LUAGENT_RATE_LIMIT's ("600/min", "10/s", "1000/hour"): 0 with the count and the
 *  window in seconds, or -1. (API keys' own limits use it too.) */
int lg_config_parse_rate(const char *s, int *n, int *window);

/** May `name` be stored in the database's config table (a run-time setting)? *secret: it must be
 *  stored encrypted. */
int lg_config_storable(const char *name, int *secret);
/** Apply a stored value for `name` unless the environment or .env set it: 1 applied, 0 the
 *  environment wins, -1 a bad value (err names the variable, never quotes a secret). */
int lg_config_apply(lg_config_t *cfg, const char *name, const char *value, char *err, size_t errlen);

/** After a reload (SIGHUP): every setting only a restart can change (listen address, workers,
 *  directories, database and Redis URLs, TLS files, sizes fixed at start) keeps `old`'s value in
 *  `fresh`. The names of those that differ are written to `changed` (", "-separated). Returns how
 *  many differ, or -1 out of memory. */
int lg_config_keep_restart_only(lg_config_t *fresh, const lg_config_t *old, char *changed, size_t len);

/** Print every setting as `NAME=value` lines (one per variable, in the DESIGN §7 order), secrets
 *  shown as `***` when set and URLs with their password replaced by `***`. */
void lg_config_print(const lg_config_t *cfg, FILE *out);

#endif

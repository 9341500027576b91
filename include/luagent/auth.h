/**
 * auth.h - API keys and roles (DESIGN §5, "who may call what").
 *
 * Keys are "lg_" + 43 URL-safe characters (32 random bytes from RAND_bytes). Only their SHA-256 is
 * stored: in Postgres's api_keys table when DATABASE_URL is set, else in the file named by
 * LUAGENT_API_KEYS_FILE (one key per line: id, role, sha256, created, expires, name; tab-separated),
 * else in memory only. The key table is process-wide (any worker checks any key) behind a
 * read-write lock; a background thread reloads it every 2 s from Postgres or the file, so keys
 * created or revoked on another replica (or with `luagent keys`) take effect within that time;
 * with Postgres, last-use times are written back in the same pass.
 *
 * Roles are ordered: viewer < operator < admin. A key may also carry a rate limit and an expiry.
 */
#ifndef LUAGENT_AUTH_H
#define LUAGENT_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "luagent/buf.h"
#include "luagent/config.h"

typedef enum { LG_ROLE_NONE = 0, LG_ROLE_VIEWER, LG_ROLE_OPERATOR, LG_ROLE_ADMIN } lg_role_t;

#define LG_KEY_LEN 46 /* "lg_" + 43 */
#define LG_KEY_AGENTS_MAX 256 /* a key's agent allow-list, comma-separated */
#define LG_STR_(x) #x
#define LG_STR(x) LG_STR_(x)

typedef struct lg_principal {
    lg_role_t role;
    char id[40];    /* the key's id (a UUID), or a JWT's subject */
    char name[64];
    int rate_limit, rate_window_s; /* 0: none of its own */
    char agents[LG_KEY_AGENTS_MAX]; /* the agents it may run, comma-separated; "" for all */
} lg_principal_t;

const char *lg_role_name(lg_role_t r);
/** LG_ROLE_NONE when `s` names no role. */
lg_role_t lg_role_parse(const char *s, size_t len);

/** Load the key table (Postgres, the keys file, or nothing). With LUAGENT_AUTH=required and no key
 *  at all, create an admin key, print "admin API key: lg_..." once on stdout, and keep only its
 *  hash. Starts the reload thread when the keys live in Postgres. Blocking: main thread, before
 *  the workers. 0, or -1 with err. */
int lg_keys_init(const lg_config_t *cfg, char *err, size_t errlen);
/** Stop the reload thread and free the table. */
void lg_keys_shutdown(void);

/** The principal of `key` when it is a valid key (known, not revoked, not expired): 1, else 0.
 *  Thread-safe; its cost is one SHA-256 and a hash lookup (callers cache). */
int lg_keys_lookup(const char *key, size_t len, lg_principal_t *out);
/** Changes each time the table does (a revocation must reach callers' caches). */
uint64_t lg_keys_generation(void);

/** Make a key (CLI and admin route): its text (shown once) in key_out[LG_KEY_LEN + 1] and its id.
 *  rate_limit 0: none; expires_days 0: never. Stored where the table lives. 0, or -1 with err. */
int lg_keys_create(const lg_config_t *cfg, const char *name, lg_role_t role, int rate_limit, int rate_window_s,
                   int expires_days, const char *agents, char *key_out, char *id_out, char *err, size_t errlen);
/** Is `list` a valid allow-list ("" or agent names separated by commas)? */
int lg_keys_agents_valid(const char *list);
/** May this caller run `agent` (its key's allow-list)? */
int lg_principal_may_run(const lg_principal_t *p, const char *agent, size_t len);
/** The same for an allow-list on its own ("" allows every agent). */
int lg_agents_allowed(const char *list, const char *agent, size_t len);
/* The same in steps, for a worker (the admin routes), which must not block: make the key, write it
 * to Postgres itself (LG_KEYS_INSERT_SQL with lg_keys_insert_params, on its pool), then
 * lg_keys_keep (the file store's one-line append, and this process's table; frees nk). */
typedef struct lg_newkey lg_newkey_t;
extern const char LG_KEYS_INSERT_SQL[], LG_KEYS_REVOKE_SQL[];
lg_newkey_t *lg_keys_new(const char *name, lg_role_t role, int rate_limit, int rate_window_s, int expires_days,
                         const char *agents, char *key_out);
const char *lg_newkey_id(const lg_newkey_t *nk);
void lg_keys_insert_params(const lg_newkey_t *nk, const char *params[9]);
int lg_keys_keep(const lg_config_t *cfg, lg_newkey_t *nk, char *err, size_t errlen);
/** Mark `id` revoked in this process's table (after the store did): 1 when it was live here. */
int lg_keys_forget(const char *id);
/** 1 when keys live in Postgres. */
int lg_keys_in_db(const lg_config_t *cfg);

/** Revoke the key `id`: 1 revoked, 0 no such key, -1 error. Blocking (CLI, main thread). */
int lg_keys_revoke(const lg_config_t *cfg, const char *id, char *err, size_t errlen);
/** Append the keys as a JSON array (id, name, role, prefix, created_at, expires_at, last_used_at,
 *  rate_limit, revoked): never hashes. */
void lg_keys_list_json(lg_buf_t *out);

/* ---- rate limits (src/auth/ratelimit.c) ----
 * GCRA per key: `limit` requests per `window_s`, bursts up to `limit`. Process-wide (one budget for
 * all workers), behind a lock. */
typedef struct lg_rate {
    int allowed;
    int limit, remaining;
    unsigned reset_s;       /* until the budget is whole again */
    unsigned retry_after_s; /* when refused: until the next request is allowed (>= 1) */
} lg_rate_t;

void lg_rate_check(const char *id, int limit, int window_s, uint64_t now_ms, lg_rate_t *out);
void lg_rate_free(void);

#endif

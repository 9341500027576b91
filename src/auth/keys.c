/* API keys (auth.h): the process-wide key table and its three stores (Postgres, the keys file,
 * memory). Store operations are blocking: they run on the main thread, the CLI, or the reload
 * thread, never on a worker. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "luagent/auth.h"
#include "luagent/ids.h"
#include "luagent/log.h"
#include "luagent/pg.h"
#include "luagent/router.h"
#include "luagent/store.h"

#define RELOAD_MS 2000

typedef struct key {
    char hash[65], id[40], name[64], prefix[12];
    lg_role_t role;
    uint64_t created_ms, expires_ms; /* 0: never */
    _Atomic uint64_t last_used_ms;
    uint64_t last_used_saved_ms;
    int rate_limit, rate_window_s, revoked;
    char agents[LG_KEY_AGENTS_MAX]; /* comma-separated allow-list, "" for every agent */
} apikey_t;

enum { STORE_MEMORY, STORE_FILE, STORE_DB };

static struct {
    pthread_rwlock_t lock;
    apikey_t *v;
    size_t n;
    _Atomic uint64_t gen;
    int store;
    const lg_config_t *cfg;
    pthread_t reloader;
    int reloader_started;
    _Atomic int stop;
} K = {.lock = PTHREAD_RWLOCK_INITIALIZER};

static const char *const ROLE[] = {"none", "viewer", "operator", "admin"};

const char *lg_role_name(lg_role_t r) { return ROLE[r]; }

lg_role_t lg_role_parse(const char *s, size_t len)
{
    for (int i = 1; i < 4; i++)
        if (strlen(ROLE[i]) == len && memcmp(ROLE[i], s, len) == 0)
            return (lg_role_t)i;
    return LG_ROLE_NONE;
}

static int store_of(const lg_config_t *cfg)
{
    return cfg->database_url != NULL ? STORE_DB : cfg->api_keys_file != NULL ? STORE_FILE : STORE_MEMORY;
}

int lg_keys_in_db(const lg_config_t *cfg) { return store_of(cfg) == STORE_DB; }

/* ---- Postgres ---- */

static PGconn *db_connect(const lg_config_t *cfg, char *err, size_t errlen)
{
    return lg_pg_connect_blocking(cfg->database_url, "luagent keys", err, errlen);
}

static int db_exec(PGconn *c, const char *sql, int n, const char *const *params, PGresult **out, char *err,
                   size_t errlen)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        snprintf(err, errlen, "database: %s", m ? m : "query failed");
        PQclear(r);
        return -1;
    }
    if (out != NULL)
        *out = r;
    else
        PQclear(r);
    return 0;
}

static const char DB_LIST[] =
    "SELECT id::text, name, role, key_hash, prefix, (extract(epoch FROM created_at) * 1000)::bigint,"
    " coalesce((extract(epoch FROM expires_at) * 1000)::bigint, 0),"
    " coalesce((extract(epoch FROM last_used_at) * 1000)::bigint, 0), coalesce(rate_limit, 0),"
    " coalesce(rate_window_s, 0), revoked_at IS NOT NULL, coalesce(array_to_string(agents, ','), '')"
    " FROM api_keys ORDER BY created_at";

static int db_load(PGconn *c, apikey_t **v, size_t *n, char *err, size_t errlen)
{
    PGresult *r;
    if (db_exec(c, DB_LIST, 0, NULL, &r, err, errlen) != 0)
        return -1;
    *n = (size_t)PQntuples(r);
    *v = calloc(*n + 1, sizeof(apikey_t));
    for (size_t i = 0; i < *n; i++) {
        apikey_t *k = &(*v)[i];
        snprintf(k->id, sizeof(k->id), "%s", PQgetvalue(r, (int)i, 0));
        snprintf(k->name, sizeof(k->name), "%s", PQgetvalue(r, (int)i, 1));
        k->role = lg_role_parse(PQgetvalue(r, (int)i, 2), (size_t)PQgetlength(r, (int)i, 2));
        snprintf(k->hash, sizeof(k->hash), "%s", PQgetvalue(r, (int)i, 3));
        snprintf(k->prefix, sizeof(k->prefix), "%s", PQgetvalue(r, (int)i, 4));
        k->created_ms = strtoull(PQgetvalue(r, (int)i, 5), NULL, 10);
        k->expires_ms = strtoull(PQgetvalue(r, (int)i, 6), NULL, 10);
        k->last_used_saved_ms = strtoull(PQgetvalue(r, (int)i, 7), NULL, 10);
        atomic_init(&k->last_used_ms, k->last_used_saved_ms);
        k->rate_limit = atoi(PQgetvalue(r, (int)i, 8));
        k->rate_window_s = atoi(PQgetvalue(r, (int)i, 9));
        k->revoked = PQgetvalue(r, (int)i, 10)[0] == 't';
        snprintf(k->agents, sizeof(k->agents), "%s", PQgetvalue(r, (int)i, 11));
    }
    PQclear(r);
    return 0;
}

/* ---- the keys file ---- */

static int file_load(const char *path, apikey_t **v, size_t *n, char *err, size_t errlen)
{
    *v = NULL;
    *n = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "LUAGENT_API_KEYS_FILE: cannot read '%s': %s", path, strerror(errno));
        return -1;
    }
    char line[512];
    size_t cap = 0, lineno = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (*n == cap)
            *v = realloc(*v, (cap = cap ? cap * 2 : 16) * sizeof(apikey_t));
        apikey_t *k = &(*v)[*n];
        memset(k, 0, sizeof(*k));
        char role[16] = "", *name = NULL;
        unsigned long long created = 0, expires = 0;
        int revoked = 0, fields = sscanf(line, "%39s %15s %64s %llu %llu %d %d %d %" LG_STR(LG_KEY_AGENTS_MAX) "s",
                                         k->id, role, k->hash, &created, &expires, &k->rate_limit, &k->rate_window_s,
                                         &revoked, k->agents);
        if (fields < 9 || strlen(k->hash) != 64 || (k->role = lg_role_parse(role, strlen(role))) == LG_ROLE_NONE) {
            snprintf(err, errlen, "LUAGENT_API_KEYS_FILE: line %zu of '%s' is not a key line", lineno, path);
            fclose(f);
            free(*v);
            *v = NULL;
            return -1;
        }
        if (strcmp(k->agents, "*") == 0)
            k->agents[0] = '\0';
        for (int tabs = 0, i = 0; line[i] != '\0'; i++) /* the name: the rest after the 9th field */
            if ((line[i] == '\t' || line[i] == ' ') && ++tabs == 9) {
                name = line + i + 1;
                break;
            }
        snprintf(k->name, sizeof(k->name), "%s", name ? name : "");
        k->name[strcspn(k->name, "\r\n")] = '\0';
        snprintf(k->prefix, sizeof(k->prefix), "lg_%.6s", k->hash); /* the file has no key text */
        k->created_ms = created;
        k->expires_ms = expires;
        k->revoked = revoked;
        (*n)++;
    }
    fclose(f);
    return 0;
}

static void file_line(char *out, size_t cap, const apikey_t *k)
{
    snprintf(out, cap, "%s\t%s\t%s\t%llu\t%llu\t%d\t%d\t%d\t%s\t%s\n", k->id, ROLE[k->role], k->hash,
             (unsigned long long)k->created_ms, (unsigned long long)k->expires_ms, k->rate_limit, k->rate_window_s,
             k->revoked, k->agents[0] ? k->agents : "*", k->name);
}

/* Rewrite the whole file (a revocation): temp file + rename, so a crash leaves the old or the new. */
static int file_save(const char *path, const apikey_t *v, size_t n, char *err, size_t errlen)
{
    char tmp[600], line[512];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        snprintf(err, errlen, "LUAGENT_API_KEYS_FILE: cannot write '%s': %s", path, strerror(errno));
        return -1;
    }
    fputs("# luagent API keys: id role sha256 created_ms expires_ms rate_limit rate_window_s revoked agents name\n", f);
    for (size_t i = 0; i < n; i++) {
        file_line(line, sizeof(line), &v[i]);
        fputs(line, f);
    }
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    fclose(f);
    if (bad || rename(tmp, path) != 0) {
        snprintf(err, errlen, "LUAGENT_API_KEYS_FILE: cannot write '%s': %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---- the table ---- */

static void table_set(apikey_t *v, size_t n)
{
    pthread_rwlock_wrlock(&K.lock);
    for (size_t i = 0; i < n && K.v != NULL; i++) /* keep the last-use times not saved yet */
        for (size_t j = 0; j < K.n; j++)
            if (strcmp(v[i].id, K.v[j].id) == 0) {
                uint64_t a = atomic_load(&K.v[j].last_used_ms);
                if (a > atomic_load(&v[i].last_used_ms))
                    atomic_store(&v[i].last_used_ms, a);
                break;
            }
    free(K.v);
    K.v = v;
    K.n = n;
    atomic_fetch_add(&K.gen, 1);
    pthread_rwlock_unlock(&K.lock);
}

uint64_t lg_keys_generation(void) { return atomic_load(&K.gen); }

int lg_keys_lookup(const char *key, size_t len, lg_principal_t *out)
{
    if (len != LG_KEY_LEN || memcmp(key, "lg_", 3) != 0)
        return 0;
    char hash[65];
    lg_sha256_hex(key, len, hash);
    int found = 0;
    uint64_t now = lg_now_epoch_ms();
    pthread_rwlock_rdlock(&K.lock);
    for (size_t i = 0; i < K.n; i++) {
        apikey_t *k = &K.v[i];
        if (CRYPTO_memcmp(k->hash, hash, 64) != 0)
            continue;
        if (!k->revoked && (k->expires_ms == 0 || now < k->expires_ms)) {
            out->role = k->role;
            snprintf(out->id, sizeof(out->id), "%s", k->id);
            snprintf(out->name, sizeof(out->name), "%s", k->name);
            out->rate_limit = k->rate_limit;
            out->rate_window_s = k->rate_window_s;
            memcpy(out->agents, k->agents, sizeof(out->agents));
            atomic_store(&k->last_used_ms, now);
            found = 1;
        }
        break;
    }
    pthread_rwlock_unlock(&K.lock);
    return found;
}

static void iso_or_null(lg_buf_t *b, uint64_t ms)
{
    if (ms == 0)
        lg_buf_lit(b, "null");
    else
        lg_buf_iso8601(b, ms);
}

void lg_keys_list_json(lg_buf_t *out)
{
    lg_buf_putc(out, '[');
    pthread_rwlock_rdlock(&K.lock);
    for (size_t i = 0; i < K.n; i++) {
        apikey_t *k = &K.v[i];
        if (i > 0)
            lg_buf_putc(out, ',');
        lg_buf_printf(out, "{\"id\":\"%s\",\"name\":", k->id);
        lg_buf_json_str(out, k->name, strlen(k->name));
        lg_buf_printf(out, ",\"role\":\"%s\",\"prefix\":\"%s\",\"created_at\":", ROLE[k->role], k->prefix);
        iso_or_null(out, k->created_ms);
        lg_buf_lit(out, ",\"expires_at\":");
        iso_or_null(out, k->expires_ms);
        lg_buf_lit(out, ",\"last_used_at\":");
        iso_or_null(out, atomic_load(&k->last_used_ms));
        lg_buf_printf(out, ",\"rate_limit\":%d,\"rate_window_s\":%d,\"revoked\":%s,\"agents\":", k->rate_limit,
                      k->rate_window_s, k->revoked ? "true" : "false");
        if (k->agents[0] == '\0') {
            lg_buf_lit(out, "null}");
        } else { /* names are [A-Za-z0-9_.-]: no escaping */
            lg_buf_lit(out, "[\"");
            for (const char *a = k->agents; *a; a++)
                if (*a == ',')
                    lg_buf_lit(out, "\",\"");
                else
                    lg_buf_putc(out, *a);
            lg_buf_lit(out, "\"]}");
        }
    }
    pthread_rwlock_unlock(&K.lock);
    lg_buf_putc(out, ']');
}

/* ---- create / revoke ---- */

static void new_key(char *key_out, char *hash)
{
    static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char raw[33];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        abort(); /* no randomness: never make a guessable key */
    memcpy(key_out, "lg_", 3);
    for (int i = 0; i < 43; i++) { /* 43 characters of 6 bits each from the 33 random bytes */
        int bit = i * 6, byte = bit / 8, off = bit % 8;
        unsigned v = ((unsigned)raw[byte] << 8 | raw[byte + 1]) >> (10 - off);
        key_out[3 + i] = b64url[v & 63];
    }
    key_out[LG_KEY_LEN] = '\0';
    lg_sha256_hex(key_out, LG_KEY_LEN, hash);
}

const char LG_KEYS_INSERT_SQL[] =
    "INSERT INTO api_keys (id, name, key_hash, prefix, role, rate_limit, rate_window_s, expires_at"
    " , agents) VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8::bigint / 1000.0),"
    " string_to_array(nullif($9, ''), ','))";
const char LG_KEYS_REVOKE_SQL[] = "UPDATE api_keys SET revoked_at = now() WHERE id = $1::uuid AND revoked_at IS NULL";

struct lg_newkey {
    apikey_t k;
    char rl[16], rw[16], exp[24];
};

lg_newkey_t *lg_keys_new(const char *name, lg_role_t role, int rate_limit, int rate_window_s, int expires_days,
                         const char *agents, char *key_out)
{
    lg_newkey_t *nk = calloc(1, sizeof(*nk));
    apikey_t *k = &nk->k;
    snprintf(k->agents, sizeof(k->agents), "%s", agents ? agents : "");
    k->role = role, k->rate_limit = rate_limit, k->rate_window_s = rate_window_s;
    new_key(key_out, k->hash);
    lg_uuid4(k->id);
    snprintf(k->name, sizeof(k->name), "%s", name);
    for (char *p = k->name; *p; p++)
        if (*p == '\t' || *p == '\n' || *p == '\r')
            *p = ' ';
    snprintf(k->prefix, sizeof(k->prefix), "%.9s", key_out);
    k->created_ms = lg_now_epoch_ms();
    k->expires_ms = expires_days > 0 ? k->created_ms + (uint64_t)expires_days * 86400000ull : 0;
    snprintf(nk->rl, sizeof(nk->rl), "%d", rate_limit);
    snprintf(nk->rw, sizeof(nk->rw), "%d", rate_window_s);
    snprintf(nk->exp, sizeof(nk->exp), "%llu", (unsigned long long)k->expires_ms);
    return nk;
}

int lg_keys_agents_valid(const char *list)
{
    if (list == NULL || *list == '\0')
        return 1;
    if (strlen(list) >= LG_KEY_AGENTS_MAX)
        return 0;
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        if (!lg_agent_name_valid(p, n))
            return 0;
        p += n + (p[n] == ',');
    }
    return 1;
}

int lg_principal_may_run(const lg_principal_t *p, const char *agent, size_t len)
{
    return lg_agents_allowed(p->agents, agent, len);
}

int lg_agents_allowed(const char *list, const char *agent, size_t len)
{
    if (list[0] == '\0')
        return 1;
    for (const char *a = list; *a;) {
        size_t n = strcspn(a, ",");
        if (n == len && memcmp(a, agent, len) == 0)
            return 1;
        a += n + (a[n] == ',');
    }
    return 0;
}

const char *lg_newkey_id(const lg_newkey_t *nk) { return nk->k.id; }

void lg_keys_insert_params(const lg_newkey_t *nk, const char *p[9])
{
    const apikey_t *k = &nk->k;
    p[0] = k->id, p[1] = k->name, p[2] = k->hash, p[3] = k->prefix, p[4] = ROLE[k->role];
    p[5] = k->rate_limit ? nk->rl : NULL, p[6] = k->rate_limit ? nk->rw : NULL, p[7] = k->expires_ms ? nk->exp : NULL;
    p[8] = k->agents;
}

int lg_keys_keep(const lg_config_t *cfg, lg_newkey_t *nk, char *err, size_t errlen)
{
    int rc = 0;
    if (store_of(cfg) == STORE_FILE) {
        char line[512];
        file_line(line, sizeof(line), &nk->k);
        int fd = open(cfg->api_keys_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line) || fsync(fd) != 0) {
            snprintf(err, errlen, "LUAGENT_API_KEYS_FILE: cannot write '%s': %s", cfg->api_keys_file, strerror(errno));
            rc = -1;
        }
        if (fd >= 0)
            close(fd);
    }
    if (rc == 0) { /* into this process's table too */
        pthread_rwlock_wrlock(&K.lock);
        K.v = realloc(K.v, (K.n + 1) * sizeof(apikey_t));
        memcpy(&K.v[K.n++], &nk->k, sizeof(nk->k));
        atomic_fetch_add(&K.gen, 1);
        pthread_rwlock_unlock(&K.lock);
    }
    free(nk);
    return rc;
}

int lg_keys_forget(const char *id)
{
    int found = 0;
    pthread_rwlock_wrlock(&K.lock);
    for (size_t i = 0; i < K.n; i++)
        if (strcmp(K.v[i].id, id) == 0 && !K.v[i].revoked)
            K.v[i].revoked = found = 1;
    atomic_fetch_add(&K.gen, 1);
    pthread_rwlock_unlock(&K.lock);
    return found;
}

int lg_keys_create(const lg_config_t *cfg, const char *name, lg_role_t role, int rate_limit, int rate_window_s,
                   int expires_days, const char *agents, char *key_out, char *id_out, char *err, size_t errlen)
{
    lg_newkey_t *nk = lg_keys_new(name, role, rate_limit, rate_window_s, expires_days, agents, key_out);
    memcpy(id_out, nk->k.id, sizeof(nk->k.id));
    if (store_of(cfg) == STORE_DB) {
        PGconn *c = db_connect(cfg, err, errlen);
        const char *p[9];
        lg_keys_insert_params(nk, p);
        int rc = c == NULL ? -1 : db_exec(c, LG_KEYS_INSERT_SQL, 9, p, NULL, err, errlen);
        PQfinish(c);
        if (rc != 0) {
            free(nk);
            return -1;
        }
    }
    return lg_keys_keep(cfg, nk, err, errlen);
}

int lg_keys_revoke(const lg_config_t *cfg, const char *id, char *err, size_t errlen)
{
    int store = store_of(cfg), found = 0, rc = 0;
    if (store == STORE_DB) {
        PGconn *c = db_connect(cfg, err, errlen);
        if (c == NULL)
            return -1;
        PGresult *r;
        const char *p[] = {id};
        if (strlen(id) == LG_UUID_LEN &&
            (rc = db_exec(c, LG_KEYS_REVOKE_SQL, 1, p, &r, err, errlen)) == 0) {
            found = atoi(PQcmdTuples(r)) > 0;
            PQclear(r);
        }
        PQfinish(c);
    } else if (store == STORE_FILE) { /* the file is the truth (the CLI has no table of its own) */
        apikey_t *v;
        size_t n;
        if ((rc = file_load(cfg->api_keys_file, &v, &n, err, errlen)) == 0) {
            for (size_t i = 0; i < n; i++)
                if (strcmp(v[i].id, id) == 0 && !v[i].revoked)
                    v[i].revoked = found = 1;
            if (found)
                rc = file_save(cfg->api_keys_file, v, n, err, errlen);
            free(v);
        }
    }
    found |= lg_keys_forget(id); /* this process's table, at once */
    return rc != 0 ? -1 : found;
}

/* ---- loading, bootstrap, the reload thread ---- */

static int load(const lg_config_t *cfg, apikey_t **v, size_t *n, char *err, size_t errlen)
{
    *v = NULL;
    *n = 0;
    int store = store_of(cfg);
    if (store == STORE_FILE)
        return file_load(cfg->api_keys_file, v, n, err, errlen);
    if (store == STORE_DB) {
        PGconn *c = db_connect(cfg, err, errlen);
        if (c == NULL)
            return -1;
        int rc = db_load(c, v, n, err, errlen);
        if (rc == 0) { /* last-use times of this process, written back every pass */
            pthread_rwlock_rdlock(&K.lock);
            for (size_t i = 0; i < K.n; i++) {
                uint64_t used = atomic_load(&K.v[i].last_used_ms);
                if (used > K.v[i].last_used_saved_ms) {
                    char ms[24];
                    snprintf(ms, sizeof(ms), "%llu", (unsigned long long)used);
                    const char *p[] = {K.v[i].id, ms};
                    char e2[128];
                    db_exec(c, "UPDATE api_keys SET last_used_at = to_timestamp($2::bigint / 1000.0) WHERE id = $1::uuid",
                            2, p, NULL, e2, sizeof(e2));
                }
            }
            pthread_rwlock_unlock(&K.lock);
        }
        PQfinish(c);
        return rc;
    }
    return 0;
}

static void *reload_main(void *arg)
{
    const lg_config_t *cfg = arg;
    int failing = 0;
    while (!atomic_load(&K.stop)) {
        for (int i = 0; i < RELOAD_MS / 100 && !atomic_load(&K.stop); i++)
            usleep(100000);
        apikey_t *v;
        size_t n;
        char err[256];
        if (load(cfg, &v, &n, err, sizeof(err)) == 0) {
            if (failing)
                lg_log(LG_LOG_INFO, "API keys reloaded from the database again");
            failing = 0;
            table_set(v, n);
        } else if (!failing++) {
            lg_log(LG_LOG_WARN, "API keys cannot be reloaded (%s): the last known keys stay in force", err);
        }
    }
    return NULL;
}

/* The first admin key, made when there is no live key at all. With Postgres, replicas starting
 * together must not each make one: the check and the insert run in one transaction behind an
 * advisory lock (the INSERT's own snapshot would not see a key another replica committed while it
 * waited). 1: made (key/id filled), 0: another server made one meanwhile, -1: err. */
static int first_admin(const lg_config_t *cfg, char *key, char *id, char *err, size_t errlen)
{
    if (store_of(cfg) != STORE_DB)
        return lg_keys_create(cfg, "admin (first start)", LG_ROLE_ADMIN, 0, 0, 0, NULL, key, id, err, errlen) == 0 ? 1 : -1;
    static const char sql[] =
        "INSERT INTO api_keys (id, name, key_hash, prefix, role, rate_limit, rate_window_s, expires_at, agents)"
        " SELECT $1::uuid, $2, $3, $4, $5, $6::int, $7::int, to_timestamp($8::bigint / 1000.0),"
        " string_to_array(nullif($9, ''), ',') WHERE NOT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)";
    lg_newkey_t *nk = lg_keys_new("admin (first start)", LG_ROLE_ADMIN, 0, 0, 0, NULL, key);
    memcpy(id, nk->k.id, sizeof(nk->k.id));
    const char *p[9];
    lg_keys_insert_params(nk, p);
    PGresult *r = NULL;
    PGconn *c = db_connect(cfg, err, errlen);
    int rc = c == NULL ? -1 : db_exec(c, "BEGIN", 0, NULL, NULL, err, errlen), made = 0;
    if (rc == 0)
        rc = db_exec(c, "SELECT pg_advisory_xact_lock(7431277301)", 0, NULL, NULL, err, errlen);
    if (rc == 0 && (rc = db_exec(c, sql, 9, p, &r, err, errlen)) == 0) {
        made = atoi(PQcmdTuples(r)) > 0;
        PQclear(r);
        rc = db_exec(c, "COMMIT", 0, NULL, NULL, err, errlen);
    }
    PQfinish(c);
    if (rc != 0 || !made) {
        free(nk);
        apikey_t *v;
        size_t n;
        if (rc == 0 && load(cfg, &v, &n, err, errlen) == 0) /* the key the other server made */
            table_set(v, n);
        return rc == 0 ? 0 : -1;
    }
    return lg_keys_keep(cfg, nk, err, errlen) == 0 ? 1 : -1;
}

int lg_keys_init(const lg_config_t *cfg, char *err, size_t errlen)
{
    K.cfg = cfg;
    K.store = store_of(cfg);
    apikey_t *v;
    size_t n;
    int loaded = load(cfg, &v, &n, err, errlen) == 0;
    if (!loaded && K.store != STORE_DB)
        return -1;
    if (loaded)
        table_set(v, n);
    else
        lg_log(LG_LOG_WARN, "API keys not loaded yet (%s): retried every %d ms", err, RELOAD_MS);
    size_t live = 0;
    for (size_t i = 0; loaded && i < K.n; i++)
        live += !K.v[i].revoked;
    if (cfg->auth == LG_AUTH_REQUIRED && loaded && live == 0) {
        char key[LG_KEY_LEN + 1], id[40];
        int made = first_admin(cfg, key, id, err, errlen);
        if (made < 0)
            return -1;
        if (made == 0) {
            lg_log(LG_LOG_INFO, "no API keys at start, but another server made the first admin key meanwhile");
        } else {
            printf("admin API key: %s\n", key);
            fflush(stdout);
            lg_log(LG_LOG_WARN, "no API keys: created an admin key (id %s), printed once on stdout%s", id,
                   K.store == STORE_MEMORY
                       ? "; it lives in memory only: set DATABASE_URL or LUAGENT_API_KEYS_FILE to keep keys"
                       : "");
        }
    }
    if (K.store != STORE_MEMORY) /* keys made or revoked elsewhere (the CLI, other replicas) */
        K.reloader_started = pthread_create(&K.reloader, NULL, reload_main, (void *)cfg) == 0;
    return 0;
}

void lg_keys_shutdown(void)
{
    atomic_store(&K.stop, 1);
    if (K.reloader_started)
        pthread_join(K.reloader, NULL);
    K.reloader_started = 0;
    pthread_rwlock_wrlock(&K.lock);
    free(K.v);
    K.v = NULL;
    K.n = 0;
    pthread_rwlock_unlock(&K.lock);
}

#include "luagent/registry.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "luagent/ids.h"
#include "luagent/json.h"
#include "luagent/log.h"
#include "luagent/vm.h"

#define MAX_SOURCE_BYTES (4u << 20)
#define MAX_DEPTH 8

typedef struct reg {
    pthread_mutex_t mu;
    lg_agent_entry_t **v;
    size_t n, cap;
    _Atomic uint64_t gen;
    char *dir;
    lg_script_kind_t kind;
} reg_t;

static reg_t regs[LG_SCRIPT_KINDS] = {{.mu = PTHREAD_MUTEX_INITIALIZER, .kind = LG_SCRIPT_AGENT},
                                       {.mu = PTHREAD_MUTEX_INITIALIZER, .kind = LG_SCRIPT_PROVIDER}};
static lg_vm_t validator; /* the main thread's VM: every file is validated here once */
static int validator_open;
static size_t mem_limit;

static const char *const kind_names[] = {"agent", "provider"};
static const char *const msg_loaded[] = {"agent loaded", "provider loaded"};
static const char *const msg_failed[] = {"agent failed to load", "provider failed to load"};

int lg_registry_init(lg_script_kind_t kind, const char *dir, size_t limit)
{
    reg_t *r = &regs[kind];
    free(r->dir);
    r->dir = strdup(dir);
    mem_limit = limit;
    if (!validator_open) {
        if (lg_vm_open(&validator, NULL) != 0)
            return -1;
        validator_open = 1;
    }
    return 0;
}

static void entry_free(lg_agent_entry_t *e)
{
    free(e->name);
    free(e->relpath);
    free(e->source);
    free(e->description);
    free(e->input_json);
    free(e->error);
    free(e);
}

void lg_registry_dispose(void)
{
    for (int k = 0; k < LG_SCRIPT_KINDS; k++) {
        reg_t *r = &regs[k];
        pthread_mutex_lock(&r->mu);
        for (size_t i = 0; i < r->n; i++)
            entry_free(r->v[i]);
        free(r->v);
        r->v = NULL;
        r->n = r->cap = 0;
        free(r->dir);
        r->dir = NULL;
        pthread_mutex_unlock(&r->mu);
    }
    if (validator_open)
        lg_vm_close(&validator);
    validator_open = 0;
}

uint64_t lg_registry_gen(lg_script_kind_t kind) { return atomic_load_explicit(&regs[kind].gen, memory_order_acquire); }

static lg_agent_entry_t *find(reg_t *R, const char *name, size_t len)
{
    for (size_t i = 0; i < R->n; i++)
        if (strlen(R->v[i]->name) == len && memcmp(R->v[i]->name, name, len) == 0)
            return R->v[i];
    return NULL;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp((*(lg_agent_entry_t *const *)a)->name, (*(lg_agent_entry_t *const *)b)->name);
}

static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size > MAX_SOURCE_BYTES) {
        snprintf(err, errlen, "file is larger than %u bytes", MAX_SOURCE_BYTES);
        close(fd);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    ssize_t r;
    while (buf != NULL && got < (size_t)st.st_size && (r = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
        got += (size_t)r;
    close(fd);
    if (buf != NULL)
        buf[got] = '\0';
    *len = got;
    return buf;
}

/* "team/review.lua" -> "team.review"; NULL if a segment has other than [A-Za-z0-9_-] */
static char *agent_name(const char *relpath)
{
    size_t n = strlen(relpath) - 4;
    char *name = strndup(relpath, n);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (c == '/')
            name[i] = '.';
        else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
            free(name);
            return NULL;
        }
    }
    return name;
}

static void set_str(char **slot, char *value)
{
    free(*slot);
    *slot = value;
}

static int examine(reg_t *R, const char *relpath, const char *path)
{
    char err[1024];
    char *name = agent_name(relpath);
    if (name == NULL || *name == '\0' || strstr(name, "..") != NULL) {
        free(name);
        return 0;
    }
    size_t len = 0;
    char *src = read_file(path, &len, err, sizeof(err));
    char hash[65] = "";
    if (src != NULL)
        lg_sha256_hex(src, len, hash);

    pthread_mutex_lock(&R->mu);
    lg_agent_entry_t *e = find(R, name, strlen(name));
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        e->name = name;
        e->relpath = strdup(relpath);
        if (R->n == R->cap) {
            R->cap = R->cap ? R->cap * 2 : 16;
            R->v = realloc(R->v, R->cap * sizeof(*R->v));
        }
        R->v[R->n++] = e;
        name = NULL;
    }
    e->mark = 1;
    int unchanged = src != NULL && strcmp(e->seen_hash, hash) == 0;
    pthread_mutex_unlock(&R->mu);
    free(name);
    if (unchanged) {
        free(src);
        return 0;
    }

    char chunkname[512];
    snprintf(chunkname, sizeof(chunkname), "=%s", relpath);
    lua_State *L = validator.L;
    char *description = NULL, *input_json = NULL;
    int timeout_ms = 0, ok = 0;
    if (src != NULL &&
        lg_vm_load_script(&validator, R->kind, chunkname, src, len, mem_limit, err, sizeof(err), NULL) == 0) {
        ok = 1;
        lua_getfield(L, -1, "description");
        if (lua_isstring(L, -1))
            description = strdup(lua_tostring(L, -1));
        lua_getfield(L, -2, "timeout_ms");
        timeout_ms = (int)lua_tonumber(L, -1);
        lua_getfield(L, -3, "input");
        if (lua_istable(L, -1)) {
            lg_buf_t b = {0};
            lg_json_error_t jerr;
            if (lg_json_encode(L, -1, &b, LG_JSON_DEFAULT_MAX_DEPTH, &jerr) == LG_JSON_OK) {
                input_json = strndup(b.data, b.len);
            } else {
                snprintf(err, sizeof(err), "%s: field 'input' is not a JSON schema: %s", relpath, jerr.msg);
                ok = 0;
            }
            lg_buf_free(&b);
        }
        lua_pop(L, 4);
        lua_gc(L, LUA_GCCOLLECT, 0);
    }

    pthread_mutex_lock(&R->mu);
    set_str(&e->relpath, strdup(relpath));
    memcpy(e->seen_hash, hash, sizeof(hash));
    if (ok) {
        set_str(&e->source, src);
        e->source_len = len;
        memcpy(e->version, hash, 16);
        e->version[16] = '\0';
        set_str(&e->description, description);
        set_str(&e->input_json, input_json);
        e->timeout_ms = timeout_ms;
        set_str(&e->error, NULL);
        e->updated_at_ms = lg_now_epoch_ms();
        e->gen = atomic_fetch_add(&R->gen, 1) + 1;
    } else {
        free(src);
        free(description);
        free(input_json);
        set_str(&e->error, strdup(err));
    }
    char version[17];
    memcpy(version, e->version, sizeof(version));
    pthread_mutex_unlock(&R->mu);

    lg_buf_t b = {0};
    if (ok) {
        lg_log_begin(&b, LG_LOG_INFO, msg_loaded[R->kind], strlen(msg_loaded[R->kind]));
        lg_log_kv_cstr(&b, kind_names[R->kind], e->name);
        lg_log_kv_cstr(&b, "version", version);
    } else {
        lg_log_begin(&b, LG_LOG_ERROR, msg_failed[R->kind], strlen(msg_failed[R->kind]));
        lg_log_kv_cstr(&b, kind_names[R->kind], e->name);
        lg_log_kv_cstr(&b, "error", err);
        if (*version)
            lg_log_kv_cstr(&b, "serving_version", version);
    }
    lg_log_end(&b);
    lg_buf_free(&b);
    return ok;
}

static int walk(reg_t *R, const char *dir, const char *rel, int depth)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    int changed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (n[0] == '.' || n[0] == '#')
            continue; /* hidden files, editors' swap and lock files */
        char path[4096], relpath[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, n);
        snprintf(relpath, sizeof(relpath), "%s%s%s", rel, *rel ? "/" : "", n);
        struct stat st;
        if (stat(path, &st) != 0)
            continue;
        size_t nl = strlen(n);
        if (S_ISDIR(st.st_mode) && depth < MAX_DEPTH)
            changed += walk(R, path, relpath, depth + 1);
        else if (S_ISREG(st.st_mode) && nl > 4 && strcmp(n + nl - 4, ".lua") == 0)
            changed += examine(R, relpath, path);
    }
    closedir(d);
    return changed;
}

int lg_registry_scan(lg_script_kind_t kind)
{
    reg_t *R = &regs[kind];
    if (R->dir == NULL)
        return 0;
    pthread_mutex_lock(&R->mu);
    for (size_t i = 0; i < R->n; i++)
        R->v[i]->mark = 0;
    pthread_mutex_unlock(&R->mu);
    int changed = walk(R, R->dir, "", 0);
    pthread_mutex_lock(&R->mu);
    size_t j = 0;
    for (size_t i = 0; i < R->n; i++) {
        lg_agent_entry_t *e = R->v[i];
        if (e->mark) {
            R->v[j++] = e;
            continue;
        }
        lg_log(LG_LOG_INFO, "%s removed: %s", kind_names[R->kind], e->name);
        entry_free(e);
        atomic_fetch_add(&R->gen, 1);
        changed++;
    }
    R->n = j;
    if (R->n > 1)
        qsort(R->v, R->n, sizeof(*R->v), cmp_entry);
    pthread_mutex_unlock(&R->mu);
    return changed;
}

size_t lg_registry_error_count(lg_script_kind_t kind)
{
    reg_t *R = &regs[kind];
    size_t n = 0;
    pthread_mutex_lock(&R->mu);
    for (size_t i = 0; i < R->n; i++)
        n += R->v[i]->error != NULL;
    pthread_mutex_unlock(&R->mu);
    return n;
}

size_t lg_registry_count(lg_script_kind_t kind)
{
    reg_t *R = &regs[kind];
    pthread_mutex_lock(&R->mu);
    size_t n = R->n;
    pthread_mutex_unlock(&R->mu);
    return n;
}

void lg_registry_each(lg_script_kind_t kind, void (*fn)(void *ud, const lg_agent_entry_t *e), void *ud)
{
    reg_t *R = &regs[kind];
    pthread_mutex_lock(&R->mu);
    for (size_t i = 0; i < R->n; i++)
        fn(ud, R->v[i]);
    pthread_mutex_unlock(&R->mu);
}

static void entry_json(lg_buf_t *out, const lg_agent_entry_t *e)
{
    lg_buf_lit(out, "{\"name\":");
    lg_buf_json_str(out, e->name, strlen(e->name));
    lg_buf_lit(out, ",\"version\":");
    if (e->source != NULL)
        lg_buf_json_str(out, e->version, strlen(e->version));
    else
        lg_buf_lit(out, "null");
    lg_buf_lit(out, ",\"description\":");
    if (e->description != NULL)
        lg_buf_json_str(out, e->description, strlen(e->description));
    else
        lg_buf_lit(out, "null");
    lg_buf_lit(out, ",\"input\":");
    if (e->input_json != NULL)
        lg_buf_append(out, e->input_json, strlen(e->input_json));
    else
        lg_buf_lit(out, "null");
    lg_buf_printf(out, ",\"timeout_ms\":%d,\"file\":", e->timeout_ms);
    lg_buf_json_str(out, e->relpath, strlen(e->relpath));
    lg_buf_printf(out, ",\"loaded\":%s,\"updated_at_ms\":%llu,\"error\":", e->source != NULL ? "true" : "false",
                  (unsigned long long)e->updated_at_ms);
    if (e->error != NULL)
        lg_buf_json_str(out, e->error, strlen(e->error));
    else
        lg_buf_lit(out, "null");
    lg_buf_putc(out, '}');
}

void lg_registry_json_all(lg_script_kind_t kind, lg_buf_t *out)
{
    reg_t *R = &regs[kind];
    lg_buf_lit(out, "{\"items\":[");
    pthread_mutex_lock(&R->mu);
    for (size_t i = 0; i < R->n; i++) {
        if (i)
            lg_buf_putc(out, ',');
        entry_json(out, R->v[i]);
    }
    pthread_mutex_unlock(&R->mu);
    lg_buf_lit(out, "]}");
}

int lg_registry_json_one(lg_script_kind_t kind, lg_buf_t *out, const char *name, size_t len)
{
    reg_t *R = &regs[kind];
    pthread_mutex_lock(&R->mu);
    lg_agent_entry_t *e = find(R, name, len);
    if (e != NULL)
        entry_json(out, e);
    pthread_mutex_unlock(&R->mu);
    return e != NULL ? 0 : -1;
}

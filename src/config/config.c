/**
 * config.c - settings from the environment and an optional .env file (DESIGN §7).
 *
 * Order: defaults, then the .env file, then the environment (which wins). The .env file is read into
 * a local table and never exported with setenv (other threads may read the environment). A variable
 * that is set but empty counts as unset: optional strings stay NULL, everything else keeps its
 * default. A variable set in the environment wins even when empty (so `NAME=` in the environment
 * clears a .env entry).
 *
 * Self-contained: depends only on libc (it is linked into unit tests on its own).
 */
#include "luagent/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define DOTENV_MAX_BYTES (16u * 1024u * 1024u)
#define ERR_VALUE_MAX 200 /* longest value echoed in an error message */

/* ------------------------------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const char *errno_str(int e, char *buf, size_t n)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(e, buf, n);
#else
    if (strerror_r(e, buf, n) != 0)
        snprintf(buf, n, "error %d", e);
    return buf;
#endif
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static int is_hspace(char c) { return c == ' ' || c == '\t'; }

/** Growable string (local: this module links on its own). `ok` turns 0 after an allocation failure. */
typedef struct {
    char *p;
    size_t len, cap;
    int ok;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, size_t n)
{
    if (!b->ok)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->ok = 0;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_addc(sbuf_t *b, char c) { sb_add(b, &c, 1); }
static void sb_adds(sbuf_t *b, const char *s) { sb_add(b, s, strlen(s)); }

/* ------------------------------------------------------------------------------------------------
 * .env table
 * ---------------------------------------------------------------------------------------------- */

typedef struct {
    char *key;
    char *val;
} kv_t;

typedef struct {
    kv_t *v;
    size_t n, cap;
} dotenv_t;

static void dotenv_free(dotenv_t *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->v[i].key);
        if (d->v[i].val) {
            /* values may be secrets: do not leave them in freed memory */
            volatile char *p = d->v[i].val;
            while (*p)
                *p++ = '\0';
            free(d->v[i].val);
        }
    }
    free(d->v);
    memset(d, 0, sizeof *d);
}

/** Takes ownership of key and val (frees them on failure). */
static int dotenv_put(dotenv_t *d, char *key, char *val)
{
    if (!key || !val)
        goto fail;
    for (size_t i = 0; i < d->n; i++) {
        if (strcmp(d->v[i].key, key) == 0) { /* a later line wins */
            free(d->v[i].val);
            d->v[i].val = val;
            free(key);
            return 0;
        }
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        kv_t *nv = realloc(d->v, cap * sizeof *nv);
        if (!nv)
            goto fail;
        d->v = nv;
        d->cap = cap;
    }
    d->v[d->n].key = key;
    d->v[d->n].val = val;
    d->n++;
    return 0;
fail:
    free(key);
    free(val);
    return -1;
}

static const char *dotenv_get(const dotenv_t *d, const char *key)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->v[i].key, key) == 0)
            return d->v[i].val;
    return NULL;
}

/**
 * Parse a .env buffer. Grammar per line (whitespace around the key and '=' ignored):
 *   [export ]KEY=VALUE     KEY: [A-Za-z_][A-Za-z0-9_]*
 *   VALUE: 'literal'  |  "with \n \r \t \" \\ escapes"  |  unquoted (trailing " #comment" stripped)
 * Quoted values may span lines. Blank lines and lines starting with '#' are skipped.
 * Errors never quote the line (it may hold a secret).
 */
static int dotenv_parse(dotenv_t *d, const char *path, const char *buf, size_t len, char *err, size_t errlen)
{
    size_t i = 0, line = 1;

    if (len >= 3 && (unsigned char)buf[0] == 0xEF && (unsigned char)buf[1] == 0xBB && (unsigned char)buf[2] == 0xBF)
        i = 3; /* UTF-8 byte order mark */

    const char *nul = memchr(buf, '\0', len);
    if (nul) {
        size_t l = 1;
        for (const char *p = buf; p < nul; p++)
            l += *p == '\n';
        set_err(err, errlen, "%s:%zu: unexpected NUL byte", path, l);
        return -1;
    }

#define AT_EOL(j) ((j) >= len || buf[j] == '\n')
#define FAIL(ln, ...)                                                                              \
    do {                                                                                           \
        char m_[160];                                                                              \
        snprintf(m_, sizeof m_, __VA_ARGS__);                                                      \
        set_err(err, errlen, "%s:%zu: %s", path, (size_t)(ln), m_);                                \
        return -1;                                                                                 \
    } while (0)

    while (i < len) {
        while (i < len && (is_hspace(buf[i]) || buf[i] == '\r' || buf[i] == '\f' || buf[i] == '\v'))
            i++;
        if (i >= len)
            break;
        if (buf[i] == '\n') {
            i++;
            line++;
            continue;
        }
        if (buf[i] == '#') {
            while (!AT_EOL(i))
                i++;
            continue;
        }

        size_t start_line = line;
        /* optional "export " prefix (but "export=..." is a variable named export) */
        if (len - i > 6 && memcmp(buf + i, "export", 6) == 0 && is_hspace(buf[i + 6])) {
            size_t j = i + 6;
            while (j < len && is_hspace(buf[j]))
                j++;
            if (j < len && buf[j] != '=')
                i = j;
        }

        size_t ks = i;
        if (!(isalpha((unsigned char)buf[i]) || buf[i] == '_'))
            FAIL(start_line, "expected KEY=VALUE (a variable name of letters, digits and '_')");
        while (i < len && (isalnum((unsigned char)buf[i]) || buf[i] == '_'))
            i++;
        size_t ke = i;
        while (i < len && is_hspace(buf[i]))
            i++;
        if (i >= len || buf[i] != '=')
            FAIL(start_line, "expected KEY=VALUE (a variable name of letters, digits and '_')");
        i++;
        while (i < len && is_hspace(buf[i]))
            i++;

        char *key = dup_n(buf + ks, ke - ks);
        char *val = NULL;

        if (i < len && (buf[i] == '\'' || buf[i] == '"')) {
            char q = buf[i++];
            sbuf_t sb = {.ok = 1};
            sb_add(&sb, "", 0);
            int closed = 0;
            while (i < len) {
                char c = buf[i++];
                if (c == q) {
                    closed = 1;
                    break;
                }
                if (c == '\n')
                    line++;
                if (q == '"' && c == '\\' && i < len) {
                    char e = buf[i];
                    switch (e) {
                    case 'n': c = '\n'; i++; break;
                    case 'r': c = '\r'; i++; break;
                    case 't': c = '\t'; i++; break;
                    case '"': c = '"'; i++; break;
                    case '\\': c = '\\'; i++; break;
                    default: break; /* unknown escape: the backslash stays */
                    }
                }
                sb_addc(&sb, c);
            }
            if (!closed) {
                free(key);
                free(sb.p);
                FAIL(start_line, "unterminated %s-quoted value", q == '"' ? "double" : "single");
            }
            /* after the closing quote: only whitespace and an optional comment */
            while (i < len && (is_hspace(buf[i]) || buf[i] == '\r'))
                i++;
            if (!AT_EOL(i) && buf[i] != '#') {
                free(key);
                free(sb.p);
                FAIL(line, "unexpected text after the closing quote");
            }
            while (!AT_EOL(i))
                i++;
            if (!sb.ok) {
                free(sb.p);
                sb.p = NULL;
            }
            val = sb.p;
        } else {
            size_t vs = i, ve;
            while (!AT_EOL(i)) {
                if (buf[i] == '#' && i > 0 && is_hspace(buf[i - 1]))
                    break; /* inline comment */
                i++;
            }
            ve = i;
            while (!AT_EOL(i))
                i++;
            while (ve > vs && (is_hspace(buf[ve - 1]) || buf[ve - 1] == '\r'))
                ve--;
            val = dup_n(buf + vs, ve - vs);
        }
        if (dotenv_put(d, key, val) != 0) {
            set_err(err, errlen, "%s: out of memory", path);
            return -1;
        }
    }
#undef AT_EOL
#undef FAIL
    return 0;
}

static int dotenv_load(dotenv_t *d, const char *path, char *err, size_t errlen)
{
    char eb[128];
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0; /* a missing file is fine */
        set_err(err, errlen, "%s: %s", path, errno_str(errno, eb, sizeof eb));
        return -1;
    }
    sbuf_t sb = {.ok = 1};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        sb_add(&sb, chunk, n);
        if (sb.len > DOTENV_MAX_BYTES) {
            fclose(f);
            free(sb.p);
            set_err(err, errlen, "%s: file too large (over %u bytes)", path, DOTENV_MAX_BYTES);
            return -1;
        }
    }
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (rerr || !sb.ok) {
        free(sb.p);
        if (!sb.ok)
            set_err(err, errlen, "%s: out of memory", path);
        else
            set_err(err, errlen, "%s: %s", path, errno_str(rerr ? rerr : EIO, eb, sizeof eb));
        return -1;
    }
    int rc = dotenv_parse(d, path, sb.p ? sb.p : "", sb.len, err, errlen);
    if (sb.p) {
        memset(sb.p, 0, sb.len);
        free(sb.p);
    }
    return rc;
}

/* ------------------------------------------------------------------------------------------------
 * Variable table (DESIGN §7 order: lg_config_print follows it)
 * ---------------------------------------------------------------------------------------------- */

typedef enum {
    K_LISTEN,    /* listen_host + listen_port */
    K_INT,       /* int field in [min, max] */
    K_SIZE,      /* size_t field in [min, max] */
    K_STR,       /* string, `def` or NULL */
    K_LEVEL,     /* log level */
    K_FORMAT,    /* log format */
    K_AUTH,      /* auth mode */
    K_HTTP_URL,  /* http:// or https:// */
    K_PG_URL,    /* postgres[ql]:// or libpq key=value */
    K_REDIS_URL, /* redis:// rediss:// unix:// */
    K_APIKEY,    /* token sent in HTTP headers: no spaces or control characters */
    K_RATE,      /* N/unit */
    K_HOSTPORT,  /* host:port string, normalised */
    K_ONOFF,     /* int field: on/true/1 -> 1, off/false/0 -> 0 */
} kind_t;

typedef struct {
    const char *name;
    kind_t kind;
    size_t off;
    long long min, max;
    const char *def; /* K_STR default */
    const char *alt; /* fallback variable name */
} var_t;

#define F(field) offsetof(lg_config_t, field)

static const var_t VARS[] = {
    {"LUAGENT_LISTEN", K_LISTEN, 0, 0, 0, NULL, NULL},
    {"LUAGENT_WORKERS", K_INT, F(workers), 1, 256, NULL, NULL},
    {"LUAGENT_AGENTS_DIR", K_STR, F(agents_dir), 0, 0, "agents", NULL},
    {"LUAGENT_PROVIDERS_DIR", K_STR, F(providers_dir), 0, 0, "providers", NULL},
    {"LUAGENT_WEB_DIR", K_STR, F(web_dir), 0, 0, "web", NULL},
    {"LUAGENT_EXEC_TIMEOUT_MS", K_INT, F(exec_timeout_ms), 1, 86400000, NULL, NULL},
    {"LUAGENT_MAX_BODY_BYTES", K_SIZE, F(max_body_bytes), 1, 1073741824, NULL, NULL},
    {"LUAGENT_LOG_LEVEL", K_LEVEL, F(log_level), 0, 0, NULL, NULL},
    {"LUAGENT_LOG_FORMAT", K_FORMAT, F(log_format), 0, 0, NULL, NULL},
    {"DATABASE_URL", K_PG_URL, F(database_url), 0, 0, NULL, NULL},
    {"REDIS_URL", K_REDIS_URL, F(redis_url), 0, 0, NULL, NULL},
    {"OPENAI_API_KEY", K_APIKEY, F(openai_api_key), 0, 0, NULL, NULL},
    {"OPENAI_BASE_URL", K_HTTP_URL, F(openai_base_url), 0, 0, NULL, NULL},
    {"ANTHROPIC_API_KEY", K_APIKEY, F(anthropic_api_key), 0, 0, NULL, NULL},
    {"ANTHROPIC_BASE_URL", K_HTTP_URL, F(anthropic_base_url), 0, 0, NULL, NULL},
    {"GEMINI_API_KEY", K_APIKEY, F(gemini_api_key), 0, 0, NULL, "GOOGLE_API_KEY"},
    {"GEMINI_BASE_URL", K_HTTP_URL, F(gemini_base_url), 0, 0, NULL, NULL},
    {"LUAGENT_DEFAULT_MODEL", K_STR, F(default_model), 0, 0, NULL, NULL},
    {"LUAGENT_AUTH", K_AUTH, F(auth), 0, 0, NULL, NULL},
    {"LUAGENT_JWT_SECRET", K_STR, F(jwt_secret), 0, 0, NULL, NULL},
    {"LUAGENT_JWT_PUBLIC_KEY", K_STR, F(jwt_public_key), 0, 0, NULL, NULL},
    {"LUAGENT_JWT_ISSUER", K_STR, F(jwt_issuer), 0, 0, NULL, NULL},
    {"LUAGENT_JWT_AUDIENCE", K_STR, F(jwt_audience), 0, 0, NULL, NULL},
    {"LUAGENT_TLS_CERT", K_STR, F(tls_cert), 0, 0, NULL, NULL},
    {"LUAGENT_TLS_KEY", K_STR, F(tls_key), 0, 0, NULL, NULL},
    {"LUAGENT_SECRET_KEY", K_STR, F(secret_key), 0, 0, NULL, NULL},
    {"LUAGENT_API_KEYS_FILE", K_STR, F(api_keys_file), 0, 0, NULL, NULL},
    {"LUAGENT_RATE_LIMIT", K_RATE, 0, 1, 1000000000, NULL, NULL},
    {"LUAGENT_MEMORY_LIMIT_MB", K_INT, F(memory_limit_mb), 1, 65536, NULL, NULL},
    {"LUAGENT_DRAIN_TIMEOUT_MS", K_INT, F(drain_timeout_ms), 0, 3600000, NULL, NULL},
    {"LUAGENT_HEALTH_LISTEN", K_HOSTPORT, F(health_listen), 0, 0, NULL, NULL},
    {"LUAGENT_SPILL_DIR", K_STR, F(spill_dir), 0, 0, "./data/spill", NULL},
    {"LUAGENT_CALLBACK_SECRET", K_STR, F(callback_secret), 0, 0, NULL, NULL},
    {"LUAGENT_DB_POOL_SIZE", K_INT, F(db_pool_size), 1, 64, NULL, NULL},
    {"LUAGENT_RECORD_QUEUE", K_INT, F(record_queue), 1, 10000000, NULL, NULL},
    {"LUAGENT_HISTORY_SIZE", K_INT, F(history_size), 0, 10000000, NULL, NULL},
    {"LUAGENT_SESSION_TTL_S", K_INT, F(session_ttl_s), 1, 31536000, NULL, NULL},
    {"LUAGENT_JOB_CONCURRENCY", K_INT, F(job_concurrency), 1, 10000, NULL, NULL},
    {"LUAGENT_JOB_CLAIM_MS", K_INT, F(job_claim_ms), 100, 86400000, NULL, NULL},
    {"LUAGENT_MAX_AGENT_DEPTH", K_INT, F(max_agent_depth), 0, 64, NULL, NULL},
    {"LUAGENT_LOG_FILE", K_STR, F(log_file), 0, 0, NULL, NULL},
    {"LUAGENT_WATCH", K_ONOFF, F(watch), 0, 0, NULL, NULL},
    {"LUAGENT_DRAIN_DELAY_MS", K_INT, F(drain_delay_ms), 0, 3600000, NULL, NULL},
    {"LUAGENT_METRICS", K_ONOFF, F(metrics), 0, 0, NULL, NULL},
    {"LUAGENT_TRACING", K_ONOFF, F(tracing), 0, 0, NULL, NULL},
};

#undef F

#define NVARS (sizeof VARS / sizeof VARS[0])
_Static_assert(NVARS <= 64, "lg_config_t.env_set has one bit per variable");

static int is_secret_name(const char *name)
{
    static const char *const names[] = {"DATABASE_URL", "REDIS_URL", "LUAGENT_JWT_SECRET",
                                        "LUAGENT_SECRET_KEY", "LUAGENT_CALLBACK_SECRET"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            return 1;
    size_t n = strlen(name), sl = strlen("_API_KEY");
    return n >= sl && strcmp(name + n - sl, "_API_KEY") == 0;
}

static char **str_field(lg_config_t *cfg, const var_t *v) { return (char **)((char *)cfg + v->off); }
static char *const *cstr_field(const lg_config_t *cfg, const var_t *v)
{
    return (char *const *)((const char *)cfg + v->off);
}

/* ------------------------------------------------------------------------------------------------
 * Value parsers (0 ok, -1 invalid)
 * ---------------------------------------------------------------------------------------------- */

static int parse_int(const char *s, long long min, long long max, long long *out)
{
    if (!*s)
        return -1;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p))
            return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/** Host of a listen address: non-empty, no whitespace, control characters or URL punctuation. */
static int host_ok(const char *h, size_t n, int bracketed)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c <= ' ' || c == 0x7f || strchr("/@[]?#'\"\\", c))
            return 0;
        if (c == ':' && !bracketed)
            return 0;
    }
    return 1;
}

/** "host:port", "[v6]:port" or ":port" (host 0.0.0.0). */
static int parse_hostport(const char *s, char **host, int *port)
{
    const char *hs, *he, *ps;
    int bracketed = 0;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -1;
        hs = s + 1;
        he = close;
        ps = close + 2;
        bracketed = 1;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hs = s;
        he = colon;
        ps = colon + 1;
    }
    long long p;
    if (parse_int(ps, 1, 65535, &p) != 0)
        return -1;
    if (!bracketed && he == hs) {
        *host = strdup("0.0.0.0");
    } else {
        if (!host_ok(hs, (size_t)(he - hs), bracketed))
            return -1;
        *host = dup_n(hs, (size_t)(he - hs));
    }
    *port = (int)p;
    return *host ? 0 : -2;
}

static int has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/** No whitespace or control characters (the value ends up in HTTP headers or URLs). */
static int token_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return 0;
    return 1;
}

static int url_ok(const char *s, const char *const *schemes)
{
    if (!token_ok(s))
        return 0;
    for (; *schemes; schemes++)
        if (has_prefix_ci(s, *schemes))
            return s[strlen(*schemes)] != '\0';
    return 0;
}

/**
 * libpq key=value connection string: one or more `key = value` pairs, values unquoted (no spaces)
 * or single-quoted with backslash escapes. On success, if pw_start/pw_end are given, they receive
 * the span of the last password value (or are left alone).
 */
static int conninfo_scan(const char *s, size_t *pw_start, size_t *pw_end)
{
    size_t i = 0, pairs = 0;
    for (;;) {
        while (isspace((unsigned char)s[i]))
            i++;
        if (!s[i])
            break;
        size_t ks = i;
        while (isalnum((unsigned char)s[i]) || s[i] == '_')
            i++;
        size_t ke = i;
        if (ke == ks)
            return -1;
        while (isspace((unsigned char)s[i]))
            i++;
        if (s[i] != '=')
            return -1;
        i++;
        while (isspace((unsigned char)s[i]))
            i++;
        size_t vs = i;
        if (s[i] == '\'') {
            i++;
            while (s[i] && s[i] != '\'') {
                if (s[i] == '\\' && s[i + 1])
                    i++;
                i++;
            }
            if (s[i] != '\'')
                return -1;
            i++;
        } else {
            while (s[i] && !isspace((unsigned char)s[i]))
                i++;
        }
        if (pw_start && ke - ks == 8 && strncasecmp(s + ks, "password", 8) == 0) {
            *pw_start = vs;
            *pw_end = i;
        }
        pairs++;
    }
    return pairs ? 0 : -1;
}

static int is_pg_url(const char *s)
{
    return has_prefix_ci(s, "postgres://") || has_prefix_ci(s, "postgresql://");
}

static int pg_url_ok(const char *s)
{
    static const char *const schemes[] = {"postgresql://", "postgres://", NULL};
    if (is_pg_url(s))
        return url_ok(s, schemes);
    return conninfo_scan(s, NULL, NULL) == 0;
}

/** "N/unit" -> N and the window in seconds. */
static int parse_rate(const char *s, long long max, int *n, int *window)
{
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || (size_t)(slash - s) > 20)
        return -1;
    char num[24];
    memcpy(num, s, (size_t)(slash - s));
    num[slash - s] = '\0';
    long long v;
    if (parse_int(num, 1, max, &v) != 0)
        return -1;
    static const struct {
        const char *unit;
        int secs;
    } units[] = {{"s", 1},   {"sec", 1},    {"second", 1}, {"m", 60},
                 {"min", 60}, {"minute", 60}, {"h", 3600},   {"hour", 3600}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(slash + 1, units[i].unit) == 0) {
            *n = (int)v;
            *window = units[i].secs;
            return 0;
        }
    }
    return -1;
}

int lg_config_parse_rate(const char *s, int *n, int *window) { return parse_rate(s, 1000000000, n, window); }

/* ------------------------------------------------------------------------------------------------
 * Load
 * ---------------------------------------------------------------------------------------------- */

/** "NAME: expected WHAT, got 'value'" (value escaped and shortened), or "got an invalid value". */
static int bad_value(const char *name, const char *value, const char *what, char *err, size_t errlen)
{
    if (is_secret_name(name)) {
        set_err(err, errlen, "%s: expected %s, got an invalid value", name, what);
        return -1;
    }
    char shown[ERR_VALUE_MAX * 4 + 8];
    size_t o = 0, i;
    for (i = 0; value[i] && i < ERR_VALUE_MAX; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < ' ' || c == 0x7f)
            o += (size_t)snprintf(shown + o, sizeof shown - o, "\\x%02x", c);
        else
            shown[o++] = (char)c;
    }
    if (value[i])
        o += (size_t)snprintf(shown + o, sizeof shown - o, "...");
    shown[o] = '\0';
    set_err(err, errlen, "%s: expected %s, got '%s'", name, what, shown);
    return -1;
}

static int oom(char *err, size_t errlen)
{
    set_err(err, errlen, "out of memory");
    return -1;
}

/** Environment first, then the .env table. NULL if neither has it. */
static const char *lookup(const dotenv_t *d, const char *name)
{
    const char *e = getenv(name);
    return e ? e : dotenv_get(d, name);
}

/* bit: the variable's index in VARS, marked in cfg->env_set when a value is found; -1 not to mark */
static int apply_var(lg_config_t *cfg, const var_t *v, int bit, const dotenv_t *d, char *err, size_t errlen)
{
    const char *name = v->name;
    const char *s = lookup(d, name);
    if ((!s || !*s) && v->alt) {
        name = v->alt;
        s = lookup(d, name);
    }
    if (!s || !*s)
        return 0; /* unset or empty: keep the default */
    if (bit >= 0)
        cfg->env_set |= 1ull << bit;

    long long n;
    switch (v->kind) {
    case K_LISTEN: {
        char *host = NULL;
        int port = 0, rc = parse_hostport(s, &host, &port);
        if (rc == -2)
            return oom(err, errlen);
        if (rc != 0)
            return bad_value(name, s, "host:port with a port from 1 to 65535 (IPv6 as [addr]:port)", err, errlen);
        free(cfg->listen_host);
        cfg->listen_host = host;
        cfg->listen_port = port;
        return 0;
    }
    case K_HOSTPORT: {
        char *host = NULL;
        int port = 0, rc = parse_hostport(s, &host, &port);
        if (rc == -2)
            return oom(err, errlen);
        if (rc != 0)
            return bad_value(name, s, "host:port with a port from 1 to 65535 (IPv6 as [addr]:port)", err, errlen);
        char tmp[16];
        snprintf(tmp, sizeof tmp, "%d", port);
        sbuf_t sb = {.ok = 1};
        int v6 = strchr(host, ':') != NULL;
        if (v6)
            sb_addc(&sb, '[');
        sb_adds(&sb, host);
        if (v6)
            sb_addc(&sb, ']');
        sb_addc(&sb, ':');
        sb_adds(&sb, tmp);
        free(host);
        if (!sb.ok) {
            free(sb.p);
            return oom(err, errlen);
        }
        char **f = str_field(cfg, v);
        free(*f);
        *f = sb.p;
        return 0;
    }
    case K_INT:
    case K_SIZE: {
        if (parse_int(s, v->min, v->max, &n) != 0) {
            char what[96];
            snprintf(what, sizeof what, "an integer from %lld to %lld", v->min, v->max);
            return bad_value(name, s, what, err, errlen);
        }
        if (v->kind == K_INT)
            *(int *)((char *)cfg + v->off) = (int)n;
        else
            *(size_t *)((char *)cfg + v->off) = (size_t)n;
        return 0;
    }
    case K_LEVEL:
        if (strcasecmp(s, "debug") == 0)
            cfg->log_level = LG_LOG_DEBUG;
        else if (strcasecmp(s, "info") == 0)
            cfg->log_level = LG_LOG_INFO;
        else if (strcasecmp(s, "warn") == 0 || strcasecmp(s, "warning") == 0)
            cfg->log_level = LG_LOG_WARN;
        else if (strcasecmp(s, "error") == 0)
            cfg->log_level = LG_LOG_ERROR;
        else
            return bad_value(name, s, "debug, info, warn or error", err, errlen);
        return 0;
    case K_FORMAT:
        if (strcasecmp(s, "json") == 0)
            cfg->log_format = LG_LOG_JSON;
        else if (strcasecmp(s, "text") == 0)
            cfg->log_format = LG_LOG_TEXT;
        else
            return bad_value(name, s, "json or text", err, errlen);
        return 0;
    case K_AUTH:
        if (strcasecmp(s, "required") == 0)
            cfg->auth = LG_AUTH_REQUIRED;
        else if (strcasecmp(s, "off") == 0)
            cfg->auth = LG_AUTH_OFF;
        else
            return bad_value(name, s, "required or off", err, errlen);
        return 0;
    case K_ONOFF:
        if (strcasecmp(s, "on") == 0 || strcasecmp(s, "true") == 0 || strcmp(s, "1") == 0)
            *(int *)((char *)cfg + v->off) = 1;
        else if (strcasecmp(s, "off") == 0 || strcasecmp(s, "false") == 0 || strcmp(s, "0") == 0)
            *(int *)((char *)cfg + v->off) = 0;
        else
            return bad_value(name, s, "on or off", err, errlen);
        return 0;
    case K_RATE: {
        int rn, rw;
        if (parse_rate(s, v->max, &rn, &rw) != 0) {
            char what[128];
            snprintf(what, sizeof what, "N/sec, N/min or N/hour with N from 1 to %lld (e.g. 600/min)", v->max);
            return bad_value(name, s, what, err, errlen);
        }
        cfg->rate_limit = rn;
        cfg->rate_limit_window_s = rw;
        return 0;
    }
    case K_HTTP_URL: {
        static const char *const schemes[] = {"http://", "https://", NULL};
        if (!url_ok(s, schemes))
            return bad_value(name, s, "an http:// or https:// URL", err, errlen);
        break;
    }
    case K_PG_URL:
        if (!pg_url_ok(s))
            return bad_value(name, s, "a postgres:// or postgresql:// URL or a libpq key=value string", err, errlen);
        break;
    case K_REDIS_URL: {
        static const char *const schemes[] = {"redis://", "rediss://", "unix://", NULL};
        if (!url_ok(s, schemes))
            return bad_value(name, s, "a redis://, rediss:// or unix:// URL", err, errlen);
        break;
    }
    case K_APIKEY:
        if (!token_ok(s))
            return bad_value(name, s, "a key without spaces or control characters", err, errlen);
        break;
    case K_STR:
        break;
    }

    /* string kinds */
    char *copy = strdup(s);
    if (!copy)
        return oom(err, errlen);
    char **f = str_field(cfg, v);
    free(*f);
    *f = copy;
    return 0;
}

int lg_config_load(lg_config_t *cfg, const char *dotenv_path, char *err, size_t errlen)
{
    dotenv_t d = {0};
    if (err && errlen)
        err[0] = '\0';
    memset(cfg, 0, sizeof *cfg);

    /* defaults */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = ncpu < 1 ? 1 : ncpu > 256 ? 256 : (int)ncpu;
    cfg->listen_port = 8000;
    cfg->exec_timeout_ms = 60000;
    cfg->max_body_bytes = 1048576;
    cfg->log_level = LG_LOG_INFO;
    cfg->log_format = LG_LOG_JSON;
    cfg->auth = LG_AUTH_REQUIRED;
    cfg->rate_limit = 0;
    cfg->rate_limit_window_s = 0;
    cfg->memory_limit_mb = 256;
    cfg->drain_timeout_ms = 30000;
    cfg->db_pool_size = 4;
    cfg->record_queue = 10000;
    cfg->history_size = 10000;
    cfg->session_ttl_s = 86400;
    cfg->job_concurrency = 16;
    cfg->job_claim_ms = 30000;
    cfg->watch = 1;
    cfg->max_agent_depth = 8;
    cfg->metrics = 1;
    cfg->tracing = 1;
    if (!(cfg->listen_host = strdup("0.0.0.0")))
        goto out_of_memory;
    for (size_t i = 0; i < NVARS; i++) {
        if (VARS[i].kind == K_STR && VARS[i].def) {
            char **f = str_field(cfg, &VARS[i]);
            if (!(*f = strdup(VARS[i].def)))
                goto out_of_memory;
        }
    }

    if (dotenv_load(&d, dotenv_path ? dotenv_path : ".env", err, errlen) != 0)
        goto fail;

    for (size_t i = 0; i < NVARS; i++)
        if (apply_var(cfg, &VARS[i], (int)i, &d, err, errlen) != 0)
            goto fail;

    /* cross-checks */
    if (cfg->tls_cert && !cfg->tls_key) {
        set_err(err, errlen, "LUAGENT_TLS_KEY: expected a key file path when LUAGENT_TLS_CERT is set");
        goto fail;
    }
    if (cfg->tls_key && !cfg->tls_cert) {
        set_err(err, errlen, "LUAGENT_TLS_CERT: expected a certificate file path when LUAGENT_TLS_KEY is set");
        goto fail;
    }

    dotenv_free(&d);
    return 0;

fail:
    dotenv_free(&d);
    lg_config_free(cfg);
    return -1;

out_of_memory:
    dotenv_free(&d);
    lg_config_free(cfg);
    return oom(err, errlen);
}

static void wipe_free(char *s)
{
    if (!s)
        return;
    volatile char *p = s;
    while (*p)
        *p++ = '\0';
    free(s);
}

void lg_config_free(lg_config_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->listen_host);
    for (size_t i = 0; i < NVARS; i++) {
        switch (VARS[i].kind) {
        case K_STR:
        case K_HTTP_URL:
        case K_PG_URL:
        case K_REDIS_URL:
        case K_APIKEY:
        case K_HOSTPORT:
            wipe_free(*str_field(cfg, &VARS[i]));
            break;
        default:
            break;
        }
    }
    memset(cfg, 0, sizeof *cfg);
}

/* ------------------------------------------------------------------------------------------------
 * Print
 * ---------------------------------------------------------------------------------------------- */

/** Replace `password=` values in a query string part [qs, end) of `s`. */
static void redact_query(sbuf_t *out, const char *s)
{
    /* s points just after '?' */
    while (*s) {
        const char *amp = strchr(s, '&');
        size_t seg = amp ? (size_t)(amp - s) : strlen(s);
        const char *eq = memchr(s, '=', seg);
        if (eq && (size_t)(eq - s) == 8 && strncasecmp(s, "password", 8) == 0) {
            sb_add(out, s, (size_t)(eq - s) + 1);
            sb_adds(out, "***");
        } else {
            sb_add(out, s, seg);
        }
        if (!amp)
            break;
        sb_addc(out, '&');
        s = amp + 1;
    }
}

/**
 * URL with the userinfo password (and any `password=` query parameter) replaced by ***.
 * The userinfo ends at the last '@' (a raw '/' or '?' in a password must not leak it); a userinfo
 * without ':' is kept, except for Redis, where a lone token is the password.
 */
static void redact_url(sbuf_t *out, const char *s, int lone_user_is_secret)
{
    const char *sep = strstr(s, "://");
    if (!sep) {
        sb_adds(out, "***");
        return;
    }
    const char *auth = sep + 3;
    const char *at = strrchr(auth, '@');
    const char *rest = auth;
    sb_add(out, s, (size_t)(auth - s));
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        if (colon) {
            sb_add(out, auth, (size_t)(colon - auth) + 1);
            sb_adds(out, "***");
        } else if (lone_user_is_secret) {
            sb_adds(out, "***");
        } else {
            sb_add(out, auth, (size_t)(at - auth));
        }
        sb_addc(out, '@');
        rest = at + 1;
    }
    const char *q = strchr(rest, '?');
    if (!q) {
        sb_adds(out, rest);
        return;
    }
    sb_add(out, rest, (size_t)(q - rest) + 1);
    redact_query(out, q + 1);
}

static void redact_conninfo(sbuf_t *out, const char *s)
{
    size_t ps = 0, pe = 0;
    if (conninfo_scan(s, &ps, &pe) != 0) {
        sb_adds(out, "***");
        return;
    }
    if (pe == 0) {
        sb_adds(out, s);
        return;
    }
    sb_add(out, s, ps);
    sb_adds(out, "***");
    sb_adds(out, s + pe);
}

/** Print a value on one line; values a .env parser would not read back as they are get quoted. */
static void put_value(FILE *out, const char *v)
{
    int quote = 0;
    size_t n = strlen(v);
    if (n && (is_hspace(v[0]) || is_hspace(v[n - 1]) || v[0] == '"' || v[0] == '\''))
        quote = 1;
    for (size_t i = 0; i < n && !quote; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < ' ' || c == 0x7f || (c == '#' && i > 0 && is_hspace(v[i - 1])))
            quote = 1;
    }
    if (!quote) {
        fputs(v, out);
        return;
    }
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        switch (c) {
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        default: fputc(c, out); break;
        }
    }
    fputc('"', out);
}

void lg_config_print(const lg_config_t *cfg, FILE *out)
{
    for (size_t i = 0; i < NVARS; i++) {
        const var_t *v = &VARS[i];
        fprintf(out, "%s=", v->name);
        switch (v->kind) {
        case K_LISTEN:
            if (cfg->listen_host) {
                if (strchr(cfg->listen_host, ':'))
                    fprintf(out, "[%s]:%d", cfg->listen_host, cfg->listen_port);
                else
                    fprintf(out, "%s:%d", cfg->listen_host, cfg->listen_port);
            }
            break;
        case K_INT:
            fprintf(out, "%d", *(const int *)((const char *)cfg + v->off));
            break;
        case K_SIZE:
            fprintf(out, "%zu", *(const size_t *)((const char *)cfg + v->off));
            break;
        case K_LEVEL: {
            static const char *const names[] = {"debug", "info", "warn", "error"};
            unsigned l = (unsigned)cfg->log_level;
            fputs(l < 4 ? names[l] : "", out);
            break;
        }
        case K_FORMAT:
            fputs(cfg->log_format == LG_LOG_TEXT ? "text" : "json", out);
            break;
        case K_AUTH:
            fputs(cfg->auth == LG_AUTH_OFF ? "off" : "required", out);
            break;
        case K_ONOFF:
            fputs(*(const int *)((const char *)cfg + v->off) ? "on" : "off", out);
            break;
        case K_RATE:
            if (cfg->rate_limit > 0 && cfg->rate_limit_window_s > 0) {
                switch (cfg->rate_limit_window_s) {
                case 1: fprintf(out, "%d/sec", cfg->rate_limit); break;
                case 60: fprintf(out, "%d/min", cfg->rate_limit); break;
                case 3600: fprintf(out, "%d/hour", cfg->rate_limit); break;
                default: fprintf(out, "%d/%ds", cfg->rate_limit, cfg->rate_limit_window_s); break;
                }
            }
            break;
        case K_STR:
        case K_APIKEY:
        case K_HOSTPORT:
        case K_HTTP_URL:
        case K_PG_URL:
        case K_REDIS_URL: {
            const char *s = *cstr_field(cfg, v);
            if (!s)
                break;
            if (v->kind == K_PG_URL || v->kind == K_REDIS_URL || v->kind == K_HTTP_URL) {
                sbuf_t sb = {.ok = 1};
                if (v->kind == K_PG_URL && !is_pg_url(s))
                    redact_conninfo(&sb, s);
                else
                    redact_url(&sb, s, v->kind == K_REDIS_URL);
                if (sb.ok && sb.p)
                    put_value(out, sb.p);
                else
                    fputs("***", out);
                if (sb.p)
                    memset(sb.p, 0, sb.len);
                free(sb.p);
            } else if (is_secret_name(v->name)) {
                fputs("***", out);
            } else {
                put_value(out, s);
            }
            break;
        }
        }
        fputc('\n', out);
    }
}

/* ------------------------------------------------------------------------------------------------
 * Settings stored in the database (secrets.h): which may be, and applying them
 * ---------------------------------------------------------------------------------------------- */

static const var_t *find_var(const char *name)
{
    for (size_t i = 0; i < NVARS; i++)
        if (strcmp(VARS[i].name, name) == 0 || (VARS[i].alt && strcmp(VARS[i].alt, name) == 0))
            return &VARS[i];
    return NULL;
}

int lg_config_storable(const char *name, int *secret)
{
    static const char *const run_time[] = {
        "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "GEMINI_API_KEY",
        "GOOGLE_API_KEY", "GEMINI_BASE_URL", "LUAGENT_DEFAULT_MODEL", "LUAGENT_JWT_SECRET", "LUAGENT_JWT_PUBLIC_KEY",
        "LUAGENT_JWT_ISSUER", "LUAGENT_JWT_AUDIENCE", "LUAGENT_RATE_LIMIT", "LUAGENT_CALLBACK_SECRET",
        "LUAGENT_EXEC_TIMEOUT_MS", "LUAGENT_MEMORY_LIMIT_MB", "LUAGENT_SESSION_TTL_S"};
    for (size_t i = 0; i < sizeof run_time / sizeof run_time[0]; i++)
        if (strcmp(name, run_time[i]) == 0) {
            *secret = is_secret_name(name);
            return 1;
        }
    return 0;
}

int lg_config_apply(lg_config_t *cfg, const char *name, const char *value, char *err, size_t errlen)
{
    const var_t *v = find_var(name);
    if (v == NULL) {
        set_err(err, errlen, "%s: not a setting", name);
        return -1;
    }
    if (cfg->env_set & (1ull << (v - VARS)))
        return 0; /* the environment or .env wins */
    dotenv_t d = {0};
    var_t one = *v;
    one.name = name; /* a value stored under the fallback name (GOOGLE_API_KEY) applies as it */
    one.alt = NULL;
    if (getenv(name) != NULL && *getenv(name)) /* set but not tracked (an alt name): the environment wins */
        return 0;
    if (dotenv_put(&d, strdup(name), strdup(value)) != 0)
        return oom(err, errlen);
    int rc = apply_var(cfg, &one, -1, &d, err, errlen); /* from the table: not marked as the environment's */
    dotenv_free(&d);
    return rc == 0 ? 1 : -1;
}

/* ------------------------------------------------------------------------------------------------
 * Reload (SIGHUP): what only a restart changes
 * ---------------------------------------------------------------------------------------------- */

/* Settings a running server cannot take over: its sockets, threads, directories, connections and
 * the sizes of what it allocated at start. */
static const char *const RESTART_ONLY[] = {
    "LUAGENT_LISTEN",       "LUAGENT_WORKERS",      "LUAGENT_AGENTS_DIR",     "LUAGENT_PROVIDERS_DIR",
    "LUAGENT_MAX_BODY_BYTES", "LUAGENT_LOG_FORMAT", "DATABASE_URL",           "REDIS_URL",
    "LUAGENT_TLS_CERT",     "LUAGENT_TLS_KEY",      "LUAGENT_API_KEYS_FILE",  "LUAGENT_HEALTH_LISTEN",
    "LUAGENT_SPILL_DIR",    "LUAGENT_DB_POOL_SIZE", "LUAGENT_RECORD_QUEUE",   "LUAGENT_HISTORY_SIZE",
    "LUAGENT_WATCH",        "LUAGENT_METRICS",      "LUAGENT_WEB_DIR",
};

static int is_string_kind(kind_t k)
{
    return k == K_STR || k == K_HTTP_URL || k == K_PG_URL || k == K_REDIS_URL || k == K_APIKEY || k == K_HOSTPORT;
}

static int same_value(const lg_config_t *a, const lg_config_t *b, const var_t *v)
{
    if (v->kind == K_LISTEN)
        return a->listen_port == b->listen_port && strcmp(a->listen_host, b->listen_host) == 0;
    if (is_string_kind(v->kind)) {
        const char *x = *cstr_field(a, v), *y = *cstr_field(b, v);
        return x == y || (x != NULL && y != NULL && strcmp(x, y) == 0);
    }
    if (v->kind == K_SIZE)
        return *(const size_t *)((const char *)a + v->off) == *(const size_t *)((const char *)b + v->off);
    return *(const int *)((const char *)a + v->off) == *(const int *)((const char *)b + v->off);
}

int lg_config_keep_restart_only(lg_config_t *fresh, const lg_config_t *old, char *changed, size_t len)
{
    int n = 0;
    size_t o = 0;
    if (len)
        changed[0] = '\0';
    for (size_t r = 0; r < sizeof RESTART_ONLY / sizeof RESTART_ONLY[0]; r++) {
        const var_t *v = find_var(RESTART_ONLY[r]);
        if (v == NULL || same_value(fresh, old, v))
            continue;
        if (o < len)
            o += (size_t)snprintf(changed + o, len - o, "%s%s", n ? ", " : "", v->name);
        n++;
        if (v->kind == K_LISTEN) {
            char *h = strdup(old->listen_host);
            if (h == NULL)
                return -1;
            free(fresh->listen_host);
            fresh->listen_host = h;
            fresh->listen_port = old->listen_port;
        } else if (is_string_kind(v->kind)) {
            const char *src = *cstr_field(old, v);
            char *copy = src != NULL ? strdup(src) : NULL;
            if (src != NULL && copy == NULL)
                return -1;
            char **f = str_field(fresh, v);
            wipe_free(*f);
            *f = copy;
        } else if (v->kind == K_SIZE)
            *(size_t *)((char *)fresh + v->off) = *(const size_t *)((const char *)old + v->off);
        else
            *(int *)((char *)fresh + v->off) = *(const int *)((const char *)old + v->off);
    }
    return n;
}

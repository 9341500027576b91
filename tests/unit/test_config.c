/* test_config.c - unit tests for src/config/config.c (DESIGN §7). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "luagent/config.h"

#define MISSING_ENV "/nonexistent-luagent-test/.env"

static const char *const ALL_VARS[] = {
    "LUAGENT_LISTEN", "LUAGENT_WORKERS", "LUAGENT_AGENTS_DIR", "LUAGENT_PROVIDERS_DIR",
    "LUAGENT_EXEC_TIMEOUT_MS", "LUAGENT_MAX_BODY_BYTES", "LUAGENT_LOG_LEVEL", "LUAGENT_LOG_FORMAT",
    "DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_BASE_URL", "LUAGENT_DEFAULT_MODEL",
    "LUAGENT_AUTH", "LUAGENT_JWT_SECRET", "LUAGENT_JWT_PUBLIC_KEY", "LUAGENT_JWT_ISSUER",
    "LUAGENT_JWT_AUDIENCE", "LUAGENT_TLS_CERT", "LUAGENT_TLS_KEY", "LUAGENT_SECRET_KEY",
    "LUAGENT_API_KEYS_FILE", "LUAGENT_RATE_LIMIT", "LUAGENT_MEMORY_LIMIT_MB", "LUAGENT_DRAIN_TIMEOUT_MS",
    "LUAGENT_HEALTH_LISTEN", "LUAGENT_SPILL_DIR", "LUAGENT_CALLBACK_SECRET", "LUAGENT_LOG_FILE",
    "LUAGENT_DB_POOL_SIZE", "LUAGENT_RECORD_QUEUE", "LUAGENT_HISTORY_SIZE", "LUAGENT_SESSION_TTL_S",
    "LUAGENT_JOB_CONCURRENCY", "LUAGENT_JOB_CLAIM_MS", "LUAGENT_MAX_AGENT_DEPTH", "LUAGENT_WATCH",
    "LUAGENT_DRAIN_DELAY_MS", "LUAGENT_METRICS",
    "LUAGENT_TRACING",
};
#define NALL (sizeof ALL_VARS / sizeof ALL_VARS[0])

/* temp files made by a test, removed by teardown */
static char g_paths[8][64];
static int g_npaths;

static void clean_env(void)
{
    for (size_t i = 0; i < NALL; i++)
        unsetenv(ALL_VARS[i]);
}

static int setup(void **state)
{
    clean_env();
    g_npaths = 0;
    return 0;
}

static int teardown(void **state)
{
    for (int i = 0; i < g_npaths; i++)
        unlink(g_paths[i]);
    g_npaths = 0;
    clean_env();
    return 0;
}

static const char *write_tmp(const char *content)
{
    assert_true(g_npaths < 8);
    char *p = g_paths[g_npaths++];
    strcpy(p, "/tmp/lg_test_env_XXXXXX");
    int fd = mkstemp(p);
    assert_true(fd >= 0);
    size_t n = strlen(content);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    close(fd);
    return p;
}

static char *print_cfg(const lg_config_t *c)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    assert_non_null(f);
    lg_config_print(c, f);
    fclose(f);
    return buf;
}

/** 1 if `text` has `line` as one whole line. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    return 0;
}

static int expected_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

static int is_zero(const lg_config_t *c)
{
    static const lg_config_t zero;
    return memcmp(c, &zero, sizeof zero) == 0;
}

/* ---------------------------------------------------------------------------------------------- */

static void test_defaults(void **state)
{
    lg_config_t c;
    char err[256];
    assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), 0);
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 8000);
    assert_int_equal(c.workers, expected_workers());
    assert_string_equal(c.agents_dir, "agents");
    assert_string_equal(c.providers_dir, "providers");
    assert_int_equal(c.exec_timeout_ms, 60000);
    assert_int_equal(c.max_body_bytes, 1048576);
    assert_int_equal(c.log_level, LG_LOG_INFO);
    assert_int_equal(c.log_format, LG_LOG_JSON);
    assert_null(c.log_file);
    assert_null(c.database_url);
    assert_null(c.redis_url);
    assert_null(c.openai_api_key);
    assert_null(c.openai_base_url);
    assert_null(c.anthropic_api_key);
    assert_null(c.anthropic_base_url);
    assert_null(c.gemini_api_key);
    assert_null(c.gemini_base_url);
    assert_null(c.default_model);
    assert_int_equal(c.auth, LG_AUTH_REQUIRED);
    assert_null(c.jwt_secret);
    assert_null(c.jwt_public_key);
    assert_null(c.jwt_issuer);
    assert_null(c.jwt_audience);
    assert_null(c.tls_cert);
    assert_null(c.tls_key);
    assert_null(c.secret_key);
    assert_null(c.api_keys_file);
    assert_int_equal(c.rate_limit, 0);
    assert_int_equal(c.rate_limit_window_s, 0);
    assert_int_equal(c.memory_limit_mb, 256);
    assert_int_equal(c.drain_timeout_ms, 30000);
    assert_null(c.health_listen);
    assert_string_equal(c.spill_dir, "./data/spill");
    assert_null(c.callback_secret);
    lg_config_free(&c);
    assert_true(is_zero(&c));
    lg_config_free(&c); /* freeing a zeroed config is harmless */
}

static void test_print_defaults(void **state)
{
    lg_config_t c;
    char err[256];
    assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), 0);
    char *out = print_cfg(&c);
    char expected[2048];
    snprintf(expected, sizeof expected,
             "LUAGENT_LISTEN=0.0.0.0:8000\n"
             "LUAGENT_WORKERS=%d\n"
             "LUAGENT_AGENTS_DIR=agents\n"
             "LUAGENT_PROVIDERS_DIR=providers\n"
             "LUAGENT_WEB_DIR=web\n"
             "LUAGENT_EXEC_TIMEOUT_MS=60000\n"
             "LUAGENT_MAX_BODY_BYTES=1048576\n"
             "LUAGENT_LOG_LEVEL=info\n"
             "LUAGENT_LOG_FORMAT=json\n"
             "DATABASE_URL=\n"
             "REDIS_URL=\n"
             "OPENAI_API_KEY=\n"
             "OPENAI_BASE_URL=\n"
             "ANTHROPIC_API_KEY=\n"
             "ANTHROPIC_BASE_URL=\n"
             "GEMINI_API_KEY=\n"
             "GEMINI_BASE_URL=\n"
             "LUAGENT_DEFAULT_MODEL=\n"
             "LUAGENT_AUTH=required\n"
             "LUAGENT_JWT_SECRET=\n"
             "LUAGENT_JWT_PUBLIC_KEY=\n"
             "LUAGENT_JWT_ISSUER=\n"
             "LUAGENT_JWT_AUDIENCE=\n"
             "LUAGENT_TLS_CERT=\n"
             "LUAGENT_TLS_KEY=\n"
             "LUAGENT_SECRET_KEY=\n"
             "LUAGENT_API_KEYS_FILE=\n"
             "LUAGENT_RATE_LIMIT=\n"
             "LUAGENT_MEMORY_LIMIT_MB=256\n"
             "LUAGENT_DRAIN_TIMEOUT_MS=30000\n"
             "LUAGENT_HEALTH_LISTEN=\n"
             "LUAGENT_SPILL_DIR=./data/spill\n"
             "LUAGENT_CALLBACK_SECRET=\n"
             "LUAGENT_DB_POOL_SIZE=4\n"
             "LUAGENT_RECORD_QUEUE=10000\n"
             "LUAGENT_HISTORY_SIZE=10000\n"
             "LUAGENT_SESSION_TTL_S=86400\n"
             "LUAGENT_JOB_CONCURRENCY=16\n"
             "LUAGENT_JOB_CLAIM_MS=30000\n"
             "LUAGENT_MAX_AGENT_DEPTH=8\n"
             "LUAGENT_LOG_FILE=\n"
             "LUAGENT_WATCH=on\n"
             "LUAGENT_DRAIN_DELAY_MS=0\n"
             "LUAGENT_METRICS=on\n"
             "LUAGENT_TRACING=on\n",
             expected_workers());
    assert_string_equal(out, expected);
    free(out);
    lg_config_free(&c);
}

static void test_valid_values(void **state)
{
    setenv("LUAGENT_WORKERS", "2", 1);
    setenv("LUAGENT_AGENTS_DIR", "/srv/agents", 1);
    setenv("LUAGENT_PROVIDERS_DIR", "/srv/providers", 1);
    setenv("LUAGENT_EXEC_TIMEOUT_MS", "1500", 1);
    setenv("LUAGENT_MAX_BODY_BYTES", "2048", 1);
    setenv("LUAGENT_LOG_LEVEL", "debug", 1);
    setenv("LUAGENT_LOG_FORMAT", "TEXT", 1);
    setenv("LUAGENT_LOG_FILE", "/var/log/luagent.log", 1);
    setenv("DATABASE_URL", "postgresql://app@db/luagent", 1);
    setenv("REDIS_URL", "unix:///run/redis.sock", 1);
    setenv("OPENAI_API_KEY", "sk-1", 1);
    setenv("OPENAI_BASE_URL", "http://localhost:11434/v1", 1);
    setenv("ANTHROPIC_API_KEY", "sk-ant", 1);
    setenv("ANTHROPIC_BASE_URL", "HTTPS://api.example.com", 1);
    setenv("GEMINI_API_KEY", "g-1", 1);
    setenv("GEMINI_BASE_URL", "https://gemini.example.com", 1);
    setenv("LUAGENT_DEFAULT_MODEL", "openai/gpt-4o-mini", 1);
    setenv("LUAGENT_AUTH", "off", 1);
    setenv("LUAGENT_JWT_SECRET", "jwtsecret", 1);
    setenv("LUAGENT_JWT_PUBLIC_KEY", "/etc/jwks.json", 1);
    setenv("LUAGENT_JWT_ISSUER", "https://issuer", 1);
    setenv("LUAGENT_JWT_AUDIENCE", "luagent", 1);
    setenv("LUAGENT_TLS_CERT", "cert.pem", 1);
    setenv("LUAGENT_TLS_KEY", "key.pem", 1);
    setenv("LUAGENT_SECRET_KEY", "k", 1);
    setenv("LUAGENT_API_KEYS_FILE", "keys.txt", 1);
    setenv("LUAGENT_RATE_LIMIT", "600/min", 1);
    setenv("LUAGENT_MEMORY_LIMIT_MB", "64", 1);
    setenv("LUAGENT_DRAIN_TIMEOUT_MS", "0", 1);
    setenv("LUAGENT_HEALTH_LISTEN", "127.0.0.1:9090", 1);
    setenv("LUAGENT_SPILL_DIR", "/tmp/spill", 1);
    setenv("LUAGENT_CALLBACK_SECRET", "cb", 1);

    lg_config_t c;
    char err[256] = "";
    assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_int_equal(c.workers, 2);
    assert_string_equal(c.agents_dir, "/srv/agents");
    assert_string_equal(c.providers_dir, "/srv/providers");
    assert_int_equal(c.exec_timeout_ms, 1500);
    assert_int_equal(c.max_body_bytes, 2048);
    assert_int_equal(c.log_level, LG_LOG_DEBUG);
    assert_int_equal(c.log_format, LG_LOG_TEXT);
    assert_string_equal(c.log_file, "/var/log/luagent.log");
    assert_string_equal(c.database_url, "postgresql://app@db/luagent");
    assert_string_equal(c.redis_url, "unix:///run/redis.sock");
    assert_string_equal(c.openai_api_key, "sk-1");
    assert_string_equal(c.openai_base_url, "http://localhost:11434/v1");
    assert_string_equal(c.anthropic_api_key, "sk-ant");
    assert_string_equal(c.anthropic_base_url, "HTTPS://api.example.com");
    assert_string_equal(c.gemini_api_key, "g-1");
    assert_string_equal(c.gemini_base_url, "https://gemini.example.com");
    assert_string_equal(c.default_model, "openai/gpt-4o-mini");
    assert_int_equal(c.auth, LG_AUTH_OFF);
    assert_string_equal(c.jwt_secret, "jwtsecret");
    assert_string_equal(c.jwt_public_key, "/etc/jwks.json");
    assert_string_equal(c.jwt_issuer, "https://issuer");
    assert_string_equal(c.jwt_audience, "luagent");
    assert_string_equal(c.tls_cert, "cert.pem");
    assert_string_equal(c.tls_key, "key.pem");
    assert_string_equal(c.secret_key, "k");
    assert_string_equal(c.api_keys_file, "keys.txt");
    assert_int_equal(c.rate_limit, 600);
    assert_int_equal(c.rate_limit_window_s, 60);
    assert_int_equal(c.memory_limit_mb, 64);
    assert_int_equal(c.drain_timeout_ms, 0);
    assert_string_equal(c.health_listen, "127.0.0.1:9090");
    assert_string_equal(c.spill_dir, "/tmp/spill");
    assert_string_equal(c.callback_secret, "cb");

    char *out = print_cfg(&c);
    assert_true(has_line(out, "LUAGENT_WORKERS=2"));
    assert_true(has_line(out, "LUAGENT_LOG_LEVEL=debug"));
    assert_true(has_line(out, "LUAGENT_LOG_FORMAT=text"));
    assert_true(has_line(out, "LUAGENT_AUTH=off"));
    assert_true(has_line(out, "LUAGENT_RATE_LIMIT=600/min"));
    assert_true(has_line(out, "LUAGENT_DRAIN_TIMEOUT_MS=0"));
    assert_true(has_line(out, "LUAGENT_HEALTH_LISTEN=127.0.0.1:9090"));
    assert_true(has_line(out, "DATABASE_URL=postgresql://app@db/luagent"));
    assert_true(has_line(out, "LUAGENT_JWT_PUBLIC_KEY=/etc/jwks.json"));
    free(out);
    lg_config_free(&c);
}

static void test_integer_bounds(void **state)
{
    static const struct {
        const char *name, *value;
    } ok[] = {
        {"LUAGENT_WORKERS", "1"},          {"LUAGENT_WORKERS", "256"},
        {"LUAGENT_EXEC_TIMEOUT_MS", "1"},  {"LUAGENT_EXEC_TIMEOUT_MS", "86400000"},
        {"LUAGENT_MAX_BODY_BYTES", "1"},   {"LUAGENT_MAX_BODY_BYTES", "1073741824"},
        {"LUAGENT_MEMORY_LIMIT_MB", "1"},  {"LUAGENT_MEMORY_LIMIT_MB", "65536"},
        {"LUAGENT_DRAIN_TIMEOUT_MS", "0"}, {"LUAGENT_DRAIN_TIMEOUT_MS", "3600000"},
        {"LUAGENT_WORKERS", "007"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        lg_config_t c;
        char err[256];
        setenv(ok[i].name, ok[i].value, 1);
        assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), 0);
        char *out = print_cfg(&c);
        char line[128];
        snprintf(line, sizeof line, "%s=%lld", ok[i].name, atoll(ok[i].value));
        if (!has_line(out, line))
            fail_msg("missing %s in:\n%s", line, out);
        free(out);
        lg_config_free(&c);
        unsetenv(ok[i].name);
    }
}

static const struct {
    const char *name, *value, *expect; /* expect: substring of the message */
} BAD[] = {
    {"LUAGENT_WORKERS", "abc", "expected an integer from 1 to 256"},
    {"LUAGENT_WORKERS", "0", "expected an integer from 1 to 256"},
    {"LUAGENT_WORKERS", "257", "expected an integer from 1 to 256"},
    {"LUAGENT_WORKERS", "4x", "integer"},
    {"LUAGENT_WORKERS", " 4", "integer"},
    {"LUAGENT_WORKERS", "4 ", "integer"},
    {"LUAGENT_WORKERS", "-1", "integer"},
    {"LUAGENT_WORKERS", "+4", "integer"},
    {"LUAGENT_WORKERS", "0x10", "integer"},
    {"LUAGENT_WORKERS", "99999999999999999999999", "integer"},
    {"LUAGENT_EXEC_TIMEOUT_MS", "0", "from 1 to 86400000"},
    {"LUAGENT_EXEC_TIMEOUT_MS", "86400001", "from 1 to 86400000"},
    {"LUAGENT_EXEC_TIMEOUT_MS", "1.5", "integer"},
    {"LUAGENT_MAX_BODY_BYTES", "0", "from 1 to 1073741824"},
    {"LUAGENT_MAX_BODY_BYTES", "1073741825", "from 1 to 1073741824"},
    {"LUAGENT_MAX_BODY_BYTES", "1MB", "integer"},
    {"LUAGENT_MEMORY_LIMIT_MB", "0", "from 1 to 65536"},
    {"LUAGENT_MEMORY_LIMIT_MB", "65537", "from 1 to 65536"},
    {"LUAGENT_DRAIN_TIMEOUT_MS", "-1", "from 0 to 3600000"},
    {"LUAGENT_DRAIN_TIMEOUT_MS", "3600001", "from 0 to 3600000"},
    {"LUAGENT_LOG_LEVEL", "verbose", "debug, info, warn or error"},
    {"LUAGENT_LOG_LEVEL", "warnings", "debug, info, warn or error"},
    {"LUAGENT_LOG_FORMAT", "xml", "json or text"},
    {"LUAGENT_AUTH", "none", "required or off"},
    {"LUAGENT_METRICS", "maybe", "on or off"},
    {"LUAGENT_TRACING", "yes please", "on or off"},
    {"LUAGENT_AUTH", "false", "required or off"},
    {"LUAGENT_RATE_LIMIT", "600", "N/min"},
    {"LUAGENT_RATE_LIMIT", "600/day", "N/min"},
    {"LUAGENT_RATE_LIMIT", "/min", "N/min"},
    {"LUAGENT_RATE_LIMIT", "0/min", "N/min"},
    {"LUAGENT_RATE_LIMIT", "10/", "N/min"},
    {"LUAGENT_RATE_LIMIT", "10 /min", "N/min"},
    {"LUAGENT_RATE_LIMIT", "ten/min", "N/min"},
    {"LUAGENT_RATE_LIMIT", "10/min/x", "N/min"},
    {"LUAGENT_LISTEN", "8000", "host:port"},
    {"LUAGENT_LISTEN", "localhost", "host:port"},
    {"LUAGENT_LISTEN", "localhost:", "host:port"},
    {"LUAGENT_LISTEN", "localhost:0", "host:port"},
    {"LUAGENT_LISTEN", "localhost:65536", "host:port"},
    {"LUAGENT_LISTEN", "localhost:http", "host:port"},
    {"LUAGENT_LISTEN", "::1:8000", "host:port"},
    {"LUAGENT_LISTEN", "[::1]8000", "host:port"},
    {"LUAGENT_LISTEN", "[::1:8000", "host:port"},
    {"LUAGENT_LISTEN", "[]:8000", "host:port"},
    {"LUAGENT_LISTEN", "a b:8000", "host:port"},
    {"LUAGENT_LISTEN", "http://x:8000", "host:port"},
    {"LUAGENT_HEALTH_LISTEN", "9090", "host:port"},
    {"LUAGENT_HEALTH_LISTEN", "x:99999", "host:port"},
    {"OPENAI_BASE_URL", "api.openai.com/v1", "http:// or https:// URL"},
    {"OPENAI_BASE_URL", "ftp://x", "http:// or https:// URL"},
    {"ANTHROPIC_BASE_URL", "https://", "http:// or https:// URL"},
    {"ANTHROPIC_BASE_URL", "https://a b", "http:// or https:// URL"},
    {"GEMINI_BASE_URL", "ws://x", "http:// or https:// URL"},
};

static void test_validation_errors(void **state)
{
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        lg_config_t c;
        char err[512] = "";
        setenv(BAD[i].name, BAD[i].value, 1);
        int rc = lg_config_load(&c, MISSING_ENV, err, sizeof err);
        if (rc != -1)
            fail_msg("%s='%s' was accepted", BAD[i].name, BAD[i].value);
        assert_true(is_zero(&c)); /* nothing leaks or dangles on failure */
        char prefix[128], got[256];
        snprintf(prefix, sizeof prefix, "%s: expected ", BAD[i].name);
        snprintf(got, sizeof got, ", got '%s'", BAD[i].value);
        if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, BAD[i].expect) || !strstr(err, got))
            fail_msg("%s='%s': unexpected message '%s'", BAD[i].name, BAD[i].value, err);
        lg_config_free(&c);
        unsetenv(BAD[i].name);
    }
}

static void test_error_message_exact(void **state)
{
    lg_config_t c;
    char err[256];
    setenv("LUAGENT_WORKERS", "abc", 1);
    assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), -1);
    assert_string_equal(err, "LUAGENT_WORKERS: expected an integer from 1 to 256, got 'abc'");
    /* control characters are escaped and long values shortened */
    char longv[600];
    memset(longv, 'x', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    setenv("LUAGENT_LOG_LEVEL", "a\nb", 1);
    unsetenv("LUAGENT_WORKERS");
    assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), -1);
    assert_string_equal(err, "LUAGENT_LOG_LEVEL: expected debug, info, warn or error, got 'a\\x0ab'");
    setenv("LUAGENT_LOG_LEVEL", longv, 1);
    char big[2048];
    assert_int_equal(lg_config_load(&c, MISSING_ENV, big, sizeof big), -1);
    assert_non_null(strstr(big, "xxx...'"));
    assert_true(strlen(big) < 400);
    /* a small buffer truncates, and a NULL one is allowed */
    char tiny[8];
    assert_int_equal(lg_config_load(&c, MISSING_ENV, tiny, sizeof tiny), -1);
    assert_string_equal(tiny, "LUAGENT");
    assert_int_equal(lg_config_load(&c, MISSING_ENV, NULL, 0), -1);
}

static void test_first_error_in_table_order(void **state)
{
    lg_config_t c;
    char err[256];
    setenv("LUAGENT_LOG_FILE", "", 1);
    setenv("LUAGENT_DRAIN_TIMEOUT_MS", "x", 1);
    setenv("LUAGENT_WORKERS", "y", 1);
    assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), -1);
    assert_non_null(strstr(err, "LUAGENT_WORKERS:"));
}

static void test_secrets_not_echoed(void **state)
{
    static const struct {
        const char *name, *value;
    } cases[] = {
        {"DATABASE_URL", "mysql://user:hunter2@db/x"},
        {"DATABASE_URL", "hunter2"},
        {"DATABASE_URL", "postgres://user:hunter2 x@db/x"},
        {"REDIS_URL", "http://:hunter2@redis"},
        {"REDIS_URL", "hunter2"},
        {"OPENAI_API_KEY", "sk hunter2"},
        {"ANTHROPIC_API_KEY", "hunter2\n"},
        {"GEMINI_API_KEY", "hun\tter2 hunter2"},
        {"GOOGLE_API_KEY", "hunter2\r\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lg_config_t c;
        char err[512] = "";
        setenv(cases[i].name, cases[i].value, 1);
        assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), -1);
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s: expected ", cases[i].name);
        if (strncmp(err, prefix, strlen(prefix)) != 0)
            fail_msg("unexpected message '%s'", err);
        assert_non_null(strstr(err, "got an invalid value"));
        assert_null(strstr(err, "hunter2"));
        assert_null(strstr(err, "hun"));
        unsetenv(cases[i].name);
    }
}

static void test_secret_in_malformed_dotenv_not_echoed(void **state)
{
    lg_config_t c;
    char err[512];
    const char *p = write_tmp("OPENAI_API_KEY=ok\nsk-hunter2\n");
    assert_int_equal(lg_config_load(&c, p, err, sizeof err), -1);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s:2: ", p);
    assert_int_equal(strncmp(err, prefix, strlen(prefix)), 0);
    assert_null(strstr(err + strlen(prefix), "hunter2"));
    assert_null(strstr(err + strlen(prefix), "sk"));
}

static void test_listen_forms(void **state)
{
    static const struct {
        const char *in, *host;
        int port;
        const char *printed;
    } cases[] = {
        {"127.0.0.1:9000", "127.0.0.1", 9000, "127.0.0.1:9000"},
        {"[::1]:8000", "::1", 8000, "[::1]:8000"},
        {"[::]:65535", "::", 65535, "[::]:65535"},
        {":8000", "0.0.0.0", 8000, "0.0.0.0:8000"},
        {":1", "0.0.0.0", 1, "0.0.0.0:1"},
        {"localhost:80", "localhost", 80, "localhost:80"},
        {"[fe80::1%eth0]:8080", "fe80::1%eth0", 8080, "[fe80::1%eth0]:8080"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lg_config_t c;
        char err[256];
        setenv("LUAGENT_LISTEN", cases[i].in, 1);
        setenv("LUAGENT_HEALTH_LISTEN", cases[i].in, 1);
        assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), 0);
        assert_string_equal(c.listen_host, cases[i].host);
        assert_int_equal(c.listen_port, cases[i].port);
        assert_string_equal(c.health_listen, cases[i].printed);
        char *out = print_cfg(&c);
        char line[128];
        snprintf(line, sizeof line, "LUAGENT_LISTEN=%s", cases[i].printed);
        assert_true(has_line(out, line));
        snprintf(line, sizeof line, "LUAGENT_HEALTH_LISTEN=%s", cases[i].printed);
        assert_true(has_line(out, line));
        free(out);
        lg_config_free(&c);
    }
}

static void test_rate_limit_forms(void **state)
{
    static const struct {
        const char *in;
        int n, window;
        const char *printed;
    } cases[] = {
        {"600/min", 600, 60, "600/min"},   {"600/m", 600, 60, "600/min"},
        {"600/minute", 600, 60, "600/min"}, {"7/MIN", 7, 60, "7/min"},
        {"10/sec", 10, 1, "10/sec"},        {"10/s", 10, 1, "10/sec"},
        {"10/second", 10, 1, "10/sec"},     {"1000/hour", 1000, 3600, "1000/hour"},
        {"1000/h", 1000, 3600, "1000/hour"}, {"", 0, 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lg_config_t c;
        char err[256];
        setenv("LUAGENT_RATE_LIMIT", cases[i].in, 1);
        assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), 0);
        assert_int_equal(c.rate_limit, cases[i].n);
        assert_int_equal(c.rate_limit_window_s, cases[i].window);
        char *out = print_cfg(&c);
        char line[64];
        snprintf(line, sizeof line, "LUAGENT_RATE_LIMIT=%s", cases[i].printed);
        assert_true(has_line(out, line));
        free(out);
        lg_config_free(&c);
    }
}

static void test_log_level_forms(void **state)
{
    static const struct {
        const char *in;
        lg_log_level_t level;
        const char *printed;
    } cases[] = {
        {"debug", LG_LOG_DEBUG, "debug"}, {"DEBUG", LG_LOG_DEBUG, "debug"}, {"Info", LG_LOG_INFO, "info"},
        {"warn", LG_LOG_WARN, "warn"},    {"Warning", LG_LOG_WARN, "warn"}, {"ERROR", LG_LOG_ERROR, "error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lg_config_t c;
        char err[256];
        setenv("LUAGENT_LOG_LEVEL", cases[i].in, 1);
        assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), 0);
        assert_int_equal(c.log_level, cases[i].level);
        char *out = print_cfg(&c);
        char line[64];
        snprintf(line, sizeof line, "LUAGENT_LOG_LEVEL=%s", cases[i].printed);
        assert_true(has_line(out, line));
        free(out);
        lg_config_free(&c);
    }
}

static void test_empty_means_unset(void **state)
{
    const char *p = write_tmp("LUAGENT_LOG_LEVEL=debug\nLUAGENT_AGENTS_DIR=/from/dotenv\n");
    setenv("LUAGENT_WORKERS", "", 1);
    setenv("LUAGENT_AGENTS_DIR", "", 1);   /* set in the environment: wins over .env, empty: default */
    setenv("OPENAI_API_KEY", "", 1);
    setenv("OPENAI_BASE_URL", "", 1);
    setenv("DATABASE_URL", "", 1);
    setenv("LUAGENT_LISTEN", "", 1);
    setenv("LUAGENT_RATE_LIMIT", "", 1);
    setenv("LUAGENT_AUTH", "", 1);
    lg_config_t c;
    char err[256];
    assert_int_equal(lg_config_load(&c, p, err, sizeof err), 0);
    assert_int_equal(c.workers, expected_workers());
    assert_string_equal(c.agents_dir, "agents");
    assert_int_equal(c.log_level, LG_LOG_DEBUG); /* not in the environment: .env applies */
    assert_null(c.openai_api_key);
    assert_null(c.openai_base_url);
    assert_null(c.database_url);
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 8000);
    assert_int_equal(c.rate_limit, 0);
    assert_int_equal(c.auth, LG_AUTH_REQUIRED);
    lg_config_free(&c);
}

static void test_gemini_fallback(void **state)
{
    lg_config_t c;
    char err[256];
    setenv("GOOGLE_API_KEY", "google-key", 1);
    assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), 0);
    assert_string_equal(c.gemini_api_key, "google-key");
    lg_config_free(&c);

    setenv("GEMINI_API_KEY", "gemini-key", 1);
    assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), 0);
    assert_string_equal(c.gemini_api_key, "gemini-key");
    lg_config_free(&c);

    setenv("GEMINI_API_KEY", "", 1);
    assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), 0);
    assert_string_equal(c.gemini_api_key, "google-key");
    char *out = print_cfg(&c);
    assert_true(has_line(out, "GEMINI_API_KEY=***"));
    assert_null(strstr(out, "google-key"));
    assert_null(strstr(out, "GOOGLE_API_KEY"));
    free(out);
    lg_config_free(&c);

    /* the fallback also comes from .env */
    unsetenv("GEMINI_API_KEY");
    unsetenv("GOOGLE_API_KEY");
    const char *p = write_tmp("GOOGLE_API_KEY=from-dotenv\n");
    assert_int_equal(lg_config_load(&c, p, err, sizeof err), 0);
    assert_string_equal(c.gemini_api_key, "from-dotenv");
    lg_config_free(&c);
}

static void test_dotenv_parsing(void **state)
{
    const char *p = write_tmp(
        "\xEF\xBB\xBF# a comment\n"
        "\n"
        "   # indented comment\n"
        "LUAGENT_WORKERS=3\n"
        "export LUAGENT_AGENTS_DIR=/srv/agents\n"
        "export\tLUAGENT_PROVIDERS_DIR = /srv/providers   # trailing comment\n"
        "  LUAGENT_JWT_ISSUER  =  'single # not a comment \\n literal'  # comment\n"
        "LUAGENT_JWT_AUDIENCE=\"double \\\"quoted\\\" \\\\ tab\\tnl\\nend \\q\"\n"
        "LUAGENT_DEFAULT_MODEL=model#1\n"
        "LUAGENT_API_KEYS_FILE=keys.txt\r\n"
        "LUAGENT_JWT_PUBLIC_KEY=\"-----BEGIN PUBLIC KEY-----\n"
        "MIIB\n"
        "-----END PUBLIC KEY-----\"\n"
        "LUAGENT_TLS_CERT= \n"
        "LUAGENT_TLS_KEY=  # only a comment\n"
        "LUAGENT_SPILL_DIR=first\n"
        "LUAGENT_SPILL_DIR=second\n"
        "LUAGENT_LOG_FILE=''\n"
        "LUAGENT_SECRET_KEY='a=b=c'\n"
        "UNRELATED_VARIABLE=whatever goes\n"
        "export=1\n"
        "LUAGENT_LOG_FORMAT=text");
    lg_config_t c;
    char err[256] = "";
    if (lg_config_load(&c, p, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(c.workers, 3);
    assert_string_equal(c.agents_dir, "/srv/agents");
    assert_string_equal(c.providers_dir, "/srv/providers");
    assert_string_equal(c.jwt_issuer, "single # not a comment \\n literal");
    assert_string_equal(c.jwt_audience, "double \"quoted\" \\ tab\tnl\nend \\q");
    assert_string_equal(c.default_model, "model#1");
    assert_string_equal(c.api_keys_file, "keys.txt");
    assert_string_equal(c.jwt_public_key, "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----");
    assert_null(c.tls_cert);
    assert_null(c.tls_key);
    assert_string_equal(c.spill_dir, "second");
    assert_null(c.log_file);
    assert_string_equal(c.secret_key, "a=b=c");
    assert_int_equal(c.log_format, LG_LOG_TEXT);

    /* a multi-line value prints on one line, quoted, so the output reads back as .env */
    char *out = print_cfg(&c);
    assert_true(has_line(out, "LUAGENT_JWT_PUBLIC_KEY=\"-----BEGIN PUBLIC KEY-----\\nMIIB\\n-----END PUBLIC KEY-----\""));
    assert_true(has_line(out, "LUAGENT_JWT_ISSUER=\"single # not a comment \\\\n literal\""));
    assert_true(has_line(out, "LUAGENT_SECRET_KEY=***"));
    free(out);
    lg_config_free(&c);
}

static void test_dotenv_empty_file(void **state)
{
    lg_config_t c;
    char err[256];
    const char *p = write_tmp("");
    assert_int_equal(lg_config_load(&c, p, err, sizeof err), 0);
    assert_string_equal(c.agents_dir, "agents");
    lg_config_free(&c);
}

static void test_dotenv_malformed(void **state)
{
    static const struct {
        const char *content;
        int line;
        const char *expect;
    } cases[] = {
        {"A=1\nB=2\nnot a line\n", 3, "expected KEY=VALUE"},
        {"A=1\n\n=x\n", 3, "expected KEY=VALUE"},
        {"# c\n1ABC=2\n", 2, "expected KEY=VALUE"},
        {"KEY\n", 1, "expected KEY=VALUE"},
        {"export\n", 1, "expected KEY=VALUE"},
        {"export KEY\n", 1, "expected KEY=VALUE"},
        {"A-B=1\n", 1, "expected KEY=VALUE"},
        {"A=1\nX='unterminated\nmore\n", 2, "unterminated single-quoted value"},
        {"A=1\nB=2\nX=\"unterminated\\\"\n", 3, "unterminated double-quoted value"},
        {"X=\"a\nb\" junk\nY=1\n", 2, "unexpected text after the closing quote"},
        {"X='ok'junk\n", 1, "unexpected text after the closing quote"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lg_config_t c;
        char err[512] = "";
        const char *p = write_tmp(cases[i].content);
        assert_int_equal(lg_config_load(&c, p, err, sizeof err), -1);
        assert_true(is_zero(&c));
        char prefix[128];
        snprintf(prefix, sizeof prefix, "%s:%d: ", p, cases[i].line);
        if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, cases[i].expect))
            fail_msg("case %zu: expected '%s...%s', got '%s'", i, prefix, cases[i].expect, err);
        unlink(p);
        g_npaths--;
    }
}

static void test_dotenv_nul_byte(void **state)
{
    char path[] = "/tmp/lg_test_env_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char content[] = "A=1\nB=x\0y\n";
    assert_int_equal(write(fd, content, sizeof content - 1), (ssize_t)(sizeof content - 1));
    close(fd);
    lg_config_t c;
    char err[256];
    assert_int_equal(lg_config_load(&c, path, err, sizeof err), -1);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s:2: ", path);
    assert_int_equal(strncmp(err, prefix, strlen(prefix)), 0);
    unlink(path);
}

static void test_dotenv_unreadable(void **state)
{
    char dir[] = "/tmp/lg_test_dir_XXXXXX";
    assert_non_null(mkdtemp(dir));
    lg_config_t c;
    char err[256] = "";
    assert_int_equal(lg_config_load(&c, dir, err, sizeof err), -1); /* a directory */
    assert_int_equal(strncmp(err, dir, strlen(dir)), 0);
    assert_true(is_zero(&c));
    rmdir(dir);
}

static void test_dotenv_value_validated(void **state)
{
    lg_config_t c;
    char err[256];
    const char *p = write_tmp("LUAGENT_WORKERS=abc\n");
    assert_int_equal(lg_config_load(&c, p, err, sizeof err), -1);
    assert_string_equal(err, "LUAGENT_WORKERS: expected an integer from 1 to 256, got 'abc'");
    /* a valid environment value hides the bad .env one */
    setenv("LUAGENT_WORKERS", "4", 1);
    assert_int_equal(lg_config_load(&c, p, err, sizeof err), 0);
    assert_int_equal(c.workers, 4);
    lg_config_free(&c);
}

static void test_env_wins_over_dotenv(void **state)
{
    const char *p = write_tmp("LUAGENT_WORKERS=3\nLUAGENT_LOG_LEVEL=debug\nOPENAI_API_KEY=from-file\n"
                              "LUAGENT_LISTEN=127.0.0.1:7000\n");
    setenv("LUAGENT_WORKERS", "5", 1);
    setenv("OPENAI_API_KEY", "from-env", 1);
    lg_config_t c;
    char err[256];
    assert_int_equal(lg_config_load(&c, p, err, sizeof err), 0);
    assert_int_equal(c.workers, 5);
    assert_string_equal(c.openai_api_key, "from-env");
    assert_int_equal(c.log_level, LG_LOG_DEBUG);
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.listen_port, 7000);
    lg_config_free(&c);
    /* .env is never exported into the environment */
    assert_null(getenv("LUAGENT_LOG_LEVEL"));
    assert_null(getenv("LUAGENT_LISTEN"));
}

static void test_dotenv_default_path_is_cwd(void **state)
{
    char dir[] = "/tmp/lg_test_dir_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char old[4096];
    assert_non_null(getcwd(old, sizeof old));
    assert_int_equal(chdir(dir), 0);
    FILE *f = fopen(".env", "w");
    assert_non_null(f);
    fputs("LUAGENT_WORKERS=7\n", f);
    fclose(f);
    lg_config_t c;
    char err[256];
    int rc = lg_config_load(&c, NULL, err, sizeof err);
    unlink(".env");
    lg_config_t c2;
    int rc2 = lg_config_load(&c2, NULL, err, sizeof err); /* a missing .env is fine */
    if (rc2 == 0)
        lg_config_free(&c2);
    assert_int_equal(chdir(old), 0);
    rmdir(dir);
    assert_int_equal(rc, 0);
    assert_int_equal(c.workers, 7);
    lg_config_free(&c);
    assert_int_equal(rc2, 0);
}

static void test_print_redaction(void **state)
{
    setenv("DATABASE_URL", "postgres://user:pg-pass@db:5432/luagent?sslmode=require&password=pg-pass2", 1);
    setenv("REDIS_URL", "redis://:redis-pass@redis:6379/0", 1);
    setenv("OPENAI_API_KEY", "sk-openai-secret", 1);
    setenv("OPENAI_BASE_URL", "https://proxyuser:proxy-pass@proxy.example.com/v1", 1);
    setenv("ANTHROPIC_API_KEY", "sk-ant-secret", 1);
    setenv("GEMINI_API_KEY", "gemini-secret", 1);
    setenv("LUAGENT_JWT_SECRET", "jwt-secret", 1);
    setenv("LUAGENT_SECRET_KEY", "at-rest-secret", 1);
    setenv("LUAGENT_CALLBACK_SECRET", "callback-secret", 1);
    lg_config_t c;
    char err[256];
    assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), 0);
    char *out = print_cfg(&c);
    assert_true(has_line(out, "DATABASE_URL=postgres://user:***@db:5432/luagent?sslmode=require&password=***"));
    assert_true(has_line(out, "REDIS_URL=redis://:***@redis:6379/0"));
    assert_true(has_line(out, "OPENAI_API_KEY=***"));
    assert_true(has_line(out, "OPENAI_BASE_URL=https://proxyuser:***@proxy.example.com/v1"));
    assert_true(has_line(out, "ANTHROPIC_API_KEY=***"));
    assert_true(has_line(out, "ANTHROPIC_BASE_URL="));
    assert_true(has_line(out, "GEMINI_API_KEY=***"));
    assert_true(has_line(out, "LUAGENT_JWT_SECRET=***"));
    assert_true(has_line(out, "LUAGENT_SECRET_KEY=***"));
    assert_true(has_line(out, "LUAGENT_CALLBACK_SECRET=***"));
    static const char *const secrets[] = {"pg-pass", "redis-pass", "proxy-pass", "sk-openai-secret",
                                          "sk-ant-secret", "gemini-secret", "jwt-secret", "at-rest-secret",
                                          "callback-secret"};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        if (strstr(out, secrets[i]))
            fail_msg("'%s' printed:\n%s", secrets[i], out);
    free(out);
    lg_config_free(&c);
}

static void test_print_url_forms(void **state)
{
    static const struct {
        const char *name, *in, *out;
    } cases[] = {
        {"DATABASE_URL", "postgresql://app@db/luagent", "postgresql://app@db/luagent"},
        {"DATABASE_URL", "postgres://db/luagent", "postgres://db/luagent"},
        {"DATABASE_URL", "postgres://u:p/w?x@db/luagent", "postgres://u:***@db/luagent"},
        {"DATABASE_URL", "postgres://u:p@ss@db/luagent", "postgres://u:***@db/luagent"},
        {"DATABASE_URL", "postgres:///luagent?host=/run/pg&PASSWORD=xyz", "postgres:///luagent?host=/run/pg&PASSWORD=***"},
        {"DATABASE_URL", "host=db user=app password=s3cret dbname=luagent", "host=db user=app password=*** dbname=luagent"},
        {"DATABASE_URL", "host=db password = 'two words\\' quote' port=5432", "host=db password = *** port=5432"},
        {"DATABASE_URL", "dbname=luagent", "dbname=luagent"},
        {"REDIS_URL", "redis://token@redis:6379", "redis://***@redis:6379"},
        {"REDIS_URL", "rediss://default:pw@redis:6380/1", "rediss://default:***@redis:6380/1"},
        {"REDIS_URL", "unix://:pw@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"},
        {"REDIS_URL", "redis://redis:6379", "redis://redis:6379"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lg_config_t c;
        char err[256] = "";
        setenv(cases[i].name, cases[i].in, 1);
        if (lg_config_load(&c, MISSING_ENV, err, sizeof err) != 0)
            fail_msg("'%s' rejected: %s", cases[i].in, err);
        assert_string_equal(cases[i].name[0] == 'D' ? c.database_url : c.redis_url, cases[i].in);
        char *out = print_cfg(&c);
        char line[256];
        snprintf(line, sizeof line, "%s=%s", cases[i].name, cases[i].out);
        if (!has_line(out, line))
            fail_msg("expected line '%s' in:\n%s", line, out);
        free(out);
        lg_config_free(&c);
        unsetenv(cases[i].name);
    }
}

static void test_tls_pair(void **state)
{
    lg_config_t c;
    char err[256];
    setenv("LUAGENT_TLS_CERT", "cert.pem", 1);
    assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), -1);
    assert_int_equal(strncmp(err, "LUAGENT_TLS_KEY: ", 17), 0);
    unsetenv("LUAGENT_TLS_CERT");
    setenv("LUAGENT_TLS_KEY", "key.pem", 1);
    assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), -1);
    assert_int_equal(strncmp(err, "LUAGENT_TLS_CERT: ", 18), 0);
}

/** The printed settings read back as a .env file give the same settings. */
static void test_print_round_trip(void **state)
{
    setenv("LUAGENT_LISTEN", "[::1]:8001", 1);
    setenv("LUAGENT_WORKERS", "9", 1);
    setenv("LUAGENT_JWT_PUBLIC_KEY", "-----BEGIN-----\nAB\"C\\D\n-----END-----\n", 1);
    setenv("LUAGENT_JWT_ISSUER", " spaced ", 1);
    setenv("LUAGENT_JWT_AUDIENCE", "a #b", 1);
    setenv("LUAGENT_DEFAULT_MODEL", "'quoted'", 1);
    setenv("LUAGENT_RATE_LIMIT", "5/h", 1);
    setenv("LUAGENT_LOG_FORMAT", "text", 1);
    setenv("DATABASE_URL", "host=db dbname=x", 1);
    lg_config_t c;
    char err[256];
    assert_int_equal(lg_config_load(&c, MISSING_ENV, err, sizeof err), 0);
    char *first = print_cfg(&c);
    lg_config_free(&c);
    clean_env();
    const char *p = write_tmp(first);
    if (lg_config_load(&c, p, err, sizeof err) != 0)
        fail_msg("%s\n%s", err, first);
    assert_string_equal(c.jwt_public_key, "-----BEGIN-----\nAB\"C\\D\n-----END-----\n");
    assert_string_equal(c.jwt_issuer, " spaced ");
    assert_string_equal(c.jwt_audience, "a #b");
    assert_string_equal(c.default_model, "'quoted'");
    char *second = print_cfg(&c);
    assert_string_equal(first, second);
    free(first);
    free(second);
    lg_config_free(&c);
}

/** A reload keeps what only a restart changes (and names it), and takes the rest. */
static void test_keep_restart_only(void **state)
{
    lg_config_t old, fresh;
    char err[256], changed[256];
    setenv("LUAGENT_LISTEN", "127.0.0.1:9000", 1);
    setenv("LUAGENT_WORKERS", "3", 1);
    setenv("REDIS_URL", "redis://a:6379", 1);
    setenv("LUAGENT_EXEC_TIMEOUT_MS", "1000", 1);
    assert_int_equal(lg_config_load(&old, MISSING_ENV, err, sizeof err), 0);
    assert_int_equal(lg_config_load(&fresh, MISSING_ENV, err, sizeof err), 0);
    assert_int_equal(lg_config_keep_restart_only(&fresh, &old, changed, sizeof changed), 0);
    assert_string_equal(changed, "");
    lg_config_free(&fresh);

    setenv("LUAGENT_LISTEN", "[::1]:9001", 1);
    setenv("LUAGENT_WORKERS", "4", 1);
    unsetenv("REDIS_URL");
    setenv("LUAGENT_WATCH", "off", 1);
    setenv("LUAGENT_EXEC_TIMEOUT_MS", "2000", 1);
    setenv("LUAGENT_LOG_LEVEL", "debug", 1);
    assert_int_equal(lg_config_load(&fresh, MISSING_ENV, err, sizeof err), 0);
    assert_int_equal(lg_config_keep_restart_only(&fresh, &old, changed, sizeof changed), 4);
    assert_string_equal(changed, "LUAGENT_LISTEN, LUAGENT_WORKERS, REDIS_URL, LUAGENT_WATCH");
    assert_string_equal(fresh.listen_host, "127.0.0.1");
    assert_int_equal(fresh.listen_port, 9000);
    assert_int_equal(fresh.workers, 3);
    assert_string_equal(fresh.redis_url, "redis://a:6379");
    assert_int_equal(fresh.watch, 1);
    assert_int_equal(fresh.exec_timeout_ms, 2000); /* reloadable: the new value */
    assert_int_equal(fresh.log_level, LG_LOG_DEBUG);
    lg_config_free(&fresh);
    lg_config_free(&old);
}

/** .env.example names every printed variable, and read with its assignments uncommented gives the
 *  defaults. Skipped when not run from the repository root. */
static void test_env_example(void **state)
{
    FILE *f = fopen(".env.example", "r");
    if (!f) {
        skip();
        return;
    }
    char *text = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&text, &n);
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        /* "# NAME=value" -> "NAME=value" */
        const char *s = line;
        if (s[0] == '#' && s[1] == ' ' && s[2] >= 'A' && s[2] <= 'Z' && strchr(s, '=') &&
            strspn(s + 2, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == (size_t)(strchr(s, '=') - s - 2))
            s += 2;
        fputs(s, m);
    }
    fclose(f);
    fclose(m);
    const char *p = write_tmp(text);

    lg_config_t c, d;
    char err[256];
    if (lg_config_load(&c, p, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(lg_config_load(&d, MISSING_ENV, err, sizeof err), 0);
    char *a = print_cfg(&c), *b = print_cfg(&d);
    assert_string_equal(a, b);
    /* every printed name is documented */
    for (char *l = b; *l;) {
        char *nl = strchr(l, '\n');
        char *eq = strchr(l, '=');
        char name[64];
        snprintf(name, sizeof name, "\n%.*s=", (int)(eq - l), l);
        if (!strstr(text, name))
            fail_msg(".env.example lacks %s", name + 1);
        l = nl + 1;
    }
    assert_non_null(strstr(text, "\nGOOGLE_API_KEY="));
    free(a);
    free(b);
    free(text);
    lg_config_free(&c);
    lg_config_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_defaults),
        T(test_print_defaults),
        T(test_valid_values),
        T(test_integer_bounds),
        T(test_validation_errors),
        T(test_error_message_exact),
        T(test_first_error_in_table_order),
        T(test_secrets_not_echoed),
        T(test_secret_in_malformed_dotenv_not_echoed),
        T(test_listen_forms),
        T(test_rate_limit_forms),
        T(test_log_level_forms),
        T(test_empty_means_unset),
        T(test_gemini_fallback),
        T(test_dotenv_parsing),
        T(test_dotenv_empty_file),
        T(test_dotenv_malformed),
        T(test_dotenv_nul_byte),
        T(test_dotenv_unreadable),
        T(test_dotenv_value_validated),
        T(test_env_wins_over_dotenv),
        T(test_dotenv_default_path_is_cwd),
        T(test_print_redaction),
        T(test_print_url_forms),
        T(test_tls_pair),
        T(test_print_round_trip),
        T(test_keep_restart_only),
        T(test_env_example),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

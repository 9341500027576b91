#include "luagent/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* g_level and g_file_fd change on SIGHUP (lg_log_reopen) while workers log: atomic, relaxed */
static _Atomic lg_log_level_t g_level = LG_LOG_INFO;
static lg_log_format_t g_format = LG_LOG_JSON;
static _Atomic int g_file_fd = -1;
static __thread int tl_buffered;
static __thread lg_buf_t tl_pending;
static __thread time_t tl_ts_sec = -1;
static __thread int tl_line_off; /* the line being built is below the log level */
static __thread char tl_ts_prefix[32]; /* "2026-11-25T23:08:42." */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

const char *lg_log_level_name(lg_log_level_t level) { return level_names[level]; }

void lg_log_setup(lg_log_level_t level, lg_log_format_t format, const char *file)
{
    g_level = level;
    g_format = format;
    if (file != NULL && *file != '\0') {
        g_file_fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (g_file_fd < 0)
            lg_log(LG_LOG_WARN, "cannot open LUAGENT_LOG_FILE; logging to stderr only");
    }
}

void lg_log_reopen(lg_log_level_t level, const char *file)
{
    atomic_store_explicit(&g_level, level, memory_order_relaxed);
    int old = atomic_load(&g_file_fd);
    if (file == NULL || *file == '\0') {
        if (old >= 0 && atomic_exchange(&g_file_fd, -1) == old)
            close(old); /* a line being written by a worker now may be lost, never misdirected */
        return;
    }
    int fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        lg_log(LG_LOG_WARN, "cannot reopen LUAGENT_LOG_FILE (%s); logging to stderr only", strerror(errno));
        return;
    }
    if (old < 0)
        atomic_store(&g_file_fd, fd);
    else { /* the same descriptor number now names the new file: writers never see a closed fd */
        dup2(fd, old);
        close(fd);
    }
}

int lg_log_enabled(lg_log_level_t level) { return level >= atomic_load_explicit(&g_level, memory_order_relaxed); }

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0)
            return; /* nowhere to report a failing log sink */
        p += w;
        n -= (size_t)w;
    }
}

static void emit(const char *p, size_t n)
{
    write_all(2, p, n);
    int fd = atomic_load_explicit(&g_file_fd, memory_order_relaxed);
    if (fd >= 0)
        write_all(fd, p, n);
}

void lg_log_buffered(int on)
{
    if (!on) {
        lg_log_flush();
        lg_buf_free(&tl_pending);
    }
    tl_buffered = on;
}

void lg_log_flush(void)
{
    if (tl_pending.len == 0)
        return;
    emit(tl_pending.data, tl_pending.len);
    lg_buf_reset(&tl_pending);
    if (tl_pending.cap > (1 << 20))
        lg_buf_free(&tl_pending);
}

static void put_ts(lg_buf_t *b)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != tl_ts_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(tl_ts_prefix, sizeof(tl_ts_prefix), "%Y-%m-%dT%H:%M:%S.", &tm);
        tl_ts_sec = ts.tv_sec;
    }
    lg_buf_printf(b, "%s%03ldZ", tl_ts_prefix, ts.tv_nsec / 1000000);
}

void lg_log_begin(lg_buf_t *b, lg_log_level_t level, const char *msg, size_t msglen)
{
    lg_buf_reset(b);
    tl_line_off = !lg_log_enabled(level);
    if (g_format == LG_LOG_JSON) {
        lg_buf_lit(b, "{\"ts\":\"");
        put_ts(b);
        lg_buf_printf(b, "\",\"level\":\"%s\",\"msg\":", level_names[level]);
        lg_buf_json_str(b, msg, msglen);
    } else {
        put_ts(b);
        lg_buf_printf(b, " %-5s ", level_names[level]);
        lg_buf_append(b, msg, msglen);
    }
}

static void put_key(lg_buf_t *b, const char *key)
{
    if (g_format == LG_LOG_JSON) {
        lg_buf_putc(b, ',');
        lg_buf_json_str(b, key, strlen(key));
        lg_buf_putc(b, ':');
    } else {
        lg_buf_putc(b, ' ');
        lg_buf_append(b, key, strlen(key));
        lg_buf_putc(b, '=');
    }
}

void lg_log_kv_str(lg_buf_t *b, const char *key, const char *val, size_t len)
{
    put_key(b, key);
    if (g_format == LG_LOG_JSON || memchr(val, ' ', len) != NULL || memchr(val, '\n', len) != NULL)
        lg_buf_json_str(b, val, len);
    else
        lg_buf_append(b, val, len);
}

void lg_log_kv_cstr(lg_buf_t *b, const char *key, const char *val)
{
    if (val != NULL)
        lg_log_kv_str(b, key, val, strlen(val));
}

void lg_log_kv_int(lg_buf_t *b, const char *key, int64_t v)
{
    put_key(b, key);
    lg_buf_printf(b, "%lld", (long long)v);
}

void lg_log_kv_num(lg_buf_t *b, const char *key, double v)
{
    put_key(b, key);
    lg_buf_printf(b, "%.3f", v);
}

void lg_log_kv_json(lg_buf_t *b, const char *key, const char *json, size_t len)
{
    put_key(b, key);
    lg_buf_append(b, json, len);
}

void lg_log_end(lg_buf_t *b)
{
    if (tl_line_off)
        return;
    if (g_format == LG_LOG_JSON)
        lg_buf_putc(b, '}');
    lg_buf_putc(b, '\n');
    if (tl_buffered) {
        lg_buf_append(&tl_pending, b->data, b->len);
        if (tl_pending.len > 64 * 1024)
            lg_log_flush();
    } else {
        emit(b->data, b->len);
    }
}

void lg_log(lg_log_level_t level, const char *fmt, ...)
{
    if (!lg_log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(msg))
        n = sizeof(msg) - 1;
    lg_buf_t b = {0};
    lg_log_begin(&b, level, msg, (size_t)n);
    lg_log_end(&b);
    lg_buf_free(&b);
}

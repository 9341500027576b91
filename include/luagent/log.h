/**
 * log.h - structured logging: one JSON object per line on stderr (and LUAGENT_LOG_FILE).
 *
 * A line is built in a caller-owned buffer: lg_log_begin() writes ts/level/msg, lg_log_kv_*() add
 * fields, lg_log_end() terminates and emits it. Lines are written whole with one write(2) per flush,
 * so lines from several threads never interleave. A thread that calls lg_log_buffered(1) (the
 * workers) keeps its lines in a per-thread buffer until lg_log_flush(), which the worker calls once
 * per event-loop iteration: the access log costs no syscall per request.
 * With LUAGENT_LOG_FORMAT=text the same fields are printed as `ts LEVEL msg key=value ...`.
 * Secrets must never be passed as fields: callers log names, never credential values.
 */
#ifndef LUAGENT_LOG_H
#define LUAGENT_LOG_H

#include <stdint.h>

#include "luagent/buf.h"
#include "luagent/config.h"

void lg_log_setup(lg_log_level_t level, lg_log_format_t format, const char *file);
/** SIGHUP: take a new level, and reopen LUAGENT_LOG_FILE (so a rotated file is let go; NULL: stop
 *  writing one). Safe while other threads log. */
void lg_log_reopen(lg_log_level_t level, const char *file);
int lg_log_enabled(lg_log_level_t level);
void lg_log_buffered(int on);
void lg_log_flush(void);

void lg_log_begin(lg_buf_t *b, lg_log_level_t level, const char *msg, size_t msglen);
void lg_log_kv_str(lg_buf_t *b, const char *key, const char *val, size_t len);
void lg_log_kv_cstr(lg_buf_t *b, const char *key, const char *val); /* NULL -> field omitted */
void lg_log_kv_int(lg_buf_t *b, const char *key, int64_t v);
void lg_log_kv_num(lg_buf_t *b, const char *key, double v);
/** Append a field whose value is already JSON text (ignored in text format if not a scalar). */
void lg_log_kv_json(lg_buf_t *b, const char *key, const char *json, size_t len);
void lg_log_end(lg_buf_t *b);

/** One-shot convenience: a line with just a message (printf-style). */
void lg_log(lg_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

const char *lg_log_level_name(lg_log_level_t level);

#endif

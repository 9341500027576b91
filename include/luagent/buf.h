/**
 * buf.h - growable byte buffer used for JSON output, log lines and SSE frames.
 *
 * Contract: a zero-initialised lg_buf_t is a valid empty buffer. Appending never fails silently:
 * on allocation failure the process aborts (as h2o does), so callers need no error paths.
 * `data` is always NUL-terminated after any append (the terminator is not counted in `len`).
 */
#ifndef LUAGENT_BUF_H
#define LUAGENT_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct lg_buf {
    char *data;
    size_t len;
    size_t cap;
} lg_buf_t;

/** Make room for `extra` more bytes (plus the terminator). Returns the write position. */
char *lg_buf_reserve(lg_buf_t *b, size_t extra);
void lg_buf_append(lg_buf_t *b, const void *p, size_t n);
void lg_buf_printf(lg_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Append `s` as a JSON string literal (quotes included), escaping control chars, '"' and '\\'.
 *  Bytes >= 0x80 are copied as they are (callers pass valid UTF-8). */
void lg_buf_json_str(lg_buf_t *b, const char *s, size_t n);
/** Append an unsigned integer in decimal. */
void lg_buf_u64(lg_buf_t *b, uint64_t v);
/** Append a non-negative number with exactly three decimals (durations in ms), without printf. */
void lg_buf_fixed3(lg_buf_t *b, double v);
/** Release memory; the buffer is empty and reusable afterwards. */
void lg_buf_free(lg_buf_t *b);

static inline void lg_buf_reset(lg_buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static inline void lg_buf_putc(lg_buf_t *b, char c)
{
    if (b->len + 2 > b->cap)
        lg_buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

#define lg_buf_lit(b, s) lg_buf_append((b), (s), sizeof(s) - 1)
#define LG_STRLIT(s) (s), (sizeof(s) - 1)

#endif

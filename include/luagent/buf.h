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
static inline void lg_buf_append(lg_buf_t *b, const void *p, size_t n);
void lg_buf_printf(lg_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Append `s` as a JSON string literal (quotes included): control chars, '"' and '\\' escaped,
 *  valid UTF-8 copied as it is, each byte of an invalid sequence replaced by U+FFFD, so the output
 *  is always valid JSON whatever the input (agent error messages, log fields, encoded values). */
void lg_buf_json_str(lg_buf_t *b, const char *s, size_t n);
/** Append an unsigned integer in decimal. */
void lg_buf_u64(lg_buf_t *b, uint64_t v);
/** Append a non-negative number with exactly three decimals (durations in ms), without printf. */
void lg_buf_fixed3(lg_buf_t *b, double v);
/** Release memory; the buffer is empty and reusable afterwards. */
void lg_buf_free(lg_buf_t *b);

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if the bytes there are not one
 * (overlong forms, surrogates, > U+10FFFF, truncation all refused). */
static inline size_t lg_utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t avail = (size_t)(end - p);
    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0;
    if (c < 0xE0)
        return (avail >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c < 0xF0) {
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        if (avail < 3 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80)
            return 0;
        return 3;
    }
    if (c < 0xF5) {
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        if (avail < 4 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        return 4;
    }
    return 0;
}

/* Bytes a JSON string cannot carry as they are: '"', '\\', a control byte (< 0x20), or a byte
 * >= 0x80 (UTF-8 to validate). lg_json_special8 checks the 8 lanes of v at once (portable SWAR):
 * a lane's top bit is set in the result when it is '"' or '\\' (a zero after XOR), < 0x20 (it
 * borrows on subtracting 0x20) or >= 0x80; 0 means all 8 are plain. Borrows only run from a marked
 * lane to the lanes above it, so the lowest mark is always a real one (higher ones may not be). */
static inline uint64_t lg_json_special8(uint64_t v)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');
    return (((q - ones) & ~q) | ((b - ones) & ~b) | ((v - ones * 0x20) & ~v) | v) & high;
}

/* How many of the 8 bytes at p (all readable) come before the first special one; 8 if none. */
static inline unsigned lg_json_plain8(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    uint64_t m = lg_json_special8(v);
    if (m == 0)
        return 8;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && defined(__GNUC__)
    return (unsigned)__builtin_ctzll(m) >> 3; /* p[0] is the lowest lane */
#else
    unsigned i = 0;
    while (p[i] >= 0x20 && p[i] < 0x80 && p[i] != '"' && p[i] != '\\')
        i++;
    return i;
#endif
}

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

/* inline: most appends are short literals, which the compiler then copies without a call */
static inline void lg_buf_append(lg_buf_t *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap)
        lg_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

#define lg_buf_lit(b, s) lg_buf_append((b), (s), sizeof(s) - 1)
#define LG_STRLIT(s) (s), (sizeof(s) - 1)

#endif

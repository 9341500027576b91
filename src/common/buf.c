#include "luagent/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

char *lg_buf_reserve(lg_buf_t *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (p == NULL)
            abort();
        b->data = p;
        b->cap = cap;
    }
    return b->data + b->len;
}

void lg_buf_printf(lg_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *dst = lg_buf_reserve(b, 64);
    size_t room = b->cap - b->len;
    int n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= room) {
        dst = lg_buf_reserve(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(dst, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

/* 1: needs escaping (control, '"', '\\'), 2: starts a multi-byte sequence, 0: copied as it is */
static const unsigned char enc_cls[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

void lg_buf_json_str(lg_buf_t *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str, *end = s + n;
    /* Output per input byte is at most 6 (\u00XX); reserve per chunk so a huge string does not
     * reserve 6x its size at once. A sequence may end up to 3 bytes past its chunk. */
    size_t chunk = n > 4096 ? 4096 : n;
    if (b->len + chunk * 6 + 16 + 1 > b->cap) /* lg_buf_reserve's test, without the call */
        lg_buf_reserve(b, chunk * 6 + 16);
    char *o0 = b->data + b->len, *o = o0;
    const unsigned char *cend = s + chunk;
    *o++ = '"';
    for (;;) {
        /* Plain bytes 8 at a time while 8 remain in the chunk: all 8 are copied, o and s move past
         * the plain ones only. The copy stays inside the reservation: o - o0 is at most 1 + 6 per
         * chunk byte read so far, and these 8 are still unread. Entered only at a plain byte before
         * cend (so s <= cend inside; a sequence can end past cend), not straight after another one
         * (UTF-8 text runs on). */
        if (s < cend && enc_cls[*s] == 0) {
            for (;;) {
                size_t t = (size_t)(cend - s);
                if (t < 8) {
                    if (t >= 4) { /* 4..7 left: test them at once as two overlapping 4-byte halves */
                        uint32_t lo, hi;
                        memcpy(&lo, s, 4);
                        memcpy(&hi, s + t - 4, 4);
                        if (lg_json_special8(lo | (uint64_t)hi << 32) == 0) {
                            memcpy(o, s, 4);
                            memcpy(o + t - 4, s + t - 4, 4);
                            o += t;
                            s += t;
                            break;
                        }
                    }
                    while (s < cend && enc_cls[*s] == 0)
                        *o++ = (char)*s++;
                    break;
                }
                unsigned k = lg_json_plain8(s);
                memcpy(o, s, 8);
                s += k;
                o += k;
                if (k < 8)
                    break;
            }
        }
        if (s >= cend) {
            if (s >= end)
                break;
            b->len += (size_t)(o - o0);
            chunk = (size_t)(end - s) > 4096 ? 4096 : (size_t)(end - s);
            o0 = o = lg_buf_reserve(b, chunk * 6 + 16);
            cend = s + chunk;
            continue;
        }
        unsigned c = *s;
        if (c < 0x80) {
            *o++ = '\\';
            switch (c) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case '\n': *o++ = 'n'; break;
            case '\r': *o++ = 'r'; break;
            case '\t': *o++ = 't'; break;
            case '\b': *o++ = 'b'; break;
            case '\f': *o++ = 'f'; break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hex[c >> 4];
                *o++ = hex[c & 15];
            }
            s++;
        } else {
            size_t k = lg_utf8_len(s, end);
            if (k) {
                memcpy(o, s, k);
                o += k;
                s += k;
            } else {
                memcpy(o, "\xEF\xBF\xBD", 3); /* U+FFFD */
                o += 3;
                s++;
            }
        }
    }
    *o++ = '"';
    b->len += (size_t)(o - o0);
    b->data[b->len] = '\0';
}

void lg_buf_free(lg_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void lg_buf_u64(lg_buf_t *b, uint64_t v)
{
    char tmp[24], *p = tmp + sizeof(tmp);
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    lg_buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

void lg_buf_fixed3(lg_buf_t *b, double v)
{
    if (!(v >= 0 && v < 1e15)) {
        lg_buf_printf(b, "%.3f", v);
        return;
    }
    uint64_t m = (uint64_t)(v * 1000.0 + 0.5);
    lg_buf_u64(b, m / 1000);
    char frac[4] = {'.', (char)('0' + m / 100 % 10), (char)('0' + m / 10 % 10), (char)('0' + m % 10)};
    lg_buf_append(b, frac, 4);
}

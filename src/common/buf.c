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

void lg_buf_append(lg_buf_t *b, const void *p, size_t n)
{
    char *dst = lg_buf_reserve(b, n);
    memcpy(dst, p, n);
    b->len += n;
    b->data[b->len] = '\0';
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

void lg_buf_json_str(lg_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *out = lg_buf_reserve(b, n * 6 + 2), *o = out;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
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
            *o++ = 'u'; *o++ = '0'; *o++ = '0';
            *o++ = hex[c >> 4]; *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    b->len += (size_t)(o - out);
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

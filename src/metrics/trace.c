/* W3C traceparent: validation, new traces and child spans (trace.h). */
#include "luagent/trace.h"

#include <stdint.h>
#include <string.h>

#include "luagent/ids.h"

static int lower_hex(const char *p, size_t n, int *all_zero)
{
    int zero = 1;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
        zero &= c == '0';
    }
    if (all_zero != NULL)
        *all_zero = zero;
    return 1;
}

int lg_trace_valid(const char *v, size_t len)
{
    int zero;
    if (v == NULL || len < LG_TRACEPARENT_LEN || !lower_hex(v, 2, NULL) || memcmp(v, "ff", 2) == 0)
        return 0;
    if (memcmp(v, "00", 2) == 0 ? len != LG_TRACEPARENT_LEN : (len > LG_TRACEPARENT_LEN && v[LG_TRACEPARENT_LEN] != '-'))
        return 0;
    if (v[2] != '-' || v[35] != '-' || v[52] != '-')
        return 0;
    if (!lower_hex(v + 3, 32, &zero) || zero)
        return 0;
    if (!lower_hex(v + 36, 16, &zero) || zero)
        return 0;
    return lower_hex(v + 53, 2, NULL);
}

/* 32 bits -> 8 lowercase hex digits, without a loop: each nibble is spread into its own byte,
 * turned into ASCII ('a'..'f' where it is >= 10), and the bytes are put most significant first */
static inline void put_hex32(char *out, uint32_t v)
{
    uint64_t x = v;
    x = ((x & 0xffff0000ull) << 16) | (x & 0xffffull);
    x = ((x & 0x0000ff000000ff00ull) << 8) | (x & 0x000000ff000000ffull);
    x = ((x & 0x00f000f000f000f0ull) << 4) | (x & 0x000f000f000f000full);
    uint64_t letters = ((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
    x += 0x3030303030303030ull + letters * ('a' - '0' - 10);
    x = __builtin_bswap64(x);
    memcpy(out, &x, 8);
}

static void put_hex64(char *out, uint64_t v)
{
    put_hex32(out, (uint32_t)(v >> 32));
    put_hex32(out + 8, (uint32_t)v);
}

static void new_span(char *out)
{
    uint64_t r;
    while ((r = lg_rand64()) == 0)
        ;
    put_hex64(out, r);
}

void lg_trace_start(const char *in, size_t len, char out[LG_TRACEPARENT_LEN + 1])
{
    if (lg_trace_valid(in, len)) {
        memcpy(out, "00-", 3);
        memcpy(out + 3, in + 3, 33);    /* trace id and its '-' */
        memcpy(out + 52, in + 52, 3);   /* '-' and flags */
    } else {
        uint64_t hi = lg_rand64(), lo = lg_rand64();
        if ((hi | lo) == 0)
            lo = 1;
        memcpy(out, "00-", 3);
        put_hex64(out + 3, hi);
        put_hex64(out + 19, lo);
        out[35] = '-';
        memcpy(out + 52, "-01", 3);     /* sampled: its trace id is in the log */
    }
    new_span(out + 36);
    out[LG_TRACEPARENT_LEN] = '\0';
}

void lg_trace_child(const char *parent, char out[LG_TRACEPARENT_LEN + 1])
{
    memcpy(out, parent, LG_TRACEPARENT_LEN);
    new_span(out + 36);
    out[LG_TRACEPARENT_LEN] = '\0';
}

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

static void put_hex64(char *out, uint64_t v)
{
    static const char hex2[513] = /* byte -> two lowercase hex digits */
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
        "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
        "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    for (int i = 14; i >= 0; i -= 2, v >>= 8)
        memcpy(out + i, hex2 + (v & 0xff) * 2, 2);
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

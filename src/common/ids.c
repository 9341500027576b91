#include "luagent/ids.h"

#include <stdatomic.h>

#include <openssl/sha.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

static __thread uint64_t tl_s[4];
static __thread int tl_seeded;

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t lg_rand64(void)
{
    if (!tl_seeded) {
        if (getrandom(tl_s, sizeof(tl_s), 0) != (ssize_t)sizeof(tl_s) || (tl_s[0] | tl_s[1] | tl_s[2] | tl_s[3]) == 0) {
            tl_s[0] = lg_now_mono_ns() | 1;
            tl_s[1] = (uint64_t)(uintptr_t)&tl_s;
        }
        tl_seeded = 1;
    }
    uint64_t *s = tl_s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void format_uuid(const uint8_t b[16], char *out)
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 15];
    }
    *o = '\0';
}

void lg_uuid4(char *out)
{
    uint64_t r[2] = {lg_rand64(), lg_rand64()};
    uint8_t *b = (uint8_t *)r;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(b, out);
}

/* UUIDv7 with a 12-bit counter after the millisecond (RFC 9562 §6.2, method 1), process-wide: ids
 * made by any thread of this process sort in the order they were made, also within a millisecond
 * (history pages and cursors sort by id). Past 4096 ids in a millisecond the clock part runs ahead. */
void lg_uuid7(char *out)
{
    static _Atomic uint64_t last; /* ms << 12 | counter */
    uint64_t now = lg_now_epoch_ms() << 12, prev = atomic_load(&last), next;
    do
        next = now > prev ? now : prev + 1;
    while (!atomic_compare_exchange_weak(&last, &prev, next));
    uint64_t ms = next >> 12, seq = next & 0xfff, r = lg_rand64();
    uint8_t b[16];
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(ms >> (8 * (5 - i)));
    b[6] = (uint8_t)(0x70 | (seq >> 8));
    b[7] = (uint8_t)seq;
    for (int i = 8; i < 16; i++)
        b[i] = (uint8_t)(r >> (8 * (i - 8)));
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(b, out);
}

void lg_sha256_hex(const void *data, size_t len, char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data, len, md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

uint64_t lg_now_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t lg_now_mono_ms(void) { return lg_now_mono_ns() / 1000000u; }

uint64_t lg_now_epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

double lg_now_epoch(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

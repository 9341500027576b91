/**
 * ids.h - identifiers, hashes and clocks shared by every module.
 *
 * Random ids come from a per-thread xoshiro256** generator seeded from getrandom(2): fast, no lock,
 * unpredictable enough for ids (never use it for secrets; those come from RAND_bytes).
 */
#ifndef LUAGENT_IDS_H
#define LUAGENT_IDS_H

#include <stddef.h>
#include <stdint.h>

#define LG_UUID_LEN 36
#define LG_VERSION_LEN 16 /* agent version: first 16 hex digits of the source's SHA-256 */

/** Write a random (v4) UUID, NUL-terminated, into out[37]. */
void lg_uuid4(char *out);
/** Write a time-ordered (v7) UUID into out[37]: execution ids sort by creation time. */
void lg_uuid7(char *out);
uint64_t lg_rand64(void);

#define LG_FNV_OFFSET 1469598103934665603ull
/** FNV-1a over n bytes from `seed` (LG_FNV_OFFSET to start): the hash tables' and caches' hash (not
 *  for anything an attacker must not collide: those compare the whole key afterwards). */
static inline uint64_t lg_fnv1a(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        seed = (seed ^ s[i]) * 1099511628211ull;
    return seed;
}

/** Lowercase hex SHA-256 of data into out[65]. */
void lg_sha256_hex(const void *data, size_t len, char *out);

uint64_t lg_now_mono_ns(void);
uint64_t lg_now_mono_ms(void);
uint64_t lg_now_epoch_ms(void);
double lg_now_epoch(void); /* seconds, sub-ms resolution */

#endif

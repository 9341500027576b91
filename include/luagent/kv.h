/**
 * kv.h - the process-wide in-memory key-value store with TTLs: what luagent.cache, the result
 * cache, ctx.session and idempotency keys use when REDIS_URL is unset (DESIGN §2: one store for all
 * workers, behind a lock). Bounded by bytes: past the bound the least recently used entries go.
 * Expired entries are never returned and are dropped as they are met.
 */
#ifndef LUAGENT_KV_H
#define LUAGENT_KV_H

#include <stddef.h>
#include <stdint.h>

#include "luagent/buf.h"

/** Size the store (bytes of keys and values); call before the workers start. */
void lg_kv_init(size_t max_bytes);
void lg_kv_free(void);
/** Append the value of `key` to out: 1, or 0 when absent or expired. */
int lg_kv_get(const char *key, size_t klen, lg_buf_t *out);
/** Set `key` (ttl_ms 0: no expiry). */
void lg_kv_set(const char *key, size_t klen, const char *val, size_t vlen, uint64_t ttl_ms);
/** Set `key` only if it is absent: 1 when set, 0 when it exists (its value appended to `old` if
 *  not NULL). */
int lg_kv_add(const char *key, size_t klen, const char *val, size_t vlen, uint64_t ttl_ms, lg_buf_t *old);
/** 1 when a key was removed. */
int lg_kv_del(const char *key, size_t klen);
/** Entries and bytes held (for metrics and tests). */
void lg_kv_stats(size_t *entries, size_t *bytes);

#endif

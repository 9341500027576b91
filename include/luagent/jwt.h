/**
 * jwt.h - JWT bearer-token verification (HS256, RS256, ES256) and a per-thread cache of verified
 * tokens (DESIGN §7 LUAGENT_JWT_*, §8 "OpenSSL 3 and JWT"; docs/architecture.md "JWT").
 *
 * Keys: an HS256 secret (LUAGENT_JWT_SECRET, at least 32 bytes) and/or public keys from
 * LUAGENT_JWT_PUBLIC_KEY: PEM text, a path to a PEM file (one "PUBLIC KEY" or "CERTIFICATE"), or
 * a path to a JWKS file (JWKS text starting with '{' is accepted too). Supported public keys: RSA
 * 2048..8192 bits and EC P-256. In a JWKS, keys of another type or curve, keys marked `use: enc`
 * and keys whose `alg` is not the one we verify with them (RS256 for RSA, ES256 for EC) are skipped;
 * a JWKS with no usable key, a malformed supported key or a duplicate `kid` is an error.
 *
 * The algorithm belongs to the key, never to the token: the secret verifies HS256 only, an RSA key
 * RS256 only, an EC P-256 key ES256 only. The header's `alg` merely says which family to look in;
 * `none`, any other name, or a name that does not fit the chosen key is "algorithm not allowed for
 * this key". Key choice: HS256 -> the secret (its `kid` is ignored; the secret has none).
 * RS256/ES256 with a `kid` -> the public key with that kid ("unknown key id" if none); without a
 * `kid` -> the only public key of that type, "key id required" when there are several. Header
 * members `jwk`, `jku`, `x5u`, `x5c` are never used; `crit` is refused.
 *
 * Claims: `exp` is REQUIRED (a bearer token that never expires is refused); valid while
 * now < exp + 60. `nbf` (if present): refused while now + 60 < nbf. `iat` (if present): refused
 * when iat > now + 60. `iss` must equal LUAGENT_JWT_ISSUER and `aud` (a string, or an array of
 * strings) must contain LUAGENT_JWT_AUDIENCE, each only when configured (then the claim is
 * required). NumericDates may be fractional (truncated) and must be >= 0. Claims we read must
 * have the right JSON type and appear once. Limits: token <= 8 KiB, decoded header <= 1 KiB,
 * decoded claims <= 4 KiB, `sub` <= 255 bytes, `role` <= 63 bytes (longer ones are refused).
 *
 * Errors are short reasons without key or token material: "malformed token", "token too large",
 * "algorithm not allowed for this key", "unknown key id", "key id required", "bad signature",
 * "expired", "missing exp", "not yet valid", "issued in the future", "issuer mismatch",
 * "audience mismatch", "unsupported critical header", "claim too long", "bad claim type".
 *
 * Thread safety: a loaded lg_jwt_keys_t is immutable and may be shared by every worker
 * (lg_jwt_verify takes no lock). An lg_jwt_cache_t belongs to one thread (no lock).
 */
#ifndef LUAGENT_JWT_H
#define LUAGENT_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "luagent/config.h"

#define LG_JWT_MAX_TOKEN 8192
#define LG_JWT_MAX_CLAIMS 4096
#define LG_JWT_LEEWAY_S 60
#define LG_JWT_CACHE_TTL_S 300
#define LG_JWT_SUB_MAX 255
#define LG_JWT_ROLE_MAX 63

typedef struct lg_jwt_keys lg_jwt_keys_t;
typedef struct lg_jwt_cache lg_jwt_cache_t;

/** What a valid token says about its bearer. Strings are NUL-terminated copies ("" when the claim
 *  is absent; a claim holding "\u0000" is refused); `role` is the raw claim, the caller maps it. */
typedef struct lg_jwt_claims {
    char sub[LG_JWT_SUB_MAX + 1];
    char role[LG_JWT_ROLE_MAX + 1];
    uint64_t exp; /* seconds since the epoch (always set: exp is required) */
} lg_jwt_claims_t;

/** Build the verifier from cfg->jwt_secret / jwt_public_key (issuer and audience are copied).
 *  Call it only when one of the two is set (an empty string counts as unset): with neither it
 *  returns NULL and says so. NULL + `err` naming the variable on a bad key, file or secret
 *  (never quoting secret material). Free with lg_jwt_keys_free. */
lg_jwt_keys_t *lg_jwt_keys_load(const lg_config_t *cfg, char *err, size_t errlen);
void lg_jwt_keys_free(lg_jwt_keys_t *k);

/** Verify a compact JWS (`len` bytes, not necessarily NUL-terminated, without "Bearer ") at time
 *  `now_s`. 0 and `*out` filled when valid; -1 and a short reason in `err` otherwise (`*out` is
 *  then unspecified). `out` and `err` may be NULL. Allocates nothing that outlives the call. */
int lg_jwt_verify(const lg_jwt_keys_t *k, const char *token, size_t len, uint64_t now_s, lg_jwt_claims_t *out,
                  char *err, size_t errlen);

/** A cache of verified tokens for one thread: it keeps a copy of each token (found by a hash of its
 *  signature, confirmed by comparing the whole token), an entry lives until
 *  min(exp, verified_at + 300 s); `capacity` entries (rounded up to a power of two, >= 8; 0 means
 *  1024), 4-way set associative with least-recently-used replacement within a set. Only valid
 *  tokens are cached. NULL on allocation failure. */
lg_jwt_cache_t *lg_jwt_cache_new(size_t capacity);
void lg_jwt_cache_free(lg_jwt_cache_t *c);

/** lg_jwt_verify through the cache: a hit costs a hash of 64 bytes and a compare. Caching is tied to `k`:
 *  called with another keys object than last time, the cache empties itself first. `c` may be
 *  NULL (plain lg_jwt_verify). */
int lg_jwt_check(lg_jwt_cache_t *c, const lg_jwt_keys_t *k, const char *token, size_t len, uint64_t now_s,
                 lg_jwt_claims_t *out, char *err, size_t errlen);

/** Counters since lg_jwt_cache_new (for tests and metrics). */
void lg_jwt_cache_stats(const lg_jwt_cache_t *c, uint64_t *hits, uint64_t *misses);

#endif

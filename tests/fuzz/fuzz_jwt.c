/* fuzz_jwt: lg_jwt_verify / lg_jwt_check on hostile tokens. Keys are made at start: set A is an
 * HS256 secret + an EC P-256 PEM key with issuer and audience configured; set B a JWKS text with an
 * RSA (kid "r1") and an EC (kid "e1") key. The first input byte picks the mode:
 *   0 (mod 5): the rest is token bytes, verified as they are against both sets;
 *   1, 2, 3:   the rest is "<header JSON>\0<claims JSON>" (or claims only, with a default header),
 *              base64url-encoded and signed here with HS256 / ES256 / RS256, so the claim parser is
 *              reached with arbitrary JSON behind a valid signature;
 *   4:         the rest is JWKS text given as LUAGENT_JWT_PUBLIC_KEY (operator input, loaded then freed).
 * Oracles: cached and uncached verification agree (twice: miss then hit), a valid token's sub and
 * role are NUL-terminated within their limits, a refusal has a reason. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "luagent/config.h"
#include "luagent/jwt.h"

#define CHECK(c)                                                                                                       \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                                    \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

#define NOW 1700000000ull
#define SECRET "fuzz-0123456789abcdef0123456789abcdef"

static EVP_PKEY *rsa, *ec;
static lg_jwt_keys_t *keys_a, *keys_b;
static lg_jwt_cache_t *cache_a, *cache_b;

static size_t b64u(const unsigned char *d, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *o = out;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        *o++ = a[v >> 18], *o++ = a[(v >> 12) & 63], *o++ = a[(v >> 6) & 63], *o++ = a[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)d[i] << 16;
        *o++ = a[v >> 18], *o++ = a[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8;
        *o++ = a[v >> 18], *o++ = a[(v >> 12) & 63], *o++ = a[(v >> 6) & 63];
    }
    *o = '\0';
    return (size_t)(o - out);
}

static void bn_b64u(EVP_PKEY *k, const char *param, int pad, char *out)
{
    BIGNUM *bn = NULL;
    CHECK(EVP_PKEY_get_bn_param(k, param, &bn));
    unsigned char buf[1024];
    int n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
    BN_free(bn);
    CHECK(n > 0);
    b64u(buf, (size_t)n, out);
}

static lg_jwt_keys_t *load(const char *secret, const char *pub, const char *iss, const char *aud, int quiet)
{
    lg_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.jwt_secret = (char *)secret, cfg.jwt_public_key = (char *)pub;
    cfg.jwt_issuer = (char *)iss, cfg.jwt_audience = (char *)aud;
    char err[256];
    lg_jwt_keys_t *k = lg_jwt_keys_load(&cfg, err, sizeof err);
    if (!k && !quiet)
        fprintf(stderr, "keys: %s\n", err);
    return k;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    rsa = EVP_RSA_gen(2048);
    ec = EVP_EC_gen("P-256");
    CHECK(rsa && ec);
    BIO *b = BIO_new(BIO_s_mem());
    CHECK(PEM_write_bio_PUBKEY(b, ec));
    char *pem;
    long n = BIO_get_mem_data(b, &pem);
    char *ec_pem = strndup(pem, (size_t)n);
    BIO_free(b);
    keys_a = load(SECRET, ec_pem, "https://issuer.fuzz", "luagent", 0);
    free(ec_pem);
    static char jwks[4096], rn[600], re[16], ex[64], ey[64];
    bn_b64u(rsa, OSSL_PKEY_PARAM_RSA_N, 0, rn);
    bn_b64u(rsa, OSSL_PKEY_PARAM_RSA_E, 0, re);
    bn_b64u(ec, OSSL_PKEY_PARAM_EC_PUB_X, 32, ex);
    bn_b64u(ec, OSSL_PKEY_PARAM_EC_PUB_Y, 32, ey);
    snprintf(jwks, sizeof jwks,
             "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r1\",\"alg\":\"RS256\",\"n\":\"%s\",\"e\":\"%s\"},"
             "{\"kty\":\"EC\",\"kid\":\"e1\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}]}",
             rn, re, ex, ey);
    keys_b = load(NULL, jwks, NULL, NULL, 0);
    CHECK(keys_a && keys_b);
    cache_a = lg_jwt_cache_new(64);
    cache_b = lg_jwt_cache_new(64);
    CHECK(cache_a && cache_b);
    return 0;
}

static void verify(const lg_jwt_keys_t *k, lg_jwt_cache_t *c, const char *tok, size_t len)
{
    lg_jwt_claims_t a, b;
    char ea[128] = "", eb[128] = "";
    int ra = lg_jwt_verify(k, tok, len, NOW, &a, ea, sizeof ea);
    CHECK(ra == 0 || ra == -1);
    if (ra == 0) {
        CHECK(memchr(a.sub, '\0', sizeof a.sub) != NULL && memchr(a.role, '\0', sizeof a.role) != NULL);
        CHECK(strlen(a.sub) <= LG_JWT_SUB_MAX && strlen(a.role) <= LG_JWT_ROLE_MAX);
        CHECK(a.exp > NOW - LG_JWT_LEEWAY_S); /* valid while now < exp + leeway (exp may be UINT64_MAX) */
    } else {
        CHECK(ea[0] != '\0');
    }
    for (int round = 0; round < 2; round++) { /* a miss, then (for a valid token) a hit */
        int rb = lg_jwt_check(c, k, tok, len, NOW, &b, eb, sizeof eb);
        CHECK(rb == ra);
        if (ra == 0)
            CHECK(strcmp(a.sub, b.sub) == 0 && strcmp(a.role, b.role) == 0 && a.exp == b.exp);
        else
            CHECK(strcmp(ea, eb) == 0);
    }
}

/* DER ECDSA signature -> raw r || s (64 bytes) */
static size_t der_to_raw(const unsigned char *der, size_t n, unsigned char *out)
{
    const unsigned char *p = der;
    ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)n);
    CHECK(s);
    CHECK(BN_bn2binpad(ECDSA_SIG_get0_r(s), out, 32) == 32 && BN_bn2binpad(ECDSA_SIG_get0_s(s), out + 32, 32) == 32);
    ECDSA_SIG_free(s);
    return 64;
}

static void signed_token(int alg, const unsigned char *d, size_t n)
{
    static const char *const hdrs[] = {"", "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{\"alg\":\"ES256\",\"kid\":\"e1\"}",
                                       "{\"alg\":\"RS256\",\"kid\":\"r1\"}"};
    const unsigned char *hdr = (const unsigned char *)hdrs[alg], *claims = d;
    size_t hn = strlen(hdrs[alg]), cn = n;
    const unsigned char *z = memchr(d, '\0', n);
    if (z) {
        hdr = d, hn = (size_t)(z - d);
        claims = z + 1, cn = n - hn - 1;
    }
    if (hn > 2048 || cn > 8192)
        return;
    static char tok[3 * 8192];
    size_t len = b64u(hdr, hn, tok);
    tok[len++] = '.';
    len += b64u(claims, cn, tok + len);
    unsigned char sig[1024], der[1024];
    size_t sn = 0;
    if (alg == 1) {
        unsigned int l = 0;
        HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)tok, len, sig, &l);
        sn = l;
    } else {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        CHECK(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, alg == 2 ? ec : rsa) == 1);
        size_t dn = sizeof der;
        CHECK(EVP_DigestSign(ctx, der, &dn, (const unsigned char *)tok, len) == 1);
        EVP_MD_CTX_free(ctx);
        if (alg == 2) {
            sn = der_to_raw(der, dn, sig);
        } else {
            memcpy(sig, der, dn);
            sn = dn;
        }
    }
    tok[len++] = '.';
    len += b64u(sig, sn, tok + len);
    verify(keys_a, cache_a, tok, len);
    verify(keys_b, cache_b, tok, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0] % 5;
    const unsigned char *d = data + 1;
    size_t n = size - 1;
    if (mode == 0) {
        verify(keys_a, cache_a, (const char *)d, n);
        verify(keys_b, cache_b, (const char *)d, n);
    } else if (mode <= 3) {
        signed_token(mode, d, n);
    } else if (n > 0 && d[0] == '{' && n < 65536) {
        char *text = strndup((const char *)d, n); /* a JWKS text (never a path: it starts with '{') */
        CHECK(text);
        lg_jwt_keys_t *k = load(NULL, text, NULL, NULL, 1);
        if (k) {
            static const char tok[] = "eyJhbGciOiJFUzI1NiJ9.e30.AAAA";
            lg_jwt_verify(k, tok, sizeof tok - 1, NOW, NULL, NULL, 0);
            lg_jwt_keys_free(k);
        }
        free(text);
    }
    return 0;
}

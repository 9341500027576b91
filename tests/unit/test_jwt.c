/* JWT verification: tokens minted here with OpenSSL (HS256, RS256, ES256), every rejection, key
 * loading (PEM text, PEM path, JWKS), the cache; prints verify costs (not asserted). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "luagent/jwt.h"

#define NOW 1700000000ull
#define SECRET "0123456789abcdef0123456789abcdef-test-secret"
#define ISS "https://issuer.test"
#define AUD "luagent"

static EVP_PKEY *rsa1, *rsa2, *ec1, *ec384;
static char *rsa1_pem, *ec1_pem;
static char dir[64], rsa_path[128], ec_path[128], jwks_path[128];

/* ------------------------------------------------------------ minting helpers */

static char *b64u(const void *data, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *d = data;
    char *out = malloc(n * 4 / 3 + 4), *o = out;
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
    return out;
}

static char *bn_b64u(EVP_PKEY *k, const char *param, size_t pad)
{
    BIGNUM *bn = NULL;
    assert_true(EVP_PKEY_get_bn_param(k, param, &bn));
    unsigned char buf[1024];
    int n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
    BN_free(bn);
    return b64u(buf, (size_t)n);
}

enum { HS, RS, ES, ES_DER, NONE };

/* sign `in` -> raw signature bytes */
static size_t sign(int how, const void *key, size_t keylen, const char *in, unsigned char *sig)
{
    if (how == HS) {
        unsigned n = 0;
        HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)in, strlen(in), sig, &n);
        return n;
    }
    if (how == NONE)
        return 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char der[1024];
    size_t n = sizeof der;
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, (EVP_PKEY *)key), 1);
    assert_int_equal(EVP_DigestSign(ctx, der, &n, (const unsigned char *)in, strlen(in)), 1);
    EVP_MD_CTX_free(ctx);
    if (how == RS || how == ES_DER) {
        memcpy(sig, der, n);
        return n;
    }
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
    assert_non_null(es);
    BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
    ECDSA_SIG_free(es);
    return 64;
}

/* header.payload.signature from JSON texts; `sigmod` adjusts the raw signature length (+1 adds a
 * byte, -1 drops one). Caller frees. */
static char *mint_ex(const char *hdr, const char *payload, int how, const void *key, size_t keylen, int sigmod)
{
    char *h = b64u(hdr, strlen(hdr)), *p = b64u(payload, strlen(payload));
    size_t inlen = strlen(h) + strlen(p) + 2;
    char *in = malloc(inlen);
    snprintf(in, inlen, "%s.%s", h, p);
    unsigned char sig[1100];
    size_t sn = sign(how, key, keylen, in, sig);
    if (sigmod > 0)
        sig[sn++] = 0;
    if (sigmod < 0)
        sn--;
    char *s = b64u(sig, sn);
    size_t tl = strlen(in) + strlen(s) + 2;
    char *tok = malloc(tl);
    snprintf(tok, tl, "%s.%s", in, s);
    free(h), free(p), free(in), free(s);
    return tok;
}

static char *mint(const char *hdr, const char *payload, int how, const void *key, size_t keylen)
{
    return mint_ex(hdr, payload, how, key, keylen, 0);
}

static char payload_buf[8192];
/* the standard claims with `extra` members appended (", ..." form) */
static const char *claims(const char *extra)
{
    snprintf(payload_buf, sizeof payload_buf,
             "{\"sub\":\"user-1\",\"role\":\"operator\",\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"iat\":%llu%s%s}", NOW,
             strstr(extra, "\"exp\"") ? "" : ",\"exp\":1700003600", extra);
    return payload_buf;
}

static lg_config_t cfg_of(const char *secret, const char *pub, const char *iss, const char *aud)
{
    lg_config_t c;
    memset(&c, 0, sizeof c);
    c.jwt_secret = (char *)secret;
    c.jwt_public_key = (char *)pub;
    c.jwt_issuer = (char *)iss;
    c.jwt_audience = (char *)aud;
    return c;
}

static lg_jwt_keys_t *load(const char *secret, const char *pub, const char *iss, const char *aud)
{
    char err[256];
    lg_config_t c = cfg_of(secret, pub, iss, aud);
    lg_jwt_keys_t *k = lg_jwt_keys_load(&c, err, sizeof err);
    if (!k)
        fail_msg("load: %s", err);
    return k;
}

static int load_err(const char *secret, const char *pub, char *err, size_t errlen)
{
    lg_config_t c = cfg_of(secret, pub, NULL, NULL);
    lg_jwt_keys_t *k = lg_jwt_keys_load(&c, err, errlen);
    lg_jwt_keys_free(k);
    return k ? 0 : -1;
}

static char last_err[128];
static lg_jwt_claims_t last;

/* verify and free the token; returns 0 or the error text compared by callers */
static const char *verify_at(const lg_jwt_keys_t *k, char *tok, uint64_t now)
{
    last_err[0] = '\0';
    int rc = lg_jwt_verify(k, tok, strlen(tok), now, &last, last_err, sizeof last_err);
    free(tok);
    if (rc == 0) {
        assert_string_equal(last_err, "");
        return "ok";
    }
    assert_true(last_err[0] != '\0');
    return last_err;
}

static const char *verify(const lg_jwt_keys_t *k, char *tok)
{
    return verify_at(k, tok, NOW);
}

static char *pem_of(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, k);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *out = strndup(p, (size_t)n);
    BIO_free(b);
    return out;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *jwk_rsa(EVP_PKEY *k, const char *kid, const char *extra)
{
    char *n = bn_b64u(k, OSSL_PKEY_PARAM_RSA_N, 0), *e = bn_b64u(k, OSSL_PKEY_PARAM_RSA_E, 0);
    char *out = malloc(strlen(n) + 256);
    sprintf(out, "{\"kty\":\"RSA\",%s%s%s\"n\":\"%s\",\"e\":\"%s\"%s}", kid ? "\"kid\":\"" : "", kid ? kid : "",
            kid ? "\"," : "", n, e, extra ? extra : "");
    free(n), free(e);
    return out;
}

static char *jwk_ec(EVP_PKEY *k, const char *kid, const char *extra)
{
    char *x = bn_b64u(k, OSSL_PKEY_PARAM_EC_PUB_X, 32), *y = bn_b64u(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    char *out = malloc(512);
    sprintf(out, "{\"kty\":\"EC\",\"crv\":\"P-256\",%s%s%s\"x\":\"%s\",\"y\":\"%s\"%s}", kid ? "\"kid\":\"" : "",
            kid ? kid : "", kid ? "\"," : "", x, y, extra ? extra : "");
    free(x), free(y);
    return out;
}

static int setup(void **state)
{
    rsa1 = EVP_RSA_gen(2048);
    rsa2 = EVP_RSA_gen(2048);
    ec1 = EVP_EC_gen("P-256");
    ec384 = EVP_EC_gen("P-384");
    assert_true(rsa1 && rsa2 && ec1 && ec384);
    rsa1_pem = pem_of(rsa1);
    ec1_pem = pem_of(ec1);
    snprintf(dir, sizeof dir, "/tmp/lg_jwt_XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(rsa_path, sizeof rsa_path, "%s/rsa.pem", dir);
    snprintf(ec_path, sizeof ec_path, "%s/ec.pem", dir);
    snprintf(jwks_path, sizeof jwks_path, "%s/jwks.json", dir);
    write_file(rsa_path, rsa1_pem);
    write_file(ec_path, ec1_pem);
    char *a = jwk_rsa(rsa1, "r1", ",\"alg\":\"RS256\",\"use\":\"sig\""), *b = jwk_rsa(rsa2, "r2", NULL),
         *c = jwk_ec(ec1, "e1", ",\"alg\":\"ES256\",\"key_ops\":[\"verify\"]");
    char *jw = malloc(strlen(a) + strlen(b) + strlen(c) + 256);
    sprintf(jw,
            "{\"keys\":[%s,\n %s, %s,{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"o1\",\"x\":\"AAAA\"},"
            "{\"kty\":\"RSA\",\"kid\":\"enc1\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
            a, b, c);
    write_file(jwks_path, jw);
    free(a), free(b), free(c), free(jw);
    return 0;
}

static int teardown(void **state)
{
    unlink(rsa_path), unlink(ec_path), unlink(jwks_path);
    rmdir(dir);
    EVP_PKEY_free(rsa1), EVP_PKEY_free(rsa2), EVP_PKEY_free(ec1), EVP_PKEY_free(ec384);
    free(rsa1_pem), free(ec1_pem);
    return 0;
}

#define HS_HDR "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define RS_HDR "{\"alg\":\"RS256\",\"typ\":\"JWT\"}"
#define ES_HDR "{\"alg\":\"ES256\",\"typ\":\"JWT\"}"
#define HSK SECRET, strlen(SECRET)

/* ------------------------------------------------------------ good tokens */

static void test_hs256_ok(void **state)
{
    lg_jwt_keys_t *k = load(SECRET, NULL, ISS, AUD);
    assert_string_equal(verify(k, mint(HS_HDR, claims(""), HS, HSK)), "ok");
    assert_string_equal(last.sub, "user-1");
    assert_string_equal(last.role, "operator");
    assert_int_equal(last.exp, 1700003600);
    /* kid on an HS256 token is ignored (the secret has none) */
    assert_string_equal(verify(k, mint("{\"alg\":\"HS256\",\"kid\":\"x\"}", claims(""), HS, HSK)), "ok");
    /* absent sub and role give "" */
    assert_string_equal(verify(k, mint(HS_HDR, "{\"exp\":1700000100,\"iss\":\"" ISS "\",\"aud\":\"" AUD "\"}", HS, HSK)),
                        "ok");
    assert_string_equal(last.sub, "");
    assert_string_equal(last.role, "");
    /* escapes are decoded; unknown nested members skipped */
    assert_string_equal(
        verify(k, mint(HS_HDR, claims(",\"sub\":\"a\\u00e9\\ud83d\\ude00\\/b\",\"x\":{\"y\":[1,2,{\"z\":null}]}"), HS, HSK)),
        "malformed token"); /* duplicate sub */
    assert_string_equal(verify(k, mint(HS_HDR,
                                       "{\"sub\":\"a\\u00e9\\ud83d\\ude00\\/b\",\"x\":{\"y\":[1,2.5e3,{\"z\":null}]},"
                                       "\"exp\":1700000100.75,\"iss\":\"" ISS "\",\"aud\":[\"other\",\"" AUD "\"]}",
                                       HS, HSK)),
                        "ok");
    assert_string_equal(last.sub, "a\xc3\xa9\xf0\x9f\x98\x80/b");
    assert_int_equal(last.exp, 1700000100);
    lg_jwt_keys_free(k);
}

static void test_rs256_es256_pem_text_and_path(void **state)
{
    const char *pubs[] = {rsa1_pem, rsa_path};
    for (int i = 0; i < 2; i++) {
        lg_jwt_keys_t *k = load(NULL, pubs[i], NULL, NULL);
        assert_string_equal(verify(k, mint(RS_HDR, claims(""), RS, rsa1, 0)), "ok");
        assert_string_equal(last.sub, "user-1");
        assert_string_equal(verify(k, mint(RS_HDR, claims(""), RS, rsa2, 0)), "bad signature");
        assert_string_equal(verify(k, mint(ES_HDR, claims(""), ES, ec1, 0)), "algorithm not allowed for this key");
        assert_string_equal(verify(k, mint(HS_HDR, claims(""), HS, HSK)), "algorithm not allowed for this key");
        lg_jwt_keys_free(k);
    }
    const char *ecs[] = {ec1_pem, ec_path};
    for (int i = 0; i < 2; i++) {
        lg_jwt_keys_t *k = load(NULL, ecs[i], NULL, NULL);
        assert_string_equal(verify(k, mint(ES_HDR, claims(""), ES, ec1, 0)), "ok");
        assert_string_equal(verify(k, mint(RS_HDR, claims(""), RS, rsa1, 0)), "algorithm not allowed for this key");
        lg_jwt_keys_free(k);
    }
    /* PEM in an env var with literal \n escapes */
    char *esc = malloc(strlen(rsa1_pem) * 2 + 1), *w = esc;
    for (const char *s = rsa1_pem; *s; s++) {
        if (*s == '\n')
            *w++ = '\\', *w++ = 'n';
        else
            *w++ = *s;
    }
    *w = '\0';
    lg_jwt_keys_t *k = load(NULL, esc, NULL, NULL);
    assert_string_equal(verify(k, mint(RS_HDR, claims(""), RS, rsa1, 0)), "ok");
    lg_jwt_keys_free(k);
    free(esc);
    /* secret and public key together */
    k = load(SECRET, ec_path, NULL, NULL);
    assert_string_equal(verify(k, mint(ES_HDR, claims(""), ES, ec1, 0)), "ok");
    assert_string_equal(verify(k, mint(HS_HDR, claims(""), HS, HSK)), "ok");
    lg_jwt_keys_free(k);
}

static void test_jwks(void **state)
{
    lg_jwt_keys_t *k = load(NULL, jwks_path, ISS, AUD);
    assert_string_equal(verify(k, mint("{\"alg\":\"RS256\",\"kid\":\"r1\"}", claims(""), RS, rsa1, 0)), "ok");
    assert_string_equal(verify(k, mint("{\"alg\":\"RS256\",\"kid\":\"r2\"}", claims(""), RS, rsa2, 0)), "ok");
    assert_string_equal(verify(k, mint("{\"alg\":\"ES256\",\"kid\":\"e1\"}", claims(""), ES, ec1, 0)), "ok");
    /* wrong kid: signed by rsa1, names r2 */
    assert_string_equal(verify(k, mint("{\"alg\":\"RS256\",\"kid\":\"r2\"}", claims(""), RS, rsa1, 0)), "bad signature");
    assert_string_equal(verify(k, mint("{\"alg\":\"RS256\",\"kid\":\"nope\"}", claims(""), RS, rsa1, 0)),
                        "unknown key id");
    /* skipped keys (OKP, use=enc) are not there */
    assert_string_equal(verify(k, mint("{\"alg\":\"RS256\",\"kid\":\"enc1\"}", claims(""), RS, rsa1, 0)),
                        "unknown key id");
    /* the kid of an RSA key with alg ES256 */
    assert_string_equal(verify(k, mint("{\"alg\":\"ES256\",\"kid\":\"r1\"}", claims(""), ES, ec1, 0)),
                        "algorithm not allowed for this key");
    /* no kid: two RSA keys -> kid required; one EC key -> used */
    assert_string_equal(verify(k, mint(RS_HDR, claims(""), RS, rsa1, 0)), "key id required");
    assert_string_equal(verify(k, mint(ES_HDR, claims(""), ES, ec1, 0)), "ok");
    /* no secret configured: HS256 refused whatever it was signed with */
    assert_string_equal(verify(k, mint("{\"alg\":\"HS256\",\"kid\":\"r1\"}", claims(""), HS, HSK)),
                        "algorithm not allowed for this key");
    lg_jwt_keys_free(k);

    /* inline JWKS text, a single kid-less key */
    char *j = jwk_ec(ec1, NULL, NULL), text[600];
    snprintf(text, sizeof text, " {\"keys\":[%s]}", j);
    free(j);
    k = load(NULL, text, NULL, NULL);
    assert_string_equal(verify(k, mint("{\"alg\":\"ES256\",\"kid\":\"any\"}", claims(""), ES, ec1, 0)), "unknown key id");
    assert_string_equal(verify(k, mint(ES_HDR, claims(""), ES, ec1, 0)), "ok");
    lg_jwt_keys_free(k);
}

/* ------------------------------------------------------------ algorithm attacks */

static void test_alg_none_and_confusion(void **state)
{
    lg_jwt_keys_t *k = load(NULL, rsa1_pem, NULL, NULL);
    assert_string_equal(verify(k, mint("{\"alg\":\"none\"}", claims(""), NONE, NULL, 0)),
                        "algorithm not allowed for this key");
    assert_string_equal(verify(k, mint("{\"alg\":\"None\"}", claims(""), NONE, NULL, 0)),
                        "algorithm not allowed for this key");
    assert_string_equal(verify(k, mint("{\"alg\":\"RS512\"}", claims(""), RS, rsa1, 0)),
                        "algorithm not allowed for this key");
    /* HS256 with the public key's PEM (and its DER) as the HMAC secret */
    assert_string_equal(verify(k, mint(HS_HDR, claims(""), HS, rsa1_pem, strlen(rsa1_pem))),
                        "algorithm not allowed for this key");
    lg_jwt_keys_free(k);
    /* with a secret configured as well, the HS256 token meets the secret, not the PEM */
    k = load(SECRET, rsa1_pem, NULL, NULL);
    assert_string_equal(verify(k, mint(HS_HDR, claims(""), HS, rsa1_pem, strlen(rsa1_pem))), "bad signature");
    lg_jwt_keys_free(k);
    /* HS-only config: RS256 and ES256 tokens refused */
    k = load(SECRET, NULL, NULL, NULL);
    assert_string_equal(verify(k, mint(RS_HDR, claims(""), RS, rsa1, 0)), "algorithm not allowed for this key");
    assert_string_equal(verify(k, mint(ES_HDR, claims(""), ES, ec1, 0)), "algorithm not allowed for this key");
    assert_string_equal(verify(k, mint("{\"alg\":\"none\"}", claims(""), NONE, NULL, 0)),
                        "algorithm not allowed for this key");
    lg_jwt_keys_free(k);
}

/* flip one character of part `part` (0 header, 1 payload, 2 signature) */
static char *tamper(char *tok, int part)
{
    char *p = tok;
    for (int i = 0; i < part; i++)
        p = strchr(p, '.') + 1;
    p[part == 2 ? 2 : 5] ^= ('A' ^ 'B');
    if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", p[part == 2 ? 2 : 5]))
        p[part == 2 ? 2 : 5] = 'A';
    return tok;
}

static void test_tampered(void **state)
{
    lg_jwt_keys_t *k = load(SECRET, jwks_path, NULL, NULL);
    struct {
        const char *hdr;
        int how;
        const void *key;
        size_t kl;
    } v[] = {{HS_HDR, HS, SECRET, strlen(SECRET)},
             {"{\"alg\":\"RS256\",\"kid\":\"r1\"}", RS, NULL, 0},
             {"{\"alg\":\"ES256\",\"kid\":\"e1\"}", ES, NULL, 0}};
    v[1].key = rsa1, v[2].key = ec1;
    for (int i = 0; i < 3; i++) {
        assert_string_equal(verify(k, mint(v[i].hdr, claims(""), v[i].how, v[i].key, v[i].kl)), "ok");
        const char *r;
        r = verify(k, tamper(mint(v[i].hdr, claims(""), v[i].how, v[i].key, v[i].kl), 1));
        assert_true(strcmp(r, "bad signature") == 0 || strcmp(r, "malformed token") == 0);
        r = verify(k, tamper(mint(v[i].hdr, claims(""), v[i].how, v[i].key, v[i].kl), 0));
        assert_true(strcmp(r, "ok") != 0);
        assert_string_equal(verify(k, tamper(mint(v[i].hdr, claims(""), v[i].how, v[i].key, v[i].kl), 2)),
                            "bad signature");
        /* the payload re-signed under another claim set but spliced: header + other payload */
        char *a = mint(v[i].hdr, claims(""), v[i].how, v[i].key, v[i].kl);
        char *b = mint(v[i].hdr, claims(",\"admin\":true"), v[i].how, v[i].key, v[i].kl);
        char *bp = strchr(b, '.'), *as = strrchr(a, '.');
        char *splice = malloc(strlen(a) + strlen(b));
        sprintf(splice, "%.*s%s", (int)(strrchr(b, '.') - b), b, as);
        (void)bp;
        assert_string_equal(verify(k, splice), "bad signature");
        free(a), free(b);
    }
    /* a tampered header that changes the alg family */
    char *t = mint("{\"alg\":\"RS256\",\"kid\":\"e1\"}", claims(""), ES, ec1, 0);
    assert_string_equal(verify(k, t), "algorithm not allowed for this key");
    lg_jwt_keys_free(k);
}

static void test_es256_signature_forms(void **state)
{
    lg_jwt_keys_t *k = load(NULL, ec1_pem, NULL, NULL);
    assert_string_equal(verify(k, mint_ex(ES_HDR, claims(""), ES, ec1, 0, 0)), "ok");
    assert_string_equal(verify(k, mint_ex(ES_HDR, claims(""), ES, ec1, 0, -1)), "bad signature"); /* 63 */
    assert_string_equal(verify(k, mint_ex(ES_HDR, claims(""), ES, ec1, 0, +1)), "bad signature"); /* 65 */
    assert_string_equal(verify(k, mint(ES_HDR, claims(""), ES_DER, ec1, 0)), "bad signature");   /* DER */
    /* r = s = 0 and an all-ones signature */
    char *t = mint(ES_HDR, claims(""), ES, ec1, 0), *s = strrchr(t, '.') + 1;
    memset(s, 'A', 86);
    assert_string_equal(verify(k, t), "bad signature");
    t = mint(ES_HDR, claims(""), ES, ec1, 0), s = strrchr(t, '.') + 1;
    memset(s, '_', 85);
    s[85] = 'w';
    assert_string_equal(verify(k, t), "bad signature");
    lg_jwt_keys_free(k);
    /* RS256 of the wrong length */
    k = load(NULL, rsa1_pem, NULL, NULL);
    assert_string_equal(verify(k, mint_ex(RS_HDR, claims(""), RS, rsa1, 0, -1)), "bad signature");
    assert_string_equal(verify(k, mint_ex(RS_HDR, claims(""), RS, rsa1, 0, +1)), "bad signature");
    lg_jwt_keys_free(k);
    /* HS256 truncated */
    k = load(SECRET, NULL, NULL, NULL);
    assert_string_equal(verify(k, mint_ex(HS_HDR, claims(""), HS, HSK, -1)), "bad signature");
    assert_string_equal(verify(k, mint_ex(HS_HDR, claims(""), HS, HSK, +1)), "bad signature");
    lg_jwt_keys_free(k);
}

/* ------------------------------------------------------------ time claims */

static const char *at(lg_jwt_keys_t *k, const char *payload, uint64_t now)
{
    return verify_at(k, mint(HS_HDR, payload, HS, HSK), now);
}

static void test_time_claims(void **state)
{
    lg_jwt_keys_t *k = load(SECRET, NULL, NULL, NULL);
    /* exp: valid while now < exp + 60 */
    assert_string_equal(at(k, "{\"exp\":1700000000}", NOW + 59), "ok");
    assert_string_equal(at(k, "{\"exp\":1700000000}", NOW + 60), "expired");
    assert_string_equal(at(k, "{\"exp\":1699999000}", NOW), "expired");
    assert_string_equal(at(k, "{\"exp\":1.8e19}", NOW), "ok");
    assert_string_equal(at(k, "{\"sub\":\"x\"}", NOW), "missing exp");
    assert_string_equal(at(k, "{\"exp\":\"1700003600\"}", NOW), "bad claim type");
    assert_string_equal(at(k, "{\"exp\":-1}", NOW), "bad claim type");
    assert_string_equal(at(k, "{\"exp\":null}", NOW), "bad claim type");
    assert_string_equal(at(k, "{\"exp\":1700003600,\"exp\":1700003600}", NOW), "malformed token");
    /* nbf: refused while now + 60 < nbf */
    assert_string_equal(at(k, "{\"exp\":1700003600,\"nbf\":1700000060}", NOW), "ok");
    assert_string_equal(at(k, "{\"exp\":1700003600,\"nbf\":1700000061}", NOW), "not yet valid");
    /* iat: refused when iat > now + 60 */
    assert_string_equal(at(k, "{\"exp\":1700003600,\"iat\":1700000060}", NOW), "ok");
    assert_string_equal(at(k, "{\"exp\":1700003600,\"iat\":1700000061}", NOW), "issued in the future");
    lg_jwt_keys_free(k);
}

static void test_iss_aud(void **state)
{
    lg_jwt_keys_t *k = load(SECRET, NULL, ISS, AUD);
    const char *e = ",\"exp\":1700003600";
    char p[512];
#define P(...) (snprintf(p, sizeof p, __VA_ARGS__), p)
    assert_string_equal(at(k, P("{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\"%s}", e), NOW), "ok");
    assert_string_equal(at(k, P("{\"iss\":\"https://evil.test\",\"aud\":\"" AUD "\"%s}", e), NOW), "issuer mismatch");
    assert_string_equal(at(k, P("{\"iss\":\"" ISS "/\",\"aud\":\"" AUD "\"%s}", e), NOW), "issuer mismatch");
    assert_string_equal(at(k, P("{\"aud\":\"" AUD "\"%s}", e), NOW), "issuer mismatch");
    assert_string_equal(at(k, P("{\"iss\":7,\"aud\":\"" AUD "\"%s}", e), NOW), "bad claim type");
    assert_string_equal(at(k, P("{\"iss\":\"" ISS "\",\"aud\":\"other\"%s}", e), NOW), "audience mismatch");
    assert_string_equal(at(k, P("{\"iss\":\"" ISS "\",\"aud\":\"luagen\"%s}", e), NOW), "audience mismatch");
    assert_string_equal(at(k, P("{\"iss\":\"" ISS "\"%s}", e), NOW), "audience mismatch");
    assert_string_equal(at(k, P("{\"iss\":\"" ISS "\",\"aud\":[\"a\",\"" AUD "\"]%s}", e), NOW), "ok");
    assert_string_equal(at(k, P("{\"iss\":\"" ISS "\",\"aud\":[\"a\",\"b\"]%s}", e), NOW), "audience mismatch");
    assert_string_equal(at(k, P("{\"iss\":\"" ISS "\",\"aud\":[]%s}", e), NOW), "audience mismatch");
    assert_string_equal(at(k, P("{\"iss\":\"" ISS "\",\"aud\":[\"" AUD "\",1]%s}", e), NOW), "bad claim type");
    assert_string_equal(at(k, P("{\"iss\":\"" ISS "\",\"aud\":{\"x\":1}%s}", e), NOW), "bad claim type");
    lg_jwt_keys_free(k);
    /* not configured: neither is checked */
    k = load(SECRET, NULL, NULL, NULL);
    assert_string_equal(at(k, P("{\"iss\":\"https://evil.test\",\"aud\":[\"x\"]%s}", e), NOW), "ok");
    lg_jwt_keys_free(k);
#undef P
}

/* ------------------------------------------------------------ malformed and oversized */

static const char *raw(lg_jwt_keys_t *k, const char *tok)
{
    return verify(k, strdup(tok));
}

static void test_malformed(void **state)
{
    lg_jwt_keys_t *k = load(SECRET, NULL, NULL, NULL);
    char *good = mint(HS_HDR, claims(""), HS, HSK);
    assert_string_equal(raw(k, good), "ok");
    char buf[2048];
    char *d1 = strchr(good, '.'), *d2 = strrchr(good, '.');
    /* two parts, four parts, empty parts */
    snprintf(buf, sizeof buf, "%.*s", (int)(d2 - good), good);
    assert_string_equal(raw(k, buf), "malformed token");
    snprintf(buf, sizeof buf, "%s.AAAA", good);
    assert_string_equal(raw(k, buf), "malformed token");
    snprintf(buf, sizeof buf, "%s", d1);
    assert_string_equal(raw(k, buf), "malformed token");
    snprintf(buf, sizeof buf, "%.*s.%s", (int)(d1 - good), good, d2);
    assert_string_equal(raw(k, buf), "malformed token");
    assert_string_equal(raw(k, ""), "malformed token");
    assert_string_equal(raw(k, ".."), "malformed token");
    /* base64url: padding, standard alphabet, whitespace, 4k+1 length, non-zero trailing bits */
    snprintf(buf, sizeof buf, "%.*s=%s", (int)(d1 - good), good, d1);
    assert_string_equal(raw(k, buf), "malformed token");
    snprintf(buf, sizeof buf, "%s=", good);
    assert_string_equal(raw(k, buf), "malformed token");
    snprintf(buf, sizeof buf, "%s", good);
    buf[3] = '+';
    assert_string_equal(raw(k, buf), "malformed token");
    snprintf(buf, sizeof buf, " %s", good);
    assert_string_equal(raw(k, buf), "malformed token");
    snprintf(buf, sizeof buf, "%.*sA%s", (int)(d1 - good), good, d1); /* header length 4k+1 or shifted */
    assert_string_not_equal(raw(k, buf), "ok");
    /* the header "{}" is e30; e31 has non-zero unused bits */
    assert_string_equal(raw(k, "e31.e30.AAAA"), "malformed token");
    /* header: not JSON, an array, trailing garbage, no alg, alg not a string, crit */
    const char *hdrs[] = {"not json", "[\"alg\",\"HS256\"]", "{\"alg\":\"HS256\"} x", "{\"typ\":\"JWT\"}",
                          "{\"alg\":256}", "{\"alg\":\"HS256\",}", "{\"alg\":\"HS256\",\"alg\":\"HS256\"}",
                          "{\"alg\":\"HS256\" \"kid\":\"a\"}", "{'alg':'HS256'}", "{\"alg\":\"HS256\",\"x\":[1,]}",
                          "{\"alg\":\"HS256\",\"x\":\"\x01\"}", "{\"alg\":\"HS256\",\"x\":\"\xff\"}",
                          "{\"alg\":\"HS256\",\"x\":\"\\ud800\"}", "{\"alg\":\"HS256\",\"x\":01}"};
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
        const char *r = verify(k, mint(hdrs[i], claims(""), HS, HSK));
        if (strcmp(r, "malformed token") != 0)
            fail_msg("header %s: %s", hdrs[i], r);
    }
    assert_string_equal(verify(k, mint("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", claims(""), HS, HSK)),
                        "unsupported critical header");
    /* payload (correctly signed): not JSON, array, trailing garbage, deep nesting */
    const char *pays[] = {"nope", "[1]", "{\"exp\":1700003600}}", "{\"exp\":1700003600", "",
                          "{\"exp\":1700003600,\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"};
    for (size_t i = 0; i < sizeof pays / sizeof pays[0]; i++) {
        const char *r = verify(k, mint(HS_HDR, pays[i], HS, HSK));
        if (strcmp(r, "malformed token") != 0)
            fail_msg("payload %s: %s", pays[i], r);
    }
    /* sub / role: types, lengths, NUL */
    assert_string_equal(verify(k, mint(HS_HDR, "{\"exp\":1700003600,\"sub\":42}", HS, HSK)), "bad claim type");
    assert_string_equal(verify(k, mint(HS_HDR, "{\"exp\":1700003600,\"role\":[\"admin\"]}", HS, HSK)), "bad claim type");
    assert_string_equal(verify(k, mint(HS_HDR, "{\"exp\":1700003600,\"sub\":\"a\\u0000b\"}", HS, HSK)), "bad claim type");
    char p[600];
    snprintf(p, sizeof p, "{\"exp\":1700003600,\"sub\":\"%0256d\"}", 0);
    assert_string_equal(verify(k, mint(HS_HDR, p, HS, HSK)), "claim too long");
    snprintf(p, sizeof p, "{\"exp\":1700003600,\"sub\":\"%0255d\",\"role\":\"%063d\"}", 0, 0);
    assert_string_equal(verify(k, mint(HS_HDR, p, HS, HSK)), "ok");
    assert_int_equal(strlen(last.sub), 255);
    assert_int_equal(strlen(last.role), 63);
    snprintf(p, sizeof p, "{\"exp\":1700003600,\"role\":\"%064d\"}", 0);
    assert_string_equal(verify(k, mint(HS_HDR, p, HS, HSK)), "claim too long");
    /* NULL token, NULL out/err */
    assert_int_equal(lg_jwt_verify(k, NULL, 0, NOW, NULL, NULL, 0), -1);
    assert_int_equal(lg_jwt_verify(k, good, strlen(good), NOW, NULL, NULL, 0), 0);
    assert_int_equal(lg_jwt_verify(NULL, good, strlen(good), NOW, NULL, NULL, 0), -1);
    /* not NUL-terminated: a prefix of a longer buffer */
    snprintf(buf, sizeof buf, "%s.garbage", good);
    assert_int_equal(lg_jwt_verify(k, buf, strlen(good), NOW, NULL, NULL, 0), 0);
    free(good);
    lg_jwt_keys_free(k);
}

static void test_oversized(void **state)
{
    lg_jwt_keys_t *k = load(SECRET, NULL, NULL, NULL);
    /* claims of 4096 bytes pass, 4097 do not */
    char p[5000];
    int pad = 4096 - (int)strlen("{\"exp\":1700003600,\"x\":\"\"}");
    snprintf(p, sizeof p, "{\"exp\":1700003600,\"x\":\"%0*d\"}", pad, 0);
    assert_int_equal(strlen(p), 4096);
    assert_string_equal(verify(k, mint(HS_HDR, p, HS, HSK)), "ok");
    snprintf(p, sizeof p, "{\"exp\":1700003600,\"x\":\"%0*d\"}", pad + 1, 0);
    assert_string_equal(verify(k, mint(HS_HDR, p, HS, HSK)), "token too large");
    /* a header over 1 KiB */
    char h[1200];
    snprintf(h, sizeof h, "{\"alg\":\"HS256\",\"x\":\"%01100d\"}", 0);
    assert_string_equal(verify(k, mint(h, claims(""), HS, HSK)), "token too large");
    /* the whole token over 8 KiB */
    char *big = malloc(LG_JWT_MAX_TOKEN + 2);
    memset(big, 'A', LG_JWT_MAX_TOKEN + 1);
    big[10] = '.', big[20] = '.';
    big[LG_JWT_MAX_TOKEN + 1] = '\0';
    assert_string_equal(verify(k, big), "token too large");
    lg_jwt_keys_free(k);
}

/* ------------------------------------------------------------ key loading errors */

static void test_load_errors(void **state)
{
    char err[256], path[160];
    lg_config_t none = cfg_of(NULL, "", NULL, NULL);
    assert_null(lg_jwt_keys_load(&none, err, sizeof err));
    assert_non_null(strstr(err, "LUAGENT_JWT_PUBLIC_KEY"));

    assert_int_equal(load_err("short-secret-value", NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "LUAGENT_JWT_SECRET"));
    assert_null(strstr(err, "short-secret-value"));

    assert_int_equal(load_err(NULL, "/nonexistent/key.pem", err, sizeof err), -1);
    assert_non_null(strstr(err, "LUAGENT_JWT_PUBLIC_KEY"));
    assert_non_null(strstr(err, "/nonexistent/key.pem"));

    /* PEM that is not a public key: a private key (its text must not appear in the message) */
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, ec1, NULL, NULL, 0, NULL, NULL);
    char *pk;
    long n = BIO_get_mem_data(b, &pk);
    char *priv = strndup(pk, (size_t)n);
    BIO_free(b);
    assert_int_equal(load_err(NULL, priv, err, sizeof err), -1);
    assert_non_null(strstr(err, "LUAGENT_JWT_PUBLIC_KEY"));
    assert_null(strstr(err, "BEGIN"));
    assert_null(strstr(err, priv + 40));
    free(priv);

    assert_int_equal(load_err(NULL, "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n", err, sizeof err), -1);
    assert_non_null(strstr(err, "LUAGENT_JWT_PUBLIC_KEY"));

    /* P-384, RSA 1024 */
    char *p384 = pem_of(ec384);
    assert_int_equal(load_err(NULL, p384, err, sizeof err), -1);
    assert_non_null(strstr(err, "P-256"));
    free(p384);
    EVP_PKEY *small = EVP_RSA_gen(1024);
    char *ps = pem_of(small);
    assert_int_equal(load_err(NULL, ps, err, sizeof err), -1);
    assert_non_null(strstr(err, "2048"));
    free(ps);
    EVP_PKEY_free(small);

    /* a file that is neither */
    snprintf(path, sizeof path, "%s/junk.txt", dir);
    write_file(path, "hello\n");
    assert_int_equal(load_err(NULL, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "neither"));
    unlink(path);

    /* JWKS problems */
    char *r1 = jwk_rsa(rsa1, "same", NULL), *e1 = jwk_ec(ec1, "same", NULL), *dk = jwk_ec(ec1, "d", ",\"d\":\"AAAA\"");
    char *jw = malloc(4096);
    const char *bad[] = {"{\"keys\":[%s,%s]}", "{\"keys\":[%s %s]}", "{\"nokeys\":[]}%s%s", "{\"keys\":[]}%s%s",
                         "{\"keys\":[{\"kty\":\"OKP\",\"x\":\"AA\"}]}%s%s"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(jw, 4096, bad[i], r1, e1);
        assert_int_equal(load_err(NULL, jw, err, sizeof err), -1);
        assert_non_null(strstr(err, "LUAGENT_JWT_PUBLIC_KEY"));
    }
    snprintf(jw, 4096, "{\"keys\":[%s]}", dk);
    assert_int_equal(load_err(NULL, jw, err, sizeof err), -1);
    assert_non_null(strstr(err, "private"));
    snprintf(jw, 4096, "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}");
    assert_int_equal(load_err(NULL, jw, err, sizeof err), -1);
    /* a point that is not on the curve */
    char *x = bn_b64u(ec1, OSSL_PKEY_PARAM_EC_PUB_X, 32);
    snprintf(jw, 4096, "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}]}", x, x);
    assert_int_equal(load_err(NULL, jw, err, sizeof err), -1);
    free(x);
    free(r1), free(e1), free(dk), free(jw);
}

/* ------------------------------------------------------------ cache */

static void test_cache(void **state)
{
    lg_jwt_keys_t *k = load(NULL, ec1_pem, NULL, NULL);
    lg_jwt_cache_t *c = lg_jwt_cache_new(0);
    char err[128];
    lg_jwt_claims_t cl;
    uint64_t hits, misses;
    char *t = mint(ES_HDR, claims(""), ES, ec1, 0); /* exp NOW + 3600 */
    size_t n = strlen(t);
    assert_int_equal(lg_jwt_check(c, k, t, n, NOW, &cl, err, sizeof err), 0);
    assert_int_equal(lg_jwt_check(c, k, t, n, NOW + 10, &cl, err, sizeof err), 0);
    assert_string_equal(cl.sub, "user-1");
    assert_string_equal(cl.role, "operator");
    assert_int_equal(cl.exp, 1700003600);
    lg_jwt_cache_stats(c, &hits, &misses);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 1);
    /* kept 300 s after verification */
    assert_int_equal(lg_jwt_check(c, k, t, n, NOW + 299, &cl, err, sizeof err), 0);
    assert_int_equal(lg_jwt_check(c, k, t, n, NOW + 300, &cl, err, sizeof err), 0);
    lg_jwt_cache_stats(c, &hits, &misses);
    assert_int_equal(hits, 2);
    assert_int_equal(misses, 2);
    /* a prefix of the token is another key (and invalid) */
    assert_int_equal(lg_jwt_check(c, k, t, n - 2, NOW + 300, &cl, err, sizeof err), -1);
    assert_string_equal(err, "bad signature");
    /* invalid tokens are not cached */
    assert_int_equal(lg_jwt_check(c, k, t, n - 2, NOW + 300, &cl, err, sizeof err), -1);
    lg_jwt_cache_stats(c, &hits, &misses);
    assert_int_equal(misses, 4);
    free(t);

    /* an entry ends at exp: then the token is verified again (and is expired after the leeway) */
    t = mint(ES_HDR, "{\"exp\":1700000100}", ES, ec1, 0);
    n = strlen(t);
    assert_int_equal(lg_jwt_check(c, k, t, n, NOW, &cl, err, sizeof err), 0);
    assert_int_equal(lg_jwt_check(c, k, t, n, NOW + 99, &cl, err, sizeof err), 0);
    lg_jwt_cache_stats(c, &hits, &misses);
    assert_int_equal(hits, 3);
    assert_int_equal(lg_jwt_check(c, k, t, n, NOW + 100, &cl, err, sizeof err), 0); /* leeway, not cached */
    assert_int_equal(lg_jwt_check(c, k, t, n, NOW + 101, &cl, err, sizeof err), 0);
    assert_int_equal(lg_jwt_check(c, k, t, n, NOW + 160, &cl, err, sizeof err), -1);
    assert_string_equal(err, "expired");
    lg_jwt_cache_stats(c, &hits, &misses);
    assert_int_equal(hits, 3);
    assert_int_equal(misses, 8);

    /* other keys: the cache starts over (a token valid under the old keys is verified again) */
    lg_jwt_keys_t *k2 = load(NULL, rsa1_pem, NULL, NULL);
    assert_int_equal(lg_jwt_check(c, k, t, n, NOW + 1, &cl, err, sizeof err), 0);
    assert_int_equal(lg_jwt_check(c, k2, t, n, NOW + 1, &cl, err, sizeof err), -1);
    assert_string_equal(err, "algorithm not allowed for this key");
    lg_jwt_keys_free(k2);
    free(t);

    /* a small cache: many tokens, the recent ones still hit */
    lg_jwt_cache_t *s = lg_jwt_cache_new(8);
    char *toks[40];
    for (int i = 0; i < 40; i++) {
        char p[96];
        snprintf(p, sizeof p, "{\"exp\":1700003600,\"sub\":\"u%d\"}", i);
        toks[i] = mint(ES_HDR, p, ES, ec1, 0);
        assert_int_equal(lg_jwt_check(s, k, toks[i], strlen(toks[i]), NOW, &cl, err, sizeof err), 0);
        assert_int_equal(lg_jwt_check(s, k, toks[i], strlen(toks[i]), NOW, &cl, err, sizeof err), 0);
        assert_int_equal(atoi(cl.sub + 1), i);
    }
    lg_jwt_cache_stats(s, &hits, &misses);
    assert_int_equal(hits, 40);
    assert_int_equal(misses, 40);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(lg_jwt_check(s, k, toks[i], strlen(toks[i]), NOW, &cl, err, sizeof err), 0);
        assert_int_equal(atoi(cl.sub + 1), i);
        free(toks[i]);
    }
    lg_jwt_cache_stats(s, &hits, &misses);
    assert_true(misses > 40); /* 40 tokens do not fit in 8 entries */
    lg_jwt_cache_free(s);
    /* NULL cache: plain verification */
    t = mint(ES_HDR, claims(""), ES, ec1, 0);
    assert_int_equal(lg_jwt_check(NULL, k, t, strlen(t), NOW, &cl, err, sizeof err), 0);
    free(t);
    lg_jwt_cache_free(c);
    lg_jwt_keys_free(k);
}

/* ------------------------------------------------------------ timings (printed, not asserted) */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void bench_one(const char *name, lg_jwt_keys_t *k, char *tok, int iters)
{
    size_t n = strlen(tok);
    lg_jwt_claims_t cl;
    double t0 = now_ns();
    for (int i = 0; i < iters; i++)
        assert_int_equal(lg_jwt_verify(k, tok, n, NOW, &cl, NULL, 0), 0);
    double unc = (now_ns() - t0) / iters;
    lg_jwt_cache_t *c = lg_jwt_cache_new(0);
    int citers = iters * 20;
    assert_int_equal(lg_jwt_check(c, k, tok, n, NOW, &cl, NULL, 0), 0);
    t0 = now_ns();
    for (int i = 0; i < citers; i++)
        assert_int_equal(lg_jwt_check(c, k, tok, n, NOW, &cl, NULL, 0), 0);
    double cached = (now_ns() - t0) / citers;
    printf("# jwt %-14s token %4zu bytes: verify %8.0f ns, cached check %6.0f ns\n", name, n, unc, cached);
    lg_jwt_cache_free(c);
    free(tok);
}

static void test_timings(void **state)
{
    int it = getenv("LUAGENT_TEST_SLOW") ? 200 : 2000;
    lg_jwt_keys_t *k = load(SECRET, jwks_path, ISS, AUD);
    bench_one("HS256", k, mint(HS_HDR, claims(""), HS, HSK), it);
    bench_one("RS256 (2048)", k, mint("{\"alg\":\"RS256\",\"kid\":\"r1\"}", claims(""), RS, rsa1, 0), it);
    bench_one("ES256 (P-256)", k, mint("{\"alg\":\"ES256\",\"kid\":\"e1\"}", claims(""), ES, ec1, 0), it);
    lg_jwt_keys_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hs256_ok),
        cmocka_unit_test(test_rs256_es256_pem_text_and_path),
        cmocka_unit_test(test_jwks),
        cmocka_unit_test(test_alg_none_and_confusion),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_es256_signature_forms),
        cmocka_unit_test(test_time_claims),
        cmocka_unit_test(test_iss_aud),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_timings),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

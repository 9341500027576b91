/* JWT verification (HS256 / RS256 / ES256) and the per-thread verified-token cache: see jwt.h.
 *
 * Claims, headers and JWKS are read by the small JSON reader below instead of the Lua codec: it
 * needs no lua_State (the verifier is shared by every worker and used before any coroutine
 * exists), allocates nothing, and only ever copies the few members we interpret into fixed
 * buffers; everything else is validated and skipped. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "luagent/buf.h"
#include "luagent/ids.h"
#include "luagent/jwt.h"

#define HDR_MAX 1024      /* decoded header bytes */
#define SIG_MAX 1024      /* decoded signature bytes (RSA 8192) */
#define KID_MAX 128
#define KEYFILE_MAX (1u << 20)
#define JSON_DEPTH 32

typedef enum { KT_HS = 1, KT_RS, KT_ES } ktype_t;

typedef struct pubkey {
    ktype_t type;
    int has_kid;
    char kid[KID_MAX + 1];
    EVP_PKEY *pkey;
} pubkey_t;

struct lg_jwt_keys {
    unsigned char *secret;
    size_t secret_len;
    pubkey_t *pub;
    size_t npub;
    char *issuer, *audience;
    uint64_t gen; /* process-unique: the cache notices a new keys object even at a reused address */
};

static uint64_t keys_gen;

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return -1;
}

/* ---------------------------------------------------------------- base64url (strict) */

static const signed char B64U[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,
    ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['-'] = 63, ['_'] = 64,
}; /* value + 1; 0 = not in the alphabet */

/* Decode without padding; refuses other characters, a length of 4k+1 and non-zero unused bits
 * (one encoding per byte string). 0 ok, -1 malformed, -2 longer than cap. */
static int b64u_decode(const char *s, size_t n, unsigned char *out, size_t cap, size_t *outlen)
{
    if (n % 4 == 1)
        return -1;
    size_t olen = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (olen > cap)
        return -2;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = B64U[(unsigned char)s[i]];
        if (!v)
            return -1;
        acc = (acc << 6) | (uint32_t)(v - 1);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return -1;
    *outlen = o;
    return 0;
}

/* ---------------------------------------------------------------- a small strict JSON reader */

typedef struct jr {
    const unsigned char *p, *end;
} jr_t;

static void jr_ws(jr_t *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int jr_eat(jr_t *r, char c)
{
    jr_ws(r);
    if (r->p < r->end && *r->p == (unsigned char)c) {
        r->p++;
        return 1;
    }
    return 0;
}

static int jr_hex4(jr_t *r, unsigned *v)
{
    if (r->end - r->p < 4)
        return -1;
    *v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = r->p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        *v = *v << 4 | d;
    }
    r->p += 4;
    return 0;
}

static void put(char *out, size_t cap, size_t *n, unsigned char c)
{
    if (out && *n + 1 < cap)
        out[*n] = (char)c;
    (*n)++;
}

/* A string at r->p (after whitespace). Decoded into out (truncated to cap - 1 bytes, always
 * terminated when out is not NULL); *n is the full decoded length; *nul set when it holds U+0000.
 * Raw control characters, bad escapes, lone surrogates and invalid UTF-8 are errors (-1). */
static int jr_str(jr_t *r, char *out, size_t cap, size_t *n, int *nul)
{
    size_t len = 0;
    int z = 0;
    jr_ws(r);
    if (r->p >= r->end || *r->p != '"')
        return -1;
    r->p++;
    for (;;) {
        if (r->p >= r->end)
            return -1;
        unsigned c = *r->p;
        if (c == '"') {
            r->p++;
            break;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            if (r->end - r->p < 2)
                return -1;
            unsigned e = r->p[1];
            r->p += 2;
            switch (e) {
            case '"': case '\\': case '/': put(out, cap, &len, (unsigned char)e); break;
            case 'b': put(out, cap, &len, '\b'); break;
            case 'f': put(out, cap, &len, '\f'); break;
            case 'n': put(out, cap, &len, '\n'); break;
            case 'r': put(out, cap, &len, '\r'); break;
            case 't': put(out, cap, &len, '\t'); break;
            case 'u': {
                unsigned cp, lo;
                if (jr_hex4(r, &cp))
                    return -1;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return -1;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u')
                        return -1;
                    r->p += 2;
                    if (jr_hex4(r, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                        return -1;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (cp == 0)
                    z = 1;
                if (cp < 0x80) {
                    put(out, cap, &len, (unsigned char)cp);
                } else if (cp < 0x800) {
                    put(out, cap, &len, (unsigned char)(0xC0 | cp >> 6));
                    put(out, cap, &len, (unsigned char)(0x80 | (cp & 0x3F)));
                } else if (cp < 0x10000) {
                    put(out, cap, &len, (unsigned char)(0xE0 | cp >> 12));
                    put(out, cap, &len, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
                    put(out, cap, &len, (unsigned char)(0x80 | (cp & 0x3F)));
                } else {
                    put(out, cap, &len, (unsigned char)(0xF0 | cp >> 18));
                    put(out, cap, &len, (unsigned char)(0x80 | ((cp >> 12) & 0x3F)));
                    put(out, cap, &len, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
                    put(out, cap, &len, (unsigned char)(0x80 | (cp & 0x3F)));
                }
                break;
            }
            default:
                return -1;
            }
            continue;
        }
        size_t u = lg_utf8_len(r->p, r->end);
        if (!u)
            return -1;
        for (size_t i = 0; i < u; i++)
            put(out, cap, &len, r->p[i]);
        r->p += u;
    }
    if (out && cap)
        out[len < cap ? len : cap - 1] = '\0';
    if (n)
        *n = len;
    if (nul)
        *nul = z;
    return 0;
}

/* A number (RFC 8259 grammar). */
static int jr_num(jr_t *r, double *v)
{
    jr_ws(r);
    const unsigned char *s = r->p, *p = s;
#define DIGITS(q) while (q < r->end && *q >= '0' && *q <= '9') q++
    if (p < r->end && *p == '-')
        p++;
    if (p >= r->end)
        return -1;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9') {
        DIGITS(p);
    } else
        return -1;
    if (p < r->end && *p == '.') {
        const unsigned char *q = ++p;
        DIGITS(p);
        if (p == q)
            return -1;
    }
    if (p < r->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < r->end && (*p == '+' || *p == '-'))
            p++;
        const unsigned char *q = p;
        DIGITS(p);
        if (p == q)
            return -1;
    }
#undef DIGITS
    char tmp[64];
    size_t n = (size_t)(p - s);
    if (n >= sizeof tmp)
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    *v = strtod(tmp, NULL);
    if (!isfinite(*v))
        return -1;
    r->p = p;
    return 0;
}

static int jr_word(jr_t *r, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, w, n) != 0)
        return -1;
    r->p += n;
    return 0;
}

/* Iterate the members of an object whose '{' was consumed: 1 = a member (its name decoded into
 * key; the cursor is on the value), 0 = '}' consumed, -1 = syntax error. A name longer than the
 * buffer is truncated and flagged by *klen >= cap (it then matches nothing). */
static int jr_member(jr_t *r, int *first, char *key, size_t cap, size_t *klen)
{
    if (jr_eat(r, '}'))
        return 0; /* `{}`, or the end after a member (a ',' before '}' fails in jr_str below) */
    if (!*first && !jr_eat(r, ','))
        return -1;
    *first = 0;
    if (jr_str(r, key, cap, klen, NULL) || !jr_eat(r, ':'))
        return -1;
    return 1;
}

static int key_is(const char *key, size_t klen, size_t cap, const char *name)
{
    return klen < cap && klen == strlen(name) && memcmp(key, name, klen) == 0;
}

static int jr_skip(jr_t *r, int depth)
{
    jr_ws(r);
    if (r->p >= r->end)
        return -1;
    switch (*r->p) {
    case '"':
        return jr_str(r, NULL, 0, NULL, NULL);
    case '{': {
        if (depth <= 0)
            return -1;
        r->p++;
        int first = 1, m;
        char key[1];
        size_t klen;
        while ((m = jr_member(r, &first, key, sizeof key, &klen)) == 1)
            if (jr_skip(r, depth - 1))
                return -1;
        return m;
    }
    case '[': {
        if (depth <= 0)
            return -1;
        r->p++;
        if (jr_eat(r, ']'))
            return 0;
        do {
            if (jr_skip(r, depth - 1))
                return -1;
        } while (jr_eat(r, ','));
        return jr_eat(r, ']') ? 0 : -1;
    }
    case 't':
        return jr_word(r, "true");
    case 'f':
        return jr_word(r, "false");
    case 'n':
        return jr_word(r, "null");
    default: {
        double d;
        return jr_num(r, &d);
    }
    }
}

static int jr_peek(jr_t *r)
{
    jr_ws(r);
    return r->p < r->end ? *r->p : -1;
}

/* The whole text is one object: open it (returns 0) */
static int jr_open_doc(jr_t *r, const void *s, size_t n)
{
    r->p = s;
    r->end = r->p + n;
    return jr_eat(r, '{') ? 0 : -1;
}

static int jr_close_doc(jr_t *r)
{
    jr_ws(r);
    return r->p == r->end ? 0 : -1;
}

/* ---------------------------------------------------------------- keys */

void lg_jwt_keys_free(lg_jwt_keys_t *k)
{
    if (!k)
        return;
    if (k->secret) {
        OPENSSL_cleanse(k->secret, k->secret_len);
        free(k->secret);
    }
    for (size_t i = 0; i < k->npub; i++)
        EVP_PKEY_free(k->pub[i].pkey);
    free(k->pub);
    free(k->issuer);
    free(k->audience);
    free(k);
}

static int load_fail(char *err, size_t errlen, const char *fmt, const char *a)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, a ? a : "");
    ERR_clear_error();
    return -1;
}

#define PK "LUAGENT_JWT_PUBLIC_KEY"

/* Accept RSA 2048..8192 and EC P-256 (point on the curve); set the type. */
static int check_pkey(EVP_PKEY *pkey, ktype_t *type, const char *where, char *err, size_t errlen)
{
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits < 2048 || bits > 8192)
            return load_fail(err, errlen, PK ": %sRSA key must have 2048 to 8192 bits", where);
        *type = KT_RS;
        return 0;
    }
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char grp[64] = "";
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, grp, sizeof grp, NULL) ||
            (strcmp(grp, "prime256v1") != 0 && strcmp(grp, "P-256") != 0))
            return load_fail(err, errlen, PK ": %sEC key is not on curve P-256", where);
        EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        int ok = pc && EVP_PKEY_public_check(pc) == 1;
        EVP_PKEY_CTX_free(pc);
        if (!ok)
            return load_fail(err, errlen, PK ": %sEC public key is invalid", where);
        *type = KT_ES;
        return 0;
    }
    return load_fail(err, errlen, PK ": %sonly RSA and EC P-256 public keys are supported", where);
}

static int add_pub(lg_jwt_keys_t *k, EVP_PKEY *pkey, ktype_t type, const char *kid, size_t kidlen)
{
    pubkey_t *p = realloc(k->pub, (k->npub + 1) * sizeof *p);
    if (!p)
        return -1;
    k->pub = p;
    p = &k->pub[k->npub++];
    memset(p, 0, sizeof *p);
    p->type = type;
    p->pkey = pkey;
    if (kid) {
        p->has_kid = 1;
        memcpy(p->kid, kid, kidlen);
        p->kid[kidlen] = '\0';
    }
    return 0;
}

static int load_pem(lg_jwt_keys_t *k, const char *text, size_t len, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(text, (int)len);
    if (!bio)
        return load_fail(err, errlen, PK ": out of memory", NULL);
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    if (!pkey) {
        BIO_free(bio);
        bio = BIO_new_mem_buf(text, (int)len);
        X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        if (x) {
            pkey = X509_get_pubkey(x);
            X509_free(x);
        }
    }
    BIO_free(bio);
    if (!pkey)
        return load_fail(err, errlen, PK ": no PEM public key or certificate found%s", NULL);
    ktype_t type;
    if (check_pkey(pkey, &type, "", err, errlen) || add_pub(k, pkey, type, NULL, 0)) {
        if (err && errlen && !*err)
            snprintf(err, errlen, PK ": out of memory");
        EVP_PKEY_free(pkey);
        return -1;
    }
    ERR_clear_error();
    return 0;
}

static EVP_PKEY *pkey_fromdata(const char *name, OSSL_PARAM *params)
{
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, name, NULL);
    if (!pc || EVP_PKEY_fromdata_init(pc) <= 0 || EVP_PKEY_fromdata(pc, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(pc);
    return pkey;
}

static EVP_PKEY *rsa_from_ne(const unsigned char *n, size_t nlen, const unsigned char *e, size_t elen)
{
    EVP_PKEY *pkey = NULL;
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    if (bn && be && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) && (params = OSSL_PARAM_BLD_to_param(bld)))
        pkey = pkey_fromdata("RSA", params);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    return pkey;
}

static EVP_PKEY *ec_from_xy(const unsigned char *x, const unsigned char *y)
{
    unsigned char pt[65];
    char group[] = "prime256v1";
    pt[0] = 4;
    memcpy(pt + 1, x, 32);
    memcpy(pt + 33, y, 32);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt),
        OSSL_PARAM_construct_end(),
    };
    return pkey_fromdata("EC", params);
}

#define B64_N_MAX 1400 /* base64url of an 8192-bit modulus is 1366 characters */

typedef struct jwk {
    char kty[16], crv[16], alg[16], use[16], kid[KID_MAX + 1];
    size_t kty_n, crv_n, alg_n, use_n, kid_n;
    char n[B64_N_MAX], e[32], x[64], y[64];
    size_t n_n, e_n, x_n, y_n;
    int has_kid, has_alg, has_use, has_d;
} jwk_t;

/* One member of a JWK: copy it when it is one we read (a string), else skip it. */
static int jwk_member(jr_t *r, jwk_t *j, const char *key, size_t klen, size_t kcap)
{
    struct {
        const char *name;
        char *buf;
        size_t cap, *n;
        int *flag;
    } f[] = {
        {"kty", j->kty, sizeof j->kty, &j->kty_n, NULL}, {"crv", j->crv, sizeof j->crv, &j->crv_n, NULL},
        {"alg", j->alg, sizeof j->alg, &j->alg_n, &j->has_alg}, {"use", j->use, sizeof j->use, &j->use_n, &j->has_use},
        {"kid", j->kid, sizeof j->kid, &j->kid_n, &j->has_kid}, {"n", j->n, sizeof j->n, &j->n_n, NULL},
        {"e", j->e, sizeof j->e, &j->e_n, NULL}, {"x", j->x, sizeof j->x, &j->x_n, NULL},
        {"y", j->y, sizeof j->y, &j->y_n, NULL},
    };
    if (key_is(key, klen, kcap, "d") || key_is(key, klen, kcap, "p") || key_is(key, klen, kcap, "k"))
        j->has_d = 1;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (!key_is(key, klen, kcap, f[i].name))
            continue;
        if (jr_peek(r) != '"')
            return -1;
        int nul;
        if (jr_str(r, f[i].buf, f[i].cap, f[i].n, &nul) || nul)
            return -1;
        if (*f[i].n >= f[i].cap)
            *f[i].n = f[i].cap; /* too long: flagged, refused where it matters */
        if (f[i].flag)
            *f[i].flag = 1;
        return 0;
    }
    return jr_skip(r, JSON_DEPTH);
}

static int streq(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

/* Turn one parsed JWK into a key (or skip it). idx names it in messages (never key material). */
static int jwk_add(lg_jwt_keys_t *k, jwk_t *j, int idx, char *err, size_t errlen)
{
    char where[64];
    snprintf(where, sizeof where, "JWKS key %d: ", idx);
    char msg[160];
#define JFAIL(what) (snprintf(msg, sizeof msg, PK ": %s%s", where, what), load_fail(err, errlen, "%s", msg))
    if (j->has_d)
        return JFAIL("holds private key material (give only public keys)");
    if (j->has_kid && j->kid_n > KID_MAX)
        return JFAIL("kid longer than 128 bytes");
    if (j->has_use && !streq(j->use, j->use_n, "sig"))
        return 0; /* an encryption key */
    ktype_t type;
    EVP_PKEY *pkey = NULL;
    if (streq(j->kty, j->kty_n, "RSA")) {
        if (j->has_alg && !streq(j->alg, j->alg_n, "RS256"))
            return 0;
        unsigned char n[1024], e[16];
        size_t nl, el;
        if (j->n_n >= sizeof j->n || j->e_n >= sizeof j->e || j->n_n == 0 || j->e_n == 0 ||
            b64u_decode(j->n, j->n_n, n, sizeof n, &nl) || b64u_decode(j->e, j->e_n, e, sizeof e, &el))
            return JFAIL("RSA key needs n and e in base64url");
        pkey = rsa_from_ne(n, nl, e, el);
        type = KT_RS;
    } else if (streq(j->kty, j->kty_n, "EC")) {
        if (!streq(j->crv, j->crv_n, "P-256"))
            return 0;
        if (j->has_alg && !streq(j->alg, j->alg_n, "ES256"))
            return 0;
        unsigned char x[33], y[33];
        size_t xl, yl;
        if (j->x_n >= sizeof j->x || j->y_n >= sizeof j->y || b64u_decode(j->x, j->x_n, x, sizeof x, &xl) ||
            b64u_decode(j->y, j->y_n, y, sizeof y, &yl) || xl != 32 || yl != 32)
            return JFAIL("EC P-256 key needs x and y of 32 bytes in base64url");
        pkey = ec_from_xy(x, y);
        type = KT_ES;
    } else {
        return 0; /* oct, OKP, unknown: not ours */
    }
    if (!pkey)
        return JFAIL("is not a valid public key");
    ktype_t checked;
    if (check_pkey(pkey, &checked, where, err, errlen)) {
        EVP_PKEY_free(pkey);
        return -1;
    }
    for (size_t i = 0; j->has_kid && i < k->npub; i++)
        if (k->pub[i].has_kid && strcmp(k->pub[i].kid, j->kid) == 0) {
            EVP_PKEY_free(pkey);
            return JFAIL("duplicate kid");
        }
    if (add_pub(k, pkey, type, j->has_kid ? j->kid : NULL, j->kid_n)) {
        EVP_PKEY_free(pkey);
        return JFAIL("out of memory");
    }
    ERR_clear_error();
    return 0;
#undef JFAIL
}

static int load_jwks(lg_jwt_keys_t *k, const char *text, size_t len, char *err, size_t errlen)
{
    jr_t r;
    char key[16];
    size_t klen;
    int first = 1, m, seen_keys = 0, idx = 0;
    jwk_t *j = malloc(sizeof *j);
    if (!j)
        return load_fail(err, errlen, PK ": out of memory", NULL);
    if (jr_open_doc(&r, text, len))
        goto bad;
    while ((m = jr_member(&r, &first, key, sizeof key, &klen)) == 1) {
        if (!key_is(key, klen, sizeof key, "keys") || seen_keys) {
            if (jr_skip(&r, JSON_DEPTH))
                goto bad;
            continue;
        }
        seen_keys = 1;
        if (!jr_eat(&r, '['))
            goto bad;
        if (jr_eat(&r, ']'))
            continue;
        do {
            memset(j, 0, sizeof *j);
            if (!jr_eat(&r, '{'))
                goto bad;
            int f2 = 1, m2;
            char k2[8];
            size_t k2len;
            while ((m2 = jr_member(&r, &f2, k2, sizeof k2, &k2len)) == 1)
                if (jwk_member(&r, j, k2, k2len, sizeof k2))
                    goto bad;
            if (m2 < 0)
                goto bad;
            if (jwk_add(k, j, idx++, err, errlen))
                goto out;
        } while (jr_eat(&r, ','));
        if (!jr_eat(&r, ']'))
            goto bad;
    }
    if (m < 0 || jr_close_doc(&r))
        goto bad;
    if (!seen_keys) {
        load_fail(err, errlen, PK ": JWKS has no \"keys\" array%s", NULL);
        goto out;
    }
    if (k->npub == 0) {
        load_fail(err, errlen, PK ": JWKS has no RS256 or ES256 (P-256) signing key%s", NULL);
        goto out;
    }
    OPENSSL_cleanse(j, sizeof *j);
    free(j);
    return 0;
bad:
    load_fail(err, errlen, PK ": JWKS is not valid JSON of the expected shape%s", NULL);
out:
    free(j);
    return -1;
}

static const char *skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    return s;
}

static int is_pem(const char *s)
{
    return strncmp(skip_ws(s), "-----BEGIN", 10) == 0;
}

/* PEM text in an environment variable sometimes carries "\n" escapes instead of line breaks. */
static int load_pem_text(lg_jwt_keys_t *k, const char *v, char *err, size_t errlen)
{
    if (strchr(v, '\n') || !strstr(v, "\\n"))
        return load_pem(k, v, strlen(v), err, errlen);
    char *copy = strdup(v);
    if (!copy)
        return load_fail(err, errlen, PK ": out of memory", NULL);
    char *w = copy;
    for (const char *s = v; *s; s++) {
        if (s[0] == '\\' && s[1] == 'n') {
            *w++ = '\n';
            s++;
        } else {
            *w++ = *s;
        }
    }
    int rc = load_pem(k, copy, (size_t)(w - copy), err, errlen);
    free(copy);
    return rc;
}

/* A path is named in messages only when it looks like one (never a mangled key). */
static const char *printable_path(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > 200)
        return "the file it names";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return "the file it names";
    return v;
}

static int load_public(lg_jwt_keys_t *k, const char *v, char *err, size_t errlen)
{
    if (is_pem(v))
        return load_pem_text(k, v, err, errlen);
    if (*skip_ws(v) == '{')
        return load_jwks(k, v, strlen(v), err, errlen);
    char msg[320];
    FILE *f = fopen(v, "rb");
    if (!f) {
        snprintf(msg, sizeof msg, PK ": cannot read %s (%s): expected PEM text or a path to a PEM or JWKS file",
                 printable_path(v), strerror(errno));
        return load_fail(err, errlen, "%s", msg);
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)KEYFILE_MAX) {
        fclose(f);
        snprintf(msg, sizeof msg, PK ": %s is not a regular file of at most 1 MiB", printable_path(v));
        return load_fail(err, errlen, "%s", msg);
    }
    size_t size = (size_t)st.st_size;
    char *text = malloc(size + 1);
    if (!text) {
        fclose(f);
        return load_fail(err, errlen, PK ": out of memory", NULL);
    }
    size_t got = fread(text, 1, size, f);
    fclose(f);
    text[got] = '\0';
    int rc;
    if (is_pem(text)) {
        rc = load_pem(k, text, got, err, errlen);
    } else if (*skip_ws(text) == '{') {
        rc = load_jwks(k, text, got, err, errlen);
    } else {
        snprintf(msg, sizeof msg, PK ": %s is neither a PEM public key nor a JWKS file", printable_path(v));
        rc = load_fail(err, errlen, "%s", msg);
    }
    free(text);
    return rc;
}

lg_jwt_keys_t *lg_jwt_keys_load(const lg_config_t *cfg, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    const char *secret = cfg->jwt_secret && *cfg->jwt_secret ? cfg->jwt_secret : NULL;
    const char *pub = cfg->jwt_public_key && *cfg->jwt_public_key ? cfg->jwt_public_key : NULL;
    if (!secret && !pub) {
        fail(err, errlen, "JWT is not configured: set LUAGENT_JWT_SECRET or LUAGENT_JWT_PUBLIC_KEY");
        return NULL;
    }
    lg_jwt_keys_t *k = calloc(1, sizeof *k);
    if (!k) {
        fail(err, errlen, "JWT keys: out of memory");
        return NULL;
    }
    k->gen = __atomic_add_fetch(&keys_gen, 1, __ATOMIC_RELAXED);
    if (secret) {
        k->secret_len = strlen(secret);
        if (k->secret_len < 32) {
            fail(err, errlen, "LUAGENT_JWT_SECRET: must be at least 32 bytes (256 bits) for HS256");
            goto bad;
        }
        k->secret = malloc(k->secret_len);
        if (!k->secret) {
            fail(err, errlen, "LUAGENT_JWT_SECRET: out of memory");
            goto bad;
        }
        memcpy(k->secret, secret, k->secret_len);
    }
    if (pub && load_public(k, pub, err, errlen))
        goto bad;
    if (cfg->jwt_issuer && *cfg->jwt_issuer && !(k->issuer = strdup(cfg->jwt_issuer))) {
        fail(err, errlen, "LUAGENT_JWT_ISSUER: out of memory");
        goto bad;
    }
    if (cfg->jwt_audience && *cfg->jwt_audience && !(k->audience = strdup(cfg->jwt_audience))) {
        fail(err, errlen, "LUAGENT_JWT_AUDIENCE: out of memory");
        goto bad;
    }
    if ((k->issuer && strlen(k->issuer) > LG_JWT_MAX_CLAIMS) || (k->audience && strlen(k->audience) > LG_JWT_MAX_CLAIMS)) {
        fail(err, errlen, "LUAGENT_JWT_ISSUER / LUAGENT_JWT_AUDIENCE: longer than 4096 bytes");
        goto bad;
    }
    ERR_clear_error();
    return k;
bad:
    lg_jwt_keys_free(k);
    ERR_clear_error();
    return NULL;
}

/* ---------------------------------------------------------------- verification */

static int verify_hs(const lg_jwt_keys_t *k, const char *in, size_t inlen, const unsigned char *sig, size_t siglen)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    if (!HMAC(EVP_sha256(), k->secret, (int)k->secret_len, (const unsigned char *)in, inlen, mac, &maclen) ||
        maclen != 32)
        return -1;
    int ok = siglen == 32 && CRYPTO_memcmp(mac, sig, 32) == 0;
    OPENSSL_cleanse(mac, sizeof mac);
    return ok ? 0 : -1;
}

static int verify_pkey(EVP_PKEY *pkey, const char *in, size_t inlen, const unsigned char *sig, size_t siglen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pkey) == 1 &&
             EVP_DigestVerify(ctx, sig, siglen, (const unsigned char *)in, inlen) == 1;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : -1;
}

/* JWS ES256 is r || s, 32 bytes each; OpenSSL wants a DER ECDSA-Sig-Value. */
static int verify_es(EVP_PKEY *pkey, const char *in, size_t inlen, const unsigned char *sig, size_t siglen)
{
    if (siglen != 64)
        return -1;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return -1;
    }
    unsigned char der[128], *p = der;
    int rc = -1, n = i2d_ECDSA_SIG(es, NULL);
    if (n > 0 && (size_t)n <= sizeof der && i2d_ECDSA_SIG(es, &p) == n)
        rc = verify_pkey(pkey, in, inlen, der, (size_t)n);
    ECDSA_SIG_free(es);
    return rc;
}

typedef struct hdr {
    char alg[16];
    size_t alg_n;
    char kid[KID_MAX + 1];
    size_t kid_n;
    int has_alg, has_kid, has_crit;
} hdr_t;

static int parse_header(const unsigned char *s, size_t n, hdr_t *h)
{
    jr_t r;
    char key[8];
    size_t klen;
    int first = 1, m, nul;
    memset(h, 0, sizeof *h);
    if (jr_open_doc(&r, s, n))
        return -1;
    while ((m = jr_member(&r, &first, key, sizeof key, &klen)) == 1) {
        if (key_is(key, klen, sizeof key, "alg")) {
            if (h->has_alg || jr_peek(&r) != '"' || jr_str(&r, h->alg, sizeof h->alg, &h->alg_n, &nul))
                return -1;
            h->has_alg = 1;
        } else if (key_is(key, klen, sizeof key, "kid")) {
            if (h->has_kid || jr_peek(&r) != '"' || jr_str(&r, h->kid, sizeof h->kid, &h->kid_n, &nul) ||
                nul || h->kid_n > KID_MAX)
                return -1;
            h->has_kid = 1;
        } else {
            if (key_is(key, klen, sizeof key, "crit"))
                h->has_crit = 1;
            if (jr_skip(&r, JSON_DEPTH))
                return -1;
        }
    }
    return m < 0 || jr_close_doc(&r) ? -1 : 0;
}

enum { C_EXP = 1, C_NBF = 2, C_IAT = 4, C_ISS = 8, C_AUD = 16, C_SUB = 32, C_ROLE = 64 };

static int num_claim(jr_t *r, uint64_t *v)
{
    double d;
    if (jr_peek(r) == '"' || jr_peek(r) == '[' || jr_peek(r) == '{' || jr_num(r, &d) || d < 0)
        return -1;
    *v = d >= 18446744073709549568.0 ? UINT64_MAX : (uint64_t)d;
    return 0;
}

/* "bad claim type" for a wrong type, "claim too long", or 0 */
static const char *str_claim(jr_t *r, char *out, size_t cap)
{
    size_t n;
    int nul;
    if (jr_peek(r) != '"')
        return "bad claim type";
    if (jr_str(r, out, cap, &n, &nul))
        return "malformed token";
    if (nul)
        return "bad claim type";
    if (n >= cap)
        return "claim too long";
    return NULL;
}

static int eq_conf(const char *s, size_t n, const char *conf)
{
    return conf && n == strlen(conf) && memcmp(s, conf, n) == 0;
}

static int parse_claims(const lg_jwt_keys_t *k, const unsigned char *s, size_t n, uint64_t now, lg_jwt_claims_t *out,
                        char *err, size_t errlen)
{
    jr_t r;
    char key[8], scratch[LG_JWT_MAX_CLAIMS + 1];
    size_t klen, sl;
    int first = 1, m, nul, seen = 0, aud_ok = 0;
    uint64_t exp = 0, nbf = 0, iat = 0;
    const char *why;
    memset(out, 0, sizeof *out);
    if (jr_open_doc(&r, s, n))
        return fail(err, errlen, "malformed token");
    while ((m = jr_member(&r, &first, key, sizeof key, &klen)) == 1) {
        static const char *const names[] = {"exp", "nbf", "iat", "iss", "aud", "sub", "role"};
        int bit = 0;
        for (int i = 0; i < 7; i++)
            if (key_is(key, klen, sizeof key, names[i]))
                bit = 1 << i;
        if (bit & seen)
            return fail(err, errlen, "malformed token"); /* a duplicate claim we interpret */
        seen |= bit;
        switch (bit) {
        case C_EXP:
        case C_NBF:
        case C_IAT:
            if (num_claim(&r, bit == C_EXP ? &exp : bit == C_NBF ? &nbf : &iat))
                return fail(err, errlen, "bad claim type");
            break;
        case C_ISS:
            if (jr_peek(&r) != '"' || jr_str(&r, scratch, sizeof scratch, &sl, &nul))
                return fail(err, errlen, "bad claim type");
            if (k->issuer && !eq_conf(scratch, sl, k->issuer))
                return fail(err, errlen, "issuer mismatch");
            break;
        case C_AUD:
            if (jr_peek(&r) == '"') {
                if (jr_str(&r, scratch, sizeof scratch, &sl, &nul))
                    return fail(err, errlen, "malformed token");
                aud_ok = eq_conf(scratch, sl, k->audience);
            } else if (jr_eat(&r, '[')) {
                if (!jr_eat(&r, ']')) {
                    do {
                        if (jr_peek(&r) != '"' || jr_str(&r, scratch, sizeof scratch, &sl, &nul))
                            return fail(err, errlen, "bad claim type");
                        aud_ok |= eq_conf(scratch, sl, k->audience);
                    } while (jr_eat(&r, ','));
                    if (!jr_eat(&r, ']'))
                        return fail(err, errlen, "malformed token");
                }
            } else {
                return fail(err, errlen, "bad claim type");
            }
            break;
        case C_SUB:
        case C_ROLE:
            why = bit == C_SUB ? str_claim(&r, out->sub, sizeof out->sub) : str_claim(&r, out->role, sizeof out->role);
            if (why)
                return fail(err, errlen, why);
            break;
        default:
            if (jr_skip(&r, JSON_DEPTH))
                return fail(err, errlen, "malformed token");
        }
    }
    if (m < 0 || jr_close_doc(&r))
        return fail(err, errlen, "malformed token");
    if (!(seen & C_EXP))
        return fail(err, errlen, "missing exp");
    if (exp <= UINT64_MAX - LG_JWT_LEEWAY_S && now >= exp + LG_JWT_LEEWAY_S)
        return fail(err, errlen, "expired");
    if ((seen & C_NBF) && now + LG_JWT_LEEWAY_S < nbf)
        return fail(err, errlen, "not yet valid");
    if ((seen & C_IAT) && iat > now + LG_JWT_LEEWAY_S)
        return fail(err, errlen, "issued in the future");
    if (k->issuer && !(seen & C_ISS))
        return fail(err, errlen, "issuer mismatch");
    if (k->audience && !aud_ok)
        return fail(err, errlen, "audience mismatch");
    out->exp = exp;
    return 0;
}

int lg_jwt_verify(const lg_jwt_keys_t *k, const char *token, size_t len, uint64_t now_s, lg_jwt_claims_t *out,
                  char *err, size_t errlen)
{
    lg_jwt_claims_t local;
    if (!out)
        out = &local;
    if (!k)
        return fail(err, errlen, "no JWT keys");
    if (!token)
        return fail(err, errlen, "malformed token");
    if (len > LG_JWT_MAX_TOKEN)
        return fail(err, errlen, "token too large");
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)) || d1 == token || d2 == d1 + 1)
        return fail(err, errlen, "malformed token");
    const char *sigp = d2 + 1;
    size_t hlen = (size_t)(d1 - token), plen = (size_t)(d2 - d1 - 1), slen = len - (size_t)(sigp - token);

    unsigned char hbuf[HDR_MAX], sig[SIG_MAX], pbuf[LG_JWT_MAX_CLAIMS];
    size_t hn, sn, pn;
    int rc = b64u_decode(token, hlen, hbuf, sizeof hbuf, &hn);
    if (rc)
        return fail(err, errlen, rc == -2 ? "token too large" : "malformed token");
    hdr_t h;
    if (parse_header(hbuf, hn, &h) || !h.has_alg)
        return fail(err, errlen, "malformed token");
    if (h.has_crit)
        return fail(err, errlen, "unsupported critical header");

    /* The key decides the algorithm: alg only names the family to look in. */
    ktype_t want;
    if (streq(h.alg, h.alg_n, "HS256"))
        want = KT_HS;
    else if (streq(h.alg, h.alg_n, "RS256"))
        want = KT_RS;
    else if (streq(h.alg, h.alg_n, "ES256"))
        want = KT_ES;
    else
        return fail(err, errlen, "algorithm not allowed for this key");
    const pubkey_t *key = NULL;
    if (want == KT_HS) {
        if (!k->secret)
            return fail(err, errlen, "algorithm not allowed for this key");
    } else if (h.has_kid) {
        for (size_t i = 0; i < k->npub && !key; i++)
            if (k->pub[i].has_kid && strlen(k->pub[i].kid) == h.kid_n && memcmp(k->pub[i].kid, h.kid, h.kid_n) == 0)
                key = &k->pub[i];
        if (!key)
            return fail(err, errlen, "unknown key id");
        if (key->type != want)
            return fail(err, errlen, "algorithm not allowed for this key");
    } else {
        size_t found = 0;
        for (size_t i = 0; i < k->npub; i++)
            if (k->pub[i].type == want && found++ == 0)
                key = &k->pub[i];
        if (found == 0)
            return fail(err, errlen, "algorithm not allowed for this key");
        if (found > 1)
            return fail(err, errlen, "key id required");
    }

    rc = b64u_decode(sigp, slen, sig, sizeof sig, &sn);
    if (rc)
        return fail(err, errlen, rc == -2 ? "bad signature" : "malformed token");
    size_t inlen = (size_t)(d2 - token);
    if (want == KT_HS)
        rc = verify_hs(k, token, inlen, sig, sn);
    else if (want == KT_RS)
        rc = sn == (size_t)EVP_PKEY_get_size(key->pkey) ? verify_pkey(key->pkey, token, inlen, sig, sn) : -1;
    else
        rc = verify_es(key->pkey, token, inlen, sig, sn);
    if (rc) {
        ERR_clear_error();
        return fail(err, errlen, "bad signature");
    }

    rc = b64u_decode(d1 + 1, plen, pbuf, sizeof pbuf, &pn);
    if (rc)
        return fail(err, errlen, rc == -2 ? "token too large" : "malformed token");
    return parse_claims(k, pbuf, pn, now_s, out, err, errlen);
}

/* ---------------------------------------------------------------- cache
 * Set-associative (4 ways), indexed by an FNV-1a hash of the token's last 64 bytes (its signature:
 * different tokens differ there) and confirmed by comparing the whole token with the copy the entry
 * keeps. No SHA-256 on a hit: measured, hashing the whole token with SHA-256 cost more than the
 * rest of a request under valgrind's instruction count. */

#define WAYS 4

typedef struct centry {
    char *token; /* a copy, NULL when empty */
    size_t len;
    uint64_t h, until, used;
    lg_jwt_claims_t claims;
} centry_t;

struct lg_jwt_cache {
    centry_t *e;
    size_t nsets;
    uint64_t tick, hits, misses, gen;
};

static void centry_clear(centry_t *e)
{
    free(e->token);
    e->token = NULL;
    e->until = 0;
}

lg_jwt_cache_t *lg_jwt_cache_new(size_t capacity)
{
    if (capacity == 0)
        capacity = 1024;
    size_t cap = 8;
    while (cap < capacity && cap < ((size_t)1 << 24))
        cap <<= 1;
    lg_jwt_cache_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->nsets = cap / WAYS;
    c->e = calloc(cap, sizeof *c->e);
    if (!c->e) {
        free(c);
        return NULL;
    }
    return c;
}

void lg_jwt_cache_free(lg_jwt_cache_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nsets * WAYS; i++)
        free(c->e[i].token);
    free(c->e);
    free(c);
}

void lg_jwt_cache_stats(const lg_jwt_cache_t *c, uint64_t *hits, uint64_t *misses)
{
    if (hits)
        *hits = c ? c->hits : 0;
    if (misses)
        *misses = c ? c->misses : 0;
}

int lg_jwt_check(lg_jwt_cache_t *c, const lg_jwt_keys_t *k, const char *token, size_t len, uint64_t now_s,
                 lg_jwt_claims_t *out, char *err, size_t errlen)
{
    if (!c || !k || !token || len > LG_JWT_MAX_TOKEN)
        return lg_jwt_verify(k, token, len, now_s, out, err, errlen);
    if (c->gen != k->gen) {
        for (size_t i = 0; i < c->nsets * WAYS; i++)
            centry_clear(&c->e[i]);
        c->gen = k->gen;
    }
    size_t tail = len > 64 ? 64 : len;
    uint64_t h = lg_fnv1a(token + len - tail, tail, LG_FNV_OFFSET ^ len);
    centry_t *set = &c->e[(h & (c->nsets - 1)) * WAYS];
    for (int i = 0; i < WAYS; i++) {
        if (set[i].token != NULL && set[i].h == h && set[i].len == len && memcmp(set[i].token, token, len) == 0) {
            if (now_s < set[i].until) {
                set[i].used = ++c->tick;
                c->hits++;
                if (out)
                    *out = set[i].claims;
                return 0;
            }
            centry_clear(&set[i]); /* expired */
        }
    }
    c->misses++;
    lg_jwt_claims_t cl;
    if (lg_jwt_verify(k, token, len, now_s, &cl, err, errlen))
        return -1;
    if (out)
        *out = cl;
    uint64_t until = now_s + LG_JWT_CACHE_TTL_S;
    if (cl.exp < until)
        until = cl.exp;
    if (until > now_s) { /* a token valid only thanks to the leeway is not cached */
        centry_t *victim = &set[0];
        for (int i = 0; i < WAYS; i++) {
            if (set[i].token == NULL || set[i].until <= now_s) {
                victim = &set[i];
                break;
            }
            if (set[i].used < victim->used)
                victim = &set[i];
        }
        centry_clear(victim);
        if ((victim->token = malloc(len)) != NULL) {
            memcpy(victim->token, token, len);
            victim->len = len;
            victim->h = h;
            victim->until = until;
            victim->used = ++c->tick;
            victim->claims = cl;
        }
    }
    return 0;
}

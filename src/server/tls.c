/* The main listener's SSL_CTX (tls.h). */
#include "luagent/tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

#define H2O_USE_LIBUV 0
#include <h2o.h>

/* TLS 1.2: ECDHE with AEAD only (Mozilla "intermediate", 2023). TLS 1.3 keeps OpenSSL's suites. */
#define LG_TLS12_CIPHERS                                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"                     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define LG_TLS_GROUPS "X25519:P-256:P-384"

/* ": <reason>" of the first OpenSSL error queued (the root cause: "no start line" rather than the
 * "PEM lib" pushed on top of it), or "". The queue is cleared. */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_error();
    buf[0] = '\0';
    if (e != 0) {
        const char *r = ERR_reason_error_string(e);
        snprintf(buf, len, ": %s", r != NULL ? r : "unknown OpenSSL error");
    }
    ERR_clear_error();
    return buf;
}

/* 0 when path can be opened for reading, else -1 with err. */
static int readable(const char *var, const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot read the %s '%s': %s", var, what, path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

SSL_CTX *lg_tls_context(const char *cert_path, const char *key_path, char *err, size_t errlen)
{
    char why[200];
    if (readable("LUAGENT_TLS_CERT", "certificate file", cert_path, err, errlen) != 0 ||
        readable("LUAGENT_TLS_KEY", "private key file", key_path, err, errlen) != 0)
        return NULL;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "LUAGENT_TLS_CERT: cannot create the TLS context%s", ssl_reason(why, sizeof(why)));
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_ALL | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, LG_TLS12_CIPHERS) != 1 || SSL_CTX_set1_groups_list(ctx, LG_TLS_GROUPS) != 1) {
        snprintf(err, errlen, "LUAGENT_TLS_CERT: cannot configure TLS%s", ssl_reason(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        snprintf(err, errlen, "LUAGENT_TLS_CERT: '%s' is not a usable PEM certificate%s", cert_path,
                 ssl_reason(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1) {
        /* OpenSSL checks the pair while loading: a well-formed key of another certificate fails here */
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
            (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH || ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH)) {
            ERR_clear_error();
            snprintf(err, errlen, "LUAGENT_TLS_KEY: the private key in '%s' does not match the certificate in '%s' (LUAGENT_TLS_CERT)",
                     key_path, cert_path);
        } else {
            snprintf(err, errlen, "LUAGENT_TLS_KEY: '%s' is not a usable PEM private key%s", key_path,
                     ssl_reason(why, sizeof(why)));
        }
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "LUAGENT_TLS_KEY: the private key in '%s' does not match the certificate in '%s' (LUAGENT_TLS_CERT)",
                 key_path, cert_path);
        goto fail;
    }
    /* resumption: OpenSSL's tickets (TLS 1.2 and 1.3) and its internal cache, one per process */
    static const unsigned char sid_ctx[] = "luagent";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, 20480);
    SSL_CTX_set_timeout(ctx, 3600);
    /* h2, h2-16, h2-14, http/1.1: h2o_accept starts HTTP/2 for the first three, HTTP/1.1 otherwise */
    h2o_ssl_register_alpn_protocols(ctx, h2o_alpn_protocols);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

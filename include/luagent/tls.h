/**
 * tls.h - the HTTPS side of the main listener (LUAGENT_TLS_CERT / LUAGENT_TLS_KEY, DESIGN §7).
 *
 * One SSL_CTX serves every worker (OpenSSL's SSL_CTX is thread-safe once configured): TLS 1.2 and
 * 1.3 only, ECDHE key exchange with AEAD ciphers (Mozilla's "intermediate" list, which is also
 * free of the ciphers HTTP/2 forbids), no compression, no renegotiation, session resumption by
 * OpenSSL's tickets (keys made per process) and its internal server-side cache, and ALPN offering
 * h2 (and the drafts h2o still speaks) then http/1.1, so h2o_accept picks HTTP/2 when the client
 * agrees and HTTP/1.1 otherwise. NPN is not offered (no current client uses it).
 */
#ifndef LUAGENT_TLS_H
#define LUAGENT_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

/** Build the server context from a PEM certificate chain (cert_path) and a PEM private key
 *  (key_path). Returns NULL with `err` naming the variable at fault when a file is unreadable,
 *  is not valid PEM of the right kind, or when the key does not match the certificate:
 *  "LUAGENT_TLS_CERT: ...", "LUAGENT_TLS_KEY: ...". The caller owns the context (SSL_CTX_free). */
SSL_CTX *lg_tls_context(const char *cert_path, const char *key_path, char *err, size_t errlen);

#endif

/* Settings stored in the config table; secrets encrypted with AES-256-GCM (secrets.h). */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/ids.h"
#include "luagent/pg.h"
#include "luagent/secrets.h"
#include "luagent/store.h"

#define NONCE 12
#define TAG 16

/* ---- the key ---- */

static int hexv(int c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; }

int lg_secret_key_parse(const char *var, const char *text, unsigned char key[32], char *err, size_t errlen)
{
    size_t n = text ? strlen(text) : 0;
    if (n == 64) {
        for (size_t i = 0; i < 32; i++) {
            int a = hexv((unsigned char)text[2 * i]), b = hexv((unsigned char)text[2 * i + 1]);
            if (a < 0 || b < 0)
                goto base64;
            key[i] = (unsigned char)(a * 16 + b);
        }
        return 0;
    }
base64:;
    unsigned char buf[64];
    int got = n > 0 && n <= 88 ? EVP_DecodeBlock(buf, (const unsigned char *)text, (int)n) : -1;
    if (got >= 32) { /* EVP_DecodeBlock counts '=' padding as zero bytes */
        got -= (n > 0 && text[n - 1] == '=') + (n > 1 && text[n - 2] == '=');
    }
    if (got != 32) {
        snprintf(err, errlen, "%s: expected 32 bytes as 64 hex digits or base64 (e.g. `openssl rand -hex 32`)", var);
        return -1;
    }
    memcpy(key, buf, 32);
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

static void key_id(const unsigned char key[32], char out[9])
{
    char hex[65];
    lg_sha256_hex(key, 32, hex);
    memcpy(out, hex, 8);
    out[8] = '\0';
}

/* ---- AES-256-GCM ---- */

int lg_secret_encrypt(const unsigned char key[32], const char *name, const char *plain, size_t len, lg_buf_t *out)
{
    unsigned char *raw = malloc(NONCE + len + TAG);
    int ok = 0, n = 0;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (raw != NULL && c != NULL && RAND_bytes(raw, NONCE) == 1 &&
        EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE, NULL) == 1 &&
        EVP_EncryptInit_ex(c, NULL, NULL, key, raw) == 1 &&
        EVP_EncryptUpdate(c, NULL, &n, (const unsigned char *)name, (int)strlen(name)) == 1 &&
        EVP_EncryptUpdate(c, raw + NONCE, &n, (const unsigned char *)plain, (int)len) == 1 &&
        EVP_EncryptFinal_ex(c, raw + NONCE + n, &n) == 1 &&
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG, raw + NONCE + len) == 1) {
        char kid[9];
        key_id(key, kid);
        lg_buf_printf(out, "v1:%s:", kid);
        size_t b64 = 4 * ((NONCE + len + TAG + 2) / 3);
        char *o = lg_buf_reserve(out, b64);
        EVP_EncodeBlock((unsigned char *)o, raw, (int)(NONCE + len + TAG));
        out->len += b64;
        out->data[out->len] = '\0';
        ok = 1;
    }
    EVP_CIPHER_CTX_free(c);
    if (raw != NULL)
        OPENSSL_cleanse(raw, NONCE + len + TAG);
    free(raw);
    return ok ? 0 : -1;
}

int lg_secret_decrypt(const unsigned char key[32], const char *name, const char *stored, lg_buf_t *out, char *err,
                      size_t errlen)
{
    char kid[9];
    key_id(key, kid);
    if (strncmp(stored, "v1:", 3) != 0 || strlen(stored) < 13 || stored[11] != ':') {
        snprintf(err, errlen, "%s: the stored value is not an encrypted value", name);
        return -1;
    }
    if (memcmp(stored + 3, kid, 8) != 0) {
        snprintf(err, errlen, "%s: encrypted with another LUAGENT_SECRET_KEY (key id %.8s; this one is %s)", name,
                 stored + 3, kid);
        return -1;
    }
    const char *b64 = stored + 12;
    size_t n = strlen(b64);
    unsigned char *raw = malloc(n);
    int got = raw != NULL && n % 4 == 0 ? EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n) : -1;
    if (got > 0)
        got -= (b64[n - 1] == '=') + (n > 1 && b64[n - 2] == '=');
    int ok = 0, m = 0;
    if (got >= NONCE + TAG) {
        size_t len = (size_t)got - NONCE - TAG;
        char *o = lg_buf_reserve(out, len);
        EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
        ok = c != NULL && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE, NULL) == 1 &&
             EVP_DecryptInit_ex(c, NULL, NULL, key, raw) == 1 &&
             EVP_DecryptUpdate(c, NULL, &m, (const unsigned char *)name, (int)strlen(name)) == 1 &&
             EVP_DecryptUpdate(c, (unsigned char *)o, &m, raw + NONCE, (int)len) == 1 &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG, raw + NONCE + len) == 1 &&
             EVP_DecryptFinal_ex(c, (unsigned char *)o + m, &m) == 1;
        EVP_CIPHER_CTX_free(c);
        if (ok) {
            out->len += len;
            out->data[out->len] = '\0';
        } else {
            OPENSSL_cleanse(o, len);
        }
    }
    if (raw != NULL)
        OPENSSL_cleanse(raw, n);
    free(raw);
    if (!ok)
        snprintf(err, errlen, "%s: the stored value does not decrypt (altered, or stored under another name)", name);
    return ok ? 0 : -1;
}

/* ---- the config table ---- */

static PGconn *db(const lg_config_t *cfg, char *err, size_t errlen)
{
    if (cfg->database_url == NULL) {
        snprintf(err, errlen, "settings are stored in Postgres: DATABASE_URL is not set");
        return NULL;
    }
    int applied;
    if (lg_migrate(cfg->database_url, &applied, err, errlen) != 0) /* the table must exist */
        return NULL;
    return lg_pg_connect_blocking(cfg->database_url, "luagent config", err, errlen);
}

static int ok(PGresult *r) { return r != NULL && (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK); }

static int secret_key(const lg_config_t *cfg, unsigned char key[32], char *err, size_t errlen)
{
    if (cfg->secret_key == NULL) {
        snprintf(err, errlen, "LUAGENT_SECRET_KEY is not set: secrets in the config table cannot be read or written");
        return -1;
    }
    return lg_secret_key_parse("LUAGENT_SECRET_KEY", cfg->secret_key, key, err, errlen);
}

int lg_config_load_stored(lg_config_t *cfg, int *applied, char *err, size_t errlen)
{
    *applied = 0;
    PGconn *c = db(cfg, err, errlen);
    if (c == NULL)
        return -1;
    PGresult *r = PQexec(c, "SELECT key, value, secret FROM config ORDER BY key");
    int rc = ok(r) ? 0 : -1;
    if (rc != 0)
        snprintf(err, errlen, "cannot read the config table");
    unsigned char key[32];
    int have_key = -1;
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        const char *name = PQgetvalue(r, i, 0), *value = PQgetvalue(r, i, 1);
        int secret = PQgetvalue(r, i, 2)[0] == 't', must;
        if (!lg_config_storable(name, &must))
            continue; /* a name this version does not take from the table */
        lg_buf_t plain = {0};
        if (secret) {
            if (have_key < 0)
                have_key = secret_key(cfg, key, err, errlen) == 0;
            if (!have_key || lg_secret_decrypt(key, name, value, &plain, err, errlen) != 0) {
                rc = -1;
                break;
            }
            value = plain.data;
        }
        int a = lg_config_apply(cfg, name, value, err, errlen);
        if (plain.data != NULL)
            OPENSSL_cleanse(plain.data, plain.len);
        lg_buf_free(&plain);
        if (a < 0)
            rc = -1;
        else
            *applied += a;
    }
    OPENSSL_cleanse(key, sizeof(key));
    PQclear(r);
    PQfinish(c);
    return rc;
}

int lg_config_store(const lg_config_t *cfg, const char *name, const char *value, char *err, size_t errlen)
{
    int secret;
    if (!lg_config_storable(name, &secret)) {
        snprintf(err, errlen, "%s cannot be stored in the database (only run-time settings can; set it in the "
                              "environment or .env)", name);
        return -1;
    }
    lg_config_t scratch = {0}; /* validate it as the server would */
    if (lg_config_apply(&scratch, name, value, err, errlen) < 0) {
        lg_config_free(&scratch);
        return -1;
    }
    lg_config_free(&scratch);
    lg_buf_t stored = {0};
    if (secret) {
        unsigned char key[32];
        if (secret_key(cfg, key, err, errlen) != 0)
            return -1;
        int rc = lg_secret_encrypt(key, name, value, strlen(value), &stored);
        OPENSSL_cleanse(key, sizeof(key));
        if (rc != 0) {
            snprintf(err, errlen, "%s: encryption failed", name);
            return -1;
        }
    } else {
        lg_buf_append(&stored, value, strlen(value));
    }
    PGconn *c = db(cfg, err, errlen);
    int rc = -1;
    if (c != NULL) {
        const char *p[] = {name, stored.data, secret ? "true" : "false"};
        PGresult *r = PQexecParams(c,
                                   "INSERT INTO config (key, value, secret) VALUES ($1, $2, $3) ON CONFLICT (key) DO "
                                   "UPDATE SET value = EXCLUDED.value, secret = EXCLUDED.secret, updated_at = now()",
                                   3, NULL, p, NULL, NULL, 0);
        rc = ok(r) ? 0 : -1;
        if (rc != 0)
            snprintf(err, errlen, "cannot write the config table");
        PQclear(r);
        PQfinish(c);
    }
    lg_buf_free(&stored);
    return rc;
}

int lg_config_unstore(const lg_config_t *cfg, const char *name, char *err, size_t errlen)
{
    PGconn *c = db(cfg, err, errlen);
    if (c == NULL)
        return -1;
    const char *p[] = {name};
    PGresult *r = PQexecParams(c, "DELETE FROM config WHERE key = $1", 1, NULL, p, NULL, NULL, 0);
    int rc = ok(r) ? atoi(PQcmdTuples(r)) > 0 : -1;
    if (rc < 0)
        snprintf(err, errlen, "cannot write the config table");
    PQclear(r);
    PQfinish(c);
    return rc;
}

int lg_config_rotate(const lg_config_t *cfg, const char *new_key_text, char *err, size_t errlen)
{
    unsigned char old[32], new[32];
    if (secret_key(cfg, old, err, errlen) != 0 ||
        lg_secret_key_parse("LUAGENT_NEW_SECRET_KEY", new_key_text, new, err, errlen) != 0)
        return -1;
    PGconn *c = db(cfg, err, errlen);
    if (c == NULL)
        return -1;
    int count = 0, rc = 0;
    PQclear(PQexec(c, "BEGIN"));
    PGresult *r = PQexec(c, "SELECT key, value FROM config WHERE secret FOR UPDATE");
    if (!ok(r)) {
        snprintf(err, errlen, "cannot read the config table");
        rc = -1;
    }
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        const char *name = PQgetvalue(r, i, 0);
        lg_buf_t plain = {0}, again = {0};
        if (lg_secret_decrypt(old, name, PQgetvalue(r, i, 1), &plain, err, errlen) != 0 ||
            lg_secret_encrypt(new, name, plain.data, plain.len, &again) != 0) {
            rc = -1;
        } else {
            const char *p[] = {name, again.data};
            PGresult *u = PQexecParams(c, "UPDATE config SET value = $2, updated_at = now() WHERE key = $1", 2, NULL, p,
                                       NULL, NULL, 0);
            rc = ok(u) ? 0 : -1;
            PQclear(u);
            count++;
        }
        if (plain.data != NULL)
            OPENSSL_cleanse(plain.data, plain.len);
        lg_buf_free(&plain);
        lg_buf_free(&again);
    }
    PQclear(r);
    PQclear(PQexec(c, rc == 0 ? "COMMIT" : "ROLLBACK"));
    PQfinish(c);
    OPENSSL_cleanse(old, sizeof(old));
    OPENSSL_cleanse(new, sizeof(new));
    return rc == 0 ? count : -1;
}

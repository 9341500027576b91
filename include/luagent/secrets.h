/**
 * secrets.h - settings stored in Postgres's `config` table, secrets encrypted at rest (DESIGN §6-7).
 *
 * Encryption: AES-256-GCM with LUAGENT_SECRET_KEY (32 bytes, given as 64 hex digits or as base64),
 * a random 12-byte nonce per value, the setting's name as additional authenticated data (a value
 * cannot be moved to another name). Stored text: "v1:<key id>:<base64(nonce | ciphertext | tag)>",
 * the key id being the first 8 hex digits of SHA-256(key), so a value encrypted with another key is
 * recognised and named in the error instead of failing as "corrupt".
 *
 * Precedence: the environment and .env win over the table (DESIGN §7). Only run-time settings may
 * be stored (provider keys and base URLs, the default model, JWT settings, the default rate limit,
 * the callback secret, execution timeout, memory limit, session TTL); secret names (API keys,
 * secrets) can only be stored encrypted. All functions here are blocking: main thread or CLI.
 */
#ifndef LUAGENT_SECRETS_H
#define LUAGENT_SECRETS_H

#include <stddef.h>

#include "luagent/buf.h"
#include "luagent/config.h"

/** Parse a 32-byte key (64 hex digits, or base64): 0, or -1 with err naming `var`. */
int lg_secret_key_parse(const char *var, const char *text, unsigned char key[32], char *err, size_t errlen);
/** Encrypt `plain` for setting `name` into out ("v1:…"). */
int lg_secret_encrypt(const unsigned char key[32], const char *name, const char *plain, size_t len, lg_buf_t *out);
/** Decrypt a stored value into out: 0, or -1 with err (wrong key: says which key id it needs). */
int lg_secret_decrypt(const unsigned char key[32], const char *name, const char *stored, lg_buf_t *out, char *err,
                      size_t errlen);

/** Apply the settings stored in the config table to cfg where the environment and .env leave them
 *  unset (secrets decrypted with LUAGENT_SECRET_KEY). 0 (*applied = how many), or -1 with err. */
int lg_config_load_stored(lg_config_t *cfg, int *applied, char *err, size_t errlen);
/** `luagent config set NAME VALUE`: validate, encrypt secret names, upsert. 0 or -1 with err. */
int lg_config_store(const lg_config_t *cfg, const char *name, const char *value, char *err, size_t errlen);
/** `luagent config unset NAME`: 1 removed, 0 absent, -1 error. */
int lg_config_unstore(const lg_config_t *cfg, const char *name, char *err, size_t errlen);
/** `luagent config rotate-key`: re-encrypt every secret from LUAGENT_SECRET_KEY to `new_key_text`
 *  in one transaction: the number re-encrypted, or -1 with err (nothing changed). */
int lg_config_rotate(const lg_config_t *cfg, const char *new_key_text, char *err, size_t errlen);

#endif

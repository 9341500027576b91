/* luagent.crypto: sha256(data) and hmac(key, data [, "sha256"|"sha1"|"sha512"]) as lowercase hex. */
#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "luagent/bind.h"

static void push_hex(lua_State *L, const unsigned char *md, unsigned len)
{
    static const char hex[] = "0123456789abcdef";
    char out[2 * EVP_MAX_MD_SIZE];
    for (unsigned i = 0; i < len; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    lua_pushlstring(L, out, 2 * (size_t)len);
}

static const EVP_MD *pick_md(lua_State *L, int idx)
{
    const char *name = luaL_optstring(L, idx, "sha256");
    if (strcmp(name, "sha256") == 0)
        return EVP_sha256();
    if (strcmp(name, "sha512") == 0)
        return EVP_sha512();
    if (strcmp(name, "sha1") == 0)
        return EVP_sha1();
    luaL_argerror(L, idx, "expected \"sha256\", \"sha512\" or \"sha1\"");
    return NULL;
}

static int l_sha256(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL))
        return luaL_error(L, "crypto.sha256: digest failed");
    push_hex(L, md, mdlen);
    return 1;
}

static int l_hmac(lua_State *L)
{
    size_t klen, len;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *data = luaL_checklstring(L, 2, &len);
    const EVP_MD *md = pick_md(L, 3);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned outlen = 0;
    if (HMAC(md, key, (int)klen, (const unsigned char *)data, len, out, &outlen) == NULL)
        return luaL_error(L, "crypto.hmac: failed");
    push_hex(L, out, outlen);
    return 1;
}

void lg_bind_open_crypto(lua_State *L)
{
    static const luaL_Reg fns[] = {{"sha256", l_sha256}, {"hmac", l_hmac}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, fns);
}

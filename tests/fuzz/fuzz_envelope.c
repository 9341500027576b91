/* fuzz_envelope: the execute request's body as the request path reads it (lg_envelope_parse: the
 * JSON decoder with spans, then the envelope's checks), on both routes. Oracles beyond the
 * sanitizers: the outcome is one of the documented ones; a decoded value encodes, and that text
 * decodes again and encodes to as many bytes (members may come out in another order); the spans lie inside the body and hold valid JSON;
 * lg_json_compact of a valid body is valid JSON. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "luagent/buf.h"
#include "luagent/envelope.h"
#include "luagent/json.h"

#include "fuzz_lua.h"
#include "luagent/router.h"

#define CHECK(c)                                                                                                       \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                                    \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

static lua_State *L;
static lg_buf_t b1, b2;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    L = fuzz_lua_new();
    return 0;
}

/* encode the value at idx; decode that text; encode again: same bytes */
static void roundtrip(int idx)
{
    lg_buf_reset(&b1);
    lg_json_error_t err;
    lg_json_status_t st = lg_json_encode(L, idx, &b1, LG_JSON_DEFAULT_MAX_DEPTH, &err);
    CHECK(st == LG_JSON_OK);
    int top = lua_gettop(L);
    st = lg_json_decode(L, b1.data, b1.len, LG_JSON_DEFAULT_MAX_DEPTH, &err);
    if (st != LG_JSON_OK)
        fprintf(stderr, "re-decode of %.*s: %s\n", (int)(b1.len > 400 ? 400 : b1.len), b1.data, err.msg);
    CHECK(st == LG_JSON_OK);
    CHECK(lua_gettop(L) == top + 1);
    lg_buf_reset(&b2);
    CHECK(lg_json_encode(L, -1, &b2, LG_JSON_DEFAULT_MAX_DEPTH, &err) == LG_JSON_OK);
    CHECK(b1.len == b2.len);
    lua_settop(L, top);
}

static void one(const char *body, size_t len, int seed)
{
    lua_settop(L, 0);
    char name[LG_AGENT_NAME_MAX + 1], msg[256];
    size_t namelen = 0;
    lg_envelope_opts_t opts;
    memset(&opts, 0, sizeof(opts));
    lg_json_span_t spans[2];
    int status = 0;
    const char *code = NULL;
    const char *err = lg_envelope_parse(L, body, len, seed, name, &namelen, &opts, spans, &status, &code, msg, sizeof(msg));
    if (err != NULL) {
        CHECK(status == 400 || status == 404);
        CHECK(code != NULL && (strcmp(code, "invalid_request") == 0 || strcmp(code, "invalid_json") == 0 ||
                               strcmp(code, "not_found") == 0));
        CHECK(strlen(err) < 256);
        return;
    }
    CHECK(lua_gettop(L) == 2);
    CHECK(!lua_isnil(L, 1) && !lg_json_is_null(L, 1));
    CHECK(lua_isnil(L, 2) || (lua_istable(L, 2) && !lg_json_is_array_marked(L, 2)));
    CHECK(opts.async == 0 || opts.async == 1);
    size_t cl = strnlen(opts.callback_url, sizeof(opts.callback_url));
    CHECK(cl < sizeof(opts.callback_url));
    CHECK(cl == 0 || opts.async);
    if (seed) {
        CHECK(namelen <= LG_AGENT_NAME_MAX && name[namelen] == '\0');
        (void)lg_agent_name_valid(name, namelen);
    }
    for (int i = 0; i < 2; i++) {
        CHECK(spans[i].off <= len && spans[i].len <= len - spans[i].off);
        if (spans[i].len > 0) { /* the recorder stores these bytes as JSON text */
            lg_json_error_t jerr;
            CHECK(lg_json_decode(L, body + spans[i].off, spans[i].len, LG_BODY_MAX_DEPTH, &jerr) == LG_JSON_OK);
            lua_pop(L, 1);
        }
    }
    CHECK(spans[0].len > 0);
    roundtrip(1);
    roundtrip(2);
    /* the body is valid JSON: its compact form must be too */
    lg_buf_reset(&b1);
    lg_json_compact(&b1, body, len);
    CHECK(memchr(b1.data ? b1.data : "", '\n', b1.len) == NULL);
    lg_json_error_t jerr;
    CHECK(lg_json_decode(L, b1.data ? b1.data : "", b1.len, LG_BODY_MAX_DEPTH, &jerr) == LG_JSON_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one((const char *)data, size, 0);
    one((const char *)data, size, 1);
    fuzz_lua_done(L, 0);
    return 0;
}

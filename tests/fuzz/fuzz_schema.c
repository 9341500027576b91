/* fuzz_schema: the agents' input-schema compiler and validator (schema.h). The input is JSON text,
 * decoded to Lua as the host does: "<schema>\0<value>" compiles the schema and validates the value
 * (and a few fixed values) against it; without a NUL the text is compiled as a schema, validated
 * against itself, and validated as a value against fixed schemas that use every keyword.
 * Oracles: compile either succeeds or gives a reason; the stack is left as it was; failures are
 * counted the same by lg_schema_validate and lg_schema_check; the details are a valid JSON array
 * (they go out in a 422 body) with at most LG_SCHEMA_MAX_ERRORS entries. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "luagent/buf.h"
#include "luagent/json.h"

#include "fuzz_lua.h"
#include "luagent/schema.h"

#define CHECK(c)                                                                                                       \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                                    \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

static lua_State *L;
static lg_schema_t *fixed[4];
static int fixed_values; /* stack slots 1..n hold the fixed values */

static const char *const FIXED_SCHEMAS[] = {
    ("{\"type\":\"object\",\"required\":[\"name\",\"tags\"],\"additionalProperties\":false,\"properties\":{"
    "\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":8,\"pattern\":\"^[a-z]+$\"},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"exclusiveMaximum\":150},"
    "\"ratio\":{\"type\":[\"number\",\"null\"],\"exclusiveMinimum\":0,\"maximum\":1},"
    "\"tags\":{\"type\":\"array\",\"minItems\":1,\"maxItems\":3,\"items\":{\"enum\":[\"a\",1,null,[],{},{\"k\":[1]}]}},"
    "\"mode\":{\"const\":{\"x\":[true,false]}},\"a/b~c\":{\"type\":\"boolean\"}}}"),
    ("{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"id\"],\"additionalProperties\":{\"type\":\"string\","
    "\"maxLength\":2}}}"),
    "{\"type\":[\"string\",\"integer\",\"boolean\"],\"minLength\":2,\"pattern\":\"(x|y)+z?\",\"minimum\":-5,\"maximum\":5}",
    "true",
};
static const char *const FIXED_VALUES[] = {
    "{\"name\":\"abc\",\"tags\":[\"a\",1,null,[],{},{\"k\":[1]}],\"age\":3,\"ratio\":null,\"mode\":{\"x\":[true,false]}}",
    "[{\"id\":\"1\",\"b\":\"xyz\"},{\"q\":1},[],{}]",
    "\"h\\u00e9llo\\u0000x\"",
    "-0",
    "1e300",
    "null",
    "[]",
    "{}",
};

static int decode(const char *s, size_t n)
{
    lg_json_error_t err;
    return lg_json_decode(L, s, n, LG_JSON_DEFAULT_MAX_DEPTH, &err) == LG_JSON_OK;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    L = fuzz_lua_new();
    char err[256];
    for (size_t i = 0; i < sizeof FIXED_SCHEMAS / sizeof *FIXED_SCHEMAS; i++) {
        CHECK(decode(FIXED_SCHEMAS[i], strlen(FIXED_SCHEMAS[i])));
        fixed[i] = lg_schema_compile(L, -1, err, sizeof err);
        if (!fixed[i])
            fprintf(stderr, "fixed schema %zu: %s\n", i, err);
        CHECK(fixed[i]);
        lua_pop(L, 1);
    }
    for (size_t i = 0; i < sizeof FIXED_VALUES / sizeof *FIXED_VALUES; i++)
        CHECK(decode(FIXED_VALUES[i], strlen(FIXED_VALUES[i])));
    fixed_values = lua_gettop(L);
    return 0;
}

static void validate(const lg_schema_t *s, int idx)
{
    static lg_buf_t details;
    int top = lua_gettop(L);
    lg_buf_reset(&details);
    size_t n = lg_schema_validate(s, L, idx, &details, LG_SCHEMA_MAX_ERRORS);
    CHECK(lua_gettop(L) == top);
    lg_schema_report_t rep;
    memset(&rep, 0, sizeof rep);
    size_t m = lg_schema_check(s, L, idx, &rep);
    CHECK(lua_gettop(L) == top);
    CHECK(m == n);
    if (n == 0) {
        CHECK(rep.details.len == 0);
    } else {
        CHECK(rep.failures == n);
        CHECK(decode(rep.details.data, rep.details.len)); /* goes out in the 422 body */
        CHECK(lua_istable(L, -1));
        CHECK(lua_objlen(L, -1) == (n > LG_SCHEMA_MAX_ERRORS ? LG_SCHEMA_MAX_ERRORS : n));
        lua_pop(L, 1);
    }
    lg_buf_free(&rep.details);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_settop(L, fixed_values);
    const char *s = (const char *)data;
    const char *z = memchr(s, '\0', size);
    size_t sn = z ? (size_t)(z - s) : size;
    if (!decode(s, sn)) {
        fuzz_lua_done(L, fixed_values);
        return 0;
    }
    int schema_idx = lua_gettop(L);
    char err[256] = "";
    lg_schema_t *sc = lg_schema_compile(L, schema_idx, err, sizeof err);
    CHECK(lua_gettop(L) == schema_idx);
    if (sc) {
        for (int i = 1; i <= fixed_values; i++)
            validate(sc, i);
        if (z) {
            if (decode(z + 1, size - sn - 1))
                validate(sc, lua_gettop(L));
        } else {
            validate(sc, schema_idx);
        }
        lg_schema_free(sc);
    } else {
        CHECK(err[0] != '\0');
    }
    if (!z)
        for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
            validate(fixed[i], schema_idx);
    fuzz_lua_done(L, fixed_values);
    return 0;
}

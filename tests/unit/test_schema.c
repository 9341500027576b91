/* test_schema.c - agents' input schemas (src/lrt/schema.c): every keyword, paths and their escaping,
 * Unicode lengths, integers vs numbers, [] vs {}, null, nested arrays of objects, collecting every
 * failure up to the cap, malformed schemas, and the userdata agent records hold. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "luagent/buf.h"
#include "luagent/json.h"
#include "luagent/schema.h"

static int setup(void **state)
{
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return -1;
    luaL_openlibs(L);
    luaopen_luagent_json(L);
    lua_setglobal(L, "json");
    *state = L;
    return 0;
}

static int teardown(void **state)
{
    lua_close(*state);
    return 0;
}

/* Evaluate `return <expr>` (a schema written as an agent would) and compile it. */
static lg_schema_t *compile(lua_State *L, const char *expr, char *err, size_t errlen)
{
    char src[4096];
    snprintf(src, sizeof(src), "return %s", expr);
    if (luaL_dostring(L, src) != 0)
        fail_msg("Lua: %s", lua_tostring(L, -1));
    int top = lua_gettop(L);
    lg_schema_t *s = lg_schema_compile(L, -1, err, errlen);
    assert_int_equal(lua_gettop(L), top);
    lua_pop(L, 1);
    return s;
}

static lg_schema_t *ok_schema(lua_State *L, const char *expr)
{
    char err[512];
    lg_schema_t *s = compile(L, expr, err, sizeof(err));
    if (s == NULL)
        fail_msg("schema %s refused: %s", expr, err);
    return s;
}

/* Validate the JSON text `task`; returns the failure count and leaves "[details]" in out. */
static size_t run(lua_State *L, const lg_schema_t *s, const char *task, char *out, size_t outlen)
{
    assert_int_equal(lg_json_decode(L, task, strlen(task), 64, NULL), LG_JSON_OK);
    int top = lua_gettop(L);
    lg_buf_t d = {0};
    lg_buf_putc(&d, '[');
    size_t n = lg_schema_validate(s, L, -1, &d, LG_SCHEMA_MAX_ERRORS);
    lg_buf_putc(&d, ']');
    assert_int_equal(lua_gettop(L), top);
    assert_int_equal(lg_schema_validate(s, L, top, NULL, LG_SCHEMA_MAX_ERRORS), n); /* details optional */
    lua_pop(L, 1);
    snprintf(out, outlen, "%s", d.data);
    lg_buf_free(&d);
    return n;
}

static void valid(lua_State *L, const lg_schema_t *s, const char *task)
{
    char out[8192];
    if (run(L, s, task, out, sizeof(out)) != 0)
        fail_msg("%s should be valid: %s", task, out);
}

/* `task` fails with exactly these details. */
static void invalid(lua_State *L, const lg_schema_t *s, const char *task, const char *details)
{
    char out[8192];
    size_t n = run(L, s, task, out, sizeof(out));
    if (n == 0)
        fail_msg("%s should be invalid", task);
    if (strcmp(out, details) != 0)
        fail_msg("%s:\n  got  %s\n  want %s", task, out, details);
}

static void malformed(lua_State *L, const char *expr, const char *want)
{
    char err[512];
    lg_schema_t *s = compile(L, expr, err, sizeof(err));
    if (s != NULL) {
        lg_schema_free(s);
        fail_msg("schema %s should be refused", expr);
    }
    if (strcmp(err, want) != 0)
        fail_msg("schema %s:\n  got  %s\n  want %s", expr, err, want);
}

static void test_types(void **state)
{
    lua_State *L = *state;
    static const struct {
        const char *type, *good, *bad, *got;
    } cases[] = {
        {"object", "{}", "[]", "array"},       {"array", "[]", "{}", "object"},
        {"string", "\"\"", "1", "integer"},     {"number", "1.5", "\"1\"", "string"},
        {"integer", "3", "3.5", "number"},      {"boolean", "false", "null", "null"},
        {"null", "null", "0", "integer"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char expr[64], want[256];
        snprintf(expr, sizeof(expr), "{type = '%s'}", cases[i].type);
        lg_schema_t *s = ok_schema(L, expr);
        valid(L, s, cases[i].good);
        snprintf(want, sizeof(want), "[{\"path\":\"\",\"message\":\"must be of type %s (got %s)\"}]", cases[i].type,
                 cases[i].got);
        invalid(L, s, cases[i].bad, want);
        lg_schema_free(s);
    }
    lg_schema_t *s = ok_schema(L, "{type = {'string', 'null'}}");
    valid(L, s, "\"x\"");
    valid(L, s, "null");
    invalid(L, s, "{}", "[{\"path\":\"\",\"message\":\"must be one of the types null or string (got object)\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{}"); /* no keywords: anything */
    valid(L, s, "[1,{},null]");
    valid(L, s, "null");
    lg_schema_free(s);
}

static void test_integers(void **state)
{
    lua_State *L = *state;
    lg_schema_t *s = ok_schema(L, "{type = 'integer'}");
    valid(L, s, "1.0");               /* an integral number is an integer */
    valid(L, s, "-0");
    valid(L, s, "1e2");
    valid(L, s, "9007199254740991");  /* 2^53 - 1 */
    valid(L, s, "9007199254740992");  /* 2^53 */
    valid(L, s, "-9007199254740992");
    valid(L, s, "9007199254740993");  /* decodes to 2^53 */
    valid(L, s, "1e300");
    invalid(L, s, "4503599627370495.5", /* 2^52 - 0.5: still has a fraction */
            "[{\"path\":\"\",\"message\":\"must be of type integer (got number)\"}]");
    invalid(L, s, "0.1", "[{\"path\":\"\",\"message\":\"must be of type integer (got number)\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{type = 'number'}");
    valid(L, s, "3");
    valid(L, s, "3.25");
    lg_schema_free(s);
    s = ok_schema(L, "{type = 'integer', minimum = 1, maximum = 9007199254740992}");
    valid(L, s, "9007199254740992");
    invalid(L, s, "0", "[{\"path\":\"\",\"message\":\"must be >= 1\"}]");
    lg_schema_free(s);
}

static void test_numbers(void **state)
{
    lua_State *L = *state;
    lg_schema_t *s = ok_schema(L, "{minimum = 1.5, maximum = 10}");
    valid(L, s, "1.5");
    valid(L, s, "10");
    valid(L, s, "\"not a number\""); /* numeric keywords apply to numbers only */
    invalid(L, s, "1.25", "[{\"path\":\"\",\"message\":\"must be >= 1.5\"}]");
    invalid(L, s, "10.000001", "[{\"path\":\"\",\"message\":\"must be <= 10\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{exclusiveMinimum = 0, exclusiveMaximum = 0.1}");
    valid(L, s, "0.05");
    invalid(L, s, "0", "[{\"path\":\"\",\"message\":\"must be > 0\"}]");
    invalid(L, s, "0.1", "[{\"path\":\"\",\"message\":\"must be < 0.1\"}]");
    invalid(L, s, "-3", "[{\"path\":\"\",\"message\":\"must be > 0\"}]");
    lg_schema_free(s);
}

static void test_strings(void **state)
{
    lua_State *L = *state;
    lg_schema_t *s = ok_schema(L, "{type = 'string', minLength = 2, maxLength = 3}");
    valid(L, s, "\"ab\"");
    valid(L, s, "\"\\u00e9t\\u00e9\"");        /* "été": 3 code points, 5 bytes */
    valid(L, s, "\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\"");  /* 日本語: 3 code points, 9 bytes */
    valid(L, s, "\"\\ud83d\\ude00\\ud83d\\ude00\""); /* two emoji: 2 code points, 8 bytes */
    invalid(L, s, "\"\\ud83d\\ude00\"", "[{\"path\":\"\",\"message\":\"must be at least 2 characters long\"}]");
    invalid(L, s, "\"abcd\"", "[{\"path\":\"\",\"message\":\"must be at most 3 characters long\"}]");
    invalid(L, s, "\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"", "[{\"path\":\"\",\"message\":\"must be at most 3 characters long\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{maxLength = 1, minLength = 1}");
    valid(L, s, "\"\\u0000\"");
    invalid(L, s, "\"\"", "[{\"path\":\"\",\"message\":\"must be at least 1 character long\"}]");
    lg_schema_free(s);
}

static void test_pattern(void **state)
{
    lua_State *L = *state;
    lg_schema_t *s = ok_schema(L, "{pattern = '^[a-z]+(-[a-z0-9]+)*$'}");
    valid(L, s, "\"kebab-case-2\"");
    valid(L, s, "7"); /* applies to strings only */
    invalid(L, s, "\"Kebab\"", "[{\"path\":\"\",\"message\":\"must match the pattern ^[a-z]+(-[a-z0-9]+)*$\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{pattern = '[0-9]{3}'}"); /* unanchored, like JSON Schema */
    valid(L, s, "\"call 555 now\"");
    invalid(L, s, "\"55\"", "[{\"path\":\"\",\"message\":\"must match the pattern [0-9]{3}\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{pattern = 'cd$'}"); /* the whole string is matched, past an embedded NUL */
    valid(L, s, "\"ab\\u0000cd\"");
    invalid(L, s, "\"cd\\u0000ab\"", "[{\"path\":\"\",\"message\":\"must match the pattern cd$\"}]");
    lg_schema_free(s);
}

static void test_enum_const(void **state)
{
    lua_State *L = *state;
    lg_schema_t *s = ok_schema(L, "{enum = {'red', 'green', 2, json.null, true}}");
    valid(L, s, "\"green\"");
    valid(L, s, "2.0");
    valid(L, s, "null");
    valid(L, s, "true");
    invalid(L, s, "\"blue\"",
            "[{\"path\":\"\",\"message\":\"must be one of: \\\"red\\\", \\\"green\\\", 2, null, true\"}]");
    invalid(L, s, "false", "[{\"path\":\"\",\"message\":\"must be one of: \\\"red\\\", \\\"green\\\", 2, null, true\"}]");
    lg_schema_free(s);
    /* [] and {} differ; objects compare regardless of key order; arrays by position */
    s = ok_schema(L, "{enum = {{}, json.empty_array, {b = {1, 2}}}}");
    valid(L, s, "{}");
    valid(L, s, "[]");
    valid(L, s, "{\"b\":[1,2.0]}");
    invalid(L, s, "{\"b\":[2,1]}", "[{\"path\":\"\",\"message\":\"must be one of: {}, [], {\\\"b\\\":[1,2]}\"}]");
    invalid(L, s, "{\"b\":[1,2],\"a\":1}", "[{\"path\":\"\",\"message\":\"must be one of: {}, [], {\\\"b\\\":[1,2]}\"}]");
    invalid(L, s, "[{}]", "[{\"path\":\"\",\"message\":\"must be one of: {}, [], {\\\"b\\\":[1,2]}\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{const = {a = 1, b = {x = json.null}}}"); /* key order does not matter */
    valid(L, s, "{\"b\":{\"x\":null},\"a\":1}");
    valid(L, s, "{\"a\":1.0,\"b\":{\"x\":null}}");
    assert_int_equal(run(L, s, "{\"a\":1,\"b\":{\"x\":0}}", (char[512]){0}, 512), 1);
    lg_schema_free(s);
    s = ok_schema(L, "{const = 'v1'}");
    valid(L, s, "\"v1\"");
    invalid(L, s, "\"v2\"", "[{\"path\":\"\",\"message\":\"must be equal to \\\"v1\\\"\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{const = json.empty_array}");
    valid(L, s, "[]");
    invalid(L, s, "{}", "[{\"path\":\"\",\"message\":\"must be equal to []\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{const = {}}"); /* an unmarked empty table is the empty object */
    valid(L, s, "{}");
    invalid(L, s, "[]", "[{\"path\":\"\",\"message\":\"must be equal to {}\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{const = json.null}");
    valid(L, s, "null");
    invalid(L, s, "0", "[{\"path\":\"\",\"message\":\"must be equal to null\"}]");
    lg_schema_free(s);
}

static void test_objects(void **state)
{
    lua_State *L = *state;
    lg_schema_t *s = ok_schema(L, "{type = 'object', required = {'name', 'age'},"
                                  " properties = {name = {type = 'string'}, age = {type = 'integer', minimum = 0}}}");
    valid(L, s, "{\"name\":\"Ada\",\"age\":36}");
    valid(L, s, "{\"name\":\"Ada\",\"age\":36,\"extra\":[1]}"); /* additionalProperties defaults to true */
    invalid(L, s, "{}",
            "[{\"path\":\"/name\",\"message\":\"is required\"},{\"path\":\"/age\",\"message\":\"is required\"}]");
    /* a null member is present (and then checked for its type) */
    invalid(L, s, "{\"name\":null,\"age\":-1}",
            "[{\"path\":\"/age\",\"message\":\"must be >= 0\"},"
            "{\"path\":\"/name\",\"message\":\"must be of type string (got null)\"}]");
    lg_schema_free(s);

    s = ok_schema(L, "{properties = {a = {}}, additionalProperties = false}");
    valid(L, s, "{\"a\":1}");
    invalid(L, s, "{\"a\":1,\"b\":2}", "[{\"path\":\"/b\",\"message\":\"is not an allowed property\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{properties = {a = {}}, additionalProperties = {type = 'number'}}");
    valid(L, s, "{\"a\":\"x\",\"b\":2,\"c\":3.5}");
    invalid(L, s, "{\"a\":\"x\",\"b\":\"2\"}", "[{\"path\":\"/b\",\"message\":\"must be of type number (got string)\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{properties = {secret = false, any = true}}"); /* boolean subschemas */
    valid(L, s, "{\"any\":[{}]}");
    invalid(L, s, "{\"secret\":1}", "[{\"path\":\"/secret\",\"message\":\"is not allowed\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{required = {}}"); /* an empty table is an empty array here */
    valid(L, s, "{}");
    lg_schema_free(s);
}

static void test_arrays(void **state)
{
    lua_State *L = *state;
    lg_schema_t *s = ok_schema(L, "{type = 'array', minItems = 1, maxItems = 3, items = {type = 'string'}}");
    valid(L, s, "[\"a\"]");
    invalid(L, s, "[]", "[{\"path\":\"\",\"message\":\"must have at least 1 item\"}]");
    invalid(L, s, "[\"a\",\"b\",\"c\",\"d\"]", "[{\"path\":\"\",\"message\":\"must have at most 3 items\"}]");
    invalid(L, s, "[\"a\",null,3]",
            "[{\"path\":\"/1\",\"message\":\"must be of type string (got null)\"},"
            "{\"path\":\"/2\",\"message\":\"must be of type string (got integer)\"}]");
    /* the length and the items are both reported */
    invalid(L, s, "[1,\"b\",\"c\",\"d\"]",
            "[{\"path\":\"\",\"message\":\"must have at most 3 items\"},"
            "{\"path\":\"/0\",\"message\":\"must be of type string (got integer)\"}]");
    lg_schema_free(s);
    s = ok_schema(L, "{items = false}");
    valid(L, s, "[]");
    invalid(L, s, "[0]", "[{\"path\":\"/0\",\"message\":\"is not allowed\"}]");
    lg_schema_free(s);
}

static void test_nested_paths(void **state)
{
    lua_State *L = *state;
    lg_schema_t *s = ok_schema(
        L, "{type = 'object', required = {'items'}, properties = {"
           " items = {type = 'array', items = {type = 'object', required = {'name'},"
           "   properties = {name = {type = 'string', minLength = 1},"
           "                 tags = {type = 'array', items = {enum = {'a', 'b'}}}}}},"
           " ['a/b'] = {type = 'integer'}, ['m~n'] = {type = 'integer'}, [''] = {type = 'null'}}}");
    valid(L, s, "{\"items\":[{\"name\":\"x\",\"tags\":[\"a\"]}],\"a/b\":1,\"m~n\":2,\"\":null}");
    invalid(L, s, "{\"items\":[{\"name\":\"x\"},{},{\"name\":\"\",\"tags\":[\"a\",\"c\"]}],\"a/b\":\"1\",\"m~n\":0.5,\"\":0}",
            "[{\"path\":\"/\",\"message\":\"must be of type null (got integer)\"},"
            "{\"path\":\"/a~1b\",\"message\":\"must be of type integer (got string)\"},"
            "{\"path\":\"/items/1/name\",\"message\":\"is required\"},"
            "{\"path\":\"/items/2/name\",\"message\":\"must be at least 1 character long\"},"
            "{\"path\":\"/items/2/tags/1\",\"message\":\"must be one of: \\\"a\\\", \\\"b\\\"\"},"
            "{\"path\":\"/m~0n\",\"message\":\"must be of type integer (got number)\"}]");
    invalid(L, s, "[]", "[{\"path\":\"\",\"message\":\"must be of type object (got array)\"}]");
    lg_schema_free(s);
    /* characters that need JSON escaping in a path */
    s = ok_schema(L, "{additionalProperties = false}");
    invalid(L, s, "{\"q\\\"\\n~/\":1}", "[{\"path\":\"/q\\\"\\n~0~1\",\"message\":\"is not an allowed property\"}]");
    lg_schema_free(s);
}

static void test_all_errors_capped(void **state)
{
    lua_State *L = *state;
    lg_schema_t *s = ok_schema(L, "{items = {type = 'string'}}");
    lg_buf_t task = {0};
    lg_buf_putc(&task, '[');
    for (int i = 0; i < 80; i++)
        lg_buf_printf(&task, "%s%d", i ? "," : "", i);
    lg_buf_putc(&task, ']');
    char *out = malloc(65536);
    size_t n = run(L, s, task.data, out, 65536);
    assert_int_equal(n, LG_SCHEMA_MAX_ERRORS + 1); /* stops once it knows there are more */
    size_t listed = 0;
    for (const char *p = out; (p = strstr(p, "{\"path\":")) != NULL; p++)
        listed++;
    assert_int_equal(listed, LG_SCHEMA_MAX_ERRORS);
    assert_non_null(strstr(out, "{\"path\":\"/49\","));
    assert_null(strstr(out, "\"/50\""));
    /* a smaller cap */
    assert_int_equal(lg_json_decode(L, task.data, task.len, 64, NULL), LG_JSON_OK);
    lg_buf_t d = {0};
    assert_int_equal(lg_schema_validate(s, L, -1, &d, 2), 3);
    assert_string_equal(d.data, "{\"path\":\"/0\",\"message\":\"must be of type string (got integer)\"},"
                                "{\"path\":\"/1\",\"message\":\"must be of type string (got integer)\"}");
    lua_pop(L, 1);
    lg_buf_free(&d);
    free(out);
    lg_buf_free(&task);
    lg_schema_free(s);
}

static void test_lua_values(void **state)
{
    lua_State *L = *state;
    /* values made in Lua (not decoded) are typed like the encoder types them */
    lg_schema_t *s = ok_schema(L, "{type = 'array', items = {type = 'object'}}");
    assert_int_equal(luaL_dostring(L, "return {{a = 1}, {}}"), 0);
    assert_int_equal(lg_schema_validate(s, L, -1, NULL, 10), 0);
    lua_pop(L, 1);
    assert_int_equal(luaL_dostring(L, "return {x = 1}"), 0);
    assert_int_equal(lg_schema_validate(s, L, -1, NULL, 10), 1);
    lua_pop(L, 1);
    assert_int_equal(luaL_dostring(L, "return {[1] = {}, [3] = {}}"), 0); /* not 1..n: an object */
    assert_int_equal(lg_schema_validate(s, L, -1, NULL, 10), 1);
    lua_pop(L, 1);
    lg_schema_free(s);
}

static void test_malformed(void **state)
{
    lua_State *L = *state;
    malformed(L, "{type = 'str'}",
              "/type: unknown type 'str' (object, array, string, number, integer, boolean or null)");
    malformed(L, "{type = {}}", "/type: must be a type name or a non-empty array of type names");
    malformed(L, "{type = {'string', 7}}",
              "/type: unknown type '(not a string)' (object, array, string, number, integer, boolean or null)");
    malformed(L, "{properties = {s = {pattern = '(unclosed'}}}",
              "/properties/s/pattern: not a valid POSIX extended regular expression: Unmatched ( or \\(");
    malformed(L, "{pattern = 5}", "/pattern: must be a string (a POSIX extended regular expression)");
    /* repetitions regcomp would expand past memory (found by tests/fuzz: gigabytes for the first) */
    malformed(L, "{pattern = '^[a-z]*+++++++++++++++++++++++++++++++++++$'}",
              "/pattern: is too complex (repetitions expand it past 20000 nodes)");
    malformed(L, "{pattern = '((a{100}){100}){100}'}", "/pattern: is too complex (repetitions expand it past 20000 nodes)");
    lg_schema_free(ok_schema(L, "{pattern = '^([a-z]{2,8}-)?[0-9]{1,4}$'}"));
    malformed(L, "{minimum = '1'}", "/minimum: must be a number");
    malformed(L, "{exclusiveMaximum = true}", "/exclusiveMaximum: must be a number");
    malformed(L, "{maximum = 1/0}", "/maximum: must be a number");
    malformed(L, "{minLength = -1}", "/minLength: must be a non-negative integer");
    malformed(L, "{maxItems = 1.5}", "/maxItems: must be a non-negative integer");
    malformed(L, "{required = 'name'}", "/required: must be an array of strings");
    malformed(L, "{required = {'a', 1}}", "/required: must be an array of strings");
    malformed(L, "{required = {a = true}}", "/required: must be an array of strings");
    malformed(L, "{properties = {a = 'string'}}", "/properties/a: must be a schema (a table or a boolean), not string");
    malformed(L, "{properties = {{type = 'string'}}}", "/properties: property names must be strings");
    malformed(L, "{items = {{type = 'string'}}}",
              "/items: must be one schema (an array of schemas, tuple validation, is not supported)");
    malformed(L, "{additionalProperties = 'no'}", "/additionalProperties: must be a schema (a table or a boolean), not string");
    malformed(L, "{enum = {}}", "/enum: must be a non-empty array");
    malformed(L, "{enum = {print}}", "/enum: a function is not a JSON value");
    malformed(L, "{const = {[true] = 1}}", "/const: object keys must be strings");
    malformed(L, "{anyOf = {}}", "(root): unsupported keyword 'anyOf'");
    malformed(L, "{properties = {name = {maxLenght = 3}}}", "/properties/name: unsupported keyword 'maxLenght'");
    malformed(L, "{[1] = 'x'}", "(root): a schema's keys must be keyword names (strings)");
    malformed(L, "{properties = {['a/b'] = {type = 1}}}",
              "/properties/a~1b/type: must be a type name or a non-empty array of type names");
    /* nesting beyond LG_SCHEMA_MAX_DEPTH */
    malformed(L, "(function() local s = {} for i = 1, 70 do s = {items = s} end return s end)()",
              "/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/"
              "items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/"
              "items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/items/"
              "items/items/items/items/items/items/items/items/items/items/items/items/items: subschemas nested deeper "
              "than 64 levels");
    /* annotations are accepted and ignored */
    lg_schema_t *s = ok_schema(L, "{title = 't', description = 'd', default = 1, examples = {1}, format = 'email',"
                                  " ['$schema'] = 'x', ['$comment'] = 'c', deprecated = false}");
    valid(L, s, "\"anything\"");
    lg_schema_free(s);
    assert_int_equal(lua_gettop(L), 0);
}

static void test_userdata(void **state)
{
    lua_State *L = *state;
    lg_schema_t *s = ok_schema(L, "{type = 'string'}");
    lg_schema_push(L, s);
    assert_ptr_equal(lg_schema_to(L, -1), s);
    lua_newuserdata(L, sizeof(void *));
    assert_null(lg_schema_to(L, -1));
    lua_pushnil(L);
    assert_null(lg_schema_to(L, -1));
    lua_pop(L, 3);
    lua_gc(L, LUA_GCCOLLECT, 0); /* __gc frees it (ASan/LSan would see a leak otherwise) */
    assert_int_equal(lua_gettop(L), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_integers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_numbers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pattern, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enum_const, setup, teardown),
        cmocka_unit_test_setup_teardown(test_objects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arrays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nested_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_errors_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lua_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_userdata, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

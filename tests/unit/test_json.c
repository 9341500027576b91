/* test_json.c - luagent's JSON codec (src/bind/json.c): round trips, numbers, strings, rejects,
 * depth, encode errors, the `luagent.json` module, and the y_/n_ corpus in tests/fixtures/json. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "luagent/buf.h"
#include "luagent/json.h"

#define CORPUS_DIR "tests/fixtures/json"

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

/* Decode from an exactly-sized heap copy (no terminator), so ASan catches any overread. */
static lg_json_status_t dec(lua_State *L, const char *s, size_t len, int max_depth, lg_json_error_t *err)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, s, len);
    int top = lua_gettop(L);
    lg_json_status_t st = lg_json_decode(L, copy, len, max_depth, err);
    free(copy);
    assert_int_equal(lua_gettop(L), top + (st == LG_JSON_OK ? 1 : 0));
    return st;
}

static lg_json_status_t decs(lua_State *L, const char *s)
{
    lg_json_error_t err;
    return dec(L, s, strlen(s), LG_JSON_DEFAULT_MAX_DEPTH, &err);
}

/* Encode the top value into a fresh string (caller frees); checks the stack is left as it was. */
static char *enc(lua_State *L, lg_json_status_t *st_out, lg_json_error_t *err)
{
    lg_buf_t b = {0};
    int top = lua_gettop(L);
    lg_json_error_t e2;
    lg_json_status_t st = lg_json_encode(L, -1, &b, LG_JSON_DEFAULT_MAX_DEPTH, err ? err : &e2);
    assert_int_equal(lua_gettop(L), top);
    if (st_out)
        *st_out = st;
    if (st != LG_JSON_OK) {
        lg_buf_free(&b);
        return NULL;
    }
    assert_int_equal(strlen(b.data), b.len); /* NUL-terminated, no stray NUL in output */
    return b.data;
}

/* Decode `in`, encode it, compare with `want` (or with `in` if want is NULL); pops the value. */
static void roundtrip_text(lua_State *L, const char *in, const char *want)
{
    assert_int_equal(decs(L, in), LG_JSON_OK);
    lg_json_status_t st;
    char *out = enc(L, &st, NULL);
    assert_int_equal(st, LG_JSON_OK);
    assert_string_equal(out, want ? want : in);
    free(out);
    lua_pop(L, 1);
}

static int is_array_marked(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx))
        return 0;
    lg_json_push_array_mt(L);
    int r = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return r;
}

/* Deep equality of two decoded values (doubles compared bit for bit). */
static int deep_equal(lua_State *L, int a, int b)
{
    a = a < 0 ? lua_gettop(L) + a + 1 : a;
    b = b < 0 ? lua_gettop(L) + b + 1 : b;
    int t = lua_type(L, a);
    if (t != lua_type(L, b))
        return 0;
    switch (t) {
    case LUA_TNUMBER: {
        double x = lua_tonumber(L, a), y = lua_tonumber(L, b);
        return memcmp(&x, &y, sizeof x) == 0;
    }
    case LUA_TTABLE: {
        if (is_array_marked(L, a) != is_array_marked(L, b))
            return 0;
        for (int pass = 0; pass < 2; pass++) {
            int x = pass ? b : a, y = pass ? a : b;
            lua_pushnil(L);
            while (lua_next(L, x)) {
                lua_pushvalue(L, -2);
                lua_rawget(L, y);
                int eq = pass ? !lua_isnil(L, -1) : deep_equal(L, -1, -2);
                lua_pop(L, 2);
                if (!eq) {
                    lua_pop(L, 1);
                    return 0;
                }
            }
        }
        return 1;
    }
    default:
        return lua_rawequal(L, a, b);
    }
}

/* Run a Lua chunk that must succeed. */
static void run_lua(lua_State *L, const char *code)
{
    if (luaL_dostring(L, code) != 0) {
        print_error("Lua: %s\n", lua_tostring(L, -1));
        fail();
    }
    lua_settop(L, 0);
}

/* ---------------------------------------------------------------------------------------- */

static void test_roundtrip_structures(void **state)
{
    lua_State *L = *state;
    roundtrip_text(L, "[]", NULL);
    roundtrip_text(L, "{}", NULL);
    roundtrip_text(L, "[[]]", NULL);
    roundtrip_text(L, "{\"a\":[]}", NULL);
    roundtrip_text(L, "{\"a\":{}}", NULL);
    roundtrip_text(L, "[{},[],{\"b\":[[],{}]}]", NULL);
    roundtrip_text(L, " [ 1 , 2 ,\t3 ]\r\n", "[1,2,3]");
    roundtrip_text(L, "[true,false,null]", NULL);
    roundtrip_text(L, "\"x\"", NULL);
    roundtrip_text(L, "null", NULL);
    roundtrip_text(L, "0", NULL);
    roundtrip_text(L, "{\"\":\"\"}", NULL);

    /* arrays carry the shared metatable; objects do not */
    assert_int_equal(decs(L, "[]"), LG_JSON_OK);
    assert_true(is_array_marked(L, -1));
    assert_int_equal(decs(L, "{}"), LG_JSON_OK);
    assert_false(lua_getmetatable(L, -1));
    lua_pop(L, 2);
}

static void test_nulls(void **state)
{
    lua_State *L = *state;
    assert_int_equal(decs(L, "[1,null,3]"), LG_JSON_OK);
    assert_int_equal(lua_objlen(L, -1), 3);
    lua_rawgeti(L, -1, 2);
    assert_true(lg_json_is_null(L, -1));
    assert_int_equal(lua_type(L, -1), LUA_TLIGHTUSERDATA);
    lua_pop(L, 1);
    lua_rawgeti(L, -1, 3);
    assert_int_equal((int)lua_tonumber(L, -1), 3);
    lua_pop(L, 2);
    roundtrip_text(L, "[1,null,3]", NULL);
    roundtrip_text(L, "[null]", NULL);
    roundtrip_text(L, "[null,null]", NULL);

    assert_int_equal(decs(L, "{\"a\":null}"), LG_JSON_OK);
    lua_getfield(L, -1, "a");
    assert_true(lg_json_is_null(L, -1));
    lua_pop(L, 2);
    roundtrip_text(L, "{\"a\":null}", NULL);

    lg_json_push_null(L);
    assert_true(lg_json_is_null(L, -1));
    lua_pop(L, 1);
    lua_pushnil(L);
    assert_false(lg_json_is_null(L, -1));
    lua_pop(L, 1);
}

static double dec_num(lua_State *L, const char *s)
{
    assert_int_equal(decs(L, s), LG_JSON_OK);
    assert_int_equal(lua_type(L, -1), LUA_TNUMBER);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

static void test_big_integers(void **state)
{
    lua_State *L = *state;
    assert_true(dec_num(L, "9007199254740992") == 9007199254740992.0);
    assert_true(dec_num(L, "-9007199254740992") == -9007199254740992.0);
    roundtrip_text(L, "9007199254740992", NULL);
    roundtrip_text(L, "-9007199254740992", NULL);
    roundtrip_text(L, "[9007199254740991,-9007199254740991]", NULL);
    roundtrip_text(L, "{\"id\":1234567890123456}", NULL);
    roundtrip_text(L, "100000000000000", NULL);
    /* 2^53 + 1 is not a double: it decodes to the nearest one (2^53, ties to even) */
    assert_true(dec_num(L, "9007199254740993") == 9007199254740992.0);
    roundtrip_text(L, "9007199254740993", "9007199254740992");
    /* long integers: correctly rounded, and re-encoded in a form that reads back equal */
    assert_true(dec_num(L, "123456789012345678901234567890") == 123456789012345678901234567890.0);
    assert_true(dec_num(L, "18446744073709551616") == 18446744073709551616.0);
    assert_true(dec_num(L, "-0") == 0.0 && signbit(dec_num(L, "-0")));
    roundtrip_text(L, "-0", NULL);
    roundtrip_text(L, "1E2", "100");
    roundtrip_text(L, "1.0", "1");
    roundtrip_text(L, "-1.5e1", "-15");
}

/* decode -> encode -> decode gives the same double, and the first encoding is `want`. */
static void num_roundtrip(lua_State *L, const char *in, const char *want)
{
    double a = dec_num(L, in);
    lua_pushnumber(L, a);
    char *out = enc(L, NULL, NULL);
    assert_non_null(out);
    lua_pop(L, 1);
    if (want)
        assert_string_equal(out, want);
    double b = dec_num(L, out);
    assert_memory_equal(&a, &b, sizeof a);
    assert_true(a == strtod(in, NULL));
    free(out);
}

static void test_doubles(void **state)
{
    lua_State *L = *state;
    num_roundtrip(L, "1e300", "1e+300");
    num_roundtrip(L, "0.1", "0.1");
    num_roundtrip(L, "1.5e-10", "1.5e-10");
    num_roundtrip(L, "-0.5", "-0.5");
    num_roundtrip(L, "0.30000000000000004", "0.30000000000000004");
    num_roundtrip(L, "3.141592653589793", "3.141592653589793");
    num_roundtrip(L, "5e-324", NULL);
    num_roundtrip(L, "2.2250738585072014e-308", NULL);
    num_roundtrip(L, "1.7976931348623157e308", NULL);
    num_roundtrip(L, "1e22", NULL);
    num_roundtrip(L, "1e23", NULL);
    num_roundtrip(L, "123456789.123456789", NULL);
    num_roundtrip(L, "0.000001", "1e-06");
    num_roundtrip(L, "1E-2", "0.01");
    num_roundtrip(L, "-1.25E+3", "-1250");
    num_roundtrip(L, "1e-400", "0"); /* underflow decodes to 0 */
    num_roundtrip(L, "0.1000000000000000055511151231257827", "0.1");
    num_roundtrip(L, "9007199254740993.5", NULL);

    /* very long mantissas: exact (through strtod), or out of range */
    lg_buf_t t = {0};
    lg_buf_lit(&t, "0.");
    for (int i = 0; i < 2000000; i++)
        lg_buf_putc(&t, '0');
    lg_buf_lit(&t, "1");
    assert_true(dec_num(L, t.data) == 0.0);
    lg_buf_reset(&t);
    lg_buf_lit(&t, "0.");
    for (int i = 0; i < 300; i++)
        lg_buf_putc(&t, '0');
    lg_buf_lit(&t, "123");
    assert_true(dec_num(L, t.data) == strtod(t.data, NULL));
    lg_buf_reset(&t);
    lg_buf_putc(&t, '1');
    for (int i = 0; i < 400; i++)
        lg_buf_putc(&t, '0');
    assert_int_equal(decs(L, t.data), LG_JSON_ESYNTAX);
    lg_buf_lit(&t, "e-400");
    assert_true(dec_num(L, t.data) == 1.0);
    lg_buf_free(&t);
}

/* Random numbers: decode agrees with strtod bit for bit; encode always reads back exactly. */
static void test_numbers_random(void **state)
{
    lua_State *L = *state;
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    char text[64];
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double d;
        switch (i % 4) {
        case 0: { /* any finite double, printed in full */
            uint64_t bits = x;
            memcpy(&d, &bits, sizeof d);
            if (!isfinite(d))
                continue;
            snprintf(text, sizeof text, "%.17g", d);
            break;
        }
        case 1: /* short decimals with an exponent */
            snprintf(text, sizeof text, "%s%llu.%llue%d", (x & 1) ? "-" : "", (unsigned long long)((x >> 8) % 100000),
                     (unsigned long long)((x >> 24) % 1000000), (int)((x >> 48) % 61) - 30);
            break;
        case 2: /* integers of every length up to 20 digits */
            snprintf(text, sizeof text, "%llu", (unsigned long long)(x >> ((x >> 58) & 63)));
            break;
        default: /* decimals with 15-19 significant digits */
            snprintf(text, sizeof text, "0.%llu", (unsigned long long)(x % 10000000000000000000ULL));
            break;
        }
        double want = strtod(text, NULL);
        if (isinf(want))
            continue;
        lg_json_error_t err;
        if (dec(L, text, strlen(text), 8, &err) != LG_JSON_OK) {
            print_error("%s: %s\n", text, err.msg);
            fail();
        }
        d = lua_tonumber(L, -1);
        if (memcmp(&d, &want, sizeof d) != 0) {
            print_error("decode %s: got %.17g want %.17g\n", text, d, want);
            fail();
        }
        char *out = enc(L, NULL, NULL);
        assert_non_null(out);
        lua_pop(L, 1);
        double back = strtod(out, NULL);
        if (memcmp(&back, &d, sizeof d) != 0) {
            print_error("encode %.17g gave %s\n", d, out);
            fail();
        }
        free(out);
    }
}

static void check_string(lua_State *L, const char *json, const char *want, size_t wlen)
{
    lg_json_error_t err;
    lg_json_status_t st = dec(L, json, strlen(json), 8, &err);
    if (st != LG_JSON_OK)
        print_error("%s: %s\n", json, err.msg);
    assert_int_equal(st, LG_JSON_OK);
    assert_int_equal(lua_type(L, -1), LUA_TSTRING);
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    assert_int_equal(n, wlen);
    assert_memory_equal(s, want, wlen);
    lua_pop(L, 1);
}

static void test_unicode_escapes(void **state)
{
    lua_State *L = *state;
    check_string(L, "\"\\ud83d\\ude00\"", "\xF0\x9F\x98\x80", 4);
    check_string(L, "\"a\\uD83D\\uDE00b\"", "a\xF0\x9F\x98\x80" "b", 6);
    check_string(L, "\"\\u00e9\"", "\xC3\xA9", 2);
    check_string(L, "\"\\u00E9\"", "\xC3\xA9", 2);
    check_string(L, "\"\\u20ac\"", "\xE2\x82\xAC", 3);
    check_string(L, "\"\\u0041\"", "A", 1);
    check_string(L, "\"\\u0000\"", "\0", 1);
    check_string(L, "\"\\uffff\"", "\xEF\xBF\xBF", 3);
    check_string(L, "\"\\udbff\\udfff\"", "\xF4\x8F\xBF\xBF", 4);
    check_string(L, "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t", 8);
    check_string(L, "\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"", "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", 9);
    check_string(L, "\"\x7f\"", "\x7f", 1);
    check_string(L, "\"\"", "", 0);

    /* decoded escapes re-encode as UTF-8 (not as escapes), control chars as \u00XX */
    roundtrip_text(L, "\"\\ud83d\\ude00\"", "\"\xF0\x9F\x98\x80\"");
    roundtrip_text(L, "\"\\u0001\\u001F\"", "\"\\u0001\\u001f\"");
    roundtrip_text(L, "\"\\u0000\"", "\"\\u0000\"");
    roundtrip_text(L, "\"\\/\"", "\"/\"");
}

typedef struct reject {
    const char *text;
    size_t len; /* 0: strlen */
    lg_json_status_t st;
} reject_t;

static const reject_t reject_cases[] = {
    {"\"\\ud800\"", 0, LG_JSON_EUTF8},
    {"\"\\udc00\"", 0, LG_JSON_EUTF8},
    {"\"\\ud800\\u0041\"", 0, LG_JSON_EUTF8},
    {"\"\\ud800x\"", 0, LG_JSON_EUTF8},
    {"\"\\ude00\\ud83d\"", 0, LG_JSON_EUTF8},
    {"\"\\ud800\\ud800\"", 0, LG_JSON_EUTF8},
    {"\"\xC0\x80\"", 0, LG_JSON_EUTF8},
    {"\"\xC1\xBF\"", 0, LG_JSON_EUTF8},
    {"\"\xED\xA0\x80\"", 0, LG_JSON_EUTF8},
    {"\"\xED\xBF\xBF\"", 0, LG_JSON_EUTF8},
    {"\"\xF5\x80\x80\x80\"", 0, LG_JSON_EUTF8},
    {"\"\xF4\x90\x80\x80\"", 0, LG_JSON_EUTF8},
    {"\"\xE0\x80\xAF\"", 0, LG_JSON_EUTF8},
    {"\"\xF0\x80\x80\xAF\"", 0, LG_JSON_EUTF8},
    {"\"\xFF\"", 0, LG_JSON_EUTF8},
    {"\"\x80\"", 0, LG_JSON_EUTF8},
    {"\"\xE2\x82\"", 0, LG_JSON_EUTF8},
    {"\"\\n\xC3\"", 0, LG_JSON_EUTF8}, /* the slow (escaped) path validates too */
    {"\"\\n\xC3(\"", 0, LG_JSON_EUTF8},
    {"[1,]", 0, LG_JSON_ESYNTAX},
    {"{\"a\":1,}", 0, LG_JSON_ESYNTAX},
    {"[,1]", 0, LG_JSON_ESYNTAX},
    {"[1,,2]", 0, LG_JSON_ESYNTAX},
    {"01", 0, LG_JSON_ESYNTAX},
    {"-01", 0, LG_JSON_ESYNTAX},
    {"[00]", 0, LG_JSON_ESYNTAX},
    {"+1", 0, LG_JSON_ESYNTAX},
    {".5", 0, LG_JSON_ESYNTAX},
    {"1.", 0, LG_JSON_ESYNTAX},
    {"1.e5", 0, LG_JSON_ESYNTAX},
    {"1e", 0, LG_JSON_ESYNTAX},
    {"1e+", 0, LG_JSON_ESYNTAX},
    {"-", 0, LG_JSON_ESYNTAX},
    {"- 1", 0, LG_JSON_ESYNTAX},
    {"0x10", 0, LG_JSON_ESYNTAX},
    {"1e400", 0, LG_JSON_ESYNTAX},
    {"-1e400", 0, LG_JSON_ESYNTAX},
    {"NaN", 0, LG_JSON_ESYNTAX},
    {"[NaN]", 0, LG_JSON_ESYNTAX},
    {"Infinity", 0, LG_JSON_ESYNTAX},
    {"-Infinity", 0, LG_JSON_ESYNTAX},
    {"'a'", 0, LG_JSON_ESYNTAX},
    {"['a']", 0, LG_JSON_ESYNTAX},
    {"{'a':1}", 0, LG_JSON_ESYNTAX},
    {"\"\x01\"", 0, LG_JSON_ESYNTAX},
    {"\"a\tb\"", 0, LG_JSON_ESYNTAX},
    {"\"a\nb\"", 0, LG_JSON_ESYNTAX},
    {"\"\0\"", 3, LG_JSON_ESYNTAX},
    {"\"\\n\x1f\"", 0, LG_JSON_ESYNTAX},
    {"{} x", 0, LG_JSON_ESYNTAX},
    {"[] []", 0, LG_JSON_ESYNTAX},
    {"1 2", 0, LG_JSON_ESYNTAX},
    {"nullx", 0, LG_JSON_ESYNTAX},
    {"", 0, LG_JSON_ESYNTAX},
    {" \t\r\n", 0, LG_JSON_ESYNTAX},
    {"\xEF\xBB\xBF{}", 0, LG_JSON_ESYNTAX},
    {"[", 0, LG_JSON_ESYNTAX},
    {"]", 0, LG_JSON_ESYNTAX},
    {"{", 0, LG_JSON_ESYNTAX},
    {"{\"a\"", 0, LG_JSON_ESYNTAX},
    {"{\"a\":", 0, LG_JSON_ESYNTAX},
    {"{\"a\" 1}", 0, LG_JSON_ESYNTAX},
    {"{1:1}", 0, LG_JSON_ESYNTAX},
    {"[1}", 0, LG_JSON_ESYNTAX},
    {"{\"a\":1]", 0, LG_JSON_ESYNTAX},
    {"\"abc", 0, LG_JSON_ESYNTAX},
    {"\"abc\\", 0, LG_JSON_ESYNTAX},
    {"\"\\x41\"", 0, LG_JSON_ESYNTAX},
    {"\"\\u12\"", 0, LG_JSON_ESYNTAX},
    {"\"\\u12g4\"", 0, LG_JSON_ESYNTAX},
    {"\"\\U0041\"", 0, LG_JSON_ESYNTAX},
    {"\"\\\"", 0, LG_JSON_ESYNTAX},
    {"tru", 0, LG_JSON_ESYNTAX},
    {"True", 0, LG_JSON_ESYNTAX},
    {"nul", 0, LG_JSON_ESYNTAX},
    {"[1 2]", 0, LG_JSON_ESYNTAX},
    {"\x0c[]", 0, LG_JSON_ESYNTAX},
    {"[\xc2\xa0]", 0, LG_JSON_ESYNTAX},
};

static void test_rejects(void **state)
{
    lua_State *L = *state;
    const reject_t *cases = reject_cases;
    for (size_t i = 0; i < sizeof reject_cases / sizeof reject_cases[0]; i++) {
        const reject_t *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->text);
        lg_json_error_t err;
        memset(&err, 0xAB, sizeof err);
        lg_json_status_t st = dec(L, c->text, len, LG_JSON_DEFAULT_MAX_DEPTH, &err);
        if (st != c->st) {
            print_error("case %zu (%s): status %d, want %d (%s)\n", i, c->text, st, c->st,
                        st == LG_JSON_OK ? "accepted" : err.msg);
            fail();
        }
        assert_non_null(strstr(err.msg, " at offset "));
        assert_true(err.offset <= len);
        assert_int_equal(dec(L, c->text, len, LG_JSON_DEFAULT_MAX_DEPTH, NULL), c->st); /* err may be NULL */
    }

    /* offsets and messages */
    lg_json_error_t err;
    assert_int_equal(dec(L, "{} x", 4, 128, &err), LG_JSON_ESYNTAX);
    assert_int_equal(err.offset, 3);
    assert_string_equal(err.msg, "unexpected character 'x' at offset 3");
    assert_int_equal(dec(L, "", 0, 128, &err), LG_JSON_ESYNTAX);
    assert_string_equal(err.msg, "unexpected end of input at offset 0");
    assert_int_equal(dec(L, "[1,2,]", 6, 128, &err), LG_JSON_ESYNTAX);
    assert_int_equal(err.offset, 5);
    assert_int_equal(dec(L, "[\"ok\",\"\\ud800\"]", 15, 128, &err), LG_JSON_EUTF8);
    assert_int_equal(err.offset, 7);
    assert_int_equal(dec(L, "  \"\xC0\x80\"", 6, 128, &err), LG_JSON_EUTF8);
    assert_int_equal(err.offset, 3);
    assert_int_equal(lg_json_decode(L, NULL, 0, 128, &err), LG_JSON_ESYNTAX);
    assert_int_equal(lua_gettop(L), 0);

    /* the stack is untouched after errors deep inside containers (dec() checks it) */
    assert_int_equal(decs(L, "[{\"a\":[1,2,{\"b\":\"\\ud800\"}]}]"), LG_JSON_EUTF8);
    char big[4096];
    size_t n = 0;
    big[n++] = '[';
    for (int i = 0; i < 500; i++)
        n += (size_t)sprintf(big + n, "%d,", i);
    big[n++] = 'x';
    assert_int_equal(dec(L, big, n, 128, &err), LG_JSON_ESYNTAX);
}

static char *nested(int depth, const char *open, const char *inner, const char *close)
{
    size_t lo = strlen(open), li = strlen(inner), lc = strlen(close);
    char *s = malloc((size_t)depth * (lo + lc) + li + 1), *p = s;
    for (int i = 0; i < depth; i++, p += lo)
        memcpy(p, open, lo);
    memcpy(p, inner, li);
    p += li;
    for (int i = 0; i < depth; i++, p += lc)
        memcpy(p, close, lc);
    *p = '\0';
    return s;
}

static void test_depth(void **state)
{
    lua_State *L = *state;
    lg_json_error_t err;
    char *s128 = nested(128, "[", "", "]"), *s129 = nested(129, "[", "", "]");
    assert_int_equal(dec(L, s128, strlen(s128), 128, &err), LG_JSON_OK);
    lg_json_status_t st;
    char *out = enc(L, &st, NULL); /* encodes back at the same depth limit */
    assert_string_equal(out, s128);
    free(out);
    lua_pop(L, 1);
    assert_int_equal(dec(L, s129, strlen(s129), 128, &err), LG_JSON_EDEPTH);
    assert_non_null(strstr(err.msg, "nesting too deep"));
    assert_int_equal(err.offset, 128);
    assert_int_equal(dec(L, s129, strlen(s129), 129, &err), LG_JSON_OK);
    lua_pop(L, 1);
    /* encode: 129 levels exceed the default limit */
    assert_int_equal(dec(L, s129, strlen(s129), 129, &err), LG_JSON_OK);
    assert_null(enc(L, &st, &err));
    assert_int_equal(st, LG_JSON_EDEPTH);
    assert_non_null(strstr(err.msg, "nesting too deep (or a cycle)"));
    lua_pop(L, 1);
    free(s128);
    free(s129);

    char *o128 = nested(128, "{\"a\":", "1", "}"), *o129 = nested(129, "{\"a\":", "1", "}");
    assert_int_equal(dec(L, o128, strlen(o128), 128, &err), LG_JSON_OK);
    lua_pop(L, 1);
    assert_int_equal(dec(L, o129, strlen(o129), 128, &err), LG_JSON_EDEPTH);
    free(o128);
    free(o129);

    /* max_depth 0: scalars only */
    assert_int_equal(dec(L, "1", 1, 0, &err), LG_JSON_OK);
    lua_pop(L, 1);
    assert_int_equal(dec(L, "[]", 2, 0, &err), LG_JSON_EDEPTH);

    /* a very deep document with a large limit fails cleanly, never overflows anything */
    char *deep = nested(100000, "[", "", "]");
    st = dec(L, deep, strlen(deep), 1000000, &err);
    assert_int_equal(st, LG_JSON_EDEPTH);
    free(deep);
    /* as deep as the Lua stack allows, with a big limit, round trips */
    char *d1000 = nested(1000, "[{\"k\":", "0", "}]");
    assert_int_equal(dec(L, d1000, strlen(d1000), 2000, &err), LG_JSON_OK);
    lg_buf_t b = {0};
    assert_int_equal(lg_json_encode(L, -1, &b, 2000, &err), LG_JSON_OK);
    assert_string_equal(b.data, d1000);
    lg_buf_free(&b);
    lua_pop(L, 1);
    free(d1000);
}

static void test_large_containers(void **state)
{
    lua_State *L = *state;
    lg_buf_t in = {0};
    lg_buf_putc(&in, '[');
    for (int i = 0; i < 10000; i++)
        lg_buf_printf(&in, "%s%d", i ? "," : "", i * 3);
    lg_buf_putc(&in, ']');
    assert_int_equal(decs(L, in.data), LG_JSON_OK);
    assert_int_equal(lua_objlen(L, -1), 10000);
    lua_rawgeti(L, -1, 10000);
    assert_int_equal((int)lua_tonumber(L, -1), 29997);
    lua_pop(L, 1);
    char *out = enc(L, NULL, NULL);
    assert_string_equal(out, in.data);
    free(out);
    lua_pop(L, 1);

    /* every array size around the on-stack batch limit */
    for (int n = 0; n < 70; n++) {
        lg_buf_reset(&in);
        lg_buf_putc(&in, '[');
        for (int i = 0; i < n; i++)
            lg_buf_printf(&in, "%s\"s%d\"", i ? "," : "", i);
        lg_buf_putc(&in, ']');
        roundtrip_text(L, in.data, NULL);
        /* and objects of that many members */
        lg_buf_reset(&in);
        lg_buf_putc(&in, '{');
        for (int i = 0; i < n; i++)
            lg_buf_printf(&in, "%s\"k%d\":[%d]", i ? "," : "", i, i);
        lg_buf_putc(&in, '}');
        assert_int_equal(decs(L, in.data), LG_JSON_OK);
        int count = 0;
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *k = lua_tostring(L, -2);
            lua_rawgeti(L, -1, 1);
            assert_int_equal(atoi(k + 1), (int)lua_tonumber(L, -1));
            lua_pop(L, 2);
            count++;
        }
        assert_int_equal(count, n);
        lua_pop(L, 1);
    }

    /* duplicate keys: the last one wins, also past the batch limit */
    lg_buf_reset(&in);
    lg_buf_putc(&in, '{');
    for (int i = 0; i < 40; i++)
        lg_buf_printf(&in, "\"k%d\":%d,", i % 5, i);
    lg_buf_lit(&in, "\"z\":0}");
    assert_int_equal(decs(L, in.data), LG_JSON_OK);
    for (int k = 0; k < 5; k++) {
        char key[8];
        snprintf(key, sizeof key, "k%d", k);
        lua_getfield(L, -1, key);
        assert_int_equal((int)lua_tonumber(L, -1), 35 + k);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    roundtrip_text(L, "{\"a\":1,\"a\":2}", "{\"a\":2}");

    /* a long string with escapes everywhere (the scratch path) */
    lg_buf_reset(&in);
    lg_buf_putc(&in, '"');
    for (int i = 0; i < 20000; i++)
        lg_buf_lit(&in, "ab\\n\\u00e9\\ud83d\\ude00");
    lg_buf_putc(&in, '"');
    assert_int_equal(decs(L, in.data), LG_JSON_OK);
    assert_int_equal(lua_objlen(L, -1), 20000 * 9);
    lua_pop(L, 1);
    lg_buf_free(&in);
}

static void encode_lua(lua_State *L, const char *expr, lg_json_status_t want_st, const char *want)
{
    char code[512];
    snprintf(code, sizeof code, "return %s", expr);
    if (luaL_dostring(L, code) != 0) {
        print_error("%s: %s\n", expr, lua_tostring(L, -1));
        fail();
    }
    lg_json_error_t err;
    lg_json_status_t st;
    char *out = enc(L, &st, &err);
    if (st != want_st) {
        print_error("%s: status %d want %d (%s)\n", expr, st, want_st, out ? out : err.msg);
        fail();
    }
    if (st == LG_JSON_OK) {
        if (want)
            assert_string_equal(out, want);
    } else if (want) {
        if (strcmp(err.msg, want) != 0) {
            print_error("%s: message \"%s\" want \"%s\"\n", expr, err.msg, want);
            fail();
        }
    }
    free(out);
    lua_settop(L, 0);
}

static void test_encode_errors(void **state)
{
    lua_State *L = *state;
    encode_lua(L, "print", LG_JSON_ETYPE, "cannot encode function at root");
    encode_lua(L, "{a = {1, 2, print}}", LG_JSON_ETYPE, "cannot encode function at /a/2");
    encode_lua(L, "{['x/y~z'] = {f = coroutine.create(print)}}", LG_JSON_ETYPE, "cannot encode thread at /x~1y~0z/f");
    encode_lua(L, "0/0", LG_JSON_ETYPE, "cannot encode NaN at root");
    encode_lua(L, "{n = {0/0}}", LG_JSON_ETYPE, "cannot encode NaN at /n/0");
    encode_lua(L, "{1/0}", LG_JSON_ETYPE, "cannot encode inf at /0");
    encode_lua(L, "-math.huge", LG_JSON_ETYPE, "cannot encode -inf at root");
    encode_lua(L, "io.stdout", LG_JSON_ETYPE, "cannot encode userdata at root");
    encode_lua(L, "{[true] = 1}", LG_JSON_ETYPE, "cannot encode a key of type boolean at root");
    encode_lua(L, "{a = {[{}] = 1}}", LG_JSON_ETYPE, "cannot encode a key of type table at /a");
    encode_lua(L, "{[1/0] = 1}", LG_JSON_ETYPE, NULL);
    encode_lua(L, "{[10] = {[2] = print}}", LG_JSON_ETYPE, "cannot encode function at /10/2");

    /* a cycle */
    if (luaL_dostring(L, "local t = {}; t.a = t; return t") != 0)
        fail();
    lg_json_error_t err;
    lg_json_status_t st;
    assert_null(enc(L, &st, &err));
    assert_int_equal(st, LG_JSON_EDEPTH);
    assert_non_null(strstr(err.msg, "nesting too deep (or a cycle)"));
    assert_non_null(strstr(err.msg, "/a/a/a"));
    lua_settop(L, 0);
    if (luaL_dostring(L, "local t = json.array{}; t[1] = {t}; return t") != 0)
        fail();
    assert_null(enc(L, &st, &err));
    assert_int_equal(st, LG_JSON_EDEPTH);
    lua_settop(L, 0);

    /* partial output is allowed, but the buffer stays a valid C string and is reusable */
    lg_buf_t b = {0};
    assert_int_equal(luaL_dostring(L, "return {1, 2, print}"), 0);
    assert_int_equal(lg_json_encode(L, 1, &b, 128, &err), LG_JSON_ETYPE);
    assert_int_equal(strlen(b.data), b.len);
    lg_buf_reset(&b);
    lua_pushinteger(L, 7);
    assert_int_equal(lg_json_encode(L, -1, &b, 128, NULL), LG_JSON_OK); /* err may be NULL */
    assert_string_equal(b.data, "7");
    lg_buf_free(&b);
    lua_settop(L, 0);
}

static void test_encode_tables(void **state)
{
    lua_State *L = *state;
    encode_lua(L, "{1, 2, 3}", LG_JSON_OK, "[1,2,3]");
    encode_lua(L, "{'a', {true, false}}", LG_JSON_OK, "[\"a\",[true,false]]");
    encode_lua(L, "{a = 1}", LG_JSON_OK, "{\"a\":1}");
    encode_lua(L, "{}", LG_JSON_OK, "{}");
    encode_lua(L, "json.array({})", LG_JSON_OK, "[]");
    encode_lua(L, "json.array()", LG_JSON_OK, "[]");
    encode_lua(L, "json.empty_array", LG_JSON_OK, "[]");
    encode_lua(L, "{a = json.empty_array, b = json.null}", LG_JSON_OK, NULL);
    encode_lua(L, "{[1] = 'x'}", LG_JSON_OK, "[\"x\"]");
    encode_lua(L, "{[2] = 'x'}", LG_JSON_OK, "{\"2\":\"x\"}");
    encode_lua(L, "{[0] = 'x'}", LG_JSON_OK, "{\"0\":\"x\"}");
    encode_lua(L, "{[-1] = 'x'}", LG_JSON_OK, "{\"-1\":\"x\"}");
    encode_lua(L, "{[1.5] = 'x'}", LG_JSON_OK, "{\"1.5\":\"x\"}");
    encode_lua(L, "{[2^53] = 1}", LG_JSON_OK, "{\"9007199254740992\":1}");
    encode_lua(L, "nil", LG_JSON_OK, "null");
    encode_lua(L, "json.null", LG_JSON_OK, "null");
    encode_lua(L, "{json.null, json.null}", LG_JSON_OK, "[null,null]");
    encode_lua(L, "setmetatable({1, 2}, {__index = function() end})", LG_JSON_OK, "[1,2]");
    encode_lua(L, "setmetatable({}, json.array_mt)", LG_JSON_OK, "[]");
    encode_lua(L, "(function() local t = json.array{1, 2}; t.x = 1; return t end)()", LG_JSON_OK, "[1,2]");
    encode_lua(L, "12345678901234", LG_JSON_OK, "12345678901234");
    encode_lua(L, "2^53", LG_JSON_OK, "9007199254740992");
    encode_lua(L, "-2^53", LG_JSON_OK, "-9007199254740992");
    encode_lua(L, "2^53 + 2", LG_JSON_OK, "9007199254740994");
    encode_lua(L, "2^60", LG_JSON_OK, "1.152921504606847e+18");
    encode_lua(L, "-0.0", LG_JSON_OK, "-0");
    encode_lua(L, "0.1 + 0.2", LG_JSON_OK, "0.30000000000000004");
    encode_lua(L, "1/3", LG_JSON_OK, "0.3333333333333333");
    encode_lua(L, "true", LG_JSON_OK, "true");

    /* a hole: keys 1 and 3 make an object */
    if (luaL_dostring(L, "return {1, nil, 3}") != 0)
        fail();
    char *out = enc(L, NULL, NULL);
    assert_true(strcmp(out, "{\"1\":1,\"3\":3}") == 0 || strcmp(out, "{\"3\":3,\"1\":1}") == 0);
    assert_int_equal(decs(L, out), LG_JSON_OK);
    lua_getfield(L, -1, "1");
    assert_int_equal((int)lua_tonumber(L, -1), 1);
    lua_getfield(L, -2, "3");
    assert_int_equal((int)lua_tonumber(L, -1), 3);
    free(out);
    lua_settop(L, 0);

    /* mixed keys make an object with numbers printed as keys */
    if (luaL_dostring(L, "return {10, 20, a = 'b'}") != 0)
        fail();
    out = enc(L, NULL, NULL);
    assert_int_equal(decs(L, out), LG_JSON_OK);
    lua_getfield(L, -1, "2");
    assert_int_equal((int)lua_tonumber(L, -1), 20);
    lua_getfield(L, -2, "a");
    assert_string_equal(lua_tostring(L, -1), "b");
    free(out);
    lua_settop(L, 0);
}

static void test_encode_strings(void **state)
{
    lua_State *L = *state;
    encode_lua(L, "'a/b'", LG_JSON_OK, "\"a/b\"");
    encode_lua(L, "'\\1\\31 \\127'", LG_JSON_OK, "\"\\u0001\\u001f \x7f\"");
    encode_lua(L, "'\\n\\r\\t\\b\\f\"\\\\'", LG_JSON_OK, "\"\\n\\r\\t\\b\\f\\\"\\\\\"");
    encode_lua(L, "'\\0x'", LG_JSON_OK, "\"\\u0000x\"");
    encode_lua(L, "'\\195\\169\\240\\159\\152\\128'", LG_JSON_OK, "\"\xC3\xA9\xF0\x9F\x98\x80\"");
    /* invalid UTF-8: each bad byte becomes U+FFFD */
    encode_lua(L, "'a\\255b'", LG_JSON_OK, "\"a\xEF\xBF\xBD" "b\"");
    encode_lua(L, "'\\192\\128'", LG_JSON_OK, "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");
    encode_lua(L, "'\\237\\160\\128'", LG_JSON_OK, "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");
    encode_lua(L, "'\\226\\130'", LG_JSON_OK, "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");
    encode_lua(L, "{['k\\n'] = 'v'}", LG_JSON_OK, "{\"k\\n\":\"v\"}");

    /* long strings (chunked output) of every kind read back the same */
    lg_buf_t s = {0};
    for (int i = 0; i < 30000; i++) {
        char c = (char)(i % 7 == 0 ? '\x01' : i % 11 == 0 ? '"' : 'a' + i % 26);
        lg_buf_putc(&s, c);
        if (i % 13 == 0)
            lg_buf_lit(&s, "\xE2\x82\xAC");
    }
    lua_pushlstring(L, s.data, s.len);
    char *out = enc(L, NULL, NULL);
    assert_int_equal(decs(L, out), LG_JSON_OK);
    assert_true(lua_rawequal(L, -1, -2));
    free(out);
    lua_settop(L, 0);
    lg_buf_free(&s);
}

static void test_lua_module(void **state)
{
    lua_State *L = *state;
    run_lua(L,
            "local a = json.decode('[]')\n"
            "assert(getmetatable(a) == json.array_mt)\n"
            "assert(json.array_mt.__name == 'json.array')\n"
            "assert(getmetatable(json.decode('[1,[2]]')[2]) == json.array_mt)\n"
            "assert(getmetatable(json.decode('{}')) == nil)\n"
            "assert(json.encode(json.decode('{\"a\":[]}')) == '{\"a\":[]}')\n"
            "assert(json.encode(json.decode('[{}]')) == '[{}]')\n"
            "assert(json.decode('null') == json.null)\n"
            "assert(json.decode('[null]')[1] == json.null)\n"
            "assert(#json.decode('[1,null,3]') == 3)\n"
            "assert(json.decode('9007199254740992') == 2^53)\n"
            "assert(json.encode(2^53) == '9007199254740992')\n"
            "assert(json.decode(' \"x\" ') == 'x')\n"
            "assert(json.encode('/') == '\"/\"')\n");
    run_lua(L,
            "local ok, err = pcall(json.decode, '[1,]')\n"
            "assert(not ok and err:find('json.decode: unexpected character \\']\\' at offset 3', 1, true), err)\n"
            "ok, err = pcall(json.decode, '{} x')\n"
            "assert(not ok and err:find('json.decode: unexpected character \\'x\\' at offset 3', 1, true), err)\n"
            "ok, err = pcall(json.decode, '\"\\\\ud800\"')\n"
            "assert(not ok and err:find('surrogate', 1, true), err)\n"
            "ok, err = pcall(json.decode, string.rep('[', 129) .. string.rep(']', 129))\n"
            "assert(not ok and err:find('nesting too deep', 1, true), err)\n"
            "assert(pcall(json.decode, string.rep('[', 128) .. string.rep(']', 128)))\n"
            "ok, err = pcall(json.encode, {f = print})\n"
            "assert(not ok and err:find('json.encode: cannot encode function at /f', 1, true), err)\n"
            "local t = {}; t.self = t\n"
            "ok, err = pcall(json.encode, t)\n"
            "assert(not ok and err:find('nesting too deep (or a cycle)', 1, true), err)\n"
            "ok, err = pcall(json.encode)\n"
            "assert(not ok)\n"
            "ok, err = pcall(json.decode, {})\n"
            "assert(not ok)\n");
    run_lua(L,
            "local e = json.empty_array\n"
            "assert(json.encode(e) == '[]')\n"
            "assert(json.is_array(e))\n"
            "assert(getmetatable(e) == json.array_mt)\n"
            "local ok, err = pcall(function() e[1] = 1 end)\n"
            "assert(not ok and err:find('read-only', 1, true), err)\n"
            "ok = pcall(function() e.x = 1 end)\n"
            "assert(not ok)\n"
            "assert(not pcall(setmetatable, e, nil))\n"
            "assert(next(e) == nil)\n"
            "assert(json.array(e) == e)\n"
            "local t = {}\n"
            "assert(json.array(t) == t and getmetatable(t) == json.array_mt)\n"
            "assert(json.encode(t) == '[]')\n"
            "t[#t + 1] = 'x'\n"
            "assert(json.encode(t) == '[\"x\"]')\n"
            "assert(not pcall(json.array, setmetatable({}, {})))\n"
            "assert(not pcall(json.array, 1))\n"
            "assert(json.is_array(json.decode('[]')))\n"
            "assert(not json.is_array(json.decode('{}')))\n"
            "assert(json.is_array({1, 2}))\n"
            "assert(not json.is_array({}))\n"
            "assert(not json.is_array({1, nil, 3}))\n"
            "assert(not json.is_array({a = 1}))\n"
            "assert(not json.is_array('x'))\n"
            "assert(not json.is_array(nil))\n");
    /* a second luaopen shares the metatable, null and empty_array */
    luaopen_luagent_json(L);
    lua_setglobal(L, "json2");
    run_lua(L,
            "assert(json2.array_mt == json.array_mt)\n"
            "assert(json2.empty_array == json.empty_array)\n"
            "assert(json2.null == json.null)\n"
            "assert(json2.encode(json.decode('[[],{}]')) == '[[],{}]')\n");
    /* encode's shared buffer: a large result, then small ones */
    run_lua(L,
            "local big = string.rep('x', 200000)\n"
            "assert(#json.encode(big) == 200002)\n"
            "assert(json.encode({1}) == '[1]')\n"
            "for i = 1, 100 do assert(json.decode(json.encode({i = i})).i == i) end\n");
}

/* The bench body from the brief: decode + re-encode is faithful. */
static void test_request_body(void **state)
{
    lua_State *L = *state;
    const char *body = "{\"task\":{\"kind\":\"echo\",\"input\":\"hello from the bench\",\"params\":{\"n\":1,\"tags\":[\"a\",\"b\"]}},"
                       "\"context\":{\"session_id\":\"bench-0001\",\"user\":\"bench\",\"trace\":true}}";
    assert_int_equal(decs(L, body), LG_JSON_OK);
    char *out = enc(L, NULL, NULL);
    assert_int_equal(strlen(out), strlen(body));
    assert_int_equal(decs(L, out), LG_JSON_OK);
    assert_true(deep_equal(L, -1, -2));
    free(out);
    lua_settop(L, 0);
}

/* lg_json_decode_spans: where top-level members are in the text; compaction of a value */
static void test_member_spans(void **state)
{
    lua_State *L = *state;
    static const char *const keys[] = {"task", "context"};
    lg_json_span_t sp[2];
    const char *body = "{ \"agent\" : \"x\", \"task\" :\n {\"a\": [1, {\"task\": 2}], \"s\": \"q\\\"}\"} , "
                       "\"context\":null , \"task2\": 3}";
    assert_int_equal(lg_json_decode_spans(L, body, strlen(body), 64, NULL, keys, 2, sp), LG_JSON_OK);
    assert_memory_equal(body + sp[0].off, "{\"a\": [1, {\"task\": 2}], \"s\": \"q\\\"}\"}", sp[0].len);
    assert_int_equal(sp[0].len, strlen("{\"a\": [1, {\"task\": 2}], \"s\": \"q\\\"}\"}"));
    assert_memory_equal(body + sp[1].off, "null", 4);
    assert_int_equal(sp[1].len, 4);
    lg_buf_t b = {0};
    const char *spaced = "{\"a\" :\n [1, \"x \\\" y\"]\r\n}";
    lg_json_compact(&b, spaced, strlen(spaced));
    assert_string_equal(b.data, "{\"a\":[1,\"x \\\" y\"]}");
    lg_buf_free(&b);
    /* absent, last one wins, scalars, not an object */
    const char *dup = "{\"task\":1,\"task\":[true]}";
    assert_int_equal(lg_json_decode_spans(L, dup, strlen(dup), 64, NULL, keys, 2, sp), LG_JSON_OK);
    assert_memory_equal(dup + sp[0].off, "[true]", 6);
    assert_int_equal(sp[1].len, 0);
    assert_int_equal(lg_json_decode_spans(L, "[1]", 3, 64, NULL, keys, 2, sp), LG_JSON_OK);
    assert_int_equal(sp[0].len + sp[1].len, 0);
    lua_settop(L, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* Strings and objects around the 8-byte scans and the on-stack batch of members; expectations are
 * built from the parts of each input, not by the code under test. */

/* Plain bytes, some one bit away from a special one ('#' is '"' ^ 1, ']' is '\\' ^ 1). */
static const char filler[] = "a# ]/~\x7f" "0Z!";

static void put_fill(lg_buf_t *b, size_t n, size_t from)
{
    for (size_t i = 0; i < n; i++)
        lg_buf_putc(b, filler[(from + i) % (sizeof filler - 1)]);
}

typedef struct str_case {
    const char *json;   /* as written inside a JSON string */
    const char *text;   /* decoded (NULL: rejected) */
    lg_json_status_t st;
    const char *what;   /* the error message before " at offset N" */
} str_case_t;

static const str_case_t str_cases[] = {
    {"\\\"", "\"", LG_JSON_OK, NULL},
    {"\\\\", "\\", LG_JSON_OK, NULL},
    {"\\n", "\n", LG_JSON_OK, NULL},
    {"\\/", "/", LG_JSON_OK, NULL},
    {"\\u00e9", "\xc3\xa9", LG_JSON_OK, NULL},
    {"\\ud83d\\ude00", "\xf0\x9f\x98\x80", LG_JSON_OK, NULL},
    {"\xc3\xa9", "\xc3\xa9", LG_JSON_OK, NULL},
    {"\xe2\x82\xac", "\xe2\x82\xac", LG_JSON_OK, NULL},
    {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80", LG_JSON_OK, NULL},
    {"\x7f", "\x7f", LG_JSON_OK, NULL},
    {"\x01", NULL, LG_JSON_ESYNTAX, "unescaped control character 0x01 in string"},
    {"\x1f", NULL, LG_JSON_ESYNTAX, "unescaped control character 0x1f in string"},
    {"\x80", NULL, LG_JSON_EUTF8, "invalid UTF-8 byte 0x80 in string"},
    {"\xff", NULL, LG_JSON_EUTF8, "invalid UTF-8 byte 0xff in string"},
    {"\xc3", NULL, LG_JSON_EUTF8, "invalid UTF-8 byte 0xc3 in string"},
    {"\xed\xa0\x80", NULL, LG_JSON_EUTF8, "invalid UTF-8 byte 0xed in string"},
};

static void test_strings_special_at_each_offset(void **state)
{
    lua_State *L = *state;
    lg_buf_t in = {0}, want = {0};
    lg_json_error_t err;
    for (size_t k = 0; k < sizeof str_cases / sizeof str_cases[0]; k++) {
        const str_case_t *c = &str_cases[k];
        for (int lead = 0; lead < 2; lead++) /* "\t" first: the string takes the escape path */
            for (size_t plain = 0; plain <= 17; plain++)
                for (size_t after = 0; after <= 17; after++) {
                    for (int as_key = 0; as_key < 2; as_key++) {
                        lg_buf_reset(&in);
                        lg_buf_reset(&want);
                        if (as_key)
                            lg_buf_putc(&in, '{');
                        lg_buf_putc(&in, '"');
                        if (lead) {
                            lg_buf_lit(&in, "\\t");
                            lg_buf_putc(&want, '\t');
                        }
                        put_fill(&in, plain, 0);
                        put_fill(&want, plain, 0);
                        size_t at = in.len; /* where the special starts */
                        lg_buf_append(&in, c->json, strlen(c->json));
                        if (c->text)
                            lg_buf_append(&want, c->text, strlen(c->text));
                        put_fill(&in, after, 5);
                        put_fill(&want, after, 5);
                        lg_buf_putc(&in, '"');
                        if (as_key)
                            lg_buf_lit(&in, ":1}");
                        lg_json_status_t st = dec(L, in.data, in.len, 8, &err);
                        if (st != c->st) {
                            print_error("case %zu lead %d at %zu+%zu key %d: status %d (%s)\n", k, lead, plain, after,
                                        as_key, st, err.msg);
                            fail();
                        }
                        if (st != LG_JSON_OK) {
                            char msg[160];
                            snprintf(msg, sizeof msg, "%s at offset %zu", c->what, at);
                            assert_string_equal(err.msg, msg);
                            assert_int_equal(err.offset, at);
                            continue;
                        }
                        if (as_key) {
                            lua_pushlstring(L, want.data, want.len);
                            lua_rawget(L, -2);
                            assert_int_equal((int)lua_tonumber(L, -1), 1);
                            lua_pop(L, 2);
                            continue;
                        }
                        size_t n;
                        const char *got = lua_tolstring(L, -1, &n);
                        assert_int_equal(n, want.len);
                        assert_memory_equal(got, want.data, want.len);
                        lua_pop(L, 1);
                    }
                }
    }
    /* unterminated, at every length */
    for (size_t plain = 0; plain <= 20; plain++)
        for (int tail = 0; tail < 3; tail++) {
            lg_buf_reset(&in);
            lg_buf_putc(&in, '"');
            if (tail == 2)
                lg_buf_lit(&in, "\\n");
            put_fill(&in, plain, 0);
            if (tail == 1)
                lg_buf_putc(&in, '\\');
            assert_int_equal(dec(L, in.data, in.len, 8, &err), LG_JSON_ESYNTAX);
            assert_string_equal(err.msg, "unterminated string at offset 0");
        }
    lg_buf_free(&in);
    lg_buf_free(&want);
}

/* What the encoder writes for a byte (or sequence) in a Lua string. */
static const struct {
    const char *in, *out;
} enc_cases[] = {
    {"\"", "\\\""}, {"\\", "\\\\"}, {"\n", "\\n"}, {"\x01", "\\u0001"}, {"\x1f", "\\u001f"}, {"/", "/"},
    {"\xc3\xa9", "\xc3\xa9"}, {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"}, {"\xff", "\xef\xbf\xbd"},
    {"\xc3", "\xef\xbf\xbd"}, {"\xe2\x82", "\xef\xbf\xbd\xef\xbf\xbd"}, {"", ""},
};

static void test_encode_special_at_each_offset(void **state)
{
    lua_State *L = *state;
    static const size_t afters[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 40, 46, 47, 48, 60, 70};
    lg_buf_t in = {0}, want = {0};
    for (size_t k = 0; k < sizeof enc_cases / sizeof enc_cases[0]; k++)
        for (size_t plain = 0; plain <= 17; plain++)
            for (size_t a = 0; a < sizeof afters / sizeof afters[0]; a++) {
                lg_buf_reset(&in);
                lg_buf_reset(&want);
                lg_buf_putc(&want, '"');
                put_fill(&in, plain, 0);
                put_fill(&want, plain, 0);
                lg_buf_append(&in, enc_cases[k].in, strlen(enc_cases[k].in));
                lg_buf_append(&want, enc_cases[k].out, strlen(enc_cases[k].out));
                put_fill(&in, afters[a], 2);
                put_fill(&want, afters[a], 2);
                lg_buf_putc(&want, '"');
                lua_pushlstring(L, in.data, in.len);
                char *out = enc(L, NULL, NULL);
                assert_string_equal(out, want.data);
                free(out);
                lua_pop(L, 1);
            }
    lg_buf_free(&in);
    lg_buf_free(&want);
}

/* Append member i of a generated object (after a comma unless it is the first): named `name` or
 * "k<i>", a value of each type in turn. Returns the offset of the value in `text`. */
static size_t put_member(lg_buf_t *text, int i, const char *name)
{
    if (i)
        lg_buf_putc(text, ',');
    if (name)
        lg_buf_printf(text, "\"%s\":", name);
    else
        lg_buf_printf(text, "\"k%d\":", i);
    size_t at = text->len;
    switch (i % 7) {
    case 0: lg_buf_printf(text, "%d", i); break;
    case 1: lg_buf_printf(text, "\"s%d\"", i); break;
    case 2: lg_buf_lit(text, "true"); break;
    case 3: lg_buf_lit(text, "false"); break;
    case 4: lg_buf_lit(text, "null"); break;
    case 5: lg_buf_printf(text, "[%d,\"a\"]", i); break;
    default: lg_buf_printf(text, "{\"i\":%d,\"j\":[]}", i); break;
    }
    return at;
}

/* The value at the top is what put_member wrote for member i. */
static void check_member(lua_State *L, int i)
{
    switch (i % 7) {
    case 0:
        assert_int_equal(lua_type(L, -1), LUA_TNUMBER);
        assert_int_equal((int)lua_tonumber(L, -1), i);
        break;
    case 1: {
        char s[16];
        snprintf(s, sizeof s, "s%d", i);
        assert_int_equal(lua_type(L, -1), LUA_TSTRING);
        assert_string_equal(lua_tostring(L, -1), s);
        break;
    }
    case 2: case 3:
        assert_int_equal(lua_type(L, -1), LUA_TBOOLEAN);
        assert_int_equal(lua_toboolean(L, -1), i % 7 == 2);
        break;
    case 4:
        assert_true(lg_json_is_null(L, -1));
        break;
    case 5:
        assert_int_equal(lua_type(L, -1), LUA_TTABLE);
        assert_true(is_array_marked(L, -1));
        assert_int_equal(lua_objlen(L, -1), 2);
        lua_rawgeti(L, -1, 1);
        assert_int_equal((int)lua_tonumber(L, -1), i);
        lua_rawgeti(L, -2, 2);
        assert_string_equal(lua_tostring(L, -1), "a");
        lua_pop(L, 2);
        break;
    default: {
        assert_int_equal(lua_type(L, -1), LUA_TTABLE);
        assert_false(is_array_marked(L, -1));
        lua_getfield(L, -1, "i");
        assert_int_equal((int)lua_tonumber(L, -1), i);
        lua_getfield(L, -2, "j");
        assert_true(is_array_marked(L, -1));
        assert_int_equal(lua_objlen(L, -1), 0);
        lua_pop(L, 2);
        break;
    }
    }
}

static int count_keys(lua_State *L, int idx)
{
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx < 0 ? idx - 1 : idx)) {
        lua_pop(L, 1);
        n++;
    }
    return n;
}

/* Check the object at the top: members k<i> for i < n not in dups, and "dup" holding member last's value. */
static void check_object(lua_State *L, int n, const int *dups, int ndups)
{
    assert_int_equal(lua_type(L, -1), LUA_TTABLE);
    assert_false(is_array_marked(L, -1));
    for (int i = 0; i < n; i++) {
        int is_dup = 0;
        for (int j = 0; j < ndups; j++)
            is_dup |= dups[j] == i;
        if (is_dup)
            continue;
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        lua_getfield(L, -1, k);
        check_member(L, i);
        lua_pop(L, 1);
    }
    if (ndups) {
        lua_getfield(L, -1, "dup");
        check_member(L, dups[ndups - 1]);
        lua_pop(L, 1);
    }
    assert_int_equal(count_keys(L, -1), n - (ndups ? ndups - 1 : 0));
}

static void test_object_sizes(void **state)
{
    lua_State *L = *state;
    static const int sizes[] = {0, 1, 4, 5, 15, 16, 17, 31, 32, 33, 40};
    lg_buf_t text = {0};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int n = sizes[s];
        for (int nest = 0; nest < 3; nest++) {
            /* alone, as the middle member of an object, inside an array with elements around it */
            lg_buf_reset(&text);
            if (nest == 1)
                lg_buf_lit(&text, "{\"a\":1,\"b\":");
            else if (nest == 2)
                lg_buf_lit(&text, "[1,2,");
            lg_buf_putc(&text, '{');
            for (int i = 0; i < n; i++)
                put_member(&text, i, NULL);
            lg_buf_putc(&text, '}');
            if (nest == 1)
                lg_buf_lit(&text, ",\"c\":3}");
            else if (nest == 2)
                lg_buf_lit(&text, ",3]");
            assert_int_equal(decs(L, text.data), LG_JSON_OK);
            if (nest == 1) {
                assert_int_equal(count_keys(L, -1), 3);
                lua_getfield(L, -1, "c");
                assert_int_equal((int)lua_tonumber(L, -1), 3);
                lua_getfield(L, -2, "b");
            } else if (nest == 2) {
                assert_int_equal(lua_objlen(L, -1), 4);
                lua_rawgeti(L, -1, 4);
                assert_int_equal((int)lua_tonumber(L, -1), 3);
                lua_rawgeti(L, -2, 3);
            }
            check_object(L, n, NULL, 0);
            lua_settop(L, 0);
        }
    }
    lg_buf_free(&text);
}

static void test_object_duplicate_keys(void **state)
{
    lua_State *L = *state;
    /* positions of the repeated name; DEC_K (16) members wait on the stack */
    static const struct {
        int n, ndups, dups[4];
    } cases[] = {
        {2, 2, {0, 1}},      {5, 2, {0, 4}},       {5, 3, {1, 2, 3}},  {16, 2, {3, 15}},  {16, 2, {14, 15}},
        {17, 2, {0, 16}},    {17, 2, {15, 16}},    {17, 2, {2, 16}},   {18, 2, {16, 17}}, {40, 3, {1, 20, 39}},
        {40, 2, {17, 30}},   {40, 4, {0, 15, 16, 39}}, {33, 2, {31, 32}},
    };
    /* the same name written three ways */
    static const char *const spell[] = {"dup", "\\u0064up", "du\\u0070"};
    lg_buf_t text = {0};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int nest = 0; nest < 2; nest++) {
            lg_buf_reset(&text);
            if (nest)
                lg_buf_lit(&text, "{\"x\":[{\"y\":0},");
            lg_buf_putc(&text, '{');
            for (int i = 0; i < cases[c].n; i++) {
                const char *name = NULL;
                for (int j = 0; j < cases[c].ndups; j++)
                    if (cases[c].dups[j] == i)
                        name = spell[(j + (int)c) % 3];
                put_member(&text, i, name);
            }
            lg_buf_putc(&text, '}');
            if (nest)
                lg_buf_lit(&text, "],\"z\":{\"dup\":1,\"dup\":2}}");
            assert_int_equal(decs(L, text.data), LG_JSON_OK);
            if (nest) {
                lua_getfield(L, -1, "z");
                lua_getfield(L, -1, "dup");
                assert_int_equal((int)lua_tonumber(L, -1), 2);
                assert_int_equal(count_keys(L, -2), 1);
                lua_getfield(L, -3, "x");
                assert_int_equal(lua_objlen(L, -1), 2);
                lua_rawgeti(L, -1, 2);
            }
            check_object(L, cases[c].n, cases[c].dups, cases[c].ndups);
            lua_settop(L, 0);
        }

    /* lg_json_decode_spans: the last of a repeated top-level name, before and past DEC_K members */
    static const char *const keys[] = {"dup", "k18"};
    static const int at[][2] = {{2, 5}, {3, 20}, {17, 19}};
    for (size_t a = 0; a < sizeof at / sizeof at[0]; a++) {
        lg_buf_reset(&text);
        lg_buf_putc(&text, '{');
        size_t vstart = 0, vlen = 0, k18 = 0;
        for (int i = 0; i < 21; i++) {
            int d = i == at[a][0] || i == at[a][1];
            size_t p = put_member(&text, i, d ? "dup" : NULL);
            if (i == at[a][1]) {
                vstart = p;
                vlen = text.len - p;
            }
            if (i == 18)
                k18 = p;
        }
        lg_buf_putc(&text, '}');
        lg_json_span_t sp[2];
        assert_int_equal(lg_json_decode_spans(L, text.data, text.len, 64, NULL, keys, 2, sp), LG_JSON_OK);
        assert_int_equal(sp[0].off, vstart);
        assert_int_equal(sp[0].len, vlen);
        assert_int_equal(sp[1].off, k18);
        assert_int_equal(sp[1].len, 4); /* 18 % 7 == 4: null */
        lua_settop(L, 0);
    }
    lg_buf_free(&text);
}

static void test_object_malformed(void **state)
{
    lua_State *L = *state;
    /* after 10 members (waiting on the stack), after 10 with a repeated name (the table exists),
     * after 20 (past DEC_K), and inside objects and arrays that are still open */
    static const char *const heads[] = {"", "", "", "{\"a\":[1,{\"b\":2,\"c\":", "[[1,2,{\"q\":{\"r\":1},\"s\":"};
    static const struct {
        const char *tail;
        size_t at; /* offset of the problem after the last member */
        const char *what;
    } tails[] = {
        {",}", 1, "unexpected character '}'"},
        {",\"k\" 1}", 5, "unexpected character '1'"},
        {",\"k\":}", 5, "unexpected character '}'"},
        {",", 1, "unexpected end of input"},
        {"", 0, "unexpected end of input"},
        {",\"k\":1", 6, "unexpected end of input"},
        {" \"k\":1}", 1, "unexpected character '\"'"},
        {",\"k\":[1,2}", 9, "unexpected character '}'"},
        {",\"k\":tru}", 5, "invalid literal"},
        {",\"k\":\"abc", 5, "unterminated string"},
        {",k:1}", 1, "unexpected character 'k'"},
        {",\"k\":1]", 6, "unexpected character ']'"},
        {",\"k\":\"\x01\"}", 6, "unescaped control character 0x01 in string"},
    };
    lg_buf_t text = {0};
    lg_json_error_t err;
    for (size_t h = 0; h < sizeof heads / sizeof heads[0]; h++)
        for (size_t t = 0; t < sizeof tails / sizeof tails[0]; t++) {
            lg_buf_reset(&text);
            lg_buf_append(&text, heads[h], strlen(heads[h]));
            lg_buf_putc(&text, '{');
            int n = h == 2 ? 20 : 10;
            for (int i = 0; i < n; i++)
                put_member(&text, i, h == 1 && i == 7 ? "k2" : NULL);
            size_t at = text.len + tails[t].at;
            lg_buf_append(&text, tails[t].tail, strlen(tails[t].tail));
            lua_pushliteral(L, "below");
            lg_json_status_t st = dec(L, text.data, text.len, 64, &err); /* checks the stack is as it was */
            assert_int_equal(st, LG_JSON_ESYNTAX);
            char msg[160];
            snprintf(msg, sizeof msg, "%s at offset %zu", tails[t].what, at);
            if (strcmp(err.msg, msg) != 0) {
                print_error("%s: \"%s\", want \"%s\"\n", text.data, err.msg, msg);
                fail();
            }
            assert_int_equal(err.offset, at);
            assert_int_equal(lua_gettop(L), 1);
            assert_string_equal(lua_tostring(L, 1), "below");
            lua_settop(L, 0);
        }
    /* and the state decodes the next document normally */
    assert_int_equal(decs(L, "{\"a\":1,\"b\":[2]}"), LG_JSON_OK);
    lua_settop(L, 0);
    lg_buf_free(&text);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    lg_buf_t b = {0};
    char tmp[4096];
    size_t n;
    lg_buf_reserve(&b, 0);
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        lg_buf_append(&b, tmp, n);
    fclose(f);
    *len = b.len;
    return b.data;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_corpus(void **state)
{
    lua_State *L = *state;
    DIR *dir = opendir(CORPUS_DIR);
    if (dir == NULL) {
        print_error("cannot open %s (run from the repo root)\n", CORPUS_DIR);
        fail();
    }
    char *names[1024];
    int count = 0, ny = 0, nn = 0, failures = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL && count < 1024) {
        size_t l = strlen(de->d_name);
        if (l > 7 && strcmp(de->d_name + l - 5, ".json") == 0 && (de->d_name[0] == 'y' || de->d_name[0] == 'n') &&
            de->d_name[1] == '_')
            names[count++] = strdup(de->d_name);
    }
    closedir(dir);
    qsort(names, (size_t)count, sizeof names[0], name_cmp);

    for (int i = 0; i < count; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", CORPUS_DIR, names[i]);
        size_t len = 0;
        char *text = read_file(path, &len);
        assert_non_null(text);
        lg_json_error_t err;
        lg_json_status_t st = dec(L, text, len, LG_JSON_DEFAULT_MAX_DEPTH, &err);
        if (names[i][0] == 'y') {
            ny++;
            if (st != LG_JSON_OK) {
                print_error("%s: rejected: %s\n", names[i], err.msg);
                failures++;
            } else {
                lg_json_status_t est;
                char *out = enc(L, &est, &err);
                if (out == NULL) {
                    print_error("%s: re-encode failed: %s\n", names[i], err.msg);
                    failures++;
                } else if (dec(L, out, strlen(out), LG_JSON_DEFAULT_MAX_DEPTH, &err) != LG_JSON_OK) {
                    print_error("%s: re-encoded text %s rejected: %s\n", names[i], out, err.msg);
                    failures++;
                } else {
                    if (!deep_equal(L, -1, -2)) {
                        print_error("%s: re-encoded text %s differs\n", names[i], out);
                        failures++;
                    }
                    lua_pop(L, 1);
                }
                free(out);
                lua_pop(L, 1);
            }
        } else {
            nn++;
            if (st == LG_JSON_OK) {
                print_error("%s: accepted\n", names[i]);
                failures++;
                lua_pop(L, 1);
            }
        }
        free(text);
        free(names[i]);
    }
    print_message("corpus: %d y_ and %d n_ cases\n", ny, nn);
    assert_int_equal(failures, 0);
    assert_true(ny >= 40);
    assert_true(nn >= 60);
    assert_int_equal(lua_gettop(L), 0);
}

/* json.shape: decode(text, shape) equals a plain decode pruned by a reference pruner in Lua, on
 * fixed cases and on random documents and shapes (wide objects on both sides of the batch limit,
 * repeated names, arrays of objects, escapes). */
static void test_shape(void **state)
{
    lua_State *L = *state;
    run_lua(L,
            "local function prune(v, s)\n"
            "  if type(v) ~= 'table' or s == true then return v end\n"
            "  if getmetatable(v) == json.array_mt then\n"
            "    local out = json.array()\n"
            "    for i = 1, #v do out[i] = prune(v[i], s) end\n"
            "    return out\n"
            "  end\n"
            "  local out = {}\n"
            "  for k, sub in pairs(s) do if v[k] ~= nil then out[k] = prune(v[k], sub) end end\n"
            "  return out\n"
            "end\n"
            "local function same(a, b)\n"
            "  if type(a) ~= 'table' or type(b) ~= 'table' then return a == b end\n"
            "  if getmetatable(a) ~= getmetatable(b) then return false end\n"
            "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
            "  for k in pairs(b) do if a[k] == nil then return false end end\n"
            "  return true\n"
            "end\n"
            "local function check(text, s, want)\n"
            "  local got = json.decode(text, json.shape(s))\n"
            "  local ref = want and json.decode(want) or prune(json.decode(text), s)\n"
            "  assert(same(got, ref), text .. ' -> ' .. json.encode(got) .. ', want ' .. json.encode(ref))\n"
            "end\n"
            "check('{\"id\":\"c1\",\"object\":\"chat.completion\",\"model\":\"m\",\"choices\":[{\"index\":0,'\n"
            "  .. '\"message\":{\"role\":\"assistant\",\"content\":\"hi\",\"refusal\":null},\"logprobs\":null,'\n"
            "  .. '\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,'\n"
            "  .. '\"prompt_tokens_details\":{\"cached_tokens\":0}}}',\n"
            "  {error = true, model = true, choices = {message = {content = true, refusal = true}, finish_reason = true},\n"
            "   usage = {prompt_tokens = true, completion_tokens = true}},\n"
            "  '{\"model\":\"m\",\"choices\":[{\"message\":{\"content\":\"hi\",\"refusal\":null},\"finish_reason\":\"stop\"}],'\n"
            "  .. '\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}')\n"
            "check('[{\"a\":1,\"b\":2},{\"c\":[1],\"a\":3},5,\"s\",null,[{\"a\":[],\"z\":0}]]', {a = true},\n"
            "  '[{\"a\":1},{\"a\":3},5,\"s\",null,[{\"a\":[]}]]')\n"
            "check('{\"a\":5,\"b\":{}}', {a = {b = true}, b = {}}, '{\"a\":5,\"b\":{}}')\n"
            "check('{\"a\":{\"x\":1,\"y\":[1,{\"x\":2}]}}', {a = {}}, '{\"a\":{}}')\n"
            "check('{\"\\\\u0061\":1,\"b\":2,\"a\\\\\"\":3}', {a = true, ['a\"'] = true}, '{\"a\":1,\"a\\\\\"\":3}')\n"
            "check('{\"a\":1,\"b\":2,\"a\":3}', {a = true}, '{\"a\":3}')\n"
            "check('\"x\"', {}, '\"x\"')\n"
            "check('{\"b\":\"\\\\n\\\\u00e9\\\\ud83d\\\\ude00\",\"a\":-1.5e3,\"c\":[true,false,null]}', {a = true}, '{\"a\":-1500}')\n"
            "assert(getmetatable(json.decode('{\"a\":{}}', json.shape{a = {}}).a) == nil)\n"
            "assert(getmetatable(json.decode('{\"a\":[]}', json.shape{a = {}}).a) == json.array_mt)\n"
            /* random documents and shapes */
            "math.randomseed(7)\n"
            "local names = {'a', 'b', 'c', 'dd', 'e\\\\u0066', 'k10', 'k11', 'k12', 'long_member_name'}\n"
            "local function doc(depth)\n"
            "  local r = math.random(depth > 3 and 5 or 7)\n"
            "  if r == 1 then return tostring(math.random(-1000, 1000) / 8) end\n"
            "  if r == 2 then return '\"s\\\\t' .. math.random(100) .. '\"' end\n"
            "  if r == 3 then return ({'true', 'false', 'null'})[math.random(3)] end\n"
            "  if r <= 5 then return '\"' .. string.rep('x', math.random(0, 20)) .. '\"' end\n"
            "  local n, parts = math.random(0, math.random(2) == 1 and 4 or 40), {}\n"
            "  if r == 6 then\n"
            "    for i = 1, n do parts[i] = doc(depth + 1) end\n"
            "    return '[ ' .. table.concat(parts, ' , ') .. ' ]'\n"
            "  end\n"
            "  for i = 1, n do\n"
            "    local name = math.random(3) == 1 and names[math.random(#names)] or ('k' .. math.random(40))\n"
            "    parts[i] = '\"' .. name .. '\" : ' .. doc(depth + 1)\n"
            "  end\n"
            "  return '{' .. table.concat(parts, ',') .. '}'\n"
            "end\n"
            "local function shape(depth)\n"
            "  local s = {}\n"
            "  for _ = 1, math.random(0, 6) do\n"
            "    local name = math.random(2) == 1 and ({'a', 'b', 'c', 'dd', 'ef'})[math.random(5)] or ('k' .. math.random(40))\n"
            "    s[name] = (depth > 3 or math.random(2) == 1) and true or shape(depth + 1)\n"
            "  end\n"
            "  return s\n"
            "end\n"
            "for _ = 1, 3000 do check(doc(0), shape(0)) end\n");
    /* the Lua API's errors, and shapes shared by many decodes (and collected) */
    run_lua(L,
            "local ok, err = pcall(json.shape, {[1] = true})\n"
            "assert(not ok and err:find('member names must be strings', 1, true), err)\n"
            "ok, err = pcall(json.shape, {a = false})\n"
            "assert(not ok and err:find(\"the value of 'a' must be true\", 1, true), err)\n"
            "ok, err = pcall(json.shape, {a = {b = 1}})\n"
            "assert(not ok and err:find(\"the value of 'b' must be true\", 1, true), err)\n"
            "local t = {}; t.a = t\n"
            "ok, err = pcall(json.shape, t)\n"
            "assert(not ok and err:find('nested more than', 1, true), err)\n"
            "ok, err = pcall(json.shape, 'a')\n"
            "assert(not ok)\n"
            "ok, err = pcall(json.decode, '{}', {a = true})\n"
            "assert(not ok and err:find('json.shape expected', 1, true), err)\n"
            "local s = json.shape{a = {b = true}}\n"
            "assert(getmetatable(s) == 'json.shape')\n"
            "assert(json.decode('{}', nil) and json.decode('{\"a\":{\"b\":1,\"c\":2}}', s).a.c == nil)\n"
            "ok, err = pcall(json.decode, '{\"a\":{\"b\":1,\"c\":[1,]}}', s)\n"
            "assert(not ok and err:find(\"unexpected character ']' at offset 19\", 1, true), err)\n"
            "for i = 1, 2000 do json.shape{x = {y = {z = true}}, ['k' .. i] = true} end\n"
            "collectgarbage()\n");
    /* a held shape outlives its Lua value */
    run_lua(L, "held = json.shape{a = true}");
    lua_getglobal(L, "held");
    lg_json_shape_t *sh = lg_json_shape_hold(lg_json_toshape(L, -1));
    assert_non_null(sh);
    /* another VM cannot use this one's table of member names: it interns them itself */
    lua_State *L2 = luaL_newstate();
    assert_int_equal(lg_json_decode_shaped(L2, "{\"b\":2,\"a\":1}", 13, 128, NULL, sh), LG_JSON_OK);
    lua_getfield(L2, -1, "a");
    assert_int_equal(lua_tointeger(L2, -1), 1);
    assert_int_equal(lua_gettop(L2), 2);
    lua_close(L2);
    lua_pushnil(L);
    lua_setglobal(L, "held");
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    assert_int_equal(lg_json_decode_shaped(L, "{\"a\":1,\"b\":2}", 13, 128, NULL, sh), LG_JSON_OK);
    lua_getfield(L, -1, "b");
    assert_true(lua_isnil(L, -1));
    lua_getfield(L, -2, "a");
    assert_int_equal(lua_tointeger(L, -1), 1);
    lg_json_shape_drop(sh);
    lua_settop(L, 0);
    assert_null(lg_json_toshape(L, 1));
    lua_newuserdata(L, sizeof(void *));
    assert_null(lg_json_toshape(L, -1));
    lua_settop(L, 0);
}

/* A dropped member is checked by the decoder's own rules: every reject case and corpus file, as
 * the value of a member a shape drops, fails (or passes) exactly as when it is built, with the same
 * offset and message. */
static void shaped_like_plain(lua_State *L, lg_json_shape_t *sh, const char *text, size_t len, int max_depth,
                              const char *what)
{
    size_t n = len + 16;
    char *w = malloc(n);
    assert_non_null(w);
    memcpy(w, "{\"x\":", 5);
    memcpy(w + 5, text, len);
    memcpy(w + 5 + len, ",\"k\":1}", 7);
    n = len + 12;
    lg_json_error_t e1, e2;
    memset(&e1, 0, sizeof e1);
    memset(&e2, 0, sizeof e2);
    lg_json_status_t plain = dec(L, w, n, max_depth, &e1);
    char *copy = malloc(n);
    memcpy(copy, w, n);
    lg_json_status_t shaped = lg_json_decode_shaped(L, copy, n, max_depth, &e2, sh);
    free(copy);
    if (plain != shaped || e1.offset != e2.offset || strcmp(e1.msg, e2.msg) != 0) {
        print_error("%s: plain %d (%s), shaped %d (%s)\n", what, plain, e1.msg, shaped, e2.msg);
        fail();
    }
    if (shaped == LG_JSON_OK) {
        lua_getfield(L, -1, "x");
        assert_true(lua_isnil(L, -1));
        lua_getfield(L, -2, "k");
        assert_int_equal(lua_tointeger(L, -1), 1);
        lua_pop(L, 4);
    }
    assert_int_equal(lua_gettop(L), 1);
    free(w);
}

static void test_shape_checks_dropped_values(void **state)
{
    lua_State *L = *state;
    run_lua(L, "drop = json.shape{k = true}");
    lua_getglobal(L, "drop");
    lg_json_shape_t *sh = lg_json_toshape(L, 1);
    for (size_t i = 0; i < sizeof reject_cases / sizeof reject_cases[0]; i++) {
        const reject_t *c = &reject_cases[i];
        shaped_like_plain(L, sh, c->text, c->len ? c->len : strlen(c->text), LG_JSON_DEFAULT_MAX_DEPTH, c->text);
    }
    for (int depth = 126; depth <= 130; depth++) {
        char *t = nested(depth, "[", "", "]");
        shaped_like_plain(L, sh, t, strlen(t), 128, "nested arrays");
        free(t);
        t = nested(depth, "{\"a\":", "1", "}");
        shaped_like_plain(L, sh, t, strlen(t), 128, "nested objects");
        free(t);
    }
    DIR *dir = opendir(CORPUS_DIR);
    assert_non_null(dir);
    struct dirent *de;
    int count = 0;
    while ((de = readdir(dir)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 6 || strcmp(de->d_name + l - 5, ".json") != 0)
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", CORPUS_DIR, de->d_name);
        size_t len = 0;
        char *text = read_file(path, &len);
        assert_non_null(text);
        shaped_like_plain(L, sh, text, len, LG_JSON_DEFAULT_MAX_DEPTH, de->d_name);
        free(text);
        count++;
    }
    closedir(dir);
    assert_true(count >= 100);
    lua_settop(L, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_structures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nulls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_integers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_doubles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_numbers_random, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unicode_escapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_depth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_containers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encode_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encode_tables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encode_strings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lua_module, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_member_spans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strings_special_at_each_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encode_special_at_each_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_object_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_object_duplicate_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_object_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corpus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shape_checks_dropped_values, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

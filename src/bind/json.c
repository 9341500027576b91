/**
 * json.c - the host's faithful JSON codec (see include/luagent/json.h, DESIGN §8).
 *
 * Decoder: one pass over the text, iterative (an explicit frame stack, no C recursion), values
 * pushed straight onto the Lua stack. The items of an open array or object (elements, name/value
 * pairs) wait on the Lua stack until it closes (up to DEC_K of them), so most tables are created once
 * with their exact size and never rehashed; a longer one is then created with a size hint and filled
 * as it goes. The waiting pairs of an object are stored from the top of the stack down, which needs
 * their names to differ: a name that may repeat one of them (same 16-bit key_hash) ends the wait
 * there, and from then on each member is stored as it comes (so the last of equal names wins).
 * Strings are scanned 8 bytes at a time (lg_json_plain8) and, without escapes, pushed straight from
 * the input; integers are parsed by hand; other numbers take an exact fast path (<= 2^53 mantissa
 * times an exact power of ten <= 22) or strtod in the "C" locale.
 *
 * Encoder: recursive over the Lua value (depth bounded by max_depth), writing into an lg_buf_t.
 * It never calls into Lua code (raw accesses, no metamethods), so it cannot raise except on memory
 * exhaustion inside the Lua API.
 *
 * Decisions where the contract leaves room (also see the tests):
 *   - numbers: "-0" decodes to -0.0 and -0.0 encodes as "-0" (so the sign survives a round trip).
 *     A number whose magnitude overflows a double ("1e400") is rejected (LG_JSON_ESYNTAX, "number
 *     out of range"); one that underflows ("1e-400") decodes to 0 (or the nearest subnormal).
 *     Integers of up to 19 digits are converted with one correctly-rounded uint64 -> double cast
 *     (the same value strtod would give), longer ones go through strtod.
 *   - duplicate object keys: the last one wins.
 *   - a BOM is not whitespace: input starting with EF BB BF is rejected.
 *   - a table carrying the array metatable encodes as t[1..#t] (a nil in a hole becomes null), any
 *     other keys it has are ignored. Keys 1..n of a plain table make an array; otherwise an object
 *     whose number keys are printed as numbers ("1", "1.5"); an infinite number key, or a boolean,
 *     table, ... key is LG_JSON_ETYPE. Key order is the table's traversal order.
 *   - invalid UTF-8 in an encoded string: each byte that does not start a valid sequence becomes
 *     U+FFFD (so output is always valid UTF-8).
 *   - encode error paths are JSON Pointers (RFC 6901) into the would-be output: array indices are
 *     0-based (Lua's t[1] is /0), '~' and '/' in keys are written ~0 and ~1; the top-level value is
 *     written "root". A top-level nil encodes as null.
 *   - depth: the first container is depth 1; max_depth 128 accepts 128 nested arrays and rejects
 *     129. Independently, the Lua stack of a C call holds at most LUAI_MAXCSTACK (8000) slots;
 *     nesting past what fits fails with LG_JSON_EDEPTH too: a level holds up to 2 * DEC_K of them
 *     (an object with 15 members waiting and the name of the 16th), so 128 levels fit, and
 *     some 250 levels of such wide objects and thousands of levels of narrow ones.
 *   - allocation failure of our own scratch memory aborts, like lg_buf (buf.h).
 *   - `luagent.json`: json.empty_array's metatable has __newindex raising and __metatable set to
 *     json.array_mt, so getmetatable(json.empty_array) == json.array_mt like any other array and
 *     setmetatable on it fails; rawset still bypasses this: agents must not modify it.
 *     json.array(t) refuses a table that has another metatable; json.array() returns a new empty
 *     array. json.is_array(v) says whether encode would write v as a JSON array (marked, or keys
 *     exactly 1..n with n >= 1).
 *   - the registry keys are addresses of statics (json.shape's metatable: luaL_newmetatable's
 *     "json.shape"), so one process can host many lua_States.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strtod_l, newlocale, uselocale */
#endif

#include "luagent/json.h"

#include <float.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

/* Registry keys (their addresses). */
static char k_array_mt;
static char k_empty_mt;
static char k_empty;

#define TWO53 9007199254740992.0

/* ------------------------------------------------------------------------------------------ */
/* Shared helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void)
{
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

static locale_t get_c_locale(void)
{
    pthread_once(&c_locale_once, c_locale_init);
    return c_locale;
}

static double strtod_c(const char *s)
{
    locale_t loc = get_c_locale();
    return loc ? strtod_l(s, NULL, loc) : strtod(s, NULL);
}

void lg_json_push_array_mt(lua_State *L)
{
    lua_pushlightuserdata(L, &k_array_mt);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_isnil(L, -1))
        return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "json.array");
    lua_setfield(L, -2, "__name");
    lua_pushlightuserdata(L, &k_array_mt);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

void lg_json_push_null(lua_State *L)
{
    lua_pushlightuserdata(L, NULL);
}

int lg_json_is_null(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoder                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Items an open array or object keeps on the Lua stack before its table is created. */
#define DEC_K 16
/* Hash size of an object created as it opens (only when the Lua stack is short of room). */
#define DEC_OBJ_HINT 4
#define DEC_LOCAL_FRAMES 32
#define DEC_SCRATCH 256

/* Byte classes inside a string: 0 plain ASCII, 1 '"', 2 '\\', 3 control, 4 >= 0x80. */
static const unsigned char dec_cls[256] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

/* A compiled json.shape (lg_json_shape_t): nodes[0] is the root; a node names the members to
 * keep, members[first .. first + n), each with the node for its value (or -1: all of it). */
typedef struct shape_member {
    uint32_t name, len; /* its bytes at names + name */
    int32_t child;
} shape_member_t;

typedef struct shape_node {
    uint32_t first, n;
} shape_node_t;

struct lg_json_shape {
    int refs;
    /* While its json.shape value lives: a registry reference to a table of the member names as
     * Lua strings (member i at i + 1), in the VM whose registry is at `names_vm`, so a decode in
     * that VM pushes a name without hashing and interning it again. LUA_NOREF otherwise. */
    int names_ref;
    const void *names_vm;
    shape_node_t *nodes;
    shape_member_t *members;
    char *names;
};

typedef struct dec_frame {
    int first;            /* stack index of the table (or of its placeholder) */
    int pick;             /* the shape node for its items (an array's elements), -1: all of them */
    int n;                /* elements / members so far */
    unsigned char obj;    /* object (1) or array (0) */
    unsigned char created; /* table exists at `first` (items go straight in) */
    uint64_t seen;        /* object not created yet: bit (key_hash & 63) of each waiting name */
    uint16_t kh[DEC_K];   /* and their key_hash */
} dec_frame_t;

typedef struct dec {
    lua_State *L;
    const unsigned char *start, *end;
    lg_json_status_t st;
    lg_json_error_t *err;
    lg_buf_t heap;     /* scratch when `local` is too small */
    const lg_json_shape_t *shape;
    const char *const *keys; /* lg_json_decode_spans: top-level members to locate */
    size_t nkeys;
    lg_json_span_t *spans;
    const char *str;   /* the bytes of the last string dec_string pushed (input or scratch) */
    size_t slen;
    char local[DEC_SCRATCH];
} dec_t;

static void dec_fail(dec_t *d, lg_json_status_t st, const unsigned char *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void dec_fail(dec_t *d, lg_json_status_t st, const unsigned char *at, const char *fmt, ...)
{
    if (d->st != LG_JSON_OK)
        return;
    d->st = st;
    if (d->err == NULL)
        return;
    size_t off = (size_t)(at - d->start);
    d->err->offset = off;
    char what[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(d->err->msg, sizeof d->err->msg, "%s at offset %zu", what, off);
}

static void dec_fail_char(dec_t *d, const unsigned char *p)
{
    if (p >= d->end)
        dec_fail(d, LG_JSON_ESYNTAX, p, "unexpected end of input");
    else if (*p > 0x20 && *p < 0x7f)
        dec_fail(d, LG_JSON_ESYNTAX, p, "unexpected character '%c'", *p);
    else
        dec_fail(d, LG_JSON_ESYNTAX, p, "unexpected byte 0x%02x", *p);
}

static char *dec_scratch(dec_t *d, size_t n)
{
    if (n <= sizeof d->local)
        return d->local;
    d->heap.len = 0; /* callers write from the start */
    return lg_buf_reserve(&d->heap, n);
}

static inline const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static inline int hexval(unsigned c)
{
    if (c - '0' < 10)
        return (int)(c - '0');
    c |= 0x20;
    if (c - 'a' < 6)
        return (int)(c - 'a' + 10);
    return -1;
}

static inline long hex4(const unsigned char *q)
{
    int a = hexval(q[0]), b = hexval(q[1]), c = hexval(q[2]), e = hexval(q[3]);
    if ((a | b | c | e) < 0)
        return -1;
    return (long)((a << 12) | (b << 8) | (c << 4) | e);
}

static inline char *utf8_put(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* Plain bytes from q, 8 at a time, then one by one for the last few: where the first other one is. */
static inline const unsigned char *dec_plain(const unsigned char *q, const unsigned char *end)
{
    for (;;) {
        if (end - q < 8) {
            while (q < end && dec_cls[*q] == 0)
                q++;
            return q;
        }
        unsigned k = lg_json_plain8(q);
        q += k;
        if (k < 8)
            return q;
    }
}

/* dec_string past its plain ASCII start: q is at the first other byte (or the end). */
static int dec_string_rest(dec_t *d, const unsigned char **pp, const unsigned char *q, int push)
{
    const unsigned char *open = *pp, *s = open + 1, *end = d->end;
    for (;;) {
        if (q < end && dec_cls[*q] == 0) /* (not straight after one: UTF-8 text runs on) */
            q = dec_plain(q, end);
        if (q == end) {
            dec_fail(d, LG_JSON_ESYNTAX, open, "unterminated string");
            return 0;
        }
        unsigned c = *q;
        if (c == '"') {
            d->str = (const char *)s;
            d->slen = (size_t)(q - s);
            if (push)
                lua_pushlstring(d->L, d->str, d->slen);
            *pp = q + 1;
            return 1;
        }
        if (c == '\\')
            break;
        if (c < 0x20) {
            dec_fail(d, LG_JSON_ESYNTAX, q, "unescaped control character 0x%02x in string", c);
            return 0;
        }
        size_t n = lg_utf8_len(q, end);
        if (n == 0) {
            dec_fail(d, LG_JSON_EUTF8, q, "invalid UTF-8 byte 0x%02x in string", c);
            return 0;
        }
        q += n;
    }

    /* Escapes: find the closing quote, then unescape into scratch (never longer than the text). */
    const unsigned char *r = q;
    for (;;) {
        uint64_t v;
        while (end - r >= 8) { /* 8 bytes at a time while none is '"' or '\\' */
            const uint64_t ones = 0x0101010101010101ULL;
            memcpy(&v, r, 8);
            uint64_t x = v ^ (ones * '"'), y = v ^ (ones * '\\');
            if ((((x - ones) & ~x) | ((y - ones) & ~y)) & (ones << 7))
                break;
            r += 8;
        }
        while (r < end && *r != '"' && *r != '\\')
            r++;
        if (r == end || *r == '"')
            break;
        if (++r == end) /* past the backslash and the byte it escapes */
            break;
        r++;
    }
    if (r >= end) {
        dec_fail(d, LG_JSON_ESYNTAX, open, "unterminated string");
        return 0;
    }
    char *out = dec_scratch(d, (size_t)(r - s)), *o = out;
    memcpy(o, s, (size_t)(q - s));
    o += q - s;
    while (q < r) {
        unsigned c = *q;
        if (dec_cls[c] == 0) {
            if (r - q >= 8) { /* 8 at a time: o - out <= q - s, so o + 8 <= out + (r - s) */
                unsigned k = lg_json_plain8(q);
                memcpy(o, q, 8);
                o += k;
                q += k;
            } else {
                *o++ = (char)c;
                q++;
            }
            continue;
        }
        if (c == '\\') {
            const unsigned char *esc = q;
            q += 2;
            switch (esc[1]) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case '/': *o++ = '/'; break;
            case 'b': *o++ = '\b'; break;
            case 'f': *o++ = '\f'; break;
            case 'n': *o++ = '\n'; break;
            case 'r': *o++ = '\r'; break;
            case 't': *o++ = '\t'; break;
            case 'u': {
                long cp = r - q >= 4 ? hex4(q) : -1;
                if (cp < 0) {
                    dec_fail(d, LG_JSON_ESYNTAX, esc, "invalid \\u escape in string");
                    return 0;
                }
                q += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    long lo = -1;
                    if (r - q >= 6 && q[0] == '\\' && q[1] == 'u') {
                        lo = hex4(q + 2);
                        if (lo < 0) {
                            dec_fail(d, LG_JSON_ESYNTAX, q, "invalid \\u escape in string");
                            return 0;
                        }
                    }
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        dec_fail(d, LG_JSON_EUTF8, esc, "lone surrogate \\u%04lX in string", (unsigned long)cp);
                        return 0;
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    q += 6;
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    dec_fail(d, LG_JSON_EUTF8, esc, "lone surrogate \\u%04lX in string", (unsigned long)cp);
                    return 0;
                }
                o = utf8_put(o, (unsigned long)cp);
                break;
            }
            default:
                if (esc[1] > 0x20 && esc[1] < 0x7f)
                    dec_fail(d, LG_JSON_ESYNTAX, esc, "invalid escape '\\%c' in string", esc[1]);
                else
                    dec_fail(d, LG_JSON_ESYNTAX, esc, "invalid escape in string");
                return 0;
            }
            continue;
        }
        if (c < 0x20) {
            dec_fail(d, LG_JSON_ESYNTAX, q, "unescaped control character 0x%02x in string", c);
            return 0;
        }
        size_t n = lg_utf8_len(q, r);
        if (n == 0) {
            dec_fail(d, LG_JSON_EUTF8, q, "invalid UTF-8 byte 0x%02x in string", c);
            return 0;
        }
        memcpy(o, q, n);
        o += n;
        q += n;
    }
    d->str = out;
    d->slen = (size_t)(o - out);
    if (push)
        lua_pushlstring(d->L, out, d->slen);
    *pp = r + 1;
    return 1;
}

/* *pp points at the opening quote. Moves *pp past the closing quote, leaves the string's bytes in
 * d->str, d->slen and pushes it if `push`. The common case (plain ASCII up to the quote) inline,
 * the rest in dec_string_rest. */
static inline int dec_string(dec_t *d, const unsigned char **pp, int push)
{
    const unsigned char *s = *pp + 1, *q = dec_plain(s, d->end);
    if (q < d->end && *q == '"') {
        d->str = (const char *)s;
        d->slen = (size_t)(q - s);
        if (push)
            lua_pushlstring(d->L, d->str, d->slen);
        *pp = q + 1;
        return 1;
    }
    return dec_string_rest(d, pp, q, push);
}

/* The length of the literal true, false or null at p, 0 if there is none. */
static inline int dec_literal(const unsigned char *p, const unsigned char *end)
{
    if (end - p >= 4 && (memcmp(p, "true", 4) == 0 || memcmp(p, "null", 4) == 0))
        return 4;
    if (end - p >= 5 && memcmp(p, "false", 5) == 0)
        return 5;
    return 0;
}

static const double pow10_exact[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

#define IS_DIGIT(c) ((unsigned)(c) - '0' < 10)

/* *pp points at '-' or a digit. Moves *pp past the number and pushes it if `push`. */
static int dec_number(dec_t *d, const unsigned char **pp, int push)
{
    const unsigned char *start = *pp, *p = start, *end = d->end;
    uint64_t mant = 0;
    int neg = 0, many = 0, is_int = 1, e10 = 0;

    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (p == end || !IS_DIGIT(*p))
        goto bad;
    if (*p == '0') {
        p++;
        if (p < end && IS_DIGIT(*p)) {
            dec_fail(d, LG_JSON_ESYNTAX, p - 1, "invalid number (leading zero)");
            return 0;
        }
    } else {
        do {
            if (mant < 1000000000000000000ULL)
                mant = mant * 10 + (unsigned)(*p - '0');
            else
                many = 1;
            p++;
        } while (p < end && IS_DIGIT(*p));
    }
    if (p < end && *p == '.') {
        is_int = 0;
        p++;
        if (p == end || !IS_DIGIT(*p))
            goto bad;
        do {
            if (mant < 1000000000000000000ULL) {
                mant = mant * 10 + (unsigned)(*p - '0');
                if (e10 > -1000000) /* only decides the fast path: anything past -22 goes to strtod */
                    e10--;
            } else {
                many = 1;
            }
            p++;
        } while (p < end && IS_DIGIT(*p));
    }
    if (p < end && (*p | 0x20) == 'e') {
        is_int = 0;
        p++;
        int eneg = 0, ev = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        if (p == end || !IS_DIGIT(*p))
            goto bad;
        do {
            if (ev < 100000)
                ev = ev * 10 + (*p - '0');
            p++;
        } while (p < end && IS_DIGIT(*p));
        e10 += eneg ? -ev : ev;
    }

    double v;
    if (!many && is_int) {
        v = (double)mant; /* one correctly rounded conversion, exact up to 2^53 */
        if (neg)
            v = -v;
    }
#if FLT_EVAL_METHOD == 0
    else if (!many && mant <= (1ULL << 53) && e10 >= -22 && e10 <= 22) {
        /* Both operands exact, one IEEE operation: correctly rounded (Clinger's fast path). */
        v = e10 < 0 ? (double)mant / pow10_exact[-e10] : (double)mant * pow10_exact[e10];
        if (neg)
            v = -v;
    }
#endif
    else {
        size_t n = (size_t)(p - start);
        char *buf = dec_scratch(d, n + 1);
        memcpy(buf, start, n);
        buf[n] = '\0';
        v = strtod_c(buf);
    }
    if (isinf(v)) {
        dec_fail(d, LG_JSON_ESYNTAX, start, "number out of range");
        return 0;
    }
    if (push)
        lua_pushnumber(d->L, v);
    *pp = p;
    return 1;

bad:
    if (p < end)
        dec_fail(d, LG_JSON_ESYNTAX, p, "invalid number (unexpected '%c')", *p > 0x20 && *p < 0x7f ? *p : '?');
    else
        dec_fail(d, LG_JSON_ESYNTAX, p, "invalid number (unexpected end of input)");
    return 0;
}

/* Levels a skipped value may open (far more than the Lua stack lets the decoder build). */
#define DEC_SKIP_LEVELS 4096

/* Check the value at *pp (past whitespace) by the decoder's rules without building it (a member a
 * shape leaves out), `depth` levels being open already. Moves *pp past it. */
static int dec_skip(dec_t *d, const unsigned char **pp, int depth, int max_depth)
{
    const unsigned char *p = *pp, *end = d->end;
    uint64_t objs[DEC_SKIP_LEVELS / 64]; /* bit i: level i is an object */
    int n = 0, obj, k;

value:
    p = skip_ws(p, end);
    if (p == end) {
        dec_fail_char(d, p);
        return 0;
    }
    switch (*p) {
    case '{':
    case '[':
        if (depth + n >= max_depth || n == DEC_SKIP_LEVELS) {
            dec_fail(d, LG_JSON_EDEPTH, p, "nesting too deep (max %d)", max_depth);
            return 0;
        }
        obj = *p == '{';
        objs[n >> 6] = (objs[n >> 6] & ~((uint64_t)1 << (n & 63))) | (uint64_t)obj << (n & 63);
        n++;
        p = skip_ws(p + 1, end);
        if (p < end && *p == (obj ? '}' : ']')) {
            p++;
            n--;
            break;
        }
        if (obj)
            goto name;
        goto value;
    case '"':
        if (!dec_string(d, &p, 0))
            return 0;
        break;
    case 't':
    case 'f':
    case 'n':
        if ((k = dec_literal(p, end)) == 0) {
            dec_fail(d, LG_JSON_ESYNTAX, p, "invalid literal");
            return 0;
        }
        p += k;
        break;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        if (!dec_number(d, &p, 0))
            return 0;
        break;
    default:
        dec_fail_char(d, p);
        return 0;
    }
    while (n > 0) { /* a value ended inside level n - 1 */
        obj = (int)(objs[(n - 1) >> 6] >> ((n - 1) & 63) & 1);
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            if (obj)
                goto name;
            goto value;
        }
        if (p < end && *p == (obj ? '}' : ']')) {
            p++;
            n--;
            continue;
        }
        dec_fail_char(d, p);
        return 0;
    }
    *pp = p;
    return 1;

name: /* p is past whitespace, a member name is due */
    if (p == end || *p != '"') {
        dec_fail_char(d, p);
        return 0;
    }
    if (!dec_string(d, &p, 0))
        return 0;
    p = skip_ws(p, end);
    if (p == end || *p != ':') {
        dec_fail_char(d, p);
        return 0;
    }
    p++;
    goto value;
}

/* The member of shape node `node` named s[0..n), or NULL. */
static const shape_member_t *shape_find(const lg_json_shape_t *sh, int node, const char *s, size_t n)
{
    const shape_node_t *nd = &sh->nodes[node];
    for (uint32_t i = nd->first; i < nd->first + nd->n; i++) {
        const shape_member_t *m = &sh->members[i];
        if (m->len == n && memcmp(sh->names + m->name, s, n) == 0)
            return m;
    }
    return NULL;
}

/* 16 bits of a member name (equal names, equal hashes): its length, first and last 8 bytes. */
static inline unsigned key_hash(const char *k, size_t n)
{
    uint64_t a, b;
    if (n >= 8) {
        memcpy(&a, k, 8);
        memcpy(&b, k + n - 8, 8);
    } else if (n >= 4) {
        uint32_t x, y;
        memcpy(&x, k, 4);
        memcpy(&y, k + n - 4, 4);
        a = x;
        b = y;
    } else {
        a = n ? (unsigned char)k[0] | (unsigned char)k[n >> 1] << 8 | (unsigned char)k[n - 1] << 16 : 0;
        b = 0;
    }
    uint64_t h = (a ^ (b << 29 | b >> 35)) + n;
    return (unsigned)((h * 0x9E3779B97F4A7C15ULL) >> 48);
}

/* Create the table of frame f at f->first and move the items waiting above it into it: elements
 * (the last on top), or key/value pairs, whose names are all different (see `key:`), so storing
 * them from the top down gives the same table as in order. */
static void dec_flush(lua_State *L, dec_frame_t *f, int hint)
{
    int first = f->first;
    if (f->obj) {
        lua_createtable(L, 0, hint);
        lua_replace(L, first);
        for (int i = f->n; i >= 1; i--)
            lua_rawset(L, first); /* pops the top pair */
    } else {
        lua_createtable(L, hint, 0);
        lua_replace(L, first);
        for (int i = f->n; i >= 1; i--)
            lua_rawseti(L, first, i); /* pops the top, which is element i */
    }
    f->created = 1;
}

static lg_json_status_t decode(lua_State *L, const char *s, size_t len, int max_depth, lg_json_error_t *err,
                               const char *const *keys, size_t nkeys, lg_json_span_t *spans,
                               const lg_json_shape_t *shape)
{
    dec_t d;
    d.L = L;
    d.shape = shape;
    d.keys = keys;
    d.nkeys = nkeys;
    d.spans = spans;
    for (size_t i = 0; i < nkeys; i++)
        spans[i].off = spans[i].len = 0;
    int span_key = -1; /* the top-level member being parsed is keys[span_key] */
    const unsigned char *span_start = NULL;
    d.start = (const unsigned char *)s;
    d.end = d.start + len;
    d.st = LG_JSON_OK;
    d.err = err;
    d.heap = (lg_buf_t){0};
    if (err) {
        err->offset = 0;
        err->msg[0] = '\0';
    }
    if (s == NULL)
        d.start = d.end = (const unsigned char *)"";

    dec_frame_t local_frames[DEC_LOCAL_FRAMES], *frames = local_frames, *f;
    int fcap = DEC_LOCAL_FRAMES, depth = 0, have_mt = 0;
    int vpick = shape ? 0 : -1; /* the shape node for the value about to be parsed */
    int base = lua_gettop(L), mtslot = base + 1, names = 0;
    const unsigned char *p = d.start, *end = d.end;

    if (!lua_checkstack(L, 8)) {
        dec_fail(&d, LG_JSON_EDEPTH, p, "Lua stack exhausted");
        return d.st;
    }
    lua_pushnil(L); /* slot for the array metatable, fetched on first use */
    if (shape != NULL && shape->names_ref != LUA_NOREF && lua_topointer(L, LUA_REGISTRYINDEX) == shape->names_vm) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, shape->names_ref);
        names = lua_gettop(L);
    }

value:
    p = skip_ws(p, end);
    if (p == end) {
        dec_fail_char(&d, p);
        goto fail;
    }
    switch (*p) {
    case '{':
    case '[':
        if (depth >= max_depth) {
            dec_fail(&d, LG_JSON_EDEPTH, p, "nesting too deep (max %d)", max_depth);
            goto fail;
        }
        if (depth == fcap) {
            dec_frame_t *nf = malloc(sizeof *nf * (size_t)fcap * 2);
            if (nf == NULL)
                abort();
            memcpy(nf, frames, sizeof *nf * (size_t)fcap);
            if (frames != local_frames)
                free(frames);
            frames = nf;
            fcap *= 2;
        }
        f = &frames[depth++];
        f->obj = *p == '{';
        f->pick = vpick;
        f->n = 0;
        f->seen = 0;
        f->first = lua_gettop(L) + 1;
        if (lua_checkstack(L, (f->obj ? 2 * DEC_K : DEC_K) + 8)) {
            f->created = 0;
            lua_pushnil(L); /* placeholder for the table */
        } else if (lua_checkstack(L, 8)) {
            f->created = 1;
            lua_createtable(L, 0, f->obj ? DEC_OBJ_HINT : 0);
        } else {
            dec_fail(&d, LG_JSON_EDEPTH, p, "nesting too deep for the Lua stack");
            goto fail;
        }
        p = skip_ws(p + 1, end);
        if (p < end && *p == (f->obj ? '}' : ']')) {
            p++;
            goto close;
        }
        if (f->obj)
            goto key;
        goto value; /* vpick is already the elements' */
    case '"':
        if (!dec_string(&d, &p, 1))
            goto fail;
        break;
    case 't':
    case 'f':
    case 'n': {
        int k = dec_literal(p, end);
        if (k == 0) {
            dec_fail(&d, LG_JSON_ESYNTAX, p, "invalid literal");
            goto fail;
        }
        if (*p == 'n')
            lua_pushlightuserdata(L, NULL);
        else
            lua_pushboolean(L, *p == 't');
        p += k;
        break;
    }
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        if (!dec_number(&d, &p, 1))
            goto fail;
        break;
    default:
        dec_fail_char(&d, p);
        goto fail;
    }

done: /* a complete value is on top of the stack */
    if (depth == 0)
        goto finish;
    if (span_key >= 0 && depth == 1) {
        d.spans[span_key].off = (size_t)(span_start - d.start);
        d.spans[span_key].len = (size_t)(p - span_start);
        span_key = -1;
    }
    f = &frames[depth - 1];
    f->n++;
    if (f->created) {
        if (f->obj)
            lua_rawset(L, f->first);
        else
            lua_rawseti(L, f->first, f->n);
    }
next: /* after an item of the top frame f */
    p = skip_ws(p, end);
    if (p < end && *p == ',') {
        p++;
        if (!f->created && f->n >= DEC_K)
            dec_flush(L, f, 2 * DEC_K); /* a long one: at least DEC_K + 1 items */
        if (!f->obj) {
            vpick = f->pick;
            goto value;
        }
        p = skip_ws(p, end);
        goto key;
    }
    if (p < end && *p == (f->obj ? '}' : ']')) {
        p++;
        goto close;
    }
    dec_fail_char(&d, p);
    goto fail;

key: /* p is past whitespace, a member name is due */
    if (p == end || *p != '"') {
        dec_fail_char(&d, p);
        goto fail;
    }
    if (depth == 1 && d.nkeys > 0) { /* a member to locate? (its name as written, no escapes) */
        for (size_t i = 0; i < d.nkeys; i++) {
            size_t kl = strlen(d.keys[i]);
            if ((size_t)(end - p) > kl + 1 && memcmp(p + 1, d.keys[i], kl) == 0 && p[kl + 1] == '"')
                span_key = (int)i;
        }
    }
    if (f->pick < 0) {
        if (!dec_string(&d, &p, 1))
            goto fail;
    } else { /* a shaped object: only the members its node names are built */
        if (!dec_string(&d, &p, 0))
            goto fail;
        const shape_member_t *m = shape_find(d.shape, f->pick, d.str, d.slen);
        if (m == NULL) {
            p = skip_ws(p, end);
            if (p == end || *p != ':') {
                dec_fail_char(&d, p);
                goto fail;
            }
            p++;
            if (!dec_skip(&d, &p, depth, max_depth))
                goto fail;
            span_key = -1;
            goto next;
        }
        if (names)
            lua_rawgeti(L, names, (int)(m - d.shape->members) + 1);
        else
            lua_pushlstring(L, d.str, d.slen);
        vpick = m->child;
    }
    if (!f->created) { /* f is the object's frame */
        /* Members wait on the stack only while their names differ, so that the last of equal names
         * wins as when each is stored in turn: on a name whose hash is already there (a repeat, or
         * rarely another name), the table is created with the waiting ones and this one follows. */
        unsigned h = key_hash(d.str, d.slen);
        uint64_t bit = (uint64_t)1 << (h & 63);
        int i = f->n;
        if (f->seen & bit) {
            i = 0;
            while (i < f->n && f->kh[i] != h)
                i++;
        }
        f->seen |= bit;
        if (i < f->n) {
            lua_createtable(L, 0, f->n);
            lua_replace(L, f->first);
            lua_insert(L, f->first + 1); /* the name goes below the waiting pairs */
            for (i = 0; i < f->n; i++)
                lua_rawset(L, f->first);
            f->created = 1;
        } else {
            f->kh[i] = (uint16_t)h;
        }
    }
    p = skip_ws(p, end);
    if (p == end || *p != ':') {
        dec_fail_char(&d, p);
        goto fail;
    }
    p++;
    if (span_key >= 0 && depth == 1)
        span_start = p = skip_ws(p, end);
    goto value;

close: /* the container of the top frame just ended */
    f = &frames[depth - 1];
    if (!f->created)
        dec_flush(L, f, f->n);
    if (!f->obj) {
        if (!have_mt) {
            lg_json_push_array_mt(L);
            lua_replace(L, mtslot);
            have_mt = 1;
        }
        lua_pushvalue(L, mtslot);
        lua_setmetatable(L, f->first);
    }
    depth--;
    goto done;

finish:
    p = skip_ws(p, end);
    if (p != end) {
        dec_fail_char(&d, p);
        goto fail;
    }
    lua_replace(L, mtslot);
    lua_settop(L, mtslot); /* drops the names */
    if (frames != local_frames)
        free(frames);
    lg_buf_free(&d.heap);
    return LG_JSON_OK;

fail:
    lua_settop(L, base);
    if (frames != local_frames)
        free(frames);
    lg_buf_free(&d.heap);
    return d.st;
}

lg_json_status_t lg_json_decode(lua_State *L, const char *s, size_t len, int max_depth, lg_json_error_t *err)
{
    return decode(L, s, len, max_depth, err, NULL, 0, NULL, NULL);
}

lg_json_status_t lg_json_decode_spans(lua_State *L, const char *s, size_t len, int max_depth, lg_json_error_t *err,
                                      const char *const *keys, size_t nkeys, lg_json_span_t *spans)
{
    return decode(L, s, len, max_depth, err, keys, nkeys, spans, NULL);
}

lg_json_status_t lg_json_decode_shaped(lua_State *L, const char *s, size_t len, int max_depth, lg_json_error_t *err,
                                       const lg_json_shape_t *shape)
{
    return decode(L, s, len, max_depth, err, NULL, 0, NULL, shape);
}

/* ------------------------------------------------------------------------------------------ */
/* Compaction (for text the decoder accepted: no validation here)                             */
/* ------------------------------------------------------------------------------------------ */

static inline int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* p at a '"': the position after the closing quote (one not preceded by an odd run of '\\') */
static const char *skip_string(const char *p, const char *end)
{
    const char *start = ++p, *q;
    while ((q = memchr(p, '"', (size_t)(end - p))) != NULL) {
        size_t bs = 0;
        while (q - bs > start && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if (bs % 2 == 0)
            return q + 1;
        p = q + 1;
    }
    return end;
}

void lg_json_compact(lg_buf_t *out, const char *s, size_t len)
{
    if (memchr(s, '\n', len) == NULL && memchr(s, '\r', len) == NULL) { /* already one line */
        lg_buf_append(out, s, len);
        return;
    }
    char *o = lg_buf_reserve(out, len);
    const char *p = s, *end = s + len;
    while (p < end) {
        if (*p == '"') {
            const char *q = skip_string(p, end);
            memcpy(o, p, (size_t)(q - p));
            o += q - p;
            p = q;
        } else if (is_ws((unsigned char)*p)) {
            p++;
        } else {
            *o++ = *p++;
        }
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
}

/* ------------------------------------------------------------------------------------------ */
/* Encoder                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Byte classes when writing a string: 0 as is, 1 escape, 2 >= 0x80 (validate). */

#define ENC_PATH 512

typedef struct enc {
    lua_State *L;
    lg_buf_t *b;
    int max_depth;
    int mtslot;    /* array mt at mtslot, empty_array's mt at mtslot + 1 (nil until loaded) */
    int mt_loaded;
    lg_json_status_t st;
    char what[96];
    size_t ppos;   /* the path is path[ppos .. ENC_PATH), built innermost first */
    int ptrunc;
    char path[ENC_PATH];
} enc_t;

static inline char *enc_room(lg_buf_t *b, size_t n)
{
    if (b->len + n + 1 > b->cap)
        lg_buf_reserve(b, n);
    return b->data + b->len;
}

static inline void enc_put(lg_buf_t *b, const char *s, size_t n)
{
    char *o = enc_room(b, n);
    memcpy(o, s, n);
    b->len += n;
}

static inline void enc_putc(lg_buf_t *b, char c)
{
    char *o = enc_room(b, 1);
    *o = c;
    b->len++;
}

/* lg_buf_json_str, with a short string of plain ASCII (most names and many values) written here
 * without the call; any other goes to it from the start. The room asked for (n + 10) is never more
 * than lg_buf_json_str reserves itself. */
static inline __attribute__((always_inline)) void enc_string(lg_buf_t *b, const char *str, size_t n)
{
    if (n <= 64) {
        const unsigned char *s = (const unsigned char *)str;
        char *o = enc_room(b, n + 10) + 1;
        uint64_t v;
        if (n >= 8) { /* 8 bytes at a time, the last 8 overlapping the ones before (all plain) */
            for (size_t i = 0; i + 8 < n; i += 8) {
                memcpy(&v, s + i, 8);
                if (lg_json_special8(v))
                    goto other;
                memcpy(o + i, &v, 8);
            }
            memcpy(&v, s + n - 8, 8);
            if (lg_json_special8(v))
                goto other;
            memcpy(o + n - 8, &v, 8);
        } else if (n >= 4) { /* two overlapping halves */
            uint32_t lo, hi;
            memcpy(&lo, s, 4);
            memcpy(&hi, s + n - 4, 4);
            if (lg_json_special8(lo | (uint64_t)hi << 32))
                goto other;
            memcpy(o, &lo, 4);
            memcpy(o + n - 4, &hi, 4);
        } else {
            for (size_t i = 0; i < n; i++) {
                if (dec_cls[s[i]] != 0)
                    goto other;
                o[i] = (char)s[i];
            }
        }
        o[-1] = '"';
        o[n] = '"';
        b->len += n + 2;
        return;
    }
other:
    lg_buf_json_str(b, str, n);
}

static int enc_fail(enc_t *e, lg_json_status_t st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int enc_fail(enc_t *e, lg_json_status_t st, const char *fmt, ...)
{
    e->st = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->what, sizeof e->what, fmt, ap);
    va_end(ap);
    return 0;
}

/* Prepend "/" + seg (escaped per RFC 6901) to the error path. */
static void path_prepend(enc_t *e, const char *seg, size_t n)
{
    char tmp[160];
    size_t t = 0;
    tmp[t++] = '/';
    for (size_t i = 0; i < n && t + 2 < sizeof tmp; i++) {
        if (seg[i] == '~') {
            tmp[t++] = '~';
            tmp[t++] = '0';
        } else if (seg[i] == '/') {
            tmp[t++] = '~';
            tmp[t++] = '1';
        } else {
            tmp[t++] = seg[i];
        }
    }
    if (e->ptrunc || t > e->ppos) {
        e->ptrunc = 1;
        return;
    }
    e->ppos -= t;
    memcpy(e->path + e->ppos, tmp, t);
}

/* Digits of |v| (v integral, |v| <= 2^53) written backwards ending at `end`. */
static inline char *u64_digits(char *end, uint64_t v)
{
    static const char d2[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                             "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                             "8081828384858687888990919293949596979899";
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        end -= 2;
        memcpy(end, d2 + 2 * r, 2);
    }
    if (v >= 10) {
        end -= 2;
        memcpy(end, d2 + 2 * v, 2);
    } else {
        *--end = (char)('0' + v);
    }
    return end;
}

/* Text of a finite double into buf (>= 32 bytes); returns its length. */
static size_t fmt_number(char *buf, double x)
{
    if (fabs(x) <= TWO53) {
        int64_t i = (int64_t)x;
        if ((double)i == x) {
            char tmp[24], *e = tmp + sizeof tmp, *s = u64_digits(e, (uint64_t)(i < 0 ? -i : i));
            if (x < 0 || (x == 0 && signbit(x)))
                *--s = '-';
            size_t n = (size_t)(e - s);
            memcpy(buf, s, n);
            return n;
        }
    }
    locale_t loc = get_c_locale(), old = (locale_t)0;
    if (loc)
        old = uselocale(loc);
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(buf, 32, "%.*g", prec, x);
        if (prec == 17 || strtod(buf, NULL) == x)
            break;
    }
    if (loc)
        uselocale(old);
    return (size_t)n;
}

static int enc_number(enc_t *e, double x)
{
    if (!isfinite(x))
        return enc_fail(e, LG_JSON_ETYPE, "cannot encode %s", isnan(x) ? "NaN" : x > 0 ? "inf" : "-inf");
    char *o = enc_room(e->b, 32);
    e->b->len += fmt_number(o, x);
    return 1;
}


static int enc_value(enc_t *e, int idx, int depth);

static int enc_array(enc_t *e, int idx, int depth, size_t n)
{
    lua_State *L = e->L;
    int vidx = lua_gettop(L) + 1;
    enc_putc(e->b, '[');
    for (size_t i = 1; i <= n; i++) {
        if (i > 1)
            enc_putc(e->b, ',');
        lua_rawgeti(L, idx, (int)i);
        if (!enc_value(e, vidx, depth)) {
            char seg[24], *se = seg + sizeof seg, *ss = u64_digits(se, i - 1);
            path_prepend(e, ss, (size_t)(se - ss));
            return 0;
        }
        lua_pop(L, 1);
    }
    enc_putc(e->b, ']');
    return 1;
}

/* n if the table's keys are exactly 1..n (n >= 1), else 0. */
static size_t plain_array_len(lua_State *L, int idx)
{
    size_t n = 0;
    double max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        double k;
        if (lua_type(L, -1) != LUA_TNUMBER || !((k = lua_tonumber(L, -1)) >= 1 && k <= TWO53) ||
            (double)(int64_t)k != k) {
            lua_pop(L, 1);
            return 0;
        }
        if (k > max)
            max = k;
        n++;
    }
    return (double)n == max ? n : 0;
}

/* Is the table at idx marked as an array (array_mt or empty_array's mt)? */
static int enc_marked(enc_t *e, int idx)
{
    lua_State *L = e->L;
    if (!lua_getmetatable(L, idx))
        return 0;
    if (!e->mt_loaded) {
        lua_pushlightuserdata(L, &k_array_mt);
        lua_rawget(L, LUA_REGISTRYINDEX);
        lua_replace(L, e->mtslot);
        lua_pushlightuserdata(L, &k_empty_mt);
        lua_rawget(L, LUA_REGISTRYINDEX);
        lua_replace(L, e->mtslot + 1);
        e->mt_loaded = 1;
    }
    int r = lua_rawequal(L, -1, e->mtslot) || lua_rawequal(L, -1, e->mtslot + 1);
    lua_pop(L, 1);
    return r;
}

static int enc_table(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    if (depth > e->max_depth)
        return enc_fail(e, LG_JSON_EDEPTH, "nesting too deep (or a cycle): max %d", e->max_depth);
    if (!lua_checkstack(L, 6))
        return enc_fail(e, LG_JSON_EDEPTH, "nesting too deep (or a cycle) for the Lua stack");
    if (enc_marked(e, idx))
        return enc_array(e, idx, depth, lua_objlen(L, idx));

    lua_pushnil(L);
    if (!lua_next(L, idx)) {
        enc_put(e->b, "{}", 2);
        return 1;
    }
    if (lua_type(L, -2) == LUA_TNUMBER) {
        lua_pop(L, 2);
        size_t n = plain_array_len(L, idx);
        if (n)
            return enc_array(e, idx, depth, n);
        lua_pushnil(L);
        lua_next(L, idx);
    }

    /* An object; the first key and value are on the stack. */
    int vidx = lua_gettop(L);
    enc_putc(e->b, '{');
    int first = 1;
    do {
        if (!first)
            enc_putc(e->b, ',');
        first = 0;
        size_t kn;
        const char *ks;
        char kbuf[32];
        int kt = lua_type(L, -2);
        if (kt == LUA_TSTRING) {
            ks = lua_tolstring(L, -2, &kn);
            enc_string(e->b, ks, kn);
        } else if (kt == LUA_TNUMBER) {
            double k = lua_tonumber(L, -2);
            if (!isfinite(k))
                return enc_fail(e, LG_JSON_ETYPE, "cannot encode key %s", k > 0 ? "inf" : "-inf");
            kn = fmt_number(kbuf, k);
            ks = kbuf;
            char *o = enc_room(e->b, kn + 2);
            o[0] = '"';
            memcpy(o + 1, kbuf, kn);
            o[kn + 1] = '"';
            e->b->len += kn + 2;
        } else {
            return enc_fail(e, LG_JSON_ETYPE, "cannot encode a key of type %s", lua_typename(L, kt));
        }
        enc_putc(e->b, ':');
        if (!enc_value(e, vidx, depth)) {
            path_prepend(e, ks, kn);
            return 0;
        }
        lua_pop(L, 1);
    } while (lua_next(L, idx));
    enc_putc(e->b, '}');
    return 1;
}

static int enc_value(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    int t = lua_type(L, idx);
    switch (t) {
    case LUA_TNIL:
        enc_put(e->b, "null", 4);
        return 1;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            enc_put(e->b, "true", 4);
        else
            enc_put(e->b, "false", 5);
        return 1;
    case LUA_TNUMBER:
        return enc_number(e, lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        enc_string(e->b, s, n);
        return 1;
    }
    case LUA_TTABLE:
        return enc_table(e, idx, depth + 1);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            enc_put(e->b, "null", 4);
            return 1;
        }
        return enc_fail(e, LG_JSON_ETYPE, "cannot encode lightuserdata (only json.null)");
    default:
        return enc_fail(e, LG_JSON_ETYPE, "cannot encode %s", lua_typename(L, t));
    }
}

lg_json_status_t lg_json_encode(lua_State *L, int idx, lg_buf_t *out, int max_depth, lg_json_error_t *err)
{
    int top = lua_gettop(L);
    if (idx < 0 && idx > LUA_REGISTRYINDEX)
        idx = top + idx + 1;
    if (err) {
        err->offset = 0;
        err->msg[0] = '\0';
    }
    enc_t e;
    e.L = L;
    e.b = out;
    e.max_depth = max_depth;
    e.mtslot = top + 1;
    e.mt_loaded = 0;
    e.st = LG_JSON_OK;
    e.what[0] = '\0';
    e.ppos = ENC_PATH;
    e.ptrunc = 0;

    int ok;
    if (!lua_checkstack(L, 8)) {
        ok = enc_fail(&e, LG_JSON_EDEPTH, "Lua stack exhausted");
    } else {
        lua_pushnil(L);
        lua_pushnil(L);
        ok = enc_value(&e, idx, 0);
    }
    lua_settop(L, top);
    enc_room(out, 0);
    out->data[out->len] = '\0';
    if (ok)
        return LG_JSON_OK;
    if (err) {
        if (e.ppos == ENC_PATH && !e.ptrunc)
            snprintf(err->msg, sizeof err->msg, "%s at root", e.what);
        else
            snprintf(err->msg, sizeof err->msg, "%s at %s%.*s", e.what, e.ptrunc ? "..." : "",
                     (int)(ENC_PATH - e.ppos), e.path + e.ppos);
    }
    return e.st;
}

/* ------------------------------------------------------------------------------------------ */
/* luagent.json                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* encode's reusable output buffer is dropped after a call that grew it past this. */
#define LJ_KEEP_BUF (64 * 1024)

static int l_buf_gc(lua_State *L)
{
    lg_buf_t *b = lua_touserdata(L, 1);
    lg_buf_free(b);
    return 0;
}

static int l_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lg_buf_t *b = lua_touserdata(L, lua_upvalueindex(1));
    lg_json_error_t err;
    lg_buf_reset(b);
    if (lg_json_encode(L, 1, b, LG_JSON_DEFAULT_MAX_DEPTH, &err) != LG_JSON_OK) {
        if (b->cap > LJ_KEEP_BUF)
            lg_buf_free(b);
        return luaL_error(L, "json.encode: %s", err.msg);
    }
    lua_pushlstring(L, b->data, b->len);
    if (b->cap > LJ_KEEP_BUF)
        lg_buf_free(b);
    return 1;
}

static int l_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const lg_json_shape_t *shape = NULL;
    if (!lua_isnoneornil(L, 2) && (shape = lg_json_toshape(L, 2)) == NULL)
        return luaL_argerror(L, 2, "a json.shape expected");
    lg_json_error_t err;
    if (lg_json_decode_shaped(L, s, n, LG_JSON_DEFAULT_MAX_DEPTH, &err, shape) != LG_JSON_OK)
        return luaL_error(L, "json.decode: %s", err.msg);
    return 1;
}

/* ---- json.shape ---- */

#define SHAPE_MAX_DEPTH 32
#define SHAPE_MT "json.shape" /* its metatable's registry name (and what getmetatable shows) */

typedef struct shape_build {
    lg_json_shape_t *sh; /* NULL while counting */
    uint32_t nodes, members, names;
} shape_build_t;

/* Count (b->sh NULL: raises on a bad shape) or write the node of the shape table at idx and those
 * below it; returns its index. A node's members are contiguous, its children's nodes follow. */
static int32_t shape_walk(lua_State *L, int idx, int depth, shape_build_t *b)
{
    if (depth > SHAPE_MAX_DEPTH)
        luaL_error(L, "json.shape: nested more than %d levels (or a cycle)", SHAPE_MAX_DEPTH);
    luaL_checkstack(L, 4, "json.shape");
    int32_t node = (int32_t)b->nodes++;
    uint32_t first = b->members, n = 0;
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1), n++) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "json.shape: member names must be strings");
        if (!lua_istable(L, -1) && !(lua_isboolean(L, -1) && lua_toboolean(L, -1)))
            luaL_error(L, "json.shape: the value of '%s' must be true (all of it) or a shape table",
                       lua_tostring(L, -2));
    }
    b->members += n;
    if (b->sh)
        b->sh->nodes[node] = (shape_node_t){first, n};
    uint32_t i = first;
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1), i++) {
        size_t len;
        const char *name = lua_tolstring(L, -2, &len); /* a string: no conversion */
        int32_t child = lua_istable(L, -1) ? shape_walk(L, lua_gettop(L), depth + 1, b) : -1;
        if (b->sh) {
            b->sh->members[i] = (shape_member_t){b->names, (uint32_t)len, child};
            memcpy(b->sh->names + b->names, name, len);
        }
        b->names += (uint32_t)len;
    }
    return node;
}

static int l_shape_gc(lua_State *L)
{
    lg_json_shape_t *sh = *(lg_json_shape_t **)lua_touserdata(L, 1);
    if (sh != NULL) { /* requests still holding it decode without the names table */
        luaL_unref(L, LUA_REGISTRYINDEX, sh->names_ref);
        sh->names_ref = LUA_NOREF;
    }
    lg_json_shape_drop(sh);
    return 0;
}

static int l_shape(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    shape_build_t b = {0};
    shape_walk(L, 1, 1, &b);
    lg_json_shape_t **ud = lua_newuserdata(L, sizeof *ud);
    *ud = NULL;
    if (luaL_newmetatable(L, SHAPE_MT)) {
        lua_pushcfunction(L, l_shape_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, SHAPE_MT);
        lua_setfield(L, -2, "__metatable");
    }
    lua_setmetatable(L, -2);
    lg_json_shape_t *sh = malloc(sizeof *sh + b.nodes * sizeof(shape_node_t) +
                                 b.members * sizeof(shape_member_t) + b.names);
    if (sh == NULL)
        abort();
    sh->refs = 1;
    sh->names_ref = LUA_NOREF;
    sh->nodes = (shape_node_t *)(sh + 1);
    sh->members = (shape_member_t *)(sh->nodes + b.nodes);
    sh->names = (char *)(sh->members + b.members);
    *ud = sh;
    uint32_t nmembers = b.members;
    b = (shape_build_t){.sh = sh};
    shape_walk(L, 1, 1, &b);
    lua_createtable(L, (int)nmembers, 0);
    for (uint32_t i = 0; i < nmembers; i++) {
        lua_pushlstring(L, sh->names + sh->members[i].name, sh->members[i].len);
        lua_rawseti(L, -2, (int)i + 1);
    }
    sh->names_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    sh->names_vm = lua_topointer(L, LUA_REGISTRYINDEX);
    return 1;
}

lg_json_shape_t *lg_json_toshape(lua_State *L, int idx)
{
    lg_json_shape_t **ud = lua_touserdata(L, idx);
    if (ud == NULL || !lua_getmetatable(L, idx))
        return NULL;
    luaL_getmetatable(L, SHAPE_MT);
    int is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return is ? *ud : NULL;
}

lg_json_shape_t *lg_json_shape_hold(lg_json_shape_t *sh)
{
    if (sh != NULL)
        sh->refs++;
    return sh;
}

void lg_json_shape_drop(lg_json_shape_t *sh)
{
    if (sh != NULL && --sh->refs == 0)
        free(sh);
}

static int l_readonly(lua_State *L)
{
    return luaL_error(L, "json.empty_array is read-only (use json.array() for a new array)");
}

/* Push json.empty_array (created on first use with its own metatable, both in the registry). */
static void push_empty_array(lua_State *L)
{
    lua_pushlightuserdata(L, &k_empty);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_isnil(L, -1))
        return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 0);   /* the value */
    lua_createtable(L, 0, 3);   /* its metatable */
    lua_pushliteral(L, "json.array");
    lua_setfield(L, -2, "__name");
    lua_pushcfunction(L, l_readonly);
    lua_setfield(L, -2, "__newindex");
    lg_json_push_array_mt(L);
    lua_setfield(L, -2, "__metatable");
    lua_pushlightuserdata(L, &k_empty_mt);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_setmetatable(L, -2);
    lua_pushlightuserdata(L, &k_empty);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

/* 1 if the table at idx has the array metatable or empty_array's. */
int lg_json_is_array_marked(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx))
        return 0;
    lua_pushlightuserdata(L, &k_array_mt);
    lua_rawget(L, LUA_REGISTRYINDEX);
    int r = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    if (!r) {
        lua_pushlightuserdata(L, &k_empty_mt);
        lua_rawget(L, LUA_REGISTRYINDEX);
        r = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return r;
}

static int l_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_createtable(L, 0, 0);
        lg_json_push_array_mt(L);
        lua_setmetatable(L, -2);
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lg_json_is_array_marked(L, 1))
        return 1;
    if (lua_getmetatable(L, 1))
        return luaL_error(L, "json.array: the table already has a metatable");
    lg_json_push_array_mt(L);
    lua_setmetatable(L, 1);
    return 1;
}

static int l_is_array(lua_State *L)
{
    int r = 0;
    if (lua_type(L, 1) == LUA_TTABLE) {
        lua_settop(L, 1);
        r = lg_json_is_array_marked(L, 1) || plain_array_len(L, 1) > 0;
    }
    lua_pushboolean(L, r);
    return 1;
}

int luaopen_luagent_json(lua_State *L)
{
    lua_createtable(L, 0, 9);

    lg_buf_t *b = lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_buf_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, l_encode, 1);
    lua_setfield(L, -2, "encode");

    lua_pushcfunction(L, l_decode);
    lua_setfield(L, -2, "decode");
    lg_json_push_null(L);
    lua_setfield(L, -2, "null");
    lg_json_push_array_mt(L);
    lua_setfield(L, -2, "array_mt");
    push_empty_array(L);
    lua_setfield(L, -2, "empty_array");
    lua_pushcfunction(L, l_array);
    lua_setfield(L, -2, "array");
    lua_pushcfunction(L, l_is_array);
    lua_setfield(L, -2, "is_array");
    lua_pushcfunction(L, l_shape);
    lua_setfield(L, -2, "shape");
    return 1;
}

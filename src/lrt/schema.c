/* Agents' `input` schemas: compiled once per VM when an agent loads, checked per request (schema.h). */
#include "luagent/schema.h"

#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/json.h"

/* What a value is, as bits; a type keyword is the set of bits it accepts. An integral number is
 * both V_NUMBER and V_INTEGER, so "number" accepts it and "integer" refuses 1.5. */
enum {
    V_NULL = 1 << 0,
    V_BOOLEAN = 1 << 1,
    V_OBJECT = 1 << 2,
    V_ARRAY = 1 << 3,
    V_NUMBER = 1 << 4,
    V_INTEGER = 1 << 5,
    V_STRING = 1 << 6,
    V_OTHER = 1 << 7, /* function, thread, userdata: no JSON type */
};

static const struct {
    const char *name;
    unsigned bits;
} type_names[] = {{"null", V_NULL},     {"boolean", V_BOOLEAN}, {"object", V_OBJECT}, {"array", V_ARRAY},
                  {"number", V_NUMBER}, {"integer", V_INTEGER}, {"string", V_STRING}};

/* A JSON value written in a schema (enum, const). */
typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jkind_t;
typedef struct jv {
    jkind_t kind;
    int b;
    double n;
    char *s;         /* J_STR */
    size_t len;      /* J_STR: bytes; J_ARR, J_OBJ: elements */
    struct jv *v;    /* J_ARR, J_OBJ: elements (member values) */
    char **keys;     /* J_OBJ: member names */
    size_t *klens;
} jv_t;

typedef struct prop {
    char *name;
    size_t len;
    lg_schema_t *schema;
} prop_t;

enum { ADD_ANY = 0, ADD_NONE, ADD_SCHEMA };

struct lg_schema {
    unsigned types; /* 0: any type */
    int never;      /* the schema `false` */
    int has_min, has_max, has_xmin, has_xmax, has_re, additional;
    double min, max, xmin, xmax;
    size_t min_len, max_len, min_items, max_items; /* max_*: SIZE_MAX when absent */
    regex_t re;
    char *pattern;
    char **required;
    size_t *required_lens, nrequired;
    prop_t *props; /* sorted by name (bytes, then length) */
    size_t nprops;
    lg_schema_t *additional_schema, *items;
    jv_t *enumv;
    size_t nenum;
    jv_t *constv;
    char *enum_msg, *const_msg;
    int stack_need; /* Lua stack slots validation may use */
};

/* ---- values: classification and comparison ---- */

/* The encoder's rule: the array marker, or keys exactly 1..n with n >= 1. */
static int is_array(lua_State *L, int idx)
{
    if (lg_json_is_array_marked(L, idx))
        return 1;
    size_t n = lua_objlen(L, idx);
    if (n == 0)
        return 0;
    size_t count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        double k = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
        if (!(k >= 1 && k <= (double)n && k == floor(k))) {
            lua_pop(L, 1);
            return 0;
        }
        count++;
    }
    return count == n;
}

static unsigned kind_of(lua_State *L, int idx)
{
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return V_NULL;
    case LUA_TBOOLEAN: return V_BOOLEAN;
    case LUA_TSTRING: return V_STRING;
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, idx);
        return isfinite(d) && d == floor(d) ? V_NUMBER | V_INTEGER : V_NUMBER;
    }
    case LUA_TTABLE: return is_array(L, idx) ? V_ARRAY : V_OBJECT;
    case LUA_TLIGHTUSERDATA: return lua_touserdata(L, idx) == NULL ? V_NULL : V_OTHER;
    default: return V_OTHER;
    }
}

static int jv_equal(const jv_t *v, lua_State *L, int idx)
{
    switch (v->kind) {
    case J_NULL: return (kind_of(L, idx) & V_NULL) != 0;
    case J_BOOL: return lua_type(L, idx) == LUA_TBOOLEAN && lua_toboolean(L, idx) == v->b;
    case J_NUM: return lua_type(L, idx) == LUA_TNUMBER && lua_tonumber(L, idx) == v->n;
    case J_STR: {
        if (lua_type(L, idx) != LUA_TSTRING)
            return 0;
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return n == v->len && memcmp(s, v->s, n) == 0;
    }
    case J_ARR:
        if (lua_type(L, idx) != LUA_TTABLE || !is_array(L, idx) || lua_objlen(L, idx) != v->len)
            return 0;
        for (size_t i = 0; i < v->len; i++) {
            lua_rawgeti(L, idx, (int)i + 1);
            int eq = jv_equal(&v->v[i], L, lua_gettop(L));
            lua_pop(L, 1);
            if (!eq)
                return 0;
        }
        return 1;
    case J_OBJ: {
        if (lua_type(L, idx) != LUA_TTABLE || is_array(L, idx))
            return 0;
        size_t count = 0;
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            lua_pop(L, 1);
            count++;
        }
        if (count != v->len)
            return 0;
        for (size_t i = 0; i < v->len; i++) {
            lua_pushlstring(L, v->keys[i], v->klens[i]);
            lua_rawget(L, idx);
            int eq = !lua_isnil(L, -1) && jv_equal(&v->v[i], L, lua_gettop(L));
            lua_pop(L, 1);
            if (!eq)
                return 0;
        }
        return 1;
    }
    }
    return 0;
}

static void jv_clear(jv_t *v)
{
    free(v->s);
    if (v->kind == J_ARR || v->kind == J_OBJ) {
        for (size_t i = 0; i < v->len; i++) {
            jv_clear(&v->v[i]);
            if (v->keys != NULL)
                free(v->keys[i]);
        }
    }
    free(v->v);
    free(v->keys);
    free(v->klens);
}

/* ---- numbers in messages ---- */

static void fmt_num(char out[40], double d)
{
    if (d == floor(d) && fabs(d) < 1e17) {
        snprintf(out, 40, "%.0f", d);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 40, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            return;
    }
}

/* ---- compiling ---- */

typedef struct cctx {
    lua_State *L;
    char *err;
    size_t errlen;
    int failed;
    char path[512]; /* JSON Pointer of the keyword being compiled, for messages */
    size_t pathlen;
} cctx_t;

static void path_push(cctx_t *c, const char *seg, size_t n, size_t *saved)
{
    *saved = c->pathlen;
    if (c->pathlen + 1 >= sizeof(c->path))
        return;
    c->path[c->pathlen++] = '/';
    for (size_t i = 0; i < n && c->pathlen + 3 < sizeof(c->path); i++) {
        if (seg[i] == '~' || seg[i] == '/') {
            c->path[c->pathlen++] = '~';
            c->path[c->pathlen++] = seg[i] == '~' ? '0' : '1';
        } else {
            c->path[c->pathlen++] = seg[i];
        }
    }
    c->path[c->pathlen] = '\0';
}

static void path_pop(cctx_t *c, size_t saved)
{
    c->pathlen = saved;
    c->path[saved] = '\0';
}

static void *fail_null(cctx_t *c, const char *fmt, const char *arg)
{
    if (!c->failed) {
        char msg[384];
        snprintf(msg, sizeof(msg), fmt, arg);
        snprintf(c->err, c->errlen, "%s: %s", c->pathlen ? c->path : "(root)", msg);
        c->failed = 1;
    }
    return NULL;
}

static int fail(cctx_t *c, const char *fmt, const char *arg)
{
    fail_null(c, fmt, arg);
    return -1;
}

/* Convert the Lua value at idx into v (a JSON value). 0 or -1 (c->err set). */
static int jv_make(cctx_t *c, int idx, jv_t *v, int depth, int *maxdepth)
{
    lua_State *L = c->L;
    memset(v, 0, sizeof(*v));
    if (depth > *maxdepth)
        *maxdepth = depth;
    if (depth > LG_SCHEMA_MAX_DEPTH)
        return fail(c, "nested deeper than %s levels", "64");
    unsigned k = kind_of(L, idx);
    if (k & V_NULL) {
        v->kind = J_NULL;
    } else if (k & V_BOOLEAN) {
        v->kind = J_BOOL, v->b = lua_toboolean(L, idx);
    } else if (k & V_NUMBER) {
        v->kind = J_NUM, v->n = lua_tonumber(L, idx);
        if (!isfinite(v->n))
            return fail(c, "%s is not a JSON number", "an infinite or NaN value");
    } else if (k & V_STRING) {
        const char *s = lua_tolstring(L, idx, &v->len);
        v->kind = J_STR;
        v->s = malloc(v->len + 1);
        memcpy(v->s, s, v->len + 1);
    } else if (k & V_ARRAY) {
        v->kind = J_ARR;
        size_t n = lua_objlen(L, idx);
        v->v = calloc(n ? n : 1, sizeof(jv_t));
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, idx, (int)i + 1);
            int rc = jv_make(c, lua_gettop(L), &v->v[i], depth + 1, maxdepth);
            lua_pop(L, 1);
            v->len = i + 1;
            if (rc != 0)
                return -1;
        }
    } else if (k & V_OBJECT) {
        v->kind = J_OBJ;
        size_t n = 0;
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            lua_pop(L, 1);
            n++;
        }
        v->v = calloc(n ? n : 1, sizeof(jv_t));
        v->keys = calloc(n ? n : 1, sizeof(char *));
        v->klens = calloc(n ? n : 1, sizeof(size_t));
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            if (lua_type(L, -2) != LUA_TSTRING) {
                lua_pop(L, 2);
                return fail(c, "%s", "object keys must be strings");
            }
            size_t i = v->len, kl;
            const char *key = lua_tolstring(L, -2, &kl);
            v->keys[i] = malloc(kl + 1);
            memcpy(v->keys[i], key, kl + 1);
            v->klens[i] = kl;
            v->len = i + 1;
            if (jv_make(c, lua_gettop(L), &v->v[i], depth + 1, maxdepth) != 0) {
                lua_pop(L, 2);
                return -1;
            }
            lua_pop(L, 1);
        }
    } else {
        return fail(c, "a %s is not a JSON value", luaL_typename(L, idx));
    }
    return 0;
}

/* "must be one of: "a", "b"" / "must be equal to {...}": the values as JSON, cut at ~200 bytes. */
static char *values_msg(lua_State *L, int idx, const char *lead, int each)
{
    lg_buf_t b = {0}, one = {0};
    lg_buf_append(&b, lead, strlen(lead));
    size_t n = each ? lua_objlen(L, idx) : 1;
    for (size_t i = 0; i < n && b.len < 200; i++) {
        if (each)
            lua_rawgeti(L, idx, (int)i + 1);
        else
            lua_pushvalue(L, idx);
        lg_buf_reset(&one);
        if (lg_json_encode(L, -1, &one, LG_SCHEMA_MAX_DEPTH + 1, NULL) == LG_JSON_OK) {
            if (i > 0)
                lg_buf_lit(&b, ", ");
            lg_buf_append(&b, one.data, one.len);
        }
        lua_pop(L, 1);
    }
    if (b.len > 200) { /* cut at a character boundary */
        size_t cut = 200;
        while (cut > 0 && ((unsigned char)b.data[cut] & 0xC0) == 0x80)
            cut--;
        b.len = cut;
        lg_buf_lit(&b, "...");
    }
    lg_buf_free(&one);
    return b.data;
}

static int get_number(cctx_t *c, int idx, double *out)
{
    if (lua_type(c->L, idx) != LUA_TNUMBER || !isfinite(lua_tonumber(c->L, idx)))
        return fail(c, "%s", "must be a number");
    *out = lua_tonumber(c->L, idx);
    return 0;
}

static int get_count(cctx_t *c, int idx, size_t *out)
{
    double d = lua_type(c->L, idx) == LUA_TNUMBER ? lua_tonumber(c->L, idx) : -1;
    if (!(d >= 0 && d == floor(d)))
        return fail(c, "%s", "must be a non-negative integer");
    *out = d >= 1e18 ? SIZE_MAX - 1 : (size_t)d;
    return 0;
}

/* An array in the schema (`type`, `required`, `enum`): the encoder's rule, or an empty table. */
static int schema_array(lua_State *L, int idx, size_t *n)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        return 0;
    if (is_array(L, idx)) {
        *n = lua_objlen(L, idx);
        return 1;
    }
    lua_pushnil(L);
    if (lua_next(L, idx) == 0) {
        *n = 0;
        return 1;
    }
    lua_pop(L, 2);
    return 0;
}

static int type_bits(cctx_t *c, int idx, unsigned *bits)
{
    lua_State *L = c->L;
    size_t n = 0;
    int single = lua_type(L, idx) == LUA_TSTRING;
    if (!single && (!schema_array(L, idx, &n) || n == 0))
        return fail(c, "%s", "must be a type name or a non-empty array of type names");
    for (size_t i = 0; i < (single ? 1 : n); i++) {
        if (!single)
            lua_rawgeti(L, idx, (int)i + 1);
        const char *name = lua_type(L, single ? idx : -1) == LUA_TSTRING ? lua_tostring(L, single ? idx : -1) : NULL;
        unsigned b = 0;
        for (size_t t = 0; name != NULL && t < sizeof(type_names) / sizeof(type_names[0]); t++)
            if (strcmp(name, type_names[t].name) == 0)
                b = type_names[t].bits;
        if (!single)
            lua_pop(L, 1);
        if (b == 0)
            return fail(c,
                        "unknown type '%s' (object, array, string, number, integer, boolean or null)",
                        name ? name : "(not a string)");
        *bits |= b;
    }
    return 0;
}

static int prop_cmp(const void *a, const void *b)
{
    const prop_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->name, y->name, n);
    return r != 0 ? r : (x->len > y->len) - (x->len < y->len);
}

static lg_schema_t *compile_node(cctx_t *c, int idx, int depth);


/* glibc's regcomp expands repetitions by copying the repeated part (`x+` is `xx*`, `x{3,5}` is
 * `xxx` and two optional copies), so stacked or nested ones grow a pattern exponentially (a
 * fuzzer's `[a-z]*+++...+` took gigabytes). Estimate the expanded size first, roughly as regcomp
 * builds it: an atom (a character, an escape, a bracket expression) is 1, a group its contents,
 * `+` doubles the preceding atom, `{n,m}` multiplies it by max(n, m) (n + 1 when m is open). */
#define PATTERN_NODES 20000
#define PATTERN_NODES_S "20000"
#define PATTERN_DEPTH 64

static int pattern_size_ok(const char *p)
{
    double total[PATTERN_DEPTH + 1], last[PATTERN_DEPTH + 1]; /* per open group: its size so far, its last atom */
    int d = 0;
    total[0] = last[0] = 0;
    for (; *p; p++) {
        double atom = 1;
        switch (*p) {
        case '(':
            if (++d > PATTERN_DEPTH)
                return 0;
            total[d] = last[d] = 0;
            continue;
        case ')':
            if (d == 0)
                break; /* regcomp reports it */
            atom = total[d--];
            break;
        case '\\':
            if (p[1] != '\0')
                p++;
            break;
        case '[': /* to the closing ']' ("[]...]" and "[^]...]" keep a leading ']') */
            p += p[1] == '^' ? 2 : 1;
            if (*p == ']')
                p++;
            while (*p && *p != ']')
                p += (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=') && strchr(p + 2, ']')) ? strchr(p + 2, ']') - p + 1 : 1;
            if (*p == '\0')
                return 1; /* unterminated: regcomp reports it */
            break;
        case '+':
            total[d] += last[d], last[d] *= 2;
            goto check;
        case '{': {
            char *end;
            unsigned long lo = strtoul(p + 1, &end, 10), hi = lo;
            if (*end == ',')
                hi = end[1] == '}' ? lo + 1 : strtoul(end + 1, &end, 10);
            else if (*end != '}')
                break; /* not a bound: a literal '{' */
            if (*end == ',')
                end++;
            double k = (double)(hi > lo ? hi : lo);
            total[d] += last[d] * (k > 1 ? k - 1 : 0), last[d] *= k;
            p = strchr(p, '}') ? strchr(p, '}') : p;
            goto check;
        }
        case '*':
        case '?':
        case '|':
            continue;
        default:
            break;
        }
        total[d] += atom, last[d] = atom;
    check:
        if (total[d] > PATTERN_NODES || last[d] > PATTERN_NODES)
            return 0;
    }
    return 1;
}

static int compile_keyword(cctx_t *c, lg_schema_t *s, const char *key, int v, int depth)
{
    lua_State *L = c->L;
    if (strcmp(key, "type") == 0)
        return type_bits(c, v, &s->types);
    if (strcmp(key, "minimum") == 0)
        return s->has_min = 1, get_number(c, v, &s->min);
    if (strcmp(key, "maximum") == 0)
        return s->has_max = 1, get_number(c, v, &s->max);
    if (strcmp(key, "exclusiveMinimum") == 0)
        return s->has_xmin = 1, get_number(c, v, &s->xmin);
    if (strcmp(key, "exclusiveMaximum") == 0)
        return s->has_xmax = 1, get_number(c, v, &s->xmax);
    if (strcmp(key, "minLength") == 0)
        return get_count(c, v, &s->min_len);
    if (strcmp(key, "maxLength") == 0)
        return get_count(c, v, &s->max_len);
    if (strcmp(key, "minItems") == 0)
        return get_count(c, v, &s->min_items);
    if (strcmp(key, "maxItems") == 0)
        return get_count(c, v, &s->max_items);
    if (strcmp(key, "pattern") == 0) {
        size_t n;
        const char *p = lua_type(L, v) == LUA_TSTRING ? lua_tolstring(L, v, &n) : NULL;
        if (p == NULL || strlen(p) != n)
            return fail(c, "%s", "must be a string (a POSIX extended regular expression)");
        if (!pattern_size_ok(p))
            return fail(c, "%s", "is too complex (repetitions expand it past " PATTERN_NODES_S " nodes)");
        int rc = regcomp(&s->re, p, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char why[160];
            regerror(rc, &s->re, why, sizeof(why));
            return fail(c, "not a valid POSIX extended regular expression: %s", why);
        }
        s->has_re = 1;
        s->pattern = strdup(p);
        return 0;
    }
    if (strcmp(key, "required") == 0) {
        size_t n;
        if (!schema_array(L, v, &n))
            return fail(c, "%s", "must be an array of strings");
        s->required = calloc(n ? n : 1, sizeof(char *));
        s->required_lens = calloc(n ? n : 1, sizeof(size_t));
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, v, (int)i + 1);
            if (lua_type(L, -1) != LUA_TSTRING) {
                lua_pop(L, 1);
                return fail(c, "%s", "must be an array of strings");
            }
            size_t kl;
            const char *k = lua_tolstring(L, -1, &kl);
            s->required[i] = malloc(kl + 1);
            memcpy(s->required[i], k, kl + 1);
            s->required_lens[i] = kl;
            s->nrequired = i + 1;
            lua_pop(L, 1);
        }
        return 0;
    }
    if (strcmp(key, "properties") == 0) {
        if (lua_type(L, v) != LUA_TTABLE || (lg_json_is_array_marked(L, v) && lua_objlen(L, v) > 0))
            return fail(c, "%s", "must be an object mapping property names to schemas");
        size_t n = 0;
        lua_pushnil(L);
        while (lua_next(L, v) != 0) {
            lua_pop(L, 1);
            n++;
        }
        s->props = calloc(n ? n : 1, sizeof(prop_t));
        lua_pushnil(L);
        while (lua_next(L, v) != 0) {
            if (lua_type(L, -2) != LUA_TSTRING) {
                lua_pop(L, 2);
                return fail(c, "%s", "property names must be strings");
            }
            size_t kl, saved;
            const char *k = lua_tolstring(L, -2, &kl);
            prop_t *p = &s->props[s->nprops++];
            p->name = malloc(kl + 1);
            memcpy(p->name, k, kl + 1);
            p->len = kl;
            path_push(c, k, kl, &saved);
            p->schema = compile_node(c, lua_gettop(L), depth + 1);
            path_pop(c, saved);
            lua_pop(L, 1);
            if (p->schema == NULL) {
                lua_pop(L, 1);
                return -1;
            }
        }
        qsort(s->props, s->nprops, sizeof(prop_t), prop_cmp);
        return 0;
    }
    if (strcmp(key, "additionalProperties") == 0) {
        if (lua_type(L, v) == LUA_TBOOLEAN) {
            s->additional = lua_toboolean(L, v) ? ADD_ANY : ADD_NONE;
            return 0;
        }
        s->additional = ADD_SCHEMA;
        return (s->additional_schema = compile_node(c, v, depth + 1)) != NULL ? 0 : -1;
    }
    if (strcmp(key, "items") == 0) {
        if (lua_type(L, v) == LUA_TTABLE && is_array(L, v))
            return fail(c, "%s", "must be one schema (an array of schemas, tuple validation, is not supported)");
        return (s->items = compile_node(c, v, depth + 1)) != NULL ? 0 : -1;
    }
    if (strcmp(key, "enum") == 0) {
        size_t n;
        if (!schema_array(L, v, &n) || n == 0)
            return fail(c, "%s", "must be a non-empty array");
        s->enumv = calloc(n, sizeof(jv_t));
        int jd = 0;
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, v, (int)i + 1);
            int rc = jv_make(c, lua_gettop(L), &s->enumv[i], depth, &jd);
            s->nenum = i + 1;
            lua_pop(L, 1);
            if (rc != 0)
                return -1;
        }
        s->stack_need += 2 * (jd - depth + 1);
        s->enum_msg = values_msg(L, v, "must be one of: ", 1);
        return 0;
    }
    if (strcmp(key, "const") == 0) {
        int jd = 0;
        s->constv = calloc(1, sizeof(jv_t));
        if (jv_make(c, v, s->constv, depth, &jd) != 0)
            return -1;
        s->stack_need += 2 * (jd - depth + 1);
        s->const_msg = values_msg(L, v, "must be equal to ", 0);
        return 0;
    }
    static const char *const annotations[] = {"title",    "description", "default",  "examples",  "format",   "$schema",
                                              "$id",      "$comment",    "deprecated", "readOnly", "writeOnly", NULL};
    for (const char *const *a = annotations; *a != NULL; a++)
        if (strcmp(key, *a) == 0)
            return 0;
    size_t saved = c->pathlen;
    if (c->pathlen > 0) { /* name the object holding the keyword, not the keyword */
        char *slash = strrchr(c->path, '/');
        path_pop(c, slash ? (size_t)(slash - c->path) : 0);
    }
    fail(c, "unsupported keyword '%s'", key);
    c->pathlen = saved;
    return -1;
}

static lg_schema_t *compile_node(cctx_t *c, int idx, int depth)
{
    lua_State *L = c->L;
    if (depth > LG_SCHEMA_MAX_DEPTH)
        return fail_null(c, "subschemas nested deeper than %s levels", "64");
    lg_schema_t *s = calloc(1, sizeof(*s));
    s->max_len = s->max_items = SIZE_MAX;
    s->stack_need = 8;
    if (lua_type(L, idx) == LUA_TBOOLEAN) {
        s->never = !lua_toboolean(L, idx);
        return s;
    }
    if (lua_type(L, idx) != LUA_TTABLE || (lg_json_is_array_marked(L, idx) && lua_objlen(L, idx) > 0)) {
        lg_schema_free(s);
        return fail_null(c, "must be a schema (a table or a boolean), not %s",
                         lua_type(L, idx) == LUA_TTABLE ? "an array" : luaL_typename(L, idx));
    }
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            lg_schema_free(s);
            return fail_null(c, "%s", "a schema's keys must be keyword names (strings)");
        }
        const char *key = lua_tostring(L, -2);
        size_t saved;
        path_push(c, key, strlen(key), &saved);
        int rc = compile_keyword(c, s, key, lua_gettop(L), depth);
        path_pop(c, saved);
        lua_pop(L, 1);
        if (rc != 0) {
            lua_pop(L, 1);
            lg_schema_free(s);
            return NULL;
        }
    }
    int child = 0;
    for (size_t i = 0; i < s->nprops; i++)
        child = s->props[i].schema->stack_need > child ? s->props[i].schema->stack_need : child;
    if (s->items != NULL && s->items->stack_need > child)
        child = s->items->stack_need;
    if (s->additional_schema != NULL && s->additional_schema->stack_need > child)
        child = s->additional_schema->stack_need;
    s->stack_need += child;
    return s;
}

lg_schema_t *lg_schema_compile(lua_State *L, int idx, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    if (idx < 0 && idx > LUA_REGISTRYINDEX)
        idx = top + idx + 1;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    char dummy[8];
    cctx_t c = {.L = L, .err = err ? err : dummy, .errlen = err ? errlen : sizeof(dummy)};
    if (!lua_checkstack(L, 3 * LG_SCHEMA_MAX_DEPTH + 16)) {
        snprintf(c.err, c.errlen, "out of Lua stack");
        return NULL;
    }
    lg_schema_t *s = compile_node(&c, idx, 1);
    lua_settop(L, top);
    return s;
}

void lg_schema_free(lg_schema_t *s)
{
    if (s == NULL)
        return;
    if (s->has_re)
        regfree(&s->re);
    free(s->pattern);
    for (size_t i = 0; i < s->nrequired; i++)
        free(s->required[i]);
    free(s->required);
    free(s->required_lens);
    for (size_t i = 0; i < s->nprops; i++) {
        free(s->props[i].name);
        lg_schema_free(s->props[i].schema);
    }
    free(s->props);
    lg_schema_free(s->additional_schema);
    lg_schema_free(s->items);
    for (size_t i = 0; i < s->nenum; i++)
        jv_clear(&s->enumv[i]);
    free(s->enumv);
    if (s->constv != NULL)
        jv_clear(s->constv);
    free(s->constv);
    free(s->enum_msg);
    free(s->const_msg);
    free(s);
}

/* ---- validating ---- */

typedef struct seg {
    const char *key; /* NULL: an array index */
    size_t len;      /* key length, or the index */
} seg_t;

typedef struct vctx {
    lua_State *L;
    lg_buf_t *details, path;
    size_t max, count;
    seg_t segs[LG_SCHEMA_MAX_DEPTH + 2];
    int nsegs;
} vctx_t;

static void report(vctx_t *v, const char *msg, size_t mlen)
{
    v->count++;
    if (v->details == NULL || v->count > v->max)
        return;
    lg_buf_reset(&v->path);
    for (int i = 0; i < v->nsegs; i++) {
        lg_buf_putc(&v->path, '/');
        if (v->segs[i].key == NULL) {
            lg_buf_u64(&v->path, v->segs[i].len);
            continue;
        }
        for (size_t k = 0; k < v->segs[i].len; k++) {
            char ch = v->segs[i].key[k];
            if (ch == '~')
                lg_buf_lit(&v->path, "~0");
            else if (ch == '/')
                lg_buf_lit(&v->path, "~1");
            else
                lg_buf_putc(&v->path, ch);
        }
    }
    if (v->count > 1)
        lg_buf_putc(v->details, ',');
    lg_buf_lit(v->details, "{\"path\":");
    lg_buf_json_str(v->details, v->path.data ? v->path.data : "", v->path.len);
    lg_buf_lit(v->details, ",\"message\":");
    lg_buf_json_str(v->details, msg, mlen);
    lg_buf_putc(v->details, '}');
}

static void reportf(vctx_t *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reportf(vctx_t *v, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    report(v, msg, n < 0 ? 0 : (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
}

static const char *kind_name(unsigned k)
{
    if (k & V_INTEGER)
        return "integer";
    for (size_t t = 0; t < sizeof(type_names) / sizeof(type_names[0]); t++)
        if (k & type_names[t].bits)
            return type_names[t].name;
    return "non-JSON value";
}

static void report_type(vctx_t *v, unsigned want, unsigned got)
{
    char names[128] = "";
    size_t n = 0;
    int count = 0;
    for (size_t t = 0; t < sizeof(type_names) / sizeof(type_names[0]); t++)
        count += (want & type_names[t].bits) != 0;
    for (size_t t = 0, i = 0; t < sizeof(type_names) / sizeof(type_names[0]); t++) {
        if (!(want & type_names[t].bits))
            continue;
        i++;
        n += (size_t)snprintf(names + n, sizeof(names) - n, "%s%s", i == 1 ? "" : i == (size_t)count ? " or " : ", ",
                              type_names[t].name);
    }
    reportf(v, "must be %s %s (got %s)", count > 1 ? "one of the types" : "of type", names, kind_name(got));
}

static size_t utf8_count(const char *s, size_t n)
{
    size_t cps = 0;
    for (size_t i = 0; i < n; i++)
        cps += ((unsigned char)s[i] & 0xC0) != 0x80;
    return cps;
}

static const lg_schema_t *find_prop(const lg_schema_t *s, const char *name, size_t len)
{
    size_t lo = 0, hi = s->nprops;
    prop_t key = {.name = (char *)name, .len = len};
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = prop_cmp(&key, &s->props[mid]);
        if (r == 0)
            return s->props[mid].schema;
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

#define FULL(v) ((v)->count > (v)->max)

static void check(vctx_t *v, const lg_schema_t *s, int idx);

static void check_child(vctx_t *v, const lg_schema_t *s, int idx, const char *key, size_t len)
{
    seg_t *g = &v->segs[v->nsegs++];
    g->key = key;
    g->len = len;
    check(v, s, idx);
    v->nsegs--;
}

static void check_object(vctx_t *v, const lg_schema_t *s, int idx)
{
    lua_State *L = v->L;
    for (size_t i = 0; i < s->nrequired && !FULL(v); i++) {
        lua_pushlstring(L, s->required[i], s->required_lens[i]);
        lua_rawget(L, idx);
        if (lua_isnil(L, -1)) {
            seg_t *g = &v->segs[v->nsegs++];
            g->key = s->required[i], g->len = s->required_lens[i];
            report(v, LG_STRLIT("is required"));
            v->nsegs--;
        }
        lua_pop(L, 1);
    }
    for (size_t i = 0; i < s->nprops && !FULL(v); i++) {
        const prop_t *p = &s->props[i];
        lua_pushlstring(L, p->name, p->len);
        lua_rawget(L, idx);
        if (!lua_isnil(L, -1))
            check_child(v, p->schema, lua_gettop(L), p->name, p->len);
        lua_pop(L, 1);
    }
    if (s->additional == ADD_ANY)
        return;
    int more;
    lua_pushnil(L);
    while ((more = lua_next(L, idx)) != 0) {
        char nbuf[40];
        size_t kl = 0;
        const char *k = NULL;
        if (lua_type(L, -2) == LUA_TSTRING) {
            k = lua_tolstring(L, -2, &kl);
        } else if (lua_type(L, -2) == LUA_TNUMBER) { /* a table made in Lua: named as the encoder would */
            fmt_num(nbuf, lua_tonumber(L, -2));
            k = nbuf, kl = strlen(nbuf);
        }
        if (k != NULL && find_prop(s, k, kl) == NULL) {
            if (s->additional == ADD_NONE) {
                seg_t *g = &v->segs[v->nsegs++];
                g->key = k, g->len = kl;
                report(v, LG_STRLIT("is not an allowed property"));
                v->nsegs--;
            } else {
                check_child(v, s->additional_schema, lua_gettop(L), k, kl);
            }
        }
        lua_pop(L, 1);
        if (FULL(v))
            break;
    }
    if (more)
        lua_pop(L, 1); /* the key of a loop that stopped early */
}

static void check(vctx_t *v, const lg_schema_t *s, int idx)
{
    lua_State *L = v->L;
    if (s->never) {
        report(v, LG_STRLIT("is not allowed"));
        return;
    }
    unsigned k = kind_of(L, idx);
    if (s->types != 0 && (k & s->types) == 0) {
        report_type(v, s->types, k);
        return;
    }
    if (s->nenum > 0) {
        size_t i = 0;
        while (i < s->nenum && !jv_equal(&s->enumv[i], L, idx))
            i++;
        if (i == s->nenum) {
            report(v, s->enum_msg, strlen(s->enum_msg));
            return;
        }
    }
    if (s->constv != NULL && !jv_equal(s->constv, L, idx)) {
        report(v, s->const_msg, strlen(s->const_msg));
        return;
    }
    char a[40];
    if (k & V_NUMBER) {
        double d = lua_tonumber(L, idx);
        if (s->has_min && !(d >= s->min))
            fmt_num(a, s->min), reportf(v, "must be >= %s", a);
        else if (s->has_xmin && !(d > s->xmin))
            fmt_num(a, s->xmin), reportf(v, "must be > %s", a);
        else if (s->has_max && !(d <= s->max))
            fmt_num(a, s->max), reportf(v, "must be <= %s", a);
        else if (s->has_xmax && !(d < s->xmax))
            fmt_num(a, s->xmax), reportf(v, "must be < %s", a);
    } else if (k & V_STRING) {
        size_t n;
        const char *str = lua_tolstring(L, idx, &n);
        /* bytes >= code points: count them only when the byte length cannot decide */
        if (s->min_len > 0 && (n < s->min_len || utf8_count(str, n) < s->min_len))
            reportf(v, "must be at least %zu character%s long", s->min_len, s->min_len == 1 ? "" : "s");
        else if (n > s->max_len && utf8_count(str, n) > s->max_len)
            reportf(v, "must be at most %zu character%s long", s->max_len, s->max_len == 1 ? "" : "s");
        else if (s->has_re) {
            regmatch_t m[1] = {{.rm_so = 0, .rm_eo = (regoff_t)n}};
            if (regexec(&s->re, str, 1, m, REG_STARTEND) != 0)
                reportf(v, "must match the pattern %s", s->pattern);
        }
    } else if (k & V_ARRAY) {
        size_t n = lua_objlen(L, idx);
        if (n < s->min_items)
            reportf(v, "must have at least %zu item%s", s->min_items, s->min_items == 1 ? "" : "s");
        else if (n > s->max_items)
            reportf(v, "must have at most %zu item%s", s->max_items, s->max_items == 1 ? "" : "s");
        if (s->items != NULL) {
            for (size_t i = 0; i < n && !FULL(v); i++) {
                lua_rawgeti(L, idx, (int)i + 1);
                seg_t *g = &v->segs[v->nsegs++];
                g->key = NULL, g->len = i;
                check(v, s->items, lua_gettop(L));
                v->nsegs--;
                lua_pop(L, 1);
            }
        }
    } else if (k & V_OBJECT) {
        check_object(v, s, idx);
    }
}

size_t lg_schema_validate(const lg_schema_t *s, lua_State *L, int idx, lg_buf_t *details, size_t max)
{
    int top = lua_gettop(L);
    if (idx < 0 && idx > LUA_REGISTRYINDEX)
        idx = top + idx + 1;
    if (max > LG_SCHEMA_MAX_ERRORS)
        max = LG_SCHEMA_MAX_ERRORS;
    if (!lua_checkstack(L, s->stack_need))
        luaL_error(L, "schema validation: out of Lua stack");
    vctx_t v; /* segs is written before it is read: no need to clear its 1 KiB on every request */
    v.L = L, v.details = details, v.max = max, v.count = 0, v.nsegs = 0;
    v.path = (lg_buf_t){0};
    check(&v, s, idx);
    lua_settop(L, top);
    lg_buf_free(&v.path);
    return v.count;
}

size_t lg_schema_check(const lg_schema_t *s, lua_State *L, int idx, lg_schema_report_t *report)
{
    /* the common case passes and must not allocate: describe the failures in a second pass */
    size_t n = lg_schema_validate(s, L, idx, NULL, LG_SCHEMA_MAX_ERRORS);
    if (n != 0 && report != NULL) {
        lg_buf_putc(&report->details, '[');
        lg_schema_validate(s, L, idx, &report->details, LG_SCHEMA_MAX_ERRORS);
        lg_buf_putc(&report->details, ']');
        report->failures = n;
    }
    return n;
}

/* ---- the userdata an agent record holds ---- */

static char k_schema_mt;

static int schema_gc(lua_State *L)
{
    lg_schema_t **box = lua_touserdata(L, 1);
    lg_schema_free(*box);
    *box = NULL;
    return 0;
}

void lg_schema_push(lua_State *L, lg_schema_t *s)
{
    lg_schema_t **box = lua_newuserdata(L, sizeof(*box));
    *box = s;
    lua_pushlightuserdata(L, &k_schema_mt);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 2);
        lua_pushcfunction(L, schema_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "schema");
        lua_setfield(L, -2, "__metatable");
        lua_pushlightuserdata(L, &k_schema_mt);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_setmetatable(L, -2);
}

lg_schema_t *lg_schema_to(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx))
        return NULL;
    lua_pushlightuserdata(L, &k_schema_mt);
    lua_rawget(L, LUA_REGISTRYINDEX);
    int ours = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return ours ? *(lg_schema_t **)lua_touserdata(L, idx) : NULL;
}

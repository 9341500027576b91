/**
 * json.h - the host's faithful JSON codec (request in, reply out, `luagent.json`).
 *
 * Why our own: the packaged lua-cjson 2.1.0 turns `[]` into `{}` and prints integers past 14 digits
 * with an exponent (DESIGN §8). This codec is single-pass in both directions (text <-> Lua values on
 * the stack, no intermediate tree) and keeps:
 *   - arrays and objects apart: every decoded array gets the shared array metatable
 *     (lg_json_push_array_mt); an empty table without it encodes as `{}`, with it as `[]`;
 *   - null as the lightuserdata NULL (`luagent.json.null`), in both directions;
 *   - every integer |n| <= 2^53 digit for digit; other doubles round-trip (shortest %.17g form);
 *   - strict RFC 8259 syntax, valid UTF-8 only (overlongs, surrogates, > U+10FFFF refused),
 *     bounded nesting depth.
 *
 * Encoding a table: the array metatable -> array; keys exactly 1..n (n >= 1) -> array; otherwise an
 * object (string keys as they are, integral number keys printed as integers). Functions, threads,
 * userdata other than null, NaN/Inf, nesting past max_depth (which also catches cycles) are errors.
 * Strings are emitted as they are except that invalid UTF-8 bytes become U+FFFD, so output is always
 * valid JSON; '/' is not escaped.
 */
#ifndef LUAGENT_JSON_H
#define LUAGENT_JSON_H

#include <stddef.h>

#include <lua.h>

#include "luagent/buf.h"

#define LG_JSON_DEFAULT_MAX_DEPTH 128

typedef enum lg_json_status {
    LG_JSON_OK = 0,
    LG_JSON_ESYNTAX, /* not JSON (includes trailing garbage, empty input) */
    LG_JSON_EDEPTH,  /* nesting deeper than max_depth */
    LG_JSON_EUTF8,   /* invalid UTF-8 in a string or escape (lone surrogate) */
    LG_JSON_ETYPE,   /* encode: a value JSON cannot represent (function, NaN, ...) */
} lg_json_status_t;

typedef struct lg_json_error {
    size_t offset;  /* decode: byte offset where the problem was found */
    char msg[128];  /* human-readable, e.g. "unexpected character 'x' at offset 12" */
} lg_json_error_t;

/** Decode `len` bytes at `s` and push exactly one Lua value on success (nothing on error).
 *  Needs up to 32 Lua stack slots per nesting level (an open container's items wait there) + a
 *  few; checks them itself: nesting past what the stack of a C call holds (8000 slots; 128 levels
 *  fit) is LG_JSON_EDEPTH. `err` may be NULL.
 *  `s` need not be NUL-terminated. Depth: the outermost container is depth 1, so max_depth 128
 *  accepts 128 nested arrays and rejects 129 (0 allows scalars only). Duplicate object keys: the
 *  last wins. "-0" gives -0.0; a number that overflows a double ("1e400") is LG_JSON_ESYNTAX, one
 *  that underflows gives 0. Does not raise (except on Lua memory exhaustion). */
lg_json_status_t lg_json_decode(lua_State *L, const char *s, size_t len, int max_depth, lg_json_error_t *err);

/** Append the JSON text of the value at stack index `idx` to `out`. On error `out` may hold a
 *  partial text (callers reset it) and `err->msg` says what and where, e.g. "cannot encode function
 *  at /a/3". */
/*  The "where" is a JSON Pointer into the output (array indices 0-based: Lua's t[1] is /0; "root"
 *  for the top-level value); err->offset is unused (0). The stack is left as it was. A top-level nil
 *  encodes as null, -0.0 as -0; an array-marked table encodes t[1..#t] (nil holes as null) and
 *  ignores other keys. Does not raise (except on Lua memory exhaustion). `err` may be NULL. */
lg_json_status_t lg_json_encode(lua_State *L, int idx, lg_buf_t *out, int max_depth, lg_json_error_t *err);

typedef struct lg_json_span {
    size_t off, len;
} lg_json_span_t;
/** lg_json_decode that also says where the values of some members of a top-level object are in
 *  the text: spans[i] for the last member named keys[i] (len 0 when absent). Names are matched as
 *  written (a name spelled with escapes is not matched). Costs nothing measurable over decode. */
lg_json_status_t lg_json_decode_spans(lua_State *L, const char *s, size_t len, int max_depth, lg_json_error_t *err,
                                      const char *const *keys, size_t nkeys, lg_json_span_t *spans);
/** A shape (`luagent.json.shape{...}`): which members of a JSON text to build, to decode a large
 *  reply of which a few members are read. A shape table maps member names to `true` (the whole
 *  value) or to a shape table for the value; applied to an object it keeps those members and drops
 *  the others, to an array it applies to each element, to a scalar it keeps it. Dropped values are
 *  still checked (the same texts are accepted, with the same errors), just not built. Compiled
 *  once; reference-counted, by the threads of one lua_State only. While its json.shape value
 *  lives, a decode in the VM that compiled it pushes member names from a table of them instead of
 *  interning each one again. */
typedef struct lg_json_shape lg_json_shape_t;
/** lg_json_decode keeping only what `shape` names (NULL: everything). */
lg_json_status_t lg_json_decode_shaped(lua_State *L, const char *s, size_t len, int max_depth, lg_json_error_t *err,
                                       const lg_json_shape_t *shape);
/** The shape the value at idx holds (a json.shape userdata), NULL when it is not one. The value
 *  owns it: hold it to keep it past the value's life, drop what you hold (both take NULL). */
lg_json_shape_t *lg_json_toshape(lua_State *L, int idx);
lg_json_shape_t *lg_json_shape_hold(lg_json_shape_t *sh);
void lg_json_shape_drop(lg_json_shape_t *sh);

/** Append JSON text as one line (spill files, logs): as it is when it has no line break, else
 *  without the whitespace between its tokens (strings are copied as they are). For valid JSON. */
void lg_json_compact(lg_buf_t *out, const char *s, size_t len);

/** Push the shared array metatable (created on first use, kept in the registry). */
void lg_json_push_array_mt(lua_State *L);
/** Is the value at idx a table carrying an array marker (decoded array, json.array(t),
 *  json.empty_array)? */
int lg_json_is_array_marked(lua_State *L, int idx);
/** Push json.null (a lightuserdata NULL). */
void lg_json_push_null(lua_State *L);
int lg_json_is_null(lua_State *L, int idx);

/** `luagent.json`: encode(v) -> string | raises; decode(s [, shape]) -> value | raises (message
 *  says where); shape(t) -> a compiled shape (see lg_json_shape_t); null; array_mt; empty_array (a
 *  shared, read-only empty array value); array(t) (marks t an array, returns it); is_array(t).
 *  Pushes the table. */
/*  Details: errors read "json.decode: <msg>" / "json.encode: <msg>". getmetatable(empty_array) ==
 *  array_mt (its real metatable is a protected one whose __newindex raises; rawset bypasses it, so
 *  agents must not modify it). array() with no argument returns a new empty array; array(t) raises
 *  if t has another metatable. is_array(v) is true when encode would write v as a JSON array
 *  (array-marked, or keys exactly 1..n with n >= 1). */
int luaopen_luagent_json(lua_State *L);

#endif

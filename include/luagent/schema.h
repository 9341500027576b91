/**
 * schema.h - agents' `input` schemas: a JSON Schema subset compiled once into a C structure, then
 * checked against the decoded task (Lua values as json.h makes them) before `execute` runs.
 *
 * Keywords: `type` (a name or an array of names: object, array, string, number, integer, boolean,
 * null), `enum`, `const`, `required`, `properties`, `additionalProperties` (boolean or a schema),
 * `items` (one schema for every element), `minimum`, `maximum`, `exclusiveMinimum`,
 * `exclusiveMaximum` (numbers), `minLength`, `maxLength` (Unicode code points), `pattern`,
 * `minItems`, `maxItems` (non-negative integers). Annotations are accepted and ignored: `title`,
 * `description`, `default`, `examples`, `format`, `$schema`, `$id`, `$comment`, `deprecated`,
 * `readOnly`, `writeOnly`. Any other keyword (`anyOf`, `$ref`, `minProperties`, a typo such as
 * `maxLenght`...) makes the schema malformed: silently ignoring it would accept tasks the author
 * meant to refuse. A subschema may also be `true` (anything) or `false` (nothing).
 *
 * `pattern` is a POSIX extended regular expression (regcomp REG_EXTENDED|REG_NOSUB), not ECMA-262:
 * no `\d`, `\w`, lazy quantifiers or lookaround (`[0-9]`, `[[:alnum:]_]` instead). Like JSON Schema
 * it is unanchored (use `^...$`), and it matches bytes in the C locale (`.` is one byte of UTF-8).
 *
 * Values, as the JSON decoder gives them: null is json.null (lightuserdata NULL; nil counts as null
 * too); a table is an array when it carries the array marker or, like the encoder decides, when its
 * keys are exactly 1..n (n >= 1), else an object (so an unmarked `{}` is an object). A number is an
 * integer when it is finite and has no fractional part (1.0, 2^53 and 1e300 are integers; the decoder
 * holds numbers as doubles, so 2^53 + 1 arrives as 2^53). `enum`/`const` compare as JSON: numbers
 * by value, `[]` differs from `{}`, objects regardless of key order. In the schema itself the same
 * rule tells arrays from objects (`const = {}` is the empty object; `json.empty_array` is `[]`).
 */
#ifndef LUAGENT_SCHEMA_H
#define LUAGENT_SCHEMA_H

#include <stddef.h>

#include <lua.h>

#include "luagent/buf.h"

/** Failures reported per validation at most (the rest are counted, not described). */
#define LG_SCHEMA_MAX_ERRORS 50
/** Subschemas nest at most this deep (a deeper schema is malformed). */
#define LG_SCHEMA_MAX_DEPTH 64

typedef struct lg_schema lg_schema_t;

/** Compile the schema table (or boolean) at stack index `idx`. Returns the compiled schema, owned by
 *  the caller (lg_schema_free), or NULL with a one-line reason in `err`, naming where in the schema
 *  as a JSON Pointer: "/properties/age/minimum: must be a number". Does not raise (except on Lua
 *  memory exhaustion); leaves the stack as it was. Regexes are compiled here, once. */
lg_schema_t *lg_schema_compile(lua_State *L, int idx, char *err, size_t errlen);
void lg_schema_free(lg_schema_t *s);

/** Check the value at stack index `idx` against `s`. Returns the number of failures found (0: the
 *  value is valid). For each of the first `max` failures (max <= LG_SCHEMA_MAX_ERRORS) appends
 *  `{"path":"<JSON Pointer>","message":"..."}` to `details`, comma-separated (the caller writes the
 *  brackets); details may be NULL. Stops looking once it has found `max` + 1 failures, so the
 *  count is exact up to `max` and means "more than max" past it. One failure per failing value:
 *  a wrong type is reported alone; a missing required member is reported at its own path
 *  (`/items/0/name`: "is required"). Paths escape `~` as `~0` and `/` as `~1`; the root is "".
 *  Array indices are 0-based. Leaves the stack as it was; never raises except on Lua memory
 *  exhaustion. Safe for any number of VMs on one thread; a schema must not be used by two threads
 *  at once (each worker compiles its own). */
size_t lg_schema_validate(const lg_schema_t *s, lua_State *L, int idx, lg_buf_t *details, size_t max);

/** What a rejected value gets: the failure count and the details array. Zero-initialise; free
 *  details with lg_buf_free. */
typedef struct lg_schema_report {
    size_t failures;  /* found: exact up to LG_SCHEMA_MAX_ERRORS, "more than that" past it */
    lg_buf_t details; /* a JSON array [{"path","message"}, ...] of the first LG_SCHEMA_MAX_ERRORS */
} lg_schema_report_t;

/** lg_schema_validate for callers that answer the failures: returns the count and, when it is not 0
 *  and `report` is not NULL, fills report (failures, details as "[...]", at most
 *  LG_SCHEMA_MAX_ERRORS). A passing value allocates nothing (the details come from a second pass
 *  over a failing one). */
size_t lg_schema_check(const lg_schema_t *s, lua_State *L, int idx, lg_schema_report_t *report);

/** Push a full userdata that owns `s` (freed by its __gc). Its block is the lg_schema_t pointer,
 *  so code that knows a value is such a userdata may read `*(lg_schema_t **)lua_touserdata()`. */
void lg_schema_push(lua_State *L, lg_schema_t *s);
/** The schema held by the userdata at idx (made by lg_schema_push), or NULL for any other value. */
lg_schema_t *lg_schema_to(lua_State *L, int idx);

#endif

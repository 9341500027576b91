/**
 * envelope.h - the execute request's body: `{"task": ..., "context": {...}, "options": {...}}` (and
 * `"agent"` on the seed route), decoded and checked. A pure function of the body bytes, so the
 * fuzzer (tests/fuzz/fuzz_envelope.c) runs the very code the request path runs.
 */
#ifndef LUAGENT_ENVELOPE_H
#define LUAGENT_ENVELOPE_H

#include <stddef.h>

#include <lua.h>

#include "luagent/json.h"
#include "luagent/router.h"

/** Nesting limit of a request body (400 invalid_request past it). */
#define LG_BODY_MAX_DEPTH 64

typedef struct lg_envelope_opts {
    int async;
    char callback_url[2048];
} lg_envelope_opts_t;

/** Decode `len` bytes at `body` (NULL with len 0 is an empty body) onto `co`, which must be empty,
 *  and check the envelope. On success returns NULL and leaves [task, context] on `co` (context may
 *  be nil), `opts` filled and spans[0..1] saying where "task" and "context" are in the body. On
 *  failure returns a message (a constant or `msg`) with *status and *code set; `co` holds junk the
 *  caller clears. `seed_route`: the body must name the agent in "agent", copied into `name`
 *  (LG_AGENT_NAME_MAX + 1 bytes, NUL-terminated) with its length in *namelen; the name is not
 *  checked beyond its length (lg_agent_name_valid does that). */
const char *lg_envelope_parse(lua_State *co, const char *body, size_t len, int seed_route, char *name,
                              size_t *namelen, lg_envelope_opts_t *opts, lg_json_span_t *spans, int *status,
                              const char **code, char *msg, size_t msglen);

#endif

/**
 * openapi.h - GET /openapi.json and GET /docs (DESIGN §5): the API described as an OpenAPI 3.1
 * document built at run time, and the page that renders it.
 *
 * The document has two sources. The generic routes are one table (LG_OPENAPI_OPS in openapi.c): an
 * entry per route and method, so a new route is one new entry; the security of each operation and
 * its 401/403/429 answers come from the role the route needs (lg_route_role, the one handlers.c
 * enforces), never from the entry. Then every agent the registry serves gets its own typed operation,
 * `POST /api/v1/agents/<name>/execute`, whose `task` is the agent's `input` schema as it loaded. The
 * document is cached process-wide with the agents registry's generation it was built from: a hot swap
 * moves the generation, so the next request rebuilds it. Its ETag is a hash of the document.
 *
 * /docs is web/docs.html, embedded into the binary at build time (scripts/embed_text.lua): it fetches
 * /openapi.json and renders it with no external resource.
 */
#ifndef LUAGENT_OPENAPI_H
#define LUAGENT_OPENAPI_H

#include <stddef.h>

#include "luagent/auth.h"
#include "luagent/buf.h"
#include "luagent/router.h"

typedef struct lg_openapi_op {
    lg_route_id_t route;
    const char *method;    /* "get", "post", "delete" */
    const char *path;      /* OpenAPI path template: "/api/v1/agents/{name}" */
    const char *op;        /* JSON members of the operation object, without "security" and "responses" */
    const char *responses; /* JSON members of its "responses" object (the generator adds the rest) */
} lg_openapi_op_t;

/** The generic routes, in document order; entries of one path are adjacent. */
extern const lg_openapi_op_t LG_OPENAPI_OPS[];
extern const size_t LG_OPENAPI_NOPS;

/** The role a route needs (handlers.c; LG_ROLE_NONE: public). */
lg_role_t lg_route_role(lg_route_id_t id);

/** Append the whole document, as the agents registry is now, to out. */
void lg_openapi_build(lg_buf_t *out);

struct st_h2o_req_t;
/** Answer GET /openapi.json or GET /docs (with ETag / If-None-Match). Returns the status answered. */
int lg_openapi_route(struct st_h2o_req_t *req, const lg_route_t *route, const char *request_id);

#endif

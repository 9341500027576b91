/**
 * router.h - maps a request's method and normalized path to a route (DESIGN §5). Pure function:
 * no allocation, no h2o, unit-tested on its own.
 */
#ifndef LUAGENT_ROUTER_H
#define LUAGENT_ROUTER_H

#include <stddef.h>

typedef enum {
    LG_ROUTE_NOT_FOUND = 0,
    LG_ROUTE_HEALTH,
    LG_ROUTE_READY,
    LG_ROUTE_INFO,
    LG_ROUTE_AGENTS,        /* GET  /api/v1/agents */
    LG_ROUTE_AGENT,         /* GET  /api/v1/agents/{name} */
    LG_ROUTE_AGENT_EXECUTE, /* POST /api/v1/agents/{name}/execute */
    LG_ROUTE_EXECUTE,       /* POST /api/v1/agent/execute (name in the body) */
    LG_ROUTE_EXECUTIONS,    /* GET  /api/v1/executions */
    LG_ROUTE_EXECUTION,     /* GET  /api/v1/executions/{id} (id in `name`) */
    LG_ROUTE_KEYS,          /* GET, POST /api/v1/keys (admin) */
    LG_ROUTE_KEY,           /* DELETE /api/v1/keys/{id} (admin; id in `name`) */
    LG_ROUTE_OAI_CHAT,      /* POST /v1/chat/completions (the OpenAI-compatible face) */
    LG_ROUTE_OAI_MODELS,    /* GET  /v1/models */
    LG_ROUTE_OAI_MODEL,     /* GET  /v1/models/{id} (id in `name`, not checked: any id is a 404 model_not_found) */
    LG_ROUTE_OPENAPI,       /* GET  /openapi.json (public) */
    LG_ROUTE_DOCS,          /* GET  /docs (public) */
    LG_ROUTE_STATS,         /* GET  /api/v1/stats?window= (viewer) */
    LG_ROUTE_METRICS,       /* GET  /metrics (Prometheus) */
} lg_route_id_t;

typedef struct lg_route {
    lg_route_id_t id;
    int method_allowed;  /* 0: the path exists but not for this method (405) */
    const char *allow;   /* the methods the path accepts, for the Allow header */
    const char *name;    /* {name} or {id} inside the path (not NUL-terminated), NULL if none */
    size_t name_len;
} lg_route_t;

#define LG_AGENT_NAME_MAX 127

/** Agent names: 1..127 of [A-Za-z0-9_.-], no leading/trailing dot, no "..". */
int lg_agent_name_valid(const char *name, size_t len);
/** The route's label in metrics (its path template, e.g. "/api/v1/agents/{name}/execute"); every
 *  route id has one (router.c's switch has no default: -Wswitch names a route added without it). */
const char *lg_route_label(lg_route_id_t id);
/** Match `path` (without query string). HEAD is accepted wherever GET is. */
void lg_route_match(const char *method, size_t mlen, const char *path, size_t plen, lg_route_t *out);

#endif

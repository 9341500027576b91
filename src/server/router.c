#include "luagent/router.h"

#include <string.h>

int lg_agent_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > LG_AGENT_NAME_MAX || name[0] == '.' || name[len - 1] == '.')
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (c == '.' && i + 1 < len && name[i + 1] == '.')
            return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.'))
            return 0;
    }
    return 1;
}

static int eq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    return alen == n && memcmp(a, lit, n) == 0;
}

static int starts(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    return alen >= n && memcmp(a, lit, n) == 0;
}

/* allow: the methods, comma-separated ("GET, HEAD, POST") */
static void set(lg_route_t *r, lg_route_id_t id, const char *allow, const char *method, size_t mlen)
{
    r->id = id;
    r->allow = allow;
    r->method_allowed = 0;
    for (const char *p = allow; *p && !r->method_allowed; p += strspn(p, ", ")) {
        size_t n = strcspn(p, ", ");
        r->method_allowed = n == mlen && memcmp(p, method, n) == 0;
        p += n;
    }
}

void lg_route_match(const char *method, size_t mlen, const char *path, size_t plen, lg_route_t *r)
{
    memset(r, 0, sizeof(*r));
    if (plen > 1 && path[plen - 1] == '/')
        plen--; /* "/health/" is "/health" */
    if (eq(path, plen, "/health"))
        return set(r, LG_ROUTE_HEALTH, "GET, HEAD", method, mlen);
    if (eq(path, plen, "/ready"))
        return set(r, LG_ROUTE_READY, "GET, HEAD", method, mlen);
    if (eq(path, plen, "/info"))
        return set(r, LG_ROUTE_INFO, "GET, HEAD", method, mlen);
    if (eq(path, plen, "/openapi.json"))
        return set(r, LG_ROUTE_OPENAPI, "GET, HEAD", method, mlen);
    if (eq(path, plen, "/docs"))
        return set(r, LG_ROUTE_DOCS, "GET, HEAD", method, mlen);
    if (eq(path, plen, "/metrics"))
        return set(r, LG_ROUTE_METRICS, "GET, HEAD", method, mlen);
    if (eq(path, plen, "/api/v1/agent/execute"))
        return set(r, LG_ROUTE_EXECUTE, "POST", method, mlen);
    if (eq(path, plen, "/api/v1/agents"))
        return set(r, LG_ROUTE_AGENTS, "GET, HEAD", method, mlen);
    if (eq(path, plen, "/api/v1/executions"))
        return set(r, LG_ROUTE_EXECUTIONS, "GET, HEAD", method, mlen);
    if (eq(path, plen, "/api/v1/stats"))
        return set(r, LG_ROUTE_STATS, "GET, HEAD", method, mlen);
    if (eq(path, plen, "/api/v1/keys"))
        return set(r, LG_ROUTE_KEYS, "GET, HEAD, POST", method, mlen);
    if (eq(path, plen, "/v1/chat/completions"))
        return set(r, LG_ROUTE_OAI_CHAT, "POST", method, mlen);
    if (eq(path, plen, "/v1/models"))
        return set(r, LG_ROUTE_OAI_MODELS, "GET, HEAD", method, mlen);
    static const char mprefix[] = "/v1/models/";
    if (starts(path, plen, mprefix) && memchr(path + sizeof(mprefix) - 1, '/', plen - (sizeof(mprefix) - 1)) == NULL) {
        r->name = path + sizeof(mprefix) - 1;
        r->name_len = plen - (sizeof(mprefix) - 1);
        return set(r, LG_ROUTE_OAI_MODEL, "GET, HEAD", method, mlen);
    }
    static const char kprefix[] = "/api/v1/keys/";
    if (starts(path, plen, kprefix) && memchr(path + sizeof(kprefix) - 1, '/', plen - (sizeof(kprefix) - 1)) == NULL) {
        r->name = path + sizeof(kprefix) - 1;
        r->name_len = plen - (sizeof(kprefix) - 1);
        return set(r, LG_ROUTE_KEY, "DELETE", method, mlen);
    }
    static const char eprefix[] = "/api/v1/executions/";
    if (starts(path, plen, eprefix)) {
        const char *id = path + sizeof(eprefix) - 1;
        size_t idlen = plen - (sizeof(eprefix) - 1);
        if (memchr(id, '/', idlen) != NULL)
            return;
        r->name = id;
        r->name_len = idlen;
        return set(r, LG_ROUTE_EXECUTION, "GET, HEAD", method, mlen);
    }
    static const char prefix[] = "/api/v1/agents/";
    if (!starts(path, plen, prefix))
        return;
    const char *name = path + sizeof(prefix) - 1, *end = path + plen;
    const char *slash = memchr(name, '/', (size_t)(end - name));
    size_t nlen = (size_t)((slash ? slash : end) - name);
    if (!lg_agent_name_valid(name, nlen))
        return;
    r->name = name;
    r->name_len = nlen;
    if (slash == NULL)
        return set(r, LG_ROUTE_AGENT, "GET, HEAD", method, mlen);
    if (eq(slash, (size_t)(end - slash), "/execute"))
        return set(r, LG_ROUTE_AGENT_EXECUTE, "POST", method, mlen);
    r->name = NULL;
    r->name_len = 0;
}

const char *lg_route_label(lg_route_id_t id)
{
    switch (id) {
    case LG_ROUTE_NOT_FOUND: return "unmatched";
    case LG_ROUTE_HEALTH: return "/health";
    case LG_ROUTE_READY: return "/ready";
    case LG_ROUTE_INFO: return "/info";
    case LG_ROUTE_METRICS: return "/metrics";
    case LG_ROUTE_AGENTS: return "/api/v1/agents";
    case LG_ROUTE_AGENT: return "/api/v1/agents/{name}";
    case LG_ROUTE_AGENT_EXECUTE: return "/api/v1/agents/{name}/execute";
    case LG_ROUTE_EXECUTE: return "/api/v1/agent/execute";
    case LG_ROUTE_EXECUTIONS: return "/api/v1/executions";
    case LG_ROUTE_EXECUTION: return "/api/v1/executions/{id}";
    case LG_ROUTE_KEYS: return "/api/v1/keys";
    case LG_ROUTE_KEY: return "/api/v1/keys/{id}";
    case LG_ROUTE_STATS: return "/api/v1/stats";
    case LG_ROUTE_OAI_CHAT: return "/v1/chat/completions";
    case LG_ROUTE_OAI_MODELS: return "/v1/models";
    case LG_ROUTE_OAI_MODEL: return "/v1/models/{id}";
    case LG_ROUTE_OPENAPI: return "/openapi.json";
    case LG_ROUTE_DOCS: return "/docs";
    }
    return "other";
}

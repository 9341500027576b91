/* Admin routes for API keys: GET /api/v1/keys, POST /api/v1/keys, DELETE /api/v1/keys/{id}.
 * With Postgres the write goes through the worker's pool (the request waits, nothing blocks); with
 * the keys file it is one short local write (append, or a rewrite by rename on revocation). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/auth.h"
#include "luagent/json.h"
#include "luagent/pg.h"
#include "luagent/router.h"
#include "luagent/server.h"
#include "luagent/worker.h"

typedef struct key_wait {
    h2o_req_t *req;
    lg_pg_req_t *q;
    lg_newkey_t *nk;       /* POST: the key being stored */
    uint64_t start_ns;
    char key[LG_KEY_LEN + 1];
    char id[40], name[64], role[16], request_id[72];
} key_wait_t;

static void key_wait_dispose(void *p)
{
    key_wait_t *k = p;
    if (k->q != NULL)
        lg_pg_cancel(k->q);
    free(k->nk); /* the request went away before the key was stored */
}

static key_wait_t *key_wait_new(h2o_req_t *req, const char *request_id)
{
    key_wait_t *k = h2o_mem_alloc_shared(&req->pool, sizeof(*k), key_wait_dispose);
    memset(k, 0, sizeof(*k));
    k->req = req;
    k->start_ns = lg_now_mono_ns();
    snprintf(k->request_id, sizeof(k->request_id), "%s", request_id);
    return k;
}

static void reply_created(key_wait_t *k)
{
    lg_buf_t *b = &lg_worker_of(k->req)->scratch;
    lg_buf_reset(b);
    lg_buf_printf(b, "{\"id\":\"%s\",\"key\":\"%s\",\"name\":", k->id, k->key);
    lg_buf_json_str(b, k->name, strlen(k->name));
    lg_buf_printf(b, ",\"role\":\"%s\"}", k->role);
    lg_reply_json(k->req, 201, k->request_id, b->data, b->len);
}

/* answer a request that waited for Postgres, and log it */
static void finish(key_wait_t *k, int status, const char *code, const char *msg)
{
    if (code != NULL)
        lg_reply_error(k->req, status, code, msg, k->request_id);
    lg_access_log(k->req, status, k->request_id, k->start_ns, NULL, NULL, NULL);
}

static void on_inserted(void *data, PGresult *res, const char *err, const char *sqlstate)
{
    key_wait_t *k = data;
    k->q = NULL;
    char e[256];
    lg_newkey_t *nk = k->nk;
    k->nk = NULL;
    if (err != NULL) {
        free(nk);
        return finish(k, 503, "unavailable", "the key could not be stored: the database is unavailable");
    }
    lg_keys_keep(lg_worker_of(k->req)->server->cfg, nk, e, sizeof(e));
    reply_created(k);
    finish(k, 201, NULL, NULL);
}

static void on_revoked(void *data, PGresult *res, const char *err, const char *sqlstate)
{
    key_wait_t *k = data;
    k->q = NULL;
    if (err != NULL)
        return finish(k, 503, "unavailable", "the key could not be revoked: the database is unavailable");
    int found = atoi(PQcmdTuples(res)) > 0;
    lg_keys_forget(k->id);
    if (!found)
        return finish(k, 404, "not_found", "no such key");
    lg_buf_t *b = &lg_worker_of(k->req)->scratch;
    lg_buf_reset(b);
    lg_buf_printf(b, "{\"id\":\"%s\",\"revoked\":true}", k->id);
    lg_reply_json(k->req, 200, k->request_id, b->data, b->len);
    finish(k, 200, NULL, NULL);
}

/* The body of POST /api/v1/keys: {"name", "role", "rate_limit": "600/min", "expires_days": 30,
 * "agents": ["a", "b"]} */
static const char *parse_create(h2o_req_t *req, lua_State *L, char *name, lg_role_t *role, int *rate, int *window,
                                int *days, char *agents)
{
    if (lg_json_decode(L, req->entity.base ? req->entity.base : "", req->entity.len, 8, NULL) != LG_JSON_OK ||
        !lua_istable(L, -1))
        return "the body must be a JSON object {\"name\", \"role\", \"rate_limit\", \"expires_days\"}";
    lua_getfield(L, -1, "name");
    size_t n;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (s == NULL || n == 0 || n > 63)
        return "\"name\" must be a string of 1 to 63 bytes";
    memcpy(name, s, n + 1);
    lua_getfield(L, -2, "role");
    s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (s == NULL || (*role = lg_role_parse(s, n)) == LG_ROLE_NONE)
        return "\"role\" must be viewer, operator or admin";
    lua_getfield(L, -3, "rate_limit");
    *rate = *window = 0;
    if (!lua_isnil(L, -1) && (lua_type(L, -1) != LUA_TSTRING || lg_config_parse_rate(lua_tostring(L, -1), rate, window) != 0))
        return "\"rate_limit\" must look like \"600/min\" (per s, min or hour)";
    lua_getfield(L, -4, "expires_days");
    *days = 0;
    if (!lua_isnil(L, -1) && (!lua_isnumber(L, -1) || (*days = (int)lua_tonumber(L, -1)) < 1 || *days > 36500))
        return "\"expires_days\" must be a whole number of days from 1 to 36500";
    lua_getfield(L, -5, "agents");
    agents[0] = '\0';
    if (!lua_isnil(L, -1)) {
        static const char bad[] = "\"agents\" must be an array of agent names (the agents the key may run)";
        if (!lua_istable(L, -1))
            return bad;
        size_t n = lua_objlen(L, -1), used = 0;
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, (int)i);
            size_t len;
            const char *a = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
            if (a == NULL || !lg_agent_name_valid(a, len) || used + len + 2 > LG_KEY_AGENTS_MAX)
                return bad;
            if (used > 0)
                agents[used++] = ',';
            memcpy(agents + used, a, len);
            agents[used += len] = '\0';
            lua_pop(L, 1);
        }
    }
    return NULL;
}

static int create_key(h2o_req_t *req, const char *request_id)
{
    lg_worker_t *w = lg_worker_of(req);
    lua_State *L = w->rt.vm.L; /* the VM's main thread: no execution runs while this handler does */
    int top = lua_gettop(L), rate, window, days;
    char name[64], agents[LG_KEY_AGENTS_MAX];
    lg_role_t role;
    const char *bad = parse_create(req, L, name, &role, &rate, &window, &days, agents);
    lua_settop(L, top);
    if (bad != NULL) {
        lg_reply_error(req, 400, "invalid_request", bad, request_id);
        return 400;
    }
    key_wait_t *k = key_wait_new(req, request_id);
    k->nk = lg_keys_new(name, role, rate, window, days, agents, k->key);
    snprintf(k->id, sizeof(k->id), "%s", lg_newkey_id(k->nk));
    snprintf(k->name, sizeof(k->name), "%s", name);
    snprintf(k->role, sizeof(k->role), "%s", lg_role_name(role));
    const lg_config_t *cfg = w->server->cfg;
    if (lg_keys_in_db(cfg)) {
        lg_pg_t *pg = lg_rt_pg(&w->rt);
        const char *params[9], *err = "libpq is not available";
        lg_keys_insert_params(k->nk, params);
        if (pg != NULL && (k->q = lg_pg_query(pg, LG_KEYS_INSERT_SQL, 9, params, NULL, NULL, on_inserted, k, &err)) != NULL)
            return -1;
        lg_reply_error(req, 503, "unavailable", "the key could not be stored: the database is unavailable", request_id);
        return 503;
    }
    char err[256];
    lg_newkey_t *nk = k->nk;
    k->nk = NULL;
    if (lg_keys_keep(cfg, nk, err, sizeof(err)) != 0) {
        lg_reply_error(req, 500, "internal_error", "the key could not be stored", request_id);
        return 500;
    }
    reply_created(k);
    return 201;
}

static int revoke_key(h2o_req_t *req, const lg_route_t *route, const char *request_id)
{
    lg_worker_t *w = lg_worker_of(req);
    const lg_config_t *cfg = w->server->cfg;
    char id[40];
    if (route->name_len == 0 || route->name_len >= sizeof(id)) {
        lg_reply_error(req, 404, "not_found", "no such key", request_id);
        return 404;
    }
    memcpy(id, route->name, route->name_len);
    id[route->name_len] = '\0';
    if (lg_keys_in_db(cfg)) {
        key_wait_t *k = key_wait_new(req, request_id);
        snprintf(k->id, sizeof(k->id), "%s", id);
        lg_pg_t *pg = lg_rt_pg(&w->rt);
        const char *params[1] = {k->id}, *err = NULL;
        if (route->name_len == LG_UUID_LEN && pg != NULL &&
            (k->q = lg_pg_query(pg, LG_KEYS_REVOKE_SQL, 1, params, NULL, NULL, on_revoked, k, &err)) != NULL)
            return -1;
        if (route->name_len != LG_UUID_LEN) {
            lg_reply_error(req, 404, "not_found", "no such key", request_id);
            return 404;
        }
        lg_reply_error(req, 503, "unavailable", "the key could not be revoked: the database is unavailable", request_id);
        return 503;
    }
    char err[256];
    int rc = cfg->api_keys_file != NULL ? lg_keys_revoke(cfg, id, err, sizeof(err)) : lg_keys_forget(id);
    if (rc <= 0) {
        lg_reply_error(req, rc == 0 ? 404 : 500, rc == 0 ? "not_found" : "internal_error",
                       rc == 0 ? "no such key" : "the key could not be revoked", request_id);
        return rc == 0 ? 404 : 500;
    }
    lg_buf_t *b = &w->scratch;
    lg_buf_reset(b);
    lg_buf_printf(b, "{\"id\":\"%s\",\"revoked\":true}", id);
    lg_reply_json(req, 200, request_id, b->data, b->len);
    return 200;
}

int lg_keys_route(h2o_req_t *req, const lg_route_t *route, const char *request_id, lg_buf_t *b)
{
    if (route->id == LG_ROUTE_KEY)
        return revoke_key(req, route, request_id);
    if (req->method.len == 4 && memcmp(req->method.base, "POST", 4) == 0)
        return create_key(req, request_id);
    lg_buf_lit(b, "{\"items\":");
    lg_keys_list_json(b);
    lg_buf_putc(b, '}');
    lg_reply_json(req, 200, request_id, b->data, b->len);
    return 200;
}

/* The OpenAPI generator without HTTP: the route table agrees with the router and with the roles
 * handlers.c enforces, and the document built from a registry on a scratch directory is valid JSON
 * with one typed operation per loaded agent. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/json.h"
#include "luagent/log.h"
#include "luagent/openapi.h"
#include "luagent/registry.h"

static char dir[64];

static void write_agent(const char *name, const char *src)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s.lua", dir, name);
    FILE *f = fopen(path, "w");
    fputs(src, f);
    fclose(f);
}

/* Each entry's path, with sample values for its parameters, is the entry's route for its method. */
static void test_table_matches_router(void **state)
{
    assert_true(LG_OPENAPI_NOPS >= 13);
    for (size_t i = 0; i < LG_OPENAPI_NOPS; i++) {
        const lg_openapi_op_t *op = &LG_OPENAPI_OPS[i];
        char path[256], method[16];
        size_t n = 0;
        for (const char *p = op->path; *p && n < sizeof(path) - 64; p++) {
            if (*p == '{') {
                const char *end = strchr(p, '}');
                const char *v = strncmp(p, "{name}", 6) == 0 ? "team.review" : "0190a6c2-6f4e-7a3b-8c1d-2e3f4a5b6c7d";
                n += (size_t)snprintf(path + n, sizeof(path) - n, "%s", v);
                p = end;
            } else {
                path[n++] = *p;
            }
        }
        path[n] = '\0';
        for (n = 0; op->method[n] && n < sizeof(method) - 1; n++)
            method[n] = (char)(op->method[n] - 'a' + 'A');
        method[n] = '\0';
        lg_route_t r;
        lg_route_match(method, strlen(method), path, strlen(path), &r);
        if (r.id != op->route || !r.method_allowed)
            fail_msg("%s %s routes to %d (method allowed: %d), the table says %d", method, path, r.id,
                     r.method_allowed, op->route);
        /* the paths of one route are adjacent, so the generator writes each path object once */
        for (size_t j = i + 2; j < LG_OPENAPI_NOPS; j++)
            if (strcmp(LG_OPENAPI_OPS[j].path, op->path) == 0 && strcmp(LG_OPENAPI_OPS[j - 1].path, op->path) != 0)
                fail_msg("%s appears twice, not adjacent", op->path);
    }
    assert_int_equal(lg_route_role(LG_ROUTE_OPENAPI), LG_ROLE_NONE);
    assert_int_equal(lg_route_role(LG_ROUTE_DOCS), LG_ROLE_NONE);
}

/* t[k1][k2]... onto the stack (nil when absent). */
static void get_path(lua_State *L, int idx, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    lua_pushvalue(L, idx);
    for (int i = 0; i < n; i++) {
        const char *k = va_arg(ap, const char *);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);
            break;
        }
        lua_getfield(L, -1, k);
        lua_remove(L, -2);
    }
    va_end(ap);
}

static void test_document_from_registry(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/lg-openapi-XXXXXX");
    assert_non_null(mkdtemp(dir));
    write_agent("typed", "return {description = 'Summarize <b>text</b> \"quoted\"',\n"
                         "  input = {type = 'object', required = {'text'},\n"
                         "           properties = {text = {type = 'string', maxLength = 200}}},\n"
                         "  execute = function(t) return t.text end}");
    write_agent("untyped", "return {execute = function(t) return t end}");
    write_agent("broken", "return {execute = ");
    lg_log_setup(LG_LOG_ERROR, LG_LOG_JSON, NULL);
    assert_int_equal(lg_registry_init(LG_SCRIPT_AGENT, dir, 64 << 20), 0);
    lg_registry_scan(LG_SCRIPT_AGENT);

    lg_buf_t doc = {0};
    lg_openapi_build(&doc);
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaopen_luagent_json(L);
    lua_pop(L, 1);
    lg_json_error_t err;
    if (lg_json_decode(L, doc.data, doc.len, 64, &err) != LG_JSON_OK)
        fail_msg("not JSON: %s\n%s", err.msg, doc.data);
    int d = lua_gettop(L);

    get_path(L, d, 1, "openapi");
    assert_string_equal(lua_tostring(L, -1), "3.1.0");
    /* the typed agent: its task is its input schema, its description text escaped, not dropped */
    get_path(L, d, 7, "paths", "/api/v1/agents/typed/execute", "post", "requestBody", "content", "application/json",
             "schema");
    int s = lua_gettop(L);
    assert_true(lua_istable(L, s));
    get_path(L, s, 3, "properties", "task", "type");
    assert_string_equal(lua_tostring(L, -1), "object");
    get_path(L, s, 5, "properties", "task", "properties", "text", "maxLength");
    assert_int_equal((int)lua_tonumber(L, -1), 200);
    get_path(L, s, 3, "properties", "task", "required");
    lua_rawgeti(L, -1, 1);
    assert_string_equal(lua_tostring(L, -1), "text");
    get_path(L, d, 4, "paths", "/api/v1/agents/typed/execute", "post", "description");
    assert_string_equal(lua_tostring(L, -1), "Summarize <b>text</b> \"quoted\"");
    get_path(L, d, 4, "paths", "/api/v1/agents/typed/execute", "post", "x-required-role");
    assert_string_equal(lua_tostring(L, -1), "operator");
    /* without `input`: any task but null */
    get_path(L, d, 10, "paths", "/api/v1/agents/untyped/execute", "post", "requestBody", "content", "application/json",
             "schema", "properties", "task", "$ref");
    assert_string_equal(lua_tostring(L, -1), "#/components/schemas/AnyTask");
    /* a file that never loaded has no operation */
    get_path(L, d, 2, "paths", "/api/v1/agents/broken/execute");
    assert_true(lua_isnil(L, -1));
    /* public routes say so; the others need their role */
    get_path(L, d, 4, "paths", "/health", "get", "security");
    assert_true(lua_istable(L, -1));
    assert_int_equal((int)lua_objlen(L, -1), 0);
    get_path(L, d, 5, "paths", "/health", "get", "responses", "401");
    assert_true(lua_isnil(L, -1));
    get_path(L, d, 4, "paths", "/api/v1/keys", "post", "x-required-role");
    assert_string_equal(lua_tostring(L, -1), "admin");
    get_path(L, d, 6, "paths", "/api/v1/keys", "get", "responses", "401", "$ref");
    assert_string_equal(lua_tostring(L, -1), "#/components/responses/Unauthenticated");
    get_path(L, d, 3, "components", "schemas", "Error");
    assert_true(lua_istable(L, -1));

    lua_close(L);
    lg_buf_free(&doc);
    lg_registry_dispose();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_matches_router),
        cmocka_unit_test(test_document_from_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "luagent/router.h"

static lg_route_t match(const char *method, const char *path)
{
    lg_route_t r;
    lg_route_match(method, strlen(method), path, strlen(path), &r);
    return r;
}

static void test_static_routes(void **state)
{
    assert_int_equal(match("GET", "/health").id, LG_ROUTE_HEALTH);
    assert_int_equal(match("GET", "/health/").id, LG_ROUTE_HEALTH);
    assert_int_equal(match("HEAD", "/ready").id, LG_ROUTE_READY);
    assert_int_equal(match("GET", "/info").id, LG_ROUTE_INFO);
    assert_int_equal(match("GET", "/metrics").id, LG_ROUTE_METRICS);
    assert_string_equal(lg_route_label(LG_ROUTE_AGENT_EXECUTE), "/api/v1/agents/{name}/execute");
    assert_string_equal(lg_route_label(LG_ROUTE_NOT_FOUND), "unmatched");
    assert_int_equal(match("GET", "/api/v1/agents").id, LG_ROUTE_AGENTS);
    assert_int_equal(match("GET", "/nope").id, LG_ROUTE_NOT_FOUND);
    assert_int_equal(match("GET", "/api/v1/stats").id, LG_ROUTE_STATS);
    assert_false(match("POST", "/api/v1/stats").method_allowed);
    assert_int_equal(match("GET", "/").id, LG_ROUTE_NOT_FOUND); /* the dashboard: static files (static.c) */
    assert_int_equal(match("GET", "/healthz").id, LG_ROUTE_NOT_FOUND);
}

static void test_agent_routes(void **state)
{
    lg_route_t r = match("POST", "/api/v1/agents/team.review/execute");
    assert_int_equal(r.id, LG_ROUTE_AGENT_EXECUTE);
    assert_true(r.method_allowed);
    assert_int_equal(r.name_len, strlen("team.review"));
    assert_memory_equal(r.name, "team.review", r.name_len);
    r = match("GET", "/api/v1/agents/hello");
    assert_int_equal(r.id, LG_ROUTE_AGENT);
    assert_int_equal(r.name_len, 5);
    assert_int_equal(match("POST", "/api/v1/agent/execute").id, LG_ROUTE_EXECUTE);
    assert_int_equal(match("POST", "/api/v1/agents/hello/other").id, LG_ROUTE_NOT_FOUND);
}

static void test_execution_routes(void **state)
{
    assert_int_equal(match("GET", "/api/v1/executions").id, LG_ROUTE_EXECUTIONS);
    assert_int_equal(match("POST", "/api/v1/executions").method_allowed, 0);
    lg_route_t r = match("GET", "/api/v1/executions/0190a5e2-7c1f-7000-8000-000000000001");
    assert_int_equal(r.id, LG_ROUTE_EXECUTION);
    assert_int_equal(r.name_len, 36);
    assert_memory_equal(r.name, "0190a5e2", 8);
    assert_int_equal(match("GET", "/api/v1/executions/x/y").id, LG_ROUTE_NOT_FOUND);
    assert_true(match("POST", "/api/v1/keys").method_allowed);
    assert_true(match("GET", "/api/v1/keys").method_allowed);
    assert_false(match("DELETE", "/api/v1/keys").method_allowed);
    r = match("DELETE", "/api/v1/keys/abc");
    assert_int_equal(r.id, LG_ROUTE_KEY);
    assert_true(r.method_allowed);
    assert_int_equal(r.name_len, 3);
    assert_false(match("GET", "/api/v1/keys/abc").method_allowed);
    assert_false(match("GETX", "/health").method_allowed);
    assert_true(match("HEAD", "/health").method_allowed);
}

static void test_openai_routes(void **state)
{
    lg_route_t r = match("POST", "/v1/chat/completions");
    assert_int_equal(r.id, LG_ROUTE_OAI_CHAT);
    assert_true(r.method_allowed);
    r = match("GET", "/v1/chat/completions");
    assert_int_equal(r.id, LG_ROUTE_OAI_CHAT);
    assert_false(r.method_allowed);
    assert_string_equal(r.allow, "POST");
    assert_int_equal(match("GET", "/v1/models").id, LG_ROUTE_OAI_MODELS);
    assert_int_equal(match("GET", "/v1/models/").id, LG_ROUTE_OAI_MODELS);
    assert_false(match("POST", "/v1/models").method_allowed);
    r = match("GET", "/v1/models/team.review");
    assert_int_equal(r.id, LG_ROUTE_OAI_MODEL);
    assert_true(r.method_allowed);
    assert_int_equal(r.name_len, strlen("team.review"));
    assert_memory_equal(r.name, "team.review", r.name_len);
    assert_int_equal(match("GET", "/v1/models/a/b").id, LG_ROUTE_NOT_FOUND);
    assert_int_equal(match("POST", "/v1/embeddings").id, LG_ROUTE_NOT_FOUND);
    assert_int_equal(match("POST", "/v1/chat/completions/x").id, LG_ROUTE_NOT_FOUND);
}

static void test_wrong_method_is_405(void **state)
{
    lg_route_t r = match("GET", "/api/v1/agents/hello/execute");
    assert_int_equal(r.id, LG_ROUTE_AGENT_EXECUTE);
    assert_false(r.method_allowed);
    assert_string_equal(r.allow, "POST");
    r = match("DELETE", "/health");
    assert_false(r.method_allowed);
    assert_string_equal(r.allow, "GET, HEAD");
}

static void test_agent_names(void **state)
{
    assert_true(lg_agent_name_valid("a", 1));
    assert_true(lg_agent_name_valid("team.review-2_x", 15));
    assert_false(lg_agent_name_valid("", 0));
    assert_false(lg_agent_name_valid(".a", 2));
    assert_false(lg_agent_name_valid("a.", 2));
    assert_false(lg_agent_name_valid("a..b", 4));
    assert_false(lg_agent_name_valid("a/b", 3));
    assert_false(lg_agent_name_valid("a%2e", 4));
    char long_name[200];
    memset(long_name, 'a', sizeof(long_name));
    assert_false(lg_agent_name_valid(long_name, 128));
    assert_true(lg_agent_name_valid(long_name, 127));
    assert_int_equal(match("GET", "/api/v1/agents/..%2f").id, LG_ROUTE_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_static_routes),
        cmocka_unit_test(test_agent_routes),
        cmocka_unit_test(test_execution_routes),
        cmocka_unit_test(test_openai_routes),
        cmocka_unit_test(test_wrong_method_is_405),
        cmocka_unit_test(test_agent_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

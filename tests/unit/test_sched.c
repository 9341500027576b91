/* The scheduler end to end, without HTTP: a runtime, a registry on a scratch directory, and
 * executions driven by lg_rt_run_once exactly as a worker drives them. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "luagent/json.h"
#include "luagent/log.h"
#include "luagent/registry.h"
#include "luagent/sched.h"

static char dir[64];
static lg_config_t cfg;
static lg_rt_t rt;
static h2o_evloop_t *loop;

typedef struct {
    int done;
    lg_exec_end_t end;
    char result[256];
} outcome_t;

static void on_done(lg_exec_t *e)
{
    outcome_t *o = e->owner;
    o->done = 1;
    o->end = e->end;
    lg_buf_t b = {0};
    lg_json_error_t err;
    if (lua_gettop(e->co) > 0 && lg_json_encode(e->co, -1, &b, 16, &err) == LG_JSON_OK)
        snprintf(o->result, sizeof(o->result), "%s", b.data);
    lg_buf_free(&b);
}

static const lg_exec_ops_t ops = {.on_done = on_done};

static void write_agent(const char *name, const char *src)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s.lua", dir, name);
    FILE *f = fopen(path, "w");
    fputs(src, f);
    fclose(f);
}

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/lg-sched-XXXXXX");
    assert_non_null(mkdtemp(dir));
    write_agent("sleepy", "return {execute = function(t) luagent.sleep(t.ms) return t.ms end}");
    write_agent("spin", "return {timeout_ms = 100, execute = function() while true do end end}");
    write_agent("wait", "return {timeout_ms = 100, execute = function() luagent.sleep(10000) end}");
    write_agent("yield", "return {execute = function() coroutine.yield() end}");
    write_agent("inner", "return {execute = function() local co = coroutine.create(function() luagent.sleep(1) end)\n"
                         "local ok, err = coroutine.resume(co) return {ok = ok, err = err} end}");
    write_agent("pcall", "return {execute = function() local ok = pcall(luagent.sleep, 5) return ok end}");
    memset(&cfg, 0, sizeof(cfg));
    cfg.exec_timeout_ms = 5000;
    cfg.memory_limit_mb = 64;
    lg_log_setup(LG_LOG_ERROR, LG_LOG_JSON, NULL);
    assert_int_equal(lg_registry_init(LG_SCRIPT_AGENT, dir, 64 << 20), 0);
    assert_int_equal(lg_registry_scan(LG_SCRIPT_AGENT), 6);
    loop = h2o_evloop_create();
    assert_int_equal(lg_rt_init(&rt, &cfg, loop), 0);
    return 0;
}

static int teardown(void **state)
{
    lg_rt_dispose(&rt);
    h2o_evloop_destroy(loop);
    lg_registry_dispose();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd);
}

static void launch(outcome_t *o, const char *agent, const char *task)
{
    memset(o, 0, sizeof(*o));
    lg_exec_t *e = lg_exec_new(&rt, &ops, o);
    lg_json_error_t err;
    assert_int_equal(lg_json_decode(e->co, task, strlen(task), 16, &err), LG_JSON_OK);
    lua_pushnil(e->co);
    assert_int_equal(lg_exec_launch(e, agent, strlen(agent), 0, NULL), LG_LAUNCH_OK);
}

static void run_until_done(outcome_t *o, int n)
{
    for (int spins = 0; spins < 100000; spins++) {
        int all = 1;
        for (int i = 0; i < n; i++)
            all &= o[i].done;
        if (all)
            return;
        lg_rt_run_once(&rt, 50);
    }
    fail_msg("executions did not finish");
}

static void test_sleeps_overlap(void **state)
{
    enum { N = 500 };
    static outcome_t o[N];
    uint64_t t0 = lg_now_mono_ms();
    for (int i = 0; i < N; i++)
        launch(&o[i], "sleepy", "{\"ms\": 100}");
    assert_int_equal(rt.inflight, N);
    run_until_done(o, N);
    uint64_t took = lg_now_mono_ms() - t0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(o[i].end, LG_END_OK);
        assert_string_equal(o[i].result, "100");
    }
    assert_true(took >= 100);
    assert_true(took < 2000); /* one after another would take 50 s */
    assert_int_equal(rt.inflight, 0);
}

static void test_runaway_and_waiting_deadlines(void **state)
{
    outcome_t o[3];
    launch(&o[0], "spin", "{}");
    launch(&o[1], "wait", "{}");
    launch(&o[2], "sleepy", "{\"ms\": 1}");
    run_until_done(o, 3);
    assert_int_equal(o[0].end, LG_END_TIMEOUT);
    assert_int_equal(o[1].end, LG_END_TIMEOUT);
    assert_int_equal(o[2].end, LG_END_OK);
    assert_int_equal(rt.timers.n, 0); /* the sleep's timer was cleaned up with its execution */
}

static void test_yield_misuse_is_an_error(void **state)
{
    outcome_t o[3];
    launch(&o[0], "yield", "{}");
    launch(&o[1], "inner", "{}");
    launch(&o[2], "pcall", "{}");
    run_until_done(o, 3);
    assert_int_equal(o[0].end, LG_END_ERROR);
    assert_non_null(strstr(o[0].result, "coroutine.yield"));
    assert_int_equal(o[1].end, LG_END_OK);
    assert_non_null(strstr(o[1].result, "cannot be called inside a coroutine created by the agent"));
    assert_int_equal(o[2].end, LG_END_OK); /* yielding across pcall works in LuaJIT */
    assert_string_equal(o[2].result, "true");
}

static void test_cancel_runs_cleanup(void **state)
{
    outcome_t o;
    memset(&o, 0, sizeof(o));
    lg_exec_t *e = lg_exec_new(&rt, &ops, &o);
    lg_json_error_t err;
    lg_json_decode(e->co, "{\"ms\":5000}", 11, 4, &err);
    lua_pushnil(e->co);
    assert_int_equal(lg_exec_launch(e, "sleepy", 6, 0, NULL), LG_LAUNCH_OK);
    lg_rt_run_once(&rt, 0); /* runs until the sleep */
    assert_int_equal(rt.timers.n, 2); /* deadline + sleep */
    lg_exec_cancel(e);
    assert_true(o.done);
    assert_int_equal(o.end, LG_END_CANCELLED);
    assert_int_equal(rt.timers.n, 0);
    assert_int_equal(rt.inflight, 0);
}

static void test_unknown_agent(void **state)
{
    outcome_t o;
    lg_exec_t *e = lg_exec_new(&rt, &ops, &o);
    lua_pushboolean(e->co, 1);
    lua_pushnil(e->co);
    assert_int_equal(lg_exec_launch(e, "nosuch", 6, 0, NULL), LG_LAUNCH_NO_AGENT);
    lua_settop(e->co, 0);
    lg_exec_discard(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sleeps_overlap),
        cmocka_unit_test(test_runaway_and_waiting_deadlines),
        cmocka_unit_test(test_yield_misuse_is_an_error),
        cmocka_unit_test(test_cancel_runs_cleanup),
        cmocka_unit_test(test_unknown_agent),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

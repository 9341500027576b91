#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "luagent/timers.h"

typedef struct {
    lg_timer_t t;
    int fired;
    uint64_t order;
} probe_t;

static uint64_t seq;

static void on_fire(lg_timer_t *t)
{
    probe_t *p = (probe_t *)t;
    p->fired++;
    p->order = ++seq;
}

static void test_fires_in_deadline_order(void **state)
{
    lg_timerheap_t h = {0};
    probe_t p[200];
    seq = 0;
    srand(7);
    for (int i = 0; i < 200; i++) {
        lg_timer_init(&p[i].t, on_fire);
        p[i].fired = 0;
        lg_timers_add(&h, &p[i].t, 1000 + (uint64_t)(rand() % 500));
    }
    assert_int_equal(lg_timers_wait_ms(&h, 900) >= 100, 1);
    assert_int_equal(lg_timers_run(&h, 999), 0);
    assert_int_equal(lg_timers_run(&h, 2000), 200);
    for (int i = 0; i < 200; i++)
        for (int j = 0; j < 200; j++)
            if (p[i].t.at_ms < p[j].t.at_ms)
                assert_true(p[i].order < p[j].order);
    assert_int_equal(lg_timers_wait_ms(&h, 0), -1);
    lg_timers_free(&h);
}

static void test_delete_and_move(void **state)
{
    lg_timerheap_t h = {0};
    probe_t a, b, c;
    lg_timer_init(&a.t, on_fire);
    lg_timer_init(&b.t, on_fire);
    lg_timer_init(&c.t, on_fire);
    a.fired = b.fired = c.fired = 0;
    lg_timers_add(&h, &a.t, 10);
    lg_timers_add(&h, &b.t, 20);
    lg_timers_add(&h, &c.t, 30);
    lg_timers_del(&h, &a.t);
    assert_false(lg_timer_active(&a.t));
    lg_timers_del(&h, &a.t); /* idle: no-op */
    lg_timers_add(&h, &c.t, 5); /* moving an active timer */
    assert_int_equal(lg_timers_wait_ms(&h, 0), 5);
    assert_int_equal(lg_timers_run(&h, 25), 2);
    assert_int_equal(a.fired, 0);
    assert_int_equal(b.fired, 1);
    assert_int_equal(c.fired, 1);
    assert_int_equal(h.n, 0);
    lg_timers_free(&h);
}

static lg_timerheap_t *rearm_heap;
static void rearm(lg_timer_t *t)
{
    probe_t *p = (probe_t *)t;
    if (++p->fired < 3)
        lg_timers_add(rearm_heap, t, t->at_ms + 10);
}

static void test_callback_may_rearm(void **state)
{
    lg_timerheap_t h = {0};
    probe_t p;
    rearm_heap = &h;
    lg_timer_init(&p.t, rearm);
    p.fired = 0;
    lg_timers_add(&h, &p.t, 10);
    lg_timers_run(&h, 100);
    assert_int_equal(p.fired, 3);
    lg_timers_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fires_in_deadline_order),
        cmocka_unit_test(test_delete_and_move),
        cmocka_unit_test(test_callback_may_rearm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

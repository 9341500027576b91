#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "luagent/trace.h"

static int valid(const char *s) { return lg_trace_valid(s, strlen(s)); }

#define GOOD "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

static void test_valid_and_invalid(void **state)
{
    assert_true(valid(GOOD));
    assert_true(valid("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"));
    /* a later version: parse the first 55 characters; more must start with '-' */
    assert_true(valid("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    assert_true(valid("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-next"));
    assert_false(valid("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x"));
    assert_false(valid("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));   /* forbidden version */
    assert_false(valid("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-")); /* 00 is exactly 55 */
    assert_false(valid("00-00000000000000000000000000000000-b7ad6b7169203331-01"));  /* zero trace id */
    assert_false(valid("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"));  /* zero parent id */
    assert_false(valid("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"));  /* uppercase */
    assert_false(valid("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01"));   /* short parent */
    assert_false(valid("00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01"));  /* separator */
    assert_false(valid("00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01"));  /* not hex */
    assert_false(valid("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0z"));  /* flags */
    assert_false(valid(""));
    assert_false(lg_trace_valid(NULL, 0));
}

static void test_new_ids_are_lowercase_hex_of_every_digit(void **state)
{
    int seen[16] = {0};
    for (int n = 0; n < 200; n++) {
        char t[LG_TRACEPARENT_LEN + 1];
        lg_trace_start(NULL, 0, t);
        assert_true(valid(t));
        for (int i = 3; i < 52; i++)
            if (t[i] != '-')
                seen[t[i] <= '9' ? t[i] - '0' : t[i] - 'a' + 10]++;
    }
    for (int d = 0; d < 16; d++)
        assert_true(seen[d] > 0);
}

static void test_start_and_child(void **state)
{
    char a[LG_TRACEPARENT_LEN + 1], b[LG_TRACEPARENT_LEN + 1], c[LG_TRACEPARENT_LEN + 1];
    lg_trace_start(GOOD, strlen(GOOD), a);
    assert_true(valid(a));
    assert_memory_equal(a, GOOD, 36);                 /* version, trace id */
    assert_memory_not_equal(a + 36, GOOD + 36, 16);   /* our own span */
    assert_string_equal(a + 52, "-01");               /* flags kept */
    lg_trace_start("00-00000000000000000000000000000000-b7ad6b7169203331-01", 55, b); /* invalid: new trace */
    assert_true(valid(b));
    assert_memory_not_equal(b + 3, "00000000000000000000000000000000", 32);
    lg_trace_start(NULL, 0, c);
    assert_true(valid(c));
    assert_memory_not_equal(b + 3, c + 3, 32);
    char k1[LG_TRACEPARENT_LEN + 1], k2[LG_TRACEPARENT_LEN + 1];
    lg_trace_child(a, k1);
    lg_trace_child(a, k2);
    assert_true(valid(k1));
    assert_memory_equal(k1, a, 36);
    assert_memory_not_equal(k1 + 36, a + 36, 16);
    assert_memory_not_equal(k1 + 36, k2 + 36, 16);
    assert_string_equal(k1 + 52, a + 52);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_and_invalid),
        cmocka_unit_test(test_start_and_child),
        cmocka_unit_test(test_new_ids_are_lowercase_hex_of_every_digit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "luagent/buf.h"

static void test_append_and_printf(void **state)
{
    lg_buf_t b = {0};
    lg_buf_lit(&b, "ab");
    lg_buf_putc(&b, 'c');
    lg_buf_printf(&b, "-%d-", 42);
    assert_string_equal(b.data, "abc-42-");
    assert_int_equal(b.len, 7);
    lg_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    lg_buf_free(&b);
}

static void test_grows_past_initial_capacity(void **state)
{
    lg_buf_t b = {0};
    char big[5000];
    memset(big, 'x', sizeof(big));
    lg_buf_append(&b, big, sizeof(big));
    lg_buf_printf(&b, "%s", "tail");
    assert_int_equal(b.len, 5004);
    assert_memory_equal(b.data + 5000, "tail", 5);
    lg_buf_free(&b);
}

static void test_json_str_escapes(void **state)
{
    lg_buf_t b = {0};
    lg_buf_json_str(&b, "a\"b\\c\n\x01/\xc3\xa9", 10);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\u0001/\xc3\xa9\"");
    lg_buf_free(&b);
}

static void test_json_str_replaces_invalid_utf8(void **state)
{
    lg_buf_t b = {0};
    lg_buf_json_str(&b, "a\xff\xc3(\xe2\x82\xac", 7); /* 0xff, a truncated 2-byte, then a valid euro sign */
    assert_string_equal(b.data, "\"a\xEF\xBF\xBD\xEF\xBF\xBD(\xe2\x82\xac\"");
    lg_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_printf),
        cmocka_unit_test(test_grows_past_initial_capacity),
        cmocka_unit_test(test_json_str_escapes),
        cmocka_unit_test(test_json_str_replaces_invalid_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

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

/* Bytes that lg_buf_json_str copies as they are, some of them one bit away from a special byte
 * ('#' is '"' ^ 1, ']' is '\\' ^ 1, ' ' is the lowest plain one, 0x7f the highest). */
static const char filler[] = "a# ]/~\x7f" "0Z!";

static char fill(size_t i)
{
    return filler[i % (sizeof filler - 1)];
}

/* A special byte (or sequence) and what lg_buf_json_str writes for it, followed by plain bytes. */
typedef struct special {
    const char *in;
    const char *out;
} special_t;

static const special_t specials[] = {
    {"\"", "\\\""},
    {"\\", "\\\\"},
    {"\n", "\\n"},
    {"\x01", "\\u0001"},
    {"\x1f", "\\u001f"},
    {"\xc3\xa9", "\xc3\xa9"},                 /* valid UTF-8 is copied */
    {"\xe2\x82\xac", "\xe2\x82\xac"},
    {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},
    {"\x80", "\xef\xbf\xbd"},                 /* each byte of an invalid sequence: U+FFFD */
    {"\xff", "\xef\xbf\xbd"},
    {"\xc3", "\xef\xbf\xbd"},                 /* truncated by the plain byte after it */
    {"\xe2\x82", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* a surrogate */
};

/* Check lg_buf_json_str on `plain` plain bytes, the special, then `after` plain bytes, appended after
 * `pre` bytes already in the buffer; the input is an exact heap copy (ASan sees any overread). */
static void check_special(const special_t *sp, size_t plain, size_t after, size_t pre)
{
    size_t sl = strlen(sp->in), n = plain + sl + after;
    char *in = malloc(n ? n : 1);
    lg_buf_t want = {0}, b = {0};
    for (size_t i = 0; i < pre; i++) {
        lg_buf_putc(&b, 'p');
        lg_buf_putc(&want, 'p');
    }
    lg_buf_putc(&want, '"');
    for (size_t i = 0; i < plain; i++) {
        in[i] = fill(i);
        lg_buf_putc(&want, fill(i));
    }
    memcpy(in + plain, sp->in, sl);
    lg_buf_append(&want, sp->out, strlen(sp->out));
    for (size_t i = 0; i < after; i++) {
        in[plain + sl + i] = fill(i + 3);
        lg_buf_putc(&want, fill(i + 3));
    }
    lg_buf_putc(&want, '"');
    lg_buf_json_str(&b, in, n);
    if (b.len != want.len || memcmp(b.data, want.data, want.len + 1) != 0) {
        print_error("special %u at %zu, %zu after, %zu before: wrong output\n", (unsigned char)sp->in[0], plain, after,
                    pre);
        fail();
    }
    free(in);
    lg_buf_free(&want);
    lg_buf_free(&b);
}

static void test_json_str_special_at_each_offset(void **state)
{
    for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++)
        for (size_t plain = 0; plain <= 17; plain++)
            for (size_t after = 0; after <= 17; after++)
                check_special(&specials[k], plain, after, (plain + after) % 11);
    /* only plain bytes, every length up to 40 */
    special_t none = {"", ""};
    for (size_t n = 0; n <= 40; n++)
        check_special(&none, n, 0, n % 5);
}

static void test_json_str_chunk_boundaries(void **state)
{
    /* the output is reserved 4096 input bytes at a time: the special at either side of the first
     * and second boundary, the string ending right after it or a few bytes later */
    static const size_t afters[] = {0, 1, 3, 7, 8, 9, 300};
    for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++)
        for (size_t base = 4096; base <= 8192; base += 4096)
            for (size_t plain = base - 9; plain <= base + 9; plain++)
                for (size_t a = 0; a < sizeof afters / sizeof afters[0]; a++)
                    check_special(&specials[k], plain, afters[a], 0);
    /* all special: 6 output bytes for each input byte, across several chunks */
    size_t n = 3 * 4096 + 5;
    char *in = malloc(n);
    memset(in, 1, n);
    lg_buf_t b = {0};
    lg_buf_json_str(&b, in, n);
    assert_int_equal(b.len, 6 * n + 2);
    for (size_t i = 0; i < n; i++)
        assert_memory_equal(b.data + 1 + 6 * i, "\\u0001", 6);
    free(in);
    lg_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_printf),
        cmocka_unit_test(test_grows_past_initial_capacity),
        cmocka_unit_test(test_json_str_escapes),
        cmocka_unit_test(test_json_str_replaces_invalid_utf8),
        cmocka_unit_test(test_json_str_special_at_each_offset),
        cmocka_unit_test(test_json_str_chunk_boundaries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

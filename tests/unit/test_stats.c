/* The dashboard's statistics: windows, percentile_cont, grouping and the reply's shape (stats.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "luagent/stats.h"

static void test_windows(void **state)
{
    lg_stats_window_t w;
    assert_int_equal(lg_stats_window_parse("1h", 2, &w), 0);
    assert_int_equal(w.window_ms, 3600000);
    assert_int_equal(w.bucket_ms, 60000);
    assert_int_equal(lg_stats_window_parse("7d", 2, &w), 0);
    assert_int_equal(w.window_ms / w.bucket_ms, 28);
    assert_int_equal(lg_stats_window_parse("15m", 3, &w), 0);
    assert_int_equal(w.window_ms / w.bucket_ms, 30);
    assert_int_equal(lg_stats_window_parse("1", 1, &w), -1);
    assert_int_equal(lg_stats_window_parse("1h ", 3, &w), -1);
    assert_int_equal(lg_stats_window_parse("", 0, &w), -1);
    assert_int_equal(lg_stats_window_parse("2h", 2, &w), -1);
}

static void test_percentile(void **state)
{
    double one[] = {7};
    assert_true(lg_stats_percentile(one, 1, 0.99) == 7);
    double four[] = {1, 2, 3, 4}; /* Postgres: percentile_cont(0.5) = 2.5, (0.95) = 3.85 */
    assert_true(lg_stats_percentile(four, 4, 0.5) == 2.5);
    assert_true(lg_stats_percentile(four, 4, 0.95) > 3.8499 && lg_stats_percentile(four, 4, 0.95) < 3.8501);
    assert_true(lg_stats_percentile(four, 4, 1.0) == 4);
    assert_true(lg_stats_percentile(four, 4, 0.0) == 1);
}

static void test_group_and_json(void **state)
{
    /* two agents, two one-minute buckets (epoch-aligned), one failure */
    lg_stats_sample_t s[] = {
        {"b", 1, 120000 + 5, 10, 0}, {"a", 1, 60000 + 1, 4, 0}, {"a", 1, 60000 + 59999, 2, 1},
        {"a", 1, 120000, 6, 0},
    };
    lg_stats_row_t *rows;
    size_t n = lg_stats_group(s, 4, 60000, &rows);
    /* (a,1m) (a,2m) (b,2m) + a + b + (all,1m) (all,2m) + all */
    assert_int_equal(n, 8);
    lg_stats_window_t w;
    lg_stats_window_parse("1h", 2, &w);
    lg_buf_t b = {0};
    lg_stats_json(&w, 0, 3600000, "memory", rows, n, &b);
    free(rows);
    const char *want =
        "{\"window\":\"1h\",\"bucket_ms\":60000,\"from\":\"1970-01-01T00:00:00.000Z\",\"to\":\"1970-01-01T01:00:00.000Z\","
        "\"source\":\"memory\",\"total\":{\"count\":4,\"succeeded\":3,\"failed\":1,\"p50_ms\":5.000,\"p95_ms\":9.400,"
        "\"p99_ms\":9.880,\"series\":["
        "{\"start\":\"1970-01-01T00:01:00.000Z\",\"count\":2,\"succeeded\":1,\"failed\":1,\"p50_ms\":3.000,"
        "\"p95_ms\":3.900,\"p99_ms\":3.980},"
        "{\"start\":\"1970-01-01T00:02:00.000Z\",\"count\":2,\"succeeded\":2,\"failed\":0,\"p50_ms\":8.000,"
        "\"p95_ms\":9.800,\"p99_ms\":9.960}]},"
        "\"agents\":[{\"agent\":\"a\",\"count\":3,\"succeeded\":2,\"failed\":1,\"p50_ms\":4.000,\"p95_ms\":5.800,"
        "\"p99_ms\":5.960,\"series\":["
        "{\"start\":\"1970-01-01T00:01:00.000Z\",\"count\":2,\"succeeded\":1,\"failed\":1,\"p50_ms\":3.000,"
        "\"p95_ms\":3.900,\"p99_ms\":3.980},"
        "{\"start\":\"1970-01-01T00:02:00.000Z\",\"count\":1,\"succeeded\":1,\"failed\":0,\"p50_ms\":6.000,"
        "\"p95_ms\":6.000,\"p99_ms\":6.000}]},"
        "{\"agent\":\"b\",\"count\":1,\"succeeded\":1,\"failed\":0,\"p50_ms\":10.000,\"p95_ms\":10.000,"
        "\"p99_ms\":10.000,\"series\":[{\"start\":\"1970-01-01T00:02:00.000Z\",\"count\":1,\"succeeded\":1,"
        "\"failed\":0,\"p50_ms\":10.000,\"p95_ms\":10.000,\"p99_ms\":10.000}]}]}";
    assert_string_equal(b.data, want);
    lg_buf_free(&b);
}

static void test_empty(void **state)
{
    lg_stats_row_t *rows;
    assert_int_equal(lg_stats_group(NULL, 0, 60000, &rows), 0);
    lg_stats_window_t w0;
    lg_stats_window_parse("1h", 2, &w0);
    lg_buf_t b0 = {0};
    lg_stats_json(&w0, 0, 3600000, "memory", rows, 0, &b0); /* the memory path with no executions */
    assert_non_null(strstr(b0.data, "\"total\":{\"count\":0,"));
    lg_buf_free(&b0);
    /* Postgres's grand total over no rows: count 0, percentiles NULL */
    lg_stats_row_t pg[] = {{NULL, 0, -1, 0, 0, 0, 0, 0, 0}};
    lg_stats_window_t w;
    lg_stats_window_parse("15m", 3, &w);
    lg_buf_t b = {0};
    lg_stats_json(&w, 0, 900000, "database", pg, 1, &b);
    assert_string_equal(b.data, "{\"window\":\"15m\",\"bucket_ms\":30000,\"from\":\"1970-01-01T00:00:00.000Z\","
                                "\"to\":\"1970-01-01T00:15:00.000Z\",\"source\":\"database\",\"total\":{\"count\":0,"
                                "\"succeeded\":0,\"failed\":0,\"p50_ms\":null,\"p95_ms\":null,\"p99_ms\":null,"
                                "\"series\":[]},\"agents\":[]}");
    lg_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_percentile),
        cmocka_unit_test(test_group_and_json),
        cmocka_unit_test(test_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

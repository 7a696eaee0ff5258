/* Unit tests for src/loadgen/hist.c: HDR-style latency histogram percentiles. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "loadgen/hist.h"

#include <stdlib.h>

static lg_hist *new_hist(void)
{
    lg_hist *h = malloc(sizeof *h);
    assert_non_null(h);
    lg_hist_reset(h);
    return h;
}

static void test_empty_histogram_reports_zero(void **state)
{
    (void)state;
    lg_hist *h = new_hist();
    assert_int_equal(lg_hist_percentile(h, 50), 0);
    assert_int_equal(lg_hist_percentile(h, 99.9), 0);
    assert_true(lg_hist_mean(h) == 0);
    free(h);
}

static void test_small_values_are_exact(void **state)
{
    (void)state;
    lg_hist *h = new_hist();
    for (uint64_t v = 1; v <= 100; v++)
        lg_hist_record(h, v);
    assert_int_equal(lg_hist_percentile(h, 50), 50);
    assert_int_equal(lg_hist_percentile(h, 90), 90);
    assert_int_equal(lg_hist_percentile(h, 99), 99);
    assert_int_equal(lg_hist_percentile(h, 99.9), 100);
    assert_int_equal(lg_hist_percentile(h, 100), 100);
    assert_int_equal(lg_hist_percentile(h, 0.001), 1);
    assert_int_equal(h->min, 1);
    assert_int_equal(h->max, 100);
    assert_true(lg_hist_mean(h) == 50.5);
    free(h);
}

/* 1..1,000,000: every percentile within the 1/64 bucket resolution, never below the truth. */
static void test_large_values_within_resolution(void **state)
{
    (void)state;
    lg_hist *h = new_hist();
    for (uint64_t v = 1; v <= 1000000; v++)
        lg_hist_record(h, v);
    const double ps[] = {50, 90, 99, 99.9};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) {
        double truth = ps[i] / 100 * 1e6;
        double got = (double)lg_hist_percentile(h, ps[i]);
        assert_true(got >= truth);
        assert_true(got <= truth * (1 + 1.0 / 64));
    }
    assert_int_equal(lg_hist_percentile(h, 100), 1000000);
    free(h);
}

static void test_tail_is_found_among_many_fast_values(void **state)
{
    (void)state;
    lg_hist *h = new_hist();
    for (int i = 0; i < 990; i++)
        lg_hist_record(h, 200);
    for (int i = 0; i < 10; i++)
        lg_hist_record(h, 50000);
    /* 200 shares a slot with 201: the highest equivalent value is reported */
    assert_in_range(lg_hist_percentile(h, 50), 200, 201);
    assert_in_range(lg_hist_percentile(h, 99), 200, 201);
    uint64_t p999 = lg_hist_percentile(h, 99.9);
    assert_true(p999 >= 50000 && p999 <= 50000 + 50000 / 64);
    assert_int_equal(h->max, 50000);
    free(h);
}

static void test_merge_equals_recording_into_one(void **state)
{
    (void)state;
    lg_hist *a = new_hist(), *b = new_hist(), *all = new_hist();
    for (uint64_t v = 0; v < 5000; v++) {
        lg_hist_record(v % 2 ? a : b, v * 37);
        lg_hist_record(all, v * 37);
    }
    lg_hist_merge(a, b);
    assert_int_equal(a->total, all->total);
    assert_int_equal(a->min, 0);
    assert_int_equal(a->max, all->max);
    for (double p = 1; p <= 100; p += 7.5)
        assert_int_equal(lg_hist_percentile(a, p), lg_hist_percentile(all, p));
    free(a);
    free(b);
    free(all);
}

static void test_huge_value_is_clamped_not_lost(void **state)
{
    (void)state;
    lg_hist *h = new_hist();
    lg_hist_record(h, UINT64_MAX / 2);
    lg_hist_record(h, 10);
    assert_int_equal(h->total, 2);
    assert_int_equal(lg_hist_percentile(h, 100), UINT64_MAX / 2);
    assert_int_equal(lg_hist_percentile(h, 50), 10);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_histogram_reports_zero),
        cmocka_unit_test(test_small_values_are_exact),
        cmocka_unit_test(test_large_values_within_resolution),
        cmocka_unit_test(test_tail_is_found_among_many_fast_values),
        cmocka_unit_test(test_merge_equals_recording_into_one),
        cmocka_unit_test(test_huge_value_is_clamped_not_lost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for worker/rules.c: validation, anomaly rules, the window and its blob. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/error.h"
#include "worker/rules.h"

#include <math.h>
#include <string.h>

#define SEC INT64_C(1000000)
#define T0 (INT64_C(1700000000) * SEC)

static reading mk(const char *device, const char *metric, int64_t ts_us, double value)
{
    reading r = {.device = device,
                 .device_kind = "meter",
                 .site = "",
                 .metric = metric,
                 .ts_us = ts_us,
                 .value = value};
    return r;
}

static anomaly_window window_of(double v, int n)
{
    anomaly_window w = {0};
    for (int i = 0; i < n; i++)
        rules_window_push(&w, v);
    return w;
}

static void test_valid_reading_passes_with_empty_reason(void **state)
{
    (void)state;
    store_rules rules = {.max_future_us = 300 * SEC};
    reading r = mk("m1", "energy", T0, 1.5);
    char reason[128] = "junk";
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 1);
    assert_string_equal(reason, "");
}

static void test_non_finite_value_is_invalid(void **state)
{
    (void)state;
    store_rules rules = {.max_future_us = 300 * SEC};
    char reason[128];
    reading r = mk("m1", "energy", T0, NAN);
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 0);
    assert_string_equal(reason, "value is not a finite number");
    r.value = -INFINITY;
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 0);
    assert_string_equal(reason, "value is not a finite number");
}

static void test_empty_metric_and_device_are_invalid(void **state)
{
    (void)state;
    store_rules rules = {.max_future_us = 300 * SEC};
    char reason[128];
    reading r = mk("m1", "", T0, 1);
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 0);
    assert_string_equal(reason, "metric name is empty");
    r = mk("m1", NULL, T0, 1);
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 0);
    assert_string_equal(reason, "metric name is empty");
    r = mk("", "energy", T0, 1);
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 0);
    assert_string_equal(reason, "device id is empty");
}

static void test_future_timestamp_uses_configured_limit(void **state)
{
    (void)state;
    store_rules rules = {.max_future_us = 300 * SEC};
    char reason[128];
    reading r = mk("m1", "energy", T0 + 300 * SEC, 1); /* exactly at the limit: fine */
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 1);
    r.ts_us++;
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 0);
    assert_string_equal(reason, "timestamp is more than 300 s in the future");

    rules.max_future_us = 60 * SEC;
    r.ts_us = T0 + 61 * SEC;
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 0);
    assert_string_equal(reason, "timestamp is more than 60 s in the future");

    /* Past readings are fine; a huge limit must not overflow into rejecting everything. */
    r.ts_us = T0 - 86400 * SEC;
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 1);
    rules.max_future_us = INT64_MAX;
    r.ts_us = INT64_MAX;
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 1);
}

static void test_ingest_invalid_reason_wins(void **state)
{
    (void)state;
    store_rules rules = {.max_future_us = 300 * SEC};
    char reason[64] = "x";
    reading r = mk("m1", "energy", T0, 1);
    r.invalid_reason = "";
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 1);
    assert_string_equal(reason, "");
    r.invalid_reason = "meter reported error 7";
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 0);
    assert_string_equal(reason, "meter reported error 7");
    /* Ingest's reason comes first even when another rule would fail too. */
    r.value = NAN;
    assert_int_equal(rules_validate(&r, T0, &rules, reason, sizeof(reason)), 0);
    assert_string_equal(reason, "meter reported error 7");
}

static void test_negative_value_is_anomaly(void **state)
{
    (void)state;
    anomaly_window w = {0};
    char reason[128];
    assert_int_equal(rules_anomaly(&w, -0.5, reason, sizeof(reason)), 0);
    assert_string_equal(reason, "negative value detected");
    assert_int_equal(rules_anomaly(&w, 0.0, reason, sizeof(reason)), 1);
    assert_string_equal(reason, "");
}

static void test_spike_boundary_is_exclusive(void **state)
{
    (void)state;
    anomaly_window w = window_of(100, 10);
    char reason[160];
    assert_int_equal(rules_anomaly(&w, 300, reason, sizeof(reason)), 1);
    assert_int_equal(rules_anomaly(&w, 300.001, reason, sizeof(reason)), 0);
    assert_string_equal(reason,
                        "sudden spike detected: value 300.001 exceeds 3.0x rolling average 100.00");
    assert_int_equal(rules_anomaly(&w, 400, reason, sizeof(reason)), 0);
    assert_string_equal(reason,
                        "sudden spike detected: value 400 exceeds 3.0x rolling average 100.00");
}

static void test_spike_needs_ten_values(void **state)
{
    (void)state;
    anomaly_window w = window_of(100, 9);
    char reason[160];
    assert_int_equal(rules_anomaly(&w, 1e6, reason, sizeof(reason)), 1);
    rules_window_push(&w, 100);
    assert_int_equal(rules_anomaly(&w, 1e6, reason, sizeof(reason)), 0);
}

static void test_zero_mean_skips_spike_check(void **state)
{
    (void)state;
    anomaly_window w = window_of(0, 10);
    char reason[160];
    assert_int_equal(rules_anomaly(&w, 1e9, reason, sizeof(reason)), 1);
}

static void test_window_keeps_last_ten_values(void **state)
{
    (void)state;
    anomaly_window w = {0};
    for (int i = 1; i <= 13; i++)
        rules_window_push(&w, i); /* keeps 4..13, mean 8.5 */
    assert_int_equal(w.n, 10);
    char reason[160];
    assert_int_equal(rules_anomaly(&w, 25.5, reason, sizeof(reason)), 1);
    assert_int_equal(rules_anomaly(&w, 25.6, reason, sizeof(reason)), 0);
    assert_string_equal(reason,
                        "sudden spike detected: value 25.6 exceeds 3.0x rolling average 8.50");

    uint8_t blob[RULES_WINDOW_BLOB];
    assert_int_equal(rules_window_encode(&w, blob), RULES_WINDOW_BLOB);
    anomaly_window d;
    assert_int_equal(rules_window_decode(&d, blob, RULES_WINDOW_BLOB), MD_OK);
    assert_int_equal(d.n, 10);
    for (int i = 0; i < 10; i++)
        assert_true(d.v[i] == 4 + i); /* oldest first */
    /* The decoded window keeps rolling in the same order: 14 replaces 4. */
    rules_window_push(&d, 14);
    assert_int_equal(rules_window_encode(&d, blob), RULES_WINDOW_BLOB);
    assert_int_equal(rules_window_decode(&w, blob, RULES_WINDOW_BLOB), MD_OK);
    assert_true(w.v[0] == 5 && w.v[9] == 14);
}

static void test_window_blob_roundtrip_partial(void **state)
{
    (void)state;
    anomaly_window w = {0};
    rules_window_push(&w, 1.25);
    rules_window_push(&w, -0.0);
    rules_window_push(&w, 1e300);
    uint8_t blob[RULES_WINDOW_BLOB];
    size_t n = rules_window_encode(&w, blob);
    assert_int_equal(n, 1 + 3 * 8);
    assert_int_equal(blob[0], 3);
    /* little-endian 1.25 = 0x3FF4000000000000 */
    const uint8_t le125[8] = {0, 0, 0, 0, 0, 0, 0xf4, 0x3f};
    assert_memory_equal(blob + 1, le125, 8);
    anomaly_window d;
    assert_int_equal(rules_window_decode(&d, blob, n), MD_OK);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.pos, 3);
    assert_memory_equal(d.v, w.v, 3 * sizeof(double));

    anomaly_window e = {0};
    assert_int_equal(rules_window_encode(&e, blob), 1);
    assert_int_equal(rules_window_decode(&d, blob, 1), MD_OK);
    assert_int_equal(d.n, 0);
}

static void test_malformed_window_blob_is_rejected(void **state)
{
    (void)state;
    anomaly_window w = window_of(7, 4), d;
    uint8_t blob[RULES_WINDOW_BLOB];
    size_t n = rules_window_encode(&w, blob);
    assert_int_equal(rules_window_decode(&d, blob, n - 1), MD_ERR_CORRUPT); /* truncated */
    assert_int_equal(d.n, 0);
    assert_int_equal(rules_window_decode(&d, blob, 0), MD_ERR_CORRUPT);
    assert_int_equal(rules_window_decode(&d, NULL, 5), MD_ERR_CORRUPT);
    blob[0] = 11; /* more values than a window holds */
    uint8_t big[1 + 11 * 8] = {11};
    assert_int_equal(rules_window_decode(&d, big, sizeof(big)), MD_ERR_CORRUPT);
    blob[0] = 3; /* count says 3, bytes say 4 */
    assert_int_equal(rules_window_decode(&d, blob, n), MD_ERR_CORRUPT);
    assert_int_equal(d.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_reading_passes_with_empty_reason),
        cmocka_unit_test(test_non_finite_value_is_invalid),
        cmocka_unit_test(test_empty_metric_and_device_are_invalid),
        cmocka_unit_test(test_future_timestamp_uses_configured_limit),
        cmocka_unit_test(test_ingest_invalid_reason_wins),
        cmocka_unit_test(test_negative_value_is_anomaly),
        cmocka_unit_test(test_spike_boundary_is_exclusive),
        cmocka_unit_test(test_spike_needs_ten_values),
        cmocka_unit_test(test_zero_mean_skips_spike_check),
        cmocka_unit_test(test_window_keeps_last_ten_values),
        cmocka_unit_test(test_window_blob_roundtrip_partial),
        cmocka_unit_test(test_malformed_window_blob_is_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

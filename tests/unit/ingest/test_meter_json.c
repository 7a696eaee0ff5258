/* Unit tests for src/ingest/meter_json.c: POST /api/readings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "ingest/ingest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_2026_03_18_1015 INT64_C(1773828900000000)
#define T_2026_03_18_1000 INT64_C(1773828000000000)

static const ingest_limits LIM = {.max_readings = 20000};

static batch *decode_ok(const char *body)
{
    batch *b = (batch *)0x1;
    ingest_error e = {0};
    int rc = ingest_meter_json(body, strlen(body), &LIM, &b, &e);
    if (rc != MD_OK) fail_msg("rejected (%d %s): %s", e.status, e.message, body);
    return b;
}

static void expect_reject(const char *body, int status, const char *message)
{
    batch *b = (batch *)0x1;
    ingest_error e = {0};
    assert_int_equal(ingest_meter_json(body, strlen(body), &LIM, &b, &e), MD_ERR_INVALID);
    assert_null(b);
    assert_int_equal(e.status, status);
    assert_string_equal(e.message, message);
}

static void test_valid_body_in_document_order(void **state)
{
    (void)state;
    batch *b = decode_ok("{\"meter_number\":12345,\"readings\":{"
                         "\"2026-03-18T10:15:00Z\":1234.56,"
                         "\"2026-03-18T10:00:00+00:00\":1234.51,"
                         "\"2026-03-18T11:15:00.5+01:00\":7}}");
    assert_string_equal(b->source, "api.readings");
    assert_int_equal(b->n_readings, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(b->readings[i].device, "12345");
        assert_string_equal(b->readings[i].device_kind, "meter");
        assert_string_equal(b->readings[i].metric, "energy");
        assert_string_equal(b->readings[i].site, "");
    }
    assert_int_equal(b->readings[0].ts_us, T_2026_03_18_1015);
    assert_true(b->readings[0].value == 1234.56);
    assert_int_equal(b->readings[1].ts_us, T_2026_03_18_1000);
    assert_true(b->readings[1].value == 1234.51);
    assert_int_equal(b->readings[2].ts_us, T_2026_03_18_1015 + 500000);
    assert_true(b->readings[2].value == 7.0);
    batch_free(b);
}

static void test_meter_number_as_string(void **state)
{
    (void)state;
    batch *b = decode_ok("{\"readings\":{\"2026-03-18T10:15:00Z\":1},"
                         "\"meter_number\":\"9223372036854775807\"}");
    assert_string_equal(b->readings[0].device, "9223372036854775807");
    batch_free(b);
}

static void test_meter_number_errors(void **state)
{
    (void)state;
    const char *msg = "meter_number: must be a positive integer";
    expect_reject("{\"readings\":{\"2026-03-18T10:15:00Z\":1}}", 400, "meter_number: missing");
    expect_reject("{\"meter_number\":0,\"readings\":{\"2026-03-18T10:15:00Z\":1}}", 400, msg);
    expect_reject("{\"meter_number\":-1,\"readings\":{\"2026-03-18T10:15:00Z\":1}}", 400, msg);
    expect_reject("{\"meter_number\":1.5,\"readings\":{\"2026-03-18T10:15:00Z\":1}}", 400, msg);
    expect_reject("{\"meter_number\":\"12a\",\"readings\":{\"2026-03-18T10:15:00Z\":1}}", 400, msg);
    expect_reject("{\"meter_number\":[1],\"readings\":{\"2026-03-18T10:15:00Z\":1}}", 400, msg);
}

static void test_readings_errors(void **state)
{
    (void)state;
    expect_reject("{\"meter_number\":1}", 400, "readings: missing");
    expect_reject("{\"meter_number\":1,\"readings\":{}}", 400,
                  "readings: must be a non-empty object");
    expect_reject("{\"meter_number\":1,\"readings\":[]}", 400,
                  "readings: must be a non-empty object");
    expect_reject("{\"meter_number\":1,\"readings\":[{\"2026-03-18T10:15:00Z\":1}]}", 400,
                  "readings: must be a non-empty object");
    expect_reject("{\"meter_number\":1,\"readings\":{\"2026-03-18T10:15:00Z\":1,"
                  "\"2026-03-18T10:15:00\":2}}",
                  400,
                  "readings[\"2026-03-18T10:15:00\"]: ambiguous timestamp without a UTC offset");
    expect_reject("{\"meter_number\":1,\"readings\":{\"yesterday\":2}}", 400,
                  "readings[\"yesterday\"]: not an ISO 8601 timestamp");
    expect_reject("{\"meter_number\":1,\"readings\":{\"2025-02-29T00:00:00Z\":2}}", 400,
                  "readings[\"2025-02-29T00:00:00Z\"]: not an ISO 8601 timestamp: day 29 out of "
                  "range for 2025-02");
    expect_reject("{\"meter_number\":1,\"readings\":{\"2026-03-18T10:15:00Z\":\"1.5\"}}", 400,
                  "readings[\"2026-03-18T10:15:00Z\"]: must be a number");
    expect_reject("{\"meter_number\":1,\"readings\":{\"2026-03-18T10:15:00Z\":null}}", 400,
                  "readings[\"2026-03-18T10:15:00Z\"]: must be a number");
    expect_reject("{\"meter_number\":1,\"readings\":{\"2026-03-18T10:15:00Z\":"
                  "18014398509481984}}",
                  400,
                  "readings[\"2026-03-18T10:15:00Z\"]: integer out of range (magnitude above "
                  "2^53)");
    expect_reject("{\"meter_number\":1,\"readings\":{\"2026-03-18T10:15:00Z\":1,"
                  "\"2026-03-18T10:15:00Z\":2}}",
                  400, "malformed JSON at line 1, column 77: duplicate object key");
    expect_reject("{\"meter_number\":1,\"readings\":{\"2026-03-18T10:15:00Z\":1}", 400,
                  "malformed JSON at line 1, column 55: '}' expected near end of file");
}

static void test_bad_key_is_escaped_and_shortened(void **state)
{
    (void)state;
    expect_reject("{\"meter_number\":1,\"readings\":{\"a\\\"b\\n\":2}}", 400,
                  "readings[\"a\\\"b\\u000a\"]: not an ISO 8601 timestamp");
    char key[300], body[400], want[256];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    snprintf(body, sizeof(body), "{\"meter_number\":1,\"readings\":{\"%s\":2}}", key);
    snprintf(want, sizeof(want), "readings[\"%.64s...\"]: not an ISO 8601 timestamp", key);
    expect_reject(body, 400, want);
}

static void test_readings_limit_is_413(void **state)
{
    (void)state;
    const ingest_limits two = {.max_readings = 2};
    const char *body = "{\"meter_number\":1,\"readings\":{\"2026-03-18T10:15:00Z\":1,"
                       "\"2026-03-18T10:16:00Z\":1,\"2026-03-18T10:17:00Z\":1}}";
    batch *b = (batch *)0x1;
    ingest_error e = {0};
    assert_int_equal(ingest_meter_json(body, strlen(body), &two, &b, &e), MD_ERR_INVALID);
    assert_null(b);
    assert_int_equal(e.status, 413);
    assert_string_equal(e.message, "readings: 3 readings exceed the limit of 2");
    const ingest_limits three = {.max_readings = 3};
    assert_int_equal(ingest_meter_json(body, strlen(body), &three, &b, &e), MD_OK);
    assert_int_equal(b->n_readings, 3);
    batch_free(b);
}

static void test_not_an_object(void **state)
{
    (void)state;
    expect_reject("[1]", 400, "body: must be a JSON object");
    expect_reject("{\"meter_number\":1,\"readings\":{\"2026-03-18T10:15:00Z\":1}} {}", 400,
                  "malformed JSON at line 1, column 58: end of file expected near '{'");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_body_in_document_order),
        cmocka_unit_test(test_meter_number_as_string),
        cmocka_unit_test(test_meter_number_errors),
        cmocka_unit_test(test_readings_errors),
        cmocka_unit_test(test_bad_key_is_escaped_and_shortened),
        cmocka_unit_test(test_readings_limit_is_413),
        cmocka_unit_test(test_not_an_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

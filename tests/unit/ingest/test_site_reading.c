/* Unit tests for src/ingest/site_reading.c: POST /readings with FastAPI-style 422 errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "ingest/ingest.h"

#include <stdio.h>
#include <string.h>

#define T_2024_01_15_1030 INT64_C(1705314600000000)

static const ingest_limits LIM = {.max_readings = 20000};

static batch *decode_ok(const char *body)
{
    batch *b = (batch *)0x1;
    ingest_error e = {0};
    int rc = ingest_site_reading(body, strlen(body), &LIM, &b, &e);
    if (rc != MD_OK) fail_msg("rejected (%d %s): %s", e.status, e.message, body);
    return b;
}

static void expect_reject(const char *body, const char *message, const char *field,
                          const char *type)
{
    batch *b = (batch *)0x1;
    ingest_error e;
    memset(&e, 'x', sizeof(e)); /* stale contents must not leak into field or type */
    assert_int_equal(ingest_site_reading(body, strlen(body), &LIM, &b, &e), MD_ERR_INVALID);
    assert_null(b);
    assert_int_equal(e.status, 422);
    assert_string_equal(e.message, message);
    assert_string_equal(e.field, field);
    assert_string_equal(e.type, type);
}

static void test_valid_reading(void **state)
{
    (void)state;
    batch *b = decode_ok("{\"site_id\":\"site-001\",\"device_id\":\"meter-42\","
                         "\"power_reading\":1500.5,\"timestamp\":\"2024-01-15T10:30:00Z\"}");
    assert_string_equal(b->source, "readings.site");
    assert_int_equal(b->n_readings, 1);
    const reading *r = &b->readings[0];
    assert_string_equal(r->device, "meter-42");
    assert_string_equal(r->device_kind, "device");
    assert_string_equal(r->site, "site-001");
    assert_string_equal(r->metric, "power");
    assert_int_equal(r->ts_us, T_2024_01_15_1030);
    assert_true(r->value == 1500.5);
    assert_string_equal(r->invalid_reason, "");
    assert_int_equal(b->n_links, 0);
    batch_free(b);
}

static void test_integer_power_and_offset_timestamp(void **state)
{
    (void)state;
    batch *b = decode_ok("{\"timestamp\":\"2024-01-15T12:30:00+02:00\",\"power_reading\":-3,"
                         "\"device_id\":\"d\",\"site_id\":\"s\"}");
    assert_int_equal(b->readings[0].ts_us, T_2024_01_15_1030);
    assert_true(b->readings[0].value == -3.0);
    batch_free(b);
}

static void test_missing_fields(void **state)
{
    (void)state;
    expect_reject(
        "{\"device_id\":\"d\",\"power_reading\":1,\"timestamp\":\"2024-01-15T10:30:00Z\"}",
        "site_id: missing", "site_id", "missing");
    expect_reject("{\"site_id\":\"s\",\"power_reading\":1,\"timestamp\":\"2024-01-15T10:30:00Z\"}",
                  "device_id: missing", "device_id", "missing");
    expect_reject("{\"site_id\":\"s\",\"device_id\":\"d\",\"timestamp\":\"2024-01-15T10:30:00Z\"}",
                  "power_reading: missing", "power_reading", "missing");
    expect_reject("{\"site_id\":\"s\",\"device_id\":\"d\",\"power_reading\":1}",
                  "timestamp: missing", "timestamp", "missing");
    expect_reject("{}", "site_id: missing", "site_id", "missing");
}

static void test_wrong_types(void **state)
{
    (void)state;
    const char *ts = ",\"timestamp\":\"2024-01-15T10:30:00Z\"}";
    char body[256];
    snprintf(body, sizeof body, "{\"site_id\":1,\"device_id\":\"d\",\"power_reading\":1%s", ts);
    expect_reject(body, "site_id: must be a string", "site_id", "string_type");
    snprintf(body, sizeof body, "{\"site_id\":\"s\",\"device_id\":null,\"power_reading\":1%s", ts);
    expect_reject(body, "device_id: must be a string", "device_id", "string_type");
    snprintf(body, sizeof body, "{\"site_id\":\"s\",\"device_id\":\"d\",\"power_reading\":\"1\"%s",
             ts);
    expect_reject(body, "power_reading: must be a number", "power_reading", "float_type");
    snprintf(body, sizeof body, "{\"site_id\":\"s\",\"device_id\":\"d\",\"power_reading\":true%s",
             ts);
    expect_reject(body, "power_reading: must be a number", "power_reading", "float_type");
    snprintf(body, sizeof body, "{\"site_id\":\"s\",\"device_id\":\"d\",\"power_reading\":null%s",
             ts);
    expect_reject(body, "power_reading: must be a number", "power_reading", "float_type");
    snprintf(body, sizeof body,
             "{\"site_id\":\"s\",\"device_id\":\"d\",\"power_reading\":18014398509481984%s", ts);
    expect_reject(body, "power_reading: integer out of range (magnitude above 2^53)",
                  "power_reading", "value_error");
    expect_reject("{\"site_id\":\"s\",\"device_id\":\"d\",\"power_reading\":1,\"timestamp\":1}",
                  "timestamp: must be an RFC 3339 string", "timestamp", "datetime_type");
}

static void test_empty_and_long_strings(void **state)
{
    (void)state;
    expect_reject("{\"site_id\":\"\",\"device_id\":\"d\",\"power_reading\":1,"
                  "\"timestamp\":\"2024-01-15T10:30:00Z\"}",
                  "site_id: must not be empty", "site_id", "string_too_short");
    expect_reject("{\"site_id\":\"s\",\"device_id\":\"\",\"power_reading\":1,"
                  "\"timestamp\":\"2024-01-15T10:30:00Z\"}",
                  "device_id: must not be empty", "device_id", "string_too_short");
    char body[600], id[258];
    memset(id, 'a', 257);
    id[257] = '\0';
    snprintf(body, sizeof body,
             "{\"site_id\":\"s\",\"device_id\":\"%s\",\"power_reading\":1,"
             "\"timestamp\":\"2024-01-15T10:30:00Z\"}",
             id);
    expect_reject(body, "device_id: 257 bytes exceed the limit of 256", "device_id",
                  "string_too_long");
    id[256] = '\0'; /* exactly the limit is fine */
    snprintf(body, sizeof body,
             "{\"site_id\":\"s\",\"device_id\":\"%s\",\"power_reading\":1,"
             "\"timestamp\":\"2024-01-15T10:30:00Z\"}",
             id);
    batch_free(decode_ok(body));
}

static void test_bad_timestamps(void **state)
{
    (void)state;
    expect_reject("{\"site_id\":\"s\",\"device_id\":\"d\",\"power_reading\":1,"
                  "\"timestamp\":\"2024-01-15T10:30:00\"}",
                  "timestamp: ambiguous timestamp without a UTC offset", "timestamp",
                  "datetime_parsing");
    expect_reject("{\"site_id\":\"s\",\"device_id\":\"d\",\"power_reading\":1,"
                  "\"timestamp\":\"yesterday\"}",
                  "timestamp: not an ISO 8601 timestamp", "timestamp", "datetime_parsing");
    expect_reject("{\"site_id\":\"s\",\"device_id\":\"d\",\"power_reading\":1,"
                  "\"timestamp\":\"2024-02-30T10:30:00Z\"}",
                  "timestamp: not an ISO 8601 timestamp: day 30 out of range for 2024-02",
                  "timestamp", "datetime_parsing");
}

static void test_body_errors(void **state)
{
    (void)state;
    expect_reject("{\"site_id\":\"s\"",
                  "malformed JSON at line 1, column 14: '}' expected near end of file", "",
                  "json_invalid");
    expect_reject("", "malformed JSON at line 1, column 0: '[' or '{' expected near end of file",
                  "", "json_invalid");
    expect_reject("[1]", "body: must be a JSON object", "", "model_attributes_type");
    /* jansson only decodes an object or array at the top level */
    expect_reject("\"x\"", "malformed JSON at line 1, column 3: '[' or '{' expected near '\"x\"'",
                  "", "json_invalid");
    expect_reject("{\"site_id\":\"a\",\"site_id\":\"b\"}",
                  "malformed JSON at line 1, column 24: duplicate object key near '\"site_id\"'",
                  "", "json_invalid");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_reading),
        cmocka_unit_test(test_integer_power_and_offset_timestamp),
        cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_empty_and_long_strings),
        cmocka_unit_test(test_bad_timestamps),
        cmocka_unit_test(test_body_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

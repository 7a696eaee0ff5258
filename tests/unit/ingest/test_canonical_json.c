/* Unit tests for src/ingest/canonical_json.c: POST /api/v1/readings. */
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

static const ingest_limits LIM = {.max_readings = 20000};

static batch *decode_ok(const char *body)
{
    batch *b = (batch *)0x1;
    ingest_error e = {0};
    int rc = ingest_canonical_json(body, strlen(body), &LIM, &b, &e);
    if (rc != MD_OK) fail_msg("rejected (%d %s): %s", e.status, e.message, body);
    assert_non_null(b);
    return b;
}

static void expect_reject(const char *body, int status, const char *message)
{
    batch *b = (batch *)0x1;
    ingest_error e = {0};
    assert_int_equal(ingest_canonical_json(body, strlen(body), &LIM, &b, &e), MD_ERR_INVALID);
    assert_null(b);
    assert_int_equal(e.status, status);
    assert_string_equal(e.message, message);
}

static void test_valid_readings_all_fields(void **state)
{
    (void)state;
    batch *b =
        decode_ok("{\"readings\":["
                  "{\"device\":\"m-1\",\"metric\":\"power\",\"ts\":\"2026-03-18T10:15:00Z\","
                  "\"value\":12.5,\"kind\":\"meter\",\"site\":\"berlin\"},"
                  "{\"device\":\"car 7\",\"metric\":\"battery_temp\",\"ts\":1773828900001,"
                  "\"value\":-3,\"kind\":\"vehicle\"},"
                  "{\"device\":\"d\",\"metric\":\"x\",\"ts\":\"2026-03-18 12:15:00.25+02:00\","
                  "\"value\":1e3,\"site\":null,\"kind\":null,\"extra\":[1,2]}]}");
    assert_string_equal(b->source, "api.v1.readings");
    assert_int_equal(b->n_readings, 3);
    const reading *r = b->readings;
    assert_string_equal(r[0].device, "m-1");
    assert_string_equal(r[0].device_kind, "meter");
    assert_string_equal(r[0].site, "berlin");
    assert_string_equal(r[0].metric, "power");
    assert_int_equal(r[0].ts_us, T_2026_03_18_1015);
    assert_true(r[0].value == 12.5);
    assert_string_equal(r[1].device, "car 7");
    assert_string_equal(r[1].device_kind, "vehicle");
    assert_string_equal(r[1].site, "");
    assert_string_equal(r[1].metric, "battery_temp");
    assert_int_equal(r[1].ts_us, T_2026_03_18_1015 + 1000);
    assert_true(r[1].value == -3.0);
    assert_string_equal(r[2].device_kind, "device");
    assert_string_equal(r[2].site, "");
    assert_int_equal(r[2].ts_us, T_2026_03_18_1015 + 250000);
    assert_true(r[2].value == 1000.0);
    batch_free(b);
}

static void test_kind_defaults_to_device_and_accepts_all_kinds(void **state)
{
    (void)state;
    const char *kinds[] = {"meter", "device", "vehicle", "client"};
    for (size_t i = 0; i < 4; i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":0,"
                 "\"kind\":\"%s\"}]}",
                 kinds[i]);
        batch *b = decode_ok(body);
        assert_string_equal(b->readings[0].device_kind, kinds[i]);
        batch_free(b);
    }
    batch *b =
        decode_ok("{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":0}]}");
    assert_string_equal(b->readings[0].device_kind, "device");
    batch_free(b);
}

static void test_value_integer_limits(void **state)
{
    (void)state;
    batch *b = decode_ok("{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,"
                         "\"value\":9007199254740992},{\"device\":\"a\",\"metric\":\"m\","
                         "\"ts\":0,\"value\":-9007199254740992}]}");
    assert_true(b->readings[0].value == 9007199254740992.0);
    assert_true(b->readings[1].value == -9007199254740992.0);
    batch_free(b);
    expect_reject("{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,"
                  "\"value\":9007199254740993}]}",
                  400, "readings[0].value: integer out of range (magnitude above 2^53)");
    expect_reject("{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,"
                  "\"value\":-9007199254740993}]}",
                  400, "readings[0].value: integer out of range (magnitude above 2^53)");
}

static void test_malformed_json_names_line_and_column(void **state)
{
    (void)state;
    expect_reject("{\"readings\": [1,}", 400,
                  "malformed JSON at line 1, column 17: unexpected token near '}'");
    expect_reject("{\"readings\":[]} x", 400,
                  "malformed JSON at line 1, column 17: end of file expected near 'x'");
    expect_reject("", 400,
                  "malformed JSON at line 1, column 0: '[' or '{' expected near end of file");
    expect_reject("{\"readings\":[],\"readings\":[]}", 400,
                  "malformed JSON at line 1, column 25: duplicate object key near '\"readings\"'");
    expect_reject("{\"readings\":[{\"value\":NaN}]}", 400,
                  "malformed JSON at line 1, column 25: invalid token near 'NaN'");
    expect_reject("{\"a\":\"\\u0000\"}", 400,
                  "malformed JSON at line 1, column 13: \\u0000 is not allowed without "
                  "JSON_ALLOW_NUL near '\"\\u0000\"'");
    expect_reject("[]", 400, "body: must be a JSON object");
}

static void test_readings_must_be_nonempty_array(void **state)
{
    (void)state;
    expect_reject("{}", 400, "readings: missing");
    expect_reject("{\"readings\":[]}", 400, "readings: must be a non-empty array");
    expect_reject("{\"readings\":{}}", 400, "readings: must be a non-empty array");
    expect_reject("{\"readings\":null}", 400, "readings: must be a non-empty array");
    expect_reject("{\"readings\":[1]}", 400, "readings[0]: must be an object");
}

static void test_field_errors_name_the_place(void **state)
{
    (void)state;
    struct {
        const char *reading, *message;
    } cases[] = {
        {"{\"metric\":\"m\",\"ts\":0,\"value\":1}", "readings[1].device: missing"},
        {"{\"device\":7,\"metric\":\"m\",\"ts\":0,\"value\":1}",
         "readings[1].device: must be a string"},
        {"{\"device\":\"\",\"metric\":\"m\",\"ts\":0,\"value\":1}",
         "readings[1].device: must not be empty"},
        {"{\"device\":\"a\",\"ts\":0,\"value\":1}", "readings[1].metric: missing"},
        {"{\"device\":\"a\",\"metric\":\"\",\"ts\":0,\"value\":1}",
         "readings[1].metric: must not be empty"},
        {"{\"device\":\"a\",\"metric\":\"m\",\"value\":1}", "readings[1].ts: missing"},
        {"{\"device\":\"a\",\"metric\":\"m\",\"ts\":\"yesterday\",\"value\":1}",
         "readings[1].ts: not an ISO 8601 timestamp"},
        {"{\"device\":\"a\",\"metric\":\"m\",\"ts\":\"2026-03-18T10:15:00\",\"value\":1}",
         "readings[1].ts: ambiguous timestamp without a UTC offset"},
        {"{\"device\":\"a\",\"metric\":\"m\",\"ts\":1.5,\"value\":1}",
         "readings[1].ts: must be an RFC 3339 string or integer epoch milliseconds"},
        {"{\"device\":\"a\",\"metric\":\"m\",\"ts\":true,\"value\":1}",
         "readings[1].ts: must be an RFC 3339 string or integer epoch milliseconds"},
        {"{\"device\":\"a\",\"metric\":\"m\",\"ts\":253402300800000,\"value\":1}",
         "readings[1].ts: epoch milliseconds outside years 0001..9999"},
        {"{\"device\":\"a\",\"metric\":\"m\",\"ts\":0}", "readings[1].value: missing"},
        {"{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":\"1\"}",
         "readings[1].value: must be a number"},
        {"{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":null}",
         "readings[1].value: must be a number"},
        {"{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"kind\":\"Meter\"}",
         "readings[1].kind: must be one of meter, device, vehicle, client"},
        {"{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"kind\":3}",
         "readings[1].kind: must be one of meter, device, vehicle, client"},
        {"{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"site\":3}",
         "readings[1].site: must be a string"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[512];
        snprintf(body, sizeof(body),
                 "{\"readings\":[{\"device\":\"ok\",\"metric\":\"m\",\"ts\":0,\"value\":1},%s]}",
                 cases[i].reading);
        expect_reject(body, 400, cases[i].message);
    }
}

static void test_string_length_limits(void **state)
{
    (void)state;
    char dev[300], met[200], body[1024];
    memset(dev, 'd', sizeof(dev));
    memset(met, 'm', sizeof(met));
    snprintf(body, sizeof(body),
             "{\"readings\":[{\"device\":\"%.256s\",\"metric\":\"%.128s\",\"ts\":0,\"value\":1,"
             "\"site\":\"%.256s\"}]}",
             dev, met, dev);
    batch *b = decode_ok(body);
    assert_int_equal(strlen(b->readings[0].device), 256);
    assert_int_equal(strlen(b->readings[0].metric), 128);
    assert_int_equal(strlen(b->readings[0].site), 256);
    batch_free(b);
    snprintf(body, sizeof(body),
             "{\"readings\":[{\"device\":\"%.257s\",\"metric\":\"m\",\"ts\":0,\"value\":1}]}", dev);
    expect_reject(body, 400, "readings[0].device: 257 bytes exceed the limit of 256");
    snprintf(body, sizeof(body),
             "{\"readings\":[{\"device\":\"d\",\"metric\":\"%.129s\",\"ts\":0,\"value\":1}]}", met);
    expect_reject(body, 400, "readings[0].metric: 129 bytes exceed the limit of 128");
    snprintf(body, sizeof(body),
             "{\"readings\":[{\"device\":\"d\",\"metric\":\"m\",\"ts\":0,\"value\":1,"
             "\"site\":\"%.257s\"}]}",
             dev);
    expect_reject(body, 400, "readings[0].site: 257 bytes exceed the limit of 256");
}

/* Builds {"readings":[n valid readings]} into a malloc'd string. */
static char *body_with(size_t n)
{
    const char *one = "{\"device\":\"d\",\"metric\":\"m\",\"ts\":0,\"value\":1},";
    size_t cap = 16 + n * strlen(one) + 4;
    char *s = malloc(cap), *p = s;
    assert_non_null(s);
    p += sprintf(p, "{\"readings\":[");
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "%s", one);
    strcpy(p - 1, "]}");
    return s;
}

static void test_readings_limit_is_413(void **state)
{
    (void)state;
    char *body = body_with(20000);
    batch *b = NULL;
    ingest_error e = {0};
    assert_int_equal(ingest_canonical_json(body, strlen(body), &LIM, &b, &e), MD_OK);
    assert_int_equal(b->n_readings, 20000);
    batch_free(b);
    free(body);
    body = body_with(20001);
    expect_reject(body, 413, "readings: 20001 readings exceed the limit of 20000");
    free(body);
    /* NULL limits or 0 mean no per-request limit */
    body = body_with(3);
    const ingest_limits zero = {0};
    assert_int_equal(ingest_canonical_json(body, strlen(body), NULL, &b, &e), MD_OK);
    batch_free(b);
    assert_int_equal(ingest_canonical_json(body, strlen(body), &zero, &b, &e), MD_OK);
    batch_free(b);
    const ingest_limits two = {.max_readings = 2};
    assert_int_equal(ingest_canonical_json(body, strlen(body), &two, &b, &e), MD_ERR_INVALID);
    assert_int_equal(e.status, 413);
    assert_string_equal(e.message, "readings: 3 readings exceed the limit of 2");
    free(body);
}

static void test_body_length_is_respected(void **state)
{
    (void)state;
    const char *body = "{\"readings\":[{\"device\":\"d\",\"metric\":\"m\",\"ts\":0,\"value\":1}]}"
                       "GARBAGE";
    batch *b = NULL;
    ingest_error e = {0};
    assert_int_equal(ingest_canonical_json(body, strlen(body) - 7, &LIM, &b, &e), MD_OK);
    assert_int_equal(b->n_readings, 1);
    batch_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_readings_all_fields),
        cmocka_unit_test(test_kind_defaults_to_device_and_accepts_all_kinds),
        cmocka_unit_test(test_value_integer_limits),
        cmocka_unit_test(test_malformed_json_names_line_and_column),
        cmocka_unit_test(test_readings_must_be_nonempty_array),
        cmocka_unit_test(test_field_errors_name_the_place),
        cmocka_unit_test(test_string_length_limits),
        cmocka_unit_test(test_readings_limit_is_413),
        cmocka_unit_test(test_body_length_is_respected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for src/ingest/envelope.c: the gateway envelope (HTTP and AMQP). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "ingest/ingest.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define T_2025_12_29_1030 INT64_C(1767004200000000) /* received_at */
#define SEC INT64_C(1000000)
#define WINDOW (300 * SEC)

static const ingest_limits LIM = {.max_readings = 20000};

#define HEAD                                                                                       \
    "{\"request_id\":\"550e8400-e29b-41d4-a716-446655440000\","                                    \
    "\"client_fingerprint\":\"sha256_abc\",\"ip_address\":\"192.168.1.100\","                      \
    "\"user_agent\":\"MeterDevice/1.0\",\"received_at\":\"2025-12-29T10:30:00Z\","

static batch *decode_ok(const char *body)
{
    batch *b = (batch *)0x1;
    ingest_error e = {0};
    int rc = ingest_envelope(body, strlen(body), &LIM, WINDOW, &b, &e);
    if (rc != MD_OK) fail_msg("rejected (%d %s): %s", e.status, e.message, body);
    return b;
}

/* Decodes an envelope with one PM entry and returns the reading's batch. */
static batch *one_entry(const char *entry)
{
    char body[1024];
    snprintf(body, sizeof body, HEAD "\"payload\":{\"PM\":[%s]}}", entry);
    batch *b = decode_ok(body);
    assert_int_equal(b->n_readings, 1);
    return b;
}

static void expect_reject_lim(const ingest_limits *lim, const char *body, int status,
                              const char *message)
{
    batch *b = (batch *)0x1;
    ingest_error e = {0};
    assert_int_equal(ingest_envelope(body, strlen(body), lim, WINDOW, &b, &e), MD_ERR_INVALID);
    assert_null(b);
    assert_int_equal(e.status, status);
    assert_string_equal(e.message, message);
}

static void expect_reject(const char *body, const char *message)
{
    expect_reject_lim(&LIM, body, 400, message);
}

static void test_valid_envelope(void **state)
{
    (void)state;
    batch *b = decode_ok(
        HEAD "\"payload\":{\"PM\":["
             "{\"date\":\"29/12/2025 10:29:55\",\"data\":\"245.5\",\"name\":\"power_consumption\"},"
             "{\"date\":\"29 10:29:55/12/2025\",\"data\":\"-1\",\"name\":\"voltage\"},"
             "{\"date\":\"2025-12-29T11:29:55+01:00\",\"data\":7,\"name\":\"current\"}]}}");
    assert_string_equal(b->source, "envelope");
    assert_string_equal(b->request_id, "550e8400-e29b-41d4-a716-446655440000");
    assert_string_equal(b->client_fingerprint, "sha256_abc");
    assert_string_equal(b->client_ip, "192.168.1.100");
    assert_string_equal(b->client_user_agent, "MeterDevice/1.0");
    assert_int_equal(b->received_at_us, T_2025_12_29_1030);
    assert_int_equal(b->n_readings, 3);
    const char *metrics[3] = {"power_consumption", "voltage", "current"};
    const double values[3] = {245.5, -1.0, 7.0};
    for (size_t i = 0; i < 3; i++) {
        const reading *r = &b->readings[i];
        assert_string_equal(r->device, "sha256_abc");
        assert_string_equal(r->device_kind, "client");
        assert_string_equal(r->site, "");
        assert_string_equal(r->metric, metrics[i]);
        assert_int_equal(r->ts_us, T_2025_12_29_1030 - 5 * SEC);
        assert_true(r->value == values[i]);
        /* a negative value is the worker's rule to flag, not ingest's */
        assert_string_equal(r->invalid_reason, "");
    }
    batch_free(b);
}

static void test_empty_pm_is_a_valid_empty_batch(void **state)
{
    (void)state;
    batch *b = decode_ok(HEAD "\"payload\":{\"PM\":[]}}");
    assert_int_equal(b->n_readings, 0);
    assert_string_equal(b->client_fingerprint, "sha256_abc");
    batch_free(b);
}

static void test_optional_client_fields(void **state)
{
    (void)state;
    batch *b = decode_ok("{\"client_fingerprint\":\"f\",\"received_at\":\"2025-12-29T10:30:00Z\","
                         "\"ip_address\":5,\"payload\":{\"PM\":[]}}");
    assert_string_equal(b->request_id, "");
    assert_string_equal(b->client_ip, "");
    assert_string_equal(b->client_user_agent, "");
    batch_free(b);
}

static void test_unparseable_date_uses_received_at(void **state)
{
    (void)state;
    batch *b = one_entry("{\"date\":\"2025/12/29 10:29\",\"data\":\"1\",\"name\":\"p\"}");
    assert_int_equal(b->readings[0].ts_us, T_2025_12_29_1030);
    assert_true(b->readings[0].value == 1.0);
    assert_string_equal(b->readings[0].invalid_reason, "invalid date format: '2025/12/29 10:29'");
    batch_free(b);
    b = one_entry("{\"date\":\"31/02/2025 10:29:55\",\"data\":\"1\",\"name\":\"p\"}");
    assert_string_equal(b->readings[0].invalid_reason,
                        "invalid date format: '31/02/2025 10:29:55'");
    batch_free(b);
    b = one_entry("{\"data\":\"1\",\"name\":\"p\"}");
    assert_int_equal(b->readings[0].ts_us, T_2025_12_29_1030);
    assert_string_equal(b->readings[0].invalid_reason, "date is missing");
    batch_free(b);
    b = one_entry("{\"date\":17,\"data\":\"1\",\"name\":\"p\"}");
    assert_string_equal(b->readings[0].invalid_reason, "invalid date format: not a string");
    batch_free(b);
}

static void test_window_both_directions(void **state)
{
    (void)state;
    struct {
        const char *date;
        int64_t ts;
        const char *reason;
    } cases[] = {
        {"29/12/2025 10:25:00", T_2025_12_29_1030 - 300 * SEC, ""}, /* edges are inside */
        {"29/12/2025 10:35:00", T_2025_12_29_1030 + 300 * SEC, ""},
        {"29/12/2025 10:24:59", T_2025_12_29_1030 - 301 * SEC,
         "timestamp outside \u00b1300 s of received_at"},
        {"29 10:35:01/12/2025", T_2025_12_29_1030 + 301 * SEC,
         "timestamp outside \u00b1300 s of received_at"},
        {"2025-12-28T10:30:00Z", T_2025_12_29_1030 - 86400 * SEC,
         "timestamp outside \u00b1300 s of received_at"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char entry[200];
        snprintf(entry, sizeof entry, "{\"date\":\"%s\",\"data\":\"1\",\"name\":\"p\"}",
                 cases[i].date);
        batch *b = one_entry(entry);
        assert_int_equal(b->readings[0].ts_us, cases[i].ts); /* kept as sent */
        assert_string_equal(b->readings[0].invalid_reason, cases[i].reason);
        batch_free(b);
    }
}

static void test_window_uses_configured_seconds(void **state)
{
    (void)state;
    const char *body = HEAD "\"payload\":{\"PM\":[{\"date\":\"29/12/2025 10:29:00\",\"data\":\"1\","
                            "\"name\":\"p\"}]}}";
    batch *b = NULL;
    ingest_error e = {0};
    assert_int_equal(ingest_envelope(body, strlen(body), &LIM, 30 * SEC, &b, &e), MD_OK);
    assert_string_equal(b->readings[0].invalid_reason,
                        "timestamp outside \u00b130 s of received_at");
    batch_free(b);
}

static void test_data_not_a_number(void **state)
{
    (void)state;
    const char *bad[] = {"abc", "", "1.5kW", "NaN", "inf", "0x10", "1e999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char entry[200], want[200];
        snprintf(entry, sizeof entry,
                 "{\"date\":\"29/12/2025 10:29:55\",\"data\":\"%s\",\"name\":\"p\"}", bad[i]);
        snprintf(want, sizeof want, "data is not a number: '%s'", bad[i]);
        batch *b = one_entry(entry);
        assert_true(isnan(b->readings[0].value));
        assert_string_equal(b->readings[0].invalid_reason, want);
        batch_free(b);
    }
    batch *b = one_entry("{\"date\":\"29/12/2025 10:29:55\",\"data\":true,\"name\":\"p\"}");
    assert_true(isnan(b->readings[0].value));
    assert_string_equal(b->readings[0].invalid_reason, "data is not a number");
    batch_free(b);
    b = one_entry("{\"date\":\"29/12/2025 10:29:55\",\"name\":\"p\"}");
    assert_string_equal(b->readings[0].invalid_reason, "data is missing");
    batch_free(b);
    b = one_entry("{\"date\":\"29/12/2025 10:29:55\",\"data\":18014398509481984,\"name\":\"p\"}");
    assert_string_equal(b->readings[0].invalid_reason,
                        "data is not a number: integer out of range (magnitude above 2^53)");
    batch_free(b);
}

static void test_long_data_is_clipped_in_reason(void **state)
{
    (void)state;
    char entry[400], data[101];
    memset(data, 'z', 100);
    data[100] = '\0';
    snprintf(entry, sizeof entry,
             "{\"date\":\"29/12/2025 10:29:55\",\"data\":\"%s\",\"name\":\"p\"}", data);
    batch *b = one_entry(entry);
    char want[200];
    snprintf(want, sizeof want, "data is not a number: '%.64s...'", data);
    assert_string_equal(b->readings[0].invalid_reason, want);
    batch_free(b);
}

static void test_empty_name(void **state)
{
    (void)state;
    batch *b = one_entry("{\"date\":\"29/12/2025 10:29:55\",\"data\":\"1\",\"name\":\"\"}");
    assert_string_equal(b->readings[0].metric, "");
    assert_true(b->readings[0].value == 1.0);
    assert_string_equal(b->readings[0].invalid_reason, "metric name is empty");
    batch_free(b);
    b = one_entry("{\"date\":\"29/12/2025 10:29:55\",\"data\":\"1\"}");
    assert_string_equal(b->readings[0].invalid_reason, "metric name is empty");
    batch_free(b);
    b = one_entry("{\"date\":\"29/12/2025 10:29:55\",\"data\":\"1\",\"name\":3}");
    assert_string_equal(b->readings[0].metric, "");
    assert_string_equal(b->readings[0].invalid_reason, "metric name is not a string");
    batch_free(b);
}

static void test_several_problems_are_joined(void **state)
{
    (void)state;
    batch *b = one_entry("{\"date\":\"soon\",\"data\":\"x\",\"name\":\"\"}");
    assert_string_equal(b->readings[0].invalid_reason,
                        "invalid date format: 'soon'; data is not a number: 'x'; "
                        "metric name is empty");
    batch_free(b);
}

static void test_undecodable_envelopes(void **state)
{
    (void)state;
    expect_reject("{",
                  "malformed JSON at line 1, column 1: string or '}' expected near end of file");
    expect_reject("[]", "body: must be a JSON object");
    expect_reject("{\"received_at\":\"2025-12-29T10:30:00Z\",\"payload\":{\"PM\":[]}}",
                  "client_fingerprint: missing");
    expect_reject("{\"client_fingerprint\":\"\",\"received_at\":\"2025-12-29T10:30:00Z\","
                  "\"payload\":{\"PM\":[]}}",
                  "client_fingerprint: must not be empty");
    expect_reject("{\"client_fingerprint\":1,\"received_at\":\"2025-12-29T10:30:00Z\","
                  "\"payload\":{\"PM\":[]}}",
                  "client_fingerprint: must be a string");
    expect_reject("{\"client_fingerprint\":\"f\",\"payload\":{\"PM\":[]}}", "received_at: missing");
    expect_reject("{\"client_fingerprint\":\"f\",\"received_at\":\"29/12/2025 10:30:00\","
                  "\"payload\":{\"PM\":[]}}",
                  "received_at: not an ISO 8601 timestamp");
    expect_reject("{\"client_fingerprint\":\"f\",\"received_at\":\"2025-12-29T10:30:00\","
                  "\"payload\":{\"PM\":[]}}",
                  "received_at: ambiguous timestamp without a UTC offset");
    expect_reject("{\"client_fingerprint\":\"f\",\"received_at\":1,\"payload\":{\"PM\":[]}}",
                  "received_at: must be an RFC 3339 string");
    expect_reject(HEAD "\"x\":1}", "payload: missing");
    expect_reject(HEAD "\"payload\":[]}", "payload: must be an object");
    expect_reject(HEAD "\"payload\":{}}", "payload.PM: missing");
    expect_reject(HEAD "\"payload\":{\"PM\":{}}}", "payload.PM: must be an array");
    expect_reject(HEAD "\"payload\":{\"PM\":[{\"date\":\"29/12/2025 10:29:55\",\"data\":\"1\","
                       "\"name\":\"p\"},\"x\"]}}",
                  "payload.PM[1]: must be an object");
}

static void test_limit_applies(void **state)
{
    (void)state;
    const ingest_limits two = {.max_readings = 2};
    expect_reject_lim(&two, HEAD "\"payload\":{\"PM\":[{},{},{}]}}", 413,
                      "payload.PM: 3 readings exceed the limit of 2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_envelope),
        cmocka_unit_test(test_empty_pm_is_a_valid_empty_batch),
        cmocka_unit_test(test_optional_client_fields),
        cmocka_unit_test(test_unparseable_date_uses_received_at),
        cmocka_unit_test(test_window_both_directions),
        cmocka_unit_test(test_window_uses_configured_seconds),
        cmocka_unit_test(test_data_not_a_number),
        cmocka_unit_test(test_long_data_is_clipped_in_reason),
        cmocka_unit_test(test_empty_name),
        cmocka_unit_test(test_several_problems_are_joined),
        cmocka_unit_test(test_undecodable_envelopes),
        cmocka_unit_test(test_limit_applies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for src/ingest/telemetry.c: POST /ingest/meter and /ingest/vehicle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "ingest/ingest.h"

#include <string.h>

#define T_2026_02_10_1000 INT64_C(1770717600000000)

typedef int (*decoder)(const char *, size_t, const ingest_limits *, batch **, ingest_error *);

static const ingest_limits LIM = {.max_readings = 20000};

static batch *decode_ok(decoder dec, const char *body)
{
    batch *b = (batch *)0x1;
    ingest_error e = {0};
    int rc = dec(body, strlen(body), &LIM, &b, &e);
    if (rc != MD_OK) fail_msg("rejected (%d %s): %s", e.status, e.message, body);
    return b;
}

static void expect_reject_lim(decoder dec, const ingest_limits *lim, const char *body, int status,
                              const char *message)
{
    batch *b = (batch *)0x1;
    ingest_error e = {0};
    assert_int_equal(dec(body, strlen(body), lim, &b, &e), MD_ERR_INVALID);
    assert_null(b);
    assert_int_equal(e.status, status);
    assert_string_equal(e.message, message);
}

static void expect_reject(decoder dec, const char *body, const char *message)
{
    expect_reject_lim(dec, &LIM, body, 400, message);
}

static void test_ac_meter_two_readings(void **state)
{
    (void)state;
    batch *b =
        decode_ok(ingest_ac_meter, "{\"meterId\":\"MTR_001\",\"kwhConsumedAc\":5.5,"
                                   "\"voltage\":220,\"timestamp\":\"2026-02-10T10:00:00Z\"}");
    assert_string_equal(b->source, "ingest.meter");
    assert_int_equal(b->n_readings, 2);
    assert_int_equal(b->n_links, 0);
    const char *metrics[2] = {"kwh_consumed_ac", "voltage"};
    const double values[2] = {5.5, 220.0};
    for (size_t i = 0; i < 2; i++) {
        const reading *r = &b->readings[i];
        assert_string_equal(r->device, "MTR_001");
        assert_string_equal(r->device_kind, "meter");
        assert_string_equal(r->site, "");
        assert_string_equal(r->metric, metrics[i]);
        assert_int_equal(r->ts_us, T_2026_02_10_1000);
        assert_true(r->value == values[i]);
        assert_string_equal(r->invalid_reason, "");
    }
    batch_free(b);
}

static void test_ac_meter_errors(void **state)
{
    (void)state;
    decoder d = ingest_ac_meter;
    expect_reject(d,
                  "{\"kwhConsumedAc\":5.5,\"voltage\":220,\"timestamp\":\"2026-02-10T10:00:00Z\"}",
                  "meterId: missing");
    expect_reject(d,
                  "{\"meterId\":7,\"kwhConsumedAc\":5.5,\"voltage\":220,"
                  "\"timestamp\":\"2026-02-10T10:00:00Z\"}",
                  "meterId: must be a string");
    expect_reject(d,
                  "{\"meterId\":\"\",\"kwhConsumedAc\":5.5,\"voltage\":220,"
                  "\"timestamp\":\"2026-02-10T10:00:00Z\"}",
                  "meterId: must not be empty");
    expect_reject(d, "{\"meterId\":\"M\",\"voltage\":220,\"timestamp\":\"2026-02-10T10:00:00Z\"}",
                  "kwhConsumedAc: missing");
    expect_reject(d,
                  "{\"meterId\":\"M\",\"kwhConsumedAc\":\"5.5\",\"voltage\":220,"
                  "\"timestamp\":\"2026-02-10T10:00:00Z\"}",
                  "kwhConsumedAc: must be a number");
    expect_reject(d,
                  "{\"meterId\":\"M\",\"kwhConsumedAc\":5.5,\"voltage\":false,"
                  "\"timestamp\":\"2026-02-10T10:00:00Z\"}",
                  "voltage: must be a number");
    expect_reject(d, "{\"meterId\":\"M\",\"kwhConsumedAc\":5.5,\"voltage\":220}",
                  "timestamp: missing");
    expect_reject(d,
                  "{\"meterId\":\"M\",\"kwhConsumedAc\":5.5,\"voltage\":220,"
                  "\"timestamp\":\"2026-02-10 10:00:00\"}",
                  "timestamp: ambiguous timestamp without a UTC offset");
    expect_reject(d, "{\"meterId\":\"M\",\"kwhConsumedAc\":5.5,\"voltage\":220,\"timestamp\":[]}",
                  "timestamp: must be an RFC 3339 string");
    expect_reject(d, "[]", "body: must be a JSON object");
    expect_reject(d, "{",
                  "malformed JSON at line 1, column 1: string or '}' expected near end of "
                  "file");
}

static void test_limit_applies(void **state)
{
    (void)state;
    const ingest_limits one = {.max_readings = 1};
    expect_reject_lim(ingest_ac_meter, &one,
                      "{\"meterId\":\"M\",\"kwhConsumedAc\":5.5,\"voltage\":220,"
                      "\"timestamp\":\"2026-02-10T10:00:00Z\"}",
                      413, "readings: 2 readings exceed the limit of 1");
}

static void test_vehicle_without_meter(void **state)
{
    (void)state;
    batch *b =
        decode_ok(ingest_vehicle, "{\"vehicleId\":\"VEH_001\",\"kwhDeliveredDc\":4.6,"
                                  "\"batteryTemp\":32,\"timestamp\":\"2026-02-10T10:00:00Z\"}");
    assert_string_equal(b->source, "ingest.vehicle");
    assert_int_equal(b->n_readings, 2);
    assert_string_equal(b->readings[0].metric, "kwh_delivered_dc");
    assert_true(b->readings[0].value == 4.6);
    assert_string_equal(b->readings[1].metric, "battery_temp");
    assert_true(b->readings[1].value == 32.0);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(b->readings[i].device, "VEH_001");
        assert_string_equal(b->readings[i].device_kind, "vehicle");
        assert_int_equal(b->readings[i].ts_us, T_2026_02_10_1000);
    }
    assert_int_equal(b->n_links, 0);
    batch_free(b);
}

static void test_vehicle_meter_link(void **state)
{
    (void)state;
    batch *b =
        decode_ok(ingest_vehicle, "{\"vehicleId\":\"VEH_001\",\"kwhDeliveredDc\":4.6,"
                                  "\"batteryTemp\":32,\"timestamp\":\"2026-02-10T10:00:00Z\","
                                  "\"meterId\":\"MTR_001\"}");
    assert_int_equal(b->n_links, 1);
    assert_string_equal(b->links[0].device, "VEH_001");
    assert_string_equal(b->links[0].linked_device, "MTR_001");
    assert_string_equal(b->links[0].relation, "meter");
    batch_free(b);
    /* null and "" mean no meter */
    b = decode_ok(ingest_vehicle, "{\"vehicleId\":\"V\",\"kwhDeliveredDc\":1,\"batteryTemp\":2,"
                                  "\"timestamp\":\"2026-02-10T10:00:00Z\",\"meterId\":null}");
    assert_int_equal(b->n_links, 0);
    batch_free(b);
    b = decode_ok(ingest_vehicle, "{\"vehicleId\":\"V\",\"kwhDeliveredDc\":1,\"batteryTemp\":2,"
                                  "\"timestamp\":\"2026-02-10T10:00:00Z\",\"meterId\":\"\"}");
    assert_int_equal(b->n_links, 0);
    batch_free(b);
}

static void test_vehicle_errors(void **state)
{
    (void)state;
    decoder d = ingest_vehicle;
    expect_reject(d,
                  "{\"kwhDeliveredDc\":1,\"batteryTemp\":2,\"timestamp\":\"2026-02-10T10:00:00Z\"}",
                  "vehicleId: missing");
    expect_reject(d,
                  "{\"vehicleId\":\"V\",\"batteryTemp\":2,\"timestamp\":\"2026-02-10T10:00:00Z\"}",
                  "kwhDeliveredDc: missing");
    expect_reject(d,
                  "{\"vehicleId\":\"V\",\"kwhDeliveredDc\":1,\"batteryTemp\":\"hot\","
                  "\"timestamp\":\"2026-02-10T10:00:00Z\"}",
                  "batteryTemp: must be a number");
    expect_reject(d,
                  "{\"vehicleId\":\"V\",\"kwhDeliveredDc\":1,\"batteryTemp\":2,"
                  "\"timestamp\":\"2026-02-10T10:00:00Z\",\"meterId\":5}",
                  "meterId: must be a string");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ac_meter_two_readings), cmocka_unit_test(test_ac_meter_errors),
        cmocka_unit_test(test_limit_applies),         cmocka_unit_test(test_vehicle_without_meter),
        cmocka_unit_test(test_vehicle_meter_link),    cmocka_unit_test(test_vehicle_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

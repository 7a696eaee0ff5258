/* Unit tests for src/ingest/meter_raw.c and base64.c: POST /api/readings/raw. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "ingest/base64.h"
#include "ingest/ingest.h"
#include "meterdata.pb-c.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_2026_03_18_1015 INT64_C(1773828900000000)
#define T_2026_03_18_1000 INT64_C(1773828000000000)
#define VECTOR "ChEKBgik9unNBhEK16NwPUqTQAoRCgYIoO/pzQYR16NwPQpKk0A="

static const ingest_limits LIM = {.max_readings = 20000};

static int decode(const char *body, const ingest_limits *lim, batch **b, ingest_error *e)
{
    *b = (batch *)0x1;
    memset(e, 0, sizeof(*e));
    return ingest_meter_raw(body, strlen(body), lim, b, e);
}

static void expect_reject(const char *body, int status, const char *message)
{
    batch *b;
    ingest_error e;
    assert_int_equal(decode(body, &LIM, &b, &e), MD_ERR_INVALID);
    assert_null(b);
    assert_int_equal(e.status, status);
    assert_string_equal(e.message, message);
}

static void b64(const uint8_t *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = i + 1 < n ? a[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? a[v & 63] : '=';
    }
    out[o] = '\0';
}

/* Packs readings (ts NULL → no timestamp) into a body for meter 42; malloc'd. */
static char *body_for(size_t n, const int64_t *secs, const int32_t *nanos, const double *vals,
                      const int *has_ts)
{
    MeterData md = METER_DATA__INIT;
    MeterData__MeterReading *rs = calloc(n ? n : 1, sizeof(*rs));
    MeterData__MeterReading **rp = calloc(n ? n : 1, sizeof(*rp));
    Google__Protobuf__Timestamp *ts = calloc(n ? n : 1, sizeof(*ts));
    assert_true(rs && rp && ts);
    for (size_t i = 0; i < n; i++) {
        meter_data__meter_reading__init(&rs[i]);
        google__protobuf__timestamp__init(&ts[i]);
        ts[i].seconds = secs[i];
        ts[i].nanos = nanos[i];
        rs[i].timestamp = has_ts[i] ? &ts[i] : NULL;
        rs[i].value = vals[i];
        rp[i] = &rs[i];
    }
    md.n_readings = n;
    md.readings = rp;
    size_t len = meter_data__get_packed_size(&md);
    uint8_t *buf = malloc(len + 1);
    char *body = malloc(len * 2 + 64);
    assert_true(buf && body);
    meter_data__pack(&md, buf);
    int o = sprintf(body, "{\"meter_number\":42,\"data\":\"");
    b64(buf, len, body + o);
    strcat(body, "\"}");
    free(buf);
    free(rs);
    free(rp);
    free(ts);
    return body;
}

static void test_reference_vector_decodes_exactly(void **state)
{
    (void)state;
    batch *b;
    ingest_error e;
    assert_int_equal(decode("{\"meter_number\":12345,\"data\":\"" VECTOR "\"}", &LIM, &b, &e),
                     MD_OK);
    assert_string_equal(b->source, "api.readings.raw");
    assert_int_equal(b->n_readings, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(b->readings[i].device, "12345");
        assert_string_equal(b->readings[i].device_kind, "meter");
        assert_string_equal(b->readings[i].metric, "energy");
        assert_string_equal(b->readings[i].site, "");
    }
    assert_int_equal(b->readings[0].ts_us, T_2026_03_18_1015);
    assert_true(b->readings[0].value == 1234.56);
    assert_int_equal(b->readings[1].ts_us, T_2026_03_18_1000);
    assert_true(b->readings[1].value == 1234.51);
    batch_free(b);
}

static void test_vector_without_padding_and_string_meter_number(void **state)
{
    (void)state;
    char body[256];
    snprintf(body, sizeof(body), "{\"data\":\"%.*s\",\"meter_number\":\"12345\"}",
             (int)strlen(VECTOR) - 1, VECTOR);
    batch *b;
    ingest_error e;
    assert_int_equal(decode(body, &LIM, &b, &e), MD_OK);
    assert_int_equal(b->n_readings, 2);
    assert_string_equal(b->readings[1].device, "12345");
    assert_int_equal(b->readings[1].ts_us, T_2026_03_18_1000);
    batch_free(b);
}

static void test_nanos_truncate_and_nonfinite_values_pass(void **state)
{
    (void)state;
    int64_t secs[] = {1773828900, -1, 253402300799, -62135596800};
    int32_t nanos[] = {123456789, 999999999, 999999999, 0};
    double vals[] = {NAN, INFINITY, -0.5, 0};
    int has[] = {1, 1, 1, 1};
    char *body = body_for(4, secs, nanos, vals, has);
    batch *b;
    ingest_error e;
    assert_int_equal(decode(body, &LIM, &b, &e), MD_OK);
    assert_int_equal(b->n_readings, 4);
    assert_int_equal(b->readings[0].ts_us, T_2026_03_18_1015 + 123456);
    assert_true(isnan(b->readings[0].value));
    assert_int_equal(b->readings[1].ts_us, -1);
    assert_true(isinf(b->readings[1].value));
    assert_int_equal(b->readings[2].ts_us, INT64_C(253402300799999999));
    assert_true(b->readings[2].value == -0.5);
    assert_int_equal(b->readings[3].ts_us, INT64_C(-62135596800000000));
    assert_string_equal(b->readings[0].device, "42");
    batch_free(b);
    free(body);
}

static void test_reading_errors_name_the_place(void **state)
{
    (void)state;
    struct {
        int64_t sec;
        int32_t nanos;
        int has;
        const char *msg;
    } cases[] = {
        {0, 0, 0, "data.readings[1].timestamp: missing"},
        {253402300800, 0, 1,
         "data.readings[1].timestamp: seconds 253402300800 outside years 0001..9999"},
        {-62135596801, 0, 1,
         "data.readings[1].timestamp: seconds -62135596801 outside years 0001..9999"},
        {0, -1, 1, "data.readings[1].timestamp: nanos -1 outside 0..999999999"},
        {0, 1000000000, 1, "data.readings[1].timestamp: nanos 1000000000 outside 0..999999999"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t secs[] = {1773828900, cases[i].sec};
        int32_t nanos[] = {0, cases[i].nanos};
        double vals[] = {1, 2};
        int has[] = {1, cases[i].has};
        char *body = body_for(2, secs, nanos, vals, has);
        expect_reject(body, 400, cases[i].msg);
        free(body);
    }
}

static void test_empty_meterdata_is_rejected(void **state)
{
    (void)state;
    expect_reject("{\"meter_number\":1,\"data\":\"\"}", 400, "data: MeterData has no readings");
    char *body = body_for(0, NULL, NULL, NULL, NULL);
    expect_reject(body, 400, "data: MeterData has no readings");
    free(body);
}

static void test_field_errors(void **state)
{
    (void)state;
    expect_reject("{\"meter_number\":1}", 400, "data: missing");
    expect_reject("{\"meter_number\":1,\"data\":5}", 400, "data: must be a base64 string");
    expect_reject("{\"data\":\"" VECTOR "\"}", 400, "meter_number: missing");
    expect_reject("{\"meter_number\":0,\"data\":\"" VECTOR "\"}", 400,
                  "meter_number: must be a positive integer");
    expect_reject("{\"meter_number\":1,\"data\":\"" VECTOR "\"", 400,
                  "malformed JSON at line 1, column 79: '}' expected near end of file");
    /* 0xff 0xff...: a varint that never ends */
    expect_reject("{\"meter_number\":1,\"data\":\"//////8=\"}", 400,
                  "data: not a valid MeterData protobuf");
    /* field 1 with wire type 0 instead of a length-delimited message */
    expect_reject("{\"meter_number\":1,\"data\":\"CAE=\"}", 400,
                  "data: not a valid MeterData protobuf");
}

static void test_base64_errors_in_request(void **state)
{
    (void)state;
    struct {
        const char *data, *msg;
    } cases[] = {
        {"ChEK BgikA", "data: not valid base64 (at character 4)"},
        {"ChEK-gik", "data: not valid base64 (at character 4)"}, /* URL-safe alphabet */
        {"ChEK_gik", "data: not valid base64 (at character 4)"},
        {"ChE=Kgik", "data: not valid base64 (at character 3)"}, /* padding in the middle */
        {"ChEKB", "data: not valid base64 (at character 4)"},    /* dangling character */
        {"ChEKB===", "data: not valid base64 (at character 5)"},
        {"Ch=", "data: not valid base64 (at character 2)"}, /* padding without a full quantum */
        {"Cg==Cg==", "data: not valid base64 (at character 2)"},
        {"Ch==", "data: not valid base64 (at character 1)"}, /* non-zero unused bits */
        {"ChE\\n", "data: not valid base64 (at character 3)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"meter_number\":1,\"data\":\"%s\"}", cases[i].data);
        expect_reject(body, 400, cases[i].msg);
    }
}

static void test_base64_decoder_edges(void **state)
{
    (void)state;
    struct {
        const char *in;
        const char *out; /* NULL: rejected */
        size_t out_len, bad_at;
    } cases[] = {
        {"", "", 0, 0},
        {"Zg==", "f", 1, 0},
        {"Zg", "f", 1, 0},
        {"Zm8=", "fo", 2, 0},
        {"Zm8", "fo", 2, 0},
        {"Zm9v", "foo", 3, 0},
        {"Zm9vYmFy", "foobar", 6, 0},
        {"+/+/", "\xfb\xff\xbf", 3, 0},
        {"AA==", "\0", 1, 0},
        {"=", NULL, 0, 0},
        {"==", NULL, 0, 0},
        {"====", NULL, 0, 0},
        {"Z", NULL, 0, 0},
        {"Zg=", NULL, 0, 2},
        {"Zh==", NULL, 0, 1},
        {"Zm9=", NULL, 0, 2},
        {"Zm9v=", NULL, 0, 4},
        {"Zm9v====", NULL, 0, 4},
        {"Zm\x80v", NULL, 0, 2},
        {"Zm9v\0", NULL, 0, 4},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *in = cases[i].in;
        size_t len = strlen(in) + (i == sizeof(cases) / sizeof(cases[0]) - 1); /* keep the NUL */
        uint8_t out[16];
        size_t n = 99, bad = 99;
        assert_true(ingest_base64_max_decoded(len) <= sizeof(out));
        int rc = ingest_base64_decode(in, len, out, &n, &bad);
        if (cases[i].out) {
            if (rc != MD_OK) fail_msg("case %zu '%s' rejected at %zu", i, in, bad);
            assert_int_equal(n, cases[i].out_len);
            assert_memory_equal(out, cases[i].out, n);
        } else {
            if (rc != MD_ERR_INVALID) fail_msg("case %zu '%s' accepted", i, in);
            assert_int_equal(bad, cases[i].bad_at);
        }
    }
}

static void test_readings_limit_is_413(void **state)
{
    (void)state;
    const ingest_limits one = {.max_readings = 1};
    batch *b;
    ingest_error e;
    assert_int_equal(decode("{\"meter_number\":1,\"data\":\"" VECTOR "\"}", &one, &b, &e),
                     MD_ERR_INVALID);
    assert_null(b);
    assert_int_equal(e.status, 413);
    assert_string_equal(e.message, "data.readings: 2 readings exceed the limit of 1");
    const ingest_limits two = {.max_readings = 2};
    assert_int_equal(decode("{\"meter_number\":1,\"data\":\"" VECTOR "\"}", &two, &b, &e), MD_OK);
    batch_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_vector_decodes_exactly),
        cmocka_unit_test(test_vector_without_padding_and_string_meter_number),
        cmocka_unit_test(test_nanos_truncate_and_nonfinite_values_pass),
        cmocka_unit_test(test_reading_errors_name_the_place),
        cmocka_unit_test(test_empty_meterdata_is_rejected),
        cmocka_unit_test(test_field_errors),
        cmocka_unit_test(test_base64_errors_in_request),
        cmocka_unit_test(test_base64_decoder_edges),
        cmocka_unit_test(test_readings_limit_is_413),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

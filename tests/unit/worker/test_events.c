/* Unit tests for worker/events.c: the hand-written event JSON is byte for byte what the
 * jansson code it replaced wrote (kept here as the reference), for ordinary and hostile
 * strings and for every kind of double; invalid UTF-8 becomes U+FFFD instead of no event. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/batch.h"
#include "core/timeutil.h"
#include "store/store.h"
#include "worker/events.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The implementation before the rewrite (events.c at 33bcdaf). */
static char *reference(const batch *b, const reading *r, int outcome, const char *reason)
{
    char ts[32], id[37];
    batch_id_format(b->id, id);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:s,s:s}", "client_id", r->device, "device",
                          r->device, "device_kind", r->device_kind, "metric_name", r->metric,
                          "metric_value", isfinite(r->value) ? json_real(r->value) : json_null(),
                          "reading_timestamp", time_format_rfc3339(r->ts_us, ts),
                          "validation_status",
                          outcome == STORE_OUTCOME_VALID ? "valid" : "invalid", "batch_id", id);
    if (!o) return NULL;
    if (outcome != STORE_OUTCOME_VALID && reason && reason[0])
        json_object_set_new(o, "anomaly_reason", json_string(reason));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    json_decref(o);
    return s;
}

static batch mkbatch(void)
{
    batch b = {0};
    for (int i = 0; i < 16; i++)
        b.id[i] = (uint8_t)(i * 17 + 3);
    return b;
}

static void same_as_reference(const reading *r, int outcome, const char *reason)
{
    batch b = mkbatch();
    char *want = reference(&b, r, outcome, reason);
    assert_non_null(want);
    size_t len = 0;
    char *got = events_reading_json(&b, r, outcome, reason, &len);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(len, strlen(want));
    char stack[64]; /* too small: the malloc path */
    char *in = events_reading_json_in(stack, sizeof stack, &b, r, outcome, reason, &len);
    assert_ptr_not_equal(in, stack);
    assert_string_equal(in, want);
    events_json_release(in, stack);
    char big[1024]; /* fits unless the strings are long: rendered in place */
    in = events_reading_json_in(big, sizeof big, &b, r, outcome, reason, &len);
    if (strlen(want) < 300) assert_ptr_equal(in, big);
    assert_string_equal(in, want);
    events_json_release(in, big);
    free(got);
    free(want);
}

static reading mk(const char *device, const char *metric, double v)
{
    return (reading){.device = device, .device_kind = "meter", .site = "", .metric = metric,
                     .ts_us = INT64_C(1766999395123456), .value = v};
}

static void test_values_are_written_as_jansson_writes_them(void **state)
{
    (void)state;
    const double vs[] = {0.0, -0.0, 1.0, -1.0, 245.5, 0.1, 1.0 / 3, 1e15, 1e16, 1e17, 1e21,
                         123456789012345678.0, 1e-5, 1e-7, 2.5e-300, DBL_MAX, -DBL_MAX,
                         DBL_MIN, 4.9e-324, 100.0, 1e100, -1e-100, 3.14159265358979,
                         NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        reading r = mk("m-1", "energy", vs[i]);
        same_as_reference(&r, STORE_OUTCOME_VALID, "");
    }
    srand(7);
    for (int i = 0; i < 2000; i++) {
        uint64_t bits = (uint64_t)rand() << 40 ^ (uint64_t)rand() << 20 ^ (uint64_t)rand();
        double v;
        memcpy(&v, &bits, sizeof v);
        reading r = mk("m-1", "energy", i % 2 ? v : (double)rand() / 1000.0);
        same_as_reference(&r, STORE_OUTCOME_VALID, "");
    }
}

static void test_strings_are_escaped_as_jansson_escapes_them(void **state)
{
    (void)state;
    const char *ss[] = {"plain", "", "quote\"back\\slash/", "tab\tnl\ncr\rbs\bff\f",
                        "ctl\x01\x1f\x7f", "ünïcødé €", "emoji \xf0\x9f\x94\x8b", "a/b"};
    for (size_t i = 0; i < sizeof ss / sizeof ss[0]; i++) {
        reading r = mk(ss[i], ss[(i + 1) % 8], 1.5);
        same_as_reference(&r, STORE_OUTCOME_VALID, "");
        same_as_reference(&r, STORE_OUTCOME_INVALID, ss[(i + 3) % 8]);
    }
}

static void test_invalid_reading_carries_its_reason_and_a_valid_one_does_not(void **state)
{
    (void)state;
    batch b = mkbatch();
    reading r = mk("m-1", "energy", -2);
    char *s = events_reading_json(&b, &r, STORE_OUTCOME_INVALID, "negative value detected", NULL);
    assert_non_null(strstr(s, "\"validation_status\":\"invalid\""));
    assert_non_null(strstr(s, "\"anomaly_reason\":\"negative value detected\"}"));
    free(s);
    s = events_reading_json(&b, &r, STORE_OUTCOME_VALID, "ignored", NULL);
    assert_null(strstr(s, "anomaly_reason"));
    assert_non_null(strstr(s, "\"reading_timestamp\":\"2025-12-29T09:09:55.123456Z\""));
    free(s);
}

static void test_invalid_utf8_becomes_the_replacement_character(void **state)
{
    (void)state;
    batch b = mkbatch();
    reading r = mk("bad\xff" "dev\xc3", "e\xed\xa0\x80", 1); /* stray, truncated, surrogate */
    size_t len;
    char *s = events_reading_json(&b, &r, STORE_OUTCOME_VALID, "", &len);
    assert_non_null(s);
    assert_non_null(strstr(s, "\"device\":\"bad\xef\xbf\xbd" "dev\xef\xbf\xbd\""));
    assert_non_null(strstr(s, "\"metric_name\":\"e\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""));
    json_error_t e;
    json_t *j = json_loadb(s, len, 0, &e); /* what a subscriber parses */
    assert_non_null(j);
    json_decref(j);
    free(s);
}

static void test_long_strings_fall_back_to_the_heap(void **state)
{
    (void)state;
    char dev[3000];
    memset(dev, '"', sizeof dev - 1); /* every byte escaped: the worst case */
    dev[sizeof dev - 1] = '\0';
    reading r = mk(dev, "energy", 1);
    same_as_reference(&r, STORE_OUTCOME_VALID, "");
    memset(dev, 1, sizeof dev - 1); /* \u0001 each: 6 bytes per byte */
    same_as_reference(&r, STORE_OUTCOME_INVALID, dev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_are_written_as_jansson_writes_them),
        cmocka_unit_test(test_strings_are_escaped_as_jansson_escapes_them),
        cmocka_unit_test(test_invalid_reading_carries_its_reason_and_a_valid_one_does_not),
        cmocka_unit_test(test_invalid_utf8_becomes_the_replacement_character),
        cmocka_unit_test(test_long_strings_fall_back_to_the_heap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

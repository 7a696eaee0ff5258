/* Unit tests for src/core/timeutil.c: the one timestamp parser and formatter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/timeutil.h"

#include <string.h>

#define T_2026_03_18_1015 INT64_C(1773828900000000)

static int64_t parse_ok(const char *s)
{
    int64_t us = -42;
    char err[128] = "";
    int rc = time_parse_iso8601(s, strlen(s), &us, err, sizeof(err));
    if (rc != MD_OK) fail_msg("'%s' rejected: %s", s, err);
    return us;
}

static void expect_err(const char *s, size_t len, const char *want)
{
    int64_t us = -42;
    char err[128] = "";
    assert_int_equal(time_parse_iso8601(s, len, &us, err, sizeof(err)), MD_ERR_INVALID);
    assert_string_equal(err, want);
    assert_int_equal(us, -42); /* untouched on error */
}

static void test_parse_utc_z(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("2026-03-18T10:15:00Z"), T_2026_03_18_1015);
    assert_int_equal(parse_ok("2026-03-18t10:15:00z"), T_2026_03_18_1015);
    assert_int_equal(parse_ok("2026-03-18 10:15:00Z"), T_2026_03_18_1015);
    assert_int_equal(parse_ok("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(parse_ok("1969-12-31T23:59:59Z"), -1000000);
}

static void test_parse_offsets_all_forms(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("2026-03-18T12:15:00+02:00"), T_2026_03_18_1015);
    assert_int_equal(parse_ok("2026-03-18T12:15:00+0200"), T_2026_03_18_1015);
    assert_int_equal(parse_ok("2026-03-18T12:15:00+02"), T_2026_03_18_1015);
    assert_int_equal(parse_ok("2026-03-18T04:45:00-05:30"), T_2026_03_18_1015);
    assert_int_equal(parse_ok("2026-03-18T10:15:00-00:00"), T_2026_03_18_1015);
    assert_int_equal(parse_ok("2026-03-19T09:14:00+22:59"), T_2026_03_18_1015);
}

static void test_parse_fraction_truncates_to_us(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("2026-03-18T10:15:00.5Z"), T_2026_03_18_1015 + 500000);
    assert_int_equal(parse_ok("2026-03-18T10:15:00.123Z"), T_2026_03_18_1015 + 123000);
    assert_int_equal(parse_ok("2026-03-18T10:15:00.123456Z"), T_2026_03_18_1015 + 123456);
    assert_int_equal(parse_ok("2026-03-18T10:15:00.123456999Z"), T_2026_03_18_1015 + 123456);
    assert_int_equal(parse_ok("1969-12-31T23:59:59.5Z"), -500000);
    expect_err("2026-03-18T10:15:00.1234567890Z", 31,
               "not an ISO 8601 timestamp: more than 9 fraction digits");
    expect_err("2026-03-18T10:15:00.Z", 21, "not an ISO 8601 timestamp");
}

static void test_parse_leap_day(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("2024-02-29T00:00:00Z"), INT64_C(1709164800000000));
    assert_int_equal(parse_ok("2000-02-29T00:00:00Z"), INT64_C(951782400000000));
    expect_err("2025-02-29T00:00:00Z", 20,
               "not an ISO 8601 timestamp: day 29 out of range for 2025-02");
    expect_err("1900-02-29T00:00:00Z", 20,
               "not an ISO 8601 timestamp: day 29 out of range for 1900-02");
}

static void test_parse_range_limits(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("0001-01-01T00:00:00Z"), TIME_MIN_US);
    assert_int_equal(parse_ok("9999-12-31T23:59:59.999999Z"), TIME_MAX_US);
    expect_err("0001-01-01T00:00:00+01:00", 25,
               "not an ISO 8601 timestamp: outside years 0001..9999 in UTC");
    expect_err("9999-12-31T23:59:59-01:00", 25,
               "not an ISO 8601 timestamp: outside years 0001..9999 in UTC");
    expect_err("0000-06-01T00:00:00Z", 20, "not an ISO 8601 timestamp: year 0000 out of range");
}

static void test_parse_rejects_missing_offset(void **state)
{
    (void)state;
    expect_err("2026-03-18T10:15:00", 19, "ambiguous timestamp without a UTC offset");
    expect_err("2026-03-18T10:15:00.25", 22, "ambiguous timestamp without a UTC offset");
}

static void test_parse_rejects_bad_fields(void **state)
{
    (void)state;
    expect_err("2026-13-18T10:15:00Z", 20, "not an ISO 8601 timestamp: month 13 out of range");
    expect_err("2026-00-18T10:15:00Z", 20, "not an ISO 8601 timestamp: month 00 out of range");
    expect_err("2026-04-31T10:15:00Z", 20,
               "not an ISO 8601 timestamp: day 31 out of range for 2026-04");
    expect_err("2026-04-00T10:15:00Z", 20,
               "not an ISO 8601 timestamp: day 00 out of range for 2026-04");
    expect_err("2026-03-18T24:00:00Z", 20, "not an ISO 8601 timestamp: hour 24 out of range");
    expect_err("2026-03-18T10:60:00Z", 20, "not an ISO 8601 timestamp: minute 60 out of range");
    expect_err("2026-03-18T23:59:60Z", 20,
               "not an ISO 8601 timestamp: leap second 60 is not supported");
    expect_err("2026-03-18T10:15:61Z", 20, "not an ISO 8601 timestamp: second 61 out of range");
    expect_err("2026-03-18T10:15:00+24:00", 25,
               "not an ISO 8601 timestamp: UTC offset 24:00 out of range");
    expect_err("2026-03-18T10:15:00+01:60", 25,
               "not an ISO 8601 timestamp: UTC offset 01:60 out of range");
}

static void test_parse_rejects_syntax(void **state)
{
    (void)state;
    const char *bad[] = {
        "",                         /* empty */
        "2026",                     /* truncated */
        "2026-03-18",               /* date only */
        "2026-03-18T",              /* truncated */
        "2026-03-18T10:15Z",        /* seconds required */
        "2026-03-18T10:15:0Z",      /* one-digit second */
        "2026-3-18T10:15:00Z",      /* one-digit month */
        "2026/03/18T10:15:00Z",     /* wrong separator */
        "2026-03-18X10:15:00Z",     /* wrong date-time separator */
        "+2026-03-18T10:15:00Z",    /* signed year */
        "2026-03-18T10:15:00+",     /* truncated offset */
        "2026-03-18T10:15:00+2",    /* one-digit offset */
        "2026-03-18T10:15:00+02:",  /* truncated offset minutes */
        "2026-03-18T10:15:00+021",  /* three-digit offset */
        "2026-03-18T10:15:00 Z",    /* space before offset */
        "2026-03-18T10:15:00,5Z",   /* comma fraction */
        "2026-03-18T10:15:00UTC",   /* zone name */
        " 2026-03-18T10:15:00Z",    /* leading space */
        "１９７０-01-01T00:00:00Z", /* non-ASCII digits */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_err(bad[i], strlen(bad[i]), "not an ISO 8601 timestamp");
}

static void test_parse_rejects_trailing_characters(void **state)
{
    (void)state;
    const char *msg = "not an ISO 8601 timestamp: trailing characters after the offset";
    expect_err("2026-03-18T10:15:00Zx", 21, msg);
    expect_err("2026-03-18T10:15:00Z ", 21, msg);
    expect_err("2026-03-18T10:15:00+02:00:00", 28, msg);
    expect_err("2026-03-18T10:15:00+0200Z", 25, msg);
}

static void test_parse_respects_length_not_nul(void **state)
{
    (void)state;
    int64_t us;
    char err[64];
    const char *s = "2026-03-18T10:15:00Zgarbage";
    assert_int_equal(time_parse_iso8601(s, 20, &us, err, sizeof(err)), MD_OK);
    assert_int_equal(us, T_2026_03_18_1015);
    /* Cut inside: the bytes past len must not be read. */
    expect_err(s, 19, "ambiguous timestamp without a UTC offset");
    char nul[] = "2026-03-18T10:15:00Z";
    nul[4] = '\0';
    expect_err(nul, 20, "not an ISO 8601 timestamp");
    /* NULL / zero-length error buffer is allowed */
    assert_int_equal(time_parse_iso8601("x", 1, &us, NULL, 0), MD_ERR_INVALID);
}

static void test_format_rfc3339(void **state)
{
    (void)state;
    char buf[32];
    assert_string_equal(time_format_rfc3339(T_2026_03_18_1015, buf), "2026-03-18T10:15:00Z");
    assert_string_equal(time_format_rfc3339(T_2026_03_18_1015 + 1, buf),
                        "2026-03-18T10:15:00.000001Z");
    assert_string_equal(time_format_rfc3339(0, buf), "1970-01-01T00:00:00Z");
    assert_string_equal(time_format_rfc3339(-1, buf), "1969-12-31T23:59:59.999999Z");
    assert_string_equal(time_format_rfc3339(TIME_MIN_US, buf), "0001-01-01T00:00:00Z");
    assert_string_equal(time_format_rfc3339(TIME_MAX_US, buf), "9999-12-31T23:59:59.999999Z");
    assert_string_equal(time_format_rfc3339(INT64_C(1709164800000000), buf),
                        "2024-02-29T00:00:00Z");
}

static void test_format_parse_roundtrip(void **state)
{
    (void)state;
    /* A spread of instants over the whole range, including odd microseconds. */
    char buf[32];
    int64_t step = (TIME_MAX_US - TIME_MIN_US) / 9973;
    for (int64_t us = TIME_MIN_US; us <= TIME_MAX_US - step; us += step + 7) {
        time_format_rfc3339(us, buf);
        assert_int_equal(parse_ok(buf), us);
    }
}

static void test_days_from_civil(void **state)
{
    (void)state;
    assert_int_equal(time_days_from_civil(1970, 1, 1), 0);
    assert_int_equal(time_days_from_civil(2000, 3, 1), 11017);
    assert_int_equal(time_days_from_civil(1969, 12, 31), -1);
    assert_int_equal(time_days_from_civil(1, 1, 1), -719162);
}

static void test_from_epoch_ms(void **state)
{
    (void)state;
    int64_t us = -42;
    assert_int_equal(time_from_epoch_ms(1773828900000, &us), MD_OK);
    assert_int_equal(us, T_2026_03_18_1015);
    assert_int_equal(time_from_epoch_ms(-1, &us), MD_OK);
    assert_int_equal(us, -1000);
    assert_int_equal(time_from_epoch_ms(TIME_MAX_US / 1000, &us), MD_OK);
    assert_int_equal(us, TIME_MAX_US - 999);
    assert_int_equal(time_from_epoch_ms(TIME_MIN_US / 1000, &us), MD_OK);
    assert_int_equal(us, TIME_MIN_US);
    us = -42;
    assert_int_equal(time_from_epoch_ms(TIME_MAX_US / 1000 + 1, &us), MD_ERR_INVALID);
    assert_int_equal(time_from_epoch_ms(TIME_MIN_US / 1000 - 1, &us), MD_ERR_INVALID);
    assert_int_equal(time_from_epoch_ms(INT64_MAX, &us), MD_ERR_INVALID);
    assert_int_equal(time_from_epoch_ms(INT64_MIN, &us), MD_ERR_INVALID);
    assert_int_equal(us, -42);
}

static void test_clocks_advance(void **state)
{
    (void)state;
    int64_t now = time_now_us();
    assert_true(now > INT64_C(1700000000000000)); /* after 2023 */
    int64_t a = time_mono_us(), b = time_mono_us();
    assert_true(b >= a);
}

/* time_parse_naive_utc: CSV times, a missing offset means UTC. */
static void test_naive_utc_without_offset_is_utc(void **state)
{
    (void)state;
    int64_t us = -42;
    char err[128] = "";
    const char *s = "2026-03-18 10:15:00";
    assert_int_equal(time_parse_naive_utc(s, strlen(s), &us, err, sizeof err), MD_OK);
    assert_int_equal(us, T_2026_03_18_1015);
    s = "2026-03-18T10:15:00.25";
    assert_int_equal(time_parse_naive_utc(s, strlen(s), &us, err, sizeof err), MD_OK);
    assert_int_equal(us, T_2026_03_18_1015 + 250000);
    s = "2026-03-18T12:15:00+02:00"; /* an offset is honoured */
    assert_int_equal(time_parse_naive_utc(s, strlen(s), &us, err, sizeof err), MD_OK);
    assert_int_equal(us, T_2026_03_18_1015);
    us = -42;
    s = "2026-03-18 10:15";
    assert_int_equal(time_parse_naive_utc(s, strlen(s), &us, err, sizeof err), MD_ERR_INVALID);
    assert_string_equal(err, "not an ISO 8601 timestamp");
    s = "2026-13-18 10:15:00";
    assert_int_equal(time_parse_naive_utc(s, strlen(s), &us, err, sizeof err), MD_ERR_INVALID);
    assert_string_equal(err, "not an ISO 8601 timestamp: month 13 out of range");
    assert_int_equal(us, -42);
    /* the strict parser is unchanged */
    s = "2026-03-18 10:15:00";
    assert_int_equal(time_parse_iso8601(s, strlen(s), &us, err, sizeof err), MD_ERR_INVALID);
    assert_string_equal(err, "ambiguous timestamp without a UTC offset");
}

static int64_t gateway_ok(const char *s)
{
    int64_t us = -42;
    char err[128] = "";
    int rc = time_parse_gateway_date(s, strlen(s), &us, err, sizeof(err));
    if (rc != MD_OK) fail_msg("'%s' rejected: %s", s, err);
    return us;
}

static void gateway_err(const char *s, const char *want)
{
    int64_t us = -42;
    char err[160] = "";
    assert_int_equal(time_parse_gateway_date(s, strlen(s), &us, err, sizeof(err)),
                     MD_ERR_INVALID);
    assert_string_equal(err, want);
    assert_int_equal(us, -42);
}

static void test_gateway_date_three_formats(void **state)
{
    (void)state;
    assert_int_equal(gateway_ok("18/03/2026 10:15:00"), T_2026_03_18_1015);
    assert_int_equal(gateway_ok("18 10:15:00/03/2026"), T_2026_03_18_1015);
    assert_int_equal(gateway_ok("2026-03-18T10:15:00Z"), T_2026_03_18_1015);
    assert_int_equal(gateway_ok("2026-03-18T11:15:00+01:00"), T_2026_03_18_1015);
    assert_int_equal(gateway_ok("29/02/2024 00:00:00"), gateway_ok("2024-02-29T00:00:00Z"));
    assert_int_equal(gateway_ok("31 23:59:59/12/9999"), TIME_MAX_US - 999999);
}

static void test_gateway_date_rejects(void **state)
{
    (void)state;
    const char *fmt = "not a gateway date (DD/MM/YYYY HH:mm:ss, DD HH:mm:ss/MM/YYYY or RFC 3339)";
    gateway_err("", fmt);
    gateway_err("18/03/2026", fmt);
    gateway_err("18/03/2026T10:15:00", fmt);
    gateway_err("18/03/2026 10:15:00Z", fmt);
    gateway_err("18/03/26 10:15:00", fmt);
    gateway_err("8/03/2026 10:15:00", fmt);
    gateway_err("18 10:15/03/2026", fmt);
    gateway_err("2026-03-18T10:15:00", fmt); /* RFC 3339 needs its offset */
    gateway_err("2026/03/18 10:15:00", fmt);
    gateway_err("yesterday", fmt);
    gateway_err("31/02/2026 10:15:00", "not a valid gateway date: day 31 out of range for 2026-02");
    gateway_err("18/13/2026 10:15:00", "not a valid gateway date: month 13 out of range");
    gateway_err("18 24:00:00/03/2026", "not a valid gateway date: hour 24 out of range");
    gateway_err("18/03/0000 10:15:00", "not a valid gateway date: year 0000 out of range");
    gateway_err("18/03/2026 10:15:60", "not a valid gateway date: leap second 60 is not supported");
    /* the length is honoured, not a NUL */
    int64_t us;
    assert_int_equal(time_parse_gateway_date("18/03/2026 10:15:00", 18, &us, NULL, 0),
                     MD_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_utc_z),
        cmocka_unit_test(test_parse_offsets_all_forms),
        cmocka_unit_test(test_parse_fraction_truncates_to_us),
        cmocka_unit_test(test_parse_leap_day),
        cmocka_unit_test(test_parse_range_limits),
        cmocka_unit_test(test_parse_rejects_missing_offset),
        cmocka_unit_test(test_parse_rejects_bad_fields),
        cmocka_unit_test(test_parse_rejects_syntax),
        cmocka_unit_test(test_parse_rejects_trailing_characters),
        cmocka_unit_test(test_parse_respects_length_not_nul),
        cmocka_unit_test(test_format_rfc3339),
        cmocka_unit_test(test_format_parse_roundtrip),
        cmocka_unit_test(test_days_from_civil),
        cmocka_unit_test(test_from_epoch_ms),
        cmocka_unit_test(test_clocks_advance),
        cmocka_unit_test(test_naive_utc_without_offset_is_utc),
        cmocka_unit_test(test_gateway_date_three_formats),
        cmocka_unit_test(test_gateway_date_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

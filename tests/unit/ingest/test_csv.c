/* Unit tests for src/ingest/csv.c: the streaming time,<metric> reader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/timeutil.h"
#include "ingest/csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define T_2019_01_01_0015 INT64_C(1546301700000000)
#define MIN15 INT64_C(900000000)

/* A reader over a copy of text (fmemopen); *f is closed by done(). */
static csv_reader *open_text(const char *text, FILE **f)
{
    *f = fmemopen((void *)text, strlen(text), "r");
    assert_non_null(*f);
    char err[256] = "";
    csv_reader *r = csv_open(*f, err, sizeof err);
    if (!r) fail_msg("csv_open: %s", err);
    return r;
}

static void done(csv_reader *r, FILE *f)
{
    csv_close(r);
    fclose(f);
}

static void expect_row(csv_reader *r, int64_t ts, double v)
{
    int64_t got_ts = 0;
    double got_v = 0;
    char err[256] = "";
    int rc = csv_next(r, &got_ts, &got_v, err, sizeof err);
    if (rc != 1) fail_msg("want a row, got %d: %s", rc, err);
    assert_int_equal(got_ts, ts);
    assert_true(got_v == v);
}

static void expect_skip(csv_reader *r, const char *msg)
{
    int64_t ts;
    double v;
    char err[256] = "";
    assert_int_equal(csv_next(r, &ts, &v, err, sizeof err), MD_ERR_INVALID);
    assert_string_equal(err, msg);
}

static void expect_end(csv_reader *r)
{
    int64_t ts;
    double v;
    char err[256] = "";
    assert_int_equal(csv_next(r, &ts, &v, err, sizeof err), 0);
    assert_int_equal(csv_next(r, &ts, &v, err, sizeof err), 0);
}

static void expect_open_fails(const char *text, const char *msg)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    char err[256] = "";
    assert_null(csv_open(f, err, sizeof err));
    assert_string_equal(err, msg);
    fclose(f);
}

static void test_basic_file(void **state)
{
    (void)state;
    FILE *f;
    csv_reader *r = open_text("time,meterusage\n2019-01-01 00:15:00,55.09\n"
                              "2019-01-01 00:30:00,54.64\n",
                              &f);
    assert_string_equal(csv_metric(r), "meterusage");
    assert_int_equal(csv_line(r), 1);
    expect_row(r, T_2019_01_01_0015, 55.09);
    assert_int_equal(csv_line(r), 2);
    expect_row(r, T_2019_01_01_0015 + MIN15, 54.64);
    assert_int_equal(csv_line(r), 3);
    expect_end(r);
    done(r, f);
}

static void test_bom_crlf_and_case_insensitive_header(void **state)
{
    (void)state;
    FILE *f;
    csv_reader *r = open_text("\xef\xbb\xbfTime,MeterUsage\r\n2019-01-01 00:15:00,1\r\n"
                              "2019-01-01T00:30:00+01:00,2\r\n",
                              &f);
    assert_string_equal(csv_metric(r), "meterusage");
    expect_row(r, T_2019_01_01_0015, 1);
    expect_row(r, T_2019_01_01_0015 + MIN15 - 3600 * INT64_C(1000000), 2); /* offset honoured */
    expect_end(r);
    done(r, f);
}

static void test_value_column_first_and_no_final_newline(void **state)
{
    (void)state;
    FILE *f;
    csv_reader *r = open_text("power , time\n 3.5 , 2019-01-01 00:15:00", &f);
    assert_string_equal(csv_metric(r), "power");
    expect_row(r, T_2019_01_01_0015, 3.5);
    expect_end(r);
    done(r, f);
}

static void test_quoted_fields(void **state)
{
    (void)state;
    FILE *f;
    csv_reader *r = open_text("\"time\",\"meter \"\"A\"\", kWh\"\n"
                              "\"2019-01-01 00:15:00\",\"1.5\"\n"
                              "\"2019-01-01\n00:15:00\",1\n"
                              "\"2019-01-01 00:15:00,2\n",
                              &f);
    assert_string_equal(csv_metric(r), "meter \"a\", kwh");
    expect_row(r, T_2019_01_01_0015, 1.5);
    /* a quoted newline stays in the field (and the time is then bad) */
    expect_skip(r, "line 3: bad time '2019-01-01?00:15:00': not an ISO 8601 timestamp");
    expect_skip(r, "line 5: unterminated quoted field");
    expect_end(r);
    done(r, f);
}

static void test_blank_lines_are_ignored(void **state)
{
    (void)state;
    FILE *f;
    csv_reader *r = open_text("\n  \r\ntime,v\n\n2019-01-01 00:15:00,1\n\r\n \t\n"
                              "2019-01-01 00:30:00,2\n\n",
                              &f);
    assert_int_equal(csv_line(r), 3);
    expect_row(r, T_2019_01_01_0015, 1);
    assert_int_equal(csv_line(r), 5);
    expect_row(r, T_2019_01_01_0015 + MIN15, 2);
    assert_int_equal(csv_line(r), 8);
    expect_end(r);
    done(r, f);
}

static void test_bad_rows_are_skipped_with_reason(void **state)
{
    (void)state;
    FILE *f;
    csv_reader *r = open_text("time,meterusage\n"
                              "2019-01-01 00:15:00,NaN\n"
                              "2019-01-01 00:15:00,\n"
                              "2019-01-01 00:15:00,abc\n"
                              "2019-01-01 00:15:00,inf\n"
                              "2019-01-01 00:15:00,1e999\n"
                              "2019-01-01 00:15:00,0x1f\n"
                              "yesterday,1\n"
                              ",1\n"
                              "2019-02-30 00:15:00,1\n"
                              "2019-01-01 00:15:00\n"
                              "2019-01-01 00:15:00,1,2\n"
                              "2019-01-01 00:15:00,\"1\"x\n"
                              "2019-01-01 00:15:00,1\"\n"
                              "2019-01-01 00:15:00,-2.5e1\n",
                              &f);
    expect_skip(r, "line 2: value 'NaN' is not a finite number");
    expect_skip(r, "line 3: empty value");
    expect_skip(r, "line 4: value 'abc' is not a number");
    expect_skip(r, "line 5: value 'inf' is not a finite number");
    expect_skip(r, "line 6: value '1e999' is not a finite number");
    expect_skip(r, "line 7: value '0x1f' is not a number");
    expect_skip(r, "line 8: bad time 'yesterday': not an ISO 8601 timestamp");
    expect_skip(r, "line 9: empty time");
    expect_skip(r, "line 10: bad time '2019-02-30 00:15:00': not an ISO 8601 timestamp: day 30 out "
                   "of range for 2019-02");
    expect_skip(r, "line 11: want 2 columns, got 1");
    expect_skip(r, "line 12: want 2 columns, got 3");
    expect_skip(r, "line 13: unexpected character after a closing quote");
    expect_skip(r, "line 14: quote inside an unquoted field");
    expect_row(r, T_2019_01_01_0015, -25.0);
    expect_end(r);
    done(r, f);
}

static void test_header_errors(void **state)
{
    (void)state;
    expect_open_fails("", "empty file: no header line");
    expect_open_fails("\n\r\n", "empty file: no header line");
    expect_open_fails("ts,meterusage\n", "line 1: header: missing column 'time'");
    expect_open_fails("time\n",
                      "line 1: header: want 2 columns (time and one value column), got 1");
    expect_open_fails("time,a,b\n",
                      "line 1: header: want 2 columns (time and one value column), got 3");
    expect_open_fails("TIME,time\n", "line 1: header: missing a value column");
    expect_open_fails("time,\n", "line 1: header: the value column has no name");
    expect_open_fails("\ntime,\"a\n", "line 2: header: unterminated quoted field");
    expect_open_fails("\xef\xbb", "line 1: header: not UTF-8 text");
    FILE *f = fmemopen("time,m\0x\n", 9, "r");
    char err[256] = "";
    assert_null(csv_open(f, err, sizeof err));
    assert_string_equal(err, "line 1: header: NUL byte");
    fclose(f);
}

static void test_long_line_is_skipped(void **state)
{
    (void)state;
    size_t big = CSV_MAX_LINE + 100;
    const char *head = "time,v\n", *tail = "\n2019-01-01 00:15:00,1\n";
    char *text = malloc(strlen(head) + big + strlen(tail) + 1);
    assert_non_null(text);
    strcpy(text, head);
    memset(text + strlen(head), '9', big);
    strcpy(text + strlen(head) + big, tail);
    FILE *f;
    csv_reader *r = open_text(text, &f);
    expect_skip(r, "line 2: longer than 65536 bytes");
    expect_row(r, T_2019_01_01_0015, 1);
    expect_end(r);
    done(r, f);
    free(text);
}

/* Writes n rows to a temporary file, streams them back and checks memory stays flat. */
static void test_million_rows_stream_in_constant_memory(void **state)
{
    (void)state;
    const uint64_t n = 1000000;
    FILE *f = tmpfile();
    assert_non_null(f);
    fputs("time,meterusage\n", f);
    int64_t t0 = T_2019_01_01_0015 / 1000000;
    for (uint64_t i = 0; i < n; i++) {
        int64_t s = t0 + (int64_t)i * 900;
        int64_t sod = s % 86400; /* one day's times over and over: only the count matters */
        fprintf(f, "2019-01-01 %02d:%02d:%02d,%llu.25\n", (int)(sod / 3600), (int)(sod / 60 % 60),
                (int)(sod % 60), (unsigned long long)i);
        if (i % 100000 == 99999) fputs("\n", f); /* blank lines: not rows */
    }
    rewind(f);
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    int64_t start = time_mono_us();
    char err[256];
    csv_reader *r = csv_open(f, err, sizeof err);
    assert_non_null(r);
    uint64_t rows = 0;
    int64_t ts;
    double v, sum = 0;
    int rc;
    while ((rc = csv_next(r, &ts, &v, err, sizeof err)) != 0) {
        if (rc != 1) fail_msg("row %llu: %s", (unsigned long long)rows, err);
        rows++;
        sum += v;
    }
    int64_t took = time_mono_us() - start;
    getrusage(RUSAGE_SELF, &after);
    assert_int_equal(rows, n);
    assert_true(sum == (double)n * (double)(n - 1) / 2 + 0.25 * (double)n);
    assert_int_equal(csv_line(r), n + n / 100000); /* the last row: after 9 blank lines */
    csv_close(r);
    fclose(f);
    /* ru_maxrss is in KiB: reading must not grow the peak by more than a few buffers */
    assert_true(after.ru_maxrss - before.ru_maxrss < 4096);
    if (took > 2 * INT64_C(1000000))
        print_message("warning: 1,000,000 rows took %lld ms\n", (long long)(took / 1000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_file),
        cmocka_unit_test(test_bom_crlf_and_case_insensitive_header),
        cmocka_unit_test(test_value_column_first_and_no_final_newline),
        cmocka_unit_test(test_quoted_fields),
        cmocka_unit_test(test_blank_lines_are_ignored),
        cmocka_unit_test(test_bad_rows_are_skipped_with_reason),
        cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_long_line_is_skipped),
        cmocka_unit_test(test_million_rows_stream_in_constant_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The PostgreSQL array text of numbers (src/store/pg.c): every double reads back bit for bit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "store/pg_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Formats v, checks the trailing comma, parses it back as float8in would (strtod). */
static double round_trip(double v, char text[40])
{
    int n = pg_fmt_f64(text, v);
    assert_true(n > 1 && n < 40);
    assert_int_equal((int)strlen(text), n);
    assert_int_equal(text[n - 1], ',');
    text[n - 1] = '\0';
    char *end;
    double back = strtod(text, &end);
    assert_ptr_equal(end, text + n - 1);
    return back;
}

static void assert_exact(double v)
{
    char text[40];
    double back = round_trip(v, text);
    if (memcmp(&back, &v, sizeof v) != 0) fail_msg("%.17g came back as %.17g via '%s'", v, back, text);
}

static void test_short_decimals_are_written_short(void **state)
{
    (void)state;
    static const struct { double v; const char *text; } cases[] = {
        {245.5, "245.5"}, {0, "0"}, {1, "1"}, {-1, "-1"}, {0.1, "0.1"}, {-0.5, "-0.5"},
        {0.001, "0.001"}, {123.456789, "123.456789"}, {100000000, "100000000"},
        {-123.45, "-123.45"}, {0.000001, "0.000001"}, {55.09, "55.09"}, {3.14, "3.14"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[40];
        round_trip(cases[i].v, text);
        assert_string_equal(text, cases[i].text);
        assert_exact(cases[i].v);
    }
}

static void test_every_double_reads_back_exactly(void **state)
{
    (void)state;
    static const double edge[] = {-0.0, 1e-7, 1e9, 999999999.999999, 1e300, -1e-300, 5e-324,
                                  0.30000000000000004, 1.0 / 3, 2.0 / 3, 9007199254740993.0,
                                  123456789.123456789, 0.1 + 0.2, 1e-6 / 3, -999999999.5};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) assert_exact(edge[i]);
    char text[40];
    round_trip(-0.0, text);
    assert_true(text[0] == '-');
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double v;
        if (i % 3 == 0) { /* any bit pattern */
            memcpy(&v, &x, sizeof v);
            if (isnan(v) || isinf(v)) continue;
        } else if (i % 3 == 1) { /* meter-like: a few decimals */
            v = (double)(int64_t)(x % 200000000) / pow(10, (double)((x >> 60) % 7)) - 1000;
        } else { /* near multiples of powers of ten */
            v = nextafter((double)(int64_t)(x % 1000000) / 100, (x & 1) ? 1e9 : -1e9);
        }
        assert_exact(v);
    }
}

static void test_special_values_use_postgres_spelling(void **state)
{
    (void)state;
    char text[40];
    pg_fmt_f64(text, NAN);
    assert_string_equal(text, "NaN,");
    pg_fmt_f64(text, INFINITY);
    assert_string_equal(text, "Infinity,");
    pg_fmt_f64(text, -INFINITY);
    assert_string_equal(text, "-Infinity,");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_decimals_are_written_short),
        cmocka_unit_test(test_every_double_reads_back_exactly),
        cmocka_unit_test(test_special_values_use_postgres_spelling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Time: clocks, the one RFC 3339 / ISO 8601 parser, the RFC 3339 formatter.
 * Civil-date arithmetic follows Howard Hinnant's "chrono-Compatible Low-Level Date
 * Algorithms"; no timegm/strptime, so the result never depends on TZ or locale. */
#include "core/timeutil.h"
#include "core/error.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

int64_t time_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * TIME_US_PER_SEC + ts.tv_nsec / 1000;
}

int64_t time_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * TIME_US_PER_SEC + ts.tv_nsec / 1000;
}

int64_t time_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;                                            /* [0, 399] */
    const int64_t doy = (153 * (int64_t)(m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;                    /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

/* Inverse of time_days_from_civil. */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const int64_t doe = z - era * 146097;
    const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const int64_t mp = (5 * doy + 2) / 153;
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return MD_ERR_INVALID;
}

/* Reads exactly n ASCII digits at *p; false when fewer are there. */
static bool digits(const char **p, const char *end, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (*p >= end || **p < '0' || **p > '9') return false;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *out = v;
    return true;
}

static bool expect(const char **p, const char *end, char c)
{
    if (*p >= end || **p != c) return false;
    (*p)++;
    return true;
}

#define NOT_ISO "not an ISO 8601 timestamp"

/* Range-checks civil fields and converts them to µs UTC; what prefixes every message. */
static int civil_to_us(int year, int mon, int day, int hour, int min, int sec, int64_t frac_us,
                       int off_min, const char *what, int64_t *out_us, char *err, size_t errlen)
{
    if (year < 1) return fail(err, errlen, "%s: year 0000 out of range", what);
    if (mon < 1 || mon > 12) return fail(err, errlen, "%s: month %02d out of range", what, mon);
    if (day < 1 || (unsigned)day > days_in_month(year, (unsigned)mon))
        return fail(err, errlen, "%s: day %02d out of range for %04d-%02d", what, day, year, mon);
    if (hour > 23) return fail(err, errlen, "%s: hour %02d out of range", what, hour);
    if (min > 59) return fail(err, errlen, "%s: minute %02d out of range", what, min);
    if (sec == 60) return fail(err, errlen, "%s: leap second 60 is not supported", what);
    if (sec > 59) return fail(err, errlen, "%s: second %02d out of range", what, sec);

    int64_t days = time_days_from_civil(year, (unsigned)mon, (unsigned)day);
    int64_t secs = days * 86400 + hour * 3600 + min * 60 + sec - (int64_t)off_min * 60;
    int64_t us = secs * TIME_US_PER_SEC + frac_us;
    /* An offset can push 0001-01-01 or 9999-12-31 outside the representable years. */
    if (us < TIME_MIN_US || us > TIME_MAX_US)
        return fail(err, errlen, "%s: outside years 0001..9999 in UTC", what);
    *out_us = us;
    return MD_OK;
}

/* The RFC 3339 / ISO 8601 parser; naive_utc: a missing offset means UTC instead of an error. */
static int parse_iso(const char *s, size_t len, bool naive_utc, int64_t *out_us, char *err,
                     size_t errlen)
{
    const char *p = s, *end = s + len;
    int year, mon, day, hour, min, sec;
    if (!s) return fail(err, errlen, NOT_ISO);

    if (!digits(&p, end, 4, &year) || !expect(&p, end, '-') || !digits(&p, end, 2, &mon) ||
        !expect(&p, end, '-') || !digits(&p, end, 2, &day))
        return fail(err, errlen, NOT_ISO);
    if (p >= end || (*p != 'T' && *p != 't' && *p != ' ')) return fail(err, errlen, NOT_ISO);
    p++;
    if (!digits(&p, end, 2, &hour) || !expect(&p, end, ':') || !digits(&p, end, 2, &min) ||
        !expect(&p, end, ':') || !digits(&p, end, 2, &sec))
        return fail(err, errlen, NOT_ISO);

    int64_t frac_us = 0;
    if (p < end && *p == '.') {
        p++;
        int n = 0;
        int64_t scale = 100000;
        while (p < end && *p >= '0' && *p <= '9') {
            if (++n > 9) return fail(err, errlen, NOT_ISO ": more than 9 fraction digits");
            frac_us += (*p - '0') * scale; /* digits past the 6th add 0: truncated to µs */
            scale /= 10;
            p++;
        }
        if (n == 0) return fail(err, errlen, NOT_ISO);
    }

    int off_min = 0;
    if (p == end) {
        if (!naive_utc) return fail(err, errlen, "ambiguous timestamp without a UTC offset");
    } else if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
        if (!digits(&p, end, 2, &oh)) return fail(err, errlen, NOT_ISO);
        if (p < end && *p == ':') {
            p++;
            if (!digits(&p, end, 2, &om)) return fail(err, errlen, NOT_ISO);
        } else if (p < end && !digits(&p, end, 2, &om)) {
            return fail(err, errlen, NOT_ISO);
        }
        if (oh > 23 || om > 59)
            return fail(err, errlen, NOT_ISO ": UTC offset %02d:%02d out of range", oh, om);
        off_min = sign * (oh * 60 + om);
    } else {
        return fail(err, errlen, NOT_ISO);
    }
    if (p != end) return fail(err, errlen, NOT_ISO ": trailing characters after the offset");
    return civil_to_us(year, mon, day, hour, min, sec, frac_us, off_min, NOT_ISO, out_us, err,
                       errlen);
}

int time_parse_iso8601(const char *s, size_t len, int64_t *out_us, char *err, size_t errlen)
{
    return parse_iso(s, len, false, out_us, err, errlen);
}

int time_parse_naive_utc(const char *s, size_t len, int64_t *out_us, char *err, size_t errlen)
{
    return parse_iso(s, len, true, out_us, err, errlen);
}

#define NOT_GATEWAY                                                                              \
    "not a gateway date (DD/MM/YYYY HH:mm:ss, DD HH:mm:ss/MM/YYYY or RFC 3339)"

/* Reads "HH:mm:ss". */
static bool clock_fields(const char **p, const char *end, int *hour, int *min, int *sec)
{
    return digits(p, end, 2, hour) && expect(p, end, ':') && digits(p, end, 2, min) &&
           expect(p, end, ':') && digits(p, end, 2, sec);
}

int time_parse_gateway_date(const char *s, size_t len, int64_t *out_us, char *err, size_t errlen)
{
    const char *p = s, *end = s + len;
    int year, mon, day, hour, min, sec;
    if (!s) return fail(err, errlen, NOT_GATEWAY);
    /* Both gateway forms start with two digits and a separator; RFC 3339 with four digits. */
    if (len >= 3 && !digits(&p, end, 2, &day)) return fail(err, errlen, NOT_GATEWAY);
    if (len >= 3 && *p == '/') { /* DD/MM/YYYY HH:mm:ss */
        p++;
        if (!digits(&p, end, 2, &mon) || !expect(&p, end, '/') || !digits(&p, end, 4, &year) ||
            !expect(&p, end, ' ') || !clock_fields(&p, end, &hour, &min, &sec) || p != end)
            return fail(err, errlen, NOT_GATEWAY);
    } else if (len >= 3 && *p == ' ') { /* DD HH:mm:ss/MM/YYYY */
        p++;
        if (!clock_fields(&p, end, &hour, &min, &sec) || !expect(&p, end, '/') ||
            !digits(&p, end, 2, &mon) || !expect(&p, end, '/') || !digits(&p, end, 4, &year) ||
            p != end)
            return fail(err, errlen, NOT_GATEWAY);
    } else {
        if (time_parse_iso8601(s, len, out_us, NULL, 0) == MD_OK) return MD_OK;
        return fail(err, errlen, NOT_GATEWAY);
    }
    return civil_to_us(year, mon, day, hour, min, sec, 0, 0, "not a valid gateway date", out_us,
                       err, errlen);
}

int time_from_epoch_ms(int64_t ms, int64_t *out_us)
{
    if (ms < TIME_MIN_US / 1000 || ms > TIME_MAX_US / 1000) return MD_ERR_INVALID;
    *out_us = ms * 1000;
    return MD_OK;
}

char *time_format_rfc3339(int64_t us, char out[32])
{
    /* Floor division so that times before 1970 keep a positive sub-second part. */
    int64_t secs = us / TIME_US_PER_SEC, frac = us % TIME_US_PER_SEC;
    if (frac < 0) {
        frac += TIME_US_PER_SEC;
        secs--;
    }
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    int hh = (int)(sod / 3600), mm = (int)(sod / 60 % 60), ss = (int)(sod % 60);
    if (frac)
        snprintf(out, 32, "%04lld-%02u-%02uT%02d:%02d:%02d.%06lldZ", (long long)y, m, d, hh, mm, ss,
                 (long long)frac);
    else
        snprintf(out, 32, "%04lld-%02u-%02uT%02d:%02d:%02dZ", (long long)y, m, d, hh, mm, ss);
    return out;
}

/* Time: the one timestamp parser and formatter of meterd. All times are int64 µs UTC. */
#ifndef METERD_CORE_TIMEUTIL_H
#define METERD_CORE_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

#define TIME_US_PER_SEC INT64_C(1000000)
/* Accepted range: years 0001..9999. */
#define TIME_MIN_US INT64_C(-62135596800000000)
#define TIME_MAX_US INT64_C(253402300799999999)

/* Returns the wall-clock time in µs since the epoch. */
int64_t time_now_us(void);
/* Returns a monotonic clock in µs (for durations). */
int64_t time_mono_us(void);

/* Parses an RFC 3339 / ISO 8601 date-time with an explicit offset ("Z", "+02:00", "+0200"),
 * 'T' or ' ' as separator, optional fraction (up to 9 digits, truncated to µs).
 * A time without an offset is ambiguous and rejected. s need not be NUL-terminated.
 * Returns 0, or MD_ERR_INVALID with a reason in err ("not an ISO 8601 timestamp", ...). */
int time_parse_iso8601(const char *s, size_t len, int64_t *out_us, char *err, size_t errlen);

/* Like time_parse_iso8601, but a time without an offset is UTC (CSV "2019-01-01 00:15:00");
 * an offset, when given, is honoured. Same returns and messages. */
int time_parse_naive_utc(const char *s, size_t len, int64_t *out_us, char *err, size_t errlen);

/* Parses a gateway envelope date: "DD/MM/YYYY HH:mm:ss" or "DD HH:mm:ss/MM/YYYY" (both UTC),
 * or RFC 3339 with an offset. Returns 0, or MD_ERR_INVALID with a reason in err ("not a
 * gateway date (...)", "not a valid gateway date: day 31 out of range for 2025-02", ...). */
int time_parse_gateway_date(const char *s, size_t len, int64_t *out_us, char *err, size_t errlen);

/* Converts epoch milliseconds to µs; MD_ERR_INVALID when outside the accepted range. */
int time_from_epoch_ms(int64_t ms, int64_t *out_us);

/* Formats as RFC 3339 UTC: "2026-03-18T10:15:00Z", with ".ffffff" only when µs != 0.
 * out must hold 32 bytes. Returns out. */
char *time_format_rfc3339(int64_t us, char out[32]);

/* Converts a civil date to days since 1970-01-01 (proleptic Gregorian). */
int64_t time_days_from_civil(int64_t y, unsigned m, unsigned d);

#endif

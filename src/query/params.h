/* Query-string parameters of the read side: times, limits and opaque cursors. */
#ifndef METERD_QUERY_PARAMS_H
#define METERD_QUERY_PARAMS_H

#include <stddef.h>
#include <stdint.h>

/* Parses an RFC 3339 time or integer epoch milliseconds; NULL or "" gives dflt.
 * 0 or MD_ERR_INVALID with a message naming the parameter. */
int params_time(const char *name, const char *v, int64_t dflt, int64_t *out, char *err,
                size_t errlen);
/* Parses a limit in 1..max; NULL gives dflt. 0 or MD_ERR_INVALID. */
int params_limit(const char *v, size_t dflt, size_t max, size_t *out, char *err, size_t errlen);

/* Cursor = "<ts_us>.<hex of key>". Encodes into a malloc'd string (NULL when out of memory). */
char *params_cursor_encode(int64_t ts_us, const char *key);
/* Decodes a cursor; *key is malloc'd. 0 or MD_ERR_INVALID. */
int params_cursor_decode(const char *v, int64_t *ts_us, char **key);

#endif

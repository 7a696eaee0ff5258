/* Shared pieces of the read-side routes: JSON shapes, range parameters, device lookup. */
#ifndef METERD_QUERY_COMMON_H
#define METERD_QUERY_COMMON_H

#include "ingest/http.h"
#include "query/routes.h"
#include "store/store.h"

#include <jansson.h>

/* RFC 3339 string for a µs time. */
json_t *query_time_json(int64_t us);
/* {"id","kind","site"?,"first_seen_at","last_seen_at"} */
json_t *query_device_json(const store_device *d);
/* {"device"?,"metric","ts","value","status","reason"?,"received_at"} */
json_t *query_reading_json(const store_reading *r, int with_device);
/* Parses from/to/limit (default_limit, max_limit) and the cursor into the given fields.
 * Returns 0, or -1 after answering 400. *after_key (malloc'd) holds the cursor key. */
int query_parse_range(http_request *req, int64_t *from_us, int64_t *to_us, size_t *limit,
                      size_t default_limit, size_t max_limit, int64_t *after_ts,
                      char **after_key);
/* query_parse_range for a readings query; by_device: the cursor key is "<device>\x1f<metric>"
 * (rows of several devices), else the metric. *after holds the key's storage (free it).
 * Returns 0, or -1 after answering 400. */
int query_parse_readings_range(http_request *req, store_readings_query *q, int by_device,
                               char **after);
/* The cursor key of a row in a list spanning devices: "<device>\x1f<metric>" (malloc'd). */
char *query_device_metric_key(const char *device, const char *metric);

/* Looks a device up: 1 found (its kind copied into kind), 0 not found, -1 store error. */
int query_find_device(query_ctx *ctx, const char *id, char *kind, size_t kindlen);
/* Seconds the oldest queued batch has waited (0 when the queue is empty). */
double query_lag_seconds(const queue_stats *qs);
/* Encodes a next-page cursor, or JSON null when there is none (key NULL). */
json_t *query_cursor_json(int64_t ts, const char *key);

#define QUERY_DEFAULT_LIMIT 1000
#define QUERY_MAX_LIMIT 10000

#endif

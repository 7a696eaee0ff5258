/* Data routes for the dashboard and the seeded-meter API:
 *   GET /api/metrics                     the CSV-seeded meter's valid readings by time
 *   GET /api/v1/devices/{id}/series      at most `points` points of one metric over a range:
 *                                        raw readings when few, else hourly/daily rollups
 *                                        merged into equal slots (never a scan of raw history)
 *   GET /api/v1/search/devices           devices whose id starts with `prefix`, paged */
#include "core/error.h"
#include "core/timeutil.h"
#include "query/common.h"
#include "query/params.h"
#include "query/web.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SERIES_DEFAULT_POINTS 1000
#define SERIES_MAX_POINTS 10000
#define SERIES_HOURLY_MAX_RANGE_US (INT64_C(2) * 366 * 24 * 3600 * TIME_US_PER_SEC)
#define HOUR_US (INT64_C(3600) * TIME_US_PER_SEC)
#define DAY_US (24 * HOUR_US)
#define SEARCH_DEFAULT_LIMIT 50
#define SEARCH_MAX_LIMIT 1000

/* ---- /api/metrics ------------------------------------------------------------------------ */

typedef struct metrics_rows {
    json_t *arr;
    const char *key;
} metrics_rows;

static int metrics_row(void *arg, const store_reading *r)
{
    metrics_rows *m = arg;
    if (!r->valid || !isfinite(r->value)) return 0;
    json_t *o = json_object();
    json_object_set_new(o, "time", query_time_json(r->ts_us));
    json_object_set_new(o, m->key, json_real(r->value));
    json_array_append_new(m->arr, o);
    return 0;
}

static void h_api_metrics(http_request *req, void *arg)
{
    web_ctx *ctx = arg;
    store *s = ctx->q->s;
    metrics_rows m = {.arr = json_array(), .key = ctx->csv_metric};
    store_readings_query q = {.device = ctx->csv_device, .metric = ctx->csv_metric,
                              .from_us = TIME_MIN_US, .to_us = TIME_MAX_US, .limit = SIZE_MAX};
    if (s->ops->readings(s, &q, metrics_row, &m)) {
        json_decref(m.arr);
        http_respond_error(req, 500, "store error reading the metrics");
        return;
    }
    http_respond_json(req, 200, json_pack("{s:o}", "metrics", m.arr));
}

/* ---- /api/v1/devices/{id}/series --------------------------------------------------------- */

typedef struct series {
    json_t *t, *value, *min, *max;
    size_t n, cap; /* cap: points */
} series;

static json_t *seconds_json(int64_t us)
{
    if (us % TIME_US_PER_SEC == 0) return json_integer((json_int_t)(us / TIME_US_PER_SEC));
    return json_real((double)us / (double)TIME_US_PER_SEC);
}

static void series_add(series *sr, int64_t ts_us, double mean, double min, double max)
{
    json_array_append_new(sr->t, seconds_json(ts_us));
    json_array_append_new(sr->value, json_real(mean));
    json_array_append_new(sr->min, json_real(min));
    json_array_append_new(sr->max, json_real(max));
    sr->n++;
}

static int raw_row(void *arg, const store_reading *r)
{
    series *sr = arg;
    if (sr->n == sr->cap) return 1;
    if (r->valid && isfinite(r->value)) series_add(sr, r->ts_us, r->value, r->value, r->value);
    return 0;
}

typedef struct slots {
    int64_t base, width;
    size_t n;
    uint64_t *count;
    double *sum, *min, *max;
} slots;

static int slot_row(void *arg, const store_aggregate *a)
{
    slots *sl = arg;
    if (a->bucket_us < sl->base || a->count == 0) return 0;
    size_t k = (size_t)((a->bucket_us - sl->base) / sl->width);
    if (k >= sl->n) return 0;
    if (sl->count[k] == 0 || a->min < sl->min[k]) sl->min[k] = a->min;
    if (sl->count[k] == 0 || a->max > sl->max[k]) sl->max[k] = a->max;
    sl->count[k] += a->count;
    sl->sum[k] += a->sum;
    return 0;
}

static int first_row(void *arg, const store_reading *r)
{
    *(int64_t *)arg = r->ts_us;
    return 1;
}

typedef struct newest {
    const char *metric;
    int64_t ts_us;
} newest;

static int live_row(void *arg, const store_reading *r)
{
    newest *nw = arg;
    if (!strcmp(r->metric, nw->metric)) nw->ts_us = r->ts_us;
    return 0;
}

/* The data's own extent when from/to are not given: first reading, newest (live) + 1 µs. */
static int series_extent(store *s, const char *device, const char *metric, int64_t *from,
                         int64_t *to, int want_from, int want_to)
{
    if (want_from) {
        store_readings_query q = {.device = device, .metric = metric, .from_us = TIME_MIN_US,
                                  .to_us = TIME_MAX_US, .limit = 1};
        int64_t first = INT64_MIN;
        if (s->ops->readings(s, &q, first_row, &first)) return -1;
        if (first != INT64_MIN) *from = first;
    }
    if (want_to) {
        /* live state: the newest reading per metric, late arrivals included */
        newest nw = {.metric = metric, .ts_us = INT64_MIN};
        if (s->ops->live(s, device, live_row, &nw)) return -1;
        if (nw.ts_us != INT64_MIN) *to = nw.ts_us + 1;
    }
    return 0;
}

/* Merges rollup buckets into at most points equal slots of whole buckets. */
static int series_rollups(store *s, const char *device, const char *metric, int64_t from,
                          int64_t to, size_t points, series *sr, int *bucket, int64_t *width)
{
    int64_t bucket_us = to - from <= SERIES_HOURLY_MAX_RANGE_US ? HOUR_US : DAY_US;
    *bucket = bucket_us == HOUR_US ? STORE_BUCKET_HOUR : STORE_BUCKET_DAY;
    int64_t base = from >= 0 ? from / bucket_us * bucket_us
                             : -((-from + bucket_us - 1) / bucket_us) * bucket_us;
    int64_t span = to - base;
    int64_t per = (span + (int64_t)points - 1) / (int64_t)points;
    int64_t w = (per + bucket_us - 1) / bucket_us * bucket_us;
    if (w < bucket_us) w = bucket_us;
    slots sl = {.base = base, .width = w, .n = (size_t)((span + w - 1) / w)};
    if (sl.n > points) sl.n = points;
    sl.count = calloc(sl.n, sizeof *sl.count);
    sl.sum = calloc(sl.n, sizeof *sl.sum);
    sl.min = calloc(sl.n, sizeof *sl.min);
    sl.max = calloc(sl.n, sizeof *sl.max);
    int rc = MD_ERR_NOMEM;
    if (sl.count && sl.sum && sl.min && sl.max) {
        store_aggregates_query q = {.device = device, .metric = metric, .bucket = *bucket,
                                    .from_us = base, .to_us = to, .limit = SIZE_MAX};
        rc = s->ops->aggregates(s, &q, slot_row, &sl);
        for (size_t k = 0; rc == MD_OK && k < sl.n; k++)
            if (sl.count[k])
                series_add(sr, base + (int64_t)k * w, sl.sum[k] / (double)sl.count[k], sl.min[k],
                           sl.max[k]);
    }
    free(sl.count);
    free(sl.sum);
    free(sl.min);
    free(sl.max);
    *width = w;
    return rc;
}

static void h_series(http_request *req, void *arg)
{
    web_ctx *ctx = arg;
    store *s = ctx->q->s;
    const char *device = http_param(req, 0), *metric = http_query(req, "metric");
    const char *vfrom = http_query(req, "from"), *vto = http_query(req, "to");
    char err[160];
    size_t points;
    int64_t from = TIME_MIN_US, to = TIME_MAX_US;
    if (!metric || !*metric) {
        http_respond_error(req, 400, "metric: required");
        return;
    }
    if (params_time("from", vfrom, TIME_MIN_US, &from, err, sizeof err) ||
        params_time("to", vto, TIME_MAX_US, &to, err, sizeof err) ||
        params_limit(http_query(req, "points"), SERIES_DEFAULT_POINTS, SERIES_MAX_POINTS,
                     &points, err, sizeof err)) {
        http_respond_error(req, 400, "%s", err);
        return;
    }
    int found = query_find_device(ctx->q, device, NULL, 0);
    if (found <= 0) {
        http_respond_error(req, found < 0 ? 500 : 404, "device '%s' not found", device);
        return;
    }
    if (series_extent(s, device, metric, &from, &to, !vfrom || !*vfrom, !vto || !*vto)) {
        http_respond_error(req, 500, "store error reading the series");
        return;
    }
    if (from >= to && (vfrom && *vfrom) && (vto && *vto)) {
        http_respond_error(req, 400, "from must be before to");
        return;
    }
    store_window_sum ws = {0};
    int rc = from < to ? s->ops->window_sum(s, device, metric, from, to, &ws) : MD_OK;
    series sr = {.t = json_array(), .value = json_array(), .min = json_array(),
                 .max = json_array(), .cap = points};
    const char *resolution = "raw";
    int64_t width = 0;
    if (rc == MD_OK && from < to && ws.count <= points) {
        store_readings_query q = {.device = device, .metric = metric, .from_us = from,
                                  .to_us = to, .limit = SIZE_MAX};
        rc = s->ops->readings(s, &q, raw_row, &sr);
    } else if (rc == MD_OK && from < to) {
        int bucket;
        rc = series_rollups(s, device, metric, from, to, points, &sr, &bucket, &width);
        resolution = bucket == STORE_BUCKET_HOUR ? "hour" : "day";
    }
    if (rc) {
        json_decref(sr.t);
        json_decref(sr.value);
        json_decref(sr.min);
        json_decref(sr.max);
        http_respond_error(req, 500, "store error reading the series");
        return;
    }
    json_t *o = json_pack("{s:s,s:s,s:o,s:o,s:s,s:I,s:I,s:I,s:o,s:o,s:o,s:o}", "device", device,
                          "metric", metric, "from", from < to ? query_time_json(from) : json_null(),
                          "to", from < to ? query_time_json(to) : json_null(), "resolution",
                          resolution, "slot_seconds", (json_int_t)(width / TIME_US_PER_SEC),
                          "count", (json_int_t)ws.count, "points", (json_int_t)sr.n, "t", sr.t,
                          "value", sr.value, "min", sr.min, "max", sr.max);
    http_respond_json(req, 200, o);
}

/* ---- /api/v1/search/devices -------------------------------------------------------------- */

typedef struct search {
    const char *prefix;
    size_t plen;
    json_t *arr;
    size_t n, limit;
    int done;
    char *last; /* owned: id of the last row seen */
} search;

static int search_row(void *arg, const store_device *d)
{
    search *se = arg;
    free(se->last);
    se->last = strdup(d->id);
    int cmp = strncmp(d->id, se->prefix, se->plen);
    if (cmp < 0) return 0; /* ids between the start key and the prefix */
    if (cmp > 0 || se->n == se->limit) {
        se->done = 1; /* past the prefix, or one more than a page: there is more */
        if (cmp == 0) se->n++;
        return 1;
    }
    json_array_append_new(se->arr, query_device_json(d));
    se->n++;
    return 0;
}

/* The greatest key below every id that starts with prefix ("" when prefix is ""). */
static char *search_start(const char *prefix)
{
    size_t n = strlen(prefix);
    char *k = malloc(n + 2);
    if (!k) return NULL;
    memcpy(k, prefix, n + 1);
    while (n > 0 && (unsigned char)k[n - 1] == 0x01) k[--n] = '\0';
    if (n == 0) return k;
    k[n - 1] = (char)((unsigned char)k[n - 1] - 1);
    k[n] = '\x7f'; /* ids compare bytewise; ids with the lowered prefix are skipped above */
    k[n + 1] = '\0';
    return k;
}

static void h_search(http_request *req, void *arg)
{
    web_ctx *ctx = arg;
    store *s = ctx->q->s;
    const char *prefix = http_query(req, "prefix"), *cur = http_query(req, "cursor");
    char err[160];
    size_t limit;
    if (!prefix) prefix = "";
    if (params_limit(http_query(req, "limit"), SEARCH_DEFAULT_LIMIT, SEARCH_MAX_LIMIT, &limit,
                     err, sizeof err)) {
        http_respond_error(req, 400, "%s", err);
        return;
    }
    char *after = NULL;
    int64_t ignored;
    if (cur && *cur) {
        if (params_cursor_decode(cur, &ignored, &after)) {
            http_respond_error(req, 400, "cursor: not a cursor returned by this API");
            return;
        }
    } else if (*prefix) {
        after = search_start(prefix);
    }
    search se = {.prefix = prefix, .plen = strlen(prefix), .arr = json_array(), .limit = limit};
    int rc = MD_OK;
    /* pages of the id order until a page is full or the prefix is passed */
    while (rc == MD_OK && !se.done) {
        free(se.last);
        se.last = NULL;
        rc = s->ops->devices(s, after, 256, search_row, &se);
        if (!se.last) break; /* no more devices */
        free(after);
        after = strdup(se.last);
    }
    free(after);
    if (rc) {
        json_decref(se.arr);
        free(se.last);
        http_respond_error(req, 500, "store error listing devices");
        return;
    }
    size_t shown = json_array_size(se.arr);
    const char *last_id = shown ? json_string_value(json_object_get(
                                      json_array_get(se.arr, shown - 1), "id"))
                                : NULL;
    json_t *next = se.n > limit && last_id ? query_cursor_json(0, last_id) : json_null();
    free(se.last);
    http_respond_json(req, 200, json_pack("{s:s,s:o,s:o}", "prefix", prefix, "devices", se.arr,
                                          "next_cursor", next));
}

size_t web_api_routes(http_route *routes, size_t cap, web_ctx *ctx)
{
    const http_route mine[] = {
        {"GET", "/api/metrics", HTTP_BODY_NONE, h_api_metrics, ctx},
        {"GET", "/api/v1/devices/{}/series", HTTP_BODY_NONE, h_series, ctx},
        {"GET", "/api/v1/search/devices", HTTP_BODY_NONE, h_search, ctx},
    };
    return HTTP_ROUTES_COPY(routes, cap, mine);
}

/* Read-side routes of the versioned API: devices, readings, live state, anomalies,
 * aggregates, gateway clients. They only read the store. */
#include "query/routes.h"
#include "core/error.h"
#include "core/timeutil.h"
#include "query/common.h"
#include "query/params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEVICES_DEFAULT_LIMIT 100
#define DEVICES_MAX_LIMIT 1000

typedef struct collect {
    json_t *arr;
    size_t n, limit;
    int with_device;
    int64_t last_ts;
    char *last_key; /* owned */
} collect;

static int collect_device(void *arg, const store_device *d)
{
    collect *c = arg;
    if (c->n == c->limit) return 1; /* the extra row only says there is a next page */
    json_array_append_new(c->arr, query_device_json(d));
    c->n++;
    free(c->last_key);
    c->last_key = strdup(d->id);
    return 0;
}

static int collect_reading(void *arg, const store_reading *r)
{
    collect *c = arg;
    if (c->n == c->limit) return 1;
    json_array_append_new(c->arr, query_reading_json(r, c->with_device));
    c->n++;
    c->last_ts = r->ts_us;
    free(c->last_key);
    /* rows of several devices: the device is part of the order, so of the cursor */
    c->last_key = c->with_device ? query_device_metric_key(r->device, r->metric)
                                 : strdup(r->metric);
    return 0;
}

/* next_cursor when the page is full (a further row may exist), else null. */
static json_t *next_cursor(collect *c, int64_t ts)
{
    return query_cursor_json(ts, c->n < c->limit ? NULL : c->last_key);
}

static void h_devices(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    char err[160];
    size_t limit;
    char *after = NULL;
    int64_t ignored;
    const char *cur = http_query(req, "cursor");
    if (params_limit(http_query(req, "limit"), DEVICES_DEFAULT_LIMIT, DEVICES_MAX_LIMIT, &limit,
                     err, sizeof err)) {
        http_respond_error(req, 400, "%s", err);
        return;
    }
    if (cur && *cur && params_cursor_decode(cur, &ignored, &after)) {
        http_respond_error(req, 400, "cursor: not a cursor returned by this API");
        return;
    }
    collect c = {.arr = json_array(), .limit = limit};
    int rc = ctx->s->ops->devices(ctx->s, after, limit + 1, collect_device, &c);
    free(after);
    if (rc) {
        json_decref(c.arr);
        free(c.last_key);
        http_respond_error(req, 500, "store error listing devices");
        return;
    }
    json_t *o = json_pack("{s:o,s:o}", "devices", c.arr, "next_cursor", next_cursor(&c, 0));
    free(c.last_key);
    http_respond_json(req, 200, o);
}

static int one_device(void *arg, const store_device *d)
{
    *(json_t **)arg = query_device_json(d);
    return 1;
}

static void h_device(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    json_t *d = NULL;
    int rc = ctx->s->ops->device(ctx->s, http_param(req, 0), one_device, &d);
    if (rc == MD_OK && d) http_respond_json(req, 200, d);
    else if (rc == MD_OK || rc == MD_ERR_NOTFOUND)
        http_respond_error(req, 404, "device '%s' not found", http_param(req, 0));
    else http_respond_error(req, 500, "store error reading the device");
}

/* Runs a readings query and answers {"device"?, "metric"?, <list_name>: [...], next_cursor}. */
static void run_readings(http_request *req, query_ctx *ctx, store_readings_query *q,
                         const char *list_name, int with_device)
{
    collect c = {.arr = json_array(), .limit = q->limit, .with_device = with_device};
    q->limit++;
    int rc = ctx->s->ops->readings(ctx->s, q, collect_reading, &c);
    if (rc) {
        json_decref(c.arr);
        free(c.last_key);
        http_respond_error(req, 500, "store error reading %s", list_name);
        return;
    }
    json_t *o = json_object();
    if (q->device) json_object_set_new(o, "device", json_string(q->device));
    if (q->metric) json_object_set_new(o, "metric", json_string(q->metric));
    json_object_set_new(o, list_name, c.arr);
    json_object_set_new(o, "next_cursor", next_cursor(&c, c.last_ts));
    free(c.last_key);
    http_respond_json(req, 200, o);
}

/* Readings of one device; want_kind (e.g. "client") restricts which devices qualify. */
static void device_readings(http_request *req, query_ctx *ctx, const char *want_kind,
                            const char *what)
{
    store_readings_query q = {.device = http_param(req, 0), .from_us = TIME_MIN_US,
                              .to_us = TIME_MAX_US};
    const char *metric = http_query(req, "metric");
    q.metric = metric && *metric ? metric : NULL;
    char *after, kind[32];
    if (query_parse_readings_range(req, &q, 0, &after)) return;
    int found = query_find_device(ctx, q.device, kind, sizeof kind);
    if (found < 0) http_respond_error(req, 500, "store error reading the device");
    else if (!found || (want_kind && strcmp(kind, want_kind) != 0))
        http_respond_error(req, 404, "%s '%s' not found", what, q.device);
    else run_readings(req, ctx, &q, "readings", 0);
    free(after);
}

static void h_readings(http_request *req, void *arg)
{
    device_readings(req, arg, NULL, "device");
}

static void h_client_readings(http_request *req, void *arg)
{
    device_readings(req, arg, "client", "client");
}

static void h_anomalies(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    store_readings_query q = {.only_invalid = 1, .from_us = TIME_MIN_US, .to_us = TIME_MAX_US};
    const char *dev = http_query(req, "device");
    q.device = dev && *dev ? dev : NULL;
    char *after;
    if (query_parse_readings_range(req, &q, 1, &after)) return;
    run_readings(req, ctx, &q, "anomalies", 1);
    free(after);
}

static int live_row(void *arg, const store_reading *r)
{
    json_array_append_new(arg, query_reading_json(r, 0));
    return 0;
}

static void h_live(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    const char *id = http_param(req, 0);
    int found = query_find_device(ctx, id, NULL, 0);
    if (found <= 0) {
        http_respond_error(req, found < 0 ? 500 : 404, "device '%s' not found", id);
        return;
    }
    json_t *arr = json_array();
    if (ctx->s->ops->live(ctx->s, id, live_row, arr)) {
        json_decref(arr);
        http_respond_error(req, 500, "store error reading live state");
        return;
    }
    http_respond_json(req, 200, json_pack("{s:s,s:o}", "device", id, "live", arr));
}

typedef struct agg_collect {
    json_t *arr;
    size_t n, limit;
    int64_t last_bucket;
    char *last_metric; /* owned */
} agg_collect;

static int collect_aggregate(void *arg, const store_aggregate *a)
{
    agg_collect *c = arg;
    if (c->n == c->limit) return 1;
    json_t *o = json_pack("{s:s,s:o,s:I,s:f,s:f,s:f,s:f,s:{s:o,s:f},s:{s:o,s:f}}", "metric",
                          a->metric, "bucket", query_time_json(a->bucket_us), "count",
                          (json_int_t)a->count, "sum", a->sum, "min", a->min, "max", a->max,
                          "mean", a->count ? a->sum / (double)a->count : 0.0, "first", "ts",
                          query_time_json(a->first_ts_us), "value", a->first, "last", "ts",
                          query_time_json(a->last_ts_us), "value", a->last);
    json_array_append_new(c->arr, o);
    c->n++;
    c->last_bucket = a->bucket_us;
    free(c->last_metric);
    c->last_metric = strdup(a->metric);
    return 0;
}

static void h_aggregates(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    store_aggregates_query q = {.device = http_param(req, 0), .from_us = TIME_MIN_US,
                                .to_us = TIME_MAX_US};
    const char *metric = http_query(req, "metric"), *bucket = http_query(req, "bucket");
    q.metric = metric && *metric ? metric : NULL;
    if (!bucket || !strcmp(bucket, "hour")) q.bucket = STORE_BUCKET_HOUR;
    else if (!strcmp(bucket, "day")) q.bucket = STORE_BUCKET_DAY;
    else {
        http_respond_error(req, 400, "bucket: must be hour or day, not '%.32s'", bucket);
        return;
    }
    char *after = NULL;
    if (query_parse_range(req, &q.from_us, &q.to_us, &q.limit, QUERY_DEFAULT_LIMIT,
                          QUERY_MAX_LIMIT, &q.after_bucket_us, &after))
        return;
    q.after_metric = after;
    int found = query_find_device(ctx, q.device, NULL, 0);
    if (found <= 0) {
        free(after);
        http_respond_error(req, found < 0 ? 500 : 404, "device '%s' not found", q.device);
        return;
    }
    agg_collect c = {.arr = json_array(), .limit = q.limit};
    q.limit++;
    int rc = ctx->s->ops->aggregates(ctx->s, &q, collect_aggregate, &c);
    free(after);
    if (rc) {
        json_decref(c.arr);
        free(c.last_metric);
        http_respond_error(req, 500, "store error reading aggregates");
        return;
    }
    json_t *o = json_pack("{s:s,s:s,s:o,s:o}", "device", q.device, "bucket",
                          q.bucket == STORE_BUCKET_DAY ? "day" : "hour", "aggregates", c.arr,
                          "next_cursor",
                          query_cursor_json(c.last_bucket, c.n < c.limit ? NULL : c.last_metric));
    free(c.last_metric);
    http_respond_json(req, 200, o);
}

size_t query_routes(http_route *routes, size_t cap, query_ctx *ctx)
{
    const http_route mine[] = {
        {"GET", "/api/v1/devices", HTTP_BODY_NONE, h_devices, ctx},
        {"GET", "/api/v1/devices/{}", HTTP_BODY_NONE, h_device, ctx},
        {"GET", "/api/v1/devices/{}/readings", HTTP_BODY_NONE, h_readings, ctx},
        {"GET", "/api/v1/devices/{}/live", HTTP_BODY_NONE, h_live, ctx},
        {"GET", "/api/v1/devices/{}/aggregates", HTTP_BODY_NONE, h_aggregates, ctx},
        {"GET", "/api/v1/anomalies", HTTP_BODY_NONE, h_anomalies, ctx},
        {"GET", "/api/v1/clients/{}/readings", HTTP_BODY_NONE, h_client_readings, ctx},
    };
    size_t n = HTTP_ROUTES_COPY(routes, cap, mine);
    if (!n) return 0;
    n += query_ops_routes(routes + n, cap - n, ctx);
    n += query_compat_routes(routes + n, cap - n, ctx);
    return n;
}

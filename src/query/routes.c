/* Read-side routes. They only read the store (and queue/worker state for health). */
#include "query/routes.h"
#include "core/error.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "query/params.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define READINGS_DEFAULT_LIMIT 1000
#define READINGS_MAX_LIMIT 10000
#define DEVICES_DEFAULT_LIMIT 100
#define DEVICES_MAX_LIMIT 1000

static json_t *time_json(int64_t us)
{
    char buf[32];
    return json_string(time_format_rfc3339(us, buf));
}

static json_t *device_json(const store_device *d)
{
    json_t *o = json_pack("{s:s,s:s,s:o,s:o}", "id", d->id, "kind", d->kind, "first_seen_at",
                          time_json(d->first_seen_us), "last_seen_at",
                          time_json(d->last_seen_us));
    if (o && d->site[0]) json_object_set_new(o, "site", json_string(d->site));
    return o;
}

/* One reading as JSON; with_device adds the device id (anomalies list). */
static json_t *reading_json(const store_reading *r, int with_device)
{
    json_t *o = json_object();
    if (!o) return NULL;
    if (with_device) json_object_set_new(o, "device", json_string(r->device));
    json_object_set_new(o, "metric", json_string(r->metric));
    json_object_set_new(o, "ts", time_json(r->ts_us));
    json_object_set_new(o, "value", isfinite(r->value) ? json_real(r->value) : json_null());
    json_object_set_new(o, "status", json_string(r->valid ? "valid" : "invalid"));
    if (!r->valid) json_object_set_new(o, "reason", json_string(r->reason));
    json_object_set_new(o, "received_at", time_json(r->received_at_us));
    return o;
}

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
    json_array_append_new(c->arr, device_json(d));
    c->n++;
    free(c->last_key);
    c->last_key = strdup(d->id);
    return 0;
}

static int collect_reading(void *arg, const store_reading *r)
{
    collect *c = arg;
    if (c->n == c->limit) return 1;
    json_array_append_new(c->arr, reading_json(r, c->with_device));
    c->n++;
    c->last_ts = r->ts_us;
    free(c->last_key);
    c->last_key = strdup(r->metric);
    return 0;
}

/* next_cursor when the page is full (a further row may exist), else null. */
static json_t *next_cursor(collect *c, int by_ts)
{
    if (c->n < c->limit || !c->last_key) return json_null();
    char *cur = params_cursor_encode(by_ts ? c->last_ts : 0, c->last_key);
    json_t *j = cur ? json_string(cur) : json_null();
    free(cur);
    return j;
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
    *(json_t **)arg = device_json(d);
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

/* Shared by readings and anomalies: from/to/limit/cursor into q. 0 or answered 400. */
static int parse_range(http_request *req, store_readings_query *q, char **after_key)
{
    char err[200];
    const char *cur = http_query(req, "cursor");
    if (params_time("from", http_query(req, "from"), TIME_MIN_US, &q->from_us, err, sizeof err) ||
        params_time("to", http_query(req, "to"), TIME_MAX_US, &q->to_us, err, sizeof err) ||
        params_limit(http_query(req, "limit"), READINGS_DEFAULT_LIMIT, READINGS_MAX_LIMIT,
                     &q->limit, err, sizeof err)) {
        http_respond_error(req, 400, "%s", err);
        return -1;
    }
    if (q->from_us > q->to_us) {
        http_respond_error(req, 400, "from: must not be after to");
        return -1;
    }
    if (cur && *cur) {
        if (params_cursor_decode(cur, &q->after_ts_us, after_key)) {
            http_respond_error(req, 400, "cursor: not a cursor returned by this API");
            return -1;
        }
        q->after_metric = *after_key;
    }
    return 0;
}

static void run_readings(http_request *req, query_ctx *ctx, store_readings_query *q,
                         const char *list_name, int with_device)
{
    collect c = {.arr = json_array(), .limit = q->limit, .with_device = with_device};
    size_t limit = q->limit;
    q->limit = limit + 1;
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
    json_object_set_new(o, "next_cursor", next_cursor(&c, 1));
    free(c.last_key);
    http_respond_json(req, 200, o);
}

static void h_readings(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    store_readings_query q = {.device = http_param(req, 0)};
    const char *metric = http_query(req, "metric");
    q.metric = metric && *metric ? metric : NULL;
    char *after = NULL;
    if (parse_range(req, &q, &after)) return;
    json_t *d = NULL;
    int rc = ctx->s->ops->device(ctx->s, q.device, one_device, &d);
    if (rc == MD_OK && d) {
        json_decref(d);
        run_readings(req, ctx, &q, "readings", 0);
    } else {
        http_respond_error(req, 404, "device '%s' not found", q.device);
    }
    free(after);
}

static void h_anomalies(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    store_readings_query q = {.only_invalid = 1};
    const char *dev = http_query(req, "device");
    q.device = dev && *dev ? dev : NULL;
    char *after = NULL;
    if (parse_range(req, &q, &after)) return;
    run_readings(req, ctx, &q, "anomalies", 1);
    free(after);
}

static int live_row(void *arg, const store_reading *r)
{
    json_array_append_new(arg, reading_json(r, 0));
    return 0;
}

static void h_live(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    const char *id = http_param(req, 0);
    json_t *d = NULL;
    if (ctx->s->ops->device(ctx->s, id, one_device, &d) != MD_OK || !d) {
        http_respond_error(req, 404, "device '%s' not found", id);
        return;
    }
    json_decref(d);
    json_t *arr = json_array();
    if (ctx->s->ops->live(ctx->s, id, live_row, arr)) {
        json_decref(arr);
        http_respond_error(req, 500, "store error reading live state");
        return;
    }
    http_respond_json(req, 200, json_pack("{s:s,s:o}", "device", id, "live", arr));
}

/* Worker lag: age of the oldest batch still in the queue (0 when empty). */
static double lag_seconds(const queue_stats *qs)
{
    if (!qs->depth || !qs->oldest_unacked_us) return 0.0;
    double lag = (double)(time_now_us() - qs->oldest_unacked_us) / 1e6;
    return lag > 0 ? lag : 0.0;
}

static void h_health(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    queue_stats qs = {0};
    ctx->q->ops->stats(ctx->q, &qs);
    int store_ok = ctx->s->ops->ping(ctx->s) == MD_OK;
    worker_info wi = {0};
    if (ctx->w) worker_get_info(ctx->w, &wi);
    int worker_ok = !ctx->w || (wi.running && wi.consecutive_failures == 0);
    int ok = store_ok && worker_ok;
    json_t *worker = json_pack("{s:s,s:b,s:f,s:I}", "status", worker_ok ? "ok" : "failing",
                               "running", wi.running, "lag_seconds", lag_seconds(&qs),
                               "consecutive_failures", (json_int_t)wi.consecutive_failures);
    if (wi.last_error[0]) json_object_set_new(worker, "last_error", json_string(wi.last_error));
    json_t *o = json_pack(
        "{s:s,s:s,s:{s:{s:s,s:s,s:I,s:I,s:I},s:{s:s,s:s},s:o}}", "status", ok ? "ok" : "degraded",
        "version", METERD_VERSION, "components", "queue", "status", "ok", "backend",
        ctx->q->ops->name, "depth", (json_int_t)qs.depth, "depth_bytes",
        (json_int_t)qs.depth_bytes, "dead_letters", (json_int_t)qs.dead_letters, "store",
        "status", store_ok ? "ok" : "failing", "backend", ctx->s->ops->name, "worker", worker);
    http_respond_json(req, ok ? 200 : 503, o);
}

static void h_ready(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    int ready = atomic_load(&ctx->ready);
    http_respond_json(req, ready ? 200 : 503, json_pack("{s:b}", "ready", ready));
}

static void h_metrics(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    queue_stats qs = {0};
    store_counts sc = {0};
    ctx->q->ops->stats(ctx->q, &qs);
    ctx->s->ops->counts(ctx->s, &sc);
    metrics_gauges g = {.queue_depth = qs.depth, .queue_depth_bytes = qs.depth_bytes,
                        .dead_letters = qs.dead_letters, .segments = qs.segments,
                        .worker_lag_seconds = lag_seconds(&qs), .store_devices = sc.devices,
                        .store_readings = sc.readings};
    char *text;
    size_t len;
    if (metrics_render(&g, &text, &len)) {
        http_respond_error(req, 500, "out of memory rendering metrics");
        return;
    }
    http_respond_text(req, 200, "text/plain; version=0.0.4", text, len);
}

static void h_root(http_request *req, void *arg)
{
    (void)arg;
    http_respond_json(req, 200,
                      json_pack("{s:s,s:s,s:s}", "service", "Energy Ingestion Engine", "status",
                                "running", "version", METERD_VERSION));
}

size_t query_routes(http_route *routes, size_t cap, query_ctx *ctx)
{
    const http_route mine[] = {
        {"GET", "/", HTTP_BODY_NONE, h_root, ctx},
        {"GET", "/health", HTTP_BODY_NONE, h_health, ctx},
        {"GET", "/ready", HTTP_BODY_NONE, h_ready, ctx},
        {"GET", "/metrics", HTTP_BODY_NONE, h_metrics, ctx},
        {"GET", "/api/v1/devices", HTTP_BODY_NONE, h_devices, ctx},
        {"GET", "/api/v1/devices/{}", HTTP_BODY_NONE, h_device, ctx},
        {"GET", "/api/v1/devices/{}/readings", HTTP_BODY_NONE, h_readings, ctx},
        {"GET", "/api/v1/devices/{}/live", HTTP_BODY_NONE, h_live, ctx},
        {"GET", "/api/v1/anomalies", HTTP_BODY_NONE, h_anomalies, ctx},
    };
    size_t n = sizeof mine / sizeof mine[0];
    if (n > cap) return 0;
    memcpy(routes, mine, sizeof mine);
    return n;
}

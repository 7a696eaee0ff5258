/* Read routes that existing clients already call: site readings and vehicle analytics. */
#include "core/error.h"
#include "core/timeutil.h"
#include "query/common.h"
#include "query/params.h"
#include "query/routes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct site_collect {
    json_t *arr;
    size_t n, limit;
    int64_t last_ts;
    char *last_key; /* owned */
} site_collect;

static int collect_site_reading(void *arg, const store_reading *r)
{
    site_collect *c = arg;
    if (c->n == c->limit) return 1;
    json_t *o = json_pack("{s:s,s:s,s:s,s:o,s:o,s:o,s:s}", "stream_id", r->position, "site_id",
                          r->site, "device_id", r->device, "power_reading",
                          isfinite(r->value) ? json_real(r->value) : json_null(), "timestamp",
                          query_time_json(r->ts_us), "ingested_at",
                          query_time_json(r->received_at_us), "status",
                          r->valid ? "valid" : "invalid");
    if (o && !r->valid) json_object_set_new(o, "reason", json_string(r->reason));
    json_array_append_new(c->arr, o);
    c->n++;
    c->last_ts = r->ts_us;
    free(c->last_key);
    c->last_key = query_device_metric_key(r->device, r->metric);
    return 0;
}

/* GET /sites/{site_id}/readings: power readings of every device of a site, by timestamp. */
static void h_site_readings(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    store_readings_query q = {.site = http_param(req, 0), .metric = "power",
                              .from_us = TIME_MIN_US, .to_us = TIME_MAX_US};
    char *after;
    if (query_parse_readings_range(req, &q, 1, &after)) return;
    site_collect c = {.arr = json_array(), .limit = q.limit};
    q.limit++;
    int rc = ctx->s->ops->readings(ctx->s, &q, collect_site_reading, &c);
    free(after);
    if (rc) {
        json_decref(c.arr);
        free(c.last_key);
        http_respond_error(req, 500, "store error reading the site");
        return;
    }
    json_t *o = json_pack("{s:s,s:o,s:o}", "site_id", http_param(req, 0), "readings", c.arr,
                          "next_cursor",
                          query_cursor_json(c.last_ts, c.n < c.limit ? NULL : c.last_key));
    free(c.last_key);
    http_respond_json(req, 200, o);
}

typedef struct meter_list {
    char ids[16][257];
    size_t n;
} meter_list;

static int collect_meter(void *arg, const store_device *d)
{
    meter_list *m = arg;
    if (m->n == sizeof m->ids / sizeof m->ids[0]) return 1;
    snprintf(m->ids[m->n++], sizeof m->ids[0], "%s", d->id);
    return 0;
}

/* GET /v1/analytics/performance/{vehicleId}: AC energy of the linked meters, DC energy and
 * battery temperature of the vehicle in [from, to) (default the last 24 h), from rollups. */
static void h_performance(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    const char *vehicle = http_param(req, 0);
    int64_t to = time_now_us(), from = to - 24 * 3600 * TIME_US_PER_SEC, ign = 0;
    size_t limit;
    char *after = NULL, kind[32];
    if (query_parse_range(req, &from, &to, &limit, 1, 1, &ign, &after)) return;
    free(after);
    int found = query_find_device(ctx, vehicle, kind, sizeof kind);
    if (found < 0) {
        http_respond_error(req, 500, "store error reading the vehicle");
        return;
    }
    if (!found || strcmp(kind, "vehicle") != 0) {
        http_respond_error(req, 404, "Vehicle not found");
        return;
    }
    meter_list meters = {.n = 0};
    store_window_sum dc = {0}, temp = {0}, ac = {0};
    int rc = ctx->s->ops->links(ctx->s, vehicle, "meter", collect_meter, &meters);
    for (size_t i = 0; rc == MD_OK && i < meters.n; i++) {
        store_window_sum one = {0};
        rc = ctx->s->ops->window_sum(ctx->s, meters.ids[i], "kwh_consumed_ac", from, to, &one);
        ac.sum += one.sum;
        ac.count += one.count;
    }
    if (rc == MD_OK) rc = ctx->s->ops->window_sum(ctx->s, vehicle, "kwh_delivered_dc", from, to, &dc);
    if (rc == MD_OK) rc = ctx->s->ops->window_sum(ctx->s, vehicle, "battery_temp", from, to, &temp);
    if (rc) {
        http_respond_error(req, 500, "store error computing performance");
        return;
    }
    json_t *meter_ids = json_array();
    for (size_t i = 0; i < meters.n; i++) json_array_append_new(meter_ids, json_string(meters.ids[i]));
    json_t *o = json_pack("{s:s,s:f,s:f,s:o,s:o,s:o,s:o,s:o}", "vehicleId", vehicle,
                          "acEnergyConsumed", ac.sum, "dcEnergyDelivered", dc.sum, "efficiency",
                          ac.sum != 0 ? json_real(round(dc.sum / ac.sum * 100.0) / 100.0)
                                      : json_null(),
                          "avgBatteryTemp",
                          temp.count ? json_real(temp.sum / (double)temp.count) : json_null(),
                          "meterIds", meter_ids, "from", query_time_json(from), "to",
                          query_time_json(to));
    http_respond_json(req, 200, o);
}

size_t query_compat_routes(http_route *routes, size_t cap, query_ctx *ctx)
{
    const http_route mine[] = {
        {"GET", "/sites/{}/readings", HTTP_BODY_NONE, h_site_readings, ctx},
        {"GET", "/api/sites/{}/readings", HTTP_BODY_NONE, h_site_readings, ctx},
        {"GET", "/v1/analytics/performance/{}", HTTP_BODY_NONE, h_performance, ctx},
    };
    return HTTP_ROUTES_COPY(routes, cap, mine);
}

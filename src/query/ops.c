/* Operational routes: service info, health, readiness, metrics. */
#include "core/error.h"
#include "core/membudget.h"
#include "core/metrics.h"
#include "query/common.h"
#include "query/routes.h"
#include "query/web.h"

#include <string.h>
#include <strings.h>

static void h_health(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    queue_stats qs = {0};
    queue_get_stats(ctx->q, &qs);
    int store_ok = ctx->s->ops->ping(ctx->s) == MD_OK;
    worker_info wi = {0};
    if (ctx->w) worker_get_info(ctx->w, &wi);
    int worker_ok = !ctx->w || (wi.running && wi.consecutive_failures == 0);
    int ok = store_ok && worker_ok && qs.connected;
    json_t *worker = json_pack("{s:s,s:b,s:f,s:I}", "status", worker_ok ? "ok" : "failing",
                               "running", wi.running, "lag_seconds", query_lag_seconds(&qs),
                               "consecutive_failures", (json_int_t)wi.consecutive_failures);
    if (wi.last_error[0]) json_object_set_new(worker, "last_error", json_string(wi.last_error));
    json_t *o = json_pack(
        "{s:s,s:s,s:{s:{s:s,s:s,s:b,s:i,s:I,s:I,s:I},s:{s:s,s:s},s:o}}", "status",
        ok ? "ok" : "degraded", "version", METERD_VERSION, "components", "queue", "status",
        qs.connected ? "ok" : "failing",
        "backend", ctx->q->ops->name, "connected", qs.connected, "consumers",
        (int)(qs.consumers ? qs.consumers : (uint64_t)(wi.running ? 1 : 0)), "depth",
        (json_int_t)qs.depth, "depth_bytes", (json_int_t)qs.depth_bytes, "dead_letters",
        (json_int_t)qs.dead_letters, "store", "status", store_ok ? "ok" : "failing", "backend",
        ctx->s->ops->name, "worker", worker);
    http_respond_json(req, ok ? 200 : 503, o);
}

static void h_ready(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    int ready = atomic_load(&ctx->ready);
    http_respond_json(req, ready ? 200 : 503, json_pack("{s:b}", "ready", ready));
}

/* Does the client prefer JSON? (Accept: application/json without text/plain first.) */
static int wants_json(http_request *req)
{
    const char *a = http_header(req, "Accept");
    if (!a) return 0;
    const char *j = strcasestr(a, "application/json"), *t = strcasestr(a, "text/plain");
    return j && (!t || j < t);
}

static void metrics_json(http_request *req, query_ctx *ctx, const queue_stats *qs,
                         const store_counts *sc)
{
    worker_info wi = {0};
    if (ctx->w) worker_get_info(ctx->w, &wi);
    /* the backend's view of the group (Redis XINFO, RabbitMQ declare-ok), else this process's */
    json_t *group = json_pack(
        "{s:s,s:I,s:I,s:s}", "name", qs->group[0] ? qs->group : "embedded", "consumers",
        (json_int_t)(qs->consumers ? qs->consumers : (uint64_t)(wi.running ? 1 : 0)), "pending",
        (json_int_t)(qs->has_pending ? qs->pending : qs->depth), "last_delivered_id",
        wi.last_position[0] ? wi.last_position : qs->last_delivered);
    json_t *o = json_pack(
        "{s:s,s:I,s:I,s:[o],s:{s:I,s:I,s:I,s:I,s:f},s:{s:I,s:I,s:I,s:I,s:I},s:{s:I,s:I}}",
        "queue_backend", ctx->q->ops->name, "stream_length",
        (json_int_t)(qs->length ? qs->length : qs->depth),
        "pending_count", (json_int_t)(qs->has_pending ? qs->pending : qs->depth),
        "consumer_groups", group, "queue", "depth",
        (json_int_t)qs->depth, "depth_bytes", (json_int_t)qs->depth_bytes, "dead_letters",
        (json_int_t)qs->dead_letters, "published", (json_int_t)qs->published, "lag_seconds",
        query_lag_seconds(qs), "readings", "accepted",
        (json_int_t)metrics_get(MC_READINGS_ACCEPTED), "stored",
        (json_int_t)metrics_get(MC_READINGS_STORED), "invalid",
        (json_int_t)metrics_get(MC_READINGS_INVALID), "duplicates",
        (json_int_t)metrics_get(MC_READINGS_DUPLICATE), "conflicts",
        (json_int_t)metrics_get(MC_READINGS_CONFLICT), "store", "devices",
        (json_int_t)sc->devices, "readings", (json_int_t)sc->readings);
    json_object_set_new(o, "requests",
                        json_pack("{s:I,s:I}", "memory_bytes", (json_int_t)membudget_used(),
                                  "memory_budget_bytes", (json_int_t)membudget_max()));
    http_respond_json(req, 200, o);
}

static void h_metrics(http_request *req, void *arg)
{
    query_ctx *ctx = arg;
    queue_stats qs = {0};
    store_counts sc = {0};
    queue_get_stats(ctx->q, &qs);
    ctx->s->ops->counts(ctx->s, &sc);
    if (wants_json(req)) {
        metrics_json(req, ctx, &qs, &sc);
        return;
    }
    metrics_gauges g = {.queue_depth = qs.depth, .queue_depth_bytes = qs.depth_bytes,
                        .dead_letters = qs.dead_letters, .segments = qs.segments,
                        .worker_lag_seconds = query_lag_seconds(&qs), .store_devices = sc.devices,
                        .store_readings = sc.readings};
    char *text;
    size_t len;
    if (metrics_render(&g, &text, &len)) {
        http_respond_error(req, 500, "out of memory rendering metrics");
        return;
    }
    http_respond_text(req, 200, "text/plain; version=0.0.4", text, len);
}

/* GET /: the dashboard for browsers (Accept: text/html, web.c), service info as JSON otherwise. */
static void h_root(http_request *req, void *arg)
{
    (void)arg;
    if (web_dashboard(req)) return;
    http_add_header(req, "Vary", "Accept");
    http_respond_json(req, 200,
                      json_pack("{s:s,s:s,s:s}", "service", "Energy Ingestion Engine", "status",
                                "running", "version", METERD_VERSION));
}

size_t query_ops_routes(http_route *routes, size_t cap, query_ctx *ctx)
{
    const http_route mine[] = {
        {"GET", "/", HTTP_BODY_NONE, h_root, ctx},
        {"GET", "/health", HTTP_BODY_NONE, h_health, ctx},
        {"GET", "/ready", HTTP_BODY_NONE, h_ready, ctx},
        {"GET", "/metrics", HTTP_BODY_NONE, h_metrics, ctx},
    };
    return HTTP_ROUTES_COPY(routes, cap, mine);
}

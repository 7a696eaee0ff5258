/* Ingest routes: one handler per wire format, all ending in ingest_submit. */
#include "ingest/routes.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>

typedef struct pending {
    http_request *req;
    char batch_id[37];
    size_t n;
} pending;

/* Queue callback: the batch is durable (or failed); answer the suspended request. */
static void on_durable(void *arg, int status, const char *position)
{
    pending *p = arg;
    if (status == MD_OK) {
        metrics_add(MC_BATCHES_ACCEPTED, 1);
        metrics_add(MC_READINGS_ACCEPTED, p->n);
        json_t *o = json_pack("{s:s,s:I,s:s}", "batch_id", p->batch_id, "accepted",
                              (json_int_t)p->n, "position", position ? position : "");
        http_respond_json(p->req, 202, o);
    } else {
        http_add_header(p->req, "Retry-After", "1");
        http_respond_error(p->req, 503, "the queue could not make the batch durable: %s",
                           md_strerror(status));
    }
    free(p);
}

void ingest_submit(http_request *req, ingest_ctx *ctx, batch *b)
{
    if (atomic_load(&ctx->closing)) {
        batch_free(b);
        http_add_header(req, "Retry-After", "5");
        http_respond_error(req, 503, "shutting down; retry on another instance");
        return;
    }
    const char *ua = http_header(req, "User-Agent");
    if (batch_set(b, &b->request_id, http_request_id(req)) ||
        (ua && batch_set(b, &b->client_user_agent, ua))) {
        batch_free(b);
        http_respond_error(req, 503, "out of memory");
        return;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    pending *p = malloc(sizeof *p);
    if (!p || batch_encode(b, &buf, &len)) {
        free(p);
        batch_free(b);
        http_respond_error(req, 503, "out of memory");
        return;
    }
    p->req = req;
    p->n = b->n_readings;
    batch_id_format(b->id, p->batch_id);
    batch_free(b);
    int rc = ctx->q->ops->publish(ctx->q, buf, len, on_durable, p);
    free(buf);
    if (rc == MD_OK) return; /* on_durable answers */
    free(p);
    if (rc == MD_ERR_FULL) metrics_add(MC_REJECTED_BACKPRESSURE, 1);
    http_add_header(req, "Retry-After", rc == MD_ERR_FULL ? "1" : "5");
    http_respond_error(req, 503, "%s",
                       rc == MD_ERR_FULL ? "queue backlog over budget; retry later"
                                         : "queue unavailable; retry later");
}

typedef int (*decoder)(const char *, size_t, const ingest_limits *, batch **, ingest_error *);

/* Shared shape of every JSON ingest route: decode whole or reject, then submit. */
static void decode_and_submit(http_request *req, ingest_ctx *ctx, decoder dec)
{
    size_t len;
    const char *body = http_body(req, &len);
    batch *b = NULL;
    ingest_error e = {0};
    int rc = dec(body, len, &ctx->limits, &b, &e);
    if (rc == MD_ERR_NOMEM) {
        http_respond_error(req, 503, "out of memory decoding the request");
    } else if (rc) {
        http_respond_error(req, e.status ? e.status : 400, "%s", e.message);
    } else {
        ingest_submit(req, ctx, b);
    }
}

static void h_canonical(http_request *req, void *ctx)
{
    decode_and_submit(req, ctx, ingest_canonical_json);
}

static void h_meter(http_request *req, void *ctx)
{
    decode_and_submit(req, ctx, ingest_meter_json);
}

static void h_meter_raw(http_request *req, void *ctx)
{
    decode_and_submit(req, ctx, ingest_meter_raw);
}

size_t ingest_routes(http_route *routes, size_t cap, ingest_ctx *ctx)
{
    const http_route mine[] = {
        {"POST", "/api/v1/readings", HTTP_BODY_JSON, h_canonical, ctx},
        {"POST", "/api/readings", HTTP_BODY_JSON, h_meter, ctx},
        {"POST", "/api/readings/raw", HTTP_BODY_JSON, h_meter_raw, ctx},
    };
    size_t n = sizeof mine / sizeof mine[0];
    if (n > cap) return 0;
    memcpy(routes, mine, sizeof mine);
    return n;
}

/* Ingest routes: one handler per wire format, all ending in ingest_submit. */
#include "ingest/routes.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#include <stdlib.h>
#include <string.h>

typedef struct pending {
    http_request *req;
    char batch_id[37];
    size_t n;
    ingest_reply reply;
} pending;

/* True when s needs no escaping inside a JSON string (queue positions: digits, '-', ...). */
static int json_plain(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == '"' || *s == '\\' || (unsigned char)*s >= 0x80)
            return 0;
    return 1;
}

/* The 202 body, written by hand: it is built on the queue's commit thread, once per request,
 * where jansson's pack and dump were 17 % of that thread's time under single-reading load. Byte
 * for byte what http_respond_json wrote (tests/integration check the body). NULL: use jansson. */
static char *accepted_body(const pending *p, const char *position, size_t *len)
{
    if (!json_plain(position) || !json_plain(p->batch_id)) return NULL;
    size_t cap = 64 + sizeof p->batch_id + strlen(position);
    char *text = malloc(cap);
    if (!text) return NULL;
    int n = snprintf(text, cap, "{\"batch_id\":\"%s\",\"accepted\":%zu,\"position\":\"%s\"}",
                     p->batch_id, p->n, position);
    if (n < 0 || (size_t)n >= cap) {
        free(text);
        return NULL;
    }
    *len = (size_t)n;
    return text;
}

/* Queue callback: the batch is durable (or failed); answer the suspended request. */
static void on_durable(void *arg, int status, const char *position)
{
    pending *p = arg;
    if (!position) position = "";
    size_t len = 0;
    char *text;
    if (status == MD_OK) {
        metrics_add(MC_BATCHES_ACCEPTED, 1);
        metrics_add(MC_READINGS_ACCEPTED, p->n);
        if (p->reply != INGEST_REPLY_SITE && (text = accepted_body(p, position, &len)))
            http_respond_text(p->req, 202, "application/json", text, len);
        else if (p->reply == INGEST_REPLY_SITE)
            http_respond_json(p->req, 201,
                              json_pack("{s:s,s:s}", "status", "accepted", "stream_id",
                                        position));
        else
            http_respond_json(p->req, 202,
                              json_pack("{s:s,s:I,s:s}", "batch_id", p->batch_id, "accepted",
                                        (json_int_t)p->n, "position", position));
    } else {
        http_add_header(p->req, "Retry-After", "1");
        http_respond_error(p->req, 503, "the queue could not make the batch durable: %s",
                           md_strerror(status));
    }
    free(p);
}

/* Ids appear as one path segment of the read API (/api/v1/devices/{id}), and the HTTP layer
 * decodes %2F before routing, so an id with '/' could be written but never read back. */
static int check_ids(http_request *req, const batch *b)
{
    for (size_t i = 0; i < b->n_readings; i++) {
        const reading *r = &b->readings[i];
        const char *field = strchr(r->device, '/') ? "device" : strchr(r->site, '/') ? "site" : NULL;
        if (field) {
            http_respond_error(req, 400, "readings[%zu].%s: must not contain '/'", i, field);
            return -1;
        }
    }
    for (size_t i = 0; i < b->n_links; i++) {
        if (strchr(b->links[i].device, '/') || strchr(b->links[i].linked_device, '/')) {
            http_respond_error(req, 400, "device ids must not contain '/'");
            return -1;
        }
    }
    return 0;
}

void ingest_submit(http_request *req, ingest_ctx *ctx, batch *b, ingest_reply reply)
{
    if (check_ids(req, b)) {
        batch_free(b);
        return;
    }
    if (atomic_load(&ctx->closing)) {
        batch_free(b);
        http_add_header(req, "Retry-After", "5");
        http_respond_error(req, 503, "shutting down; retry on another instance");
        return;
    }
    const char *ua = http_header(req, "User-Agent");
    if ((!b->request_id[0] && batch_set(b, &b->request_id, http_request_id(req))) ||
        (ua && !b->client_user_agent[0] && batch_set(b, &b->client_user_agent, ua))) {
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
    p->reply = reply;
    batch_id_format(b->id, p->batch_id);
    batch_free(b);
    int rc = queue_publish(ctx->q, buf, len, on_durable, p);
    free(buf);
    if (rc == MD_OK) return; /* on_durable answers */
    free(p);
    if (rc == MD_ERR_FULL) metrics_add(MC_REJECTED_BACKPRESSURE, 1);
    http_add_header(req, "Retry-After", rc == MD_ERR_FULL ? "1" : "5");
    http_respond_error(req, 503, "%s",
                       rc == MD_ERR_FULL ? "queue backlog over budget; retry later"
                                         : "queue unavailable; retry later");
}

/* 422 in the FastAPI shape the single-reading API's clients expect, plus our error fields. */
static void respond_422(http_request *req, const ingest_error *e)
{
    json_t *loc = json_pack("[s]", "body");
    if (e->field[0]) json_array_append_new(loc, json_string(e->field));
    json_t *detail = json_pack("[{s:o,s:s,s:s}]", "loc", loc, "msg", e->message, "type",
                               e->type[0] ? e->type : "value_error");
    http_respond_error_with(req, 422, detail, "%s", e->message);
}

typedef int (*decoder)(const char *, size_t, const ingest_limits *, batch **, ingest_error *);

/* Shared shape of every JSON ingest route: decode whole or reject, then submit. */
static void decode_and_submit(http_request *req, ingest_ctx *ctx, decoder dec, ingest_reply reply)
{
    size_t len;
    const char *body = http_body(req, &len);
    batch *b = NULL;
    ingest_error e = {0};
    int rc = dec(body, len, &ctx->limits, &b, &e);
    if (rc == MD_ERR_NOMEM) {
        http_add_header(req, "Retry-After", "1");
        http_respond_error(req, 503, "out of memory decoding the request");
    }
    else if (rc && e.status == 422) respond_422(req, &e);
    else if (rc) http_respond_error(req, e.status ? e.status : 400, "%s", e.message);
    else ingest_submit(req, ctx, b, reply);
}

static void h_canonical(http_request *req, void *ctx)
{
    decode_and_submit(req, ctx, ingest_canonical_json, INGEST_REPLY_BATCH);
}

static void h_site(http_request *req, void *ctx)
{
    decode_and_submit(req, ctx, ingest_site_reading, INGEST_REPLY_SITE);
}

/* /api/readings carries two formats: a meter batch (meter_number) or one site reading
 * (site_id). Only a top-level site_id without meter_number selects the site format. */
static void h_api_readings(http_request *req, void *ctx)
{
    size_t len;
    const char *body = http_body(req, &len);
    json_t *j = json_loadb(body, len, 0, NULL);
    int site = json_is_object(j) && json_object_get(j, "site_id") &&
               !json_object_get(j, "meter_number");
    json_decref(j);
    if (site) h_site(req, ctx);
    else decode_and_submit(req, ctx, ingest_meter_json, INGEST_REPLY_BATCH);
}

static void h_meter_raw(http_request *req, void *ctx)
{
    decode_and_submit(req, ctx, ingest_meter_raw, INGEST_REPLY_BATCH);
}

static void h_ac_meter(http_request *req, void *ctx)
{
    decode_and_submit(req, ctx, ingest_ac_meter, INGEST_REPLY_BATCH);
}

static void h_vehicle(http_request *req, void *ctx)
{
    decode_and_submit(req, ctx, ingest_vehicle, INGEST_REPLY_BATCH);
}

static void h_envelope(http_request *req, void *arg)
{
    ingest_ctx *ctx = arg;
    size_t len;
    const char *body = http_body(req, &len);
    batch *b = NULL;
    ingest_error e = {0};
    int rc = ingest_envelope(body, len, &ctx->limits, ctx->envelope_window_us, &b, &e);
    if (rc == MD_ERR_NOMEM) http_respond_error(req, 503, "out of memory decoding the envelope");
    else if (rc) http_respond_error(req, e.status ? e.status : 400, "%s", e.message);
    else ingest_submit(req, ctx, b, INGEST_REPLY_BATCH);
}

/* PUT /api/v1/vehicles/{id}/meter {"meterId":"MTR_001"}: links the vehicle to the meter that
 * charges it. The link travels through the queue like readings, so the worker owns writes. */
static void h_vehicle_meter(http_request *req, void *arg)
{
    size_t len;
    const char *body = http_body(req, &len);
    json_error_t jerr;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        http_respond_error(req, 400, "malformed JSON at line %d, column %d: %s", jerr.line,
                           jerr.column, jerr.text);
        return;
    }
    json_t *m = json_object_get(j, "meterId");
    if (!json_is_string(m) || !json_string_length(m) || json_string_length(m) > 256) {
        json_decref(j);
        http_respond_error(req, 400, "meterId: must be a non-empty string");
        return;
    }
    batch *b = batch_new("api.v1.vehicles.meter");
    if (!b || batch_add_link(b, http_param(req, 0), json_string_value(m), "meter")) {
        batch_free(b);
        json_decref(j);
        http_respond_error(req, 503, "out of memory");
        return;
    }
    json_decref(j);
    ingest_submit(req, arg, b, INGEST_REPLY_BATCH);
}

size_t ingest_routes(http_route *routes, size_t cap, ingest_ctx *ctx)
{
    const http_route mine[] = {
        {"POST", "/api/v1/readings", HTTP_BODY_JSON, h_canonical, ctx},
        {"POST", "/api/readings", HTTP_BODY_JSON, h_api_readings, ctx},
        {"POST", "/api/readings/raw", HTTP_BODY_JSON, h_meter_raw, ctx},
        {"POST", "/readings", HTTP_BODY_JSON, h_site, ctx},
        {"POST", "/ingest/meter", HTTP_BODY_JSON, h_ac_meter, ctx},
        {"POST", "/ingest/vehicle", HTTP_BODY_JSON, h_vehicle, ctx},
        {"PUT", "/api/v1/vehicles/{}/meter", HTTP_BODY_JSON, h_vehicle_meter, ctx},
        {"POST", "/api/v1/envelopes", HTTP_BODY_JSON, h_envelope, ctx},
    };
    return HTTP_ROUTES_COPY(routes, cap, mine);
}

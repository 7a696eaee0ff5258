/* Ingest routes: decode a wire format, publish the canonical batch, answer once durable. */
#ifndef METERD_INGEST_ROUTES_H
#define METERD_INGEST_ROUTES_H

#include "ingest/http.h"
#include "ingest/ingest.h"
#include "queue/queue.h"

#include <stdatomic.h>

typedef struct ingest_ctx {
    queue *q;            /* borrowed */
    ingest_limits limits;
    int64_t envelope_window_us; /* gateway envelopes: allowed |date - received_at| */
    atomic_int closing;  /* set on shutdown: new ingest answers 503 */
} ingest_ctx;

/* Appends the ingest routes to routes (capacity cap); returns how many were added. */
size_t ingest_routes(http_route *routes, size_t cap, ingest_ctx *ctx);

/* How a durable batch is acknowledged. */
typedef enum ingest_reply {
    INGEST_REPLY_BATCH, /* 202 {"batch_id","accepted","position"} */
    INGEST_REPLY_SITE,  /* 201 {"status":"accepted","stream_id"} (single-reading API) */
} ingest_reply;

/* Publishes b (taken over) for req and answers once durable, 503 when over budget. */
void ingest_submit(http_request *req, ingest_ctx *ctx, batch *b, ingest_reply reply);

#endif

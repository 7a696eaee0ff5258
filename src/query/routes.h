/* Read-side HTTP routes: devices, readings, live state, anomalies, health, metrics. */
#ifndef METERD_QUERY_ROUTES_H
#define METERD_QUERY_ROUTES_H

#include "ingest/http.h"
#include "queue/queue.h"
#include "store/store.h"
#include "worker/worker.h"

#include <stdatomic.h>

typedef struct query_ctx {
    store *s;          /* borrowed */
    queue *q;          /* borrowed */
    worker *w;         /* borrowed; NULL in roles without a worker */
    atomic_int ready;  /* 1 once serving, 0 when shutting down */
} query_ctx;

/* Appends the operational routes (/, /health, /ready, /metrics) (ops.c). */
size_t query_ops_routes(http_route *routes, size_t cap, query_ctx *ctx);
/* Appends the compatible read routes (sites, vehicle analytics) (compat.c). */
size_t query_compat_routes(http_route *routes, size_t cap, query_ctx *ctx);

/* Appends every read-side route to routes (capacity cap); returns how many were added. */
size_t query_routes(http_route *routes, size_t cap, query_ctx *ctx);

#endif

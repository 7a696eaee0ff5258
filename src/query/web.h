/* The web side of the read API: the dashboard and Swagger UI (embedded assets), the OpenAPI
 * spec, live events (SSE), the seeded meter's readings and downsampled chart series. */
#ifndef METERD_QUERY_WEB_H
#define METERD_QUERY_WEB_H

#include "core/config.h"
#include "ingest/http.h"
#include "query/events_hub.h"
#include "query/routes.h"

typedef struct web_ctx {
    query_ctx *q;           /* borrowed */
    events_hub *hub;        /* borrowed; NULL: /api/v1/events answers 503 */
    char csv_device[256];   /* the CSV-seeded meter of /api/metrics */
    char csv_metric[64];
} web_ctx;

/* Appends the web routes (capacity cap); returns how many were added (0 if they do not fit).
 * q, hub and c are borrowed for the server's life; one set per process. */
size_t web_routes(http_route *routes, size_t cap, query_ctx *q, events_hub *hub,
                  const config *c);
/* GET /: answers with the dashboard and returns 1 when the client prefers text/html
 * (a browser); returns 0 without answering otherwise. */
int web_dashboard(http_request *req);

/* The data routes of web_api.c: /api/metrics, /api/v1/devices/{id}/series,
 * /api/v1/search/devices. */
size_t web_api_routes(http_route *routes, size_t cap, web_ctx *ctx);

#endif

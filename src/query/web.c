/* Embedded web assets: the dashboard at / (for browsers), Swagger UI at /swagger, the spec
 * at /openapi.yaml, and /assets/{name} for the scripts and styles they load. */
#include "query/web.h"
#include "query/web_assets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static web_ctx g_web; /* one server per process; the routes borrow it */

static const web_asset *asset_find(const char *name)
{
    for (size_t i = 0; i < web_assets_count; i++)
        if (!strcmp(web_assets[i].name, name)) return &web_assets[i];
    return NULL;
}

static const char *content_type(const char *name)
{
    static const struct { const char *ext, *type; } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".yaml", "application/yaml; charset=utf-8"},
        {".txt", "text/plain; charset=utf-8"},
        {".png", "image/png"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(dot, types[i].ext)) return types[i].type;
    return "application/octet-stream";
}

/* Answers with an embedded asset, or a 404 naming it. */
static void serve_asset(http_request *req, const char *name)
{
    const web_asset *a = asset_find(name);
    if (!a) {
        http_respond_error(req, 404, "asset '%.100s' not found", name);
        return;
    }
    http_add_header(req, "Cache-Control", "no-cache");
    http_respond_static(req, 200, content_type(name), a->data, a->len);
}

/* Is text/html acceptable (not q=0) and listed before application/json? Browsers list
 * text/html first; API clients send application/json or * / * (which get JSON). */
static int prefers_html(const char *accept)
{
    if (!accept) return 0;
    const char *h = strcasestr(accept, "text/html");
    if (!h) return 0;
    size_t range = strcspn(h, ",");
    const char *q = strstr(h, "q=");
    if (q && (size_t)(q - h) < range && strtod(q + 2, NULL) <= 0.0) return 0;
    const char *j = strcasestr(accept, "application/json");
    return !j || h < j;
}

int web_dashboard(http_request *req)
{
    if (!prefers_html(http_header(req, "Accept"))) return 0;
    http_add_header(req, "Vary", "Accept");
    serve_asset(req, "index.html");
    return 1;
}

static void h_swagger(http_request *req, void *arg)
{
    (void)arg;
    serve_asset(req, "swagger.html");
}

static void h_openapi(http_request *req, void *arg)
{
    (void)arg;
    serve_asset(req, "openapi.yaml");
}

static void h_asset(http_request *req, void *arg)
{
    (void)arg;
    serve_asset(req, http_param(req, 0));
}

static void h_events(http_request *req, void *arg)
{
    web_ctx *ctx = arg;
    if (!ctx->hub) {
        http_respond_error(req, 503, "live events are not available in this role");
        return;
    }
    events_hub_handle(req, ctx->hub);
}

size_t web_routes(http_route *routes, size_t cap, query_ctx *q, events_hub *hub,
                  const config *c)
{
    g_web.q = q;
    g_web.hub = hub;
    snprintf(g_web.csv_device, sizeof g_web.csv_device, "%s", c->csv_device);
    snprintf(g_web.csv_metric, sizeof g_web.csv_metric, "%s", "meterusage");
    const http_route mine[] = {
        {"GET", "/swagger", HTTP_BODY_NONE, h_swagger, &g_web},
        {"GET", "/openapi.yaml", HTTP_BODY_NONE, h_openapi, &g_web},
        {"GET", "/assets/{}", HTTP_BODY_NONE, h_asset, &g_web},
        {"GET", "/api/v1/events", HTTP_BODY_NONE, h_events, &g_web},
    };
    size_t n = HTTP_ROUTES_COPY(routes, cap, mine);
    if (!n) return 0;
    size_t more = web_api_routes(routes + n, cap - n, &g_web);
    return more ? n + more : 0;
}

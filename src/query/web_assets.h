/* Files embedded into the binary at build time (the generated web_assets.c; see the Makefile
 * and scripts/embed_assets.py): the dashboard, Swagger UI, uPlot and the OpenAPI spec. */
#ifndef METERD_QUERY_WEB_ASSETS_H
#define METERD_QUERY_WEB_ASSETS_H

#include <stddef.h>

typedef struct web_asset {
    const char *name;          /* e.g. "app.js", "openapi.yaml" */
    const unsigned char *data; /* NUL-terminated as well */
    size_t len;                /* without the NUL */
} web_asset;

extern const web_asset web_assets[];
extern const size_t web_assets_count;

#endif

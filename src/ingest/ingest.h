/* Ingest decoders: each turns one wire format into a canonical batch, whole or not at all. */
#ifndef METERD_INGEST_INGEST_H
#define METERD_INGEST_INGEST_H

#include "core/batch.h"

#include <stddef.h>

/* Why a request was rejected: the HTTP status (400, 413, 422) and a message that names
 * the place of the fault, e.g. "readings[3].ts: not an ISO 8601 timestamp". */
typedef struct ingest_error {
    int status;
    char message[256];
} ingest_error;

typedef struct ingest_limits {
    size_t max_readings; /* readings per request; more → 413 */
} ingest_limits;

/* POST /api/v1/readings: {"readings":[{"device","metric","ts","value"[,"kind","site"]}...]}.
 * 0 with *out (owned by caller), MD_ERR_INVALID with e filled, or MD_ERR_NOMEM. */
int ingest_canonical_json(const char *body, size_t len, const ingest_limits *lim, batch **out,
                          ingest_error *e);

/* POST /api/readings: {"meter_number":12345,"readings":{"<RFC 3339>":value,...}}. Same returns. */
int ingest_meter_json(const char *body, size_t len, const ingest_limits *lim, batch **out,
                      ingest_error *e);

/* POST /api/readings/raw: {"meter_number":12345,"data":"<base64 protobuf MeterData>"}. Same returns. */
int ingest_meter_raw(const char *body, size_t len, const ingest_limits *lim, batch **out,
                     ingest_error *e);

#endif

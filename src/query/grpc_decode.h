/* The request messages of the gRPC service decoded and checked from their bytes, without a call:
 * what the handlers run on each request, and what unit tests and fuzzers call directly. Each
 * returns GRPC_STATUS_OK, or the status to answer with and a message (in msg) naming the field.
 * data NULL means the client sent no message at all (INVALID_ARGUMENT). */
#ifndef METERD_QUERY_GRPC_DECODE_H
#define METERD_QUERY_GRPC_DECODE_H

#include "core/batch.h"
#include "ingest/ingest.h"

#include <grpc/status.h>
#include <stddef.h>
#include <stdint.h>

/* A checked meterd.v1.QueryRequest; device and metric are owned (metric NULL: every metric). */
typedef struct grpcsrv_query_args {
    char *device, *metric;
    int64_t from_us, to_us; /* [from, to) */
    uint64_t limit;         /* UINT64_MAX: no limit */
} grpcsrv_query_args;

/* meterd.v1.WriteRequest → a new batch in *out (owned by the caller; client fields unset).
 * INVALID_ARGUMENT (undecodable, no readings, over lim, a bad reading: "readings[i].<field>: …"),
 * RESOURCE_EXHAUSTED (out of memory). All or nothing: *out is NULL unless OK. */
grpc_status_code grpcsrv_write_decode(const uint8_t *data, size_t len, const ingest_limits *lim,
                                      batch **out, char *msg, size_t msglen);
/* meterd.v1.QueryRequest → *out (free with grpcsrv_query_args_free, whatever the result).
 * INVALID_ARGUMENT (undecodable, no device, bad or reversed range), RESOURCE_EXHAUSTED. */
grpc_status_code grpcsrv_query_decode(const uint8_t *data, size_t len, grpcsrv_query_args *out,
                                      char *msg, size_t msglen);
/* Frees what grpcsrv_query_decode put in a (not a itself). */
void grpcsrv_query_args_free(grpcsrv_query_args *a);
/* meterusage.v1.Empty (GetMetrics). INVALID_ARGUMENT when it does not decode. */
grpc_status_code grpcsrv_empty_decode(const uint8_t *data, size_t len, char *msg, size_t msglen);
/* grpc.health.v1.HealthCheckRequest. INVALID_ARGUMENT when it does not decode, NOT_FOUND for a
 * service meterd does not offer. */
grpc_status_code grpcsrv_health_decode(const uint8_t *data, size_t len, char *msg, size_t msglen);

#endif

/* The gRPC service (gRPC C core + protobuf-c): meterd.v1.Meterd (Write, Query),
 * meterusage.v1.MeterUsage (GetMetrics) and grpc.health.v1.Health (Check). */
#ifndef METERD_QUERY_GRPC_H
#define METERD_QUERY_GRPC_H

#include "ingest/routes.h"
#include "query/routes.h"

#include <stddef.h>

typedef struct grpcsrv grpcsrv;

/* Listens on addr ("host:port") and serves until grpcsrv_stop. q and in are borrowed and must
 * outlive the server; seed_device/seed_metric (copied) name the meter GetMetrics returns.
 * Returns the server, or NULL with a message in err (address not bindable, no memory). */
grpcsrv *grpcsrv_start(const char *addr, query_ctx *q, ingest_ctx *in, const char *seed_device,
                       const char *seed_metric, char *err, size_t errlen);
/* The port listened on (useful with port 0). */
int grpcsrv_port(const grpcsrv *g);
/* Stops gracefully: new calls are refused, running ones get a short grace period, then are
 * cancelled; returns once every call is finished (Writes waiting for the queue included) and
 * frees g. Call before the queue and the store are closed. NULL is fine. */
void grpcsrv_stop(grpcsrv *g);

#endif

/* meterd loadgen: the gRPC client of --format grpc. One thread = one completion queue and one
 * channel (its own HTTP/2 connection) keeping its share of --connections Write calls in flight;
 * counters, histograms and the thread's life are those of the HTTP client (client.h). */
#ifndef METERD_LOADGEN_GRPC_CLIENT_H
#define METERD_LOADGEN_GRPC_CLIENT_H

#include "loadgen/client.h"

/* Prepares and starts thread tid with ncalls calls in flight against sh->o->grpc_addr. 0, or an
 * MD_ERR_* code with w->err. Wait for it with lg_worker_join. */
int lg_grpc_worker_start(lg_worker *w, lg_shared *sh, unsigned tid, unsigned ncalls);
/* Frees what the thread left (channel, queue), then what lg_worker_free frees. */
void lg_grpc_worker_free(lg_worker *w);

#endif

/* meterd loadgen: per-thread counters and latency histograms, merged for reports. */
#ifndef METERD_LOADGEN_STATS_H
#define METERD_LOADGEN_STATS_H

#include "loadgen/hist.h"

#include <pthread.h>
#include <stdint.h>

/* Failures that have no HTTP status. */
typedef enum lg_fail {
    LG_FAIL_CONNECT,   /* connect() failed or was refused */
    LG_FAIL_IO,        /* reset or closed while a request was outstanding */
    LG_FAIL_TIMEOUT,   /* no complete response within --timeout */
    LG_FAIL_MALFORMED, /* the response could not be parsed */
    LG_FAIL_N
} lg_fail;

#define LG_GRPC_CODES 17 /* gRPC status codes 0 (OK) .. 16 (UNAUTHENTICATED) */

typedef struct lg_counts {
    uint64_t sent, responses;     /* requests written / complete responses */
    uint64_t ok, ok_readings;     /* 2xx */
    uint64_t ok_resent, ok_late;  /* fleet readings in 2xx responses */
    uint64_t sent_readings;
    uint64_t status[600];         /* responses by HTTP status */
    uint64_t grpc_status[LG_GRPC_CODES]; /* --format grpc: calls by gRPC status */
    uint64_t fail[LG_FAIL_N];
    uint64_t bytes_out, bytes_in;
} lg_counts;

typedef struct lg_stats {
    pthread_mutex_t lock;
    lg_counts c;
    lg_hist all;      /* latency of every complete response, µs */
    lg_hist interval; /* since the last progress line */
} lg_stats;

/* Initialises s. 0 or MD_ERR_NOMEM. */
int lg_stats_init(lg_stats *s);
/* Releases s. */
void lg_stats_destroy(lg_stats *s);
/* Adds src's counters to dst. */
void lg_counts_add(lg_counts *dst, const lg_counts *src);
/* Returns the responses that were not 2xx plus the failures without a status. */
uint64_t lg_counts_errors(const lg_counts *c);
/* Returns a static name for a failure ("connect", "io", "timeout", "malformed"). */
const char *lg_fail_name(lg_fail f);
/* Returns the name of a gRPC status code ("OK", "RESOURCE_EXHAUSTED", ...; "UNKNOWN" when out
 * of range). */
const char *lg_grpc_status_name(unsigned code);

#endif

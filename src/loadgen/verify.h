/* meterd loadgen: reading meterd's /metrics for --verify and lag sampling. */
#ifndef METERD_LOADGEN_VERIFY_H
#define METERD_LOADGEN_VERIFY_H

#include "loadgen/client.h"

#include <stddef.h>

/* The few Prometheus samples the load generator looks at (-1 when absent). */
typedef struct lg_server_metrics {
    double queue_depth, worker_lag_s, stored, accepted, duplicates, conflicts, invalid;
} lg_server_metrics;

/* GET <prefix>/metrics with a blocking socket (timeout_ms per step). 0, or MD_ERR_IO /
 * MD_ERR_INVALID with a message in err. */
int lg_metrics_fetch(const lg_shared *sh, int timeout_ms, lg_server_metrics *m, char *err,
                     size_t errlen);
/* Parses a Prometheus text body into m. Returns the number of samples recognised. */
int lg_metrics_parse(const char *text, lg_server_metrics *m);

#endif

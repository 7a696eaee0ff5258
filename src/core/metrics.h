/* Process-wide counters and histograms, rendered as Prometheus text. Thread-safe (atomics). */
#ifndef METERD_CORE_METRICS_H
#define METERD_CORE_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef enum metric_counter {
    MC_HTTP_REQUESTS,
    MC_HTTP_4XX,
    MC_HTTP_5XX,
    MC_BATCHES_ACCEPTED,
    MC_READINGS_ACCEPTED,
    MC_REJECTED_BACKPRESSURE,
    MC_REJECTED_MEMORY,
    MC_BATCHES_APPLIED,
    MC_BATCHES_SKIPPED,
    MC_BATCHES_ISOLATED,
    MC_BATCHES_DEAD,
    MC_READINGS_STORED,
    MC_READINGS_INVALID,
    MC_READINGS_DUPLICATE,
    MC_READINGS_CONFLICT,
    MC_STORE_ERRORS,
    MC_EVENTS_UNROUTED,
    MC__COUNT
} metric_counter;

/* Adds n to a counter. */
void metrics_add(metric_counter c, uint64_t n);
/* Returns a counter's value. */
uint64_t metrics_get(metric_counter c);
/* Records one fsync duration (µs) in the fsync latency histogram. */
void metrics_observe_fsync(int64_t us);
/* Records one apply-transaction duration (µs). */
void metrics_observe_apply(int64_t us);
/* Records the time (µs) from an accepted ingest request's headers to its answer. */
void metrics_observe_ingest(int64_t us);

/* Gauges the caller knows at render time. */
typedef struct metrics_gauges {
    uint64_t queue_depth, queue_depth_bytes, dead_letters, segments;
    double worker_lag_seconds;
    uint64_t store_devices, store_readings;
} metrics_gauges;

/* Renders every metric as Prometheus text into a malloc'd string (*out owned by caller). 0 or MD_ERR_NOMEM. */
int metrics_render(const metrics_gauges *g, char **out, size_t *len);

#endif

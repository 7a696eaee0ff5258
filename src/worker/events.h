/* Per-reading events after the worker's commit: one JSON shape for every subscriber. */
#ifndef METERD_WORKER_EVENTS_H
#define METERD_WORKER_EVENTS_H

#include "core/batch.h"

#include <stddef.h>

/* {"client_id","device","device_kind","metric_name","metric_value","reading_timestamp",
 *  "validation_status":"valid"|"invalid","anomaly_reason"?,"batch_id"} as a malloc'd string,
 * or NULL when out of memory. The first five names are what gateway systems consume. */
char *events_reading_json(const batch *b, const reading *r, int outcome, const char *reason,
                          size_t *len);

/* Routing key for an event: "reading.valid" or "reading.invalid". */
const char *events_routing_key(int outcome);

#endif

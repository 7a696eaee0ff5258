/* Per-reading events after the worker's commit: one JSON shape for every subscriber. */
#ifndef METERD_WORKER_EVENTS_H
#define METERD_WORKER_EVENTS_H

#include "core/batch.h"

#include <stddef.h>

/* {"client_id","device","device_kind","metric_name","metric_value","reading_timestamp",
 *  "validation_status":"valid"|"invalid","batch_id","anomaly_reason"?} as a malloc'd string,
 * or NULL when out of memory. The first five names are what gateway systems consume.
 * metric_value is written as jansson writes a real with precision 15 (null when not finite);
 * strings are escaped as jansson does, and bytes that are not valid UTF-8 become U+FFFD. */
char *events_reading_json(const batch *b, const reading *r, int outcome, const char *reason,
                          size_t *len);

/* The same event rendered into stack (stack_len bytes) when it fits, else into a malloc'd
 * buffer: the hot path of the sinks (one event per stored reading) allocates nothing.
 * Returns the buffer (NUL-terminated; free it when it is not stack) or NULL (out of memory). */
char *events_reading_json_in(char *stack, size_t stack_len, const batch *b, const reading *r,
                             int outcome, const char *reason, size_t *len);

/* Frees what events_reading_json_in returned, unless it is the caller's stack buffer. */
void events_json_release(char *json, const char *stack);

/* Routing key for an event: "reading.valid" or "reading.invalid". */
const char *events_routing_key(int outcome);

#endif

/* Live events over Server-Sent Events: GET /api/v1/events[?device=ID].
 * The worker's sink hands every stored reading to the hub after commit; the hub copies the
 * event JSON into each matching client's bounded buffer and wakes its stream. A client whose
 * buffer is full is dropped (its stream ends; EventSource reconnects): the worker never waits. */
#ifndef METERD_QUERY_EVENTS_HUB_H
#define METERD_QUERY_EVENTS_HUB_H

#include "core/batch.h"
#include "ingest/http.h"

#include <stddef.h>
#include <stdint.h>

typedef struct events_hub events_hub;

#define EVENTS_HUB_CLIENT_BUFFER (256 * 1024) /* bytes queued per client before it is dropped */
#define EVENTS_HUB_MAX_CLIENTS 512
#define EVENTS_HUB_HEARTBEAT_MS 15000

typedef struct events_hub_stats {
    uint64_t clients;   /* connected now */
    uint64_t delivered; /* events queued to clients */
    uint64_t dropped;   /* clients dropped for being too slow */
} events_hub_stats;

/* A hub with its heartbeat thread; NULL when out of memory or no thread. */
events_hub *events_hub_new(void);
/* A worker_event_sink (arg: the hub): one event per stored reading (valid or invalid). */
void events_hub_sink(void *hub, const batch *b, const reading *r, int outcome,
                     const char *reason);
/* One event already rendered by events_reading_json (device: its "device", for the
 * ?device= filter); e.g. received from the broker in the api role. */
void events_hub_push_json(events_hub *h, const char *device, const char *json, size_t len);
/* An events_bus_cb (arg: the hub): an event JSON from another process; its "device" is read
 * for the filter, the bytes are passed on as they are. */
void events_hub_relay(void *hub, const char *json, size_t len);
/* The SSE handler (ctx: the hub). */
void events_hub_handle(http_request *req, void *hub);
/* Copies the counters. */
void events_hub_get_stats(events_hub *h, events_hub_stats *st);
/* Stops the heartbeat thread and frees h. Call after http_stop (no client may remain). */
void events_hub_free(events_hub *h);

#endif

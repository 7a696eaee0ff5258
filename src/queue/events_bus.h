/* Per-reading events between processes in distributed mode: workers publish the event of every
 * stored reading (worker/events.h JSON) to the broker, and each `meterd api` subscribes and
 * feeds its live stream (GET /api/v1/events), so the dashboard is live whichever worker stored
 * the reading.
 *   amqp:  the worker events exchange (RABBITMQ_WORKER_EXCHANGE, published for gateway systems
 *          anyway); a subscriber binds its own exclusive, auto-delete queue with "#".
 *   redis: PUBLISH on channel "<REDIS_STREAM>:events", one message per commit holding one
 *          event per line; the worker publishes only while PUBLISH reports a subscriber (it
 *          asks again every second), so nobody pays for events nobody reads.
 * Events are best effort (live updates, not data): a subscriber that is down misses them. */
#ifndef METERD_QUEUE_EVENTS_BUS_H
#define METERD_QUEUE_EVENTS_BUS_H

#include "core/config.h"

#include <stdbool.h>
#include <stddef.h>

typedef void (*events_bus_cb)(void *arg, const char *json, size_t len);

typedef struct events_sub events_sub;

/* Starts a thread receiving events from the broker of c->queue_backend (amqp or redis) and
 * calling cb for each, reconnecting with backoff. NULL for other backends or when out of
 * memory (err says which). */
events_sub *events_sub_start(const config *c, events_bus_cb cb, void *arg, char *err,
                             size_t errlen);
/* Stops the thread (within ~250 ms) and frees s. NULL is fine. */
void events_sub_stop(events_sub *s);

/* The events of one commit as one message: JSON objects, one per line. */
#define EVENTS_LINES_MAX (1 << 20) /* past this a commit's events go out in more messages */
typedef struct events_lines {
    char *buf;
    size_t len, cap;
} events_lines;
/* Appends json as a line; false when out of memory (the event is dropped: best effort). */
bool events_lines_add(events_lines *l, const char *json, size_t len);
/* Whether adding len more bytes would make the message larger than EVENTS_LINES_MAX. */
bool events_lines_full(const events_lines *l, size_t len);
void events_lines_free(events_lines *l);

typedef struct events_pub events_pub;

/* Redis publisher, used from one thread (the worker's event sink). NULL when out of memory.
 * Events are collected and published as one message per commit (events_pub_flush): lines of
 * JSON, one per reading; one PUBLISH per reading would cost the worker a round trip each. */
events_pub *events_pub_new(const config *c);
/* Whether an event sent now would be published: false while nobody listened to the last
 * PUBLISH (asked again every second), so the worker need not render events for nobody. */
bool events_pub_wanted(const events_pub *p);
/* Adds one event (one line, no newline inside). */
void events_pub_send(events_pub *p, const char *json, size_t len);
/* Publishes what was added (best effort: failures are counted and logged, never block long). */
void events_pub_flush(events_pub *p);
void events_pub_free(events_pub *p);

#endif

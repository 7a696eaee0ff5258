/* Redis Streams queue backend (hiredis): XADD with pipelined group commit, a consumer group
 * with XREADGROUP/XACK, XAUTOCLAIM of entries stuck on dead consumers, a dead-letter stream.
 * Durability of an acknowledged publish is the server's: appendonly yes + appendfsync always
 * (or everysec, losing up to a second on a server crash); see docs/operations.md. */
#ifndef METERD_QUEUE_REDIS_H
#define METERD_QUEUE_REDIS_H

#include "core/config.h"
#include "queue/queue.h"

/* Connects, creates the consumer group (XGROUP CREATE … $ MKSTREAM; BUSYGROUP is fine) and
 * starts the sides in roles. NULL on error, message in err. */
queue *redis_queue_open(const config *c, int roles, char *err, size_t errlen);

#endif

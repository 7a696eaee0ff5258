/* Embedded write-ahead queue: segmented append-only files with a CRC per record,
 * group commit (one fdatasync for many publishes), torn-tail recovery, a durable
 * consumer position, and segments deleted once fully acknowledged. */
#ifndef METERD_QUEUE_WAL_H
#define METERD_QUEUE_WAL_H

#include "queue/queue.h"

typedef struct wal_config {
    uint64_t segment_bytes;     /* roll to a new segment past this size (default 64 MiB) */
    uint64_t max_backlog_bytes; /* publish returns MD_ERR_FULL above this unacked size (default 1 GiB) */
} wal_config;

/* Opens (creating) the WAL in dir, recovering after a crash. NULL on error, message in err. */
queue *wal_open(const char *dir, const wal_config *cfg, char *err, size_t errlen);

/* One dead letter, as listed by wal_dlq_list. */
typedef struct wal_dead_letter {
    uint64_t seq;
    int64_t dead_at_us;
    const char *reason;
    const uint8_t *data;
    size_t len;
    uint64_t off, size; /* where the framed record sits in dead.log */
} wal_dead_letter;

/* Calls cb for each dead letter in dir (cb returns non-zero to stop). 0 or MD_ERR_IO. */
int wal_dlq_list(const char *dir, int (*cb)(void *arg, const wal_dead_letter *d), void *arg);

#endif

/* Dead letters of a queue backend: list them, show one, replay them into the main queue.
 * One small interface, one file per backend (wal_dlq.c, amqp_dlq.c, redis_dlq.c); the JSON a
 * user sees is rendered here, the same for every backend (dlq.c). */
#ifndef METERD_QUEUE_DLQ_H
#define METERD_QUEUE_DLQ_H

#include "core/config.h"

#include <stddef.h>
#include <stdint.h>

#define DLQ_BATCH_CT "application/x-protobuf; proto=meterd.v1.Batch"

/* One dead letter as a backend stores it. Everything is borrowed for the callback's duration. */
typedef struct dlq_entry {
    const char *id;           /* the backend's id for it in the dead-letter store */
    uint64_t seq;             /* wal: the record's queue seq; 0 elsewhere */
    const char *source_id;    /* its id in the main queue when dead-lettered ("" unknown) */
    const char *reason;       /* "" unknown */
    int64_t dead_at_us;       /* when it was dead-lettered, 0 unknown */
    uint32_t deliveries;      /* deliveries before it was dead-lettered, 0 unknown */
    const char *content_type; /* as stored; "" = none (a canonical batch, or sniffed JSON) */
    const uint8_t *data;
    size_t len;
} dlq_entry;

/* Called per entry; returns non-zero to stop the walk. */
typedef int (*dlq_visit_cb)(void *arg, const dlq_entry *e);

typedef struct dlq dlq;

typedef struct dlq_ops {
    const char *name;
    /* Calls cb for every dead letter, oldest first, without removing any. 0, or MD_ERR_IO /
     * MD_ERR_NOMEM with a message in err. */
    int (*list)(dlq *d, dlq_visit_cb cb, void *arg, char *err, size_t errlen);
    /* Republishes the dead letters named in ids (all of them when n == 0) to the main queue,
     * same bytes and content type, and removes each from the dead-letter store only once its
     * republish is durable. cb sees each entry after it was republished and removed. Every id
     * must exist, else nothing is replayed: MD_ERR_NOTFOUND naming it in err. Otherwise 0,
     * MD_ERR_IO (err says which entry and why; entries before it were replayed) or MD_ERR_NOMEM. */
    int (*replay)(dlq *d, const char *const *ids, size_t n, dlq_visit_cb cb, void *arg, char *err,
                  size_t errlen);
    /* Frees d (NULL is fine). */
    void (*close)(dlq *d);
} dlq_ops;

struct dlq {
    const dlq_ops *ops;
    char where[640];  /* for messages: "/data/queue/dead.log", "queue 'x' on host:port", ... */
    char target[640]; /* where replays go: "the queue in /data/queue", "exchange 'x'", ... */
};

/* Opens the dead letters of the backend c->queue_backend names (wal: <data_dir>/queue). NULL on
 * error, message in err. */
dlq *dlq_open(const config *c, char *err, size_t errlen);

/* Backends (one file each). Same returns as dlq_open. */
dlq *wal_dlq_open(const char *qdir, const config *c, char *err, size_t errlen);
dlq *amqp_dlq_open(const config *c, char *err, size_t errlen);
dlq *redis_dlq_open(const config *c, char *err, size_t errlen);

/* 1 when the entry is a JSON gateway envelope (content type application/json, or none and the
 * body starts with '{'), as the worker decides; 0 for a canonical protobuf batch. */
int dlq_entry_is_json(const dlq_entry *e);

/* FNV-1a 64 of data as 16 hex digits plus NUL in out: a content-derived id. */
void dlq_hash_id(const uint8_t *data, size_t len, char out[17]);

#endif

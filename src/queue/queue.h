/* The queue: durable hand-off between ingest and the worker.
 * One small interface, one file per backend (wal.c; amqp.c and redis.c later).
 * Delivery is at-least-once; the store makes re-delivery harmless (batch ids). */
#ifndef METERD_QUEUE_QUEUE_H
#define METERD_QUEUE_QUEUE_H

#include <stddef.h>
#include <stdint.h>

typedef struct queue queue;

/* Called once per publish, from a queue thread, when the message is durable (status 0)
 * or definitely not (status < 0). position is the backend's id for the message
 * ("<ms>-<seq>"), valid only during the call. */
typedef void (*queue_publish_cb)(void *arg, int status, const char *position);

typedef struct queue_msg {
    uint64_t seq;        /* backend position, increasing */
    const uint8_t *data; /* borrowed until ack/nack */
    size_t len;
    void *ref;           /* backend bookkeeping */
    int64_t enqueued_us; /* when it was published */
    char content_type[64]; /* "" = a canonical batch (protobuf); "application/json" = a gateway
                            * envelope published straight to the broker by a device gateway */
    uint32_t deliveries;   /* how often it was delivered (1 = first time), 0 if unknown */
    char position[48];   /* the backend's id for it, as given to the publish callback */
} queue_msg;

typedef struct queue_stats {
    uint64_t published;      /* messages made durable since start */
    uint64_t depth;          /* messages not yet acknowledged */
    uint64_t length;         /* messages the backend holds (Redis XLEN, queue count); 0: = depth */
    int has_pending;         /* 1 when pending below is the backend's own count */
    uint64_t pending;        /* delivered to a consumer, not yet acknowledged */
    uint64_t depth_bytes;    /* bytes not yet acknowledged */
    uint64_t dead_letters;   /* messages in the dead-letter store */
    uint64_t segments;       /* backend-specific: WAL segment files */
    int64_t oldest_unacked_us; /* enqueue time of the oldest unacked message, 0 if none */
    uint64_t fsyncs;         /* durability syncs done */
    int connected;           /* 1 when the backend is reachable (always 1 for wal) */
    char group[64];          /* consumer group name ("embedded" for wal) */
    uint64_t consumers;      /* consumers in the group, as the backend reports them */
    char last_delivered[48]; /* id of the last message delivered to the group, "" if unknown */
} queue_stats;

/* Which sides of a queue a process uses: the api publishes, the worker consumes. */
enum { QUEUE_ROLE_PUBLISH = 1, QUEUE_ROLE_CONSUME = 2 };

typedef struct queue_ops {
    const char *name;
    /* Queues data (copied) for durable append; cb fires when durable or failed.
     * Returns 0 (cb will fire), MD_ERR_FULL (backlog over budget: no cb), MD_ERR_CLOSED. */
    int (*publish)(queue *q, const uint8_t *data, size_t len, queue_publish_cb cb, void *arg);
    /* Waits up to timeout_ms for the next message. 0, MD_ERR_TIMEOUT, MD_ERR_CLOSED. */
    int (*consume)(queue *q, queue_msg *msg, int timeout_ms);
    /* Marks msg and every earlier message processed. 0 or MD_ERR_IO. */
    int (*ack)(queue *q, queue_msg *msg);
    /* Moves msg to the dead-letter store with reason, then acks it. 0 or MD_ERR_IO. */
    int (*nack)(queue *q, queue_msg *msg, const char *reason);
    /* Fills stats. Returns 0. */
    int (*stats)(queue *q, queue_stats *st);
    /* Stops accepting publishes; wakes consumers; makes everything published durable. */
    void (*shutdown)(queue *q);
    /* Frees the queue (after shutdown). */
    void (*close)(queue *q);
} queue_ops;

typedef struct queue_budget queue_budget;

struct queue {
    const queue_ops *ops;
    queue_budget *budget; /* NULL unless queue_budget_start */
};

/* ops->publish behind the backlog budget (MD_ERR_FULL above it, no cb). */
int queue_publish(queue *q, const uint8_t *data, size_t len, queue_publish_cb cb, void *arg);

/* Publishes and waits until durable. Returns 0 or the publish/durability error. */
int queue_publish_wait(queue *q, const uint8_t *data, size_t len);

/* ops->stats; with a budget, depth_bytes is the budget's estimate when the backend has none. */
int queue_get_stats(queue *q, queue_stats *st);

/* The backlog budget for backends whose backlog lives in a broker (amqp, redis), which
 * cannot be asked for it in bytes: a thread samples the backend's depth every
 * QUEUE_BUDGET_SAMPLE_MS and estimates bytes as depth × the mean size of this process's
 * publishes, plus everything published since the sample. queue_publish answers MD_ERR_FULL
 * when that estimate plus the message would exceed max_bytes. 0 or MD_ERR_NOMEM. */
#define QUEUE_BUDGET_SAMPLE_MS 50
int queue_budget_start(queue *q, uint64_t max_bytes);

/* Stops the budget thread (if any), then ops->close. */
void queue_close(queue *q);

#endif

/* Private to the Redis Streams backend (redis.c: open, publisher, stats; redis_consume.c:
 * consumer group side). Not part of the queue contract. */
#ifndef METERD_QUEUE_REDIS_INTERNAL_H
#define METERD_QUEUE_REDIS_INTERNAL_H

#include "queue/redis.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define REDIS_MAX_INFLIGHT 10000   /* pending + being written; above: MD_ERR_FULL */
#define REDIS_PIPELINE_MAX 1000    /* XADDs per round trip */
#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 5000
#define REDIS_CLAIM_EVERY_US (5 * 1000 * 1000)
#define REDIS_READ_COUNT 100

typedef struct redis_item {
    struct redis_item *next;
    uint8_t *data; /* owned */
    size_t len;
    queue_publish_cb cb;
    void *arg; /* borrowed */
} redis_item;

/* One stream entry read by this consumer: buffered (not yet handed out) or outstanding. */
typedef struct redis_entry {
    char id[48];
    uint8_t *data; /* owned */
    size_t len;
    char ct[64];
    uint32_t deliveries;
    uint64_t seq;
    bool attempted; /* has a field in "<stream>:attempts" (deleted with the ack) */
} redis_entry;

typedef struct redis_entries {
    redis_entry *v; /* owned */
    size_t head, len, cap;
} redis_entries;

typedef struct redis_q {
    queue base; /* first */
    config cfg; /* copy */
    int roles;
    char dlq[300];        /* "<stream>:dlq" */
    char attempts[300];   /* "<stream>:attempts": hand-outs of redelivered entries */
    char consumer[256];   /* CONSUMER_NAME or the host name */

    pthread_mutex_t mu; /* publisher state + mirrors for stats */
    pthread_cond_t cv;
    pthread_t pub_thread;
    bool pub_started, closing, pub_connected, cons_up;
    redis_item *pend_head, *pend_tail;
    size_t pend_n, writing;
    uint64_t published;
    size_t cons_unacked;
    redisContext *pub; /* publisher thread only */

    pthread_mutex_t cons_mu; /* consume/ack/nack */
    redisContext *cons;
    bool pel_read;  /* our own pending entries (from before a restart) were re-read */
    char pel_cursor[48];
    int64_t retry_at_us;
    int backoff_ms;
    int64_t claimed_at_us;
    char claim_cursor[48];
    redis_entries buf; /* read, not yet handed out */
    redis_entries out; /* handed out, not yet acked, in order */
    uint64_t next_seq;

    pthread_mutex_t side_mu; /* stats connection and cache */
    redisContext *side;
    int64_t stats_at_us;
    bool st_ok;
    uint64_t st_pending, st_lag, st_consumers, st_dead, st_len;
    bool st_lag_known; /* XINFO GROUPS lag was a number, not nil */
    char st_last[48];
} redis_q;

/* Connects to REDIS_HOST:REDIS_PORT with timeouts. NULL + err on failure. */
redisContext *redis_conn_open(redis_q *q, char *err, size_t errlen);
/* XGROUP CREATE stream group <start> MKSTREAM; BUSYGROUP counts as success. 0 or MD_ERR_IO. */
int redis_group_create(redis_q *q, redisContext *c, const char *start, char *err, size_t errlen);

int redis_q_consume(queue *qq, queue_msg *msg, int timeout_ms);
int redis_q_ack(queue *qq, queue_msg *msg);
int redis_q_nack(queue *qq, queue_msg *msg, const char *reason);
void redis_cons_free(redis_q *q);

#endif

/* Private to the RabbitMQ backend (amqp.c: topology, publisher thread; amqp_consume.c:
 * consumer, dead letters, stats; amqp_conn.c: connections). Not part of the queue contract. */
#ifndef METERD_QUEUE_AMQP_INTERNAL_H
#define METERD_QUEUE_AMQP_INTERNAL_H

#include "queue/amqp.h"

#include <amqp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define AMQP_CH 1                   /* every connection uses this channel */
#define AMQP_EVENTS_CH 2            /* the publisher's channel for events: no confirm mode */
#define AMQP_EVENT_KEYS 8           /* routing keys whose binding is tracked (amqp_events.c) */
#define AMQP_EVENT_CHECK_US 10000   /* how often a key's binding is checked */
#define AMQP_MAX_INFLIGHT 10000     /* pending + unconfirmed publishes; above: MD_ERR_FULL */
#define AMQP_MAX_EVENTS_QUEUED 50000 /* events not yet sent; above, publishing one waits */
#define AMQP_EVENT_WAIT_MS 5000     /* ... this long for room, then drops it (counted, logged) */
#define AMQP_BACKOFF_MIN_MS 100
#define AMQP_BACKOFF_MAX_MS 5000
#define AMQP_CONFIRM_TIMEOUT_MS 30000 /* no confirm this long: the connection is presumed dead */
#define AMQP_BATCH_CT "application/x-protobuf; proto=meterd.v1.Batch"

/* One publish on its way: pending (not yet sent) or in flight (sent, awaiting confirm). */
typedef struct amqp_item {
    struct amqp_item *next;
    uint8_t *data; /* owned, or the bytes right after the item (events: one allocation) */
    size_t len;
    bool event;          /* an event for the worker exchange, with routing_key */
    bool lines;          /* an event message of lines, for the .batched exchange */
    char routing_key[64];
    queue_publish_cb cb;
    void *arg; /* borrowed: the publisher's */
    uint64_t id;      /* per-queue counter, in message_id and position */
    int64_t enq_ms;
    uint64_t tag;     /* delivery tag on the current publisher connection */
} amqp_item;

typedef struct amqp_list {
    amqp_item *head, *tail;
    size_t n;
} amqp_list;

/* Whether a queue is bound for an event routing key, as last checked (amqp_events.c). */
typedef struct amqp_route {
    char key[64];
    int state;
    int64_t checked_us; /* monotonic: the last mandatory event or probe of this key */
} amqp_route;

/* One consumed, not yet acked delivery; its body backs queue_msg.data. */
typedef struct amqp_out {
    uint64_t seq;
    uint64_t tag;  /* delivery tag on connection generation gen */
    uint64_t gen;
    uint8_t *body; /* owned */
    size_t len;
    char ct[64];
    char message_id[64];
} amqp_out;

typedef struct amqp_q {
    queue base; /* first: an amqp_q * is a queue * */
    config cfg; /* copy */
    int roles;
    char host[256], vhost[256], user[256], pass[256];
    int port;
    char dlx[300];
    char lines_ex[300]; /* <RABBITMQ_WORKER_EXCHANGE>.batched */

    /* Publisher: publish() appends to pend; the thread owns pub_conn and infl. */
    pthread_mutex_t mu;
    pthread_t pub_thread;
    bool pub_started, closing, pub_done;
    int wake_fd; /* eventfd: publish() wakes the thread out of poll() */
    amqp_list pend;    /* batches to publish (confirmed) */
    amqp_list pend_ev; /* events to publish (best effort, channel AMQP_EVENTS_CH) */
    size_t ev_queued;  /* events pending or taken by the thread and not yet sent */
    pthread_cond_t ev_room; /* signalled when ev_queued goes down */
    size_t in_flight; /* == infl.n, readable under mu */
    bool pub_connected;
    uint64_t next_id, published, events_failed;
    size_t cons_unacked; /* mirrors out_len for stats() */
    bool cons_up;        /* mirrors cons_connected for stats() */
    amqp_connection_state_t pub_conn; /* publisher thread only */
    amqp_list infl;                   /* publisher thread only */
    uint64_t next_tag;                /* publisher thread only */
    /* Events' routing (amqp_events.c), publisher thread only. */
    amqp_route routes[AMQP_EVENT_KEYS];
    size_t n_routes;
    amqp_list ev_held;   /* events taken from pend_ev, not yet sent or dropped, in order */
    size_t probe;        /* 1 + index in routes of the key being probed; 0: no probe out */
    bool probe_returned; /* the probe came back: no queue bound */
    int64_t probe_us;

    /* Consumer: consume/ack/nack, serialised by cons_mu. */
    pthread_mutex_t cons_mu;
    amqp_connection_state_t cons_conn;
    uint64_t cons_gen;     /* bumped on every (re)connect */
    bool cons_connected, cons_cancelled;
    int64_t cons_retry_at_us; /* monotonic: next reconnect attempt */
    int cons_backoff_ms;
    char consumer_tag[128];
    amqp_out *out; /* owned: outstanding deliveries, in delivery order */
    size_t out_len, out_cap;
    uint64_t next_seq;
    uint64_t last_tag;

    /* Side connection: dead-letter publishes (with confirms) and stats; side_mu. */
    pthread_mutex_t side_mu;
    amqp_connection_state_t side_conn;
    uint64_t side_tag;
    int64_t stats_at_us; /* monotonic time of the cached counts */
    uint64_t st_ready, st_consumers, st_dead;
    bool st_ok;
} amqp_q;

/* Fills host, port, vhost, user, pass from q->cfg.rabbitmq_url. 0 or MD_ERR_INVALID + err. */
int amqp_q_parse_url(amqp_q *q, char *err, size_t errlen);
/* Opens a connection to the configured broker with channel AMQP_CH open. NULL + err on failure. */
amqp_connection_state_t amqp_conn_open(amqp_q *q, char *err, size_t errlen);
/* Closes and frees a connection (NULL is fine). */
void amqp_conn_close(amqp_connection_state_t c);
/* Describes a failed RPC reply ("PRECONDITION_FAILED - ..." or a library error) into buf. */
const char *amqp_reply_text(amqp_rpc_reply_t r, char *buf, size_t len);
/* 1 when the reply is a channel or connection close with code 406 (PRECONDITION_FAILED). */
int amqp_reply_is_precondition(amqp_rpc_reply_t r);
/* Declares exchanges, queues and bindings on conn. 0 or MD_ERR_IO with a message. */
/* Declares the .batched events exchange (fanout, durable) on channel 1 of c. 0 or MD_ERR_IO. */
int amqp_declare_lines_exchange(amqp_connection_state_t c, const char *name, char *err,
                                size_t errlen);
int amqp_declare_topology(amqp_q *q, amqp_connection_state_t conn, char *err, size_t errlen);

/* Publisher thread helpers (amqp.c). */
/* Sends one item (events on AMQP_EVENTS_CH, mandatory if asked). 0 or a librabbitmq status. */
int amqp_send_item(amqp_q *q, amqp_item *it, bool mandatory);
/* Tells the publisher (or the log, for events) how it went and frees the item. */
void amqp_item_finish(amqp_q *q, amqp_item *it, int status);
/* Fails and frees every item of l. */
void amqp_fail_list(amqp_q *q, amqp_list *l, int status);
/* n events are gone (sent, dropped or failed): room for the worker's next ones. */
void amqp_events_done(amqp_q *q, size_t n);
/* The publisher connection is gone: closes it and fails what waits for it. */
void amqp_pub_lost(amqp_q *q, const char *why);

/* Per-reading events (amqp_events.c): sent only while a queue is bound for their key. */
/* Takes the events of ev (emptied) behind those already held and sends what it can. */
void amqp_events_send(amqp_q *q, amqp_list *ev);
/* A basic.return on AMQP_EVENTS_CH. */
void amqp_events_on_return(amqp_q *q, const amqp_basic_return_t *ret);
/* A basic.qos-ok on AMQP_EVENTS_CH: the answer to the probe out. */
void amqp_events_on_qos_ok(amqp_q *q);
/* A probe has waited longer than AMQP_CONFIRM_TIMEOUT_MS for its answer. */
bool amqp_events_probe_late(const amqp_q *q);
/* The connection is gone: forgets what was checked and fails the held events. */
void amqp_events_reset(amqp_q *q);

/* Consumer side (amqp_consume.c). */
int amqp_cons_connect(amqp_q *q, char *err, size_t errlen);
int amqp_q_consume(queue *qq, queue_msg *msg, int timeout_ms);
int amqp_q_ack(queue *qq, queue_msg *msg);
int amqp_q_nack(queue *qq, queue_msg *msg, const char *reason);
int amqp_q_stats(queue *qq, queue_stats *st);
void amqp_cons_free(amqp_q *q);

#endif

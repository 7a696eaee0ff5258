/* RabbitMQ queue backend: open, publisher thread with confirms, shutdown.
 *
 * publish() copies the payload into a pending list (bounded with the in-flight ones by
 * AMQP_MAX_INFLIGHT) and wakes the publisher thread, which owns its own connection (librabbitmq
 * connections are not thread-safe). The thread sends persistent messages on a channel in confirm
 * mode and calls each callback only once the broker confirmed (basic.ack, also `multiple`) or
 * refused it (basic.nack) or the connection was lost: never success without a confirm. While
 * disconnected it retries with backoff (100 ms doubling to 5 s) and fails publishes at once
 * with MD_ERR_IO, so ingest answers 503 instead of queueing in memory.
 * Events (one per stored reading, from the worker) take their own list and their own channel
 * without confirm mode: they are transient and best effort, so they neither wait for confirms
 * nor take room in the batches' window, and a publish wakes the thread only when both lists
 * were empty (one wake-up per commit instead of one per reading). Per-reading events are sent
 * only while a queue is bound for their routing key (amqp_events.c).
 * Consumer side, dead letters and stats: amqp_consume.c; connections, topology: amqp_conn.c. */
#include "queue/amqp_internal.h"

#include "core/error.h"
#include "core/log.h"
#include "core/timeutil.h"

#include <pthread.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define SHUTDOWN_CONFIRM_MS 5000

static int amqp_q_publish(queue *qq, const uint8_t *data, size_t len, queue_publish_cb cb,
                          void *arg);
static void amqp_q_shutdown(queue *qq);
static void amqp_q_close(queue *qq);

static const queue_ops amqp_ops = {
    .name = "amqp",
    .publish = amqp_q_publish,
    .consume = amqp_q_consume,
    .ack = amqp_q_ack,
    .nack = amqp_q_nack,
    .stats = amqp_q_stats,
    .shutdown = amqp_q_shutdown,
    .close = amqp_q_close,
};

static void list_push(amqp_list *l, amqp_item *it)
{
    it->next = NULL;
    if (l->tail) l->tail->next = it;
    else l->head = it;
    l->tail = it;
    l->n++;
}

static void item_free(amqp_item *it)
{
    if (!it->event) free(it->data);
    free(it);
}

/* Counts an event that was not published; logs the first and every 10,000th (a broker outage
 * would otherwise log one line per reading). */
static void event_failed(amqp_q *q, const char *routing_key, int status)
{
    pthread_mutex_lock(&q->mu);
    uint64_t n = ++q->events_failed;
    pthread_mutex_unlock(&q->mu);
    if (n % 10000 == 1)
        log_warn("amqp_event", "event to %s/%s not published: %s (%" PRIu64 " so far)",
                 q->cfg.rabbitmq_worker_exchange, routing_key, md_strerror(status), n);
}

void amqp_item_finish(amqp_q *q, amqp_item *it, int status)
{
    if (it->event) {
        if (status) event_failed(q, it->routing_key, status);
    } else if (it->cb) {
        char pos[48];
        snprintf(pos, sizeof pos, "%" PRId64 "-%" PRIu64, it->enq_ms, it->id);
        if (status == 0) {
            pthread_mutex_lock(&q->mu);
            q->published++;
            pthread_mutex_unlock(&q->mu);
        }
        it->cb(it->arg, status, pos);
    }
    item_free(it);
}

void amqp_fail_list(amqp_q *q, amqp_list *l, int status)
{
    amqp_item *it = l->head;
    *l = (amqp_list){0};
    size_t events = 0;
    while (it) {
        amqp_item *next = it->next;
        events += it->event;
        amqp_item_finish(q, it, status);
        it = next;
    }
    amqp_events_done(q, events);
}

/* Fails everything not yet sent (disconnected or closing). */
static void fail_pending(amqp_q *q, int status)
{
    pthread_mutex_lock(&q->mu);
    amqp_list l = q->pend, ev = q->pend_ev;
    q->pend = q->pend_ev = (amqp_list){0};
    pthread_mutex_unlock(&q->mu);
    amqp_fail_list(q, &l, status);
    amqp_fail_list(q, &ev, status);
}

static void set_in_flight(amqp_q *q)
{
    pthread_mutex_lock(&q->mu);
    q->in_flight = q->infl.n;
    pthread_mutex_unlock(&q->mu);
}

/* The publisher connection is gone: nothing in flight can be confirmed any more. */
void amqp_pub_lost(amqp_q *q, const char *why)
{
    log_warn("amqp_publisher", "RabbitMQ publisher connection lost (%s); %zu unconfirmed "
             "publishes failed", why, q->infl.n);
    amqp_conn_close(q->pub_conn);
    q->pub_conn = NULL;
    pthread_mutex_lock(&q->mu);
    q->pub_connected = false;
    pthread_mutex_unlock(&q->mu);
    amqp_fail_list(q, &q->infl, MD_ERR_IO);
    set_in_flight(q);
    amqp_events_reset(q);
}

static int pub_connect(amqp_q *q, char *err, size_t errlen)
{
    amqp_connection_state_t c = amqp_conn_open(q, err, errlen);
    if (!c) return MD_ERR_IO;
    amqp_confirm_select(c, AMQP_CH);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    const char *what = "confirm.select";
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        what = "opening the events channel";
        amqp_channel_open(c, AMQP_EVENTS_CH);
        r = amqp_get_rpc_reply(c);
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[300];
        snprintf(err, errlen, "%s failed: %s", what, amqp_reply_text(r, why, sizeof why));
        amqp_conn_close(c);
        return MD_ERR_IO;
    }
    q->pub_conn = c;
    q->next_tag = 0;
    pthread_mutex_lock(&q->mu);
    q->pub_connected = true;
    pthread_mutex_unlock(&q->mu);
    return 0;
}

static void drain_wake(amqp_q *q)
{
    uint64_t v;
    if (read(q->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN) { /* nothing to do */
    }
}

int amqp_send_item(amqp_q *q, amqp_item *it, bool mandatory)
{
    char mid[48];
    snprintf(mid, sizeof mid, "%" PRId64 "-%" PRIu64, it->enq_ms, it->id);
    amqp_basic_properties_t p = {0};
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
               AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    p.message_id = amqp_cstring_bytes(mid);
    p.timestamp = (uint64_t)(it->enq_ms / 1000);
    const char *ex = q->cfg.rabbitmq_ingest_exchange, *rk = q->cfg.rabbitmq_ingest_routing_key;
    if (it->event) {
        p.content_type = amqp_cstring_bytes("application/json");
        p.delivery_mode = 1; /* transient: events are best effort */
        ex = q->cfg.rabbitmq_worker_exchange;
        rk = it->routing_key;
        if (it->lines) {
            p.content_type = amqp_cstring_bytes("application/x-ndjson");
            ex = q->lines_ex;
        }
    } else {
        p.content_type = amqp_cstring_bytes(AMQP_BATCH_CT);
        p.delivery_mode = 2; /* persistent */
    }
    amqp_bytes_t body = {.len = it->len, .bytes = it->data};
    int rc = amqp_basic_publish(q->pub_conn, it->event ? AMQP_EVENTS_CH : AMQP_CH,
                                amqp_cstring_bytes(ex), amqp_cstring_bytes(rk), mandatory, 0, &p,
                                body);
    if (rc == AMQP_STATUS_OK && !it->event) it->tag = ++q->next_tag;
    return rc;
}

void amqp_events_done(amqp_q *q, size_t n)
{
    if (!n) return;
    pthread_mutex_lock(&q->mu);
    q->ev_queued -= n;
    pthread_cond_broadcast(&q->ev_room);
    pthread_mutex_unlock(&q->mu);
}

/* basic.ack / basic.nack for tag (and every earlier one when multiple). */
static void confirm(amqp_q *q, uint64_t tag, bool multiple, int status)
{
    amqp_item **pp = &q->infl.head, *prev = NULL;
    while (*pp) {
        amqp_item *it = *pp;
        if (it->tag > tag) break;
        if (multiple || it->tag == tag) {
            *pp = it->next;
            if (q->infl.tail == it) q->infl.tail = prev;
            q->infl.n--;
            if (status) log_warn("amqp_publisher", "broker refused message %" PRIu64 " (nack)", it->id);
            amqp_item_finish(q, it, status);
            if (!multiple) break;
        } else {
            prev = it;
            pp = &it->next;
        }
    }
    set_in_flight(q);
}

/* Reads one frame if there is one (0), nothing (1), or the connection failed (<0). */
static int read_frame(amqp_q *q)
{
    amqp_frame_t f;
    struct timeval tv0 = {0};
    int rc = amqp_simple_wait_frame_noblock(q->pub_conn, &f, &tv0);
    if (rc == AMQP_STATUS_TIMEOUT) return 1;
    if (rc != AMQP_STATUS_OK) {
        amqp_pub_lost(q, amqp_error_string2(rc));
        return -1;
    }
    if (f.frame_type != AMQP_FRAME_METHOD) return 0;
    switch (f.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *a = f.payload.method.decoded;
        confirm(q, a->delivery_tag, a->multiple, 0);
        break;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *a = f.payload.method.decoded;
        confirm(q, a->delivery_tag, a->multiple, MD_ERR_IO);
        break;
    }
    case AMQP_BASIC_RETURN_METHOD: /* its header and body frames follow: skipped above */
        if (f.channel == AMQP_EVENTS_CH) amqp_events_on_return(q, f.payload.method.decoded);
        break;
    case AMQP_BASIC_QOS_OK_METHOD:
        if (f.channel == AMQP_EVENTS_CH) amqp_events_on_qos_ok(q);
        break;
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD:
        amqp_pub_lost(q, "closed by the broker");
        return -1;
    default:
        break;
    }
    if (q->pub_conn) amqp_maybe_release_buffers(q->pub_conn); /* resume() may have lost it */
    return 0;
}

/* Waits up to ms for a broker frame or a wake-up, then handles what came. */
static void pub_wait(amqp_q *q, int ms)
{
    if (amqp_frames_enqueued(q->pub_conn) || amqp_data_in_buffer(q->pub_conn)) {
        read_frame(q);
        return;
    }
    struct pollfd pf[2] = {{.fd = amqp_get_sockfd(q->pub_conn), .events = POLLIN},
                           {.fd = q->wake_fd, .events = POLLIN}};
    if (poll(pf, 2, ms) <= 0) return;
    if (pf[1].revents) drain_wake(q);
    if (pf[0].revents) /* several frames may have arrived: take what is buffered */
        while (q->pub_conn && read_frame(q) == 0) {
        }
}

/* Disconnected: sleep out the backoff, failing publishes that arrive meanwhile. */
static void pub_backoff(amqp_q *q, int ms)
{
    int64_t until = time_mono_us() + (int64_t)ms * 1000;
    for (;;) {
        fail_pending(q, MD_ERR_IO);
        pthread_mutex_lock(&q->mu);
        bool closing = q->closing;
        pthread_mutex_unlock(&q->mu);
        int64_t left = (until - time_mono_us()) / 1000;
        if (closing || left <= 0) return;
        struct pollfd pf = {.fd = q->wake_fd, .events = POLLIN};
        if (poll(&pf, 1, (int)left) > 0) drain_wake(q);
    }
}

static void *pub_main(void *arg)
{
    pthread_setname_np(pthread_self(), "md-amqp-pub");
    amqp_q *q = arg;
    int backoff = AMQP_BACKOFF_MIN_MS;
    int64_t close_deadline = 0;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        bool closing = q->closing;
        amqp_list l = q->pend, ev = q->pend_ev;
        q->pend = q->pend_ev = (amqp_list){0};
        pthread_mutex_unlock(&q->mu);
        if (closing && !close_deadline)
            close_deadline = time_mono_us() + SHUTDOWN_CONFIRM_MS * 1000LL;
        if (!q->pub_conn) {
            amqp_fail_list(q, &l, MD_ERR_IO);
            amqp_fail_list(q, &ev, MD_ERR_IO);
            if (closing) break;
            pub_backoff(q, backoff);
            char err[512];
            pthread_mutex_lock(&q->mu);
            closing = q->closing;
            pthread_mutex_unlock(&q->mu);
            if (closing) break;
            if (pub_connect(q, err, sizeof err) == 0) {
                log_info("amqp_publisher", "RabbitMQ publisher reconnected to %s:%d", q->host,
                         q->port);
                backoff = AMQP_BACKOFF_MIN_MS;
            } else {
                log_warn("amqp_publisher", "%s; retrying in %d ms", err, backoff * 2);
                backoff = backoff * 2 > AMQP_BACKOFF_MAX_MS ? AMQP_BACKOFF_MAX_MS : backoff * 2;
            }
            continue;
        }
        while (l.head) {
            amqp_item *it = l.head;
            l.head = it->next;
            l.n--;
            if (!l.head) l.tail = NULL;
            if (!q->pub_conn) {
                amqp_item_finish(q, it, MD_ERR_IO);
                continue;
            }
            int rc = amqp_send_item(q, it, false);
            list_push(&q->infl, it);
            if (rc != AMQP_STATUS_OK) amqp_pub_lost(q, amqp_error_string2(rc));
        }
        l = (amqp_list){0};
        set_in_flight(q);
        amqp_events_send(q, &ev);
        if (!q->pub_conn) continue;
        if (closing && q->infl.n == 0 && !q->ev_held.head) {
            pthread_mutex_lock(&q->mu);
            bool empty = q->pend.n == 0 && q->pend_ev.n == 0;
            pthread_mutex_unlock(&q->mu);
            if (empty) break;
        }
        if (closing && time_mono_us() > close_deadline) {
            log_warn("amqp_publisher", "shutdown: %zu publishes still unconfirmed after %d ms",
                     q->infl.n, SHUTDOWN_CONFIRM_MS);
            break;
        }
        if (q->infl.head && time_now_us() / 1000 - q->infl.head->enq_ms > AMQP_CONFIRM_TIMEOUT_MS) {
            amqp_pub_lost(q, "no confirm within the timeout");
            continue;
        }
        if (amqp_events_probe_late(q)) {
            amqp_pub_lost(q, "no answer to an events probe within the timeout");
            continue;
        }
        pub_wait(q, closing ? 50 : 1000);
    }
    if (q->pub_conn) {
        amqp_conn_close(q->pub_conn);
        q->pub_conn = NULL;
    }
    amqp_fail_list(q, &q->infl, MD_ERR_IO);
    amqp_events_reset(q);
    pthread_mutex_lock(&q->mu);
    q->pub_done = true;
    q->pub_connected = false;
    q->in_flight = 0;
    pthread_mutex_unlock(&q->mu);
    fail_pending(q, MD_ERR_IO);
    return NULL;
}

/* Waits (mu held) until fewer than AMQP_MAX_EVENTS_QUEUED events are queued: the worker
 * slows down to the rate the broker takes events at, rather than holding them in memory or
 * dropping them. 0, or MD_ERR_FULL after AMQP_EVENT_WAIT_MS (the broker is stuck). */
static int wait_event_room(amqp_q *q)
{
    if (q->ev_queued < AMQP_MAX_EVENTS_QUEUED) return 0;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += AMQP_EVENT_WAIT_MS / 1000;
    while (q->ev_queued >= AMQP_MAX_EVENTS_QUEUED && !q->closing)
        if (pthread_cond_timedwait(&q->ev_room, &q->mu, &until)) break;
    return q->ev_queued < AMQP_MAX_EVENTS_QUEUED ? 0 : MD_ERR_FULL;
}

/* Appends an item for the publisher thread: a batch within the window (pending + in
 * flight), an event once there is room (wait_event_room). Wakes the thread only when it has
 * nothing else to take: an item pushed behind others is taken with them. */
static int enqueue(amqp_q *q, amqp_item *it)
{
    pthread_mutex_lock(&q->mu);
    int rc = 0;
    if (it->event && !q->closing) rc = wait_event_room(q);
    bool idle = q->pend.n == 0 && q->pend_ev.n == 0;
    if (q->closing || !q->pub_started) rc = MD_ERR_CLOSED;
    else if (!it->event && q->pend.n + q->in_flight >= AMQP_MAX_INFLIGHT) rc = MD_ERR_FULL;
    if (rc == 0) {
        it->id = ++q->next_id;
        list_push(it->event ? &q->pend_ev : &q->pend, it);
        q->ev_queued += it->event;
    }
    pthread_mutex_unlock(&q->mu);
    if (rc == 0 && idle) {
        uint64_t one = 1;
        if (write(q->wake_fd, &one, sizeof one) < 0) { /* counter full: already awake */
        }
    }
    return rc;
}

static amqp_item *item_new(const void *data, size_t len)
{
    amqp_item *it = calloc(1, sizeof *it);
    if (!it) return NULL;
    it->data = malloc(len ? len : 1);
    if (!it->data) {
        free(it);
        return NULL;
    }
    if (len) memcpy(it->data, data, len);
    it->len = len;
    it->enq_ms = time_now_us() / 1000;
    return it;
}

static int amqp_q_publish(queue *qq, const uint8_t *data, size_t len, queue_publish_cb cb,
                          void *arg)
{
    amqp_q *q = (amqp_q *)qq;
    if (len && !data) return MD_ERR_INVALID;
    amqp_item *it = item_new(data, len);
    if (!it) return MD_ERR_NOMEM;
    it->cb = cb;
    it->arg = arg;
    int rc = enqueue(q, it);
    if (rc) item_free(it);
    return rc;
}

static int publish_event(queue *qq, const char *routing_key, const char *json, size_t len,
                         bool lines)
{
    if (!qq || qq->ops != &amqp_ops || !routing_key) return MD_ERR_INVALID;
    amqp_q *q = (amqp_q *)qq;
    if (!(q->roles & QUEUE_ROLE_PUBLISH)) return MD_ERR_INVALID;
    if (strlen(routing_key) >= sizeof(((amqp_item *)0)->routing_key)) return MD_ERR_INVALID;
    amqp_item *it = calloc(1, sizeof *it + (len ? len : 1)); /* item and body together */
    if (!it) return MD_ERR_NOMEM;
    it->event = true;
    it->lines = lines;
    it->data = (uint8_t *)(it + 1);
    memcpy(it->data, json, len);
    it->len = len;
    it->enq_ms = time_now_us() / 1000;
    strcpy(it->routing_key, routing_key);
    int rc = enqueue(q, it);
    if (rc) {
        if (rc == MD_ERR_FULL) event_failed(q, routing_key, rc);
        item_free(it);
    }
    return rc;
}

int amqp_queue_publish_event(queue *qq, const char *routing_key, const char *json, size_t len)
{
    return publish_event(qq, routing_key, json, len, false);
}

int amqp_queue_publish_event_lines(queue *qq, const char *lines, size_t len)
{
    return publish_event(qq, "", lines, len, true);
}

void amqp_lines_exchange_name(const config *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s.batched", c->rabbitmq_worker_exchange);
}

static void amqp_q_shutdown(queue *qq)
{
    amqp_q *q = (amqp_q *)qq;
    pthread_mutex_lock(&q->mu);
    bool join = q->pub_started && !q->closing;
    q->closing = true;
    pthread_cond_broadcast(&q->ev_room); /* a worker waiting for room gives up */
    pthread_mutex_unlock(&q->mu);
    if (q->wake_fd >= 0) {
        uint64_t one = 1;
        if (write(q->wake_fd, &one, sizeof one) < 0) { /* already awake */
        }
    }
    if (join) pthread_join(q->pub_thread, NULL); /* waits for outstanding confirms (bounded) */
}

static void amqp_q_free(amqp_q *q)
{
    amqp_cons_free(q);
    if (q->side_conn) amqp_conn_close(q->side_conn);
    if (q->wake_fd >= 0) close(q->wake_fd);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->ev_room);
    pthread_mutex_destroy(&q->cons_mu);
    pthread_mutex_destroy(&q->side_mu);
    free(q);
}

static void amqp_q_close(queue *qq)
{
    if (!qq) return;
    amqp_q *q = (amqp_q *)qq;
    pthread_mutex_lock(&q->mu);
    bool started = q->pub_started, closing = q->closing;
    pthread_mutex_unlock(&q->mu);
    if (started && !closing) amqp_q_shutdown(qq);
    amqp_q_free(q);
}

/* Splits RABBITMQ_URL into the parts librabbitmq wants. */
int amqp_q_parse_url(amqp_q *q, char *err, size_t errlen)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", q->cfg.rabbitmq_url);
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(buf, &ci) != AMQP_STATUS_OK || ci.ssl) {
        snprintf(err, errlen, "RABBITMQ_URL '%s' is not an amqp://user:pass@host:port/vhost URL%s",
                 q->cfg.rabbitmq_url, ci.ssl ? " (amqps is not supported)" : "");
        return MD_ERR_INVALID;
    }
    snprintf(q->host, sizeof q->host, "%s", ci.host);
    /* "amqp://h:5672/" means the default vhost "/", as pika and the gateways read it. */
    snprintf(q->vhost, sizeof q->vhost, "%s", ci.vhost && ci.vhost[0] ? ci.vhost : "/");
    snprintf(q->user, sizeof q->user, "%s", ci.user);
    snprintf(q->pass, sizeof q->pass, "%s", ci.password);
    q->port = ci.port;
    return 0;
}

queue *amqp_queue_open(const config *c, int roles, char *err, size_t errlen)
{
    if (errlen) err[0] = '\0';
    amqp_q *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->base.ops = &amqp_ops;
    q->cfg = *c;
    q->roles = roles;
    q->wake_fd = -1;
    q->cons_backoff_ms = AMQP_BACKOFF_MIN_MS;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->ev_room, NULL);
    pthread_mutex_init(&q->cons_mu, NULL);
    pthread_mutex_init(&q->side_mu, NULL);
    snprintf(q->dlx, sizeof q->dlx, "%s.dlx", c->rabbitmq_ingest_exchange);
    amqp_lines_exchange_name(c, q->lines_ex, sizeof q->lines_ex);
    if (amqp_q_parse_url(q, err, errlen)) goto fail;
    /* The side connection declares the topology and stays for dead letters and stats. */
    q->side_conn = amqp_conn_open(q, err, errlen);
    if (!q->side_conn || amqp_declare_topology(q, q->side_conn, err, errlen)) goto fail;
    amqp_confirm_select(q->side_conn, AMQP_CH);
    if (amqp_get_rpc_reply(q->side_conn).reply_type != AMQP_RESPONSE_NORMAL) {
        snprintf(err, errlen, "confirm.select failed on the RabbitMQ side connection");
        goto fail;
    }
    if ((roles & QUEUE_ROLE_CONSUME) && amqp_cons_connect(q, err, errlen)) goto fail;
    if (roles & QUEUE_ROLE_PUBLISH) {
        q->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (q->wake_fd < 0) {
            snprintf(err, errlen, "eventfd: %s", strerror(errno));
            goto fail;
        }
        if (pub_connect(q, err, errlen)) goto fail;
        int rc = pthread_create(&q->pub_thread, NULL, pub_main, q);
        if (rc) {
            snprintf(err, errlen, "cannot start the RabbitMQ publisher: %s", strerror(rc));
            amqp_conn_close(q->pub_conn);
            q->pub_conn = NULL;
            goto fail;
        }
        q->pub_started = true;
    }
    return &q->base;
fail:
    amqp_q_free(q);
    return NULL;
}

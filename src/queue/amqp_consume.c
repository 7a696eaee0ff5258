/* RabbitMQ backend, consumer side: manual acks, dead letters with a reason, stats.
 *
 * The consumer owns one connection (prefetch RABBITMQ_PREFETCH, manual ack). Deliveries not yet
 * acked are kept in order; ack = basic.ack multiple=true. A lost connection is reopened with
 * backoff on the next consume(); the broker re-queues whatever was unacked, and acks for
 * deliveries of the old connection are dropped (they come back; batch ids make that harmless).
 * nack republishes the message to the DLQ with header x-meterd-reason (confirmed, on the side
 * connection), then acks the original alone; if that republish fails the message is rejected
 * without requeue, so the broker's dead-letter exchange still moves it to the DLQ (reason lost). */
#include "queue/amqp_internal.h"

#include "core/error.h"
#include "core/log.h"
#include "core/timeutil.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAIT_SLICE_MS 200
#define DLQ_CONFIRM_MS 5000
#define STATS_CACHE_US (QUEUE_BUDGET_SAMPLE_MS * 1000) /* /metrics and the budget */

static bool closing(amqp_q *q)
{
    pthread_mutex_lock(&q->mu);
    bool c = q->closing;
    pthread_mutex_unlock(&q->mu);
    return c;
}

/* Mirrors consumer state for stats(), which must not wait for cons_mu. Under cons_mu. */
static void sync_state(amqp_q *q)
{
    pthread_mutex_lock(&q->mu);
    q->cons_unacked = q->out_len;
    q->cons_up = q->cons_connected;
    pthread_mutex_unlock(&q->mu);
}

static void cons_lost(amqp_q *q, const char *why)
{
    log_warn("amqp_consumer", "RabbitMQ consumer connection lost (%s); unacked deliveries "
             "return to the queue", why);
    amqp_conn_close(q->cons_conn);
    q->cons_conn = NULL;
    q->cons_connected = false;
    q->cons_retry_at_us = time_mono_us() + q->cons_backoff_ms * 1000LL;
}

int amqp_cons_connect(amqp_q *q, char *err, size_t errlen)
{
    amqp_connection_state_t c = amqp_conn_open(q, err, errlen);
    if (!c) return MD_ERR_IO;
    char why[300];
    amqp_basic_qos(c, AMQP_CH, 0, (uint16_t)(q->cfg.rabbitmq_prefetch ? q->cfg.rabbitmq_prefetch
                                                                       : 50), 0);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    amqp_basic_consume_ok_t *ok = NULL;
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        ok = amqp_basic_consume(c, AMQP_CH, amqp_cstring_bytes(q->cfg.rabbitmq_ingest_queue),
                                amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
        r = amqp_get_rpc_reply(c);
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL || !ok) {
        snprintf(err, errlen, "cannot consume from queue '%s': %s", q->cfg.rabbitmq_ingest_queue,
                 amqp_reply_text(r, why, sizeof why));
        amqp_conn_close(c);
        return MD_ERR_IO;
    }
    snprintf(q->consumer_tag, sizeof q->consumer_tag, "%.*s", (int)ok->consumer_tag.len,
             (const char *)ok->consumer_tag.bytes);
    q->cons_conn = c;
    q->cons_gen++;
    q->cons_connected = true;
    q->cons_cancelled = false;
    q->cons_backoff_ms = AMQP_BACKOFF_MIN_MS;
    sync_state(q);
    return 0;
}

/* Our batches carry AMQP_BATCH_CT ("" in queue_msg); gateway envelopes are JSON, with or
 * without a content type. */
static void map_content_type(const amqp_basic_properties_t *p, const amqp_bytes_t body,
                             char out[64])
{
    out[0] = '\0';
    if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG && p->content_type.len) {
        const char *ct = p->content_type.bytes;
        size_t n = p->content_type.len;
        if (n >= 22 && strncmp(ct, "application/x-protobuf", 22) == 0) return;
        if (n >= 16 && strncmp(ct, "application/json", 16) == 0) {
            strcpy(out, "application/json");
            return;
        }
        snprintf(out, 64, "%.*s", (int)n, ct);
        return;
    }
    const char *b = body.bytes;
    size_t i = 0;
    while (i < body.len && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n')) i++;
    if (i < body.len && b[i] == '{') strcpy(out, "application/json");
}

/* Reads the message after a basic.deliver and hands it out. 0 or MD_ERR_IO/NOMEM. */
static int take_delivery(amqp_q *q, const amqp_basic_deliver_t *d, queue_msg *msg)
{
    uint64_t tag = d->delivery_tag;
    bool redelivered = d->redelivered;
    amqp_message_t m;
    amqp_rpc_reply_t r = amqp_read_message(q->cons_conn, AMQP_CH, &m, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[300];
        cons_lost(q, amqp_reply_text(r, why, sizeof why));
        return MD_ERR_IO;
    }
    if (q->out_len == q->out_cap) {
        size_t nc = q->out_cap ? q->out_cap * 2 : 64;
        amqp_out *o = realloc(q->out, nc * sizeof *o);
        if (!o) {
            amqp_destroy_message(&m);
            return MD_ERR_NOMEM;
        }
        q->out = o;
        q->out_cap = nc;
    }
    amqp_out *o = &q->out[q->out_len];
    *o = (amqp_out){.seq = ++q->next_seq, .tag = tag, .gen = q->cons_gen, .len = m.body.len};
    o->body = malloc(m.body.len ? m.body.len : 1);
    if (!o->body) {
        amqp_destroy_message(&m);
        return MD_ERR_NOMEM;
    }
    if (m.body.len) memcpy(o->body, m.body.bytes, m.body.len);
    map_content_type(&m.properties, m.body, o->ct);
    if (m.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        snprintf(o->message_id, sizeof o->message_id, "%.*s", (int)m.properties.message_id.len,
                 (const char *)m.properties.message_id.bytes);
    int64_t enq_us = m.properties._flags & AMQP_BASIC_TIMESTAMP_FLAG
                         ? (int64_t)m.properties.timestamp * 1000000
                         : time_now_us();
    amqp_destroy_message(&m);
    amqp_maybe_release_buffers(q->cons_conn);
    q->out_len++;
    pthread_mutex_lock(&q->mu);
    q->last_tag = tag;
    pthread_mutex_unlock(&q->mu);

    *msg = (queue_msg){.seq = o->seq, .data = o->body, .len = o->len, .ref = q,
                       .enqueued_us = enq_us, .deliveries = redelivered ? 2 : 1};
    memcpy(msg->content_type, o->ct, sizeof msg->content_type);
    if (o->message_id[0])
        snprintf(msg->position, sizeof msg->position, "%.47s", o->message_id);
    else
        snprintf(msg->position, sizeof msg->position, "%" PRId64 "-%" PRIu64, enq_us / 1000, tag);
    return 0;
}

int amqp_q_consume(queue *qq, queue_msg *msg, int timeout_ms)
{
    amqp_q *q = (amqp_q *)qq;
    if (!(q->roles & QUEUE_ROLE_CONSUME)) return MD_ERR_INVALID;
    int64_t deadline = time_mono_us() + (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000;
    pthread_mutex_lock(&q->cons_mu);
    int rc = MD_ERR_TIMEOUT;
    for (;;) {
        int64_t now = time_mono_us();
        int64_t left_ms = timeout_ms < 0 ? WAIT_SLICE_MS : (deadline - now) / 1000;
        if (!q->cons_conn) {
            if (closing(q)) {
                rc = MD_ERR_CLOSED;
                break;
            }
            if (now >= q->cons_retry_at_us) {
                char err[512];
                if (amqp_cons_connect(q, err, sizeof err) == 0) {
                    log_info("amqp_consumer", "RabbitMQ consumer reconnected to %s:%d", q->host,
                             q->port);
                    continue;
                }
                q->cons_backoff_ms = q->cons_backoff_ms * 2 > AMQP_BACKOFF_MAX_MS
                                         ? AMQP_BACKOFF_MAX_MS
                                         : q->cons_backoff_ms * 2;
                q->cons_retry_at_us = time_mono_us() + q->cons_backoff_ms * 1000LL;
                log_warn("amqp_consumer", "%s; retrying in %d ms", err, q->cons_backoff_ms);
                rc = MD_ERR_IO;
                break;
            }
            int64_t wait = (q->cons_retry_at_us - now) / 1000;
            if (wait > left_ms) wait = left_ms;
            if (wait <= 0) break; /* MD_ERR_TIMEOUT */
            pthread_mutex_unlock(&q->cons_mu);
            usleep((useconds_t)(wait > WAIT_SLICE_MS ? WAIT_SLICE_MS : wait) * 1000);
            pthread_mutex_lock(&q->cons_mu);
            continue;
        }
        if (closing(q) && !q->cons_cancelled) {
            /* Deliveries sent before cancel-ok are queued by librabbitmq and still handed out. */
            amqp_basic_cancel(q->cons_conn, AMQP_CH, amqp_cstring_bytes(q->consumer_tag));
            amqp_rpc_reply_t r = amqp_get_rpc_reply(q->cons_conn);
            q->cons_cancelled = true;
            if (r.reply_type != AMQP_RESPONSE_NORMAL) cons_lost(q, "basic.cancel failed");
            continue;
        }
        bool buffered = amqp_frames_enqueued(q->cons_conn) || amqp_data_in_buffer(q->cons_conn);
        if (q->cons_cancelled && !buffered) {
            rc = MD_ERR_CLOSED;
            break;
        }
        if (left_ms < 0) left_ms = 0;
        if (left_ms > WAIT_SLICE_MS) left_ms = WAIT_SLICE_MS;
        struct timeval tv = {.tv_sec = left_ms / 1000, .tv_usec = (left_ms % 1000) * 1000};
        amqp_frame_t f;
        int st = amqp_simple_wait_frame_noblock(q->cons_conn, &f, &tv);
        if (st == AMQP_STATUS_TIMEOUT) {
            if (timeout_ms >= 0 && time_mono_us() >= deadline) break;
            continue;
        }
        if (st != AMQP_STATUS_OK) {
            cons_lost(q, amqp_error_string2(st));
            rc = MD_ERR_IO;
            break;
        }
        if (f.frame_type != AMQP_FRAME_METHOD) continue;
        if (f.payload.method.id == AMQP_BASIC_DELIVER_METHOD) {
            rc = take_delivery(q, f.payload.method.decoded, msg);
            break;
        }
        if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
            f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD ||
            f.payload.method.id == AMQP_BASIC_CANCEL_METHOD) {
            cons_lost(q, "closed or cancelled by the broker");
            rc = MD_ERR_IO;
            break;
        }
    }
    sync_state(q);
    pthread_mutex_unlock(&q->cons_mu);
    return rc;
}

/* Index of the outstanding delivery with seq, or -1. Under cons_mu. */
static long find_out(amqp_q *q, uint64_t seq)
{
    for (size_t i = 0; i < q->out_len; i++)
        if (q->out[i].seq == seq) return (long)i;
    return -1;
}

static void drop_out(amqp_q *q, size_t from, size_t n)
{
    for (size_t i = from; i < from + n; i++) free(q->out[i].body);
    memmove(q->out + from, q->out + from + n, (q->out_len - from - n) * sizeof *q->out);
    q->out_len -= n;
}

int amqp_q_ack(queue *qq, queue_msg *msg)
{
    amqp_q *q = (amqp_q *)qq;
    pthread_mutex_lock(&q->cons_mu);
    long i = find_out(q, msg->seq);
    int rc = 0;
    if (i < 0) { /* covered by an earlier cumulative ack, or not ours */
        pthread_mutex_unlock(&q->cons_mu);
        return q->out_len && msg->seq > q->out[q->out_len - 1].seq ? MD_ERR_INVALID : 0;
    }
    amqp_out *o = &q->out[i];
    if (!q->cons_conn || o->gen != q->cons_gen) {
        rc = MD_ERR_IO; /* its connection is gone: the broker re-delivers it */
    } else {
        int st = amqp_basic_ack(q->cons_conn, AMQP_CH, o->tag, 1);
        if (st != AMQP_STATUS_OK) {
            cons_lost(q, amqp_error_string2(st));
            rc = MD_ERR_IO;
        }
    }
    drop_out(q, 0, (size_t)i + 1);
    msg->data = NULL;
    sync_state(q);
    pthread_mutex_unlock(&q->cons_mu);
    return rc;
}

/* Waits for the side channel's confirm of tag. 0 on basic.ack, MD_ERR_IO otherwise. Under side_mu. */
static int side_wait_confirm(amqp_q *q, uint64_t tag)
{
    int64_t deadline = time_mono_us() + DLQ_CONFIRM_MS * 1000LL;
    while (time_mono_us() < deadline) {
        amqp_frame_t f;
        struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
        int st = amqp_simple_wait_frame_noblock(q->side_conn, &f, &tv);
        if (st == AMQP_STATUS_TIMEOUT) continue;
        if (st != AMQP_STATUS_OK || f.frame_type != AMQP_FRAME_METHOD) {
            if (st != AMQP_STATUS_OK) return MD_ERR_IO;
            continue;
        }
        uint32_t id = f.payload.method.id;
        if (id == AMQP_BASIC_ACK_METHOD || id == AMQP_BASIC_NACK_METHOD) {
            uint64_t t = id == AMQP_BASIC_ACK_METHOD
                             ? ((amqp_basic_ack_t *)f.payload.method.decoded)->delivery_tag
                             : ((amqp_basic_nack_t *)f.payload.method.decoded)->delivery_tag;
            bool mult = id == AMQP_BASIC_ACK_METHOD
                            ? ((amqp_basic_ack_t *)f.payload.method.decoded)->multiple
                            : ((amqp_basic_nack_t *)f.payload.method.decoded)->multiple;
            if (t == tag || (mult && t > tag)) return id == AMQP_BASIC_ACK_METHOD ? 0 : MD_ERR_IO;
        } else if (id == AMQP_CHANNEL_CLOSE_METHOD || id == AMQP_CONNECTION_CLOSE_METHOD) {
            return MD_ERR_IO;
        }
    }
    return MD_ERR_IO;
}

/* (Re)opens the side connection in confirm mode. Under side_mu. */
static int side_connect(amqp_q *q)
{
    if (q->side_conn) return 0;
    char err[512];
    q->side_conn = amqp_conn_open(q, err, sizeof err);
    if (!q->side_conn) {
        log_warn("amqp_side", "%s", err);
        return MD_ERR_IO;
    }
    amqp_confirm_select(q->side_conn, AMQP_CH);
    if (amqp_get_rpc_reply(q->side_conn).reply_type != AMQP_RESPONSE_NORMAL) {
        amqp_conn_close(q->side_conn);
        q->side_conn = NULL;
        return MD_ERR_IO;
    }
    q->side_tag = 0;
    return 0;
}

static void side_lost(amqp_q *q)
{
    amqp_conn_close(q->side_conn);
    q->side_conn = NULL;
    q->st_ok = false;
}

/* Publishes o to the DLQ with the reason and waits for the confirm. */
static int publish_dead(amqp_q *q, const amqp_out *o, const char *reason)
{
    pthread_mutex_lock(&q->side_mu);
    int rc = side_connect(q);
    if (rc == 0) {
        amqp_table_entry_t h[2];
        h[0].key = amqp_cstring_bytes("x-meterd-reason");
        h[0].value.kind = AMQP_FIELD_KIND_UTF8;
        h[0].value.value.bytes = amqp_cstring_bytes(reason ? reason : "");
        h[1].key = amqp_cstring_bytes("x-meterd-source-queue");
        h[1].value.kind = AMQP_FIELD_KIND_UTF8;
        h[1].value.value.bytes = amqp_cstring_bytes(q->cfg.rabbitmq_ingest_queue);
        amqp_basic_properties_t p = {0};
        p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG |
                   AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
        p.delivery_mode = 2;
        p.headers = (amqp_table_t){.num_entries = 2, .entries = h};
        p.content_type = amqp_cstring_bytes(o->ct[0] ? o->ct : AMQP_BATCH_CT);
        p.timestamp = (uint64_t)(time_now_us() / 1000000);
        if (o->message_id[0]) {
            p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
            p.message_id = amqp_cstring_bytes(o->message_id);
        }
        amqp_bytes_t body = {.len = o->len, .bytes = o->body};
        int st = amqp_basic_publish(q->side_conn, AMQP_CH, amqp_empty_bytes,
                                    amqp_cstring_bytes(q->cfg.rabbitmq_dlq_queue), 0, 0, &p, body);
        rc = st == AMQP_STATUS_OK ? side_wait_confirm(q, ++q->side_tag) : MD_ERR_IO;
        if (rc) side_lost(q);
        else amqp_maybe_release_buffers(q->side_conn);
    }
    pthread_mutex_unlock(&q->side_mu);
    return rc;
}

int amqp_q_nack(queue *qq, queue_msg *msg, const char *reason)
{
    amqp_q *q = (amqp_q *)qq;
    pthread_mutex_lock(&q->cons_mu);
    long i = find_out(q, msg->seq);
    if (i < 0) {
        pthread_mutex_unlock(&q->cons_mu);
        return MD_ERR_INVALID;
    }
    amqp_out *o = &q->out[i];
    int rc = 0;
    if (!q->cons_conn || o->gen != q->cons_gen) {
        rc = MD_ERR_IO; /* re-delivered later; dead-lettered then */
    } else if (publish_dead(q, o, reason) == 0) {
        if (amqp_basic_ack(q->cons_conn, AMQP_CH, o->tag, 0) != AMQP_STATUS_OK) {
            cons_lost(q, "basic.ack failed");
            rc = MD_ERR_IO; /* comes back and is dead-lettered again: a duplicate in the DLQ */
        }
    } else {
        log_warn("amqp_dead_letter", "could not republish to %s with the reason (%s); rejecting "
                 "it to the dead-letter exchange instead", q->cfg.rabbitmq_dlq_queue,
                 reason ? reason : "");
        if (amqp_basic_reject(q->cons_conn, AMQP_CH, o->tag, 0) != AMQP_STATUS_OK) {
            cons_lost(q, "basic.reject failed");
            rc = MD_ERR_IO;
        }
    }
    drop_out(q, (size_t)i, 1);
    msg->data = NULL;
    sync_state(q);
    pthread_mutex_unlock(&q->cons_mu);
    return rc;
}

/* Refreshes the cached broker counts (passive declares). Under side_mu. */
static void refresh_counts(amqp_q *q)
{
    int64_t now = time_mono_us();
    if (q->stats_at_us && now - q->stats_at_us < STATS_CACHE_US) return;
    q->stats_at_us = now;
    if (side_connect(q)) {
        q->st_ok = false;
        return;
    }
    amqp_queue_declare_ok_t *a = amqp_queue_declare(
        q->side_conn, AMQP_CH, amqp_cstring_bytes(q->cfg.rabbitmq_ingest_queue), 1, 0, 0, 0,
        amqp_empty_table);
    if (!a || amqp_get_rpc_reply(q->side_conn).reply_type != AMQP_RESPONSE_NORMAL) {
        side_lost(q);
        return;
    }
    q->st_ready = a->message_count;
    q->st_consumers = a->consumer_count;
    amqp_queue_declare_ok_t *d = amqp_queue_declare(
        q->side_conn, AMQP_CH, amqp_cstring_bytes(q->cfg.rabbitmq_dlq_queue), 1, 0, 0, 0,
        amqp_empty_table);
    if (!d || amqp_get_rpc_reply(q->side_conn).reply_type != AMQP_RESPONSE_NORMAL) {
        side_lost(q);
        return;
    }
    q->st_dead = d->message_count;
    q->st_ok = true;
    amqp_maybe_release_buffers(q->side_conn);
}

int amqp_q_stats(queue *qq, queue_stats *st)
{
    amqp_q *q = (amqp_q *)qq;
    *st = (queue_stats){0};
    pthread_mutex_lock(&q->side_mu);
    refresh_counts(q);
    bool ok = q->st_ok;
    uint64_t ready = q->st_ready, consumers = q->st_consumers, dead = q->st_dead;
    pthread_mutex_unlock(&q->side_mu);
    pthread_mutex_lock(&q->mu);
    st->published = q->published;
    /* Unacked deliveries of other consumers are not visible without the management API. */
    st->depth = ready + q->cons_unacked;
    st->dead_letters = dead;
    st->consumers = consumers;
    st->connected = ok && (!(q->roles & QUEUE_ROLE_PUBLISH) || q->pub_connected) &&
                    (!(q->roles & QUEUE_ROLE_CONSUME) || q->cons_up);
    if (q->last_tag) snprintf(st->last_delivered, sizeof st->last_delivered, "%" PRIu64, q->last_tag);
    pthread_mutex_unlock(&q->mu);
    snprintf(st->group, sizeof st->group, "%.63s", q->cfg.rabbitmq_ingest_queue);
    return 0;
}

void amqp_cons_free(amqp_q *q)
{
    if (q->cons_conn) amqp_conn_close(q->cons_conn);
    q->cons_conn = NULL;
    for (size_t i = 0; i < q->out_len; i++) free(q->out[i].body);
    free(q->out);
    q->out = NULL;
    q->out_len = q->out_cap = 0;
}

/* Dead letters of the RabbitMQ backend: the queue RABBITMQ_DLQ_QUEUE, listed and replayed.
 *
 * A scan takes the messages with basic.get (no auto-ack) and holds them unacknowledged, so
 * listing removes nothing: at the end every message still held goes back with one
 * basic.nack(requeue) (and would, too, if the connection dropped). RabbitMQ puts requeued
 * messages back at their old place. A scan covers the messages ready when it started (the
 * message count of the first basic.get-ok): a message dead-lettered again while we replay comes
 * after them and is left alone, so `replay --all` of a poison message cannot loop.
 * Replay publishes the body to the ingest exchange (persistent, same content type and message
 * id, mandatory) on a channel in confirm mode, waits for the broker's confirm, and only then
 * acks the message in the DLQ. An unroutable publish (basic.return) counts as failed.
 * Ids are content hashes of the body (dlq_hash_id): stable across scans, and equal only for
 * copies of one message (dead-lettered twice), which `replay ID` publishes once and removes all.
 * Memory: a list and `replay --all` keep nothing per message; `replay ID` keeps the wanted ones. */
#include "queue/amqp_internal.h"
#include "queue/dlq.h"

#include "core/error.h"
#include "core/timeutil.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define CONFIRM_TIMEOUT_MS 30000

typedef struct amqp_dlq {
    dlq base;  /* first */
    amqp_q *q; /* owned: configuration and broker address only (no threads) */
    amqp_connection_state_t conn;
    uint64_t pub_tag; /* publisher-confirm sequence on the channel */
} amqp_dlq;

/* One message taken by a scan, held unacknowledged (only the wanted ones of a replay by id are
 * kept after the callback: a list or `replay --all` keeps nothing per message). */
typedef struct held {
    uint64_t tag;
    char id[17];
    bool primary;  /* replay by id: the first copy of its id, the one that is published */
    uint8_t *body; /* owned: kept primary copies only */
    size_t len;
    char ct[128];
    char mid[128];
    char reason[512];
    int64_t dead_at_us;
    uint32_t deliveries;
} held;

typedef struct scan {
    held *v; /* owned */
    size_t n, cap;
} scan;

static void scan_free(scan *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].body);
    free(s->v);
    *s = (scan){0};
}

/* A string header value into out ("" when absent or not a string). */
static void header_str(const amqp_table_t *t, const char *key, char *out, size_t outlen)
{
    out[0] = '\0';
    for (int i = 0; t && i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (e->key.len != strlen(key) || memcmp(e->key.bytes, key, e->key.len) != 0) continue;
        if (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES)
            snprintf(out, outlen, "%.*s", (int)e->value.value.bytes.len,
                     (const char *)e->value.value.bytes.bytes);
        return;
    }
}

static const amqp_field_value_t *header(const amqp_table_t *t, const char *key)
{
    for (int i = 0; t && i < t->num_entries; i++)
        if (t->entries[i].key.len == strlen(key) &&
            memcmp(t->entries[i].key.bytes, key, t->entries[i].key.len) == 0)
            return &t->entries[i].value;
    return NULL;
}

static int64_t field_int(const amqp_field_value_t *v)
{
    switch (v ? v->kind : 0) {
    case AMQP_FIELD_KIND_I8:
        return v->value.i8;
    case AMQP_FIELD_KIND_U8:
        return v->value.u8;
    case AMQP_FIELD_KIND_I16:
        return v->value.i16;
    case AMQP_FIELD_KIND_U16:
        return v->value.u16;
    case AMQP_FIELD_KIND_I32:
        return v->value.i32;
    case AMQP_FIELD_KIND_U32:
        return v->value.u32;
    case AMQP_FIELD_KIND_I64:
        return v->value.i64;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        return (int64_t)v->value.u64;
    default:
        return 0;
    }
}

/* Reason, time and delivery count: ours (x-meterd-reason, timestamp = when the worker
 * dead-lettered it), or the broker's x-death when its dead-letter exchange moved it. */
static void describe(const amqp_basic_properties_t *p, held *h)
{
    const amqp_table_t *t = p->_flags & AMQP_BASIC_HEADERS_FLAG ? &p->headers : NULL;
    header_str(t, "x-meterd-reason", h->reason, sizeof h->reason);
    if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG)
        h->dead_at_us = (int64_t)p->timestamp * TIME_US_PER_SEC;
    int64_t n = field_int(header(t, "x-delivery-count")); /* quorum queues */
    h->deliveries = n > 0 && n < UINT32_MAX ? (uint32_t)n + 1 : 0;
    const amqp_field_value_t *xd = header(t, "x-death");
    if (!xd || xd->kind != AMQP_FIELD_KIND_ARRAY || xd->value.array.num_entries < 1 ||
        xd->value.array.entries[0].kind != AMQP_FIELD_KIND_TABLE)
        return;
    const amqp_table_t *d = &xd->value.array.entries[0].value.table;
    const amqp_field_value_t *tm = header(d, "time");
    if (tm && tm->kind == AMQP_FIELD_KIND_TIMESTAMP)
        h->dead_at_us = (int64_t)tm->value.u64 * TIME_US_PER_SEC;
    if (!h->reason[0]) {
        char why[64], from[256];
        header_str(d, "reason", why, sizeof why);
        header_str(d, "queue", from, sizeof from);
        snprintf(h->reason, sizeof h->reason, "dead-lettered by the broker from %s (%s)",
                 from[0] ? from : "a queue", why[0] ? why : "no reason given");
    }
}

static void to_entry(const held *h, const uint8_t *body, size_t len, dlq_entry *e)
{
    *e = (dlq_entry){.id = h->id,
                     .source_id = h->mid,
                     .reason = h->reason,
                     .dead_at_us = h->dead_at_us,
                     .deliveries = h->deliveries,
                     .content_type = h->ct,
                     .data = body,
                     .len = len};
}

/* Gives every held message not acked back to the queue, in its old place. */
static void give_back(amqp_dlq *d)
{
    if (d->conn) amqp_basic_nack(d->conn, AMQP_CH, 0, 1, 1); /* tag 0 + multiple: all */
}

typedef int (*take_cb)(void *arg, held *h, const amqp_message_t *m);

/* Takes the messages ready at the start, one by one, calling cb for each (non-zero stops). */
static int take_all(amqp_dlq *d, take_cb cb, void *arg, char *err, size_t errlen)
{
    const char *qn = d->q->cfg.rabbitmq_dlq_queue;
    uint64_t left = 1; /* set from the first get-ok */
    bool first = true;
    char why[300];
    while (left > 0) {
        amqp_rpc_reply_t r = amqp_basic_get(d->conn, AMQP_CH, amqp_cstring_bytes(qn), 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            snprintf(err, errlen, "basic.get from %s failed: %s", d->base.where,
                     amqp_reply_text(r, why, sizeof why));
            return MD_ERR_IO;
        }
        if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) return 0;
        amqp_basic_get_ok_t *ok = r.reply.decoded;
        uint64_t tag = ok->delivery_tag;
        if (first) left = (uint64_t)ok->message_count + 1;
        first = false;
        left--;
        amqp_message_t m;
        r = amqp_read_message(d->conn, AMQP_CH, &m, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            snprintf(err, errlen, "reading a message of %s failed: %s", d->base.where,
                     amqp_reply_text(r, why, sizeof why));
            return MD_ERR_IO;
        }
        held h = {.tag = tag};
        dlq_hash_id(m.body.bytes, m.body.len, h.id);
        if (m.properties._flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
            snprintf(h.ct, sizeof h.ct, "%.*s", (int)m.properties.content_type.len,
                     (const char *)m.properties.content_type.bytes);
        if (m.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
            snprintf(h.mid, sizeof h.mid, "%.*s", (int)m.properties.message_id.len,
                     (const char *)m.properties.message_id.bytes);
        describe(&m.properties, &h);
        int stop = cb(arg, &h, &m); /* < 0: an md_err; > 0: done */
        amqp_destroy_message(&m);
        amqp_maybe_release_buffers(d->conn);
        if (stop) return stop < 0 ? stop : 0;
    }
    return 0;
}

typedef struct list_ctx {
    dlq_visit_cb cb;
    void *arg;
} list_ctx;

static int list_one(void *arg, held *h, const amqp_message_t *m)
{
    list_ctx *c = arg;
    dlq_entry e;
    to_entry(h, m->body.bytes, m->body.len, &e);
    return c->cb(c->arg, &e) ? 1 : 0;
}

static int amqp_dlq_list(dlq *dd, dlq_visit_cb cb, void *arg, char *err, size_t errlen)
{
    amqp_dlq *d = (amqp_dlq *)dd;
    list_ctx c = {cb, arg};
    int rc = take_all(d, list_one, &c, err, errlen);
    give_back(d);
    if (rc == MD_ERR_NOMEM) snprintf(err, errlen, "out of memory");
    return rc;
}

/* Waits for the confirm of the last publish. 0 (acked and routed), MD_ERR_IO with err. */
static int wait_confirm(amqp_dlq *d, char *err, size_t errlen)
{
    int64_t deadline = time_mono_us() + CONFIRM_TIMEOUT_MS * 1000LL;
    bool returned = false;
    while (time_mono_us() < deadline) {
        amqp_frame_t f;
        struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
        int st = amqp_simple_wait_frame_noblock(d->conn, &f, &tv);
        if (st == AMQP_STATUS_TIMEOUT) continue;
        if (st != AMQP_STATUS_OK) {
            snprintf(err, errlen, "connection lost before the broker confirmed: %s",
                     amqp_error_string2(st));
            return MD_ERR_IO;
        }
        if (f.frame_type != AMQP_FRAME_METHOD) continue;
        uint32_t id = f.payload.method.id;
        if (id == AMQP_BASIC_RETURN_METHOD) { /* header and body of the returned copy follow */
            amqp_message_t m;
            if (amqp_read_message(d->conn, AMQP_CH, &m, 0).reply_type == AMQP_RESPONSE_NORMAL)
                amqp_destroy_message(&m);
            returned = true;
        } else if (id == AMQP_BASIC_ACK_METHOD || id == AMQP_BASIC_NACK_METHOD) {
            bool ack = id == AMQP_BASIC_ACK_METHOD;
            uint64_t t = ack ? ((amqp_basic_ack_t *)f.payload.method.decoded)->delivery_tag
                             : ((amqp_basic_nack_t *)f.payload.method.decoded)->delivery_tag;
            bool mult = ack ? ((amqp_basic_ack_t *)f.payload.method.decoded)->multiple
                            : ((amqp_basic_nack_t *)f.payload.method.decoded)->multiple;
            if (t != d->pub_tag && !(mult && t > d->pub_tag)) continue;
            if (!ack)
                snprintf(err, errlen, "the broker refused the message (basic.nack)");
            else if (returned)
                snprintf(err, errlen,
                         "exchange '%s' routed it to no queue (is '%s' bound with "
                         "'%s'?)",
                         d->q->cfg.rabbitmq_ingest_exchange, d->q->cfg.rabbitmq_ingest_queue,
                         d->q->cfg.rabbitmq_ingest_routing_key);
            return ack && !returned ? 0 : MD_ERR_IO;
        } else if (id == AMQP_CHANNEL_CLOSE_METHOD || id == AMQP_CONNECTION_CLOSE_METHOD) {
            snprintf(err, errlen, "the broker closed the channel before confirming");
            return MD_ERR_IO;
        }
    }
    snprintf(err, errlen, "no publisher confirm within %d s", CONFIRM_TIMEOUT_MS / 1000);
    return MD_ERR_IO;
}

/* Publishes h's body to the ingest exchange and waits for the confirm. */
static int republish(amqp_dlq *d, const held *h, const uint8_t *body, size_t len, char *err,
                     size_t errlen)
{
    const config *g = &d->q->cfg;
    amqp_table_entry_t hd[1];
    hd[0].key = amqp_cstring_bytes("x-meterd-replayed-from");
    hd[0].value.kind = AMQP_FIELD_KIND_UTF8;
    hd[0].value.value.bytes = amqp_cstring_bytes(g->rabbitmq_dlq_queue);
    amqp_basic_properties_t p = {0};
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_HEADERS_FLAG;
    p.delivery_mode = 2;
    p.timestamp = (uint64_t)(time_now_us() / TIME_US_PER_SEC);
    p.headers = (amqp_table_t){.num_entries = 1, .entries = hd};
    if (h->ct[0]) { /* none stays none: the worker sniffs a JSON body, as it did the first time */
        p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        p.content_type = amqp_cstring_bytes(h->ct);
    }
    if (h->mid[0]) {
        p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        p.message_id = amqp_cstring_bytes(h->mid);
    }
    amqp_bytes_t b = {.len = len, .bytes = (void *)body};
    int st = amqp_basic_publish(d->conn, AMQP_CH, amqp_cstring_bytes(g->rabbitmq_ingest_exchange),
                                amqp_cstring_bytes(g->rabbitmq_ingest_routing_key), 1, 0, &p, b);
    if (st != AMQP_STATUS_OK) {
        snprintf(err, errlen, "publish failed: %s", amqp_error_string2(st));
        return MD_ERR_IO;
    }
    d->pub_tag++;
    return wait_confirm(d, err, errlen);
}

typedef struct replay_ctx {
    amqp_dlq *d;
    scan *s;
    const char *const *ids;
    size_t nids;
    dlq_visit_cb cb;
    void *arg;
    char *err;
    size_t errlen;
} replay_ctx;

/* The kept first copy of id, or NULL. */
static const held *primary_of(const scan *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].primary && strcmp(s->v[i].id, id) == 0) return &s->v[i];
    return NULL;
}

/* Acks one held message in the DLQ (after its republish was confirmed). */
static int ack_held(amqp_dlq *d, held *h, char *err, size_t errlen)
{
    int st = amqp_basic_ack(d->conn, AMQP_CH, h->tag, 0);
    if (st != AMQP_STATUS_OK) {
        snprintf(err, errlen,
                 "republished %s, but its ack in %s failed (%s): it stays listed, "
                 "and replaying it again is harmless",
                 h->id, d->base.where, amqp_error_string2(st));
        return MD_ERR_IO;
    }
    return 0;
}

/* Replays h: published unless p, the first copy of the same message, already was; then acked
 * in the DLQ and reported. */
static int replay_held(replay_ctx *c, held *h, const held *p, const uint8_t *body, size_t len)
{
    if (!p) {
        int rc = republish(c->d, h, body, len, c->err, c->errlen);
        if (rc) {
            char why[400];
            snprintf(why, sizeof why, "%s", c->err);
            snprintf(c->err, c->errlen,
                     "replaying %s to exchange '%s' failed: %s; it stays in "
                     "%s",
                     h->id, c->d->q->cfg.rabbitmq_ingest_exchange, why, c->d->base.where);
            return rc;
        }
    }
    int rc = ack_held(c->d, h, c->err, c->errlen);
    if (rc) return rc;
    dlq_entry e;
    to_entry(h, body, len, &e);
    c->cb(c->arg, &e);
    return 0;
}

static bool id_wanted(const replay_ctx *c, const char *id)
{
    if (!c->nids) return true;
    for (size_t i = 0; i < c->nids; i++)
        if (strcmp(c->ids[i], id) == 0) return true;
    return false;
}

/* --all: replays as the scan goes, keeping nothing. Copies of one message are each published
 * (the store skips a batch id it has, so that costs a little work, never a second apply). */
static int replay_streaming(void *arg, held *h, const amqp_message_t *m)
{
    return replay_held(arg, h, NULL, m->body.bytes, m->body.len);
}

/* Ids: the scan keeps the wanted messages (with the body of each first copy) for later. */
static int remember(void *arg, held *h, const amqp_message_t *m)
{
    replay_ctx *c = arg;
    if (!id_wanted(c, h->id)) return 0;
    scan *s = c->s;
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        held *v = realloc(s->v, nc * sizeof *v);
        if (!v) return MD_ERR_NOMEM;
        s->v = v;
        s->cap = nc;
    }
    if (!primary_of(s, h->id)) {
        h->body = malloc(m->body.len ? m->body.len : 1);
        if (!h->body) return MD_ERR_NOMEM;
        if (m->body.len) memcpy(h->body, m->body.bytes, m->body.len);
        h->len = m->body.len;
        h->primary = true;
    }
    s->v[s->n++] = *h;
    return 0;
}

static int amqp_dlq_replay(dlq *dd, const char *const *ids, size_t n, dlq_visit_cb cb, void *arg,
                           char *err, size_t errlen)
{
    amqp_dlq *d = (amqp_dlq *)dd;
    scan s = {0};
    replay_ctx c = {
        .d = d, .s = &s, .ids = ids, .nids = n, .cb = cb, .arg = arg, .err = err, .errlen = errlen};
    err[0] = '\0';
    int rc = take_all(d, n ? remember : replay_streaming, &c, err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++) /* every id must exist before any is replayed */
        if (!primary_of(&s, ids[i])) {
            snprintf(err, errlen, "no dead letter with id %s in %s", ids[i], d->base.where);
            rc = MD_ERR_NOTFOUND;
        }
    for (size_t k = 0; rc == 0 && k < s.n; k++) { /* in queue order; copies after their first */
        held *h = &s.v[k];
        const held *p = h->primary ? NULL : primary_of(&s, h->id);
        rc = replay_held(&c, h, p, p ? p->body : h->body, p ? p->len : h->len);
    }
    give_back(d);
    scan_free(&s);
    if (rc == MD_ERR_NOMEM && !err[0]) snprintf(err, errlen, "out of memory");
    return rc;
}

static void amqp_dlq_close(dlq *dd)
{
    amqp_dlq *d = (amqp_dlq *)dd;
    if (!d) return;
    amqp_conn_close(d->conn);
    free(d->q);
    free(d);
}

static const dlq_ops amqp_dlq_ops = {
    .name = "amqp",
    .list = amqp_dlq_list,
    .replay = amqp_dlq_replay,
    .close = amqp_dlq_close,
};

dlq *amqp_dlq_open(const config *c, char *err, size_t errlen)
{
    amqp_dlq *d = calloc(1, sizeof *d);
    if (!d || !(d->q = calloc(1, sizeof *d->q))) {
        free(d);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->base.ops = &amqp_dlq_ops;
    d->q->cfg = *c;
    snprintf(d->q->dlx, sizeof d->q->dlx, "%s.dlx", c->rabbitmq_ingest_exchange);
    if (amqp_q_parse_url(d->q, err, errlen)) goto fail;
    snprintf(d->base.where, sizeof d->base.where, "queue '%s' on %s:%d", c->rabbitmq_dlq_queue,
             d->q->host, d->q->port);
    snprintf(d->base.target, sizeof d->base.target, "exchange '%s' (routing key '%s')",
             c->rabbitmq_ingest_exchange, c->rabbitmq_ingest_routing_key);
    d->conn = amqp_conn_open(d->q, err, errlen);
    if (!d->conn || amqp_declare_topology(d->q, d->conn, err, errlen)) goto fail;
    amqp_confirm_select(d->conn, AMQP_CH);
    if (amqp_get_rpc_reply(d->conn).reply_type != AMQP_RESPONSE_NORMAL) {
        snprintf(err, errlen, "confirm.select failed on %s:%d", d->q->host, d->q->port);
        goto fail;
    }
    return &d->base;
fail:
    amqp_dlq_close(&d->base);
    return NULL;
}

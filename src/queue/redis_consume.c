/* Redis Streams backend, consumer group side.
 *
 * consume() hands out one entry per call from a local buffer filled by
 *   XREADGROUP GROUP g c STREAMS s 0     once at open: our own pending entries from before a restart
 *   XAUTOCLAIM s g c <idle> <cursor>     every ~5 s: entries stuck on dead consumers
 *                                        (idle: REDIS_CLAIM_IDLE_MS, default 60000)
 *   XREADGROUP GROUP g c COUNT 100 BLOCK t STREAMS s >    new entries
 * Redis counts a delivery whenever an entry is read, including the read-ahead of a worker that
 * is killed before it gets to them, so a worker restarting in a loop would push healthy entries
 * over any limit. What counts instead is a hand-out to the worker: an entry Redis has delivered
 * before (XPENDING count > 1: re-read or claimed) gets HINCRBY "<stream>:attempts" <id> when
 * consume() hands it out, and one handed out more than METERD_MAX_DELIVERIES times (poison that
 * keeps killing workers) is moved to "<stream>:dlq" (XADD batch|payload, reason, id) and
 * XACKed instead. The field is deleted with the ack. ack = XACK of every outstanding id up to msg;
 * nack = XADD to the dead-letter stream with the reason, then XACK of msg alone. The group's
 * pending list lives on the server, so a reconnect loses nothing: acks after it still work. */
#include "queue/redis_internal.h"

#include "core/error.h"
#include "core/log.h"
#include "core/timeutil.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK_SLICE_MS 1000

static bool is_closing(redis_q *q)
{
    pthread_mutex_lock(&q->mu);
    bool c = q->closing;
    pthread_mutex_unlock(&q->mu);
    return c;
}

static void sync_state(redis_q *q)
{
    pthread_mutex_lock(&q->mu);
    q->cons_unacked = q->out.len;
    q->cons_up = q->cons != NULL;
    pthread_mutex_unlock(&q->mu);
}

static void cons_lost(redis_q *q, const char *why)
{
    log_warn("redis_consumer", "Redis consumer connection lost (%s)", why);
    redisFree(q->cons);
    q->cons = NULL;
    q->retry_at_us = time_mono_us() + q->backoff_ms * 1000LL;
}

static int entries_push(redis_entries *e, redis_entry *x)
{
    if (e->head + e->len == e->cap) {
        if (e->head) {
            memmove(e->v, e->v + e->head, e->len * sizeof *e->v);
            e->head = 0;
        } else {
            size_t nc = e->cap ? e->cap * 2 : 128;
            redis_entry *v = realloc(e->v, nc * sizeof *v);
            if (!v) return MD_ERR_NOMEM;
            e->v = v;
            e->cap = nc;
        }
    }
    e->v[e->head + e->len++] = *x;
    return 0;
}

static void entries_free(redis_entries *e)
{
    for (size_t i = 0; i < e->len; i++) free(e->v[e->head + i].data);
    free(e->v);
    *e = (redis_entries){0};
}

/* Turns one [id, [field, value, ...]] element into an entry. 1 = skipped (deleted), 0, <0. */
static int parse_entry(const redisReply *el, redis_entry *x)
{
    *x = (redis_entry){.deliveries = 1};
    if (el->type != REDIS_REPLY_ARRAY || el->elements < 2 || el->element[0]->type != REDIS_REPLY_STRING)
        return 1;
    snprintf(x->id, sizeof x->id, "%.47s", el->element[0]->str);
    const redisReply *f = el->element[1];
    if (f->type != REDIS_REPLY_ARRAY) return 1; /* deleted while pending */
    const redisReply *body = NULL, *ct = NULL;
    bool json = false;
    for (size_t k = 0; k + 1 < f->elements; k += 2) {
        const char *name = f->element[k]->str;
        if (!name) continue;
        if (strcmp(name, "batch") == 0) body = f->element[k + 1];
        else if (strcmp(name, "payload") == 0) body = f->element[k + 1], json = true;
        else if (strcmp(name, "ct") == 0) ct = f->element[k + 1];
    }
    char *flat = NULL;
    if (!body) { /* a gateway's flat entry (site_id, device_id, ...): hand it on as one JSON object */
        json_t *o = json_object();
        for (size_t k = 0; o && k + 1 < f->elements; k += 2)
            if (f->element[k]->str && f->element[k + 1]->str)
                json_object_set_new(o, f->element[k]->str, json_string(f->element[k + 1]->str));
        flat = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!flat) return MD_ERR_NOMEM;
        json = true;
    }
    size_t len = body ? body->len : strlen(flat);
    x->data = malloc(len ? len : 1);
    if (!x->data) {
        free(flat);
        return MD_ERR_NOMEM;
    }
    if (len) memcpy(x->data, body ? body->str : flat, len);
    x->len = len;
    free(flat);
    if (ct && ct->str && strncmp(ct->str, "application/x-protobuf", 22) != 0)
        snprintf(x->ct, sizeof x->ct, "%s",
                 strncmp(ct->str, "application/json", 16) == 0 ? "application/json" : ct->str);
    else if (json && !ct)
        strcpy(x->ct, "application/json");
    return 0;
}

/* Delivery count of id from the group's pending list (0 if unknown). */
static uint32_t delivery_count(redis_q *q, const char *id)
{
    redisReply *r = redisCommand(q->cons, "XPENDING %s %s %s %s 1", q->cfg.redis_stream,
                                 q->cfg.consumer_group, id, id);
    uint32_t n = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements >= 4)
        n = (uint32_t)r->element[0]->element[3]->integer;
    if (r) freeReplyObject(r);
    return n;
}

/* Buffers the entries of an array of stream entries. Returns how many came (incl. skipped). */
static size_t buffer_entries(redis_q *q, const redisReply *arr, bool count_deliveries, char *last_id)
{
    size_t n = 0;
    for (size_t i = 0; arr && arr->type == REDIS_REPLY_ARRAY && i < arr->elements; i++, n++) {
        redis_entry x;
        int rc = parse_entry(arr->element[i], &x);
        if (last_id && arr->element[i]->type == REDIS_REPLY_ARRAY && arr->element[i]->elements &&
            arr->element[i]->element[0]->str)
            snprintf(last_id, 48, "%.47s", arr->element[i]->element[0]->str);
        if (rc) continue;
        if (count_deliveries) {
            uint32_t d = delivery_count(q, x.id);
            if (d) x.deliveries = d;
        }
        if (entries_push(&q->buf, &x)) free(x.data);
    }
    return n;
}

/* XREADGROUP reply: [[stream, [entries]]] or nil. */
static const redisReply *read_entries(const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1) return NULL;
    const redisReply *s = r->element[0];
    return s->type == REDIS_REPLY_ARRAY && s->elements >= 2 ? s->element[1] : NULL;
}

static bool reply_failed(redis_q *q, redisReply *r, const char *what)
{
    if (!r) {
        cons_lost(q, q->cons->errstr);
        return true;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        log_warn("redis_consumer", "%s: %s", what, r->str);
        if (strncmp(r->str, "NOGROUP", 7) == 0) { /* the server lost the group: recreate */
            char err[256];
            if (redis_group_create(q, q->cons, "0", err, sizeof err))
                log_warn("redis_consumer", "%s", err);
        }
        freeReplyObject(r);
        return true;
    }
    return false;
}

/* One round of fetching into the buffer, blocking up to block_ms for new entries. */
static int fetch(redis_q *q, int block_ms)
{
    const char *s = q->cfg.redis_stream, *g = q->cfg.consumer_group;
    if (!q->pel_read) { /* ours from a previous run, oldest first, in pages */
        redisReply *r = redisCommand(q->cons, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s %s", g,
                                     q->consumer, REDIS_READ_COUNT, s,
                                     q->pel_cursor[0] ? q->pel_cursor : "0");
        if (reply_failed(q, r, "XREADGROUP (pending)")) return MD_ERR_IO;
        size_t n = buffer_entries(q, read_entries(r), true, q->pel_cursor);
        freeReplyObject(r);
        if (n < REDIS_READ_COUNT) q->pel_read = true;
        if (n) return 0;
    }
    int64_t now = time_mono_us();
    if (now - q->claimed_at_us >= REDIS_CLAIM_EVERY_US) {
        q->claimed_at_us = now;
        redisReply *r = redisCommand(q->cons, "XAUTOCLAIM %s %s %s %d %s COUNT %d", s, g,
                                     q->consumer, (int)q->cfg.redis_claim_idle_ms,
                                     q->claim_cursor[0] ? q->claim_cursor : "0-0", REDIS_READ_COUNT);
        if (reply_failed(q, r, "XAUTOCLAIM")) return q->cons ? 0 : MD_ERR_IO;
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2) {
            if (r->element[0]->str)
                snprintf(q->claim_cursor, sizeof q->claim_cursor, "%.47s", r->element[0]->str);
            size_t n = buffer_entries(q, r->element[1], true, NULL);
            if (n) log_info("redis_consumer", "claimed %zu entries idle on other consumers", n);
        }
        freeReplyObject(r);
        if (q->buf.len) return 0;
    }
    redisReply *r = redisCommand(q->cons, "XREADGROUP GROUP %s %s COUNT %d BLOCK %d STREAMS %s >",
                                 g, q->consumer, REDIS_READ_COUNT, block_ms, s);
    if (reply_failed(q, r, "XREADGROUP")) return q->cons ? 0 : MD_ERR_IO;
    buffer_entries(q, read_entries(r), false, NULL);
    freeReplyObject(r);
    return 0;
}

/* XADD to the dead-letter stream. 0 or MD_ERR_IO. */
static int dead_letter(redis_q *q, const redis_entry *x, const char *reason)
{
    const char *argv[11] = {"XADD", q->dlq, "*", x->ct[0] ? "payload" : "batch", (const char *)x->data,
                            "reason", reason ? reason : "", "id", x->id, "ct", x->ct};
    size_t lens[11];
    for (int i = 0; i < 11; i++) lens[i] = i == 4 ? x->len : strlen(argv[i]);
    int argc = x->ct[0] ? 11 : 9;
    redisReply *r = redisCommandArgv(q->cons, argc, argv, lens);
    int rc = r && r->type == REDIS_REPLY_STRING ? 0 : MD_ERR_IO;
    if (!r) cons_lost(q, q->cons->errstr);
    else freeReplyObject(r);
    return rc;
}

/* XACK of ids[0..n), then (REDIS_DELETE_ACKED, the default) XDEL of the same ids, then HDEL of
 * their hand-out counts, in one round trip: an acknowledged entry is in the store, and a stream
 * nobody trims grows without bound. 0 or MD_ERR_IO; a failed XDEL/HDEL is only logged (the
 * entries are acknowledged either way). */
static int xack(redis_q *q, const redis_entry *v, size_t n)
{
    const char **argv = malloc((n + 3) * sizeof *argv);
    size_t *lens = malloc((n + 3) * sizeof *lens);
    int rc = MD_ERR_NOMEM;
    if (!argv || !lens) goto out;
    int sent = 0, ok = 1;
    argv[0] = "XACK";
    argv[1] = q->cfg.redis_stream;
    argv[2] = q->cfg.consumer_group;
    for (size_t i = 0; i < n; i++) argv[i + 3] = v[i].id;
    for (size_t i = 0; i < n + 3; i++) lens[i] = strlen(argv[i]);
    ok = redisAppendCommandArgv(q->cons, (int)(n + 3), argv, lens) == REDIS_OK;
    sent += ok;
    if (ok && q->cfg.redis_delete_acked) { /* XDEL stream id…: the same array from index 1 */
        argv[1] = "XDEL";
        argv[2] = q->cfg.redis_stream;
        lens[1] = 4;
        lens[2] = strlen(argv[2]);
        ok = redisAppendCommandArgv(q->cons, (int)(n + 2), argv + 1, lens + 1) == REDIS_OK;
        sent += ok;
    }
    size_t k = 3; /* HDEL attempts id…: the ids that have a count, from index 1 */
    for (size_t i = 0; i < n; i++) {
        if (!v[i].attempted) continue;
        argv[k] = v[i].id;
        lens[k++] = strlen(v[i].id);
    }
    if (ok && k > 3) {
        argv[1] = "HDEL";
        argv[2] = q->attempts;
        lens[1] = 4;
        lens[2] = strlen(argv[2]);
        ok = redisAppendCommandArgv(q->cons, (int)(k - 1), argv + 1, lens + 1) == REDIS_OK;
        sent += ok;
    }
    rc = MD_ERR_IO;
    for (int i = 0; i < sent; i++) {
        redisReply *r = NULL;
        if (redisGetReply(q->cons, (void **)&r) != REDIS_OK) {
            cons_lost(q, q->cons->errstr);
            rc = MD_ERR_IO;
            break;
        }
        if (i == 0) rc = r && r->type == REDIS_REPLY_INTEGER ? 0 : MD_ERR_IO;
        else if (!r || r->type != REDIS_REPLY_INTEGER)
            log_warn("redis_consumer", "%s after XACK failed: %s",
                     i == 1 && q->cfg.redis_delete_acked ? "XDEL" : "HDEL",
                     r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
        if (r) freeReplyObject(r);
    }
out:
    free(argv);
    free(lens);
    return rc;
}

/* Counts a hand-out of an entry Redis delivered before; its total hand-outs (the first one
 * included) go to x->deliveries. Keeps Redis' count when the HINCRBY fails. */
static void count_attempt(redis_q *q, redis_entry *x)
{
    redisReply *r = redisCommand(q->cons, "HINCRBY %s %s 1", q->attempts, x->id);
    if (r && r->type == REDIS_REPLY_INTEGER) {
        x->deliveries = (uint32_t)r->integer + 1;
        x->attempted = true;
    } else if (!r) {
        cons_lost(q, q->cons->errstr);
    }
    if (r) freeReplyObject(r);
}

/* Connects when due. 0 when connected. */
static int ensure_conn(redis_q *q)
{
    if (q->cons) return 0;
    if (time_mono_us() < q->retry_at_us) return MD_ERR_TIMEOUT;
    char err[512];
    q->cons = redis_conn_open(q, err, sizeof err);
    if (!q->cons) {
        q->backoff_ms = q->backoff_ms * 2 > REDIS_BACKOFF_MAX_MS ? REDIS_BACKOFF_MAX_MS
                                                                : q->backoff_ms * 2;
        q->retry_at_us = time_mono_us() + q->backoff_ms * 1000LL;
        log_warn("redis_consumer", "%s; retrying in %d ms", err, q->backoff_ms);
        return MD_ERR_IO;
    }
    q->backoff_ms = REDIS_BACKOFF_MIN_MS;
    log_info("redis_consumer", "Redis consumer connected to %s:%u", q->cfg.redis_host,
             q->cfg.redis_port);
    return 0;
}

int redis_q_consume(queue *qq, queue_msg *msg, int timeout_ms)
{
    redis_q *q = (redis_q *)qq;
    if (!(q->roles & QUEUE_ROLE_CONSUME)) return MD_ERR_INVALID;
    int64_t deadline = time_mono_us() + (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000;
    pthread_mutex_lock(&q->cons_mu);
    int rc = MD_ERR_TIMEOUT;
    for (;;) {
        if (q->buf.len) {
            redis_entry x = q->buf.v[q->buf.head++];
            if (--q->buf.len == 0) q->buf.head = 0;
            if (x.deliveries > 1 && q->cons) count_attempt(q, &x);
            if (q->cfg.max_deliveries && x.attempted && x.deliveries > q->cfg.max_deliveries) {
                char reason[128];
                snprintf(reason, sizeof reason, "handed out %u times (METERD_MAX_DELIVERIES=%u)",
                         x.deliveries, q->cfg.max_deliveries);
                if (dead_letter(q, &x, reason) == 0 && xack(q, &x, 1) == 0)
                    log_warn("redis_consumer", "entry %s moved to %s: %s", x.id, q->dlq, reason);
                free(x.data); /* if that failed it stays pending and is claimed again */
                continue;
            }
            x.seq = ++q->next_seq;
            if (entries_push(&q->out, &x)) {
                free(x.data);
                rc = MD_ERR_NOMEM;
                break;
            }
            *msg = (queue_msg){.seq = x.seq, .data = x.data, .len = x.len, .ref = q,
                               .enqueued_us = (int64_t)strtoll(x.id, NULL, 10) * 1000,
                               .deliveries = x.deliveries};
            memcpy(msg->content_type, x.ct, sizeof msg->content_type);
            memcpy(msg->position, x.id, sizeof msg->position);
            rc = 0;
            break;
        }
        if (is_closing(q)) {
            rc = MD_ERR_CLOSED;
            break;
        }
        int64_t left = timeout_ms < 0 ? BLOCK_SLICE_MS : (deadline - time_mono_us()) / 1000;
        int c = ensure_conn(q);
        if (c == MD_ERR_IO) {
            rc = MD_ERR_IO;
            break;
        }
        if (c) { /* waiting out the backoff */
            if (left <= 0) break;
            pthread_mutex_unlock(&q->cons_mu);
            usleep((useconds_t)(left < 100 ? left : 100) * 1000);
            pthread_mutex_lock(&q->cons_mu);
            continue;
        }
        /* BLOCK 0 would wait forever: poll with 1 ms when no time is left. */
        int block = left <= 0 ? 1 : left > BLOCK_SLICE_MS ? BLOCK_SLICE_MS : (int)left;
        if (fetch(q, block)) {
            rc = MD_ERR_IO;
            break;
        }
        if (!q->buf.len && timeout_ms >= 0 && time_mono_us() >= deadline) break;
    }
    sync_state(q);
    pthread_mutex_unlock(&q->cons_mu);
    return rc;
}

static long find_out(redis_q *q, uint64_t seq)
{
    for (size_t i = 0; i < q->out.len; i++)
        if (q->out.v[q->out.head + i].seq == seq) return (long)i;
    return -1;
}

/* Removes out[i .. i+n) (relative to head). */
static void drop_out(redis_q *q, size_t i, size_t n)
{
    redis_entry *b = q->out.v + q->out.head;
    for (size_t k = i; k < i + n; k++) free(b[k].data);
    memmove(b + i, b + i + n, (q->out.len - i - n) * sizeof *b);
    q->out.len -= n;
    if (!q->out.len) q->out.head = 0;
}

int redis_q_ack(queue *qq, queue_msg *msg)
{
    redis_q *q = (redis_q *)qq;
    pthread_mutex_lock(&q->cons_mu);
    long i = find_out(q, msg->seq);
    int rc = 0;
    if (i >= 0) {
        rc = ensure_conn(q) ? MD_ERR_IO : xack(q, q->out.v + q->out.head, (size_t)i + 1);
        if (rc == 0) { /* on failure they stay: the next (cumulative) ack covers them */
            drop_out(q, 0, (size_t)i + 1);
            msg->data = NULL;
        }
    } else if (q->out.len && msg->seq > q->out.v[q->out.head + q->out.len - 1].seq) {
        rc = MD_ERR_INVALID;
    }
    sync_state(q);
    pthread_mutex_unlock(&q->cons_mu);
    return rc;
}

int redis_q_nack(queue *qq, queue_msg *msg, const char *reason)
{
    redis_q *q = (redis_q *)qq;
    pthread_mutex_lock(&q->cons_mu);
    long i = find_out(q, msg->seq);
    int rc = MD_ERR_INVALID;
    if (i >= 0) {
        redis_entry *x = &q->out.v[q->out.head + i];
        rc = ensure_conn(q) ? MD_ERR_IO : dead_letter(q, x, reason);
        if (rc == 0) rc = xack(q, x, 1);
        /* Dropped either way: on failure it stays in the group's pending list and comes back
         * through XAUTOCLAIM, instead of being swept up by the next cumulative ack. */
        drop_out(q, (size_t)i, 1);
        msg->data = NULL;
    }
    sync_state(q);
    pthread_mutex_unlock(&q->cons_mu);
    return rc;
}

void redis_cons_free(redis_q *q)
{
    if (q->cons) redisFree(q->cons);
    q->cons = NULL;
    entries_free(&q->buf);
    entries_free(&q->out);
}

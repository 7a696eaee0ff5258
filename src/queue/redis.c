/* Redis Streams queue backend: open, publisher thread, stats, shutdown.
 *
 * publish() copies the payload into a bounded pending list. The publisher thread owns its own
 * connection and pipelines whatever is pending (XADD <stream> * batch <bytes>, up to
 * REDIS_PIPELINE_MAX per round trip: the group-commit analog), then reads every reply and calls
 * each callback with the entry id as position, or MD_ERR_IO on an error reply or a lost
 * connection (an XADD whose reply was lost may still be stored: reported as failed, the retry is
 * a duplicate that batch ids make harmless; never the other way round). Reconnects with backoff
 * 100 ms → 5 s; while disconnected publishes fail at once. Streams are never trimmed here: an
 * entry is only removed by an operator, so nothing unacked is lost to MAXLEN.
 * Durability: an XADD reply means the server has it in memory; with appendonly yes and
 * appendfsync always it is on disk, with everysec up to ~1 s can be lost on a server crash. */
#include "queue/redis_internal.h"

#include "core/error.h"
#include "core/log.h"
#include "core/timeutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SHUTDOWN_WAIT_MS 5000
#define STATS_CACHE_US (QUEUE_BUDGET_SAMPLE_MS * 1000) /* /metrics and the budget */

static int redis_q_publish(queue *qq, const uint8_t *data, size_t len, queue_publish_cb cb,
                           void *arg);
static int redis_q_stats(queue *qq, queue_stats *st);
static void redis_q_shutdown(queue *qq);
static void redis_q_close(queue *qq);

static const queue_ops redis_ops = {
    .name = "redis",
    .publish = redis_q_publish,
    .consume = redis_q_consume,
    .ack = redis_q_ack,
    .nack = redis_q_nack,
    .stats = redis_q_stats,
    .shutdown = redis_q_shutdown,
    .close = redis_q_close,
};

redisContext *redis_conn_open(redis_q *q, char *err, size_t errlen)
{
    struct timeval tv = {.tv_sec = 2};
    redisContext *c = redisConnectWithTimeout(q->cfg.redis_host, (int)q->cfg.redis_port, tv);
    if (!c || c->err) {
        snprintf(err, errlen, "cannot connect to Redis at %s:%u: %s", q->cfg.redis_host,
                 q->cfg.redis_port, c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return NULL;
    }
    struct timeval io = {.tv_sec = 10}; /* > the longest BLOCK we use */
    redisSetTimeout(c, io);
    return c;
}

int redis_group_create(redis_q *q, redisContext *c, const char *start, char *err, size_t errlen)
{
    redisReply *r = redisCommand(c, "XGROUP CREATE %s %s %s MKSTREAM", q->cfg.redis_stream,
                                 q->cfg.consumer_group, start);
    int rc = 0;
    if (!r) {
        snprintf(err, errlen, "XGROUP CREATE: %s", c->errstr);
        rc = MD_ERR_IO;
    } else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0) {
        snprintf(err, errlen, "XGROUP CREATE %s %s: %s", q->cfg.redis_stream,
                 q->cfg.consumer_group, r->str);
        rc = MD_ERR_IO;
    }
    if (r) freeReplyObject(r);
    return rc;
}

static void finish(redis_q *q, redis_item *it, int status, const char *pos)
{
    if (status == 0) {
        pthread_mutex_lock(&q->mu);
        q->published++;
        pthread_mutex_unlock(&q->mu);
    }
    if (it->cb) it->cb(it->arg, status, pos ? pos : "");
    free(it->data);
    free(it);
}

static void fail_chain(redis_q *q, redis_item *it)
{
    while (it) {
        redis_item *next = it->next;
        finish(q, it, MD_ERR_IO, NULL);
        it = next;
    }
}

/* Takes up to max pending items (under mu). */
static redis_item *take(redis_q *q, size_t max, size_t *n)
{
    redis_item *h = q->pend_head, *t = h;
    *n = 0;
    if (!h) return NULL;
    for (*n = 1; *n < max && t->next; (*n)++) t = t->next;
    q->pend_head = t->next;
    if (!q->pend_head) q->pend_tail = NULL;
    t->next = NULL;
    q->pend_n -= *n;
    q->writing = *n;
    return h;
}

static void pub_lost(redis_q *q, const char *why)
{
    log_warn("redis_publisher", "Redis publisher connection lost (%s)", why);
    redisFree(q->pub);
    q->pub = NULL;
    pthread_mutex_lock(&q->mu);
    q->pub_connected = false;
    pthread_mutex_unlock(&q->mu);
}

/* Pipelines the chain and answers every item. */
static void write_chain(redis_q *q, redis_item *chain)
{
    size_t sent = 0;
    for (redis_item *it = chain; it; it = it->next) {
        const char *argv[5] = {"XADD", q->cfg.redis_stream, "*", "batch", (const char *)it->data};
        size_t lens[5] = {4, strlen(q->cfg.redis_stream), 1, 5, it->len};
        if (redisAppendCommandArgv(q->pub, 5, argv, lens) != REDIS_OK) break;
        sent++;
    }
    redis_item *it = chain;
    size_t i = 0;
    for (; it && i < sent && q->pub; i++) {
        redisReply *r = NULL;
        if (redisGetReply(q->pub, (void **)&r) != REDIS_OK || !r) {
            pub_lost(q, q->pub->errstr);
            break;
        }
        redis_item *next = it->next;
        if (r->type == REDIS_REPLY_STRING) {
            finish(q, it, 0, r->str);
        } else {
            log_warn("redis_publisher", "XADD refused: %s",
                     r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            finish(q, it, MD_ERR_IO, NULL);
        }
        freeReplyObject(r);
        it = next;
    }
    fail_chain(q, it);
}

static void *pub_main(void *arg)
{
    pthread_setname_np(pthread_self(), "md-redis-pub");
    redis_q *q = arg;
    int backoff = REDIS_BACKOFF_MIN_MS;
    int64_t retry_at = 0;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->pend_head && !q->closing) pthread_cond_wait(&q->cv, &q->mu);
        if (!q->pend_head && q->closing) break;
        size_t n;
        redis_item *chain = take(q, REDIS_PIPELINE_MAX, &n);
        bool closing = q->closing;
        pthread_mutex_unlock(&q->mu);
        if (!q->pub && time_mono_us() >= retry_at && !closing) {
            char err[512];
            q->pub = redis_conn_open(q, err, sizeof err);
            if (q->pub) {
                log_info("redis_publisher", "Redis publisher connected to %s:%u",
                         q->cfg.redis_host, q->cfg.redis_port);
                backoff = REDIS_BACKOFF_MIN_MS;
                pthread_mutex_lock(&q->mu);
                q->pub_connected = true;
                pthread_mutex_unlock(&q->mu);
            } else {
                log_warn("redis_publisher", "%s; retrying in %d ms", err, backoff);
                retry_at = time_mono_us() + backoff * 1000LL;
                backoff = backoff * 2 > REDIS_BACKOFF_MAX_MS ? REDIS_BACKOFF_MAX_MS : backoff * 2;
            }
        }
        if (q->pub) write_chain(q, chain);
        else fail_chain(q, chain); /* disconnected: fail fast, ingest answers 503 */
        if (!q->pub && !retry_at) retry_at = time_mono_us() + backoff * 1000LL;
        else if (q->pub) retry_at = 0;
        pthread_mutex_lock(&q->mu);
        q->writing = 0;
        pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static int redis_q_publish(queue *qq, const uint8_t *data, size_t len, queue_publish_cb cb,
                           void *arg)
{
    redis_q *q = (redis_q *)qq;
    if (len && !data) return MD_ERR_INVALID;
    redis_item *it = calloc(1, sizeof *it);
    if (!it || !(it->data = malloc(len ? len : 1))) {
        free(it);
        return MD_ERR_NOMEM;
    }
    if (len) memcpy(it->data, data, len);
    it->len = len;
    it->cb = cb;
    it->arg = arg;
    pthread_mutex_lock(&q->mu);
    int rc = 0;
    if (q->closing || !q->pub_started) rc = MD_ERR_CLOSED;
    else if (q->pend_n + q->writing >= REDIS_MAX_INFLIGHT) rc = MD_ERR_FULL;
    if (rc == 0) {
        if (q->pend_tail) q->pend_tail->next = it;
        else q->pend_head = it;
        q->pend_tail = it;
        q->pend_n++;
        pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    if (rc) {
        free(it->data);
        free(it);
    }
    return rc;
}

/* Integer or numeric-string field of a flat XINFO reply. */
static uint64_t info_u64(const redisReply *v)
{
    if (v->type == REDIS_REPLY_INTEGER) return (uint64_t)v->integer;
    if (v->type == REDIS_REPLY_STRING) return strtoull(v->str, NULL, 10);
    return 0;
}

/* Refreshes the cached group info (under side_mu). */
static void refresh(redis_q *q)
{
    int64_t now = time_mono_us();
    if (q->stats_at_us && now - q->stats_at_us < STATS_CACHE_US) return;
    q->stats_at_us = now;
    char err[512];
    if (!q->side && !(q->side = redis_conn_open(q, err, sizeof err))) {
        q->st_ok = false;
        return;
    }
    redisReply *r = redisCommand(q->side, "XINFO GROUPS %s", q->cfg.redis_stream);
    redisReply *d = r ? redisCommand(q->side, "XLEN %s", q->dlq) : NULL;
    redisReply *l = d ? redisCommand(q->side, "XLEN %s", q->cfg.redis_stream) : NULL;
    if (!r || !d || !l) {
        if (r) freeReplyObject(r);
        if (d) freeReplyObject(d);
        redisFree(q->side);
        q->side = NULL;
        q->st_ok = false;
        return;
    }
    q->st_ok = true;
    q->st_dead = d->type == REDIS_REPLY_INTEGER ? (uint64_t)d->integer : 0;
    q->st_len = l->type == REDIS_REPLY_INTEGER ? (uint64_t)l->integer : 0;
    freeReplyObject(l);
    q->st_pending = q->st_lag = q->st_consumers = 0;
    q->st_lag_known = false;
    q->st_last[0] = '\0';
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisReply *g = r->element[i];
        if (g->type != REDIS_REPLY_ARRAY) continue;
        bool mine = false;
        for (size_t k = 0; k + 1 < g->elements; k += 2)
            if (strcmp(g->element[k]->str, "name") == 0 && g->element[k + 1]->str &&
                strcmp(g->element[k + 1]->str, q->cfg.consumer_group) == 0)
                mine = true;
        if (!mine) continue;
        for (size_t k = 0; k + 1 < g->elements; k += 2) {
            const char *key = g->element[k]->str;
            redisReply *v = g->element[k + 1];
            if (strcmp(key, "pending") == 0) q->st_pending = info_u64(v);
            else if (strcmp(key, "consumers") == 0) q->st_consumers = info_u64(v);
            else if (strcmp(key, "lag") == 0) {
                q->st_lag = info_u64(v);
                q->st_lag_known = v->type == REDIS_REPLY_INTEGER;
            }
            else if (strcmp(key, "last-delivered-id") == 0 && v->str)
                snprintf(q->st_last, sizeof q->st_last, "%.47s", v->str);
        }
    }
    freeReplyObject(r);
    freeReplyObject(d);
}

static int redis_q_stats(queue *qq, queue_stats *st)
{
    redis_q *q = (redis_q *)qq;
    *st = (queue_stats){0};
    pthread_mutex_lock(&q->side_mu);
    refresh(q);
    /* Not yet acked by the group: pending + never read. Redis cannot tell the lag (nil) when
     * entries after the first one were deleted while an older one is still pending; then,
     * as workers XDEL what they ack, the stream's length is the backlog (at most: entries
     * another client acked without deleting them count too). */
    st->depth = q->st_lag_known || !q->cfg.redis_delete_acked ? q->st_pending + q->st_lag
                                                              : q->st_len;
    st->dead_letters = q->st_dead;
    st->length = q->st_len;
    st->has_pending = 1;
    st->pending = q->st_pending;
    st->consumers = q->st_consumers;
    memcpy(st->last_delivered, q->st_last, sizeof st->last_delivered);
    bool ok = q->st_ok;
    pthread_mutex_unlock(&q->side_mu);
    pthread_mutex_lock(&q->mu);
    st->published = q->published;
    st->connected = ok && (!(q->roles & QUEUE_ROLE_PUBLISH) || q->pub_connected) &&
                    (!(q->roles & QUEUE_ROLE_CONSUME) || q->cons_up);
    pthread_mutex_unlock(&q->mu);
    snprintf(st->group, sizeof st->group, "%.63s", q->cfg.consumer_group);
    return 0;
}

static void redis_q_shutdown(queue *qq)
{
    redis_q *q = (redis_q *)qq;
    pthread_mutex_lock(&q->mu);
    bool join = q->pub_started && !q->closing;
    q->closing = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    /* The thread writes what is pending (bounded by the connection's timeouts), then exits. */
    if (join) pthread_join(q->pub_thread, NULL);
}

static void redis_q_free(redis_q *q)
{
    redis_cons_free(q);
    if (q->pub) redisFree(q->pub);
    if (q->side) redisFree(q->side);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->cons_mu);
    pthread_mutex_destroy(&q->side_mu);
    free(q);
}

static void redis_q_close(queue *qq)
{
    if (!qq) return;
    redis_q_shutdown(qq);
    redis_q_free((redis_q *)qq);
}

queue *redis_queue_open(const config *c, int roles, char *err, size_t errlen)
{
    if (errlen) err[0] = '\0';
    redis_q *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->base.ops = &redis_ops;
    q->cfg = *c;
    q->roles = roles;
    q->backoff_ms = REDIS_BACKOFF_MIN_MS;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    pthread_mutex_init(&q->cons_mu, NULL);
    pthread_mutex_init(&q->side_mu, NULL);
    snprintf(q->dlq, sizeof q->dlq, "%s:dlq", c->redis_stream);
    snprintf(q->attempts, sizeof q->attempts, "%s:attempts", c->redis_stream);
    if (c->consumer_name[0]) snprintf(q->consumer, sizeof q->consumer, "%s", c->consumer_name);
    else if (gethostname(q->consumer, sizeof q->consumer - 1) != 0 || !q->consumer[0])
        snprintf(q->consumer, sizeof q->consumer, "meterd-%d", (int)getpid());
    /* The side connection creates the group and stays for stats. "$": a new group starts at
     * the end, and every meterd role creates it at open, before its first XADD. */
    q->side = redis_conn_open(q, err, errlen);
    if (!q->side || redis_group_create(q, q->side, "$", err, errlen)) goto fail;
    if (roles & QUEUE_ROLE_CONSUME) {
        q->cons = redis_conn_open(q, err, errlen);
        if (!q->cons) goto fail;
        q->cons_up = true;
    }
    if (roles & QUEUE_ROLE_PUBLISH) {
        q->pub = redis_conn_open(q, err, errlen);
        if (!q->pub) goto fail;
        q->pub_connected = true;
        int rc = pthread_create(&q->pub_thread, NULL, pub_main, q);
        if (rc) {
            snprintf(err, errlen, "cannot start the Redis publisher: %s", strerror(rc));
            goto fail;
        }
        q->pub_started = true;
    }
    return &q->base;
fail:
    redis_q_free(q);
    return NULL;
}

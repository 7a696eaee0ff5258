/* Per-reading events between processes: see events_bus.h. */
#include "queue/events_bus.h"

#include "core/error.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "queue/amqp_internal.h"

#include <hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SUB_POLL_MS 250
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define PUB_RECHECK_US (1000 * 1000) /* redis: ask whether anybody listens again after this */

struct events_sub {
    config cfg; /* copy */
    events_bus_cb cb;
    void *arg;
    atomic_bool stop;
    pthread_t thread;
    amqp_q *aq; /* amqp: holds the parsed URL for amqp_conn_open */
};

static void channel_name(const config *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s:events", c->redis_stream);
}

/* Sleeps ms in SUB_POLL_MS steps; false when asked to stop. */
static bool backoff_sleep(events_sub *s, int *ms)
{
    for (int slept = 0; slept < *ms && !atomic_load(&s->stop); slept += SUB_POLL_MS)
        usleep(SUB_POLL_MS * 1000);
    *ms = *ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *ms * 2;
    return !atomic_load(&s->stop);
}

/* amqp: an exclusive, auto-delete, server-named queue bound to the .batched events exchange
 * (one message per commit; the per-reading exchange is for other consumers, see
 * docs/decisions.md 24). Returns the queue name (to free) or an empty bytes on failure (logged). */
static amqp_bytes_t amqp_bind(events_sub *s, amqp_connection_state_t c)
{
    char why[300], ex[300];
    amqp_lines_exchange_name(&s->cfg, ex, sizeof ex);
    /* declared here too: the api may subscribe before any worker has declared it */
    if (amqp_declare_lines_exchange(c, ex, why, sizeof why)) {
        log_warn("events_subscriber", "%s", why);
        return amqp_empty_bytes;
    }
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(c, AMQP_CH, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type != AMQP_RESPONSE_NORMAL || !ok) {
        log_warn("events_subscriber", "cannot declare an events queue: %s",
                 amqp_reply_text(r, why, sizeof why));
        return amqp_empty_bytes;
    }
    amqp_bytes_t qn = amqp_bytes_malloc_dup(ok->queue);
    amqp_queue_bind(c, AMQP_CH, qn, amqp_cstring_bytes(ex), amqp_cstring_bytes(""),
                    amqp_empty_table);
    r = amqp_get_rpc_reply(c);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_basic_consume(c, AMQP_CH, qn, amqp_empty_bytes, 0, 1, 1, amqp_empty_table);
        r = amqp_get_rpc_reply(c);
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        log_warn("events_subscriber", "cannot subscribe to exchange %s: %s", ex,
                 amqp_reply_text(r, why, sizeof why));
        amqp_bytes_free(qn);
        return amqp_empty_bytes;
    }
    return qn;
}

/* A message of events, one JSON per line: each line to the callback. */
static void deliver_lines(events_sub *s, const char *p, size_t len)
{
    const char *end = p + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        if (stop > p) s->cb(s->arg, p, (size_t)(stop - p));
        p = stop + 1;
    }
}

static void *amqp_sub_main(void *arg)
{
    pthread_setname_np(pthread_self(), "md-events-sub");
    events_sub *s = arg;
    int backoff = BACKOFF_MIN_MS;
    do {
        char err[512];
        amqp_connection_state_t c = amqp_conn_open(s->aq, err, sizeof err);
        amqp_bytes_t qn = c ? amqp_bind(s, c) : amqp_empty_bytes;
        if (!c) log_warn("events_subscriber", "%s; retrying in %d ms", err, backoff);
        if (qn.len) {
            backoff = BACKOFF_MIN_MS;
            log_info("events_subscriber", "live events from exchange %s.batched",
                     s->cfg.rabbitmq_worker_exchange);
        }
        while (qn.len && !atomic_load(&s->stop)) {
            amqp_envelope_t env;
            struct timeval tv = {.tv_usec = SUB_POLL_MS * 1000};
            amqp_maybe_release_buffers(c);
            amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
            if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                r.library_error == AMQP_STATUS_TIMEOUT)
                continue;
            if (r.reply_type != AMQP_RESPONSE_NORMAL) {
                char why[300];
                log_warn("events_subscriber", "events connection lost: %s",
                         amqp_reply_text(r, why, sizeof why));
                break;
            }
            deliver_lines(s, env.message.body.bytes, env.message.body.len);
            amqp_destroy_envelope(&env);
        }
        if (qn.len) amqp_bytes_free(qn);
        amqp_conn_close(c);
    } while (backoff_sleep(s, &backoff));
    return NULL;
}

/* One pub/sub message ["message", channel, payload]: its lines to the callback. */
static void redis_deliver(events_sub *s, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || !r->element[0]->str ||
        strcmp(r->element[0]->str, "message") || r->element[2]->type != REDIS_REPLY_STRING)
        return;
    deliver_lines(s, r->element[2]->str, r->element[2]->len);
}

static void *redis_sub_main(void *arg)
{
    pthread_setname_np(pthread_self(), "md-events-sub");
    events_sub *s = arg;
    char ch[300];
    channel_name(&s->cfg, ch, sizeof ch);
    int backoff = BACKOFF_MIN_MS;
    do {
        struct timeval tv = {.tv_sec = 2};
        redisContext *c = redisConnectWithTimeout(s->cfg.redis_host, (int)s->cfg.redis_port, tv);
        int done = 0;
        bool ok = c && !c->err && redisAppendCommand(c, "SUBSCRIBE %s", ch) == REDIS_OK;
        while (ok && !done) ok = redisBufferWrite(c, &done) == REDIS_OK;
        if (ok) {
            backoff = BACKOFF_MIN_MS;
            log_info("events_subscriber", "live events from Redis channel %s", ch);
        } else {
            log_warn("events_subscriber", "cannot subscribe to %s at %s:%u: %s; retrying in %d ms",
                     ch, s->cfg.redis_host, s->cfg.redis_port, c ? c->errstr : "out of memory",
                     backoff);
        }
        while (ok && !atomic_load(&s->stop)) {
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
            if (poll(&pfd, 1, SUB_POLL_MS) <= 0) continue;
            ok = redisBufferRead(c) == REDIS_OK;
            void *rep = NULL;
            while (ok && (ok = redisGetReplyFromReader(c, &rep) == REDIS_OK) && rep) {
                redis_deliver(s, rep);
                freeReplyObject(rep);
                rep = NULL;
            }
            if (!ok) log_warn("events_subscriber", "Redis events connection lost: %s", c->errstr);
        }
        if (c) redisFree(c);
    } while (backoff_sleep(s, &backoff));
    return NULL;
}

events_sub *events_sub_start(const config *c, events_bus_cb cb, void *arg, char *err,
                             size_t errlen)
{
    err[0] = '\0';
    bool amqp = !strcmp(c->queue_backend, "amqp");
    if (!amqp && strcmp(c->queue_backend, "redis")) {
        snprintf(err, errlen, "the %s queue has no events to subscribe to", c->queue_backend);
        return NULL;
    }
    events_sub *s = calloc(1, sizeof *s);
    if (!s || (amqp && !(s->aq = calloc(1, sizeof *s->aq)))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = *c;
    s->cb = cb;
    s->arg = arg;
    if (amqp) s->aq->cfg = *c;
    if ((amqp && amqp_q_parse_url(s->aq, err, errlen)) ||
        pthread_create(&s->thread, NULL, amqp ? amqp_sub_main : redis_sub_main, s)) {
        if (!err[0]) snprintf(err, errlen, "cannot start a thread");
        free(s->aq);
        free(s);
        return NULL;
    }
    return s;
}

void events_sub_stop(events_sub *s)
{
    if (!s) return;
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    free(s->aq);
    free(s);
}

bool events_lines_full(const events_lines *l, size_t len)
{
    return l->len && l->len + len + 1 > EVENTS_LINES_MAX;
}

bool events_lines_add(events_lines *l, const char *json, size_t len)
{
    if (l->len + len + 1 > l->cap) {
        size_t cap = l->cap ? l->cap : 64 * 1024;
        while (cap < l->len + len + 1) cap *= 2;
        char *b = realloc(l->buf, cap);
        if (!b) return false;
        l->buf = b;
        l->cap = cap;
    }
    if (l->len) l->buf[l->len++] = '\n';
    memcpy(l->buf + l->len, json, len);
    l->len += len;
    return true;
}

void events_lines_free(events_lines *l)
{
    free(l->buf);
    *l = (events_lines){0};
}

struct events_pub {
    config cfg; /* copy */
    char channel[300];
    redisContext *c;
    int64_t next_try_us; /* monotonic: next connect attempt, or next PUBLISH without listeners */
    bool listened;       /* the last PUBLISH reached a subscriber */
    uint64_t failed;
    events_lines lines; /* the events of this commit */
};

events_pub *events_pub_new(const config *c)
{
    events_pub *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->cfg = *c;
    channel_name(c, p->channel, sizeof p->channel);
    return p;
}

static void pub_send(events_pub *p)
{
    int64_t now = time_mono_us();
    if (!p->c) {
        struct timeval tv = {.tv_usec = 500 * 1000};
        p->c = redisConnectWithTimeout(p->cfg.redis_host, (int)p->cfg.redis_port, tv);
        if (!p->c || p->c->err) {
            if (p->failed++ % 100 == 0)
                log_warn("events_publisher", "cannot connect to Redis for events: %s",
                         p->c ? p->c->errstr : "out of memory");
            if (p->c) redisFree(p->c);
            p->c = NULL;
            p->listened = false;
            p->next_try_us = now + PUB_RECHECK_US;
            return;
        }
        redisSetTimeout(p->c, tv);
    }
    redisReply *r = redisCommand(p->c, "PUBLISH %s %b", p->channel, p->lines.buf, p->lines.len);
    p->listened = r && r->type == REDIS_REPLY_INTEGER && r->integer > 0;
    if (!r) {
        redisFree(p->c);
        p->c = NULL;
    }
    if (r) freeReplyObject(r);
    if (!p->listened) p->next_try_us = now + PUB_RECHECK_US;
}

void events_pub_flush(events_pub *p)
{
    if (p->lines.len && (p->listened || time_mono_us() >= p->next_try_us)) pub_send(p);
    p->lines.len = 0;
}

bool events_pub_wanted(const events_pub *p)
{
    return p->listened || time_mono_us() >= p->next_try_us;
}

void events_pub_send(events_pub *p, const char *json, size_t len)
{
    if (!events_pub_wanted(p)) return; /* nobody listens */
    if (events_lines_full(&p->lines, len)) events_pub_flush(p);
    events_lines_add(&p->lines, json, len);
}

void events_pub_free(events_pub *p)
{
    if (!p) return;
    if (p->c) redisFree(p->c);
    events_lines_free(&p->lines);
    free(p);
}

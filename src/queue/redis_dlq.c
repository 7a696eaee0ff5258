/* Dead letters of the Redis Streams backend: the stream "<REDIS_STREAM>:dlq", listed and replayed.
 *
 * Entries there are written by redis_consume.c: batch <protobuf> (a canonical batch) or
 * payload <json> [ct <content type>] (a gateway envelope), plus reason and id (the entry's id in
 * the main stream). list = XRANGE in pages; show = XRANGE id id. Replay = XADD of the same field,
 * bytes and ct to the main stream, then, once the XADD reply came (the same durability as an
 * ingest 2xx: the server's appendfsync), XDEL from the dead-letter stream. A crash in between
 * leaves a copy in both; replaying it again is harmless. `replay --all` stops at the last entry
 * present when it started, so a poison entry dead-lettered again by a worker is not replayed in
 * a loop. The consumer group is created first ("$", as every role does at open) so the replayed
 * entry is delivered even on a fresh server. */
#include "queue/dlq.h"
#include "queue/redis_internal.h"

#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 100

typedef struct redis_dlq {
    dlq base;   /* first */
    redis_q *q; /* owned: configuration only (no threads) */
    redisContext *c;
} redis_dlq;

/* One dead-letter entry, pointing into a reply. */
typedef struct dead {
    const char *id;
    const redisReply *body; /* the batch or payload value; NULL when missing */
    const char *field;      /* "batch" or "payload" */
    const char *ct;         /* the ct field as stored, NULL when absent */
    const char *reason, *source_id;
} dead;

static const char *str_or(const redisReply *r, const char *dflt)
{
    return r && r->type == REDIS_REPLY_STRING ? r->str : dflt;
}

/* Reads [id, [field, value, ...]]. 0, or 1 when it is not an entry. */
static int parse(const redisReply *el, dead *x)
{
    *x = (dead){.field = "batch", .reason = "", .source_id = ""};
    if (el->type != REDIS_REPLY_ARRAY || el->elements < 2 ||
        el->element[0]->type != REDIS_REPLY_STRING || el->element[1]->type != REDIS_REPLY_ARRAY)
        return 1;
    x->id = el->element[0]->str;
    const redisReply *f = el->element[1];
    for (size_t k = 0; k + 1 < f->elements; k += 2) {
        const char *name = str_or(f->element[k], "");
        const redisReply *v = f->element[k + 1];
        if (!strcmp(name, "batch") || !strcmp(name, "payload")) {
            x->body = v;
            x->field = name;
        } else if (!strcmp(name, "ct")) {
            x->ct = str_or(v, NULL);
        } else if (!strcmp(name, "reason")) {
            x->reason = str_or(v, "");
        } else if (!strcmp(name, "id")) {
            x->source_id = str_or(v, "");
        }
    }
    return 0;
}

/* The consumer's reading of the fields (redis_consume.c parse_entry) as a content type. */
static void to_entry(const dead *x, dlq_entry *e)
{
    const char *ct = DLQ_BATCH_CT;
    if (!strcmp(x->field, "payload"))
        ct = x->ct && x->ct[0] ? x->ct : "application/json";
    else if (x->ct && x->ct[0])
        ct = x->ct;
    *e = (dlq_entry){.id = x->id,
                     .source_id = x->source_id,
                     .reason = x->reason,
                     .dead_at_us = strtoll(x->id, NULL, 10) * 1000,
                     .content_type = ct,
                     .data = x->body ? (const uint8_t *)x->body->str : (const uint8_t *)"",
                     .len = x->body ? x->body->len : 0};
}

static int fail_reply(redis_dlq *d, redisReply *r, const char *what, char *err, size_t errlen)
{
    if (!r)
        snprintf(err, errlen, "%s on %s: %s", what, d->base.where, d->c->errstr);
    else
        snprintf(err, errlen, "%s on %s: %s", what, d->base.where,
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    if (r) freeReplyObject(r);
    return MD_ERR_IO;
}

typedef int (*dead_cb)(void *arg, const dead *x); /* < 0: an md_err (stop); > 0: stop */

/* Calls cb for each entry from start ("-" or an id) up to end ("+" or an id), in pages. */
static int walk(redis_dlq *d, const char *start, const char *end, dead_cb cb, void *arg, char *err,
                size_t errlen)
{
    char from[64];
    snprintf(from, sizeof from, "%s", start);
    for (;;) {
        redisReply *r = redisCommand(d->c, "XRANGE %s %s %s COUNT %d", d->q->dlq, from, end, PAGE);
        if (!r || r->type != REDIS_REPLY_ARRAY) return fail_reply(d, r, "XRANGE", err, errlen);
        int rc = 0;
        size_t i = 0;
        for (; i < r->elements && rc == 0; i++) {
            dead x;
            if (parse(r->element[i], &x)) continue;
            snprintf(from, sizeof from, "(%.60s", x.id);
            rc = cb(arg, &x);
        }
        size_t got = r->elements;
        freeReplyObject(r);
        if (rc) return rc < 0 ? rc : 0;
        if (got < PAGE) return 0;
    }
}

typedef struct visit {
    dlq_visit_cb cb;
    void *arg;
} visit;

static int list_one(void *arg, const dead *x)
{
    visit *v = arg;
    dlq_entry e;
    to_entry(x, &e);
    return v->cb(v->arg, &e) ? 1 : 0;
}

static int redis_dlq_list(dlq *dd, dlq_visit_cb cb, void *arg, char *err, size_t errlen)
{
    visit v = {cb, arg};
    return walk((redis_dlq *)dd, "-", "+", list_one, &v, err, errlen);
}

typedef struct replay_ctx {
    redis_dlq *d;
    visit v;
    char *err;
    size_t errlen;
} replay_ctx;

/* XADD to the main stream (same field, bytes, ct), then XDEL from the dead letters. */
static int replay_one(void *arg, const dead *x)
{
    replay_ctx *c = arg;
    redis_dlq *d = c->d;
    if (!x->body || x->body->type != REDIS_REPLY_STRING) {
        snprintf(c->err, c->errlen, "%s in %s has no batch or payload field: not replayed", x->id,
                 d->base.where);
        return MD_ERR_INVALID;
    }
    const char *argv[9] = {
        "XADD", d->q->cfg.redis_stream, "*", x->field, x->body->str, "replay_of", x->id,
        "ct",   x->ct ? x->ct : ""};
    size_t lens[9];
    for (int i = 0; i < 9; i++)
        lens[i] = i == 4 ? x->body->len : strlen(argv[i]);
    redisReply *r = redisCommandArgv(d->c, x->ct ? 9 : 7, argv, lens);
    if (!r || r->type != REDIS_REPLY_STRING) {
        char what[160];
        snprintf(what, sizeof what, "replaying %.60s: XADD %.60s", x->id, d->q->cfg.redis_stream);
        return fail_reply(d, r, what, c->err, c->errlen);
    }
    freeReplyObject(r);
    r = redisCommand(d->c, "XDEL %s %s", d->q->dlq, x->id);
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        char what[160];
        snprintf(what, sizeof what,
                 "replayed %.60s, but XDEL failed (it stays listed; replaying "
                 "it again is harmless)",
                 x->id);
        return fail_reply(d, r, what, c->err, c->errlen);
    }
    freeReplyObject(r);
    dlq_entry e;
    to_entry(x, &e);
    c->v.cb(c->v.arg, &e);
    return 0;
}

/* Checks that id names an entry. 0, MD_ERR_NOTFOUND or MD_ERR_IO, with err. */
static int exists(redis_dlq *d, const char *id, char *err, size_t errlen)
{
    redisReply *r = redisCommand(d->c, "XRANGE %s %s %s", d->q->dlq, id, id);
    if (!r) return fail_reply(d, r, "XRANGE", err, errlen);
    bool found = r->type == REDIS_REPLY_ARRAY && r->elements == 1;
    freeReplyObject(r); /* an error reply is a malformed id: not found either */
    if (found) return 0;
    snprintf(err, errlen, "no dead letter with id %s in %s", id, d->base.where);
    return MD_ERR_NOTFOUND;
}

static int redis_dlq_replay(dlq *dd, const char *const *ids, size_t n, dlq_visit_cb cb, void *arg,
                            char *err, size_t errlen)
{
    redis_dlq *d = (redis_dlq *)dd;
    replay_ctx c = {.d = d, .v = {cb, arg}, .err = err, .errlen = errlen};
    for (size_t i = 0; i < n; i++) {
        int rc = exists(d, ids[i], err, errlen);
        if (rc) return rc;
    }
    char end[64] = "+";
    if (!n) { /* only what is there now */
        redisReply *r = redisCommand(d->c, "XREVRANGE %s + - COUNT 1", d->q->dlq);
        if (!r || r->type != REDIS_REPLY_ARRAY) return fail_reply(d, r, "XREVRANGE", err, errlen);
        dead x;
        bool any = r->elements == 1 && parse(r->element[0], &x) == 0;
        if (any) snprintf(end, sizeof end, "%.60s", x.id);
        freeReplyObject(r);
        if (!any) return 0;
    }
    if (redis_group_create(d->q, d->c, "$", err, errlen)) return MD_ERR_IO;
    if (!n) return walk(d, "-", end, replay_one, &c, err, errlen);
    for (size_t i = 0; i < n; i++) {
        int rc = walk(d, ids[i], ids[i], replay_one, &c, err, errlen);
        if (rc) return rc;
    }
    return 0;
}

static void redis_dlq_close(dlq *dd)
{
    redis_dlq *d = (redis_dlq *)dd;
    if (!d) return;
    if (d->c) redisFree(d->c);
    free(d->q);
    free(d);
}

static const dlq_ops redis_dlq_ops = {
    .name = "redis",
    .list = redis_dlq_list,
    .replay = redis_dlq_replay,
    .close = redis_dlq_close,
};

dlq *redis_dlq_open(const config *c, char *err, size_t errlen)
{
    redis_dlq *d = calloc(1, sizeof *d);
    if (!d || !(d->q = calloc(1, sizeof *d->q))) {
        free(d);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->base.ops = &redis_dlq_ops;
    d->q->cfg = *c;
    snprintf(d->q->dlq, sizeof d->q->dlq, "%s:dlq", c->redis_stream);
    snprintf(d->base.where, sizeof d->base.where, "stream %s on %s:%u", d->q->dlq, c->redis_host,
             c->redis_port);
    snprintf(d->base.target, sizeof d->base.target, "stream %s", c->redis_stream);
    d->c = redis_conn_open(d->q, err, errlen);
    if (!d->c) {
        redis_dlq_close(&d->base);
        return NULL;
    }
    return &d->base;
}
